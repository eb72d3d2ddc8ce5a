/* fcgi.h - the FastCGI protocol of a responder: records in, records out (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_FCGI_H
#define LLMPROXY_FCGI_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

/* Why llmproxy speaks FastCGI itself: libfcgi's streams block on every read
 * and write, and a responder that serves thousands of streams from one event
 * loop must never wait on one slow peer. This module knows the wire format
 * only (FastCGI 1.0, responder role); conn.c moves the bytes.
 *
 * The parser takes the byte stream from the web server in pieces of any size
 * and reports one event at a time. One request at a time per connection
 * (FCGI_MAX_REQS 1, FCGI_MPXS_CONNS 0): a second BEGIN_REQUEST while one is
 * open is answered with END_REQUEST(CANT_MPX_CONN), as the spec says. Replies
 * the protocol needs (GET_VALUES_RESULT, UNKNOWN_TYPE) are appended to the
 * parser's reply buffer for the caller to send. */

#define FCGI_MAX_RECORD 65535
/* Largest PARAMS stream accepted (all CGI variables of one request). */
#define FCGI_MAX_PARAMS (1024 * 1024)
/* Most name-value pairs in one request. */
#define FCGI_MAX_NPARAMS 1024

enum fcgi_event {
    FCGI_EV_NONE = 0,  /* need more bytes */
    FCGI_EV_BEGIN,     /* BEGIN_REQUEST for the responder role */
    FCGI_EV_PARAMS,    /* the PARAMS stream ended: fcgi_param works now */
    FCGI_EV_STDIN,     /* body bytes: data/len point into the fed bytes */
    FCGI_EV_STDIN_END, /* the body ended */
    FCGI_EV_ABORT,     /* the web server aborted the request */
    FCGI_EV_ERROR,     /* protocol violation: close the connection */
};

struct fcgi_param {
    const char *name; /* NUL-terminated, inside the parser's params buffer */
    const char *value;
    size_t name_len; /* (a lookup compares lengths first) */
};

struct fcgi_parser {
    unsigned char hdr[8];
    size_t hdr_have;
    unsigned type;
    unsigned id;
    size_t content_left;
    size_t padding_left;
    unsigned char body8[8]; /* BEGIN_REQUEST / GET_VALUES bodies we must read whole */
    size_t body8_have;
    struct buf mgmt; /* a GET_VALUES body being read */
    /* the request of this connection */
    unsigned req_id; /* 0: none open */
    bool keep_conn;
    bool params_done;
    bool stdin_done;
    bool answered;     /* END_REQUEST sent: a new BEGIN_REQUEST ends this one */
    struct buf params; /* raw PARAMS bytes, then decoded in place */
    struct fcgi_param *pv;
    size_t npv;
    const char *error; /* what went wrong, for the log */
    struct buf *reply; /* protocol replies go here (caller-owned) */
};

/* reply: where protocol-level answers are appended (not owned). */
void fcgi_parser_init(struct fcgi_parser *ps, struct buf *reply);
void fcgi_parser_cleanup(struct fcgi_parser *ps);
/* After a request ended (END_REQUEST sent): ready for the next one on a
 * kept connection. */
void fcgi_parser_next(struct fcgi_parser *ps);
/* END_REQUEST of the open request was sent: the web server may now begin
 * the next request on a kept connection without sending the rest of this
 * one's body. */
void fcgi_parser_answered(struct fcgi_parser *ps);

/* Consumes from p[0..n) until one event is complete or the bytes run out.
 * *used is set to the bytes consumed; for FCGI_EV_STDIN, *data and *len
 * point at the body bytes within p. Call again with the rest. */
enum fcgi_event fcgi_feed(struct fcgi_parser *ps, const char *p, size_t n, size_t *used,
                          const char **data, size_t *len);

/* A CGI variable of the open request (after FCGI_EV_PARAMS), NULL if absent. */
const char *fcgi_param(const struct fcgi_parser *ps, const char *name);

/* Encoders. Each appends complete records to out; BUF_OK or BUF_TOOBIG. */
int fcgi_put_stdout(struct buf *out, unsigned id, const void *p, size_t n);
/* The 8-byte header of one STDOUT record of n (<= FCGI_MAX_RECORD) bytes. */
void fcgi_stdout_header(unsigned char hdr[8], unsigned id, size_t n);
/* The end of a request: an empty STDOUT record and END_REQUEST. */
int fcgi_put_end(struct buf *out, unsigned id, unsigned app_status);

#endif
