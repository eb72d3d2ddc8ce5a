/* affinity.h - which backend and key made a response: a bounded table in a shared file */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_AFFINITY_H
#define LLMPROXY_AFFINITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* STATE_DIR/responses.state maps the id of every response made through
 * llmproxy (the Responses API) to the backend and key that made it, so its
 * follow-ups go there too. A fixed number of 64-byte slots in buckets of
 * AFFINITY_WAYS: a new id takes an empty slot of its bucket or the oldest,
 * so the file never grows and the newest ids are kept; an entry also ends
 * after its maximum age. Ids are kept as 128 bits of their SHA-256, names
 * and keys as 64 bits of theirs: the file holds no secret. Every process
 * that maps the file sees each entry whole or not at all (a sequence word
 * per slot); a process killed while writing costs that slot only. */
struct affinity;

#define AFFINITY_WAYS 8
#define AFFINITY_DEFAULT_SLOTS ((size_t)1 << 18) /* 16 MiB */

/* What an entry says about a response. */
struct affinity_entry {
    uint64_t model;   /* affinity_hash of the model's name */
    uint64_t backend; /* of the backend's name and BaseUrl */
    uint64_t key;     /* of the API key it was made with ("" without one) */
    uint64_t owner;   /* of the client key's id; 0 in keyless mode */
    int64_t created_ms;
};

/* Maps the file (created 0600 with slots slots if absent; one that exists
 * keeps its own size). NULL with a message on failure. */
struct affinity *affinity_open(const char *path, size_t slots, char *err, size_t errlen);
/* The same in this process's memory only. Never NULL. */
struct affinity *affinity_private(size_t slots);
void affinity_close(struct affinity *a);

/* 64 bits of the SHA-256 of the strings a and b (b may be NULL), never 0. */
uint64_t affinity_hash(const char *a, const char *b);

/* Records (or replaces) the entry of id. */
void affinity_put(struct affinity *a, const char *id, const struct affinity_entry *e);
/* The entry of id if there is one not older than max_age_ms. */
bool affinity_get(struct affinity *a, const char *id, int64_t max_age_ms,
                  struct affinity_entry *out);
/* id is no more (deleted). */
void affinity_forget(struct affinity *a, const char *id);
/* Slots in use and in all. */
void affinity_stats(struct affinity *a, size_t *used, size_t *slots);

/* Wall-clock milliseconds (entries outlive restarts). */
int64_t affinity_now_ms(void);

#endif
