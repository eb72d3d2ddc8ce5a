/* proxy_int.h - what proxy.c (a request's life) and attempt.c (its attempts) share */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_PROXY_INT_H
#define LLMPROXY_PROXY_INT_H

#include "buf.h"
#include "config.h"
#include "limit.h"
#include "meter.h"
#include "multipart.h"
#include "loop.h"
#include "policy.h"
#include "proxy.h"
#include "redis.h"
#include "request.h"
#include "sse.h"

#include <stdint.h>

struct conn;
struct conn_server;
struct endpoint;
struct snapshot;
struct upstream;
struct upstream_xfer;
struct client_key;
struct usage_writer;

/* The client headers that may go upstream (see proxy.c), plus ours. */
#define FORWARDED_HEADERS 8
#define MAX_UPSTREAM_HEADERS (FORWARDED_HEADERS + 3)
struct proxy_shared {
    const char *dir;            /* the state dir */
    struct usage_writer *usage; /* NULL: usage is not recorded */
    struct proxy_settings set;
    struct state *st;
    struct affinity *aff;        /* which backend and key made each response */
    unsigned long next_id;       /* atomic */
    unsigned pid;                /* request ids are "<pid>-<n>" */
    struct redis_settings redis; /* several hosts as one (off: .on false) */
    char host_id[40];
};

struct proxy {
    struct proxy_shared *sh;
    const struct proxy_settings *set;
    struct loop *loop;
    struct upstream *up;
    struct conn_server *srv;
    struct request_ctx *active;
    size_t nactive;
    struct loop_alarm tick;
    int draining;
    int64_t drain_at;
    int cgi;
    size_t since_trim;  /* requests finished since memory was last given back */
    struct rshare *rs;  /* NULL: no Redis */
    int64_t idle_since; /* CGI: since when nothing is open (Redis writes may follow) */
    int64_t done_at;    /* CGI: when its request ended */
};

/* Where a request is. */
enum rq_state {
    RQ_BODY,    /* reading the client's body */
    RQ_ATTEMPT, /* attempts are being made; nothing sent to the client yet */
    RQ_RELAY,   /* the answer is chosen and goes to the client */
    RQ_DONE,    /* answered or given up: logged, its connection is let go */
};

/* Where the current attempt is. */
enum at_state {
    AT_NONE,    /* no transfer */
    AT_WAIT,    /* sent: waiting for the status and headers */
    AT_HOLD,    /* 2xx: holding bytes until the first event (or byte) decides */
    AT_DISCARD, /* a failed answer: reading its rest to keep the connection */
    AT_PASS,    /* the chosen answer: every byte goes to the client */
};

struct request_ctx {
    struct proxy *px;
    struct conn *conn; /* NULL once let go */
    const struct endpoint *ep;
    struct snapshot *snap;
    const struct config_model *model;
    char rid[24];
    char method[16];
    char path[512];
    int64_t t0;
    enum rq_state state;
    int busy;           /* inside proxy code for this request */
    int in_cb;          /* inside a libcurl callback of its transfer */
    int finish_pending; /* finish once nothing holds it */
    int gone;           /* the client left */
    const char *gone_name;
    int64_t body_deadline;
    struct buf body;
    struct request_info info;
    int scanned;                                /* info is valid */
    struct multipart mp;                        /* a multipart body's parser */
    struct buf hdr_store;                       /* "Name: value\0" lines */
    const char *hdrs[MAX_UPSTREAM_HEADERS + 1]; /* [0] is Authorization */
    struct buf auth; /* "Authorization: Bearer <key>" of the current attempt */
    struct buf url;
    struct buf model_json; /* the backend's model name as a JSON string */

    uint8_t order[CONFIG_MAX_BACKENDS];
    size_t norder;
    size_t oi;        /* position in order */
    size_t key_start; /* rotated first key of the current backend */
    size_t key_tries; /* keys of the current backend tried so far */
    unsigned attempts;
    int64_t deadline_all; /* the whole request's deadline until an answer is chosen */
    /* cooling (backend, key) pairs skipped, and the soonest to recover */
    unsigned n_skipped;
    uint64_t soonest_wait_ms;
    uint8_t soonest_backend;
    size_t soonest_key;
    int soonest_tried;

    /* the current attempt */
    enum at_state at;
    struct upstream_xfer *xfer;
    const struct config_backend *backend;
    size_t key_index; /* the backend whose half-open circuit gave this request its one trial */
    const struct config_backend *trial_backend;
    uint64_t trial_stamp; /* its lease, which only it may give back */
    int fallback;         /* it is a cooling key tried as a last resort */
    int status;
    enum policy_outcome verdict; /* set when the answer is judged failed */
    int judged;
    int event_stream; /* upstream said text/event-stream */
    int html;         /* upstream said text/html: a portal or error page, not an API answer */
    int paused;       /* the transfer waits for the client to take what is queued */
    int too_big;
    int held_relay; /* a relayed answer (4xx, a follow-up) held whole under CGI */
    enum policy_outcome relay_outcome; /* what its head said, applied once it is whole */
    int cut;      /* a plain answer broke off: cut the connection, no END_REQUEST */
    int broken;   /* the answer broke off after it began */
    int answered; /* a backend's answer went to the client (ctx->backend) */

    /* the client (client.c) */
    const struct client_key *key; /* NULL: keyless mode; points into snap */
    struct limit_view rpm_view, tpm_view;
    int limits_known; /* 1: rpm_view, 2: tpm_view are set */
    struct request_edit usage_edit;
    int usage_added;      /* usage_edit asks the backend for a stream's usage */
    int attempt_strip;    /* this attempt's stream carries a usage chunk we added */
    struct meter meter;   /* what the answer used */
    struct buf relay_buf; /* what the meter passes on, chunk by chunk */
    int metering;
    int64_t ttfb_us;     /* from the request's start to the answer's first byte */
    int at_outcome;      /* the current attempt's policy outcome so far, -1: none yet */
    int usage_estimated; /* the answer reported no usage: it was estimated */
    int log_cut;         /* attempts left out of the JSON log line (no room) */
    /* model fallbacks: the model asked for, and the ones to try after it */
    const struct config_model *asked;
    const struct config_model *chain[CONFIG_MAX_CHAIN];
    size_t nchain, chain_next;
    unsigned attempts_base; /* attempts made before the current model took over */
    /* a response's follow-up: only this backend (of ctx->model) and key */
    int pinned;
    uint8_t pin_backend;
    size_t pin_key;
    char response_id[REQUEST_ID_MAX + 1]; /* the response the path or body names */
    int response_saved;                   /* the id of the response made is recorded */
    struct buf resp_hdrs;
    struct buf hold;
    struct sse_peek peek;
    size_t discarded;
    long retry_after;
    int64_t attempt_t0;
    int64_t deadline; /* first byte, then idle; 0: none */

    /* what Redis said (shared.c) */
    struct rs_admit rsa;
    struct rs_op *rs_op; /* waiting for it */
    void (*rs_next)(struct request_ctx *ctx);
    int rs_asked;
    char rs_period[32];
    uint64_t ticket; /* the model's request number (route.h) */

    /* across attempts */
    unsigned n_rate_limited, n_timeout;
    long min_retry_after; /* seconds, over the 429s seen and the keys skipped for one */
    int final_status;
    size_t bytes_out;
    struct buf log;
    struct request_ctx *prev, *next;
};

/* ---- proxy.c ---- */

/* Ends the request now, or as soon as no caller up the stack holds it:
 * the log line, the connection let go, everything released. */
void proxy_finish(struct request_ctx *ctx);
/* Around proxy code that uses ctx: a finish asked for meanwhile waits for
 * the outermost proxy_leave (never inside a callback of its transfer). */
void proxy_enter(struct request_ctx *ctx);
void proxy_leave(struct request_ctx *ctx);
/* One attempt's entry in the log line. */
void proxy_log_attempt(struct request_ctx *ctx, const char *outcome);
/* The order of ctx->model's backends, from the first (a request's model,
 * or a fallback taking over). */
void proxy_plan(struct request_ctx *ctx);
void proxy_log_json_item(struct request_ctx *ctx, const struct buf *item);
/* Writes to the client; 0, or -1 when it is gone. */
int proxy_client_write(struct request_ctx *ctx, const char *p, size_t n, int flush);
/* An answer of our own (an error, a verdict); the request then ends. */
void proxy_answer_error(struct request_ctx *ctx, int status, const char *msg, const char *type,
                        const char *param, const char *code, const char *extra);

/* ---- client.c ---- */

/* The client may use a guarded endpoint: keyless mode's rule, or a valid
 * key (ctx->key). Refusals are answered (401, 403). */
bool client_admit(struct request_ctx *ctx, struct conn *c);
/* With the model known: the key may use it, its limits and budget allow
 * (403, 429 answered otherwise). */
bool client_admit_model(struct request_ctx *ctx);
/* The key may use the model named (else 403, answered). */
bool client_model_ok(struct request_ctx *ctx);
/* The key's budget period, this host's spend in it (for Redis, which sums
 * the hosts'), and how long the period has left (0: no end). */
void client_local_spend(struct request_ctx *ctx, char *period, size_t n, uint64_t spend[4],
                        int64_t *ttl_s);
/* The x-ratelimit-* lines of a keyed request with limits. */
void client_headers(struct request_ctx *ctx, struct buf *h);
/* At the end: the usage record, the key's spend and token bucket. */
void client_account(struct request_ctx *ctx, int status);

/* ---- attempt.c ---- */

/* Starts the next attempt in order, or answers with the verdict. */
void attempt_start(struct request_ctx *ctx);
/* The current attempt's deadline, or the drain's end (shutdown). */
void attempt_expire(struct request_ctx *ctx, int64_t now, int shutdown);
/* The request ends: gives back what its attempts hold (a circuit's trial). */
void attempt_end(struct request_ctx *ctx);

#endif
