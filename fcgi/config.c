/* config.c - dynamic_routing.json <-> structs, validation */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "config.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *config_strategy_name(enum config_strategy s)
{
    switch (s) {
    case CONFIG_ROUND_ROBIN:
        return "RoundRobin";
    case CONFIG_WEIGHTED:
        return "Weighted";
    case CONFIG_FAILOVER:
        break;
    }
    return "Failover";
}

const char *config_api_name(enum config_api a)
{
    return a == CONFIG_API_ANTHROPIC ? "anthropic" : "openai";
}

bool config_model_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CONFIG_MAX_MODEL_NAME || strstr(name, "..") != NULL) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

void config_mask_key(const char *key, char *out, size_t n)
{
    size_t len = strlen(key);
    if (len >= CONFIG_MASK_MIN_LEN) {
        snprintf(out, n, "%s%s", CONFIG_MASK_PREFIX, key + len - 4);
    } else {
        snprintf(out, n, "%s", CONFIG_MASK_PREFIX);
    }
}

bool config_is_masked(const char *s)
{
    return strncmp(s, CONFIG_MASK_PREFIX, strlen(CONFIG_MASK_PREFIX)) == 0;
}

/* No control characters that could split a header or a log line. */
static bool value_ok(const char *s)
{
    if (strlen(s) > CONFIG_MAX_STRING) {
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\r' || *p == '\n' || *p < 0x20 || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool url_ok(const char *s)
{
    const char *rest;
    if (strncasecmp(s, "http://", 7) == 0) {
        rest = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        rest = s + 8;
    } else {
        return false;
    }
    /* a host must follow, and no spaces anywhere */
    if (*rest == '\0' || *rest == '/' || *rest == '?' || *rest == '#') {
        return false;
    }
    return strchr(s, ' ') == NULL;
}

/* Returns a string value, NULL (absent or JSON null) or sets *bad. */
static const char *get_string(const cJSON *obj, const char *key, bool *bad)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        return NULL;
    }
    if (!cJSON_IsString(it) || it->valuestring == NULL) {
        *bad = true;
        return NULL;
    }
    return it->valuestring;
}

/* Integer field in [lo, hi]; def when absent. Returns false when invalid. */
static bool get_int(const cJSON *obj, const char *key, long lo, long hi, long def, long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(it)) {
        return false;
    }
    double d = it->valuedouble;
    if (d != d || d < (double)lo || d > (double)hi || d != (double)(long)d) {
        return false;
    }
    *out = (long)d;
    return true;
}

static void backend_cleanup(struct config_backend *b)
{
    free(b->name);
    free(b->base_url);
    for (size_t i = 0; i < b->nkeys; i++) {
        free(b->keys[i]);
    }
    free(b->keys);
    free(b->model_name);
}

static void model_cleanup(struct config_model *m)
{
    for (size_t i = 0; i < m->nbackends; i++) {
        backend_cleanup(&m->backends[i]);
    }
    free(m->backends);
    free(m->wseq);
    free(m->name);
    for (size_t i = 0; i < m->nfallbacks; i++) {
        free(m->fallbacks[i]);
    }
    free(m->fallbacks);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        model_cleanup(&cfg->models[i]);
    }
    free(cfg->models);
    free(cfg);
}

static bool parse_strategy(const cJSON *m, enum config_strategy *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(m, "Strategy");
    *out = CONFIG_FAILOVER;
    if (it == NULL || cJSON_IsNull(it)) {
        return true;
    }
    if (cJSON_IsNumber(it)) {
        /* the original's enum serialised as a number */
        double d = it->valuedouble;
        if (d == 0 || d == 1 || d == 2) {
            *out = (enum config_strategy)(int)d;
            return true;
        }
        return false;
    }
    if (!cJSON_IsString(it)) {
        return false;
    }
    static const struct {
        const char *name;
        enum config_strategy s;
    } names[] = {{"Failover", CONFIG_FAILOVER},
                 {"RoundRobin", CONFIG_ROUND_ROBIN},
                 {"Round Robin", CONFIG_ROUND_ROBIN},
                 {"Weighted", CONFIG_WEIGHTED}};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcasecmp(it->valuestring, names[i].name) == 0) {
            *out = names[i].s;
            return true;
        }
    }
    return false;
}

static int parse_backend(const cJSON *jb, struct config_backend *b, const char *model, size_t idx,
                         char *err, size_t errlen)
{
    bool bad = false;
    if (!cJSON_IsObject(jb)) {
        set_err(err, errlen, "model '%s': Backends[%zu] must be an object", model, idx);
        return -1;
    }
    const char *name = get_string(jb, "Name", &bad);
    if (bad || name == NULL || *name == '\0' || strlen(name) > 128 || !value_ok(name)) {
        set_err(err, errlen,
                "model '%s': Backends[%zu].Name must be a non-empty string of at most 128 "
                "characters without control characters",
                model, idx);
        return -1;
    }
    b->name = xstrdup(name);
    const char *url = get_string(jb, "BaseUrl", &bad);
    if (bad || url == NULL || !value_ok(url) || !url_ok(url)) {
        set_err(err, errlen, "model '%s': backend '%s': BaseUrl must be an http:// or https:// URL",
                model, name);
        return -1;
    }
    size_t ulen = strlen(url);
    while (ulen > 0 && url[ulen - 1] == '/') {
        ulen--;
    }
    b->base_url = xstrndup(url, ulen);

    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(jb, "ApiKeys");
    if (keys != NULL && !cJSON_IsNull(keys)) {
        if (!cJSON_IsArray(keys) || cJSON_GetArraySize(keys) > CONFIG_MAX_KEYS) {
            set_err(err, errlen,
                    "model '%s': backend '%s': ApiKeys must be an array of at most %d strings",
                    model, name, CONFIG_MAX_KEYS);
            return -1;
        }
        b->keys = xcalloc((size_t)cJSON_GetArraySize(keys) + 1, sizeof(char *));
        const cJSON *k;
        cJSON_ArrayForEach(k, keys)
        {
            if (!cJSON_IsString(k) || !value_ok(k->valuestring)) {
                set_err(err, errlen,
                        "model '%s': backend '%s': ApiKeys[%zu] must be a string without "
                        "control characters",
                        model, name, b->nkeys);
                return -1;
            }
            if (k->valuestring[0] != '\0') {
                b->keys[b->nkeys++] = xstrdup(k->valuestring);
            }
        }
    }
    const char *bm = get_string(jb, "BackendModelName", &bad);
    if (bad || (bm != NULL && !value_ok(bm))) {
        set_err(err, errlen, "model '%s': backend '%s': BackendModelName must be a string or null",
                model, name);
        return -1;
    }
    if (bm != NULL && *bm != '\0') {
        b->model_name = xstrdup(bm);
    }
    long v;
    if (!get_int(jb, "Weight", 1, CONFIG_MAX_WEIGHT, 1, &v)) {
        set_err(err, errlen, "model '%s': backend '%s': Weight must be an integer from 1 to %d",
                model, name, CONFIG_MAX_WEIGHT);
        return -1;
    }
    b->weight = (unsigned)v;
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(jb, "Enabled");
    if (en != NULL && !cJSON_IsNull(en) && !cJSON_IsBool(en)) {
        set_err(err, errlen, "model '%s': backend '%s': Enabled must be true or false", model,
                name);
        return -1;
    }
    b->enabled = en == NULL || cJSON_IsNull(en) || cJSON_IsTrue(en);
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(jb, "TimeoutSeconds");
    b->timeout_ms = CONFIG_DEFAULT_TIMEOUT_S * 1000;
    if (to != NULL && !cJSON_IsNull(to)) {
        if (!cJSON_IsNumber(to) || !(to->valuedouble > 0) ||
            to->valuedouble > CONFIG_MAX_TIMEOUT_S) {
            set_err(err, errlen,
                    "model '%s': backend '%s': TimeoutSeconds must be a number above 0 and at "
                    "most %d",
                    model, name, CONFIG_MAX_TIMEOUT_S);
            return -1;
        }
        double ms = to->valuedouble * 1000.0;
        b->timeout_ms = ms < 1.0 ? 1u : (unsigned)ms;
    }
    /* prices, USD per million tokens; the cached rate defaults to the input rate */
    static const char *const prices[] = {"InputCostPerMTok", "OutputCostPerMTok",
                                         "CachedInputCostPerMTok"};
    double *dst[] = {&b->input_cost, &b->output_cost, &b->cached_cost};
    for (size_t i = 0; i < ARRAY_LEN(prices); i++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(jb, prices[i]);
        *dst[i] = -1;
        if (p != NULL && !cJSON_IsNull(p)) {
            if (!cJSON_IsNumber(p) || !(p->valuedouble >= 0) || p->valuedouble > 1e6) {
                set_err(err, errlen,
                        "model '%s': backend '%s': %s must be a number of USD per million "
                        "tokens, 0 or more",
                        model, name, prices[i]);
                return -1;
            }
            *dst[i] = p->valuedouble;
        }
    }
    const cJSON *su = cJSON_GetObjectItemCaseSensitive(jb, "StreamUsage");
    if (su != NULL && !cJSON_IsNull(su) && !cJSON_IsBool(su)) {
        set_err(err, errlen, "model '%s': backend '%s': StreamUsage must be true or false", model,
                name);
        return -1;
    }
    b->stream_usage = su == NULL || cJSON_IsNull(su) || cJSON_IsTrue(su);
    const char *api = get_string(jb, "Api", &bad);
    if (bad ||
        (api != NULL && strcasecmp(api, "openai") != 0 && strcasecmp(api, "anthropic") != 0)) {
        set_err(err, errlen, "model '%s': backend '%s': Api must be \"openai\" or \"anthropic\"",
                model, name);
        return -1;
    }
    b->api =
        api != NULL && strcasecmp(api, "anthropic") == 0 ? CONFIG_API_ANTHROPIC : CONFIG_API_OPENAI;
    return 0;
}

uint64_t config_cost_micro(const struct config_backend *b, uint64_t prompt, uint64_t completion,
                           uint64_t cached)
{
    double in = b->input_cost > 0 ? b->input_cost : 0;
    double out = b->output_cost > 0 ? b->output_cost : 0;
    double cin = b->cached_cost >= 0 ? b->cached_cost : in;
    if (cached > prompt) {
        cached = prompt;
    }
    /* USD per million tokens x tokens = micro-USD */
    double micro = (double)(prompt - cached) * in + (double)cached * cin + (double)completion * out;
    return micro > 0 ? (uint64_t)(micro + 0.5) : 0;
}

static int parse_model(const cJSON *jm, struct config_model *m, char *err, size_t errlen)
{
    const char *name = jm->string;
    m->name = xstrdup(name);
    if (!config_model_name_ok(name)) {
        set_err(err, errlen,
                "model name '%.64s' is invalid: use 1 to %d of A-Z a-z 0-9 . _ : / @ - and "
                "never '..'",
                name, CONFIG_MAX_MODEL_NAME);
        return -1;
    }
    if (!cJSON_IsObject(jm)) {
        set_err(err, errlen, "model '%s' must be an object", name);
        return -1;
    }
    if (!parse_strategy(jm, &m->strategy)) {
        set_err(err, errlen, "model '%s': Strategy must be one of Failover, RoundRobin, Weighted",
                name);
        return -1;
    }
    const cJSON *jf = cJSON_GetObjectItemCaseSensitive(jm, "Fallbacks");
    if (jf != NULL && !cJSON_IsNull(jf)) {
        int nf = cJSON_IsArray(jf) ? cJSON_GetArraySize(jf) : -1;
        if (nf < 0 || nf > CONFIG_MAX_FALLBACKS) {
            set_err(err, errlen, "model '%s': Fallbacks must be an array of at most %d model names",
                    name, CONFIG_MAX_FALLBACKS);
            return -1;
        }
        m->fallbacks = xcalloc((size_t)nf + 1, sizeof(*m->fallbacks));
        const cJSON *f;
        cJSON_ArrayForEach(f, jf)
        {
            if (!cJSON_IsString(f) || !config_model_name_ok(f->valuestring) ||
                strcmp(f->valuestring, name) == 0) {
                set_err(err, errlen, "model '%s': Fallbacks[%zu] must be the name of another model",
                        name, m->nfallbacks);
                return -1;
            }
            for (size_t i = 0; i < m->nfallbacks; i++) {
                if (strcmp(m->fallbacks[i], f->valuestring) == 0) {
                    set_err(err, errlen, "model '%s': Fallbacks names '%s' twice", name,
                            f->valuestring);
                    return -1;
                }
            }
            m->fallbacks[m->nfallbacks++] = xstrdup(f->valuestring);
        }
    }
    const cJSON *jbs = cJSON_GetObjectItemCaseSensitive(jm, "Backends");
    int n = cJSON_IsArray(jbs) ? cJSON_GetArraySize(jbs) : 0;
    if (n < 1 || n > CONFIG_MAX_BACKENDS) {
        set_err(err, errlen, "model '%s': Backends must be an array of 1 to %d backends", name,
                CONFIG_MAX_BACKENDS);
        return -1;
    }
    m->backends = xcalloc((size_t)n, sizeof(*m->backends));
    const cJSON *jb;
    cJSON_ArrayForEach(jb, jbs)
    {
        size_t idx = m->nbackends++;
        if (parse_backend(jb, &m->backends[idx], name, idx, err, errlen) != 0) {
            return -1;
        }
        for (size_t j = 0; j < idx; j++) {
            if (strcmp(m->backends[j].name, m->backends[idx].name) == 0) {
                set_err(err, errlen, "model '%s': backend name '%s' is used twice", name,
                        m->backends[idx].name);
                return -1;
            }
        }
    }
    return 0;
}

static int cmp_model(const void *a, const void *b)
{
    return strcmp(((const struct config_model *)a)->name, ((const struct config_model *)b)->name);
}

/* Depth-first over the fallback graph: 0 unseen, 1 on the path, 2 done. */
static int fallback_walk(const struct config *cfg, size_t i, unsigned char *mark, unsigned depth,
                         char *err, size_t errlen)
{
    const struct config_model *m = &cfg->models[i];
    if (depth > CONFIG_MAX_CHAIN) {
        /* also bounds this recursion, whatever the number of models */
        set_err(err, errlen, "model '%s': a chain of Fallbacks longer than %d models", m->name,
                CONFIG_MAX_CHAIN);
        return -1;
    }
    mark[i] = 1;
    for (size_t k = 0; k < m->nfallbacks; k++) {
        const struct config_model *f = config_find(cfg, m->fallbacks[k]);
        if (f == NULL) {
            set_err(err, errlen, "model '%s': Fallbacks names '%s', which is not configured",
                    m->name, m->fallbacks[k]);
            return -1;
        }
        size_t j = (size_t)(f - cfg->models);
        if (mark[j] == 1) {
            set_err(err, errlen, "model '%s': Fallbacks lead back to '%s' (a cycle)", m->name,
                    f->name);
            return -1;
        }
        if (mark[j] == 0 && fallback_walk(cfg, j, mark, depth + 1, err, errlen) != 0) {
            return -1;
        }
    }
    mark[i] = 2;
    return 0;
}

static int check_fallbacks(const struct config *cfg, char *err, size_t errlen)
{
    unsigned char *mark = xcalloc(cfg->nmodels + 1, 1);
    int rc = 0;
    for (size_t i = 0; i < cfg->nmodels && rc == 0; i++) {
        if (mark[i] == 0) {
            rc = fallback_walk(cfg, i, mark, 0, err, errlen);
        }
    }
    free(mark);
    return rc;
}

struct config *config_parse(const char *json, size_t len, char *err, size_t errlen)
{
    struct config *cfg = NULL;
    cJSON *root = NULL;
    char *copy = xstrndup(json, len);
    if (strlen(copy) != len) {
        set_err(err, errlen, "the file contains a NUL byte");
        goto fail;
    }
    cJSON_Minify(copy); /* strips // and block comments */
    root = cJSON_Parse(copy);
    if (root == NULL || !cJSON_IsObject(root)) {
        set_err(err, errlen, "not a JSON object (syntax error or empty file)");
        goto fail;
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "Models");
    if (!cJSON_IsObject(models)) {
        set_err(err, errlen, "\"Models\" must be an object");
        goto fail;
    }
    cfg = xcalloc(1, sizeof(*cfg));
    cfg->models = xcalloc((size_t)cJSON_GetArraySize(models) + 1, sizeof(*cfg->models));
    const cJSON *jm;
    cJSON_ArrayForEach(jm, models)
    {
        struct config_model *m = &cfg->models[cfg->nmodels++];
        if (parse_model(jm, m, err, errlen) != 0) {
            goto fail;
        }
    }
    qsort(cfg->models, cfg->nmodels, sizeof(*cfg->models), cmp_model);
    for (size_t i = 1; i < cfg->nmodels; i++) {
        if (strcmp(cfg->models[i - 1].name, cfg->models[i].name) == 0) {
            set_err(err, errlen, "model '%s' is defined twice", cfg->models[i].name);
            goto fail;
        }
    }
    if (check_fallbacks(cfg, err, errlen) != 0) {
        goto fail;
    }
    cJSON_Delete(root);
    free(copy);
    return cfg;
fail:
    cJSON_Delete(root);
    free(copy);
    config_free(cfg);
    return NULL;
}

const struct config_model *config_find(const struct config *cfg, const char *name)
{
    if (cfg == NULL) {
        return NULL;
    }
    size_t lo = 0;
    size_t hi = cfg->nmodels;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, cfg->models[mid].name);
        if (c == 0) {
            return &cfg->models[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}
