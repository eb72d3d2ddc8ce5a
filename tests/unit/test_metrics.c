/* test_metrics.c - unit tests of metrics.c: buckets, counters summed across processes */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/metrics.c"
#include "tap.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double ns_per(struct state *st, int n)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        metrics_request(st, "gpt-4o", 200);
        metrics_attempt(st, "gpt-4o", "openai", "ok");
        metrics_usage(st, "gpt-4o", "openai", "team-a", 10, 20, 30);
        metrics_observe(st, METRICS_DURATION, "gpt-4o", 1234567);
        metrics_observe(st, METRICS_TTFB, "gpt-4o", 23456);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n;
}

int main(void)
{
    ok(metrics_bucket(METRICS_TTFB, 0) == 0 && metrics_bucket(METRICS_TTFB, 1000) == 0 &&
           metrics_bucket(METRICS_TTFB, 1001) == 1,
       "a value on a bound falls in that bucket (le)");
    ok(metrics_bucket(METRICS_TTFB, 60000000) == METRICS_TTFB_BUCKETS - 1 &&
           metrics_bucket(METRICS_TTFB, 60000001) == METRICS_TTFB_BUCKETS,
       "past the last bound: +Inf");
    ok(metrics_bucket(METRICS_DURATION, 600000000) == METRICS_DURATION_BUCKETS - 1,
       "durations reach 10 min");
    int n;
    const uint64_t *le = metrics_bounds(METRICS_DURATION, &n);
    int sorted = 1;
    for (int i = 1; i < n; i++) {
        sorted &= le[i] > le[i - 1];
    }
    ok(n == METRICS_DURATION_BUCKETS && sorted, "bounds ascend");

    char path[] = "/tmp/llmproxy-metrics-XXXXXX";
    ok(mkdtemp(path) != NULL, "temp dir");
    char file[256], err[256];
    snprintf(file, sizeof(file), "%s/runtime.state", path);
    struct state *st = state_open(file, 0, err, sizeof(err));
    ok(st != NULL, "state opens: %s", st ? "" : err);

    /* four processes add at once; the parent reads the sums */
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            struct state *s = state_open(file, 0, err, sizeof(err));
            for (int i = 0; i < 1000; i++) {
                metrics_request(s, "m", i % 10 == 0 ? 429 : 200);
                metrics_attempt(s, "m", "b", "ok");
                metrics_usage(s, "m", "b", "", 3, 4, 5);
                metrics_observe(s, METRICS_TTFB, "m", (uint64_t)(i % 4) * 20000000);
                metrics_active(s, 1);
                metrics_active(s, -1);
            }
            state_close(s);
            state_close(st); /* the parent's, inherited */
            _exit(0);
        }
    }
    int all = 1;
    for (int p = 0; p < 4; p++) {
        int ws;
        wait(&ws);
        all &= WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
    }
    ok(all, "children done");
    ok(metrics_requests(st, "m", 200) == 3600 && metrics_requests(st, "m", 429) == 400,
       "requests by status summed over processes (%llu, %llu)",
       (unsigned long long)metrics_requests(st, "m", 200),
       (unsigned long long)metrics_requests(st, "m", 429));
    ok(metrics_attempts(st, "m", "b", "ok") == 4000 &&
           metrics_attempts(st, "m", "b", "broken") == 0,
       "attempts by outcome");
    uint64_t u[3];
    ok(metrics_usage_get(st, "m", "b", "", u) && u[0] == 12000 && u[1] == 16000 && u[2] == 20000,
       "tokens and cost");
    ok(!metrics_usage_get(st, "m", "b", "nobody", u) && u[0] == 0, "a series never recorded");
    uint64_t counts[METRICS_TTFB_BUCKETS + 1], sum;
    ok(metrics_hist_get(st, METRICS_TTFB, "m", counts, &sum), "histogram read");
    /* values 0, 20 s, 40 s, 60 s: buckets le 0.001, le 30, le 60, le 60 */
    ok(counts[0] == 1000 && counts[METRICS_TTFB_BUCKETS - 2] == 1000 &&
           counts[METRICS_TTFB_BUCKETS - 1] == 2000 && counts[METRICS_TTFB_BUCKETS] == 0,
       "bucket counts (%llu %llu %llu %llu)", (unsigned long long)counts[0],
       (unsigned long long)counts[METRICS_TTFB_BUCKETS - 2],
       (unsigned long long)counts[METRICS_TTFB_BUCKETS - 1],
       (unsigned long long)counts[METRICS_TTFB_BUCKETS]);
    ok(sum == 4ull * 250 * (0 + 20000000 + 40000000 + 60000000), "sum in microseconds");
    ok(metrics_active_get(st) == 0, "active requests back to 0");
    metrics_active(st, 2);
    ok(metrics_active_get(st) == 2, "active requests counted");
    metrics_active(st, -3);
    ok(metrics_active_get(st) == 0, "never below zero when read");
    metrics_active(st, 4);
    int64_t base = metrics_active_get(st);
    pid_t child = fork();
    if (child == 0) {
        struct state *s = state_open(file, 0, err, sizeof(err));
        metrics_active(s, 5); /* dies with 5 in flight */
        int rc = metrics_active_get(s) == base + 5 ? 0 : 1;
        state_close(s);
        state_close(st);
        _exit(rc);
    }
    int cs;
    waitpid(child, &cs, 0);
    ok(base > 0 && WIFEXITED(cs) && WEXITSTATUS(cs) == 0 && metrics_active_get(st) == base,
       "a process that died with requests in flight no longer counts (%lld, %lld)", (long long)base,
       (long long)metrics_active_get(st));
    metrics_active(st, -4);

    /* the status page's rings */
    uint64_t t0 = 1800000000000ull; /* ms, on a minute */
    for (int i = 0; i < 10; i++) {
        metrics_recent_attempt(st, "m", "b", i < 3, t0 + 1000);
        metrics_recent_answer(st, "m", "b", (uint64_t)(i + 1) * 10000, 2000, t0 + 1000);
    }
    metrics_recent_attempt(st, "m", "b", false, t0 + 60000 * 2 + 5);
    struct metrics_recent rc;
    metrics_recent_get(st, "m", "b", t0 + 60000 * 2 + 10, &rc);
    ok(rc.per_minute[59] == 1 && rc.per_minute[58] == 0 && rc.per_minute[57] == 10,
       "attempts per minute, this minute last");
    ok(rc.attempts == 11 && rc.errors == 3, "the last 5 minutes: 11 attempts, 3 failed");
    ok(rc.latency_p50 > 25 && rc.latency_p50 <= 50 && rc.latency_p95 > 50 && rc.latency_p95 <= 100,
       "answer time p50 %.1f ms, p95 %.1f ms (10..100 ms answers)", rc.latency_p50, rc.latency_p95);
    ok(rc.ttfb_p50 > 0 && rc.ttfb_p50 <= 5, "time to first byte p50 %.1f ms", rc.ttfb_p50);
    metrics_recent_get(st, "m", "b", t0 + 60000 * 63, &rc);
    ok(rc.per_minute[0] == 0 && rc.attempts == 0 && rc.latency_p50 < 0,
       "an hour later: the minutes are gone");
    metrics_recent_attempt(st, "m", "b", true, t0 + 60000 * 60 + 1); /* the ring comes round */
    metrics_recent_get(st, "m", "b", t0 + 60000 * 60 + 2, &rc);
    ok(rc.per_minute[59] == 1 && rc.errors == 1, "a minute's slot is reset when it comes round");
    /* the clock steps back two hours after an hour ahead: the rings count again */
    for (int i = 0; i < 5; i++) {
        metrics_recent_attempt(st, "m", "c", false, t0 + 7200000 + 60000ull * (uint64_t)i);
    }
    metrics_recent_attempt(st, "m", "c", false, t0 + 120000);
    metrics_recent_attempt(st, "m", "c", false, t0 + 120001);
    metrics_recent_get(st, "m", "c", t0 + 120002, &rc);
    ok(rc.per_minute[59] == 2, "after the clock stepped back, this minute counts (%llu)",
       (unsigned long long)rc.per_minute[59]);
    uint64_t none[14] = {0};
    ok(metrics_recent_quantile(none, 0.5) < 0, "no answers: no quantile");

    struct buf b;
    buf_init(&b, 1024);
    metrics_label(&b, "a\"b\\c\nd");
    buf_append(&b, "", 1);
    ok(strcmp(b.data, "a\\\"b\\\\c\\nd") == 0, "label values escaped: %s", b.data);
    buf_reset(&b);
    metrics_label(&b, "M\xfcller caf\xc3\xa9 \xed\xa0\x80 \xf0\x9f\x98\x80");
    buf_append(&b, "", 1);
    ok(strcmp(b.data, "M\xef\xbf\xbdller caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                      "\xf0\x9f\x98\x80") == 0,
       "invalid UTF-8 in a label becomes U+FFFD, valid sequences stay");
    buf_cleanup(&b);

    /* the hot path: what one request records, on the shared file */
    ns_per(st, 1000);
    double ns = ns_per(st, 100000);
    printf("# recording one request's metrics: %.0f ns\n", ns);
    ok(ns < 20000, "recording is cheap (%.0f ns per request, sanitizer build)", ns);

    state_close(st);
    unlink(file);
    rmdir(path);
    return tap_done();
}
