/* streamload.c - holds N streaming chat completions open at once and checks each one */
/* SPDX-License-Identifier: MIT */
/*
 * usage: streamload PORT N MODEL [RATE [HEADER...]]
 * Opens N connections to 127.0.0.1:PORT (at most RATE new ones per second,
 * default 2000), each POSTing a streaming chat completion for MODEL over
 * HTTP/1.0, and reads every stream to its end. Prints "open K" once every
 * stream has delivered its first event (so the caller can sample memory while
 * all are held), then "done ok=X errors=Y" where a stream is ok when it
 * answered 200 and ended with [DONE]. Exit status 0 when errors == 0.
 * Each HEADER ("Name: value") is added to every request (a peer gateway's
 * routing headers).
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { CONNECTING, SENDING, READING, DONE };

struct conn {
    int fd;
    enum phase phase;
    size_t sent;
    int status;      /* HTTP status, 0 until seen */
    int first_event; /* a "data:" line arrived */
    int saw_done;    /* "[DONE]" arrived */
    char tail[16];   /* last bytes, to find markers split across reads */
    size_t tail_len;
};

static char request[4096];
static size_t request_len;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Looks for needle in tail+data without copying all of data. */
static int seen(const struct conn *c, const char *data, size_t n, const char *needle)
{
    size_t nl = strlen(needle);
    char edge[64];
    size_t k = c->tail_len;
    memcpy(edge, c->tail, k);
    size_t take = n < nl ? n : nl;
    memcpy(edge + k, data, take);
    if (memmem(edge, k + take, needle, nl) != NULL) {
        return 1;
    }
    return memmem(data, n, needle, nl) != NULL;
}

static void keep_tail(struct conn *c, const char *data, size_t n)
{
    if (n >= sizeof(c->tail)) {
        memcpy(c->tail, data + n - sizeof(c->tail), sizeof(c->tail));
        c->tail_len = sizeof(c->tail);
        return;
    }
    size_t keep = sizeof(c->tail) - n < c->tail_len ? sizeof(c->tail) - n : c->tail_len;
    memmove(c->tail, c->tail + c->tail_len - keep, keep);
    memcpy(c->tail + keep, data, n);
    c->tail_len = keep + n;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: streamload PORT N MODEL [RATE [HEADER...]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int n = atoi(argv[2]);
    const char *model = argv[3];
    int rate = argc > 4 ? atoi(argv[4]) : 2000;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    char body[512];
    int blen = snprintf(body, sizeof(body),
                        "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                        "\"content\":\"hold me\"}]}",
                        model);
    char extra[2048] = "";
    size_t el = 0;
    for (int i = 5; i < argc; i++) {
        int w = snprintf(extra + el, sizeof(extra) - el, "%s\r\n", argv[i]);
        if (w < 0 || (size_t)w >= sizeof(extra) - el) {
            fprintf(stderr, "streamload: headers too long\n");
            return 2;
        }
        el += (size_t)w;
    }
    int rl_ = snprintf(request, sizeof(request),
                       "POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s",
                       extra, blen, body);
    if (rl_ < 0 || (size_t)rl_ >= sizeof(request)) {
        fprintf(stderr, "streamload: request too long\n");
        return 2;
    }
    request_len = (size_t)rl_;

    struct conn *conns = calloc((size_t)n, sizeof(*conns));
    int ep = epoll_create1(0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int opened = 0, established = 0, finished = 0, ok = 0, errors = 0;
    int announced = 0;
    int64_t t0 = mono_ms();
    struct epoll_event evs[1024];
    int64_t deadline = t0 + 600000;
    while (finished < n && mono_ms() < deadline) {
        /* open new connections at the allowed rate */
        int64_t allowed = (mono_ms() - t0) * rate / 1000 + 1;
        while (opened < n && opened < allowed) {
            struct conn *c = &conns[opened];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                perror("socket");
                c->phase = DONE;
                errors++;
                finished++;
                opened++;
                continue;
            }
            connect(c->fd, (struct sockaddr *)&sa, sizeof(sa));
            c->phase = CONNECTING;
            struct epoll_event e = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)opened};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
            opened++;
        }
        int k = epoll_wait(ep, evs, 1024, 10);
        for (int i = 0; i < k; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->phase == DONE) {
                continue;
            }
            if (c->phase == CONNECTING || c->phase == SENDING) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    goto fail;
                }
                ssize_t w = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    goto fail;
                }
                if (w > 0) {
                    c->sent += (size_t)w;
                }
                c->phase = c->sent == request_len ? READING : SENDING;
                if (c->phase == READING) {
                    struct epoll_event e = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
                continue;
            }
            char buf[16384];
            ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
            if (r < 0 && errno == EAGAIN) {
                continue;
            }
            if (r <= 0) {
                /* end of the answer */
                if (c->status == 200 && c->saw_done) {
                    ok++;
                } else {
                    errors++;
                    if (errors <= 5) {
                        fprintf(stderr, "stream %u: status %d done %d\n", evs[i].data.u32,
                                c->status, c->saw_done);
                    }
                }
                close(c->fd);
                c->phase = DONE;
                finished++;
                continue;
            }
            if (c->status == 0 && r >= 12 && memcmp(buf, "HTTP/1.", 7) == 0) {
                c->status = atoi(buf + 9);
            }
            if (!c->first_event && seen(c, buf, (size_t)r, "data:")) {
                c->first_event = 1;
                established++;
            }
            if (seen(c, buf, (size_t)r, "[DONE]")) {
                c->saw_done = 1;
            }
            keep_tail(c, buf, (size_t)r);
            continue;
        fail:
            errors++;
            if (errors <= 5) {
                fprintf(stderr, "stream %u: connect/send failed: %s\n", evs[i].data.u32,
                        strerror(errno));
            }
            close(c->fd);
            c->phase = DONE;
            finished++;
        }
        if (!announced && established + errors >= n) {
            printf("open %d after %lld ms\n", established, (long long)(mono_ms() - t0));
            fflush(stdout);
            announced = 1;
        }
    }
    if (!announced) {
        printf("open %d after %lld ms\n", established, (long long)(mono_ms() - t0));
    }
    errors += n - finished; /* still running at the deadline */
    printf("done ok=%d errors=%d ms=%lld\n", ok, errors, (long long)(mono_ms() - t0));
    return errors == 0 ? 0 : 1;
}
