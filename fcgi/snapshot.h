/* snapshot.h - immutable config snapshots, swapped when the file changes */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_SNAPSHOT_H
#define LLMPROXY_SNAPSHOT_H

#include "config.h"

/* A loaded routing file. Never changed after it is published; a request
 * holds a reference from its start to its end, so a reload never pulls a
 * config from under a request in flight. */
struct snapshot {
    struct config *cfg; /* NULL when no valid file was ever loaded */
    unsigned long refs; /* atomic */
};

/* Remember the file to watch and load it once. */
void snapshot_init(const char *path);
/* Drop the current snapshot (at exit). */
void snapshot_cleanup(void);

/* The current snapshot, reloaded first if the file changed on disk (one
 * stat() per call). Never NULL. Give it back with snapshot_release. */
struct snapshot *snapshot_acquire(void);
void snapshot_release(struct snapshot *s);

#endif
