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
 * logged (once a minute) and counted (usage_write_errors).
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
/* Stores what is queued, then stops. */
void usage_writer_free(struct usage_writer *w);
/* Records that could not be stored, in this process, so far. */
uint64_t usage_write_errors(void);

/* The spend of key_id since since_s (for a budget whose shared counters
 * were lost with the state file): requests, prompt, completion, cost_micro.
 * 0, or -1 when the database cannot be read (out is then zero). */
int usage_spend_since(const char *dir, const char *key_id, int64_t since_s, uint64_t out[4]);

/* GET /admin/usage: query is the request's query string. On success 200
 * and *out is {"Usage": [...]}; 400 with a message in err for a bad query;
 * 500 when the database cannot be read. names: {"key_id": "current name"}
 * (keys renamed since) or NULL. */
int usage_query(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                size_t errlen);
/* GET /admin/requests, newest first. */
int usage_recent(const char *dir, const char *query, const cJSON *names, cJSON **out, char *err,
                 size_t errlen);

#endif
