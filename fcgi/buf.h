/* buf.h - growable byte buffers with a hard cap */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_BUF_H
#define LLMPROXY_BUF_H

#include <stddef.h>

/* A byte buffer that the caller owns (buf_init/buf_cleanup). The data is
 * always NUL-terminated after len bytes so it can be used as a C string.
 * Growing past cap is an error (BUF_TOOBIG) and leaves the buffer unchanged. */
struct buf {
    char *data;
    size_t len;
    size_t size; /* allocated bytes, 0 when data is NULL */
    size_t cap;  /* hard limit on len */
};

#define BUF_OK 0
#define BUF_TOOBIG (-1)

void buf_init(struct buf *b, size_t cap);
void buf_cleanup(struct buf *b);
/* Forget the content, keep the allocation. */
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
/* printf-style append; returns BUF_TOOBIG when it would pass the cap. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as the inside of a JSON string (quotes not included). */
int buf_append_json_str(struct buf *b, const char *s);
/* Allocate room for n bytes in all at once (a body of known length), so
 * filling it never doubles the allocation. BUF_TOOBIG when n > cap. */
int buf_presize(struct buf *b, size_t n);
/* Make room for n more bytes; returns a pointer to the free space or NULL. */
char *buf_reserve(struct buf *b, size_t n);
/* Appends everything fd holds until end of file. Returns BUF_OK, BUF_TOOBIG
 * (more than the cap) or -2 on a read error. */
int buf_read_fd(struct buf *b, int fd);
/* Hand the data to the caller (who frees it with free()); b is left empty. */
char *buf_steal(struct buf *b, size_t *len);

#endif
