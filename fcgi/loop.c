/* loop.c - an event loop per thread: epoll, fd callbacks, alarms, work posted from other threads */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_ALARMS 8
/* Events taken from epoll_wait at once. */
#define LOOP_BATCH 256

/* What an epoll event points at. A deleted watch is not freed while the
 * batch of events being handled may still name it: it is marked dead and
 * freed after the batch. */
struct loop_fd {
    int fd;
    uint32_t events;
    loop_fd_cb cb;
    void *ud;
    int dead;
    struct loop_fd *next_dead;
};

struct post {
    void (*fn)(void *arg);
    void *arg;
    struct post *next;
};

struct loop {
    int ep;
    int wake_fd;
    struct loop_fd *wake;
    struct loop_fd *graveyard;
    struct loop_later *later; /* a doubly linked queue: head and tail */
    struct loop_later *later_tail;
    struct loop_alarm *alarms[MAX_ALARMS];
    size_t nalarms;
    int quit;
    int batch; /* events in the batch being handled */

    pthread_mutex_t mu; /* guards posts */
    struct post *posts;
    struct post *posts_tail;
};

static void run_posts(void *ud, uint32_t events)
{
    (void)events;
    struct loop *l = ud;
    uint64_t n;
    ssize_t rc = read(l->wake_fd, &n, sizeof(n)); /* one read resets an eventfd */
    (void)rc;
    pthread_mutex_lock(&l->mu);
    struct post *p = l->posts;
    l->posts = NULL;
    l->posts_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (p != NULL) {
        struct post *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

struct loop *loop_new(void)
{
    struct loop *l = xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->ep < 0 || l->wake_fd < 0) {
        LOG_ERROR("cannot create an event loop: %s", strerror(errno));
        loop_free(l);
        return NULL;
    }
    l->wake = loop_add(l, l->wake_fd, EPOLLIN, run_posts, l);
    if (l->wake == NULL) {
        loop_free(l);
        return NULL;
    }
    return l;
}

static void free_graveyard(struct loop *l)
{
    while (l->graveyard != NULL) {
        struct loop_fd *h = l->graveyard;
        l->graveyard = h->next_dead;
        free(h);
    }
}

void loop_free(struct loop *l)
{
    if (l == NULL) {
        return;
    }
    loop_del(l, l->wake);
    free_graveyard(l);
    while (l->posts != NULL) {
        struct post *p = l->posts;
        l->posts = p->next;
        free(p);
    }
    if (l->wake_fd >= 0) {
        close(l->wake_fd);
    }
    if (l->ep >= 0) {
        close(l->ep);
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

struct loop_fd *loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ud)
{
    struct loop_fd *h = xcalloc(1, sizeof(*h));
    h->fd = fd;
    h->events = events;
    h->cb = cb;
    h->ud = ud;
    struct epoll_event e = {.events = events, .data.ptr = h};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
        LOG_ERROR("epoll_ctl add %d: %s", fd, strerror(errno));
        free(h);
        return NULL;
    }
    return h;
}

int loop_mod(struct loop *l, struct loop_fd *h, uint32_t events)
{
    if (h->events == events) {
        return 0;
    }
    struct epoll_event e = {.events = events, .data.ptr = h};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, h->fd, &e) != 0) {
        LOG_ERROR("epoll_ctl mod %d: %s", h->fd, strerror(errno));
        return -1;
    }
    h->events = events;
    return 0;
}

uint32_t loop_events(const struct loop_fd *h)
{
    return h->events;
}

void loop_del(struct loop *l, struct loop_fd *h)
{
    if (h == NULL) {
        return;
    }
    /* the fd may already be closed (curl closes its sockets before it says
     * so): then epoll dropped it by itself */
    epoll_ctl(l->ep, EPOLL_CTL_DEL, h->fd, NULL);
    h->dead = 1;
    h->next_dead = l->graveyard;
    l->graveyard = h;
}

void loop_del_closing(struct loop *l, struct loop_fd *h)
{
    if (h == NULL) {
        return;
    }
    h->dead = 1;
    h->next_dead = l->graveyard;
    l->graveyard = h;
}

void loop_later(struct loop *l, struct loop_later *w)
{
    if (w->queued) {
        return;
    }
    w->queued = 1;
    w->next = NULL;
    w->prev = l->later_tail;
    if (l->later_tail != NULL) {
        l->later_tail->next = w;
    } else {
        l->later = w;
    }
    l->later_tail = w;
}

void loop_later_cancel(struct loop *l, struct loop_later *w)
{
    if (!w->queued) {
        return;
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        l->later = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        l->later_tail = w->prev;
    }
    w->queued = 0;
    w->prev = w->next = NULL;
}

/* Each runs once; one may queue others (or itself again). */
void loop_run_later(struct loop *l)
{
    while (l->later != NULL) {
        struct loop_later *w = l->later;
        loop_later_cancel(l, w);
        w->fn(w->ud);
    }
}

void loop_alarm_add(struct loop *l, struct loop_alarm *a)
{
    if (l->nalarms >= MAX_ALARMS) {
        LOG_ERROR("more than %d alarms on one loop", MAX_ALARMS);
        abort(); /* a programming error: the users are fixed */
    }
    l->alarms[l->nalarms++] = a;
}

void loop_alarm_remove(struct loop *l, struct loop_alarm *a)
{
    for (size_t i = 0; i < l->nalarms; i++) {
        if (l->alarms[i] == a) {
            l->alarms[i] = l->alarms[--l->nalarms];
            return;
        }
    }
}

void loop_post(struct loop *l, void (*fn)(void *arg), void *arg)
{
    struct post *p = xmalloc(sizeof(*p));
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->posts_tail != NULL) {
        l->posts_tail->next = p;
    } else {
        l->posts = p;
    }
    l->posts_tail = p;
    pthread_mutex_unlock(&l->mu);
    uint64_t one = 1;
    ssize_t rc = write(l->wake_fd, &one, sizeof(one));
    (void)rc; /* EAGAIN: a wake-up is already pending */
}

bool loop_batch_full(const struct loop *l)
{
    return l->batch == LOOP_BATCH;
}

void loop_quit(struct loop *l)
{
    l->quit = 1;
}

static int wait_ms(const struct loop *l, int64_t now)
{
    int64_t at = -1;
    for (size_t i = 0; i < l->nalarms; i++) {
        int64_t t = l->alarms[i]->at;
        if (t >= 0 && (at < 0 || t < at)) {
            at = t;
        }
    }
    if (at < 0) {
        return -1;
    }
    if (at <= now) {
        return 0;
    }
    int64_t ms = (at - now + 999) / 1000;
    return ms > 60000 ? 60000 : (int)ms;
}

static void run_alarms(struct loop *l, int64_t now)
{
    /* an alarm callback may add or remove alarms: walk a copy */
    struct loop_alarm *due[MAX_ALARMS];
    size_t n = 0;
    for (size_t i = 0; i < l->nalarms; i++) {
        if (l->alarms[i]->at >= 0 && l->alarms[i]->at <= now) {
            due[n++] = l->alarms[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        due[i]->at = -1;
        due[i]->cb(due[i]->ud, now);
    }
}

void loop_run_once(struct loop *l, int max_ms)
{
    struct epoll_event evs[LOOP_BATCH];
    int ms = wait_ms(l, now_us());
    if (max_ms >= 0 && (ms < 0 || ms > max_ms)) {
        ms = max_ms;
    }
    int n = epoll_wait(l->ep, evs, (int)ARRAY_LEN(evs), ms);
    if (n < 0 && errno != EINTR) {
        LOG_ERROR("epoll_wait: %s", strerror(errno));
        l->quit = 1;
        loop_run_later(l); /* what is queued still goes out */
        log_flush();
        return;
    }
    l->batch = n;
    for (int i = 0; i < n; i++) {
        struct loop_fd *h = evs[i].data.ptr;
        if (!h->dead) {
            h->cb(h->ud, evs[i].events);
            loop_run_later(l);
        }
    }
    run_alarms(l, now_us());
    loop_run_later(l);
    free_graveyard(l);
    log_flush(); /* the turn's held log lines (log_hold), after what it sent */
}

void loop_run(struct loop *l)
{
    while (!l->quit) {
        loop_run_once(l, -1);
    }
}
