/* admin.c - the admin API: authenticated reads and changes of the routing file */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "auth.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "reply.h"
#include "state.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define ADMIN_PREFIX "/admin/config"

/* Admin errors use the same shape as the API's, without param and code. */
void admin_error(struct conn *c, int status, const char *type, const char *msg, const char *extra)
{
    reply_error(c, status, msg, type, NULL, NULL, extra);
}

void admin_reply_tree(struct conn *c, int status, const cJSON *tree)
{
    char *text = cJSON_Print(tree);
    if (text == NULL) {
        admin_error(c, 500, "server_error", "out of memory", NULL);
        return;
    }
    reply_json(c, status, text, strlen(text), NULL);
    free(text);
}

/* Replaces every ApiKeys entry under a model object by its masked form. */
static void mask_model(cJSON *model)
{
    cJSON *backends = cJSON_GetObjectItemCaseSensitive(model, "Backends");
    cJSON *b;
    cJSON_ArrayForEach(b, backends)
    {
        cJSON *keys = cJSON_GetObjectItemCaseSensitive(b, "ApiKeys");
        int n = cJSON_IsArray(keys) ? cJSON_GetArraySize(keys) : 0;
        for (int i = 0; i < n; i++) {
            cJSON *k = cJSON_GetArrayItem(keys, i);
            char masked[16];
            config_mask_key(cJSON_IsString(k) ? k->valuestring : "", masked, sizeof(masked));
            cJSON_ReplaceItemInArray(keys, i, cJSON_CreateString(masked));
        }
    }
}

static void mask_all(cJSON *root)
{
    cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "Models");
    cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        mask_model(m);
    }
}

/* Percent-decodes a path part; false on a bad escape or a NUL. */
bool admin_url_decode(const char *in, char *out, size_t n)
{
    size_t k = 0;
    for (const char *p = in; *p; p++) {
        char ch = *p;
        if (ch == '%') {
            int hi = hex_digit(p[1]);
            int lo = hi >= 0 ? hex_digit(p[2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0)) {
                return false;
            }
            ch = (char)(hi * 16 + lo);
            p += 2;
        }
        if (k + 1 >= n) {
            return false;
        }
        out[k++] = ch;
    }
    out[k] = '\0';
    return true;
}

/* Any string (keys included) holding CR, LF or another control character. */
static const char *bad_string(const cJSON *it)
{
    for (; it != NULL; it = it->next) {
        const char *s = cJSON_IsString(it) ? it->valuestring : NULL;
        const char *k = it->string;
        for (int pass = 0; pass < 2; pass++) {
            const char *v = pass == 0 ? s : k;
            for (const unsigned char *p = (const unsigned char *)v; p != NULL && *p; p++) {
                if (*p < 0x20 || *p == 0x7f) {
                    return k != NULL ? k : "a value";
                }
            }
        }
        const char *inner = bad_string(it->child);
        if (inner != NULL) {
            return inner;
        }
    }
    return NULL;
}

struct post_ctx {
    const char *name;
    cJSON *model; /* the posted object; handed to the tree on success */
    int created;
};

/* Masked keys sent back mean "keep the stored key": put the stored ones back. */
static int unmask_keys(cJSON *model, const cJSON *stored, char *err, size_t errlen)
{
    cJSON *backends = cJSON_GetObjectItemCaseSensitive(model, "Backends");
    const cJSON *old_backends = cJSON_GetObjectItemCaseSensitive(stored, "Backends");
    cJSON *b;
    int bi = 0;
    cJSON_ArrayForEach(b, backends)
    {
        cJSON *keys = cJSON_GetObjectItemCaseSensitive(b, "ApiKeys");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "Name");
        const cJSON *old = NULL;
        const cJSON *ob;
        cJSON_ArrayForEach(ob, old_backends)
        {
            const cJSON *on = cJSON_GetObjectItemCaseSensitive(ob, "Name");
            if (cJSON_IsString(name) && cJSON_IsString(on) &&
                strcmp(name->valuestring, on->valuestring) == 0) {
                old = ob;
            }
        }
        const cJSON *old_keys = cJSON_GetObjectItemCaseSensitive(old, "ApiKeys");
        int nold = cJSON_IsArray(old_keys) ? cJSON_GetArraySize(old_keys) : 0;
        bool used[CONFIG_MAX_KEYS] = {false};
        int n = cJSON_IsArray(keys) ? cJSON_GetArraySize(keys) : 0;
        for (int i = 0; i < n; i++) {
            cJSON *k = cJSON_GetArrayItem(keys, i);
            if (!cJSON_IsString(k) || !config_is_masked(k->valuestring)) {
                continue;
            }
            int found = -1;
            for (int j = 0; j < nold && j < CONFIG_MAX_KEYS && found < 0; j++) {
                const cJSON *ok = cJSON_GetArrayItem(old_keys, j);
                char masked[16];
                if (!used[j] && cJSON_IsString(ok)) {
                    config_mask_key(ok->valuestring, masked, sizeof(masked));
                    if (strcmp(masked, k->valuestring) == 0) {
                        found = j;
                    }
                }
            }
            if (found < 0) {
                snprintf(err, errlen,
                         "Backends[%d].ApiKeys[%d] is a masked key that matches no stored key of "
                         "this backend: send the full key",
                         bi, i);
                return -1;
            }
            used[found] = true;
            const cJSON *real = cJSON_GetArrayItem(old_keys, found);
            cJSON_ReplaceItemInArray(keys, i, cJSON_CreateString(real->valuestring));
        }
        bi++;
    }
    return 0;
}

static int do_post(cJSON *root, void *ud, char *err, size_t errlen)
{
    struct post_ctx *pc = ud;
    cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "Models");
    const cJSON *stored = cJSON_GetObjectItemCaseSensitive(models, pc->name);
    if (unmask_keys(pc->model, stored, err, errlen) != 0) {
        return STORE_REJECTED;
    }
    pc->created = stored == NULL;
    cJSON *item = pc->model;
    if (stored != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(models, pc->name, item);
    } else {
        cJSON_AddItemToObject(models, pc->name, item);
    }
    pc->model = NULL; /* the tree owns it now */
    return STORE_OK;
}

static int do_delete(cJSON *root, void *ud, char *err, size_t errlen)
{
    const char *name = ud;
    cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "Models");
    cJSON *gone = cJSON_DetachItemFromObjectCaseSensitive(models, name);
    if (gone == NULL) {
        snprintf(err, errlen, "model '%s' is not configured", name);
        return STORE_NOT_FOUND;
    }
    cJSON_Delete(gone);
    return STORE_OK;
}

/* Answers a failed store call; returns the status sent. */
int admin_reply_store_error(struct conn *c, enum store_status st, const char *err)
{
    switch (st) {
    case STORE_REJECTED:
        admin_error(c, 400, "invalid_request_error", err, NULL);
        return 400;
    case STORE_NOT_FOUND:
        admin_error(c, 404, "not_found", err, NULL);
        return 404;
    case STORE_CORRUPT:
        admin_error(c, 409, "conflict", err, NULL);
        return 409;
    case STORE_OK:
    case STORE_IO:
        break;
    }
    LOG_ERROR("store failed: %s", err);
    admin_error(c, 500, "server_error", err, NULL);
    return 500;
}

static int get_config(struct admin *a, struct conn *c, const char *name, int status)
{
    char err[1024];
    enum store_status st;
    cJSON *root = store_read(a->dir, &st, err, sizeof(err));
    if (root == NULL) {
        return admin_reply_store_error(c, st, err);
    }
    mask_all(root);
    if (name == NULL) {
        admin_reply_tree(c, status, root);
    } else {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(root, "Models"), name);
        if (m == NULL) {
            snprintf(err, sizeof(err), "model '%s' is not configured", name);
            admin_error(c, 404, "not_found", err, NULL);
            status = 404;
        } else {
            admin_reply_tree(c, status, m);
        }
    }
    cJSON_Delete(root);
    return status;
}

/* Tells the responders that the file changed (they also watch the file, so
 * without a state file this only makes them notice sooner). The state is
 * opened for this alone: a long-lived admin process must not hold it, or a
 * responder could never make it bigger. */
void admin_bump_generation(struct admin *a)
{
    char path[4200], err[512];
    snprintf(path, sizeof(path), "%s/runtime.state", a->dir);
    struct state *st = state_open(path, 0, err, sizeof(err));
    if (st == NULL) {
        LOG_WARN("runtime state unavailable (responders notice the change by the file): %s", err);
        return;
    }
    state_next(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL);
    state_close(st);
}

enum store_status admin_put(struct admin *a, const char *name, const char *body, size_t len,
                            int *created, char *err, size_t errlen)
{
    struct post_ctx pc = {.name = name};
    enum store_status st = STORE_REJECTED;
    if (!config_model_name_ok(name)) {
        snprintf(err, errlen, "model names are 1 to 256 of A-Z a-z 0-9 . _ : / @ - and never '..'");
        return STORE_REJECTED;
    }
    if (len == 0 || memchr(body, '\0', len) != NULL || memmem(body, len, "\\u0000", 6) != NULL ||
        memmem(body, len, "\\U0000", 6) != NULL) {
        snprintf(err, errlen, len == 0 ? "the body is empty" : "the body may not contain NUL");
        return STORE_REJECTED;
    }
    pc.model = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(pc.model)) {
        snprintf(err, errlen, "the body must be a JSON object (a model's Strategy and Backends)");
        goto out;
    }
    const char *bad = bad_string(pc.model->child);
    if (bad != NULL) {
        snprintf(err, errlen, "%s: values may not contain CR, LF or control characters", bad);
        goto out;
    }
    st = store_update(a->dir, do_post, &pc, err, errlen);
    if (st == STORE_OK) {
        admin_bump_generation(a);
        LOG_INFO("admin: model '%s' %s", name, pc.created ? "added" : "replaced");
        *created = pc.created;
    }
out:
    cJSON_Delete(pc.model);
    return st;
}

enum store_status admin_delete(struct admin *a, const char *name, char *err, size_t errlen)
{
    enum store_status st = store_update(a->dir, do_delete, (void *)name, err, errlen);
    if (st == STORE_OK) {
        admin_bump_generation(a);
        LOG_INFO("admin: model '%s' deleted", name);
    }
    return st;
}

static int post_model(struct admin *a, struct conn *c, const char *name, const char *body,
                      size_t len)
{
    char err[1024];
    int created = 0;
    enum store_status st = admin_put(a, name, body, len, &created, err, sizeof(err));
    return st == STORE_OK ? get_config(a, c, name, created ? 201 : 200)
                          : admin_reply_store_error(c, st, err);
}

static int delete_model(struct admin *a, struct conn *c, const char *name)
{
    char err[1024];
    enum store_status st = admin_delete(a, name, err, sizeof(err));
    if (st != STORE_OK) {
        return admin_reply_store_error(c, st, err);
    }
    struct buf b;
    buf_init(&b, 4096);
    buf_append_str(&b, "{\"Deleted\":\"");
    buf_append_json_str(&b, name);
    buf_append_str(&b, "\"}");
    reply_json(c, 200, b.data, b.len, NULL);
    buf_cleanup(&b);
    return 200;
}

static int page(struct conn *c)
{
    static const char head[] = "Status: 200\r\nContent-Type: text/html; charset=utf-8\r\n"
                               "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                               "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
                               "Content-Security-Policy: " ADMIN_PAGE_CSP "\r\n";
    char len[64];
    snprintf(len, sizeof(len), "Content-Length: %zu\r\n\r\n", admin_page_len);
    conn_write(c, head, sizeof(head) - 1, false);
    conn_write(c, len, strlen(len), false);
    conn_write(c, admin_page, admin_page_len, true);
    return 200;
}

static const char *authorization(struct conn *c)
{
    const char *authz = conn_param(c, "HTTP_AUTHORIZATION");
    if (authz == NULL) {
        /* Apache CGI behind an .htaccess rewrite ([E=HTTP_AUTHORIZATION:...]
         * renamed by the internal redirect) */
        authz = conn_param(c, "REDIRECT_HTTP_AUTHORIZATION");
    }
    return authz;
}

/* GET /metrics: the admin token, or LLMPROXY_METRICS_TOKEN when set (a
 * scraper then needs no admin rights). */
static int metrics_route(struct admin *a, struct conn *c, const char *method)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        admin_error(c, 405, "invalid_request_error", "use GET here", "Allow: GET, HEAD\r\n");
        return 405;
    }
    const char *authz = authorization(c);
    const char *mt = getenv("LLMPROXY_METRICS_TOKEN");
    if (!auth_bearer_ok(authz, a->token) &&
        (mt == NULL || *mt == '\0' || !auth_bearer_ok(authz, mt))) {
        admin_error(c, 401, "authentication_error",
                    "missing or wrong token: send Authorization: Bearer <admin token, or "
                    "LLMPROXY_METRICS_TOKEN when set>",
                    "WWW-Authenticate: Bearer realm=\"llmproxy-metrics\"\r\n");
        return 401;
    }
    return admin_metrics(a, c);
}

int admin_route(struct admin *a, struct conn *c, const char *method, const char *path,
                const char *body, size_t len, bool *need_body)
{
    *need_body = false;
    if (strcmp(path, "/admin") == 0 || strcmp(path, "/admin/") == 0 ||
        strcmp(path, "/admin.html") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            admin_error(c, 405, "invalid_request_error", "use GET here", "Allow: GET, HEAD\r\n");
            return 405;
        }
        return page(c);
    }
    if (strcmp(path, "/metrics") == 0) {
        return metrics_route(a, c, method);
    }
    static const char *const areas[] = {ADMIN_PREFIX, "/admin/keys", "/admin/usage",
                                        "/admin/requests", "/admin/health"};
    size_t area = ARRAY_LEN(areas);
    for (size_t i = 0; i < ARRAY_LEN(areas); i++) {
        size_t n = strlen(areas[i]);
        if (strncmp(path, areas[i], n) == 0 && (path[n] == '\0' || path[n] == '/')) {
            area = i;
        }
    }
    if (area == ARRAY_LEN(areas)) {
        admin_error(c, 404, "not_found", "unknown admin URL", NULL);
        return 404;
    }
    const char *authz = authorization(c);
    if (!auth_bearer_ok(authz, a->token)) {
        admin_error(c, 401, "authentication_error",
                    "missing or wrong admin token: send Authorization: Bearer <token>. The token "
                    "is in the file admin.token in the state directory (LLMPROXY_STATE_DIR), "
                    "unless LLMPROXY_ADMIN_TOKEN sets it",
                    "WWW-Authenticate: Bearer realm=\"llmproxy-admin\"\r\n");
        return 401;
    }
    bool changes = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
    if (changes && auth_cross_site(conn_param(c, "HTTP_ORIGIN"), conn_param(c, "HTTP_HOST"),
                                   conn_param(c, "HTTP_SEC_FETCH_SITE"))) {
        admin_error(c, 403, "permission_error", "cross-site requests may not change anything",
                    NULL);
        return 403;
    }
    const char *rest = path + strlen(areas[area]);
    if (area == 4) {
        if (changes || *rest != '\0') {
            admin_error(c, changes ? 405 : 404, changes ? "invalid_request_error" : "not_found",
                        changes ? "use GET here" : "unknown admin URL",
                        changes ? "Allow: GET\r\n" : NULL);
            return changes ? 405 : 404;
        }
        return admin_health(a, c);
    }
    if (area == 1) {
        return admin_keys_route(a, c, method, rest, body, len, need_body);
    }
    if (area == 2 || area == 3) {
        return admin_usage_route(a, c, method, area == 2, conn_param(c, "QUERY_STRING"));
    }
    if (*rest == '/') {
        rest++;
    }
    if (*rest == '\0') {
        if (changes) {
            admin_error(c, 405, "invalid_request_error", "use GET here", "Allow: GET\r\n");
            return 405;
        }
        return get_config(a, c, NULL, 200);
    }
    char name[CONFIG_MAX_MODEL_NAME + 1];
    if (!admin_url_decode(rest, name, sizeof(name)) || !config_model_name_ok(name)) {
        admin_error(c, 400, "invalid_request_error",
                    "model names are 1 to 256 of A-Z a-z 0-9 . _ : / @ - and never '..'", NULL);
        return 400;
    }
    if (!changes) {
        return get_config(a, c, name, 200);
    }
    if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        if (body == NULL) {
            *need_body = true;
            return 0;
        }
        return post_model(a, c, name, body, len);
    }
    if (strcmp(method, "DELETE") == 0) {
        return delete_model(a, c, name);
    }
    admin_error(c, 405, "invalid_request_error", "use GET, POST or DELETE",
                "Allow: GET, POST, DELETE\r\n");
    return 405;
}
