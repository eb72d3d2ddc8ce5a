/* reply.c - our own JSON answers to the client, errors in the OpenAI shape */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "reply.h"
#include "conn.h"

#include <stdio.h>

void reply_json(struct conn *c, int status, const char *json, size_t len, const char *extra)
{
    char head[768];
    int n = snprintf(head, sizeof(head),
                     "Status: %d\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s\r\n",
                     status, len, extra != NULL ? extra : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        return;
    }
    conn_write(c, head, (size_t)n, false);
    conn_write(c, json, len, true);
}

static void json_string_or_null(struct buf *b, const char *s)
{
    if (s == NULL) {
        buf_append_str(b, "null");
        return;
    }
    buf_append_str(b, "\"");
    buf_append_json_str(b, s);
    buf_append_str(b, "\"");
}

void reply_error_object(struct buf *b, const char *msg, const char *type, const char *param,
                        const char *code)
{
    buf_append_str(b, "{\"error\":{\"message\":");
    json_string_or_null(b, msg);
    buf_append_str(b, ",\"type\":");
    json_string_or_null(b, type);
    buf_append_str(b, ",\"param\":");
    json_string_or_null(b, param);
    buf_append_str(b, ",\"code\":");
    json_string_or_null(b, code);
    buf_append_str(b, "}}");
}

void reply_error(struct conn *c, int status, const char *msg, const char *type, const char *param,
                 const char *code, const char *extra)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    reply_error_object(&b, msg, type, param, code);
    reply_json(c, status, b.data, b.len, extra);
    buf_cleanup(&b);
}
