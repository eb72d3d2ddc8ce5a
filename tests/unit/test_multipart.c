/* test_multipart.c - unit tests of multipart.c: boundaries, strict bodies, the model part, any
 * split */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/multipart.c"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CURL_B "------------------------d74496d66958873e"
#define NODE_B "----formdata-undici-048171853923"

/* What a run ends with: the verdict and everything it recorded. */
struct outcome {
    enum multipart_status st;
    size_t err_off, model_off, model_len;
    char model[CONFIG_MAX_MODEL_NAME + 1];
    bool stream;
    unsigned nparts;
};

static void take(struct outcome *o, enum multipart_status st, const struct multipart *mp)
{
    o->st = st;
    o->err_off = st < 0 ? mp->err_off : 0;
    o->model_off = mp->model_off;
    o->model_len = mp->model_len;
    memcpy(o->model, mp->model, sizeof(o->model));
    o->stream = mp->stream;
    o->nparts = mp->nparts;
}

static bool same(const struct outcome *a, const struct outcome *b)
{
    return a->st == b->st && a->err_off == b->err_off && a->model_off == b->model_off &&
           a->model_len == b->model_len && strcmp(a->model, b->model) == 0 &&
           a->stream == b->stream && a->nparts == b->nparts;
}

/* Feeds body in pieces of step bytes, final with the last. *fed: the bytes
 * given when the verdict came. */
static enum multipart_status run_step(struct multipart *mp, const char *boundary, const char *body,
                                      size_t len, size_t step, size_t *fed)
{
    multipart_init(mp, boundary);
    size_t have = 0;
    enum multipart_status st;
    do {
        have = have + step > len ? len : have + step;
        st = multipart_feed(mp, body, have, have == len);
    } while (st == MP_MORE && have < len);
    if (fed != NULL) {
        *fed = have;
    }
    return st;
}

static struct outcome whole(const char *boundary, const char *body, size_t len)
{
    struct multipart mp;
    struct outcome o;
    take(&o, run_step(&mp, boundary, body, len, len ? len : 1, NULL), &mp);
    return o;
}

static enum multipart_status check(const char *boundary, const char *body, size_t len)
{
    return whole(boundary, body, len).st;
}

/* The same outcome whole, split once at every offset, and in pieces of 1 to
 * 9 bytes. */
static bool every_split(const char *boundary, const char *body, size_t len)
{
    struct outcome want = whole(boundary, body, len);
    struct multipart mp;
    struct outcome o;
    for (size_t k = 0; k <= len; k++) {
        multipart_init(&mp, boundary);
        enum multipart_status st = multipart_feed(&mp, body, k, false);
        if (st == MP_MORE) {
            st = multipart_feed(&mp, body, len, true);
        }
        take(&o, st, &mp);
        if (!same(&o, &want)) {
            printf("# split at %zu: %d (off %zu), want %d (off %zu)\n", k, st, o.err_off, want.st,
                   want.err_off);
            return false;
        }
    }
    for (size_t step = 1; step < 10; step++) {
        take(&o, run_step(&mp, boundary, body, len, step, NULL), &mp);
        if (!same(&o, &want)) {
            printf("# step %zu: %d, want %d\n", step, o.st, want.st);
            return false;
        }
    }
    return true;
}

#define S(lit) lit, sizeof(lit) - 1

static const char curl_body[] =
    "--" CURL_B "\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
    "Content-Type: audio/x-wav\r\n"
    "\r\n"
    "RIFF\0\0\0\0WAVE\r\n--\r\n\r\n\n\r\0fmt \r\n"
    "\r\n--" CURL_B "\r\n"
    "Content-Disposition: form-data; name=\"model\"\r\n"
    "\r\n"
    "whisper-1\r\n"
    "--" CURL_B "--\r\n";

static const char node_body[] =
    "--" NODE_B "\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"x.mp3\"\r\n"
    "Content-Type: audio/mpeg\r\n"
    "\r\n"
    "ID3\x03\r\n-- not it\r\n------formdata-undici-04817185392x\r\n"
    "\r\n--" NODE_B "\r\n"
    "Content-Disposition: form-data; name=\"model\"\r\n"
    "\r\n"
    "gpt-4o-transcribe\r\n"
    "--" NODE_B "\r\n"
    "Content-Disposition: form-data; name=\"stream\"\r\n"
    "\r\n"
    "True\r\n"
    "--" NODE_B "--\r\n";

static void test_boundary(void)
{
    char b[MULTIPART_MAX_BOUNDARY + 1];
    ok(multipart_boundary("multipart/form-data; boundary=" CURL_B, b, sizeof(b)) == MP_OK &&
           strcmp(b, CURL_B) == 0,
       "token boundary (curl)");
    ok(multipart_boundary("multipart/form-data; boundary=\"a b:c\\\"\"", b, sizeof(b)) ==
           MP_NO_BOUNDARY,
       "a quoted '\"' is not a bchar");
    ok(multipart_boundary("multipart/form-data; boundary=\"a b:c=?/\\(\"", b, sizeof(b)) == MP_OK &&
           strcmp(b, "a b:c=?/(") == 0,
       "quoted boundary with spaces and an escape (%s)", b);
    ok(multipart_boundary("Multipart/Form-Data;BOUNDARY=xyz", b, sizeof(b)) == MP_OK &&
           strcmp(b, "xyz") == 0,
       "type and parameter name are case-insensitive");
    ok(multipart_boundary("multipart/form-data; charset=utf-8; boundary=q1", b, sizeof(b)) ==
               MP_OK &&
           strcmp(b, "q1") == 0,
       "charset before boundary");
    ok(multipart_boundary("  multipart/form-data ; boundary=q1 ;  ", b, sizeof(b)) == MP_OK,
       "spaces and an empty parameter");
    ok(multipart_boundary("multipart/form-data", b, sizeof(b)) == MP_NO_BOUNDARY, "no boundary");
    ok(multipart_boundary("multipart/form-data; charset=utf-8", b, sizeof(b)) == MP_NO_BOUNDARY,
       "no boundary among parameters");
    ok(multipart_boundary("multipart/form-data; boundary=", b, sizeof(b)) == MP_NO_BOUNDARY,
       "empty token boundary");
    ok(multipart_boundary("multipart/form-data; boundary=\"\"", b, sizeof(b)) == MP_NO_BOUNDARY,
       "empty quoted boundary");
    ok(multipart_boundary("multipart/form-data; boundary=\"ab \"", b, sizeof(b)) == MP_NO_BOUNDARY,
       "boundary ending in a space");
    ok(multipart_boundary("multipart/form-data; boundary=a@b", b, sizeof(b)) == MP_NO_BOUNDARY,
       "token boundary with a non-bchar");
    ok(multipart_boundary("multipart/form-data; boundary=a/b", b, sizeof(b)) == MP_NO_BOUNDARY,
       "unquoted '/' is not a token");
    ok(multipart_boundary("multipart/form-data; boundary=a; boundary=b", b, sizeof(b)) ==
           MP_NO_BOUNDARY,
       "boundary twice");
    ok(multipart_boundary("multipart/form-data; boundary=\"abc", b, sizeof(b)) == MP_NO_BOUNDARY,
       "unterminated quoted boundary");
    ok(multipart_boundary("multipart/form-data; boundary=abc; x", b, sizeof(b)) == MP_NO_BOUNDARY,
       "malformed later parameter");
    char seventy[71], ct[200];
    memset(seventy, 'a', 70);
    seventy[70] = '\0';
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", seventy);
    ok(multipart_boundary(ct, b, sizeof(b)) == MP_OK && strlen(b) == 70, "70-byte boundary");
    ok(multipart_boundary(ct, b, 70) == MP_NO_BOUNDARY, "does not fit in cap");
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%sa", seventy);
    ok(multipart_boundary(ct, b, sizeof(b)) == MP_NO_BOUNDARY, "71-byte boundary");
    ok(multipart_boundary("multipart/mixed; boundary=x", b, sizeof(b)) == MP_NOT_MULTIPART,
       "multipart/mixed");
    ok(multipart_boundary("multipart/form-datax; boundary=x", b, sizeof(b)) == MP_NOT_MULTIPART,
       "form-datax");
    ok(multipart_boundary("application/json", b, sizeof(b)) == MP_NOT_MULTIPART, "JSON");
    ok(multipart_boundary("", b, sizeof(b)) == MP_NOT_MULTIPART, "empty type");
    ok(multipart_boundary(NULL, b, sizeof(b)) == MP_NOT_MULTIPART, "NULL type");
    ok(multipart_boundary("multipart/form-data;boundary=x(y)", b, sizeof(b)) == MP_NO_BOUNDARY,
       "token boundary with '('");
}

static void test_bodies(void)
{
    struct outcome o = whole(CURL_B, S(curl_body));
    const char *w = memmem(curl_body, sizeof(curl_body) - 1, "whisper-1", 9);
    ok(o.st == MP_OK && o.model_off == (size_t)(w - curl_body) && o.model_len == 9 &&
           strcmp(o.model, "whisper-1") == 0 && o.nparts == 2 && !o.stream,
       "curl body: model at %zu+%zu", o.model_off, o.model_len);

    /* the span maps: put another model there and parse again */
    char mapped[sizeof(curl_body) + 64];
    size_t n = o.model_off;
    memcpy(mapped, curl_body, n);
    memcpy(mapped + n, "gpt-4o-mini-transcribe", 22);
    memcpy(mapped + n + 22, curl_body + o.model_off + o.model_len,
           sizeof(curl_body) - 1 - o.model_off - o.model_len);
    size_t mlen = sizeof(curl_body) - 1 - o.model_len + 22;
    struct outcome m = whole(CURL_B, mapped, mlen);
    ok(m.st == MP_OK && strcmp(m.model, "gpt-4o-mini-transcribe") == 0 && m.model_off == n &&
           memcmp(mapped + mlen - 48, curl_body + sizeof(curl_body) - 49, 48) == 0,
       "model mapped through the span");

    o = whole(NODE_B, S(node_body));
    ok(o.st == MP_OK && strcmp(o.model, "gpt-4o-transcribe") == 0 && o.stream && o.nparts == 3,
       "undici body: content with near-delimiters, stream True");
    ok(check("other", S(curl_body)) == MP_BAD_BODY, "wrong boundary");

    /* truncated */
    ok(check(CURL_B, curl_body, 150) == MP_TRUNCATED, "ends mid-content");
    ok(check(CURL_B, curl_body, 60) == MP_TRUNCATED, "ends mid-headers");
    ok(check(CURL_B, curl_body, 45) == MP_TRUNCATED, "ends after the first delimiter line's CR");
    ok(check(CURL_B, curl_body, 20) == MP_TRUNCATED, "ends mid-delimiter");
    ok(check(CURL_B, curl_body, 0) == MP_TRUNCATED, "empty body");
    ok(check(CURL_B, curl_body, sizeof(curl_body) - 4) == MP_TRUNCATED,
       "ends before the close's second dash");
    ok(check(CURL_B, curl_body, sizeof(curl_body) - 3) == MP_OK, "close without CRLF");
    ok(check(CURL_B, curl_body, sizeof(curl_body) - 2) == MP_BAD_BODY, "close then a bare CR");

    /* framing */
    ok(check("b", S("--b \t\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--  \r\n"
                    "epilogue \n\r junk")) == MP_OK,
       "padding after delimiters, an ignored epilogue");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--x")) ==
           MP_BAD_BODY,
       "junk after the close delimiter");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--bx\r\n"
                    "--b--")) == MP_BAD_BODY,
       "the boundary inside content, then junk");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b -\r\n")) ==
           MP_BAD_BODY,
       "padding then a dash");
    ok(check("b", S("preamble\r\n--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
                    "--b--")) == MP_BAD_BODY,
       "a preamble");
    ok(check("b", S("\r\n--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "a leading CRLF");
    ok(check("b", S("--b--\r\n")) == MP_NO_MODEL, "an empty form");

    /* header lines */
    ok(check("b", S("--b\nContent-Disposition: form-data; name=model\n\nm\n--b--\n")) ==
           MP_BAD_BODY,
       "LF-only line ends");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "one bare LF in the headers");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "a bare CR in the headers");
    ok(check("b", S("--b\r\nContent-Type: text/plain\r\n\r\nm\r\n--b--")) == MP_BAD_BODY,
       "no Content-Disposition");
    ok(check("b", S("--b\r\n\r\nm\r\n--b--")) == MP_BAD_BODY, "no headers at all");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n"
                    "Content-Disposition: form-data; name=x\r\n\r\nm\r\n--b--")) == MP_BAD_BODY,
       "two Content-Dispositions");
    ok(check("b", S("--b\r\nContent-Disposition: attachment; name=model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "not form-data");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; filename=a\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "no name");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "name twice");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=\"model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "unterminated quoted name");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name = model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "spaces around '='");
    ok(check("b", S("--b\r\nContent-Disposition: form-data;\r\n name=model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "obs-fold");
    ok(check("b", S("--b\r\nContent-Disposition : form-data; name=model\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "space before the colon");
    ok(check("b", S("--b\r\nX-No-Colon\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
                    "--b--")) == MP_BAD_BODY,
       "a line without a colon");
    ok(check("b", S("--b\r\nX-A: \0\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
                    "--b--")) == MP_BAD_BODY,
       "NUL in a header");
    ok(check("b", S("--b\r\ncontent-disposition: FORM-DATA ;NAME=\"mo\\del\"; Filename*=UTF-8''"
                    "%e2\r\nX-Other: \x01\xff\r\n\r\nm\r\n--b--")) == MP_BAD_BODY,
       "an escaped name is refused (parsers differ on it)");
    ok(check("b", S("--b\r\ncontent-disposition: FORM-DATA ;NAME=\"model\"; Filename*=UTF-8''"
                    "%e2\r\nX-Other: \x01\xff\r\n\r\nm\r\n--b--")) == MP_MODEL_BAD,
       "case-insensitive names, filename* on the model");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=\"x\"; name*=UTF-8''model\r\n"
                    "\r\nm\r\n--b--")) == MP_BAD_BODY,
       "name* is refused (some servers take it over name)");
    ok(check("b",
             S("--b\r\nContent-Disposition: form-data; name=\"m\xc3\xa9\"\r\n\r\nm\r\n--b--")) ==
           MP_BAD_BODY,
       "a name past ASCII is refused");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\nbQ==\r\n--b--")) == MP_BAD_BODY,
       "Content-Transfer-Encoding is refused");
    ok(check("b", S("--b\r\ncontent-disposition: FORM-DATA ;NAME=\"model\" \r\nX-Other: "
                    "\x01\xff\r\n\r\nm\r\n--b--")) == MP_OK,
       "case-insensitive names, odd bytes in another header");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=\"a\x01b\"; filename=\"\"\r\n"
                    "\r\n\r\n--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
                    "--b--")) == MP_OK,
       "control bytes in a quoted name, an empty filename, empty content");

    /* header block size */
    char big[MULTIPART_MAX_HEADER + 200];
    int hl = snprintf(big, sizeof(big), "--b\r\nContent-Disposition: form-data; name=model\r\nX: ");
    size_t blk = 5; /* the block starts after "--b\r\n" */
    size_t fill = MULTIPART_MAX_HEADER - ((size_t)hl - blk) - 4; /* CRLF CRLF */
    memset(big + hl, 'x', fill);
    memcpy(big + (size_t)hl + fill, "\r\n\r\nm\r\n--b--", 12);
    ok(check("b", big, (size_t)hl + fill + 12) == MP_OK, "a header block of exactly %d bytes",
       MULTIPART_MAX_HEADER);
    memset(big + hl, 'x', fill + 1);
    memcpy(big + (size_t)hl + fill + 1, "\r\n\r\nm\r\n--b--", 12);
    struct multipart mp;
    multipart_init(&mp, "b");
    enum multipart_status st = multipart_feed(&mp, big, (size_t)hl + fill + 13, false);
    ok(st == MP_HEADER_TOO_LONG && mp.err_off == blk + MULTIPART_MAX_HEADER - 1,
       "one byte more: too long, before the end (off %zu)", mp.err_off);
}

static void test_model(void)
{
    const char *dup = "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
                      "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nn\r\n--b--\r\n";
    struct multipart mp;
    multipart_init(&mp, "b");
    size_t cut = strstr(dup, "n\r\n--b--") - dup;
    ok(multipart_feed(&mp, dup, cut, false) == MP_DUP_MODEL, "model twice: seen at its header");
    ok(multipart_feed(&mp, dup, strlen(dup), true) == MP_DUP_MODEL, "the verdict sticks");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=stream\r\n\r\ntrue\r\n--b\r\n"
                    "Content-Disposition: form-data; name=stream\r\n\r\nfalse\r\n--b--")) ==
           MP_DUP_STREAM,
       "stream twice");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nm\r\n"
                    "--b--")) == MP_NO_MODEL,
       "no model part");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=\"Model\"\r\n\r\nm\r\n--b--")) ==
           MP_NO_MODEL,
       "the name is case-sensitive");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.txt\"\r\n"
                    "\r\nm\r\n--b--")) == MP_MODEL_BAD,
       "model as a file");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\n\r\n--b--")) ==
           MP_MODEL_BAD,
       "empty model");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\na\tb\r\n--b--")) ==
           MP_MODEL_BAD,
       "model with a tab");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\na\r\n\r\n--b--")) ==
           MP_MODEL_BAD,
       "model with a CRLF");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\na\x7f\r\n--b--")) ==
           MP_MODEL_BAD,
       "model with DEL");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nmod\xc3\xa9l\r\n"
                    "--b--")) == MP_OK,
       "model with UTF-8");
    char body[1024];
    char name[CONFIG_MAX_MODEL_NAME + 2];
    memset(name, 'm', sizeof(name) - 1);
    name[CONFIG_MAX_MODEL_NAME] = '\0';
    int n = snprintf(body, sizeof(body),
                     "--b\r\nContent-Disposition: form-data; name=model\r\n\r\n%s\r\n--b--", name);
    struct outcome o = whole("b", body, (size_t)n);
    ok(o.st == MP_OK && o.model_len == CONFIG_MAX_MODEL_NAME && strcmp(o.model, name) == 0,
       "a %d-byte model", CONFIG_MAX_MODEL_NAME);
    ok(every_split("b", body, (size_t)n), "... at every split");
    name[CONFIG_MAX_MODEL_NAME] = 'm';
    name[CONFIG_MAX_MODEL_NAME + 1] = '\0';
    n = snprintf(body, sizeof(body),
                 "--b\r\nContent-Disposition: form-data; name=model\r\n\r\n%s\r\n--b--", name);
    ok(check("b", body, (size_t)n) == MP_MODEL_BAD, "a %d-byte model", CONFIG_MAX_MODEL_NAME + 1);
    ok(every_split("b", body, (size_t)n), "... at every split");
    ok(check("b", S("--b\r\nContent-Disposition: form-data; name=stream\r\n\r\nTRUE\r\n--b\r\n"
                    "Content-Disposition: form-data; name=model\r\n\r\nm\r\n--b--")) == MP_OK &&
           whole("b", S("--b\r\nContent-Disposition: form-data; name=stream\r\n\r\nTRUE\r\n--b\r\n"
                        "Content-Disposition: form-data; name=model\r\n\r\nm\r\n--b--"))
               .stream,
       "stream TRUE");
    ok(!whole("b", S("--b\r\nContent-Disposition: form-data; name=stream\r\n\r\ntrue \r\n--b\r\n"
                     "Content-Disposition: form-data; name=model\r\n\r\nm\r\n--b--"))
            .stream,
       "stream 'true ' is not true");
}

static void test_parts(void)
{
    const char part[] = "--" NODE_B "\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n";
    size_t plen = sizeof(part) - 1;
    size_t total = plen * 10000;
    char *body = xmalloc(total);
    for (size_t i = 0; i < 10000; i++) {
        memcpy(body + i * plen, part, plen);
    }
    struct multipart mp;
    size_t fed = 0;
    enum multipart_status st = run_step(&mp, NODE_B, body, total, 4096, &fed);
    ok(st == MP_TOO_MANY_PARTS && fed < total / 2 && mp.nparts == MULTIPART_MAX_PARTS + 1 &&
           mp.err_off == 1000 * plen + 2 + strlen(NODE_B) + 2,
       "10000 parts: too many, after %zu of %zu bytes (off %zu)", fed, total, mp.err_off);
    free(body);

    size_t cap = 1000 * 80 + 200;
    char *b2 = xmalloc(cap);
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        n += (size_t)snprintf(b2 + n, cap - n,
                              "--b\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\nv\r\n",
                              i == 500 ? "model" : "f");
    }
    memcpy(b2 + n, "--b--\r\n", 7);
    n += 7;
    st = run_step(&mp, "b", b2, n, 1000, NULL);
    ok(st == MP_OK && mp.nparts == 1000 && strcmp(mp.model, "v") == 0, "1000 parts are fine");
    free(b2);
}

static void test_splits(void)
{
    static const char bin[] = "--q\r\nContent-Disposition: form-data; name=file; filename=x\r\n\r\n"
                              "\r\n-\r\n--\r\n--\0q\r\r\n-\n--Q\r\n--q\r\n"
                              "Content-Disposition: form-data; name=model\r\n\r\nqq\r\n--q--";
    struct {
        const char *b, *s;
        size_t n;
    } v[] = {
        {CURL_B, S(curl_body)},
        {NODE_B, S(node_body)},
        {"q", S(bin)},
        {"b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--bx\r\n--b--")},
        {"b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\na\x01\r\n--b--")},
        {"b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b\r\n"
                "Content-Disposition: form-data; name=model\r\n\r\nm\r\n--b--")},
        {"b", S("--b\r\nContent-Disposition: form-data; name=x\r\n\r\nm\r\n--b--\r\n")},
        {"b", S("--b\nContent-Disposition: form-data; name=model\n\nm\n--b--\n")},
        {"b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--\r")},
        {"b", S("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b")},
    };
    ok(check("q", S(bin)) == MP_OK, "binary content with CR, LF, NUL and near-delimiters");
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        ok(every_split(v[i].b, v[i].s, v[i].n), "sample %zu (%d): same outcome at every split", i,
           whole(v[i].b, v[i].s, v[i].n).st);
    }
}

static double since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A 25 MB file part, fed 16 KiB at a time. filler(i) is content byte i. */
static double big_body(int kind, enum multipart_status *st)
{
    const char head[] = "--" CURL_B "\r\nContent-Disposition: form-data; name=\"file\"; "
                        "filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    const char tail[] = "\r\n--" CURL_B "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"
                        "whisper-1\r\n--" CURL_B "--\r\n";
    size_t size = 25u << 20;
    size_t total = sizeof(head) - 1 + size + sizeof(tail) - 1;
    char *body = xmalloc(total);
    memcpy(body, head, sizeof(head) - 1);
    char *c = body + sizeof(head) - 1;
    if (kind == 0) {
        uint32_t x = 12345;
        for (size_t i = 0; i < size; i++) {
            x = x * 1103515245u + 12345u;
            c[i] = (char)(x >> 24);
        }
    } else {
        /* near-delimiters all the way: "\r\n--" and most of the boundary */
        static const char near[] = "\r\n--" CURL_B;
        size_t nl = sizeof(near) - 2;
        for (size_t i = 0; i < size; i++) {
            c[i] = near[i % nl];
        }
    }
    memcpy(c + size, tail, sizeof(tail) - 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct multipart mp;
    *st = run_step(&mp, CURL_B, body, total, 16384, NULL);
    double t = since(&t0);
    free(body);
    return t;
}

int main(void)
{
    test_boundary();
    test_bodies();
    test_model();
    test_parts();
    test_splits();
    enum multipart_status st;
    double t = big_body(0, &st);
    ok(st == MP_OK && t < 1.0, "25 MB of random bytes in 16 KiB feeds: %.3f s", t);
    t = big_body(1, &st);
    ok(st == MP_OK && t < 1.0, "25 MB of near-delimiters in 16 KiB feeds: %.3f s", t);
    ok(strcmp(multipart_status_message(MP_NO_MODEL), "you must provide a model parameter") == 0,
       "the no-model message");
    ok(strcmp(multipart_status_message(MP_TOO_MANY_PARTS),
              "The multipart body has more than 1000 parts.") == 0,
       "the too-many-parts message");
    bool all = true;
    for (int s = MP_DUP_STREAM; s <= MP_OK; s++) {
        const char *m = multipart_status_message((enum multipart_status)s);
        all = all && m != NULL && m[0] != '\0';
    }
    ok(all, "every status has a message");
    return tap_done();
}
