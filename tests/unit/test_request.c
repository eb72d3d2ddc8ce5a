/* test_request.c - unit tests of request.c: strict JSON, model, stream, mapping */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/request.c"
#include "tap.h"

#include <stdlib.h>

static enum request_status scan(const char *s, struct request_info *info)
{
    return request_scan(s, strlen(s), info, NULL);
}

int main(void)
{
    struct request_info in;
    ok(scan("{\"model\":\"gpt-4o\",\"messages\":[]}", &in) == REQUEST_OK &&
           strcmp(in.model, "gpt-4o") == 0 && !in.stream,
       "simple body");
    ok(scan(" {\"stream\":true, \"model\" : \"m\" } ", &in) == REQUEST_OK && in.stream,
       "stream true");
    ok(scan("{\"stream\":\"true\",\"model\":\"m\"}", &in) == REQUEST_STREAM_NOT_BOOL,
       "stream \"true\" is refused (a backend might read it as true)");
    ok(scan("{\"stream\":1,\"model\":\"m\"}", &in) == REQUEST_STREAM_NOT_BOOL,
       "stream 1 is refused");
    ok(scan("{\"stream\":null,\"model\":\"m\"}", &in) == REQUEST_OK && !in.stream &&
           scan("{\"stream\":false,\"model\":\"m\"}", &in) == REQUEST_OK && !in.stream,
       "stream null and false: not a stream");
    ok(scan("{\"stream\":true,\"stream\":false,\"model\":\"m\"}", &in) == REQUEST_DUP_STREAM,
       "stream twice is refused");
    ok(scan("{\"model\":\"m\",\"stream_options\":{},\"stream_options\":{}}", &in) ==
           REQUEST_DUP_STREAM,
       "stream_options twice is refused");
    ok(scan("{\"model\":\"m\",\"stream_options\":{\"include_usage\":true,\"x\":1,"
            "\"include_usage\":false}}",
            &in) == REQUEST_DUP_STREAM,
       "include_usage twice is refused");
    ok(scan("{\"model\":\"m\",\"stream_options\":{\"x\":{\"include_usage\":1},"
            "\"include_usage\":true}}",
            &in) == REQUEST_OK,
       "an include_usage nested deeper does not count");
    ok(scan("{\"inner\":{\"model\":\"x\"},\"model\":\"m\"}", &in) == REQUEST_OK &&
           strcmp(in.model, "m") == 0,
       "nested model ignored");
    ok(scan("{\"mod\\u0065l\":\"m\\u002d1\"}", &in) == REQUEST_OK && strcmp(in.model, "m-1") == 0,
       "escaped key and value decoded");
    ok(scan("{\"model\":\"caf\\u00e9 \\ud83d\\ude00\"}", &in) == REQUEST_OK &&
           strcmp(in.model, "caf\xc3\xa9 \xf0\x9f\x98\x80") == 0,
       "unicode escapes and surrogate pairs");
    ok(scan("{\"model\":\"a\\u0000b\"}", &in) == REQUEST_MODEL_BAD, "NUL in model rejected");
    ok(scan("{\"model\":\"\"}", &in) == REQUEST_MODEL_BAD, "empty model rejected");
    ok(scan("{\"model\":1}", &in) == REQUEST_MODEL_NOT_STRING, "numeric model");
    ok(scan("{\"model\":null}", &in) == REQUEST_MODEL_NOT_STRING, "null model");
    ok(scan("{\"messages\":[]}", &in) == REQUEST_NO_MODEL, "no model");
    ok(scan("{\"model\":\"a\",\"model\":\"b\"}", &in) == REQUEST_DUP_MODEL, "duplicate model");
    ok(scan("[1]", &in) == REQUEST_NOT_OBJECT, "array body");
    ok(scan("\"x\"", &in) == REQUEST_NOT_OBJECT, "string body");
    static const char *const bad[] = {
        "",
        "{",
        "{\"model\":\"m\"",
        "{\"model\":\"m\",}",
        "{'model':'m'}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":-}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\x01\"}",
        "{\"a\":[1,]}",
        "{\"model\":\"m\"} x",
        "{\"a\":\"\\u12\"}",
        "{\"a\" 1}",
        "{\"a\":1e}",
        "{\"a\":NaN}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(scan(bad[i], &in) == REQUEST_BAD_JSON, "invalid JSON %zu rejected", i);
    }
    ok(scan("{\"a\":[-0.5e+10,1E-2,0,true,false,null,{},[]],\"model\":\"m\"}", &in) == REQUEST_OK,
       "every JSON value kind");
    /* depth */
    char *deep = malloc(2 * REQUEST_MAX_DEPTH + 64);
    size_t p = 0;
    p += (size_t)sprintf(deep, "{\"model\":\"m\",\"x\":");
    for (int i = 0; i < REQUEST_MAX_DEPTH + 5; i++) {
        deep[p++] = '[';
    }
    deep[p] = '\0';
    ok(request_scan(deep, p, &in, NULL) == REQUEST_TOO_DEEP, "nesting past the limit");
    free(deep);
    size_t off = 99;
    ok(request_scan("{\"model\":x}", 11, &in, &off) == REQUEST_BAD_JSON && off == 9,
       "error offset reported (%zu)", off);
    /* not NUL-terminated input: scan must respect len */
    const char buf[] = "{\"model\":\"m\"}GARBAGE";
    ok(request_scan(buf, 13, &in, NULL) == REQUEST_OK, "length, not NUL, ends the body");

    /* mapping */
    const char *body = "{ \"model\" : \"short\", \"x\":1.50 }";
    struct buf out;
    buf_init(&out, 1024);
    ok(scan(body, &in) == REQUEST_OK, "mapping input scans");
    ok(request_map_model(body, strlen(body), &in, "org/long-name\"q", &out) == BUF_OK &&
           strcmp(out.data, "{ \"model\" : \"org/long-name\\\"q\", \"x\":1.50 }") == 0,
       "only the model value changes, escaped: %s", out.data);
    buf_cleanup(&out);
    ok(strlen(request_status_message(REQUEST_NO_MODEL)) > 0, "messages exist");
    /* asking a stream for its usage: where the body changes, and how */
    static const struct {
        const char *in, *out;
        int asked;
    } usage[] = {
        {"{\"model\":\"m\",\"stream\":true}",
         "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", 0},
        {"{\"model\":\"m\" , \"stream\":true }  ",
         "{\"model\":\"m\" , \"stream\":true ,\"stream_options\":{\"include_usage\":true}}  ", 0},
        {"{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}", NULL, 1},
        {"{\"model\":\"m\",\"stream_options\":{}}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}", 0},
        {"{\"model\":\"m\",\"stream_options\":{\"x\":1}}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true,\"x\":1}}", 0},
        {"{\"model\":\"m\",\"stream_options\":{\"x\":1,\"include_usage\":false}}",
         "{\"model\":\"m\",\"stream_options\":{\"x\":1,\"include_usage\":true}}", 0},
        {"{\"model\":\"m\",\"stream_options\":null}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}", 0},
        {"{\"stream_options\":{\"a\":{\"include_usage\":true}},\"model\":\"m\"}",
         "{\"stream_options\":{\"include_usage\":true,\"a\":{\"include_usage\":true}},\"model\":"
         "\"m\"}",
         0},
    };
    for (size_t i = 0; i < ARRAY_LEN(usage); i++) {
        struct request_info ui;
        const char *src = usage[i].in;
        int rs = request_scan(src, strlen(src), &ui, NULL);
        struct request_edit e;
        enum request_usage u = request_usage_edit(src, strlen(src), &ui, &e);
        char edited[512] = "";
        if (u == REQUEST_USAGE_ADDED) {
            snprintf(edited, sizeof(edited), "%.*s%.*s%s", (int)e.off, src, (int)e.ins_len, e.ins,
                     src + e.off + e.del);
        }
        ok(rs == REQUEST_OK &&
               (usage[i].asked ? u == REQUEST_USAGE_ASKED
                               : u == REQUEST_USAGE_ADDED && strcmp(edited, usage[i].out) == 0),
           "include_usage for %s -> %s", src, usage[i].asked ? "asked already" : edited);
    }
    {
        struct request_info pi;
        char id[REQUEST_ID_MAX + 1];
        const char *b1 = "{\"model\":\"m\",\"previous_response_id\":\"resp_\\u0041b\"}";
        ok(request_scan(b1, strlen(b1), &pi, NULL) == REQUEST_OK &&
               request_previous_id(b1, &pi, id) && strcmp(id, "resp_Ab") == 0,
           "previous_response_id decoded");
        const char *b2 = "{\"model\":\"m\",\"previous_response_id\":null}";
        ok(request_scan(b2, strlen(b2), &pi, NULL) == REQUEST_OK && pi.prev_len == 0,
           "previous_response_id null: none");
        const char *badp[] = {
            "{\"model\":\"m\",\"previous_response_id\":7}",
            "{\"model\":\"m\",\"previous_response_id\":\"a b\"}",
            "{\"model\":\"m\",\"previous_response_id\":\"\"}",
            "{\"model\":\"m\",\"previous_response_id\":\"a\",\"previous_response_id\":\"a\"}"};
        for (size_t i = 0; i < ARRAY_LEN(badp); i++) {
            ok(request_scan(badp[i], strlen(badp[i]), &pi, NULL) == REQUEST_BAD_PREVIOUS,
               "bad previous_response_id %zu refused", i);
        }
    }
    return tap_done();
}
