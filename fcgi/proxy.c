/* proxy.c - one client request: validate, order, relay, fail over */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy.h"
#include "answer.h"
#include "buf.h"
#include "conn.h"
#include "endpoint.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "reply.h"
#include "request.h"
#include "route.h"
#include "snapshot.h"
#include "sse.h"
#include "state.h"
#include "upstream.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Body bytes of a failed attempt read (and dropped) to keep the
 * connection reusable; past this the attempt is cut off. */
#define DISCARD_MAX (64 * 1024)
/* Upper bound for a Retry-After we pass on or wait for. */
#define RETRY_AFTER_CAP 3600
#define TICK_US 50000
/* Client headers copied upstream; keep in sync with http_upstream_header. */
static const char *const forwarded_params[] = {
    "HTTP_ACCEPT",       "HTTP_USER_AGENT", "HTTP_OPENAI_BETA",
    "HTTP_HTTP_REFERER", "HTTP_X_TITLE",    "HTTP_X_STAINLESS_LANG",
};
#define MAX_UPSTREAM_HEADERS (ARRAY_LEN(forwarded_params) + 3)

struct proxy_shared {
    struct proxy_settings set;
    struct state *st;
    unsigned long next_id; /* atomic */
    unsigned pid;          /* request ids are "<pid>-<n>" */
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
    size_t since_trim; /* requests finished since memory was last given back */
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
    size_t key_index;
    int trial;    /* it is the one trial of its backend's half-open circuit */
    int fallback; /* it is a cooling key tried as a last resort */
    int status;
    enum policy_outcome verdict; /* set when the answer is judged failed */
    int judged;
    int event_stream; /* upstream said text/event-stream */
    int html;         /* upstream said text/html: a portal or error page, not an API answer */
    int paused;       /* the transfer waits for the client to take what is queued */
    int too_big;
    struct buf resp_hdrs;
    struct buf hold;
    struct sse_peek peek;
    size_t discarded;
    long retry_after;
    int64_t attempt_t0;
    int64_t deadline; /* first byte, then idle; 0: none */

    /* across attempts */
    unsigned n_rate_limited, n_timeout;
    long min_retry_after; /* seconds, over the 429s seen and the keys skipped for one */
    int final_status;
    size_t bytes_out;
    struct buf log;
    struct request_ctx *prev, *next;
};

static size_t env_size(const char *name, size_t def, size_t lo, size_t hi)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        return def;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < lo || n > hi) {
        LOG_WARN("%s=%s is not a number from %zu to %zu; using %zu", name, v, lo, hi, def);
        return def;
    }
    return (size_t)n;
}

void proxy_settings_from_env(struct proxy_settings *s)
{
    s->max_body = env_size("LLMPROXY_MAX_BODY_BYTES", 16u << 20, 1024, (size_t)1 << 31);
    s->connect_timeout_ms = (long)env_size("LLMPROXY_CONNECT_TIMEOUT_MS", 5000, 10, 600000);
    s->max_attempts = (unsigned)env_size("LLMPROXY_MAX_ATTEMPTS", 16, 1, 1000);
    s->hold_max = 4u << 20;
    s->deadline_ms = (long)env_size("LLMPROXY_DEADLINE_MS", 300000, 100, 86400000);
    s->max_response =
        env_size("LLMPROXY_MAX_RESPONSE_BYTES", (size_t)256 << 20, 4096, (size_t)1 << 40);
    s->body_timeout_ms = (long)env_size("LLMPROXY_BODY_TIMEOUT_MS", 30000, 100, 3600000);
    s->stall_ms = (long)env_size("LLMPROXY_CLIENT_STALL_MS", 120000, 100, 86400000);
    s->drain_ms = (long)env_size("LLMPROXY_DRAIN_MS", 5000, 0, 3600000);
}

struct proxy_shared *proxy_shared_new(const struct proxy_settings *s, struct state *st)
{
    struct proxy_shared *sh = xcalloc(1, sizeof(*sh));
    sh->set = *s;
    sh->st = st;
    sh->pid = (unsigned)getpid();
    return sh;
}

void proxy_shared_free(struct proxy_shared *sh)
{
    free(sh);
}

/* ---- the request's life ---- */

static void arm_tick(struct proxy *px)
{
    if (px->tick.at < 0) {
        px->tick.at = now_us() + TICK_US;
    }
}

static void link_active(struct proxy *px, struct request_ctx *ctx)
{
    ctx->next = px->active;
    if (px->active != NULL) {
        px->active->prev = ctx;
    }
    px->active = ctx;
    px->nactive++;
    arm_tick(px);
}

static void unlink_active(struct proxy *px, struct request_ctx *ctx)
{
    if (ctx->prev != NULL) {
        ctx->prev->next = ctx->next;
    } else {
        px->active = ctx->next;
    }
    if (ctx->next != NULL) {
        ctx->next->prev = ctx->prev;
    }
    px->nactive--;
}

static void ctx_free(struct request_ctx *ctx)
{
    snapshot_release(ctx->snap);
    buf_cleanup(&ctx->body);
    buf_cleanup(&ctx->hdr_store);
    buf_cleanup(&ctx->url);
    buf_cleanup(&ctx->auth);
    buf_cleanup(&ctx->model_json);
    buf_cleanup(&ctx->resp_hdrs);
    buf_cleanup(&ctx->hold);
    sse_peek_cleanup(&ctx->peek);
    buf_cleanup(&ctx->log);
    free(ctx);
}

/* The one log line, the connection let go, everything released. */
static void do_finish(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    if (ctx->xfer != NULL) {
        upstream_cancel(px->up, ctx->xfer);
        ctx->xfer = NULL;
    }
    int status = ctx->gone ? 499 : ctx->final_status; /* nginx's "client closed request" */
    double ms = (double)(now_us() - ctx->t0) / 1000.0;
    if (ctx->scanned) {
        log_linef("req=%s %s model=%s stream=%d attempts=[%s] status=%d%s%s bytes=%zu ms=%.2f",
                  ctx->rid, ctx->ep->upstream_path, ctx->info.model, ctx->info.stream,
                  ctx->log.data != NULL ? ctx->log.data : "", status,
                  ctx->gone && ctx->state == RQ_RELAY ? " " : "",
                  ctx->gone && ctx->state == RQ_RELAY ? ctx->gone_name : "", ctx->bytes_out, ms);
    } else {
        log_linef("req=%s %s %s status=%d%s%s ms=%.2f", ctx->rid, ctx->method, ctx->path, status,
                  ctx->gone ? " " : "", ctx->gone ? ctx->gone_name : "", ms);
    }
    if (ctx->state != RQ_DONE) {
        ctx->state = RQ_DONE;
    }
    if (ctx->conn != NULL) {
        conn_end(ctx->conn);
        ctx->conn = NULL;
    }
    if (ctx->prev != NULL || ctx->next != NULL || px->active == ctx) {
        unlink_active(px, ctx);
    }
    ctx_free(ctx);
    px->since_trim++;
}

/* Ends the request now, or as soon as no caller up the stack holds it. */
static void finish(struct request_ctx *ctx)
{
    if (ctx->busy > 0) {
        ctx->finish_pending = 1;
    } else {
        do_finish(ctx);
    }
}

static void enter(struct request_ctx *ctx)
{
    ctx->busy++;
}

/* Leaves proxy code; the request may be gone after this. */
static void leave(struct request_ctx *ctx)
{
    if (--ctx->busy == 0 && ctx->finish_pending && ctx->in_cb == 0) {
        do_finish(ctx);
    }
}

static void log_attempt(struct request_ctx *ctx, const char *outcome)
{
    buf_printf(&ctx->log, "%s%s#%zu:%s:%.1fms", ctx->log.len ? " " : "", ctx->backend->name,
               ctx->key_index, outcome, (double)(now_us() - ctx->attempt_t0) / 1000.0);
}

static void log_skip(struct request_ctx *ctx, const struct config_backend *b, const char *why,
                     uint64_t wait_ms)
{
    buf_printf(&ctx->log, "%s%s:%s:%llus", ctx->log.len ? " " : "", b->name, why,
               (unsigned long long)((wait_ms + 999) / 1000));
}

/* Writes to the client; 0, or -1 when it is gone. */
static int client_write(struct request_ctx *ctx, const char *p, size_t n, int flush)
{
    if (ctx->gone || ctx->conn == NULL) {
        return -1;
    }
    if (conn_write(ctx->conn, p, n, flush) != 0) {
        return -1; /* on_gone has marked it */
    }
    ctx->bytes_out += n;
    return 0;
}

/* An answer of our own (an error, a verdict); the request then ends. */
static void answer_error(struct request_ctx *ctx, int status, const char *msg, const char *type,
                         const char *param, const char *code, const char *extra)
{
    ctx->final_status = status;
    if (ctx->conn != NULL && !ctx->gone) {
        reply_error(ctx->conn, status, msg, type, param, code, extra);
    }
    finish(ctx);
}

/* ---- health ---- */

static uint64_t *key_words(struct request_ctx *ctx, const struct config_backend *b, size_t k)
{
    return b->nkeys > 0 ? state_words(ctx->px->sh->st, STATE_NS_KEY, b->base_url, b->keys[k], NULL)
                        : NULL;
}

static uint64_t *circuit_words(struct request_ctx *ctx, const struct config_backend *b)
{
    return state_words(ctx->px->sh->st, STATE_NS_CIRCUIT, ctx->model->name, b->name, b->base_url);
}

static void note_rate_limit(struct request_ctx *ctx, long seconds)
{
    ctx->n_rate_limited++;
    if (seconds > 0 && (ctx->min_retry_after <= 0 || seconds < ctx->min_retry_after)) {
        ctx->min_retry_after = seconds;
    }
}

/* Does what the outcome's rule says to the key's and backend's health.
 * For a 429, returns how long the key now cools (ms), else 0. */
static uint64_t apply_health(struct request_ctx *ctx, enum policy_outcome o)
{
    const struct config_backend *b = ctx->backend;
    uint64_t now = health_now_ms();
    uint64_t *kw = key_words(ctx, b, ctx->key_index);
    uint64_t *cw = circuit_words(ctx, b);
    switch (policy_rule(o)->health) {
    case PH_NONE:
        break;
    case PH_BACKEND_OK:
        if (cw != NULL) {
            health_backend_ok(cw);
        }
        if (kw != NULL && ctx->fallback) {
            health_key_clear(kw);
        }
        break;
    case PH_BACKEND_FAILED:
        if (cw != NULL) {
            health_backend_failed(cw, now, ctx->trial);
        }
        break;
    case PH_KEY_RATE_LIMITED: {
        uint64_t rnd = (uint64_t)now_us() * 0x9e3779b97f4a7c15ull;
        uint64_t ms = health_429_ms(ctx->retry_after, rnd >> 33);
        if (kw != NULL) {
            health_key_cool(kw, now, ms, HEALTH_RATE_LIMITED);
        } else if (cw != NULL) {
            /* a backend without keys is rate limited as a whole */
            health_backend_failed(cw, now, ctx->trial);
        }
        return ms;
    }
    case PH_KEY_REJECTED:
        if (kw != NULL) {
            health_key_cool(kw, now, HEALTH_REJECTED_MS, HEALTH_REJECTED);
        }
        LOG_ERROR("backend '%s' REJECTED key #%zu of model '%s' with HTTP %d: check the key; it "
                  "is not used for %d s",
                  b->name, ctx->key_index, ctx->model->name, ctx->status,
                  HEALTH_REJECTED_MS / 1000);
        break;
    }
    return 0;
}

/* ---- the answer to the client ---- */

/* Sends the status line and headers of the chosen upstream answer. */
static int commit(struct request_ctx *ctx)
{
    struct buf h;
    buf_init(&h, 64 * 1024 + 256);
    buf_printf(&h, "Status: %d\r\n", ctx->status);
    buf_append(&h, ctx->resp_hdrs.data, ctx->resp_hdrs.len);
    if (ctx->event_stream) {
        buf_append_str(&h, "X-Accel-Buffering: no\r\n");
    }
    buf_printf(&h, "X-LLMProxy-Request-Id: %s\r\n\r\n", ctx->rid);
    ctx->state = RQ_RELAY;
    ctx->at = AT_PASS;
    ctx->final_status = ctx->status;
    int rc = ctx->gone || ctx->conn == NULL ? -1 : conn_write(ctx->conn, h.data, h.len, false);
    buf_cleanup(&h);
    return rc;
}

/* Sends what was held and goes on streaming. */
static int release_hold(struct request_ctx *ctx)
{
    apply_health(ctx, PO_ANSWER);
    if (commit(ctx) != 0) {
        return -1;
    }
    int rc = client_write(ctx, ctx->hold.data, ctx->hold.len, 1);
    buf_cleanup(&ctx->hold);
    return rc;
}

/* A committed stream ends early: one error event in the stream's format. */
static void end_with_error(struct request_ctx *ctx, enum policy_outcome o)
{
    const struct policy_rule *r = policy_rule(o);
    log_attempt(ctx, r->name);
    apply_health(ctx, o);
    if (r->action != PA_END_ERROR || !ctx->event_stream || ctx->gone) {
        return; /* a plain body just ends short; the client sees the cut */
    }
    struct buf b;
    buf_init(&b, 4096);
    char msg[256];
    if (o == PO_SHUTDOWN) {
        snprintf(msg, sizeof(msg), "llmproxy is shutting down; the stream was cut.");
    } else {
        snprintf(msg, sizeof(msg), "The upstream stream was interrupted (%s).", r->name);
    }
    switch (ctx->ep->stream) {
    case EP_STREAM_CHAT_SSE:
    case EP_STREAM_NONE:
        buf_append_str(&b, "data: ");
        reply_error_object(&b, msg, "upstream_error", NULL,
                           o == PO_SHUTDOWN ? "server_shutting_down" : "stream_interrupted");
        buf_append_str(&b, "\n\n");
        break;
    }
    client_write(ctx, b.data, b.len, 1);
    buf_cleanup(&b);
}

static void send_verdict(struct request_ctx *ctx)
{
    char msg[512];
    char extra[64] = "";
    const char *type = "upstream_error";
    const char *code = "all_backends_failed";
    int status = 502;
    unsigned n = ctx->attempts;
    unsigned tried = n + ctx->n_skipped; /* attempts and cooling pairs passed over */
    const char *name = ctx->model->name;
    if (tried > 0 && ctx->n_rate_limited == tried) {
        status = 429;
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        long ra = ctx->min_retry_after > 0 ? ctx->min_retry_after : 1;
        snprintf(extra, sizeof(extra), "Retry-After: %ld\r\n", ra);
        snprintf(msg, sizeof(msg),
                 "Every backend for model '%s' is rate limited (%u attempts). Retry after %ld "
                 "seconds.",
                 name, n, ra);
    } else if (now_us() >= ctx->deadline_all) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg),
                 "No backend for model '%s' answered within %ld ms (%u attempts).", name,
                 ctx->px->set->deadline_ms, n);
    } else if (n > 0 && ctx->n_timeout == n && ctx->n_skipped == 0) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg), "Every backend for model '%s' timed out (%u attempts).", name,
                 n);
    } else {
        snprintf(msg, sizeof(msg), "Every backend for model '%s' failed (%u attempts, %u cooling).",
                 name, n, ctx->n_skipped);
    }
    answer_error(ctx, status, msg, type, NULL, code, extra);
}

/* ---- attempts ---- */

static void start_attempt(struct request_ctx *ctx);

/* The current attempt failed before anything reached the client. label:
 * what the log line says (NULL: the status when it was judged by one, else
 * the outcome's name). */
static void attempt_failed(struct request_ctx *ctx, enum policy_outcome o, const char *label)
{
    const struct policy_rule *r = policy_rule(o);
    uint64_t cool_ms = apply_health(ctx, o);
    if (r->verdict == PV_RATE_LIMITED) {
        /* the client may come back when this key (or the soonest) is usable */
        note_rate_limit(ctx, (long)((cool_ms + 999) / 1000));
    } else if (r->verdict == PV_TIMEOUT) {
        ctx->n_timeout++;
    }
    char s[16];
    if (label == NULL && ctx->judged && ctx->status > 0 && o != PO_EMPTY && o != PO_ERROR_EVENT) {
        snprintf(s, sizeof(s), "%d", ctx->status);
        label = s;
    }
    log_attempt(ctx, label != NULL ? label : r->name);
    ctx->at = AT_NONE;
    if (r->action != PA_NEXT_KEY) {
        ctx->oi++;
        ctx->key_tries = 0;
    }
    start_attempt(ctx);
}

static void on_header(void *ud, const char *line, size_t len)
{
    struct request_ctx *ctx = ud;
    const char *colon = memchr(line, ':', len);
    if (colon == NULL) {
        return;
    }
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    if (nlen == 11 && strncasecmp(line, "retry-after", 11) == 0) {
        ctx->retry_after = http_retry_after(v, vlen, time(NULL), RETRY_AFTER_CAP);
    }
    if (nlen == 12 && strncasecmp(line, "content-type", 12) == 0) {
        ctx->event_stream = vlen >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
        ctx->html = vlen >= 9 && strncasecmp(v, "text/html", 9) == 0;
    }
    if (http_forward_header(line, nlen) && !http_has_header(&ctx->resp_hdrs, line, nlen)) {
        buf_append(&ctx->resp_hdrs, line, len);
        buf_append_str(&ctx->resp_hdrs, "\r\n");
    }
}

static int on_headers_done(void *ud, int status)
{
    struct request_ctx *ctx = ud;
    if (ctx->finish_pending) {
        return -1;
    }
    ctx->status = status;
    enum policy_outcome o = policy_status(status);
    if (o == PO_ANSWER) {
        /* an HTML page is a captive portal or a proxy's error, not an answer */
        ctx->at = ctx->html ? AT_DISCARD : AT_HOLD;
        if (ctx->html) {
            ctx->verdict = PO_EMPTY;
            ctx->judged = 1;
        }
        return 0;
    }
    if (policy_rule(o)->action == PA_RELAY) {
        /* the client's own mistake: relay it, as it is; the backend is fine */
        apply_health(ctx, o);
        ctx->in_cb++;
        int rc = commit(ctx);
        ctx->in_cb--;
        return rc;
    }
    ctx->at = AT_DISCARD;
    ctx->verdict = o;
    ctx->judged = 1;
    return 0;
}

/* Body bytes in AT_PASS: to the client, unless its queue is full. */
static int pass(struct request_ctx *ctx, const char *p, size_t n)
{
    if (ctx->bytes_out + n > ctx->px->set->max_response) {
        ctx->too_big = 1;
        return UPSTREAM_STOP; /* on_done ends it with the error event */
    }
    if (ctx->conn != NULL && conn_pending(ctx->conn) > CONN_HIGH_WATER) {
        /* the client is slow: stop reading the backend until it catches up */
        ctx->paused = 1;
        ctx->deadline = 0;
        return UPSTREAM_WAIT;
    }
    /* idle deadline restarts with every chunk */
    ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
    return client_write(ctx, p, n, 1) == 0 ? UPSTREAM_TAKEN : UPSTREAM_STOP;
}

static int hold(struct request_ctx *ctx, const char *p, size_t n)
{
    if (!ctx->event_stream) {
        /* a plain body: the first byte settles it */
        apply_health(ctx, PO_ANSWER);
        if (commit(ctx) != 0) {
            return UPSTREAM_STOP;
        }
        return pass(ctx, p, n);
    }
    if (buf_append(&ctx->hold, p, n) != BUF_OK) {
        /* a first event this large is relayed undecided */
        if (release_hold(ctx) != 0) {
            return UPSTREAM_STOP;
        }
        return pass(ctx, p, n);
    }
    size_t end;
    switch (sse_peek_feed(&ctx->peek, ctx->hold.data, ctx->hold.len, &end)) {
    case SSE_MORE:
        return UPSTREAM_TAKEN;
    case SSE_ERROR:
        ctx->verdict = PO_ERROR_EVENT;
        ctx->judged = 1;
        return UPSTREAM_STOP;
    case SSE_DATA:
        break;
    }
    ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
    return release_hold(ctx) == 0 ? UPSTREAM_TAKEN : UPSTREAM_STOP;
}

static int on_body(void *ud, const char *p, size_t n)
{
    struct request_ctx *ctx = ud;
    if (ctx->finish_pending || ctx->gone) {
        return UPSTREAM_STOP;
    }
    int rc = UPSTREAM_STOP;
    ctx->in_cb++;
    enter(ctx);
    switch (ctx->at) {
    case AT_PASS:
        rc = pass(ctx, p, n);
        break;
    case AT_DISCARD:
        ctx->discarded += n;
        rc = ctx->discarded > DISCARD_MAX ? UPSTREAM_STOP : UPSTREAM_TAKEN;
        break;
    case AT_HOLD:
        rc = hold(ctx, p, n);
        break;
    case AT_NONE:
    case AT_WAIT:
        break;
    }
    /* never finish inside the transfer's own callback: a request that must
     * end stops its transfer here, and on_done finishes it */
    ctx->busy--;
    ctx->in_cb--;
    return ctx->finish_pending || ctx->gone ? UPSTREAM_STOP : rc;
}

static void on_done(void *ud, enum upstream_result r)
{
    struct request_ctx *ctx = ud;
    ctx->xfer = NULL;
    enter(ctx);
    if (ctx->finish_pending) {
        if (ctx->at != AT_NONE && ctx->backend != NULL) {
            log_attempt(ctx, ctx->gone ? ctx->gone_name : "stopped");
        }
    } else if (ctx->at == AT_PASS) {
        if (ctx->gone) {
            log_attempt(ctx, ctx->gone_name);
        } else if (r == UPSTREAM_OK) {
            char o[16];
            snprintf(o, sizeof(o), "%d", ctx->status);
            log_attempt(ctx, o);
        } else {
            end_with_error(ctx, ctx->too_big ? PO_TOO_LARGE : PO_BROKEN);
        }
        finish(ctx);
    } else if (ctx->judged) {
        attempt_failed(ctx, ctx->verdict, ctx->html ? "html_body" : NULL);
    } else if (r != UPSTREAM_OK) {
        attempt_failed(ctx, policy_transport(r), upstream_result_name(r));
    } else if (ctx->at == AT_HOLD && ctx->hold.len == 0) {
        attempt_failed(ctx, PO_EMPTY, "empty_body");
    } else if (ctx->at == AT_HOLD && sse_is_error_payload(ctx->hold.data, ctx->hold.len)) {
        attempt_failed(ctx, PO_ERROR_EVENT, NULL);
    } else if (ctx->at == AT_HOLD) {
        /* a stream that ended before a blank line: relay what came */
        char o[16];
        snprintf(o, sizeof(o), "%d", ctx->status);
        log_attempt(ctx, o);
        release_hold(ctx);
        finish(ctx);
    } else {
        attempt_failed(ctx, PO_SERVER_ERROR, upstream_result_name(r));
    }
    leave(ctx);
}

static const struct upstream_handler handler = {on_header, on_headers_done, on_body, on_done};

static void reset_attempt(struct request_ctx *ctx)
{
    ctx->status = 0;
    ctx->at = AT_WAIT;
    ctx->judged = 0;
    ctx->event_stream = 0;
    ctx->html = 0;
    ctx->paused = 0;
    buf_reset(&ctx->resp_hdrs);
    buf_cleanup(&ctx->hold);
    sse_peek_cleanup(&ctx->peek);
    sse_peek_init(&ctx->peek);
    ctx->discarded = 0;
    ctx->retry_after = -1;
}

/* Sends the request to backend b with key k. 0, or -1 when it could not start. */
static int launch(struct request_ctx *ctx, const struct config_backend *b, size_t k, int trial)
{
    struct proxy *px = ctx->px;
    ctx->backend = b;
    ctx->key_index = k;
    ctx->trial = trial;
    ctx->attempts++;
    reset_attempt(ctx);
    struct upstream_request rq = {.connect_timeout_ms = px->set->connect_timeout_ms};
    const char *body = ctx->body.data != NULL ? ctx->body.data : "";
    if (b->model_name != NULL) {
        /* only the model's value changes: the body goes in three pieces */
        buf_reset(&ctx->model_json);
        buf_append_str(&ctx->model_json, "\"");
        buf_append_json_str(&ctx->model_json, b->model_name);
        buf_append_str(&ctx->model_json, "\"");
        size_t after = ctx->info.model_off + ctx->info.model_len;
        rq.body[0] = (struct upstream_piece){body, ctx->info.model_off};
        rq.body[1] = (struct upstream_piece){ctx->model_json.data, ctx->model_json.len};
        rq.body[2] = (struct upstream_piece){body + after, ctx->body.len - after};
        rq.npieces = 3;
    } else {
        rq.body[0] = (struct upstream_piece){body, ctx->body.len};
        rq.npieces = 1;
    }
    buf_reset(&ctx->url);
    buf_append_str(&ctx->url, b->base_url);
    buf_append_str(&ctx->url, ctx->ep->upstream_path);
    const char *query = ctx->conn != NULL ? conn_param(ctx->conn, "QUERY_STRING") : NULL;
    if (query != NULL && *query != '\0' && strpbrk(query, "\r\n ") == NULL) {
        buf_printf(&ctx->url, "?%s", query);
    }
    if (b->nkeys > 0) {
        buf_reset(&ctx->auth);
        buf_printf(&ctx->auth, "Authorization: Bearer %s", b->keys[k]);
        ctx->hdrs[0] = ctx->auth.data;
    } else {
        ctx->hdrs[0] = "Authorization:"; /* curl: send none */
    }
    rq.url = ctx->url.data;
    rq.headers = ctx->hdrs;
    ctx->attempt_t0 = now_us();
    /* the attempt's own time to first byte, within the request's deadline */
    ctx->deadline = ctx->attempt_t0 + (int64_t)b->timeout_ms * 1000;
    if (ctx->deadline > ctx->deadline_all) {
        ctx->deadline = ctx->deadline_all;
    }
    ctx->xfer = upstream_start(px->up, &rq, &handler, ctx);
    if (ctx->xfer == NULL) {
        ctx->at = AT_NONE;
        log_attempt(ctx, "start_failed");
        return -1;
    }
    return 0;
}

/* A cooling (backend, key) is passed over; the soonest to recover is kept
 * for when nothing else is left. */
static void skip_cooling(struct request_ctx *ctx, uint64_t wait_ms, enum health_reason why,
                         size_t k)
{
    ctx->n_skipped++;
    if (why == HEALTH_RATE_LIMITED) {
        note_rate_limit(ctx, (long)((wait_ms + 999) / 1000));
    }
    if (ctx->soonest_wait_ms == 0 || wait_ms < ctx->soonest_wait_ms) {
        ctx->soonest_wait_ms = wait_ms;
        ctx->soonest_backend = ctx->order[ctx->oi];
        ctx->soonest_key = k;
    }
}

/* Starts the next attempt in order, or answers with the verdict. */
static void start_attempt(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    const struct config_model *m = ctx->model;
    uint64_t now_ms = health_now_ms();
    ctx->state = RQ_ATTEMPT;
    while (ctx->oi < ctx->norder && ctx->attempts < px->set->max_attempts &&
           now_us() < ctx->deadline_all) {
        const struct config_backend *b = &m->backends[ctx->order[ctx->oi]];
        size_t nkeys = b->nkeys ? b->nkeys : 1;
        if (ctx->key_tries >= nkeys) {
            ctx->oi++;
            ctx->key_tries = 0;
            continue;
        }
        bool trial = false;
        if (ctx->key_tries == 0) {
            uint64_t *cw = circuit_words(ctx, b);
            uint64_t wait = cw != NULL ? health_backend_wait(cw, now_ms, &trial) : 0;
            if (wait > 0) {
                /* circuit open: the whole backend waits */
                skip_cooling(ctx, wait, HEALTH_NONE, 0);
                log_skip(ctx, b, "circuit_open", wait);
                ctx->oi++;
                continue;
            }
            uint64_t c =
                b->nkeys > 1 ? state_next(px->sh->st, STATE_NS_ROTATION, m->name, b->name) : 0;
            ctx->key_start = route_key_index(b, c);
        }
        size_t k = (ctx->key_start + ctx->key_tries) % nkeys;
        ctx->key_tries++;
        uint64_t *kw = key_words(ctx, b, k);
        enum health_reason why;
        uint64_t wait = kw != NULL ? health_key_wait(kw, now_ms, &why) : 0;
        if (wait > 0) {
            skip_cooling(ctx, wait, why, k);
            continue;
        }
        ctx->fallback = 0;
        if (launch(ctx, b, k, trial) == 0) {
            return;
        }
        ctx->oi++;
        ctx->key_tries = 0;
    }
    if (ctx->attempts == 0 && ctx->n_skipped > 0 && !ctx->soonest_tried &&
        now_us() < ctx->deadline_all) {
        /* everything is cooling: rather than refuse, try what recovers first */
        ctx->soonest_tried = 1;
        ctx->fallback = 1;
        ctx->oi = ctx->norder; /* nothing after it */
        if (launch(ctx, &m->backends[ctx->soonest_backend], ctx->soonest_key, 0) == 0) {
            return;
        }
    }
    send_verdict(ctx);
}

/* ---- from the web server ---- */

/* A client header value that may go upstream: printable, no CR/LF. */
static bool header_value_ok(const char *v)
{
    if (*v == '\0') {
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

static void prepare_headers(struct request_ctx *ctx)
{
    size_t offs[MAX_UPSTREAM_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(forwarded_params); i++) {
        const char *v = conn_param(ctx->conn, forwarded_params[i]);
        const char *name = http_upstream_header(forwarded_params[i]);
        if (v == NULL || name == NULL || !header_value_ok(v)) {
            continue;
        }
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        offs[n++] = ctx->hdr_store.len;
        buf_printf(&ctx->hdr_store, "%s: %s", name, v);
        buf_append(&ctx->hdr_store, "", 1);
    }
    /* the body was checked to be JSON, whatever the client labelled it */
    offs[n++] = ctx->hdr_store.len;
    buf_append_str(&ctx->hdr_store, "Content-Type: application/json");
    buf_append(&ctx->hdr_store, "", 1);
    offs[n++] = ctx->hdr_store.len;
    buf_append_str(&ctx->hdr_store, "Expect:"); /* no 100-continue round trip */
    buf_append(&ctx->hdr_store, "", 1);
    ctx->hdrs[0] = NULL;
    for (size_t i = 0; i < n; i++) {
        ctx->hdrs[i + 1] = ctx->hdr_store.data + offs[i];
    }
    ctx->hdrs[n + 1] = NULL;
}

/* The body is in: check it, choose the order, make the first attempt. */
static void route_request(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    size_t off = 0;
    const char *body = ctx->body.data != NULL ? ctx->body.data : "";
    enum request_status st = request_scan(body, ctx->body.len, &ctx->info, &off);
    if (st != REQUEST_OK) {
        char msg[512];
        if (st == REQUEST_BAD_JSON) {
            snprintf(msg, sizeof(msg), "%s (error at byte %zu)", request_status_message(st), off);
        } else {
            snprintf(msg, sizeof(msg), "%s", request_status_message(st));
        }
        const char *param = st == REQUEST_BAD_JSON || st == REQUEST_NOT_OBJECT ? NULL : "model";
        answer_error(ctx, 400, msg, "invalid_request_error", param, NULL, NULL);
        return;
    }
    ctx->scanned = 1;
    ctx->snap = snapshot_acquire();
    ctx->model = config_find(ctx->snap->cfg, ctx->info.model);
    if (ctx->model == NULL) {
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist", ctx->info.model);
        answer_error(ctx, 404, msg, "invalid_request_error", "model", "model_not_found", NULL);
        return;
    }
    if (route_enabled(ctx->model) == 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "No backend is enabled for model '%s'.", ctx->info.model);
        answer_error(ctx, 503, msg, "upstream_error", NULL, "no_backend_enabled", NULL);
        return;
    }
    uint64_t ticket = route_uses_ticket(ctx->model)
                          ? state_next(px->sh->st, STATE_NS_ROTATION, ctx->model->name, NULL)
                          : 0;
    ctx->norder = route_order(ctx->model, ticket, ctx->order, ARRAY_LEN(ctx->order));
    ctx->deadline_all = now_us() + (int64_t)px->set->deadline_ms * 1000;
    prepare_headers(ctx);
    start_attempt(ctx);
}

static void too_large(struct request_ctx *ctx)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
             ctx->px->set->max_body);
    answer_error(ctx, 413, msg, "invalid_request_error", NULL, "request_too_large", NULL);
}

static void on_request(void *app, struct conn *c)
{
    struct proxy *px = app;
    struct request_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->px = px;
    ctx->conn = c;
    ctx->t0 = now_us();
    ctx->min_retry_after = -1;
    ctx->retry_after = -1;
    unsigned long id = __atomic_add_fetch(&px->sh->next_id, 1, __ATOMIC_RELAXED);
    snprintf(ctx->rid, sizeof(ctx->rid), "%x-%lx", px->sh->pid, id);
    buf_init(&ctx->body, px->set->max_body);
    buf_init(&ctx->hdr_store, 64 * 1024);
    buf_init(&ctx->url, 16 * 1024);
    buf_init(&ctx->auth, CONFIG_MAX_STRING + 32);
    buf_init(&ctx->model_json, 2 * CONFIG_MAX_STRING);
    buf_init(&ctx->resp_hdrs, 64 * 1024);
    buf_init(&ctx->hold, px->set->hold_max);
    buf_init(&ctx->log, 4096);
    sse_peek_init(&ctx->peek);
    conn_bind(c, ctx);
    link_active(px, ctx);
    enter(ctx);

    const char *method = conn_param(c, "REQUEST_METHOD");
    snprintf(ctx->method, sizeof(ctx->method), "%s", method != NULL ? method : "GET");
    answer_path(c, ctx->path, sizeof(ctx->path));
    ctx->ep = endpoint_find(ctx->path);
    if (ctx->ep == NULL) {
        char msg[700];
        snprintf(msg, sizeof(msg), "Unknown request URL: %s %s", ctx->method, ctx->path);
        answer_error(ctx, 404, msg, "invalid_request_error", NULL, "unknown_url", NULL);
    } else if (!endpoint_method_ok(ctx->ep, ctx->method)) {
        char msg[100], allow[64];
        snprintf(msg, sizeof(msg), "Method not allowed: use %s.", ctx->ep->method);
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", ctx->ep->allow);
        answer_error(ctx, 405, msg, "invalid_request_error", NULL, "method_not_allowed", allow);
    } else if (ctx->ep->kind != EP_ROUTED) {
        ctx->final_status = answer_local(c, ctx->ep, ctx->path);
        finish(ctx);
    } else if (px->draining) {
        answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error", NULL,
                     "server_shutting_down", "Retry-After: 1\r\n");
    } else {
        long long cl = conn_content_length(c);
        if (cl > (long long)px->set->max_body) {
            too_large(ctx);
        } else {
            if (cl > 0) {
                buf_presize(&ctx->body, (size_t)cl); /* one allocation, no doubling */
            }
            ctx->state = RQ_BODY;
            ctx->body_deadline = now_us() + (int64_t)px->set->body_timeout_ms * 1000;
        }
    }
    leave(ctx);
}

static void on_client_body(void *ud, const char *p, size_t n)
{
    struct request_ctx *ctx = ud;
    if (ctx->state != RQ_BODY) {
        return;
    }
    enter(ctx);
    if (buf_append(&ctx->body, p, n) != BUF_OK) {
        too_large(ctx);
    } else {
        ctx->body_deadline = now_us() + (int64_t)ctx->px->set->body_timeout_ms * 1000;
    }
    leave(ctx);
}

static void on_client_body_end(void *ud)
{
    struct request_ctx *ctx = ud;
    if (ctx->state != RQ_BODY) {
        return;
    }
    enter(ctx);
    route_request(ctx);
    leave(ctx);
}

static void on_client_drain(void *ud)
{
    struct request_ctx *ctx = ud;
    if (ctx->paused && ctx->xfer != NULL) {
        enter(ctx);
        ctx->paused = 0;
        ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
        upstream_resume(ctx->px->up, ctx->xfer);
        leave(ctx);
    }
}

static void on_client_gone(void *ud, enum conn_gone why)
{
    struct request_ctx *ctx = ud;
    enter(ctx);
    ctx->gone = 1;
    ctx->gone_name = conn_gone_name(why);
    if (ctx->xfer == NULL || ctx->in_cb == 0) {
        if (ctx->xfer != NULL && ctx->backend != NULL) {
            log_attempt(ctx, ctx->gone_name);
        }
        finish(ctx);
    } else {
        ctx->finish_pending = 1; /* the transfer stops from its callback */
    }
    leave(ctx);
}

static const struct conn_handler conn_handler = {on_request, on_client_body, on_client_body_end,
                                                 on_client_drain, on_client_gone};

/* ---- deadlines ---- */

static void expire(struct request_ctx *ctx, int64_t now)
{
    struct proxy *px = ctx->px;
    int shutdown = px->draining && now >= px->drain_at;
    if (ctx->state == RQ_BODY) {
        if (shutdown) {
            answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error", NULL,
                         "server_shutting_down", "Retry-After: 1\r\n");
        } else if (now > ctx->body_deadline) {
            answer_error(ctx, 408, "The request body did not arrive in time.",
                         "invalid_request_error", NULL, "request_timeout", NULL);
        }
        return;
    }
    if (ctx->xfer == NULL) {
        return;
    }
    int late = ctx->deadline > 0 && now > ctx->deadline;
    if (!late && !shutdown) {
        return;
    }
    upstream_cancel(px->up, ctx->xfer);
    ctx->xfer = NULL;
    if (ctx->at == AT_PASS) {
        end_with_error(ctx, shutdown ? PO_SHUTDOWN : PO_IDLE);
        finish(ctx);
    } else if (shutdown) {
        log_attempt(ctx, "shutdown");
        answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error", NULL,
                     "server_shutting_down", "Retry-After: 1\r\n");
    } else {
        attempt_failed(ctx, PO_TIMEOUT, NULL);
    }
}

static void on_tick(void *ud, int64_t now)
{
    struct proxy *px = ud;
    if (px->nactive == 0 && px->since_trim > 0) {
        /* after a burst (thousands of streams) give the memory back */
        malloc_trim(0);
        px->since_trim = 0;
    }
    struct request_ctx *ctx = px->active;
    while (ctx != NULL) {
        struct request_ctx *next = ctx->next;
        enter(ctx);
        expire(ctx, now);
        leave(ctx);
        ctx = next;
    }
    size_t open = px->srv != NULL ? conn_server_open(px->srv) : 0;
    int over =
        px->cgi ? px->nactive == 0 && open == 0
                : px->draining && px->nactive == 0 && (open == 0 || now > px->drain_at + 1000000);
    if (over) {
        loop_quit(px->loop);
        return;
    }
    if (px->nactive > 0 || px->draining || px->cgi) {
        px->tick.at = now + TICK_US;
    }
}

struct proxy *proxy_new(struct proxy_shared *sh, struct loop *l, int listen_fd)
{
    struct proxy *px = xcalloc(1, sizeof(*px));
    px->sh = sh;
    px->set = &sh->set;
    px->loop = l;
    px->tick.at = -1;
    px->tick.cb = on_tick;
    px->tick.ud = px;
    loop_alarm_add(l, &px->tick);
    px->up = upstream_new(l);
    if (px->up == NULL) {
        proxy_free(px);
        return NULL;
    }
    struct conn_settings cs = {.stall_ms = sh->set.stall_ms, .idle_ms = 300000};
    if (listen_fd < 0) {
        px->cgi = 1;
        arm_tick(px);
        px->srv = conn_server_cgi(l, &conn_handler, px, &cs);
    } else {
        px->srv = conn_server_new(l, listen_fd, &conn_handler, px, &cs);
        if (px->srv == NULL) {
            proxy_free(px);
            return NULL;
        }
    }
    return px;
}

void proxy_free(struct proxy *px)
{
    if (px == NULL) {
        return;
    }
    while (px->active != NULL) {
        struct request_ctx *ctx = px->active;
        ctx->busy = 0;
        do_finish(ctx);
    }
    conn_server_free(px->srv);
    upstream_free(px->up);
    loop_alarm_remove(px->loop, &px->tick);
    free(px);
}

void proxy_drain(void *arg)
{
    struct proxy *px = arg;
    if (px->draining) {
        return;
    }
    px->draining = 1;
    px->drain_at = now_us() + (int64_t)px->set->drain_ms * 1000;
    if (px->srv != NULL && !px->cgi) {
        conn_server_stop_accepting(px->srv);
        conn_server_close_idle(px->srv);
    }
    if (px->nactive > 0) {
        LOG_INFO("stopping: %zu requests in flight get up to %ld ms", px->nactive,
                 px->set->drain_ms);
    }
    px->tick.at = now_us(); /* look at once */
}
