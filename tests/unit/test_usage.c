/* test_usage.c - unit tests of usage.c: the writer and the readers of usage.db */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/usage.c"
#include "tap.h"

#include <dirent.h>

static char dir[] = "/tmp/llmproxy-usage-XXXXXX";

static void path_of(const char *side, char *out, size_t n)
{
    snprintf(out, n, "%s/%s%s", dir, USAGE_FILE, side);
}

/* The number of entries in the state dir. */
static int files(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* The mode of the file, or -1 when there is none. */
static int mode_of(const char *side)
{
    char p[512];
    struct stat sb;
    path_of(side, p, sizeof(p));
    return stat(p, &sb) == 0 ? (int)(sb.st_mode & 0777) : -1;
}

static void unlink_side(const char *side)
{
    char p[512];
    path_of(side, p, sizeof(p));
    unlink(p);
}

static struct usage_record rec(const char *key, uint64_t prompt)
{
    struct usage_record r = {.time_ms = (int64_t)time(NULL) * 1000, .status = 200, .counted = true};
    snprintf(r.request_id, sizeof(r.request_id), "req-%llu", (unsigned long long)prompt);
    snprintf(r.key_id, sizeof(r.key_id), "%s", key);
    snprintf(r.key_name, sizeof(r.key_name), "name-%s", key);
    snprintf(r.model, sizeof(r.model), "m");
    snprintf(r.backend, sizeof(r.backend), "b");
    r.prompt = prompt;
    r.completion = 1;
    r.cost_micro = 10;
    return r;
}

/* Requests logged, or -1 when the log cannot be read. */
static int logged(void)
{
    cJSON *out = NULL;
    char err[256];
    if (usage_recent(dir, "limit=10000", NULL, &out, err, sizeof(err)) != 200) {
        return -1;
    }
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(out, "Requests"));
    cJSON_Delete(out);
    return n;
}

static uint64_t prompt_of(const char *key)
{
    uint64_t out[4];
    return usage_spend_since(dir, key, 0, out) == 0 ? out[1] : UINT64_MAX;
}

static bool intact(void)
{
    char p[512];
    path_of("", p, sizeof(p));
    sqlite3 *db = NULL;
    bool good = false;
    if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW) {
            good = strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
        }
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return good;
}

/* Another connection that holds the write lock until unlock(). */
static sqlite3 *lock_db(void)
{
    char p[512];
    path_of("", p, sizeof(p));
    sqlite3 *db = NULL;
    sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static void unlock_db(sqlite3 *db)
{
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
}

static void test_missing_db(void)
{
    uint64_t out[4] = {1, 1, 1, 1};
    ok(usage_spend_since(dir, "k1", 0, out) == 0 && out[0] == 0 && out[1] == 0 && out[3] == 0,
       "no usage.db: the spend is zero, not an error");
    cJSON *j = NULL;
    char err[256];
    ok(usage_query(dir, "group_by=key", NULL, &j, err, sizeof(err)) == 200 &&
           cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "Usage")) == 0,
       "no usage.db: /admin/usage is an empty list");
    cJSON_Delete(j);
    j = NULL;
    ok(usage_recent(dir, "", NULL, &j, err, sizeof(err)) == 200 &&
           cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "Requests")) == 0,
       "no usage.db: /admin/requests is an empty list");
    cJSON_Delete(j);
    int64_t since[2] = {0, 3600};
    struct usage_spend dummy;
    struct usage_spend *all = &dummy; /* overwritten */
    size_t n = 7;
    ok(usage_spend_all(dir, since, 2, &all, &n) == 0 && all == NULL && n == 0,
       "no usage.db: no spend for any key");
    ok(files() == 0, "readers made no file in the state dir");

    /* a usage.db the writer has made but not yet given its tables */
    char p[512];
    path_of("", p, sizeof(p));
    close(open(p, O_CREAT | O_WRONLY, 0600));
    ok(usage_spend_since(dir, "k1", 0, out) == 0 && out[0] == 0, "empty usage.db: zero spend");
    ok(logged() == 0, "empty usage.db: no requests");
    ok(files() == 1, "and still no -wal or -shm");
    unlink(p);
}

static void test_write_and_read(void)
{
    mode_t old = umask(022);
    struct usage_writer *w = usage_writer_new(dir, false);
    struct usage_record r = rec("k1", 100);
    usage_add(w, &r);
    r = rec("k2", 5);
    usage_add(w, &r);
    r = rec("", 7); /* keyless */
    usage_add(w, &r);
    r = rec("k1", 1000);
    r.counted = false; /* refused before a backend: only in the log */
    usage_add(w, &r);
    flush(w, false);
    ok(mode_of("") == 0600 && mode_of("-wal") == 0600 && mode_of("-shm") == 0600,
       "usage.db, -wal and -shm are 0600 under umask 022 (%o %o %o)", mode_of(""), mode_of("-wal"),
       mode_of("-shm"));
    ok(umask(022) == 022, "the process umask is left alone");
    ok(usage_write_errors() == 0, "stored without errors");
    ok(prompt_of("k1") == 100 && prompt_of("k2") == 5, "the spend of each key");
    ok(logged() == 4, "every request in the log");

    int64_t now = (int64_t)time(NULL);
    int64_t since[3] = {now + 7200, 0, now - 7200};
    struct usage_spend *all = NULL;
    size_t n = 0;
    ok(usage_spend_all(dir, since, 3, &all, &n) == 0 && n == 2, "spend of all keys: two keys");
    const struct usage_spend *k1 = usage_spend_find(all, n, "k1");
    const struct usage_spend *k2 = usage_spend_find(all, n, "k2");
    ok(k1 != NULL && k2 != NULL && usage_spend_find(all, n, "") == NULL &&
           usage_spend_find(all, n, "k3") == NULL,
       "found by key id; keyless use is not a key's");
    ok(k1 != NULL && k1->spent[0][0] == 0 && k1->spent[1][0] == 1 && k1->spent[1][1] == 100 &&
           k1->spent[1][2] == 1 && k1->spent[1][3] == 10 && k1->spent[2][1] == 100,
       "each start's sums: requests, prompt, completion, cost");
    ok(k2 != NULL && k2->spent[1][1] == 5, "the other key's own");
    free(all);
    usage_writer_free(w);
    ok(mode_of("-wal") == -1 && mode_of("") == 0600, "the last close leaves usage.db alone");
    umask(old);
}

static void test_replaced(void)
{
    uint64_t errors = usage_write_errors();
    struct usage_writer *w = usage_writer_new(dir, false);
    struct usage_writer *w2 = usage_writer_new(dir, false);
    struct usage_record r = rec("d1", 1);
    usage_add(w, &r);
    flush(w, false);
    usage_add(w2, &r);
    flush(w2, false);
    ok(prompt_of("d1") == 2 && w->db != NULL && w2->db != NULL, "two writers, one database");

    /* only usage.db deleted: its -wal and -shm stay behind */
    unlink_side("");
    r = rec("d2", 10);
    usage_add(w, &r);
    flush(w, false);
    ok(mode_of("") == 0600 && prompt_of("d1") == 0 && prompt_of("d2") == 10,
       "deleted under the writer: a new usage.db, without the old one's log");
    usage_add(w2, &r);
    flush(w2, false);
    ok(prompt_of("d2") == 20 && logged() == 2, "the other writer moves to the new one too");
    ok(intact(), "the new database is intact");

    /* all three deleted */
    unlink_side("");
    unlink_side("-wal");
    unlink_side("-shm");
    r = rec("d3", 3);
    usage_add(w2, &r);
    flush(w2, false);
    usage_add(w, &r);
    flush(w, false);
    ok(prompt_of("d3") == 6 && prompt_of("d2") == 0 && intact(),
       "usage.db, -wal and -shm deleted: both writers start a new one");

    /* replaced by another database (a restored copy) */
    char other[] = "/tmp/llmproxy-usage2-XXXXXX", p[512], q[512];
    ok(mkdtemp(other) != NULL, "a second state dir");
    struct usage_writer *w3 = usage_writer_new(other, false);
    r = rec("d4", 40);
    usage_add(w3, &r);
    usage_writer_free(w3);
    snprintf(q, sizeof(q), "%s/%s", other, USAGE_FILE);
    path_of("", p, sizeof(p));
    ok(rename(q, p) == 0, "usage.db replaced");
    r = rec("d5", 50);
    usage_add(w, &r);
    flush(w, false);
    usage_add(w2, &r);
    flush(w2, false);
    ok(prompt_of("d4") == 40 && prompt_of("d5") == 100 && prompt_of("d3") == 0 && intact(),
       "replaced under the writers: they write to the one now there");
    ok(usage_write_errors() == errors, "nothing lost");
    usage_writer_free(w);
    usage_writer_free(w2);
    rmdir(other);
}

static void copy(const char *from, const char *to)
{
    char buf[65536];
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    for (size_t n = in != NULL ? fread(buf, 1, sizeof(buf), in) : 0; n > 0 && out != NULL;
         n = fread(buf, 1, sizeof(buf), in)) {
        fwrite(buf, 1, n, out);
    }
    if (in != NULL) {
        fclose(in);
    }
    if (out != NULL) {
        fclose(out);
    }
}

/* A -wal and -shm left by a crash, their usage.db deleted since. */
static void test_stale_wal(void)
{
    char p[512], q[520];
    struct usage_writer *w = usage_writer_new(dir, false);
    struct usage_record r = rec("s1", 1);
    usage_add(w, &r);
    flush(w, false);
    const char *sides[2] = {"-wal", "-shm"};
    for (int i = 0; i < 2; i++) {
        path_of(sides[i], p, sizeof(p));
        snprintf(q, sizeof(q), "%s.copy", p);
        copy(p, q);
    }
    usage_writer_free(w);
    unlink_side("");
    for (int i = 0; i < 2; i++) {
        path_of(sides[i], p, sizeof(p));
        snprintf(q, sizeof(q), "%s.copy", p);
        ok(rename(q, p) == 0, "a stale usage.db%s", sides[i]);
    }
    w = usage_writer_new(dir, false);
    r = rec("s2", 2);
    usage_add(w, &r);
    flush(w, false);
    ok(prompt_of("s1") == 0 && prompt_of("s2") == 2 && logged() == 1 && intact(),
       "a new usage.db does not take them for its own");
    usage_writer_free(w);
}

static void test_busy(void)
{
    uint64_t errors = usage_write_errors();
    struct usage_writer *w = usage_writer_new(dir, false);
    __atomic_store_n(&w->ending, 1, __ATOMIC_RELEASE); /* short busy waits in the test */
    struct usage_record r = rec("b1", 1);
    usage_add(w, &r);
    flush(w, false); /* opens the database */
    sqlite3 *lock = lock_db();
    ok(lock != NULL, "another connection holds the write lock");
    r = rec("b2", 2);
    usage_add(w, &r);
    usage_add(w, &r);
    int64_t t0 = now_us();
    flush(w, false);
    int64_t waited = now_us() - t0;
    ok(usage_write_errors() == errors && w->nheld == 2 && w->pending == 2 && w->db != NULL,
       "locked: the batch is held, not lost");
    ok(waited >= FINAL_BUSY_MS * 900 && waited < 3000000, "the final busy wait is short (%lld ms)",
       (long long)(waited / 1000));
    unlock_db(lock);
    r = rec("b3", 3);
    usage_add(w, &r);
    flush(w, false);
    ok(usage_write_errors() == errors && prompt_of("b2") == 4 && prompt_of("b3") == 3 &&
           w->nheld == 0 && w->pending == 0,
       "unlocked: the held batch is stored with the new one");

    lock = lock_db();
    r = rec("b4", 4);
    usage_add(w, &r);
    flush(w, false);
    r = rec("b5", 5);
    usage_add(w, &r);
    usage_add(w, &r);
    flush(w, false);
    ok(usage_write_errors() == errors + 1 && w->nheld == 2,
       "locked twice: the held batch is dropped and counted, the new one held");
    r = rec("b6", 6);
    usage_add(w, &r);
    flush(w, true);
    ok(usage_write_errors() == errors + 4 && w->nheld == 0 && w->pending == 0,
       "the final flush holds nothing back");
    unlock_db(lock);
    r = rec("b7", 7);
    usage_add(w, &r);
    usage_writer_free(w);
    ok(prompt_of("b4") == 0 && prompt_of("b5") == 0 && prompt_of("b7") == 7,
       "after the lock, stored again");
}

static void test_broken(void)
{
    uint64_t errors = usage_write_errors();
    struct usage_writer *w = usage_writer_new(dir, false);
    struct usage_record r = rec("e1", 1);
    usage_add(w, &r);
    flush(w, false);
    char p[512];
    path_of("", p, sizeof(p));
    sqlite3 *db = NULL;
    sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL);
    ok(sqlite3_exec(db, "DROP TABLE requests", NULL, NULL, NULL) == SQLITE_OK, "a table dropped");
    sqlite3_close(db);
    usage_add(w, &r);
    flush(w, false);
    ok(usage_write_errors() == errors + 1 && w->db == NULL && w->nheld == 0,
       "a failure other than a lock: dropped, counted, the connection closed");
    usage_add(w, &r);
    flush(w, false);
    ok(usage_write_errors() == errors + 1 && w->db != NULL && logged() == 1,
       "the next flush opens it afresh (and makes the table again)");
    usage_writer_free(w);
}

static void test_queue_bound(void)
{
    uint64_t errors = usage_write_errors();
    ok(QUEUE_MAX * sizeof(struct usage_record) <= (21u << 20) && QUEUE_MAX >= 10000,
       "the queue holds %zu records, about 20 MB", (size_t)QUEUE_MAX);
    struct usage_writer *w = usage_writer_new(dir, false);
    struct usage_record r = rec("q1", 1);
    for (size_t i = 0; i < QUEUE_MAX + 5; i++) {
        usage_add(w, &r);
    }
    ok(w->n == QUEUE_MAX && w->size == QUEUE_MAX && usage_write_errors() == errors + 5,
       "past the bound records are dropped and counted");
    usage_writer_free(w);
    ok(prompt_of("q1") == QUEUE_MAX, "the rest are stored at the end");
}

static void test_thread(void)
{
    struct usage_writer *w = usage_writer_new(dir, true);
    struct usage_record r = rec("t1", 11);
    usage_add(w, &r);
    int64_t t0 = now_us();
    while (prompt_of("t1") != 11 && now_us() - t0 < 5000000) {
        usleep(50000);
    }
    ok(prompt_of("t1") == 11 && now_us() - t0 < 2500000, "the writer thread stores within 2 s");
    usage_add(w, &r);
    usage_writer_free(w);
    ok(prompt_of("t1") == 22, "and what is queued when it stops");
}

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_missing_db();
    test_write_and_read();
    test_replaced();
    test_stale_wal();
    test_busy();
    test_broken();
    test_queue_bound();
    test_thread();
    unlink_side("");
    unlink_side("-wal");
    unlink_side("-shm");
    ok(rmdir(dir) == 0, "nothing else left in the state dir");
    return tap_done();
}
