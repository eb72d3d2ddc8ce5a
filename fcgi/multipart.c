/* multipart.c - multipart/form-data bodies: strict incremental check, the model part (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "multipart.h"

#include <assert.h>
#include <string.h>
#include <strings.h>

#define STR_(x) #x
#define STR(x) STR_(x)

enum {
    ST_START,       /* the dash-boundary that opens the body */
    ST_AFTER_DELIM, /* "--" (close) or padding and CRLF (next part) */
    ST_PAD,         /* transport padding, then CRLF */
    ST_HEADERS,     /* a part's header block */
    ST_CONTENT,     /* a part's content, up to the next delimiter */
    ST_CLOSE_PAD,   /* after the close delimiter: padding, then CRLF or the end */
    ST_EPILOGUE,    /* ignored */
};

/* RFC 9110 tchar */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 2046 bchars, space included */
static bool is_bchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return c != '\0' && strchr("'()+_,-./:=? ", c) != NULL;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 9110 qdtext and the octets of a quoted-pair: no CTL but HTAB */
static bool is_qchar(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static size_t skip_ows(const char *s, size_t i, size_t n)
{
    while (i < n && is_ows((unsigned char)s[i])) {
        i++;
    }
    return i;
}

static size_t skip_token(const char *s, size_t i, size_t n)
{
    while (i < n && is_tchar((unsigned char)s[i])) {
        i++;
    }
    return i;
}

static bool token_is(const char *s, size_t from, size_t to, const char *want)
{
    size_t n = strlen(want);
    return to - from == n && strncasecmp(s + from, want, n) == 0;
}

/* A parameter value at s[*i..n): a token or a quoted-string (backslash
 * escapes). The decoded value's first cap bytes go to out, its length to
 * *vlen. ctl_ok: a quoted-string may hold control bytes. Returns false when
 * malformed. */
static bool param_value(const char *s, size_t *i, size_t n, bool ctl_ok, char *out, size_t cap,
                        size_t *vlen)
{
    size_t k = *i;
    size_t len = 0;
    if (k < n && s[k] == '"') {
        k++;
        for (;;) {
            if (k >= n) {
                return false;
            }
            unsigned char c = (unsigned char)s[k];
            if (c == '"') {
                break;
            }
            if (c == '\\') {
                if (++k >= n) {
                    return false;
                }
                c = (unsigned char)s[k];
            }
            if (!ctl_ok && !is_qchar(c)) {
                return false;
            }
            if (len < cap) {
                out[len] = (char)c;
            }
            len++;
            k++;
        }
        k++;
    } else {
        size_t e = skip_token(s, k, n);
        if (e == k) {
            return false;
        }
        for (size_t j = k; j < e && len < cap; j++) {
            out[len++] = s[j];
        }
        len = e - k;
        k = e;
    }
    *i = k;
    *vlen = len;
    return true;
}

enum multipart_status multipart_boundary(const char *content_type, char *out, size_t cap)
{
    if (content_type == NULL) {
        return MP_NOT_MULTIPART;
    }
    const char *s = content_type;
    size_t n = strlen(s);
    size_t i = skip_ows(s, 0, n);
    size_t t0 = i;
    i = skip_token(s, i, n);
    if (!token_is(s, t0, i, "multipart") || i >= n || s[i] != '/') {
        return MP_NOT_MULTIPART;
    }
    size_t s0 = ++i;
    i = skip_token(s, i, n);
    if (!token_is(s, s0, i, "form-data")) {
        return MP_NOT_MULTIPART;
    }
    /* RFC 9110 parameters: *( OWS ";" OWS [ name "=" value ] ) */
    char b[MULTIPART_MAX_BOUNDARY + 1];
    size_t blen = 0;
    bool seen = false;
    for (;;) {
        i = skip_ows(s, i, n);
        if (i >= n) {
            break;
        }
        if (s[i] != ';') {
            return MP_NO_BOUNDARY;
        }
        i = skip_ows(s, i + 1, n);
        if (i >= n || s[i] == ';') {
            continue;
        }
        size_t p0 = i;
        i = skip_token(s, i, n);
        size_t p1 = i;
        if (p1 == p0 || i >= n || s[i] != '=') {
            return MP_NO_BOUNDARY;
        }
        i++;
        char scratch[1];
        size_t vlen = 0;
        if (token_is(s, p0, p1, "boundary")) {
            if (seen || !param_value(s, &i, n, false, b, sizeof(b), &vlen)) {
                return MP_NO_BOUNDARY;
            }
            seen = true;
            blen = vlen;
        } else if (!param_value(s, &i, n, false, scratch, 0, &vlen)) {
            return MP_NO_BOUNDARY;
        }
    }
    if (!seen || blen == 0 || blen > MULTIPART_MAX_BOUNDARY || blen >= cap || b[blen - 1] == ' ') {
        return MP_NO_BOUNDARY;
    }
    for (size_t k = 0; k < blen; k++) {
        if (!is_bchar((unsigned char)b[k])) {
            return MP_NO_BOUNDARY;
        }
    }
    memcpy(out, b, blen);
    out[blen] = '\0';
    return MP_OK;
}

void multipart_init(struct multipart *mp, const char *boundary)
{
    size_t blen = strlen(boundary);
    assert(blen >= 1 && blen <= MULTIPART_MAX_BOUNDARY);
    memset(mp, 0, sizeof(*mp));
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, blen);
    mp->dlen = 4 + blen;
    mp->delim[mp->dlen] = '\0';
    mp->state = ST_START;
    mp->result = MP_MORE;
}

static enum multipart_status fail(struct multipart *mp, enum multipart_status st, size_t off)
{
    mp->result = st;
    mp->err_off = off;
    return st;
}

/* A Content-Disposition value v[0..n): form-data with a name. Returns true,
 * or false with the offset of the problem in *bad. Records what the part's
 * name says in mp. */
static bool disposition(struct multipart *mp, const char *v, size_t n, size_t *bad)
{
    size_t i = skip_token(v, 0, n);
    if (!token_is(v, 0, i, "form-data")) {
        *bad = 0;
        return false;
    }
    bool has_name = false, has_fn = false, has_fn_ext = false;
    char name[8];
    size_t nlen = 0;
    /* RFC 6266: *( OWS ";" OWS name "=" value ) */
    for (;;) {
        i = skip_ows(v, i, n);
        if (i >= n) {
            break;
        }
        if (v[i] != ';') {
            *bad = i;
            return false;
        }
        i = skip_ows(v, i + 1, n);
        size_t p0 = i;
        i = skip_token(v, i, n);
        size_t p1 = i;
        if (p1 == p0 || i >= n || v[i] != '=') {
            *bad = i;
            return false;
        }
        i++;
        size_t vstart = i;
        char scratch[1];
        size_t vlen = 0;
        bool *dup = NULL;
        bool is_name = token_is(v, p0, p1, "name");
        if (token_is(v, p0, p1, "name*")) {
            /* RFC 2231's form of the name, which some servers take over the
             * name: the two could name different fields */
            *bad = p0;
            return false;
        }
        if (is_name) {
            dup = &has_name;
        } else if (token_is(v, p0, p1, "filename")) {
            dup = &has_fn;
        } else if (token_is(v, p0, p1, "filename*")) {
            dup = &has_fn_ext;
        }
        if (dup != NULL && *dup) {
            *bad = p0;
            return false;
        }
        bool good = is_name ? param_value(v, &i, n, true, name, sizeof(name), &nlen)
                            : param_value(v, &i, n, true, scratch, 0, &vlen);
        if (!good) {
            *bad = vstart;
            return false;
        }
        for (size_t k = vstart; is_name && k < i; k++) {
            /* an escape or a byte past ASCII in a name: parsers differ on
             * what the name is (some decode \x, some do not) */
            if (v[k] == '\\' || (unsigned char)v[k] >= 0x80) {
                *bad = k;
                return false;
            }
        }
        if (dup != NULL) {
            *dup = true;
        }
    }
    if (!has_name) {
        *bad = n;
        return false;
    }
    mp->is_model = nlen == 5 && memcmp(name, "model", 5) == 0;
    mp->is_stream = nlen == 6 && memcmp(name, "stream", 6) == 0;
    mp->has_filename = has_fn || has_fn_ext;
    return true;
}

/* One complete header line buf[ls..le), its CRLF not included. */
static enum multipart_status header_line(struct multipart *mp, const char *buf, size_t ls,
                                         size_t le)
{
    if (is_ows((unsigned char)buf[ls])) {
        return fail(mp, MP_BAD_BODY, ls); /* obs-fold, or space before a name */
    }
    size_t i = skip_token(buf, ls, le);
    if (i == ls || i >= le || buf[i] != ':') {
        return fail(mp, MP_BAD_BODY, i);
    }
    if (token_is(buf, ls, i, "content-transfer-encoding")) {
        /* deprecated for forms (RFC 7578 4.7): a server that decodes it would
         * read other bytes than those checked here */
        return fail(mp, MP_BAD_BODY, ls);
    }
    if (!token_is(buf, ls, i, "content-disposition")) {
        return MP_MORE;
    }
    if (mp->has_cd) {
        return fail(mp, MP_BAD_BODY, ls);
    }
    mp->has_cd = true;
    size_t v0 = skip_ows(buf, i + 1, le);
    size_t v1 = le;
    while (v1 > v0 && is_ows((unsigned char)buf[v1 - 1])) {
        v1--;
    }
    size_t bad = 0;
    if (!disposition(mp, buf + v0, v1 - v0, &bad)) {
        return fail(mp, MP_BAD_BODY, v0 + bad);
    }
    if (mp->is_model) {
        if (mp->has_model) {
            return fail(mp, MP_DUP_MODEL, ls);
        }
        if (mp->has_filename) {
            return fail(mp, MP_MODEL_BAD, ls);
        }
        mp->has_model = true;
    }
    if (mp->is_stream) {
        if (mp->has_stream) {
            return fail(mp, MP_DUP_STREAM, ls);
        }
        mp->has_stream = true;
    }
    return MP_MORE;
}

/* Checks the model's value up to buf[to) (those bytes are certainly content). */
static enum multipart_status check_model(struct multipart *mp, const char *buf, size_t to)
{
    for (size_t i = mp->chk; i < to; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (i - mp->cstart >= CONFIG_MAX_MODEL_NAME || c < 0x20 || c == 0x7f) {
            return fail(mp, MP_MODEL_BAD, i);
        }
    }
    if (to > mp->chk) {
        mp->chk = to;
    }
    return MP_MORE;
}

/* The current part's content is buf[cstart..end). */
static enum multipart_status end_part(struct multipart *mp, const char *buf, size_t end)
{
    size_t n = end - mp->cstart;
    if (mp->is_model) {
        if (check_model(mp, buf, end) != MP_MORE) {
            return mp->result;
        }
        if (n == 0) {
            return fail(mp, MP_MODEL_BAD, end);
        }
        mp->model_off = mp->cstart;
        mp->model_len = n;
        memcpy(mp->model, buf + mp->cstart, n);
        mp->model[n] = '\0';
    }
    if (mp->is_stream) {
        mp->stream = n == 4 && strncasecmp(buf + mp->cstart, "true", 4) == 0;
    }
    return MP_MORE;
}

static void new_part(struct multipart *mp)
{
    mp->hstart = mp->pos;
    mp->lstart = mp->pos;
    mp->has_cd = false;
    mp->is_model = false;
    mp->is_stream = false;
    mp->has_filename = false;
    mp->state = ST_HEADERS;
}

/* The header block, from pos; false when more bytes are needed. */
static bool headers(struct multipart *mp, const char *buf, size_t len)
{
    while (mp->pos < len) {
        size_t p = mp->pos;
        char c = buf[p];
        if (p - mp->hstart + (c == '\r' ? 2 : 1) > MULTIPART_MAX_HEADER) {
            fail(mp, MP_HEADER_TOO_LONG, p);
            return true;
        }
        if (c == '\n' || c == '\0') {
            fail(mp, MP_BAD_BODY, p);
            return true;
        }
        if (c != '\r') {
            mp->pos++;
            continue;
        }
        if (p + 1 >= len) {
            return false;
        }
        if (buf[p + 1] != '\n') {
            fail(mp, MP_BAD_BODY, p);
            return true;
        }
        mp->pos = p + 2;
        if (p == mp->lstart) {
            if (!mp->has_cd) {
                fail(mp, MP_BAD_BODY, p);
                return true;
            }
            mp->cstart = mp->pos;
            mp->spos = mp->pos;
            mp->chk = mp->pos;
            mp->state = ST_CONTENT;
            return true;
        }
        if (header_line(mp, buf, mp->lstart, p) != MP_MORE) {
            return true;
        }
        mp->lstart = mp->pos;
    }
    return false;
}

enum multipart_status multipart_feed(struct multipart *mp, const char *buf, size_t len, bool final)
{
    if (mp->result != MP_MORE) {
        return mp->result;
    }
    assert(len >= mp->pos);
    size_t dlen = mp->dlen;
    while (mp->result == MP_MORE) {
        size_t p = mp->pos;
        switch (mp->state) {
        case ST_START:
            /* the body opens with the dash-boundary: no preamble */
            while (mp->pos < dlen - 2) {
                if (mp->pos >= len) {
                    goto need;
                }
                if (buf[mp->pos] != mp->delim[2 + mp->pos]) {
                    return fail(mp, MP_BAD_BODY, mp->pos);
                }
                mp->pos++;
            }
            mp->state = ST_AFTER_DELIM;
            break;
        case ST_AFTER_DELIM:
            if (p >= len) {
                goto need;
            }
            if (buf[p] != '-') {
                mp->state = ST_PAD;
                break;
            }
            if (p + 1 >= len) {
                goto need;
            }
            if (buf[p + 1] != '-') {
                return fail(mp, MP_BAD_BODY, p + 1);
            }
            mp->pos = p + 2;
            if (!mp->has_model) {
                return fail(mp, MP_NO_MODEL, mp->pos);
            }
            mp->state = ST_CLOSE_PAD;
            break;
        case ST_PAD:
        case ST_CLOSE_PAD:
            if (p >= len) {
                goto need;
            }
            if (is_ows((unsigned char)buf[p])) {
                mp->pos++;
                break;
            }
            if (buf[p] != '\r') {
                return fail(mp, MP_BAD_BODY, p);
            }
            if (p + 1 >= len) {
                goto need;
            }
            if (buf[p + 1] != '\n') {
                return fail(mp, MP_BAD_BODY, p + 1);
            }
            mp->pos = p + 2;
            if (mp->state == ST_CLOSE_PAD) {
                mp->state = ST_EPILOGUE;
                break;
            }
            if (++mp->nparts > MULTIPART_MAX_PARTS) {
                return fail(mp, MP_TOO_MANY_PARTS, mp->pos);
            }
            new_part(mp);
            break;
        case ST_HEADERS:
            if (!headers(mp, buf, len)) {
                goto need;
            }
            break;
        case ST_CONTENT: {
            const char *d = memmem(buf + mp->spos, len - mp->spos, mp->delim, dlen);
            if (d != NULL) {
                size_t end = (size_t)(d - buf);
                if (end_part(mp, buf, end) != MP_MORE) {
                    return mp->result;
                }
                mp->pos = end + dlen;
                mp->state = ST_AFTER_DELIM;
                break;
            }
            /* a delimiter can only start in the last dlen - 1 bytes */
            if (len >= dlen && len - (dlen - 1) > mp->spos) {
                mp->spos = len - (dlen - 1);
            }
            if (mp->is_model && check_model(mp, buf, mp->spos) != MP_MORE) {
                return mp->result;
            }
            goto need;
        }
        case ST_EPILOGUE:
            mp->pos = len;
            goto need;
        default:
            assert(0);
            return fail(mp, MP_BAD_BODY, p);
        }
    }
    return mp->result;
need:
    if (!final) {
        return MP_MORE;
    }
    if (mp->state == ST_EPILOGUE || (mp->state == ST_CLOSE_PAD && mp->pos >= len)) {
        mp->result = MP_OK;
        return MP_OK;
    }
    if (mp->state == ST_CLOSE_PAD) {
        return fail(mp, MP_BAD_BODY, len); /* a bare CR at the end */
    }
    return fail(mp, MP_TRUNCATED, len);
}

const char *multipart_status_message(enum multipart_status st)
{
    switch (st) {
    case MP_MORE:
        return "The multipart body is incomplete.";
    case MP_OK:
        return "OK";
    case MP_NOT_MULTIPART:
        return "The Content-Type must be multipart/form-data.";
    case MP_NO_BOUNDARY:
        return "The Content-Type multipart/form-data needs a valid boundary parameter "
               "(1 to " STR(MULTIPART_MAX_BOUNDARY) " characters).";
    case MP_BAD_BODY:
        return "The multipart/form-data body is malformed.";
    case MP_TRUNCATED:
        return "The multipart body ended before its closing boundary.";
    case MP_TOO_MANY_PARTS:
        return "The multipart body has more than " STR(MULTIPART_MAX_PARTS) " parts.";
    case MP_HEADER_TOO_LONG:
        return "A part's headers in the multipart body are longer than " STR(
            MULTIPART_MAX_HEADER) " bytes.";
    case MP_NO_MODEL:
        return "you must provide a model parameter";
    case MP_DUP_MODEL:
        return "The model parameter is given more than once.";
    case MP_MODEL_BAD:
        return "The model parameter must be a text field of 1 to " STR(
            CONFIG_MAX_MODEL_NAME) " bytes without control characters.";
    case MP_DUP_STREAM:
        return "The stream parameter is given more than once.";
    }
    return "The multipart body is invalid.";
}
