/* reply.c - our own JSON answers to the client, errors in the OpenAI or Anthropic shape */
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

const char *reply_anthropic_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

void reply_anthropic_error_object(struct buf *b, const char *type, const char *msg)
{
    buf_append_str(b, "{\"type\":\"error\",\"error\":{\"type\":");
    json_string_or_null(b, type);
    buf_append_str(b, ",\"message\":");
    json_string_or_null(b, msg);
    buf_append_str(b, "}}");
}

void reply_anthropic_error(struct conn *c, int status, const char *msg, const char *extra)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    reply_anthropic_error_object(&b, reply_anthropic_type(status), msg);
    reply_json(c, status, b.data, b.len, extra);
    buf_cleanup(&b);
}
