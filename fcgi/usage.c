/* usage.c - usage and the recent-requests log in SQLite (STATE_DIR/usage.db) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "usage.h"
#include "log.h"
#include "utctime.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Records waiting for the writer; past this they are dropped (counted). */
#define QUEUE_MAX 200000
#define BUSY_MS 2000

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

/* Opens usage.db (made 0600 with its tables if absent). NULL with err. */
static sqlite3 *open_db(const char *dir, bool write, int busy_ms, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, USAGE_FILE);
    sqlite3 *db = NULL;
    int flags = write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READWRITE;
    mode_t old = umask(077);
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    umask(old);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", db != NULL ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, busy_ms);
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg != NULL ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

struct usage_writer {
    char *dir;
    sqlite3 *db;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct usage_record *q;
    size_t n, size;
    bool stop;
    bool threaded;
    pthread_t tid;
    int64_t pruned_at;
};

static int store_batch(struct usage_writer *w, const struct usage_record *r, size_t n)
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
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        const struct usage_record *x = &r[i];
        if (!x->counted) {
            goto log_only; /* refused before any backend: in the log, not in usage */
        }
        sqlite3_reset(s1);
        sqlite3_bind_int64(s1, 1, x->time_ms / 3600000);
        sqlite3_bind_text(s1, 2, x->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s1, 3, x->key_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s1, 4, x->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(s1, 5, x->backend, -1, SQLITE_STATIC);
        sqlite3_bind_int(s1, 6, x->error ? 1 : 0);
        sqlite3_bind_int64(s1, 7, (sqlite3_int64)x->prompt);
        sqlite3_bind_int64(s1, 8, (sqlite3_int64)x->completion);
        sqlite3_bind_int64(s1, 9, (sqlite3_int64)x->cached);
        sqlite3_bind_int64(s1, 10, (sqlite3_int64)x->cost_micro);
        rc = sqlite3_step(s1) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        if (rc != SQLITE_OK) {
            break;
        }
    log_only:
        sqlite3_reset(s2);
        sqlite3_bind_int64(s2, 1, x->time_ms);
        sqlite3_bind_text(s2, 2, x->request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s2, 3, x->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s2, 4, x->key_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s2, 5, x->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(s2, 6, x->backend, -1, SQLITE_STATIC);
        sqlite3_bind_int(s2, 7, x->status);
        sqlite3_bind_int(s2, 8, x->stream ? 1 : 0);
        sqlite3_bind_int64(s2, 9, (sqlite3_int64)x->prompt);
        sqlite3_bind_int64(s2, 10, (sqlite3_int64)x->completion);
        sqlite3_bind_int64(s2, 11, (sqlite3_int64)x->cost_micro);
        sqlite3_bind_double(s2, 12, x->ms);
        sqlite3_bind_double(s2, 13, x->ttfb_ms);
        rc = sqlite3_step(s2) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
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
        const char *why = sqlite3_errmsg(w->db);
        char copy[256];
        snprintf(copy, sizeof(copy), "%s", why);
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
        trouble(n, "cannot store usage", copy);
        return -1;
    }
    return 0;
}

/* Takes the queue and stores it; on the writer's thread or at the end. */
static void flush(struct usage_writer *w)
{
    pthread_mutex_lock(&w->mu);
    struct usage_record *q = w->q;
    size_t n = w->n;
    w->q = NULL;
    w->n = w->size = 0;
    pthread_mutex_unlock(&w->mu);
    if (n == 0) {
        free(q);
        return;
    }
    if (w->db == NULL) {
        char err[256];
        w->db = open_db(w->dir, true, BUSY_MS, err, sizeof(err));
        if (w->db == NULL) {
            trouble(n, "cannot open", err);
            free(q);
            return;
        }
    }
    store_batch(w, q, n);
    free(q);
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
        flush(w);
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
    if (w->n >= QUEUE_MAX) {
        pthread_mutex_unlock(&w->mu);
        trouble(1, "the writer is behind", "queue full");
        return;
    }
    if (w->n == w->size) {
        w->size = w->size ? w->size * 2 : 64;
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
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->tid, NULL);
    }
    flush(w);
    sqlite3_close(w->db);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->q);
    free(w->dir);
    free(w);
}

int usage_spend_since(const char *dir, const char *key_id, int64_t since_s, uint64_t out[4])
{
    memset(out, 0, 4 * sizeof(uint64_t));
    char err[256];
    sqlite3 *db = open_db(dir, true, 50, err, sizeof(err));
    if (db == NULL) {
        return -1;
    }
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT SUM(requests), SUM(prompt), SUM(completion), "
                                "SUM(cost_micro) FROM hourly WHERE key_id = ? AND hour >= ?",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, since_s / 3600);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            for (int i = 0; i < 4; i++) {
                out[i] = (uint64_t)sqlite3_column_int64(s, i);
            }
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
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
    sqlite3 *db = open_db(dir, true, BUSY_MS, err, errlen);
    if (db == NULL) {
        return 500;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 500;
    }
    sqlite3_bind_int64(s, 1, (sqlite3_int64)from * 24);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)(to + 1) * 24);
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "Usage");
    int rc;
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
    sqlite3 *db = open_db(dir, true, BUSY_MS, err, errlen);
    if (db == NULL) {
        return 500;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT time_ms, request_id, key_id, key_name, model, backend, status, "
                           "stream, prompt, completion, cost_micro, ms, ttfb_ms FROM requests "
                           "ORDER BY seq DESC LIMIT ?",
                           -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 500;
    }
    sqlite3_bind_int64(s, 1, limit);
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "Requests");
    int rc;
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
