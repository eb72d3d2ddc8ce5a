/* affinity.c - which backend and key made a response: a bounded table in a shared file */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "affinity.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4c4c4d5041464631ull /* "LLMPAFF1" */
#define HEADER_SIZE 4096

/* words of a slot */
enum { W_SEQ, W_ID0, W_ID1, W_CREATED, W_MODEL, W_BACKEND, W_KEY, W_OWNER, W_COUNT };

struct header {
    uint64_t magic;
    uint64_t slots;
};

struct affinity {
    uint64_t *slots; /* nslots * W_COUNT words */
    size_t nslots;
    void *map;
    size_t map_len;
    int shared;
};

int64_t affinity_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t round_slots(size_t n)
{
    size_t s = AFFINITY_WAYS;
    while (s < n && s < ((size_t)1 << 26)) {
        s <<= 1;
    }
    return s;
}

struct affinity *affinity_private(size_t slots)
{
    struct affinity *a = xcalloc(1, sizeof(*a));
    a->nslots = round_slots(slots);
    a->slots = xcalloc(a->nslots * W_COUNT, sizeof(uint64_t));
    return a;
}

struct affinity *affinity_open(const char *path, size_t slots, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct affinity *a = NULL;
    struct stat sb;
    /* the first process sizes it; the others take what it made */
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    struct header h = {0};
    if (sb.st_size > 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) && h.magic == 0 &&
        h.slots == 0) {
        sb.st_size = 0; /* its maker died before writing the header: made again */
        if (ftruncate(fd, 0) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (sb.st_size == 0) {
        h.magic = MAGIC;
        h.slots = round_slots(slots);
        off_t len = HEADER_SIZE + (off_t)(h.slots * W_COUNT * sizeof(uint64_t));
        if (ftruncate(fd, len) != 0 || pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        sb.st_size = len;
    } else if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != MAGIC ||
               h.slots < AFFINITY_WAYS || (h.slots & (h.slots - 1)) != 0 ||
               h.slots > ((size_t)1 << 26) ||
               sb.st_size != HEADER_SIZE + (off_t)(h.slots * W_COUNT * sizeof(uint64_t))) {
        snprintf(err, errlen, "%s is not a responses table of this version (remove it)", path);
        goto out;
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "mmap %s: %s", path, strerror(errno));
        goto out;
    }
    a = xcalloc(1, sizeof(*a));
    a->map = map;
    a->map_len = len;
    a->nslots = (size_t)h.slots;
    a->slots = (uint64_t *)((char *)map + HEADER_SIZE);
    a->shared = 1;
out:
    /* the mapping keeps the open file, and so a lock on it: let go first */
    flock(fd, LOCK_UN);
    close(fd);
    return a;
}

void affinity_close(struct affinity *a)
{
    if (a == NULL) {
        return;
    }
    if (a->shared) {
        munmap(a->map, a->map_len);
    } else {
        free(a->slots);
    }
    free(a);
}

uint64_t affinity_hash(const char *a, const char *b)
{
    size_t na = strlen(a), nb = b != NULL ? strlen(b) : 0;
    char *s = xmalloc(na + nb + 2);
    memcpy(s, a, na);
    s[na] = '\n'; /* ("ab", "c") and ("a", "bc") differ */
    if (nb > 0) {
        memcpy(s + na + 1, b, nb);
    }
    uint8_t d[SHA256_LEN];
    sha256(s, na + 1 + nb, d);
    free(s);
    uint64_t v;
    memcpy(&v, d, sizeof(v));
    return v != 0 ? v : 1;
}

static void id_hash(const char *id, uint64_t out[2])
{
    uint8_t d[SHA256_LEN];
    sha256(id, strlen(id), d);
    memcpy(out, d, 2 * sizeof(uint64_t));
    if (out[0] == 0 && out[1] == 0) {
        out[0] = 1;
    }
}

static uint64_t *slot(struct affinity *a, size_t i)
{
    return a->slots + i * W_COUNT;
}

static uint64_t ld(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_RELAXED);
}

static void st(uint64_t *w, uint64_t v)
{
    __atomic_store_n(w, v, __ATOMIC_RELAXED);
}

/* A consistent copy of a slot's words; false while it is being written. */
static bool read_slot(uint64_t *w, uint64_t out[W_COUNT])
{
    for (int tries = 0; tries < 4; tries++) {
        uint64_t v1 = __atomic_load_n(&w[W_SEQ], __ATOMIC_ACQUIRE);
        if (v1 & 1) {
            continue;
        }
        for (int i = 1; i < W_COUNT; i++) {
            out[i] = ld(&w[i]);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (ld(&w[W_SEQ]) == v1) {
            out[W_SEQ] = v1;
            return true;
        }
    }
    return false;
}

/* The slot of the bucket that holds h, or -1. */
static long find(struct affinity *a, const uint64_t h[2], uint64_t copy[W_COUNT])
{
    size_t b = (size_t)(h[0] & (a->nslots / AFFINITY_WAYS - 1)) * AFFINITY_WAYS;
    for (size_t i = b; i < b + AFFINITY_WAYS; i++) {
        if (read_slot(slot(a, i), copy) && copy[W_CREATED] != 0 && copy[W_ID0] == h[0] &&
            copy[W_ID1] == h[1]) {
            return (long)i;
        }
    }
    return -1;
}

/* Writes the words of slot i, if no other writer holds it (seq was seen). */
static bool write_slot(struct affinity *a, size_t i, uint64_t seq, const uint64_t v[W_COUNT])
{
    uint64_t *w = slot(a, i);
    if (!__atomic_compare_exchange_n(&w[W_SEQ], &seq, seq + 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED)) {
        return false;
    }
    /* the odd sequence is seen before any of the words change */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (int k = 1; k < W_COUNT; k++) {
        st(&w[k], v[k]);
    }
    __atomic_store_n(&w[W_SEQ], seq + 2, __ATOMIC_RELEASE);
    return true;
}

void affinity_put(struct affinity *a, const char *id, const struct affinity_entry *e)
{
    uint64_t h[2];
    id_hash(id, h);
    uint64_t v[W_COUNT] = {0};
    v[W_ID0] = h[0];
    v[W_ID1] = h[1];
    v[W_CREATED] = (uint64_t)(e->created_ms > 0 ? e->created_ms : 1);
    v[W_MODEL] = e->model;
    v[W_BACKEND] = e->backend;
    v[W_KEY] = e->key;
    v[W_OWNER] = e->owner;
    size_t b = (size_t)(h[0] & (a->nslots / AFFINITY_WAYS - 1)) * AFFINITY_WAYS;
    for (int tries = 0; tries < 4; tries++) {
        uint64_t copy[W_COUNT];
        long at = find(a, h, copy);
        if (at < 0) {
            /* an empty slot, else the oldest */
            uint64_t oldest = UINT64_MAX;
            for (size_t i = b; i < b + AFFINITY_WAYS; i++) {
                uint64_t c[W_COUNT];
                if (read_slot(slot(a, i), c) && c[W_CREATED] < oldest) {
                    oldest = c[W_CREATED];
                    at = (long)i;
                    memcpy(copy, c, sizeof(c));
                }
            }
        }
        if (at < 0) {
            return; /* every slot of the bucket is being written */
        }
        if (write_slot(a, (size_t)at, copy[W_SEQ], v)) {
            return;
        }
    }
}

bool affinity_get(struct affinity *a, const char *id, int64_t max_age_ms,
                  struct affinity_entry *out)
{
    uint64_t h[2];
    id_hash(id, h);
    uint64_t c[W_COUNT];
    if (find(a, h, c) < 0) {
        return false;
    }
    int64_t created = (int64_t)c[W_CREATED];
    if (affinity_now_ms() - created > max_age_ms) {
        return false;
    }
    out->model = c[W_MODEL];
    out->backend = c[W_BACKEND];
    out->key = c[W_KEY];
    out->owner = c[W_OWNER];
    out->created_ms = created;
    return true;
}

void affinity_forget(struct affinity *a, const char *id)
{
    uint64_t h[2];
    id_hash(id, h);
    for (int tries = 0; tries < 4; tries++) {
        uint64_t c[W_COUNT];
        long at = find(a, h, c);
        if (at < 0) {
            return;
        }
        uint64_t v[W_COUNT] = {0}; /* created 0: an empty slot */
        if (write_slot(a, (size_t)at, c[W_SEQ], v)) {
            return;
        }
    }
}

void affinity_stats(struct affinity *a, size_t *used, size_t *slots)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nslots; i++) {
        n += ld(&slot(a, i)[W_CREATED]) != 0;
    }
    *used = n;
    *slots = a->nslots;
}
