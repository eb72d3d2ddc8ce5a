/* route.h - attempt order per strategy and key rotation (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ROUTE_H
#define LLMPROXY_ROUTE_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

/* Precompute what route_order needs (the weighted sequence). Called once per
 * model when a snapshot is built; the config owns the result. */
void route_prepare(struct config_model *m);

/* Number of enabled backends. */
size_t route_enabled(const struct config_model *m);
/* Enabled backends of m that speak api. */
size_t route_enabled_api(const struct config_model *m, enum config_api api);

/* True when route_order reads its ticket (RoundRobin, Weighted): only then
 * does the caller need to draw one from the shared counter. */
bool route_uses_ticket(const struct config_model *m);

/* Writes the order in which backends are tried (indexes into m->backends,
 * enabled ones only) and returns how many. ticket is the model's request
 * number from the shared counter: RoundRobin starts at ticket mod n,
 * Weighted starts at the ticket-th step of a smooth weighted round robin
 * (exact proportions over every sum-of-weights requests). The other
 * backends follow as fallbacks. */
size_t route_order(const struct config_model *m, uint64_t ticket, uint8_t *order, size_t max);

/* True when a request needs a ticket at all: route_order reads it, or a
 * backend's key rotation does (route_key_counter). */
bool route_wants_ticket(const struct config_model *m);

/* The rotation counter of backend bi's keys for the request with this
 * ticket: how many earlier tickets went to bi first (RoundRobin, Weighted),
 * or the ticket itself (Failover). One shared counter per model thus
 * rotates both the backends and their keys exactly, across processes and
 * hosts. */
uint64_t route_key_counter(const struct config_model *m, size_t bi, uint64_t ticket);

/* Key index for a backend's rotation counter value. */
size_t route_key_index(const struct config_backend *b, uint64_t counter);

#endif
