/* test_loop.c - unit tests of loop.c's deferred work (loop_later): it runs
 * after the callback that queued it, once, in order; cancel, re-queue and a
 * later that cancels another behave */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/loop.c"
#include "tap.h"

struct rec {
    struct loop *l;
    struct loop_later self;
    struct loop_later *other; /* cancelled by this one's run, when set */
    int runs;
    int requeue; /* queue itself again this many times */
    int *order;
    int *norder;
    int id;
};

static void later_fn(void *ud)
{
    struct rec *r = ud;
    r->runs++;
    r->order[(*r->norder)++] = r->id;
    if (r->other != NULL) {
        loop_later_cancel(r->l, r->other);
    }
    if (r->requeue > 0) {
        r->requeue--;
        loop_later(r->l, &r->self);
    }
}

struct cb_state {
    struct rec *recs;
    size_t n;
    int fd;
    int ran_inside; /* a later that ran before the callback returned */
    int calls;
};

static void on_ready(void *ud, uint32_t ev)
{
    (void)ev;
    struct cb_state *st = ud;
    char c;
    if (read(st->fd, &c, 1) != 1) {
        return;
    }
    st->calls++;
    for (size_t i = 0; i < st->n; i++) {
        loop_later(st->recs[i].l, &st->recs[i].self);
        loop_later(st->recs[i].l, &st->recs[i].self); /* queued twice: once */
    }
    for (size_t i = 0; i < st->n; i++) {
        st->ran_inside += st->recs[i].runs;
    }
}

int main(void)
{
    struct loop *l = loop_new();
    ok(l != NULL, "a loop");
    int p[2];
    ok(pipe(p) == 0, "a pipe");
    int order[16];
    int norder = 0;
    struct rec recs[4];
    memset(recs, 0, sizeof(recs));
    for (int i = 0; i < 4; i++) {
        recs[i].l = l;
        recs[i].self.fn = later_fn;
        recs[i].self.ud = &recs[i];
        recs[i].order = order;
        recs[i].norder = &norder;
        recs[i].id = i;
    }
    recs[0].other = &recs[2].self; /* the first cancels the third before it runs */
    recs[1].requeue = 2;           /* the second runs three times */
    struct cb_state st = {recs, 4, p[0], 0, 0};
    struct loop_fd *h = loop_add(l, p[0], EPOLLIN, on_ready, &st);
    ok(h != NULL, "watching the pipe");
    ok(write(p[1], "x", 1) == 1, "the pipe is ready");
    loop_run_once(l, 1000);
    ok(st.calls == 1, "the callback ran");
    ok(st.ran_inside == 0, "no later ran inside the callback that queued it");
    ok(recs[0].runs == 1, "queued twice, run once (%d)", recs[0].runs);
    ok(recs[1].runs == 3, "re-queued from its own run: run again in the same turn (%d)",
       recs[1].runs);
    ok(recs[2].runs == 0, "cancelled by an earlier later: not run (%d)", recs[2].runs);
    ok(recs[3].runs == 1, "the rest still run after a cancel (%d)", recs[3].runs);
    ok(norder == 5 && order[0] == 0 && order[1] == 1 && order[2] == 3, "in the order queued");
    ok(l->later == NULL, "nothing left queued after the turn");

    /* cancel before the turn: not run; cancelling what is not queued is harmless */
    recs[3].runs = 0;
    loop_later(l, &recs[3].self);
    loop_later_cancel(l, &recs[3].self);
    loop_later_cancel(l, &recs[3].self);
    loop_run_once(l, 0);
    ok(recs[3].runs == 0, "a later cancelled before the turn does not run");

    /* loop_run_later runs what is queued at once */
    loop_later(l, &recs[3].self);
    loop_run_later(l);
    ok(recs[3].runs == 1 && l->later == NULL, "loop_run_later runs the queue now");

    loop_del(l, h);
    close(p[0]);
    close(p[1]);
    loop_free(l);
    return tap_done();
}
