/* meter.h - what an answer used: usage read from JSON bodies and SSE streams (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_METER_H
#define LLMPROXY_METER_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum meter_format {
    METER_JSON,     /* one JSON body with a "usage" object */
    METER_CHAT_SSE, /* chat or legacy completion chunks; usage in a chunk of its own */
    /* Responses events: the id in response.created, usage in response.completed
     * (or .incomplete, .failed) */
    METER_RESPONSES_SSE,
    /* Anthropic Messages events: input in message_start, output in message_delta */
    METER_ANTHROPIC_SSE,
};

static inline bool meter_is_stream(enum meter_format f)
{
    return f != METER_JSON;
}

/* The longest response id kept (longer ones are not recorded). */
#define METER_ID_MAX 128

/* The longest SSE event judged, whatever the cap: a longer one goes on undecided. */
#define METER_EVENT_MAX ((size_t)1 << 20)

struct meter {
    enum meter_format fmt;
    bool strip;         /* drop usage-only chunks: llmproxy asked for them, the client did not */
    struct buf pending; /* SSE: an event not yet complete; JSON: the body (to its cap) */
    bool truncated;     /* JSON: the body passed the cap (usage unknown) */
    bool have;          /* a usage object was seen */
    uint64_t prompt, completion, cached;
    bool want_id;              /* a Responses answer: its id is wanted */
    char id[METER_ID_MAX + 1]; /* the id, once seen ("" until then) */
    bool id_done;              /* JSON: the body's start was searched for it */
    /* SSE: where the line parser stands between two calls (meter.c) */
    bool passing;    /* the current event is past the cap: it goes on as it comes */
    bool line_start; /* no byte of the current line seen yet */
    int lf;          /* what a '\n' first in the next bytes is (after a '\r') */
};

/* cap: the most bytes kept: a JSON body, or an SSE event (at most METER_EVENT_MAX). */
void meter_init(struct meter *m, enum meter_format fmt, bool strip, size_t cap);
void meter_cleanup(struct meter *m);

/* SSE: takes n more bytes and appends to out what is to go on to the client:
 * every complete event, unchanged, except (with strip) usage-only chunks:
 * one data payload that is a JSON object with "choices": [] and a "usage"
 * object, in an event with no field but data (comments aside). Lines end in
 * CRLF, LF or CR; an event ends at an empty line. An event longer than the
 * cap goes on undecided (not read) as it comes, to its end; the events after
 * it are judged again. Linear in the bytes fed, however they are cut. */
void meter_stream(struct meter *m, const char *p, size_t n, struct buf *out);
/* SSE: the stream ended: the rest (an unterminated event) is judged the
 * same way, and goes on unless it is a usage-only chunk to drop. */
void meter_stream_end(struct meter *m, struct buf *out);

/* JSON: keeps the body for meter_body_end. */
void meter_body(struct meter *m, const char *p, size_t n);
void meter_body_end(struct meter *m);

/* Reads "usage" from one JSON object text: prompt_tokens/completion_tokens
 * (or input_tokens/output_tokens, Anthropic's cache_read_input_tokens and
 * cache_creation_input_tokens counted as input), and cached prompt tokens
 * (prompt_tokens_details.cached_tokens, input_tokens_details.cached_tokens,
 * cache_read_input_tokens). False when there is none.
 * *usage_only: "choices" is an empty array and nothing but white space
 * follows the object. */
bool meter_usage_json(const char *json, size_t len, uint64_t *prompt, uint64_t *completion,
                      uint64_t *cached, bool *usage_only);

#endif
