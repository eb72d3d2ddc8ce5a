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
    ok(health_backend_wait(c, now) == 0, "a closed circuit lets requests through");
    health_backend_failed(c, now);
    health_backend_failed(c, now);
    ok(health_backend_wait(c, now) == 0, "two failures: still closed");
    health_backend_failed(c, now);
    ok(health_backend_wait(c, now) == HEALTH_OPEN_BASE_MS, "three in a row: open");
    ok(health_backend_wait(c, now + HEALTH_OPEN_BASE_MS) == 0, "expired: one trial goes through");
    ok(health_backend_wait(c, now + HEALTH_OPEN_BASE_MS) > 0, "and only one");
    health_backend_failed(c, now + HEALTH_OPEN_BASE_MS);
    ok(health_backend_wait(c, now + HEALTH_OPEN_BASE_MS) == 2 * HEALTH_OPEN_BASE_MS,
       "a failed trial opens it for twice as long");
    for (int i = 0; i < 20; i++) {
        health_backend_failed(c, now);
    }
    ok(health_backend_wait(c, now) == HEALTH_OPEN_CAP_MS, "the open interval is capped");
    health_backend_ok(c);
    ok(health_backend_wait(c, now) == 0, "a success closes it");

    /* shared by processes through the state file */
    char path[] = "/tmp/llmproxy-health-XXXXXX";
    close(mkstemp(path));
    unlink(path);
    char err[256];
    struct state *st = state_open(path, err, sizeof(err));
    uint64_t *kw = state_words(st, "key", "http://h/v1", "sk-1");
    ok(kw != NULL, "health words in the state file");
    if (fork() == 0) {
        struct state *s2 = state_open(path, err, sizeof(err));
        health_key_cool(state_words(s2, "key", "http://h/v1", "sk-1"), health_now_ms(), 60000,
                        HEALTH_RATE_LIMITED);
        _exit(0);
    }
    wait(NULL);
    ok(health_key_wait(kw, health_now_ms(), &why) > 50000 && why == HEALTH_RATE_LIMITED,
       "a cooldown set by another process is seen");
    ok(state_words(st, "key", "http://h/v1", "sk-2") != kw, "each key its own record");
    state_close(st);
    unlink(path);
    return tap_done();
}
