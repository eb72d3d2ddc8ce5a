/* test_meter.c - unit tests of meter.c: usage from bodies and streams, the usage chunk */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/meter.c"
#include "tap.h"

#define METER_CAP_TEST ((size_t)1 << 20)

#include <stdlib.h>
#include <time.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

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

/* out equal to want[0..n), byte for byte */
static int same_bytes(const struct buf *out, const char *want, size_t n)
{
    return out->len == n && (n == 0 || memcmp(out->data, want, n) == 0);
}

/* CPU seconds used so far by the process */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* the time bound of the big cases: generous for ASan, more so under valgrind */
static double time_bound(void)
{
    return RUNNING_ON_VALGRIND ? 30.0 : 1.0;
}

/* ---- streams with every kind of line ending ---- */

/* Event templates: '\n' marks a line end; a mark right after another one
 * (or first) is the blank line that ends the event. */
#define T_USAGE                                                                                    \
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,"  \
    "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
static const char *const t_content = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{"
                                     "\"content\":\"a\"}}],\"usage\":null}\n\n";
static const char *const t_comment = ": keep-alive\n\n";
static const char *const t_two_lines =
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}],\n"
    "data: \"usage\":null}\n\n";
static const char *const t_stop = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},"
                                  "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
static const char *const t_usage = T_USAGE;
static const char *const t_done[] = {"data: [DONE]\n\n", "data: [DONE]\n", "data: [DONE]"};

/* How marks become line endings: a fixed one for lines and one for blank
 * lines, or (rot >= 0) each the next of LF, CRLF, CR in turn. */
struct scheme {
    const char *line, *blank;
    int rot;
};

static const char *const ends[] = {"\n", "\r\n", "\r"};

struct render {
    int rot;         /* where the rotation stands */
    char last;       /* the last byte written */
    struct buf text; /* the whole stream */
    struct buf want; /* what a client that did not ask gets */
};

static void render_event(struct render *r, const struct scheme *s, const char *t, int usage)
{
    for (const char *c = t; *c != '\0'; c++) {
        const char *piece;
        char one[2] = {*c, '\0'};
        if (*c != '\n') {
            piece = one;
        } else if (s->rot < 0) {
            piece = c == t || c[-1] == '\n' ? s->blank : s->line;
        } else {
            /* after a CR, an LF would make one CRLF: take the next one */
            do {
                piece = ends[r->rot++ % 3];
            } while (r->last == '\r' && piece[0] == '\n');
        }
        buf_append_str(&r->text, piece);
        if (!usage) {
            buf_append_str(&r->want, piece);
        }
        r->last = piece[strlen(piece) - 1];
    }
}

/* p[0..n) fed in three pieces, cut at a and b */
static void feed3(struct meter *m, const char *p, size_t n, size_t a, size_t b, struct buf *out)
{
    meter_stream(m, p, a, out);
    meter_stream(m, p + a, b - a, out);
    meter_stream(m, p + b, n - b, out);
    meter_stream_end(m, out);
}

static void feed_step(struct meter *m, const char *p, size_t n, size_t step, struct buf *out)
{
    for (size_t i = 0; i < n; i += step) {
        meter_stream(m, p + i, i + step > n ? n - i : step, out);
    }
    meter_stream_end(m, out);
}

static int metered(const struct meter *m)
{
    return m->have && m->prompt == 11 && m->completion == 7 && m->cached == 4;
}

/* One stream, cut every way: the usage chunk dropped once (strip) or kept
 * (no strip), read either way, every other byte unchanged and in order. */
static int check_stream(const struct render *r, int *cuts, struct buf *out)
{
    const char *p = r->text.data;
    size_t n = r->text.len;
    int good = 1;
    for (int strip = 0; strip <= 1; strip++) {
        const char *want = strip ? r->want.data : p;
        size_t wn = strip ? r->want.len : n;
        for (size_t a = 0; a <= n; a++) {
            struct meter m;
            meter_init(&m, METER_CHAT_SSE, strip, 1 << 20);
            buf_reset(out);
            feed3(&m, p, n, a, a, out);
            good &= metered(&m) && same_bytes(out, want, wn);
            meter_cleanup(&m);
            /* and the byte at a alone */
            meter_init(&m, METER_CHAT_SSE, strip, 1 << 20);
            buf_reset(out);
            feed3(&m, p, n, a, a < n ? a + 1 : n, out);
            good &= metered(&m) && same_bytes(out, want, wn);
            meter_cleanup(&m);
            (*cuts) += 2;
        }
        static const size_t steps[] = {1, 2, 3, 5, 7, 16, 64};
        for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
            struct meter m;
            meter_init(&m, METER_CHAT_SSE, strip, 1 << 20);
            buf_reset(out);
            feed_step(&m, p, n, steps[k], out);
            good &= metered(&m) && same_bytes(out, want, wn);
            meter_cleanup(&m);
            (*cuts)++;
        }
    }
    return good;
}

static void test_line_endings(struct buf *out)
{
    struct scheme schemes[16];
    size_t ns = 0;
    for (int l = 0; l < 3; l++) {
        for (int b = 0; b < 3; b++) {
            if (l == 2 && b == 0) {
                continue; /* "\r" then "\n" is one CRLF, not a blank line */
            }
            schemes[ns++] = (struct scheme){ends[l], ends[b], -1};
        }
    }
    for (int rot = 0; rot < 3; rot++) {
        schemes[ns++] = (struct scheme){NULL, NULL, rot};
    }
    /* the usage chunk near the end (as OpenAI sends it) and first of all */
    const char *late[] = {t_content, t_comment, t_two_lines, t_stop, t_usage, NULL};
    const char *early[] = {t_usage, t_content, t_comment, t_two_lines, t_stop, NULL};
    const char *const *orders[] = {late, early};
    int good[2][3] = {{1, 1, 1}, {1, 1, 1}};
    int mixed_seen = 0;
    int cuts = 0;
    for (size_t s = 0; s < ns; s++) {
        for (int o = 0; o < 2; o++) {
            for (int d = 0; d < 3; d++) {
                struct render r = {.rot = schemes[s].rot, .last = 0};
                buf_init(&r.text, 1 << 20);
                buf_init(&r.want, 1 << 20);
                for (const char *const *t = orders[o]; *t != NULL; t++) {
                    render_event(&r, &schemes[s], *t, *t == t_usage);
                }
                render_event(&r, &schemes[s], t_done[d], 0);
                mixed_seen |= (strstr(r.text.data, "\n\r\ndata") != NULL) << 0;
                mixed_seen |= (strstr(r.text.data, "\r\n\rdata") != NULL) << 1;
                mixed_seen |= (strstr(r.text.data, "\r\r\ndata") != NULL) << 2;
                good[o][d] &= check_stream(&r, &cuts, out);
                buf_cleanup(&r.text);
                buf_cleanup(&r.want);
            }
        }
    }
    ok(mixed_seen == 7, "the streams hold \\n\\r\\n, \\r\\n\\r and \\r\\r\\n before a line");
    ok(good[0][0],
       "LF, CRLF, CR and mixtures, cut anywhere: usage chunk dropped once, read, "
       "the rest byte for byte (%d cuts in all)",
       cuts);
    ok(good[1][0], "the same with the usage chunk first: nothing else dropped");
    ok(good[0][1] && good[1][1], "a last event without its blank line goes on");
    ok(good[0][2] && good[1][2], "a last line without its line end goes on");
}

/* ---- only an exact usage-only chunk is dropped ---- */

static void test_exact(struct buf *out)
{
    static const struct {
        const char *ev;
        int drop, have;
    } cases[] = {
        {"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 1, 1},
        {"data:{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n", 1, 1},
        {": note\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 1, 1},
        /* split over two data lines, "usage": and its object too */
        {"data: {\"choices\":[],\"usage\":\ndata: {\"prompt_tokens\":1}}\n\n", 1, 1},
        {"data:  {\"choices\" : [ ] , \"usage\" :\t{\"prompt_tokens\":1} } \n\n", 1, 1},
        /* not usage-only: kept as they are */
        {"data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 1},
        {"data: {\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 1},
        {"data: {\"choices\":{},\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 1},
        {"data: {\"choices\":[],\"usage\":null}\n\n", 0, 0},
        {"data: {\"choices\":[],\"prompt_filter_results\":[{\"usage\":{}}]}\n\n", 0, 0},
        {"data: {\"choices\":[],\"usage\":[1]}\n\n", 0, 0},
        {"data: {\"choices\":[],\"usage\":\"{\"}\n\n", 0, 0},
        {"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}} junk\n\n", 0, 1},
        {"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n"
         "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
         0, 1},
        {"event: usage\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 1},
        {"id: 7\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 1},
        {"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}\n\n", 0, 0},
        {": {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 0},
        {"dat: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", 0, 0},
    };
    int good = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *ev = cases[i].ev;
        size_t n = strlen(ev);
        struct buf want;
        buf_init(&want, 1 << 20);
        buf_append_str(&want, "data: [A]\n\n");
        if (!cases[i].drop) {
            buf_append_str(&want, ev);
        }
        for (size_t step = 1; step <= n; step++) {
            struct meter m;
            meter_init(&m, METER_CHAT_SSE, true, 1 << 20);
            buf_reset(out);
            meter_stream(&m, "data: [A]\n\n", 11, out);
            feed_step(&m, ev, n, step, out);
            int g = m.have == cases[i].have && (!m.have || m.prompt == 1) &&
                    same_bytes(out, want.data, want.len);
            if (!g && good) {
                printf("# case %zu step %zu\n", i, step);
            }
            good &= g;
            meter_cleanup(&m);
        }
        buf_cleanup(&want);
    }
    ok(good, "only an exact usage-only chunk (empty choices, a usage object) is dropped; "
             "others go on byte for byte");
}

/* ---- big events ---- */

/* a content event of about n bytes */
static void big_event(struct buf *b, size_t n, const char *eol)
{
    buf_append_str(b, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
    size_t fill = n - 60;
    char *w = buf_reserve(b, fill);
    memset(w, 'x', fill);
    b->len += fill;
    b->data[b->len] = '\0';
    buf_append_str(b, "\"}}],\"usage\":null}");
    buf_append_str(b, eol);
    buf_append_str(b, eol);
}

static void test_huge(struct buf *out)
{
    const size_t big = (size_t)8 << 20;
    const size_t chunk = 16 << 10;
    const char *usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,"
                        "\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":4}}}"
                        "\n\n";
    struct buf text, want;
    buf_init(&text, (size_t)64 << 20);
    buf_init(&want, (size_t)64 << 20);

    /* an 8 MiB event with the cap llmproxy uses: goes on undecided */
    buf_append_str(&text, t_content);
    big_event(&text, big, "\n");
    buf_append(&want, text.data, text.len);
    buf_append_str(&text, usage);
    buf_append_str(&text, "data: [DONE]\n\n");
    buf_append_str(&want, "data: [DONE]\n\n");
    struct meter m;
    meter_init(&m, METER_CHAT_SSE, true, (size_t)8 << 20);
    buf_reset(out);
    double t0 = cpu_now();
    feed_step(&m, text.data, text.len, chunk, out);
    double t_pass = cpu_now() - t0;
    ok(t_pass < time_bound(), "an 8 MiB event in 16 KiB chunks: %.3f s CPU (linear)", t_pass);
    ok(metered(&m) && same_bytes(out, want.data, want.len),
       "... it goes on byte for byte; the usage chunk after it dropped and read");
    meter_cleanup(&m);

    /* the same held whole (a cap above it): still linear, then judged */
    buf_reset(&text);
    buf_append_str(&text, "data: {\"id\":\"c\",\"pad\":\"");
    char *w = buf_reserve(&text, big);
    memset(w, 'y', big);
    text.len += big;
    text.data[text.len] = '\0';
    buf_append_str(&text,
                   "\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,"
                   "\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":4}}}"
                   "\r\n\r\n");
    buf_append_str(&text, "data: [DONE]\r\n\r\n");
    meter_init(&m, METER_CHAT_SSE, true, (size_t)8 << 20);
    m.pending.cap = (size_t)16 << 20;
    buf_reset(out);
    t0 = cpu_now();
    feed_step(&m, text.data, text.len, chunk, out);
    double t_held = cpu_now() - t0;
    ok(t_held < time_bound() && metered(&m) && strcmp(out->data, "data: [DONE]\r\n\r\n") == 0,
       "an 8 MiB usage chunk held in 16 KiB chunks: %.3f s CPU, dropped and read", t_held);
    meter_cleanup(&m);

    /* 8 MiB of short lines in one event */
    buf_reset(&text);
    while (text.len < big) {
        buf_append_str(&text, ": pad\r");
    }
    buf_append_str(&text, usage);
    buf_append_str(&text, "data: [DONE]\n\n");
    meter_init(&m, METER_CHAT_SSE, true, (size_t)8 << 20);
    m.pending.cap = (size_t)16 << 20;
    buf_reset(out);
    t0 = cpu_now();
    feed_step(&m, text.data, text.len, chunk, out);
    double t_lines = cpu_now() - t0;
    ok(t_lines < time_bound() && metered(&m) && strcmp(out->data, "data: [DONE]\n\n") == 0,
       "an event of 1.4 million lines held in 16 KiB chunks: %.3f s CPU", t_lines);
    meter_cleanup(&m);
    buf_cleanup(&text);
    buf_cleanup(&want);
}

/* A usage chunk right after an event longer than the cap, in the same
 * chunk or not: the big one goes on undecided, the usage chunk is judged. */
static void test_overflow(struct buf *out)
{
    const size_t cap = 64 << 10;
    static const size_t sizes[] = {cap - 100, cap + 10, 70 << 10, 200 << 10};
    static const size_t steps[] = {1000, 4096, 16 << 10, 64 << 10, 70 << 10, 1 << 20};
    int good = 1, good_cap = 1;
    for (int e = 0; e < 3; e++) {
        for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
            struct buf text, want;
            buf_init(&text, 1 << 20);
            buf_init(&want, 1 << 20);
            buf_append_str(&text, t_content);
            big_event(&text, sizes[z], ends[e]);
            buf_append(&want, text.data, text.len);
            buf_append_str(&text, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,"
                                  "\"completion_tokens\":7,\"prompt_tokens_details\":"
                                  "{\"cached_tokens\":4}}}");
            buf_append_str(&text, ends[e]);
            buf_append_str(&text, ends[e]);
            buf_append_str(&text, "data: [DONE]");
            buf_append_str(&text, ends[e]);
            buf_append_str(&text, ends[e]);
            buf_append_str(&want, "data: [DONE]");
            buf_append_str(&want, ends[e]);
            buf_append_str(&want, ends[e]);
            for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
                for (size_t shift = 0; shift < 3; shift++) {
                    struct meter m;
                    meter_init(&m, METER_CHAT_SSE, true, cap);
                    buf_reset(out);
                    /* a first piece of odd length moves every cut */
                    meter_stream(&m, text.data, shift * 333, out);
                    feed_step(&m, text.data + shift * 333, text.len - shift * 333, steps[s], out);
                    good &= metered(&m) && same_bytes(out, want.data, want.len);
                    meter_cleanup(&m);
                }
            }
            buf_cleanup(&text);
            buf_cleanup(&want);
        }
    }
    ok(good, "a usage chunk after an event past the cap, however cut: dropped and read, "
             "the rest byte for byte");

    /* the cap is the event's length with its blank line, however cut */
    for (size_t extra = 0; extra <= 1; extra++) {
        struct buf ev;
        buf_init(&ev, 1 << 20);
        buf_append_str(&ev, "data: {\"pad\":\"");
        size_t fill = cap + extra - ev.len - strlen("\",\"choices\":[],\"usage\":{}}\n\n");
        char *w = buf_reserve(&ev, fill);
        memset(w, 'z', fill);
        ev.len += fill;
        ev.data[ev.len] = '\0';
        buf_append_str(&ev, "\",\"choices\":[],\"usage\":{}}\n\n");
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            struct meter m;
            meter_init(&m, METER_CHAT_SSE, true, cap);
            buf_reset(out);
            feed_step(&m, ev.data, ev.len, steps[s], out);
            good_cap &=
                ev.len == cap + extra &&
                (extra ? !m.have && same_bytes(out, ev.data, ev.len) : m.have && out->len == 0);
            meter_cleanup(&m);
        }
        buf_cleanup(&ev);
    }
    ok(good_cap, "an event of cap bytes is judged; one byte more goes on undecided");

    struct meter m;
    meter_init(&m, METER_CHAT_SSE, true, (size_t)8 << 20);
    ok(m.pending.cap == METER_EVENT_MAX, "an SSE event is held up to %zu bytes, not the body cap",
       (size_t)METER_EVENT_MAX);
    meter_cleanup(&m);
}

/* meter_usage_json against the whole parse it stands in for (usage_json_parsed):
 * the same answer, or both none. */
static int same_usage(const char *json, size_t len)
{
    uint64_t p1 = 1, c1 = 1, k1 = 1, p2 = 2, c2 = 2, k2 = 2;
    bool o1 = false, o2 = true;
    bool r1 = meter_usage_json(json, len, &p1, &c1, &k1, &o1);
    o2 = false;
    bool r2 = usage_json_parsed(json, len, &p2, &c2, &k2, &o2);
    if (r1 != r2 || (r1 && (p1 != p2 || c1 != c2 || k1 != k2 || o1 != o2))) {
        printf("# differs (%d/%d) on %zu bytes: ", r1, r2, len);
        for (size_t i = 0; i < len && i < 300; i++) {
            unsigned char ch = (unsigned char)json[i];
            printf(ch >= ' ' && ch < 127 ? "%c" : "\\x%02x", ch);
        }
        printf("\n");
        return 0;
    }
    return 1;
}

static void test_usage_scan(void)
{
    static const char *const docs[] = {
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Hello \\\"usage\\\": {}\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,"
        "\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
        "\xEF\xBB\xBF \n{\"choices\" : [ ] , \"usage\" : "
        "{\"input_tokens\":3,\"output_tokens\":-1e2,"
        "\"cache_read_input_tokens\":2.5E1}}\t\r\n",
        "{\"usage\":{\"prompt_tokens\":1},\"usage\":{\"prompt_tokens\":2},\"choices\":[]}",
        "{\"choices\":[{\"usage\":{\"prompt_tokens\":5}}],\"x\":{\"usage\":{\"prompt_tokens\":6}}}",
        "{\"us\\u0061ge\":{\"prompt_tokens\":7},\"choices\":[]}",
        "{\"s\":\"\\ud83d\\ude00 \\u00e9 \\/ \\b\\f\\n\\r\\t\",\"usage\":{\"prompt_tokens\":8}}",
        "{\"s\":\"\\ud83d\",\"usage\":{\"prompt_tokens\":8}}",
        "{\"s\":\"\\ude00\",\"usage\":{\"prompt_tokens\":8}}",
        "{\"s\":\"\\x\",\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[0,-0,1.5e+3,-2E-2,1.,+1],\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[.5],\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[-.5,-1.,1e,1E+,2e-7,-],\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[-.5,-1.,2e-7,0.25e+2],\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[123456789012345678901234567890123456789012345678901234567890123],"
        "\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[1234567890123456789012345678901234567890123456789012345678901234],"
        "\"usage\":{\"prompt_tokens\":8}}",
        "{\"n\":[1-2],\"usage\":{\"prompt_tokens\":8}}",
        "{\"t\":[true,false,null],\"usage\":{\"prompt_tokens\":8}}",
        "{\"t\":[nul],\"usage\":{\"prompt_tokens\":8}}",
        "{\"usage\":[1]}",
        "{\"usage\":null,\"choices\":[]}",
        "{\"usage\":{\"prompt_tokens\":3}} trailing",
        "{\"usage\":{\"prompt_tokens\":3}",
        "{\"usage\":{\"prompt_tokens\":3},}",
        "{\"usage\":{\"prompt_tokens\":3} \"x\":1}",
        "[{\"usage\":{\"prompt_tokens\":3}}]",
        "\"usage\"",
        "",
        "   ",
        "{}",
        "{\"choices\":[],\"usage\":{}} {}",
    };
    int all = 1;
    for (size_t i = 0; i < ARRAY_LEN(docs); i++) {
        all &= same_usage(docs[i], strlen(docs[i]));
    }
    ok(all, "the scan finds the usage a whole parse finds, in %zu answers", ARRAY_LEN(docs));

    /* nesting: cJSON refuses deeper than 1000 */
    struct buf deep;
    buf_init(&deep, (size_t)16 << 20);
    all = 1;
    for (int depth = 998; depth <= 1002; depth++) {
        buf_reset(&deep);
        static const char head[] = "{\"usage\":{\"prompt_tokens\":1},\"d\":";
        buf_append(&deep, head, sizeof(head) - 1);
        for (int i = 1; i < depth; i++) {
            buf_append(&deep, "[", 1);
        }
        for (int i = 1; i < depth; i++) {
            buf_append(&deep, "]", 1);
        }
        buf_append(&deep, "}", 1);
        all &= same_usage(deep.data, deep.len);
    }
    ok(all, "nesting at cJSON's limit and past it");

    /* every answer above, and a typical one, mutated: a byte changed,
     * inserted or dropped, or the text cut short */
    static const char sig[] = "{}[]\":,\\ u0123456789.eE+-tfnl\x01\x00";
    unsigned seed = 12345;
    int tried = 0;
    all = 1;
    for (size_t i = 0; i < ARRAY_LEN(docs); i++) {
        size_t n = strlen(docs[i]);
        for (int round = 0; round < 400 && all; round++) {
            buf_reset(&deep);
            buf_append(&deep, docs[i], n);
            buf_append(&deep, "\0\0\0\0", 4); /* room for the inserts */
            deep.len = n;
            int edits = 1 + (int)(seed % 3);
            for (int e = 0; e < edits && deep.len > 0; e++) {
                seed = seed * 1103515245u + 12345u;
                size_t at = (seed >> 8) % deep.len;
                char c = sig[(seed >> 20) % (sizeof(sig) - 1)];
                switch ((seed >> 4) % 4) {
                case 0:
                    deep.data[at] = c;
                    break;
                case 1:
                    memmove(deep.data + at + 1, deep.data + at, deep.len - at);
                    deep.data[at] = c;
                    deep.len++;
                    break;
                case 2:
                    memmove(deep.data + at, deep.data + at + 1, deep.len - at - 1);
                    deep.len--;
                    break;
                default:
                    deep.len = at;
                    break;
                }
            }
            all &= same_usage(deep.data, deep.len);
            tried++;
        }
    }
    ok(all, "the same answer in %d mutated texts", tried);

    /* an 8 MiB answer of escapes (CJK text from a server that writes
     * ASCII only, or lines): read in one pass, not once per escape */
    static const char *const units[] = {"\\u4e2d", "a line of text\\n"};
    for (size_t u = 0; u < ARRAY_LEN(units); u++) {
        buf_reset(&deep);
        buf_append_str(&deep, "{\"choices\":[{\"message\":{\"content\":\"");
        while (deep.len < ((size_t)8 << 20)) {
            buf_append_str(&deep, units[u]);
        }
        buf_append_str(&deep, "\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}");
        uint64_t p = 0, c = 0, k = 0;
        bool only;
        double t0 = cpu_now();
        bool have = meter_usage_json(deep.data, deep.len, &p, &c, &k, &only);
        double t = cpu_now() - t0;
        ok(have && p == 5 && c == 6 && t < time_bound(),
           "an 8 MiB answer of '%s' escapes: %.3f s CPU (linear)", units[u], t);
    }
    buf_cleanup(&deep);
}

int main(void)
{
    test_usage_scan();
    struct buf out;
    buf_init(&out, (size_t)64 << 20);
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

    test_line_endings(&out);
    test_exact(&out);
    test_overflow(&out);
    test_huge(&out);

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
    meter_init(&m, METER_JSON, false, (size_t)8 << 20);
    ok(m.pending.cap == (size_t)8 << 20, "a JSON body keeps its own cap");
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
    const char *tail = "{\"choices\":[],\"usage\":{}} {}";
    ok(meter_usage_json(tail, strlen(tail), &p, &c, &k, &only) && !only &&
           meter_usage_json(tail, strlen(tail) - 3, &p, &c, &k, &only) && only,
       "usage-only: the whole text is the one object");
    /* a Responses stream: the id from response.created, usage from response.completed */
    {
        struct meter r;
        meter_init(&r, METER_RESPONSES_SSE, false, METER_CAP_TEST);
        r.want_id = true;
        const char *ev =
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":"
            "\"resp_abc\",\"usage\":null}}\n\n"
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
            "\"delta\":\"hi\"}\n\n"
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{"
            "\"id\":\"resp_abc\",\"usage\":{\"input_tokens\":5,\"output_tokens\":6,"
            "\"input_tokens_details\":{\"cached_tokens\":2}}}}\n\n";
        for (size_t i = 0; ev[i]; i++) {
            buf_reset(&out);
            meter_stream(&r, ev + i, 1, &out);
        }
        ok(strcmp(r.id, "resp_abc") == 0 && r.have && r.prompt == 5 && r.completion == 6 &&
               r.cached == 2,
           "Responses: id and usage, fed bytewise");
        meter_cleanup(&r);
        meter_init(&r, METER_RESPONSES_SSE, false, METER_CAP_TEST);
        r.want_id = true;
        const char *bad = "data: {\"type\":\"response.created\",\"response\":{\"id\":\"a b\"}}\n\n";
        buf_reset(&out);
        meter_stream(&r, bad, strlen(bad), &out);
        ok(r.id[0] == '\0' && out.len == strlen(bad), "an id of other bytes is not kept");
        meter_cleanup(&r);
        /* Anthropic: input in message_start, the output total in message_delta */
        meter_init(&r, METER_ANTHROPIC_SSE, false, METER_CAP_TEST);
        const char *an =
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{"
            "\"input_tokens\":10,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n"
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n"
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":"
            "25}}\n\n";
        buf_reset(&out);
        meter_stream(&r, an, strlen(an), &out);
        ok(r.have && r.prompt == 13 && r.cached == 3 && r.completion == 25 && out.len == strlen(an),
           "Anthropic: input with cache reads, the last output total, every event passed");
        meter_cleanup(&r);
        meter_init(&r, METER_JSON, false, METER_CAP_TEST);
        r.want_id = true;
        const char *body2 =
            "{\"id\":\"resp_9\",\"object\":\"response\",\"usage\":{\"input_tokens\":1}}";
        meter_body(&r, body2, strlen(body2));
        meter_body_end(&r);
        ok(strcmp(r.id, "resp_9") == 0 && r.prompt == 1, "a Responses body: its id");
        meter_cleanup(&r);
        /* the id from the body's start, before its end has come, at any split */
        const char *bodies[][2] = {
            {"{\"id\":\"resp_first\",\"object\":\"response\",\"output\":[", "resp_first"},
            {"{\"object\":\"response\",\"meta\":{\"id\":\"inner\",\"x\":[{\"id\":1}]},\"s\":"
             "\"a\\\"id\\\"\","
             "\"id\" : \"resp_late\",\"output\":[",
             "resp_late"},
            {"{\"object\":\"response\",\"ids\":[\"id\"],\"id\":\"resp_x\"", "resp_x"},
            {"{\"id\":7,\"object\":\"response\"", ""},
            {"[{\"id\":\"resp_no\"}", ""},
            {"{\"id\":\"a\\u0062\"", ""},
        };
        for (size_t i = 0; i < ARRAY_LEN(bodies); i++) {
            const char *b = bodies[i][0];
            bool all = true;
            for (size_t step = 1; step <= strlen(b); step++) {
                meter_init(&r, METER_JSON, false, METER_CAP_TEST);
                r.want_id = true;
                for (size_t at = 0; at < strlen(b); at += step) {
                    size_t piece = strlen(b) - at < step ? strlen(b) - at : step;
                    meter_body(&r, b + at, piece);
                }
                all &= strcmp(r.id, bodies[i][1]) == 0;
                meter_cleanup(&r);
            }
            ok(all, "a body's start gives the id '%s' at every split (%zu)", bodies[i][1], i);
        }
    }
    buf_cleanup(&out);
    return tap_done();
}
