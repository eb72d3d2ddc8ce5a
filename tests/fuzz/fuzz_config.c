/* fuzz_config.c - libFuzzer harness: the routing file loader and route preparation */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "config.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct config *cfg = config_parse((const char *)data, size, err, sizeof(err));
    if (cfg == NULL) {
        return 0;
    }
    uint8_t order[CONFIG_MAX_BACKENDS];
    for (size_t i = 0; i < cfg->nmodels; i++) {
        struct config_model *m = &cfg->models[i];
        route_prepare(m);
        size_t n = route_order(m, (uint64_t)size * 7919u, order, sizeof(order));
        if (n != route_enabled(m)) {
            __builtin_trap();
        }
        for (size_t k = 0; k < n; k++) {
            if (order[k] >= m->nbackends || !m->backends[order[k]].enabled) {
                __builtin_trap();
            }
        }
        if (config_find(cfg, m->name) != m) {
            __builtin_trap();
        }
    }
    config_free(cfg);
    return 0;
}
