/* limit.c - per-minute limits as token buckets on one shared word (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "limit.h"

#include <stdio.h>

/* Microseconds one unit takes to come back (at least 1). */
static uint64_t interval(uint64_t per_minute)
{
    uint64_t t = LIMIT_WINDOW_US / (per_minute ? per_minute : 1);
    return t ? t : 1;
}

static void view(uint64_t tat, uint64_t now, uint64_t t, struct limit_view *v)
{
    uint64_t used = tat > now ? tat - now : 0; /* how far the bucket is drawn down */
    v->remaining = used >= LIMIT_WINDOW_US ? 0 : (LIMIT_WINDOW_US - used) / t;
    v->reset_us = used;
    v->retry_after = 0;
}

static uint64_t seconds_up(uint64_t us)
{
    uint64_t s = (us + 999999) / 1000000;
    return s ? s : 1;
}

/* A bucket drawn down further than it ever can be (requests: one window;
 * tokens: LIMIT_OVERDRAW windows) means the wall clock stepped back: it is
 * taken as full again rather than locking the key out for the step. */
#define LIMIT_OVERDRAW 10

static uint64_t sane(uint64_t tat, uint64_t now, uint64_t most)
{
    return tat > now && tat - now > most ? now : tat;
}

bool limit_take(uint64_t *w, uint64_t now, uint64_t per_minute, struct limit_view *v)
{
    uint64_t t = interval(per_minute);
    uint64_t tat = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    for (;;) {
        uint64_t base = sane(tat, now, LIMIT_WINDOW_US);
        base = base > now ? base : now;
        uint64_t next = base + t;
        if (next - now > LIMIT_WINDOW_US) {
            view(tat, now, t, v);
            v->retry_after = seconds_up(next - now - LIMIT_WINDOW_US);
            return false;
        }
        if (__atomic_compare_exchange_n(w, &tat, next, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            view(next, now, t, v);
            return true;
        }
    }
}

bool limit_check(uint64_t *w, uint64_t now, uint64_t per_minute, struct limit_view *v)
{
    uint64_t t = interval(per_minute);
    uint64_t tat =
        sane(__atomic_load_n(w, __ATOMIC_ACQUIRE), now, LIMIT_OVERDRAW * LIMIT_WINDOW_US);
    view(tat, now, t, v);
    if (tat > now && tat - now + t > LIMIT_WINDOW_US) {
        v->retry_after = seconds_up(tat - now + t - LIMIT_WINDOW_US);
        return false;
    }
    return true;
}

void limit_charge(uint64_t *w, uint64_t now, uint64_t per_minute, uint64_t n)
{
    uint64_t t = interval(per_minute);
    uint64_t tat = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    uint64_t add = n > UINT64_MAX / t / 4 ? UINT64_MAX / 4 : n * t;
    for (;;) {
        uint64_t base = sane(tat, now, LIMIT_OVERDRAW * LIMIT_WINDOW_US);
        base = base > now ? base : now;
        uint64_t most =
            now + LIMIT_OVERDRAW * LIMIT_WINDOW_US; /* one answer locks 10 min at most */
        uint64_t next = base + add > most || base + add < base ? most : base + add;
        if (__atomic_compare_exchange_n(w, &tat, next, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            return;
        }
    }
}

void limit_duration(uint64_t us, char *out, unsigned long n)
{
    uint64_t ms = (us + 999) / 1000;
    if (ms < 1000) {
        snprintf(out, n, "%llums", (unsigned long long)ms);
        return;
    }
    uint64_t s = (ms + 999) / 1000;
    if (s < 60) {
        snprintf(out, n, "%llus", (unsigned long long)s);
    } else {
        snprintf(out, n, "%llum%llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
    }
}
