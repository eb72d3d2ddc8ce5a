/* admin.h - the admin API: authenticated reads and changes of the routing file */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ADMIN_H
#define LLMPROXY_ADMIN_H

#include "auth.h"
#include "store.h"

#include <cjson/cJSON.h>

#include <stdbool.h>
#include <stddef.h>

struct conn;
struct state;

struct admin {
    const char *dir;            /* the state dir */
    char token[AUTH_TOKEN_MAX]; /* the admin token */
    char fatal[8192];           /* why nothing can be served (a CGI run), "" when fine */
};

/* Answers one request and returns its status:
 *   GET    /admin                 the admin page (no token needed: it asks for one)
 *   GET    /admin/config          {"Models":{...}}, keys masked
 *   GET    /admin/config/{model}  one model, keys masked
 *   POST   /admin/config/{model}  add (201) or replace (200) it
 *   DELETE /admin/config/{model}  remove it (404 if absent)
 * Called first with body NULL: a request that needs its body sets
 * *need_body and returns 0 (nothing answered); call again with the body.
 * Everything else (unknown path, wrong token, cross-site) is answered at
 * once, before the body. */
int admin_route(struct admin *a, struct conn *c, const char *method, const char *path,
                const char *body, size_t len, bool *need_body);

/* GET /metrics, after its token was checked (admin_metrics.c). */
int admin_metrics(struct admin *a, struct conn *c);
/* GET /admin/health: circuits and key cooldowns from the shared state. */
int admin_health(struct admin *a, struct conn *c);

/* Shared by admin.c, admin_keys.c and admin_usage.c. */
void admin_error(struct conn *c, int status, const char *type, const char *msg, const char *extra);
void admin_reply_tree(struct conn *c, int status, const cJSON *tree);
/* Answers a failed store call; returns the status sent. */
int admin_reply_store_error(struct conn *c, enum store_status st, const char *err);
/* Percent-decodes a path part; false on a bad escape, a NUL or no room. */
bool admin_url_decode(const char *in, char *out, size_t n);
/* Tells the responders that a file changed. */
void admin_bump_generation(struct admin *a);

/* /admin/keys[/{id}] (rest: what follows /admin/keys), as admin_route. */
int admin_keys_route(struct admin *a, struct conn *c, const char *method, const char *rest,
                     const char *body, size_t len, bool *need_body);
/* The keys API's work, also for the command line. create: on success the
 * new key's secret is in secret (n >= 64) and *out the key as the API shows
 * it (the caller frees it). */
enum store_status admin_key_create(struct admin *a, const cJSON *posted, char *secret, size_t n,
                                   cJSON **out, char *err, size_t errlen);
enum store_status admin_key_update(struct admin *a, const char *id, const cJSON *posted,
                                   cJSON **out, char *err, size_t errlen);
enum store_status admin_key_delete(struct admin *a, const char *id, char *err, size_t errlen);
/* {"Keys": [...]} as the API shows them; NULL with err on failure. */
cJSON *admin_keys_list(struct admin *a, enum store_status *st, char *err, size_t errlen);

/* GET /admin/usage (usage true) and /admin/requests. */
int admin_usage_route(struct admin *a, struct conn *c, const char *method, bool usage,
                      const char *query);

/* The page, embedded at build time from htdocs/admin.html, and its policy:
 * it loads nothing from elsewhere and may not be framed. */
extern const char admin_page[];
extern const size_t admin_page_len;
#define ADMIN_PAGE_CSP                                                                             \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "                  \
    "connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; "       \
    "base-uri 'none'"

/* Adds or replaces a model from its JSON text (masked keys resolved against
 * the stored ones). STORE_OK sets *created; otherwise err says why. */
enum store_status admin_put(struct admin *a, const char *name, const char *body, size_t len,
                            int *created, char *err, size_t errlen);
/* Removes a model; STORE_NOT_FOUND when absent. */
enum store_status admin_delete(struct admin *a, const char *name, char *err, size_t errlen);

#endif
