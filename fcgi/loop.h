/* loop.h - an event loop per thread: epoll, fd callbacks, alarms, work posted from other threads */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_LOOP_H
#define LLMPROXY_LOOP_H

#include <stdbool.h>
#include <stdint.h>

/* Everything runs on the thread that calls loop_run, except loop_post and
 * loop_wake, which any thread may call. Watches are level-triggered. */
struct loop;
struct loop_fd;

/* events: EPOLLIN, EPOLLOUT, EPOLLRDHUP... as given by epoll_wait. */
typedef void (*loop_fd_cb)(void *ud, uint32_t events);

/* A deadline the loop checks on every turn: when now >= at (monotonic us,
 * -1 is "none") cb runs once and at is reset to -1 first; the callback may
 * set it again. The caller owns the struct; it stays registered until
 * loop_alarm_remove. */
struct loop_alarm {
    int64_t at;
    void (*cb)(void *ud, int64_t now);
    void *ud;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);

/* Watch fd; cb(ud, events) runs when it is ready. NULL on failure. */
struct loop_fd *loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ud);
/* Change the events watched; 0 or -1. */
int loop_mod(struct loop *l, struct loop_fd *h, uint32_t events);
/* The events currently watched. */
uint32_t loop_events(const struct loop_fd *h);
/* Stop watching (the fd is not closed). h must not be used again; events
 * of the batch being handled no longer reach its callback. NULL: no-op. */
void loop_del(struct loop *l, struct loop_fd *h);

/* Stop watching an fd the caller closes right after: the close takes it out
 * of epoll. Only for an fd whose open file is not shared with another
 * descriptor (no dup, no fork while it is open, no exec without CLOEXEC):
 * otherwise the epoll entry outlives the close and fires for a freed
 * handle. The accepted FastCGI connections qualify (accept4 with
 * SOCK_CLOEXEC, and the programs do not fork once serving). */
void loop_del_closing(struct loop *l, struct loop_fd *h);

/* Work run once after the callback that queued it returns, in the same turn
 * (output gathered during one event goes out in one write). The caller owns
 * the struct and sets fn and ud; queuing a queued one is a no-op. */
struct loop_later {
    void (*fn)(void *ud);
    void *ud;
    struct loop_later *prev;
    struct loop_later *next;
    int queued;
};
void loop_later(struct loop *l, struct loop_later *w);
/* Takes w off the queue if it is on it (before the struct is freed). */
void loop_later_cancel(struct loop *l, struct loop_later *w);
/* Runs what is queued now (the loop does it after every callback; a
 * callback that serves several requests in turn may do it between them). */
void loop_run_later(struct loop *l);

void loop_alarm_add(struct loop *l, struct loop_alarm *a);
void loop_alarm_remove(struct loop *l, struct loop_alarm *a);

/* Thread-safe: run fn(arg) on the loop's thread soon. */
void loop_post(struct loop *l, void (*fn)(void *arg), void *arg);

/* Runs until loop_quit is called from the loop's thread. */
void loop_run(struct loop *l);
/* One turn: waits for events (at most max_ms; -1: until one comes or an
 * alarm is due), handles them and the due alarms. */
void loop_run_once(struct loop *l, int max_ms);
void loop_quit(struct loop *l);
/* The batch being handled is as large as one can be: more may be ready. */
bool loop_batch_full(const struct loop *l);

#endif
