/* proxy_main.c - the responder program: accept threads, the event loop, signals */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "fcgi_io.h"
#include "log.h"
#include "proxy.h"
#include "snapshot.h"
#include "state.h"
#include "upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

/* Time given to requests in flight after SIGTERM before the process exits. */
#define SHUTDOWN_GRACE_S 3

struct app {
    int listen_fd;
    struct proxy *px;
    struct upstream_loop *loop;
};

static void *accept_thread(void *arg)
{
    struct app *app = arg;
    for (;;) {
        struct fcgi_client *c = fcgi_io_accept(app->listen_fd);
        if (c == NULL) {
            break;
        }
        proxy_handle(app->px, c);
    }
    return NULL;
}

/* SIGTERM (the web server stopping us), SIGINT (Ctrl-C on `make run`) and
 * SIGHUP: stop accepting, let requests in flight finish for a moment, go. */
static void *signal_thread(void *arg)
{
    struct app *app = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    fcgi_io_shutdown(app->listen_fd);
    upstream_loop_stop(app->loop, proxy_busy, app->px);
    struct timespec grace = {SHUTDOWN_GRACE_S, 0};
    sigtimedwait(&set, NULL, &grace);
    _exit(0);
    return NULL;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: llmproxy.fcgi [--socket PATH] [--threads N]\n"
                    "Normally started by the web server (FastCGI) or run as a CGI program.\n");
}

int main(int argc, char **argv)
{
    const char *socket_path = NULL;
    long threads = 4;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            socket_path = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > 256) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("llmproxy %s\n", LLMPROXY_VERSION);
            return 0;
        } else {
            usage();
            return 2;
        }
    }
    /* closing a finished request must not wait for the server's FIN */
    setenv("LIBFCGI_OS_CLOSE_POLL_TIMEOUT", "0", 0);
    /* libfcgi drops an accepted connection whose request has not arrived
     * within this time; under a burst of thousands of new streams the web
     * server can take longer than the default 2 s to write it */
    setenv("LIBFCGI_IS_AF_UNIX_KEEPER_POLL_TIMEOUT", "30000", 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    raise_fd_limit();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || fcgi_io_init() != 0) {
        LOG_ERROR("cannot initialise libcurl or libfcgi");
        return 1;
    }

    const char *dir = getenv("LLMPROXY_STATE_DIR");
    if (dir == NULL || *dir == '\0') {
        dir = "./var";
    }
    char path[PATH_MAX];
    char err[512];
    snprintf(path, sizeof(path), "%s/runtime.state", dir);
    struct state *st = state_open(path, err, sizeof(err));
    if (st == NULL) {
        LOG_WARN("runtime state unavailable, counters are per process: %s", err);
    }
    snprintf(path, sizeof(path), "%s/dynamic_routing.json", dir);
    snapshot_init(path, st);

    struct proxy_settings set;
    proxy_settings_from_env(&set);
    struct app app = {0};
    app.loop = upstream_loop_new();
    if (app.loop == NULL) {
        return 1;
    }
    app.px = proxy_new(&set, app.loop, st);

    if (!socket_path && fcgi_io_is_cgi()) {
        /* plain CGI: one request, then exit; a client gone shows as EPIPE */
        signal(SIGPIPE, SIG_IGN);
        proxy_handle(app.px, fcgi_io_cgi_request());
        upstream_loop_stop(app.loop, proxy_busy, app.px);
        upstream_loop_run(app.loop, proxy_tick, app.px, 50);
    } else {
        if (socket_path != NULL) {
            app.listen_fd = fcgi_io_open_socket(socket_path, 1024);
            if (app.listen_fd < 0) {
                LOG_ERROR("cannot listen on %s: %s", socket_path, strerror(errno));
                return 1;
            }
        }
        sigset_t set_sig;
        sigemptyset(&set_sig);
        sigaddset(&set_sig, SIGTERM);
        sigaddset(&set_sig, SIGINT);
        sigaddset(&set_sig, SIGHUP);
        sigaddset(&set_sig, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set_sig, NULL);
        pthread_t sig_tid;
        pthread_create(&sig_tid, NULL, signal_thread, &app);
        pthread_detach(sig_tid);
        for (long i = 0; i < threads; i++) {
            pthread_t tid;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 1024 * 1024);
            if (pthread_create(&tid, &attr, accept_thread, &app) != 0) {
                LOG_ERROR("cannot start accept thread: %s", strerror(errno));
                return 1;
            }
            pthread_detach(tid);
            pthread_attr_destroy(&attr);
        }
        LOG_INFO("llmproxy %s ready: %ld accept threads, state dir %s", LLMPROXY_VERSION, threads,
                 dir);
        upstream_loop_run(app.loop, proxy_tick, app.px, 50);
        _exit(0);
    }
    proxy_free(app.px);
    upstream_loop_free(app.loop);
    snapshot_cleanup();
    state_close(st);
    curl_global_cleanup();
    return 0;
}
