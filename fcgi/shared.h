/* shared.h - what a request shares with the other hosts through Redis (redis.c) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_SHARED_H
#define LLMPROXY_SHARED_H

#include "health.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct proxy;
struct request_ctx;
struct config_backend;
struct config_model;
struct affinity_entry;

/* The host's name among the hosts sharing a Redis: 32 hex digits made once
 * into STATE_DIR/instance.id. 0, or -1. */
int shared_host_id(const char *dir, char *out, size_t n);

/* A loop's connection (none without LLMPROXY_REDIS_URL). */
void shared_setup(struct proxy *px);
void shared_teardown(struct proxy *px);

/* Asks Redis, in one round trip, for what the request needs (its model's
 * ticket, its key's limits and spend, the response it follows up), then
 * runs next(ctx): later, from the loop, or at once when there is no Redis
 * or it is away (ctx->rsa.ok is false then: local state decides). Once per
 * request; a second call runs next at once. */
void shared_admit(struct request_ctx *ctx, void (*next)(struct request_ctx *ctx));
/* The request ends while it waits. */
void shared_cancel(struct request_ctx *ctx);

/* The ticket Redis drew for m (only the model asked for has one). */
bool shared_ticket(struct request_ctx *ctx, const struct config_model *m, uint64_t *ticket);

/* A key's cooldown or a circuit changed here: the other hosts hear of it. */
void shared_key_changed(struct request_ctx *ctx, const struct config_backend *b, size_t k,
                        uint64_t *w);
void shared_circuit_changed(struct request_ctx *ctx, const struct config_backend *b, uint64_t *w,
                            const uint64_t before[HEALTH_CIRCUIT_WORDS]);

/* Responses made here, and the one Redis said a follow-up continues. */
void shared_put_response(struct request_ctx *ctx, const char *id, const struct affinity_entry *e);
void shared_forget_response(struct request_ctx *ctx, const char *id);
bool shared_response(struct request_ctx *ctx, const char *id, struct affinity_entry *e);

#endif
