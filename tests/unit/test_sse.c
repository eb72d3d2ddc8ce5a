/* test_sse.c - unit tests of sse.c: first data event, error events, any split */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/sse.c"
#include "tap.h"

/* Feeds s in pieces of `step` bytes; returns the verdict and the end offset. */
static enum sse_result feed(const char *s, size_t step, size_t *end)
{
    struct sse_peek p;
    sse_peek_init(&p);
    size_t len = strlen(s);
    enum sse_result r = SSE_MORE;
    for (size_t have = 0; have < len && r == SSE_MORE;) {
        have = have + step > len ? len : have + step;
        r = sse_peek_feed(&p, s, have, end);
    }
    sse_peek_cleanup(&p);
    return r;
}

int main(void)
{
    size_t end = 0;
    const char *ok1 = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
    ok(feed(ok1, 1000, &end) == SSE_DATA && end == 22, "first data event found (end %zu)", end);
    const char *err1 = "data: {\"error\":{\"message\":\"x\"}}\n\n";
    ok(feed(err1, 1000, &end) == SSE_ERROR, "error payload");
    ok(feed("event: error\ndata: oops\n\n", 1000, &end) == SSE_ERROR, "event: error");
    ok(feed(": keep-alive\n\n: again\n\ndata: {\"a\":1}\n\n", 1000, &end) == SSE_DATA && end == 38,
       "comment-only events skipped (end %zu)", end);
    ok(feed(": keep-alive\n\ndata: {\"error\":1}\n\n", 1000, &end) == SSE_ERROR,
       "error after a comment");
    ok(feed("data: {\"a\":1}\r\n\r\n", 1000, &end) == SSE_DATA && end == 17, "CRLF line ends");
    ok(feed("data: {\"a\":1}\r\rrest", 1000, &end) == SSE_DATA && end == 15, "CR line ends");
    ok(feed("data: {\"a\":1}\n", 1000, &end) == SSE_MORE, "incomplete event waits");
    ok(feed("data: {\"a\":1}\r\n\r", 1000, &end) == SSE_MORE, "a trailing CR waits for LF");
    ok(feed("data:{\"err\nor\":1}\n\n", 1000, &end) == SSE_DATA, "not an error key");
    ok(feed("data: {\"error\"\ndata: :1}\n\n", 1000, &end) == SSE_ERROR, "multi-line data joined");
    /* every split point gives the same verdict */
    const char *samples[] = {ok1, err1, ": c\r\n\r\ndata: x\r\n\r\n",
                             "data: {\"error\":{}}\r\n\r\n"};
    for (size_t i = 0; i < 4; i++) {
        size_t want_end;
        enum sse_result want = feed(samples[i], 100000, &want_end);
        int same = 1;
        for (size_t step = 1; step < strlen(samples[i]); step++) {
            size_t e;
            if (feed(samples[i], step, &e) != want || e != want_end) {
                same = 0;
            }
        }
        ok(same && want != SSE_MORE, "sample %zu: same verdict at every split", i);
    }
    ok(sse_is_error_payload(" {\"error\":null}", 15), "payload with error key");
    ok(!sse_is_error_payload("[DONE]", 6), "[DONE] is not an error");
    ok(sse_is_error_payload("{\"error\":{\"message\":\"trunc", 26), "truncated error payload");
    {
        /* Responses: created and in_progress are held, the next event decides */
        const char *cases[][2] = {
            {"event: response.created\ndata: {\"type\":\"response.created\"}\n\n"
             "event: response.in_progress\ndata: {\"type\":\"response.in_progress\"}\n\n"
             "event: response.output_text.delta\ndata: "
             "{\"type\":\"response.output_text.delta\"}\n\n",
             "d"},
            {"data: {\"type\":\"response.created\"}\n\ndata: {\"type\":\"response.failed\"}\n\n",
             "e"},
            {"event: response.created\ndata: {}\n\nevent: error\ndata: {\"type\":\"error\"}\n\n",
             "e"},
            {"event: response.created\ndata: {\"type\":\"response.created\"}\n\n", "m"},
        };
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            const char *s = cases[i][0];
            for (size_t step = 1; step <= strlen(s); step += 7) {
                struct sse_peek p;
                sse_peek_init(&p);
                p.responses = 1;
                enum sse_result r = SSE_MORE;
                size_t e = 0;
                for (size_t have = 0; have < strlen(s) && r == SSE_MORE;) {
                    have = have + step > strlen(s) ? strlen(s) : have + step;
                    r = sse_peek_feed(&p, s, have, &e);
                }
                sse_peek_cleanup(&p);
                char want = cases[i][1][0];
                ok(r == (want == 'd'   ? SSE_DATA
                         : want == 'e' ? SSE_ERROR
                                       : SSE_MORE),
                   "Responses case %zu, step %zu", i, step);
            }
        }
    }
    return tap_done();
}
