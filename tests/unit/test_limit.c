/* test_limit.c - unit tests of limit.c: buckets, exact across processes */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/limit.c"
#include "tap.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    uint64_t w = 0;
    uint64_t now = 1800000000000000ull;
    struct limit_view v;
    int taken = 0;
    for (int i = 0; i < 100; i++) {
        taken += limit_take(&w, now, 60, &v);
    }
    ok(taken == 60, "Rpm 60: 60 at once (%d)", taken);
    ok(!limit_take(&w, now, 60, &v) && v.retry_after == 1 && v.remaining == 0,
       "then refused, Retry-After 1 s");
    ok(!limit_take(&w, now + 999999, 60, &v) && limit_take(&w, now + 1000000, 60, &v),
       "one more each 60/N s");
    w = 0;
    taken = 0;
    for (int i = 0; i < 10; i++) {
        taken += limit_take(&w, now, 2, &v);
    }
    ok(taken == 2 && !limit_take(&w, now, 2, &v) && v.retry_after == 30,
       "Rpm 2: two, then wait 30 s (%llu)", (unsigned long long)v.retry_after);
    w = 0;
    limit_take(&w, now, 10, &v);
    ok(v.remaining == 9 && v.reset_us == 6000000, "remaining 9, full again in 6 s");

    uint64_t t = 0;
    ok(limit_check(&t, now, 1000, &v) && v.remaining == 1000, "Tpm: a full bucket admits");
    limit_charge(&t, now, 1000, 999);
    ok(limit_check(&t, now, 1000, &v) && v.remaining == 1, "one token left: still admitted");
    limit_charge(&t, now, 1000, 5000);
    ok(!limit_check(&t, now, 1000, &v) && v.retry_after >= 60,
       "an overdraft waits until the bucket is above zero (%llu s)",
       (unsigned long long)v.retry_after);
    ok(limit_check(&t, now + 301 * 1000000ull, 1000, &v), "and then admits again");

    /* four processes taking from one shared bucket of 1000: exactly 1000 */
    uint64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared[0] = 0;
    shared[1] = 0;
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            struct limit_view lv;
            uint64_t got = 0;
            for (int i = 0; i < 1000; i++) {
                got += limit_take(&shared[0], now, 1000, &lv);
            }
            __atomic_add_fetch(&shared[1], got, __ATOMIC_RELAXED);
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++) {
        wait(NULL);
    }
    ok(shared[1] == 1000, "exact across processes: %llu of 4000 tries",
       (unsigned long long)shared[1]);
    char d[32];
    limit_duration(250000, d, sizeof(d));
    ok(strcmp(d, "250ms") == 0, "duration %s", d);
    limit_duration(1000000, d, sizeof(d));
    ok(strcmp(d, "1s") == 0, "duration %s", d);
    limit_duration(360000000, d, sizeof(d));
    ok(strcmp(d, "6m0s") == 0, "duration %s", d);
    /* the wall clock steps back an hour: a key is not locked out for it */
    uint64_t c = 0;
    for (int i = 0; i < 6; i++) {
        limit_take(&c, now, 6, &v);
    }
    ok(!limit_take(&c, now, 6, &v), "Rpm 6: the seventh refused");
    ok(limit_take(&c, now - 3600000000ull, 6, &v), "after the clock steps back 1 h: served again");
    uint64_t tk = 0;
    limit_charge(&tk, now, 100, 1000000000);
    ok(!limit_check(&tk, now, 100, &v) && v.retry_after <= 600 && v.retry_after > 500,
       "one huge answer locks tokens for 10 minutes at most (%llu s)",
       (unsigned long long)v.retry_after);
    ok(limit_check(&tk, now - 3600000000ull, 100, &v), "tokens too, after a step back");
    return tap_done();
}
