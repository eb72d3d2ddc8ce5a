/* store.c - the routing and keys files on disk: flock, temp file, fsync, rename */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "store.h"
#include "config.h"
#include "keys.h"
#include "buf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_routing(const char *text, size_t len, char *why, size_t n)
{
    struct config *cfg = config_parse(text, len, why, n);
    config_free(cfg);
    return cfg != NULL ? 0 : -1;
}

static int check_keys(const char *text, size_t len, char *why, size_t n)
{
    struct keyring *r = keys_parse(text, len, why, n);
    keys_free(r);
    return r != NULL ? 0 : -1;
}

const struct store_kind store_routing = {STORE_FILE, STORE_LOCK,     STORE_TMP_PREFIX, "Models",
                                         false,      "routing file", check_routing};
const struct store_kind store_keys = {KEYS_FILE, KEYS_FILE ".lock", KEYS_FILE ".tmp-", "Keys",
                                      true,      "keys file",       check_keys};

static int lock_dir(const struct store_kind *k, const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, k->lock);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void sweep_locked(const struct store_kind *k, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    for (e = readdir(d); e != NULL; e = readdir(d)) {
        if (strncmp(e->d_name, k->tmp_prefix, strlen(k->tmp_prefix)) == 0) {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
}

void store_sweep(const char *dir)
{
    const struct store_kind *kinds[] = {&store_routing, &store_keys};
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
        char err[256];
        int fd = lock_dir(kinds[i], dir, err, sizeof(err));
        if (fd >= 0) {
            sweep_locked(kinds[i], dir);
            close(fd);
        }
    }
}

cJSON *store_read_kind(const struct store_kind *k, const char *dir, enum store_status *st,
                       char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, k->file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *st = STORE_OK;
            cJSON *root = cJSON_CreateObject();
            cJSON_AddItemToObject(root, k->member,
                                  k->member_array ? cJSON_CreateArray() : cJSON_CreateObject());
            return root;
        }
        *st = STORE_IO;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf file;
    buf_init(&file, STORE_MAX_FILE);
    int rc = buf_read_fd(&file, fd);
    close(fd);
    if (rc != BUF_OK) {
        buf_cleanup(&file);
        *st = STORE_CORRUPT;
        snprintf(err, errlen, "%s is unreadable or too large", path);
        return NULL;
    }
    size_t got = file.len;
    char *data = buf_steal(&file, NULL);
    /* the same checks the responder applies, so the admin never builds on a
     * file the proxy would refuse */
    char why[512];
    if (k->check(data, got, why, sizeof(why)) != 0) {
        free(data);
        *st = STORE_CORRUPT;
        snprintf(err, errlen,
                 "the %s %s is invalid (%s); it is left as it is: fix or remove it by hand",
                 k->what, path, why);
        return NULL;
    }
    cJSON_Minify(data);
    cJSON *root = cJSON_Parse(data);
    free(data);
    *st = root != NULL ? STORE_OK : STORE_CORRUPT;
    if (root == NULL) {
        snprintf(err, errlen, "the %s %s is invalid", k->what, path);
    }
    return root;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes text (and a newline, if add_nl) next to the file and renames it into place. */
static enum store_status write_file(const struct store_kind *k, const char *dir, const char *text,
                                    size_t len, bool add_nl, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, k->file);
    snprintf(tmp, sizeof(tmp), "%s/%sXXXXXX", dir, k->tmp_prefix);
    int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temp file in %s: %s", dir, strerror(errno));
        return STORE_IO;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, len) != 0 ||
        (add_nl && write_all(fd, "\n", 1) != 0) || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return STORE_IO;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return STORE_IO;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return STORE_OK;
}

enum store_status store_update_kind(const struct store_kind *k, const char *dir,
                                    int (*change)(cJSON *root, void *ud, char *err, size_t errlen),
                                    void *ud, char *err, size_t errlen)
{
    enum store_status st;
    cJSON *root = NULL;
    char *text = NULL;
    int lock = lock_dir(k, dir, err, errlen);
    if (lock < 0) {
        return STORE_IO;
    }
    sweep_locked(k, dir);
    root = store_read_kind(k, dir, &st, err, errlen);
    if (root == NULL) {
        goto out;
    }
    st = (enum store_status)change(root, ud, err, errlen);
    if (st != STORE_OK) {
        goto out;
    }
    text = cJSON_Print(root);
    if (text == NULL) {
        st = STORE_IO;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    char why[512];
    if (k->check(text, strlen(text), why, sizeof(why)) != 0) {
        st = STORE_REJECTED;
        snprintf(err, errlen, "%s", why);
        goto out;
    }
    st = write_file(k, dir, text, strlen(text), true, err, errlen);
out:
    free(text);
    cJSON_Delete(root);
    close(lock); /* releases the flock */
    return st;
}

int store_read_text(const struct store_kind *k, const char *dir, struct buf *out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, k->file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = buf_read_fd(out, fd);
    close(fd);
    return rc == BUF_OK ? 0 : -1;
}

int store_replace_text(const struct store_kind *k, const char *dir, const char *text, size_t len,
                       char *err, size_t errlen)
{
    char why[512];
    if (len > STORE_MAX_FILE || memchr(text, '\0', len) != NULL ||
        k->check(text, len, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "it is invalid (%s)", len > STORE_MAX_FILE ? "too large" : why);
        return -1;
    }
    int lock = lock_dir(k, dir, err, errlen);
    if (lock < 0) {
        return -1;
    }
    sweep_locked(k, dir);
    enum store_status st = write_file(k, dir, text, len, false, err, errlen);
    close(lock);
    return st == STORE_OK ? 0 : -1;
}

cJSON *store_read(const char *dir, enum store_status *st, char *err, size_t errlen)
{
    return store_read_kind(&store_routing, dir, st, err, errlen);
}

enum store_status store_update(const char *dir,
                               int (*change)(cJSON *root, void *ud, char *err, size_t errlen),
                               void *ud, char *err, size_t errlen)
{
    return store_update_kind(&store_routing, dir, change, ud, err, errlen);
}
