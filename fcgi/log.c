/* log.c - log lines on stderr (the web server's error log) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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

void log_line(const char *text, size_t len)
{
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
    const char *p = line;
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
    char msg[4096];
    int n = snprintf(msg, 512, "%s %s:%d: ", level, file, line);
    if (n < 0 || n >= 512) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    size_t m = format(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    log_line(msg, (size_t)n + m);
}
