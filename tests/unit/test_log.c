/* test_log.c - unit tests of log.c: one bounded, clean line per call */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/log.c"
#include "tap.h"

#include <stdlib.h>
#include <sys/ioctl.h>

/* Runs fn with stderr going to a pipe; returns what it wrote (free it). */
static char *capture(void (*fn)(void), size_t *len)
{
    int p[2];
    if (pipe(p) != 0) {
        return NULL;
    }
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *out = calloc(1, 65536);
    ssize_t n = read(p[0], out, 65535);
    close(p[0]);
    *len = n > 0 ? (size_t)n : 0;
    return out;
}

static void long_line(void)
{
    char method[12000];
    memset(method, 'M', sizeof(method) - 1);
    method[sizeof(method) - 1] = '\0';
    /* what log_simple did: a request line far longer than the buffer */
    log_linef("req=1-1 %s /health status=405 ms=%.2f", method, 0.5);
}

static void control_chars(void)
{
    log_linef("model=%s", "a\nb\rc\x01"
                          "d");
}

static void message(void)
{
    char big[6000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    LOG_ERROR("%s", big);
}

/* log_hold: what reached stderr before the flush, and after */
static char held_seen[4096];
static size_t held_seen_len;

static void peek_stderr(void)
{
    /* what the pipe holds so far, without taking it (stderr is the pipe) */
    int n = 0;
    ioctl(STDERR_FILENO, FIONREAD, &n);
    held_seen_len = (size_t)n;
}

static void held_lines(void)
{
    log_hold(true);
    log_linef("req=1 first");
    log_linef("req=2 second");
    peek_stderr();
    size_t before = held_seen_len;
    LOG_WARN("urgent"); /* not held, and after what was */
    peek_stderr();
    snprintf(held_seen, sizeof(held_seen), "%zu %zu", before, held_seen_len);
    log_linef("req=3 third");
    log_hold(false); /* flushes */
}

int main(void)
{
    size_t n;
    char *out = capture(long_line, &n);
    ok(n > 0 && n <= 8192 && out[n - 1] == '\n' && memchr(out, '\n', n) == out + n - 1,
       "a line longer than 8 KiB is cut to one line of at most 8 KiB (%zu bytes)", n);
    size_t ms = 0;
    for (size_t i = 0; i < n; i++) {
        ms += out[i] == 'M';
    }
    ok(ms > 8000 && strstr(out, "llmproxy[") != NULL, "it holds the text, nothing from elsewhere");
    free(out);
    out = capture(control_chars, &n);
    ok(n > 0 && strstr(out, "model=a?b?c?d\n") != NULL, "control characters become '?'");
    free(out);
    out = capture(message, &n);
    ok(n > 0 && n <= 8192 && out[n - 1] == '\n' &&
           strstr(out, "error tests/unit/test_log.c:") != NULL,
       "LOG_ERROR with a long message: one line with file and line");
    free(out);
    /* LLMPROXY_LOG_FORMAT=json: one object per line, strings escaped */
    json_mode = 1;
    out = capture(control_chars, &n);
    ok(n > 0 && strncmp(out, "{\"time\":\"", 9) == 0 && strstr(out, "\"pid\":") != NULL &&
           strstr(out, "\"msg\":\"model=a\\u000ab\\u000dc\\u0001d\"}\n") != NULL,
       "json: a plain line is a msg, control characters escaped: %s", out);
    free(out);
    out = capture(message, &n);
    ok(n > 0 && strstr(out, "\"level\":\"error\",\"src\":\"tests/unit/test_log.c:") != NULL &&
           out[n - 2] == '}' && out[n - 1] == '\n',
       "json: LOG_ERROR has level and src");
    free(out);
    out = capture(long_line, &n);
    ok(n > 0 && out[n - 2] == '}' && memchr(out, '\n', n) == out + n - 1,
       "json: a line too long stays one whole object");
    free(out);
    char e[16];
    size_t k = 0;
    ok(!log_json_escape(e, sizeof(e), &k, "\"\"\"\"\"\"\"\"\"\"") && k < sizeof(e),
       "escaping stops at the buffer's end (%zu)", k);
    json_mode = 0;
    out = capture(held_lines, &n);
    size_t before = 0, after = 0;
    sscanf(held_seen, "%zu %zu", &before, &after);
    const char *l1 = strstr(out, "req=1 first"), *l2 = strstr(out, "req=2 second");
    const char *w = strstr(out, "urgent"), *l3 = strstr(out, "req=3 third");
    ok(before == 0, "log_hold: the lines are held (%zu bytes out)", before);
    ok(after > 0 && l1 != NULL && l2 != NULL && w != NULL && l1 < l2 && l2 < w,
       "a log_msg line goes at once, after the held ones, in order");
    ok(l3 != NULL && l3 > w, "log_hold(false) writes what is held");
    free(out);
    return tap_done();
}
