/* client.c - a request's client: its key, limits and budget, and what it used */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy_int.h"
#include "auth.h"
#include "conn.h"
#include "endpoint.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"
#include "snapshot.h"
#include "state.h"
#include "usage.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The key a client sent: Authorization: Bearer, x-api-key or api-key. */
static const char *presented(struct conn *c)
{
    const char *a = conn_param(c, "HTTP_AUTHORIZATION");
    if (a == NULL) {
        a = conn_param(c, "REDIRECT_HTTP_AUTHORIZATION"); /* Apache CGI behind a rewrite */
    }
    if (a != NULL && strncasecmp(a, "Bearer ", 7) == 0) {
        a += 7;
        while (*a == ' ') {
            a++;
        }
        return *a != '\0' ? a : NULL;
    }
    const char *k = conn_param(c, "HTTP_X_API_KEY");
    if (k == NULL || *k == '\0') {
        k = conn_param(c, "HTTP_API_KEY");
    }
    return k != NULL && *k != '\0' ? k : NULL;
}

static bool refuse_key(struct request_ctx *ctx, const char *msg)
{
    proxy_answer_error(ctx, 401, msg, "invalid_request_error", NULL, "invalid_api_key",
                       "WWW-Authenticate: Bearer realm=\"llmproxy\"\r\n");
    return false;
}

bool client_admit(struct request_ctx *ctx, struct conn *c)
{
    const struct keyring *ring = ctx->snap->keys;
    if (ctx->snap->keys_unusable) {
        /* closed, not open: a broken keys file must never mean keyless */
        proxy_answer_error(ctx, 503,
                           "llmproxy cannot use its client keys file (client_keys.json is invalid "
                           "or unreadable; its log says why), so it serves no request until the "
                           "file is fixed.",
                           "server_error", NULL, "client_keys_unavailable", "Retry-After: 10\r\n");
        return false;
    }
    if (ring == NULL || ring->n == 0) {
        /* keyless mode: only this machine (whatever key an SDK sends is ignored),
         * so neither a remote host nor a web page (DNS rebinding, a form
         * posting text/plain) can spend the owner's keys */
        if (ctx->px->set->keyless_remote ||
            auth_keyless_ok(conn_param(c, "REMOTE_ADDR"), conn_param(c, "HTTP_HOST"),
                            conn_param(c, "HTTP_ORIGIN"), conn_param(c, "HTTP_SEC_FETCH_SITE"))) {
            return true;
        }
        proxy_answer_error(ctx, 403,
                           "llmproxy has no client keys yet, so it serves only requests from "
                           "this machine (a loopback address and Host, not from a web page). "
                           "Create a key (llmproxy-admin.fcgi --add-key NAME, or the Keys tab "
                           "of the admin page) and send it as Authorization: Bearer <key>. On a "
                           "trusted private network, LLMPROXY_ALLOW_KEYLESS_REMOTE=1.",
                           "permission_error", NULL, "client_key_required", NULL);
        return false;
    }
    const char *secret = presented(c);
    if (secret == NULL) {
        return refuse_key(ctx, "No API key was given: send Authorization: Bearer <key> (or the "
                               "x-api-key header).");
    }
    const struct client_key *k = keys_find(ring, secret);
    if (k == NULL) {
        return refuse_key(ctx, "The API key is not valid.");
    }
    if (!k->enabled) {
        return refuse_key(ctx, "This API key is disabled.");
    }
    if (k->expires_at != 0 && (int64_t)time(NULL) >= k->expires_at) {
        return refuse_key(ctx, "This API key has expired.");
    }
    ctx->key = k;
    return true;
}

/* A budget's spend is loaded from usage.db by one process while others
 * wait up to LOAD_WAIT_MS; a loader gone for LOAD_STALE_MS is replaced. */
#define LOAD_WAIT_MS 200
#define LOAD_STALE_MS 5000

/* The key's spend in its current budget period, loaded once from usage.db
 * when the shared counters are new (a runtime state made afresh, a period
 * just begun or changed). */
static uint64_t *period_words(struct request_ctx *ctx, int64_t now)
{
    const struct client_key *k = ctx->key;
    char pname[32];
    keys_period_name(k->period, now, pname, sizeof(pname));
    uint64_t *w = state_words(ctx->px->sh->st, STATE_NS_CLIENT, k->id, pname, NULL);
    if (w == NULL) {
        return NULL;
    }
    /* KEYS_W_LOADED: 0 not loaded, 1 loaded, else the wall-clock ms when a
     * loader began (one that died is taken over after LOAD_STALE_MS) */
    for (int waited = 0;; waited++) {
        uint64_t v = __atomic_load_n(&w[KEYS_W_LOADED], __ATOMIC_ACQUIRE);
        if (v == 1) {
            return w;
        }
        uint64_t ms = wall_us() / 1000;
        bool stale = v > 1 && (ms < v || ms - v > LOAD_STALE_MS);
        if ((v == 0 || stale) && __atomic_compare_exchange_n(&w[KEYS_W_LOADED], &v, ms, false,
                                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            uint64_t spent[4];
            if (usage_spend_since(ctx->px->sh->dir, k->id, keys_period_start(k->period, now),
                                  spent) == 0) {
                for (int i = 0; i < 4; i++) {
                    __atomic_add_fetch(&w[i], spent[i], __ATOMIC_RELAXED);
                }
                __atomic_store_n(&w[KEYS_W_LOADED], 1, __ATOMIC_RELEASE);
            } else {
                /* the next request tries again; until then it counts from now */
                LOG_WARN("key '%s': usage.db could not be read for its budget", k->name);
                __atomic_store_n(&w[KEYS_W_LOADED], 0, __ATOMIC_RELEASE);
            }
            return w;
        }
        if (v > 1 && waited >= LOAD_WAIT_MS) {
            return w; /* another loader is slow: decide on what is counted */
        }
        if (v > 1) {
            usleep(1000); /* another process is loading it: a moment */
        }
    }
}

/* 429 for a rate limit (Retry-After: retry seconds) or a spent budget (code
 * insufficient_quota; Retry-After when the period ends, 0 for never): SDKs
 * are told not to retry a budget on their own. The key's x-ratelimit-*
 * headers come along, as OpenAI sends them with its 429s. */
static bool too_many(struct request_ctx *ctx, const char *msg, const char *code, uint64_t retry)
{
    struct buf extra;
    buf_init(&extra, 512);
    if (code == NULL || retry > 0) {
        buf_printf(&extra, "Retry-After: %llu\r\n", (unsigned long long)(retry ? retry : 1));
    }
    if (code != NULL) {
        buf_append_str(&extra, "x-should-retry: false\r\n");
    }
    buf_append(&extra, "", 1); /* proxy_answer_error adds the x-ratelimit-* headers */
    proxy_answer_error(ctx, 429, msg, code == NULL ? "rate_limit_error" : "insufficient_quota",
                       NULL, code == NULL ? "rate_limit_exceeded" : code, extra.data);
    buf_cleanup(&extra);
    return false;
}

/* A key with limits whose counters found no room in the shared state: its
 * limits cannot be kept, so it is refused (closed), never let through. */
static bool no_room(struct request_ctx *ctx)
{
    proxy_answer_error(ctx, 503,
                       "llmproxy's shared state has no room for this key's limits; the operator "
                       "should restart llmproxy (the state is sized from the configuration).",
                       "server_error", NULL, "state_full", "Retry-After: 10\r\n");
    return false;
}

bool client_model_ok(struct request_ctx *ctx)
{
    if (!keys_model_ok(ctx->key, ctx->info.model)) {
        char msg[400];
        snprintf(msg, sizeof(msg), "This API key may not use the model '%s'.", ctx->info.model);
        proxy_answer_error(ctx, 403, msg, "permission_error", "model", "model_not_allowed", NULL);
        return false;
    }
    return true;
}

void client_local_spend(struct request_ctx *ctx, char *period, size_t n, uint64_t spend[4],
                        int64_t *ttl_s)
{
    const struct client_key *k = ctx->key;
    int64_t now = (int64_t)(wall_us() / 1000000);
    keys_period_name(k->period, now, period, n);
    const uint64_t *w = period_words(ctx, now);
    for (int i = 0; i < 4; i++) {
        spend[i] = w != NULL ? __atomic_load_n(&w[i], __ATOMIC_RELAXED) : 0;
    }
    int64_t end = keys_period_end(k->period, now);
    /* kept a week past its end, for a host whose clock is behind */
    *ttl_s = end > now ? end - now + 7 * 86400 : 0;
}

/* A bucket word as Redis has it (its copy here follows, so that the
 * limits go on from there if Redis goes away). */
static uint64_t *bucket(uint64_t *w, uint64_t *copy, bool shared, uint64_t remote)
{
    if (!shared) {
        return w;
    }
    uint64_t local = __atomic_load_n(w, __ATOMIC_RELAXED);
    while (local < remote && !__atomic_compare_exchange_n(w, &local, remote, false,
                                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    *copy = remote;
    return copy;
}

bool client_admit_model(struct request_ctx *ctx)
{
    const struct client_key *k = ctx->key;
    if (k == NULL) {
        return true;
    }
    if (!client_model_ok(ctx)) {
        return false;
    }
    struct state *st = ctx->px->sh->st;
    /* Redis's words when it answered (ctx->rsa, shared.c), else this host's */
    const struct rs_admit *ra = &ctx->rsa;
    bool shared = ra->ok && ra->key_id != NULL;
    uint64_t now = shared ? ra->now_us : wall_us();
    uint64_t copy;
    if (k->tpm > 0) {
        uint64_t *w = state_words(st, STATE_NS_CLIENT, k->id, KEYS_SLOT_TPM, NULL);
        if (w == NULL) {
            return no_room(ctx);
        }
        if (!limit_check(bucket(w, &copy, shared, ra->tpm_tat), now, k->tpm, &ctx->tpm_view)) {
            ctx->limits_known |= 2;
            char msg[200];
            snprintf(msg, sizeof(msg), "This API key used its %u tokens per minute.", k->tpm);
            return too_many(ctx, msg, NULL, ctx->tpm_view.retry_after);
        }
        ctx->limits_known |= 2;
    }
    /* a spent budget is refused before the request takes a unit of Rpm
     * (Redis's script decides in the same order) */
    if (k->budget_usd >= 0 || k->budget_tokens >= 0) {
        const uint64_t *w = period_words(ctx, (int64_t)(now / 1000000));
        if (w == NULL) {
            return no_room(ctx);
        }
        {
            /* every host's spend when Redis summed it, else this host's */
            bool all = shared && ra->period != NULL;
            uint64_t cost = all ? ra->spend_total[KEYS_W_COST_MICRO]
                                : __atomic_load_n(&w[KEYS_W_COST_MICRO], __ATOMIC_RELAXED);
            uint64_t tokens =
                all ? ra->spend_total[KEYS_W_PROMPT] + ra->spend_total[KEYS_W_COMPLETION]
                    : __atomic_load_n(&w[KEYS_W_PROMPT], __ATOMIC_RELAXED) +
                          __atomic_load_n(&w[KEYS_W_COMPLETION], __ATOMIC_RELAXED);
            if ((k->budget_usd >= 0 && (double)cost >= k->budget_usd * 1e6) ||
                (k->budget_tokens >= 0 && tokens >= (uint64_t)k->budget_tokens)) {
                char msg[300];
                snprintf(msg, sizeof(msg),
                         "This API key has used its budget for this %s ($%.6f, %llu tokens).",
                         k->period == KEY_PERIOD_TOTAL ? "key" : keys_period_word(k->period),
                         (double)cost / 1e6, (unsigned long long)tokens);
                int64_t t = (int64_t)(now / 1000000);
                int64_t end = keys_period_end(k->period, t);
                uint64_t retry = end > t ? (uint64_t)(end - t) : 0;
                return too_many(ctx, msg, "insufficient_quota", retry);
            }
        }
    }
    if (k->rpm > 0) {
        uint64_t *w = state_words(st, STATE_NS_CLIENT, k->id, KEYS_SLOT_RPM, NULL);
        if (w == NULL) {
            return no_room(ctx);
        }
        /* Redis took the unit (or refused): the same arithmetic on its word
         * gives the same verdict, and the headers' view */
        bool ok = limit_take(bucket(w, &copy, shared, ra->rpm_tat), now, k->rpm, &ctx->rpm_view);
        if (shared) {
            ok = ra->rpm_ok == 1;
            bucket(w, &copy, true, copy); /* the unit taken, here too */
        }
        if (!ok) {
            ctx->limits_known |= 1;
            if (ctx->rpm_view.retry_after == 0) {
                ctx->rpm_view.retry_after = 1;
            }
            char msg[200];
            snprintf(msg, sizeof(msg), "This API key made its %u requests per minute.", k->rpm);
            return too_many(ctx, msg, NULL, ctx->rpm_view.retry_after);
        }
        ctx->limits_known |= 1;
    }
    return true;
}

void client_headers(struct request_ctx *ctx, struct buf *h)
{
    const struct client_key *k = ctx->key;
    if (k == NULL) {
        return;
    }
    char d[32];
    if (k->rpm > 0 && (ctx->limits_known & 1)) {
        limit_duration(ctx->rpm_view.reset_us, d, sizeof(d));
        buf_printf(h,
                   "x-ratelimit-limit-requests: %u\r\nx-ratelimit-remaining-requests: %llu\r\n"
                   "x-ratelimit-reset-requests: %s\r\n",
                   k->rpm, (unsigned long long)ctx->rpm_view.remaining, d);
    }
    if (k->tpm > 0 && (ctx->limits_known & 2)) {
        limit_duration(ctx->tpm_view.reset_us, d, sizeof(d));
        buf_printf(h,
                   "x-ratelimit-limit-tokens: %u\r\nx-ratelimit-remaining-tokens: %llu\r\n"
                   "x-ratelimit-reset-tokens: %s\r\n",
                   k->tpm, (unsigned long long)ctx->tpm_view.remaining, d);
    }
}

void client_account(struct request_ctx *ctx, int status)
{
    if (!ctx->scanned) {
        return; /* refused before its body named a model */
    }
    const struct meter *m = &ctx->meter;
    uint64_t prompt = ctx->metering && m->have ? m->prompt : 0;
    uint64_t completion = ctx->metering && m->have ? m->completion : 0;
    uint64_t cached = ctx->metering && m->have ? m->cached : 0;
    if (ctx->metering && !m->have && ctx->final_status >= 200 && ctx->final_status < 300 &&
        ctx->ep->answer == EP_ANSWER_TOKENS) {
        /* answered, but no usage came (the client left before the usage
         * chunk, a backend that never reports it, an answer past the
         * meter's cap): never free for a budget, so estimated, a token per
         * 4 bytes of the request and of the answer, and logged as such */
        prompt = (ctx->body.len + 3) / 4;
        completion = (ctx->bytes_out + 3) / 4;
        ctx->usage_estimated = 1;
    }
    const struct config_backend *b = ctx->answered ? ctx->backend : NULL;
    uint64_t cost = b != NULL ? config_cost_micro(b, prompt, completion, cached) : 0;
    uint64_t now = wall_us();
    const struct client_key *k = ctx->key;
    if (k != NULL) {
        struct state *st = ctx->px->sh->st;
        uint64_t *use = state_words(st, STATE_NS_CLIENT, k->id, KEYS_SLOT_USE, NULL);
        if (use != NULL) {
            __atomic_store_n(&use[0], now / 1000, __ATOMIC_RELAXED);
        }
        /* a request refused before any backend is not spend */
        uint64_t *w = ctx->attempts > 0 ? period_words(ctx, (int64_t)(now / 1000000)) : NULL;
        if (w != NULL) {
            __atomic_add_fetch(&w[KEYS_W_REQUESTS], 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&w[KEYS_W_PROMPT], prompt, __ATOMIC_RELAXED);
            __atomic_add_fetch(&w[KEYS_W_COMPLETION], completion, __ATOMIC_RELAXED);
            __atomic_add_fetch(&w[KEYS_W_COST_MICRO], cost, __ATOMIC_RELAXED);
        }
        if (k->tpm > 0 && prompt + completion > 0) {
            uint64_t *t = state_words(st, STATE_NS_CLIENT, k->id, KEYS_SLOT_TPM, NULL);
            if (t != NULL) {
                limit_charge(t, now, k->tpm, prompt + completion);
            }
        }
        bool budget = k->budget_usd >= 0 || k->budget_tokens >= 0;
        if (ctx->px->rs != NULL && ((k->tpm > 0 && prompt + completion > 0) || (budget && w))) {
            /* the other hosts see it: the tokens on the shared bucket, this
             * host's spend raised to what it counted */
            char period[32];
            uint64_t spend[4] = {0};
            int64_t ttl = 0;
            if (budget && w != NULL) {
                client_local_spend(ctx, period, sizeof(period), spend, &ttl);
            }
            rshare_after(ctx->px->rs, k->id, k->tpm, prompt + completion,
                         budget && w != NULL ? period : NULL, spend, ttl, now);
        }
    }
    if (b != NULL && ctx->model != NULL) {
        metrics_usage(ctx->px->sh->st, ctx->model->name, b->name, k != NULL ? k->name : "", prompt,
                      completion, cost);
    }
    if (ctx->px->sh->usage == NULL) {
        return;
    }
    struct usage_record r = {.time_ms = (int64_t)(now / 1000),
                             .status = status,
                             .stream = ctx->info.stream,
                             .prompt = prompt,
                             .completion = completion,
                             .cached = cached,
                             .cost_micro = cost};
    r.error = status >= 400 || ctx->broken;
    r.counted = ctx->attempts > 0;
    snprintf(r.request_id, sizeof(r.request_id), "%s", ctx->rid);
    if (k != NULL) {
        snprintf(r.key_id, sizeof(r.key_id), "%s", k->id);
        snprintf(r.key_name, sizeof(r.key_name), "%s", k->name);
    }
    /* the model that answered, so that model and backend go together */
    snprintf(r.model, sizeof(r.model), "%s",
             ctx->model != NULL ? ctx->model->name : ctx->info.model);
    if (b != NULL) {
        snprintf(r.backend, sizeof(r.backend), "%s", b->name);
    }
    r.ms = (double)(now_us() - ctx->t0) / 1000.0;
    r.ttfb_ms = ctx->ttfb_us > 0 ? (double)ctx->ttfb_us / 1000.0 : 0;
    usage_add(ctx->px->sh->usage, &r);
}
