/* shared.c - what a request shares with the other hosts through Redis (redis.c) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "proxy_int.h"
#include "affinity.h"
#include "endpoint.h"
#include "health.h"
#include "keys.h"
#include "log.h"
#include "redis.h"
#include "route.h"
#include "sha256.h"
#include "shared.h"
#include "snapshot.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* A health record's stamp is in the last word of its slot (health.h uses
 * the first four at most): a record from Redis is applied only over an
 * older one. */
#define STAMP_WORD (STATE_WORDS - 1)

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int shared_host_id(const char *dir, char *out, size_t n)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/instance.id", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char id[33] = {0};
    if (fd >= 0) {
        ssize_t got = read(fd, id, 32);
        close(fd);
        if (got == 32) {
            snprintf(out, n, "%s", id);
            return 0;
        }
    }
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    }
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    bool ok = write(fd, id, 32) == 32 && fsync(fd) == 0;
    close(fd);
    /* the first process to name the host wins; the others read its name */
    if (!ok || link(tmp, path) != 0) {
        unlink(tmp);
        if (ok && errno == EEXIST) {
            return shared_host_id(dir, out, n);
        }
        return -1;
    }
    unlink(tmp);
    snprintf(out, n, "%s", id);
    return 0;
}

/* ---- health records ---- */

static void field_of(char kind, const char *a, const char *b, const char *c, char out[24])
{
    char s[3 * CONFIG_MAX_STRING + 8];
    int n = snprintf(s, sizeof(s), "%s\n%s\n%s", a, b, c != NULL ? c : "");
    uint8_t d[SHA256_LEN];
    sha256(s, n < 0 ? 0 : (size_t)n >= sizeof(s) ? sizeof(s) - 1 : (size_t)n, d);
    snprintf(out, 24, "%c:%02x%02x%02x%02x%02x%02x%02x%02x", kind, d[0], d[1], d[2], d[3], d[4],
             d[5], d[6], d[7]);
}

static void put_record(struct request_ctx *ctx, char kind, const char *a, const char *b,
                       const char *c, uint64_t *w, int nw)
{
    struct rshare *rs = ctx->px->rs;
    if (rs == NULL) {
        return;
    }
    char field[24], value[160];
    field_of(kind, a, b, c, field);
    uint64_t stamp = wall_us();
    __atomic_store_n(&w[STAMP_WORD], stamp, __ATOMIC_RELAXED);
    int n = snprintf(value, sizeof(value), "%llu", (unsigned long long)stamp);
    for (int i = 0; i < nw; i++) {
        n += snprintf(value + n, sizeof(value) - (size_t)n, " %llu",
                      (unsigned long long)__atomic_load_n(&w[i], __ATOMIC_RELAXED));
    }
    rshare_health_put(rs, field, value);
}

void shared_key_changed(struct request_ctx *ctx, const struct config_backend *b, size_t k,
                        uint64_t *w)
{
    put_record(ctx, 'k', b->base_url, b->nkeys > 0 ? b->keys[k] : "", NULL, w, HEALTH_KEY_WORDS);
}

void shared_circuit_changed(struct request_ctx *ctx, const struct config_backend *b, uint64_t *w,
                            const uint64_t before[HEALTH_CIRCUIT_WORDS])
{
    /* what other hosts must know: that it opened (or opened again), or
     * closed after being open; each host counts its own failures in a row */
    uint64_t open_before = before[1], open_now = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
    uint64_t rounds_before = before[2], rounds_now = __atomic_load_n(&w[2], __ATOMIC_RELAXED);
    if (open_before == open_now && rounds_before == rounds_now) {
        return;
    }
    put_record(ctx, 'c', ctx->model->name, b->name, b->base_url, w, HEALTH_CIRCUIT_WORDS - 1);
}

struct record {
    const char *field;
    const char *value;
};

static int record_cmp(const void *a, const void *b)
{
    return strcmp(((const struct record *)a)->field, ((const struct record *)b)->field);
}

static void apply_one(struct state *st, const struct record *recs, size_t n, char kind,
                      enum state_ns ns, const char *a, const char *b, const char *c, int nw)
{
    char field[24];
    field_of(kind, a, b, c, field);
    struct record key = {.field = field};
    const struct record *r = bsearch(&key, recs, n, sizeof(*recs), record_cmp);
    if (r == NULL) {
        return;
    }
    unsigned long long v[8] = {0};
    int got = sscanf(r->value, "%llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4]);
    if (got != nw + 1) {
        return;
    }
    uint64_t *w = state_words(st, ns, a, b, c);
    if (w == NULL || __atomic_load_n(&w[STAMP_WORD], __ATOMIC_RELAXED) >= v[0]) {
        return; /* this host has it, or newer */
    }
    for (int j = 0; j < nw; j++) {
        __atomic_store_n(&w[j], v[j + 1], __ATOMIC_RELAXED);
    }
    __atomic_store_n(&w[STAMP_WORD], v[0], __ATOMIC_RELAXED);
}

/* Records written by other hosts: onto this host's words of the same
 * names (the configuration says which names there are). */
static void apply_health(void *ud, const char *const *fields, const char *const *values, size_t n)
{
    struct proxy *px = ud;
    if (n == 0) {
        return;
    }
    struct record *recs = xcalloc(n, sizeof(*recs));
    for (size_t i = 0; i < n; i++) {
        recs[i].field = fields[i];
        recs[i].value = values[i];
    }
    qsort(recs, n, sizeof(*recs), record_cmp); /* looked up by field, each config name once */
    struct snapshot *s = snapshot_acquire();
    const struct config *cfg = s->cfg;
    for (size_t i = 0; cfg != NULL && i < cfg->nmodels; i++) {
        const struct config_model *m = &cfg->models[i];
        for (size_t j = 0; j < m->nbackends; j++) {
            const struct config_backend *b = &m->backends[j];
            apply_one(px->sh->st, recs, n, 'c', STATE_NS_CIRCUIT, m->name, b->name, b->base_url,
                      HEALTH_CIRCUIT_WORDS - 1);
            size_t nk = b->nkeys ? b->nkeys : 1;
            for (size_t k = 0; k < nk; k++) {
                apply_one(px->sh->st, recs, n, 'k', STATE_NS_KEY, b->base_url,
                          b->nkeys ? b->keys[k] : "", NULL, HEALTH_KEY_WORDS);
            }
        }
    }
    snapshot_release(s);
    free(recs);
}

/* ---- a request's round trip ---- */

void shared_setup(struct proxy *px)
{
    struct proxy_shared *sh = px->sh;
    px->rs = rshare_new(px->loop, &sh->redis, sh->st, sh->dir, sh->host_id, apply_health, px);
    if (px->cgi) {
        rshare_eager(px->rs); /* its one request comes at once */
    }
}

void shared_teardown(struct proxy *px)
{
    rshare_free(px->rs);
    px->rs = NULL;
}

static void admitted(void *ud, struct rs_admit *a)
{
    struct request_ctx *ctx = ud;
    (void)a;
    ctx->rs_op = NULL;
    proxy_enter(ctx);
    if (ctx->state != RQ_DONE && !ctx->gone) {
        ctx->rs_next(ctx);
    }
    proxy_leave(ctx);
}

void shared_admit(struct request_ctx *ctx, void (*next)(struct request_ctx *ctx))
{
    struct rshare *rs = ctx->px->rs;
    struct rs_admit *a = &ctx->rsa;
    if (rs == NULL || ctx->rs_asked) {
        next(ctx);
        return;
    }
    ctx->rs_asked = 1;
    memset(a, 0, sizeof(*a));
    bool follow_up = ctx->ep->kind == EP_AFFINITY ||
                     (ctx->info.prev_len > 0 && ctx->ep->stream == EP_STREAM_RESPONSES);
    if (ctx->model != NULL && !follow_up && route_wants_ticket(ctx->model)) {
        a->model = ctx->model->name;
    }
    a->now_us = wall_us();
    const struct client_key *k = ctx->key;
    if (k != NULL) {
        a->key_id = k->id;
        a->rpm = k->rpm;
        a->tpm = k->tpm;
        if (k->budget_usd >= 0 || k->budget_tokens >= 0) {
            client_local_spend(ctx, ctx->rs_period, sizeof(ctx->rs_period), a->spend,
                               &a->spend_ttl_s);
            a->period = ctx->rs_period;
            /* the C check is cost >= budget x 10^6: the same as >= its ceiling */
            a->budget_micro = k->budget_usd >= 0 ? (int64_t)ceil(k->budget_usd * 1e6) : -1;
            a->budget_tokens = k->budget_tokens >= 0 ? (int64_t)k->budget_tokens : -1;
        }
    }
    if (follow_up) {
        a->response_id = ctx->response_id;
    }
    ctx->rs_next = next;
    /* the body is in: only a shutdown may end the wait, never the body's timeout */
    ctx->body_deadline = INT64_MAX;
    ctx->rs_op = rshare_admit(rs, a, admitted, ctx);
    if (ctx->rs_op == NULL) {
        next(ctx); /* Redis is away: local state decides */
    }
}

void shared_cancel(struct request_ctx *ctx)
{
    rshare_cancel(ctx->rs_op);
    ctx->rs_op = NULL;
}

bool shared_ticket(struct request_ctx *ctx, const struct config_model *m, uint64_t *ticket)
{
    if (ctx->rsa.ok && ctx->rsa.model != NULL && m == ctx->asked) {
        *ticket = ctx->rsa.ticket;
        return true;
    }
    return false;
}

void shared_put_response(struct request_ctx *ctx, const char *id, const struct affinity_entry *e)
{
    if (ctx->px->rs == NULL) {
        return;
    }
    char v[160];
    snprintf(v, sizeof(v), "%llx %llx %llx %llx %lld", (unsigned long long)e->model,
             (unsigned long long)e->backend, (unsigned long long)e->key,
             (unsigned long long)e->owner, (long long)e->created_ms);
    rshare_put_response(ctx->px->rs, id, v, ctx->px->sh->set.responses_max_age_ms);
}

void shared_forget_response(struct request_ctx *ctx, const char *id)
{
    rshare_forget_response(ctx->px->rs, id);
}

bool shared_response(struct request_ctx *ctx, const char *id, struct affinity_entry *e)
{
    if (!ctx->rsa.ok || !ctx->rsa.have_response) {
        return false;
    }
    unsigned long long m, b, k, o;
    long long t;
    if (sscanf(ctx->rsa.response, "%llx %llx %llx %llx %lld", &m, &b, &k, &o, &t) != 5) {
        return false;
    }
    *e = (struct affinity_entry){.model = m, .backend = b, .key = k, .owner = o, .created_ms = t};
    if (affinity_now_ms() - t > ctx->px->sh->set.responses_max_age_ms) {
        return false;
    }
    /* kept here too: the next follow-up on this host needs no Redis */
    affinity_put(proxy_affinity(ctx->px->sh), id, e);
    return true;
}
