/* request.c - the client's body: strict JSON check, model and stream fields, mapping (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "request.h"

#include <string.h>

struct scan {
    const char *p;
    const char *end;
    const char *start;
    int depth;
    int err; /* first error, REQUEST_OK while fine */
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

static int fail(struct scan *s, int err)
{
    if (s->err == REQUEST_OK) {
        s->err = err;
    }
    return -1;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_digit(p[i]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + h;
    }
    return v;
}

/* Scans a string starting at the opening quote. Returns 0 and leaves s->p
 * after the closing quote. */
static int scan_string(struct scan *s)
{
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20) {
            return fail(s, REQUEST_BAD_JSON);
        }
        if (c == '\\') {
            if (s->end - s->p < 2) {
                break;
            }
            char e = s->p[1];
            if (e == 'u') {
                if (s->end - s->p < 6 || hex4(s->p + 2) < 0) {
                    return fail(s, REQUEST_BAD_JSON);
                }
                s->p += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0') {
                return fail(s, REQUEST_BAD_JSON);
            }
            s->p += 2;
            continue;
        }
        s->p++;
    }
    return fail(s, REQUEST_BAD_JSON);
}

static void put_utf8(char *out, size_t *n, size_t cap, unsigned cp, bool *overflow)
{
    char tmp[4];
    size_t k;
    if (cp < 0x80) {
        tmp[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        tmp[0] = (char)(0xc0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        tmp[0] = (char)(0xe0 | (cp >> 12));
        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[2] = (char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        tmp[0] = (char)(0xf0 | (cp >> 18));
        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[3] = (char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    if (*n + k > cap) {
        *overflow = true;
        return;
    }
    memcpy(out + *n, tmp, k);
    *n += k;
}

/* Decodes an already scanned JSON string (quotes included) into out.
 * Returns false when it holds NUL or does not fit in cap bytes. */
static bool decode_string(const char *p, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    bool overflow = false;
    const char *end = p + len - 1;
    for (p++; p < end && !overflow; p++) {
        if (*p != '\\') {
            if (n + 1 > cap) {
                return false;
            }
            out[n++] = *p;
            continue;
        }
        p++;
        unsigned cp;
        switch (*p) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            cp = (unsigned)hex4(p + 1);
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
                int lo = hex4(p + 3);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
                    p += 6;
                }
            }
            break;
        default:
            cp = (unsigned char)*p;
            break;
        }
        if (cp == 0) {
            return false;
        }
        put_utf8(out, &n, cap, cp, &overflow);
    }
    if (overflow) {
        return false;
    }
    out[n] = '\0';
    return true;
}

static int scan_value(struct scan *s);

static int scan_number(struct scan *s)
{
    const char *p = s->p;
    if (p < s->end && *p == '-') {
        p++;
    }
    if (p >= s->end) {
        return fail(s, REQUEST_BAD_JSON);
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return fail(s, REQUEST_BAD_JSON);
    }
    if (p < s->end && *p == '.') {
        p++;
        if (p >= s->end || *p < '0' || *p > '9') {
            return fail(s, REQUEST_BAD_JSON);
        }
        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < s->end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= s->end || *p < '0' || *p > '9') {
            return fail(s, REQUEST_BAD_JSON);
        }
        while (p < s->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    s->p = p;
    return 0;
}

static int scan_literal(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        return fail(s, REQUEST_BAD_JSON);
    }
    s->p += n;
    return 0;
}

/* Object members; when info is set this is the top level and the members
 * "model" and "stream" are recorded. */
static int scan_object(struct scan *s, struct request_info *info, int *models)
{
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        if (info != NULL) {
            info->close_off = (size_t)(s->p - s->start);
        }
        s->p++;
        return 0;
    }
    for (;;) {
        ws(s);
        if (s->p >= s->end || *s->p != '"') {
            return fail(s, REQUEST_BAD_JSON);
        }
        const char *k = s->p;
        if (scan_string(s) != 0) {
            return -1;
        }
        size_t klen = (size_t)(s->p - k);
        ws(s);
        if (s->p >= s->end || *s->p != ':') {
            return fail(s, REQUEST_BAD_JSON);
        }
        s->p++;
        ws(s);
        const char *v = s->p;
        if (scan_value(s) != 0) {
            return -1;
        }
        if (info != NULL) {
            char key[24];
            info->has_members = true;
            if (decode_string(k, klen, key, sizeof(key) - 1)) {
                if (strcmp(key, "model") == 0) {
                    (*models)++;
                    info->model_off = (size_t)(v - s->start);
                    info->model_len = (size_t)(s->p - v);
                } else if (strcmp(key, "stream") == 0) {
                    size_t vl = (size_t)(s->p - v);
                    info->stream = vl == 4 && memcmp(v, "true", 4) == 0;
                    info->stream_bad |= !info->stream && !(vl == 5 && memcmp(v, "false", 5) == 0) &&
                                        !(vl == 4 && memcmp(v, "null", 4) == 0);
                    info->n_stream++;
                } else if (strcmp(key, "background") == 0) {
                    info->background = (size_t)(s->p - v) == 4 && memcmp(v, "true", 4) == 0;
                } else if (strcmp(key, "previous_response_id") == 0) {
                    info->n_prev++;
                    info->prev_off = (size_t)(v - s->start);
                    info->prev_len = (size_t)(s->p - v);
                } else if (strcmp(key, "stream_options") == 0) {
                    info->n_so++;
                    info->so_off = (size_t)(v - s->start);
                    info->so_len = (size_t)(s->p - v);
                }
            }
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            if (info != NULL) {
                info->close_off = (size_t)(s->p - s->start);
            }
            s->p++;
            return 0;
        }
        return fail(s, REQUEST_BAD_JSON);
    }
}

static int scan_array(struct scan *s)
{
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        ws(s);
        if (scan_value(s) != 0) {
            return -1;
        }
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return fail(s, REQUEST_BAD_JSON);
    }
}

static int scan_value(struct scan *s)
{
    if (s->p >= s->end) {
        return fail(s, REQUEST_BAD_JSON);
    }
    int rc;
    switch (*s->p) {
    case '{':
    case '[':
        if (++s->depth > REQUEST_MAX_DEPTH) {
            return fail(s, REQUEST_TOO_DEEP);
        }
        rc = *s->p == '{' ? scan_object(s, NULL, NULL) : scan_array(s);
        s->depth--;
        return rc;
    case '"':
        return scan_string(s);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

static unsigned count_member(const char *body, size_t off, size_t len, const char *name);

enum request_status request_scan(const char *body, size_t len, struct request_info *info,
                                 size_t *err_off)
{
    struct scan s = {.p = body, .end = body + len, .start = body, .depth = 0, .err = REQUEST_OK};
    int models = 0;
    memset(info, 0, sizeof(*info));
    ws(&s);
    if (s.p < s.end && *s.p == '{') {
        s.depth = 1;
        scan_object(&s, info, &models);
    } else if (scan_value(&s) == 0) {
        fail(&s, REQUEST_NOT_OBJECT);
    }
    if (s.err == REQUEST_OK) {
        ws(&s);
        if (s.p != s.end) {
            fail(&s, REQUEST_BAD_JSON);
        }
    }
    if (s.err != REQUEST_OK) {
        if (err_off != NULL) {
            *err_off = (size_t)(s.p - body);
        }
        return (enum request_status)s.err;
    }
    if (models == 0) {
        return REQUEST_NO_MODEL;
    }
    if (models > 1) {
        return REQUEST_DUP_MODEL;
    }
    if (body[info->model_off] != '"') {
        return REQUEST_MODEL_NOT_STRING;
    }
    if (!decode_string(body + info->model_off, info->model_len, info->model,
                       sizeof(info->model) - 1) ||
        info->model[0] == '\0') {
        return REQUEST_MODEL_BAD;
    }
    if (info->stream_bad) {
        return REQUEST_STREAM_NOT_BOOL;
    }
    if (info->n_stream > 1 || info->n_so > 1 ||
        (info->so_len > 0 && body[info->so_off] == '{' &&
         count_member(body, info->so_off, info->so_len, "include_usage") > 1)) {
        return REQUEST_DUP_STREAM;
    }
    /* last: an endpoint that has no use for the field may pass over this verdict */
    char prev[REQUEST_ID_MAX + 1];
    if (info->n_prev > 1 ||
        (info->prev_len > 0 &&
         !(info->prev_len == 4 && memcmp(body + info->prev_off, "null", 4) == 0) &&
         !request_previous_id(body, info, prev))) {
        return REQUEST_BAD_PREVIOUS;
    }
    if (info->n_prev == 1 && info->prev_len == 4 && memcmp(body + info->prev_off, "null", 4) == 0) {
        info->prev_len = 0; /* null: none */
    }
    return REQUEST_OK;
}

const char *request_status_message(enum request_status st)
{
    switch (st) {
    case REQUEST_OK:
        return "ok";
    case REQUEST_BAD_JSON:
        return "We could not parse the JSON body of your request. The body must be valid JSON.";
    case REQUEST_NOT_OBJECT:
        return "The request body must be a JSON object.";
    case REQUEST_NO_MODEL:
        return "you must provide a model parameter";
    case REQUEST_MODEL_NOT_STRING:
        return "The model parameter must be a string.";
    case REQUEST_DUP_MODEL:
        return "The model parameter is given more than once.";
    case REQUEST_TOO_DEEP:
        return "The request body nests arrays and objects too deeply.";
    case REQUEST_MODEL_BAD:
        return "The model parameter must be a non-empty string of at most 256 bytes without NUL.";
    case REQUEST_DUP_STREAM:
        return "The stream, stream_options or stream_options.include_usage parameter is given "
               "more than once.";
    case REQUEST_STREAM_NOT_BOOL:
        return "The stream parameter must be a boolean.";
    case REQUEST_BAD_PREVIOUS:
        return "The previous_response_id parameter must be given once, as a response id (letters, "
               "digits, '_', '-', '.').";
    }
    return "invalid request";
}

bool request_previous_id(const char *body, const struct request_info *info,
                         char out[REQUEST_ID_MAX + 1])
{
    if (info->prev_len < 3 || body[info->prev_off] != '"' ||
        !decode_string(body + info->prev_off, info->prev_len, out, REQUEST_ID_MAX) ||
        !id_string(out)) {
        return false;
    }
    return true;
}

int request_map_model(const char *body, size_t len, const struct request_info *info,
                      const char *new_model, struct buf *out)
{
    buf_reset(out);
    if (buf_append(out, body, info->model_off) != BUF_OK || buf_append_str(out, "\"") != BUF_OK ||
        buf_append_json_str(out, new_model) != BUF_OK || buf_append_str(out, "\"") != BUF_OK ||
        buf_append(out, body + info->model_off + info->model_len,
                   len - info->model_off - info->model_len) != BUF_OK) {
        return BUF_TOOBIG;
    }
    return BUF_OK;
}

/* The value span of member name in the (valid) object at body[off..off+len)
 * (its first occurrence). With count, every member is visited and *count
 * gets how often name appears. */
static bool find_member(const char *body, size_t off, size_t len, const char *name, size_t *voff,
                        size_t *vlen, bool *empty, unsigned *count)
{
    struct scan s = {.p = body + off + 1, .end = body + off + len, .start = body, .depth = 1};
    bool found = false;
    *empty = true;
    if (count != NULL) {
        *count = 0;
    }
    for (;;) {
        ws(&s);
        if (s.p >= s.end || *s.p != '"') {
            return found;
        }
        *empty = false;
        const char *k = s.p;
        if (scan_string(&s) != 0) {
            return found;
        }
        size_t klen = (size_t)(s.p - k);
        ws(&s);
        s.p++; /* ':' (valid JSON) */
        ws(&s);
        const char *v = s.p;
        if (scan_value(&s) != 0) {
            return found;
        }
        char key[32];
        if (decode_string(k, klen, key, sizeof(key) - 1) && strcmp(key, name) == 0) {
            if (!found) {
                *voff = (size_t)(v - body);
                *vlen = (size_t)(s.p - v);
                found = true;
            }
            if (count == NULL) {
                return true;
            }
            (*count)++;
        }
        ws(&s);
        if (s.p >= s.end || *s.p != ',') {
            return found;
        }
        s.p++;
    }
}

static unsigned count_member(const char *body, size_t off, size_t len, const char *name)
{
    size_t voff, vlen;
    bool empty;
    unsigned n = 0;
    find_member(body, off, len, name, &voff, &vlen, &empty, &n);
    return n;
}

enum request_usage request_usage_edit(const char *body, size_t len, const struct request_info *info,
                                      struct request_edit *e)
{
    (void)len;
    static const char add_first[] = "\"stream_options\":{\"include_usage\":true}";
    static const char add_more[] = ",\"stream_options\":{\"include_usage\":true}";
    static const char whole[] = "{\"include_usage\":true}";
    static const char member_only[] = "\"include_usage\":true";
    static const char member_more[] = "\"include_usage\":true,";
    memset(e, 0, sizeof(*e));
    if (info->so_len == 0) {
        e->off = info->close_off;
        e->ins = info->has_members ? add_more : add_first;
        e->ins_len = strlen(e->ins);
        return REQUEST_USAGE_ADDED;
    }
    if (body[info->so_off] != '{') {
        /* null or anything else: replaced by an object that asks */
        e->off = info->so_off;
        e->del = info->so_len;
        e->ins = whole;
        e->ins_len = sizeof(whole) - 1;
        return REQUEST_USAGE_ADDED;
    }
    size_t voff, vlen;
    bool empty;
    if (find_member(body, info->so_off, info->so_len, "include_usage", &voff, &vlen, &empty,
                    NULL)) {
        if (vlen == 4 && memcmp(body + voff, "true", 4) == 0) {
            return REQUEST_USAGE_ASKED;
        }
        e->off = voff;
        e->del = vlen;
        e->ins = "true";
        e->ins_len = 4;
        return REQUEST_USAGE_ADDED;
    }
    e->off = info->so_off + 1;
    e->ins = empty ? member_only : member_more;
    e->ins_len = strlen(e->ins);
    return REQUEST_USAGE_ADDED;
}
