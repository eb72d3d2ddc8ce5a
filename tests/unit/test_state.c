/* test_state.c - unit tests of state.c: shared counters across processes */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/state.c"
#include "tap.h"

#include <sys/wait.h>

int main(void)
{
    char path[] = "/tmp/llmproxy-state-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    char err[256];
    struct state *st = state_open(path, err, sizeof(err));
    ok(st != NULL, "state file created: %s", st ? "ok" : err);
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "state file is 0600");
    ok(state_next(st, "m", "b") == 0 && state_next(st, "m", "b") == 1, "counter counts");
    ok(state_next(st, "m", NULL) == 0, "separate names, separate counters");
    ok(state_next(st, "mb", NULL) == 0 && state_next(st, "m", "b") == 2,
       "(\"mb\") and (\"m\",\"b\") do not collide");
    /* four processes, 10000 increments each, on the same file */
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            struct state *s2 = state_open(path, err, sizeof(err));
            for (int i = 0; i < 10000; i++) {
                state_next(s2, "shared", "x");
            }
            state_close(s2);
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++) {
        wait(NULL);
    }
    ok(state_next(st, "shared", "x") == 40000, "exact across processes");
    struct state *again = state_open(path, err, sizeof(err));
    ok(again && state_next(again, "shared", "x") == 40001, "survives reopening");
    state_close(again);
    for (int i = 0; i < STATE_SLOTS + 10; i++) {
        char name[32];
        snprintf(name, sizeof(name), "n%d", i);
        state_next(st, name, NULL);
    }
    ok(1, "a full table still answers");
    ok(state_next(NULL, "x", NULL) == 0 && state_next(NULL, "x", NULL) == 1,
       "without a file: per-process counters");
    state_close(st);
    unlink(path);
    FILE *f = fopen(path, "w");
    fputs("not a state file, with some bytes", f);
    fclose(f);
    ok(state_open(path, err, sizeof(err)) == NULL, "refuses a foreign file: %s", err);
    unlink(path);
    return tap_done();
}
