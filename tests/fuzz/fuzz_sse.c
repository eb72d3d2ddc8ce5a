/* fuzz_sse.c - libFuzzer harness: the first-event peek over upstream bytes, at every split */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum sse_result run(const char *s, size_t len, size_t step, size_t *end)
{
    struct sse_peek p;
    sse_peek_init(&p);
    enum sse_result r = SSE_MORE;
    for (size_t have = 0; have < len && r == SSE_MORE;) {
        have = have + step > len ? len : have + step;
        r = sse_peek_feed(&p, s, have, end);
    }
    sse_peek_cleanup(&p);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t end_all = 0;
    enum sse_result all = run(s, size, size ? size : 1, &end_all);
    if (all != SSE_MORE && (end_all == 0 || end_all > size)) {
        __builtin_trap();
    }
    /* fed in small pieces the verdict may only come earlier at a CR that
     * the whole buffer shows is a CRLF; otherwise it must be the same */
    size_t end_small = 0;
    enum sse_result small = run(s, size, 1 + size % 7, &end_small);
    if (small != SSE_MORE && (end_small == 0 || end_small > size)) {
        __builtin_trap();
    }
    if (all != SSE_MORE && small != SSE_MORE && small != all) {
        __builtin_trap();
    }
    (void)sse_is_error_payload(s, size);
    return 0;
}
