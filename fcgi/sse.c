/* sse.c - server-sent events: find and judge the first data event (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "sse.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

/* An error event bigger than this is not parsed for "error": still judged by
 * its first bytes. */
#define SSE_DATA_CAP (1024 * 1024)

void sse_peek_init(struct sse_peek *p)
{
    p->pos = 0;
    p->has_data = 0;
    p->named_error = 0;
    p->responses = 0;
    p->event[0] = '\0';
    buf_init(&p->data, SSE_DATA_CAP);
}

void sse_peek_cleanup(struct sse_peek *p)
{
    buf_cleanup(&p->data);
}

int sse_is_error_payload(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) {
        i++;
    }
    if (i >= len || data[i] != '{') {
        return 0;
    }
    cJSON *root = cJSON_ParseWithLength(data + i, len - i);
    int is_err = 0;
    if (root != NULL) {
        is_err = cJSON_GetObjectItemCaseSensitive(root, "error") != NULL;
        cJSON_Delete(root);
    } else {
        /* truncated or too big to parse: judge by the opening key */
        static const char key[] = "{\"error\"";
        is_err = len - i >= sizeof(key) - 1 && memcmp(data + i, key, sizeof(key) - 1) == 0;
    }
    return is_err;
}

/* Field name and value of one line (without its terminator). */
static void field(struct sse_peek *p, const char *line, size_t n)
{
    if (n == 0 || line[0] == ':') {
        return;
    }
    const char *colon = memchr(line, ':', n);
    size_t nlen = colon ? (size_t)(colon - line) : n;
    const char *val = colon ? colon + 1 : line + n;
    size_t vlen = (size_t)(line + n - val);
    if (vlen > 0 && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (nlen == 4 && memcmp(line, "data", 4) == 0) {
        if (p->has_data) {
            buf_append(&p->data, "\n", 1);
        }
        p->has_data = 1;
        /* past the cap the payload is judged by what fits */
        size_t room = p->data.cap - p->data.len;
        buf_append(&p->data, val, vlen < room ? vlen : room);
    } else if (nlen == 5 && memcmp(line, "event", 5) == 0) {
        p->named_error = vlen == 5 && memcmp(val, "error", 5) == 0;
        size_t k = vlen < sizeof(p->event) - 1 ? vlen : sizeof(p->event) - 1;
        memcpy(p->event, val, k);
        p->event[k] = '\0';
    }
}

/* A Responses event's type: its name, else the "type" of its data. */
static void event_type(const struct sse_peek *p, char *out, size_t cap)
{
    snprintf(out, cap, "%s", p->event);
    if (out[0] != '\0') {
        return;
    }
    cJSON *root = cJSON_ParseWithLength(p->data.data != NULL ? p->data.data : "", p->data.len);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (cJSON_IsString(t) && t->valuestring != NULL) {
        snprintf(out, cap, "%s", t->valuestring);
    }
    cJSON_Delete(root);
}

enum sse_result sse_peek_feed(struct sse_peek *p, const char *buf, size_t len, size_t *end)
{
    while (p->pos < len) {
        const char *line = buf + p->pos;
        size_t avail = len - p->pos;
        size_t n = 0;
        while (n < avail && line[n] != '\n' && line[n] != '\r') {
            n++;
        }
        if (n == avail) {
            return SSE_MORE; /* line not complete yet */
        }
        size_t term = 1;
        if (line[n] == '\r') {
            if (n + 1 == avail) {
                return SSE_MORE; /* a '\n' may follow */
            }
            if (line[n + 1] == '\n') {
                term = 2;
            }
        }
        p->pos += n + term;
        if (n > 0) {
            field(p, line, n);
            continue;
        }
        /* blank line: the event is complete */
        if (p->has_data && p->responses) {
            char type[40];
            event_type(p, type, sizeof(type));
            if (strcmp(type, "response.created") == 0 ||
                strcmp(type, "response.in_progress") == 0) {
                p->has_data = 0; /* held with the one that decides */
                p->named_error = 0;
                p->event[0] = '\0';
                buf_reset(&p->data);
                continue;
            }
            if (strcmp(type, "response.failed") == 0 || strcmp(type, "error") == 0) {
                *end = p->pos;
                return SSE_ERROR;
            }
        }
        if (p->has_data) {
            *end = p->pos;
            return (p->named_error || sse_is_error_payload(p->data.data, p->data.len)) ? SSE_ERROR
                                                                                       : SSE_DATA;
        }
        p->named_error = 0;
        p->event[0] = '\0';
        buf_reset(&p->data);
    }
    return SSE_MORE;
}
