/* snapshot.h - immutable snapshots of the routing and keys files, swapped when they change */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_SNAPSHOT_H
#define LLMPROXY_SNAPSHOT_H

#include "config.h"

/* The loaded routing file and keys file (client_keys.json, beside it).
 * Never changed after it is published; a request holds a reference from its
 * start to its end, so a reload never pulls a config from under a request
 * in flight. A file that turns invalid keeps its last good version. */
struct keyring;
struct snapshot {
    struct config *cfg;   /* NULL when no valid routing file was ever loaded */
    struct keyring *keys; /* NULL or empty: no client key (keyless mode) */
    /* the keys file exists but no version of it could be used (invalid,
     * unreadable): every /v1 request is refused, never served keyless */
    bool keys_unusable;
    unsigned long refs; /* atomic */
};

struct state;

/* Remember the file to watch and load it once. st (may be NULL) carries
 * the admin program's change counter (STATE_CONFIG_GENERATION). */
void snapshot_init(const char *path, struct state *st);
/* Attach the shared state once it is open (snapshot_init may be given NULL
 * to size the state from the first config). */
void snapshot_set_state(struct state *st);
/* Drop the current snapshot (at exit). */
void snapshot_cleanup(void);

/* The current snapshot, reloaded first if the file changed on disk (one
 * shared-counter read per call, and one read() of the change notices, or a
 * stat() of each file when there are none). Never NULL. Give it back with
 * snapshot_release. */
struct snapshot *snapshot_acquire(void);
void snapshot_release(struct snapshot *s);

/* Change notices (inotify) for a long-running process: from now on an
 * acquire reads them (one read() when none came) instead of stat()ing the
 * files. 0, or -1 when there are none (then every acquire stat()s, as a
 * CGI process does). */
int snapshot_watch_start(void);

#endif
