/* fuzz_fcgi.c - libFuzzer harness: the FastCGI record parser, whole and in pieces */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "fcgi.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct trace {
    unsigned events[64]; /* the first events, STDIN pieces merged */
    size_t nevents;
    uint64_t stdin_hash;
    size_t stdin_len;
    size_t reply_len;
};

static void note(struct trace *t, enum fcgi_event ev)
{
    if (ev == FCGI_EV_STDIN && t->nevents > 0 && t->events[t->nevents - 1] == FCGI_EV_STDIN) {
        return;
    }
    if (t->nevents < 64) {
        t->events[t->nevents++] = ev;
    }
}

static void run(const char *p, size_t n, size_t step, struct trace *t)
{
    struct buf reply;
    buf_init(&reply, 1 << 22);
    struct fcgi_parser ps;
    fcgi_parser_init(&ps, &reply);
    memset(t, 0, sizeof(*t));
    t->stdin_hash = 1469598103934665603ull;
    size_t off = 0;
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        size_t used;
        const char *d;
        size_t dl;
        enum fcgi_event ev = fcgi_feed(&ps, p + off, k, &used, &d, &dl);
        if (used > k || (ev == FCGI_EV_STDIN && (d < p + off || d + dl > p + off + used))) {
            __builtin_trap();
        }
        off += used;
        if (ev == FCGI_EV_PARAMS) {
            for (size_t i = 0; i < ps.npv; i++) {
                if (fcgi_param(&ps, ps.pv[i].name) == NULL) {
                    __builtin_trap();
                }
            }
        }
        if (ev == FCGI_EV_STDIN) {
            for (size_t i = 0; i < dl; i++) {
                t->stdin_hash = (t->stdin_hash ^ (unsigned char)d[i]) * 1099511628211ull;
            }
            t->stdin_len += dl;
        }
        if (ev == FCGI_EV_STDIN_END && ps.keep_conn) {
            fcgi_parser_next(&ps);
        }
        if (ev != FCGI_EV_NONE) {
            note(t, ev);
        }
        if (ev == FCGI_EV_ERROR) {
            break;
        }
        if (used == 0 && ev == FCGI_EV_NONE) {
            __builtin_trap(); /* no progress */
        }
    }
    t->reply_len = reply.len;
    fcgi_parser_cleanup(&ps);
    buf_cleanup(&reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace whole, pieces;
    run((const char *)data, size, size ? size : 1, &whole);
    run((const char *)data, size, 1 + size % 13, &pieces);
    /* however the bytes arrive, the same events, body and replies */
    if (whole.nevents != pieces.nevents ||
        memcmp(whole.events, pieces.events, whole.nevents * sizeof(unsigned)) != 0 ||
        whole.stdin_len != pieces.stdin_len || whole.stdin_hash != pieces.stdin_hash ||
        whole.reply_len != pieces.reply_len) {
        __builtin_trap();
    }
    return 0;
}
