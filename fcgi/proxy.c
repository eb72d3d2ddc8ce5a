/* proxy.c - one client request: validate, order, relay, fail over */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy.h"
#include "buf.h"
#include "fcgi_io.h"
#include "health.h"
#include "http.h"
#include "log.h"
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
#define DRAIN_MAX (64 * 1024)
/* Upper bound for a Retry-After we pass on or wait for. */
#define RETRY_AFTER_CAP 3600
/* Client headers copied upstream (see http_upstream_header). */
static const char *const forwarded_params[] = {
    "CONTENT_TYPE",      "HTTP_ACCEPT",  "HTTP_USER_AGENT",       "HTTP_OPENAI_BETA",
    "HTTP_HTTP_REFERER", "HTTP_X_TITLE", "HTTP_X_STAINLESS_LANG",
};
#define MAX_UPSTREAM_HEADERS (ARRAY_LEN(forwarded_params) + 3)

struct proxy {
    struct proxy_settings set;
    struct upstream_loop *loop;
    struct state *st;
    unsigned long next_id; /* atomic */
    unsigned pid;          /* request ids are "<pid>-<n>" */
    /* loop thread only */
    struct request_ctx *active;
    size_t nactive;
    size_t since_trim; /* requests finished since memory was last given back */
};

enum mode {
    MODE_NONE,  /* no final response headers yet */
    MODE_HOLD,  /* 2xx: holding bytes until the first event (or byte) decides */
    MODE_PASS,  /* committed: every byte goes to the client as it comes */
    MODE_DRAIN, /* failed attempt: reading the rest to reuse the connection */
};

/* Why an attempt did not answer the client, for the log and the verdict. */
enum failure {
    FAIL_NONE,
    FAIL_STATUS,      /* failover status; see attempt_status */
    FAIL_TRANSPORT,   /* connect, DNS, TLS, broken */
    FAIL_TIMEOUT,     /* first byte deadline */
    FAIL_ERROR_EVENT, /* the stream's first event was an error */
    FAIL_EMPTY,       /* 2xx with an empty or HTML body */
};

struct request_ctx {
    struct proxy *px;
    struct fcgi_client *client;
    struct snapshot *snap;
    const struct config_model *model;
    char rid[24];
    int64_t t0;
    const char *endpoint; /* "/chat/completions", ... */
    const char *query;    /* client's query string or NULL */
    struct buf body;
    struct buf mapped; /* body with the backend's model name */
    struct request_info info;
    struct buf hdr_store;                       /* "Name: value\0" lines */
    const char *hdrs[MAX_UPSTREAM_HEADERS + 1]; /* [0] is Authorization */
    struct buf auth; /* "Authorization: Bearer <key>" of the current attempt */
    struct buf url;

    uint8_t order[CONFIG_MAX_BACKENDS];
    size_t norder;
    size_t oi;        /* position in order */
    size_t key_start; /* rotated first key of the current backend */
    size_t key_tries; /* keys of the current backend tried so far */
    unsigned attempts;
    int64_t deadline_all; /* the whole request's deadline until an answer is chosen */
    /* cooling (backend, key) pairs skipped, and the soonest to recover */
    unsigned n_skipped, n_skipped_429;
    uint64_t soonest_wait_ms;
    uint8_t soonest_backend;
    size_t soonest_key;
    int soonest_tried;
    int fallback; /* the current attempt is a cooling key tried as a last resort */

    /* the current attempt */
    struct upstream_xfer *xfer;
    const struct config_backend *backend;
    size_t key_index;
    uint64_t *key_health;     /* shared health words of this key and backend */
    uint64_t *circuit_health; /* (looked up once per attempt) */
    int status;
    enum mode mode;
    int event_stream; /* upstream said text/event-stream */
    int html;         /* upstream said text/html: a portal or error page, not an API answer */
    struct buf resp_hdrs;
    struct buf hold;
    struct sse_peek peek;
    size_t drained;
    long retry_after;
    int64_t attempt_t0;
    int64_t deadline; /* first byte, then idle; 0: none */

    /* across attempts */
    unsigned n_rate_limited, n_timeout;
    long min_retry_after; /* seconds, over the 429s seen and the keys skipped for one */
    int final_status;
    size_t bytes_out;
    int committed;
    int client_gone;
    int too_big; /* the answer passed LLMPROXY_MAX_RESPONSE_BYTES */
    struct buf log;
    struct upstream_watch *watch;
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
}

struct proxy *proxy_new(const struct proxy_settings *s, struct upstream_loop *loop,
                        struct state *st)
{
    struct proxy *px = xcalloc(1, sizeof(*px));
    px->set = *s;
    px->loop = loop;
    px->st = st;
    px->pid = (unsigned)getpid();
    return px;
}

void proxy_free(struct proxy *px)
{
    free(px);
}

/* ---- answers made here (errors, /health, /v1/models) ---- */

static void log_simple(struct proxy *px, const char *method, const char *path, int status,
                       int64_t t0)
{
    char line[600];
    unsigned long id = __atomic_add_fetch(&px->next_id, 1, __ATOMIC_RELAXED);
    int n = snprintf(line, sizeof(line), "req=%x-%lx %s %.256s status=%d ms=%.2f", px->pid, id,
                     method, path, status, (double)(now_us() - t0) / 1000.0);
    log_line(line, (size_t)n);
}

static void models_list(struct fcgi_client *c, const char *one)
{
    struct snapshot *s = snapshot_acquire();
    struct buf b;
    buf_init(&b, (size_t)64 << 20);
    const struct config *cfg = s->cfg;
    int found = 0;
    if (one == NULL) {
        buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    }
    for (size_t i = 0; cfg != NULL && i < cfg->nmodels; i++) {
        const struct config_model *m = &cfg->models[i];
        if (route_enabled(m) == 0 || (one != NULL && strcmp(one, m->name) != 0)) {
            continue;
        }
        buf_printf(&b, "%s{\"id\":\"", found++ && one == NULL ? "," : "");
        buf_append_json_str(&b, m->name);
        buf_append_str(&b, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"llmproxy\"}");
    }
    if (one == NULL) {
        buf_append_str(&b, "]}");
        reply_json(c, 200, b.data, b.len, NULL);
    } else if (found) {
        reply_json(c, 200, b.data, b.len, NULL);
    } else {
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%.256s' does not exist", one);
        reply_error(c, 404, msg, "invalid_request_error", "model", "model_not_found", NULL);
    }
    buf_cleanup(&b);
    snapshot_release(s);
}

/* ---- the request context ---- */

static void ctx_free(struct request_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    snapshot_release(ctx->snap);
    buf_cleanup(&ctx->body);
    buf_cleanup(&ctx->mapped);
    buf_cleanup(&ctx->hdr_store);
    buf_cleanup(&ctx->url);
    buf_cleanup(&ctx->auth);
    buf_cleanup(&ctx->resp_hdrs);
    buf_cleanup(&ctx->hold);
    sse_peek_cleanup(&ctx->peek);
    buf_cleanup(&ctx->log);
    fcgi_io_finish(ctx->client);
    free(ctx);
}

static void link_active(struct proxy *px, struct request_ctx *ctx)
{
    ctx->next = px->active;
    if (px->active != NULL) {
        px->active->prev = ctx;
    }
    px->active = ctx;
    px->nactive++;
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

/* The one log line of a proxied request, then everything is released. */
static void finish(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    upstream_unwatch(px->loop, ctx->watch);
    ctx->watch = NULL;
    if (ctx->xfer != NULL) {
        upstream_cancel(px->loop, ctx->xfer);
        ctx->xfer = NULL;
    }
    if (ctx->client_gone) {
        ctx->final_status = 499; /* nginx's "client closed request" */
    }
    struct buf line;
    buf_init(&line, 8000);
    buf_printf(&line, "req=%s %s model=%s stream=%d attempts=[%s] status=%d%s bytes=%zu ms=%.2f",
               ctx->rid, ctx->endpoint, ctx->info.model, ctx->info.stream,
               ctx->log.data != NULL ? ctx->log.data : "", ctx->final_status,
               ctx->client_gone && ctx->committed ? " client_gone" : "", ctx->bytes_out,
               (double)(now_us() - ctx->t0) / 1000.0);
    log_line(line.data, line.len);
    buf_cleanup(&line);
    unlink_active(px, ctx);
    ctx_free(ctx);
    px->since_trim++;
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

/* Writes to the client; marks it gone on failure. */
static int client_write(struct request_ctx *ctx, const char *p, size_t n, int flush)
{
    if (ctx->client_gone) {
        return -1;
    }
    if ((n > 0 && fcgi_io_write(ctx->client, p, n) != 0) ||
        (flush && fcgi_io_flush(ctx->client) != 0)) {
        ctx->client_gone = 1;
        return -1;
    }
    ctx->bytes_out += n;
    return 0;
}

/* Sends the status line and headers of the chosen upstream answer. */
static int commit(struct request_ctx *ctx)
{
    struct buf h;
    buf_init(&h, 64 * 1024);
    buf_printf(&h, "Status: %d\r\n", ctx->status);
    buf_append(&h, ctx->resp_hdrs.data, ctx->resp_hdrs.len);
    if (ctx->event_stream) {
        buf_append_str(&h, "X-Accel-Buffering: no\r\n");
    }
    buf_printf(&h, "X-LLMProxy-Request-Id: %s\r\n\r\n", ctx->rid);
    ctx->committed = 1;
    ctx->mode = MODE_PASS;
    ctx->final_status = ctx->status;
    size_t before = ctx->bytes_out;
    int rc = client_write(ctx, h.data, h.len, 0);
    ctx->bytes_out = before; /* count body bytes only */
    buf_cleanup(&h);
    return rc;
}

static void send_final_error(struct request_ctx *ctx)
{
    char msg[512];
    char extra[64] = "";
    const char *type = "upstream_error";
    const char *code = "all_backends_failed";
    int status = 502;
    unsigned n = ctx->attempts;
    unsigned tried = n + ctx->n_skipped; /* attempts and cooling pairs passed over */
    if (tried > 0 && ctx->n_rate_limited == tried) {
        status = 429;
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        long ra = ctx->min_retry_after > 0 ? ctx->min_retry_after : 1;
        snprintf(extra, sizeof(extra), "Retry-After: %ld\r\n", ra);
        snprintf(msg, sizeof(msg),
                 "Every backend for model '%s' is rate limited (%u attempts). Retry after %ld "
                 "seconds.",
                 ctx->model->name, n, ra);
    } else if (now_us() >= ctx->deadline_all) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg),
                 "No backend for model '%s' answered within %ld ms (%u attempts).",
                 ctx->model->name, ctx->px->set.deadline_ms, n);
    } else if (n > 0 && ctx->n_timeout == n && ctx->n_skipped == 0) {
        status = 504;
        code = "upstream_timeout";
        snprintf(msg, sizeof(msg), "Every backend for model '%s' timed out (%u attempts).",
                 ctx->model->name, n);
    } else {
        snprintf(msg, sizeof(msg), "Every backend for model '%s' failed (%u attempts, %u cooling).",
                 ctx->model->name, n, ctx->n_skipped);
    }
    ctx->final_status = status;
    reply_error(ctx->client, status, msg, type, NULL, code, extra);
}

/* Health records of the current attempt's key and backend (NULL: none). */
static uint64_t *key_words(struct request_ctx *ctx, const struct config_backend *b, size_t k)
{
    return b->nkeys > 0 ? state_words(ctx->px->st, "key", b->base_url, b->keys[k]) : NULL;
}

static uint64_t *circuit_words(struct request_ctx *ctx, const struct config_backend *b)
{
    return state_words(ctx->px->st, "circuit", b->base_url, NULL);
}

static void note_rate_limit(struct request_ctx *ctx, long seconds)
{
    ctx->n_rate_limited++;
    if (seconds > 0 && (ctx->min_retry_after <= 0 || seconds < ctx->min_retry_after)) {
        ctx->min_retry_after = seconds;
    }
}

/* Keeps what the outcome of an attempt says about its key and its backend.
 * For a 429 returns how long the key now cools (ms), else 0. */
static uint64_t record_health(struct request_ctx *ctx, enum failure why)
{
    const struct config_backend *b = ctx->backend;
    uint64_t now = health_now_ms();
    uint64_t *kw = ctx->key_health;
    uint64_t *cw = ctx->circuit_health;
    int st = ctx->status;
    if (why == FAIL_NONE) {
        if (cw != NULL) {
            health_backend_ok(cw);
        }
        if (kw != NULL && ctx->fallback) {
            health_key_clear(kw);
        }
        return 0;
    }
    if (why == FAIL_STATUS && st == 429) {
        uint64_t rnd = (uint64_t)now_us() * 0x9e3779b97f4a7c15ull;
        uint64_t ms = health_429_ms(ctx->retry_after, rnd >> 33);
        if (kw != NULL) {
            health_key_cool(kw, now, ms, HEALTH_RATE_LIMITED);
        } else if (cw != NULL) {
            /* a backend without keys is rate limited as a whole */
            health_backend_failed(cw, now);
        }
        return ms;
    }
    if (why == FAIL_STATUS && (st == 401 || st == 403)) {
        if (kw != NULL) {
            health_key_cool(kw, now, HEALTH_REJECTED_MS, HEALTH_REJECTED);
        }
        LOG_ERROR("backend '%s' REJECTED key #%zu of model '%s' with HTTP %d: check the key; it "
                  "is not used for %d s",
                  b->name, ctx->key_index, ctx->model->name, st, HEALTH_REJECTED_MS / 1000);
        return 0;
    }
    if (why == FAIL_STATUS && (st == 404 || st == 409)) {
        return 0; /* about this request or model, not the backend's health */
    }
    if (cw != NULL) {
        health_backend_failed(cw, now);
    }
    return 0;
}

static void start_attempt(struct request_ctx *ctx);

/* The current attempt failed before anything reached the client. */
static void attempt_failed(struct request_ctx *ctx, enum failure why, const char *outcome)
{
    uint64_t cool_ms = record_health(ctx, why);
    if (why == FAIL_STATUS && ctx->status == 429) {
        /* the client may come back when this key (or the soonest) is usable */
        note_rate_limit(ctx, (long)((cool_ms + 999) / 1000));
    }
    if (why == FAIL_TIMEOUT) {
        ctx->n_timeout++;
    }
    log_attempt(ctx, outcome);
    /* a key's own trouble (rejected, rate limited) tries the backend's next
     * key; anything else moves on to the next backend */
    int key_trouble =
        why == FAIL_STATUS && (ctx->status == 401 || ctx->status == 403 || ctx->status == 429);
    if (!key_trouble) {
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
    if (http_forward_header(line, nlen)) {
        buf_append(&ctx->resp_hdrs, line, len);
        buf_append_str(&ctx->resp_hdrs, "\r\n");
    }
}

static int on_headers_done(void *ud, int status)
{
    struct request_ctx *ctx = ud;
    ctx->status = status;
    switch (http_classify(status)) {
    case HTTP_SUCCESS:
        /* an HTML page is a captive portal or a proxy's error, not an answer */
        ctx->mode = ctx->html ? MODE_DRAIN : MODE_HOLD;
        return 0;
    case HTTP_FAILOVER:
        ctx->mode = MODE_DRAIN;
        return 0;
    case HTTP_PASSTHROUGH:
        break;
    }
    /* the client's own mistake: relay it, as it is; the backend is fine */
    record_health(ctx, FAIL_NONE);
    return commit(ctx);
}

/* Sends what was held and goes on streaming. */
static int release_hold(struct request_ctx *ctx)
{
    record_health(ctx, FAIL_NONE);
    if (commit(ctx) != 0) {
        return -1;
    }
    int rc = client_write(ctx, ctx->hold.data, ctx->hold.len, 1);
    buf_cleanup(&ctx->hold);
    return rc;
}

static int on_body(void *ud, const char *p, size_t n)
{
    struct request_ctx *ctx = ud;
    switch (ctx->mode) {
    case MODE_PASS:
        if (ctx->bytes_out + n > ctx->px->set.max_response) {
            ctx->too_big = 1;
            return -1; /* on_done ends it with the error event */
        }
        /* idle deadline restarts with every chunk */
        ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
        return client_write(ctx, p, n, 1);
    case MODE_DRAIN:
        ctx->drained += n;
        return ctx->drained > DRAIN_MAX ? -1 : 0;
    case MODE_HOLD:
        break;
    case MODE_NONE:
        return -1;
    }
    if (!ctx->event_stream) {
        /* a plain body: the first byte settles it */
        ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
        record_health(ctx, FAIL_NONE);
        if (commit(ctx) != 0) {
            return -1;
        }
        return client_write(ctx, p, n, 1);
    }
    if (buf_append(&ctx->hold, p, n) != BUF_OK) {
        /* a first event this large is relayed undecided */
        if (release_hold(ctx) != 0) {
            return -1;
        }
        return client_write(ctx, p, n, 1);
    }
    size_t end;
    switch (sse_peek_feed(&ctx->peek, ctx->hold.data, ctx->hold.len, &end)) {
    case SSE_MORE:
        return 0;
    case SSE_ERROR:
        ctx->mode = MODE_NONE;
        ctx->status = -1; /* judged by on_done: error event */
        return -1;
    case SSE_DATA:
        break;
    }
    ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
    return release_hold(ctx);
}

static void stream_broken(struct request_ctx *ctx, const char *why)
{
    if (!ctx->event_stream || ctx->client_gone) {
        return; /* a plain body just ends short; the client sees the cut */
    }
    struct buf b;
    buf_init(&b, 4096);
    buf_append_str(&b, "data: ");
    char msg[256];
    snprintf(msg, sizeof(msg), "The upstream stream was interrupted (%s).", why);
    reply_error_object(&b, msg, "upstream_error", NULL, "stream_interrupted");
    buf_append_str(&b, "\n\n");
    client_write(ctx, b.data, b.len, 1);
    buf_cleanup(&b);
}

static void on_done(void *ud, enum upstream_result r)
{
    struct request_ctx *ctx = ud;
    ctx->xfer = NULL;
    if (ctx->committed) {
        if (ctx->client_gone) {
            log_attempt(ctx, "client_gone");
        } else if (r == UPSTREAM_OK) {
            char o[16];
            snprintf(o, sizeof(o), "%d", ctx->status);
            log_attempt(ctx, o);
        } else {
            const char *why = ctx->too_big ? "response_too_large" : upstream_result_name(r);
            log_attempt(ctx, why);
            stream_broken(ctx, why);
        }
        finish(ctx);
        return;
    }
    if (ctx->status == -1) {
        attempt_failed(ctx, FAIL_ERROR_EVENT, "error_event");
        return;
    }
    if (r != UPSTREAM_OK && ctx->mode != MODE_DRAIN) {
        attempt_failed(ctx, FAIL_TRANSPORT, upstream_result_name(r));
        return;
    }
    if (ctx->mode == MODE_DRAIN && ctx->html) {
        attempt_failed(ctx, FAIL_EMPTY, "html_body");
        return;
    }
    if (ctx->mode == MODE_DRAIN) {
        char o[16];
        snprintf(o, sizeof(o), "%d", ctx->status);
        attempt_failed(ctx, FAIL_STATUS, o);
        return;
    }
    /* 2xx that ended while held */
    if (ctx->hold.len == 0) {
        attempt_failed(ctx, FAIL_EMPTY, "empty_body");
        return;
    }
    if (sse_is_error_payload(ctx->hold.data, ctx->hold.len)) {
        attempt_failed(ctx, FAIL_ERROR_EVENT, "error_event");
        return;
    }
    /* a stream that ended before a blank line: relay what came */
    char o[16];
    snprintf(o, sizeof(o), "%d", ctx->status);
    log_attempt(ctx, o);
    release_hold(ctx);
    finish(ctx);
}

static const struct upstream_handler handler = {on_header, on_headers_done, on_body, on_done};

static void reset_attempt(struct request_ctx *ctx)
{
    ctx->status = 0;
    ctx->mode = MODE_NONE;
    ctx->event_stream = 0;
    ctx->html = 0;
    buf_reset(&ctx->resp_hdrs);
    buf_cleanup(&ctx->hold);
    sse_peek_cleanup(&ctx->peek);
    sse_peek_init(&ctx->peek);
    ctx->drained = 0;
    ctx->retry_after = -1;
}

/* Sends the request to backend b with key k. 0, or -1 when it could not start. */
static int launch(struct request_ctx *ctx, const struct config_backend *b, size_t k)
{
    struct proxy *px = ctx->px;
    ctx->backend = b;
    ctx->key_index = k;
    ctx->key_health = key_words(ctx, b, k);
    ctx->circuit_health = circuit_words(ctx, b);
    ctx->attempts++;
    reset_attempt(ctx);
    const char *body = ctx->body.data;
    size_t body_len = ctx->body.len;
    if (b->model_name != NULL && request_map_model(ctx->body.data, ctx->body.len, &ctx->info,
                                                   b->model_name, &ctx->mapped) == BUF_OK) {
        body = ctx->mapped.data;
        body_len = ctx->mapped.len;
    }
    buf_reset(&ctx->url);
    buf_append_str(&ctx->url, b->base_url);
    buf_append_str(&ctx->url, ctx->endpoint);
    if (ctx->query != NULL && *ctx->query != '\0') {
        buf_printf(&ctx->url, "?%s", ctx->query);
    }
    if (b->nkeys > 0) {
        buf_reset(&ctx->auth);
        buf_printf(&ctx->auth, "Authorization: Bearer %s", b->keys[k]);
        ctx->hdrs[0] = ctx->auth.data;
    } else {
        ctx->hdrs[0] = "Authorization:"; /* curl: send none */
    }
    struct upstream_request rq = {
        .url = ctx->url.data,
        .headers = ctx->hdrs,
        .body = body,
        .body_len = body_len,
        .connect_timeout_ms = px->set.connect_timeout_ms,
    };
    ctx->attempt_t0 = now_us();
    /* the attempt's own time to first byte, within the request's deadline */
    ctx->deadline = ctx->attempt_t0 + (int64_t)b->timeout_ms * 1000;
    if (ctx->deadline > ctx->deadline_all) {
        ctx->deadline = ctx->deadline_all;
    }
    ctx->xfer = upstream_start(px->loop, &rq, &handler, ctx);
    if (ctx->xfer == NULL) {
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
        ctx->n_skipped_429++;
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
    while (ctx->oi < ctx->norder && ctx->attempts < px->set.max_attempts &&
           now_us() < ctx->deadline_all) {
        const struct config_backend *b = &m->backends[ctx->order[ctx->oi]];
        size_t nkeys = b->nkeys ? b->nkeys : 1;
        if (ctx->key_tries >= nkeys) {
            ctx->oi++;
            ctx->key_tries = 0;
            continue;
        }
        if (ctx->key_tries == 0) {
            uint64_t *cw = circuit_words(ctx, b);
            uint64_t wait = cw != NULL ? health_backend_wait(cw, now_ms) : 0;
            if (wait > 0) {
                /* circuit open: the whole backend waits */
                skip_cooling(ctx, wait, HEALTH_NONE, 0);
                log_skip(ctx, b, "circuit_open", wait);
                ctx->oi++;
                continue;
            }
            uint64_t c = b->nkeys > 1 ? state_next(px->st, m->name, b->name) : 0;
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
        if (launch(ctx, b, k) == 0) {
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
        const struct config_backend *b = &m->backends[ctx->soonest_backend];
        if (launch(ctx, b, ctx->soonest_key) == 0) {
            return;
        }
    }
    send_final_error(ctx);
    finish(ctx);
}

static void client_hangup(void *ud)
{
    struct request_ctx *ctx = ud;
    ctx->client_gone = 1;
    if (ctx->backend != NULL) {
        log_attempt(ctx, "client_gone");
    }
    finish(ctx);
}

/* On the loop thread: the request enters the loop. */
static void loop_start(void *arg)
{
    struct request_ctx *ctx = arg;
    struct proxy *px = ctx->px;
    link_active(px, ctx);
    int fd = fcgi_io_fd(ctx->client);
    if (fd >= 0) {
        ctx->watch = upstream_watch(px->loop, fd, client_hangup, ctx);
    }
    start_attempt(ctx);
}

void proxy_tick(void *arg, int64_t now)
{
    struct proxy *px = arg;
    if (px->nactive == 0 && px->since_trim > 0) {
        /* after a burst (thousands of streams) give the memory back */
        malloc_trim(0);
        px->since_trim = 0;
    }
    struct request_ctx *ctx = px->active;
    while (ctx != NULL) {
        struct request_ctx *next = ctx->next;
        if (ctx->xfer != NULL && ctx->deadline > 0 && now > ctx->deadline) {
            upstream_cancel(px->loop, ctx->xfer);
            ctx->xfer = NULL;
            if (ctx->committed) {
                log_attempt(ctx, "idle_timeout");
                stream_broken(ctx, "idle timeout");
                finish(ctx);
            } else {
                attempt_failed(ctx, FAIL_TIMEOUT, "timeout");
            }
        }
        ctx = next;
    }
}

int proxy_busy(void *arg)
{
    struct proxy *px = arg;
    return px->nactive > 0;
}

/* ---- the accepting side ---- */

static const char *endpoint_of(const char *path)
{
    static const char *const eps[] = {"/chat/completions", "/completions", "/embeddings"};
    if (strncmp(path, "/v1", 3) != 0) {
        return NULL;
    }
    for (size_t i = 0; i < ARRAY_LEN(eps); i++) {
        if (strcmp(path + 3, eps[i]) == 0) {
            return eps[i];
        }
    }
    return NULL;
}

static void prepare_headers(struct request_ctx *ctx)
{
    size_t offs[MAX_UPSTREAM_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(forwarded_params); i++) {
        const char *v = fcgi_io_param(ctx->client, forwarded_params[i]);
        if (v == NULL || *v == '\0' || strpbrk(v, "\r\n") != NULL) {
            continue;
        }
        offs[n++] = ctx->hdr_store.len;
        buf_printf(&ctx->hdr_store, "%s: %s", http_upstream_header(forwarded_params[i]), v);
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

static void handle_completion(struct proxy *px, struct fcgi_client *c, const char *endpoint,
                              int64_t t0)
{
    struct request_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->px = px;
    ctx->client = c;
    ctx->t0 = t0;
    ctx->endpoint = endpoint;
    ctx->min_retry_after = -1;
    ctx->retry_after = -1;
    ctx->deadline_all = t0 + (int64_t)px->set.deadline_ms * 1000;
    unsigned long id = __atomic_add_fetch(&px->next_id, 1, __ATOMIC_RELAXED);
    snprintf(ctx->rid, sizeof(ctx->rid), "%x-%lx", px->pid, id);
    buf_init(&ctx->body, px->set.max_body);
    buf_init(&ctx->mapped, px->set.max_body + 4096);
    buf_init(&ctx->hdr_store, 64 * 1024);
    buf_init(&ctx->url, 16 * 1024);
    buf_init(&ctx->auth, CONFIG_MAX_STRING + 32);
    buf_init(&ctx->resp_hdrs, 64 * 1024);
    buf_init(&ctx->hold, px->set.hold_max);
    buf_init(&ctx->log, 4096);
    sse_peek_init(&ctx->peek);

    int status = 0;
    char msg[512];
    const char *type = "invalid_request_error";
    const char *param = NULL;
    const char *code = NULL;
    int rc = fcgi_io_read_body(c, &ctx->body);
    if (rc == BUF_TOOBIG) {
        status = 413;
        snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
                 px->set.max_body);
        code = "request_too_large";
    } else if (rc != 0) {
        status = 400;
        snprintf(msg, sizeof(msg), "The request body could not be read.");
    } else {
        size_t off = 0;
        enum request_status st =
            request_scan(ctx->body.data ? ctx->body.data : "", ctx->body.len, &ctx->info, &off);
        if (st != REQUEST_OK) {
            status = 400;
            if (st == REQUEST_BAD_JSON) {
                snprintf(msg, sizeof(msg), "%s (error at byte %zu)", request_status_message(st),
                         off);
            } else {
                snprintf(msg, sizeof(msg), "%s", request_status_message(st));
                param = st == REQUEST_BAD_JSON || st == REQUEST_NOT_OBJECT ? NULL : "model";
            }
        }
    }
    if (status == 0) {
        ctx->snap = snapshot_acquire();
        ctx->model = config_find(ctx->snap->cfg, ctx->info.model);
        if (ctx->model == NULL) {
            status = 404;
            snprintf(msg, sizeof(msg), "The model '%s' does not exist", ctx->info.model);
            param = "model";
            code = "model_not_found";
        } else if (route_enabled(ctx->model) == 0) {
            status = 503;
            snprintf(msg, sizeof(msg), "No backend is enabled for model '%s'.", ctx->info.model);
            type = "upstream_error";
            code = "no_backend_enabled";
        }
    }
    if (status != 0) {
        ctx->final_status = status;
        reply_error(c, status, msg, type, param, code, NULL);
        char line[700];
        int n = snprintf(line, sizeof(line), "req=%s %s model=%s status=%d ms=%.2f error=\"%s\"",
                         ctx->rid, endpoint, ctx->info.model, status,
                         (double)(now_us() - t0) / 1000.0, msg);
        log_line(line, (size_t)n);
        ctx_free(ctx);
        return;
    }
    uint64_t ticket =
        route_uses_ticket(ctx->model) ? state_next(px->st, ctx->model->name, NULL) : 0;
    ctx->norder = route_order(ctx->model, ticket, ctx->order, ARRAY_LEN(ctx->order));
    ctx->query = fcgi_io_param(c, "QUERY_STRING");
    prepare_headers(ctx);
    upstream_loop_post(px->loop, loop_start, ctx);
}

void proxy_handle(struct proxy *px, struct fcgi_client *c)
{
    int64_t t0 = now_us();
    const char *method = fcgi_io_param(c, "REQUEST_METHOD");
    const char *uri = fcgi_io_param(c, "REQUEST_URI");
    char path[1024];
    if (method == NULL) {
        method = "GET";
    }
    if (uri == NULL || *uri == '\0') {
        const char *sn = fcgi_io_param(c, "SCRIPT_NAME");
        const char *pi = fcgi_io_param(c, "PATH_INFO");
        snprintf(path, sizeof(path), "%s%s", sn ? sn : "", pi ? pi : "");
    } else {
        snprintf(path, sizeof(path), "%s", uri);
    }
    path[strcspn(path, "?#")] = '\0';

    const char *endpoint = endpoint_of(path);
    int status = 200;
    if (endpoint != NULL) {
        if (strcmp(method, "POST") == 0) {
            handle_completion(px, c, endpoint, t0);
            return;
        }
        status = 405;
        reply_error(c, 405, "Method not allowed: use POST.", "invalid_request_error", NULL,
                    "method_not_allowed", "Allow: POST\r\n");
    } else if (strcmp(path, "/health") == 0 || strcmp(path, "/v1/models") == 0 ||
               strncmp(path, "/v1/models/", 11) == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            status = 405;
            reply_error(c, 405, "Method not allowed: use GET.", "invalid_request_error", NULL,
                        "method_not_allowed", "Allow: GET, HEAD\r\n");
        } else if (path[1] == 'h') {
            struct buf b;
            buf_init(&b, 64);
            buf_append_str(&b, "{\"Status\":\"Healthy\"}");
            reply_json(c, 200, b.data, b.len, NULL);
            buf_cleanup(&b);
        } else {
            models_list(c, path[10] == '/' ? path + 11 : NULL);
        }
    } else {
        status = 404;
        char msg[1200];
        snprintf(msg, sizeof(msg), "Unknown request URL: %s %.1000s", method, path);
        reply_error(c, 404, msg, "invalid_request_error", NULL, "unknown_url", NULL);
    }
    log_simple(px, method, path, status, t0);
    fcgi_io_finish(c);
}
