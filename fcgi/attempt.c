/* attempt.c - a request's attempts: order, keys, health, the upstream's answer judged */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy_int.h"
#include "affinity.h"
#include "conn.h"
#include "endpoint.h"
#include "health.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "route.h"
#include "shared.h"
#include "state.h"
#include "upstream.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The most of one answer kept to read its usage (a JSON body, an SSE event). */
#define METER_CAP ((size_t)8 << 20)
/* Body bytes of a failed attempt read (and dropped) to keep the
 * connection reusable; past this the attempt is cut off. */
#define DISCARD_MAX (64 * 1024)
/* Upper bound for a Retry-After we pass on or wait for. */
#define RETRY_AFTER_CAP 3600

static void attempt_failed(struct request_ctx *ctx, enum policy_outcome o, const char *label);
static void end_with_error(struct request_ctx *ctx, enum policy_outcome o);

static void log_skip(struct request_ctx *ctx, const struct config_backend *b, const char *why,
                     uint64_t wait_ms)
{
    if (log_json()) {
        struct buf item;
        buf_init(&item, ctx->log.cap);
        buf_append_str(&item, "{\"backend\":\"");
        buf_append_json_str(&item, b->name);
        buf_printf(&item, "\",\"skipped\":\"%s\",\"wait_ms\":%llu}", why,
                   (unsigned long long)wait_ms);
        proxy_log_json_item(ctx, &item);
        buf_cleanup(&item);
        return;
    }
    buf_printf(&ctx->log, "%s%s:%s:%llus", ctx->log.len ? " " : "", b->name, why,
               (unsigned long long)((wait_ms + 999) / 1000));
}

/* ---- health ---- */

/* A key's cooldown record; a backend without keys has one for itself, so
 * its 429 waits out Retry-After like a key's. */
static uint64_t *key_words(struct request_ctx *ctx, const struct config_backend *b, size_t k)
{
    return state_words(ctx->px->sh->st, STATE_NS_KEY, b->base_url, b->nkeys > 0 ? b->keys[k] : "",
                       NULL);
}

static uint64_t *circuit_words(struct request_ctx *ctx, const struct config_backend *b)
{
    return state_words(ctx->px->sh->st, STATE_NS_CIRCUIT, ctx->model->name, b->name, b->base_url);
}

/* Gives back a half-open circuit's trial that no verdict used (the
 * request moved to another backend, or ended). */
static void drop_trial(struct request_ctx *ctx)
{
    if (ctx->trial_backend != NULL) {
        uint64_t *cw = circuit_words(ctx, ctx->trial_backend);
        if (cw != NULL) {
            health_backend_trial_release(cw, ctx->trial_stamp);
        }
        ctx->trial_backend = NULL;
    }
}

/* The request leaves its current backend. */
static void next_backend(struct request_ctx *ctx)
{
    drop_trial(ctx);
    ctx->oi++;
    ctx->key_tries = 0;
}

void attempt_end(struct request_ctx *ctx)
{
    if (ctx->model != NULL) {
        drop_trial(ctx);
    }
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
    ctx->at_outcome = (int)o;
    uint64_t *kw = key_words(ctx, b, ctx->key_index);
    uint64_t *cw = circuit_words(ctx, b);
    enum policy_health effect = policy_rule(o)->health;
    uint64_t before[HEALTH_CIRCUIT_WORDS] = {0};
    for (int i = 0; cw != NULL && i < HEALTH_CIRCUIT_WORDS; i++) {
        before[i] = __atomic_load_n(&cw[i], __ATOMIC_RELAXED);
    }
    if (effect == PH_BACKEND_OK) {
        metrics_backend_ok(ctx->px->sh->st, ctx->model->name, b->name, now);
    } else if (effect != PH_NONE) {
        metrics_backend_error(ctx->px->sh->st, ctx->model->name, b->name, now, (int)o, ctx->status);
    }
    switch (effect) {
    case PH_NONE:
        break;
    case PH_BACKEND_OK:
        if (cw != NULL) {
            health_backend_ok(cw);
        }
        if (ctx->trial_backend == b) {
            ctx->trial_backend = NULL; /* decided */
        }
        if (kw != NULL && ctx->fallback) {
            health_key_clear(kw);
            shared_key_changed(ctx, b, ctx->key_index, kw);
        }
        break;
    case PH_BACKEND_FAILED:
        if (cw != NULL) {
            health_backend_failed(cw, now, ctx->trial_backend == b);
        }
        if (ctx->trial_backend == b) {
            ctx->trial_backend = NULL; /* decided */
        }
        break;
    case PH_KEY_RATE_LIMITED: {
        uint64_t rnd = (uint64_t)now_us() * 0x9e3779b97f4a7c15ull;
        uint64_t ms = health_429_ms(ctx->retry_after, rnd >> 33);
        if (kw != NULL) {
            health_key_cool(kw, now, ms, HEALTH_RATE_LIMITED);
            shared_key_changed(ctx, b, ctx->key_index, kw);
        }
        return ms;
    }
    case PH_KEY_REJECTED:
        if (b->nkeys == 0) {
            /* no key of ours to blame: the backend refuses, as a failure */
            if (cw != NULL) {
                health_backend_failed(cw, now, ctx->trial_backend == b);
            }
            if (ctx->trial_backend == b) {
                ctx->trial_backend = NULL;
            }
            LOG_WARN("backend '%s' of model '%s' (no API key configured) refused with HTTP %d",
                     b->name, ctx->model->name, ctx->status);
            break;
        }
        if (kw != NULL) {
            health_key_cool(kw, now, HEALTH_REJECTED_MS, HEALTH_REJECTED);
            shared_key_changed(ctx, b, ctx->key_index, kw);
        }
        LOG_ERROR("backend '%s' REJECTED key #%zu of model '%s' with HTTP %d: check the key; it "
                  "is not used for %d s",
                  b->name, ctx->key_index, ctx->model->name, ctx->status,
                  HEALTH_REJECTED_MS / 1000);
        break;
    }
    if (cw != NULL) {
        shared_circuit_changed(ctx, b, cw, before);
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
    client_headers(ctx, &h);
    buf_append_str(&h, "X-LLMProxy-Model: ");
    buf_append_str(&h, ctx->model->name); /* a configured name: no CR or LF */
    buf_printf(&h, "\r\nX-LLMProxy-Request-Id: %s\r\n\r\n", ctx->rid);
    ctx->state = RQ_RELAY;
    ctx->at = AT_PASS;
    ctx->final_status = ctx->status;
    ctx->answered = 1;
    ctx->ttfb_us = now_us() - ctx->t0;
    /* what the answer used: read from it as it passes */
    meter_cleanup(&ctx->meter);
    /* (a binary answer, audio, carries no usage: it is not read at all; nor
     * is a response fetched again, whose usage was counted when it was made) */
    ctx->metering = ctx->ep->answer != EP_ANSWER_BINARY && ctx->ep->kind != EP_AFFINITY;
    enum meter_format fmt = !ctx->event_stream                       ? METER_JSON
                            : ctx->ep->stream == EP_STREAM_RESPONSES ? METER_RESPONSES_SSE
                            : ctx->ep->stream == EP_STREAM_ANTHROPIC ? METER_ANTHROPIC_SSE
                                                                     : METER_CHAT_SSE;
    meter_init(&ctx->meter, fmt, ctx->event_stream && ctx->attempt_strip, METER_CAP);
    /* a response made here: its id is recorded, for its follow-ups */
    ctx->meter.want_id = ctx->ep->kind == EP_ROUTED && ctx->ep->stream == EP_STREAM_RESPONSES &&
                         ctx->status >= 200 && ctx->status < 300;
    int rc = ctx->gone || ctx->conn == NULL ? -1 : conn_write(ctx->conn, h.data, h.len, false);
    buf_cleanup(&h);
    return rc;
}

/* The id of a response made through this answer, once the meter saw it:
 * which backend and key made it, for its follow-ups. */
static void remember_response(struct request_ctx *ctx)
{
    if (ctx->response_saved || ctx->meter.id[0] == '\0') {
        return;
    }
    const struct config_backend *b = ctx->backend;
    struct affinity_entry e = {
        .model = affinity_hash(ctx->model->name, NULL),
        .backend = affinity_hash(b->base_url, NULL),
        .key = affinity_hash(b->nkeys > 0 ? b->keys[ctx->key_index] : "", NULL),
        .owner = ctx->key != NULL ? affinity_hash(ctx->key->id, NULL) : 0,
        .created_ms = affinity_now_ms(),
    };
    affinity_put(proxy_affinity(ctx->px->sh), ctx->meter.id, &e);
    shared_put_response(ctx, ctx->meter.id, &e);
    ctx->response_saved = 1;
}

/* Bytes of the committed answer to the client, through the meter (which,
 * for a stream, passes whole events and drops a usage chunk we added). */
static int relay(struct request_ctx *ctx, const char *p, size_t n)
{
    if (!meter_is_stream(ctx->meter.fmt)) {
        if (ctx->metering || ctx->meter.want_id) {
            meter_body(&ctx->meter, p, n);
            remember_response(ctx); /* before the client can ask for it */
        }
        return proxy_client_write(ctx, p, n, 1);
    }
    struct buf *out = &ctx->relay_buf; /* kept: no allocation per chunk */
    buf_reset(out);
    meter_stream(&ctx->meter, p, n, out);
    if (ctx->meter.want_id) {
        remember_response(ctx); /* before the client can ask for it */
    }
    return out->len > 0 ? proxy_client_write(ctx, out->data, out->len, 1) : 0;
}

/* The end of a committed answer: what the meter still holds goes on. */
static void relay_end(struct request_ctx *ctx)
{
    if (!meter_is_stream(ctx->meter.fmt)) {
        meter_body_end(&ctx->meter);
        remember_response(ctx);
        return;
    }
    struct buf *out = &ctx->relay_buf;
    buf_reset(out);
    meter_stream_end(&ctx->meter, out);
    remember_response(ctx);
    if (out->len > 0) {
        proxy_client_write(ctx, out->data, out->len, 1);
    }
}

/* Sends what was held and goes on streaming. */
static int release_hold(struct request_ctx *ctx)
{
    /* a relayed answer's head said what it is; any other is an answer */
    apply_health(ctx, ctx->held_relay ? ctx->relay_outcome : PO_ANSWER);
    if (commit(ctx) != 0) {
        return -1;
    }
    int rc = ctx->hold.len > 0 ? relay(ctx, ctx->hold.data, ctx->hold.len) : 0;
    buf_cleanup(&ctx->hold);
    return rc;
}

/* A committed stream ends early: one error event in the stream's format. */
static void end_with_error(struct request_ctx *ctx, enum policy_outcome o)
{
    const struct policy_rule *r = policy_rule(o);
    ctx->at_outcome = (int)o; /* what the attempt came to, for its metric */
    proxy_log_attempt(ctx, r->name);
    apply_health(ctx, o);
    if (r->action == PA_END_ERROR && !ctx->event_stream) {
        /* a plain body cannot carry an error: the connection is cut, so the
         * client sees a broken answer rather than a short one that looks whole */
        ctx->cut = 1;
    }
    if (r->action != PA_END_ERROR || !ctx->event_stream || ctx->gone) {
        return;
    }
    struct buf b;
    buf_init(&b, 4096);
    char msg[256];
    if (o == PO_SHUTDOWN) {
        snprintf(msg, sizeof(msg), "llmproxy is shutting down; the stream was cut.");
    } else {
        snprintf(msg, sizeof(msg), "The upstream stream was interrupted (%s).", r->name);
    }
    const char *code = o == PO_SHUTDOWN ? "server_shutting_down" : "stream_interrupted";
    switch (ctx->ep->stream) {
    case EP_STREAM_CHAT_SSE:
    case EP_STREAM_NONE:
        buf_append_str(&b, "data: ");
        reply_error_object(&b, msg, "upstream_error", NULL, code);
        buf_append_str(&b, "\n\n");
        break;
    case EP_STREAM_RESPONSES:
        buf_printf(&b, "event: error\ndata: {\"type\":\"error\",\"code\":\"%s\",\"message\":\"",
                   code);
        buf_append_json_str(&b, msg);
        buf_append_str(&b, "\",\"param\":null}\n\n");
        break;
    case EP_STREAM_ANTHROPIC:
        buf_append_str(&b, "event: error\ndata: ");
        reply_anthropic_error_object(&b, "api_error", msg);
        buf_append_str(&b, "\n\n");
        break;
    }
    proxy_client_write(ctx, b.data, b.len, 1);
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
    char name[CONFIG_MAX_MODEL_NAME + 64];
    const struct config_model *asked = ctx->asked != NULL ? ctx->asked : ctx->model;
    if (ctx->chain_next > 0) {
        snprintf(name, sizeof(name), "'%s' or its %zu fallback%s", asked->name, ctx->chain_next,
                 ctx->chain_next == 1 ? "" : "s");
    } else {
        snprintf(name, sizeof(name), "'%s'", asked->name);
    }
    if (tried > 0 && ctx->n_rate_limited == tried) {
        status = 429;
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        long ra = ctx->min_retry_after > 0 ? ctx->min_retry_after : 1;
        snprintf(extra, sizeof(extra), "Retry-After: %ld\r\n", ra);
        snprintf(msg, sizeof(msg),
                 "Every backend for model %s is rate limited (%u attempts). Retry after %ld "
                 "seconds.",
                 name, n, ra);
    } else if (now_us() >= ctx->deadline_all) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg), "No backend for model %s answered within %ld ms (%u attempts).",
                 name, ctx->px->set->deadline_ms, n);
    } else if (n > 0 && ctx->n_timeout == n && ctx->n_skipped == 0) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg), "Every backend for model %s timed out (%u attempts).", name, n);
    } else {
        snprintf(msg, sizeof(msg), "Every backend for model %s failed (%u attempts, %u cooling).",
                 name, n, ctx->n_skipped);
    }
    proxy_answer_error(ctx, status, msg, type, NULL, code, extra);
}

/* ---- attempts ---- */

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
    proxy_log_attempt(ctx, label != NULL ? label : r->name);
    ctx->at = AT_NONE;
    if (r->action != PA_NEXT_KEY) {
        next_backend(ctx);
    }
    attempt_start(ctx);
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
    } /* the line and its CRLF go in together or not at all: a lone CRLF
       * would end the header block early */
    bool own_limits = ctx->key != NULL && nlen >= 12 && strncasecmp(line, "x-ratelimit-", 12) == 0;
    if (!own_limits && http_forward_header(line, nlen) &&
        !http_has_header(&ctx->resp_hdrs, line, nlen) &&
        buf_reserve(&ctx->resp_hdrs, len + 2) != NULL) {
        buf_append(&ctx->resp_hdrs, line, len);
        buf_append_str(&ctx->resp_hdrs, "\r\n");
    }
}

/* Under CGI the web server cannot tell a cut answer from a whole one (a
 * pipe or a Unix socket carries no reset: it ends the answer as if
 * complete), so a plain answer is held whole, up to the hold cap: a backend
 * that breaks off in it is a failed attempt or a clean error, never a
 * truncated JSON passed off as an answer. */
static bool holds_whole(const struct request_ctx *ctx)
{
    return !ctx->event_stream && ctx->conn != NULL && conn_is_cgi(ctx->conn);
}

/* Bytes came from the backend: it may be silent for TimeoutSeconds again, but
 * an answer not yet committed stays within the request's deadline. */
static void restart_idle(struct request_ctx *ctx)
{
    ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
    if (ctx->deadline > ctx->deadline_all) {
        ctx->deadline = ctx->deadline_all;
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
    if (o == PO_ANSWER && ctx->pinned && strcmp(ctx->method, "DELETE") == 0 &&
        ctx->response_id[0] != '\0') {
        affinity_forget(proxy_affinity(ctx->px->sh), ctx->response_id);
        shared_forget_response(ctx, ctx->response_id); /* deleted there: gone here too */
    }
    if (o == PO_ANSWER && !ctx->pinned) {
        /* an HTML page is a captive portal or a proxy's error, not an answer */
        ctx->at = ctx->html ? AT_DISCARD : AT_HOLD;
        restart_idle(ctx); /* the head came: from here the body may be idle as long */
        if (ctx->html) {
            ctx->verdict = PO_EMPTY;
            ctx->judged = 1;
        }
        return 0;
    }
    if (policy_rule(o)->action == PA_RELAY || ctx->pinned) {
        /* the client's own mistake: relay it, as it is; the backend is fine.
         * A response's follow-up has nowhere else to go: its backend's
         * answer, whatever it is (an empty one, a HEAD's, an error, a stream
         * that fails), goes on as it comes, never judged against it. */
        if (holds_whole(ctx)) {
            /* judged already: it goes whole (its health counted then, once),
             * or a clean error */
            ctx->at = AT_HOLD;
            ctx->held_relay = 1;
            ctx->relay_outcome = o;
            restart_idle(ctx);
            return 0;
        }
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
    return relay(ctx, p, n) == 0 ? UPSTREAM_TAKEN : UPSTREAM_STOP;
}

static int hold(struct request_ctx *ctx, const char *p, size_t n)
{
    if (!ctx->event_stream) {
        if (holds_whole(ctx) && ctx->hold.len + n <= ctx->px->set->hold_max) {
            if (ctx->hold.len + n > ctx->px->set->max_response) {
                ctx->too_big = 1; /* nothing has gone out: a clean error still can */
                return UPSTREAM_STOP;
            }
            /* not committed yet: the request's deadline still holds */
            if (buf_append(&ctx->hold, p, n) == BUF_OK) {
                restart_idle(ctx);
                return UPSTREAM_TAKEN;
            }
        }
        if (ctx->hold.len > 0 || ctx->held_relay) {
            /* larger than the cap: what was held goes, the rest streams */
            return release_hold(ctx) == 0 ? pass(ctx, p, n) : UPSTREAM_STOP;
        }
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
    proxy_enter(ctx);
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

/* The attempt ended well with its answer still held: it goes whole. */
static void answer_held(struct request_ctx *ctx)
{
    char o[16];
    snprintf(o, sizeof(o), "%d", ctx->status);
    release_hold(ctx); /* sets the attempt's outcome */
    proxy_log_attempt(ctx, o);
    relay_end(ctx);
    proxy_finish(ctx);
}

/* A relayed answer held whole (CGI) that did not come whole: nothing has
 * gone out and it has nowhere else to go (a client's error, a response's
 * follow-up), so the client hears a clean error instead. */
static void held_relay_failed(struct request_ctx *ctx, enum policy_outcome o, const char *label)
{
    apply_health(ctx, o);
    proxy_log_attempt(ctx, label != NULL ? label : policy_rule(o)->name);
    ctx->at = AT_NONE;
    buf_cleanup(&ctx->hold);
    char msg[CONFIG_MAX_MODEL_NAME + 192];
    const char *name = ctx->model->name;
    if (o == PO_IDLE) {
        snprintf(msg, sizeof(msg),
                 "The backend for model '%s' stopped sending its answer (%s); nothing of it was "
                 "passed on.",
                 name, now_us() >= ctx->deadline_all ? "deadline" : "timeout");
        proxy_answer_error(ctx, 504, msg, "upstream_error", NULL, "upstream_timeout", NULL);
    } else if (o == PO_TOO_LARGE) {
        snprintf(msg, sizeof(msg),
                 "The backend's answer for model '%s' is larger than this proxy passes on (%zu "
                 "bytes).",
                 name, ctx->px->set->max_response);
        proxy_answer_error(ctx, 502, msg, "upstream_error", NULL, "response_too_large", NULL);
    } else {
        snprintf(msg, sizeof(msg),
                 "The backend's answer for model '%s' broke off (%s); nothing of it was passed "
                 "on.",
                 name, label != NULL ? label : policy_rule(o)->name);
        proxy_answer_error(ctx, 502, msg, "upstream_error", NULL, "upstream_broken", NULL);
    }
}

static void on_done(void *ud, enum upstream_result r)
{
    struct request_ctx *ctx = ud;
    ctx->xfer = NULL;
    proxy_enter(ctx);
    if (ctx->finish_pending) {
        if (ctx->at != AT_NONE && ctx->backend != NULL) {
            proxy_log_attempt(ctx, ctx->gone ? ctx->gone_name : "stopped");
        }
    } else if (ctx->at == AT_PASS) {
        if (ctx->gone) {
            proxy_log_attempt(ctx, ctx->gone_name);
        } else if (r == UPSTREAM_OK) {
            relay_end(ctx);
            char o[16];
            snprintf(o, sizeof(o), "%d", ctx->status);
            proxy_log_attempt(ctx, o);
        } else {
            ctx->broken = 1;
            end_with_error(ctx, ctx->too_big ? PO_TOO_LARGE : PO_BROKEN);
        }
        proxy_finish(ctx);
    } else if (ctx->held_relay) {
        if (ctx->too_big) {
            held_relay_failed(ctx, PO_TOO_LARGE, NULL);
        } else if (r != UPSTREAM_OK) {
            enum policy_outcome o = policy_transport(r);
            held_relay_failed(ctx, o == PO_SERVER_ERROR ? PO_BROKEN : o, upstream_result_name(r));
        } else {
            answer_held(ctx); /* whole, even empty (a HEAD's, a 204) */
        }
    } else if (ctx->judged) {
        attempt_failed(ctx, ctx->verdict, ctx->html ? "html_body" : NULL);
    } else if (ctx->at == AT_HOLD && ctx->too_big) {
        attempt_failed(ctx, PO_TOO_LARGE, NULL); /* a held plain answer (CGI) */
    } else if (r != UPSTREAM_OK) {
        attempt_failed(ctx, policy_transport(r), upstream_result_name(r));
    } else if (ctx->at == AT_HOLD && ctx->hold.len == 0) {
        attempt_failed(ctx, PO_EMPTY, "empty_body");
    } else if (ctx->at == AT_HOLD && !ctx->event_stream) {
        /* a plain answer held whole (CGI): it goes now, judged as it would
         * have been at its first byte */
        answer_held(ctx);
    } else if (ctx->at == AT_HOLD && sse_is_error_payload(ctx->hold.data, ctx->hold.len)) {
        attempt_failed(ctx, PO_ERROR_EVENT, NULL);
    } else if (ctx->at == AT_HOLD && ctx->event_stream && ctx->peek.responses) {
        /* a Responses stream that ended after response.created: nothing came */
        attempt_failed(ctx, PO_EMPTY, "no_output");
    } else if (ctx->at == AT_HOLD) {
        /* a stream that ended before a blank line: relay what came */
        answer_held(ctx);
    } else {
        attempt_failed(ctx, PO_SERVER_ERROR, upstream_result_name(r));
    }
    proxy_leave(ctx);
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
    ctx->peek.responses = ctx->ep->stream == EP_STREAM_RESPONSES;
    ctx->discarded = 0;
    ctx->retry_after = -1;
    ctx->too_big = 0;
    ctx->held_relay = 0;
}

/* Sends the request to backend b with key k. 0, or -1 when it could not start. */
static int launch(struct request_ctx *ctx, const struct config_backend *b, size_t k)
{
    struct proxy *px = ctx->px;
    ctx->backend = b;
    ctx->key_index = k;
    ctx->attempts++;
    ctx->at_outcome = -1;
    reset_attempt(ctx);
    struct upstream_request rq = {.connect_timeout_ms = px->set->connect_timeout_ms,
                                  .method = ctx->method};
    const char *body = ctx->body.data != NULL ? ctx->body.data : "";
    /* the only changes to a body: the model's value for this backend, and a
     * stream asked for its usage; the rest goes byte for byte, in pieces */
    struct request_edit edits[2];
    size_t nedits = 0;
    if (b->model_name != NULL || ctx->model != ctx->asked) {
        /* the backend's name for the model, or the fallback's own */
        const char *name = b->model_name != NULL ? b->model_name : ctx->model->name;
        buf_reset(&ctx->model_json);
        if (ctx->ep->body == EP_BODY_MULTIPART) {
            buf_append_str(&ctx->model_json, name); /* a form field's bytes */
        } else {
            buf_append_str(&ctx->model_json, "\"");
            buf_append_json_str(&ctx->model_json, name);
            buf_append_str(&ctx->model_json, "\"");
        }
        edits[nedits++] = (struct request_edit){ctx->info.model_off, ctx->info.model_len,
                                                ctx->model_json.data, ctx->model_json.len};
    }
    ctx->attempt_strip = ctx->usage_added && b->stream_usage;
    if (ctx->attempt_strip) {
        edits[nedits++] = ctx->usage_edit;
    }
    if (nedits == 2 && edits[1].off < edits[0].off) {
        struct request_edit t = edits[0];
        edits[0] = edits[1];
        edits[1] = t;
    }
    size_t at = 0;
    for (size_t i = 0; i < nedits; i++) {
        rq.body[rq.npieces++] = (struct upstream_piece){body + at, edits[i].off - at};
        rq.body[rq.npieces++] = (struct upstream_piece){edits[i].ins, edits[i].ins_len};
        at = edits[i].off + edits[i].del;
    }
    rq.body[rq.npieces++] = (struct upstream_piece){body + at, ctx->body.len - at};
    buf_reset(&ctx->url);
    buf_append_str(&ctx->url, b->base_url);
    /* a path of ids (/v1/responses/{id}/...) goes on without its /v1 */
    buf_append_str(&ctx->url,
                   ctx->ep->upstream_path != NULL ? ctx->ep->upstream_path : ctx->path + 3);
    const char *query = ctx->conn != NULL ? conn_param(ctx->conn, "QUERY_STRING") : NULL;
    if (query != NULL && *query != '\0' && strpbrk(query, "\r\n ") == NULL) {
        buf_printf(&ctx->url, "?%s", query);
    }
    if (b->nkeys > 0) {
        buf_reset(&ctx->auth);
        if (b->api == CONFIG_API_ANTHROPIC) {
            buf_printf(&ctx->auth, "x-api-key: %s", b->keys[k]);
        } else {
            buf_printf(&ctx->auth, "Authorization: Bearer %s", b->keys[k]);
        }
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
        proxy_log_attempt(ctx, "start_failed");
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

/* Every attempt for the model failed: the next of its fallbacks that is
 * enabled and that the client key may use takes over, within the same
 * deadline. False when none is left. */
static bool next_fallback(struct request_ctx *ctx)
{
    while (ctx->chain_next < ctx->nchain && now_us() < ctx->deadline_all && !ctx->gone) {
        const struct config_model *f = ctx->chain[ctx->chain_next++];
        if (route_enabled_api(f, ctx->ep->api) == 0 ||
            (ctx->key != NULL && !keys_model_ok(ctx->key, f->name))) {
            continue;
        }
        if (log_json()) {
            struct buf item;
            buf_init(&item, ctx->log.cap);
            buf_append_str(&item, "{\"fallback\":\"");
            buf_append_json_str(&item, f->name);
            buf_append_str(&item, "\"}");
            proxy_log_json_item(ctx, &item);
            buf_cleanup(&item);
        } else {
            buf_printf(&ctx->log, "%sfallback=%s", ctx->log.len ? " " : "", f->name);
        }
        drop_trial(ctx); /* a trial lease is the last model's circuit's */
        ctx->model = f;
        ctx->attempts_base = ctx->attempts; /* each model has its own attempts */
        proxy_plan(ctx);
        ctx->soonest_tried = 1; /* the cooling pair remembered was the last model's */
        ctx->soonest_wait_ms = 0;
        return true;
    }
    return false;
}

/* Starts the next attempt in order, or answers with the verdict. */
void attempt_start(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    const struct config_model *m = ctx->model;
    uint64_t now_ms = health_now_ms();
    ctx->state = RQ_ATTEMPT;
    if (ctx->pinned) {
        /* a response's follow-up: its backend and key or nothing, cooling or not */
        if (ctx->attempts == 0 && now_us() < ctx->deadline_all &&
            launch(ctx, &m->backends[ctx->pin_backend], ctx->pin_key) == 0) {
            return;
        }
        send_verdict(ctx);
        return;
    }
    while (ctx->oi < ctx->norder && ctx->attempts - ctx->attempts_base < px->set->max_attempts &&
           now_us() < ctx->deadline_all) {
        const struct config_backend *b = &m->backends[ctx->order[ctx->oi]];
        size_t nkeys = b->nkeys ? b->nkeys : 1;
        if (ctx->key_tries >= nkeys) {
            next_backend(ctx);
            continue;
        }
        if (ctx->key_tries == 0) {
            uint64_t *cw = circuit_words(ctx, b);
            uint64_t trial = 0;
            /* a trial's lease covers its whole wait for a first byte */
            uint64_t lease = (uint64_t)b->timeout_ms + (uint64_t)px->set->connect_timeout_ms + 5000;
            uint64_t wait = cw != NULL ? health_backend_wait(cw, now_ms, lease, &trial) : 0;
            if (wait > 0) {
                /* circuit open: the whole backend waits */
                skip_cooling(ctx, wait, HEALTH_NONE, 0);
                log_skip(ctx, b, "circuit_open", wait);
                next_backend(ctx);
                continue;
            }
            if (trial != 0) {
                ctx->trial_backend = b; /* whichever of its keys goes first */
                ctx->trial_stamp = trial;
            }
            /* the first backend's keys turn with the tickets it took; a
             * backend tried after it, with every ticket */
            ctx->key_start = route_key_index(
                b, ctx->oi == 0 ? route_key_counter(m, ctx->order[0], ctx->ticket) : ctx->ticket);
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
        if (launch(ctx, b, k) == 0) {
            return;
        }
        next_backend(ctx);
    }
    if (ctx->attempts == 0 && ctx->n_skipped > 0 && !ctx->soonest_tried &&
        now_us() < ctx->deadline_all) {
        /* everything is cooling: rather than refuse, try what recovers first */
        ctx->soonest_tried = 1;
        ctx->fallback = 1;
        ctx->oi = ctx->norder; /* nothing after it */
        if (launch(ctx, &m->backends[ctx->soonest_backend], ctx->soonest_key) == 0) {
            return;
        }
    }
    if (next_fallback(ctx)) {
        attempt_start(ctx); /* at most CONFIG_MAX_CHAIN deep */
        return;
    }
    send_verdict(ctx);
}

/* The current attempt's deadline (first byte, or idle between chunks), or
 * the end of the drain after SIGTERM. */
void attempt_expire(struct request_ctx *ctx, int64_t now, int shutdown)
{
    struct proxy *px = ctx->px;
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
        proxy_finish(ctx);
    } else if (shutdown) {
        ctx->at_outcome = PO_SHUTDOWN; /* a held relay's head had set another */
        proxy_log_attempt(ctx, "shutdown");
        proxy_answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error", NULL,
                           "server_shutting_down", "Retry-After: 1\r\n");
    } else if (ctx->held_relay) {
        held_relay_failed(ctx, PO_IDLE, NULL); /* its head came: silent since */
    } else {
        attempt_failed(ctx, PO_TIMEOUT, NULL);
    }
}
