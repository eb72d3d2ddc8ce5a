/* state.h - the runtime state shared by every process serving a state dir (mmap'd file) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_STATE_H
#define LLMPROXY_STATE_H

#include <stddef.h>
#include <stdint.h>

/* STATE_DIR/runtime.state holds a table of 64-byte slots, each named by a
 * namespace and up to three strings, holding a counter and STATE_WORDS
 * words. Every thread of every process that maps the file (CGI processes
 * too) shares them, so rotation, weights and health stay exact across
 * processes. Values change only through atomic operations; a slot is
 * claimed under a robust process-shared mutex, so a process killed at any
 * moment leaves the table usable.
 *
 * Layout: a versioned header (STATE_VERSION), then the slots. A file of
 * another version that no running process uses is replaced; one that is in
 * use is refused (this process then keeps its state to itself, loudly):
 * two versions never mix counters. Slots idle for STATE_RECLAIM_S are
 * reused when a name finds no free slot; a name refused for lack of room is
 * logged and counted (state_stats). The file can be deleted while nothing
 * runs: counters then start again at 0. */
struct state;

#define STATE_VERSION 2
#define STATE_WORDS 5
/* Smallest table; a config that needs more gets 4 slots per name. */
#define STATE_MIN_SLOTS 16384
#define STATE_MAX_SLOTS (1u << 22)
#define STATE_RECLAIM_S 3600
#define STATE_PROBE 32

/* Namespaces keep internal names apart from configured ones. */
enum state_ns {
    STATE_NS_META = 1,     /* llmproxy's own counters (config generation) */
    STATE_NS_ROTATION = 2, /* per model: request tickets; per (model, backend): key rotation */
    STATE_NS_KEY = 3,      /* per (BaseUrl, API key): cooldown */
    STATE_NS_CIRCUIT = 4,  /* per (model, backend): circuit */
    STATE_NS_CLIENT = 5,   /* per client key: limits, spend, last use (keys.h) */
    STATE_NS_METRIC = 6,   /* counters and histograms for /metrics (metrics.h) */
};

/* Map the file (created 0600 if absent) with room for at least min_slots
 * names. NULL on failure with a message in err; use state_private then. */
struct state *state_open(const char *path, size_t min_slots, char *err, size_t errlen);
/* The same table in this process's memory only. Never NULL. */
struct state *state_private(void);
void state_close(struct state *st);

/* Slots a config with these many names should have. */
size_t state_slots_for(size_t names);

/* The words of the slot named (ns, a, b, c) (b, c may be NULL), claimed if
 * new. NULL when the table has no room (logged, counted). Use the words with
 * __atomic builtins only; the pointer stays valid while st is open, but
 * look it up again rather than keep it past one request: an idle slot may
 * be reused. */
uint64_t *state_words(struct state *st, enum state_ns ns, const char *a, const char *b,
                      const char *c);

/* The words of (ns, a, b, c) if the name has a slot, else NULL (nothing is
 * claimed: for readers such as the admin program). */
uint64_t *state_find(struct state *st, enum state_ns ns, const char *a, const char *b,
                     const char *c);

/* Atomically increments the counter of (ns, a, b) and returns its previous
 * value (a private counter when there is no room). */
uint64_t state_next(struct state *st, enum state_ns ns, const char *a, const char *b);
/* Reads it without claiming a slot (0 if it has none). */
uint64_t state_peek(struct state *st, enum state_ns ns, const char *a, const char *b);

struct state_stats {
    uint64_t slots;
    uint64_t used;
    uint64_t refused;   /* names that found no room */
    uint64_t reclaimed; /* idle slots given to new names */
    int shared;         /* 1: the file; 0: private to this process */
};
void state_stats(struct state *st, struct state_stats *out);

/* The admin program bumps it after every change it writes, so responders
 * notice even a change that stat() cannot see. */
#define STATE_CONFIG_GENERATION "config-generation"

#endif
