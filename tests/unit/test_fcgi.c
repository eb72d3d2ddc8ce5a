/* test_fcgi.c - unit tests of fcgi.c: the FastCGI wire format */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/fcgi.c"
#include "tap.h"

static void rec(struct buf *b, unsigned type, unsigned id, const void *p, size_t n, size_t pad)
{
    unsigned char h[8] = {1,
                          (unsigned char)type,
                          (unsigned char)(id >> 8),
                          (unsigned char)id,
                          (unsigned char)(n >> 8),
                          (unsigned char)n,
                          (unsigned char)pad,
                          0};
    buf_append(b, h, 8);
    buf_append(b, p, n);
    static const char zeros[256] = {0};
    buf_append(b, zeros, pad);
}

static void pair(struct buf *b, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    unsigned char l[8];
    size_t k = 0;
    l[k++] = (unsigned char)nl;
    if (vl < 128) {
        l[k++] = (unsigned char)vl;
    } else {
        l[k++] = (unsigned char)(0x80 | vl >> 24);
        l[k++] = (unsigned char)(vl >> 16);
        l[k++] = (unsigned char)(vl >> 8);
        l[k++] = (unsigned char)vl;
    }
    buf_append(b, l, k);
    buf_append(b, name, nl);
    buf_append(b, value, vl);
}

static void begin(struct buf *b, unsigned id, unsigned role, unsigned flags)
{
    unsigned char body[8] = {(unsigned char)(role >> 8), (unsigned char)role, (unsigned char)flags};
    rec(b, T_BEGIN_REQUEST, id, body, 8, 0);
}

/* A whole request: BEGIN, PARAMS in two records, STDIN in two, ends. */
static void request(struct buf *b, unsigned id, const char *long_value)
{
    begin(b, id, ROLE_RESPONDER, FLAG_KEEP_CONN);
    struct buf pv;
    buf_init(&pv, 1 << 20);
    pair(&pv, "REQUEST_METHOD", "POST");
    pair(&pv, "REQUEST_URI", "/v1/chat/completions");
    pair(&pv, "HTTP_X_LONG", long_value);
    pair(&pv, "EMPTY", "");
    rec(b, T_PARAMS, id, pv.data, 10, 3);
    rec(b, T_PARAMS, id, pv.data + 10, pv.len - 10, 0);
    rec(b, T_PARAMS, id, NULL, 0, 0);
    rec(b, T_STDIN, id, "{\"model\":", 9, 7);
    rec(b, T_STDIN, id, "\"m\"}", 4, 0);
    rec(b, T_STDIN, id, NULL, 0, 0);
    buf_cleanup(&pv);
}

struct seen {
    int begin, params, stdin_end, abort, error;
    char body[64];
    size_t body_len;
    char method[16], uri[64], empty[4];
    size_t long_len;
};

/* Feeds b in pieces of `step` bytes, recording what comes out. */
static void run(struct fcgi_parser *ps, const struct buf *b, size_t step, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    size_t off = 0;
    while (off < b->len) {
        size_t n = b->len - off < step ? b->len - off : step;
        size_t used = 0;
        const char *d;
        size_t dl;
        enum fcgi_event ev = fcgi_feed(ps, b->data + off, n, &used, &d, &dl);
        off += used;
        switch (ev) {
        case FCGI_EV_BEGIN:
            s->begin++;
            break;
        case FCGI_EV_PARAMS:
            s->params++;
            if (fcgi_param(ps, "HTTP_X_LONG") != NULL) {
                snprintf(s->method, sizeof(s->method), "%s", fcgi_param(ps, "REQUEST_METHOD"));
                snprintf(s->uri, sizeof(s->uri), "%s", fcgi_param(ps, "REQUEST_URI"));
                snprintf(s->empty, sizeof(s->empty), "%s", fcgi_param(ps, "EMPTY"));
                s->long_len = strlen(fcgi_param(ps, "HTTP_X_LONG"));
            }
            break;
        case FCGI_EV_STDIN:
            memcpy(s->body + s->body_len, d, dl);
            s->body_len += dl;
            break;
        case FCGI_EV_STDIN_END:
            s->stdin_end++;
            break;
        case FCGI_EV_ABORT:
            s->abort++;
            break;
        case FCGI_EV_ERROR:
            s->error++;
            return;
        case FCGI_EV_NONE:
            break;
        }
        if (used == 0 && ev == FCGI_EV_NONE) {
            break;
        }
    }
}

int main(void)
{
    char long_value[300];
    memset(long_value, 'v', sizeof(long_value) - 1);
    long_value[sizeof(long_value) - 1] = '\0';
    struct buf in, reply;
    buf_init(&in, 8u << 20);
    buf_init(&reply, 1 << 20);
    request(&in, 1, long_value);

    struct fcgi_parser ps;
    struct seen s;
    int all_splits = 1;
    for (size_t step = 1; step <= in.len; step++) {
        fcgi_parser_init(&ps, &reply);
        run(&ps, &in, step, &s);
        if (s.begin != 1 || s.params != 1 || s.stdin_end != 1 || s.error || s.body_len != 13 ||
            memcmp(s.body, "{\"model\":\"m\"}", 13) != 0 || strcmp(s.method, "POST") != 0 ||
            strcmp(s.uri, "/v1/chat/completions") != 0 || s.long_len != sizeof(long_value) - 1 ||
            strcmp(s.empty, "") != 0) {
            all_splits = 0;
        }
        fcgi_parser_cleanup(&ps);
    }
    ok(all_splits, "a request parses the same however its bytes are split (%zu splits)", in.len);

    fcgi_parser_init(&ps, &reply);
    run(&ps, &in, in.len, &s);
    ok(ps.keep_conn && ps.req_id == 1, "keep-conn flag and request id");
    ok(fcgi_param(&ps, "NOPE") == NULL, "absent parameter is NULL");
    fcgi_parser_next(&ps);
    buf_reset(&in);
    request(&in, 2, "second");
    run(&ps, &in, 7, &s);
    ok(s.begin == 1 && s.stdin_end == 1 && ps.req_id == 2 && s.long_len == 6,
       "a kept connection serves the next request");
    fcgi_parser_cleanup(&ps);

    /* a second request while one is open: refused, the first goes on */
    fcgi_parser_init(&ps, &reply);
    buf_reset(&in);
    buf_reset(&reply);
    begin(&in, 1, ROLE_RESPONDER, 0);
    begin(&in, 2, ROLE_RESPONDER, 0);
    run(&ps, &in, in.len, &s);
    ok(s.begin == 1 && ps.req_id == 1 && reply.len == 16 && (unsigned char)reply.data[1] == 3 &&
           reply.data[3] == 2 && reply.data[12] == ST_CANT_MPX_CONN,
       "a multiplexed BEGIN gets END_REQUEST(CANT_MPX_CONN)");
    fcgi_parser_cleanup(&ps);

    /* roles and management records */
    fcgi_parser_init(&ps, &reply);
    buf_reset(&in);
    buf_reset(&reply);
    begin(&in, 5, 2 /* authorizer */, 0);
    run(&ps, &in, in.len, &s);
    ok(s.begin == 0 && reply.len == 16 && reply.data[12] == ST_UNKNOWN_ROLE,
       "another role gets END_REQUEST(UNKNOWN_ROLE)");
    buf_reset(&in);
    buf_reset(&reply);
    struct buf q;
    buf_init(&q, 4096);
    pair(&q, "FCGI_MPXS_CONNS", "");
    pair(&q, "FCGI_OTHER", "");
    rec(&in, T_GET_VALUES, 0, q.data, q.len, 0);
    rec(&in, 99, 0, NULL, 0, 0);
    run(&ps, &in, 3, &s);
    ok(reply.len > 8 && (unsigned char)reply.data[1] == T_GET_VALUES_RESULT &&
           memmem(reply.data, reply.len, "FCGI_MPXS_CONNS0", 16) != NULL &&
           memmem(reply.data, reply.len, "FCGI_OTHER", 10) == NULL,
       "GET_VALUES answers what it knows");
    ok(memmem(reply.data, reply.len, "\x01\x0b\x00\x00\x00\x08", 6) != NULL,
       "an unknown management record gets UNKNOWN_TYPE");
    buf_cleanup(&q);
    fcgi_parser_cleanup(&ps);

    /* abort and records of other requests */
    fcgi_parser_init(&ps, &reply);
    buf_reset(&in);
    begin(&in, 1, ROLE_RESPONDER, 0);
    rec(&in, T_STDIN, 9, "ignored", 7, 0);
    rec(&in, T_ABORT_REQUEST, 1, NULL, 0, 0);
    run(&ps, &in, in.len, &s);
    ok(s.abort == 1 && s.body_len == 0 && s.error == 0,
       "ABORT_REQUEST is reported; records of other ids are ignored");
    fcgi_parser_cleanup(&ps);

    /* protocol violations */
    static const struct {
        const char *what;
        int kind;
    } bad[] = {{"version 2", 0},
               {"STDIN before PARAMS ended", 1},
               {"PARAMS after their end", 2},
               {"a record only applications send", 3},
               {"a BEGIN_REQUEST body of 7 bytes", 4},
               {"a name-value length past the record", 5},
               {"a NUL inside a parameter", 6}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        fcgi_parser_init(&ps, &reply);
        buf_reset(&in);
        if (bad[i].kind == 0) {
            unsigned char h[8] = {2, T_BEGIN_REQUEST, 0, 1, 0, 8, 0, 0};
            buf_append(&in, h, 8);
        } else if (bad[i].kind == 4) {
            rec(&in, T_BEGIN_REQUEST, 1, "\0\1\0\0\0\0\0", 7, 0);
        } else {
            begin(&in, 1, ROLE_RESPONDER, 0);
            if (bad[i].kind == 1) {
                rec(&in, T_STDIN, 1, "x", 1, 0);
            } else if (bad[i].kind == 2) {
                rec(&in, T_PARAMS, 1, NULL, 0, 0);
                rec(&in, T_PARAMS, 1, "\1\1ab", 4, 0);
            } else if (bad[i].kind == 3) {
                rec(&in, T_STDOUT, 1, "x", 1, 0);
            } else if (bad[i].kind == 5) {
                rec(&in, T_PARAMS, 1, "\5\1ab", 4, 0);
                rec(&in, T_PARAMS, 1, NULL, 0, 0);
            } else {
                rec(&in, T_PARAMS, 1, "\2\1a\0b", 5, 0);
                rec(&in, T_PARAMS, 1, NULL, 0, 0);
            }
        }
        run(&ps, &in, in.len, &s);
        ok(s.error == 1 && ps.error != NULL, "refused: %s (%s)", bad[i].what,
           ps.error ? ps.error : "-");
        fcgi_parser_cleanup(&ps);
    }
    fcgi_parser_init(&ps, &reply);
    buf_reset(&in);
    begin(&in, 1, ROLE_RESPONDER, 0);
    struct buf big;
    buf_init(&big, 4u << 20);
    char chunk[60000];
    memset(chunk, 'a', sizeof(chunk));
    while (big.len <= FCGI_MAX_PARAMS) {
        rec(&big, T_PARAMS, 1, chunk, sizeof(chunk), 0);
    }
    buf_append(&in, big.data, big.len);
    run(&ps, &in, 65536, &s);
    ok(s.error == 1, "PARAMS past %d bytes are refused", FCGI_MAX_PARAMS);
    buf_cleanup(&big);
    fcgi_parser_cleanup(&ps);

    /* encoders */
    struct buf out;
    buf_init(&out, 1 << 20);
    char payload[70000];
    memset(payload, 'p', sizeof(payload));
    fcgi_put_stdout(&out, 3, payload, sizeof(payload));
    fcgi_put_stdout(&out, 3, payload, 0);
    ok(out.len == 8 + 65535 + 8 + (70000 - 65535) && (unsigned char)out.data[1] == T_STDOUT &&
           out.data[3] == 3 && (unsigned char)out.data[4] == 0xff &&
           (unsigned char)out.data[5] == 0xff,
       "STDOUT is cut into records of at most 65535 bytes; nothing for 0 bytes");
    buf_reset(&out);
    fcgi_put_end(&out, 3, 0);
    ok(out.len == 8 + 16 && out.data[5] == 0 && (unsigned char)out.data[9] == T_END_REQUEST &&
           out.data[13] == 8 && out.data[20] == ST_REQUEST_COMPLETE,
       "the end: an empty STDOUT record, then END_REQUEST(REQUEST_COMPLETE)");
    unsigned char hdr[8];
    fcgi_stdout_header(hdr, 0x1234, 300);
    ok(hdr[0] == 1 && hdr[1] == T_STDOUT && hdr[2] == 0x12 && hdr[3] == 0x34 && hdr[4] == 1 &&
           hdr[5] == 44,
       "a STDOUT header by itself");
    buf_cleanup(&out);
    buf_cleanup(&in);
    buf_cleanup(&reply);
    return tap_done();
}
