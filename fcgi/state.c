/* state.c - the runtime state shared by every process serving a state dir (mmap'd file) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "state.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char MAGIC[8] = {'L', 'L', 'M', 'P', 'S', 'T', 'A', 'T'};
#define HEADER_SIZE 4096

/* One cache line per slot so busy counters do not share lines. */
struct slot {
    uint64_t key;    /* 0: free; else the hash of the name (never 0) */
    uint64_t used_s; /* wall-clock second of the last lookup */
    uint64_t counter;
    uint64_t w[STATE_WORDS];
};

struct header {
    char magic[8]; /* written last when the file is made */
    uint32_t version;
    uint32_t header_size;
    uint64_t nslots;
    uint64_t file_size;
    uint64_t abi; /* sizes this build lays out: another build that differs is another version */
    uint64_t created_ms;
    uint64_t refused;
    uint64_t reclaimed;
    uint64_t used;
    pthread_mutex_t lock; /* robust, process-shared: claiming slots */
};

_Static_assert(sizeof(struct slot) == 64, "a slot is one cache line");
_Static_assert(sizeof(struct header) <= HEADER_SIZE, "the header fits its page");

struct state {
    struct header *h;
    struct slot *slots;
    size_t map_len;
    int fd;            /* held open with a shared flock while mapped; -1 private */
    int shared;        /* 1: the file */
    uint64_t overflow; /* counter for names that found no room */
    int64_t refused_logged;
};

static uint64_t abi_tag(void)
{
    return (uint64_t)sizeof(struct slot) | (uint64_t)sizeof(struct header) << 16 |
           (uint64_t)sizeof(pthread_mutex_t) << 32 | (uint64_t)STATE_WORDS << 48;
}

size_t state_slots_for(size_t names)
{
    size_t want = names * 4;
    size_t n = STATE_MIN_SLOTS;
    while (n < want && n < STATE_MAX_SLOTS) {
        n *= 2;
    }
    return n;
}

static size_t file_size_for(size_t nslots)
{
    return HEADER_SIZE + nslots * sizeof(struct slot);
}

static void init_lock(struct header *h)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The second a lookup marks its slot used: the coarse clock (a few ns, where
 * the precise one costs tens; idleness is counted in hours). */
static uint64_t lookup_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec;
}

/* Lays out an empty table in fd (which is empty or garbage). The magic goes
 * last: a writer killed halfway leaves a file that reads as not made. */
static int make_table(int fd, size_t nslots, char *err, size_t errlen)
{
    size_t size = file_size_for(nslots);
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0) {
        snprintf(err, errlen, "ftruncate: %s", strerror(errno));
        return -1;
    }
    struct header *h = mmap(NULL, HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return -1;
    }
    h->version = STATE_VERSION;
    h->header_size = HEADER_SIZE;
    h->nslots = nslots;
    h->file_size = size;
    h->abi = abi_tag();
    h->created_ms = wall_ms();
    init_lock(h);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(h->magic, MAGIC, sizeof(MAGIC));
    msync(h, HEADER_SIZE, MS_SYNC);
    munmap(h, HEADER_SIZE);
    return 0;
}

enum check { CHECK_OK, CHECK_EMPTY, CHECK_OTHER, CHECK_SMALL };

static enum check check_file(int fd, size_t min_slots, size_t *nslots)
{
    struct stat sb;
    struct header h;
    if (fstat(fd, &sb) != 0 || sb.st_size == 0) {
        return CHECK_EMPTY;
    }
    if ((size_t)sb.st_size < sizeof(h) || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        return CHECK_OTHER;
    }
    if (memcmp(h.magic, MAGIC, sizeof(MAGIC)) != 0) {
        static const char zero[8] = {0};
        return memcmp(h.magic, zero, 8) == 0 ? CHECK_EMPTY : CHECK_OTHER;
    }
    if (h.version != STATE_VERSION || h.header_size != HEADER_SIZE || h.abi != abi_tag() ||
        h.nslots < 64 || h.nslots > STATE_MAX_SLOTS || h.file_size != file_size_for(h.nslots) ||
        (uint64_t)sb.st_size != h.file_size) {
        return CHECK_OTHER;
    }
    *nslots = (size_t)h.nslots;
    return h.nslots < min_slots ? CHECK_SMALL : CHECK_OK;
}

/* Whether fd is still the file at path (not replaced meanwhile). */
static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Puts a fresh table at path by rename (the old file may be mapped by a
 * process of another version that is gone: it keeps its own inode). */
static int replace_file(const char *path, size_t nslots, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = make_table(fd, nslots, err, errlen);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        unlink(tmp);
    }
    return rc;
}

static struct state *map_file(int fd, size_t nslots, char *err, size_t errlen)
{
    size_t len = file_size_for(nslots);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return NULL;
    }
    struct state *st = xcalloc(1, sizeof(*st));
    st->h = p;
    st->slots = (struct slot *)((char *)p + HEADER_SIZE);
    st->map_len = len;
    st->fd = fd;
    st->shared = 1;
    return st;
}

struct state *state_open(const char *path, size_t min_slots, char *err, size_t errlen)
{
    size_t want = state_slots_for(0);
    while (want < min_slots && want < STATE_MAX_SLOTS) {
        want *= 2;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "open %s: %s", path, strerror(errno));
            return NULL;
        }
        size_t nslots = 0;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            /* nobody else has it open: make, remake or take it */
            if (!same_file(fd, path)) {
                close(fd);
                continue;
            }
            enum check c = check_file(fd, want, &nslots);
            if (c == CHECK_EMPTY) {
                if (make_table(fd, want, err, errlen) != 0) {
                    close(fd);
                    return NULL;
                }
                nslots = want;
            } else if (c != CHECK_OK) {
                if (c == CHECK_SMALL) {
                    LOG_INFO("%s has %zu slots, the config needs %zu: making a bigger one "
                             "(counters start again)",
                             path, nslots, want);
                } else {
                    LOG_INFO("%s is of another llmproxy version (or not a state file) and no "
                             "process uses it: replacing it (counters start again)",
                             path);
                }
                int rc = replace_file(path, want, err, errlen);
                close(fd);
                if (rc != 0) {
                    return NULL;
                }
                continue; /* open the new one */
            }
            flock(fd, LOCK_SH); /* converted: others may join now */
            if (!same_file(fd, path)) {
                /* replaced in the gap of the conversion: use the new one */
                close(fd);
                continue;
            }
        } else {
            /* others use it: join them if it is ours */
            flock(fd, LOCK_SH);
            if (!same_file(fd, path)) {
                close(fd);
                continue;
            }
            enum check c = check_file(fd, 0, &nslots);
            if (c == CHECK_EMPTY) {
                close(fd); /* its maker was killed halfway: try again */
                usleep(1000);
                continue;
            }
            if (c == CHECK_OTHER) {
                snprintf(err, errlen,
                         "%s is in use by a process of another llmproxy version: stop it (the "
                         "state is not shared until then)",
                         path);
                close(fd);
                return NULL;
            }
            if (nslots < want) {
                LOG_WARN("%s has %zu slots, the config may need %zu: it grows when every "
                         "process using it has stopped",
                         path, nslots, want);
            }
        }
        struct state *st = map_file(fd, nslots, err, errlen);
        if (st == NULL) {
            close(fd);
        }
        return st;
    }
    snprintf(err, errlen, "%s keeps changing under us", path);
    return NULL;
}

struct state *state_private(void)
{
    size_t nslots = STATE_MIN_SLOTS;
    size_t len = file_size_for(nslots);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        LOG_ERROR("cannot allocate the private state table");
        abort();
    }
    struct state *st = xcalloc(1, sizeof(*st));
    st->h = p;
    st->h->nslots = nslots;
    st->h->version = STATE_VERSION;
    init_lock(st->h);
    st->slots = (struct slot *)((char *)p + HEADER_SIZE);
    st->map_len = len;
    st->fd = -1;
    return st;
}

void state_close(struct state *st)
{
    if (st == NULL) {
        return;
    }
    munmap(st->h, st->map_len);
    if (st->fd >= 0) {
        close(st->fd); /* releases the shared flock */
    }
    free(st);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    h ^= 0xff; /* a separator that no string byte can fake */
    h *= 0x100000001b3ull;
    return h;
}

static uint64_t name_key(enum state_ns ns, const char *a, const char *b, const char *c)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h ^= (uint64_t)ns;
    h *= 0x100000001b3ull;
    h = fnv(h, a);
    h = fnv(h, b != NULL ? b : "");
    h = fnv(h, c != NULL ? c : "");
    /* spread the low bits (the index) over the whole hash */
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h == 0 ? 1 : h;
}

static void touch(struct slot *s, uint64_t now_s)
{
    if (__atomic_load_n(&s->used_s, __ATOMIC_RELAXED) != now_s) {
        __atomic_store_n(&s->used_s, now_s, __ATOMIC_RELAXED);
    }
}

/* The slot of key among the STATE_PROBE after its home, or NULL. */
static struct slot *find(struct state *st, uint64_t key, uint64_t now_s)
{
    size_t n = (size_t)st->h->nslots;
    size_t home = (size_t)(key & (n - 1));
    for (size_t i = 0; i < STATE_PROBE; i++) {
        struct slot *s = &st->slots[(home + i) & (n - 1)];
        uint64_t cur = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (cur == key) {
            touch(s, now_s);
            return s;
        }
        if (cur == 0) {
            return NULL; /* names fill the probe sequence from the front */
        }
    }
    return NULL;
}

static void lock(struct state *st)
{
    if (pthread_mutex_lock(&st->h->lock) == EOWNERDEAD) {
        /* its holder was killed: what it did is either done or not (the
         * key is stored last), so the table is consistent */
        pthread_mutex_consistent(&st->h->lock);
    }
}

/* Claims a slot for key: the first free one, else the longest idle. */
static struct slot *claim(struct state *st, uint64_t key, uint64_t now_s)
{
    lock(st);
    size_t n = (size_t)st->h->nslots;
    size_t home = (size_t)(key & (n - 1));
    struct slot *stale = NULL;
    uint64_t stale_used = 0;
    struct slot *got = NULL;
    for (size_t i = 0; i < STATE_PROBE && got == NULL; i++) {
        struct slot *s = &st->slots[(home + i) & (n - 1)];
        uint64_t cur = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (cur == key) {
            got = s;
        } else if (cur == 0) {
            s->counter = 0;
            memset(s->w, 0, sizeof(s->w));
            __atomic_store_n(&s->used_s, now_s, __ATOMIC_RELAXED);
            __atomic_store_n(&s->key, key, __ATOMIC_RELEASE);
            __atomic_add_fetch(&st->h->used, 1, __ATOMIC_RELAXED);
            got = s;
        } else {
            uint64_t used = __atomic_load_n(&s->used_s, __ATOMIC_RELAXED);
            if (used + STATE_RECLAIM_S < now_s && (stale == NULL || used < stale_used)) {
                stale = s;
                stale_used = used;
            }
        }
    }
    if (got == NULL && stale != NULL) {
        /* emptied first, so a reader never sees the new name with old values */
        __atomic_store_n(&stale->key, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&stale->counter, 0, __ATOMIC_RELAXED);
        for (size_t i = 0; i < STATE_WORDS; i++) {
            __atomic_store_n(&stale->w[i], 0, __ATOMIC_RELAXED);
        }
        __atomic_store_n(&stale->used_s, now_s, __ATOMIC_RELAXED);
        __atomic_store_n(&stale->key, key, __ATOMIC_RELEASE);
        __atomic_add_fetch(&st->h->reclaimed, 1, __ATOMIC_RELAXED);
        got = stale;
    }
    pthread_mutex_unlock(&st->h->lock);
    if (got == NULL) {
        __atomic_add_fetch(&st->h->refused, 1, __ATOMIC_RELAXED);
        int64_t now = now_us();
        int64_t last = __atomic_load_n(&st->refused_logged, __ATOMIC_RELAXED);
        if ((last == 0 || now - last > 60000000) &&
            __atomic_compare_exchange_n(&st->refused_logged, &last, now, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            LOG_ERROR("runtime state is full (%zu slots): a name got no slot, so its rotation "
                      "and health are not shared; stop llmproxy and delete runtime.state to "
                      "make a bigger one",
                      n);
        }
    }
    return got;
}

static struct slot *lookup(struct state *st, enum state_ns ns, const char *a, const char *b,
                           const char *c)
{
    uint64_t key = name_key(ns, a, b, c);
    uint64_t now_s = lookup_s();
    struct slot *s = find(st, key, now_s);
    return s != NULL ? s : claim(st, key, now_s);
}

uint64_t *state_words(struct state *st, enum state_ns ns, const char *a, const char *b,
                      const char *c)
{
    struct slot *s = lookup(st, ns, a, b, c);
    return s != NULL ? s->w : NULL;
}

uint64_t *state_find(struct state *st, enum state_ns ns, const char *a, const char *b,
                     const char *c)
{
    struct slot *s = find(st, name_key(ns, a, b, c), lookup_s());
    return s != NULL ? s->w : NULL;
}

uint64_t state_next(struct state *st, enum state_ns ns, const char *a, const char *b)
{
    struct slot *s = lookup(st, ns, a, b, NULL);
    uint64_t *counter = s != NULL ? &s->counter : &st->overflow;
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

uint64_t state_peek(struct state *st, enum state_ns ns, const char *a, const char *b)
{
    struct slot *s = find(st, name_key(ns, a, b, NULL), lookup_s());
    return s != NULL ? __atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) : 0;
}

void state_stats(struct state *st, struct state_stats *out)
{
    out->slots = st->h->nslots;
    out->used = __atomic_load_n(&st->h->used, __ATOMIC_RELAXED);
    out->refused = __atomic_load_n(&st->h->refused, __ATOMIC_RELAXED);
    out->reclaimed = __atomic_load_n(&st->h->reclaimed, __ATOMIC_RELAXED);
    out->shared = st->shared;
}
