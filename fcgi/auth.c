/* auth.c - the admin token: creation, storage, constant-time check, cross-site refusal */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int read_token(const char *path, char *out, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -1;
    }
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r <= 0) {
        return -2;
    }
    size_t len = (size_t)r;
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' ')) {
        len--;
    }
    out[len] = '\0';
    return len > 0 ? 0 : -2;
}

int auth_token_load(const char *state_dir, char *out, size_t n, bool *created, char *err,
                    size_t errlen)
{
    *created = false;
    const char *env = getenv("LLMPROXY_ADMIN_TOKEN");
    if (env != NULL && *env != '\0') {
        if (strlen(env) >= n) {
            snprintf(err, errlen, "LLMPROXY_ADMIN_TOKEN is longer than %zu characters", n - 1);
            return -1;
        }
        snprintf(out, n, "%s", env);
        return 0;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", state_dir, AUTH_TOKEN_FILE);
    int rc = read_token(path, out, n);
    if (rc == 0) {
        return 0;
    }
    if (rc == -2 || errno != ENOENT) {
        snprintf(err, errlen, "%s is unreadable or empty", path);
        return -1;
    }
    unsigned char raw[AUTH_TOKEN_BYTES];
    if (random_bytes(raw, sizeof(raw)) != 0) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        return -1;
    }
    char hex[AUTH_TOKEN_BYTES * 2 + 2];
    for (size_t i = 0; i < sizeof(raw); i++) {
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    }
    /* O_EXCL: if another process created it meanwhile, use theirs */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST && read_token(path, out, n) == 0) {
            return 0;
        }
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(hex);
    hex[len] = '\n';
    int ok = write(fd, hex, len + 1) == (ssize_t)(len + 1) && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        unlink(path);
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    hex[len] = '\0';
    snprintf(out, n, "%s", hex);
    *created = true;
    return 0;
}

bool auth_bearer_ok(const char *header, const char *token)
{
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0) {
        return false;
    }
    const char *given = header + 7;
    while (*given == ' ') {
        given++;
    }
    size_t glen = strlen(given);
    size_t tlen = strlen(token);
    /* every byte of the token is looked at whatever the input */
    unsigned char diff = (unsigned char)(glen != tlen);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)token[i]);
    }
    return tlen > 0 && diff == 0;
}

bool auth_cross_site(const char *origin, const char *host, const char *sec_fetch_site)
{
    if (sec_fetch_site != NULL && strcmp(sec_fetch_site, "same-origin") != 0 &&
        strcmp(sec_fetch_site, "none") != 0) {
        return true;
    }
    if (origin == NULL || strcmp(origin, "null") == 0) {
        return origin != NULL; /* "null": sandboxed or opaque origin */
    }
    const char *h = strstr(origin, "://");
    if (h == NULL || host == NULL) {
        return true;
    }
    h += 3;
    return strcasecmp(h, host) != 0;
}

static bool loopback_addr(const char *a)
{
    if (a == NULL) {
        return false;
    }
    if (strncmp(a, "::ffff:", 7) == 0) {
        a += 7; /* an IPv4 client on an IPv6 socket */
    }
    return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0;
}

/* "127.0.0.1", "localhost" or "[::1]", with an optional ":port". */
static bool loopback_host(const char *h)
{
    if (h == NULL) {
        return false;
    }
    static const char *const names[] = {"127.0.0.1", "localhost", "[::1]"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        size_t n = strlen(names[i]);
        if (strncasecmp(h, names[i], n) != 0) {
            continue;
        }
        const char *rest = h + n;
        if (*rest == '\0') {
            return true;
        }
        if (*rest != ':' || rest[1] == '\0') {
            return false;
        }
        for (rest++; *rest; rest++) {
            if (*rest < '0' || *rest > '9') {
                return false;
            }
        }
        return true;
    }
    return false;
}

bool auth_keyless_ok(const char *remote_addr, const char *host, const char *origin,
                     const char *sec_fetch_site)
{
    return loopback_addr(remote_addr) && loopback_host(host) &&
           !auth_cross_site(origin, host, sec_fetch_site);
}
