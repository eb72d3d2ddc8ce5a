/* test_redis_url.c - unit tests of redis_url.c: LLMPROXY_REDIS_URL and its timeout */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/redis_url.c"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static int parse(const char *s, struct redis_url *u, char *err)
{
    return redis_url_parse(s, u, err, 300);
}

int main(void)
{
    struct redis_url u;
    char err[300];
    ok(parse("redis://127.0.0.1:6380/2", &u, err) == 0 && !u.unix_socket &&
           strcmp(u.host, "127.0.0.1") == 0 && u.port == 6380 && u.db == 2,
       "host, port and database");
    ok(parse("redis://10.1.2.3", &u, err) == 0 && u.port == 6379 && u.db == 0,
       "defaults: port 6379, database 0");
    ok(parse("redis://cache.internal:6379", &u, err) != 0 && strstr(err, "IP address") != NULL,
       "a host name is refused (hiredis would resolve it blocking the loop): %s", err);
    ok(parse("redis://localhost:6379/0", &u, err) == 0 && strcmp(u.host, "127.0.0.1") == 0,
       "localhost is 127.0.0.1");
    ok(parse("redis://:s3cr%40t@10.0.0.5:7000/1", &u, err) == 0 && u.user[0] == '\0' &&
           strcmp(u.pass, "s3cr@t") == 0 && u.port == 7000,
       "a password alone, %%-escaped");
    ok(strstr(u.shown, "s3cr") == NULL && strstr(u.shown, "***") != NULL,
       "the password never reaches a log: %s", u.shown);
    ok(parse("redis://llm:pw@[::1]:6379/3", &u, err) == 0 && strcmp(u.user, "llm") == 0 &&
           strcmp(u.pass, "pw") == 0 && strcmp(u.host, "::1") == 0 && u.db == 3 &&
           strcmp(u.shown, "redis://llm:***@[::1]:6379/3") == 0,
       "user, password and an IPv6 host: %s", u.shown);
    ok(parse("redis://a:b@c@10.0.0.1:1/0", &u, err) == 0 && strcmp(u.pass, "b@c") == 0 &&
           strcmp(u.host, "10.0.0.1") == 0,
       "the last @ ends the password");
    ok(parse("unix:///run/redis/redis.sock", &u, err) == 0 && u.unix_socket &&
           strcmp(u.path, "/run/redis/redis.sock") == 0 && u.db == 0,
       "a unix socket");
    ok(parse("unix:///tmp/a b/r.sock?db=4", &u, err) == 0 && u.db == 4 &&
           strcmp(u.path, "/tmp/a b/r.sock") == 0,
       "a unix socket with spaces and a database");
    ok(parse("rediss://10.0.0.1:6379", &u, err) != 0 && strstr(err, "TLS") != NULL,
       "rediss:// is refused, saying why: %s", err);
    const char *bad[] = {"http://h",       "redis://",     "redis://h:0",   "redis://h:99999",
                         "redis://h:x",    "redis://h/x",  "redis://h?x=1", "unix://rel/path",
                         "unix:///p?db=x", "redis://[::1", "redis://:%4@h", "redis://h:1/2/3",
                         "redis://h h",    "unix://",      "redis://:%00@h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(parse(bad[i], &u, err) != 0 && strncmp(err, "LLMPROXY_REDIS_URL: ", 20) == 0,
           "refused: %s (%s)", bad[i], err);
    }

    struct redis_settings s;
    unsetenv("LLMPROXY_REDIS_URL");
    unsetenv("LLMPROXY_REDIS_TIMEOUT_MS");
    ok(redis_settings_from_env(&s, err, sizeof(err)) == 0 && !s.on && s.timeout_ms == 50,
       "unset: off, timeout 50 ms");
    setenv("LLMPROXY_REDIS_URL", "unix:///r.sock", 1);
    setenv("LLMPROXY_REDIS_TIMEOUT_MS", "20", 1);
    ok(redis_settings_from_env(&s, err, sizeof(err)) == 0 && s.on && s.timeout_ms == 20,
       "set: on, its timeout");
    setenv("LLMPROXY_REDIS_TIMEOUT_MS", "0", 1);
    ok(redis_settings_from_env(&s, err, sizeof(err)) != 0, "a timeout of 0 is refused: %s", err);
    setenv("LLMPROXY_REDIS_TIMEOUT_MS", "", 1);
    setenv("LLMPROXY_REDIS_URL", "rediss://h", 1);
    ok(redis_settings_from_env(&s, err, sizeof(err)) != 0, "an unusable URL stops the start");
    return tap_done();
}
