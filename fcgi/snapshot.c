/* snapshot.c - immutable config snapshots, swapped when the file changes */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "snapshot.h"
#include "buf.h"
#include "log.h"
#include "route.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest routing file accepted. */
#define SNAPSHOT_MAX_FILE (16 * 1024 * 1024)

struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
    int exists;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *file_path;
static struct snapshot *current;
static struct file_id seen; /* identity of the file last tried, good or bad */
static struct state *shared;
static uint64_t seen_generation;

static struct file_id file_id_of(const struct stat *sb)
{
    struct file_id id = {sb->st_dev, sb->st_ino, sb->st_size, sb->st_mtim, sb->st_ctim, 1};
    return id;
}

static int same_id(const struct file_id *a, const struct file_id *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static struct snapshot *snapshot_new(struct config *cfg)
{
    struct snapshot *s = xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    s->refs = 1;
    return s;
}

/* Reads and parses the file. NULL (and a log line) when it is unusable. */
static struct config *load(struct file_id *id)
{
    struct config *cfg = NULL;
    char *data = NULL;
    char err[512];
    int fd = open(file_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            LOG_ERROR("cannot open routing file %s: %s", file_path, strerror(errno));
        }
        id->exists = 0;
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0) {
        *id = file_id_of(&sb);
    }
    struct buf file;
    buf_init(&file, SNAPSHOT_MAX_FILE);
    if (buf_read_fd(&file, fd) != BUF_OK) {
        LOG_ERROR("routing file %s is unreadable or larger than %d bytes", file_path,
                  SNAPSHOT_MAX_FILE);
        buf_cleanup(&file);
        goto out;
    }
    size_t got = file.len;
    data = buf_steal(&file, NULL);
    cfg = config_parse(data, got, err, sizeof(err));
    if (cfg == NULL) {
        LOG_ERROR("routing file %s is invalid, keeping the previous configuration: %s", file_path,
                  err);
        goto out;
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        route_prepare(&cfg->models[i]);
    }
    LOG_INFO("loaded routing file %s: %zu models", file_path, cfg->nmodels);
out:
    if (fd >= 0) {
        close(fd);
    }
    free(data);
    return cfg;
}

void snapshot_init(const char *path, struct state *st)
{
    pthread_mutex_lock(&lock);
    free(file_path);
    file_path = xstrdup(path);
    shared = st;
    seen_generation = st != NULL ? state_peek(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) : 0;
    memset(&seen, 0, sizeof(seen));
    struct config *cfg = load(&seen);
    struct snapshot *old = current;
    current = snapshot_new(cfg);
    pthread_mutex_unlock(&lock);
    snapshot_release(old);
}

void snapshot_set_state(struct state *st)
{
    pthread_mutex_lock(&lock);
    shared = st;
    seen_generation = st != NULL ? state_peek(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) : 0;
    pthread_mutex_unlock(&lock);
}

void snapshot_cleanup(void)
{
    pthread_mutex_lock(&lock);
    struct snapshot *old = current;
    current = NULL;
    free(file_path);
    file_path = NULL;
    pthread_mutex_unlock(&lock);
    snapshot_release(old);
}

struct snapshot *snapshot_acquire(void)
{
    struct stat sb;
    struct file_id now = {0};
    /* the counter first: a change counted before our stat() is then seen */
    uint64_t gen =
        shared != NULL ? state_peek(shared, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) : 0;
    if (file_path != NULL && stat(file_path, &sb) == 0) {
        now = file_id_of(&sb);
    }
    pthread_mutex_lock(&lock);
    if (current == NULL) {
        current = snapshot_new(NULL);
    }
    if (file_path != NULL && (!same_id(&now, &seen) || gen != seen_generation)) {
        seen_generation = gen;
        /* changed (or first seen): the identity is recorded even when the
         * new file is bad, so a bad file is reported once, not per request */
        struct file_id id = now;
        struct config *cfg = load(&id);
        seen = id;
        if (cfg != NULL) {
            struct snapshot *old = current;
            current = snapshot_new(cfg);
            snapshot_release(old);
        }
    }
    struct snapshot *s = current;
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lock);
    return s;
}

void snapshot_release(struct snapshot *s)
{
    if (s == NULL) {
        return;
    }
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        config_free(s->cfg);
        free(s);
    }
}
