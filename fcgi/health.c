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

enum { FAILS = 0, OPEN_UNTIL = 1, OPENED = 2, TRIAL = 3 };

static uint64_t open_ms(uint64_t times)
{
    uint64_t ms = HEALTH_OPEN_BASE_MS;
    for (uint64_t i = 1; i < times && ms < HEALTH_OPEN_CAP_MS; i++) {
        ms *= 2;
    }
    return ms > HEALTH_OPEN_CAP_MS ? HEALTH_OPEN_CAP_MS : ms;
}

void health_backend_failed(uint64_t *w, uint64_t now_ms, bool trial)
{
    if (trial) {
        uint64_t times = __atomic_add_fetch(&w[OPENED], 1, __ATOMIC_ACQ_REL);
        STORE(&w[OPEN_UNTIL], now_ms + open_ms(times));
        STORE(&w[TRIAL], 0);
        return;
    }
    uint64_t fails = __atomic_add_fetch(&w[FAILS], 1, __ATOMIC_ACQ_REL);
    if (fails < HEALTH_THRESHOLD) {
        return;
    }
    /* closed -> open, exactly once however many fail at the same moment */
    uint64_t closed = 0;
    if (__atomic_compare_exchange_n(&w[OPEN_UNTIL], &closed, now_ms + HEALTH_OPEN_BASE_MS, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        STORE(&w[OPENED], 1);
        STORE(&w[TRIAL], 0);
    }
}

void health_backend_ok(uint64_t *w)
{
    STORE(&w[FAILS], 0);
    STORE(&w[OPEN_UNTIL], 0);
    STORE(&w[OPENED], 0);
    STORE(&w[TRIAL], 0);
}

uint64_t health_backend_wait(uint64_t *w, uint64_t now_ms, uint64_t lease_ms, uint64_t *trial)
{
    *trial = 0;
    if (lease_ms < HEALTH_TRIAL_MS) {
        lease_ms = HEALTH_TRIAL_MS;
    }
    uint64_t until = LOAD(&w[OPEN_UNTIL]);
    if (until == 0) {
        return 0; /* closed */
    }
    uint64_t left = remaining(until, now_ms, HEALTH_OPEN_CAP_MS);
    if (left > 0) {
        return left; /* open */
    }
    /* half-open: exactly one caller gets the trial */
    uint64_t t = LOAD(&w[TRIAL]);
    uint64_t busy = remaining(t, now_ms, HEALTH_TRIAL_CAP_MS);
    if (busy > 0) {
        return busy;
    }
    uint64_t stamp = now_ms + lease_ms;
    if (__atomic_compare_exchange_n(&w[TRIAL], &t, stamp, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        *trial = stamp;
        return 0;
    }
    return HEALTH_TRIAL_MS;
}

enum health_circuit health_circuit_view(const uint64_t *w, uint64_t now_ms, uint64_t *open_ms,
                                        uint64_t *fails)
{
    uint64_t until = LOAD(&w[OPEN_UNTIL]);
    *fails = LOAD(&w[FAILS]);
    *open_ms = 0;
    if (until == 0) {
        return HEALTH_CLOSED;
    }
    *open_ms = remaining(until, now_ms, HEALTH_OPEN_CAP_MS);
    return *open_ms > 0 ? HEALTH_OPEN : HEALTH_HALF_OPEN;
}

const char *health_circuit_name(enum health_circuit c)
{
    return c == HEALTH_OPEN ? "open" : c == HEALTH_HALF_OPEN ? "half-open" : "closed";
}

void health_backend_trial_release(uint64_t *w, uint64_t stamp)
{
    __atomic_compare_exchange_n(&w[TRIAL], &stamp, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
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
