/* fuzz_multipart.c - libFuzzer harness: multipart/form-data bodies whole and split, boundaries */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "multipart.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input: one byte choosing the split step, a Content-Type line ending in
 * '\n' (its boundary, or "b" when it has none), then the body. */

struct outcome {
    enum multipart_status st;
    size_t err_off, model_off, model_len;
    char model[CONFIG_MAX_MODEL_NAME + 1];
    bool stream;
    unsigned nparts;
};

static void run(const char *boundary, const char *body, size_t len, size_t step, struct outcome *o)
{
    struct multipart mp;
    multipart_init(&mp, boundary);
    size_t have = 0;
    enum multipart_status st;
    do {
        have = have + step > len ? len : have + step;
        st = multipart_feed(&mp, body, have, have == len);
        if (st == MP_MORE && have == len) {
            __builtin_trap(); /* MP_MORE with final */
        }
    } while (st == MP_MORE && have < len);
    if (multipart_feed(&mp, body, len, true) != st) {
        __builtin_trap(); /* not sticky */
    }
    if (memchr(mp.model, '\0', sizeof(mp.model)) == NULL) {
        __builtin_trap();
    }
    o->st = st;
    o->err_off = st < 0 ? mp.err_off : 0;
    o->model_off = mp.model_off;
    o->model_len = mp.model_len;
    memcpy(o->model, mp.model, sizeof(o->model));
    o->stream = mp.stream;
    o->nparts = mp.nparts;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t step = 1 + data[0] % 32;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr(s, '\n', n < 512 ? n : 512);
    char ct[513];
    size_t ctlen = nl ? (size_t)(nl - s) : 0;
    memcpy(ct, s, ctlen);
    ct[ctlen] = '\0';
    char boundary[MULTIPART_MAX_BOUNDARY + 1];
    memset(boundary, 'x', sizeof(boundary));
    enum multipart_status bst = multipart_boundary(ct, boundary, sizeof(boundary));
    if (bst == MP_OK) {
        size_t bl = strnlen(boundary, sizeof(boundary));
        if (bl == 0 || bl > MULTIPART_MAX_BOUNDARY || boundary[bl - 1] == ' ') {
            __builtin_trap();
        }
        char small[8];
        if (multipart_boundary(ct, small, sizeof(small)) !=
            (bl < sizeof(small) ? MP_OK : MP_NO_BOUNDARY)) {
            __builtin_trap();
        }
    } else if (bst != MP_NOT_MULTIPART && bst != MP_NO_BOUNDARY) {
        __builtin_trap();
    } else {
        memcpy(boundary, "b", 2);
    }
    if (nl != NULL) {
        n -= ctlen + 1;
        s += ctlen + 1;
    }
    /* a copy of exactly n bytes, so that ASan sees any read past the end */
    char *body = malloc(n ? n : 1);
    memcpy(body, s, n);

    static struct outcome all, split;
    run(boundary, body, n, n ? n : 1, &all);
    run(boundary, body, n, step, &split);
    if (all.st != split.st || all.err_off != split.err_off || all.model_off != split.model_off ||
        all.model_len != split.model_len || strcmp(all.model, split.model) != 0 ||
        all.stream != split.stream || all.nparts != split.nparts) {
        __builtin_trap();
    }
    if (all.st < 0 && all.err_off > n) {
        __builtin_trap();
    }
    if (all.st == MP_OK) {
        if (all.model_len == 0 || all.model_len > CONFIG_MAX_MODEL_NAME ||
            all.model_off + all.model_len > n || strlen(all.model) != all.model_len ||
            memcmp(body + all.model_off, all.model, all.model_len) != 0 ||
            all.nparts > MULTIPART_MAX_PARTS) {
            __builtin_trap();
        }
        for (size_t i = 0; i < all.model_len; i++) {
            unsigned char c = (unsigned char)all.model[i];
            if (c < 0x20 || c == 0x7f) {
                __builtin_trap();
            }
        }
        /* the span maps: another model there gives a body just as good */
        static const char other[] = "mapped-model";
        size_t mlen = n - all.model_len + sizeof(other) - 1;
        char *mapped = malloc(mlen);
        memcpy(mapped, body, all.model_off);
        memcpy(mapped + all.model_off, other, sizeof(other) - 1);
        memcpy(mapped + all.model_off + sizeof(other) - 1, body + all.model_off + all.model_len,
               n - all.model_off - all.model_len);
        static struct outcome again;
        run(boundary, mapped, mlen, step, &again);
        if (again.st != MP_OK || strcmp(again.model, other) != 0 ||
            again.model_off != all.model_off || again.stream != all.stream ||
            again.nparts != all.nparts) {
            __builtin_trap();
        }
        free(mapped);
    }
    free(body);
    return 0;
}
