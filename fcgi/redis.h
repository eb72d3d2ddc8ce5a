/* redis.h - the state several hosts share through one Redis (hiredis, async on the loop) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_REDIS_H
#define LLMPROXY_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* LLMPROXY_REDIS_URL: redis://[[user]:password@]host[:port][/db] or
 * unix:///path[?db=N]. rediss:// needs a hiredis with TLS, which Debian
 * 12's 0.14 has not: refused with a clear message. */
struct redis_url {
    bool unix_socket;
    char host[256];
    int port;
    char path[512];
    char user[128];
    char pass[256];
    int db;
    char shown[700]; /* for logs: the password replaced by *** */
};
/* Pure. 0, or -1 with a message in err. */
int redis_url_parse(const char *s, struct redis_url *u, char *err, size_t errlen);

struct redis_settings {
    bool on;
    struct redis_url url;
    long timeout_ms; /* LLMPROXY_REDIS_TIMEOUT_MS (50): no request waits longer */
};
/* From the environment. 0 (on or off), or -1 with a message (the URL is
 * invalid: the programs refuse to start rather than run unshared). */
int redis_settings_from_env(struct redis_settings *s, char *err, size_t errlen);

/* Every key starts with this. */
#define REDIS_PREFIX "llmproxy:"
/* The configuration: a hash of v (a version bumped by every change),
 * routing and keys (the files' exact bytes). */
#define REDIS_CONFIG REDIS_PREFIX "config"

/* ---- a responder's connection (one per event loop) ---- */
struct loop;
struct state;
struct rshare;

/* What one request asks of Redis, in one round trip (a Lua script), and
 * what it says. Filled by the caller; the out part by rshare. */
struct rs_admit {
    /* in */
    const char *model;  /* NULL: no ticket wanted */
    const char *key_id; /* NULL: keyless */
    uint32_t rpm, tpm;
    const char *period; /* non-NULL: the key has a budget; spend[] is this host's part */
    int64_t budget_micro, budget_tokens; /* its budget (-1: none): refused, nothing is taken */
    uint64_t spend[4];
    int64_t spend_ttl_s; /* 0: kept */
    uint64_t now_us;
    const char *response_id; /* non-NULL: the entry of this response is wanted */
    /* out (ok: Redis answered in time) */
    bool ok;
    uint64_t ticket;
    int rpm_ok; /* 1 taken, 0 refused (-1: not asked) */
    uint64_t rpm_tat, tpm_tat;
    uint64_t spend_total[4]; /* every host's */
    bool have_response;
    char response[160]; /* the entry, as rshare_put_response wrote it */
};
struct rs_op;
typedef void (*rs_done_fn)(void *ud, struct rs_admit *a);

/* Health records other hosts wrote (since the ones seen): applied to the
 * local state by the owner's hook (field: which record, see
 * rshare_health_put). */
typedef void (*rs_health_fn)(void *ud, const char *const *fields, const char *const *values,
                             size_t n);

struct rshare *rshare_new(struct loop *l, const struct redis_settings *s, struct state *st,
                          const char *dir, const char *host_id, rs_health_fn health, void *ud);
void rshare_free(struct rshare *r);
/* Requests ask while the connection is still being made (a CGI process). */
void rshare_eager(struct rshare *r);

/* Sends the request's script. NULL when Redis is away (nothing is called:
 * decide locally); else done(ud, a) runs exactly once, from the loop, with
 * a->ok false when Redis did not answer within the timeout. */
struct rs_op *rshare_admit(struct rshare *r, struct rs_admit *a, rs_done_fn done, void *ud);
/* The caller is gone: done is not called. */
void rshare_cancel(struct rs_op *op);

/* Fire and forget (dropped while Redis is away): */
/* tokens charged to a key's Tpm, and this host's spend of its period */
void rshare_after(struct rshare *r, const char *key_id, uint32_t tpm, uint64_t tokens,
                  const char *period, const uint64_t spend[4], int64_t spend_ttl_s,
                  uint64_t now_us);
void rshare_health_put(struct rshare *r, const char *field, const char *value);
void rshare_put_response(struct rshare *r, const char *id, const char *value, int64_t ttl_ms);
void rshare_forget_response(struct rshare *r, const char *id);

/* Operations waiting for an answer (a CGI process waits for them before it exits). */
size_t rshare_pending(const struct rshare *r);

/* The shared counters the admin program shows in /metrics: state META
 * words of REDIS_META_NAME: [0] 1 while Redis answers, [1] requests decided
 * on local state because Redis was away or late, [2] configurations
 * pulled, [3] pushed. */
#define REDIS_META_NAME "redis"

#endif
