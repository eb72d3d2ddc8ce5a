/* snapshot.c - immutable snapshots of the routing and keys files, swapped when they change */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "snapshot.h"
#include "buf.h"
#include "keys.h"
#include "log.h"
#include "route.h"
#include "state.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest routing or keys file accepted: as the admin program writes. */
#define SNAPSHOT_MAX_FILE STORE_MAX_FILE

struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
    int exists;
};

/* One watched file and the text of its last good version (NULL: absent). */
struct source {
    const char *what;
    char *path;
    struct file_id seen; /* identity of the version last tried, good or bad */
    char *good;
    size_t good_len;
    const struct store_kind *kind; /* its check: the admin program's own */
    bool keep_when_absent; /* a deleted routing file keeps the config; no keys file: keyless */
    bool unusable;         /* the last try found a file that could not be used */
    int failing;           /* the errno of an open or read failure, logged once */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct source routing = {"routing file", NULL, {0}, NULL, 0, &store_routing, true, false, 0};
static struct source keyfile = {"keys file", NULL, {0}, NULL, 0, &store_keys, false, false, 0};
static struct snapshot *current;
static struct state *shared;
static uint64_t seen_generation;

/* Change notices (inotify), so that an acquire need not stat() the files:
 * the state directory for files made, renamed or deleted in it, and each
 * file's own inode for a write in place. Every acquire reads what notices
 * came (one read(), EAGAIN when none) before it trusts its snapshot: a
 * change made before a request was sent had its notice queued by then. The
 * files are stat()ed again only after a notice, a change count, a file that
 * could not be read, or a second since the last (a file system whose
 * notices never come). All under the lock. */
#define WATCH_RECHECK_US 1000000
#define WATCH_DIR_EVENTS                                                                           \
    (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |         \
     IN_ONLYDIR)
#define WATCH_FILE_EVENTS (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF)
static struct {
    int fd;          /* -1: no notices, every acquire stats */
    int dir_wd;      /* the directory's watch */
    int file_wd[2];  /* the routing file's and the keys file's, -1: none (absent) */
    bool dirty;      /* a notice came since the last stat */
    bool noticed[2]; /* which file it named: reread, whatever its stat() says */
    bool suspect[2]; /* changed with no notice yet: none for a second, give up */
    bool broken;     /* given up (fd closed): stat every time, never start again */
    int64_t checked; /* when the files were last stat()ed */
} watch = {-1, -1, {-1, -1}, true, {false, false}, {false, false}, false, 0};
static void watch_close(void);

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

static struct file_id stat_id(const char *path)
{
    struct stat sb;
    struct file_id id = {0};
    if (path != NULL && stat(path, &sb) == 0) {
        id = file_id_of(&sb);
    }
    return id;
}

/* Reads the file again; a valid version becomes the good text, an absent
 * file none; an invalid one is reported and the good text kept, so a bad
 * write never replaces a good config (nor opens a keyed gateway). */
/* A file that exists but cannot be opened or read now (EMFILE, EACCES, EIO):
 * tried again by the next request, logged once. */
static void cannot_read(struct source *src, int err)
{
    if (src->failing != err) {
        LOG_ERROR("cannot read %s %s: %s (tried again with each request)", src->what, src->path,
                  strerror(err));
    }
    src->failing = err;
    src->unusable = true;
    src->seen.exists = -1; /* never equal to a stat: the next acquire retries */
}

static void reread(struct source *src)
{
    int fd = open(src->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            cannot_read(src, errno);
            return;
        }
        src->failing = 0;
        src->unusable = false;
        src->seen.exists = 0;
        if (!src->keep_when_absent) {
            free(src->good);
            src->good = NULL;
            src->good_len = 0;
        }
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0) {
        src->seen = file_id_of(&sb);
    }
    struct buf file;
    buf_init(&file, SNAPSHOT_MAX_FILE);
    int rc = buf_read_fd(&file, fd);
    close(fd);
    if (rc == BUF_TOOBIG) {
        LOG_ERROR("%s %s is larger than %d bytes, keeping the previous one", src->what, src->path,
                  SNAPSHOT_MAX_FILE);
        src->unusable = true;
        buf_cleanup(&file);
        return;
    }
    if (rc != BUF_OK) {
        cannot_read(src, EIO);
        buf_cleanup(&file);
        return;
    }
    src->failing = 0;
    char err[512];
    if (src->kind->check(file.data != NULL ? file.data : "", file.len, err, sizeof(err)) != 0) {
        LOG_ERROR("%s %s is invalid, keeping the previous one: %s", src->what, src->path, err);
        src->unusable = true;
        buf_cleanup(&file);
        return;
    }
    src->unusable = false;
    free(src->good);
    src->good_len = file.len;
    src->good = buf_steal(&file, NULL);
}

/* A snapshot of the good texts (parsed again: they were valid). */
static struct snapshot *build(void)
{
    struct snapshot *s = xcalloc(1, sizeof(*s));
    s->refs = 1;
    char err[512];
    if (routing.good != NULL) {
        s->cfg = config_parse(routing.good, routing.good_len, err, sizeof(err));
        for (size_t i = 0; s->cfg != NULL && i < s->cfg->nmodels; i++) {
            route_prepare(&s->cfg->models[i]);
        }
        if (s->cfg != NULL) {
            LOG_INFO("loaded routing file %s: %zu models", routing.path, s->cfg->nmodels);
        }
    }
    if (keyfile.good != NULL) {
        s->keys = keys_parse(keyfile.good, keyfile.good_len, err, sizeof(err));
    }
    /* a keys file that exists but was never usable: not keyless, closed */
    s->keys_unusable = keyfile.good == NULL && keyfile.unusable;
    return s;
}

static void forget(struct source *src)
{
    free(src->path);
    src->path = NULL;
    free(src->good);
    src->good = NULL;
    src->good_len = 0;
    memset(&src->seen, 0, sizeof(src->seen));
    src->unusable = false;
    src->failing = 0;
}

void snapshot_init(const char *path, struct state *st)
{
    pthread_mutex_lock(&lock);
    watch_close(); /* a watch is for the files it began with */
    forget(&routing);
    forget(&keyfile);
    routing.path = xstrdup(path);
    /* the keys file lives beside the routing file, in the state dir */
    char kpath[4200];
    const char *slash = strrchr(path, '/');
    snprintf(kpath, sizeof(kpath), "%.*s%s", slash != NULL ? (int)(slash - path + 1) : 0, path,
             KEYS_FILE);
    keyfile.path = xstrdup(kpath);
    shared = st;
    seen_generation = st != NULL ? state_peek(st, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) : 0;
    reread(&routing);
    reread(&keyfile);
    struct snapshot *old = current;
    current = build();
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
    watch_close();
    struct snapshot *old = current;
    current = NULL;
    forget(&routing);
    forget(&keyfile);
    pthread_mutex_unlock(&lock);
    snapshot_release(old);
}

static void watch_drop_fd(void)
{
    if (watch.fd >= 0) {
        close(watch.fd);
    }
    watch.fd = -1;
    watch.dir_wd = watch.file_wd[0] = watch.file_wd[1] = -1;
}

static void watch_close(void)
{
    watch_drop_fd();
    watch.broken = false;
    watch.dirty = true;
    watch.noticed[0] = watch.noticed[1] = watch.suspect[0] = watch.suspect[1] = false;
}

/* The notices can no longer be trusted: stat() every time from now on (the
 * fd is closed, so no notice piles up unread in the kernel). */
static void watch_give_up(const char *why, int err)
{
    if (!watch.broken) {
        LOG_WARN("change notices for %s stop (%s%s%s): the files are checked with each request",
                 routing.path, why, err != 0 ? ": " : "", err != 0 ? strerror(err) : "");
    }
    watch_drop_fd();
    watch.broken = true;
}

/* The files' own watches, on the inodes the paths name now (a rename put a
 * new one there; the old one goes). A file that is a link is changed where
 * it points, which raises no notice here: then stat() every time. */
static void watch_files(void)
{
    struct source *src[2] = {&routing, &keyfile};
    for (int i = 0; i < 2 && watch.fd >= 0; i++) {
        struct stat sb;
        if (lstat(src[i]->path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
            watch_give_up("a symbolic link", 0);
            break;
        }
        int wd = inotify_add_watch(watch.fd, src[i]->path, WATCH_FILE_EVENTS);
        if (wd < 0 && errno != ENOENT) {
            watch_give_up("inotify_add_watch", errno);
            break;
        }
        if (watch.file_wd[i] >= 0 && watch.file_wd[i] != wd) {
            inotify_rm_watch(watch.fd, watch.file_wd[i]); /* the inode that was there */
        }
        watch.file_wd[i] = wd;
    }
}

int snapshot_watch_start(void)
{
    pthread_mutex_lock(&lock);
    if (watch.fd >= 0 || watch.broken || routing.path == NULL) {
        int rc = watch.fd >= 0 ? 0 : -1;
        pthread_mutex_unlock(&lock);
        return rc;
    }
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    char dir[4200] = ".";
    const char *slash = strrchr(routing.path, '/');
    if (slash != NULL) {
        int len = slash == routing.path ? 1 : (int)(slash - routing.path); /* "/" or the dir */
        snprintf(dir, sizeof(dir), "%.*s", len, routing.path);
    }
    int wd = fd >= 0 ? inotify_add_watch(fd, dir, WATCH_DIR_EVENTS) : -1;
    if (wd < 0) {
        LOG_WARN("no change notices for %s (%s): the files are checked with each request", dir,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        pthread_mutex_unlock(&lock);
        return -1;
    }
    watch.fd = fd;
    watch.dir_wd = wd;
    watch.dirty = true; /* what changed before the watch began */
    watch.broken = false;
    watch_files();
    int rc = watch.fd >= 0 ? 0 : -1;
    pthread_mutex_unlock(&lock);
    return rc;
}

/* Marks the files a notice is about (noticed, dirty). */
static void watch_note(const struct inotify_event *ev)
{
    bool hit[2] = {false, false};
    if (ev->mask & IN_Q_OVERFLOW) {
        hit[0] = hit[1] = true; /* notices were lost */
    } else if (ev->wd == watch.file_wd[0] || ev->wd == watch.file_wd[1]) {
        hit[ev->wd == watch.file_wd[0] ? 0 : 1] = true;
    } else if (ev->wd != watch.dir_wd) {
        return; /* an inode watched before a rename, now replaced */
    } else if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
        watch_give_up("the directory was moved or removed", 0);
        hit[0] = hit[1] = true;
    } else {
        struct source *src[2] = {&routing, &keyfile};
        for (int i = 0; i < 2; i++) {
            const char *slash = strrchr(src[i]->path, '/');
            const char *base = slash != NULL ? slash + 1 : src[i]->path;
            hit[i] = ev->len > 0 && strcmp(ev->name, base) == 0;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (hit[i]) {
            watch.noticed[i] = true;
            watch.suspect[i] = false; /* its notice came */
            watch.dirty = true;
        }
    }
}

/* Under the lock: reads the notices that came. */
static void watch_read(void)
{
    char b[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (watch.fd >= 0) {
        ssize_t n = read(watch.fd, b, sizeof(b));
        if (n <= 0) {
            break; /* EAGAIN: all read */
        }
        for (char *p = b; p < b + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            watch_note(ev);
            p += sizeof(*ev) + ev->len;
        }
    }
}

/* Under the lock: may the snapshot be served without a stat()? */
static bool unchanged(uint64_t gen, int64_t now)
{
    if (watch.fd < 0 || current == NULL) {
        return false;
    }
    watch_read();
    return watch.fd >= 0 && !watch.dirty && gen == seen_generation && routing.failing == 0 &&
           keyfile.failing == 0 && now - watch.checked < WATCH_RECHECK_US;
}

struct snapshot *snapshot_acquire(void)
{
    int64_t now = now_us();
    pthread_mutex_lock(&lock);
    /* the counter first (a change counted before our stat() is then seen),
     * under the lock: no thread holds an older value than the last reload's */
    uint64_t gen =
        shared != NULL ? state_peek(shared, STATE_NS_META, STATE_CONFIG_GENERATION, NULL) : 0;
    if (unchanged(gen, now)) {
        struct snapshot *s = current;
        __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&lock);
        return s;
    }
    bool noticed[2] = {false, false};
    /* here only because a second went by: a change found now has no notice
     * read yet. It may be on its way (the change was being made), so it is
     * suspect; still without one at the next second's check, the notices
     * are given up (a file system that sends none). */
    bool timed = false;
    if (watch.fd >= 0) {
        /* the stat()s below see every change whose notice was read; one that
         * comes later is a notice the next acquire reads. A rename may have
         * put a new inode at a path: its watch moves there first. */
        timed = !watch.dirty && current != NULL && gen == seen_generation && routing.failing == 0 &&
                keyfile.failing == 0;
        if (timed && (watch.suspect[0] || watch.suspect[1])) {
            watch_give_up("a change came without its notice", 0);
        }
        if (watch.dirty) {
            watch_files();
        }
        noticed[0] = watch.noticed[0];
        noticed[1] = watch.noticed[1];
        watch.noticed[0] = watch.noticed[1] = false;
        watch.dirty = false;
        watch.checked = now;
    }
    /* under the lock: another thread's acquire waits for this one's reload
     * rather than trust a notice this one took */
    struct file_id rnow = stat_id(routing.path);
    struct file_id know = stat_id(keyfile.path);
    if (current == NULL) {
        current = xcalloc(1, sizeof(*current));
        current->refs = 1;
    }
    bool rchanged = routing.path != NULL && !same_id(&rnow, &routing.seen);
    bool kchanged = keyfile.path != NULL && !same_id(&know, &keyfile.seen);
    if (timed && watch.fd >= 0) {
        watch.suspect[0] = rchanged;
        watch.suspect[1] = kchanged;
    }
    /* a notice rereads its file even when the stat() shows no change (an
     * edit in place of the same size within the clock's tick) */
    rchanged = rchanged || noticed[0];
    kchanged = kchanged || noticed[1];
    bool counted = routing.path != NULL && gen != seen_generation;
    if (rchanged || kchanged || counted) {
        bool all = counted; /* a change stat() may not show */
        seen_generation = gen;
        /* the identity is recorded even when the new file is bad, so a bad
         * file is reported once, not per request */
        if (rchanged || all) {
            routing.seen = rnow;
            reread(&routing);
        }
        if (kchanged || all) {
            keyfile.seen = know;
            reread(&keyfile);
        }
        struct snapshot *old = current;
        current = build();
        snapshot_release(old);
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
        keys_free(s->keys);
        free(s);
    }
}
