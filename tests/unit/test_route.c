/* test_route.c - unit tests of route.c: order per strategy, proportions, rotation */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/route.c"
#include "config.h"
#include "tap.h"

#include <string.h>

static struct config *load(const char *json)
{
    char err[256];
    struct config *c = config_parse(json, strlen(json), err, sizeof(err));
    if (c == NULL) {
        printf("# parse: %s\n", err);
        return NULL;
    }
    for (size_t i = 0; i < c->nmodels; i++) {
        route_prepare(&c->models[i]);
    }
    return c;
}

int main(void)
{
    uint8_t order[CONFIG_MAX_BACKENDS];
    struct config *c = load(
        "{\"Models\":{"
        "\"f\":{\"Strategy\":\"Failover\",\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://a\"},"
        "{\"Name\":\"b\",\"BaseUrl\":\"http://b\",\"Enabled\":false},{\"Name\":\"c\",\"BaseUrl\":"
        "\"http://c\"}]},"
        "\"r\":{\"Strategy\":\"RoundRobin\",\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://"
        "a\"},"
        "{\"Name\":\"b\",\"BaseUrl\":\"http://b\"},{\"Name\":\"c\",\"BaseUrl\":\"http://c\"}]},"
        "\"w\":{\"Strategy\":\"Weighted\",\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://a\","
        "\"Weight\":5},{\"Name\":\"b\",\"BaseUrl\":\"http://b\",\"Weight\":1},{\"Name\":\"c\","
        "\"BaseUrl\":\"http://c\",\"Weight\":2,\"Enabled\":false},{\"Name\":\"d\",\"BaseUrl\":"
        "\"http://d\",\"Weight\":2}]},"
        "\"g\":{\"Strategy\":\"Weighted\",\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://a\","
        "\"Weight\":600},{\"Name\":\"b\",\"BaseUrl\":\"http://b\",\"Weight\":400}]},"
        "\"off\":{\"Strategy\":\"RoundRobin\",\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":"
        "\"http://a\",\"Enabled\":false}]},"
        "\"k\":{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://a\",\"ApiKeys\":[\"1\",\"2\","
        "\"3\"]}]}}}");
    ok(c != NULL, "routing config parses");
    if (c == NULL) {
        return tap_done();
    }
    const struct config_model *f = config_find(c, "f");
    size_t n = route_order(f, 12345, order, sizeof(order));
    ok(n == 2 && order[0] == 0 && order[1] == 2, "failover: enabled backends in order");
    ok(!route_uses_ticket(f), "failover needs no ticket");

    const struct config_model *r = config_find(c, "r");
    int first[3] = {0};
    for (uint64_t t = 0; t < 30; t++) {
        n = route_order(r, t, order, sizeof(order));
        first[order[0]]++;
        if (t < 3) {
            ok(n == 3 && order[0] == t && order[1] == (t + 1) % 3 && order[2] == (t + 2) % 3,
               "round robin ticket %u: starts at %u, then the rest in turn", (unsigned)t,
               (unsigned)t);
        }
    }
    ok(first[0] == 10 && first[1] == 10 && first[2] == 10, "round robin: exactly even");

    const struct config_model *w = config_find(c, "w");
    ok(w->wseq_len == 8, "weighted: sequence over the sum of enabled weights (5+1+2)");
    int counts[4] = {0};
    int run = 0, maxrun = 0, prev = -1;
    for (uint64_t t = 0; t < 800; t++) {
        n = route_order(w, t, order, sizeof(order));
        counts[order[0]]++;
        run = order[0] == prev ? run + 1 : 1;
        prev = order[0];
        maxrun = run > maxrun ? run : maxrun;
        if (t == 0) {
            ok(n == 3 && order[1] != order[0] && order[2] != order[0] && order[1] != 2 &&
                   order[2] != 2,
               "weighted: fallbacks are the other enabled backends");
        }
    }
    ok(counts[0] == 500 && counts[1] == 100 && counts[2] == 0 && counts[3] == 200,
       "weighted: exact proportions 5:1:2 over 800 (%d %d %d %d)", counts[0], counts[1], counts[2],
       counts[3]);
    ok(maxrun <= 3, "weighted: smooth, the heavy one never runs more than 3 in a row (%d)", maxrun);
    const struct config_model *g = config_find(c, "g");
    ok(g->wseq_len == 5, "weighted: weights reduced by their gcd (600:400 -> 3:2)");

    const struct config_model *off = config_find(c, "off");
    ok(route_order(off, 0, order, sizeof(order)) == 0 && route_enabled(off) == 0,
       "nothing enabled: empty order");

    const struct config_model *k = config_find(c, "k");
    int keys[3] = {0};
    for (uint64_t t = 0; t < 9; t++) {
        keys[route_key_index(&k->backends[0], t)]++;
    }
    ok(keys[0] == 3 && keys[1] == 3 && keys[2] == 3, "keys rotate evenly");
    ok(route_key_index(&k->backends[0], 4) == 1, "key index is counter mod keys");
    /* key rotation from the model's one ticket: a backend's counter counts
     * the requests it took first, so its keys turn exactly */
    const char *names[] = {"r", "w", "g"};
    for (size_t mi = 0; mi < ARRAY_LEN(names); mi++) {
        const struct config_model *m = config_find(c, names[mi]);
        uint64_t seen[CONFIG_MAX_BACKENDS] = {0};
        bool exact = m != NULL && route_wants_ticket(m);
        for (uint64_t t = 0; exact && t < 2000; t++) {
            route_order(m, t, order, ARRAY_LEN(order));
            exact = route_key_counter(m, order[0], t) == seen[order[0]]++;
        }
        ok(exact, "%s: a backend's key counter counts the tickets it went first", names[mi]);
    }
    const struct config_model *km = config_find(c, "k");
    ok(km != NULL && route_wants_ticket(km) && !route_uses_ticket(km),
       "one backend with 3 keys: a ticket, for its keys only");
    ok(km != NULL && route_key_counter(km, 0, 7) == 7 && route_key_index(&km->backends[0], 7) == 1,
       "failover: the ticket turns the keys");
    ok(!route_wants_ticket(config_find(c, "off")), "nothing enabled: no ticket");
    config_free(c);
    return tap_done();
}
