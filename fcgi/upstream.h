/* upstream.h - libcurl transfers to the backends, driven by a loop */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_UPSTREAM_H
#define LLMPROXY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

/* One curl multi handle per loop (loop.h), so thousands of open streams cost
 * a socket and a few KB each, not a thread, and connections to a backend are
 * reused. Everything runs on the loop's thread. Only this module includes
 * libcurl. */
struct loop;
struct upstream;
struct upstream_xfer;

/* How a transfer ended; CURLcode is mapped to these here and nowhere else. */
enum upstream_result {
    UPSTREAM_OK = 0,
    UPSTREAM_CONNECT,     /* refused, unreachable, reset before the request was sent */
    UPSTREAM_DNS,         /* name did not resolve */
    UPSTREAM_TLS,         /* handshake or certificate failure */
    UPSTREAM_TIMEOUT,     /* connect timeout */
    UPSTREAM_NO_RESPONSE, /* the request went out, then no answer: it may have been processed */
    UPSTREAM_ABORTED,     /* a callback asked to stop */
    UPSTREAM_BROKEN,      /* the answer broke off (receive error, bad framing) */
    UPSTREAM_OTHER,
};

const char *upstream_result_name(enum upstream_result r);

/* on_body's answers */
#define UPSTREAM_TAKEN 0   /* the bytes were used */
#define UPSTREAM_STOP (-1) /* abort the transfer */
#define UPSTREAM_WAIT 1    /* not taken: pause; they come again after upstream_resume */

struct upstream_handler {
    /* One header line (without CRLF) of the final response; trailers are
     * not reported. */
    void (*on_header)(void *ud, const char *line, size_t len);
    /* All headers of the final (non-1xx) response are in: 0 to go on, -1 to
     * abort the transfer. Called once per transfer. */
    int (*on_headers_done)(void *ud, int status);
    /* A piece of the body as it arrives: UPSTREAM_TAKEN, _STOP or _WAIT. */
    int (*on_body)(void *ud, const char *p, size_t n);
    /* The transfer is over (not called after upstream_cancel). */
    void (*on_done)(void *ud, enum upstream_result r);
};

/* The request body in up to UPSTREAM_MAX_PIECES pieces sent one after the
 * other (the client's body around a replaced model name); they must live
 * until the transfer ends. */
#define UPSTREAM_MAX_PIECES 5
struct upstream_piece {
    const char *p;
    size_t n;
};

struct upstream_request {
    const char *url;
    const char *method;         /* "POST" (or NULL), "GET", "DELETE": no body */
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    struct upstream_piece body[UPSTREAM_MAX_PIECES];
    size_t npieces;
    long connect_timeout_ms;
};

struct upstream *upstream_new(struct loop *l);
void upstream_free(struct upstream *u);

/* Starts a transfer. NULL when it could not even start (the handler is then
 * not called). The request's strings are copied except the body. */
struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *rq,
                                     const struct upstream_handler *h, void *ud);
/* Stops a transfer from outside its callbacks; on_done is not called. */
void upstream_cancel(struct upstream *u, struct upstream_xfer *x);
/* A transfer paused by UPSTREAM_WAIT goes on (the withheld bytes may be
 * delivered before this returns). Not from inside the transfer's callbacks. */
void upstream_resume(struct upstream *u, struct upstream_xfer *x);

#endif
