/* answer.c - what the responder answers itself: /health, /v1/models */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "answer.h"
#include "buf.h"
#include "conn.h"
#include "endpoint.h"
#include "keys.h"
#include "reply.h"
#include "route.h"
#include "snapshot.h"

#include <stdio.h>
#include <string.h>

/* GET /v1/models (one == NULL) or /v1/models/{one}. */
static int models(struct conn *c, const char *one, const struct client_key *key)
{
    struct snapshot *s = snapshot_acquire();
    struct buf b;
    buf_init(&b, (size_t)64 << 20);
    const struct config *cfg = s->cfg;
    int found = 0;
    if (one == NULL) {
        buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    }
    for (size_t i = 0; cfg != NULL && i < cfg->nmodels; i++) {
        const struct config_model *m = &cfg->models[i];
        if (route_enabled(m) == 0 || (one != NULL && strcmp(one, m->name) != 0) ||
            (key != NULL && !keys_model_ok(key, m->name))) {
            continue;
        }
        buf_printf(&b, "%s{\"id\":\"", found++ && one == NULL ? "," : "");
        buf_append_json_str(&b, m->name);
        buf_append_str(&b, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"llmproxy\"}");
    }
    int status = 200;
    if (one == NULL) {
        buf_append_str(&b, "]}");
        reply_json(c, 200, b.data, b.len, NULL);
    } else if (found) {
        reply_json(c, 200, b.data, b.len, NULL);
    } else {
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%.256s' does not exist", one);
        reply_error(c, 404, msg, "invalid_request_error", "model", "model_not_found", NULL);
        status = 404;
    }
    buf_cleanup(&b);
    snapshot_release(s);
    return status;
}

int answer_local(struct conn *c, const struct endpoint *ep, const char *path,
                 const struct client_key *key)
{
    if (ep->kind == EP_HEALTH) {
        static const char body[] = "{\"Status\":\"Healthy\"}";
        reply_json(c, 200, body, sizeof(body) - 1, NULL);
        return 200;
    }
    return models(c, ep->prefix ? path + strlen(ep->path) : NULL, key);
}
