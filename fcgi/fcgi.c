/* fcgi.c - the FastCGI protocol of a responder: records in, records out (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "fcgi.h"

#include <stdlib.h>
#include <string.h>

/* Record types and constants of the FastCGI 1.0 specification. */
enum {
    T_BEGIN_REQUEST = 1,
    T_ABORT_REQUEST = 2,
    T_END_REQUEST = 3,
    T_PARAMS = 4,
    T_STDIN = 5,
    T_STDOUT = 6,
    T_STDERR = 7,
    T_DATA = 8,
    T_GET_VALUES = 9,
    T_GET_VALUES_RESULT = 10,
    T_UNKNOWN_TYPE = 11,
};
#define ROLE_RESPONDER 1
#define FLAG_KEEP_CONN 1
#define ST_REQUEST_COMPLETE 0
#define ST_CANT_MPX_CONN 1
#define ST_UNKNOWN_ROLE 3

void fcgi_parser_init(struct fcgi_parser *ps, struct buf *reply)
{
    memset(ps, 0, sizeof(*ps));
    buf_init(&ps->params, FCGI_MAX_PARAMS);
    buf_init(&ps->mgmt, FCGI_MAX_RECORD);
    ps->reply = reply;
}

void fcgi_parser_cleanup(struct fcgi_parser *ps)
{
    buf_cleanup(&ps->params);
    buf_cleanup(&ps->mgmt);
    free(ps->pv);
    ps->pv = NULL;
    ps->npv = 0;
}

void fcgi_parser_next(struct fcgi_parser *ps)
{
    ps->req_id = 0;
    ps->keep_conn = false;
    ps->params_done = false;
    ps->stdin_done = false;
    ps->answered = false;
    buf_reset(&ps->params);
    free(ps->pv);
    ps->pv = NULL;
    ps->npv = 0;
}

void fcgi_parser_answered(struct fcgi_parser *ps)
{
    ps->answered = true;
}

static void header(unsigned char h[8], unsigned type, unsigned id, size_t len)
{
    h[0] = 1;
    h[1] = (unsigned char)type;
    h[2] = (unsigned char)(id >> 8);
    h[3] = (unsigned char)id;
    h[4] = (unsigned char)(len >> 8);
    h[5] = (unsigned char)len;
    h[6] = 0; /* no padding: it is optional */
    h[7] = 0;
}

void fcgi_stdout_header(unsigned char hdr[8], unsigned id, size_t n)
{
    header(hdr, T_STDOUT, id, n);
}

static int put_record(struct buf *out, unsigned type, unsigned id, const void *p, size_t n)
{
    unsigned char h[8];
    header(h, type, id, n);
    if (buf_append(out, h, 8) != BUF_OK) {
        return BUF_TOOBIG;
    }
    return n > 0 ? buf_append(out, p, n) : BUF_OK;
}

int fcgi_put_stdout(struct buf *out, unsigned id, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        size_t k = n > FCGI_MAX_RECORD ? FCGI_MAX_RECORD : n;
        if (put_record(out, T_STDOUT, id, s, k) != BUF_OK) {
            return BUF_TOOBIG;
        }
        s += k;
        n -= k;
    }
    return BUF_OK;
}

static int put_end_status(struct buf *out, unsigned id, unsigned app_status, unsigned proto)
{
    unsigned char body[8] = {(unsigned char)(app_status >> 24),
                             (unsigned char)(app_status >> 16),
                             (unsigned char)(app_status >> 8),
                             (unsigned char)app_status,
                             (unsigned char)proto,
                             0,
                             0,
                             0};
    return put_record(out, T_END_REQUEST, id, body, sizeof(body));
}

int fcgi_put_end(struct buf *out, unsigned id, unsigned app_status)
{
    if (put_record(out, T_STDOUT, id, NULL, 0) != BUF_OK) {
        return BUF_TOOBIG;
    }
    return put_end_status(out, id, app_status, ST_REQUEST_COMPLETE);
}

/* One name-value length (1 or 4 bytes). -1 when p..end is too short. */
static long nv_len(const unsigned char **p, const unsigned char *end)
{
    if (*p >= end) {
        return -1;
    }
    if ((**p & 0x80) == 0) {
        return *(*p)++;
    }
    if (end - *p < 4) {
        return -1;
    }
    const unsigned char *q = *p;
    long n = ((long)(q[0] & 0x7f) << 24) | ((long)q[1] << 16) | ((long)q[2] << 8) | (long)q[3];
    *p += 4;
    return n;
}

/* Walks name-value pairs; for each calls fn (unless NULL). -1 on bad framing. */
static int each_pair(const unsigned char *p, size_t n,
                     int (*fn)(void *ud, const unsigned char *name, size_t nl,
                               const unsigned char *value, size_t vl),
                     void *ud)
{
    if (n == 0) {
        return 0; /* p may be NULL */
    }
    const unsigned char *end = p + n;
    while (p < end) {
        long nl = nv_len(&p, end);
        long vl = nl >= 0 ? nv_len(&p, end) : -1;
        if (nl < 0 || vl < 0 || (size_t)(end - p) < (size_t)nl + (size_t)vl) {
            return -1;
        }
        if (fn != NULL && fn(ud, p, (size_t)nl, p + nl, (size_t)vl) != 0) {
            return -1;
        }
        p += nl + vl;
    }
    return 0;
}

struct decode {
    char *out;
    size_t used;
    struct fcgi_param *pv;
    size_t npv;
};

static int decode_pair(void *ud, const unsigned char *name, size_t nl, const unsigned char *value,
                       size_t vl)
{
    struct decode *d = ud;
    if (nl == 0 || memchr(name, '\0', nl) != NULL || memchr(value, '\0', vl) != NULL ||
        d->npv >= FCGI_MAX_NPARAMS) {
        return -1;
    }
    char *n = d->out + d->used;
    memcpy(n, name, nl);
    n[nl] = '\0';
    char *v = n + nl + 1;
    memcpy(v, value, vl);
    v[vl] = '\0';
    d->used += nl + vl + 2;
    d->pv[d->npv].name = n;
    d->pv[d->npv].value = v;
    d->pv[d->npv].name_len = nl;
    d->npv++;
    return 0;
}

/* Turns the raw PARAMS bytes into NUL-terminated pairs. Every pair has at
 * least two length bytes, which pay for its two NULs: the decoded form fits
 * in the raw size. */
static int decode_params(struct fcgi_parser *ps)
{
    size_t raw = ps->params.len;
    struct decode d = {.out = xmalloc(raw + 1),
                       .pv = xcalloc(raw / 2 + 1, sizeof(struct fcgi_param))};
    if (each_pair((const unsigned char *)ps->params.data, raw, decode_pair, &d) != 0) {
        free(d.out);
        free(d.pv);
        return -1;
    }
    d.out[d.used] = '\0';
    buf_cleanup(&ps->params);
    ps->params.data = d.out;
    ps->params.len = d.used;
    ps->params.size = raw + 1;
    ps->params.cap = FCGI_MAX_PARAMS;
    ps->pv = d.pv;
    ps->npv = d.npv;
    return 0;
}

const char *fcgi_param(const struct fcgi_parser *ps, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < ps->npv; i++) {
        if (ps->pv[i].name_len == n && memcmp(ps->pv[i].name, name, n) == 0) {
            return ps->pv[i].value;
        }
    }
    return NULL;
}

static void put_pair(struct buf *b, const char *name, const char *value)
{
    size_t nl = strlen(name);
    size_t vl = strlen(value);
    unsigned char l[2] = {(unsigned char)nl, (unsigned char)vl}; /* both < 128 */
    buf_append(b, l, 2);
    buf_append(b, name, nl);
    buf_append(b, value, vl);
}

struct values_ctx {
    struct buf *out;
};

static int value_wanted(void *ud, const unsigned char *name, size_t nl, const unsigned char *value,
                        size_t vl)
{
    (void)value;
    (void)vl;
    struct values_ctx *vc = ud;
    static const char *const known[][2] = {
        {"FCGI_MAX_CONNS", "4096"}, {"FCGI_MAX_REQS", "4096"}, {"FCGI_MPXS_CONNS", "0"}};
    for (size_t i = 0; i < ARRAY_LEN(known); i++) {
        if (nl == strlen(known[i][0]) && memcmp(name, known[i][0], nl) == 0) {
            put_pair(vc->out, known[i][0], known[i][1]);
        }
    }
    return 0;
}

static void answer_get_values(struct fcgi_parser *ps)
{
    struct buf b;
    buf_init(&b, FCGI_MAX_RECORD);
    struct values_ctx vc = {&b};
    each_pair((const unsigned char *)ps->mgmt.data, ps->mgmt.len, value_wanted, &vc);
    put_record(ps->reply, T_GET_VALUES_RESULT, 0, b.data, b.len);
    buf_cleanup(&b);
}

static enum fcgi_event fail(struct fcgi_parser *ps, const char *why)
{
    ps->error = why;
    return FCGI_EV_ERROR;
}

/* A complete record body of a management or BEGIN_REQUEST record. */
static enum fcgi_event whole_record(struct fcgi_parser *ps)
{
    if (ps->id == 0) {
        if (ps->type == T_GET_VALUES) {
            answer_get_values(ps);
        }
        return FCGI_EV_NONE;
    }
    /* BEGIN_REQUEST */ unsigned role = (unsigned)ps->body8[0] << 8 | ps->body8[1];
    if (ps->req_id != 0 && ps->answered) {
        fcgi_parser_next(ps); /* the rest of the old body will not come */
    }
    if (ps->req_id != 0) {
        if (ps->id == ps->req_id) {
            return fail(ps, "BEGIN_REQUEST for a request already open");
        }
        put_end_status(ps->reply, ps->id, 0, ST_CANT_MPX_CONN);
        return FCGI_EV_NONE;
    }
    if (role != ROLE_RESPONDER) {
        put_end_status(ps->reply, ps->id, 0, ST_UNKNOWN_ROLE);
        return FCGI_EV_NONE;
    }
    ps->req_id = ps->id;
    ps->keep_conn = (ps->body8[2] & FLAG_KEEP_CONN) != 0;
    ps->params_done = false;
    ps->stdin_done = false;
    return FCGI_EV_BEGIN;
}

/* The header is complete: check it and decide how the content is read. */
static enum fcgi_event start_record(struct fcgi_parser *ps)
{
    const unsigned char *h = ps->hdr;
    if (h[0] != 1) {
        return fail(ps, "not FastCGI version 1");
    }
    ps->type = h[1];
    ps->id = (unsigned)h[2] << 8 | h[3];
    ps->content_left = (size_t)h[4] << 8 | h[5];
    ps->padding_left = h[6];
    ps->body8_have = 0;
    buf_reset(&ps->mgmt);
    if (ps->id == 0) {
        if (ps->type != T_GET_VALUES) {
            unsigned char body[8] = {(unsigned char)ps->type, 0, 0, 0, 0, 0, 0, 0};
            put_record(ps->reply, T_UNKNOWN_TYPE, 0, body, sizeof(body));
        }
        return FCGI_EV_NONE;
    }
    switch (ps->type) {
    case T_BEGIN_REQUEST:
        if (ps->content_left != 8) {
            return fail(ps, "BEGIN_REQUEST body is not 8 bytes");
        }
        break;
    case T_ABORT_REQUEST:
        if (ps->id == ps->req_id && ps->req_id != 0) {
            return FCGI_EV_ABORT;
        }
        break;
    case T_PARAMS:
        if (ps->id == ps->req_id && ps->params_done) {
            return fail(ps, "PARAMS after the end of PARAMS");
        }
        if (ps->id == ps->req_id && ps->content_left == 0) {
            ps->params_done = true;
            if (decode_params(ps) != 0) {
                return fail(ps, "malformed PARAMS");
            }
            return FCGI_EV_PARAMS;
        }
        break;
    case T_STDIN:
        if (ps->id == ps->req_id && (!ps->params_done || ps->stdin_done)) {
            return fail(ps, ps->stdin_done ? "STDIN after its end" : "STDIN before PARAMS ended");
        }
        if (ps->id == ps->req_id && ps->content_left == 0) {
            ps->stdin_done = true;
            return FCGI_EV_STDIN_END;
        }
        break;
    case T_END_REQUEST:
    case T_STDOUT:
    case T_STDERR:
    case T_GET_VALUES_RESULT:
    case T_UNKNOWN_TYPE:
        return fail(ps, "a record type only applications send");
    default:
        break; /* DATA (filter role) and unknown types: skipped */
    }
    return FCGI_EV_NONE;
}

enum fcgi_event fcgi_feed(struct fcgi_parser *ps, const char *p, size_t n, size_t *used,
                          const char **data, size_t *len)
{
    size_t i = 0;
    enum fcgi_event ev = FCGI_EV_NONE;
    *data = NULL;
    *len = 0;
    while (i < n && ev == FCGI_EV_NONE) {
        if (ps->error != NULL) {
            ev = FCGI_EV_ERROR;
            break;
        }
        if (ps->hdr_have < 8) {
            size_t k = 8 - ps->hdr_have;
            if (k > n - i) {
                k = n - i;
            }
            memcpy(ps->hdr + ps->hdr_have, p + i, k);
            ps->hdr_have += k;
            i += k;
            if (ps->hdr_have == 8) {
                ev = start_record(ps);
                if (ps->content_left == 0 && ps->padding_left == 0) {
                    ps->hdr_have = 0;
                }
            }
            continue;
        }
        if (ps->content_left > 0) {
            size_t k = ps->content_left < n - i ? ps->content_left : n - i;
            const char *c = p + i;
            ps->content_left -= k;
            i += k;
            bool ours = ps->id == ps->req_id && ps->req_id != 0;
            bool begin = ps->id != 0 && ps->type == T_BEGIN_REQUEST; /* 8 bytes: checked */
            bool values = ps->id == 0 && ps->type == T_GET_VALUES;
            if (values) {
                buf_append(&ps->mgmt, c, k);
            } else if (begin) {
                memcpy(ps->body8 + ps->body8_have, c, k);
                ps->body8_have += k;
            } else if (ours && ps->type == T_PARAMS) {
                if (buf_append(&ps->params, c, k) != BUF_OK) {
                    ev = fail(ps, "PARAMS larger than the limit");
                    break;
                }
            } else if (ours && ps->type == T_STDIN) {
                *data = c;
                *len = k;
                ev = FCGI_EV_STDIN;
            }
            if (ps->content_left == 0 && (values || begin) && ev == FCGI_EV_NONE) {
                ev = whole_record(ps);
            }
        } else {
            size_t k = ps->padding_left < n - i ? ps->padding_left : n - i;
            ps->padding_left -= k;
            i += k;
        }
        if (ps->content_left == 0 && ps->padding_left == 0) {
            ps->hdr_have = 0; /* next record */
        }
    }
    *used = i;
    return ev;
}
