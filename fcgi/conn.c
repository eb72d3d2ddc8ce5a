/* conn.c - requests from the web server: FastCGI connections, or a CGI process's stdio */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "conn.h"
#include "buf.h"
#include "fcgi.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

/* Hard cap of one output queue: past CONN_HIGH_WATER producers wait, so
 * this is only reached by a first event held whole and released at once. */
#define OUT_CAP ((size_t)64 << 20)
/* Reads per readiness event before other connections get their turn. */
#define READS_PER_EVENT 4
/* FastCGI output waits for the end of the event that wrote it (so an answer's
 * last bytes and its END_REQUEST leave in one write), unless this much is
 * queued already. */
#define SEND_NOW ((size_t)64 << 10)
#define TICK_US 100000

struct conn {
    struct conn_server *srv;
    struct conn *prev, *next;
    int in_fd, out_fd;
    bool cgi;
    bool sock;             /* out_fd is a socket: send() with MSG_NOSIGNAL */
    struct loop_fd *in_h;  /* FastCGI: the one watch of the socket */
    struct loop_fd *out_h; /* CGI: fd 1 */
    struct fcgi_parser ps;
    struct buf reply; /* protocol answers from the parser */
    struct buf out;   /* the output queue: out.data[head .. len) is unsent */
    size_t head;
    void *req;       /* the bound request, NULL when none */
    bool in_request; /* between BEGIN_REQUEST and the end of its answer */
    bool gone;       /* writes fail; on_gone is (or was) owed */
    bool gone_owed;  /* on_gone not yet delivered (it waits for a safe moment) */
    enum conn_gone gone_why;
    bool io_dead;            /* the fd is closed */
    bool above_high;         /* on_drain is owed */
    bool body_read;          /* CGI: the body is read (or there is none) */
    int depth;               /* inside a callback path: do not free */
    bool release;            /* free when depth falls to 0 */
    long long cgi_left;      /* CGI body bytes still to read; CGI_TO_EOF: a chunked body */
    int64_t last_out;        /* output last moved (or became empty) */
    int64_t last_in;         /* input last came, or the request ended */
    long long unsized;       /* bytes read of a body of unknown length */
    bool stdio_closed;       /* CGI: fds 0 and 1 are closed */
    struct loop_later flush; /* FastCGI: the queue goes out after this event */
};

struct conn_server {
    struct loop *loop;
    int listen_fd;
    struct loop_fd *listen_h;
    const struct conn_handler *h;
    void *app;
    struct conn_settings set;
    struct conn *conns;
    size_t nconns;
    struct loop_alarm tick;
    int64_t emfile_logged;
    bool listen_paused; /* out of fds: accepting again at the next tick */
};

const char *conn_gone_name(enum conn_gone why)
{
    static const char *const names[] = {"client_gone", "aborted", "broken", "client_stalled"};
    return (size_t)why < ARRAY_LEN(names) ? names[why] : "gone";
}

static void on_io(void *ud, uint32_t events);
static void on_out(void *ud, uint32_t events);
static void maybe_finish(struct conn *c);

size_t conn_pending(const struct conn *c)
{
    return c->out.len - c->head;
}

static void watch_output(struct conn *c, bool want)
{
    if (c->io_dead) {
        return;
    }
    if (c->cgi) {
        if (c->out_h != NULL) {
            loop_mod(c->srv->loop, c->out_h, want ? EPOLLOUT : 0);
        }
        return;
    }
    loop_mod(c->srv->loop, c->in_h, EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u));
}

static void close_io(struct conn *c)
{
    if (c->io_dead) {
        return;
    }
    c->io_dead = true;
    if (!c->cgi) {
        loop_del_closing(c->srv->loop, c->in_h); /* the close takes it out of epoll */
        close(c->in_fd);
    } else {
        loop_del(c->srv->loop, c->in_h);
        loop_del(c->srv->loop, c->out_h);
    }
    c->in_h = NULL;
    c->out_h = NULL;
    c->in_fd = -1;
    c->out_fd = -1;
}

/* The request cannot go on. on_gone is delivered by the tick right after
 * this turn of the loop, never from inside the call that noticed it (a
 * conn_write of the handler's own, which then just fails). */
/* A CGI process's stdin and stdout, closed once (their numbers may be reused). */
static void close_stdio(struct conn *c)
{
    if (c->cgi && !c->stdio_closed) {
        c->stdio_closed = true;
        close(STDOUT_FILENO);
        close(STDIN_FILENO);
    }
}

static void gone(struct conn *c, enum conn_gone why)
{
    if (c->gone) {
        return;
    }
    c->gone = true;
    c->gone_why = why;
    if (c->req != NULL) {
        c->gone_owed = true;
        c->srv->tick.at = 0; /* due at once */
    }
}

static void conn_free(struct conn *c)
{
    struct conn_server *s = c->srv;
    loop_later_cancel(s->loop, &c->flush);
    close_io(c);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    s->nconns--;
    fcgi_parser_cleanup(&c->ps);
    buf_cleanup(&c->reply);
    buf_cleanup(&c->out);
    free(c);
}

/* Frees c unless a callback path still holds it. */
static void release(struct conn *c)
{
    if (c->depth > 0) {
        c->release = true;
    } else {
        conn_free(c);
    }
}

static ssize_t send_some(struct conn *c, const struct iovec *iov, int n)
{
    if (c->sock) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return sendmsg(c->out_fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    return writev(c->out_fd, iov, n);
}

/* A write failed for a reason other than a full socket. */
static void write_failed(struct conn *c, int err)
{
    gone(c, err == EPIPE || err == ECONNRESET ? CONN_CLOSED : CONN_BROKEN);
    close_io(c);
}

/* Sends what the queue holds, as far as the web server takes it. */
static void try_send(struct conn *c)
{
    while (!c->io_dead && conn_pending(c) > 0) {
        struct iovec iov = {c->out.data + c->head, conn_pending(c)};
        ssize_t w = send_some(c, &iov, 1);
        if (w > 0) {
            c->head += (size_t)w;
            c->last_out = now_us();
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch_output(c, true);
            return;
        }
        write_failed(c, w < 0 ? errno : EPIPE);
        return;
    }
    if (conn_pending(c) == 0) {
        c->head = 0;
        c->out.len = 0;
        c->last_out = now_us();
        watch_output(c, false);
    } else if (c->head > (1u << 20) && c->head > c->out.len / 2) {
        memmove(c->out.data, c->out.data + c->head, conn_pending(c));
        c->out.len -= c->head;
        c->head = 0;
    }
}

static int overflow(struct conn *c)
{
    LOG_ERROR("output queue over %zu bytes: request dropped", (size_t)OUT_CAP);
    gone(c, CONN_BROKEN);
    close_io(c);
    return -1;
}

/* Queues bytes already framed (or raw, for CGI). */
static int enqueue(struct conn *c, const void *p, size_t n)
{
    return n > 0 && buf_append(&c->out, p, n) != BUF_OK ? overflow(c) : 0;
}

int conn_write(struct conn *c, const void *p, size_t n, bool flush)
{
    if (c->gone || c->io_dead || c->req == NULL) {
        return -1;
    }
    if (n > 0) {
        if (conn_pending(c) == 0) {
            /* the stall clock starts when output starts waiting, not at the
             * last write of an earlier answer: a tick between this event and
             * its flush must not see an old stamp */
            c->last_out = now_us();
        }
        if (c->cgi) {
            if (conn_pending(c) == 0 && flush) {
                /* nothing queued: straight from the caller's bytes */
                struct iovec iov = {(void *)p, n};
                ssize_t w = send_some(c, &iov, 1);
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    write_failed(c, errno);
                    return -1;
                }
                size_t done = w > 0 ? (size_t)w : 0;
                p = (const char *)p + done;
                n -= done;
            }
            if (enqueue(c, p, n) != 0) {
                return -1;
            }
        } else if (fcgi_put_stdout(&c->out, c->ps.req_id, p, n) != BUF_OK) {
            return overflow(c);
        }
    }
    if (!c->cgi) {
        /* flush or not, it goes after this event: what else the event
         * writes (the next piece, END_REQUEST) shares the write */
        if (conn_pending(c) >= SEND_NOW) {
            try_send(c);
        } else if (conn_pending(c) > 0) {
            loop_later(c->srv->loop, &c->flush);
            return c->gone || c->io_dead ? -1 : 0;
        }
    } else if (flush) {
        try_send(c);
    }
    if (conn_pending(c) > CONN_HIGH_WATER) {
        c->above_high = true;
    }
    if (conn_pending(c) > 0) {
        watch_output(c, true);
    }
    return c->gone || c->io_dead ? -1 : 0;
}

void conn_bind(struct conn *c, void *req)
{
    c->req = req;
}

const char *conn_param(const struct conn *c, const char *name)
{
    return c->cgi ? getenv(name) : fcgi_param(&c->ps, name);
}

long long conn_content_length(const struct conn *c)
{
    const char *cl = conn_param(c, "CONTENT_LENGTH");
    if (cl == NULL || *cl < '0' || *cl > '9') {
        return -1;
    }
    char *end;
    errno = 0;
    long long n = strtoll(cl, &end, 10);
    return errno == 0 && *end == '\0' && n >= 0 ? n : -1;
}

bool conn_is_cgi(const struct conn *c)
{
    return c->cgi;
}

const char *conn_gone_reason(const struct conn *c)
{
    return c->gone ? conn_gone_name(c->gone_why) : NULL;
}

void conn_path(const struct conn *c, char *out, size_t n)
{
    const char *uri = conn_param(c, "REQUEST_URI");
    const char *pi = conn_param(c, "PATH_INFO");
    if (conn_is_cgi(c) && pi != NULL && *pi == '/') {
        /* CGI behind a rewrite (.htaccess, mod_cgi): the path after the
         * program is the request's, wherever the site puts llmproxy */
        snprintf(out, n, "%s", pi);
    } else if (uri == NULL || *uri == '\0') {
        const char *sn = conn_param(c, "SCRIPT_NAME");
        snprintf(out, n, "%s%s", sn != NULL ? sn : "", pi != NULL ? pi : "");
    } else {
        snprintf(out, n, "%s", uri);
    }
    out[strcspn(out, "?#")] = '\0';
}

void conn_end(struct conn *c)
{
    c->req = NULL;
    c->gone_owed = false;
    if (!c->io_dead && !c->cgi && c->in_request) {
        if (fcgi_put_end(&c->out, c->ps.req_id, 0) != BUF_OK) {
            overflow(c);
        }
        fcgi_parser_answered(&c->ps);
    }
    c->in_request = false;
    c->last_in = now_us();
    try_send(c);
    c->depth++;
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

/* Reads what the web server sent and nobody will read (the rest of a
 * body), a bounded amount: a close with unread bytes is a reset, and a reset
 * can take what was just sent with it before the web server reads it. */
static void discard_input(struct conn *c)
{
    char buf[16384];
    for (int i = 0; i < 16; i++) {
        if (read(c->in_fd, buf, sizeof(buf)) < (ssize_t)sizeof(buf)) {
            return;
        }
    }
}

void conn_abort(struct conn *c)
{
    c->req = NULL;
    c->gone_owed = false;
    c->in_request = false;
    if (!c->cgi) {
        /* what this event queued (the answer's head and first bytes) goes
         * out first, then the cut: no END_REQUEST, so the web server must
         * not take it for whole */
        loop_later_cancel(c->srv->loop, &c->flush);
        if (!c->io_dead) {
            try_send(c);
            if (!c->io_dead) {
                discard_input(c);
            }
        }
        close_io(c);
    } else if (c->sock) {
        /* CGI over a socket (mod_cgid): a reset, not an orderly end, so the
         * web server cannot end the client's answer as if it were whole */
        struct linger lg = {1, 0};
        setsockopt(STDOUT_FILENO, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close_io(c);
        close_stdio(c);
        c->body_read = true;
    }
    c->depth++;
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

/* After the answer: close, or wait for the next request of a kept
 * connection, once the queue is empty and the body fully read. */
static void maybe_finish(struct conn *c)
{
    if (c->req != NULL || c->in_request) {
        return;
    }
    if (c->io_dead) {
        release(c);
        return;
    }
    if (conn_pending(c) > 0) {
        return;
    }
    if (c->cgi) {
        if (c->body_read) {
            close_io(c);
            /* the web server has the whole answer now, whatever the process
             * still does before it exits (storing its usage record) */
            close_stdio(c);
            release(c);
        }
        return;
    }
    if (c->ps.req_id != 0 && c->ps.stdin_done) {
        if (c->ps.keep_conn && !c->gone) {
            fcgi_parser_next(&c->ps);
            c->gone = false;
            return;
        }
        release(c);
    }
}

static void send_replies(struct conn *c)
{
    if (c->reply.len > 0) {
        enqueue(c, c->reply.data, c->reply.len);
        buf_reset(&c->reply);
        try_send(c);
    }
}

/* Hands one chunk of bytes from the web server to the parser. */
static void feed(struct conn *c, const char *p, size_t n)
{
    struct conn_server *s = c->srv;
    size_t off = 0;
    while (off < n && !c->io_dead && !c->release) { /* nothing more once it is let go */
        size_t used;
        const char *d;
        size_t dl;
        enum fcgi_event ev = fcgi_feed(&c->ps, p + off, n - off, &used, &d, &dl);
        off += used;
        send_replies(c);
        switch (ev) {
        case FCGI_EV_NONE:
            break;
        case FCGI_EV_BEGIN:
            c->in_request = true;
            c->gone = false;
            c->gone_owed = false;
            break;
        case FCGI_EV_PARAMS:
            if (c->in_request) { /* else aborted and answered already */
                s->h->on_request(s->app, c);
            }
            break;
        case FCGI_EV_STDIN:
            if (c->req != NULL) {
                s->h->on_body(c->req, d, dl);
            }
            break;
        case FCGI_EV_STDIN_END:
            if (c->req != NULL) {
                s->h->on_body_end(c->req);
            }
            maybe_finish(c);
            break;
        case FCGI_EV_ABORT:
            if (c->req != NULL) {
                gone(c, CONN_ABORTED); /* its handler ends it */
            } else if (c->in_request) {
                conn_end(c); /* aborted before it began: END_REQUEST now */
            }
            break;
        case FCGI_EV_ERROR:
            LOG_WARN("FastCGI protocol error from the web server: %s", c->ps.error);
            gone(c, CONN_BROKEN);
            close_io(c);
            maybe_finish(c);
            break;
        }
    }
}

static void read_fcgi(struct conn *c)
{
    char buf[65536];
    for (int round = 0; round < READS_PER_EVENT && !c->io_dead && !c->release; round++) {
        ssize_t n = read(c->in_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            /* the web server closed the connection: the client left, or it
             * is done with us */
            gone(c, n == 0 || errno == ECONNRESET ? CONN_CLOSED : CONN_BROKEN);
            close_io(c);
            maybe_finish(c);
            return;
        }
        c->last_in = now_us();
        feed(c, buf, (size_t)n);
        if ((size_t)n < sizeof(buf)) {
            return; /* the socket is drained: no read just to see EAGAIN */
        }
    }
}

static void drained(struct conn *c)
{
    if (c->above_high && conn_pending(c) <= CONN_LOW_WATER) {
        c->above_high = false;
        if (c->req != NULL && !c->gone) {
            c->srv->h->on_drain(c->req);
        }
    }
}

static void on_io(void *ud, uint32_t events)
{
    struct conn *c = ud;
    c->depth++;
    if (events & EPOLLOUT) {
        try_send(c);
        drained(c);
        maybe_finish(c);
    }
    if (!c->io_dead && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        read_fcgi(c);
    }
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

/* The queue written during the event that just ended. */
static void flush_later(void *ud)
{
    struct conn *c = ud;
    c->depth++;
    try_send(c);
    drained(c);
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

static void arm_tick(struct conn_server *s)
{
    if (s->tick.at < 0) {
        s->tick.at = now_us() + TICK_US;
    }
}

static struct conn *conn_new(struct conn_server *s, int in_fd, int out_fd, bool cgi, bool sock)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->cgi = cgi;
    c->sock = sock;
    c->flush.fn = flush_later;
    c->flush.ud = c;
    buf_init(&c->reply, 1u << 20);
    buf_init(&c->out, OUT_CAP);
    fcgi_parser_init(&c->ps, &c->reply);
    c->last_in = c->last_out = now_us();
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->nconns++;
    arm_tick(s);
    return c;
}

static void on_listen(void *ud, uint32_t events)
{
    (void)events;
    struct conn_server *s = ud;
    for (int i = 0; i < 32 && s->listen_h != NULL; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                int64_t now = now_us();
                if (now - s->emfile_logged > 10000000) {
                    LOG_ERROR("cannot accept connections: %s (raise the fd limit)",
                              strerror(errno));
                    s->emfile_logged = now;
                } /* stop listening until the next tick instead of spinning
                   * (an EPOLLEXCLUSIVE watch cannot be modified: removed) */
                loop_del(s->loop, s->listen_h);
                s->listen_h = NULL;
                s->listen_paused = true;
                arm_tick(s);
            } else if (errno == EINVAL) {
                /* the socket was shut down: nothing more comes */
                conn_server_stop_accepting(s);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* network errors passed on by accept (EPROTO, ENETDOWN...) are
                 * about that one connection: go on */
                continue;
            }
            return;
        }
        struct conn *c = conn_new(s, fd, fd, false, true);
        c->in_h = loop_add(s->loop, fd, EPOLLIN | EPOLLRDHUP, on_io, c);
        if (c->in_h == NULL) {
            release(c);
            continue;
        }
        /* the web server writes its request as it connects: read it now
         * rather than after one more epoll_wait */
        on_io(c, EPOLLIN);
        /* One connection per event: the watch is level-triggered, so one
         * more waiting brings the event back at the next epoll_wait (or
         * wakes another loop), and a request that comes alone costs no
         * failed accept4. After a full batch, with more ready than one batch
         * holds, the listen socket may come round only once in several:
         * then up to 32 now. */
        if (!loop_batch_full(s->loop)) {
            return;
        }
        loop_run_later(s->loop); /* what it queued goes out before the next */
    }
}

static void on_tick(void *ud, int64_t now)
{
    struct conn_server *s = ud;
    if (s->listen_paused) {
        s->listen_paused = false;
        s->listen_h = loop_add(s->loop, s->listen_fd, EPOLLIN | EPOLLEXCLUSIVE, on_listen, s);
    }
    struct conn *c = s->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        c->depth++;
        if (c->gone_owed) {
            c->gone_owed = false;
            if (c->req != NULL) {
                s->h->on_gone(c->req, c->gone_why);
            }
        }
        if (!c->io_dead && conn_pending(c) > 0 && now - c->last_out > s->set.stall_ms * 1000) {
            gone(c, CONN_STALLED);
            close_io(c);
        } else if (!c->io_dead && c->req == NULL && conn_pending(c) == 0) {
            /* an answered request whose body never ended, or a connection
             * that never brought (another) request; counted from the last
             * byte either way, so an ended answer still going out to a slow
             * client is not cut (the stall check above watches that) */
            bool lingering = !c->in_request && (c->ps.req_id != 0 || c->cgi);
            int64_t limit = lingering ? s->set.linger_ms : s->set.idle_ms;
            int64_t last = c->last_in > c->last_out ? c->last_in : c->last_out;
            if (now - last > limit * 1000) {
                close_io(c);
            }
        }
        maybe_finish(c);
        c->depth--;
        if (c->release && c->depth == 0) {
            conn_free(c);
        }
        c = next;
    }
    if (s->nconns > 0 || s->listen_paused) {
        s->tick.at = now + TICK_US;
    }
}

bool conn_fd0_listens(void)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    return getpeername(0, (struct sockaddr *)&sa, &len) != 0 && errno == ENOTCONN;
}

int conn_listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        LOG_ERROR("socket path too long (%zu bytes, at most %zu): %s", strlen(path),
                  sizeof(sa.sun_path) - 1, path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG_ERROR("socket: %s", strerror(errno));
        return -1;
    }
    unlink(path);             /* a socket left by an earlier run */
    mode_t old = umask(0117); /* 0660: the web server's group may connect, nobody else */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || listen(fd, 4096) != 0) {
        LOG_ERROR("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static struct conn_server *server_new(struct loop *l, int listen_fd, const struct conn_handler *h,
                                      void *app, const struct conn_settings *set)
{
    struct conn_server *s = xcalloc(1, sizeof(*s));
    s->loop = l;
    s->listen_fd = listen_fd;
    s->h = h;
    s->app = app;
    s->set = *set;
    s->tick.at = -1;
    s->tick.cb = on_tick;
    s->tick.ud = s;
    loop_alarm_add(l, &s->tick);
    return s;
}

struct conn_server *conn_server_new(struct loop *l, int listen_fd, const struct conn_handler *h,
                                    void *app, const struct conn_settings *set)
{
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        LOG_ERROR("listen socket %d: %s", listen_fd, strerror(errno));
        return NULL;
    }
    struct conn_server *s = server_new(l, listen_fd, h, app, set);
    /* several loops share the socket: wake one of them per connection */
    s->listen_h = loop_add(l, listen_fd, EPOLLIN | EPOLLEXCLUSIVE, on_listen, s);
    if (s->listen_h == NULL) {
        conn_server_free(s);
        return NULL;
    }
    return s;
}

void conn_server_stop_accepting(struct conn_server *s)
{
    loop_del(s->loop, s->listen_h);
    s->listen_h = NULL;
    s->listen_paused = false;
}

void conn_server_close_idle(struct conn_server *s)
{
    struct conn *c = s->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        if (c->req == NULL && !c->in_request && c->ps.req_id == 0 && conn_pending(c) == 0 &&
            c->depth == 0) {
            conn_free(c);
        }
        c = next;
    }
}

size_t conn_server_open(const struct conn_server *s)
{
    return s->nconns;
}

void conn_server_free(struct conn_server *s)
{
    if (s == NULL) {
        return;
    }
    conn_server_stop_accepting(s);
    while (s->conns != NULL) {
        conn_free(s->conns);
    }
    loop_alarm_remove(s->loop, &s->tick);
    free(s);
}

/* ---- CGI: one request over the process's stdio ---- */

/* A body the client sent chunked comes with no CONTENT_LENGTH: it is read
 * until stdin ends, and at most this much of it (the handler caps what it
 * keeps; the rest is read and dropped so the answer is not lost). */
#define CGI_TO_EOF (-1)
#define CGI_MAX_UNSIZED ((long long)256 << 20)

static void cgi_body_end(struct conn *c)
{
    c->cgi_left = 0;
    c->body_read = true;
    loop_del(c->srv->loop, c->in_h);
    c->in_h = NULL;
    if (c->req != NULL) {
        c->srv->h->on_body_end(c->req);
    }
}

static void cgi_body(struct conn *c, const char *p, size_t n)
{
    c->last_in = now_us();
    if (c->cgi_left != CGI_TO_EOF) {
        c->cgi_left -= (long long)n;
    } else if ((c->unsized += (long long)n) > CGI_MAX_UNSIZED) {
        gone(c, CONN_BROKEN);
        cgi_body_end(c);
        return;
    }
    if (c->req != NULL) {
        c->srv->h->on_body(c->req, p, n);
    }
    if (c->cgi_left == 0) {
        cgi_body_end(c);
    }
}

/* Reads what stdin has; blocking is fine for a file (not pollable). */
static void read_cgi(struct conn *c)
{
    char buf[65536];
    for (int round = 0; round < READS_PER_EVENT && c->cgi_left != 0 && !c->io_dead; round++) {
        size_t want = c->cgi_left < 0 || c->cgi_left >= (long long)sizeof(buf)
                          ? sizeof(buf)
                          : (size_t)c->cgi_left;
        ssize_t n = read(c->in_fd, buf, want);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n == 0 && c->cgi_left == CGI_TO_EOF) {
            cgi_body_end(c); /* the end of a chunked body */
            maybe_finish(c);
            return;
        }
        if (n <= 0) {
            /* stdin ended before CONTENT_LENGTH: the client left mid-body */
            c->cgi_left = 0;
            c->body_read = true;
            loop_del(c->srv->loop, c->in_h);
            c->in_h = NULL;
            gone(c, CONN_CLOSED);
            maybe_finish(c);
            return;
        }
        cgi_body(c, buf, (size_t)n);
    }
}

static void on_cgi_in(void *ud, uint32_t events)
{
    (void)events;
    struct conn *c = ud;
    c->depth++;
    read_cgi(c);
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

static void on_out(void *ud, uint32_t events)
{
    struct conn *c = ud;
    c->depth++;
    if (events & (EPOLLERR | EPOLLHUP)) {
        /* the web server closed our stdout: the client left */
        gone(c, CONN_CLOSED);
        close_io(c);
    } else {
        try_send(c);
        drained(c);
    }
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
}

static bool pollable(int fd)
{
    struct stat sb;
    return fstat(fd, &sb) == 0 && (S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode));
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

struct conn_server *conn_server_cgi(struct loop *l, const struct conn_handler *h, void *app,
                                    const struct conn_settings *set)
{
    struct conn_server *s = server_new(l, -1, h, app, set);
    int type = 0;
    socklen_t tl = sizeof(type);
    bool sock = getsockopt(STDOUT_FILENO, SOL_SOCKET, SO_TYPE, &type, &tl) == 0;
    struct conn *c = conn_new(s, STDIN_FILENO, STDOUT_FILENO, true, sock);
    long long cl = conn_content_length(c);
    const char *te = conn_param(c, "HTTP_TRANSFER_ENCODING");
    c->cgi_left = cl > 0 ? cl : cl < 0 && te != NULL && strcasestr(te, "chunked") ? CGI_TO_EOF : 0;
    c->body_read = c->cgi_left == 0;
    c->in_request = true; /* a file (lighttpd may hand over the body in a temp file) or a device is
                           * not pollable and never blocks: read and write it directly */
    if (pollable(STDOUT_FILENO)) {
        set_nonblock(STDOUT_FILENO);
        c->out_h = loop_add(l, STDOUT_FILENO, 0, on_out, c);
    } /* a file: not pollable, writes do not block */
    if (!c->body_read && pollable(STDIN_FILENO)) {
        set_nonblock(STDIN_FILENO);
        c->in_h = loop_add(l, STDIN_FILENO, EPOLLIN, on_cgi_in, c);
    }
    c->depth++;
    h->on_request(app, c);
    if (c->body_read && c->req != NULL) {
        h->on_body_end(c->req);
    } else if (!c->body_read && c->in_h == NULL) {
        while (c->cgi_left != 0 && !c->io_dead) {
            read_cgi(c); /* stdin is a file */
        }
    }
    c->in_request = c->req != NULL; /* CGI has one request: it ends with conn_end */
    maybe_finish(c);
    c->depth--;
    if (c->release && c->depth == 0) {
        conn_free(c);
    }
    return s;
}
