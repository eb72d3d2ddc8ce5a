/* test_auth.c - unit tests of auth.c: token file, bearer check, cross-site refusal */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/auth.c"
#include "tap.h"

#include <sys/stat.h>

int main(void)
{
    char dir[] = "/tmp/llmproxy-auth-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    unsetenv("LLMPROXY_ADMIN_TOKEN");
    char tok[AUTH_TOKEN_MAX], again[AUTH_TOKEN_MAX], err[256];
    bool created = false;
    ok(auth_token_load(dir, tok, sizeof(tok), &created, err, sizeof(err)) == 0 && created,
       "token created on first use");
    ok(strlen(tok) == 2 * AUTH_TOKEN_BYTES && strspn(tok, "0123456789abcdef") == strlen(tok),
       "64 hex characters (32 random bytes)");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, AUTH_TOKEN_FILE);
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "token file is 0600");
    ok(auth_token_load(dir, again, sizeof(again), &created, err, sizeof(err)) == 0 && !created &&
           strcmp(tok, again) == 0,
       "second load reads the same token");
    setenv("LLMPROXY_ADMIN_TOKEN", "from-the-environment", 1);
    ok(auth_token_load(dir, again, sizeof(again), &created, err, sizeof(err)) == 0 &&
           strcmp(again, "from-the-environment") == 0 && !created,
       "LLMPROXY_ADMIN_TOKEN wins");
    unsetenv("LLMPROXY_ADMIN_TOKEN");
    unlink(path);
    rmdir(dir);

    ok(auth_bearer_ok("Bearer secret-token", "secret-token"), "right token");
    ok(auth_bearer_ok("bearer  secret-token", "secret-token"), "scheme is case-insensitive");
    ok(!auth_bearer_ok("Bearer secret-tokeN", "secret-token"), "one byte off");
    ok(!auth_bearer_ok("Bearer secret-token2", "secret-token"), "longer");
    ok(!auth_bearer_ok("Bearer secret-toke", "secret-token"), "shorter");
    ok(!auth_bearer_ok("Bearer ", "secret-token"), "empty");
    ok(!auth_bearer_ok(NULL, "secret-token"), "absent");
    ok(!auth_bearer_ok("Basic secret-token", "secret-token"), "other scheme");
    ok(!auth_bearer_ok("Bearer ", ""), "an empty token never matches");

    ok(!auth_cross_site(NULL, "h:1", NULL), "no Origin, no Sec-Fetch-Site: curl, allowed");
    ok(!auth_cross_site("http://h:1", "h:1", "same-origin"), "same origin");
    ok(auth_cross_site("http://evil:1", "h:1", NULL), "other origin");
    ok(auth_cross_site("http://h:1", "h:1", "cross-site"), "Sec-Fetch-Site cross-site");
    ok(auth_cross_site(NULL, "h:1", "same-site"), "Sec-Fetch-Site same-site");
    ok(auth_cross_site("null", "h:1", NULL), "opaque origin");
    ok(auth_cross_site("http://h:2", "h:1", NULL), "other port");

    ok(auth_keyless_ok("127.0.0.1", "127.0.0.1:1852", NULL, NULL), "keyless: loopback, curl");
    ok(auth_keyless_ok("::1", "[::1]:1852", NULL, NULL) &&
           auth_keyless_ok("::ffff:127.0.0.1", "localhost", NULL, NULL) &&
           auth_keyless_ok("127.8.9.10", "LOCALHOST:80", NULL, NULL),
       "keyless: IPv6, mapped IPv4, the whole 127/8, any case");
    ok(auth_keyless_ok("127.0.0.1", "127.0.0.1:1852", "http://127.0.0.1:1852", "same-origin"),
       "keyless: the same origin from a browser");
    ok(!auth_keyless_ok("10.0.0.2", "127.0.0.1:1852", NULL, NULL), "keyless: another address");
    ok(!auth_keyless_ok("127.0.0.1", "evil.example:1852", NULL, NULL),
       "keyless: a foreign Host (DNS rebinding)");
    ok(!auth_keyless_ok("127.0.0.1", "127.0.0.1.evil.example", NULL, NULL) &&
           !auth_keyless_ok("127.0.0.1", "localhost:", NULL, NULL) &&
           !auth_keyless_ok("127.0.0.1", "localhost:80x", NULL, NULL) &&
           !auth_keyless_ok("127.0.0.1", NULL, NULL, NULL),
       "keyless: look-alike, empty port, bad port, no Host");
    ok(!auth_keyless_ok("127.0.0.1", "127.0.0.1:1852", "http://evil.example", NULL),
       "keyless: a cross-site Origin");
    ok(!auth_keyless_ok("127.0.0.1", "127.0.0.1:1852", NULL, "cross-site") &&
           !auth_keyless_ok("127.0.0.1", "127.0.0.1:1852", NULL, "same-site"),
       "keyless: Sec-Fetch-Site cross-site or same-site");
    ok(!auth_keyless_ok(NULL, "127.0.0.1", NULL, NULL), "keyless: no address");
    return tap_done();
}
