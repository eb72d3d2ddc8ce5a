/* admin_metrics.c - GET /metrics (Prometheus text) and GET /admin/health, from the shared state */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "health.h"
#include "metrics.h"
#include "redis.h"
#include "policy.h"
#include "state.h"
#include "store.h"
#include "utctime.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What a scrape reads: the routing file (labels come only from it and from
 * the key file, so the series stay bounded) and the shared counters. */
/* The largest scrape sent; Prometheus refuses a cut one, so past it: 500. */
#define METRICS_MAX_SCRAPE (64u << 20)

struct view {
    struct config *cfg; /* NULL when the routing file cannot be read */
    cJSON *keys;        /* client_keys.json, or NULL */
    struct state *st;   /* NULL when there is no state file yet */
};

static struct config *read_config(const char *dir)
{
    char path[4200], err[1024];
    snprintf(path, sizeof(path), "%s/dynamic_routing.json", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    struct buf b;
    buf_init(&b, STORE_MAX_FILE);
    int rc = buf_read_fd(&b, fd);
    close(fd);
    struct config *cfg = rc == BUF_OK ? config_parse(b.data, b.len, err, sizeof(err)) : NULL;
    buf_cleanup(&b);
    return cfg;
}

static void view_open(struct admin *a, struct view *v)
{
    char path[4200], err[512];
    v->cfg = read_config(a->dir);
    enum store_status st;
    v->keys = store_read_kind(&store_keys, a->dir, &st, err, sizeof(err));
    snprintf(path, sizeof(path), "%s/runtime.state", a->dir);
    v->st = access(path, F_OK) == 0 ? state_open(path, 0, err, sizeof(err)) : NULL;
}

static void view_close(struct view *v)
{
    config_free(v->cfg);
    cJSON_Delete(v->keys);
    state_close(v->st);
}

static const cJSON *key_list(const struct view *v)
{
    return v->keys != NULL ? cJSON_GetObjectItemCaseSensitive(v->keys, "Keys") : NULL;
}

static void help(struct buf *o, const char *name, const char *type, const char *text)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* name{l1="v1",l2="v2"...} with up to three labels (NULL ends them) */
static void series(struct buf *o, const char *name, const char *l1, const char *v1, const char *l2,
                   const char *v2, const char *l3, const char *v3)
{
    buf_append_str(o, name);
    const char *ls[3] = {l1, l2, l3}, *vs[3] = {v1, v2, v3};
    for (int i = 0; i < 3 && ls[i] != NULL; i++) {
        buf_printf(o, "%s%s=\"", i == 0 ? "{" : ",", ls[i]);
        metrics_label(o, vs[i]);
        buf_append_str(o, "\"");
    }
    buf_append_str(o, l1 != NULL ? "} " : " ");
}

static void requests(struct buf *o, const struct view *v)
{
    help(o, "llmproxy_requests_total", "counter",
         "Requests answered, by model (\"\": none configured) and HTTP status.");
    size_t n = v->cfg != NULL ? v->cfg->nmodels : 0;
    for (size_t i = 0; i <= n; i++) {
        const char *model = i < n ? v->cfg->models[i].name : "";
        for (int status = 100; status <= 599; status++) {
            uint64_t x = metrics_requests(v->st, model, status);
            if (x > 0) {
                char s[16];
                snprintf(s, sizeof(s), "%d", status);
                series(o, "llmproxy_requests_total", "model", model, "status", s, NULL, NULL);
                buf_printf(o, "%llu\n", (unsigned long long)x);
            }
        }
    }
}

static void attempts(struct buf *o, const struct view *v)
{
    help(o, "llmproxy_backend_attempts_total", "counter",
         "Attempts at a backend, by model, backend and outcome.");
    for (size_t i = 0; v->cfg != NULL && i < v->cfg->nmodels; i++) {
        const struct config_model *m = &v->cfg->models[i];
        for (size_t j = 0; j < m->nbackends; j++) {
            for (int oc = 0; oc < PO_COUNT; oc++) {
                const char *name = policy_rule((enum policy_outcome)oc)->name;
                uint64_t x = metrics_attempts(v->st, m->name, m->backends[j].name, name);
                if (x > 0) {
                    series(o, "llmproxy_backend_attempts_total", "model", m->name, "backend",
                           m->backends[j].name, "outcome", name);
                    buf_printf(o, "%llu\n", (unsigned long long)x);
                }
            }
        }
    }
}

/* tokens and cost per (model, backend, key): the keys' names and "" */
static void usage(struct buf *o, const struct view *v, bool cost)
{
    if (cost) {
        help(o, "llmproxy_cost_usd_total", "counter",
             "Cost in USD from the backends' prices, by model, backend and client key.");
    } else {
        help(o, "llmproxy_tokens_total", "counter",
             "Tokens the backends reported, by model, backend, client key and type.");
    }
    /* the keys' names once (cJSON_GetArrayItem walks the list each time) */
    const cJSON *keys = key_list(v), *kj;
    size_t nk = 0;
    const char **names = xcalloc((size_t)cJSON_GetArraySize(keys) + 1, sizeof(*names));
    names[nk++] = ""; /* keyless */
    cJSON_ArrayForEach(kj, keys)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(kj, "Name");
        if (cJSON_IsString(nm)) {
            names[nk++] = nm->valuestring;
        }
    }
    for (size_t i = 0; v->cfg != NULL && i < v->cfg->nmodels; i++) {
        const struct config_model *m = &v->cfg->models[i];
        for (size_t j = 0; j < m->nbackends; j++) {
            for (size_t k = 0; k < nk; k++) {
                const char *key = names[k];
                uint64_t u[3];
                if (!metrics_usage_get(v->st, m->name, m->backends[j].name, key, u)) {
                    continue;
                }
                const char *b = m->backends[j].name;
                if (cost) {
                    series(o, "llmproxy_cost_usd_total", "model", m->name, "backend", b, "key",
                           key);
                    buf_printf(o, "%.6f\n", (double)u[2] / 1e6);
                    continue;
                }
                for (int t = 0; t < 2; t++) {
                    buf_append_str(o, "llmproxy_tokens_total{model=\"");
                    metrics_label(o, m->name);
                    buf_append_str(o, "\",backend=\"");
                    metrics_label(o, b);
                    buf_append_str(o, "\",key=\"");
                    metrics_label(o, key);
                    buf_printf(o, "\",type=\"%s\"} %llu\n", t == 0 ? "prompt" : "completion",
                               (unsigned long long)u[t]);
                }
            }
        }
    }
    free(names);
}

static void histogram(struct buf *o, const struct view *v, enum metrics_hist h)
{
    const char *name = h == METRICS_TTFB ? "llmproxy_time_to_first_byte_seconds"
                                         : "llmproxy_request_duration_seconds";
    help(o, name, "histogram",
         h == METRICS_TTFB ? "Time from the request to the first byte of its answer, by model."
                           : "Time from the request to the end of its answer, by model.");
    int n;
    const uint64_t *le = metrics_bounds(h, &n);
    uint64_t counts[METRICS_DURATION_BUCKETS + 1];
    for (size_t i = 0; v->cfg != NULL && i < v->cfg->nmodels; i++) {
        const char *model = v->cfg->models[i].name;
        uint64_t sum;
        if (!metrics_hist_get(v->st, h, model, counts, &sum)) {
            continue;
        }
        uint64_t cum = 0;
        for (int b = 0; b <= n; b++) {
            cum += counts[b];
            char bound[32];
            if (b < n) {
                snprintf(bound, sizeof(bound), "%g", (double)le[b] / 1e6);
            } else {
                snprintf(bound, sizeof(bound), "+Inf");
            }
            buf_printf(o, "%s_bucket{model=\"", name);
            metrics_label(o, model);
            buf_printf(o, "\",le=\"%s\"} %llu\n", bound, (unsigned long long)cum);
        }
        buf_printf(o, "%s_sum{model=\"", name);
        metrics_label(o, model);
        buf_printf(o, "\"} %.6f\n%s_count{model=\"", (double)sum / 1e6, name);
        metrics_label(o, model);
        buf_printf(o, "\"} %llu\n", (unsigned long long)cum);
    }
}

static void health_gauges(struct buf *o, const struct view *v)
{
    uint64_t now = health_now_ms();
    help(o, "llmproxy_backend_circuit_open", "gauge",
         "1 while a backend's circuit is open or half-open (it failed 3 times in a row), else 0.");
    for (size_t i = 0; v->cfg != NULL && i < v->cfg->nmodels; i++) {
        const struct config_model *m = &v->cfg->models[i];
        for (size_t j = 0; j < m->nbackends; j++) {
            const struct config_backend *b = &m->backends[j];
            const uint64_t *w =
                v->st != NULL ? state_find(v->st, STATE_NS_CIRCUIT, m->name, b->name, b->base_url)
                              : NULL;
            uint64_t left, fails;
            enum health_circuit c =
                w != NULL ? health_circuit_view(w, now, &left, &fails) : HEALTH_CLOSED;
            series(o, "llmproxy_backend_circuit_open", "model", m->name, "backend", b->name, NULL,
                   NULL);
            buf_printf(o, "%d\n", c != HEALTH_CLOSED);
        }
    }
    help(o, "llmproxy_key_cooldown_seconds", "gauge",
         "Seconds a backend's API key still cools (after a 429 or a refusal), 0 when usable.");
    for (size_t i = 0; v->cfg != NULL && i < v->cfg->nmodels; i++) {
        const struct config_model *m = &v->cfg->models[i];
        for (size_t j = 0; j < m->nbackends; j++) {
            const struct config_backend *b = &m->backends[j];
            size_t nk = b->nkeys > 0 ? b->nkeys : 1;
            for (size_t k = 0; k < nk; k++) {
                const uint64_t *w = v->st != NULL ? state_find(v->st, STATE_NS_KEY, b->base_url,
                                                               b->nkeys > 0 ? b->keys[k] : "", NULL)
                                                  : NULL;
                uint64_t left = w != NULL ? health_key_wait(w, now, NULL) : 0;
                char idx[24];
                snprintf(idx, sizeof(idx), "%zu", k);
                series(o, "llmproxy_key_cooldown_seconds", "model", m->name, "backend", b->name,
                       "key_index", idx);
                buf_printf(o, "%.3f\n", (double)left / 1000.0);
            }
        }
    }
}

static cJSON *time_or_null(uint64_t ms)
{
    if (ms == 0) {
        return cJSON_CreateNull();
    }
    char t[40];
    utctime_format_rfc3339((int64_t)(ms / 1000), t, sizeof(t));
    return cJSON_CreateString(t);
}

/* One backend as GET /admin/health shows it. */
static cJSON *backend_health(const struct view *v, const struct config_model *m,
                             const struct config_backend *b, uint64_t now)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Name", b->name);
    cJSON_AddBoolToObject(o, "Enabled", b->enabled);
    const uint64_t *w =
        v->st != NULL ? state_find(v->st, STATE_NS_CIRCUIT, m->name, b->name, b->base_url) : NULL;
    uint64_t left = 0, fails = 0;
    enum health_circuit circ =
        w != NULL ? health_circuit_view(w, now, &left, &fails) : HEALTH_CLOSED;
    cJSON_AddStringToObject(o, "Circuit", health_circuit_name(circ));
    cJSON_AddNumberToObject(o, "ConsecutiveFailures", (double)fails);
    cJSON_AddNumberToObject(o, "OpenForMs", (double)left);
    struct metrics_last last = {0, 0, -1, 0};
    if (v->st != NULL) {
        metrics_last_get(v->st, m->name, b->name, &last);
    }
    if (last.error_ms > 0 && last.outcome >= 0 && last.outcome < PO_COUNT) {
        char e[96];
        const char *name = policy_rule((enum policy_outcome)last.outcome)->name;
        if (last.status > 0) {
            snprintf(e, sizeof(e), "%s (HTTP %d)", name, last.status);
        } else {
            snprintf(e, sizeof(e), "%s", name);
        }
        cJSON_AddStringToObject(o, "LastError", e);
    } else {
        cJSON_AddNullToObject(o, "LastError");
    }
    cJSON_AddItemToObject(o, "LastErrorAt", time_or_null(last.error_ms));
    cJSON_AddItemToObject(o, "LastSuccessAt", time_or_null(last.ok_ms));
    /* the last 5 minutes and the last hour, for the status page */
    struct metrics_recent rc;
    if (v->st != NULL) {
        metrics_recent_get(v->st, m->name, b->name, now, &rc);
    } else {
        memset(&rc, 0, sizeof(rc));
        rc.latency_p50 = rc.latency_p95 = rc.ttfb_p50 = rc.ttfb_p95 = -1;
    }
    cJSON *r = cJSON_AddObjectToObject(o, "Recent");
    /* the window: 4 whole minutes and the part of this one gone by */
    double minutes = METRICS_RECENT_WINDOW - 1 + (double)(now % 60000) / 60000.0;
    cJSON_AddNumberToObject(r, "RequestsPerMinute",
                            (double)(int64_t)((double)rc.attempts / minutes * 10 + 0.5) / 10);
    cJSON_AddNumberToObject(r, "ErrorRate",
                            rc.attempts ? (double)rc.errors / (double)rc.attempts : 0.0);
    const struct {
        const char *name;
        double v;
    } q[] = {{"LatencyP50Ms", rc.latency_p50},
             {"LatencyP95Ms", rc.latency_p95},
             {"TtfbP50Ms", rc.ttfb_p50},
             {"TtfbP95Ms", rc.ttfb_p95}};
    for (size_t i = 0; i < ARRAY_LEN(q); i++) {
        if (q[i].v < 0) {
            cJSON_AddNullToObject(r, q[i].name);
        } else {
            cJSON_AddNumberToObject(r, q[i].name, (double)(int64_t)(q[i].v * 10 + 0.5) / 10);
        }
    }
    cJSON *pm = cJSON_AddArrayToObject(r, "PerMinute");
    for (int i = 0; i < METRICS_RECENT_MINUTES; i++) {
        cJSON_AddItemToArray(pm, cJSON_CreateNumber((double)rc.per_minute[i]));
    }
    cJSON *keys = cJSON_AddArrayToObject(o, "Keys");
    for (size_t k = 0; k < b->nkeys; k++) {
        const uint64_t *kw =
            v->st != NULL ? state_find(v->st, STATE_NS_KEY, b->base_url, b->keys[k], NULL) : NULL;
        enum health_reason why = HEALTH_NONE;
        uint64_t cool = kw != NULL ? health_key_wait(kw, now, &why) : 0;
        cJSON *kj = cJSON_CreateObject();
        cJSON_AddNumberToObject(kj, "Index", (double)k);
        cJSON_AddNumberToObject(kj, "CoolingForMs", (double)cool);
        if (cool > 0 && why == HEALTH_RATE_LIMITED) {
            cJSON_AddStringToObject(kj, "Reason", "rate_limited");
        } else if (cool > 0 && why == HEALTH_REJECTED) {
            cJSON_AddStringToObject(kj, "Reason", "rejected");
        } else {
            cJSON_AddNullToObject(kj, "Reason");
        }
        cJSON_AddItemToArray(keys, kj);
    }
    return o;
}

int admin_health(struct admin *a, struct conn *c)
{
    struct view v;
    view_open(a, &v);
    uint64_t now = health_now_ms();
    cJSON *root = cJSON_CreateObject();
    cJSON *models = cJSON_AddObjectToObject(root, "Models");
    for (size_t i = 0; v.cfg != NULL && i < v.cfg->nmodels; i++) {
        const struct config_model *m = &v.cfg->models[i];
        cJSON *mo = cJSON_AddObjectToObject(models, m->name);
        cJSON *list = cJSON_AddArrayToObject(mo, "Backends");
        for (size_t j = 0; j < m->nbackends; j++) {
            cJSON_AddItemToArray(list, backend_health(&v, m, &m->backends[j], now));
        }
    }
    view_close(&v);
    admin_reply_tree(c, 200, root);
    cJSON_Delete(root);
    return 200;
}

int admin_metrics(struct admin *a, struct conn *c)
{
    struct view v;
    view_open(a, &v);
    struct buf o;
    buf_init(&o, METRICS_MAX_SCRAPE);
    if (v.st != NULL) {
        requests(&o, &v);
        attempts(&o, &v);
        usage(&o, &v, false);
        usage(&o, &v, true);
        histogram(&o, &v, METRICS_DURATION);
        histogram(&o, &v, METRICS_TTFB);
    }
    health_gauges(&o, &v);
    help(&o, "llmproxy_active_requests", "gauge", "Requests being served now.");
    buf_printf(&o, "llmproxy_active_requests %lld\n",
               (long long)(v.st != NULL ? metrics_active_get(v.st) : 0));
    help(&o, "llmproxy_config_valid", "gauge",
         "1 when the routing file parses (the proxy serves its last good one otherwise).");
    buf_printf(&o, "llmproxy_config_valid %d\n", v.cfg != NULL);
    if (v.st != NULL) {
        struct state_stats ss;
        state_stats(v.st, &ss);
        help(&o, "llmproxy_state_names_refused_total", "counter",
             "Names the shared state had no room for (their counters are then per process).");
        buf_printf(&o, "llmproxy_state_names_refused_total %llu\n", (unsigned long long)ss.refused);
        const char *url = getenv("LLMPROXY_REDIS_URL");
        const uint64_t *w = state_find(v.st, STATE_NS_META, REDIS_META_NAME, NULL, NULL);
        if (url != NULL && *url != '\0') {
            static const char *const rnames[4][3] = {
                {"llmproxy_redis_up", "gauge",
                 "1 while the responders reach Redis (state shared with the other hosts)."},
                {"llmproxy_redis_fallbacks_total", "counter",
                 "Requests decided on this host's state because Redis was away or late."},
                {"llmproxy_redis_config_pulls_total", "counter",
                 "Configurations changed on another host and written here."},
                {"llmproxy_redis_config_pushes_total", "counter",
                 "Configurations changed here and shared through Redis."}};
            for (int i = 0; i < 4; i++) {
                help(&o, rnames[i][0], rnames[i][1], rnames[i][2]);
                buf_printf(
                    &o, "%s %llu\n", rnames[i][0],
                    (unsigned long long)(w != NULL ? __atomic_load_n(&w[i], __ATOMIC_RELAXED) : 0));
            }
        }
    }
    view_close(&v);
    if (o.len + 64 * 1024 > o.cap) {
        /* an append near the cap may have failed: never send a cut scrape */
        buf_cleanup(&o);
        admin_error(c, 500, "server_error", "the metrics are larger than 64 MiB", NULL);
        return 500;
    }
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "Status: 200\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
                     o.len);
    conn_write(c, head, (size_t)n, false);
    conn_write(c, o.data, o.len, true);
    buf_cleanup(&o);
    return 200;
}
