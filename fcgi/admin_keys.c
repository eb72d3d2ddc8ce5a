/* admin_keys.c - the admin API for client keys: /admin/keys */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "conn.h"
#include "keys.h"
#include "log.h"
#include "reply.h"
#include "state.h"
#include "store.h"
#include "usage.h"
#include "utctime.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static cJSON *keys_array(cJSON *root)
{
    return cJSON_GetObjectItemCaseSensitive(root, "Keys");
}

static cJSON *find_id(cJSON *keys, const char *id)
{
    cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(k, "Id");
        if (cJSON_IsString(v) && strcmp(v->valuestring, id) == 0) {
            return k;
        }
    }
    return NULL;
}

static struct state *open_state(struct admin *a)
{
    char path[PATH_MAX], err[512];
    snprintf(path, sizeof(path), "%s/runtime.state", a->dir);
    return state_open(path, 0, err, sizeof(err));
}

/* Every key's spend since the start of each budget period, read from
 * usage.db once per listing (one query) when some key needs it. */
struct spend_cache {
    bool tried;
    int rc;
    struct usage_spend *all;
    size_t n;
};

static int cached_spend(struct spend_cache *sc, const char *dir, const char *id,
                        enum key_period period, uint64_t out[4])
{
    if (!sc->tried) {
        int64_t now = (int64_t)time(NULL);
        const int64_t since[3] = {keys_period_start(KEY_PERIOD_DAY, now),
                                  keys_period_start(KEY_PERIOD_MONTH, now),
                                  keys_period_start(KEY_PERIOD_TOTAL, now)};
        sc->tried = true;
        sc->rc = usage_spend_all(dir, since, 3, &sc->all, &sc->n);
    }
    memset(out, 0, 4 * sizeof(out[0]));
    if (sc->rc != 0) {
        return -1;
    }
    const struct usage_spend *e = usage_spend_find(sc->all, sc->n, id);
    if (e != NULL) {
        memcpy(out, e->spent[period], 4 * sizeof(out[0]));
    }
    return 0;
}

/* A stored key as the API shows it: no Hash; LastUsedAt and the Usage of
 * its current budget period from the shared counters, or from usage.db
 * while no request has loaded them (a new state, a period just changed);
 * sc (may be NULL: one query for this key) caches that read for a list. */
static cJSON *view(const cJSON *stored, struct state *st, const char *dir, struct spend_cache *sc)
{
    cJSON *v = cJSON_Duplicate(stored, true);
    cJSON_DeleteItemFromObjectCaseSensitive(v, "Hash");
    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(stored, "Id");
    const char *id = cJSON_IsString(idj) ? idj->valuestring : "";
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(stored, "BudgetPeriod");
    enum key_period period = KEY_PERIOD_MONTH;
    if (cJSON_IsString(pj)) {
        period = strcmp(pj->valuestring, "day") == 0     ? KEY_PERIOD_DAY
                 : strcmp(pj->valuestring, "total") == 0 ? KEY_PERIOD_TOTAL
                                                         : KEY_PERIOD_MONTH;
    }
    char pname[32];
    keys_period_name(period, (int64_t)time(NULL), pname, sizeof(pname));
    const uint64_t *use =
        st != NULL ? state_find(st, STATE_NS_CLIENT, id, KEYS_SLOT_USE, NULL) : NULL;
    const uint64_t *w = st != NULL ? state_find(st, STATE_NS_CLIENT, id, pname, NULL) : NULL;
    uint64_t last = use != NULL ? __atomic_load_n(&use[0], __ATOMIC_RELAXED) : 0;
    if (last > 0) {
        char t[32];
        utctime_format_rfc3339((int64_t)(last / 1000), t, sizeof(t));
        cJSON_AddItemToObject(v, "LastUsedAt", cJSON_CreateString(t));
    } else {
        cJSON_AddItemToObject(v, "LastUsedAt", cJSON_CreateNull());
    }
    cJSON *u = cJSON_CreateObject();
    uint64_t rq = 0, pt = 0, ct = 0, cost = 0;
    uint64_t spent[4];
    bool loaded = w != NULL && __atomic_load_n(&w[KEYS_W_LOADED], __ATOMIC_ACQUIRE) == 1;
    if (!loaded &&
        (sc != NULL ? cached_spend(sc, dir, id, period, spent)
                    : usage_spend_since(dir, id, keys_period_start(period, (int64_t)time(NULL)),
                                        spent)) == 0) {
        rq = spent[KEYS_W_REQUESTS];
        pt = spent[KEYS_W_PROMPT];
        ct = spent[KEYS_W_COMPLETION];
        cost = spent[KEYS_W_COST_MICRO];
    } else if (w != NULL) {
        rq = __atomic_load_n(&w[KEYS_W_REQUESTS], __ATOMIC_RELAXED);
        pt = __atomic_load_n(&w[KEYS_W_PROMPT], __ATOMIC_RELAXED);
        ct = __atomic_load_n(&w[KEYS_W_COMPLETION], __ATOMIC_RELAXED);
        cost = __atomic_load_n(&w[KEYS_W_COST_MICRO], __ATOMIC_RELAXED);
    }
    cJSON_AddNumberToObject(u, "Requests", (double)rq);
    cJSON_AddNumberToObject(u, "PromptTokens", (double)pt);
    cJSON_AddNumberToObject(u, "CompletionTokens", (double)ct);
    cJSON_AddNumberToObject(u, "CostUsd", (double)cost / 1e6);
    cJSON_AddItemToObject(v, "Usage", u);
    return v;
}

struct create_ctx {
    const cJSON *posted;
    char *secret;
    size_t n;
    cJSON *made; /* a copy of the stored key */
};

static int do_create(cJSON *root, void *ud, char *err, size_t errlen)
{
    struct create_ctx *cc = ud;
    cJSON *keys = keys_array(root);
    if (cJSON_GetArraySize(keys) >= KEYS_MAX) {
        snprintf(err, errlen, "there are %d keys already, the most there may be", KEYS_MAX);
        return STORE_REJECTED;
    }
    cJSON *k = cJSON_CreateObject();
    if (keys_make_secret(k, cc->secret, cc->n) != 0) {
        cJSON_Delete(k);
        snprintf(err, errlen, "no random bytes for a key");
        return STORE_IO;
    }
    if (keys_apply(k, cc->posted, true, keys, err, errlen) != 0) {
        cJSON_Delete(k);
        return STORE_REJECTED;
    }
    cc->made = cJSON_Duplicate(k, true);
    cJSON_AddItemToArray(keys, k);
    return STORE_OK;
}

enum store_status admin_key_create(struct admin *a, const cJSON *posted, char *secret, size_t n,
                                   cJSON **out, char *err, size_t errlen)
{
    struct create_ctx cc = {posted, secret, n, NULL};
    enum store_status st = store_update_kind(&store_keys, a->dir, do_create, &cc, err, errlen);
    *out = NULL;
    if (st == STORE_OK) {
        admin_bump_generation(a);
        *out = view(cc.made, NULL, a->dir, NULL);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(cc.made, "Name");
        LOG_INFO("admin: client key '%s' created", cJSON_IsString(name) ? name->valuestring : "?");
    }
    cJSON_Delete(cc.made);
    return st;
}

struct update_ctx {
    const char *id;
    const cJSON *posted;
    cJSON *result;
};

static int do_update(cJSON *root, void *ud, char *err, size_t errlen)
{
    struct update_ctx *uc = ud;
    cJSON *keys = keys_array(root);
    cJSON *k = find_id(keys, uc->id);
    if (k == NULL) {
        snprintf(err, errlen, "no client key has the id '%s'", uc->id);
        return STORE_NOT_FOUND;
    }
    if (keys_apply(k, uc->posted, false, keys, err, errlen) != 0) {
        return STORE_REJECTED;
    }
    uc->result = cJSON_Duplicate(k, true);
    return STORE_OK;
}

enum store_status admin_key_update(struct admin *a, const char *id, const cJSON *posted,
                                   cJSON **out, char *err, size_t errlen)
{
    struct update_ctx uc = {id, posted, NULL};
    enum store_status st = store_update_kind(&store_keys, a->dir, do_update, &uc, err, errlen);
    *out = NULL;
    if (st == STORE_OK) {
        admin_bump_generation(a);
        struct state *s = open_state(a);
        *out = view(uc.result, s, a->dir, NULL);
        state_close(s);
        LOG_INFO("admin: client key %s changed", id);
    }
    cJSON_Delete(uc.result);
    return st;
}

static int do_delete(cJSON *root, void *ud, char *err, size_t errlen)
{
    const char *id = ud;
    cJSON *keys = keys_array(root);
    cJSON *k = find_id(keys, id);
    if (k == NULL) {
        snprintf(err, errlen, "no client key has the id '%s'", id);
        return STORE_NOT_FOUND;
    }
    cJSON_Delete(cJSON_DetachItemViaPointer(keys, k));
    return STORE_OK;
}

enum store_status admin_key_delete(struct admin *a, const char *id, char *err, size_t errlen)
{
    enum store_status st =
        store_update_kind(&store_keys, a->dir, do_delete, (void *)id, err, errlen);
    if (st == STORE_OK) {
        admin_bump_generation(a);
        LOG_INFO("admin: client key %s deleted", id);
    }
    return st;
}

cJSON *admin_keys_list(struct admin *a, enum store_status *st, char *err, size_t errlen)
{
    cJSON *root = store_read_kind(&store_keys, a->dir, st, err, errlen);
    if (root == NULL) {
        return NULL;
    }
    struct state *s = open_state(a);
    cJSON *out = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(out, "Keys");
    struct spend_cache sc = {false, 0, NULL, 0};
    const cJSON *k;
    cJSON_ArrayForEach(k, keys_array(root))
    {
        cJSON_AddItemToArray(list, view(k, s, a->dir, &sc));
    }
    free(sc.all);
    state_close(s);
    cJSON_Delete(root);
    return out;
}

/* The posted body as a JSON object; NULL (answered 400) otherwise. */
static cJSON *posted_object(struct conn *c, const char *body, size_t len)
{
    cJSON *p = len > 0 && memchr(body, '\0', len) == NULL ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(p)) {
        cJSON_Delete(p);
        admin_error(c, 400, "invalid_request_error",
                    "the body must be a JSON object of key fields, such as {\"Name\": \"team-a\"}",
                    NULL);
        return NULL;
    }
    return p;
}

int admin_keys_route(struct admin *a, struct conn *c, const char *method, const char *rest,
                     const char *body, size_t len, bool *need_body)
{
    char err[1024];
    enum store_status st;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    if (*rest == '/') {
        rest++;
    }
    if (*rest == '\0') {
        if (get) {
            cJSON *list = admin_keys_list(a, &st, err, sizeof(err));
            if (list == NULL) {
                return admin_reply_store_error(c, st, err);
            }
            admin_reply_tree(c, 200, list);
            cJSON_Delete(list);
            return 200;
        }
        if (!post) {
            admin_error(c, 405, "invalid_request_error", "use GET or POST here",
                        "Allow: GET, POST\r\n");
            return 405;
        }
        if (body == NULL) {
            *need_body = true;
            return 0;
        }
        cJSON *p = posted_object(c, body, len);
        if (p == NULL) {
            return 400;
        }
        char secret[128];
        cJSON *made;
        st = admin_key_create(a, p, secret, sizeof(secret), &made, err, sizeof(err));
        cJSON_Delete(p);
        if (st != STORE_OK) {
            return admin_reply_store_error(c, st, err);
        }
        cJSON_AddItemToObject(made, "Key", cJSON_CreateString(secret)); /* this once */
        admin_reply_tree(c, 201, made);
        cJSON_Delete(made);
        return 201;
    }
    char id[64];
    if (!admin_url_decode(rest, id, sizeof(id)) || strchr(id, '/') != NULL) {
        snprintf(err, sizeof(err), "no client key has the id '%.40s'", rest);
        admin_error(c, 404, "not_found", err, NULL);
        return 404;
    }
    if (get) {
        cJSON *list = admin_keys_list(a, &st, err, sizeof(err));
        if (list == NULL) {
            return admin_reply_store_error(c, st, err);
        }
        const cJSON *k = find_id(cJSON_GetObjectItemCaseSensitive(list, "Keys"), id);
        int status = 200;
        if (k == NULL) {
            snprintf(err, sizeof(err), "no client key has the id '%s'", id);
            admin_error(c, 404, "not_found", err, NULL);
            status = 404;
        } else {
            admin_reply_tree(c, 200, k);
        }
        cJSON_Delete(list);
        return status;
    }
    if (strcmp(method, "DELETE") == 0) {
        st = admin_key_delete(a, id, err, sizeof(err));
        if (st != STORE_OK) {
            return admin_reply_store_error(c, st, err);
        }
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "Deleted", id);
        admin_reply_tree(c, 200, d);
        cJSON_Delete(d);
        return 200;
    }
    if (!post) {
        admin_error(c, 405, "invalid_request_error", "use GET, POST or DELETE",
                    "Allow: GET, POST, DELETE\r\n");
        return 405;
    }
    if (body == NULL) {
        *need_body = true;
        return 0;
    }
    cJSON *p = posted_object(c, body, len);
    if (p == NULL) {
        return 400;
    }
    cJSON *out;
    st = admin_key_update(a, id, p, &out, err, sizeof(err));
    cJSON_Delete(p);
    if (st != STORE_OK) {
        return admin_reply_store_error(c, st, err);
    }
    admin_reply_tree(c, 200, out);
    cJSON_Delete(out);
    return 200;
}
