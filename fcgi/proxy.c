/* proxy.c - one client request: validate, order, relay, fail over */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy.h"
#include "affinity.h"
#include "proxy_int.h"
#include "answer.h"
#include "buf.h"
#include "conn.h"
#include "endpoint.h"
#include "health.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "multipart.h"
#include "policy.h"
#include "reply.h"
#include "request.h"
#include "route.h"
#include "shared.h"
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

#define TICK_US 50000
/* Client headers copied upstream; keep in sync with http_upstream_header. */
static const char *const forwarded_params[] = {
    "HTTP_ACCEPT",  "HTTP_USER_AGENT",       "HTTP_OPENAI_BETA",       "HTTP_HTTP_REFERER",
    "HTTP_X_TITLE", "HTTP_X_STAINLESS_LANG", "HTTP_ANTHROPIC_VERSION", "HTTP_ANTHROPIC_BETA",
};
/* The Messages API's version when the client names none. */
#define ANTHROPIC_VERSION "2023-06-01"
_Static_assert(ARRAY_LEN(forwarded_params) == FORWARDED_HEADERS, "keep in sync");

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
    s->keyless_remote = (int)env_size("LLMPROXY_ALLOW_KEYLESS_REMOTE", 0, 0, 1);
    /* OpenAI takes audio files of up to 25 MB; the form around one adds a little */
    s->max_multipart =
        env_size("LLMPROXY_MAX_MULTIPART_BYTES", (size_t)32 << 20, 1024, (size_t)1 << 31);
    s->responses_max_age_ms =
        (int64_t)env_size("LLMPROXY_RESPONSES_DAYS", 30, 1, 3650) * 86400 * 1000;
    s->responses_slots =
        env_size("LLMPROXY_RESPONSES_SLOTS", (size_t)1 << 18, 1024, (size_t)1 << 26);
}

struct proxy_shared *proxy_shared_new(const struct proxy_settings *s, struct state *st,
                                      const char *dir, struct usage_writer *usage)
{
    struct proxy_shared *sh = xcalloc(1, sizeof(*sh));
    sh->set = *s;
    sh->dir = dir;
    sh->usage = usage;
    sh->st = st;
    sh->pid = (unsigned)getpid();
    return sh;
}

struct affinity *proxy_affinity(struct proxy_shared *sh)
{
    if (sh->aff == NULL) {
        char path[4096], err[512];
        snprintf(path, sizeof(path), "%s/responses.state", sh->dir);
        sh->aff = affinity_open(path, sh->set.responses_slots, err, sizeof(err));
        if (sh->aff == NULL) {
            LOG_ERROR("responses table unavailable, follow-ups only reach responses made by "
                      "this process: %s",
                      err);
            sh->aff = affinity_private(AFFINITY_WAYS * 1024);
        }
    }
    return sh->aff;
}

void proxy_shared_free(struct proxy_shared *sh)
{
    if (sh != NULL) {
        affinity_close(sh->aff);
    }
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
    meter_cleanup(&ctx->meter);
    buf_cleanup(&ctx->relay_buf);
    free(ctx);
}

static void log_request_json(struct request_ctx *ctx, int status, double ms);

/* The path the log line names: the upstream's (without /v1). */
static const char *log_path(const struct request_ctx *ctx)
{
    return ctx->ep->upstream_path != NULL ? ctx->ep->upstream_path : ctx->path + 3;
}

/* The connection let go, the one log line, everything released. */
static void do_finish(struct request_ctx *ctx)
{
    struct proxy *px = ctx->px;
    if (ctx->xfer != NULL) {
        upstream_cancel(px->up, ctx->xfer);
        ctx->xfer = NULL;
    }
    shared_cancel(ctx);
    int status = ctx->gone ? 499 : ctx->final_status; /* nginx's "client closed request" */
    /* charged and counted before the client has the answer: its next
     * request, on any responder, is admitted against these tokens and this
     * cost, and a scrape right after it sees it */
    client_account(ctx, status);
    struct state *st = px->sh->st;
    /* requests and their times under the model asked for (a fallback's
     * tokens and cost go to the model and backend that answered) */
    const char *model = ctx->asked != NULL   ? ctx->asked->name
                        : ctx->model != NULL ? ctx->model->name
                                             : "";
    if (strncmp(ctx->path, "/v1/", 4) == 0) { /* not /health */
        metrics_request(st, model, status);
    }
    if (ctx->model != NULL) {
        uint64_t total = (uint64_t)(now_us() - ctx->t0);
        metrics_observe(st, METRICS_DURATION, model, total);
        if (ctx->ttfb_us > 0) {
            metrics_observe(st, METRICS_TTFB, model, (uint64_t)ctx->ttfb_us);
        }
        if (ctx->answered && ctx->backend != NULL) {
            metrics_recent_answer(st, ctx->model->name, ctx->backend->name, total,
                                  (uint64_t)ctx->ttfb_us, health_now_ms());
        }
    }
    metrics_active(st, -1);
    /* the answer's last bytes and its end (or the cut) go out now; the log
     * line is made after, off the client's time */
    if (ctx->conn != NULL) {
        if (ctx->cut) {
            conn_abort(ctx->conn);
        } else {
            conn_end(ctx->conn);
        }
        ctx->conn = NULL;
    }
    double ms = (double)(now_us() - ctx->t0) / 1000.0;
    if (log_json()) {
        log_request_json(ctx, status, ms);
    } else if (ctx->scanned) {
        log_linef("req=%s %s model=%s stream=%d attempts=[%s] status=%d%s%s bytes=%zu ms=%.2f%s",
                  ctx->rid, log_path(ctx), ctx->info.model, ctx->info.stream,
                  ctx->log.data != NULL ? ctx->log.data : "", status,
                  ctx->gone && ctx->state == RQ_RELAY ? " " : "",
                  ctx->gone && ctx->state == RQ_RELAY ? ctx->gone_name : "", ctx->bytes_out, ms,
                  ctx->usage_estimated ? " usage=estimated" : "");
    } else {
        log_linef("req=%s %s %s status=%d%s%s ms=%.2f", ctx->rid, ctx->method, ctx->path, status,
                  ctx->gone ? " " : "", ctx->gone ? ctx->gone_name : "", ms);
    }
    if (ctx->state != RQ_DONE) {
        ctx->state = RQ_DONE;
    }
    if (ctx->prev != NULL || ctx->next != NULL || px->active == ctx) {
        unlink_active(px, ctx);
    }
    attempt_end(ctx);
    ctx_free(ctx);
    px->since_trim++;
    if (px->cgi) {
        /* a CGI process exits as soon as its answer is out, not at the next tick */
        px->done_at = now_us();
        px->tick.at = px->done_at;
    }
}

/* Ends the request now, or as soon as no caller up the stack holds it. */
void proxy_finish(struct request_ctx *ctx)
{
    if (ctx->busy > 0 || ctx->in_cb > 0) {
        ctx->finish_pending = 1;
    } else {
        do_finish(ctx);
    }
}

void proxy_enter(struct request_ctx *ctx)
{
    ctx->busy++;
}

/* Leaves proxy code; the request may be gone after this. */
void proxy_leave(struct request_ctx *ctx)
{
    if (--ctx->busy == 0 && ctx->finish_pending && ctx->in_cb == 0) {
        do_finish(ctx);
    }
}

void proxy_log_attempt(struct request_ctx *ctx, const char *outcome)
{
    /* the metric takes the policy's name for what happened (a bounded set) */
    enum policy_outcome o = ctx->gone              ? PO_CLIENT_GONE
                            : ctx->at_outcome >= 0 ? (enum policy_outcome)ctx->at_outcome
                            : strcmp(outcome, "shutdown") == 0     ? PO_SHUTDOWN
                            : strcmp(outcome, "start_failed") == 0 ? PO_CONNECT
                                                                   : PO_TIMEOUT;
    struct state *st = ctx->px->sh->st;
    metrics_attempt(st, ctx->model->name, ctx->backend->name, policy_rule(o)->name);
    metrics_recent_attempt(st, ctx->model->name, ctx->backend->name,
                           o != PO_ANSWER && o != PO_CLIENT_ERROR && o != PO_CLIENT_GONE,
                           health_now_ms());
    double ms = (double)(now_us() - ctx->attempt_t0) / 1000.0;
    if (log_json()) {
        struct buf item;
        buf_init(&item, ctx->log.cap);
        buf_append_str(&item, "{\"backend\":\"");
        buf_append_json_str(&item, ctx->backend->name);
        buf_printf(&item, "\",\"key\":%zu,\"outcome\":\"", ctx->key_index);
        buf_append_json_str(&item, outcome);
        buf_printf(&item, "\",\"ms\":%.1f}", ms);
        proxy_log_json_item(ctx, &item);
        buf_cleanup(&item);
        return;
    }
    buf_printf(&ctx->log, "%s%s#%zu:%s:%.1fms", ctx->log.len ? " " : "", ctx->backend->name,
               ctx->key_index, outcome, ms);
}

/* One attempt (or skipped backend) as an object of the JSON line's
 * attempts: whole or not at all (then counted as cut), so the line stays
 * valid JSON however many backends a model has. */
void proxy_log_json_item(struct request_ctx *ctx, const struct buf *item)
{
    size_t need = item->len + (ctx->log.len ? 1 : 0);
    /* an item that filled its own buffer may be cut: never half an object */
    if (item->len == 0 || item->len + 1 >= item->cap || ctx->log.len + need + 1 > ctx->log.cap ||
        (ctx->log.len && buf_append(&ctx->log, ",", 1) != BUF_OK) ||
        buf_append(&ctx->log, item->data, item->len) != BUF_OK) {
        ctx->log_cut++;
    }
}

/* The request's line in LLMPROXY_LOG_FORMAT=json: the fields of the text
 * line, as members of one object. */
static void log_request_json(struct request_ctx *ctx, int status, double ms)
{
    struct buf b;
    buf_init(&b, 16384);
    buf_printf(&b, "\"req\":\"%s\",", ctx->rid);
    if (ctx->scanned) {
        buf_append_str(&b, "\"path\":\"");
        buf_append_json_str(&b, log_path(ctx));
        buf_append_str(&b, "\",\"model\":\"");
        buf_append_json_str(&b, ctx->info.model);
        buf_printf(&b, "\",\"stream\":%s,", ctx->info.stream ? "true" : "false");
        if (ctx->key != NULL) {
            buf_append_str(&b, "\"key\":\"");
            buf_append_json_str(&b, ctx->key->name);
            buf_append_str(&b, "\",");
        }
        buf_printf(&b, "\"attempts\":[%s],", ctx->log.data != NULL ? ctx->log.data : "");
        if (ctx->log_cut > 0) {
            buf_printf(&b, "\"attempts_cut\":%d,", ctx->log_cut);
        }
    } else {
        buf_append_str(&b, "\"method\":\"");
        buf_append_json_str(&b, ctx->method);
        buf_append_str(&b, "\",\"path\":\"");
        buf_append_json_str(&b, ctx->path);
        buf_append_str(&b, "\",");
    }
    buf_printf(&b, "\"status\":%d,", status);
    if (ctx->gone && (!ctx->scanned || ctx->state == RQ_RELAY)) {
        buf_append_str(&b, "\"gone\":\"");
        buf_append_json_str(&b, ctx->gone_name != NULL ? ctx->gone_name : "client_gone");
        buf_append_str(&b, "\",");
    }
    if (ctx->scanned) {
        buf_printf(&b, "\"bytes\":%zu,", ctx->bytes_out);
    }
    if (ctx->usage_estimated) {
        buf_append_str(&b, "\"usage\":\"estimated\",");
    }
    buf_printf(&b, "\"ms\":%.2f", ms);
    if (b.data != NULL) {
        log_json_line(b.data, b.len);
    }
    buf_cleanup(&b);
}

/* Writes to the client; 0, or -1 when it is gone. */
int proxy_client_write(struct request_ctx *ctx, const char *p, size_t n, int flush)
{
    if (ctx->gone || ctx->conn == NULL) {
        return -1;
    }
    if (conn_write(ctx->conn, p, n, flush) != 0) {
        /* gone now (on_gone comes later, from the loop): a stop that follows
         * is the client's doing, not the backend's */
        ctx->gone = 1;
        ctx->gone_name = conn_gone_reason(ctx->conn);
        if (ctx->gone_name == NULL) {
            ctx->gone_name = "client_gone";
        }
        return -1;
    }
    ctx->bytes_out += n;
    return 0;
}

/* An answer of our own (an error, a verdict); the request then ends. */
void proxy_answer_error(struct request_ctx *ctx, int status, const char *msg, const char *type,
                        const char *param, const char *code, const char *extra)
{
    ctx->final_status = status;
    if (ctx->conn != NULL && !ctx->gone) {
        /* a key with limits hears them with every answer, errors too */
        struct buf h;
        buf_init(&h, 1024);
        buf_append_str(&h, extra != NULL ? extra : "");
        client_headers(ctx, &h);
        buf_append(&h, "", 1);
        /* the Anthropic API's paths, known or not, hear its shape */
        if (ctx->ep != NULL ? ctx->ep->errors == EP_ERRORS_ANTHROPIC
                            : strncmp(ctx->path, "/v1/messages/", 13) == 0) {
            reply_anthropic_error(ctx->conn, status, msg, h.data);
        } else {
            reply_error(ctx->conn, status, msg, type, param, code, h.data);
        }
        buf_cleanup(&h);
    }
    proxy_finish(ctx);
}

/* ---- from the web server ---- */

/* A client header value that may go upstream: printable, no CR/LF, not
 * only white space. */
static bool header_value_ok(const char *v)
{
    if (v[strspn(v, " \t")] == '\0') {
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
    bool anthropic = ctx->ep->api == CONFIG_API_ANTHROPIC;
    bool version = false;
    for (size_t i = 0; i < ARRAY_LEN(forwarded_params); i++) {
        const char *v = conn_param(ctx->conn, forwarded_params[i]);
        const char *name = v != NULL ? http_upstream_header(forwarded_params[i]) : NULL;
        /* anthropic-* go only to Anthropic backends */
        bool theirs = strncmp(forwarded_params[i], "HTTP_ANTHROPIC_", 15) == 0;
        if (v == NULL || name == NULL || !header_value_ok(v) || theirs != anthropic) {
            continue;
        }
        version |= strcmp(forwarded_params[i], "HTTP_ANTHROPIC_VERSION") == 0;
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        offs[n++] = ctx->hdr_store.len;
        buf_printf(&ctx->hdr_store, "%s: %s", name, v);
        buf_append(&ctx->hdr_store, "", 1);
    }
    if (anthropic && !version) {
        offs[n++] = ctx->hdr_store.len;
        buf_append_str(&ctx->hdr_store, "anthropic-version: " ANTHROPIC_VERSION);
        buf_append(&ctx->hdr_store, "", 1);
    }
    if (ctx->ep->body == EP_BODY_JSON) {
        /* the body was checked to be JSON, whatever the client labelled it */
        offs[n++] = ctx->hdr_store.len;
        buf_append_str(&ctx->hdr_store, "Content-Type: application/json");
        buf_append(&ctx->hdr_store, "", 1);
    } else if (ctx->ep->body == EP_BODY_NONE) {
        offs[n++] = ctx->hdr_store.len;
        buf_append_str(&ctx->hdr_store, "Content-Type:"); /* curl: none (a POST without a body) */
        buf_append(&ctx->hdr_store, "", 1);
    } else if (ctx->ep->body == EP_BODY_MULTIPART) {
        /* the client's, with the boundary the body was checked against */
        offs[n++] = ctx->hdr_store.len;
        buf_printf(&ctx->hdr_store, "Content-Type: %s", conn_param(ctx->conn, "CONTENT_TYPE"));
        buf_append(&ctx->hdr_store, "", 1);
    }
    offs[n++] = ctx->hdr_store.len;
    buf_append_str(&ctx->hdr_store, "Expect:"); /* no 100-continue round trip */
    buf_append(&ctx->hdr_store, "", 1);
    ctx->hdrs[0] = NULL;
    for (size_t i = 0; i < n; i++) {
        ctx->hdrs[i + 1] = ctx->hdr_store.data + offs[i];
    }
    ctx->hdrs[n + 1] = NULL;
}

/* The models to fall back to, depth first in the order the configuration
 * lists them (it has no cycles; each model once). */
static void plan_fallbacks(struct request_ctx *ctx, const struct config_model *m)
{
    for (size_t i = 0; i < m->nfallbacks && ctx->nchain < CONFIG_MAX_CHAIN; i++) {
        const struct config_model *f = config_find(ctx->snap->cfg, m->fallbacks[i]);
        bool seen = f == NULL || f == ctx->asked;
        for (size_t j = 0; j < ctx->nchain && !seen; j++) {
            seen = ctx->chain[j] == f;
        }
        if (!seen) {
            ctx->chain[ctx->nchain++] = f;
            plan_fallbacks(ctx, f);
        }
    }
}

void proxy_plan(struct request_ctx *ctx)
{
    uint64_t ticket = 0;
    if (route_wants_ticket(ctx->model) && !shared_ticket(ctx, ctx->model, &ticket)) {
        ticket = state_next(ctx->px->sh->st, STATE_NS_ROTATION, ctx->model->name, NULL);
    }
    ctx->ticket = ticket;
    ctx->norder = route_order(ctx->model, ticket, ctx->order, ARRAY_LEN(ctx->order));
    /* only the backends that speak the endpoint's API (an OpenAI and an
     * Anthropic backend may serve one model, each its own endpoints) */
    size_t n = 0;
    for (size_t i = 0; i < ctx->norder; i++) {
        if (ctx->model->backends[ctx->order[i]].api == ctx->ep->api) {
            ctx->order[n++] = ctx->order[i];
        }
    }
    ctx->norder = n;
    ctx->oi = 0;
    ctx->key_tries = 0;
}

/* A multipart body so far (or, final, whole): false when it was refused
 * with a 400 saying why. */
static bool multipart_check(struct request_ctx *ctx, bool final)
{
    enum multipart_status st = multipart_feed(
        &ctx->mp, ctx->body.data != NULL ? ctx->body.data : "", ctx->body.len, final);
    if (st >= 0) {
        return true;
    }
    char msg[300];
    const char *what = multipart_status_message(st);
    if (st == MP_NO_MODEL || st == MP_NOT_MULTIPART || st == MP_NO_BOUNDARY) {
        snprintf(msg, sizeof(msg), "%s", what);
    } else {
        snprintf(msg, sizeof(msg), "%s (at byte %zu)", what, ctx->mp.err_off);
    }
    const char *param = st == MP_NO_MODEL || st == MP_DUP_MODEL || st == MP_MODEL_BAD ? "model"
                        : st == MP_DUP_STREAM                                         ? "stream"
                                                                                      : NULL;
    proxy_answer_error(ctx, 400, msg, "invalid_request_error", param, NULL, NULL);
    return false;
}

/* The backend of m and its key that made the response e says, if m has them. */
static bool pin_in(struct request_ctx *ctx, const struct config_model *m,
                   const struct affinity_entry *e)
{
    if (ctx->key != NULL && !keys_model_ok(ctx->key, m->name)) {
        return false; /* never a way into a model the key may not use */
    }
    for (size_t i = 0; i < m->nbackends; i++) {
        const struct config_backend *b = &m->backends[i];
        /* a disabled backend gets nothing, follow-ups included (a leaked key) */
        if (!b->enabled || b->api != ctx->ep->api ||
            affinity_hash(b->base_url, NULL) != e->backend) {
            continue;
        }
        size_t nkeys = b->nkeys ? b->nkeys : 1;
        for (size_t k = 0; k < nkeys; k++) {
            if (affinity_hash(b->nkeys ? b->keys[k] : "", NULL) == e->key) {
                ctx->model = m;
                ctx->pinned = 1;
                ctx->pin_backend = (uint8_t)i;
                ctx->pin_key = k;
                return true;
            }
        }
    }
    return false;
}

/* The backend and key that made response id, found for this client key
 * (a response is its maker's: another key hears it does not exist): in
 * prefer first (the model a follow-up names), then in the model that made
 * it, then anywhere the same BaseUrl and key are configured. */
static bool pin_response(struct request_ctx *ctx, const char *id, const struct config_model *prefer)
{
    struct proxy_shared *sh = ctx->px->sh;
    struct affinity_entry e;
    if ((!affinity_get(proxy_affinity(sh), id, sh->set.responses_max_age_ms, &e) &&
         !shared_response(ctx, id, &e)) ||
        e.owner != (ctx->key != NULL ? affinity_hash(ctx->key->id, NULL) : 0)) {
        return false;
    }
    if (prefer != NULL && pin_in(ctx, prefer, &e)) {
        return true;
    }
    const struct config *cfg = ctx->snap->cfg;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (affinity_hash(cfg->models[i].name, NULL) == e.model &&
            pin_in(ctx, &cfg->models[i], &e)) {
            return true;
        }
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (pin_in(ctx, &cfg->models[i], &e)) {
            return true;
        }
    }
    return false;
}

static void response_not_found(struct request_ctx *ctx, const char *id, const char *param)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "%s with id '%s' not found.",
             param != NULL ? "Previous response" : "Response", id);
    proxy_answer_error(ctx, 404, msg, "invalid_request_error", param,
                       param != NULL ? "previous_response_not_found" : "response_not_found", NULL);
}

/* The attempts are planned: send the first. */
static void start(struct request_ctx *ctx)
{
    proxy_plan(ctx);
    ctx->deadline_all = now_us() + (int64_t)ctx->px->set->deadline_ms * 1000;
    prepare_headers(ctx);
    attempt_start(ctx);
}

/* GET/DELETE /v1/responses/{id}, .../cancel, .../input_items: to the
 * backend and key that made it. */
static void route_by_id_shared(struct request_ctx *ctx);

static void route_by_id(struct request_ctx *ctx)
{
    size_t n;
    size_t off = endpoint_id(ctx->ep, ctx->path, &n);
    size_t k = n > REQUEST_ID_MAX ? REQUEST_ID_MAX : n;
    memcpy(ctx->response_id, ctx->path + off, k);
    ctx->response_id[k] = '\0';
    if (n > REQUEST_ID_MAX) {
        response_not_found(ctx, ctx->response_id, NULL);
        return;
    }
    shared_admit(ctx, route_by_id_shared);
}

static void route_by_id_shared(struct request_ctx *ctx)
{
    if (!pin_response(ctx, ctx->response_id, NULL)) {
        response_not_found(ctx, ctx->response_id, NULL);
        return;
    }
    snprintf(ctx->info.model, sizeof(ctx->info.model), "%s", ctx->model->name);
    ctx->scanned = 1;
    if (!client_admit_model(ctx)) {
        return;
    }
    ctx->asked = ctx->model;
    start(ctx);
}

static void route_admitted(struct request_ctx *ctx);

/* The body is in: check it, choose the order, make the first attempt. */
static void route_request(struct request_ctx *ctx)
{
    if (ctx->ep->kind == EP_AFFINITY) {
        route_by_id(ctx);
        return;
    }
    size_t off = 0;
    const char *body = ctx->body.data != NULL ? ctx->body.data : "";
    if (ctx->ep->body == EP_BODY_MULTIPART) {
        if (!multipart_check(ctx, true)) {
            return;
        }
        /* the model part's content is the value mapped */
        memset(&ctx->info, 0, sizeof(ctx->info));
        snprintf(ctx->info.model, sizeof(ctx->info.model), "%s", ctx->mp.model);
        ctx->info.model_off = ctx->mp.model_off;
        ctx->info.model_len = ctx->mp.model_len;
        ctx->info.stream = ctx->mp.stream;
    }
    enum request_status st = ctx->ep->body == EP_BODY_MULTIPART
                                 ? REQUEST_OK
                                 : request_scan(body, ctx->body.len, &ctx->info, &off);
    if (st == REQUEST_BAD_PREVIOUS && ctx->ep->stream != EP_STREAM_RESPONSES) {
        st = REQUEST_OK; /* a field only the Responses API reads */
        ctx->info.prev_len = 0;
    }
    if (st != REQUEST_OK) {
        char msg[512];
        if (st == REQUEST_BAD_JSON) {
            snprintf(msg, sizeof(msg), "%s (error at byte %zu)", request_status_message(st), off);
        } else {
            snprintf(msg, sizeof(msg), "%s", request_status_message(st));
        }
        const char *param = st == REQUEST_BAD_JSON || st == REQUEST_NOT_OBJECT          ? NULL
                            : st == REQUEST_DUP_STREAM || st == REQUEST_STREAM_NOT_BOOL ? "stream"
                            : st == REQUEST_BAD_PREVIOUS ? "previous_response_id"
                                                         : "model";
        proxy_answer_error(ctx, 400, msg, "invalid_request_error", param, NULL, NULL);
        return;
    }
    ctx->scanned = 1;
    ctx->model = config_find(ctx->snap->cfg, ctx->info.model);
    if (ctx->model == NULL) {
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist", ctx->info.model);
        proxy_answer_error(ctx, 404, msg, "invalid_request_error", "model", "model_not_found",
                           NULL);
        return;
    }
    if (route_enabled_api(ctx->model, ctx->ep->api) == 0) {
        char msg[400];
        if (route_enabled(ctx->model) > 0) {
            /* enabled backends, none of which speaks this endpoint's API */
            snprintf(msg, sizeof(msg),
                     "Model '%s' has no enabled backend with \"Api\": \"%s\", which %s needs.",
                     ctx->info.model, config_api_name(ctx->ep->api), ctx->ep->path);
        } else {
            snprintf(msg, sizeof(msg), "No backend is enabled for model '%s'.", ctx->info.model);
        }
        proxy_answer_error(ctx, 503, msg, "upstream_error", NULL, "no_backend_enabled", NULL);
        return;
    }
    if (ctx->key != NULL && !client_model_ok(ctx)) {
        return;
    }
    if (ctx->info.background && ctx->ep->stream == EP_STREAM_RESPONSES && ctx->key != NULL &&
        (ctx->key->tpm > 0 || ctx->key->budget_usd >= 0 || ctx->key->budget_tokens >= 0)) {
        /* its tokens are known only when it is fetched later, which is not
         * metered: a limited key could generate past its limits */
        proxy_answer_error(ctx, 400,
                           "Background responses are not available to an API key with a token "
                           "limit or budget.",
                           "invalid_request_error", "background", "background_not_allowed", NULL);
        return;
    }
    if (ctx->info.prev_len > 0 && ctx->ep->stream == EP_STREAM_RESPONSES) {
        request_previous_id(body, &ctx->info, ctx->response_id);
    }
    shared_admit(ctx, route_admitted);
}

/* What the shared (or local) state says, then the attempts. */
static void route_admitted(struct request_ctx *ctx)
{
    const char *body = ctx->body.data != NULL ? ctx->body.data : "";
    if (!client_admit_model(ctx)) {
        return;
    }
    if (ctx->info.stream && ctx->ep->stream == EP_STREAM_CHAT_SSE) {
        ctx->usage_added = request_usage_edit(body, ctx->body.len, &ctx->info, &ctx->usage_edit) ==
                           REQUEST_USAGE_ADDED;
    }
    ctx->asked = ctx->model;
    if (ctx->info.prev_len > 0 && ctx->ep->stream == EP_STREAM_RESPONSES) {
        /* a follow-up: where the response it continues lives, nowhere else */
        if (!pin_response(ctx, ctx->response_id, ctx->model)) {
            response_not_found(ctx, ctx->response_id, "previous_response_id");
            return;
        }
    } else {
        plan_fallbacks(ctx, ctx->model);
    }
    start(ctx);
}

static void too_large(struct request_ctx *ctx)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
             ctx->body.cap);
    proxy_answer_error(ctx, 413, msg, "invalid_request_error", NULL, "request_too_large", NULL);
}

static void on_request(void *app, struct conn *c)
{
    struct proxy *px = app;
    struct request_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->px = px;
    ctx->conn = c;
    ctx->t0 = now_us();
    ctx->at_outcome = -1;
    metrics_active(px->sh->st, 1);
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
    buf_init(&ctx->log, 8192);
    buf_init(&ctx->relay_buf, SIZE_MAX / 2);
    sse_peek_init(&ctx->peek);
    conn_bind(c, ctx);
    link_active(px, ctx);
    proxy_enter(ctx);

    const char *method = conn_param(c, "REQUEST_METHOD");
    snprintf(ctx->method, sizeof(ctx->method), "%s", method != NULL ? method : "GET");
    conn_path(c, ctx->path, sizeof(ctx->path));
    ctx->ep = endpoint_find(ctx->path);
    if (ctx->ep == NULL) {
        char msg[700];
        snprintf(msg, sizeof(msg), "Unknown request URL: %s %s", ctx->method, ctx->path);
        proxy_answer_error(ctx, 404, msg, "invalid_request_error", NULL, "unknown_url", NULL);
    } else if (!endpoint_method_ok(ctx->ep, ctx->method)) {
        char msg[100], allow[64];
        snprintf(msg, sizeof(msg), "Method not allowed: use %s.", ctx->ep->method);
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", ctx->ep->allow);
        proxy_answer_error(ctx, 405, msg, "invalid_request_error", NULL, "method_not_allowed",
                           allow);
    } else if (ctx->ep->guarded && (ctx->snap = snapshot_acquire()) != NULL &&
               !client_admit(ctx, c)) {
        /* answered by client_admit */
    } else if (ctx->ep->kind != EP_ROUTED && ctx->ep->kind != EP_AFFINITY) {
        ctx->final_status = answer_local(c, ctx->ep, ctx->path, ctx->key);
        proxy_finish(ctx);
    } else if (px->draining) {
        proxy_answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error", NULL,
                           "server_shutting_down", "Retry-After: 1\r\n");
    } else {
        long long cl = conn_content_length(c);
        char boundary[MULTIPART_MAX_BOUNDARY + 1];
        enum multipart_status mst = MP_OK;
        if (ctx->ep->body == EP_BODY_MULTIPART) {
            buf_cleanup(&ctx->body);
            buf_init(&ctx->body, px->set->max_multipart);
            mst = multipart_boundary(conn_param(c, "CONTENT_TYPE"), boundary, sizeof(boundary));
            if (mst == MP_OK) {
                multipart_init(&ctx->mp, boundary);
            }
        }
        if (mst != MP_OK) {
            proxy_answer_error(ctx, 400, multipart_status_message(mst), "invalid_request_error",
                               NULL, NULL, NULL);
        } else if (cl > (long long)ctx->body.cap) {
            too_large(ctx);
        } else {
            if (cl > 0) {
                buf_presize(&ctx->body, (size_t)cl); /* one allocation, no doubling */
            }
            ctx->state = RQ_BODY;
            ctx->body_deadline = now_us() + (int64_t)px->set->body_timeout_ms * 1000;
        }
    }
    proxy_leave(ctx);
}

static void on_client_body(void *ud, const char *p, size_t n)
{
    struct request_ctx *ctx = ud;
    if (ctx->state != RQ_BODY) {
        return;
    }
    proxy_enter(ctx);
    if (buf_append(&ctx->body, p, n) != BUF_OK) {
        too_large(ctx);
    } else if (ctx->ep->body == EP_BODY_MULTIPART && !multipart_check(ctx, false)) {
        /* refused as soon as it is certain: 10,000 parts are not all read */
    } else {
        ctx->body_deadline = now_us() + (int64_t)ctx->px->set->body_timeout_ms * 1000;
    }
    proxy_leave(ctx);
}

static void on_client_body_end(void *ud)
{
    struct request_ctx *ctx = ud;
    if (ctx->state != RQ_BODY) {
        return;
    }
    proxy_enter(ctx);
    route_request(ctx);
    proxy_leave(ctx);
}

static void on_client_drain(void *ud)
{
    struct request_ctx *ctx = ud;
    if (ctx->paused && ctx->xfer != NULL) {
        proxy_enter(ctx);
        ctx->paused = 0;
        ctx->deadline = now_us() + (int64_t)ctx->backend->timeout_ms * 1000;
        upstream_resume(ctx->px->up, ctx->xfer);
        proxy_leave(ctx);
    }
}

static void on_client_gone(void *ud, enum conn_gone why)
{
    struct request_ctx *ctx = ud;
    proxy_enter(ctx);
    ctx->gone = 1;
    ctx->gone_name = conn_gone_name(why);
    if (ctx->xfer == NULL || ctx->in_cb == 0) {
        if (ctx->xfer != NULL && ctx->backend != NULL) {
            proxy_log_attempt(ctx, ctx->gone_name);
        }
        proxy_finish(ctx);
    } else {
        ctx->finish_pending = 1; /* the transfer stops from its callback */
    }
    proxy_leave(ctx);
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
            proxy_answer_error(ctx, 503, "llmproxy is shutting down; retry.", "upstream_error",
                               NULL, "server_shutting_down", "Retry-After: 1\r\n");
        } else if (now > ctx->body_deadline) {
            proxy_answer_error(ctx, 408, "The request body did not arrive in time.",
                               "invalid_request_error", NULL, "request_timeout", NULL);
        }
        return;
    }
    attempt_expire(ctx, now, shutdown);
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
        proxy_enter(ctx);
        expire(ctx, now);
        proxy_leave(ctx);
        ctx = next;
    }
    if (px->draining && px->srv != NULL && !px->cgi) {
        conn_server_close_idle(px->srv); /* kept connections that fell idle */
    }
    size_t open = px->srv != NULL ? conn_server_open(px->srv) : 0;
    if (px->cgi && (px->nactive > 0 || open > 0)) {
        px->idle_since = 0;
    } else if (px->cgi && px->idle_since == 0) {
        px->idle_since = now;
    }
    /* a CGI process ends once its request is done and what it told Redis
     * is answered (or the Redis timeout passed) */
    int over =
        px->cgi ? px->nactive == 0 && open == 0 &&
                      (rshare_pending(px->rs) == 0 ||
                       now - px->idle_since > (int64_t)px->sh->redis.timeout_ms * 1000)
                : px->draining && px->nactive == 0 && (open == 0 || now > px->drain_at + 1000000);
    if (over) {
        loop_quit(px->loop);
        return;
    }
    if (px->cgi && px->nactive == 0 && px->done_at > 0 && now - px->done_at < 100000) {
        /* done: its output and Redis's answers are awaited, soon (a slow
         * reader of the output is then looked at every tick) */
        px->tick.at = now + 1000;
    } else if (px->nactive > 0 || px->draining || px->cgi) {
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
    struct conn_settings cs = {
        .stall_ms = sh->set.stall_ms, .idle_ms = 300000, .linger_ms = sh->set.body_timeout_ms};
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
    shared_setup(px);
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
    shared_teardown(px);
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
    /* new requests go on being accepted, and get 503 at once: refusing
     * connections would leave those already queued hanging until we exit */
    if (px->srv != NULL && !px->cgi) {
        conn_server_close_idle(px->srv);
    }
    if (px->nactive > 0) {
        LOG_INFO("stopping: %zu requests in flight get up to %ld ms", px->nactive,
                 px->set->drain_ms);
    }
    px->tick.at = now_us(); /* look at once */
}

void proxy_drain_now(void *arg)
{
    struct proxy *px = arg;
    proxy_drain(px);
    px->drain_at = now_us();
    px->tick.at = now_us();
}
