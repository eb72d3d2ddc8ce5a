/* fastupstream.c - a fast fake OpenAI upstream for benchmarks (epoll, keep-alive) */
/* SPDX-License-Identifier: MIT */
/*
 * usage: fastupstream PORT
 * Answers every POST with a small chat completion. A body holding
 * "stream":true gets an SSE stream instead; its shape comes from the path:
 * /stream/<chunks>/<gap_ms>/... sends <chunks> events <gap_ms> apart, each
 * carrying its send time ("t", CLOCK_REALTIME microseconds), then [DONE].
 * Single-threaded on purpose: the benchmark checks that it is not the
 * bottleneck by measuring it directly in the same run.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 65536
#define IN_MAX 65536

struct conn {
    char in[IN_MAX];
    size_t inlen;
    int streaming; /* events left to send, -1 when not streaming */
    int sent;      /* events sent */
    int gap_ms;
    int64_t next_at_ms; /* monotonic */
};

static struct conn *conns[MAX_FD];
static int ep;
static int maxfd;                        /* highest connection fd seen */
static unsigned long accepted, requests; /* for GET /_stats: is the proxy reusing connections? */
static int nstreams;                     /* connections streaming now */

static const char reply_body[] =
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"bench\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello! How can I "
    "help you today?\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":9,\"total_tokens\":18}}";

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void drop(int fd)
{
    if (conns[fd]->streaming >= 0) {
        nstreams--;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1; /* a benchmark peer that stops reading is dropped */
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_event(int fd, struct conn *c)
{
    char ev[512];
    char chunk[600];
    int n;
    if (c->streaming == 0) {
        n = snprintf(ev, sizeof(ev), "data: [DONE]\n\n");
    } else {
        n = snprintf(ev, sizeof(ev),
                     "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"i\":%d,\"t\":%lld,"
                     "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n",
                     c->sent, (long long)real_us());
    }
    int m = snprintf(chunk, sizeof(chunk), "%x\r\n%s\r\n%s", n, ev,
                     c->streaming == 0 ? "0\r\n\r\n" : "");
    c->sent++;
    return send_all(fd, chunk, (size_t)m);
}

/* Handles every complete request in the buffer. */
static int serve(int fd, struct conn *c)
{
    for (;;) {
        if (c->streaming >= 0) {
            return 0; /* finish the stream first */
        }
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (end == NULL) {
            return c->inlen >= IN_MAX ? -1 : 0;
        }
        size_t head = (size_t)(end - c->in) + 4;
        size_t clen = 0;
        char *cl = memmem(c->in, head, "Content-Length:", 15);
        if (cl == NULL) {
            cl = memmem(c->in, head, "content-length:", 15);
        }
        if (cl != NULL) {
            clen = strtoul(cl + 15, NULL, 10);
        }
        if (head + clen > IN_MAX) {
            return -1;
        }
        if (c->inlen < head + clen) {
            return 0;
        }
        int stream = memmem(c->in + head, clen, "\"stream\":true", 13) != NULL ||
                     memmem(c->in + head, clen, "\"stream\": true", 14) != NULL;
        int chunks = 5;
        int gap = 10;
        if (stream && strncmp(c->in, "POST /stream/", 13) == 0) {
            sscanf(c->in + 13, "%d/%d", &chunks, &gap);
        }
        int stats = strncmp(c->in, "GET /_stats", 11) == 0;
        memmove(c->in, c->in + head + clen, c->inlen - head - clen);
        c->inlen -= head + clen;
        if (stats) {
            char body[128], out[256];
            int bl =
                snprintf(body, sizeof(body), "{\"accepted\":%lu,\"requests\":%lu,\"streams\":%d}",
                         accepted, requests, nstreams);
            int ol = snprintf(out, sizeof(out),
                              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Content-Length: %d\r\n\r\n%s",
                              bl, body);
            if (send_all(fd, out, (size_t)ol) != 0) {
                return -1;
            }
            continue;
        }
        requests++;
        if (stream) {
            static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n";
            if (send_all(fd, h, sizeof(h) - 1) != 0) {
                return -1;
            }
            c->streaming = chunks > 0 ? chunks + 1 : 2; /* events, then [DONE] */
            nstreams++;
            c->sent = 0;
            c->gap_ms = gap;
            c->streaming--;
            if (send_event(fd, c) != 0) {
                return -1;
            }
            c->next_at_ms = mono_ms() + gap;
            return 0;
        }
        char out[1024];
        int n = snprintf(out, sizeof(out),
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nx-request-id: bench\r\n\r\n%s",
                         sizeof(reply_body) - 1, reply_body);
        if (send_all(fd, out, (size_t)n) != 0) {
            return -1;
        }
    }
}

/* Streams are served by a scan every few ms rather than a timer each, which
 * keeps 10,000 held streams cheap. */
#define TICK_MS 5

static void tick_streams(void)
{
    static int64_t last;
    int64_t now = mono_ms();
    if (now - last < TICK_MS) {
        return;
    }
    last = now;
    for (int fd = 0; nstreams > 0 && fd <= maxfd; fd++) {
        struct conn *c = conns[fd];
        if (c == NULL || c->streaming < 0 || c->next_at_ms > now) {
            continue;
        }
        c->streaming--;
        if (send_event(fd, c) != 0) {
            drop(fd);
            continue;
        }
        if (c->streaming == 0) {
            c->streaming = -1;
            nstreams--;
            if (serve(fd, c) != 0) {
                drop(fd);
            }
        } else {
            c->next_at_ms = now + c->gap_ms;
        }
    }
}

static int next_timeout(void)
{
    return nstreams > 0 ? TICK_MS : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fastupstream PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 4096) != 0) {
        perror("bind/listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, next_timeout());
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) {
                        break;
                    }
                    if (c >= MAX_FD) {
                        close(c);
                        continue;
                    }
                    maxfd = c > maxfd ? c : maxfd;
                    accepted++;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conns[c] = calloc(1, sizeof(struct conn));
                    conns[c]->streaming = -1;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (c == NULL) {
                continue;
            }
            ssize_t r = recv(fd, c->in + c->inlen, IN_MAX - c->inlen, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) {
                    continue;
                }
                drop(fd);
                continue;
            }
            c->inlen += (size_t)r;
            if (serve(fd, c) != 0) {
                drop(fd);
            }
        }
        tick_streams();
    }
}
