/* usage.c - usage and the recent-requests log in SQLite (STATE_DIR/usage.db) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "usage.h"
#include "log.h"
#include "utctime.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Records waiting for the writer (queued, or taken and not yet stored): at
 * most about 20 MB of them; past that they are dropped (counted). */
#define QUEUE_BYTES (20u << 20)
#define QUEUE_MAX (QUEUE_BYTES / sizeof(struct usage_record))
#define BUSY_MS 2000
/* once the writer is stopping: the process has a few seconds to exit in */
#define FINAL_BUSY_MS 500
/* a budget check on the request path waits no longer for the database */
#define SPEND_BUSY_MS 50

static uint64_t write_errors; /* atomic */
static int64_t error_logged;  /* atomic */

uint64_t usage_write_errors(void)
{
    return __atomic_load_n(&write_errors, __ATOMIC_RELAXED);
}

static void trouble(uint64_t n, const char *what, const char *why)
{
    __atomic_add_fetch(&write_errors, n, __ATOMIC_RELAXED);
    int64_t now = now_us();
    int64_t last = __atomic_load_n(&error_logged, __ATOMIC_RELAXED);
    if ((last == 0 || now - last > 60000000) &&
        __atomic_compare_exchange_n(&error_logged, &last, now, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        LOG_ERROR("usage.db: %s: %s (%llu records lost so far; requests are not affected)", what,
                  why, (unsigned long long)usage_write_errors());
    }
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        return def;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    return errno == 0 && *end == '\0' && n >= lo && n <= hi ? n : def;
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS hourly(hour INTEGER NOT NULL, key_id TEXT NOT NULL, "
    "key_name TEXT NOT NULL, model TEXT NOT NULL, backend TEXT NOT NULL, requests INTEGER NOT "
    "NULL, errors INTEGER NOT NULL, prompt INTEGER NOT NULL, completion INTEGER NOT NULL, "
    "cached INTEGER NOT NULL, cost_micro INTEGER NOT NULL, "
    "PRIMARY KEY(hour, key_id, model, backend)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS requests(seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, "
    "request_id TEXT NOT NULL, key_id TEXT NOT NULL, key_name TEXT NOT NULL, model TEXT NOT "
    "NULL, backend TEXT NOT NULL, status INTEGER NOT NULL, stream INTEGER NOT NULL, prompt "
    "INTEGER NOT NULL, completion INTEGER NOT NULL, cost_micro INTEGER NOT NULL, ms REAL NOT "
    "NULL, ttfb_ms REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS hourly_key ON hourly(key_id, hour);";

static bool db_path(const char *dir, char *path, size_t n)
{
    int len = snprintf(path, n, "%s/%s", dir, USAGE_FILE);
    return len > 0 && (size_t)len < n;
}

/* A reader's connection: no CREATE, no pragma, no schema, so that a reader
 * (the admin program, perhaps run as root from a shell) never makes a file
 * that the responders then cannot write; only the writer makes usage.db.
 * SQLite falls back to read-only by itself when the file is not writable.
 * 1 with *db, 0 when there is no usage.db yet, -1 with err. */
static int open_reader(const char *dir, int busy_ms, sqlite3 **db, char *err, size_t errlen)
{
    *db = NULL;
    char path[PATH_MAX];
    if (!db_path(dir, path, sizeof(path))) {
        snprintf(err, errlen, "the state dir's path is too long");
        return -1;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(err, errlen, "%s: %s", USAGE_FILE, strerror(errno));
        return -1;
    }
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        bool gone = stat(path, &sb) != 0 && errno == ENOENT;
        snprintf(err, errlen, "%s", *db != NULL ? sqlite3_errmsg(*db) : "cannot open");
        sqlite3_close(*db);
        *db = NULL;
        return gone ? 0 : -1;
    }
    sqlite3_busy_timeout(*db, busy_ms);
    return 1;
}

/* Whether a table exists; true when that cannot be told (the caller then
 * reports its own error). */
static bool has_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    return rc != SQLITE_DONE;
}

/* Opens usage.db and prepares sql, a query of table. 1 with *db and *s (the
 * caller finalizes and closes both); 0 when there is nothing to read yet
 * (no usage.db, or one the writer has not given its tables); -1 with err. */
static int prepare_read(const char *dir, int busy_ms, const char *table, const char *sql,
                        sqlite3 **db, sqlite3_stmt **s, char *err, size_t errlen)
{
    *s = NULL;
    int rc = open_reader(dir, busy_ms, db, err, errlen);
    if (rc <= 0) {
        return rc;
    }
    if (sqlite3_prepare_v2(*db, sql, -1, s, NULL) == SQLITE_OK) {
        return 1;
    }
    snprintf(err, errlen, "%s", sqlite3_errmsg(*db));
    rc = has_table(*db, table) ? -1 : 0;
    sqlite3_close(*db);
    *db = NULL;
    return rc;
}

struct usage_writer {
    char *dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* guarded by mu */
    struct usage_record *q; /* queued by usage_add */
    size_t n, size;
    size_t pending; /* taken by the flush under way, or held for the next */
    bool stop;
    /* the flushing thread's (the writer's, then usage_writer_free's) */
    sqlite3 *db;               /* NULL until a flush needs it, and after trouble */
    struct stat file[3];       /* what db has open: usage.db, its -wal and -shm */
    struct usage_record *held; /* found the database locked: tried once more */
    size_t nheld;
    int64_t pruned_at;
    int64_t busy_since;
    int ending; /* atomic: usage_writer_free has begun */
    bool threaded;
    pthread_t tid;
};

/* SQLite's busy handler for the writer: waits up to BUSY_MS for a lock, and
 * no more than FINAL_BUSY_MS once the process is ending. */
static int on_busy(void *arg, int count)
{
    struct usage_writer *w = arg;
    int64_t now = now_us();
    if (count == 0) {
        w->busy_since = now;
    }
    int64_t limit = __atomic_load_n(&w->ending, __ATOMIC_ACQUIRE) ? FINAL_BUSY_MS : BUSY_MS;
    if (now - w->busy_since >= limit * 1000) {
        return 0;
    }
    sqlite3_sleep(count < 10 ? 2 : 10);
    return 1;
}

static const char *const SIDE[3] = {"", "-wal", "-shm"};

/* Whether path + SIDE[i] names the file *was (one not there does not). */
static bool names(const char *path, int i, const struct stat *was)
{
    char p[PATH_MAX + 8];
    struct stat sb;
    snprintf(p, sizeof(p), "%s%s", path, SIDE[i]);
    return was->st_ino != 0 && stat(p, &sb) == 0 && sb.st_dev == was->st_dev &&
           sb.st_ino == was->st_ino;
}

/* Whether the path still names the database the writer has open. */
static bool same_file(const struct usage_writer *w)
{
    char path[PATH_MAX];
    return db_path(w->dir, path, sizeof(path)) && names(path, 0, &w->file[0]);
}

/* moved: the path names another database now, or none. Its -wal and -shm,
 * if still ours, belong to no database there: they go, or the one there
 * (a restored copy, say) would be read through our log. Closing the last
 * connection checkpoints and unlinks the -wal and -shm by name, and those
 * may by now be the new database's: so that one closes without. */
static void close_db(struct usage_writer *w, bool moved)
{
    if (w->db == NULL) {
        return;
    }
    char path[PATH_MAX], side[PATH_MAX + 8];
    if (moved && db_path(w->dir, path, sizeof(path))) {
        for (int i = 1; i < 3; i++) {
            if (names(path, i, &w->file[i])) {
                snprintf(side, sizeof(side), "%s%s", path, SIDE[i]);
                unlink(side);
            }
        }
    }
    if (moved) {
        sqlite3_db_config(w->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    }
    sqlite3_close(w->db);
    w->db = NULL;
}

/* The writer's connection: makes usage.db if absent, mode 0600 whatever the
 * umask (its -wal and -shm take the database's mode from SQLite), in WAL
 * mode with its tables. SQLITE_OK, or an SQLite code with err. */
static int open_writer(struct usage_writer *w, char *err, size_t errlen)
{
    char path[PATH_MAX], side[PATH_MAX + 8];
    if (!db_path(w->dir, path, sizeof(path))) {
        snprintf(err, errlen, "the state dir's path is too long");
        return SQLITE_CANTOPEN;
    }
    /* made here, not by SQLite under umask(077): the umask is the whole
     * process's, and other threads make files too */
    int fd = open(path, O_CREAT | O_EXCL | O_CLOEXEC | O_RDWR, 0600);
    if (fd >= 0) {
        /* (SQLite itself deletes a -wal left beside an empty database) */
        if (fchmod(fd, 0600) != 0) {
            LOG_WARN("%s: chmod: %s", path, strerror(errno));
        }
        close(fd);
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "%.160s: %.80s", path, strerror(errno));
        return SQLITE_CANTOPEN;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK && sqlite3_db_readonly(db, "main") == 1) {
        rc = SQLITE_READONLY;
        snprintf(err, errlen, "%.160s is not writable", path);
    } else if (rc == SQLITE_OK) {
        sqlite3_busy_handler(db, on_busy, w);
        rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                          NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(db, SCHEMA, NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        }
    } else {
        snprintf(err, errlen, "%s", db != NULL ? sqlite3_errmsg(db) : "cannot open");
    }
    /* what it has open, to tell when the path names another (the -wal and
     * -shm stay while a connection in WAL mode is open) */
    memset(w->file, 0, sizeof(w->file));
    for (int i = 0; i < 3 && rc == SQLITE_OK; i++) {
        snprintf(side, sizeof(side), "%s%s", path, SIDE[i]);
        if (stat(side, &w->file[i]) != 0) {
            memset(&w->file[i], 0, sizeof(w->file[i]));
            if (i == 0) {
                rc = SQLITE_CANTOPEN;
                snprintf(err, errlen, "%.160s: %.80s", path, strerror(errno));
            }
        }
    }
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return rc;
    }
    w->db = db;
    return SQLITE_OK;
}

static int bind_hourly(sqlite3_stmt *s, const struct usage_record *x)
{
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, x->time_ms / 3600000);
    sqlite3_bind_text(s, 2, x->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, x->key_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, x->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, x->backend, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 6, x->error ? 1 : 0);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)x->prompt);
    sqlite3_bind_int64(s, 8, (sqlite3_int64)x->completion);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)x->cached);
    sqlite3_bind_int64(s, 10, (sqlite3_int64)x->cost_micro);
    int rc = sqlite3_step(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bind_log(sqlite3_stmt *s, const struct usage_record *x)
{
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, x->time_ms);
    sqlite3_bind_text(s, 2, x->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, x->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, x->key_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, x->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, x->backend, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, x->status);
    sqlite3_bind_int(s, 8, x->stream ? 1 : 0);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)x->prompt);
    sqlite3_bind_int64(s, 10, (sqlite3_int64)x->completion);
    sqlite3_bind_int64(s, 11, (sqlite3_int64)x->cost_micro);
    sqlite3_bind_double(s, 12, x->ms);
    sqlite3_bind_double(s, 13, x->ttfb_ms);
    int rc = sqlite3_step(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Stores the records of both parts in one transaction. SQLITE_OK, or the
 * SQLite code of the failure with its message in why (nothing stored). */
static int store_batch(struct usage_writer *w, struct usage_record *const part[2],
                       const size_t count[2], char *why, size_t whylen)
{
    static const char up[] =
        "INSERT INTO hourly VALUES(?1,?2,?3,?4,?5,1,?6,?7,?8,?9,?10) ON CONFLICT(hour,key_id,"
        "model,backend) DO UPDATE SET requests=requests+1, errors=errors+excluded.errors, "
        "prompt=prompt+excluded.prompt, completion=completion+excluded.completion, "
        "cached=cached+excluded.cached, cost_micro=cost_micro+excluded.cost_micro, "
        "key_name=excluded.key_name";
    static const char log[] =
        "INSERT INTO requests(time_ms,request_id,key_id,key_name,model,backend,status,stream,"
        "prompt,completion,cost_micro,ms,ttfb_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *s1 = NULL, *s2 = NULL;
    int rc = sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(w->db, up, -1, &s1, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(w->db, log, -1, &s2, NULL);
    }
    for (int p = 0; p < 2; p++) {
        for (size_t i = 0; i < count[p] && rc == SQLITE_OK; i++) {
            const struct usage_record *x = &part[p][i];
            /* refused before any backend: in the log, not in usage */
            if (x->counted) {
                rc = bind_hourly(s1, x);
            }
            if (rc == SQLITE_OK) {
                rc = bind_log(s2, x);
            }
        }
    }
    sqlite3_finalize(s1);
    sqlite3_finalize(s2);
    if (rc == SQLITE_OK) {
        char sql[200];
        snprintf(sql, sizeof(sql),
                 "DELETE FROM requests WHERE seq <= (SELECT MAX(seq) FROM requests) - %ld",
                 env_long("LLMPROXY_REQUEST_LOG_ROWS", 10000, 1, 10000000));
        rc = sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    }
    int64_t now = now_us();
    if (rc == SQLITE_OK && now - w->pruned_at > 3600 * 1000000LL) {
        char sql[200];
        long days = env_long("LLMPROXY_USAGE_DAYS", 400, 1, 100000);
        snprintf(sql, sizeof(sql), "DELETE FROM hourly WHERE hour < %lld",
                 (long long)(time(NULL) / 3600 - (int64_t)days * 24));
        rc = sqlite3_exec(w->db, sql, NULL, NULL, NULL);
        w->pruned_at = now;
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(why, whylen, "%s", sqlite3_errmsg(w->db));
        if (sqlite3_get_autocommit(w->db) == 0) {
            sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
        }
    }
    return rc;
}

/* Takes the queue and stores it, after what the last flush held; on the
 * writer's thread, or at the end (final: nothing is held then). A database
 * that was locked past the busy timeout has the batch held for one more
 * try; any other failure drops it (counted) and closes the connection, so
 * the next flush opens usage.db afresh, as it does when the file was
 * deleted or replaced. */
static void flush(struct usage_writer *w, bool final)
{
    pthread_mutex_lock(&w->mu);
    struct usage_record *q = w->q;
    size_t n = w->n;
    w->q = NULL;
    w->n = w->size = 0;
    w->pending = w->nheld + n;
    pthread_mutex_unlock(&w->mu);
    if (w->db != NULL && !same_file(w)) {
        close_db(w, true);
    }
    struct usage_record *part[2] = {w->held, q};
    size_t count[2] = {w->nheld, n};
    if (count[0] + count[1] == 0) {
        free(q);
        return;
    }
    char why[256] = "";
    const char *what = "cannot store usage";
    int rc = SQLITE_OK;
    if (w->db == NULL) {
        rc = open_writer(w, why, sizeof(why));
        what = "cannot open";
    }
    if (rc == SQLITE_OK) {
        rc = store_batch(w, part, count, why, sizeof(why));
        what = "cannot store usage";
    }
    int code = rc & 0xff;
    bool busy = code == SQLITE_BUSY || code == SQLITE_LOCKED;
    if (rc != SQLITE_OK && !busy) {
        close_db(w, false);
    }
    if (rc != SQLITE_OK) {
        /* the held records had their second try; the new ones get theirs */
        size_t lost = busy && !final ? count[0] : count[0] + count[1];
        if (lost > 0) {
            trouble(lost, what, why);
        }
    }
    free(part[0]);
    w->held = NULL;
    w->nheld = 0;
    if (rc != SQLITE_OK && busy && !final && n > 0) {
        w->held = xrealloc(q, n * sizeof(*q)); /* no spare room held */
        w->nheld = n;
        q = NULL;
    }
    free(q);
    pthread_mutex_lock(&w->mu);
    w->pending = w->nheld;
    pthread_mutex_unlock(&w->mu);
}

static void *writer(void *arg)
{
    struct usage_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        pthread_mutex_unlock(&w->mu);
        flush(w, false);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct usage_writer *usage_writer_new(const char *dir, bool thread)
{
    struct usage_writer *w = xcalloc(1, sizeof(*w));
    w->dir = xstrdup(dir);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (thread) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old); /* the thread takes no signal */
        w->threaded = pthread_create(&w->tid, NULL, writer, w) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return w;
}

void usage_add(struct usage_writer *w, const struct usage_record *r)
{
    pthread_mutex_lock(&w->mu);
    if (w->n + w->pending >= QUEUE_MAX) {
        pthread_mutex_unlock(&w->mu);
        trouble(1, "the writer is behind", "queue full");
        return;
    }
    if (w->n == w->size) {
        w->size = w->size ? w->size * 2 : 64;
        if (w->size > QUEUE_MAX) {
            w->size = QUEUE_MAX;
        }
        w->q = xrealloc(w->q, w->size * sizeof(*w->q));
    }
    w->q[w->n++] = *r;
    pthread_mutex_unlock(&w->mu);
}

void usage_writer_free(struct usage_writer *w)
{
    if (w == NULL) {
        return;
    }
    /* from here each wait for a lock is short: see proxy_main's exit grace */
    __atomic_store_n(&w->ending, 1, __ATOMIC_RELEASE);
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->tid, NULL);
    }
    flush(w, true);
    close_db(w, w->db != NULL && !same_file(w));
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->q);
    free(w->held);
    free(w->dir);
    free(w);
}

int usage_spend_since(const char *dir, const char *key_id, int64_t since_s, uint64_t out[4])
{
    memset(out, 0, 4 * sizeof(uint64_t));
    char err[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = prepare_read(dir, SPEND_BUSY_MS, "hourly",
                          "SELECT SUM(requests), SUM(prompt), SUM(completion), "
                          "SUM(cost_micro) FROM hourly WHERE key_id = ? AND hour >= ?",
                          &db, &s, err, sizeof(err));
    if (rc <= 0) {
        return rc;
    }
    sqlite3_bind_text(s, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, since_s / 3600);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < 4; i++) {
            out[i] = (uint64_t)sqlite3_column_int64(s, i);
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

int usage_spend_all(const char *dir, const int64_t *since_s, size_t nsince,
                    struct usage_spend **out, size_t *n)
{
    assert(nsince >= 1 && nsince <= USAGE_SINCE_MAX);
    *out = NULL;
    *n = 0;
    static const char *const cols[4] = {"requests", "prompt", "completion", "cost_micro"};
    char sql[2048];
    size_t len = (size_t)snprintf(sql, sizeof(sql), "SELECT key_id");
    int64_t first = since_s[0];
    for (size_t i = 0; i < nsince; i++) {
        for (int c = 0; c < 4; c++) {
            len += (size_t)snprintf(sql + len, sizeof(sql) - len,
                                    ", SUM(CASE WHEN hour >= ?%zu THEN %s ELSE 0 END)", i + 1,
                                    cols[c]);
        }
        first = since_s[i] < first ? since_s[i] : first;
    }
    snprintf(sql + len, sizeof(sql) - len,
             " FROM hourly WHERE key_id <> '' AND hour >= ?%zu GROUP BY key_id ORDER BY key_id",
             nsince + 1);
    char err[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = prepare_read(dir, BUSY_MS, "hourly", sql, &db, &s, err, sizeof(err));
    if (rc <= 0) {
        return rc;
    }
    for (size_t i = 0; i < nsince; i++) {
        sqlite3_bind_int64(s, (int)i + 1, since_s[i] / 3600);
    }
    sqlite3_bind_int64(s, (int)nsince + 1, first / 3600);
    struct usage_spend *a = NULL;
    size_t na = 0, size = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(s, 0);
        if (id == NULL || strlen(id) >= sizeof(a->key_id)) {
            continue; /* not one the writer stores */
        }
        if (na == size) {
            size = size ? size * 2 : 16;
            a = xrealloc(a, size * sizeof(*a));
        }
        struct usage_spend *e = &a[na++];
        memset(e, 0, sizeof(*e));
        snprintf(e->key_id, sizeof(e->key_id), "%s", id);
        for (size_t i = 0; i < nsince; i++) {
            for (int c = 0; c < 4; c++) {
                e->spent[i][c] = (uint64_t)sqlite3_column_int64(s, 1 + (int)i * 4 + c);
            }
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (rc != SQLITE_DONE) {
        free(a);
        return -1;
    }
    *out = a;
    *n = na;
    return 0;
}

static int spend_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct usage_spend *)elem)->key_id);
}

const struct usage_spend *usage_spend_find(const struct usage_spend *a, size_t n,
                                           const char *key_id)
{
    return n > 0 ? bsearch(key_id, a, n, sizeof(*a), spend_cmp) : NULL;
}

/* The value of name in a query string (percent-decoded), or NULL. */
static const char *query_value(const char *query, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = query; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (len > nl && p[nl] == '=' && strncmp(p, name, nl) == 0) {
            size_t k = 0;
            for (size_t i = nl + 1; i < len && k + 1 < n; i++) {
                char ch = p[i];
                if (ch == '%' && i + 2 < len + 1 && hex_digit(p[i + 1]) >= 0 &&
                    hex_digit(p[i + 2]) >= 0) {
                    ch = (char)(hex_digit(p[i + 1]) * 16 + hex_digit(p[i + 2]));
                    i += 2;
                } else if (ch == '+') {
                    ch = ' ';
                }
                out[k++] = ch;
            }
            out[k] = '\0';
            return out;
        }
        p = amp != NULL ? amp + 1 : NULL;
    }
    return NULL;
}

static cJSON *key_name(const cJSON *names, const char *id, const char *stored)
{
    if (*id == '\0') {
        return cJSON_CreateNull(); /* keyless */
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(names, id);
    return cJSON_CreateString(cJSON_IsString(n) ? n->valuestring : stored);
}

enum { G_KEY = 1, G_MODEL = 2, G_BACKEND = 4, G_DAY = 8 };

int usage_query(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                size_t errlen)
{
    char v[256];
    long today = (long)(time(NULL) / 86400), from = today, to = today;
    if (query_value(query, "from", v, sizeof(v)) != NULL && !utctime_parse_date(v, &from)) {
        snprintf(err, errlen, "from must be a date YYYY-MM-DD (UTC)");
        return 400;
    }
    if (query_value(query, "to", v, sizeof(v)) != NULL && !utctime_parse_date(v, &to)) {
        snprintf(err, errlen, "to must be a date YYYY-MM-DD (UTC)");
        return 400;
    }
    if (to < from) {
        snprintf(err, errlen, "to is before from");
        return 400;
    }
    int group = G_MODEL;
    if (query_value(query, "group_by", v, sizeof(v)) != NULL) {
        group = 0;
        for (char *tok = v; tok != NULL && *tok != '\0';) {
            char *comma = strchr(tok, ',');
            if (comma != NULL) {
                *comma = '\0';
            }
            int g = strcmp(tok, "key") == 0       ? G_KEY
                    : strcmp(tok, "model") == 0   ? G_MODEL
                    : strcmp(tok, "backend") == 0 ? G_BACKEND
                    : strcmp(tok, "day") == 0     ? G_DAY
                                                  : 0;
            if (g == 0) {
                snprintf(err, errlen,
                         "group_by takes key, model, backend and day (comma-separated)");
                return 400;
            }
            group |= g;
            tok = comma != NULL ? comma + 1 : NULL;
        }
    }
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT %s, %s, %s, %s, MAX(key_name), SUM(requests), SUM(errors), SUM(prompt), "
             "SUM(completion), SUM(cost_micro) FROM hourly WHERE hour >= ? AND hour < ? GROUP BY "
             "1, 2, 3, 4 ORDER BY 4, 1, 2, 3",
             group & G_KEY ? "key_id" : "''", group & G_MODEL ? "model" : "''",
             group & G_BACKEND ? "backend" : "''", group & G_DAY ? "hour / 24" : "0");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = prepare_read(dir, BUSY_MS, "hourly", sql, &db, &s, err, errlen);
    if (rc < 0) {
        return 500;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "Usage");
    if (rc == 0) {
        *out = root; /* no usage yet */
        return 200;
    }
    sqlite3_bind_int64(s, 1, (sqlite3_int64)from * 24);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)(to + 1) * 24);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cJSON *row = cJSON_CreateObject();
        if (group & G_KEY) {
            cJSON_AddItemToObject(row, "Key",
                                  key_name(names, (const char *)sqlite3_column_text(s, 0),
                                           (const char *)sqlite3_column_text(s, 4)));
        }
        if (group & G_MODEL) {
            cJSON_AddStringToObject(row, "Model", (const char *)sqlite3_column_text(s, 1));
        }
        if (group & G_BACKEND) {
            cJSON_AddStringToObject(row, "Backend", (const char *)sqlite3_column_text(s, 2));
        }
        if (group & G_DAY) {
            char day[16];
            utctime_format_date((long)sqlite3_column_int64(s, 3), day, sizeof(day));
            cJSON_AddStringToObject(row, "Day", day);
        }
        cJSON_AddNumberToObject(row, "Requests", (double)sqlite3_column_int64(s, 5));
        cJSON_AddNumberToObject(row, "Errors", (double)sqlite3_column_int64(s, 6));
        cJSON_AddNumberToObject(row, "PromptTokens", (double)sqlite3_column_int64(s, 7));
        cJSON_AddNumberToObject(row, "CompletionTokens", (double)sqlite3_column_int64(s, 8));
        cJSON_AddNumberToObject(row, "CostUsd", (double)sqlite3_column_int64(s, 9) / 1e6);
        cJSON_AddItemToArray(list, row);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        cJSON_Delete(root);
        return 500;
    }
    sqlite3_close(db);
    *out = root;
    return 200;
}

int usage_recent(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                 size_t errlen)
{
    char v[64];
    long limit = 100;
    if (query_value(query, "limit", v, sizeof(v)) != NULL) {
        char *end;
        errno = 0;
        limit = strtol(v, &end, 10);
        if (errno != 0 || *end != '\0' || limit < 1 || limit > 10000) {
            snprintf(err, errlen, "limit must be a whole number from 1 to 10000");
            return 400;
        }
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = prepare_read(dir, BUSY_MS, "requests",
                          "SELECT time_ms, request_id, key_id, key_name, model, backend, status, "
                          "stream, prompt, completion, cost_micro, ms, ttfb_ms FROM requests "
                          "ORDER BY seq DESC LIMIT ?",
                          &db, &s, err, errlen);
    if (rc < 0) {
        return 500;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "Requests");
    if (rc == 0) {
        *out = root; /* no requests yet */
        return 200;
    }
    sqlite3_bind_int64(s, 1, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cJSON *row = cJSON_CreateObject();
        int64_t ms = sqlite3_column_int64(s, 0);
        char t[40];
        utctime_format_rfc3339(ms / 1000, t, sizeof(t));
        /* milliseconds in the time: "2026-12-01T10:00:00.123Z" */
        char tm[48];
        snprintf(tm, sizeof(tm), "%.19s.%03dZ", t, (int)(ms % 1000));
        cJSON_AddStringToObject(row, "Time", tm);
        cJSON_AddStringToObject(row, "RequestId", (const char *)sqlite3_column_text(s, 1));
        cJSON_AddItemToObject(row, "Key",
                              key_name(names, (const char *)sqlite3_column_text(s, 2),
                                       (const char *)sqlite3_column_text(s, 3)));
        cJSON_AddStringToObject(row, "Model", (const char *)sqlite3_column_text(s, 4));
        const char *be = (const char *)sqlite3_column_text(s, 5);
        cJSON_AddItemToObject(row, "Backend",
                              be != NULL && *be ? cJSON_CreateString(be) : cJSON_CreateNull());
        cJSON_AddNumberToObject(row, "Status", sqlite3_column_int(s, 6));
        cJSON_AddBoolToObject(row, "Stream", sqlite3_column_int(s, 7) != 0);
        cJSON_AddNumberToObject(row, "PromptTokens", (double)sqlite3_column_int64(s, 8));
        cJSON_AddNumberToObject(row, "CompletionTokens", (double)sqlite3_column_int64(s, 9));
        cJSON_AddNumberToObject(row, "CostUsd", (double)sqlite3_column_int64(s, 10) / 1e6);
        cJSON_AddNumberToObject(row, "Ms", sqlite3_column_double(s, 11));
        cJSON_AddNumberToObject(row, "TtfbMs", sqlite3_column_double(s, 12));
        cJSON_AddItemToArray(list, row);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(root);
        snprintf(err, errlen, "cannot read the requests log");
        return 500;
    }
    *out = root;
    return 200;
}
