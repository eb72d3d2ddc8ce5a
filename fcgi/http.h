/* http.h - HTTP rules of the proxy: status classes, forwarded headers, Retry-After (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_HTTP_H
#define LLMPROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum http_class {
    HTTP_SUCCESS,     /* 2xx: relay (after the first-event hold for streams) */
    HTTP_FAILOVER,    /* transient or ours (401 403 404 408 409 429, 3xx, 5xx): try the next */
    HTTP_PASSTHROUGH, /* the client's own error (400 413 422 and other 4xx): relay, no retry */
};

enum http_class http_classify(int status);

/* Whether an upstream response header goes on to the client; name is not
 * NUL-terminated. Keep in sync with the README's "Headers" section. */
bool http_forward_header(const char *name, size_t len);

/* Whether lines ("Name: value\r\n"...) already hold a header of that name
 * (case-insensitive; name is not NUL-terminated). */
struct buf;
bool http_has_header(const struct buf *lines, const char *name, size_t len);

/* Whether a client request header (CGI name, e.g. "HTTP_USER_AGENT") goes
 * upstream, and under which name; NULL when it does not. */
const char *http_upstream_header(const char *cgi_name);

/* Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date
 * (relative to now). -1 when absent or unparsable; capped at cap. */
long http_retry_after(const char *value, size_t len, time_t now, long cap);

#endif
