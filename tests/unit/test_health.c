/* test_health.c - unit tests of health.c: key cooldowns, circuits, shared across processes */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/health.c"
#include "state.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    uint64_t w[STATE_WORDS] = {0};
    uint64_t now = 1700000000000ull;
    enum health_reason why;
    ok(health_key_wait(w, now, &why) == 0 && why == HEALTH_NONE, "a new key is usable");
    health_key_cool(w, now, 7000, HEALTH_RATE_LIMITED);
    ok(health_key_wait(w, now + 1000, &why) == 6000 && why == HEALTH_RATE_LIMITED,
       "a 429 cools the key for its Retry-After");
    health_key_cool(w, now, 2000, HEALTH_RATE_LIMITED);
    ok(health_key_wait(w, now, NULL) == 7000, "a shorter cooldown does not shorten a longer one");
    ok(health_key_wait(w, now + 7000, NULL) == 0, "usable again when it expires");
    health_key_cool(w, now, HEALTH_REJECTED_MS, HEALTH_REJECTED);
    ok(health_key_wait(w, now, &why) == HEALTH_REJECTED_MS && why == HEALTH_REJECTED,
       "401/403: long cooldown");
    ok(health_key_wait(w, now - 10 * HEALTH_429_CAP_MS, NULL) == 0,
       "a clock stepped far back does not lock a key for ever");
    health_key_clear(w);
    ok(health_key_wait(w, now, NULL) == 0, "cleared");

    ok(health_429_ms(3, 0) == 3000, "Retry-After seconds");
    ok(health_429_ms(0, 0) == 1000, "Retry-After 0 still waits a second");
    ok(health_429_ms(999999, 0) == HEALTH_429_CAP_MS, "huge Retry-After capped");
    uint64_t lo = health_429_ms(-1, 0), hi = health_429_ms(-1, 123456789);
    ok(lo == HEALTH_429_DEFAULT_MS && hi >= lo && hi <= lo + HEALTH_429_DEFAULT_MS / 2,
       "absent: default plus jitter (%llu, %llu)", (unsigned long long)lo, (unsigned long long)hi);

    uint64_t c[STATE_WORDS] = {0};
    uint64_t trial;
    ok(health_backend_wait(c, now, 0, &trial) == 0 && !trial,
       "a closed circuit lets requests through");
    health_backend_failed(c, now, false);
    health_backend_failed(c, now, false);
    ok(health_backend_wait(c, now, 0, &trial) == 0, "two failures: still closed");
    health_backend_failed(c, now, false);
    ok(health_backend_wait(c, now, 0, &trial) == HEALTH_OPEN_BASE_MS, "three in a row: open");
    for (int i = 0; i < 20; i++) {
        health_backend_failed(c, now, false); /* requests in flight failing together */
    }
    ok(health_backend_wait(c, now, 0, &trial) == HEALTH_OPEN_BASE_MS,
       "more failures of requests already in flight do not lengthen it");
    uint64_t t1 = now + HEALTH_OPEN_BASE_MS;
    ok(health_backend_wait(c, t1, 0, &trial) == 0 && trial, "expired: one trial goes through");
    uint64_t t2;
    ok(health_backend_wait(c, t1, 0, &t2) > 0 && !t2, "and only one");
    health_backend_failed(c, t1, false);
    ok(health_backend_wait(c, t1, 0, &t2) > 0 && c[1] <= t1,
       "a late failure of an older request does not reopen a half-open circuit");
    health_backend_failed(c, t1, true);
    ok(health_backend_wait(c, t1, 0, &t2) == 2 * HEALTH_OPEN_BASE_MS,
       "a failed trial opens it for twice as long");
    uint64_t t = t1;
    for (int i = 0; i < 20; i++) {
        t += HEALTH_OPEN_CAP_MS;
        health_backend_wait(c, t, 0, &t2);
        health_backend_failed(c, t, t2);
    }
    ok(health_backend_wait(c, t, 0, &t2) == HEALTH_OPEN_CAP_MS, "doubling stops at the cap");
    t += HEALTH_OPEN_CAP_MS;
    ok(health_backend_wait(c, t, 0, &trial) == 0 && trial, "half-open again: a trial");
    health_backend_trial_release(c, trial + 1);
    ok(health_backend_wait(c, t, 0, &t2) > 0 && t2 == 0, "only the holder's stamp gives it back");
    health_backend_trial_release(c, trial);
    ok(health_backend_wait(c, t, 0, &t2) == 0 && t2 != 0,
       "a trial given back without a verdict goes to the next caller at once");
    health_backend_trial_release(c, t2);
    ok(health_backend_wait(c, t, 100000, &t2) == 0 && t2 == t + 100000 &&
           health_backend_wait(c, t + 60000, 0, &trial) > 0 && trial == 0,
       "a trial's lease lasts as long as it asked for (longer than 30 s)");
    health_backend_ok(c);
    ok(health_backend_wait(c, t, 0, &trial) == 0 && !trial, "a success closes it");
    health_backend_failed(c, t, false);
    health_backend_failed(c, t, false);
    health_backend_failed(c, t, false);
    ok(health_backend_wait(c, t, 0, &trial) == HEALTH_OPEN_BASE_MS,
       "after closing, the next opening starts from the base again");

    /* shared by processes through the state file */
    char path[] = "/tmp/llmproxy-health-XXXXXX";
    close(mkstemp(path));
    unlink(path);
    char err[256];
    struct state *st = state_open(path, 0, err, sizeof(err));
    uint64_t *kw = state_words(st, STATE_NS_KEY, "http://h/v1", "sk-1", NULL);
    ok(kw != NULL, "health words in the state file");
    if (fork() == 0) {
        struct state *s2 = state_open(path, 0, err, sizeof(err));
        health_key_cool(state_words(s2, STATE_NS_KEY, "http://h/v1", "sk-1", NULL), health_now_ms(),
                        60000, HEALTH_RATE_LIMITED);
        _exit(0);
    }
    wait(NULL);
    ok(health_key_wait(kw, health_now_ms(), &why) > 50000 && why == HEALTH_RATE_LIMITED,
       "a cooldown set by another process is seen");
    ok(state_words(st, STATE_NS_KEY, "http://h/v1", "sk-2", NULL) != kw, "each key its own record");
    state_close(st);
    unlink(path);
    return tap_done();
}
