/* fcgi_io.c - every libfcgi call: accept, params, body, output, flush */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "fcgi_io.h"

#include <errno.h>
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

extern char **environ;

struct fcgi_client {
    FCGX_Request req;
    int cgi;    /* plain CGI: stdin/stdout/environ */
    int broken; /* a write failed: the client is gone */
};

int fcgi_io_init(void)
{
    return FCGX_Init();
}

int fcgi_io_is_cgi(void)
{
    return FCGX_IsCGI();
}

int fcgi_io_open_socket(const char *path, int backlog)
{
    return FCGX_OpenSocket(path, backlog);
}

void fcgi_io_shutdown(int listen_fd)
{
    FCGX_ShutdownPending();
    /* wakes threads blocked in accept(): it fails with EINVAL */
    shutdown(listen_fd, SHUT_RDWR);
}

struct fcgi_client *fcgi_io_accept(int listen_fd)
{
    struct fcgi_client *c = xcalloc(1, sizeof(*c));
    if (FCGX_InitRequest(&c->req, listen_fd, 0) != 0 || FCGX_Accept_r(&c->req) != 0) {
        FCGX_Free(&c->req, 1);
        free(c);
        return NULL;
    }
    return c;
}

struct fcgi_client *fcgi_io_cgi_request(void)
{
    struct fcgi_client *c = xcalloc(1, sizeof(*c));
    c->cgi = 1;
    c->req.ipcFd = -1;
    return c;
}

const char *fcgi_io_param(struct fcgi_client *c, const char *name)
{
    if (c->cgi) {
        return getenv(name);
    }
    return FCGX_GetParam(name, c->req.envp);
}

int fcgi_io_read_body(struct fcgi_client *c, struct buf *out)
{
    const char *cl = fcgi_io_param(c, "CONTENT_LENGTH");
    if (cl != NULL && *cl != '\0') {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && *end == '\0' && n > out->cap) {
            return BUF_TOOBIG;
        }
    }
    for (;;) {
        char *dst = buf_reserve(out, 16384);
        size_t room = 16384;
        if (dst == NULL) {
            /* the last bytes before the cap */
            room = out->cap - out->len;
            if (room == 0) {
                char probe;
                int n =
                    c->cgi ? (int)fread(&probe, 1, 1, stdin) : FCGX_GetStr(&probe, 1, c->req.in);
                return n > 0 ? BUF_TOOBIG : 0;
            }
            dst = buf_reserve(out, room);
        }
        int n;
        if (c->cgi) {
            n = (int)fread(dst, 1, room, stdin);
            if (n == 0 && ferror(stdin)) {
                return -2;
            }
        } else {
            n = FCGX_GetStr(dst, (int)room, c->req.in);
            if (n < 0 || FCGX_GetError(c->req.in) != 0) {
                return -2;
            }
        }
        if (n == 0) {
            return 0;
        }
        out->len += (size_t)n;
        out->data[out->len] = '\0';
    }
}

int fcgi_io_write(struct fcgi_client *c, const void *p, size_t n)
{
    if (c->broken) {
        return -1;
    }
    while (n > 0) {
        int chunk = n > 1 << 30 ? 1 << 30 : (int)n;
        int w =
            c->cgi ? (int)fwrite(p, 1, (size_t)chunk, stdout) : FCGX_PutStr(p, chunk, c->req.out);
        if (w != chunk) {
            c->broken = 1;
            return -1;
        }
        p = (const char *)p + chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

int fcgi_io_flush(struct fcgi_client *c)
{
    if (c->broken) {
        return -1;
    }
    int rc = c->cgi ? fflush(stdout) : FCGX_FFlush(c->req.out);
    if (rc != 0) {
        c->broken = 1;
        return -1;
    }
    return 0;
}

int fcgi_io_fd(struct fcgi_client *c)
{
    return c->cgi ? -1 : c->req.ipcFd;
}

void fcgi_io_finish(struct fcgi_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->cgi) {
        fflush(stdout);
    } else {
        /* An early answer (413, 401...) leaves the body unread; Apache's
         * mod_proxy_fcgi fails the whole request (503) if the connection
         * closes while it still sends it, so read it to its end first.
         * The web server's own body limit bounds this. */
        char sink[16384];
        int n = FCGX_GetStr(sink, (int)sizeof(sink), c->req.in);
        if (n > 0) {
            /* a client that never sends the body it announced must not hold
             * this thread: give up after a second without data */
            struct timeval tv = {1, 0};
            setsockopt(c->req.ipcFd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            size_t total = (size_t)n;
            while (total < (64u << 20) && n > 0) {
                n = FCGX_GetStr(sink, (int)sizeof(sink), c->req.in);
                total += n > 0 ? (size_t)n : 0;
            }
        }
        /* the whole request was read and the answer is complete: close at
         * once instead of shutdown() and waiting for the server's FIN */
        FCGX_Detach(&c->req);
        FCGX_Finish_r(&c->req);
    }
    free(c);
}
