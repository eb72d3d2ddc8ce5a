/* proxy.h - one client request: validate, order, relay, fail over */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_PROXY_H
#define LLMPROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct state;

/* Tunables, read from the environment by proxy_settings_from_env. */
struct proxy_settings {
    size_t max_body;         /* LLMPROXY_MAX_BODY_BYTES, default 16 MiB */
    long connect_timeout_ms; /* LLMPROXY_CONNECT_TIMEOUT_MS, default 5000 */
    unsigned max_attempts;   /* LLMPROXY_MAX_ATTEMPTS, default 16 */
    size_t hold_max;         /* bytes held before the first event decides, 4 MiB */
    long deadline_ms;        /* LLMPROXY_DEADLINE_MS: all attempts until an answer, 300000 */
    size_t max_response;     /* LLMPROXY_MAX_RESPONSE_BYTES: relayed per answer, 256 MiB */
    long body_timeout_ms;    /* LLMPROXY_BODY_TIMEOUT_MS: the body may pause this long, 30000 */
    long stall_ms;           /* LLMPROXY_CLIENT_STALL_MS: a client that takes nothing, 120000 */
    long drain_ms;           /* LLMPROXY_DRAIN_MS: requests in flight after SIGTERM, 5000 */
    int keyless_remote;      /* LLMPROXY_ALLOW_KEYLESS_REMOTE=1: keyless mode serves anyone */
    size_t max_multipart;    /* LLMPROXY_MAX_MULTIPART_BYTES: a multipart body, 32 MiB */
    int64_t responses_max_age_ms; /* LLMPROXY_RESPONSES_DAYS: affinity kept, 30 days */
    size_t responses_slots; /* LLMPROXY_RESPONSES_SLOTS: ids the table holds (when made), 2^18 */
};

void proxy_settings_from_env(struct proxy_settings *s);

/* What the loops of one process share: settings, the state, request ids. */
struct proxy_shared;
/* dir: the state dir; usage may be NULL (nothing recorded). */
struct usage_writer;
struct proxy_shared *proxy_shared_new(const struct proxy_settings *s, struct state *st,
                                      const char *dir, struct usage_writer *usage);
/* The Responses table (STATE_DIR/responses.state), mapped at the first call:
 * call it once before the loops' threads start, or from a process's only
 * thread (CGI). A table that cannot be mapped is this process's own (logged). */
struct affinity;
struct affinity *proxy_affinity(struct proxy_shared *sh);
void proxy_shared_free(struct proxy_shared *sh);

/* The requests of one loop. listen_fd: the FastCGI socket to accept on;
 * -1 serves the one request of a CGI process. NULL on failure. */
struct proxy;
struct proxy *proxy_new(struct proxy_shared *sh, struct loop *l, int listen_fd);
void proxy_free(struct proxy *px);

/* On the loop's thread: stop taking requests, let those in flight finish
 * within drain_ms, end the rest (streams with an error event), then make
 * the loop return. A CGI process's loop returns after its request anyway. */
void proxy_drain(void *px);
/* The same with no time left: a second signal. */
void proxy_drain_now(void *px);

#endif
