/* multipart.h - multipart/form-data bodies: strict incremental check, the model part (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_MULTIPART_H
#define LLMPROXY_MULTIPART_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

#define MULTIPART_MAX_PARTS 1000  /* more parts than this: MP_TOO_MANY_PARTS */
#define MULTIPART_MAX_HEADER 8192 /* bytes of one part's header block, its blank line included */
#define MULTIPART_MAX_BOUNDARY 70 /* RFC 2046 */

enum multipart_status {
    MP_MORE = 0,           /* fine so far: feed more */
    MP_OK = 1,             /* the close delimiter was seen and everything checked */
    MP_NOT_MULTIPART = -1, /* Content-Type is not multipart/form-data */
    MP_NO_BOUNDARY = -2,   /* no, empty, invalid or too long (> 70) boundary parameter */
    /* malformed: no delimiter at the start, a bad header line, a bare CR or
     * LF in a header block, a part without one Content-Disposition:
     * form-data; name=..., junk after a delimiter, the boundary inside
     * content, ... */
    MP_BAD_BODY = -3,
    MP_TRUNCATED = -4, /* the body ended (final) before the close delimiter */
    MP_TOO_MANY_PARTS = -5,
    MP_HEADER_TOO_LONG = -6,
    MP_NO_MODEL = -7,  /* no part named "model" */
    MP_DUP_MODEL = -8, /* "model" given twice */
    /* the model's value is empty, longer than CONFIG_MAX_MODEL_NAME bytes,
     * holds a byte below 0x20 or 0x7f, or its part has a filename */
    MP_MODEL_BAD = -9,
    MP_DUP_STREAM = -10, /* a "stream" part given twice */
};

/* The boundary of a Content-Type value (RFC 2046, RFC 7578): the type is
 * multipart/form-data (case-insensitive), with a boundary parameter (name
 * case-insensitive, given once) that is a token or a quoted-string of 1 to 70
 * bchars not ending in a space. Returns MP_OK and writes the boundary
 * NUL-terminated to out (cap bytes; 71 always suffice), or MP_NOT_MULTIPART
 * (also for NULL) or MP_NO_BOUNDARY (also when it does not fit in cap). */
enum multipart_status multipart_boundary(const char *content_type, char *out, size_t cap);

/* The parser's state between feeds, and what it found. No allocation: a
 * caller's struct needs no cleanup. */
struct multipart {
    /* results */
    size_t model_off, model_len;           /* byte span of the model part's content in the body */
    char model[CONFIG_MAX_MODEL_NAME + 1]; /* that value, NUL-terminated ("" until seen) */
    bool has_model;
    bool stream; /* a part named "stream" whose value is "true" (case-insensitive) */
    bool has_stream;
    unsigned nparts;
    size_t err_off; /* where the error was found (with a status < 0) */

    /* state */
    char delim[4 + MULTIPART_MAX_BOUNDARY + 1]; /* "\r\n--" boundary */
    size_t dlen;
    int state;
    enum multipart_status result; /* sticky once not MP_MORE */
    size_t pos;                   /* first byte not yet parsed */
    size_t hstart;                /* the current part's header block */
    size_t lstart;                /* the current header line */
    size_t cstart;                /* the current part's content */
    size_t spos;                  /* where the next delimiter search starts */
    size_t chk;                   /* the model's value is checked up to here */
    bool has_cd;                  /* the current part's Content-Disposition was seen */
    bool is_model, is_stream;     /* the current part's name */
    bool has_filename;
};

/* Readies mp for a body whose boundary (from multipart_boundary: 1 to 70
 * bytes) is given; mp keeps a copy. */
void multipart_init(struct multipart *mp, const char *boundary);

/* Parses what is new in buf[0..len): buf holds every byte fed before plus
 * the new ones (the caller keeps the whole body in one growing buffer, which
 * may move between calls; len never shrinks). final: this is the whole body.
 * Returns MP_MORE while more is needed (never with final), MP_OK at final
 * when the whole body checked out, or an error as soon as one is certain
 * (the 1001st part, a repeated model, a bad header line: when seen). Once not
 * MP_MORE, it returns that again. Linear in the total bytes however the body
 * is split, and the same verdict, spans and err_off at every split. */
enum multipart_status multipart_feed(struct multipart *mp, const char *buf, size_t len, bool final);

/* Message for the client for a status (a static string). */
const char *multipart_status_message(enum multipart_status st);

#endif
