/* fuzz_retry_after.c - libFuzzer harness: Retry-After and the other header rules */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long s = http_retry_after((const char *)data, size, 1700000000, 3600);
    if (s < -1 || s > 3600) {
        __builtin_trap();
    }
    (void)http_forward_header((const char *)data, size);
    return 0;
}
