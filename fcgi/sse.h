/* sse.h - server-sent events: find and judge the first data event (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_SSE_H
#define LLMPROXY_SSE_H

#include "buf.h"

#include <stddef.h>

enum sse_result {
    SSE_MORE = 0,  /* no complete data event yet */
    SSE_DATA = 1,  /* the first data event is complete and is not an error */
    SSE_ERROR = 2, /* the first data event is an error ({"error":...} or event: error) */
};

/* Incremental reader over a growing buffer that the caller keeps (the held
 * bytes of an upstream stream). Comment-only events (": keep-alive") are
 * skipped: the first event that carries data decides. */
struct sse_peek {
    size_t pos; /* offset of the first byte not yet parsed */
    int has_data;
    int named_error; /* "event: error" seen in the current event */
    struct buf data; /* the current event's data, joined by '\n' */
    /* set by the caller: a Responses stream, whose response.created and
     * response.in_progress events are passed over (the next one decides, and
     * response.failed is an error too) */
    int responses;
    char event[40]; /* the current event's name (cut to fit) */
};

void sse_peek_init(struct sse_peek *p);
void sse_peek_cleanup(struct sse_peek *p);

/* Parses what is new in buf[0..len) (buf holds everything fed before, plus
 * the new bytes). *end is set to the offset just past the deciding event. */
enum sse_result sse_peek_feed(struct sse_peek *p, const char *buf, size_t len, size_t *end);

/* True when an SSE data payload is a JSON object with a top-level "error". */
int sse_is_error_payload(const char *data, size_t len);

#endif
