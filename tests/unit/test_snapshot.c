/* test_snapshot.c - unit tests of snapshot.c: reload on change, bad files, refs; check cost */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/snapshot.c"
#include "state.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

static char dir[] = "/tmp/llmproxy-snap-XXXXXX";
static char path[512];

static void write_file(const char *text)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

static const char *first_backend(struct snapshot *s)
{
    const struct config_model *m = config_find(s->cfg, "m");
    return m != NULL ? m->backends[0].name : "(none)";
}

#define MODEL(b)                                                                                   \
    "{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"" b "\",\"BaseUrl\":\"http://h\"}]}}}"

int main(void)
{
    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof(path), "%s/dynamic_routing.json", dir);
    char spath[600], err[256];
    snprintf(spath, sizeof(spath), "%s/runtime.state", dir);
    struct state *st = state_open(spath, 0, err, sizeof(err));

    snapshot_init(path, st);
    struct snapshot *s = snapshot_acquire();
    ok(s != NULL && s->cfg == NULL, "no file: an empty snapshot");
    snapshot_release(s);

    write_file(MODEL("one"));
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "one") == 0, "a new file is picked up by the next call");
    struct snapshot *held = s; /* a request in flight */

    write_file(MODEL("two"));
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "two") == 0, "a replaced file is picked up");
    ok(strcmp(first_backend(held), "one") == 0, "a request in flight keeps its snapshot");
    snapshot_release(held);
    snapshot_release(s);

    write_file("{ broken");
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "two") == 0, "a broken file keeps the last good config");
    snapshot_release(s);
    unlink(path);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "two") == 0, "a deleted file keeps the last good config");
    snapshot_release(s);

    /* same size, same inode: the admin's counter still forces a reload */
    write_file(MODEL("aaa"));
    s = snapshot_acquire();
    snapshot_release(s);
    FILE *f = fopen(path, "r+");
    fputs(MODEL("bbb"), f);
    fclose(f);
    struct stat sb;
    stat(path, &sb);
    struct timespec times[2] = {sb.st_atim, routing.seen.mtime};
    utimensat(AT_FDCWD, path, times, 0); /* hide the change from mtime */
    state_next(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "bbb") == 0, "the change counter forces a reload");
    snapshot_release(s);

    /* the keys file beside it */
    char kpath[600];
    snprintf(kpath, sizeof(kpath), "%s/client_keys.json", dir);
    s = snapshot_acquire();
    ok(s->keys == NULL, "no keys file: keyless");
    snapshot_release(s);
    FILE *kf = fopen(kpath, "w");
    fputs("{\"Keys\":[{\"Id\":\"key_a\",\"Name\":\"a\",\"Prefix\":\"sk-llmp-abcd\",\"Hash\":"
          "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"}]}",
          kf);
    fclose(kf);
    s = snapshot_acquire();
    ok(s->keys != NULL && s->keys->n == 1 && keys_find(s->keys, "hello") != NULL,
       "a keys file is picked up by the next call");
    snapshot_release(s);
    kf = fopen(kpath, "w");
    fputs("{\"Keys\": [ broken", kf);
    fclose(kf);
    s = snapshot_acquire();
    ok(s->keys != NULL && s->keys->n == 1,
       "a broken keys file keeps the last good keys (not keyless)");
    ok(strcmp(first_backend(s), "bbb") == 0, "and the routing file as it was");
    snapshot_release(s);
    unlink(kpath);
    s = snapshot_acquire();
    ok(s->keys == NULL, "a deleted keys file: keyless again");
    snapshot_release(s);

    /* what the check costs on the hot path */
    int64_t t0 = now_us();
    int n = getenv("LLMPROXY_TEST_QUICK") != NULL ? 2000 : 200000;
    for (int i = 0; i < n; i++) {
        snapshot_release(snapshot_acquire());
    }
    double ns = (double)(now_us() - t0) * 1000.0 / n;
    printf("# snapshot_acquire+release with no change: %.0f ns per request\n", ns);
    ok(ns < 20000, "the change check is cheap (%.0f ns)", ns);

    snapshot_cleanup();
    state_close(st);
    unlink(path);
    unlink(spath);
    rmdir(dir);
    return tap_done();
}
