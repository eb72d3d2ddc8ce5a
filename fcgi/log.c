/* log.c - log lines on stderr (the web server's error log) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static size_t stamp(char *out, size_t n)
{
    static pid_t pid; /* a syscall saved per line; the programs do not fork */
    if (pid == 0) {
        pid = getpid();
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(out + k, n - k, ".%03ldZ llmproxy[%d] ", ts.tv_nsec / 1000000, (int)pid);
    return k + (m > 0 ? (size_t)m : 0);
}

static int json_mode = -1; /* -1: LLMPROXY_LOG_FORMAT not read yet */

bool log_json(void)
{
    int m = __atomic_load_n(&json_mode, __ATOMIC_RELAXED);
    if (m < 0) {
        const char *f = getenv("LLMPROXY_LOG_FORMAT");
        m = f != NULL && strcmp(f, "json") == 0;
        __atomic_store_n(&json_mode, m, __ATOMIC_RELAXED);
    }
    return m == 1;
}

/* Lines held by a loop's thread until the end of its turn (log_hold), so
 * that a request's summary goes out after its answer, not before it: up to
 * one atomic pipe write (PIPE_BUF). log_msg's lines are never held (an
 * error may be the last thing a process says). */
static __thread struct {
    bool on;
    int urgent; /* inside log_msg */
    size_t len;
    char buf[4096];
} held;

static void write_out(const char *p, size_t k)
{
    while (k > 0) {
        ssize_t w = write(STDERR_FILENO, p, k);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        k -= (size_t)w;
    }
}

void log_flush(void)
{
    if (held.len > 0) {
        write_out(held.buf, held.len);
        held.len = 0;
    }
}

void log_hold(bool on)
{
    if (!on) {
        log_flush();
    }
    held.on = on;
}

static void write_all(const char *p, size_t k)
{
    if (held.on && held.urgent == 0 && k <= sizeof(held.buf)) {
        if (held.len + k > sizeof(held.buf)) {
            log_flush();
        }
        memcpy(held.buf + held.len, p, k);
        held.len += k;
        return;
    }
    log_flush(); /* in order */
    write_out(p, k);
}

bool log_json_escape(char *out, size_t n, size_t *k, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t at = *k;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[7];
        size_t m = 0;
        if (*p == '"' || *p == '\\') {
            esc[m++] = '\\';
            esc[m++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            m = 6;
        } else if (*p >= 0x80 && utf8_len(p) == 0) {
            memcpy(esc, "\\ufffd", 6); /* not UTF-8: log shippers want it */
            m = 6;
        } else {
            size_t u = *p >= 0x80 ? utf8_len(p) : 1;
            memcpy(esc, p, u);
            m = u;
            p += u - 1;
        }
        if (at + m >= n) {
            *k = at;
            return false;
        }
        memcpy(out + at, esc, m);
        at += m;
    }
    *k = at;
    return true;
}

void log_json_line(const char *members, size_t len)
{
    static pid_t pid;
    if (pid == 0) {
        pid = getpid();
    }
    char line[16384];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(line, sizeof(line), "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(line + k, sizeof(line) - k, ".%03ldZ\",\"pid\":%d,", ts.tv_nsec / 1000000,
                     (int)pid);
    k += m > 0 ? (size_t)m : 0;
    if (len + 3 > sizeof(line) - k) {
        /* never half an object: say what was lost instead */
        m = snprintf(line + k, sizeof(line) - k,
                     "\"level\":\"warn\",\"msg\":\"a log line of %zu bytes was too long\"}\n", len);
        write_all(line, k + (m > 0 ? (size_t)m : 0));
        return;
    }
    memcpy(line + k, members, len);
    k += len;
    line[k++] = '}';
    line[k++] = '\n';
    write_all(line, k);
}

void log_line(const char *text, size_t len)
{
    if (log_json()) {
        /* a plain line in JSON mode: its text as the message */
        char members[8192] = "\"msg\":\"";
        size_t k = strlen(members);
        char copy[8192];
        len = len < sizeof(copy) - 1 ? len : sizeof(copy) - 1;
        memcpy(copy, text, len);
        copy[len] = '\0';
        log_json_escape(members, sizeof(members) - 2, &k, copy);
        members[k++] = '"';
        log_json_line(members, k);
        return;
    }
    char line[8192];
    size_t k = stamp(line, sizeof(line));
    if (len > sizeof(line) - k - 1) {
        len = sizeof(line) - k - 1;
    }
    /* one line, whatever the text holds (model names come from clients) */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        line[k++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    line[k++] = '\n';
    write_all(line, k);
}

/* vsnprintf's result clamped to what it wrote: it returns the length it
 * would have written, which may pass the buffer. */
__attribute__((format(printf, 3, 0))) static size_t format(char *out, size_t n, const char *fmt,
                                                           va_list ap)
{
    int m = vsnprintf(out, n, fmt, ap);
    if (m < 0) {
        return 0;
    }
    return (size_t)m < n ? (size_t)m : n - 1;
}

void log_linef(const char *fmt, ...)
{
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    size_t n = format(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_line(text, n);
}

void log_msg(const char *level, const char *file, int line, const char *fmt, ...)
{
    held.urgent++;
    if (log_json()) {
        char text[4096];
        va_list ap;
        va_start(ap, fmt);
        format(text, sizeof(text), fmt, ap);
        va_end(ap);
        char members[9000];
        int n = snprintf(members, sizeof(members), "\"level\":\"%s\",\"src\":\"%s:%d\",\"msg\":\"",
                         level, file, line);
        if (n >= 0 && (size_t)n < sizeof(members)) {
            size_t k = (size_t)n;
            log_json_escape(members, sizeof(members) - 2, &k, text);
            members[k++] = '"';
            log_json_line(members, k);
        }
        held.urgent--;
        return;
    }
    char msg[4096];
    int n = snprintf(msg, 512, "%s %s:%d: ", level, file, line);
    if (n >= 0 && n < 512) {
        va_list ap;
        va_start(ap, fmt);
        size_t m = format(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
        va_end(ap);
        log_line(msg, (size_t)n + m);
    }
    held.urgent--;
}
