/* test_http.c - unit tests of http.c: status classes, headers, Retry-After */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/http.c"
#include "tap.h"

int main(void)
{
    const int fo[] = {401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 520, 301};
    for (size_t i = 0; i < ARRAY_LEN(fo); i++) {
        ok(http_classify(fo[i]) == HTTP_FAILOVER, "%d fails over", fo[i]);
    }
    const int pt[] = {400, 413, 422, 402, 418};
    for (size_t i = 0; i < ARRAY_LEN(pt); i++) {
        ok(http_classify(pt[i]) == HTTP_PASSTHROUGH, "%d passes through", pt[i]);
    }
    ok(http_classify(200) == HTTP_SUCCESS && http_classify(204) == HTTP_SUCCESS, "2xx success");

    ok(http_forward_header("Content-Type", 12) && http_forward_header("x-request-id", 12) &&
           http_forward_header("OpenAI-Processing-Ms", 20) &&
           http_forward_header("x-ratelimit-remaining-tokens", 28) &&
           http_forward_header("Retry-After", 11),
       "useful headers forwarded");
    ok(!http_forward_header("Connection", 10) && !http_forward_header("Transfer-Encoding", 17) &&
           !http_forward_header("Set-Cookie", 10) && !http_forward_header("Keep-Alive", 10) &&
           !http_forward_header("Server", 6) && !http_forward_header("Content-Typo", 12),
       "hop-by-hop and others dropped");
    ok(http_upstream_header("HTTP_AUTHORIZATION") == NULL &&
           http_upstream_header("HTTP_COOKIE") == NULL &&
           http_upstream_header("HTTP_CONNECTION") == NULL &&
           http_upstream_header("HTTP_PROXY") == NULL,
       "client credentials and hop-by-hop never go upstream");
    ok(strcmp(http_upstream_header("HTTP_USER_AGENT"), "User-Agent") == 0, "user agent goes");
    ok(http_upstream_header("CONTENT_TYPE") == NULL, "content type is always our own");

    time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
#define RA(s) http_retry_after(s, strlen(s), now, 3600)
    ok(RA("120") == 120, "seconds");
    ok(RA(" 7 ") == 7, "seconds with spaces");
    ok(RA("99999999999999999999") == 3600, "huge capped");
    ok(RA("-5") == -1 && RA("abc") == -1 && RA("") == -1 && RA("5s") == -1, "junk rejected");
    ok(RA("Sun, 06 Nov 1994 08:50:37 GMT") == 60, "HTTP-date a minute ahead");
    ok(RA("Sun, 06 Nov 1994 08:00:00 GMT") == 0, "HTTP-date in the past");
    ok(RA("Mon, 07 Nov 1994 08:49:37 GMT") == 3600, "HTTP-date far ahead capped");
    ok(RA("Sun, 06 Foo 1994 08:50:37 GMT") == -1, "bad month");
    ok(RA("Sun, 06 Nov 1994 08:50:37 GMT trailing") == -1, "trailing junk");
    return tap_done();
}
