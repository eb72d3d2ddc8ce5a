/* request.h - the client's body: strict JSON check, model and stream fields, mapping (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_REQUEST_H
#define LLMPROXY_REQUEST_H

#include "buf.h"
#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/* Deepest nesting of arrays and objects accepted in a client body. */
#define REQUEST_MAX_DEPTH 512

enum request_status {
    REQUEST_OK = 0,
    REQUEST_BAD_JSON = -1,   /* not valid JSON */
    REQUEST_NOT_OBJECT = -2, /* valid JSON but not an object */
    REQUEST_NO_MODEL = -3,   /* no top-level "model" */
    REQUEST_MODEL_NOT_STRING = -4,
    REQUEST_DUP_MODEL = -5, /* "model" given twice: ambiguous */
    REQUEST_TOO_DEEP = -6,
    REQUEST_MODEL_BAD = -7, /* empty, too long or holds NUL */
    /* "stream", "stream_options" or its "include_usage" given twice: parsers
     * differ on which wins, so llmproxy and the backend could disagree */
    REQUEST_DUP_STREAM = -8,
    REQUEST_STREAM_NOT_BOOL = -9, /* "stream" neither true, false nor null */
    /* "previous_response_id" twice, or not a string of id bytes; returned
     * only when nothing else is wrong */
    REQUEST_BAD_PREVIOUS = -10,
};

struct request_info {
    size_t model_off; /* byte span of the model's JSON string, quotes included */
    size_t model_len;
    char model[CONFIG_MAX_MODEL_NAME + 1]; /* decoded */
    bool stream;                           /* top-level "stream": true (last one wins) */
    size_t close_off;                      /* the top-level object's closing brace */
    bool has_members;
    size_t so_off, so_len;   /* the value of a top-level "stream_options"; so_len 0: absent */
    unsigned n_stream, n_so; /* how often each was given */
    bool stream_bad;         /* "stream" was not a boolean or null */
    /* a top-level "previous_response_id" (Responses): its value's span; prev_len 0: absent */
    size_t prev_off, prev_len;
    unsigned n_prev;
    bool background; /* "background": true (Responses) */
};

/* One change to a body: del bytes at off give way to ins. */
struct request_edit {
    size_t off;
    size_t del;
    const char *ins;
    size_t ins_len;
};

enum request_usage {
    REQUEST_USAGE_ASKED, /* the client set stream_options.include_usage: true */
    REQUEST_USAGE_ADDED, /* *edit makes the backend report usage */
};

/* For a streamed chat or completion: whether the client asked for usage,
 * else the edit that asks for it ("stream_options": {"include_usage":
 * true}, merged into a stream_options the client sent). */
enum request_usage request_usage_edit(const char *body, size_t len, const struct request_info *info,
                                      struct request_edit *edit);

/* One strict pass over a body (RFC 8259, no allocation). Fills info on
 * REQUEST_OK; otherwise returns the reason. The error offset of invalid JSON
 * is written to *err_off when err_off is not NULL. */
enum request_status request_scan(const char *body, size_t len, struct request_info *info,
                                 size_t *err_off);

/* The decoded "previous_response_id" of a scanned body, when it has one
 * (checked by request_scan: 1 to REQUEST_ID_MAX bytes of [A-Za-z0-9_.-]). */
#define REQUEST_ID_MAX 128
bool request_previous_id(const char *body, const struct request_info *info,
                         char out[REQUEST_ID_MAX + 1]);

/* Message for a failed scan, fit for the client. */
const char *request_status_message(enum request_status st);

/* The upstream body: the client's bytes with only the model's value
 * replaced by new_model (JSON-escaped); everything else byte for byte. */
int request_map_model(const char *body, size_t len, const struct request_info *info,
                      const char *new_model, struct buf *out);

#endif
