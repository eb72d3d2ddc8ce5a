/* admin_main.c - the admin program: FastCGI accept loop and command-line tools */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "auth.h"
#include "buf.h"
#include "config.h"
#include "fcgi_io.h"
#include "log.h"
#include "state.h"
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int listen_fd;

static void on_term(int sig)
{
    (void)sig;
    /* the admin program holds no request state worth a grace period: every
     * change is already on disk or not made at all */
    _exit(0);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: llmproxy-admin.fcgi [--socket PATH]   serve the admin API (FastCGI)\n"
            "       llmproxy-admin.fcgi --init-token      create the admin token if needed; "
            "print it when new\n"
            "       llmproxy-admin.fcgi --check           validate the routing file\n"
            "       llmproxy-admin.fcgi --put MODEL < JSON   add or replace a model\n"
            "       llmproxy-admin.fcgi --delete MODEL    remove a model\n"
            "The state dir is $LLMPROXY_STATE_DIR (./var).\n");
}

static int cli(struct admin *a, int argc, char **argv)
{
    char err[1024];
    const char *cmd = argv[1];
    if (strcmp(cmd, "--init-token") == 0 && argc == 2) {
        if (getenv("LLMPROXY_ADMIN_TOKEN") != NULL && *getenv("LLMPROXY_ADMIN_TOKEN") != '\0') {
            return 0;
        }
        bool created;
        if (auth_token_load(a->dir, a->token, sizeof(a->token), &created, err, sizeof(err)) != 0) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
        if (created) {
            printf("%s\n", a->token);
        }
        return 0;
    }
    if (strcmp(cmd, "--check") == 0 && argc == 2) {
        enum store_status st;
        cJSON *root = store_read(a->dir, &st, err, sizeof(err));
        if (root == NULL) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
        cJSON_Delete(root);
        return 0;
    }
    if (strcmp(cmd, "--put") == 0 && argc == 3) {
        struct buf b;
        buf_init(&b, 1024 * 1024);
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
            if (buf_append(&b, chunk, n) != BUF_OK) {
                fprintf(stderr, "llmproxy-admin: input larger than 1 MiB\n");
                buf_cleanup(&b);
                return 1;
            }
        }
        int created = 0;
        enum store_status st =
            admin_put(a, argv[2], b.data ? b.data : "", b.len, &created, err, sizeof(err));
        buf_cleanup(&b);
        if (st != STORE_OK) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (strcmp(cmd, "--delete") == 0 && argc == 3) {
        if (admin_delete(a, argv[2], err, sizeof(err)) != STORE_OK) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
        return 0;
    }
    usage();
    return 2;
}

int main(int argc, char **argv)
{
    struct admin a = {0};
    a.dir = getenv("LLMPROXY_STATE_DIR");
    if (a.dir == NULL || *a.dir == '\0') {
        a.dir = "./var";
    }
    char path[PATH_MAX];
    char err[1024];
    snprintf(path, sizeof(path), "%s/runtime.state", a.dir);
    a.st = state_open(path, err, sizeof(err));

    const char *socket_path = NULL;
    if (argc == 3 && strcmp(argv[1], "--socket") == 0) {
        socket_path = argv[2];
    } else if (argc > 1) {
        int rc = cli(&a, argc, argv);
        state_close(a.st);
        return rc;
    }

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    setenv("LIBFCGI_OS_CLOSE_POLL_TIMEOUT", "0", 0);
    bool created;
    if (auth_token_load(a.dir, a.token, sizeof(a.token), &created, err, sizeof(err)) != 0) {
        LOG_ERROR("no admin token, refusing to start: %s", err);
        return 1;
    }
    if (strlen(a.token) < 16) {
        LOG_WARN("the admin token is shorter than 16 characters: easy to guess");
    }
    store_sweep(a.dir);
    enum store_status st;
    cJSON *root = store_read(a.dir, &st, err, sizeof(err));
    if (root == NULL) {
        LOG_ERROR("%s", err);
    }
    cJSON_Delete(root);
    if (fcgi_io_init() != 0) {
        LOG_ERROR("cannot initialise libfcgi");
        return 1;
    }
    if (socket_path != NULL) {
        listen_fd = fcgi_io_open_socket(socket_path, 128);
        if (listen_fd < 0) {
            LOG_ERROR("cannot listen on %s: %s", socket_path, strerror(errno));
            return 1;
        }
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGHUP, on_term);
    if (socket_path == NULL && fcgi_io_is_cgi()) {
        admin_handle(&a, fcgi_io_cgi_request());
        state_close(a.st);
        return 0;
    }
    for (;;) {
        struct fcgi_client *c = fcgi_io_accept(listen_fd);
        if (c == NULL) {
            break;
        }
        admin_handle(&a, c);
    }
    state_close(a.st);
    return 0;
}
