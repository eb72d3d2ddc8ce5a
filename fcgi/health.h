/* health.h - key cooldowns and backend circuits over shared words (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_HEALTH_H
#define LLMPROXY_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

/* Times are wall-clock milliseconds (CLOCK_REALTIME), so records in the
 * shared state file stay meaningful across processes and restarts; a record
 * further in the future than its cap (a clock step back) counts as expired.
 * Every function works on words of the state file (state_words) with atomic
 * operations only. */

/* A key that got 429 cools for its Retry-After (capped); without one, for
 * HEALTH_429_DEFAULT_MS plus up to half again of jitter. */
#define HEALTH_429_DEFAULT_MS 10000
#define HEALTH_429_CAP_MS (3600 * 1000)
/* A key that got 401/403 (rejected: our key is bad) cools this long. */
#define HEALTH_REJECTED_MS (600 * 1000)
/* A backend's circuit opens after this many consecutive failures
 * (connect errors, timeouts, 5xx, error events), first for
 * HEALTH_OPEN_BASE_MS; each failed trial doubles it, up to HEALTH_OPEN_CAP_MS. */
#define HEALTH_THRESHOLD 3
#define HEALTH_OPEN_BASE_MS 5000
#define HEALTH_OPEN_CAP_MS (120 * 1000)
/* While a trial request runs on a half-open circuit, others stay away for
 * its lease: at least this long (the caller asks for its own timeout). */
#define HEALTH_TRIAL_MS 30000
#define HEALTH_TRIAL_CAP_MS (3600 * 1000)

enum health_reason { HEALTH_NONE = 0, HEALTH_RATE_LIMITED = 429, HEALTH_REJECTED = 401 };

/* A key's record: [0] cooled until (ms), [1] reason. */
#define HEALTH_KEY_WORDS 2
void health_key_cool(uint64_t *w, uint64_t now_ms, uint64_t ms, enum health_reason why);
/* Milliseconds the key still cools (0: usable). *why gets the reason. */
uint64_t health_key_wait(const uint64_t *w, uint64_t now_ms, enum health_reason *why);
void health_key_clear(uint64_t *w);

/* A circuit's record: [0] consecutive failures, [1] open until (0: closed),
 * [2] times it opened in a row, [3] trial running until. */
#define HEALTH_CIRCUIT_WORDS 4
/* A failed attempt. trial: the attempt was the one trial of a half-open
 * circuit (health_backend_wait set *trial): its failure opens the circuit
 * again for twice as long. Failures of attempts that began before the
 * circuit opened do not move it: a burst of requests failing together opens
 * it once, for the base time. */
void health_backend_failed(uint64_t *w, uint64_t now_ms, bool trial);
void health_backend_ok(uint64_t *w);
/* 0 when the backend may be tried now: closed, or this caller won the one
 * trial of a half-open circuit, leased for lease_ms (*trial is then its
 * stamp, else 0); otherwise the milliseconds until it may. */
uint64_t health_backend_wait(uint64_t *w, uint64_t now_ms, uint64_t lease_ms, uint64_t *trial);
/* The trial ended without a verdict on the backend (the request went
 * elsewhere or ended): the next caller may take it at once. Only the
 * holder's own stamp releases it. */
void health_backend_trial_release(uint64_t *w, uint64_t stamp);

/* What a circuit is now, read without taking its trial: closed, open
 * (*open_ms until it may be tried) or half-open (a trial may run or runs).
 * *fails: consecutive failures counted. */
enum health_circuit { HEALTH_CLOSED = 0, HEALTH_OPEN = 1, HEALTH_HALF_OPEN = 2 };
enum health_circuit health_circuit_view(const uint64_t *w, uint64_t now_ms, uint64_t *open_ms,
                                        uint64_t *fails);
const char *health_circuit_name(enum health_circuit c);

/* Cooldown for a 429: Retry-After seconds (-1: absent) capped, or the
 * default with jitter drawn from rnd. */
uint64_t health_429_ms(long retry_after_s, uint64_t rnd);

/* Wall clock in ms. */
uint64_t health_now_ms(void);

#endif
