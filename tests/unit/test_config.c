/* test_config.c - unit tests of config.c: parsing, validation, lookup */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/config.c"
#include "buf.h"
#include "tap.h"

#include <stdio.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    static char data[1 << 16];
    *len = fread(data, 1, sizeof(data) - 1, f);
    data[*len] = '\0';
    fclose(f);
    return data;
}

static struct config *parse(const char *json, char *err, size_t errlen)
{
    return config_parse(json, strlen(json), err, errlen);
}

static void expect_error(const char *json, const char *needle, const char *name)
{
    char err[512] = "";
    struct config *c = parse(json, err, sizeof(err));
    ok(c == NULL && strstr(err, needle) != NULL, "rejects %s (%s)", name, err);
    config_free(c);
}

int main(void)
{
    char err[512];
    size_t len = 0;
    char *seed = slurp("tests/data/seed_example.json", &len);
    ok(seed != NULL, "seed README example is readable");
    struct config *c = seed ? config_parse(seed, len, err, sizeof(err)) : NULL;
    ok(c != NULL, "seed README example (with comments) parses: %s", c ? "ok" : err);
    if (c != NULL) {
        const struct config_model *m = config_find(c, "general-model-name-for-client");
        ok(m != NULL && m->nbackends == 2, "seed: one model, two backends");
        ok(m && m->strategy == CONFIG_FAILOVER, "seed: Failover");
        ok(m && m->backends[0].nkeys == 2 &&
               strcmp(m->backends[0].keys[1], "key2_for_provider1") == 0,
           "seed: keys kept in order");
        ok(m && strcmp(m->backends[0].model_name, "provider1-specific-model-name") == 0,
           "seed: BackendModelName");
        ok(m && m->backends[1].model_name == NULL, "seed: null BackendModelName");
        ok(m && strcmp(m->backends[1].base_url, "https://api.provider2.com/v1beta") == 0,
           "seed: BaseUrl");
        ok(m && m->backends[0].timeout_ms == CONFIG_DEFAULT_TIMEOUT_S * 1000,
           "seed: default timeout");
        ok(config_find(c, "General-model-name-for-client") == NULL, "lookup is case-sensitive");
    }
    config_free(c);

    c = parse("{\"Models\":{\"b\":{\"Strategy\":\"roundrobin\",\"Backends\":[{\"Name\":\"x\","
              "\"BaseUrl\":\"http://h:1/v1/\",\"Weight\":5,\"Enabled\":false,\"TimeoutSeconds\":"
              "2.5,\"Extra\":{\"kept\":1}}]},\"a\":{\"Strategy\":2,\"Backends\":[{\"Name\":\"y\","
              "\"BaseUrl\":\"https://h\",\"ApiKeys\":[\"\",\"k\"]}]}}}",
              err, sizeof(err));
    ok(c != NULL, "options parse: %s", c ? "ok" : err);
    if (c != NULL) {
        ok(c->nmodels == 2 && strcmp(c->models[0].name, "a") == 0, "models sorted by name");
        const struct config_model *b = config_find(c, "b");
        ok(b && b->strategy == CONFIG_ROUND_ROBIN, "strategy names are case-insensitive");
        ok(b && strcmp(b->backends[0].base_url, "http://h:1/v1") == 0, "trailing slash dropped");
        ok(b && b->backends[0].weight == 5 && !b->backends[0].enabled, "weight and enabled");
        ok(b && b->backends[0].timeout_ms == 2500, "fractional timeout");
        const struct config_model *a = config_find(c, "a");
        ok(a && a->strategy == CONFIG_WEIGHTED, "numeric strategy (the original's enum)");
        ok(a && a->backends[0].nkeys == 1, "empty keys skipped");
    }
    config_free(c);

    expect_error("", "not a JSON object", "empty file");
    expect_error("{\"Models\":[]}", "\"Models\" must be an object", "Models not an object");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[]}}}", "1 to 64 backends", "no backends");
    expect_error("{\"Models\":{\"m\":{\"Strategy\":\"Random\",\"Backends\":[{\"Name\":\"a\","
                 "\"BaseUrl\":\"http://h\"}]}}}",
                 "Strategy must be", "unknown strategy");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"ftp://h\"}]}}}",
                 "BaseUrl", "non-http URL");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://\"}]}}}",
                 "BaseUrl", "URL without host");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\"},"
                 "{\"Name\":\"a\",\"BaseUrl\":\"http://h\"}]}}}",
                 "used twice", "duplicate backend names");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"Weight\":0}]}}}",
                 "Weight", "weight 0");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"Weight\":1.5}]}}}",
                 "Weight", "fractional weight");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"Weight\":1e300}]}}}",
                 "Weight", "huge weight");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"TimeoutSeconds\":0}]}}}",
                 "TimeoutSeconds", "zero timeout");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"ApiKeys\":[\"k\\r\\nX-Evil: 1\"]}]}}}",
                 "ApiKeys[0]", "CR/LF in a key");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
                 "\"ApiKeys\":[\"sk-secret\",5]}]}}}",
                 "ApiKeys[1]", "non-string key");
    expect_error(
        "{\"Models\":{\"../etc\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\"}]}}}",
        "invalid", "model name with ..");
    expect_error(
        "{\"Models\":{\"a b\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\"}]}}}",
        "invalid", "model name with a space");
    expect_error("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\"}]},"
                 "\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\"}]}}}",
                 "defined twice", "duplicate model");
    /* errors never quote keys */
    err[0] = '\0';
    c = parse("{\"Models\":{\"m\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h\","
              "\"ApiKeys\":[\"sk-topsecret\\n\"]}]}}}",
              err, sizeof(err));
    ok(c == NULL && strstr(err, "sk-topsecret") == NULL, "error message does not echo a key");
    config_free(c);

    ok(config_model_name_ok("gpt-4o") && config_model_name_ok("org/model:free@v1.2_x"),
       "model name charset");
    ok(!config_model_name_ok("") && !config_model_name_ok("a..b") && !config_model_name_ok("a\nb"),
       "bad model names");
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ok(!config_model_name_ok(longname), "model name over 256 characters");
    /* Fallbacks: configured models, never back to the same, no cycles */
    {
        const char *b = "{\"Name\":\"a\",\"BaseUrl\":\"http://x/v1\"}";
        char j[2048];
        snprintf(j, sizeof(j),
                 "{\"Models\":{\"m1\":{\"Fallbacks\":[\"m2\",\"m3\"],\"Backends\":[%s]},"
                 "\"m2\":{\"Fallbacks\":[\"m3\"],\"Backends\":[%s]},\"m3\":{\"Backends\":[%s]}}}",
                 b, b, b);
        struct config *fc = parse(j, err, sizeof(err));
        const struct config_model *m1 = fc ? config_find(fc, "m1") : NULL;
        ok(m1 && m1->nfallbacks == 2 && strcmp(m1->fallbacks[1], "m3") == 0,
           "Fallbacks parsed in order: %s", fc ? "" : err);
        config_free(fc);
        const char *bad[][2] = {
            {"{\"Models\":{\"m1\":{\"Fallbacks\":[\"nope\"],\"Backends\":[B]}}}", "not configured"},
            {"{\"Models\":{\"m1\":{\"Fallbacks\":[\"m1\"],\"Backends\":[B]}}}", "another model"},
            {"{\"Models\":{\"m1\":{\"Fallbacks\":\"m2\",\"Backends\":[B]},\"m2\":{\"Backends\":[B]}"
             "}}",
             "must be an array"},
            {"{\"Models\":{\"m1\":{\"Fallbacks\":[\"m2\",\"m2\"],\"Backends\":[B]},"
             "\"m2\":{\"Backends\":[B]}}}",
             "twice"},
            {"{\"Models\":{\"m1\":{\"Fallbacks\":[\"m2\"],\"Backends\":[B]},"
             "\"m2\":{\"Fallbacks\":[\"m3\"],\"Backends\":[B]},"
             "\"m3\":{\"Fallbacks\":[\"m1\"],\"Backends\":[B]}}}",
             "cycle"},
        };
        /* a chain longer than CONFIG_MAX_CHAIN is refused (and bounds the walk) */
        struct buf lj;
        buf_init(&lj, 1 << 20);
        buf_append_str(&lj, "{\"Models\":{");
        for (int k = 0; k <= CONFIG_MAX_CHAIN + 1; k++) {
            buf_printf(&lj, "%s\"c%d\":{", k ? "," : "", k);
            if (k <= CONFIG_MAX_CHAIN) {
                buf_printf(&lj, "\"Fallbacks\":[\"c%d\"],", k + 1);
            }
            buf_printf(&lj, "\"Backends\":[%s]}", b);
        }
        buf_append(&lj, "}}", 3);
        fc = parse(lj.data, err, sizeof(err));
        ok(fc == NULL && strstr(err, "chain of Fallbacks longer") != NULL, "a chain too long: %s",
           err);
        config_free(fc);
        buf_cleanup(&lj);
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            char doc[2048], *o = doc;
            for (const char *p = bad[i][0]; *p && o < doc + sizeof(doc) - 64; p++) {
                if (*p == 'B' && p[1] == ']') {
                    o += snprintf(o, 64, "%s", b);
                } else {
                    *o++ = *p;
                }
            }
            *o = '\0';
            err[0] = '\0';
            fc = parse(doc, err, sizeof(err));
            ok(fc == NULL && strstr(err, bad[i][1]) != NULL, "Fallbacks refused: %s (%s)",
               bad[i][1], err);
            config_free(fc);
        }
    }
    config_free(NULL);
    ok(1, "config_free(NULL) is a no-op");
    return tap_done();
}
