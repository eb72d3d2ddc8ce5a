/* test_state.c - unit tests of state.c: the shared table across processes */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/state.c"
#include "tap.h"

#include <signal.h>
#include <sys/wait.h>

static char path[64];

static void fresh_path(void)
{
    snprintf(path, sizeof(path), "/tmp/llmproxy-state-XXXXXX");
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
}

/* Every key appears at most once in the table. */
static int duplicates(struct state *st)
{
    size_t n = (size_t)st->h->nslots;
    int dup = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = st->slots[i].key;
        for (size_t j = 1; k != 0 && j < STATE_PROBE * 2; j++) {
            if (st->slots[(i + j) & (n - 1)].key == k) {
                dup++;
            }
        }
    }
    return dup;
}

static void write_foreign_version(void)
{
    struct header h = {0};
    memcpy(h.magic, MAGIC, sizeof(MAGIC));
    h.version = 1;
    h.nslots = 4096;
    FILE *f = fopen(path, "w");
    fwrite(&h, sizeof(h), 1, f);
    fclose(f);
}

int main(void)
{
    char err[512];
    fresh_path();
    struct state *st = state_open(path, 0, err, sizeof(err));
    ok(st != NULL, "state file created: %s", st ? "ok" : err);
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "state file is 0600");
    ok(sb.st_size == (off_t)file_size_for(STATE_MIN_SLOTS), "sized for the minimum table");
    ok(state_next(st, STATE_NS_ROTATION, "m", "b") == 0 &&
           state_next(st, STATE_NS_ROTATION, "m", "b") == 1,
       "counter counts");
    ok(state_next(st, STATE_NS_ROTATION, "m", NULL) == 0, "separate names, separate counters");
    ok(state_next(st, STATE_NS_ROTATION, "mb", NULL) == 0 &&
           state_next(st, STATE_NS_ROTATION, "m", "b") == 2,
       "(\"mb\") and (\"m\",\"b\") do not collide");
    state_next(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL);
    ok(state_peek(st, STATE_NS_ROTATION, STATE_CONFIG_GENERATION, NULL) == 0 &&
           state_peek(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) == 1,
       "a model named config-generation does not share the reload counter");
    ok(state_words(st, STATE_NS_KEY, "u", "k", NULL) !=
           state_words(st, STATE_NS_CIRCUIT, "u", "k", NULL),
       "namespaces keep words apart");

    /* four processes, 10000 increments each, on the same file */
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            struct state *s2 = state_open(path, 0, err, sizeof(err));
            for (int i = 0; i < 10000; i++) {
                state_next(s2, STATE_NS_ROTATION, "shared", "x");
            }
            state_close(s2);
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++) {
        wait(NULL);
    }
    ok(state_next(st, STATE_NS_ROTATION, "shared", "x") == 40000, "exact across processes");
    struct state *again = state_open(path, 0, err, sizeof(err));
    ok(again && state_next(again, STATE_NS_ROTATION, "shared", "x") == 40001, "survives reopening");
    state_close(again);

    /* a process killed while it holds the claim lock leaves it usable */
    pid_t holder = fork();
    if (holder == 0) {
        struct state *s2 = state_open(path, 0, err, sizeof(err));
        lock(s2);
        pause(); /* killed holding the lock */
        _exit(0);
    }
    usleep(100000);
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    int64_t t0 = now_us();
    ok(state_words(st, STATE_NS_KEY, "after", "the kill", NULL) != NULL && now_us() - t0 < 1000000,
       "a lock holder killed with SIGKILL does not block the next claim");

    /* processes claiming names, killed at random moments */
    for (int round = 0; round < 8; round++) {
        pid_t kid = fork();
        if (kid == 0) {
            struct state *s2 = state_open(path, 0, err, sizeof(err));
            for (int i = 0;; i++) {
                char name[32];
                snprintf(name, sizeof(name), "k%d-%d", round, i % 500);
                state_next(s2, STATE_NS_ROTATION, name, NULL);
            }
        }
        usleep(20000 + (useconds_t)(round * 7000));
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
    }
    ok(duplicates(st) == 0, "kill -9 mid-claim leaves no name twice in the table");
    ok(state_words(st, STATE_NS_KEY, "and", "still", NULL) != NULL, "and the table still claims");

    /* idle slots are reused when a name finds no room */
    struct state_stats ss;
    state_stats(st, &ss);
    uint64_t used_before = ss.used;
    size_t n = (size_t)st->h->nslots;
    for (size_t i = 0; i < n; i++) {
        if (st->slots[i].key == 0) {
            st->slots[i].key = 0x5eed000000000000ull | i; /* filled by others, long idle */
            st->slots[i].used_s = 1000;
        }
    }
    uint64_t *fresh = state_words(st, STATE_NS_KEY, "new", "name", NULL);
    state_stats(st, &ss);
    ok(fresh != NULL && ss.reclaimed == 1 && fresh[0] == 0,
       "a full table gives a long-idle slot to a new name (reclaimed %llu)",
       (unsigned long long)ss.reclaimed);
    ok(ss.used == used_before, "used counts claimed free slots only");
    for (size_t i = 0; i < n; i++) {
        st->slots[i].used_s = wall_ms() / 1000; /* everything busy now */
    }
    ok(state_words(st, STATE_NS_KEY, "no", "room", NULL) == NULL, "no idle slot: refused");
    uint64_t c1 = state_next(st, STATE_NS_ROTATION, "no room", NULL);
    uint64_t c2 = state_next(st, STATE_NS_ROTATION, "no room", NULL);
    state_stats(st, &ss);
    ok(ss.refused >= 2 && c2 == c1 + 1, "refusals are counted (%llu) and counters still count",
       (unsigned long long)ss.refused);
    state_close(st);
    unlink(path);

    struct state *priv = state_private();
    ok(state_next(priv, STATE_NS_ROTATION, "x", NULL) == 0 &&
           state_next(priv, STATE_NS_ROTATION, "x", NULL) == 1,
       "without a file: per-process counters");
    state_stats(priv, &ss);
    ok(ss.shared == 0, "and it says so");
    state_close(priv);

    /* files of another version or size */
    write_foreign_version();
    st = state_open(path, 0, err, sizeof(err));
    ok(st != NULL && st->h->version == STATE_VERSION,
       "a file of another version that nobody uses is replaced");
    state_close(st);
    FILE *f = fopen(path, "w");
    fputs("not a state file, with some bytes", f);
    fclose(f);
    st = state_open(path, 0, err, sizeof(err));
    ok(st != NULL, "so is garbage (a crash mid-write of an old build)");
    state_close(st);
    st = state_open(path, STATE_MIN_SLOTS * 4, err, sizeof(err));
    ok(st != NULL && st->h->nslots == STATE_MIN_SLOTS * 4,
       "a table too small for the config grows while nobody uses it");
    state_close(st);

    /* another version in use: never mixed */
    write_foreign_version();
    int sync[2];
    if (pipe(sync) != 0) {
        return 1;
    }
    pid_t user = fork();
    if (user == 0) {
        int fd = open(path, O_RDONLY);
        flock(fd, LOCK_SH);
        if (write(sync[1], "x", 1) != 1) {
            _exit(1);
        }
        pause();
        _exit(0);
    }
    char x;
    ok(read(sync[0], &x, 1) == 1, "another version's process holds the file");
    st = state_open(path, 0, err, sizeof(err));
    ok(st == NULL && strstr(err, "another llmproxy version") != NULL, "refused: %s", err);
    kill(user, SIGKILL);
    waitpid(user, NULL, 0);
    st = state_open(path, 0, err, sizeof(err));
    ok(st != NULL, "and taken over once it is gone");
    state_close(st);
    unlink(path);
    return tap_done();
}
