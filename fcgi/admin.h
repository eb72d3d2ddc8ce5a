/* admin.h - the admin API: authenticated reads and changes of the routing file */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ADMIN_H
#define LLMPROXY_ADMIN_H

#include "auth.h"
#include "store.h"

#include <stddef.h>

struct fcgi_client;
struct state;

struct admin {
    const char *dir;            /* the state dir */
    char token[AUTH_TOKEN_MAX]; /* the admin token */
    struct state *st;           /* for the change counter; may be NULL */
};

/* Serves one request under /admin/config and releases c:
 *   GET    /admin/config          {"Models":{...}}, keys masked
 *   GET    /admin/config/{model}  one model, keys masked
 *   POST   /admin/config/{model}  add (201) or replace (200) it
 *   DELETE /admin/config/{model}  remove it (404 if absent) */
void admin_handle(struct admin *a, struct fcgi_client *c);

/* Adds or replaces a model from its JSON text (masked keys resolved against
 * the stored ones). STORE_OK sets *created; otherwise err says why. */
enum store_status admin_put(struct admin *a, const char *name, const char *body, size_t len,
                            int *created, char *err, size_t errlen);
/* Removes a model; STORE_NOT_FOUND when absent. */
enum store_status admin_delete(struct admin *a, const char *name, char *err, size_t errlen);

#endif
