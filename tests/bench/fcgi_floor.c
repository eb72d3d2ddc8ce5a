/* fcgi_floor.c - the least a FastCGI gateway can do: the floor under llmproxy's added latency */
/* SPDX-License-Identifier: MIT */
/*
 * Spawned by lighttpd in llmproxy's place (LLMPROXY_BIN=build/bench/fcgi_floor
 * scripts/run.sh), with the FastCGI listen socket on fd 0, as llmproxy is.
 * It does only what any FastCGI gateway in front of an HTTP backend must:
 * accept lighttpd's connection, read the request's records, send the body to
 * the backend over a kept-alive TCP connection in one write, read the answer
 * and hand it back as FastCGI records (a plain answer in one write with
 * END_REQUEST; a chunked stream relayed as each read comes, de-chunked).
 * No routing, keys, limits, logs, usage or libcurl, one request at a time
 * per process, blocking calls only. scripts/bench.py --floor times it in the
 * open loop beside llmproxy at the same rates: what llmproxy adds over it is
 * what its own work costs; what it adds over direct is the hop itself.
 *
 * The backend is the first "127.0.0.1:PORT" in
 * $LLMPROXY_STATE_DIR/dynamic_routing.json; a body with "stream": true goes to
 * /stream/3/1/v1/chat/completions (the bench's quick stream), any other to
 * /v1/chat/completions.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define IN_MAX (1 << 20)
#define OUT_MAX (1 << 16)

static struct sockaddr_in backend;
static int up = -1;
static char in[IN_MAX];   /* lighttpd's records, then the request body */
static char ans[IN_MAX];  /* the backend's answer */
static char out[OUT_MAX]; /* records for lighttpd */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One FastCGI record header (version 1, request id 1) at p. */
static void record(char *p, int type, size_t len)
{
    unsigned char h[8] = {
        1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
    memcpy(p, h, 8);
}

/* Reads lighttpd's records up to the empty STDIN one; the body goes to in[0..]. */
static long read_request(int c)
{
    static char raw[IN_MAX];
    size_t have = 0, pos = 0, body = 0;
    for (;;) {
        while (have - pos >= 8) {
            const unsigned char *h = (const unsigned char *)raw + pos;
            size_t len = ((size_t)h[4] << 8) | h[5];
            size_t rec = 8 + len + h[6];
            if (have - pos < rec) {
                break;
            }
            if (h[1] == 5) { /* FCGI_STDIN */
                if (len == 0) {
                    return (long)body;
                }
                if (body + len > IN_MAX) {
                    return -1;
                }
                memcpy(in + body, raw + pos + 8, len);
                body += len;
            }
            pos += rec;
        }
        if (pos == have) {
            have = pos = 0;
        }
        if (have == IN_MAX) {
            return -1;
        }
        ssize_t r = read(c, raw + have, IN_MAX - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        have += (size_t)r;
    }
}

static int connect_backend(void)
{
    up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(up, (struct sockaddr *)&backend, sizeof(backend)) != 0) {
        close(up);
        up = -1;
        return -1;
    }
    return 0;
}

/* Relays the backend's answer to lighttpd; returns 0 when the whole answer
 * went, 1 when the kept connection was found closed before any of it. */
static int relay(int c)
{
    size_t have = 0, head = 0;
    for (;;) {
        ssize_t r = recv(up, ans + have, sizeof(ans) - have, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return have == 0 ? 1 : -1;
        }
        have += (size_t)r;
        char *end = memmem(ans, have, "\r\n\r\n", 4);
        if (end != NULL) {
            head = (size_t)(end - ans) + 4;
            break;
        }
        if (have == sizeof(ans)) {
            return -1;
        }
    }
    int status = atoi(ans + 9);
    const char *ct = memmem(ans, head, "Content-Type: ", 14);
    size_t ctl = ct != NULL ? strcspn(ct + 14, "\r") : 0;
    const char *cl = memmem(ans, head, "Content-Length: ", 16);
    size_t o = 8;
    o += (size_t)snprintf(out + o, 256, "Status: %d\r\nContent-Type: %.*s\r\n\r\n", status,
                          (int)ctl, ct != NULL ? ct + 14 : "");
    if (cl != NULL) { /* plain: all of it, then one write with END_REQUEST */
        size_t clen = strtoul(cl + 16, NULL, 10);
        if (head + clen > sizeof(ans) || o + clen + 24 > sizeof(out)) {
            return -1;
        }
        while (have < head + clen) {
            ssize_t r = recv(up, ans + have, head + clen - have, 0);
            if (r <= 0) {
                return -1;
            }
            have += (size_t)r;
        }
        memcpy(out + o, ans + head, clen);
        o += clen;
        record(out, 6, o - 8);
        record(out + o, 6, 0);
        record(out + o + 8, 3, 8);
        memset(out + o + 16, 0, 8);
        return write_all(c, out, o + 24);
    }
    /* chunked: each read's whole chunks go on at once */
    size_t pos = head;
    for (;;) {
        int done = 0;
        for (;;) {
            char *nl = memmem(ans + pos, have - pos, "\r\n", 2);
            if (nl == NULL) {
                break;
            }
            size_t n = strtoul(ans + pos, NULL, 16);
            size_t start = (size_t)(nl - ans) + 2;
            if (n == 0) {
                if (have - start < 2) {
                    break;
                }
                done = 1;
                break;
            }
            if (have - start < n + 2) {
                break;
            }
            if (o + n + 24 > sizeof(out)) {
                return -1;
            }
            memcpy(out + o, ans + start, n);
            o += n;
            pos = start + n + 2;
        }
        size_t w = o;
        if (o > 8) {
            record(out, 6, o - 8);
        } else {
            w = 0;
        }
        if (done) {
            record(out + w, 6, 0);
            record(out + w + 8, 3, 8);
            memset(out + w + 16, 0, 8);
            w += 24;
        }
        if (w > 0 && write_all(c, out, w) != 0) {
            return -1;
        }
        if (done) {
            return 0;
        }
        o = 8;
        memmove(ans, ans + pos, have - pos);
        have -= pos;
        pos = 0;
        ssize_t r = recv(up, ans + have, sizeof(ans) - have, 0);
        if (r <= 0) {
            return -1;
        }
        have += (size_t)r;
    }
}

static void serve(int c)
{
    long body = read_request(c);
    if (body < 0) {
        return;
    }
    int stream = memmem(in, (size_t)body, "\"stream\": true", 14) != NULL ||
                 memmem(in, (size_t)body, "\"stream\":true", 13) != NULL;
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Authorization: Bearer k\r\nContent-Length: %ld\r\n\r\n",
                      stream ? "/stream/3/1/v1/chat/completions" : "/v1/chat/completions", body);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (up < 0 && connect_backend() != 0) {
            return;
        }
        struct iovec iov[2] = {{head, (size_t)hl}, {in, (size_t)body}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
        int rc = sendmsg(up, &m, MSG_NOSIGNAL) == hl + body ? relay(c) : 1;
        if (rc == 0) {
            return;
        }
        close(up);
        up = -1;
        if (rc < 0) {
            return;
        }
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *dir = getenv("LLMPROXY_STATE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/dynamic_routing.json", dir != NULL ? dir : ".");
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(in, 1, sizeof(in) - 1, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    in[n] = 0;
    const char *at = strstr(in, "127.0.0.1:");
    if (at == NULL) {
        fprintf(stderr, "fcgi_floor: no 127.0.0.1:PORT in %s\n", path);
        return 1;
    }
    backend.sin_family = AF_INET;
    backend.sin_port = htons((uint16_t)atoi(at + 10));
    backend.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int c = accept4(0, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return 1;
        }
        serve(c);
        close(c);
    }
}
