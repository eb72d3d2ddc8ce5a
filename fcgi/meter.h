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
};

struct meter {
    enum meter_format fmt;
    bool strip;         /* drop usage-only chunks: llmproxy asked for them, the client did not */
    struct buf pending; /* SSE: an event not yet complete; JSON: the body (to its cap) */
    bool truncated;     /* JSON: the body passed the cap (usage unknown) */
    bool have;          /* a usage object was seen */
    uint64_t prompt, completion, cached;
};

/* cap: the most bytes kept (an SSE event, or a JSON body). */
void meter_init(struct meter *m, enum meter_format fmt, bool strip, size_t cap);
void meter_cleanup(struct meter *m);

/* SSE: takes n more bytes and appends to out what is to go on to the client:
 * every complete event, unchanged, except (with strip) usage-only chunks.
 * An event longer than the cap goes on undecided. */
void meter_stream(struct meter *m, const char *p, size_t n, struct buf *out);
/* SSE: the stream ended: the rest (an unterminated event) goes on. */
void meter_stream_end(struct meter *m, struct buf *out);

/* JSON: keeps the body for meter_body_end. */
void meter_body(struct meter *m, const char *p, size_t n);
void meter_body_end(struct meter *m);

/* Reads "usage" from one JSON object text: prompt_tokens/completion_tokens
 * (or input_tokens/output_tokens), and cached prompt tokens
 * (prompt_tokens_details.cached_tokens). False when there is none. */
bool meter_usage_json(const char *json, size_t len, uint64_t *prompt, uint64_t *completion,
                      uint64_t *cached, bool *usage_only);

#endif
