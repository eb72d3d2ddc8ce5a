/* http.c - HTTP rules of the proxy: status classes, forwarded headers, Retry-After (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "http.h"
#include "buf.h"
#include "utctime.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum http_class http_classify(int status)
{
    if (status >= 200 && status < 300) {
        return HTTP_SUCCESS;
    }
    switch (status) {
    case 401: /* our key is bad */
    case 403: /* our key may not use this */
    case 404: /* this backend lacks the model or path */
    case 408:
    case 409:
    case 429:
        return HTTP_FAILOVER;
    default:
        break;
    }
    if (status >= 400 && status < 500) {
        return HTTP_PASSTHROUGH;
    }
    /* 5xx, and 1xx/3xx that no API backend should send as a final answer */
    return HTTP_FAILOVER;
}

static bool prefix(const char *name, size_t len, const char *p)
{
    size_t n = strlen(p);
    return len >= n && strncasecmp(name, p, n) == 0;
}

static bool exact(const char *name, size_t len, const char *p)
{
    return len == strlen(p) && strncasecmp(name, p, len) == 0;
}

bool http_forward_header(const char *name, size_t len)
{
    return exact(name, len, "content-type") || exact(name, len, "content-length") ||
           exact(name, len, "content-encoding") || exact(name, len, "retry-after") ||
           exact(name, len, "x-request-id") || prefix(name, len, "openai-") ||
           prefix(name, len, "x-ratelimit-") || exact(name, len, "cache-control");
}

bool http_has_header(const struct buf *lines, const char *name, size_t len)
{
    const char *p = lines->data;
    const char *end = p != NULL ? p + lines->len : NULL;
    while (p != NULL && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon = memchr(p, ':', eol != NULL ? (size_t)(eol - p) : (size_t)(end - p));
        if (colon != NULL && (size_t)(colon - p) == len && strncasecmp(p, name, len) == 0) {
            return true;
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    return false;
}

const char *http_upstream_header(const char *cgi_name)
{
    static const struct {
        const char *cgi;
        const char *name;
    } map[] = {
        {"HTTP_ACCEPT", "Accept"},
        {"HTTP_USER_AGENT", "User-Agent"},
        {"HTTP_OPENAI_BETA", "OpenAI-Beta"},
        {"HTTP_HTTP_REFERER", "HTTP-Referer"},
        {"HTTP_X_TITLE", "X-Title"},
        {"HTTP_X_STAINLESS_LANG", "X-Stainless-Lang"},
        {"HTTP_ANTHROPIC_VERSION", "anthropic-version"},
        {"HTTP_ANTHROPIC_BETA", "anthropic-beta"},
    };
    for (size_t i = 0; i < ARRAY_LEN(map); i++) {
        if (strcmp(cgi_name, map[i].cgi) == 0) {
            return map[i].name;
        }
    }
    return NULL;
}

static int month(const char *m)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++) {
        if (strncmp(m, names + i * 3, 3) == 0) {
            return i;
        }
    }
    return -1;
}

long http_retry_after(const char *value, size_t len, time_t now, long cap)
{
    char v[64];
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t')) {
        len--;
    }
    if (len == 0 || len >= sizeof(v)) {
        return -1;
    }
    memcpy(v, value, len);
    v[len] = '\0';
    if (v[0] >= '0' && v[0] <= '9') {
        long s = 0;
        for (size_t i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9') {
                return -1;
            }
            if (s <= cap) {
                s = s * 10 + (v[i] - '0');
            }
        }
        return s > cap ? cap : s;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    int d, y, hh, mm, ss;
    char mon[4], wd[4];
    int used = 0;
    if (sscanf(v, "%3[A-Za-z], %d %3s %d %d:%d:%d GMT%n", wd, &d, mon, &y, &hh, &mm, &ss, &used) !=
            7 ||
        used != (int)len || month(mon) < 0 || d < 1 || d > 31 || y < 1970 || y > 9999 || hh > 23 ||
        mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0) {
        return -1;
    }
    long t = utctime_days_from_civil(y, (unsigned)month(mon) + 1, (unsigned)d) * 86400L +
             hh * 3600L + mm * 60L + ss;
    long delta = t - (long)now;
    if (delta < 0) {
        return 0;
    }
    return delta > cap ? cap : delta;
}
