/* state.c - mmap'd counters shared by every process serving a state dir */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAGIC 0x4c4c4d5053543031ull /* "LLMPST01" */

/* One cache line per slot so busy counters do not share lines. The spare
 * words are for per-key and per-backend health (cooldowns). */
struct slot {
    uint64_t key; /* 0: free; else the name hash (never 0) */
    uint64_t counter;
    uint64_t spare[STATE_WORDS];
};

struct state_file {
    uint64_t magic;
    uint64_t nslots;
    uint64_t spare[6];
    struct slot slots[STATE_SLOTS];
};

struct state {
    struct state_file *f;
};

static struct slot private_slots[STATE_SLOTS];

struct state *state_open(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "stat %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    /* Growing a file with ftruncate only adds zeros, so racing processes
     * that both do it agree; a zeroed table is a valid empty table. */
    if ((size_t)sb.st_size < sizeof(struct state_file) &&
        ftruncate(fd, (off_t)sizeof(struct state_file)) != 0) {
        snprintf(err, errlen, "ftruncate %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, sizeof(struct state_file), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap %s: %s", path, strerror(errno));
        return NULL;
    }
    struct state_file *f = p;
    uint64_t zero = 0;
    if (!__atomic_compare_exchange_n(&f->magic, &zero, STATE_MAGIC, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST) &&
        zero != STATE_MAGIC) {
        snprintf(err, errlen, "%s is not a llmproxy runtime state file", path);
        munmap(p, sizeof(struct state_file));
        return NULL;
    }
    __atomic_store_n(&f->nslots, (uint64_t)STATE_SLOTS, __ATOMIC_RELAXED);
    struct state *st = xcalloc(1, sizeof(*st));
    st->f = f;
    return st;
}

void state_close(struct state *st)
{
    if (st == NULL) {
        return;
    }
    munmap(st->f, sizeof(struct state_file));
    free(st);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    h ^= 0xff; /* separator that no string byte can fake */
    h *= 0x100000001b3ull;
    return h;
}

static struct slot *find_slot(struct slot *slots, uint64_t key)
{
    size_t start = (size_t)(key % STATE_SLOTS);
    for (size_t i = 0; i < STATE_SLOTS; i++) {
        struct slot *s = &slots[(start + i) % STATE_SLOTS];
        uint64_t cur = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (cur == key) {
            return s;
        }
        if (cur == 0) {
            uint64_t expect = 0;
            if (__atomic_compare_exchange_n(&s->key, &expect, key, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) ||
                expect == key) {
                return s;
            }
        }
    }
    return NULL;
}

static uint64_t name_key(const char *a, const char *b)
{
    uint64_t key = fnv(0xcbf29ce484222325ull, a);
    if (b != NULL) {
        key = fnv(key, b);
    }
    return key == 0 ? 1 : key;
}

uint64_t *state_words(struct state *st, const char *a, const char *b, const char *c)
{
    uint64_t key = name_key(a, b);
    if (c != NULL) {
        key = fnv(key, c);
        key = key == 0 ? 1 : key;
    }
    struct slot *s = find_slot(st != NULL ? st->f->slots : private_slots, key);
    return s != NULL ? s->spare : NULL;
}

uint64_t state_peek(struct state *st, const char *a, const char *b)
{
    struct slot *s = find_slot(st != NULL ? st->f->slots : private_slots, name_key(a, b));
    return s != NULL ? __atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) : 0;
}

uint64_t state_next(struct state *st, const char *a, const char *b)
{
    struct slot *s = find_slot(st != NULL ? st->f->slots : private_slots, name_key(a, b));
    if (s == NULL) {
        /* table full: share one overflow counter rather than fail */
        s = &private_slots[0];
    }
    return __atomic_fetch_add(&s->counter, 1, __ATOMIC_RELAXED);
}
