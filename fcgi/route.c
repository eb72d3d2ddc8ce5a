/* route.c - attempt order per strategy and key rotation (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "route.h"

#include <stdlib.h>

static unsigned gcd(unsigned a, unsigned b)
{
    while (b != 0) {
        unsigned t = a % b;
        a = b;
        b = t;
    }
    return a;
}

size_t route_enabled(const struct config_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nbackends; i++) {
        n += m->backends[i].enabled;
    }
    return n;
}

size_t route_enabled_api(const struct config_model *m, enum config_api api)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nbackends; i++) {
        n += m->backends[i].enabled && m->backends[i].api == api;
    }
    return n;
}

bool route_uses_ticket(const struct config_model *m)
{
    return m->strategy != CONFIG_FAILOVER && route_enabled(m) > 1;
}

bool route_wants_ticket(const struct config_model *m)
{
    if (route_uses_ticket(m)) {
        return true;
    }
    for (size_t i = 0; i < m->nbackends; i++) {
        if (m->backends[i].enabled && m->backends[i].nkeys > 1) {
            return true;
        }
    }
    return false;
}

uint64_t route_key_counter(const struct config_model *m, size_t bi, uint64_t ticket)
{
    size_t n = route_enabled(m);
    if (m->strategy == CONFIG_ROUND_ROBIN && n > 1) {
        return ticket / n;
    }
    if (m->strategy == CONFIG_WEIGHTED && m->wseq_len > 0) {
        uint64_t per = 0, before = 0, r = ticket % m->wseq_len;
        for (size_t i = 0; i < m->wseq_len; i++) {
            if (m->wseq[i] == bi) {
                per++;
                before += i < r;
            }
        }
        return ticket / m->wseq_len * per + before;
    }
    return ticket;
}

void route_prepare(struct config_model *m)
{
    free(m->wseq);
    m->wseq = NULL;
    m->wseq_len = 0;
    if (m->strategy != CONFIG_WEIGHTED || route_enabled(m) == 0) {
        return;
    }
    unsigned g = 0;
    for (size_t i = 0; i < m->nbackends; i++) {
        if (m->backends[i].enabled) {
            g = gcd(g, m->backends[i].weight);
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < m->nbackends; i++) {
        if (m->backends[i].enabled) {
            total += m->backends[i].weight / g;
        }
    }
    /* Smooth weighted round robin (as in nginx): every step each backend
     * gains its weight, the largest is picked and loses the total. Over
     * `total` steps each is picked exactly weight times, evenly spread. */
    long current[CONFIG_MAX_BACKENDS] = {0};
    m->wseq = xmalloc(total);
    m->wseq_len = total;
    for (size_t step = 0; step < total; step++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < m->nbackends; i++) {
            if (!m->backends[i].enabled) {
                continue;
            }
            current[i] += (long)(m->backends[i].weight / g);
            if (best == SIZE_MAX || current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= (long)total;
        m->wseq[step] = (uint8_t)best;
    }
}

size_t route_order(const struct config_model *m, uint64_t ticket, uint8_t *order, size_t max)
{
    uint8_t enabled[CONFIG_MAX_BACKENDS];
    size_t n = 0;
    for (size_t i = 0; i < m->nbackends; i++) {
        if (m->backends[i].enabled) {
            enabled[n++] = (uint8_t)i;
        }
    }
    if (n > max) {
        n = max;
    }
    if (n == 0) {
        return 0;
    }
    size_t out = 0;
    switch (m->strategy) {
    case CONFIG_FAILOVER:
        for (size_t i = 0; i < n; i++) {
            order[out++] = enabled[i];
        }
        break;
    case CONFIG_ROUND_ROBIN: {
        size_t start = (size_t)(ticket % n);
        for (size_t i = 0; i < n; i++) {
            order[out++] = enabled[(start + i) % n];
        }
        break;
    }
    case CONFIG_WEIGHTED: {
        uint8_t first = m->wseq_len ? m->wseq[ticket % m->wseq_len] : enabled[0];
        order[out++] = first;
        /* fallbacks: heavier first, then configuration order */
        bool used[CONFIG_MAX_BACKENDS] = {false};
        used[first] = true;
        while (out < n) {
            size_t best = SIZE_MAX;
            for (size_t i = 0; i < n; i++) {
                uint8_t b = enabled[i];
                if (!used[b] &&
                    (best == SIZE_MAX || m->backends[b].weight > m->backends[best].weight)) {
                    best = b;
                }
            }
            used[best] = true;
            order[out++] = (uint8_t)best;
        }
        break;
    }
    }
    return out;
}

size_t route_key_index(const struct config_backend *b, uint64_t counter)
{
    return b->nkeys == 0 ? 0 : (size_t)(counter % b->nkeys);
}
