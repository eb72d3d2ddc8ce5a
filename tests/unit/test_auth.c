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
    return tap_done();
}
