/* test_affinity.c - unit tests of affinity.c: the responses table, shared and bounded */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/affinity.c"
#include "tap.h"

#include <sys/wait.h>

int main(void)
{
    char dir[] = "/tmp/llmproxy-aff-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/responses.state", dir);
    char err[256];
    struct affinity *a = affinity_open(path, 64, err, sizeof(err));
    ok(a != NULL, "opened (%s)", a ? "ok" : err);
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "the file is 0600");
    struct affinity_entry e = {.model = affinity_hash("m", NULL),
                               .backend = affinity_hash("http://b", NULL),
                               .key = affinity_hash("sk-1", NULL),
                               .owner = 0,
                               .created_ms = affinity_now_ms()};
    affinity_put(a, "resp_1", &e);
    struct affinity_entry got;
    ok(affinity_get(a, "resp_1", 86400000, &got) && got.backend == e.backend && got.key == e.key &&
           got.model == e.model,
       "an entry comes back whole");
    ok(!affinity_get(a, "resp_2", 86400000, &got), "an unknown id is not found");
    ok(affinity_hash("ab", "c") != affinity_hash("a", "bc"), "hash parts are kept apart");
    /* another process sees it, and what it writes is seen here */
    pid_t pid = fork();
    if (pid == 0) {
        struct affinity *b = affinity_open(path, 1 << 20, err, sizeof(err));
        struct affinity_entry g;
        int rc = b != NULL && affinity_get(b, "resp_1", 86400000, &g) && g.key == e.key ? 0 : 1;
        struct affinity_entry e2 = e;
        e2.key = 42;
        if (b != NULL) {
            affinity_put(b, "resp_child", &e2);
        }
        affinity_close(b);
        affinity_close(a);
        _exit(rc);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "another process reads the entry");
    ok(affinity_get(a, "resp_child", 86400000, &got) && got.key == 42,
       "and its entry is read here (the file kept its first size)");
    /* age */
    struct affinity_entry old = e;
    old.created_ms = affinity_now_ms() - 31LL * 86400000;
    affinity_put(a, "resp_old", &old);
    ok(!affinity_get(a, "resp_old", 30LL * 86400000, &got), "an entry past its age is gone");
    affinity_forget(a, "resp_1");
    ok(!affinity_get(a, "resp_1", 86400000, &got), "a forgotten id is gone");
    /* bounded: far more ids than slots; the newest are kept */
    size_t used, slots;
    for (int i = 0; i < 10000; i++) {
        char id[32];
        snprintf(id, sizeof(id), "resp_n%d", i);
        e.created_ms = affinity_now_ms() - 10000 + i;
        affinity_put(a, id, &e);
    }
    affinity_stats(a, &used, &slots);
    ok(slots == 64 && used <= slots, "the table stays at its size (%zu of %zu used)", used, slots);
    ok(affinity_get(a, "resp_n9999", 86400000, &got), "the newest id is kept");
    size_t kept = 0;
    for (int i = 9900; i < 10000; i++) {
        char id[32];
        snprintf(id, sizeof(id), "resp_n%d", i);
        kept += affinity_get(a, id, 86400000, &got);
    }
    ok(kept >= 40, "most of the newest 100 are kept (%zu)", kept);
    affinity_close(a);
    /* a file that is not a table is refused, not used */
    FILE *f = fopen(path, "w");
    fputs("garbage", f);
    fclose(f);
    ok(affinity_open(path, 64, err, sizeof(err)) == NULL && strstr(err, "not a responses table"),
       "a foreign file is refused: %s", err);
    struct affinity *p = affinity_private(16);
    affinity_put(p, "x", &e);
    ok(affinity_get(p, "x", 86400000, &got), "the private table works");
    affinity_close(p);
    unlink(path);
    rmdir(dir);
    return tap_done();
}
