/* upstream.c - the event loop: libcurl multi transfers over epoll, watched fds, posted work */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "upstream.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Idle easy handles kept for reuse (their settings are reset, the
 * connections live in the multi handle's cache either way). */
#define POOL_MAX 256
/* Idle upstream connections kept open for reuse. */
#define MAX_IDLE_CONNECTIONS 512

enum ev_kind { EV_CURL, EV_WATCH, EV_WAKE };

/* What an epoll event points at. Objects are never freed while an epoll
 * batch may still name them: they are marked dead and freed after it. */
struct ev {
    enum ev_kind kind;
    int fd;
    int dead;
    struct ev *next_dead;
};

struct curl_sock {
    struct ev ev;
};

struct upstream_watch {
    struct ev ev;
    void (*cb)(void *ud);
    void *ud;
};

struct upstream_xfer {
    CURL *easy;
    struct curl_slist *headers;
    const struct upstream_handler *h;
    void *ud;
    int status;       /* status of the response whose headers are being read */
    int headers_done; /* the final response's headers were delivered */
    int aborted;      /* a callback asked to stop */
};

struct post {
    void (*fn)(void *arg);
    void *arg;
    struct post *next;
};

struct upstream_loop {
    int ep;
    struct ev wake;
    CURLM *multi;
    int64_t timer_at; /* curl's timer, monotonic us; -1 none */
    struct ev *graveyard;
    CURL *pool[POOL_MAX];
    size_t npool;

    pthread_mutex_t mu; /* guards posts and stop */
    struct post *posts;
    struct post *posts_tail;
    int stop;
    int (*busy)(void *ud);
    void *busy_ud;
};

const char *upstream_result_name(enum upstream_result r)
{
    static const char *names[] = {"ok",      "connect_error", "dns_error", "tls_error",
                                  "timeout", "aborted",       "broken",    "error"};
    return (size_t)r < ARRAY_LEN(names) ? names[r] : "error";
}

static enum upstream_result map_code(CURLcode rc, const struct upstream_xfer *x)
{
    switch (rc) {
    case CURLE_OK:
        return UPSTREAM_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
        return x->headers_done ? UPSTREAM_BROKEN : UPSTREAM_CONNECT;
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
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
        return x->headers_done ? UPSTREAM_BROKEN : UPSTREAM_CONNECT;
    default:
        return UPSTREAM_OTHER;
    }
}

static void bury(struct upstream_loop *loop, struct ev *ev)
{
    ev->dead = 1;
    ev->next_dead = loop->graveyard;
    loop->graveyard = ev;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct upstream_loop *loop = userp;
    struct curl_sock *cs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (cs != NULL) {
            epoll_ctl(loop->ep, EPOLL_CTL_DEL, s, NULL);
            curl_multi_assign(loop->multi, s, NULL);
            bury(loop, &cs->ev);
        }
        return 0;
    }
    struct epoll_event e = {0};
    e.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (cs == NULL) {
        cs = xcalloc(1, sizeof(*cs));
        cs->ev.kind = EV_CURL;
        cs->ev.fd = s;
        e.data.ptr = cs;
        if (epoll_ctl(loop->ep, EPOLL_CTL_ADD, s, &e) != 0 &&
            (errno != EEXIST || epoll_ctl(loop->ep, EPOLL_CTL_MOD, s, &e) != 0)) {
            LOG_ERROR("epoll_ctl add %d: %s", (int)s, strerror(errno));
            free(cs);
            return -1;
        }
        curl_multi_assign(loop->multi, s, cs);
        return 0;
    }
    e.data.ptr = cs;
    if (epoll_ctl(loop->ep, EPOLL_CTL_MOD, s, &e) != 0) {
        LOG_ERROR("epoll_ctl mod %d: %s", (int)s, strerror(errno));
        return -1;
    }
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream_loop *loop = userp;
    loop->timer_at = timeout_ms < 0 ? -1 : now_us() + (int64_t)timeout_ms * 1000;
    return 0;
}

struct upstream_loop *upstream_loop_new(void)
{
    struct upstream_loop *loop = xcalloc(1, sizeof(*loop));
    loop->timer_at = -1;
    pthread_mutex_init(&loop->mu, NULL);
    loop->ep = epoll_create1(EPOLL_CLOEXEC);
    loop->wake.kind = EV_WAKE;
    loop->wake.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    loop->multi = curl_multi_init();
    if (loop->ep < 0 || loop->wake.fd < 0 || loop->multi == NULL) {
        LOG_ERROR("cannot create the event loop: %s", strerror(errno));
        upstream_loop_free(loop);
        return NULL;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &loop->wake};
    epoll_ctl(loop->ep, EPOLL_CTL_ADD, loop->wake.fd, &e);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
    return loop;
}

static void free_graveyard(struct upstream_loop *loop)
{
    while (loop->graveyard != NULL) {
        struct ev *ev = loop->graveyard;
        loop->graveyard = ev->next_dead;
        free(ev);
    }
}

void upstream_loop_free(struct upstream_loop *loop)
{
    if (loop == NULL) {
        return;
    }
    for (size_t i = 0; i < loop->npool; i++) {
        curl_easy_cleanup(loop->pool[i]);
    }
    if (loop->multi != NULL) {
        curl_multi_cleanup(loop->multi); /* closes cached connections */
    }
    free_graveyard(loop);
    while (loop->posts != NULL) {
        struct post *p = loop->posts;
        loop->posts = p->next;
        free(p);
    }
    if (loop->wake.fd >= 0) {
        close(loop->wake.fd);
    }
    if (loop->ep >= 0) {
        close(loop->ep);
    }
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}

static void wake(struct upstream_loop *loop)
{
    uint64_t one = 1;
    ssize_t rc = write(loop->wake.fd, &one, sizeof(one));
    (void)rc; /* EAGAIN: a wake-up is already pending */
}

void upstream_loop_post(struct upstream_loop *loop, void (*fn)(void *arg), void *arg)
{
    struct post *p = xmalloc(sizeof(*p));
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&loop->mu);
    if (loop->posts_tail != NULL) {
        loop->posts_tail->next = p;
    } else {
        loop->posts = p;
    }
    loop->posts_tail = p;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
}

void upstream_loop_stop(struct upstream_loop *loop, int (*busy)(void *ud), void *ud)
{
    pthread_mutex_lock(&loop->mu);
    loop->stop = 1;
    loop->busy = busy;
    loop->busy_ud = ud;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
}

static void run_posts(struct upstream_loop *loop)
{
    uint64_t n;
    ssize_t rc = read(loop->wake.fd, &n, sizeof(n)); /* one read resets an eventfd */
    (void)rc;
    pthread_mutex_lock(&loop->mu);
    struct post *p = loop->posts;
    loop->posts = NULL;
    loop->posts_tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (p != NULL) {
        struct post *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

struct upstream_watch *upstream_watch(struct upstream_loop *loop, int fd, void (*cb)(void *ud),
                                      void *ud)
{
    struct upstream_watch *w = xcalloc(1, sizeof(*w));
    w->ev.kind = EV_WATCH;
    w->ev.fd = fd;
    w->cb = cb;
    w->ud = ud;
    /* only hang-ups: the web server sends nothing more after the body */
    struct epoll_event e = {.events = EPOLLRDHUP, .data.ptr = w};
    if (epoll_ctl(loop->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void upstream_unwatch(struct upstream_loop *loop, struct upstream_watch *w)
{
    if (w == NULL) {
        return;
    }
    epoll_ctl(loop->ep, EPOLL_CTL_DEL, w->ev.fd, NULL);
    bury(loop, &w->ev);
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    struct upstream_xfer *x = ud;
    size_t len = size * n;
    size_t l = len;
    while (l > 0 && (p[l - 1] == '\n' || p[l - 1] == '\r')) {
        l--;
    }
    if (l >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* status line of a (possibly interim) response: "HTTP/1.1 200 OK" */
        const char *sp = memchr(p, ' ', l);
        x->status = 0;
        if (sp != NULL && (size_t)(p + l - sp) >= 4) {
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
    if (x->h->on_body(x->ud, p, len) != 0) {
        x->aborted = 1;
        return 0;
    }
    return len;
}

static CURL *easy_get(struct upstream_loop *loop)
{
    if (loop->npool > 0) {
        CURL *e = loop->pool[--loop->npool];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void easy_put(struct upstream_loop *loop, CURL *e)
{
    if (loop->npool < POOL_MAX) {
        loop->pool[loop->npool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void xfer_release(struct upstream_loop *loop, struct upstream_xfer *x)
{
    curl_multi_remove_handle(loop->multi, x->easy);
    easy_put(loop, x->easy);
    curl_slist_free_all(x->headers);
    free(x);
}

struct upstream_xfer *upstream_start(struct upstream_loop *loop, const struct upstream_request *rq,
                                     const struct upstream_handler *h, void *ud)
{
    struct upstream_xfer *x = xcalloc(1, sizeof(*x));
    x->h = h;
    x->ud = ud;
    x->easy = easy_get(loop);
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
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, rq->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* never a proxy from the environment: under CGI a client's "Proxy:"
     * header turns into HTTP_PROXY (httpoxy) */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(loop->multi, e) != CURLM_OK) {
        goto fail;
    }
    return x;
fail:
    easy_put(loop, x->easy);
    curl_slist_free_all(x->headers);
    free(x);
    return NULL;
}

void upstream_cancel(struct upstream_loop *loop, struct upstream_xfer *x)
{
    if (x != NULL) {
        xfer_release(loop, x);
    }
}

static void check_done(struct upstream_loop *loop)
{
    CURLMsg *m;
    int left;
    for (;;) {
        m = curl_multi_info_read(loop->multi, &left);
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
        xfer_release(loop, x); /* m is invalid from here on */
        h->on_done(ud, r);
    }
}

static int timeout_ms(const struct upstream_loop *loop, int64_t now, int64_t tick_at)
{
    int64_t at = tick_at;
    if (loop->timer_at >= 0 && (at < 0 || loop->timer_at < at)) {
        at = loop->timer_at;
    }
    if (at < 0) {
        return -1;
    }
    if (at <= now) {
        return 0;
    }
    return (int)((at - now + 999) / 1000);
}

void upstream_loop_run(struct upstream_loop *loop, void (*tick)(void *ud, int64_t now_us),
                       void *tick_ud, int tick_ms)
{
    struct epoll_event evs[256];
    int64_t tick_at = tick != NULL ? now_us() + (int64_t)tick_ms * 1000 : -1;
    for (;;) {
        int running;
        int n = epoll_wait(loop->ep, evs, (int)ARRAY_LEN(evs), timeout_ms(loop, now_us(), tick_at));
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct ev *ev = evs[i].data.ptr;
            if (ev->dead) {
                continue;
            }
            uint32_t ee = evs[i].events;
            switch (ev->kind) {
            case EV_CURL: {
                int flags = (ee & EPOLLIN ? CURL_CSELECT_IN : 0) |
                            (ee & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                            (ee & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
                curl_multi_socket_action(loop->multi, ev->fd, flags, &running);
                break;
            }
            case EV_WATCH: {
                struct upstream_watch *w = (struct upstream_watch *)ev;
                w->cb(w->ud);
                break;
            }
            case EV_WAKE:
                run_posts(loop);
                break;
            }
            check_done(loop);
        }
        int64_t now = now_us();
        if (loop->timer_at >= 0 && loop->timer_at <= now) {
            loop->timer_at = -1;
            curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            check_done(loop);
        }
        if (tick != NULL && tick_at <= now) {
            tick(tick_ud, now);
            tick_at = now + (int64_t)tick_ms * 1000;
        }
        free_graveyard(loop);
        pthread_mutex_lock(&loop->mu);
        int stop = loop->stop && (loop->busy == NULL || !loop->busy(loop->busy_ud));
        pthread_mutex_unlock(&loop->mu);
        if (stop) {
            break;
        }
    }
}
