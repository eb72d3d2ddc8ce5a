/* buf.c - growable byte buffers with a hard cap, allocation wrappers, clock */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "buf.h"
#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    log_flush(); /* this thread's held lines first */
    fprintf(stderr, "llmproxy: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        oom(n);
    }
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL) {
        oom(nmemb * size);
    }
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        oom(n);
    }
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int random_bytes(void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        long r = syscall(SYS_getrandom, (char *)p + got, n - got, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

const char *state_dir(bool cgi, char *out, size_t n)
{
    const char *env = getenv("LLMPROXY_STATE_DIR");
    if (env != NULL && *env != '\0') {
        return env;
    }
    if (cgi) {
        /* the program is public_html/cgi-bin/X: the state is ../../llmproxy-state */
        char exe[4096];
        ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (k > 0) {
            exe[k] = '\0';
            for (int up = 0; up < 3; up++) {
                char *slash = strrchr(exe, '/');
                if (slash == NULL) {
                    break;
                }
                *slash = '\0';
            }
            snprintf(out, n, "%s/llmproxy-state", exe);
            if (is_dir(out)) {
                return out;
            }
        }
        const struct passwd *pw = getpwuid(geteuid());
        if (pw != NULL && pw->pw_dir != NULL) {
            snprintf(out, n, "%s/llmproxy-state", pw->pw_dir);
            if (is_dir(out)) {
                return out;
            }
        }
    }
    return "./var";
}

void buf_init(struct buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->size = 0;
    b->cap = cap;
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->size = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

char *buf_reserve(struct buf *b, size_t n)
{
    if (n > b->cap || b->len > b->cap - n) {
        return NULL;
    }
    size_t need = b->len + n + 1;
    if (need > b->size) {
        size_t size = b->size ? b->size : 256;
        while (size < need) {
            size *= 2;
        }
        b->data = xrealloc(b->data, size);
        b->size = size;
    }
    return b->data + b->len;
}

int buf_presize(struct buf *b, size_t n)
{
    if (n > b->cap) {
        return BUF_TOOBIG;
    }
    if (n + 1 > b->size) {
        b->data = xrealloc(b->data, n + 1);
        if (b->size == 0) {
            b->data[0] = '\0';
        }
        b->size = n + 1;
    }
    return BUF_OK;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    char *dst = buf_reserve(b, n);
    if (dst == NULL) {
        return BUF_TOOBIG;
    }
    if (n > 0) {
        memcpy(dst, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return BUF_OK;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return BUF_TOOBIG;
    }
    if ((size_t)n < sizeof(small)) {
        return buf_append(b, small, (size_t)n);
    }
    char *dst = buf_reserve(b, (size_t)n);
    if (dst == NULL) {
        return BUF_TOOBIG;
    }
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return BUF_OK;
}

int buf_append_json_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        const char *out = esc;
        size_t n = 2;
        esc[0] = '\\';
        switch (*p) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[*p >> 4];
                esc[5] = hex[*p & 15];
                n = 6;
            } else if (*p >= 0x80 && utf8_len(p) == 0) {
                out = "\\ufffd"; /* not UTF-8: the replacement character */
                n = 6;
            } else {
                out = (const char *)p;
                n = *p >= 0x80 ? utf8_len(p) : 1;
                p += n - 1;
            }
        }
        if (buf_append(b, out, n) != BUF_OK) {
            return BUF_TOOBIG;
        }
    }
    return BUF_OK;
}

char *buf_steal(struct buf *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL) {
        *len = b->len;
    }
    if (p == NULL) {
        p = xstrdup("");
    }
    b->data = NULL;
    b->len = 0;
    b->size = 0;
    return p;
}

int buf_read_fd(struct buf *b, int fd)
{
    for (;;) {
        char chunk[16384];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -2;
        }
        if (n == 0) {
            return BUF_OK;
        }
        if (buf_append(b, chunk, (size_t)n) != BUF_OK) {
            return BUF_TOOBIG;
        }
    }
}
