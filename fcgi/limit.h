/* limit.h - per-minute limits as token buckets on one shared word (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_LIMIT_H
#define LLMPROXY_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* A bucket of N refilled over a minute, kept as one 64-bit word of the
 * shared state (the generic cell rate algorithm: the time, in wall-clock
 * microseconds, when the bucket would be full again). Changed by
 * compare-and-swap only, so it is exact across every thread and process. */
#define LIMIT_WINDOW_US 60000000ull

struct limit_view {
    uint64_t remaining;   /* units left now */
    uint64_t reset_us;    /* until the bucket is full again */
    uint64_t retry_after; /* when refused: whole seconds until one unit is back (>= 1) */
};

/* Requests: takes one unit when the bucket has one. */
bool limit_take(uint64_t *w, uint64_t now_us, uint64_t per_minute, struct limit_view *v);
/* Tokens: true while the bucket is not empty (nothing is taken). */
bool limit_check(uint64_t *w, uint64_t now_us, uint64_t per_minute, struct limit_view *v);
/* Tokens used by an answer, charged when it ends (may overdraw the bucket:
 * the key then waits until it is refilled past zero). */
void limit_charge(uint64_t *w, uint64_t now_us, uint64_t per_minute, uint64_t n);

/* A duration for the x-ratelimit-reset-* headers: "250ms", "1s", "6m0s". */
void limit_duration(uint64_t us, char *out, unsigned long n);

#endif
