/* fuzz_request.c - libFuzzer harness: client body scan and model mapping */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "request.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct request_info info;
    size_t off = 0;
    const char *body = (const char *)data;
    if (request_scan(body, size, &info, &off) != REQUEST_OK) {
        return 0;
    }
    /* the model span must be a JSON string inside the body */
    if (info.model_off + info.model_len > size || body[info.model_off] != '"' ||
        body[info.model_off + info.model_len - 1] != '"') {
        __builtin_trap();
    }
    struct buf out;
    buf_init(&out, size + 1024);
    if (request_map_model(body, size, &info, "mapped/\"model\\name", &out) != BUF_OK) {
        __builtin_trap();
    }
    /* the mapped body is still valid JSON with the new model */
    struct request_info again;
    if (request_scan(out.data, out.len, &again, NULL) != REQUEST_OK ||
        strcmp(again.model, "mapped/\"model\\name") != 0 || again.stream != info.stream) {
        __builtin_trap();
    }
    buf_cleanup(&out);
    return 0;
}
