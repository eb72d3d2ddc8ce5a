/* proxy.h - one client request: validate, order, relay, fail over */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_PROXY_H
#define LLMPROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct fcgi_client;
struct upstream_loop;
struct state;

/* Tunables, read from the environment by proxy_settings_from_env. */
struct proxy_settings {
    size_t max_body;         /* LLMPROXY_MAX_BODY_BYTES, default 16 MiB */
    long connect_timeout_ms; /* LLMPROXY_CONNECT_TIMEOUT_MS, default 5000 */
    unsigned max_attempts;   /* LLMPROXY_MAX_ATTEMPTS, default 16 */
    size_t hold_max;         /* bytes held before the first event decides, 4 MiB */
    long deadline_ms;        /* LLMPROXY_DEADLINE_MS: all attempts until an answer, 300000 */
    size_t max_response;     /* LLMPROXY_MAX_RESPONSE_BYTES: relayed per answer, 256 MiB */
};

void proxy_settings_from_env(struct proxy_settings *s);

struct proxy;

/* The process-wide proxy. It borrows loop and st (st may be NULL). */
struct proxy *proxy_new(const struct proxy_settings *s, struct upstream_loop *loop,
                        struct state *st);
void proxy_free(struct proxy *px);

/* Serves one accepted request. Called on an accepting thread: answers what
 * needs no upstream at once, hands the rest to the loop. Takes c. */
void proxy_handle(struct proxy *px, struct fcgi_client *c);

/* For upstream_loop_run / upstream_loop_stop, on the loop thread. */
void proxy_tick(void *px, int64_t now_us);
int proxy_busy(void *px);

#endif
