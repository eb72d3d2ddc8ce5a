/* upstream.h - the event loop: libcurl multi transfers over epoll, watched fds, posted work */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_UPSTREAM_H
#define LLMPROXY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

/* One loop per process runs every upstream transfer of that process, so
 * thousands of open streams cost a socket and a few KB each, not a thread.
 * Everything below runs on the loop's thread except upstream_loop_post and
 * upstream_loop_stop. Only this module includes libcurl. */
struct upstream_loop;
struct upstream_xfer;
struct upstream_watch;

/* How a transfer ended; CURLcode is mapped to these here and nowhere else. */
enum upstream_result {
    UPSTREAM_OK = 0,
    UPSTREAM_CONNECT, /* refused, unreachable, reset before an answer */
    UPSTREAM_DNS,     /* name did not resolve */
    UPSTREAM_TLS,     /* handshake or certificate failure */
    UPSTREAM_TIMEOUT, /* connect timeout */
    UPSTREAM_ABORTED, /* a callback asked to stop */
    UPSTREAM_BROKEN,  /* the answer broke off (receive error, bad framing) */
    UPSTREAM_OTHER,
};

const char *upstream_result_name(enum upstream_result r);

struct upstream_handler {
    /* One response header line (without CRLF) of the final response. */
    void (*on_header)(void *ud, const char *line, size_t len);
    /* All headers of the final (non-1xx) response are in. Return 0 to go
     * on, -1 to abort the transfer. */
    int (*on_headers_done)(void *ud, int status);
    /* A piece of the body as it arrives. 0 to go on, -1 to abort. */
    int (*on_body)(void *ud, const char *p, size_t n);
    /* The transfer is over (not called after upstream_cancel). */
    void (*on_done)(void *ud, enum upstream_result r);
};

struct upstream_request {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    const char *body;           /* must live until the transfer ends */
    size_t body_len;
    long connect_timeout_ms;
};

struct upstream_loop *upstream_loop_new(void);
void upstream_loop_free(struct upstream_loop *loop);

/* Runs until upstream_loop_stop was called and the idle callback says the
 * work is done. tick (may be NULL) is called about every tick_ms with the
 * monotonic time in microseconds, for the caller's deadlines. */
void upstream_loop_run(struct upstream_loop *loop, void (*tick)(void *ud, int64_t now_us),
                       void *tick_ud, int tick_ms);
/* Thread-safe: ask the loop to return once busy() (called on the loop
 * thread) answers 0. */
void upstream_loop_stop(struct upstream_loop *loop, int (*busy)(void *ud), void *ud);
/* Thread-safe: run fn(arg) on the loop's thread soon. */
void upstream_loop_post(struct upstream_loop *loop, void (*fn)(void *arg), void *arg);

/* Call cb(ud) once fd's peer hangs up or the fd fails. NULL on error.
 * upstream_unwatch before the fd is closed. */
struct upstream_watch *upstream_watch(struct upstream_loop *loop, int fd, void (*cb)(void *ud),
                                      void *ud);
void upstream_unwatch(struct upstream_loop *loop, struct upstream_watch *w);

/* Starts a transfer. NULL when it could not even start (the handler is then
 * not called). The request's strings are copied except the body. */
struct upstream_xfer *upstream_start(struct upstream_loop *loop, const struct upstream_request *rq,
                                     const struct upstream_handler *h, void *ud);
/* Stops a transfer from outside its callbacks; on_done is not called. */
void upstream_cancel(struct upstream_loop *loop, struct upstream_xfer *x);

#endif
