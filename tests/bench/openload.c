/* openload.c - requests at a fixed rate whatever the answers (an open-loop load generator) */
/* SPDX-License-Identifier: MIT */
/*
 * usage: openload PORT PATH MODEL RATE SECONDS [stream]
 * Sends a chat completion for MODEL to 127.0.0.1:PORT PATH every 1/RATE
 * seconds for SECONDS, over HTTP/1.1 keep-alive connections (a new one is
 * opened when none is idle, up to 4096), and measures each request from the
 * moment it was due, not from when a connection was free: a slow answer
 * shows as latency, never as a lower rate (no coordinated omission). Plain
 * requests are timed to the answer's last byte; with "stream", to the
 * first byte of the body (time to first byte) and read to the end.
 * Prints one line: sent, ok, errors, the rate achieved, and p50, p99,
 * p99.9 and max in microseconds.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define BUF 65536

struct conn {
    int fd;
    int busy;    /* a request is out */
    int64_t due; /* when that request was due (ns) */
    int timed;   /* its time was taken (stream: at the first body byte) */
    size_t sent; /* bytes of the request written */
    char *in;    /* what came back of the answer so far */
    size_t in_len;
    size_t head; /* length of the header block, 0 until complete */
    long clen;   /* Content-Length, -1: chunked */
    int last;    /* the answer said Connection: close: not used again */
    int status;
};

static char request[2048];
static size_t request_len;
static int stream;
static struct sockaddr_in addr;
static int ep;
static struct conn *conns[MAX_CONNS];
static int nconns;
static int64_t *lat;
static size_t nlat, cap_lat;
static long ok_count, err_count;
static long closed_count, refused_count; /* connections that ended mid-answer, none to be had */
static int bad_status;                   /* the first status other than 200 */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void record(int64_t ns)
{
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, cap_lat * sizeof(*lat));
        if (lat == NULL) {
            exit(2);
        }
    }
    lat[nlat++] = ns;
}

static struct conn *open_conn(void)
{
    if (nconns >= MAX_CONNS) {
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    struct conn *c = calloc(1, sizeof(*c));
    c->fd = fd;
    c->in = malloc(BUF);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    conns[nconns++] = c;
    return c;
}

static void drop(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (int i = 0; i < nconns; i++) {
        if (conns[i] == c) {
            conns[i] = conns[--nconns];
            break;
        }
    }
    free(c->in);
    free(c);
}

static void want(struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void finish(struct conn *c, int good)
{
    if (!c->timed) {
        record(now_ns() - c->due);
    }
    if (good) {
        ok_count++;
    } else {
        err_count++;
        if (c->status != 200 && c->status != 0 && bad_status == 0) {
            bad_status = c->status;
        }
    }
    c->busy = 0;
    c->timed = 0;
    c->in_len = 0;
    c->head = 0;
    c->sent = 0;
    want(c, EPOLLIN);
}

static void try_send(struct conn *c)
{
    while (c->sent < request_len) {
        ssize_t w = write(c->fd, request + c->sent, request_len - c->sent);
        if (w < 0) {
            if (errno == EAGAIN || errno == ENOTCONN) {
                want(c, EPOLLIN | EPOLLOUT);
                return;
            }
            finish(c, 0);
            drop(c);
            return;
        }
        c->sent += (size_t)w;
    }
    want(c, EPOLLIN);
}

/* The answer is complete when its body is in: Content-Length bytes, or
 * the chunked encoding's last chunk. */
static int complete(struct conn *c)
{
    if (c->head == 0) {
        char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (e == NULL) {
            return 0;
        }
        c->head = (size_t)(e - c->in) + 4;
        c->status = atoi(c->in + 9);
        c->clen = -1;
        char *cl = memmem(c->in, c->head, "Content-Length:", 15);
        if (cl == NULL) {
            cl = memmem(c->in, c->head, "content-length:", 15);
        }
        if (cl != NULL) {
            c->clen = atol(cl + 15);
        }
        c->last = memmem(c->in, c->head, "Connection: close", 17) != NULL ||
                  memmem(c->in, c->head, "connection: close", 17) != NULL;
    }
    if (stream && !c->timed && c->in_len > c->head) {
        record(now_ns() - c->due); /* the first byte of the body */
        c->timed = 1;
    }
    if (c->clen >= 0) {
        return c->in_len >= c->head + (size_t)c->clen;
    }
    return c->in_len >= c->head + 5 && memcmp(c->in + c->in_len - 5, "0\r\n\r\n", 5) == 0;
}

static void on_read(struct conn *c)
{
    for (;;) {
        if (c->in_len == BUF) {
            /* keep the header block and the last bytes only */
            size_t keep = c->head + 16 < BUF / 2 ? c->head : 0;
            memmove(c->in + keep, c->in + c->in_len - 16, 16);
            if (c->clen >= 0) {
                c->clen -= (long)(c->in_len - keep - 16);
            }
            c->in_len = keep + 16;
        }
        ssize_t r = read(c->fd, c->in + c->in_len, BUF - c->in_len);
        if (r > 0) {
            c->in_len += (size_t)r;
            if (c->busy && complete(c)) {
                finish(c, c->status == 200);
                if (c->last) {
                    drop(c); /* the server closes it (lighttpd: every 1000th request) */
                    return;
                }
            }
            continue;
        }
        if (r < 0 && errno == EAGAIN) {
            return;
        }
        if (c->busy) {
            closed_count++;
            finish(c, 0);
        }
        drop(c);
        return;
    }
}

static void fire(int64_t due)
{
    struct conn *c = NULL;
    for (int i = 0; i < nconns && c == NULL; i++) {
        if (!conns[i]->busy) {
            c = conns[i];
        }
    }
    if (c == NULL) {
        c = open_conn();
    }
    if (c == NULL) {
        err_count++;
        refused_count++;
        return;
    }
    c->busy = 1;
    c->last = 0;
    c->due = due;
    c->timed = 0;
    c->sent = 0;
    c->in_len = 0;
    c->head = 0;
    try_send(c);
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: openload PORT PATH MODEL RATE SECONDS [stream]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    stream = argc > 6 && strcmp(argv[6], "stream") == 0;
    char body[512];
    int bl = snprintf(body, sizeof(body),
                      "{\"model\":\"%s\",\"stream\":%s,\"messages\":[{\"role\":\"user\","
                      "\"content\":\"Hello\"}]}",
                      argv[3], stream ? "true" : "false");
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                   "application/json\r\nContent-Length: %d\r\n\r\n%s",
                                   argv[2], bl, body);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int64_t step = (int64_t)(1e9 / rate), start = now_ns(), end = start + (int64_t)(seconds * 1e9);
    int64_t next = start;
    long sent = 0;
    struct epoll_event evs[256];
    while (next < end || ok_count + err_count < sent) {
        int64_t t = now_ns();
        while (next <= t && next < end) {
            fire(next);
            sent++;
            next += step;
        }
        if (next >= end && t > end + 10000000000LL) {
            break; /* answers 10 s late: counted as errors below */
        }
        int64_t wait = next < end ? next - now_ns() : 10000000;
        /* a wait to the nanosecond, so the schedule holds without spinning */
        struct timespec ts = {.tv_sec = wait > 0 ? wait / 1000000000 : 0,
                              .tv_nsec = wait > 0 ? wait % 1000000000 : 0};
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_read(c);
                continue; /* c may be gone */
            }
            if (evs[i].events & EPOLLOUT) {
                try_send(c);
            }
        }
    }
    err_count += sent - ok_count - err_count;
    qsort(lat, nlat, sizeof(*lat), cmp);
#define P(q) (nlat ? lat[(size_t)((double)(nlat - 1) * (q))] / 1000 : 0)
    printf("sent %ld ok %ld errors %ld rate %.0f p50 %lld p99 %lld p999 %lld max %lld conns %d "
           "closed %ld noconn %ld status %d\n",
           sent, ok_count, err_count, (double)sent / seconds, (long long)P(0.5), (long long)P(0.99),
           (long long)P(0.999), (long long)(nlat ? lat[nlat - 1] / 1000 : 0), nconns, closed_count,
           refused_count, bad_status);
    return err_count == 0 ? 0 : 1;
}
