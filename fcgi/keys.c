/* keys.c - client keys: the keys file, validation, lookup by hash (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "keys.h"
#include "config.h"
#include "sha256.h"
#include "utctime.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIMIT 1000000000L
#define MAX_MODELS 1000

static void set_err(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

const char *keys_period_word(enum key_period p)
{
    return p == KEY_PERIOD_DAY ? "day" : p == KEY_PERIOD_TOTAL ? "total" : "month";
}

static bool period_of(const char *s, enum key_period *p)
{
    if (strcmp(s, "day") == 0) {
        *p = KEY_PERIOD_DAY;
    } else if (strcmp(s, "month") == 0) {
        *p = KEY_PERIOD_MONTH;
    } else if (strcmp(s, "total") == 0) {
        *p = KEY_PERIOD_TOTAL;
    } else {
        return false;
    }
    return true;
}

int64_t keys_period_start(enum key_period p, int64_t now)
{
    switch (p) {
    case KEY_PERIOD_DAY:
        return utctime_day_start(now);
    case KEY_PERIOD_MONTH:
        return utctime_month_start(now);
    case KEY_PERIOD_TOTAL:
        break;
    }
    return 0;
}

int64_t keys_period_end(enum key_period p, int64_t now)
{
    switch (p) {
    case KEY_PERIOD_DAY:
        return utctime_day_start(now) + 86400;
    case KEY_PERIOD_MONTH:
        /* the first day of the month is at most 31 days after this one's */
        return utctime_month_start(utctime_month_start(now) + 32 * 86400);
    case KEY_PERIOD_TOTAL:
        break;
    }
    return 0;
}

void keys_period_name(enum key_period p, int64_t now, char *out, size_t n)
{
    char date[16];
    utctime_format_date((long)(utctime_day_start(now) / 86400), date, sizeof(date));
    if (p == KEY_PERIOD_DAY) {
        snprintf(out, n, "d%s", date);
    } else if (p == KEY_PERIOD_MONTH) {
        snprintf(out, n, "m%.7s", date);
    } else {
        snprintf(out, n, "total");
    }
}

/* 1..64 characters (UTF-8 counted as characters), none a control character. */
static bool name_ok(const char *s)
{
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return false;
        }
        chars += (*p & 0xc0) != 0x80;
    }
    return chars >= 1 && chars <= KEYS_NAME_MAX;
}

static bool whole(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
           floor(v->valuedouble) == v->valuedouble && v->valuedouble >= lo && v->valuedouble <= hi;
}

/* Checks one field's value; 0, or -1 with a message that names it. */
static int check_field(const char *name, const cJSON *v, char *err, size_t n)
{
    if (strcmp(name, "Name") == 0) {
        if (!cJSON_IsString(v) || !name_ok(v->valuestring)) {
            set_err(err, n, "Name must be a string of 1 to %d printable characters", KEYS_NAME_MAX);
            return -1;
        }
    } else if (strcmp(name, "Models") == 0) {
        if (cJSON_IsNull(v)) {
            return 0;
        }
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > MAX_MODELS) {
            set_err(err, n, "Models must be an array of model names (or null for every model)");
            return -1;
        }
        const cJSON *m;
        int i = 0;
        cJSON_ArrayForEach(m, v)
        {
            if (!cJSON_IsString(m) || !config_model_name_ok(m->valuestring)) {
                set_err(err, n, "Models[%d] is not a model name", i);
                return -1;
            }
            i++;
        }
    } else if (strcmp(name, "Rpm") == 0 || strcmp(name, "Tpm") == 0) {
        if (!cJSON_IsNull(v) && !whole(v, 0, MAX_LIMIT)) {
            set_err(err, n, "%s must be a whole number from 0 (no limit) to %ld", name, MAX_LIMIT);
            return -1;
        }
    } else if (strcmp(name, "BudgetUsd") == 0) {
        if (!cJSON_IsNull(v) && (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
                                 v->valuedouble < 0 || v->valuedouble > 1e12)) {
            set_err(err, n, "BudgetUsd must be a number of dollars, 0 or more, or null for none");
            return -1;
        }
    } else if (strcmp(name, "BudgetTokens") == 0) {
        if (!cJSON_IsNull(v) && !whole(v, 0, 1e15)) {
            set_err(err, n, "BudgetTokens must be a whole number, 0 or more, or null for none");
            return -1;
        }
    } else if (strcmp(name, "BudgetPeriod") == 0) {
        enum key_period p;
        if (!cJSON_IsString(v) || !period_of(v->valuestring, &p)) {
            set_err(err, n, "BudgetPeriod must be \"day\", \"month\" or \"total\"");
            return -1;
        }
    } else if (strcmp(name, "ExpiresAt") == 0) {
        int64_t t;
        if (!cJSON_IsNull(v) &&
            (!cJSON_IsString(v) || !utctime_parse_rfc3339(v->valuestring, &t))) {
            set_err(err, n,
                    "ExpiresAt must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\", or null");
            return -1;
        }
    } else if (strcmp(name, "Enabled") == 0) {
        if (!cJSON_IsBool(v)) {
            set_err(err, n, "Enabled must be true or false");
            return -1;
        }
    }
    return 0;
}

static const char *const writable[] = {"Name",         "Models",    "Rpm",
                                       "Tpm",          "BudgetUsd", "BudgetTokens",
                                       "BudgetPeriod", "ExpiresAt", "Enabled"};
static const char *const readonly[] = {"Id", "Prefix", "CreatedAt", "LastUsedAt", "Usage"};

static bool listed(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void put(cJSON *obj, const char *name, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, name) != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(obj, name, v);
    } else {
        cJSON_AddItemToObject(obj, name, v);
    }
}

int keys_apply(cJSON *stored, const cJSON *posted, bool create, const cJSON *all, char *err,
               size_t errlen)
{
    if (!cJSON_IsObject(posted)) {
        set_err(err, errlen, "the body must be a JSON object of key fields");
        return -1;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, posted)
    {
        if (f->string == NULL) {
            continue;
        }
        if (strcmp(f->string, "Key") == 0 || strcmp(f->string, "Hash") == 0) {
            set_err(err, errlen, "%s cannot be set: llmproxy makes the key", f->string);
            return -1;
        }
        for (const cJSON *g = posted->child; g != f; g = g->next) {
            if (g->string != NULL && strcmp(g->string, f->string) == 0) {
                set_err(err, errlen, "%.64s is given more than once", f->string);
                return -1;
            }
        }
        if (listed(f->string, readonly, ARRAY_LEN(readonly))) {
            continue;
        }
        if (!listed(f->string, writable, ARRAY_LEN(writable))) {
            set_err(err, errlen,
                    "unknown field '%.64s' (fields: Name, Models, Rpm, Tpm, BudgetUsd, "
                    "BudgetTokens, BudgetPeriod, ExpiresAt, Enabled)",
                    f->string);
            return -1;
        }
        if (check_field(f->string, f, err, errlen) != 0) {
            return -1;
        }
    }
    const char *name = str_of(posted, "Name");
    if (create && name == NULL) {
        set_err(err, errlen, "Name is required");
        return -1;
    }
    if (name != NULL) {
        const cJSON *k;
        cJSON_ArrayForEach(k, all)
        {
            const char *other = str_of(k, "Name");
            if (k != stored && other != NULL && strcmp(other, name) == 0) {
                set_err(err, errlen, "a key named '%s' exists already: names are unique", name);
                return -1;
            }
        }
    }
    if (create) {
        char now[32];
        utctime_format_rfc3339((int64_t)time(NULL), now, sizeof(now));
        put(stored, "Models", cJSON_CreateArray());
        put(stored, "Rpm", cJSON_CreateNumber(0));
        put(stored, "Tpm", cJSON_CreateNumber(0));
        put(stored, "BudgetUsd", cJSON_CreateNull());
        put(stored, "BudgetTokens", cJSON_CreateNull());
        put(stored, "BudgetPeriod", cJSON_CreateString("month"));
        put(stored, "ExpiresAt", cJSON_CreateNull());
        put(stored, "Enabled", cJSON_CreateTrue());
        put(stored, "CreatedAt", cJSON_CreateString(now));
    }
    cJSON_ArrayForEach(f, posted)
    {
        if (f->string != NULL && listed(f->string, writable, ARRAY_LEN(writable))) {
            cJSON *v = cJSON_IsNull(f) && strcmp(f->string, "Models") == 0 ? cJSON_CreateArray()
                       : (strcmp(f->string, "Rpm") == 0 || strcmp(f->string, "Tpm") == 0) &&
                               cJSON_IsNull(f)
                           ? cJSON_CreateNumber(0)
                           : cJSON_Duplicate(f, true);
            put(stored, f->string, v);
        }
    }
    return 0;
}

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* n random base62 characters (rejection sampling: every one equally likely). */
static int random62(char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        unsigned char raw[64];
        if (random_bytes(raw, sizeof(raw)) != 0) {
            return -1;
        }
        for (size_t i = 0; i < sizeof(raw) && got < n; i++) {
            if (raw[i] < 248) { /* 248 = 4 * 62 */
                out[got++] = base62[raw[i] % 62];
            }
        }
    }
    out[n] = '\0';
    return 0;
}

int keys_make_secret(cJSON *stored, char *secret, size_t n)
{
    char rnd[KEYS_SECRET_CHARS + 1], id[16];
    if (n < sizeof(KEYS_PREFIX) + KEYS_SECRET_CHARS || random62(rnd, KEYS_SECRET_CHARS) != 0 ||
        random62(id, 12) != 0) {
        return -1;
    }
    snprintf(secret, n, "%s%s", KEYS_PREFIX, rnd);
    char hash[65], prefix[13], ident[20];
    sha256_hex(secret, strlen(secret), hash);
    snprintf(prefix, sizeof(prefix), "%.12s", secret);
    snprintf(ident, sizeof(ident), "key_%s", id);
    put(stored, "Id", cJSON_CreateString(ident));
    put(stored, "Hash", cJSON_CreateString(hash));
    put(stored, "Prefix", cJSON_CreateString(prefix));
    return 0;
}

static void key_cleanup(struct client_key *k)
{
    for (size_t i = 0; i < k->nmodels; i++) {
        free(k->models[i]);
    }
    free(k->models);
}

void keys_free(struct keyring *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        key_cleanup(&r->keys[i]);
    }
    free(r->keys);
    free(r->by_hash);
    free(r);
}

static bool hex64(const char *s)
{
    if (s == NULL || strlen(s) != 64) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (hex_digit(*p) < 0 || (*p >= 'A' && *p <= 'F')) {
            return false;
        }
    }
    return true;
}

/* One stored entry into k; 0 or -1 with a message. */
static int parse_key(const cJSON *o, struct client_key *k, int i, char *err, size_t errlen)
{
    const char *id = str_of(o, "Id");
    const char *hash = str_of(o, "Hash");
    const char *prefix = str_of(o, "Prefix");
    if (!cJSON_IsObject(o) || id == NULL || strlen(id) >= sizeof(k->id) || !hex64(hash) ||
        prefix == NULL || strlen(prefix) >= sizeof(k->prefix)) {
        set_err(err, errlen, "Keys[%d] lacks a valid Id, Hash or Prefix", i);
        return -1;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, o)
    {
        if (f->string != NULL && check_field(f->string, f, err, errlen) != 0) {
            char inner[300];
            snprintf(inner, sizeof(inner), "%s", err);
            set_err(err, errlen, "Keys[%d]: %s", i, inner);
            return -1;
        }
    }
    const char *name = str_of(o, "Name");
    if (name == NULL) {
        set_err(err, errlen, "Keys[%d] has no Name", i);
        return -1;
    }
    snprintf(k->id, sizeof(k->id), "%s", id);
    snprintf(k->name, sizeof(k->name), "%s", name);
    snprintf(k->hash, sizeof(k->hash), "%s", hash);
    snprintf(k->prefix, sizeof(k->prefix), "%s", prefix);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(o, "Models");
    int nm = cJSON_IsArray(models) ? cJSON_GetArraySize(models) : 0;
    k->models = xcalloc((size_t)nm + 1, sizeof(char *));
    const cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        k->models[k->nmodels++] = xstrdup(m->valuestring);
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "Rpm");
    k->rpm = cJSON_IsNumber(v) ? (uint32_t)v->valuedouble : 0;
    v = cJSON_GetObjectItemCaseSensitive(o, "Tpm");
    k->tpm = cJSON_IsNumber(v) ? (uint32_t)v->valuedouble : 0;
    v = cJSON_GetObjectItemCaseSensitive(o, "BudgetUsd");
    k->budget_usd = cJSON_IsNumber(v) ? v->valuedouble : -1;
    v = cJSON_GetObjectItemCaseSensitive(o, "BudgetTokens");
    k->budget_tokens = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
    const char *period = str_of(o, "BudgetPeriod");
    k->period = KEY_PERIOD_MONTH;
    if (period != NULL) {
        period_of(period, &k->period);
    }
    const char *exp = str_of(o, "ExpiresAt");
    k->expires_at = 0;
    if (exp != NULL) {
        utctime_parse_rfc3339(exp, &k->expires_at);
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "Enabled");
    k->enabled = !cJSON_IsFalse(v);
    const char *created = str_of(o, "CreatedAt");
    k->created_at = 0;
    if (created != NULL) {
        utctime_parse_rfc3339(created, &k->created_at);
    }
    return 0;
}

static int by_hash(const void *a, const void *b, void *ud)
{
    const struct keyring *r = ud;
    return strcmp(r->keys[*(const size_t *)a].hash, r->keys[*(const size_t *)b].hash);
}

struct keyring *keys_parse(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "Keys");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(keys)) {
        set_err(err, errlen, "not a keys file (an object with a \"Keys\" array)");
        cJSON_Delete(root);
        return NULL;
    }
    int n = cJSON_GetArraySize(keys);
    if (n > KEYS_MAX) {
        set_err(err, errlen, "more than %d keys", KEYS_MAX);
        cJSON_Delete(root);
        return NULL;
    }
    struct keyring *r = xcalloc(1, sizeof(*r));
    r->keys = xcalloc((size_t)n + 1, sizeof(*r->keys));
    r->by_hash = xcalloc((size_t)n + 1, sizeof(size_t));
    const cJSON *o;
    int i = 0;
    cJSON_ArrayForEach(o, keys)
    {
        if (parse_key(o, &r->keys[i], i, err, errlen) != 0) {
            r->n = (size_t)i + 1;
            keys_free(r);
            cJSON_Delete(root);
            return NULL;
        }
        r->by_hash[i] = (size_t)i;
        i++;
    }
    r->n = (size_t)n;
    cJSON_Delete(root);
    qsort_r(r->by_hash, r->n, sizeof(size_t), by_hash, r);
    for (size_t j = 1; j < r->n; j++) {
        if (strcmp(r->keys[r->by_hash[j]].hash, r->keys[r->by_hash[j - 1]].hash) == 0) {
            set_err(err, errlen, "two keys have the same Hash");
            keys_free(r);
            return NULL;
        }
    }
    return r;
}

const struct client_key *keys_find(const struct keyring *r, const char *secret)
{
    if (r == NULL || r->n == 0 || secret == NULL) {
        return NULL;
    }
    char hash[65];
    sha256_hex(secret, strlen(secret), hash);
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct client_key *k = &r->keys[r->by_hash[mid]];
        int c = strcmp(hash, k->hash);
        if (c == 0) {
            return k;
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

bool keys_model_ok(const struct client_key *k, const char *model)
{
    if (k->nmodels == 0) {
        return true;
    }
    for (size_t i = 0; i < k->nmodels; i++) {
        if (strcmp(k->models[i], model) == 0) {
            return true;
        }
    }
    return false;
}
