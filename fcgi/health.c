/* health.c - key cooldowns and backend circuits over shared words (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "health.h"

#include <time.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

uint64_t health_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Remaining time of a deadline, treating one beyond cap as a clock step. */
static uint64_t remaining(uint64_t until, uint64_t now, uint64_t cap)
{
    if (until <= now || until - now > cap) {
        return 0;
    }
    return until - now;
}

void health_key_cool(uint64_t *w, uint64_t now_ms, uint64_t ms, enum health_reason why)
{
    uint64_t until = now_ms + ms;
    /* never shorten a longer cooldown another process set */
    uint64_t cur = LOAD(&w[0]);
    while (remaining(cur, now_ms, HEALTH_429_CAP_MS) < ms) {
        if (__atomic_compare_exchange_n(&w[0], &cur, until, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            STORE(&w[1], (uint64_t)why);
            return;
        }
    }
}

uint64_t health_key_wait(const uint64_t *w, uint64_t now_ms, enum health_reason *why)
{
    uint64_t left = remaining(LOAD(&w[0]), now_ms, HEALTH_429_CAP_MS);
    if (why != NULL) {
        *why = left ? (enum health_reason)LOAD(&w[1]) : HEALTH_NONE;
    }
    return left;
}

void health_key_clear(uint64_t *w)
{
    STORE(&w[0], 0);
    STORE(&w[1], 0);
}

void health_backend_failed(uint64_t *w, uint64_t now_ms)
{
    uint64_t fails = __atomic_add_fetch(&w[2], 1, __ATOMIC_ACQ_REL);
    if (fails < HEALTH_THRESHOLD) {
        return;
    }
    uint64_t opened = __atomic_fetch_add(&w[4], 1, __ATOMIC_ACQ_REL);
    uint64_t ms = HEALTH_OPEN_BASE_MS;
    for (uint64_t i = 0; i < opened && ms < HEALTH_OPEN_CAP_MS; i++) {
        ms *= 2;
    }
    if (ms > HEALTH_OPEN_CAP_MS) {
        ms = HEALTH_OPEN_CAP_MS;
    }
    STORE(&w[3], now_ms + ms);
    STORE(&w[5], 0);
}

void health_backend_ok(uint64_t *w)
{
    STORE(&w[2], 0);
    STORE(&w[3], 0);
    STORE(&w[4], 0);
    STORE(&w[5], 0);
}

uint64_t health_backend_wait(uint64_t *w, uint64_t now_ms)
{
    uint64_t until = LOAD(&w[3]);
    if (until == 0) {
        return 0; /* closed */
    }
    uint64_t left = remaining(until, now_ms, HEALTH_OPEN_CAP_MS);
    if (left > 0) {
        return left; /* open */
    }
    /* half-open: exactly one caller gets the trial */
    uint64_t trial = LOAD(&w[5]);
    uint64_t busy = remaining(trial, now_ms, HEALTH_TRIAL_MS);
    if (busy > 0) {
        return busy;
    }
    if (__atomic_compare_exchange_n(&w[5], &trial, now_ms + HEALTH_TRIAL_MS, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    return HEALTH_TRIAL_MS;
}

uint64_t health_429_ms(long retry_after_s, uint64_t rnd)
{
    if (retry_after_s >= 0) {
        uint64_t ms = (uint64_t)retry_after_s * 1000;
        if (ms == 0) {
            ms = 1000; /* "retry now" still means not this very instant */
        }
        return ms > HEALTH_429_CAP_MS ? HEALTH_429_CAP_MS : ms;
    }
    return HEALTH_429_DEFAULT_MS + rnd % (HEALTH_429_DEFAULT_MS / 2 + 1);
}
