/* proxy_main.c - the responder program: loops, the listening socket, signals */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "affinity.h"
#include "conn.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "proxy_int.h"
#include "redis.h"
#include "shared.h"
#include "keys.h"
#include "snapshot.h"
#include "state.h"
#include "usage.h"

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
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LOOPS 64

struct app {
    pthread_mutex_t mu; /* guards exiting: the loops are freed once it is set */
    int exiting;
    int listen_fd;
    size_t nloops;
    struct loop *loops[MAX_LOOPS];
    struct proxy *proxies[MAX_LOOPS];
    long drain_ms;
};

/* A responder loop's request lines leave after their answers (log_hold). */
static void run_loop(struct loop *l)
{
    log_hold(true);
    loop_run(l);
    log_hold(false);
}

static void *loop_thread(void *arg)
{
    run_loop(arg);
    return NULL;
}

static void post_all(struct app *app, void (*fn)(void *))
{
    pthread_mutex_lock(&app->mu);
    for (size_t i = 0; !app->exiting && i < app->nloops; i++) {
        loop_post(app->loops[i], fn, app->proxies[i]);
    }
    pthread_mutex_unlock(&app->mu);
}

/* SIGTERM (the web server stopping us, or our parent gone), SIGINT (Ctrl-C
 * on `make run`), SIGHUP: stop accepting, let requests in flight finish for
 * LLMPROXY_DRAIN_MS, end the rest. A second signal ends the drain at once;
 * a drain that somehow never ends is cut a few seconds after its time. */
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
    post_all(app, proxy_drain);
    struct timespec wait = {app->drain_ms / 1000 + 3, (app->drain_ms % 1000) * 1000000};
    if (sigtimedwait(&set, NULL, &wait) > 0) {
        /* a second signal: end the drain now (streams get their error
         * event and every request its log line), then go */
        post_all(app, proxy_drain_now);
        struct timespec grace = {2, 0};
        sigtimedwait(&set, NULL, &grace);
    }
    pthread_mutex_lock(&app->mu);
    int exiting = app->exiting;
    pthread_mutex_unlock(&app->mu);
    if (exiting) {
        /* main is cleaning up: its last usage flush waits 500 ms at most
         * for a lock, so give it that before going */
        struct timespec more = {2, 0};
        nanosleep(&more, NULL);
    }
    _exit(0); /* the drain never ended: do not hang */
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

/* Names the config gives the state table: rotation, circuits and API keys;
 * metrics per model (statuses, histograms) and per backend (outcomes,
 * usage per client key); and each client key's limits and spend. */
static size_t config_names(void)
{
    struct snapshot *s = snapshot_acquire();
    size_t clients = s->keys != NULL ? s->keys->n : 0;
    size_t n = 16 + 5 * clients;
    for (size_t i = 0; s->cfg != NULL && i < s->cfg->nmodels; i++) {
        const struct config_model *m = &s->cfg->models[i];
        /* usage per client key: only the keys that may use this model */
        size_t users = 0;
        for (size_t k = 0; k < clients; k++) {
            users += keys_model_ok(&s->keys->keys[k], m->name);
        }
        n += 1 + 12 + 8;
        for (size_t j = 0; j < m->nbackends; j++) {
            /* + the status page's rings: 60 minutes, 6 x 2 distributions */
            n += 2 + m->backends[j].nkeys + 6 + users + 1 + 60 + 36;
        }
    }
    snapshot_release(s);
    return n;
}

static void usage(void)
{
    fprintf(stderr, "usage: llmproxy.fcgi [--socket PATH] [--threads N]\n"
                    "Normally started by the web server (FastCGI) or run as a CGI program.\n");
}

static long default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

int main(int argc, char **argv)
{
    const char *socket_path = NULL;
    long threads = default_threads();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            socket_path = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > MAX_LOOPS) {
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
    bool cgi = socket_path == NULL && !conn_fd0_listens();
    if (!cgi) {
        /* a FastCGI responder ends with the web server that started it; a
         * CGI program must not: its parent (mod_cgid's daemon) is replaced
         * at every graceful restart while the request goes on */
        pid_t parent = getppid();
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            return 0; /* the web server died before we could ask to hear of it */
        }
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        LOG_ERROR("cannot initialise libcurl");
        return 1;
    }

    char dirbuf[PATH_MAX];
    const char *dir = state_dir(cgi, dirbuf, sizeof(dirbuf));
    char path[PATH_MAX];
    char err[512];
    snprintf(path, sizeof(path), "%s/dynamic_routing.json", dir);
    snapshot_init(path, NULL);
    snprintf(path, sizeof(path), "%s/runtime.state", dir);
    struct state *st = state_open(path, state_slots_for(config_names()), err, sizeof(err));
    if (st == NULL) {
        LOG_ERROR("runtime state unavailable, rotation and health are per process: %s", err);
        st = state_private();
    }
    snapshot_set_state(st);
    if (!cgi) {
        /* a request reads the files' change notices instead of stat()ing
         * them (a CGI process loads them once: nothing to watch) */
        snapshot_watch_start();
    }

    struct proxy_settings set;
    proxy_settings_from_env(&set);
    const char *drain = getenv("LLMPROXY_DRAIN_MS");
    if (cgi && (drain == NULL || *drain == '\0')) {
        set.drain_ms = 2000; /* mod_cgid sends SIGKILL 3 s after SIGTERM */
    }
    /* usage goes to usage.db from a writer thread; a CGI process writes at exit */
    struct usage_writer *usage = usage_writer_new(dir, !cgi);
    struct proxy_shared *sh = proxy_shared_new(&set, st, dir, usage);
    if (redis_settings_from_env(&sh->redis, err, sizeof(err)) != 0) {
        LOG_ERROR("%s", err); /* never unshared by mistake */
        return 1;
    }
    if (sh->redis.on && shared_host_id(dir, sh->host_id, sizeof(sh->host_id)) != 0) {
        LOG_ERROR("cannot make %s/instance.id, this host's name for redis: %s", dir,
                  strerror(errno));
        return 1;
    }
    if (sh->redis.on && !cgi) {
        LOG_INFO("state shared with the other hosts through redis %s (host %.8s)",
                 sh->redis.url.shown, sh->host_id);
    }
    if (!cgi) {
        /* now, before the loops' threads; a CGI process maps it only if its
         * one request is a Responses call */
        proxy_affinity(sh);
    }
    struct app app = {.mu = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1, .drain_ms = set.drain_ms};
    if (!cgi) {
        app.listen_fd = socket_path != NULL ? conn_listen_unix(socket_path) : 0;
        if (app.listen_fd < 0) {
            return 1;
        }
    } else {
        threads = 1;
    }
    /* every thread but the signal thread ignores the stop signals */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    app.nloops = (size_t)threads;
    for (size_t i = 0; i < app.nloops; i++) {
        app.loops[i] = loop_new();
        app.proxies[i] = app.loops[i] != NULL ? proxy_new(sh, app.loops[i], app.listen_fd) : NULL;
        if (app.proxies[i] == NULL) {
            LOG_ERROR("cannot start loop %zu", i);
            return 1;
        }
    }
    pthread_t sig_tid;
    pthread_create(&sig_tid, NULL, signal_thread, &app);
    pthread_detach(sig_tid);
    pthread_t tids[MAX_LOOPS];
    for (size_t i = 1; i < app.nloops; i++) {
        if (pthread_create(&tids[i], NULL, loop_thread, app.loops[i]) != 0) {
            LOG_ERROR("cannot start a loop thread: %s", strerror(errno));
            return 1;
        }
    }
    if (!cgi) {
        LOG_INFO("llmproxy %s ready: %zu loops, state dir %s", LLMPROXY_VERSION, app.nloops, dir);
    }
    run_loop(app.loops[0]);
    for (size_t i = 1; i < app.nloops; i++) {
        pthread_join(tids[i], NULL);
    }
    pthread_mutex_lock(&app.mu);
    app.exiting = 1;
    pthread_mutex_unlock(&app.mu);
    for (size_t i = 0; i < app.nloops; i++) {
        proxy_free(app.proxies[i]);
        loop_free(app.loops[i]);
    }
    proxy_shared_free(sh);
    usage_writer_free(usage);
    snapshot_cleanup();
    state_close(st);
    curl_global_cleanup();
    return 0;
}
