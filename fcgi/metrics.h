/* metrics.h - request metrics as counters and histograms in the shared state */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_METRICS_H
#define LLMPROXY_METRICS_H

#include "buf.h"
#include "state.h"

#include <stdbool.h>
#include <stdint.h>

/* Every value lives in runtime.state (namespace STATE_NS_METRIC), so every
 * thread and process of an instance, CGI processes too, adds to the same
 * counters and a scrape by any program sees their sum. Labels are only
 * configured names (model, backend, client key name, key index) and fixed
 * sets (status codes, outcomes), so the number of series stays bounded.
 *
 * Histograms keep one counter per bucket (not cumulative) and the sum in
 * microseconds; the bounds are fixed (seconds):
 *   time to first byte  0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60
 *   request duration    0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 120 300 600 */
#define METRICS_TTFB_BUCKETS 15
#define METRICS_DURATION_BUCKETS 16

enum metrics_hist { METRICS_TTFB = 0, METRICS_DURATION = 1 };

/* The upper bounds of a histogram's buckets in microseconds (*n of them). */
const uint64_t *metrics_bounds(enum metrics_hist h, int *n);
/* The bucket a value falls in: 0..n-1, or n for +Inf. */
int metrics_bucket(enum metrics_hist h, uint64_t us);

/* Recording, on the hot path: each is a few atomic adds. model NULL or ""
 * (the request named no configured model) is recorded as "". */
void metrics_request(struct state *st, const char *model, int status);
void metrics_attempt(struct state *st, const char *model, const char *backend, const char *outcome);
/* key: the client key's name, "" for keyless requests */
void metrics_usage(struct state *st, const char *model, const char *backend, const char *key,
                   uint64_t prompt, uint64_t completion, uint64_t cost_micro);
void metrics_observe(struct state *st, enum metrics_hist h, const char *model, uint64_t us);
/* A backend's last success and last failure (for /admin/health): outcome
 * is a policy outcome, status the HTTP status (0: none). */
void metrics_backend_ok(struct state *st, const char *model, const char *backend, uint64_t now_ms);
void metrics_backend_error(struct state *st, const char *model, const char *backend,
                           uint64_t now_ms, int outcome, int status);
struct metrics_last {
    uint64_t ok_ms, error_ms; /* 0: never */
    int outcome;              /* -1: none */
    int status;
};
void metrics_last_get(struct state *st, const char *model, const char *backend,
                      struct metrics_last *out);
/* The recent past per (model, backend), for the status page: attempts and
 * failures per wall-clock minute for the last hour, and the distributions
 * of answer time and time to first byte for the last 5 minutes (buckets in
 * ms: 5 10 25 50 100 250 500 1000 2500 5000 10000 30000 60000 +Inf). Rings
 * of minutes in the shared state; a minute's slot is reset when it comes
 * round again (a count racing that reset may be lost: this is a view, not
 * billing). */
#define METRICS_RECENT_MINUTES 60
#define METRICS_RECENT_WINDOW 5
void metrics_recent_attempt(struct state *st, const char *model, const char *backend, bool failed,
                            uint64_t now_ms);
void metrics_recent_answer(struct state *st, const char *model, const char *backend,
                           uint64_t total_us, uint64_t ttfb_us, uint64_t now_ms);
struct metrics_recent {
    uint64_t per_minute[METRICS_RECENT_MINUTES]; /* attempts, oldest first, this minute last */
    uint64_t attempts, errors;                   /* the last 5 minutes */
    double latency_p50, latency_p95, ttfb_p50, ttfb_p95; /* ms; < 0: no answer */
};
void metrics_recent_get(struct state *st, const char *model, const char *backend, uint64_t now_ms,
                        struct metrics_recent *out);
/* The q-quantile (0..1) of bucket counts over the status page's bounds, ms,
 * interpolated within its bucket; < 0 when counts are all 0. */
double metrics_recent_quantile(const uint64_t *counts, double q);

/* Requests being served now: +1 when one starts, -1 when it ends. */
void metrics_active(struct state *st, int delta);

/* Reading, for a scrape (nothing is claimed). */
uint64_t metrics_requests(struct state *st, const char *model, int status);
uint64_t metrics_attempts(struct state *st, const char *model, const char *backend,
                          const char *outcome);
/* out: prompt, completion, cost_micro; false when never recorded */
bool metrics_usage_get(struct state *st, const char *model, const char *backend, const char *key,
                       uint64_t out[3]);
/* counts[0..n] (n+1 buckets, the last +Inf), *sum_us; false when never recorded */
bool metrics_hist_get(struct state *st, enum metrics_hist h, const char *model, uint64_t *counts,
                      uint64_t *sum_us);
int64_t metrics_active_get(struct state *st);

/* Text exposition helpers: a label value escaped as Prometheus wants
 * (backslash, double quote, newline). */
void metrics_label(struct buf *out, const char *value);

#endif
