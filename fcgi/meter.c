/* meter.c - what an answer used: usage read from JSON bodies and SSE streams (pure but for a
 * fact about the cJSON build, found out once) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "meter.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* What a '\n' first in the next bytes is, when the last ones ended in '\r'
 * (the two make one CRLF line end): */
enum {
    LF_NONE,  /* no '\r' before it: a line end of its own */
    LF_EVENT, /* the end of a line of the current event: goes with its bytes */
    LF_OUT,   /* the end of an event that went on: goes on too */
    LF_DROP,  /* the end of an event that was dropped: dropped too */
};

void meter_init(struct meter *m, enum meter_format fmt, bool strip, size_t cap)
{
    memset(m, 0, sizeof(*m));
    m->fmt = fmt;
    m->strip = strip;
    m->line_start = true;
    m->lf = LF_NONE;
    if (meter_is_stream(fmt) && cap > METER_EVENT_MAX) {
        cap = METER_EVENT_MAX;
    }
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

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The counts of one usage object. */
static void usage_from(const cJSON *u, uint64_t *prompt, uint64_t *completion, uint64_t *cached)
{
    uint64_t cache_read = count(u, "cache_read_input_tokens");
    *prompt = count(u, "prompt_tokens") + count(u, "input_tokens") + cache_read +
              count(u, "cache_creation_input_tokens");
    *completion = count(u, "completion_tokens") + count(u, "output_tokens");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
    if (!cJSON_IsObject(d)) {
        d = cJSON_GetObjectItemCaseSensitive(u, "input_tokens_details");
    }
    *cached = (cJSON_IsObject(d) ? count(d, "cached_tokens") : 0) + cache_read;
    if (*cached > *prompt) {
        *cached = *prompt;
    }
}

/* Keeps an id that is 1 to METER_ID_MAX bytes of [A-Za-z0-9_.-] (NULL: none). */
static void take_id(struct meter *m, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n > 0 && n <= METER_ID_MAX && id_string(s)) {
        memcpy(m->id, s, n + 1);
    }
}

/* The string of a JSON value, NULL when it is none. */
static const char *json_string(const cJSON *v)
{
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A scan of a JSON text that builds nothing: it checks the text as cJSON
 * would parse it and notes where two members of the top object are, so
 * only the usage object itself is parsed (a whole parse of a long answer
 * costs far more than the rest of the request). */
struct json_scan {
    const char *p, *end;
    int depth;
    bool escaped_key; /* a key of the top object is written with escapes */
    const char *usage, *usage_end, *choices, *choices_end;
};

static bool scan_value(struct json_scan *s);

/* cJSON's white space: every byte up to ' ' */
static void scan_space(struct json_scan *s)
{
    while (s->p < s->end && (unsigned char)*s->p <= ' ') {
        s->p++;
    }
}

/* The four hex digits at p, 0 when one is none (cJSON's parse_hex4). */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) {
            return 0;
        }
        v = v * 16 + d;
    }
    return v;
}

/* The length of a \u escape at p in a string that ends at close (a
 * surrogate pair is two escapes), 0 when cJSON refuses it. */
static size_t unicode_escape(const char *p, const char *close)
{
    if (close - p < 6) {
        return 0;
    }
    long v = hex4(p + 2);
    if (v >= 0xDC00 && v <= 0xDFFF) {
        return 0;
    }
    if (v < 0xD800 || v > 0xDBFF) {
        return 6;
    }
    if (close - (p + 6) < 6 || p[6] != '\\' || p[7] != 'u') {
        return 0;
    }
    long low = hex4(p + 8);
    return low >= 0xDC00 && low <= 0xDFFF ? 12 : 0;
}

/* A string at s->p (its opening quote), as cJSON reads one: its end is
 * the first quote not after a backslash, then its escapes are checked;
 * *escaped: it holds one. */
static bool scan_string(struct json_scan *s, bool *escaped)
{
    *escaped = false;
    if (s->p >= s->end || *s->p != '"') {
        return false;
    }
    /* (memchr: an answer's text is mostly strings; each byte is looked at
     * once, however many escapes) */
    const char *close = NULL, *first = NULL, *quote = NULL;
    for (const char *q = s->p + 1;;) {
        if (quote == NULL || quote < q) {
            quote = memchr(q, '"', (size_t)(s->end - q));
            if (quote == NULL) {
                return false;
            }
        }
        const char *bs = memchr(q, '\\', (size_t)(quote - q));
        if (bs == NULL) {
            close = quote;
            break;
        }
        if (s->end - bs < 2) {
            return false;
        }
        first = first != NULL ? first : bs;
        q = bs + 2;
    }
    for (const char *p = first != NULL ? first : close; p < close;) {
        if (*p != '\\') {
            p++;
            continue;
        }
        *escaped = true;
        if (p[1] == 'u') {
            size_t n = unicode_escape(p, close);
            if (n == 0) {
                return false;
            }
            p += n;
        } else if (p[1] != '\0' && strchr("bfnrt\"\\/", p[1]) != NULL) {
            p += 2;
        } else {
            return false;
        }
    }
    s->p = close + 1;
    return true;
}

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

/* How many characters of a number cJSON reads: all of them since the fix
 * of CVE-2023-26819 (Debian's 1.7.15-1+deb12u3), at most 63 before it
 * (found out once, from the cJSON this runs with). */
static size_t number_cap = SIZE_MAX;
static pthread_once_t number_cap_once = PTHREAD_ONCE_INIT;

static void find_number_cap(void)
{
    char text[70];
    memset(text, '1', 64);
    text[64] = '\0';
    /* (cJSON_Parse takes a value and ignores what follows: an old build
     * reads 63 digits of the 64 and leaves one) */
    cJSON *n = cJSON_ParseWithOpts(text, NULL, true);
    number_cap = n != NULL ? SIZE_MAX : 63;
    cJSON_Delete(n);
}

/* As cJSON reads a number: what strtod takes of the run of number
 * characters that starts at s->p (a digit or '-'). */
static bool scan_number(struct json_scan *s)
{
    const char *q = s->p;
    const char *end = (size_t)(s->end - s->p) > number_cap ? s->p + number_cap : s->end;
    if (*q == '-') {
        q++;
    }
    const char *ip = q;
    while (q < end && digit(*q)) {
        q++;
    }
    size_t digits = (size_t)(q - ip);
    if (q < end && *q == '.') {
        const char *f = q + 1;
        while (f < end && digit(*f)) {
            f++;
        }
        digits += (size_t)(f - q - 1);
        if (digits > 0) {
            q = f;
        }
    }
    if (digits == 0) {
        return false;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        const char *e = q + 1;
        if (e < end && (*e == '+' || *e == '-')) {
            e++;
        }
        const char *ed = e;
        while (e < end && digit(*e)) {
            e++;
        }
        if (e > ed) {
            q = e;
        }
    }
    s->p = q;
    return true;
}

static bool scan_literal(struct json_scan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) {
        return false;
    }
    s->p += n;
    return true;
}

/* An object or an array at s->p; the top object's members noted. */
static bool scan_container(struct json_scan *s, char close)
{
    if (++s->depth > CJSON_NESTING_LIMIT) {
        return false;
    }
    bool top = s->depth == 1 && close == '}';
    s->p++;
    scan_space(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        if (close == '}') {
            bool escaped;
            const char *at = s->p;
            if (!scan_string(s, &escaped)) {
                return false;
            }
            key = at + 1;
            /* cJSON compares keys as C strings: up to a NUL byte */
            key_len = strnlen(key, (size_t)(s->p - 1 - key));
            s->escaped_key |= top && escaped;
            scan_space(s);
            if (s->p >= s->end || *s->p != ':') {
                return false;
            }
            s->p++;
            scan_space(s);
        }
        const char *v = s->p;
        if (!scan_value(s)) {
            return false;
        }
        if (top && key_len == 5 && memcmp(key, "usage", 5) == 0 && s->usage == NULL) {
            s->usage = v;
            s->usage_end = s->p;
        } else if (top && key_len == 7 && memcmp(key, "choices", 7) == 0 && s->choices == NULL) {
            s->choices = v;
            s->choices_end = s->p;
        }
        scan_space(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            scan_space(s);
            continue;
        }
        if (s->p < s->end && *s->p == close) {
            s->p++;
            s->depth--;
            return true;
        }
        return false;
    }
}

static bool scan_value(struct json_scan *s)
{
    if (s->p >= s->end) {
        return false;
    }
    bool escaped;
    switch (*s->p) {
    case '{':
        return scan_container(s, '}');
    case '[':
        return scan_container(s, ']');
    case '"':
        return scan_string(s, &escaped);
    case 'n':
        return scan_literal(s, "null", 4);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    default:
        return (*s->p >= '0' && *s->p <= '9') || *s->p == '-' ? scan_number(s) : false;
    }
}

/* The first "usage" and "choices" of a JSON text's top object; false when
 * the text is no JSON (cJSON would not parse it) or its top is no object. */
static bool scan_top(struct json_scan *s, const char *json, size_t len)
{
    pthread_once(&number_cap_once, find_number_cap);
    memset(s, 0, sizeof(*s));
    s->p = json;
    s->end = json + len;
    if (len >= 3 && memcmp(json, "\xEF\xBB\xBF", 3) == 0) {
        s->p += 3;
    }
    scan_space(s);
    if (s->p >= s->end || *s->p != '{') {
        return false;
    }
    return scan_container(s, '}');
}

/* The same answer from a whole parse: a top key written with escapes
 * ("us\u0061ge") is "usage" too. */
static bool usage_json_parsed(const char *json, size_t len, uint64_t *prompt, uint64_t *completion,
                              uint64_t *cached, bool *usage_only)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(u)) {
        cJSON_Delete(root);
        return false;
    }
    usage_from(u, prompt, completion, cached);
    /* cJSON stops after the first value: whatever follows makes it more than one chunk */
    bool whole = end != NULL && end >= json && end <= json + len;
    for (const char *q = end; whole && q < json + len; q++) {
        whole = json_space(*q);
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    *usage_only = whole && cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0;
    cJSON_Delete(root);
    return true;
}

bool meter_usage_json(const char *json, size_t len, uint64_t *prompt, uint64_t *completion,
                      uint64_t *cached, bool *usage_only)
{
    *usage_only = false;
    struct json_scan s;
    if (!scan_top(&s, json, len)) {
        return false;
    }
    if (s.escaped_key) {
        return usage_json_parsed(json, len, prompt, completion, cached, usage_only);
    }
    if (s.usage == NULL || *s.usage != '{') {
        return false;
    }
    cJSON *u = cJSON_ParseWithLength(s.usage, (size_t)(s.usage_end - s.usage));
    if (!cJSON_IsObject(u)) {
        cJSON_Delete(u);
        return false;
    }
    usage_from(u, prompt, completion, cached);
    cJSON_Delete(u);
    bool whole = true;
    for (const char *q = s.p; whole && q < json + len; q++) {
        whole = json_space(*q);
    }
    bool empty = false;
    if (s.choices != NULL && *s.choices == '[') {
        struct json_scan c = {.p = s.choices + 1, .end = s.choices_end};
        scan_space(&c);
        empty = *c.p == ']';
    }
    *usage_only = whole && empty;
    return true;
}

/* One event of a Responses or Anthropic stream: its id and usage. */
static void typed_event(struct meter *m, const char *data, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    uint64_t p, c, k;
    if (m->fmt == METER_RESPONSES_SSE) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "response");
        if (m->want_id && m->id[0] == '\0' && cJSON_IsObject(r)) {
            take_id(m, json_string(cJSON_GetObjectItemCaseSensitive(r, "id")));
        }
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
        if (cJSON_IsObject(u)) {
            usage_from(u, &m->prompt, &m->completion, &m->cached);
            m->have = true;
        }
    } else {
        /* message_start: {"message":{"usage":{input, output so far}}};
         * message_delta: {"usage":{"output_tokens": the total so far}} */
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(msg, "usage");
        if (cJSON_IsObject(u)) {
            /* its output count is a placeholder: usage is known (else
             * estimated) only once message_delta says the total */
            usage_from(u, &m->prompt, &m->completion, &m->cached);
        }
        u = cJSON_GetObjectItemCaseSensitive(root, "usage");
        if (cJSON_IsObject(u)) {
            usage_from(u, &p, &c, &k);
            if (cJSON_GetObjectItemCaseSensitive(u, "output_tokens") != NULL) {
                m->completion = c;
            }
            if (p > 0) {
                m->prompt = p;
                m->cached = k;
            }
            m->have = true;
        }
    }
    cJSON_Delete(root);
}

/* True when some "usage" key in data[0..n) has an object for its value: only
 * then is the event worth parsing (chunks say "usage":null all along). */
static bool has_usage_object(const char *data, size_t n)
{
    const char *end = data + n;
    for (const char *p = memmem(data, n, "\"usage\"", 7); p != NULL;
         p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) {
        p += 7;
        const char *q = p;
        while (q < end && json_space(*q)) {
            q++;
        }
        if (q < end && *q == ':') {
            q++;
            while (q < end && json_space(*q)) {
                q++;
            }
            if (q < end && *q == '{') {
                return true;
            }
        }
    }
    return false;
}

/* Looks at one whole event (its lines, as SSE splits them: at CRLF, LF or
 * CR); false when it is to be dropped. */
static bool judge(struct meter *m, const char *ev, size_t n)
{
    /* a JSON string holds no line end: a "usage" key is whole in one line */
    bool want_id = m->want_id && m->id[0] == '\0' && memmem(ev, n, "\"response\"", 10) != NULL;
    if (!want_id && memmem(ev, n, "\"usage\"", 7) == NULL) {
        return true;
    }
    /* the data lines, joined by '\n' as a client would (in place when one) */
    const char *one = NULL;
    size_t one_len = 0;
    size_t lines = 0;
    bool other = false; /* a field but data: more than a plain chunk */
    struct buf joined;
    buf_init(&joined, n + 1);
    for (size_t i = 0; i < n;) {
        const char *line = ev + i;
        size_t l = 0;
        while (i + l < n && line[l] != '\r' && line[l] != '\n') {
            l++;
        }
        i += l;
        if (i < n) {
            i += ev[i] == '\r' && i + 1 < n && ev[i + 1] == '\n' ? 2 : 1;
        }
        if (l == 0 || line[0] == ':') {
            continue; /* the blank line, or a comment */
        }
        const char *colon = memchr(line, ':', l);
        size_t name_len = colon != NULL ? (size_t)(colon - line) : l;
        const char *val = colon != NULL ? colon + 1 : line + l;
        size_t vlen = (size_t)(line + l - val);
        if (vlen > 0 && val[0] == ' ') {
            val++;
            vlen--;
        }
        if (name_len != 4 || memcmp(line, "data", 4) != 0) {
            other = true;
            continue;
        }
        if (lines == 0) {
            one = val;
            one_len = vlen;
        } else {
            if (lines == 1) {
                buf_append(&joined, one, one_len);
            }
            buf_append(&joined, "\n", 1);
            buf_append(&joined, val, vlen);
        }
        lines++;
    }
    const char *data = lines > 1 ? joined.data : one;
    size_t len = lines > 1 ? joined.len : one_len;
    uint64_t p, c, k;
    bool only;
    bool keep = true;
    if (m->fmt != METER_CHAT_SSE) {
        if (lines > 0 && (want_id || has_usage_object(data, len))) {
            typed_event(m, data, len);
        }
    } else if (lines > 0 && has_usage_object(data, len) &&
               meter_usage_json(data, len, &p, &c, &k, &only)) {
        m->have = true;
        m->prompt = p;
        m->completion = c;
        m->cached = k;
        keep = !(m->strip && only && !other);
    }
    buf_cleanup(&joined);
    return keep;
}

/* The current event ends with p[0..n) (what pending holds comes first):
 * judged, and on to out unless dropped. False when dropped. lf: p ends in
 * the '\n' of a CRLF blank line, not counted against the cap (cut between
 * the two, the event ends at the '\r'). */
static bool event_end(struct meter *m, const char *p, size_t n, size_t lf, struct buf *out)
{
    bool keep = true;
    if (m->passing || n - lf > m->pending.cap - m->pending.len) {
        /* longer than the cap: undecided */
        buf_append(out, m->pending.data, m->pending.len);
        buf_append(out, p, n);
    } else if (m->pending.len == 0) {
        /* the usual case: a whole event, straight from the bytes fed */
        keep = judge(m, p, n);
        if (keep) {
            buf_append(out, p, n);
        }
    } else {
        buf_append(&m->pending, p, n - lf);
        keep = judge(m, m->pending.data, m->pending.len);
        if (keep) {
            buf_append(out, m->pending.data, m->pending.len);
            buf_append(out, p + n - lf, lf);
        }
    }
    buf_reset(&m->pending);
    m->passing = false;
    return keep;
}

/* Each byte is looked at once here, and once more by judge when its event
 * ends, so the work is linear however the stream is cut: a line end is
 * decided on its first byte ('\r' alone is one), and a '\n' that turns out
 * to follow it is then skipped (m->lf says whose it is). */
void meter_stream(struct meter *m, const char *p, size_t n, struct buf *out)
{
    size_t i = 0;    /* parsed up to here */
    size_t from = 0; /* the current event's bytes in p start here */
    if (n > 0 && m->lf != LF_NONE) {
        if (p[0] == '\n') {
            i = 1;
            if (m->lf == LF_OUT) {
                buf_append(out, p, 1);
            }
            if (m->lf != LF_EVENT) {
                from = 1;
            }
        }
        m->lf = LF_NONE;
    }
    while (i < n) {
        size_t e = i;
        while (e < n && p[e] != '\n' && p[e] != '\r') {
            e++;
        }
        if (e == n) {
            m->line_start = false;
            break;
        }
        bool blank = m->line_start && e == i;
        bool cr_last = p[e] == '\r' && e + 1 == n; /* a '\n' may come next */
        bool crlf = p[e] == '\r' && e + 1 < n && p[e + 1] == '\n';
        i = e + (crlf ? 2 : 1);
        m->line_start = true;
        if (!blank) {
            m->lf = cr_last ? LF_EVENT : LF_NONE;
            continue;
        }
        bool kept = event_end(m, p + from, i - from, crlf ? 1 : 0, out);
        from = i;
        m->lf = !cr_last ? LF_NONE : kept ? LF_OUT : LF_DROP;
    }
    if (from == n) {
        return;
    }
    /* the start of an event not complete yet */
    if (!m->passing && n - from > m->pending.cap - m->pending.len) {
        /* longer than the cap: what there is goes on undecided, the rest as it comes */
        buf_append(out, m->pending.data, m->pending.len);
        buf_reset(&m->pending);
        m->passing = true;
    }
    buf_append(m->passing ? out : &m->pending, p + from, n - from);
}

void meter_stream_end(struct meter *m, struct buf *out)
{
    if (m->pending.len > 0) {
        if (judge(m, m->pending.data, m->pending.len)) {
            buf_append(out, m->pending.data, m->pending.len);
        }
        buf_reset(&m->pending);
    }
    m->passing = false;
    m->line_start = true;
    m->lf = LF_NONE;
}

/* A JSON string at p[*i..n) (at its quote): its end, or false if cut. */
static bool skip_string(const char *p, size_t n, size_t *i)
{
    for (size_t k = *i + 1; k < n; k++) {
        if (p[k] == '\\') {
            k++;
        } else if (p[k] == '"') {
            *i = k + 1;
            return true;
        }
    }
    return false;
}

/* The top-level "id" of the start of a JSON object body: 1 when found (in
 * out), 0 when more is needed, -1 when it has none or is not one. */
static int prefix_id(const char *p, size_t n, char *out, size_t cap)
{
    size_t i = 0;
    int depth = 0;
    bool key = false; /* at depth 1, the next string is a key */
    while (i < n) {
        char c = p[i];
        if (json_space(c)) {
            i++;
        } else if (c == '{' || c == '[') {
            if (depth == 0 && c != '{') {
                return -1;
            }
            depth++;
            key = depth == 1;
            i++;
        } else if (c == '}' || c == ']') {
            if (--depth <= 0) {
                return -1;
            }
            i++;
        } else if (c == ',') {
            key = depth == 1;
            i++;
        } else if (c == '"') {
            size_t s0 = i;
            if (!skip_string(p, n, &i)) {
                return 0;
            }
            if (key && i - s0 == 4 && memcmp(p + s0, "\"id\"", 4) == 0) {
                while (i < n && (json_space(p[i]) || p[i] == ':')) {
                    i++;
                }
                if (i >= n) {
                    return 0;
                }
                size_t v0 = i;
                if (p[i] != '"') {
                    return -1;
                }
                if (!skip_string(p, n, &i)) {
                    return 0;
                }
                size_t len = i - v0 - 2;
                if (len == 0 || len >= cap || memchr(p + v0 + 1, '\\', len) != NULL) {
                    return -1;
                }
                memcpy(out, p + v0 + 1, len);
                out[len] = '\0';
                return 1;
            }
            key = false;
        } else if (depth == 0) {
            return -1;
        } else {
            i++; /* numbers, literals, ':' */
        }
    }
    return 0;
}

void meter_body(struct meter *m, const char *p, size_t n)
{
    if (!m->truncated && buf_append(&m->pending, p, n) != BUF_OK) {
        m->truncated = true;
    }
    if (m->want_id && m->id[0] == '\0' && !m->id_done && m->pending.len > 0) {
        /* the id comes first: known before the last byte goes on, whatever the size */
        char id[METER_ID_MAX + 1];
        int r = prefix_id(m->pending.data, m->pending.len, id, sizeof(id));
        if (r == 1) {
            take_id(m, id);
        }
        m->id_done = r != 0 || m->pending.len > 65536;
    }
    if (m->truncated) {
        buf_cleanup(&m->pending);
    }
}

void meter_body_end(struct meter *m)
{
    bool only;
    if (!m->truncated && m->pending.len > 0) {
        m->have = meter_usage_json(m->pending.data, m->pending.len, &m->prompt, &m->completion,
                                   &m->cached, &only);
        if (m->want_id && m->id[0] == '\0') {
            cJSON *root = cJSON_ParseWithLength(m->pending.data, m->pending.len);
            take_id(m, json_string(cJSON_GetObjectItemCaseSensitive(root, "id")));
            cJSON_Delete(root);
        }
    }
    buf_cleanup(&m->pending);
}
