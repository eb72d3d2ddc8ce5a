/* admin_usage.c - the admin API for usage: /admin/usage and /admin/requests */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "conn.h"
#include "store.h"
#include "usage.h"

#include <string.h>

/* {"<key id>": "<current name>"}: usage rows name keys as they are now. */
static cJSON *current_names(struct admin *a)
{
    char err[512];
    enum store_status st;
    cJSON *root = store_read_kind(&store_keys, a->dir, &st, err, sizeof(err));
    cJSON *names = cJSON_CreateObject();
    const cJSON *k;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(root, "Keys"))
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(k, "Id");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(k, "Name");
        if (cJSON_IsString(id) && cJSON_IsString(name)) {
            cJSON_AddStringToObject(names, id->valuestring, name->valuestring);
        }
    }
    cJSON_Delete(root);
    return names;
}

int admin_usage_route(struct admin *a, struct conn *c, const char *method, bool usage,
                      const char *query)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        admin_error(c, 405, "invalid_request_error", "use GET here", "Allow: GET\r\n");
        return 405;
    }
    char err[512];
    cJSON *out = NULL;
    cJSON *names = current_names(a);
    int status =
        usage ? usage_query(a->dir, query != NULL ? query : "", names, &out, err, sizeof(err))
              : usage_recent(a->dir, query != NULL ? query : "", names, &out, err, sizeof(err));
    cJSON_Delete(names);
    if (status != 200) {
        admin_error(c, status, status == 400 ? "invalid_request_error" : "server_error", err, NULL);
        return status;
    }
    admin_reply_tree(c, 200, out);
    cJSON_Delete(out);
    return 200;
}
