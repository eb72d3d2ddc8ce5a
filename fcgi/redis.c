/* redis.c - the state several hosts share through one Redis (hiredis, async on the loop) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "redis.h"
#include "buf.h"
#include "log.h"
#include "loop.h"
#include "sha256.h"
#include "state.h"
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>

/* 64 bits of SHA-256 (names and files: never 0) */
static uint64_t hash64(const char *p, size_t n)
{
    uint8_t d[SHA256_LEN];
    sha256(p, n, d);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | d[i];
    }
    return v ? v : 1;
}

/* ---- scripts ---- */

/* One request's round trip. Mirrors limit.c (limit_take, the reads of
 * limit_check) on the same words, so the caller recomputes the views from
 * the words it returns. Spend: each host keeps its own part of a period
 * (a field "<host>" of "requests prompt completion cost"), raised to what the host counted (never
 * lowered: a write lost while Redis was away, or a Redis restarted empty, is made good by the next
 * request), and the parts are summed. */
static const char admit_lua[] =
    "local now = tonumber(ARGV[1])\n"
    "local W = 60000000\n"
    "local out = {-1, -1, '0', '0', {'0', '0', '0', '0'}, '', {}, '', false}\n"
    "local ok = true\n"
    "if ARGV[5] == '1' then\n"
    "  local s = {0, 0, 0, 0}\n"
    "  local mine = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}\n"
    "  local all = redis.call('HGETALL', KEYS[4])\n"
    "  local had = false\n"
    "  for j = 1, #all, 2 do\n"
    "    local i = 1\n"
    "    local v = {}\n"
    "    for n in string.gmatch(all[j + 1], '%d+') do\n"
    "      if i <= 4 then v[i] = tonumber(n) end\n"
    "      i = i + 1\n"
    "    end\n"
    "    if all[j] == ARGV[6] then\n"
    "      had = true\n"
    "      for k = 1, 4 do if (v[k] or 0) > mine[k] then mine[k] = v[k] end end\n"
    "    else\n"
    "      for k = 1, 4 do s[k] = s[k] + (v[k] or 0) end\n"
    "    end\n"
    "  end\n"
    "  local own = string.format('%.0f %.0f %.0f %.0f', mine[1], mine[2], mine[3], mine[4])\n"
    "  if not had or own ~= ARGV[7] .. ' ' .. ARGV[8] .. ' ' .. ARGV[9] .. ' ' .. ARGV[10] then\n"
    "    redis.call('HSET', KEYS[4], ARGV[6], own)\n"
    "    if tonumber(ARGV[11]) > 0 then redis.call('EXPIRE', KEYS[4], ARGV[11]) end\n"
    "  end\n"
    "  for k = 1, 4 do s[k] = s[k] + mine[k]; out[5][k] = string.format('%.0f', s[k]) end\n"
    "  local bc, bt = tonumber(ARGV[14]), tonumber(ARGV[15])\n"
    "  if (bc >= 0 and s[4] >= bc) or (bt >= 0 and s[2] + s[3] >= bt) then ok = false end\n"
    "end\n"
    "local tpm = tonumber(ARGV[4])\n"
    "if tpm > 0 then\n"
    "  out[4] = redis.call('GET', KEYS[3]) or '0'\n"
    "  local tat = tonumber(out[4])\n"
    "  local t = math.floor(W / tpm)\n"
    "  if t < 1 then t = 1 end\n"
    "  if tat > now and tat - now > 10 * W then tat = now end\n"
    "  if tat > now and tat - now + t > W then ok = false end\n"
    "end\n"
    "local rpm = tonumber(ARGV[3])\n"
    "if rpm > 0 then\n"
    "  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "  out[3] = string.format('%.0f', tat)\n"
    "  if ok then\n"
    "    local t = math.floor(W / rpm)\n"
    "    if t < 1 then t = 1 end\n"
    "    local base = tat\n"
    "    if base > now and base - now > W then base = now end\n"
    "    if base < now then base = now end\n"
    "    local nxt = base + t\n"
    "    if nxt - now > W then out[2] = 0; ok = false else\n"
    "      out[2] = 1\n"
    "      redis.call('SET', KEYS[2], string.format('%.0f', nxt), 'PX', 120000)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[2] == '1' and ok then out[1] = redis.call('INCR', KEYS[1]) - 1 end\n"
    "local cv = redis.call('HMGET', KEYS[5], 'v', 'epoch')\n"
    "out[6] = cv[2] or '0'\n"
    "if out[6] ~= ARGV[12] then out[7] = redis.call('HGETALL', KEYS[6]) end\n"
    "out[8] = cv[1] or ''\n"
    "if ARGV[13] == '1' then out[9] = redis.call('GET', KEYS[7]) end\n"
    "return out\n";

/* After an answer: its tokens on the key's Tpm bucket (limit_charge) and
 * this host's spend. */
static const char after_lua[] =
    "local now = tonumber(ARGV[1])\n"
    "local W = 60000000\n"
    "local tpm = tonumber(ARGV[2])\n"
    "local n = tonumber(ARGV[3])\n"
    "if tpm > 0 and n > 0 then\n"
    "  local t = math.floor(W / tpm)\n"
    "  if t < 1 then t = 1 end\n"
    "  local base = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "  if base > now and base - now > 10 * W then base = now end\n"
    "  if base < now then base = now end\n"
    "  local nxt = base + n * t\n"
    "  if nxt > now + 10 * W then nxt = now + 10 * W end\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', 11 * 60000)\n"
    "end\n"
    "if ARGV[4] == '1' then\n"
    "  local mine = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}\n"
    "  local cur = redis.call('HGET', KEYS[2], ARGV[5])\n"
    "  if cur then\n"
    "    local i = 1\n"
    "    for n in string.gmatch(cur, '%d+') do\n"
    "      if i <= 4 and tonumber(n) > mine[i] then mine[i] = tonumber(n) end\n"
    "      i = i + 1\n"
    "    end\n"
    "  end\n"
    "  redis.call('HSET', KEYS[2], ARGV[5],\n"
    "             string.format('%.0f %.0f %.0f %.0f', mine[1], mine[2], mine[3], mine[4]))\n"
    "  if tonumber(ARGV[10]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[10]) end\n"
    "end\n"
    "return 1\n";

/* The configuration: a change is written only over the version it was
 * made from (ARGV[3]; '' for an empty Redis, which is how one is seeded,
 * with a new generation ARGV[4]: versions of two seedings never compare
 * equal); a field given as '-' is left as it is. Returns {1, v, gen} or
 * {0, v now, ''}. */
static const char config_lua[] =
    "local v = redis.call('HGET', KEYS[1], 'v') or ''\n"
    "if v ~= ARGV[3] then return {0, v, ''} end\n"
    "if v == '' then redis.call('HSET', KEYS[1], 'gen', ARGV[4]) end\n"
    "if ARGV[1] ~= '-' then redis.call('HSET', KEYS[1], 'routing', ARGV[1]) end\n"
    "if ARGV[2] ~= '-' then redis.call('HSET', KEYS[1], 'keys', ARGV[2]) end\n"
    "return {1, tostring(redis.call('HINCRBY', KEYS[1], 'v', 1)),\n"
    "        redis.call('HGET', KEYS[1], 'gen') or ''}\n";

enum { SCRIPT_ADMIT, SCRIPT_AFTER, SCRIPT_CONFIG, NSCRIPTS };
static const char *const script_text[NSCRIPTS] = {admit_lua, after_lua, config_lua};

/* ---- the connection ---- */

#define HEALTH_RECORDS REDIS_PREFIX "health:records"
#define CONFIG_META                                                                                \
    "redis-config" /* [0] version applied, [1] routing, [2] keys: hashes synced, [3] generation */
#define POLL_US 250000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_ARGS 32
/* commands not answered yet past which writes are dropped (a Redis that takes
 * them but does not answer must not grow our memory) */
#define MAX_PENDING 20000

enum rs_conn { RS_DOWN, RS_CONNECTING, RS_UP };

struct rs_op {
    struct rshare *r;
    struct rs_op *prev, *next; /* waiting for its answer (admit) */
    int64_t deadline;
    int script;
    bool waiting;
    bool sent_text; /* sent as EVAL: a NOSCRIPT cannot come back */
    rs_done_fn done;
    void *ud;
    struct rs_admit *a;
    void (*config_cb)(struct rshare *r, struct rs_op *op, redisReply *reply); /* config script's */
    uint64_t hashes[2]; /* a push: what was sent (0: that file was not) */
    int argc;
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    struct buf store; /* the arguments' bytes */
};

struct rshare {
    struct loop *loop;
    struct redis_settings set;
    struct state *st;
    char dir[4096];
    char host[40];
    rs_health_fn health;
    void *hud;

    redisAsyncContext *ac;
    struct loop_fd *h;
    uint32_t ev;
    enum rs_conn conn;
    bool answered;  /* a reply came on this connection */
    bool told_down; /* the outage was logged */
    bool stopping;
    bool eager; /* ask before the first answer (CGI) */
    bool flush; /* commands queued: written before the loop waits again */
    bool kill;  /* the server said it cannot serve us: drop the connection */
    char kill_why[160];
    int64_t connect_at; /* when the connection was begun */
    int64_t poll_sent;  /* when the config poll in flight was sent */
    uint64_t bad[2];    /* a file found invalid (logged once) */
    int64_t retry_at;
    int64_t backoff_ms;
    int64_t poll_at;
    bool polling;
    struct rs_op *head, *tail; /* admits waiting, oldest first */
    size_t pending;            /* commands sent and not answered */
    char sha[NSCRIPTS][48];    /* loaded on this connection ("" until then) */
    char epoch[32];            /* the health records' version applied */
    struct loop_alarm alarm;
    /* the local files as last read (stat), to hash them only when they change */
    struct {
        struct stat sb;
        uint64_t hash;
        bool have;
    } files[2];
};

static int outage_logged; /* atomic: this process said Redis is away */

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t *meta(struct rshare *r, const char *name)
{
    return state_words(r->st, STATE_NS_META, name, NULL, NULL);
}

static void meta_set(struct rshare *r, int i, uint64_t v)
{
    uint64_t *w = meta(r, REDIS_META_NAME);
    if (w != NULL) {
        __atomic_store_n(&w[i], v, __ATOMIC_RELAXED);
    }
}

static void meta_add(struct rshare *r, int i)
{
    uint64_t *w = meta(r, REDIS_META_NAME);
    if (w != NULL) {
        __atomic_add_fetch(&w[i], 1, __ATOMIC_RELAXED);
    }
}

static void schedule(struct rshare *r);

static void ev_set(struct rshare *r, uint32_t ev)
{
    if (r->ac == NULL) {
        return;
    }
    r->ev = ev;
    if (r->h != NULL) {
        loop_mod(r->loop, r->h, ev);
    }
}

static void ev_add_read(void *p)
{
    struct rshare *r = p;
    ev_set(r, r->ev | EPOLLIN);
}
static void ev_del_read(void *p)
{
    struct rshare *r = p;
    ev_set(r, r->ev & ~(uint32_t)EPOLLIN);
}
static void ev_add_write(void *p)
{
    struct rshare *r = p;
    ev_set(r, r->ev | EPOLLOUT);
}
static void ev_del_write(void *p)
{
    struct rshare *r = p;
    ev_set(r, r->ev & ~(uint32_t)EPOLLOUT);
}
static void ev_cleanup(void *p)
{
    struct rshare *r = p;
    loop_del(r->loop, r->h);
    r->h = NULL;
    r->ev = 0;
}

static void on_fd(void *ud, uint32_t events)
{
    struct rshare *r = ud;
    redisAsyncContext *ac = r->ac;
    if (ac == NULL) {
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        redisAsyncHandleRead(ac);
    }
    if (r->ac == ac && (events & EPOLLOUT)) {
        redisAsyncHandleWrite(ac);
    }
}

/* Redis is away: say so once, serve locally, try again later. */
static void go_down(struct rshare *r, const char *why)
{
    if (r->conn == RS_DOWN || r->stopping) {
        return;
    }
    r->conn = RS_DOWN;
    r->answered = false;
    r->polling = false;
    r->epoch[0] = '\0';
    for (int i = 0; i < NSCRIPTS; i++) {
        r->sha[i][0] = '\0';
    }
    /* one line per process and outage, however many loops see it */
    if (!r->told_down && !__atomic_exchange_n(&outage_logged, 1, __ATOMIC_RELAXED)) {
        LOG_ERROR("redis %s is unreachable (%s): this process serves from its local state, "
                  "unshared, until it is back (retrying)",
                  r->set.url.shown, why != NULL && *why != '\0' ? why : "connection lost");
    }
    r->told_down = true;
    meta_set(r, 0, 0);
    r->retry_at = mono_us() + r->backoff_ms * 1000;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    schedule(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct rshare *r = ac->data;
    if (r->ac == ac) {
        r->ac = NULL;
    }
    go_down(r, ac->errstr);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rshare *r = ac->data;
    if (status != REDIS_OK) {
        if (r->ac == ac) {
            r->ac = NULL; /* hiredis frees it */
        }
        go_down(r, ac->errstr);
    }
}

/* Errors that say this server cannot serve llmproxy now (a wrong password,
 * a replica after a failover, a Redis still loading its data): the
 * connection is given up and retried with backoff, never taken as Redis
 * being there. */
static bool unusable_error(const char *e)
{
    static const char *const prefixes[] = {"NOAUTH",
                                           "WRONGPASS",
                                           "READONLY",
                                           "LOADING",
                                           "MASTERDOWN",
                                           "MISCONF",
                                           "NOPERM",
                                           "NOREPLICAS",
                                           "ERR invalid password",
                                           "ERR AUTH",
                                           "ERR Client sent AUTH",
                                           "ERR DB index",
                                           "ERR invalid DB",
                                           "BUSY"};
    for (size_t i = 0; i < ARRAY_LEN(prefixes); i++) {
        if (strncmp(e, prefixes[i], strlen(prefixes[i])) == 0) {
            return true;
        }
    }
    return false;
}

static void refuse(struct rshare *r, const char *why)
{
    if (!r->kill) {
        r->kill = true;
        snprintf(r->kill_why, sizeof(r->kill_why), "%s", why);
        r->alarm.at = 0; /* dropped from the alarm, outside hiredis's callbacks */
    }
}

static void answered(struct rshare *r);

/* The start of every reply callback: false when there is no usable reply. */
static bool got(struct rshare *r, const redisReply *rep)
{
    r->pending--;
    if (rep == NULL) {
        return false;
    }
    if (rep->type == REDIS_REPLY_ERROR && unusable_error(rep->str)) {
        refuse(r, rep->str);
        return false;
    }
    answered(r);
    return true;
}

/* A reply came: Redis is here. */
static void answered(struct rshare *r)
{
    if (r->answered) {
        return;
    }
    r->answered = true;
    r->conn = RS_UP;
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->told_down && __atomic_exchange_n(&outage_logged, 0, __ATOMIC_RELAXED)) {
        LOG_WARN("redis %s answers again: state is shared again", r->set.url.shown);
    }
    r->told_down = false;
    meta_set(r, 0, 1);
}

/* A script or command error that is ours (not the server's state): logged,
 * at most once a minute per process. */
static void log_error_reply(struct rshare *r, const char *e)
{
    static int64_t last; /* atomic */
    int64_t t = mono_us(), l = __atomic_load_n(&last, __ATOMIC_RELAXED);
    if ((l == 0 || t - l > 60000000) &&
        __atomic_compare_exchange_n(&last, &l, t, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        LOG_WARN("redis %s: %s", r->set.url.shown, e);
    }
}

static void drop_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    redisReply *rep = reply;
    if (got(r, rep) && rep->type == REDIS_REPLY_ERROR) {
        log_error_reply(r, rep->str);
    }
    (void)priv;
}

/* AUTH and SELECT: any error means this connection cannot be used. */
static void setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    redisReply *rep = reply;
    (void)priv;
    if (got(r, rep) && rep->type == REDIS_REPLY_ERROR) {
        refuse(r, rep->str);
    }
}

static void on_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    int i = (int)(intptr_t)priv;
    redisReply *rep = reply;
    if (got(r, rep)) {
        if (rep->type == REDIS_REPLY_STRING && rep->len < sizeof(r->sha[i])) {
            memcpy(r->sha[i], rep->str, rep->len);
            r->sha[i][rep->len] = '\0';
        } else if (rep->type == REDIS_REPLY_ERROR) {
            LOG_ERROR("redis %s refused llmproxy's script: %s", r->set.url.shown, rep->str);
            refuse(r, rep->str);
        }
    }
}

static int send_cmd(struct rshare *r, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                    const size_t *lens)
{
    if (r->ac == NULL || r->pending >= MAX_PENDING ||
        redisAsyncCommandArgv(r->ac, fn, priv, argc, argv, lens) != REDIS_OK) {
        return -1;
    }
    r->pending++;
    if (!r->flush && r->conn == RS_UP) {
        /* written at the end of this turn of the loop, not after one more wait */
        r->flush = true;
        r->alarm.at = 0;
    }
    return 0;
}

static void connect_now(struct rshare *r)
{
    const struct redis_url *u = &r->set.url;
    redisAsyncContext *ac =
        u->unix_socket ? redisAsyncConnectUnix(u->path) : redisAsyncConnect(u->host, u->port);
    if (ac == NULL) {
        r->conn = RS_CONNECTING;
        go_down(r, "out of memory");
        return;
    }
    if (ac->err) {
        char why[256];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        r->conn = RS_CONNECTING;
        go_down(r, why);
        return;
    }
    r->ac = ac;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->h = loop_add(r->loop, ac->c.fd, 0, on_fd, r);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->conn = RS_CONNECTING;
    r->answered = false;
    r->kill = false;
    r->connect_at = mono_us();
    /* the connection's first commands, answered before anything sent after */
    if (u->pass[0] != '\0') {
        const char *argv[3] = {"AUTH", u->user, u->pass};
        size_t lens[3] = {4, strlen(u->user), strlen(u->pass)};
        if (u->user[0] != '\0') {
            send_cmd(r, setup_reply, NULL, 3, argv, lens);
        } else {
            argv[1] = u->pass;
            lens[1] = lens[2];
            send_cmd(r, setup_reply, NULL, 2, argv, lens);
        }
    }
    if (u->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        send_cmd(r, setup_reply, NULL, 2, argv, lens);
    }
    for (int i = 0; i < NSCRIPTS; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", script_text[i]};
        size_t lens[3] = {6, 4, strlen(script_text[i])};
        send_cmd(r, on_loaded, (void *)(intptr_t)i, 3, argv, lens);
    }
    /* the first poll at once: a CGI process pushes or pulls a change too */
    r->poll_at = mono_us();
    schedule(r);
}

/* Requests ask Redis once it answered on this connection (a Redis that
 * accepts connections but hangs costs one timeout per retry, not one per
 * request); a CGI process, whose one request comes at once, asks at once. */
static bool usable(struct rshare *r)
{
    if (r->conn == RS_DOWN && mono_us() >= r->retry_at) {
        connect_now(r);
    }
    return r->ac != NULL && (r->conn == RS_UP || (r->conn == RS_CONNECTING && r->eager));
}

void rshare_eager(struct rshare *r)
{
    if (r != NULL) {
        r->eager = true;
    }
}

/* ---- script calls ---- */

static struct rs_op *op_new(struct rshare *r, int script)
{
    struct rs_op *op = xcalloc(1, sizeof(*op));
    op->r = r;
    op->script = script;
    buf_init(&op->store, 64 * 1024);
    buf_presize(&op->store, 1024);
    op->argc = 2; /* EVALSHA sha | EVAL text */
    return op;
}

static void op_free(struct rs_op *op)
{
    buf_cleanup(&op->store);
    free(op);
}

/* Arguments are kept as offsets until the op is sent (the store may move). */
static void op_arg(struct rs_op *op, const char *s, size_t n)
{
    if (op->argc < MAX_ARGS) {
        op->lens[op->argc] = n;
        op->argv[op->argc++] = (const char *)(uintptr_t)op->store.len;
        buf_append(&op->store, s, n);
        buf_append(&op->store, "", 1);
    }
}

static void op_argf(struct rs_op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op_argf(struct rs_op *op, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    op_arg(op, tmp, n < 0 ? 0 : (size_t)n >= sizeof(tmp) ? sizeof(tmp) - 1 : (size_t)n);
}

static void unlink_op(struct rshare *r, struct rs_op *op)
{
    if (!op->waiting) {
        return;
    }
    op->waiting = false;
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        r->head = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    } else {
        r->tail = op->prev;
    }
    op->prev = op->next = NULL;
}

static void finish_admit(struct rs_op *op, bool ok)
{
    struct rshare *r = op->r;
    unlink_op(r, op);
    rs_done_fn done = op->done;
    op->done = NULL;
    if (done != NULL) {
        op->a->ok = ok;
        if (!ok) {
            meta_add(r, 1);
        }
        done(op->ud, op->a);
    }
}

static void on_script(redisAsyncContext *ac, void *reply, void *priv);

static int op_send(struct rs_op *op)
{
    struct rshare *r = op->r;
    const char *argv[MAX_ARGS];
    for (int i = 2; i < op->argc; i++) {
        argv[i] = op->store.data + (uintptr_t)op->argv[i];
    }
    if (r->sha[op->script][0] != '\0' && !op->sent_text) {
        argv[0] = "EVALSHA";
        argv[1] = r->sha[op->script];
    } else {
        argv[0] = "EVAL";
        argv[1] = script_text[op->script];
        op->sent_text = true;
    }
    op->lens[0] = strlen(argv[0]);
    op->lens[1] = strlen(argv[1]);
    return send_cmd(r, on_script, op, op->argc, argv, op->lens);
}

static uint64_t num(const redisReply *e)
{
    if (e == NULL) {
        return 0;
    }
    if (e->type == REDIS_REPLY_INTEGER) {
        return e->integer > 0 ? (uint64_t)e->integer : 0;
    }
    if (e->type == REDIS_REPLY_STRING) {
        return strtoull(e->str, NULL, 10);
    }
    return 0;
}

static void read_admit(struct rshare *r, struct rs_admit *a, const redisReply *rep)
{
    redisReply *const *e = rep->element;
    a->ticket =
        e[0]->type == REDIS_REPLY_INTEGER && e[0]->integer >= 0 ? (uint64_t)e[0]->integer : 0;
    a->rpm_ok = e[1]->type == REDIS_REPLY_INTEGER ? (int)e[1]->integer : -1;
    a->rpm_tat = num(e[2]);
    a->tpm_tat = num(e[3]);
    if (e[4]->type == REDIS_REPLY_ARRAY && e[4]->elements == 4) {
        for (int i = 0; i < 4; i++) {
            a->spend_total[i] = num(e[4]->element[i]);
        }
    }
    /* health records written since the ones applied */
    if (e[5]->type == REDIS_REPLY_STRING && strcmp(e[5]->str, r->epoch) != 0 &&
        e[6]->type == REDIS_REPLY_ARRAY) {
        size_t n = e[6]->elements / 2, m = 0;
        const char **f = xcalloc(n + 1, sizeof(*f));
        const char **v = xcalloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++) {
            const redisReply *fi = e[6]->element[2 * i], *vi = e[6]->element[2 * i + 1];
            if (fi->type == REDIS_REPLY_STRING && vi->type == REDIS_REPLY_STRING) {
                f[m] = fi->str;
                v[m++] = vi->str;
            }
        }
        if (r->health != NULL) {
            r->health(r->hud, f, v, m);
        }
        free(f);
        free(v);
        snprintf(r->epoch, sizeof(r->epoch), "%s", e[5]->str);
    }
    /* a configuration changed elsewhere: the next poll (now) pulls it */
    if (e[7]->type == REDIS_REPLY_STRING) {
        uint64_t *w = meta(r, CONFIG_META);
        uint64_t v = strtoull(e[7]->str, NULL, 10);
        if (w != NULL && v != __atomic_load_n(&w[0], __ATOMIC_RELAXED)) {
            r->poll_at = mono_us();
            schedule(r);
        }
    }
    a->have_response = e[8]->type == REDIS_REPLY_STRING && e[8]->len < sizeof(a->response);
    if (a->have_response) {
        memcpy(a->response, e[8]->str, e[8]->len);
        a->response[e[8]->len] = '\0';
    }
}

static void on_script(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    struct rs_op *op = priv;
    redisReply *rep = reply;
    if (!got(r, rep)) {
        /* the connection went, or cannot serve: undecided, so local */
        if (op->done != NULL) {
            finish_admit(op, false);
        }
        if (op->config_cb != NULL) {
            r->polling = false;
        }
        op_free(op);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !op->sent_text) {
        /* the script cache was flushed: once more, with the script */
        r->sha[op->script][0] = '\0';
        if (op_send(op) == 0) {
            return;
        }
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        log_error_reply(r, rep->str);
    }
    if (op->done != NULL) {
        bool ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == 9;
        if (ok) {
            read_admit(r, op->a, rep);
        }
        finish_admit(op, ok);
    }
    if (op->config_cb != NULL) {
        op->config_cb(r, op, rep);
    }
    op_free(op);
}

struct rs_op *rshare_admit(struct rshare *r, struct rs_admit *a, rs_done_fn done, void *ud)
{
    if (r == NULL || !usable(r)) {
        if (r != NULL) {
            meta_add(r, 1);
        }
        return NULL;
    }
    struct rs_op *op = op_new(r, SCRIPT_ADMIT);
    op->a = a;
    op->done = done;
    op->ud = ud;
    op_argf(op, "7");
    op_argf(op, REDIS_PREFIX "t:%s", a->model != NULL ? a->model : "");
    op_argf(op, REDIS_PREFIX "k:%s:rpm", a->key_id != NULL ? a->key_id : "");
    op_argf(op, REDIS_PREFIX "k:%s:tpm", a->key_id != NULL ? a->key_id : "");
    op_argf(op, REDIS_PREFIX "k:%s:spend:%s", a->key_id != NULL ? a->key_id : "",
            a->period != NULL ? a->period : "");
    op_argf(op, REDIS_CONFIG); /* v and the health records' epoch */
    op_argf(op, HEALTH_RECORDS);
    op_argf(op, REDIS_PREFIX "r:%016llx",
            (unsigned long long)(a->response_id != NULL
                                     ? hash64(a->response_id, strlen(a->response_id))
                                     : 0));
    op_argf(op, "%llu", (unsigned long long)a->now_us);
    op_argf(op, "%d", a->model != NULL);
    op_argf(op, "%u", a->key_id != NULL ? a->rpm : 0);
    op_argf(op, "%u", a->key_id != NULL ? a->tpm : 0);
    op_argf(op, "%d", a->key_id != NULL && a->period != NULL);
    op_argf(op, "%s", r->host);
    for (int i = 0; i < 4; i++) {
        op_argf(op, "%llu", (unsigned long long)a->spend[i]);
    }
    op_argf(op, "%lld", (long long)a->spend_ttl_s);
    op_argf(op, "%s", r->epoch[0] != '\0' ? r->epoch : "-");
    op_argf(op, "%d", a->response_id != NULL);
    op_argf(op, "%lld", (long long)(a->period != NULL ? a->budget_micro : -1));
    op_argf(op, "%lld", (long long)(a->period != NULL ? a->budget_tokens : -1));
    if (op_send(op) != 0) {
        op_free(op);
        meta_add(r, 1);
        return NULL;
    }
    op->deadline = mono_us() + r->set.timeout_ms * 1000;
    op->waiting = true;
    op->prev = r->tail;
    if (r->tail != NULL) {
        r->tail->next = op;
    } else {
        r->head = op;
    }
    r->tail = op;
    schedule(r);
    return op;
}

void rshare_cancel(struct rs_op *op)
{
    if (op != NULL) {
        unlink_op(op->r, op);
        op->done = NULL; /* freed when its answer (or the connection's end) comes */
    }
}

/* Writes go where requests' scripts go: a connection that answered (or a
 * CGI process's, whose one request asks at once). */
static bool writable(struct rshare *r)
{
    return usable(r);
}

void rshare_after(struct rshare *r, const char *key_id, uint32_t tpm, uint64_t tokens,
                  const char *period, const uint64_t spend[4], int64_t spend_ttl_s, uint64_t now_us)
{
    if (r == NULL || !writable(r)) {
        return;
    }
    struct rs_op *op = op_new(r, SCRIPT_AFTER);
    op_argf(op, "2");
    op_argf(op, REDIS_PREFIX "k:%s:tpm", key_id);
    op_argf(op, REDIS_PREFIX "k:%s:spend:%s", key_id, period != NULL ? period : "");
    op_argf(op, "%llu", (unsigned long long)now_us);
    op_argf(op, "%u", tpm);
    op_argf(op, "%llu", (unsigned long long)tokens);
    op_argf(op, "%d", period != NULL);
    op_argf(op, "%s", r->host);
    for (int i = 0; i < 4; i++) {
        op_argf(op, "%llu", (unsigned long long)(period != NULL ? spend[i] : 0));
    }
    op_argf(op, "%lld", (long long)spend_ttl_s);
    if (op_send(op) != 0) {
        op_free(op);
    }
}

void rshare_health_put(struct rshare *r, const char *field, const char *value)
{
    if (r == NULL || !writable(r)) {
        return;
    }
    const char *a1[4] = {"HSET", HEALTH_RECORDS, field, value};
    size_t l1[4] = {4, strlen(HEALTH_RECORDS), strlen(field), strlen(value)};
    const char *a2[4] = {"HINCRBY", REDIS_CONFIG, "epoch", "1"};
    size_t l2[4] = {7, strlen(REDIS_CONFIG), 5, 1};
    /* every record is stale two hours after the last one was written (a
     * cooldown lasts an hour at most): the hash then goes */
    const char *a3[3] = {"EXPIRE", HEALTH_RECORDS, "7200"};
    size_t l3[3] = {6, strlen(HEALTH_RECORDS), 4};
    send_cmd(r, drop_reply, NULL, 4, a1, l1);
    send_cmd(r, drop_reply, NULL, 4, a2, l2);
    send_cmd(r, drop_reply, NULL, 3, a3, l3);
}

void rshare_put_response(struct rshare *r, const char *id, const char *value, int64_t ttl_ms)
{
    if (r == NULL || !writable(r)) {
        return;
    }
    char key[64], px[32];
    snprintf(key, sizeof(key), REDIS_PREFIX "r:%016llx",
             (unsigned long long)hash64(id, strlen(id)));
    snprintf(px, sizeof(px), "%lld", (long long)ttl_ms);
    const char *argv[5] = {"SET", key, value, "PX", px};
    size_t lens[5] = {3, strlen(key), strlen(value), 2, strlen(px)};
    send_cmd(r, drop_reply, NULL, 5, argv, lens);
}

void rshare_forget_response(struct rshare *r, const char *id)
{
    if (r == NULL || !writable(r)) {
        return;
    }
    char key[64];
    snprintf(key, sizeof(key), REDIS_PREFIX "r:%016llx",
             (unsigned long long)hash64(id, strlen(id)));
    const char *argv[2] = {"DEL", key};
    size_t lens[2] = {3, strlen(key)};
    send_cmd(r, drop_reply, NULL, 2, argv, lens);
}

size_t rshare_pending(const struct rshare *r)
{
    return r != NULL ? r->pending : 0;
}

/* ---- the configuration ---- */

static const struct store_kind *const kinds[2] = {&store_routing, &store_keys};

/* The hash of a local file's bytes (0: no file), read again only when stat changes. */
static uint64_t file_hash(struct rshare *r, int k, struct buf *text)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", r->dir, kinds[k]->file);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        r->files[k].have = false;
        return 0;
    }
    if (text == NULL && r->files[k].have && sb.st_mtim.tv_sec == r->files[k].sb.st_mtim.tv_sec &&
        sb.st_mtim.tv_nsec == r->files[k].sb.st_mtim.tv_nsec &&
        sb.st_size == r->files[k].sb.st_size && sb.st_ino == r->files[k].sb.st_ino) {
        return r->files[k].hash;
    }
    struct buf b;
    buf_init(&b, STORE_MAX_FILE);
    if (store_read_text(kinds[k], r->dir, &b) != 0) {
        buf_cleanup(&b);
        return 0;
    }
    uint64_t h = hash64(b.data != NULL ? b.data : "", b.len);
    r->files[k].sb = sb;
    r->files[k].hash = h;
    r->files[k].have = true;
    if (text != NULL) {
        buf_append(text, b.data, b.len);
    }
    buf_cleanup(&b);
    return h;
}

static void poll_done(struct rshare *r)
{
    r->polling = false;
    r->poll_at = mono_us() + POLL_US;
    schedule(r);
}

/* Raises w (a version applied) only forward within one generation: a
 * late pull of an older version never undoes a newer one. */
static void applied(uint64_t *w, uint64_t v, uint64_t gen)
{
    uint64_t g = __atomic_load_n(&w[3], __ATOMIC_RELAXED);
    uint64_t cur = __atomic_load_n(&w[0], __ATOMIC_RELAXED);
    if (g == gen && cur >= v) {
        return;
    }
    __atomic_store_n(&w[0], v, __ATOMIC_RELAXED);
    __atomic_store_n(&w[3], gen, __ATOMIC_RELAXED);
}

static uint64_t str_hash(const redisReply *e)
{
    return e != NULL && e->type == REDIS_REPLY_STRING ? hash64(e->str, e->len) : 0;
}

/* The shared version's files, written here where they differ. */
static void on_pulled(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    (void)priv;
    redisReply *rep = reply;
    if (!got(r, rep)) {
        r->polling = false;
        return;
    }
    uint64_t *w = meta(r, CONFIG_META);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 || w == NULL ||
        rep->element[0]->type != REDIS_REPLY_STRING) {
        poll_done(r);
        return;
    }
    uint64_t v = strtoull(rep->element[0]->str, NULL, 10);
    uint64_t gen = str_hash(rep->element[1]);
    bool changed = false;
    for (int k = 0; k < 2; k++) {
        const redisReply *t = rep->element[k + 2];
        if (t->type != REDIS_REPLY_STRING) {
            continue; /* not shared (yet): this host's file stays, and is pushed */
        }
        uint64_t h = hash64(t->str, t->len);
        uint64_t here = file_hash(r, k, NULL);
        if (h != here) {
            char err[600];
            if (here != 0 && here != __atomic_load_n(&w[k + 1], __ATOMIC_RELAXED)) {
                LOG_WARN("the %s was changed here and on another host at once: the other "
                         "host's change (redis version %llu) wins, this host's is replaced",
                         kinds[k]->what, (unsigned long long)v);
            }
            if (store_replace_text(kinds[k], r->dir, t->str, t->len, err, sizeof(err)) != 0) {
                if (r->bad[k] != h) {
                    LOG_ERROR("the shared %s (redis, version %llu) is not used here: %s",
                              kinds[k]->what, (unsigned long long)v, err);
                    r->bad[k] = h;
                }
                continue;
            }
            LOG_INFO("the %s was changed on another host: version %llu from redis applied",
                     kinds[k]->what, (unsigned long long)v);
            changed = true;
        }
        __atomic_store_n(&w[k + 1], h, __ATOMIC_RELAXED);
    }
    applied(w, v, gen);
    if (changed) {
        meta_add(r, 2);
        state_next(r->st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL);
    }
    poll_done(r);
}

static void on_pushed(struct rshare *r, struct rs_op *op, redisReply *rep)
{
    uint64_t *w = meta(r, CONFIG_META);
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1 &&
        rep->element[1]->type == REDIS_REPLY_STRING && w != NULL) {
        /* what was sent is what is shared now (the file may have changed
         * again meanwhile: that is pushed by the next poll) */
        for (int k = 0; k < 2; k++) {
            if (op->hashes[k] != 0) {
                __atomic_store_n(&w[k + 1], op->hashes[k], __ATOMIC_RELAXED);
            }
        }
        applied(w, strtoull(rep->element[1]->str, NULL, 10), str_hash(rep->element[2]));
        meta_add(r, 3);
        LOG_INFO("this host's configuration is shared through redis (version %s)",
                 rep->element[1]->str);
    }
    /* refused: another host changed it first; the next poll pulls that */
    poll_done(r);
}

/* This host's files, where they changed here (an admin change, an edit by
 * hand) or where Redis has none (empty: seeded), over version v ("" for
 * none). */
static void push(struct rshare *r, const char *v, bool seed, const uint64_t *synced)
{
    struct buf text[2];
    bool send[2];
    uint64_t hashes[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        buf_init(&text[k], STORE_MAX_FILE);
        uint64_t h = file_hash(r, k, &text[k]);
        send[k] = h != 0 && (seed || h != synced[k]);
        char why[512];
        if (send[k] && kinds[k]->check(text[k].data != NULL ? text[k].data : "", text[k].len, why,
                                       sizeof(why)) != 0) {
            if (r->bad[k] != h) {
                LOG_ERROR("the %s is invalid (%s): it is not shared", kinds[k]->what, why);
                r->bad[k] = h;
            }
            send[k] = false;
        }
        hashes[k] = send[k] ? h : 0;
    }
    if (!send[0] && !send[1] && !seed) {
        buf_cleanup(&text[0]);
        buf_cleanup(&text[1]);
        poll_done(r);
        return;
    }
    struct rs_op *op = op_new(r, SCRIPT_CONFIG);
    op->config_cb = on_pushed;
    op->hashes[0] = hashes[0];
    op->hashes[1] = hashes[1];
    op_argf(op, "1");
    op_argf(op, REDIS_CONFIG);
    for (int k = 0; k < 2; k++) {
        if (send[k]) {
            op_arg(op, text[k].data != NULL ? text[k].data : "", text[k].len);
        } else {
            op_arg(op, "-", 1);
        }
        buf_cleanup(&text[k]);
    }
    op_arg(op, v, strlen(v));
    /* a new generation, should this push seed an empty Redis */
    op_argf(op, "%s-%llx", r->host, (unsigned long long)mono_us());
    if (op_send(op) != 0) {
        op_free(op);
        r->polling = false;
    }
}

static void on_polled(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rshare *r = ac->data;
    (void)priv;
    redisReply *rep = reply;
    if (!got(r, rep)) {
        r->polling = false;
        return;
    }
    uint64_t *w = meta(r, CONFIG_META);
    if (w == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) {
        poll_done(r);
        return;
    }
    uint64_t synced[2] = {__atomic_load_n(&w[1], __ATOMIC_RELAXED),
                          __atomic_load_n(&w[2], __ATOMIC_RELAXED)};
    if (rep->element[0]->type != REDIS_REPLY_STRING) {
        /* an empty Redis (new, or restarted empty): seeded from here */
        push(r, "", true, synced);
        return;
    }
    const char *v = rep->element[0]->str;
    const redisReply *len[2] = {rep->element[2], rep->element[3]};
    bool missing = false;
    for (int k = 0; k < 2; k++) {
        missing |= len[k]->type != REDIS_REPLY_INTEGER || len[k]->integer == 0;
    }
    if (strtoull(v, NULL, 10) != __atomic_load_n(&w[0], __ATOMIC_RELAXED) ||
        str_hash(rep->element[1]) != __atomic_load_n(&w[3], __ATOMIC_RELAXED)) {
        /* changed elsewhere (or another seeding): pulled (a change made
         * here meanwhile loses: logged) */
        const char *argv[6] = {"HMGET", REDIS_CONFIG, "v", "gen", "routing", "keys"};
        size_t lens[6] = {5, strlen(REDIS_CONFIG), 1, 3, 7, 4};
        if (send_cmd(r, on_pulled, NULL, 6, argv, lens) != 0) {
            r->polling = false;
        }
        return;
    }
    bool local = false;
    for (int k = 0; k < 2; k++) {
        uint64_t h = file_hash(r, k, NULL);
        bool absent = len[k]->type == REDIS_REPLY_INTEGER && len[k]->integer == 0;
        local |= h != 0 && h != r->bad[k] && (h != synced[k] || absent);
    }
    if (local) {
        push(r, v, false, missing ? (const uint64_t[2]){0, 0} : synced);
        return;
    }
    poll_done(r);
}

static void poll_config(struct rshare *r)
{
    if (r->polling || r->ac == NULL) {
        return;
    }
    /* v, the generation, and whether each file is there (HSTRLEN: 0 when not) */
    static const char lua[] = "return {redis.call('HGET', KEYS[1], 'v'), "
                              "redis.call('HGET', KEYS[1], 'gen'), "
                              "redis.call('HSTRLEN', KEYS[1], 'routing'), "
                              "redis.call('HSTRLEN', KEYS[1], 'keys')}";
    const char *argv[4] = {"EVAL", lua, "1", REDIS_CONFIG};
    size_t lens[4] = {4, strlen(lua), 1, strlen(REDIS_CONFIG)};
    if (send_cmd(r, on_polled, NULL, 4, argv, lens) == 0) {
        r->polling = true;
        r->poll_sent = mono_us();
    }
}

/* ---- time ---- */

/* How long the connection's own work (connecting, a config poll or push)
 * may go unanswered before the connection is given up: nobody waits for
 * it, so longer than a request's timeout. */
static int64_t slow_us(const struct rshare *r)
{
    int64_t ms = r->set.timeout_ms * 4 > 1000 ? r->set.timeout_ms * 4 : 1000;
    return ms * 1000;
}

/* The connection is given up: what waits on it is decided locally. */
static void drop_connection(struct rshare *r, const char *why)
{
    while (r->head != NULL) {
        finish_admit(r->head, false);
    }
    go_down(r, why);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac != NULL) {
        redisAsyncFree(ac); /* its callbacks run, with no reply */
    }
}

static void on_alarm(void *ud, int64_t now)
{
    struct rshare *r = ud;
    (void)now;
    if (r->flush) {
        r->flush = false;
        if (r->ac != NULL && r->conn == RS_UP) {
            redisAsyncHandleWrite(r->ac); /* may end the connection: its callbacks run */
        }
    }
    int64_t t = mono_us();
    char why[200];
    if (r->kill) {
        r->kill = false;
        snprintf(why, sizeof(why), "it answered: %s", r->kill_why);
        drop_connection(r, why);
    }
    if (r->head != NULL && t >= r->head->deadline) {
        /* Redis is late: nobody waits more than the timeout; the connection
         * is given up (a Redis that answers late answers every request late) */
        snprintf(why, sizeof(why), "no answer within %ld ms", r->set.timeout_ms);
        drop_connection(r, why);
    }
    if (r->conn != RS_DOWN && ((r->polling && t - r->poll_sent > slow_us(r)) ||
                               (r->conn == RS_CONNECTING && t - r->connect_at > slow_us(r)))) {
        snprintf(why, sizeof(why), "no answer within %lld ms", (long long)(slow_us(r) / 1000));
        drop_connection(r, why);
    }
    if (r->conn == RS_DOWN && t >= r->retry_at) {
        connect_now(r);
    }
    if (r->conn != RS_DOWN && t >= r->poll_at && !r->polling) {
        poll_config(r);
        r->poll_at = t + POLL_US;
    }
    schedule(r);
}

static void schedule(struct rshare *r)
{
    int64_t at;
    if (r->conn == RS_DOWN) {
        at = r->retry_at;
    } else if (r->polling) {
        at = r->poll_sent + slow_us(r); /* never a time past: the loop would spin */
    } else {
        at = r->poll_at;
    }
    if (r->conn == RS_CONNECTING && r->connect_at + slow_us(r) < at) {
        at = r->connect_at + slow_us(r);
    }
    if (r->flush || r->kill) {
        at = 0;
    }
    if (r->head != NULL && r->head->deadline < at) {
        at = r->head->deadline;
    }
    /* the loop's alarms are in monotonic us too */
    r->alarm.at = at;
}

struct rshare *rshare_new(struct loop *l, const struct redis_settings *s, struct state *st,
                          const char *dir, const char *host_id, rs_health_fn health, void *ud)
{
    if (s == NULL || !s->on) {
        return NULL;
    }
    struct rshare *r = xcalloc(1, sizeof(*r));
    r->loop = l;
    r->set = *s;
    r->st = st;
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    snprintf(r->host, sizeof(r->host), "%s", host_id);
    r->health = health;
    r->hud = ud;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->conn = RS_DOWN;
    r->retry_at = 0;
    r->alarm.cb = on_alarm;
    r->alarm.ud = r;
    r->alarm.at = -1;
    loop_alarm_add(l, &r->alarm);
    connect_now(r);
    return r;
}

void rshare_free(struct rshare *r)
{
    if (r == NULL) {
        return;
    }
    while (r->head != NULL) {
        finish_admit(r->head, false);
    }
    loop_alarm_remove(r->loop, &r->alarm);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac != NULL) {
        r->stopping = true; /* not an outage */
        redisAsyncFree(ac);
    }
    free(r);
}
