/* test_meter.c - unit tests of meter.c: usage from bodies and streams, the usage chunk */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/meter.c"
#include "tap.h"

static const char *stream =
    "data: "
    "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,"
    "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
    "data: [DONE]\n\n";

static void run(struct meter *m, size_t step, struct buf *out)
{
    size_t n = strlen(stream);
    for (size_t i = 0; i < n; i += step) {
        meter_stream(m, stream + i, i + step > n ? n - i : step, out);
    }
    meter_stream_end(m, out);
}

int main(void)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    int same = 1;
    for (size_t step = 1; step <= strlen(stream); step++) {
        struct meter m;
        meter_init(&m, METER_CHAT_SSE, true, 1 << 20);
        buf_reset(&out);
        run(&m, step, &out);
        same &= m.have && m.prompt == 11 && m.completion == 7 && m.cached == 4 &&
                strstr(out.data, "prompt_tokens") == NULL && strstr(out.data, "[DONE]") != NULL &&
                strstr(out.data, "keep-alive") != NULL &&
                out.len == strlen(stream) -
                               strlen(strstr(stream, "data: {\"id\":\"c\",\"choices\":[],")) +
                               strlen("data: [DONE]\n\n");
        meter_cleanup(&m);
    }
    ok(same, "usage read and the usage-only chunk removed, however the stream is cut");
    struct meter m;
    meter_init(&m, METER_CHAT_SSE, false, 1 << 20);
    buf_reset(&out);
    run(&m, 7, &out);
    ok(m.have && m.prompt == 11 && strcmp(out.data, stream) == 0,
       "a client that asked gets the stream byte for byte, the usage chunk once");
    meter_cleanup(&m);

    meter_init(&m, METER_CHAT_SSE, true, 1 << 20);
    buf_reset(&out);
    const char *crlf =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}"
        "\r\n\r\ndata: [DONE]\r\n\r\n";
    meter_stream(&m, crlf, strlen(crlf), &out);
    meter_stream_end(&m, &out);
    ok(m.prompt == 2 && m.completion == 3 && strcmp(out.data, "data: [DONE]\r\n\r\n") == 0,
       "CRLF events");
    meter_cleanup(&m);

    meter_init(&m, METER_CHAT_SSE, true, 1 << 20);
    buf_reset(&out);
    const char *spaced = "data: {\"choices\":[], \"usage\" :\t{\"prompt_tokens\":8}}\n\n"
                         "data: {\"choices\":[{}],\"usage\": null}\n\n";
    meter_stream(&m, spaced, strlen(spaced), &out);
    ok(m.have && m.prompt == 8 && strcmp(out.data, strstr(spaced, "data: {\"choices\":[{}]")) == 0,
       "usage after spaces is read; \"usage\": null goes on unparsed");
    meter_cleanup(&m);

    meter_init(&m, METER_CHAT_SSE, true, 64);
    buf_reset(&out);
    char big[300];
    memset(big, 'x', sizeof(big));
    meter_stream(&m, "data: ", 6, &out);
    meter_stream(&m, big, sizeof(big), &out);
    meter_stream(&m, "\n\n", 2, &out);
    meter_stream_end(&m, &out);
    ok(out.len == 6 + sizeof(big) + 2, "an event past the cap goes on undecided, nothing lost");
    meter_cleanup(&m);

    meter_init(&m, METER_JSON, false, 1 << 20);
    const char *body =
        "{\"object\":\"chat.completion\",\"choices\":[{\"message\":{}}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9,\"total_tokens\":14}}";
    meter_body(&m, body, 20);
    meter_body(&m, body + 20, strlen(body) - 20);
    meter_body_end(&m);
    ok(m.have && m.prompt == 5 && m.completion == 9 && m.cached == 0, "a JSON answer's usage");
    meter_cleanup(&m);
    meter_init(&m, METER_JSON, false, 16);
    meter_body(&m, body, strlen(body));
    meter_body_end(&m);
    ok(!m.have, "a body past the cap: usage unknown, not guessed");
    meter_cleanup(&m);

    uint64_t p, c, k;
    bool only;
    const char *resp = "{\"usage\":{\"input_tokens\":3,\"output_tokens\":4,"
                       "\"input_tokens_details\":{\"cached_tokens\":9}}}";
    ok(meter_usage_json(resp, strlen(resp), &p, &c, &k, &only) && p == 3 && c == 4 && k == 3,
       "input/output tokens; cached never more than the prompt");
    ok(!meter_usage_json("{\"usage\":null}", 14, &p, &c, &k, &only) &&
           !meter_usage_json("not json", 8, &p, &c, &k, &only),
       "no usage, or no JSON");
    buf_cleanup(&out);
    return tap_done();
}
