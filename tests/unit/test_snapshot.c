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

/* Writes text to p in place (not renamed into it). */
static void put_file(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* A keys file with one key, whose secret is "hello". */
#define ONE_KEY                                                                                    \
    "{\"Keys\":[{\"Id\":\"key_a\",\"Name\":\"a\",\"Prefix\":\"sk-llmp-abcd\",\"Hash\":"            \
    "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"}]}"

static const char *first_backend(struct snapshot *s)
{
    const struct config_model *m = config_find(s->cfg, "m");
    return m != NULL ? m->backends[0].name : "(none)";
}

#define MODEL(b)                                                                                   \
    "{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"" b "\",\"BaseUrl\":\"http://h\"}]}}}"

struct race {
    int started;
    char got[16];
};

static void *racer(void *arg)
{
    struct race *r = arg;
    __atomic_store_n(&r->started, 1, __ATOMIC_RELEASE);
    struct snapshot *s = snapshot_acquire();
    snprintf(r->got, sizeof(r->got), "%s", first_backend(s));
    snapshot_release(s);
    return NULL;
}

/* ns per acquire and release of an unchanged snapshot */
static double check_cost(void)
{
    int64_t t0 = now_us();
    int n = getenv("LLMPROXY_TEST_QUICK") != NULL ? 2000 : 200000;
    for (int i = 0; i < n; i++) {
        snapshot_release(snapshot_acquire());
    }
    return (double)(now_us() - t0) * 1000.0 / n;
}

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
    routing.seen = stat_id(path); /* as if stat() showed no change */
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
    put_file(kpath, ONE_KEY);
    s = snapshot_acquire();
    ok(s->keys != NULL && s->keys->n == 1 && keys_find(s->keys, "hello") != NULL,
       "a keys file is picked up by the next call");
    snapshot_release(s);
    put_file(kpath, "{\"Keys\": [ broken");
    s = snapshot_acquire();
    ok(s->keys != NULL && s->keys->n == 1,
       "a broken keys file keeps the last good keys (not keyless)");
    ok(strcmp(first_backend(s), "bbb") == 0, "and the routing file as it was");
    snapshot_release(s);
    unlink(kpath);
    s = snapshot_acquire();
    ok(s->keys == NULL, "a deleted keys file: keyless again");
    snapshot_release(s);

    /* change notices: every change seen by the next acquire, with no stat()
     * while none came */
    write_file(MODEL("w1"));
    if (snapshot_watch_start() != 0) {
        printf("# no inotify here: the notice checks are skipped\n");
        return tap_done();
    }
    ok(snapshot_watch_start() == 0, "started once for every caller");
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w1") == 0, "what changed before the watch began is seen");
    snapshot_release(s);
    int old_wd = watch.file_wd[0];
    char keep[600];
    snprintf(keep, sizeof(keep), "%s/kept.json", dir);
    ok(link(path, keep) == 0, "the old inode kept alive by a link");
    write_file(MODEL("w2"));
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w2") == 0, "a rename into place is seen by the next acquire");
    snapshot_release(s);
    ok(watch.file_wd[0] >= 0 && watch.file_wd[0] != old_wd &&
           inotify_rm_watch(watch.fd, old_wd) != 0,
       "the new file is watched, the old inode's watch is gone");
    unlink(keep);
    struct snapshot *s1 = snapshot_acquire(), *s2 = snapshot_acquire();
    ok(s1 == s2, "no change: the same snapshot, not a reload");
    snapshot_release(s1);
    snapshot_release(s2);
    f = fopen(path, "r+");
    fputs(MODEL("w3"), f); /* in place, same size */
    fclose(f);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w3") == 0, "a write in place is seen");
    snapshot_release(s);
    f = fopen(path, "r+");
    fputs(MODEL("x3"), f); /* in place, same size, and (forged) the same stat() */
    fclose(f);
    pthread_mutex_lock(&lock);
    watch_read();
    routing.seen = stat_id(path); /* as if within the clock's tick */
    pthread_mutex_unlock(&lock);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "x3") == 0, "a notice rereads even what stat() calls the same");
    snapshot_release(s);
    struct inotify_event over = {.wd = -1, .mask = IN_Q_OVERFLOW};
    pthread_mutex_lock(&lock);
    watch_note(&over);
    pthread_mutex_unlock(&lock);
    ok(watch.dirty && watch.noticed[0] && watch.noticed[1], "lost notices: both files reread");
    snapshot_release(snapshot_acquire());
    ok(!watch.dirty && !watch.noticed[0] && !watch.noticed[1], "and then clean");
    put_file(kpath, ONE_KEY);
    s = snapshot_acquire();
    ok(s->keys != NULL && s->keys->n == 1, "a keys file made is seen");
    snapshot_release(s);
    unlink(kpath);
    s = snapshot_acquire();
    ok(s->keys == NULL, "a keys file deleted is seen");
    snapshot_release(s);
    /* no notice, no stat(): a change the notices cannot show (the identity
     * forged back, and the notice taken away) is not seen within the second */
    write_file(MODEL("w4"));
    pthread_mutex_lock(&lock);
    watch_read(); /* taken: this acquire would not know */
    watch.dirty = watch.noticed[0] = watch.noticed[1] = false;
    watch.checked = now_us();
    pthread_mutex_unlock(&lock);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "x3") == 0, "no notice: the files are not stat()ed");
    snapshot_release(s);
    char other[600];
    snprintf(other, sizeof(other), "%s/usage.db-wal", dir);
    put_file(other, "");
    unlink(other);
    pthread_mutex_lock(&lock);
    watch_read();
    pthread_mutex_unlock(&lock);
    ok(!watch.dirty, "a notice about another file in the directory is no change");
    state_next(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL);
    write_file(MODEL("w5"));
    pthread_mutex_lock(&lock);
    watch_read();
    watch.dirty = watch.noticed[0] = watch.noticed[1] = false; /* the counter alone */
    routing.seen = stat_id(path);
    pthread_mutex_unlock(&lock);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w5") == 0, "the change counter is seen without a notice");
    snapshot_release(s);

    /* two threads: one takes the notice and reloads; the other, asking while
     * it does, waits and gets the new config (never the old) */
    write_file(MODEL("w6"));
    struct race r = {0};
    pthread_t t;
    pthread_mutex_lock(&lock); /* both threads meet at the lock */
    pthread_create(&t, NULL, racer, &r);
    while (!__atomic_load_n(&r.started, __ATOMIC_ACQUIRE)) {
        usleep(1000);
    }
    usleep(20000);
    pthread_mutex_unlock(&lock);
    s = snapshot_acquire();
    pthread_join(t, NULL);
    ok(strcmp(first_backend(s), "w6") == 0 && strcmp(r.got, "w6") == 0,
       "two threads at once both see the change (%s, %s)", first_backend(s), r.got);
    snapshot_release(s);

    /* what the check costs on the hot path: with notices, and without */
    double ns = check_cost();
    printf("# snapshot_acquire+release with no change, change notices on: %.0f ns per request\n",
           ns);
    ok(ns < 100000, "the change check is cheap (%.0f ns; a reload costs far more)", ns);

    /* a change whose notice is taken away is made up for within a second;
     * it is suspect; a notice for it clears that (it was on its way) */
    write_file(MODEL("w7"));
    pthread_mutex_lock(&lock);
    watch_read();
    watch.dirty = watch.noticed[0] = watch.noticed[1] = false;
    watch.checked -= WATCH_RECHECK_US; /* a second went by */
    pthread_mutex_unlock(&lock);
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w7") == 0, "a lost notice is made up for within a second");
    snapshot_release(s);
    ok(!watch.broken && watch.suspect[0], "the change is suspect, the notices still on");
    write_file(MODEL("w9")); /* its notice comes */
    snapshot_release(snapshot_acquire());
    ok(!watch.suspect[0] && !watch.broken, "a notice for the file clears it");
    /* without any notice for a second more: the notices are given up */
    write_file(MODEL("w7"));
    pthread_mutex_lock(&lock);
    watch_read();
    watch.dirty = watch.noticed[0] = watch.noticed[1] = false;
    watch.checked -= WATCH_RECHECK_US;
    pthread_mutex_unlock(&lock);
    snapshot_release(snapshot_acquire());
    ok(watch.suspect[0] && !watch.broken, "suspect again");
    pthread_mutex_lock(&lock);
    watch.checked -= WATCH_RECHECK_US; /* a second more, no notice */
    pthread_mutex_unlock(&lock);
    snapshot_release(snapshot_acquire());
    ok(watch.broken && watch.fd < 0, "and the notices are given up (their fd closed)");
    write_file(MODEL("w8"));
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "w8") == 0, "given up: every acquire stat()s again");
    snapshot_release(s);
    ok(snapshot_watch_start() == -1, "and they do not start again");
    ns = check_cost();
    printf("# snapshot_acquire+release with no change, a stat() of each file: %.0f ns per "
           "request\n",
           ns);
    ok(ns < 100000, "the stat() check is cheap too (%.0f ns)", ns);

    /* a routing file that is a link: edits of its target raise no notice here */
    snapshot_cleanup();
    char target[600];
    snprintf(target, sizeof(target), "%s/target.json", dir);
    put_file(target, MODEL("t1"));
    unlink(path);
    ok(symlink(target, path) == 0, "routing file made a link");
    snapshot_init(path, st);
    ok(snapshot_watch_start() == -1, "no notices for a linked file: stat() every time");
    s = snapshot_acquire();
    ok(strcmp(first_backend(s), "t1") == 0, "a linked file is loaded");
    snapshot_release(s);
    snapshot_cleanup();
    unlink(target);

    state_close(st);
    unlink(path);
    unlink(spath);
    rmdir(dir);
    return tap_done();
}
