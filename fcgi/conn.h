/* conn.h - requests from the web server: FastCGI connections, or a CGI process's stdio */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_CONN_H
#define LLMPROXY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every byte to and from the web server moves here, never blocking: a
 * client that stops reading only fills its own request's output queue (the
 * caller watches conn_pending and stops producing above a high mark), and a
 * body that trickles in holds no thread. One request at a time per
 * connection; kept connections (FCGI_KEEP_CONN) serve the next one after.
 * Everything runs on the loop's thread. */
struct loop;
struct conn;
struct conn_server;

enum conn_gone {
    CONN_CLOSED,  /* the web server closed the connection (the client left) */
    CONN_ABORTED, /* FCGI_ABORT_REQUEST */
    CONN_BROKEN,  /* a read or write failed, or the protocol was violated */
    CONN_STALLED, /* output made no progress for the stall timeout */
};

const char *conn_gone_name(enum conn_gone why);

struct conn_handler {
    /* A request's parameters are in (conn_param answers now); the handler
     * attaches its object with conn_bind. */
    void (*on_request)(void *app, struct conn *c);
    /* Body bytes, then the body's end (each only while bound). */
    void (*on_body)(void *req, const char *p, size_t n);
    void (*on_body_end)(void *req);
    /* The output queue fell to CONN_LOW_WATER after passing the high mark. */
    void (*on_drain)(
        void *req); /* The request cannot go on: end it with conn_end (at once or later);
                     * conn_write fails from now on. Delivered from the loop, right after
                     * the turn that noticed it, never from inside conn_write. */
    void (*on_gone)(void *req, enum conn_gone why);
};

struct conn_settings {
    int64_t stall_ms; /* LLMPROXY_CLIENT_STALL_MS: output that moves not at all this long */
    int64_t idle_ms;  /* a connection with no request this long is closed */
    /* an answered request whose body has not ended is waited for this
     * long (from the last byte in or out) before the connection closes */
    int64_t linger_ms;
};

/* Output queue marks: a producer above CONN_HIGH_WATER waits for on_drain. */
#define CONN_HIGH_WATER (256 * 1024)
#define CONN_LOW_WATER (64 * 1024)

/* True when fd 0 is a listening socket: the program was started by a
 * FastCGI server (lighttpd's bin-path, mod_fcgid), not as CGI. */
bool conn_fd0_listens(void);
/* A unix socket of our own at path (0660, an old one replaced), for servers
 * that spawn nothing (Apache mod_proxy_fcgi). The fd, or -1 (logged). */
int conn_listen_unix(const char *path);

/* Accept FastCGI connections on listen_fd in this loop (several loops may
 * share one fd). NULL on failure. */
struct conn_server *conn_server_new(struct loop *l, int listen_fd, const struct conn_handler *h,
                                    void *app, const struct conn_settings *set);
/* Stop accepting (the fd is not closed); open connections go on. */
void conn_server_stop_accepting(struct conn_server *s);
/* Close the connections that carry no request now (kept ones, at a stop). */
void conn_server_close_idle(struct conn_server *s);
/* Connections still open (requests, or output or input being finished). */
size_t conn_server_open(const struct conn_server *s);
/* Close every connection at once (at exit). */
void conn_server_free(struct conn_server *s);

/* The single request of a CGI process: variables from the environment, the
 * body from fd 0, the answer to fd 1. on_request is called from here. */
struct conn_server *conn_server_cgi(struct loop *l, const struct conn_handler *h, void *app,
                                    const struct conn_settings *set);

void conn_bind(struct conn *c, void *req);
/* A CGI variable of the request ("REQUEST_METHOD"), NULL when absent. */
const char *conn_param(const struct conn *c, const char *name);
/* The announced body length (CONTENT_LENGTH), -1 when not given. */
long long conn_content_length(const struct conn *c);
bool conn_is_cgi(const struct conn *c);
/* Why the request cannot go on (conn_gone_name), NULL while it can. Set at
 * once when a write fails; on_gone follows from the loop. */
const char *conn_gone_reason(const struct conn *c);
/* The request's path without query or fragment, cut to n - 1 bytes:
 * REQUEST_URI (else SCRIPT_NAME + PATH_INFO); under CGI, PATH_INFO when it
 * is set (the program reached through a rewrite, in any directory). */
void conn_path(const struct conn *c, char *out, size_t n);

/* Queues answer bytes (framed for FastCGI). FastCGI output leaves after
 * the event that wrote it (at once from 64 KiB queued), flush or not, so
 * what one event writes shares a write; under CGI, flush sends at once.
 * 0, or -1 when the request is gone. */
int conn_write(struct conn *c, const void *p, size_t n, bool flush);
/* Bytes queued and not yet taken by the web server. */
size_t conn_pending(const struct conn *c);
/* The request is over: its answer ends after what is queued. The unread
 * rest of the body is read and dropped (the web server may still be sending
 * it); then the connection closes or, when kept, serves the next request.
 * c must not be used after this; no callback names the request again. */
void conn_end(struct conn *c);

/* The request is over but its answer broke off: the connection is closed
 * without END_REQUEST, so the web server cuts the client's connection too
 * instead of ending a truncated answer cleanly. c must not be used after. */
void conn_abort(struct conn *c);

#endif
