/* state.h - mmap'd counters shared by every process serving a state dir */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_STATE_H
#define LLMPROXY_STATE_H

#include <stdint.h>

/* The runtime state file (STATE_DIR/runtime.state) holds a fixed table of
 * 64-bit counters keyed by a hash of their name. Every thread of every
 * process that maps the same file shares them, so round robin, weights and
 * key rotation stay exact across processes. The file is created on first use
 * and can be deleted while nothing runs (counters then start again at 0). */
struct state;

/* Map the file (created 0600 if absent). NULL on failure with a message in
 * err; callers then pass NULL to state_next, which falls back to counters
 * private to this process. Free with state_close. */
struct state *state_open(const char *path, char *err, size_t errlen);
void state_close(struct state *st);

/* Atomically increments the counter named (a, b) and returns its previous
 * value. b may be NULL. */
uint64_t state_next(struct state *st, const char *a, const char *b);

/* The STATE_WORDS spare 64-bit words of the slot named (a, b, c), for
 * health records (health.h); every process sees the same words. Use them
 * with __atomic builtins only. NULL when the table is full. b and c may be
 * NULL. Without a file (st NULL) the words are private to this process. */
#define STATE_WORDS 6
uint64_t *state_words(struct state *st, const char *a, const char *b, const char *c);

/* Reads the counter named (a, b) without changing it (0 if never used). */
uint64_t state_peek(struct state *st, const char *a, const char *b);

/* The counter the admin program bumps after every change it writes to the
 * routing file, so responders notice even a change that stat() cannot see. */
#define STATE_CONFIG_GENERATION "config-generation"

/* Number of slots in the table (for tests). */
#define STATE_SLOTS 4096

#endif
