/* usage.h - usage and the recent-requests log in SQLite (STATE_DIR/usage.db) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_USAGE_H
#define LLMPROXY_USAGE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* usage.db (WAL mode, so the admin program reads while responders write)
 * holds hourly buckets per (client key, model, backend) and a log of the
 * most recent requests. Responders never write on the request path: each
 * process queues its records and one writer thread stores them at most once
 * a second, in one transaction; a CGI process stores its one record at exit.
 * A locked, full or broken database never fails a request: the trouble is
 * logged (once a minute) and counted (usage_write_errors). A batch that
 * finds the database locked past the busy timeout is tried once more at the
 * next flush; a process queues at most about 20 MB of records.
 * Only the writer makes usage.db (mode 0600, and so its -wal and -shm) and
 * its tables; readers never create a file, and read a missing database as
 * empty. A writer whose usage.db was deleted or replaced opens the new one
 * (or makes one) at its next flush.
 * Retention: LLMPROXY_USAGE_DAYS of hourly buckets (400), the last
 * LLMPROXY_REQUEST_LOG_ROWS requests (10000). */
#define USAGE_FILE "usage.db"

struct usage_record {
    int64_t time_ms; /* wall clock, when it ended */
    char request_id[24];
    char key_id[24];    /* "" without a client key */
    char key_name[257]; /* "" without one */
    char model[257];
    char backend[257]; /* "" when no backend answered */
    int status;
    bool stream;
    bool error;   /* status >= 400, or a stream that broke */
    bool counted; /* it reached a backend: in the hourly usage (else only in the log) */
    uint64_t prompt, completion, cached;
    uint64_t cost_micro; /* USD x 10^6 */
    double ms, ttfb_ms;
};

struct usage_writer;

/* thread: write from a thread of its own every second (FastCGI); else only
 * when freed (CGI). NULL never: a database that cannot open is reported
 * and records are then dropped (and counted). */
struct usage_writer *usage_writer_new(const char *dir, bool thread);
/* Thread-safe, never blocks on the database. */
void usage_add(struct usage_writer *w, const struct usage_record *r);
/* Stores what is queued, then stops; each wait for a lock is then at most
 * 500 ms, to fit a process's exit grace. */
void usage_writer_free(struct usage_writer *w);
/* Records that could not be stored, in this process, so far. */
uint64_t usage_write_errors(void);

/* The spend of key_id since since_s (for a budget whose shared counters
 * were lost with the state file): requests, prompt, completion, cost_micro.
 * 0 (all zero when there is no usage.db yet), or -1 when the database
 * cannot be read (out is then zero). Waits at most 50 ms for a lock. */
int usage_spend_since(const char *dir, const char *key_id, int64_t since_s, uint64_t out[4]);

#define USAGE_SINCE_MAX 4

/* One key's spend since each of the starts given to usage_spend_all:
 * spent[i] is since since_s[i], in usage_spend_since's order (requests,
 * prompt, completion, cost_micro). */
struct usage_spend {
    char key_id[24];
    uint64_t spent[USAGE_SINCE_MAX][4];
};

/* The spend of every client key (keyless use left out) since each of
 * since_s[0..nsince-1] (1 to USAGE_SINCE_MAX starts, seconds), with one
 * connection and one query: for GET /admin/keys, pass the start of each
 * budget period and pick each key's. On success 0 and *out, *n entries
 * sorted by key_id (NULL and 0 when there is no usage yet; the caller
 * free()s *out); a key with no usage has no entry. -1 when the database
 * cannot be read (*out NULL, *n 0). */
int usage_spend_all(const char *dir, const int64_t *since_s, size_t nsince,
                    struct usage_spend **out, size_t *n);
/* key_id's entry in what usage_spend_all returned, or NULL (no usage). */
const struct usage_spend *usage_spend_find(const struct usage_spend *a, size_t n,
                                           const char *key_id);

/* GET /admin/usage: query is the request's query string. On success 200
 * and *out is {"Usage": [...]} (empty when there is no usage.db yet); 400
 * with a message in err for a bad query; 500 when the database cannot be
 * read. names: {"key_id": "current name"} (keys renamed since) or NULL. */
int usage_query(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                size_t errlen);
/* GET /admin/requests, newest first (empty when there is no usage.db yet). */
int usage_recent(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                 size_t errlen);

#endif
