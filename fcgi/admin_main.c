/* admin_main.c - the admin program: FastCGI accept loop and command-line tools */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "admin.h"
#include "auth.h"
#include "buf.h"
#include "config.h"
#include "conn.h"
#include "loop.h"
#include "reply.h"
#include "log.h"
#include "redis.h"
#include "state.h"
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest admin request body. */
#define ADMIN_MAX_BODY (1024 * 1024)

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
            "       llmproxy-admin.fcgi --add-key NAME [--models M1,M2] [--rpm N] [--tpm N]\n"
            "           [--budget-usd X] [--budget-tokens N] [--period day|month|total]\n"
            "           [--expires 2027-01-01T00:00:00Z] [--disabled]\n"
            "                                         make a client key; prints it (once)\n"
            "       llmproxy-admin.fcgi --list-keys       list the client keys (never the keys)\n"
            "       llmproxy-admin.fcgi --delete-key ID   remove a client key\n"
            "The state dir is $LLMPROXY_STATE_DIR (./var).\n");
}

/* --add-key NAME [options]: the options into the fields of the API. */
static int add_key(struct admin *a, int argc, char **argv)
{
    char err[1024];
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "Name", argv[2]);
    for (int i = 3; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        static const struct {
            const char *opt, *field;
            int kind; /* 0 number, 1 string, 2 list */
        } opts[] = {{"--rpm", "Rpm", 0},
                    {"--tpm", "Tpm", 0},
                    {"--budget-usd", "BudgetUsd", 0},
                    {"--budget-tokens", "BudgetTokens", 0},
                    {"--period", "BudgetPeriod", 1},
                    {"--expires", "ExpiresAt", 1},
                    {"--models", "Models", 2}};
        if (strcmp(opt, "--disabled") == 0) {
            cJSON_AddFalseToObject(p, "Enabled");
            continue;
        }
        size_t k = 0;
        while (k < ARRAY_LEN(opts) && strcmp(opts[k].opt, opt) != 0) {
            k++;
        }
        if (k == ARRAY_LEN(opts) || val == NULL) {
            fprintf(stderr, "llmproxy-admin: %s: unknown option or missing value\n", opt);
            cJSON_Delete(p);
            return 2;
        }
        i++;
        if (opts[k].kind == 0) {
            char *end;
            double d = strtod(val, &end);
            if (*val == '\0' || *end != '\0') {
                fprintf(stderr, "llmproxy-admin: %s needs a number, not '%s'\n", opt, val);
                cJSON_Delete(p);
                return 2;
            }
            cJSON_AddNumberToObject(p, opts[k].field, d);
        } else if (opts[k].kind == 1) {
            cJSON_AddStringToObject(p, opts[k].field, val);
        } else {
            cJSON *list = cJSON_AddArrayToObject(p, opts[k].field);
            char *copy = xstrdup(val);
            for (char *tok = copy; tok != NULL && *tok != '\0';) {
                char *comma = strchr(tok, ',');
                if (comma != NULL) {
                    *comma = '\0';
                }
                cJSON_AddItemToArray(list, cJSON_CreateString(tok));
                tok = comma != NULL ? comma + 1 : NULL;
            }
            free(copy);
        }
    }
    char secret[128];
    cJSON *made = NULL;
    enum store_status st = admin_key_create(a, p, secret, sizeof(secret), &made, err, sizeof(err));
    cJSON_Delete(p);
    if (st != STORE_OK) {
        fprintf(stderr, "llmproxy-admin: %s\n", err);
        return 1;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(made, "Id");
    fprintf(stderr, "llmproxy-admin: key '%s' made (id %s); it is shown this once:\n", argv[2],
            cJSON_IsString(id) ? id->valuestring : "?");
    printf("%s\n", secret);
    cJSON_Delete(made);
    return 0;
}

static int list_keys(struct admin *a)
{
    char err[1024];
    enum store_status st;
    cJSON *list = admin_keys_list(a, &st, err, sizeof(err));
    if (list == NULL) {
        fprintf(stderr, "llmproxy-admin: %s\n", err);
        return 1;
    }
    printf("%-16s %-24s %-13s %8s %10s %8s %s\n", "ID", "NAME", "PREFIX", "RPM", "TPM", "ENABLED",
           "LAST USED");
    const cJSON *k;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(list, "Keys"))
    {
        /* a hand-written file may lack fields: print what is there */
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(k, "LastUsedAt");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(k, "Id");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(k, "Name");
        const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(k, "Prefix");
        const cJSON *rpm = cJSON_GetObjectItemCaseSensitive(k, "Rpm");
        const cJSON *tpm = cJSON_GetObjectItemCaseSensitive(k, "Tpm");
        printf(
            "%-16s %-24s %-13s %8.0f %10.0f %8s %s\n", cJSON_IsString(id) ? id->valuestring : "?",
            cJSON_IsString(name) ? name->valuestring : "?",
            cJSON_IsString(prefix) ? prefix->valuestring : "?",
            cJSON_IsNumber(rpm) ? rpm->valuedouble : 0, cJSON_IsNumber(tpm) ? tpm->valuedouble : 0,
            cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(k, "Enabled")) ? "no" : "yes",
            cJSON_IsString(last) ? last->valuestring : "never");
    }
    cJSON_Delete(list);
    return 0;
}

static int cli(struct admin *a, int argc, char **argv)
{
    char err[1024];
    const char *cmd = argv[1];
    if (strcmp(cmd, "--add-key") == 0 && argc >= 3) {
        return add_key(a, argc, argv);
    }
    if (strcmp(cmd, "--list-keys") == 0 && argc == 2) {
        return list_keys(a);
    }
    if (strcmp(cmd, "--delete-key") == 0 && argc == 3) {
        if (admin_key_delete(a, argv[2], err, sizeof(err)) != STORE_OK) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
        return 0;
    }
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
        /* a Redis URL this build cannot use stops the start (scripts/run.sh) */
        struct redis_settings rs;
        if (redis_settings_from_env(&rs, err, sizeof(err)) != 0) {
            fprintf(stderr, "llmproxy-admin: %s\n", err);
            return 1;
        }
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

/* One admin request: answered at once, or when its body is in. */
struct admin_req {
    struct admin *a;
    struct conn *c;
    char method[16];
    char path[2048];
    int64_t t0;
    struct buf body;
};

static void req_end(struct admin_req *r, int status)
{
    log_linef("admin %s %s status=%d ms=%.2f", r->method, r->path, status,
              (double)(now_us() - r->t0) / 1000.0);
    conn_end(r->c);
    buf_cleanup(&r->body);
    free(r);
}

static void on_request(void *app, struct conn *c)
{
    struct admin_req *r = xcalloc(1, sizeof(*r));
    r->a = app;
    r->c = c;
    r->t0 = now_us();
    buf_init(&r->body, ADMIN_MAX_BODY);
    conn_bind(c, r);
    const char *method = conn_param(c, "REQUEST_METHOD");
    snprintf(r->method, sizeof(r->method), "%s", method != NULL ? method : "GET");
    conn_path(c, r->path, sizeof(r->path));
    bool need_body = false;
    int status = 500;
    if (r->a->fatal[0] != '\0') {
        reply_error(c, 500, r->a->fatal, "server_error", NULL, "state_dir_unusable", NULL);
    } else {
        status = admin_route(r->a, c, r->method, r->path, NULL, 0, &need_body);
    }
    if (!need_body) {
        req_end(r, status);
        return;
    }
    long long cl = conn_content_length(c);
    if (cl > ADMIN_MAX_BODY) {
        reply_error(c, 413, "the body is larger than 1 MiB", "invalid_request_error", NULL, NULL,
                    NULL);
        req_end(r, 413);
    } else if (cl > 0) {
        buf_presize(&r->body, (size_t)cl);
    }
}

static void on_body(void *ud, const char *p, size_t n)
{
    struct admin_req *r = ud;
    if (buf_append(&r->body, p, n) != BUF_OK) {
        reply_error(r->c, 413, "the body is larger than 1 MiB", "invalid_request_error", NULL, NULL,
                    NULL);
        req_end(r, 413);
    }
}

static void on_body_end(void *ud)
{
    struct admin_req *r = ud;
    bool need_body;
    int status = admin_route(r->a, r->c, r->method, r->path,
                             r->body.data != NULL ? r->body.data : "", r->body.len, &need_body);
    req_end(r, status);
}

static void on_drain(void *ud)
{
    (void)ud; /* answers are small and sent whole */
}

static void on_gone(void *ud, enum conn_gone why)
{
    struct admin_req *r = ud;
    (void)why;
    req_end(r, 499);
}

static const struct conn_handler handler = {on_request, on_body, on_body_end, on_drain, on_gone};

/* The command line run by root (sudo) on a state dir that belongs to the
 * web server's account: it acts as that account, so every file it writes
 * or creates (keys, routing, usage.db, runtime.state) stays the account's
 * and readable by the programs the web server runs. */
static int become_owner(const char *dir)
{
    struct stat sb;
    if (geteuid() != 0 || stat(dir, &sb) != 0 || sb.st_uid == 0) {
        return 0;
    }
    if (setgroups(0, NULL) != 0 || setgid(sb.st_gid) != 0 || setuid(sb.st_uid) != 0) {
        fprintf(stderr, "llmproxy-admin: cannot act as the owner (uid %u) of %s: %s\n",
                (unsigned)sb.st_uid, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct admin a = {0};
    char dirbuf[PATH_MAX];
    bool cgi = argc == 1 && !conn_fd0_listens() && getenv("GATEWAY_INTERFACE") != NULL;
    a.dir = state_dir(cgi, dirbuf, sizeof(dirbuf));
    char err[1024];
    const char *socket_path = NULL;
    if (argc == 3 && strcmp(argv[1], "--socket") == 0) {
        socket_path = argv[2];
    } else if (argc > 1) {
        if (become_owner(a.dir) != 0) {
            return 1;
        }
        return cli(&a, argc, argv);
    }

    if (!cgi) {
        pid_t parent = getppid();
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            return 0;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    bool created;
    if (auth_token_load(a.dir, a.token, sizeof(a.token), &created, err, sizeof(err)) != 0) {
        LOG_ERROR("no admin token, refusing to start: %s", err);
        if (!cgi) {
            return 1;
        }
        /* a CGI run answers it: a bare 500 tells a shared-hosting user nothing */
        snprintf(a.fatal, sizeof(a.fatal),
                 "llmproxy cannot use its state directory '%s': %s. Set LLMPROXY_STATE_DIR "
                 "in .htaccess, or put the llmproxy-state folder next to public_html.",
                 a.dir, err);
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
    int listen_fd = -1;
    if (socket_path != NULL) {
        listen_fd = conn_listen_unix(socket_path);
        if (listen_fd < 0) {
            return 1;
        }
    } else if (conn_fd0_listens()) {
        listen_fd = 0;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGHUP, on_term);
    struct loop *l = loop_new();
    if (l == NULL) {
        return 1;
    }
    struct conn_settings cs = {.stall_ms = 60000, .idle_ms = 300000, .linger_ms = 30000};
    struct conn_server *srv = listen_fd >= 0 ? conn_server_new(l, listen_fd, &handler, &a, &cs)
                                             : conn_server_cgi(l, &handler, &a, &cs);
    if (srv == NULL) {
        return 1;
    }
    if (listen_fd < 0) {
        /* CGI: the one request is answered (or its rest read) and we go */
        while (conn_server_open(srv) > 0) {
            loop_run_once(l, 1000);
        }
    } else {
        loop_run(l);
    }
    conn_server_free(srv);
    loop_free(l);
    return 0;
}
