/* metrics_cost.c - what recording one request's metrics costs on the hot path (make bench) */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/common.h"
#include "../../fcgi/metrics.h"
#include "../../fcgi/policy.h"
#include "../../fcgi/state.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Everything proxy.c and attempt.c record for one answered request with one
 * attempt: the active gauge up and down, the attempt (counter and the
 * status page's minute), the backend's last success, tokens and cost, the
 * request counter, both histograms and the status page's distributions. */
static void one_request(struct state *st, const char *model, const char *backend, uint64_t ms)
{
    metrics_active(st, 1);
    metrics_backend_ok(st, model, backend, ms);
    metrics_attempt(st, model, backend, policy_rule(PO_ANSWER)->name);
    metrics_recent_attempt(st, model, backend, false, ms);
    metrics_usage(st, model, backend, "team-a", 120, 40, 300);
    metrics_request(st, model, 200);
    metrics_observe(st, METRICS_DURATION, model, 1234567);
    metrics_observe(st, METRICS_TTFB, model, 23456);
    metrics_recent_answer(st, model, backend, 1234567, 23456, ms);
    metrics_active(st, -1);
}

int main(void)
{
    char dir[] = "/tmp/llmproxy-metrics-bench-XXXXXX", path[128], err[256];
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    snprintf(path, sizeof(path), "%s/runtime.state", dir);
    struct state *st = state_open(path, 0, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const int n = 2000000;
    uint64_t ms = now_ms();
    for (int i = 0; i < 10000; i++) {
        one_request(st, "gpt-4o", "openai", ms);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        one_request(st, "gpt-4o", "openai", ms);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n;
    printf("# recording one request's metrics (10 updates of the shared state), -O2: %.0f ns\n",
           ns);
    state_close(st);
    unlink(path);
    rmdir(dir);
    return 0;
}
