/* fcgi_io.h - every libfcgi call: accept, params, body, output, flush */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_FCGI_IO_H
#define LLMPROXY_FCGI_IO_H

#include "buf.h"

#include <stddef.h>

/* One accepted request from the web server. Created by fcgi_io_accept and
 * released (connection closed) by fcgi_io_finish. Used by one thread at a
 * time; it may be handed from the accepting thread to the event loop. */
struct fcgi_client;

/* FCGX_Init; 0 on success. */
int fcgi_io_init(void);
/* True when started as plain CGI rather than by a FastCGI server. */
int fcgi_io_is_cgi(void);
/* Listen on a unix socket of our own (for servers that spawn nothing);
 * returns the fd or -1. */
int fcgi_io_open_socket(const char *path, int backlog);
/* Make blocked and future accepts fail (at shutdown). */
void fcgi_io_shutdown(int listen_fd);

/* Blocks for the next request on listen_fd (0: the socket the web server
 * gave us). NULL when accepting failed or shutdown began. */
struct fcgi_client *fcgi_io_accept(int listen_fd);
/* The single request of a CGI process (stdin, stdout, environment). */
struct fcgi_client *fcgi_io_cgi_request(void);

/* A CGI/FastCGI parameter (e.g. "REQUEST_METHOD"), NULL when absent. */
const char *fcgi_io_param(struct fcgi_client *c, const char *name);

/* Reads the whole request body into out (capped by out->cap).
 * Returns 0, BUF_TOOBIG or -2 on a read error. */
int fcgi_io_read_body(struct fcgi_client *c, struct buf *out);

/* Buffered write; 0 or -1 when the client is gone. */
int fcgi_io_write(struct fcgi_client *c, const void *p, size_t n);
/* Sends what is buffered now; 0 or -1 when the client is gone. */
int fcgi_io_flush(struct fcgi_client *c);
/* The connection's fd, for noticing that the web server closed it (the
 * client went away); -1 when there is none to watch. */
int fcgi_io_fd(struct fcgi_client *c);
/* Ends the response, closes the connection, frees c. NULL is a no-op. */
void fcgi_io_finish(struct fcgi_client *c);

#endif
