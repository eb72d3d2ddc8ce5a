/* store.h - the routing and keys files on disk: flock, temp file, fsync, rename */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_STORE_H
#define LLMPROXY_STORE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

struct buf;

#define STORE_FILE "dynamic_routing.json"
#define STORE_LOCK "dynamic_routing.json.lock"
/* Temp files are "dynamic_routing.json.tmp-XXXXXX": left only by a writer
 * killed at the wrong moment, and removed by the next writer. */
#define STORE_TMP_PREFIX "dynamic_routing.json.tmp-"

enum store_status {
    STORE_OK = 0,
    STORE_REJECTED = -1,  /* the change is invalid (the callback's or validation's message) */
    STORE_NOT_FOUND = -2, /* the callback found nothing to change */
    STORE_CORRUPT = -3,   /* the file on disk is invalid: nothing is written over it */
    STORE_IO = -4,        /* a system call failed */
};

/* A file kept this way: the routing file (dynamic_routing.json, {"Models":
 * {...}}) or the keys file (client_keys.json, {"Keys": [...]}). */
struct store_kind {
    const char *file;
    const char *lock;
    const char *tmp_prefix;
    const char *member; /* the root object's one required member */
    bool member_array;  /* an array (else an object) */
    const char *what;   /* for messages */
    int (*check)(const char *text, size_t len, char *why, size_t n); /* 0: valid */
};
extern const struct store_kind store_routing;
extern const struct store_kind store_keys;

/* The largest routing or key file read. */
#define STORE_MAX_FILE (16 * 1024 * 1024)

/* store_read and store_update for either file. */
cJSON *store_read_kind(const struct store_kind *k, const char *dir, enum store_status *st,
                       char *err, size_t errlen);
enum store_status store_update_kind(const struct store_kind *k, const char *dir,
                                    int (*change)(cJSON *root, void *ud, char *err, size_t errlen),
                                    void *ud, char *err, size_t errlen);

/* Reads the routing file as a tree the caller frees with cJSON_Delete. A
 * missing file reads as {"Models":{}}. NULL with a message when it is not
 * valid (STORE_CORRUPT) or unreadable. */
cJSON *store_read(const char *dir, enum store_status *st, char *err, size_t errlen);

/* Changes the routing file: under an exclusive flock on the lock file, reads
 * it, lets change() edit the tree (returning STORE_OK, STORE_REJECTED or
 * STORE_NOT_FOUND with a message in err), validates the result with
 * config_parse, writes it to a 0600 temp file in the same directory, fsyncs
 * it, renames it over the file and fsyncs the directory. Nothing changes on
 * disk unless everything succeeded. */
enum store_status store_update(const char *dir,
                               int (*change)(cJSON *root, void *ud, char *err, size_t errlen),
                               void *ud, char *err, size_t errlen);

/* The file's bytes as they are (0; a missing file: -1). */
int store_read_text(const struct store_kind *k, const char *dir, struct buf *out);
/* Replaces the file with exactly these bytes, under its lock, if they pass
 * the kind's checks (0; -1 with a message): a configuration shared by
 * another host (redis.c). */
int store_replace_text(const struct store_kind *k, const char *dir, const char *text, size_t len,
                       char *err, size_t errlen);

/* Removes temp files that a killed writer left (takes the lock). */
void store_sweep(const char *dir);

#endif
