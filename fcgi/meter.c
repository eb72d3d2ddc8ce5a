/* meter.c - what an answer used: usage read from JSON bodies and SSE streams (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "meter.h"

#include <cjson/cJSON.h>
#include <string.h>

void meter_init(struct meter *m, enum meter_format fmt, bool strip, size_t cap)
{
    memset(m, 0, sizeof(*m));
    m->fmt = fmt;
    m->strip = strip;
    buf_init(&m->pending, cap);
}

void meter_cleanup(struct meter *m)
{
    buf_cleanup(&m->pending);
}

static uint64_t count(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e15
               ? (uint64_t)v->valuedouble
               : 0;
}

bool meter_usage_json(const char *json, size_t len, uint64_t *prompt, uint64_t *completion,
                      uint64_t *cached, bool *usage_only)
{
    *usage_only = false;
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(u)) {
        cJSON_Delete(root);
        return false;
    }
    *prompt = count(u, "prompt_tokens") + count(u, "input_tokens");
    *completion = count(u, "completion_tokens") + count(u, "output_tokens");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
    if (!cJSON_IsObject(d)) {
        d = cJSON_GetObjectItemCaseSensitive(u, "input_tokens_details");
    }
    *cached = cJSON_IsObject(d) ? count(d, "cached_tokens") : 0;
    if (*cached > *prompt) {
        *cached = *prompt;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    *usage_only = cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0;
    cJSON_Delete(root);
    return true;
}

/* Length of the event at p[0..n) including its blank line, 0 if incomplete. */
static size_t event_len(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] == '\n' && p[i + 1] == '\n') {
            return i + 2;
        }
        if (p[i] == '\r') {
            if (p[i + 1] == '\r') {
                return i + 2;
            }
            if (i + 3 < n && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
                return i + 4;
            }
        }
    }
    return 0;
}

/* True when some "usage" key in ev[0..n) has an object for its value: only
 * then is the event worth parsing (chunks say "usage":null all along). */
static bool has_usage_object(const char *ev, size_t n)
{
    const char *p = ev;
    const char *end = ev + n;
    while ((p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) != NULL) {
        p += 7;
        const char *q = p;
        while (q < end && (*q == ' ' || *q == '\t')) {
            q++;
        }
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t')) {
                q++;
            }
            if (q < end && *q == '{') {
                return true;
            }
        }
    }
    return false;
}

/* Looks at one complete event; false when it is to be dropped. */
static bool judge(struct meter *m, const char *ev, size_t n)
{
    if (!has_usage_object(ev, n)) {
        return true;
    }
    /* the data lines, joined */
    struct buf data;
    buf_init(&data, n + 1);
    for (size_t i = 0; i < n;) {
        const char *eol = memchr(ev + i, '\n', n - i);
        size_t l = eol != NULL ? (size_t)(eol - (ev + i)) : n - i;
        const char *line = ev + i;
        size_t ll = l > 0 && line[l - 1] == '\r' ? l - 1 : l;
        if (ll >= 5 && memcmp(line, "data:", 5) == 0) {
            size_t skip = ll > 5 && line[5] == ' ' ? 6 : 5;
            if (data.len > 0) {
                buf_append(&data, "\n", 1);
            }
            buf_append(&data, line + skip, ll - skip);
        }
        i += l + 1;
    }
    uint64_t p, c, k;
    bool only;
    bool keep = true;
    if (data.len > 0 && meter_usage_json(data.data, data.len, &p, &c, &k, &only)) {
        m->have = true;
        m->prompt = p;
        m->completion = c;
        m->cached = k;
        keep = !(m->strip && only);
    }
    buf_cleanup(&data);
    return keep;
}

void meter_stream(struct meter *m, const char *p, size_t n, struct buf *out)
{
    if (m->pending.len == 0) {
        /* the usual case: whole events, straight from the chunk */
        size_t used = 0;
        for (;;) {
            size_t e = event_len(p + used, n - used);
            if (e == 0) {
                break;
            }
            if (judge(m, p + used, e)) {
                buf_append(out, p + used, e);
            }
            used += e;
        }
        p += used;
        n -= used;
        if (n == 0) {
            return;
        }
    }
    if (buf_append(&m->pending, p, n) != BUF_OK) {
        /* an event larger than the cap: it goes on as it is */
        buf_append(out, m->pending.data, m->pending.len);
        buf_append(out, p, n);
        buf_reset(&m->pending);
        return;
    }
    size_t used = 0;
    for (;;) {
        size_t e = event_len(m->pending.data + used, m->pending.len - used);
        if (e == 0) {
            break;
        }
        if (judge(m, m->pending.data + used, e)) {
            buf_append(out, m->pending.data + used, e);
        }
        used += e;
    }
    if (used > 0) {
        memmove(m->pending.data, m->pending.data + used, m->pending.len - used);
        m->pending.len -= used;
        m->pending.data[m->pending.len] = '\0';
    }
}

void meter_stream_end(struct meter *m, struct buf *out)
{
    if (m->pending.len > 0) {
        if (judge(m, m->pending.data, m->pending.len)) {
            buf_append(out, m->pending.data, m->pending.len);
        }
        buf_reset(&m->pending);
    }
}

void meter_body(struct meter *m, const char *p, size_t n)
{
    if (!m->truncated && buf_append(&m->pending, p, n) != BUF_OK) {
        m->truncated = true;
        buf_cleanup(&m->pending);
    }
}

void meter_body_end(struct meter *m)
{
    bool only;
    if (!m->truncated && m->pending.len > 0) {
        m->have = meter_usage_json(m->pending.data, m->pending.len, &m->prompt, &m->completion,
                                   &m->cached, &only);
    }
    buf_cleanup(&m->pending);
}
