/* redis_url.c - LLMPROXY_REDIS_URL and LLMPROXY_REDIS_TIMEOUT_MS (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "redis.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int url_fail(char *err, size_t n, const char *msg)
{
    snprintf(err, n, "LLMPROXY_REDIS_URL: %s", msg);
    return -1;
}

/* %XX in user and password */
static int unescape(const char *s, size_t len, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            unsigned v;
            char hex[3] = {i + 1 < len ? s[i + 1] : '\0', i + 2 < len ? s[i + 2] : '\0', '\0'};
            if (hex[0] == '\0' || hex[1] == '\0' || sscanf(hex, "%2x", &v) != 1) {
                return -1;
            }
            c = (char)v;
            i += 2;
        }
        if (o + 1 >= n || c == '\0') {
            return -1;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int redis_url_parse(const char *s, struct redis_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    if (strncmp(s, "rediss://", 9) == 0) {
        return url_fail(err, errlen,
                        "rediss:// (TLS) needs a hiredis built with TLS, which this one (Debian "
                        "12's libhiredis 0.14) is not; reach Redis over a unix socket, loopback "
                        "or a TLS tunnel (stunnel, spiped) and use redis:// or unix://");
    }
    if (strncmp(s, "unix://", 7) == 0) {
        const char *p = s + 7;
        const char *q = strchr(p, '?');
        size_t len = q != NULL ? (size_t)(q - p) : strlen(p);
        if (len == 0 || p[0] != '/' || len >= sizeof(u->path)) {
            return url_fail(err, errlen, "unix:// needs an absolute socket path (unix:///path)");
        }
        memcpy(u->path, p, len);
        u->unix_socket = true;
        if (q != NULL) {
            char *end;
            if (strncmp(q, "?db=", 4) != 0 || (u->db = (int)strtol(q + 4, &end, 10)) < 0 ||
                *end != '\0' || end == q + 4) {
                return url_fail(err, errlen, "unix:// takes only ?db=N");
            }
        }
        snprintf(u->shown, sizeof(u->shown), "unix://%s", u->path);
        return 0;
    }
    if (strncmp(s, "redis://", 8) != 0) {
        return url_fail(err, errlen, "use redis://host:port/db or unix:///path");
    }
    const char *p = s + 8;
    const char *auth_end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *c = p; c < auth_end; c++) {
        if (*c == '@') {
            at = c; /* the last @ before the path */
        }
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon != NULL ? colon + 1 : p;
        size_t ulen = colon != NULL ? (size_t)(colon - p) : 0;
        if (unescape(p, ulen, u->user, sizeof(u->user)) != 0 ||
            unescape(pw, (size_t)(at - pw), u->pass, sizeof(u->pass)) != 0) {
            return url_fail(err, errlen, "its user or password is malformed or too long");
        }
        p = at + 1;
    }
    if (*auth_end == '?' || *auth_end == '#') {
        return url_fail(err, errlen, "it takes no ?query or #fragment");
    }
    const char *slash = *auth_end == '/' ? auth_end : NULL;
    size_t hlen = (size_t)(auth_end - p);
    const char *hp = p;
    const char *colon = NULL;
    if (hlen > 0 && hp[0] == '[') {
        const char *close = memchr(hp, ']', hlen);
        if (close == NULL) {
            return url_fail(err, errlen, "an IPv6 host needs its ]");
        }
        size_t n = (size_t)(close - hp - 1);
        if (n == 0 || n >= sizeof(u->host)) {
            return url_fail(err, errlen, "its host is empty or too long");
        }
        memcpy(u->host, hp + 1, n);
        colon = close + 1 < hp + hlen && close[1] == ':' ? close + 1 : NULL;
        if (colon == NULL && close + 1 != hp + hlen) {
            return url_fail(err, errlen, "junk after the IPv6 host");
        }
    } else {
        colon = memchr(hp, ':', hlen);
        size_t n = colon != NULL ? (size_t)(colon - hp) : hlen;
        if (n == 0 || n >= sizeof(u->host)) {
            return url_fail(err, errlen, "its host is empty or too long");
        }
        memcpy(u->host, hp, n);
    }
    if (colon != NULL) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || end != hp + hlen || port < 1 || port > 65535) {
            return url_fail(err, errlen, "its port is not a number from 1 to 65535");
        }
        u->port = (int)port;
    }
    for (const char *c = u->host; *c != '\0'; c++) {
        if (*c <= ' ' || *c == '/' || *c == '?' || *c == '#' || *c == '@') {
            return url_fail(err, errlen, "its host has a character a host cannot have");
        }
    }
    /* hiredis 0.14 resolves a name with a blocking call, on the loop: an
     * address only (localhost is 127.0.0.1) */
    if (strcmp(u->host, "localhost") == 0) {
        snprintf(u->host, sizeof(u->host), "127.0.0.1");
    }
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, u->host, addr) != 1 && inet_pton(AF_INET6, u->host, addr) != 1) {
        return url_fail(err, errlen,
                        "give Redis's host as an IP address (a name would be resolved by a "
                        "blocking call inside the event loop)");
    }
    if (slash != NULL && slash[1] != '\0') {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end != '\0' || db < 0 || db > 1000000) {
            return url_fail(err, errlen, "its database (after /) is not a number");
        }
        u->db = (int)db;
    }
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(u->shown, sizeof(u->shown), "redis://%s%s%s%s%s%s:%d/%d", u->user,
             u->pass[0] != '\0' ? ":***" : "", u->user[0] != '\0' || u->pass[0] != '\0' ? "@" : "",
             v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db);
    return 0;
}

int redis_settings_from_env(struct redis_settings *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->timeout_ms = 50;
    const char *t = getenv("LLMPROXY_REDIS_TIMEOUT_MS");
    if (t != NULL && *t != '\0') {
        char *end;
        long v = strtol(t, &end, 10);
        if (*end != '\0' || v < 1 || v > 60000) {
            snprintf(err, errlen, "LLMPROXY_REDIS_TIMEOUT_MS=%s is not a number from 1 to 60000",
                     t);
            return -1;
        }
        s->timeout_ms = v;
    }
    const char *u = getenv("LLMPROXY_REDIS_URL");
    if (u == NULL || *u == '\0') {
        return 0;
    }
    if (redis_url_parse(u, &s->url, err, errlen) != 0) {
        return -1;
    }
    s->on = true;
    return 0;
}
