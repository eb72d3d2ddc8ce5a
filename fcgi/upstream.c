/* upstream.c - libcurl transfers to the backends, driven by a loop */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "upstream.h"
#include "log.h"
#include "loop.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

/* Idle easy handles kept for reuse (their settings are reset, the
 * connections live in the multi handle's cache either way). */
#define POOL_MAX 256
/* A body in pieces up to this size is joined into one buffer: curl then sends
 * it in the same write as the headers (one packet, one wake-up of the
 * backend) instead of reading it in turn after them. */
#define JOIN_MAX ((size_t)64 << 10)
/* Idle upstream connections kept open for reuse. */
#define MAX_IDLE_CONNECTIONS 512

struct upstream_xfer {
    struct upstream *u;
    CURL *easy;
    struct curl_slist *headers;
    const struct upstream_handler *h;
    void *ud;
    struct upstream_piece body[UPSTREAM_MAX_PIECES];
    size_t npieces;
    char *joined; /* a small body in pieces, joined: sent with the headers */
    size_t piece; /* read position: piece index and offset in it */
    size_t off;
    int status;       /* status of the response whose headers are being read */
    int headers_done; /* the final response's headers were delivered */
    int aborted;      /* a callback asked to stop */
    int in_callback;  /* inside a curl callback of this transfer */
};

struct upstream {
    struct loop *loop;
    CURLM *multi;
    struct loop_alarm timer; /* curl's timer */
    CURL *pool[POOL_MAX];
    size_t npool;
};

const char *upstream_result_name(enum upstream_result r)
{
    static const char *names[] = {"ok",        "connect_error", "dns_error",
                                  "tls_error", "timeout",       "no_response",
                                  "aborted",   "broken",        "error"};
    return (size_t)r < ARRAY_LEN(names) ? names[r] : "error";
}

/* Before the answer's headers: was any of the request sent? A failure after
 * that may mean the backend got it (and is working on it, and billing it). */
static enum upstream_result before_answer(const struct upstream_xfer *x)
{
    long sent = 0;
    curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &sent);
    return sent > 0 ? UPSTREAM_NO_RESPONSE : UPSTREAM_CONNECT;
}

static enum upstream_result map_code(CURLcode rc, const struct upstream_xfer *x)
{
    switch (rc) {
    case CURLE_OK:
        return UPSTREAM_OK;
    case CURLE_COULDNT_CONNECT:
        return UPSTREAM_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return UPSTREAM_DNS;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return UPSTREAM_TLS;
    case CURLE_OPERATION_TIMEDOUT:
        return UPSTREAM_TIMEOUT;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return x->aborted ? UPSTREAM_ABORTED : UPSTREAM_OTHER;
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
        return x->headers_done ? UPSTREAM_BROKEN : before_answer(x);
    default:
        return UPSTREAM_OTHER;
    }
}

static void on_sock_event(void *ud, uint32_t ee);

struct sock_ctx {
    struct upstream *u;
    curl_socket_t s;
    struct loop_fd *h;
};

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct upstream *u = userp;
    struct sock_ctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc != NULL) {
            loop_del(u->loop, sc->h);
            curl_multi_assign(u->multi, s, NULL);
            free(sc);
        }
        return 0;
    }
    uint32_t ev = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (sc == NULL) {
        sc = xcalloc(1, sizeof(*sc));
        sc->u = u;
        sc->s = s;
        sc->h = loop_add(u->loop, s, ev, on_sock_event, sc);
        if (sc->h == NULL) {
            free(sc);
            return -1;
        }
        curl_multi_assign(u->multi, s, sc);
        return 0;
    }
    return loop_mod(u->loop, sc->h, ev);
}

static void check_done(struct upstream *u)
{
    for (;;) {
        int left;
        CURLMsg *m = curl_multi_info_read(u->multi, &left);
        if (m == NULL) {
            break;
        }
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        struct upstream_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        enum upstream_result r = map_code(m->data.result, x);
        const struct upstream_handler *h = x->h;
        void *ud = x->ud;
        upstream_cancel(u, x); /* m is invalid from here on */
        h->on_done(ud, r);
    }
}

static void on_sock_event(void *ud, uint32_t ee)
{
    struct sock_ctx *sc = ud;
    struct upstream *u = sc->u;
    int flags = (ee & EPOLLIN ? CURL_CSELECT_IN : 0) | (ee & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (ee & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(u->multi, sc->s, flags, &running); /* may free sc */
    check_done(u);
}

static void on_alarm(void *ud, int64_t now)
{
    (void)now;
    struct upstream *u = ud;
    int running;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(u);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream *u = userp;
    u->timer.at = timeout_ms < 0 ? -1 : now_us() + (int64_t)timeout_ms * 1000;
    return 0;
}

struct upstream *upstream_new(struct loop *l)
{
    struct upstream *u = xcalloc(1, sizeof(*u));
    u->loop = l;
    u->multi = curl_multi_init();
    if (u->multi == NULL) {
        LOG_ERROR("cannot create a curl multi handle");
        free(u);
        return NULL;
    }
    u->timer.at = -1;
    u->timer.cb = on_alarm;
    u->timer.ud = u;
    loop_alarm_add(l, &u->timer);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
    return u;
}

void upstream_free(struct upstream *u)
{
    if (u == NULL) {
        return;
    }
    for (size_t i = 0; i < u->npool; i++) {
        curl_easy_cleanup(u->pool[i]);
    }
    curl_multi_cleanup(u->multi); /* closes cached connections */
    loop_alarm_remove(u->loop, &u->timer);
    free(u);
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    struct upstream_xfer *x = ud;
    size_t len = size * n;
    size_t l = len;
    if (x->headers_done) {
        return len; /* trailers of a chunked answer: not headers of it */
    }
    while (l > 0 && (p[l - 1] == '\n' || p[l - 1] == '\r')) {
        l--;
    }
    if (l >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* status line of a (possibly interim) response: "HTTP/1.1 200 OK" */
        const char *sp = memchr(p, ' ', l);
        x->status = 0;
        if (sp != NULL && (size_t)(p + l - sp) >= 4 && sp[1] >= '1' && sp[1] <= '5' &&
            sp[2] >= '0' && sp[2] <= '9' && sp[3] >= '0' && sp[3] <= '9') {
            x->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        }
        return len;
    }
    if (x->status < 200) {
        return len; /* headers of 1xx responses */
    }
    if (l == 0) {
        x->headers_done = 1;
        if (x->h->on_headers_done(x->ud, x->status) != 0) {
            x->aborted = 1;
            return 0;
        }
        return len;
    }
    x->h->on_header(x->ud, p, l);
    return len;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    struct upstream_xfer *x = ud;
    size_t len = size * n;
    x->in_callback = 1;
    int rc = x->h->on_body(x->ud, p, len);
    x->in_callback = 0;
    if (rc == UPSTREAM_WAIT) {
        return CURL_WRITEFUNC_PAUSE;
    }
    if (rc != UPSTREAM_TAKEN) {
        x->aborted = 1;
        return 0;
    }
    return len;
}

static size_t read_cb(char *out, size_t size, size_t n, void *ud)
{
    struct upstream_xfer *x = ud;
    size_t room = size * n;
    size_t done = 0;
    while (done < room && x->piece < x->npieces) {
        const struct upstream_piece *pc = &x->body[x->piece];
        size_t k = pc->n - x->off;
        if (k > room - done) {
            k = room - done;
        }
        memcpy(out + done, pc->p + x->off, k);
        done += k;
        x->off += k;
        if (x->off == pc->n) {
            x->piece++;
            x->off = 0;
        }
    }
    return done;
}

/* curl rewinds the body when it sends the request again (a reused
 * connection found dead): only to the start is ever asked. */
static int seek_cb(void *ud, curl_off_t offset, int origin)
{
    struct upstream_xfer *x = ud;
    if (origin != SEEK_SET || offset < 0) {
        return CURL_SEEKFUNC_CANTSEEK;
    }
    x->piece = 0;
    x->off = 0;
    size_t left = (size_t)offset;
    while (x->piece < x->npieces && left >= x->body[x->piece].n) {
        left -= x->body[x->piece].n;
        x->piece++;
    }
    if (left > 0 && x->piece == x->npieces) {
        return CURL_SEEKFUNC_FAIL;
    }
    x->off = left;
    return CURL_SEEKFUNC_OK;
}

static CURL *easy_get(struct upstream *u)
{
    if (u->npool > 0) {
        CURL *e = u->pool[--u->npool];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void easy_put(struct upstream *u, CURL *e)
{
    if (u->npool < POOL_MAX) {
        u->pool[u->npool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *rq,
                                     const struct upstream_handler *h, void *ud)
{
    struct upstream_xfer *x = xcalloc(1, sizeof(*x));
    x->u = u;
    x->h = h;
    x->ud = ud;
    x->easy = easy_get(u);
    if (x->easy == NULL) {
        free(x);
        return NULL;
    }
    for (const char *const *hl = rq->headers; hl != NULL && *hl != NULL; hl++) {
        struct curl_slist *t = curl_slist_append(x->headers, *hl);
        if (t == NULL) {
            goto fail;
        }
        x->headers = t;
    }
    curl_off_t total = 0;
    x->npieces = rq->npieces < UPSTREAM_MAX_PIECES ? rq->npieces : UPSTREAM_MAX_PIECES;
    for (size_t i = 0; i < x->npieces; i++) {
        x->body[i] = rq->body[i];
        total += (curl_off_t)rq->body[i].n;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, rq->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else /* libcurl before 7.85 (the Debian 11 build of make dist) */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* never a proxy from the environment: under CGI a client's "Proxy:"
     * header turns into HTTP_PROXY (httpoxy) */
    curl_easy_setopt(e, CURLOPT_PROXY,
                     ""); /* HTTP/1.1 even to TLS backends: a paused HTTP/2 stream could take up to
                           * curl's 32 MiB stream window into memory for one slow client, and one
                           * connection per open stream is what the providers expect anyway */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (rq->method != NULL && strcmp(rq->method, "POST") != 0) {
        /* GET, HEAD or DELETE: no body */
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        if (strcmp(rq->method, "HEAD") == 0) {
            curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        } else if (strcmp(rq->method, "GET") != 0) {
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
        }
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        if (x->npieces > 1 && (size_t)total < JOIN_MAX) {
            x->joined = xmalloc((size_t)total + 1);
            size_t at = 0;
            for (size_t i = 0; i < x->npieces; i++) {
                if (x->body[i].n > 0) {
                    memcpy(x->joined + at, x->body[i].p, x->body[i].n);
                    at += x->body[i].n;
                }
            }
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->joined);
        } else if (x->npieces <= 1) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->npieces == 1 ? x->body[0].p : "");
        } else {
            /* several pieces are read in turn: no copy of the whole body */
            curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
            curl_easy_setopt(e, CURLOPT_READDATA, x);
            curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
            curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
        }
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, total);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK) {
        goto fail;
    }
    return x;
fail:
    easy_put(u, x->easy);
    curl_slist_free_all(x->headers);
    free(x->joined);
    free(x);
    return NULL;
}

void upstream_cancel(struct upstream *u, struct upstream_xfer *x)
{
    if (x == NULL) {
        return;
    }
    curl_multi_remove_handle(u->multi, x->easy);
    easy_put(u, x->easy);
    curl_slist_free_all(x->headers);
    free(x->joined);
    free(x);
}

void upstream_resume(struct upstream *u, struct upstream_xfer *x)
{
    (void)u;
    if (x != NULL && !x->in_callback) {
        /* the withheld bytes come back through write_cb right here; the
         * transfer's end, if any, is seen at the next socket action */
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
    }
}
