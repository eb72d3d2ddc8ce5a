/* keys.h - client keys: the keys file, validation, lookup by hash (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_KEYS_H
#define LLMPROXY_KEYS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* STATE_DIR/client_keys.json: {"Keys": [{"Id", "Name", "Hash" (SHA-256 of
 * the key, hex), "Prefix" (its first 12 characters), "Models", "Rpm",
 * "Tpm", "BudgetUsd", "BudgetTokens", "BudgetPeriod", "ExpiresAt",
 * "Enabled", "CreatedAt"}]}. The key itself is shown once, when it is made,
 * and never stored. While the file has no key, llmproxy is in keyless mode. */
#define KEYS_FILE "client_keys.json"
#define KEYS_PREFIX "sk-llmp-"
#define KEYS_SECRET_CHARS 40 /* base62 after the prefix */
#define KEYS_MAX 10000
#define KEYS_NAME_MAX 64

enum key_period { KEY_PERIOD_DAY, KEY_PERIOD_MONTH, KEY_PERIOD_TOTAL };

struct client_key {
    char id[24];
    char name[4 * KEYS_NAME_MAX + 1];
    char hash[65];
    char prefix[16];
    char **models; /* nmodels names; none: every model */
    size_t nmodels;
    uint32_t rpm;          /* 0: no limit */
    uint32_t tpm;          /* 0: no limit */
    double budget_usd;     /* < 0: none */
    int64_t budget_tokens; /* < 0: none */
    enum key_period period;
    int64_t expires_at; /* seconds; 0: never */
    bool enabled;
    int64_t created_at;
};

struct keyring {
    struct client_key *keys; /* file order */
    size_t n;
    size_t *by_hash; /* indexes sorted by hash */
};

/* Parses and checks a keys file. NULL with a message on failure. */
struct keyring *keys_parse(const char *json, size_t len, char *err, size_t errlen);
void keys_free(struct keyring *r);

/* The key a client presented (the whole secret), NULL when unknown. */
const struct client_key *keys_find(const struct keyring *r, const char *secret);
bool keys_model_ok(const struct client_key *k, const char *model);

/* Admin side: applies the fields of a posted object to a stored one (a new
 * one when create). all: the stored keys, for the unique Name. 0, or -1
 * with a message naming the field. Read-only fields (Id, Prefix,
 * CreatedAt, LastUsedAt, Usage) are ignored; Key and Hash refused. */
int keys_apply(cJSON *stored, const cJSON *posted, bool create, const cJSON *all, char *err,
               size_t errlen);

/* A new secret "sk-llmp-..." (at least 49 bytes), its id (at least 20
 * bytes), its hash and prefix into the stored object. 0 or -1. */
int keys_make_secret(cJSON *stored, char *secret, size_t n);

/* The current budget period: its start (seconds), its end, and a stable name
 * ("d2026-12-01", "m2026-12", "total") for the shared counters. */
int64_t keys_period_start(enum key_period p, int64_t now);
/* When the period holding now ends (seconds); 0 for "total", which never does. */
int64_t keys_period_end(enum key_period p, int64_t now);
void keys_period_name(enum key_period p, int64_t now, char *out, size_t n);
const char *keys_period_word(enum key_period p);

/* A key's counters in the shared state (state.h, STATE_NS_CLIENT, named by
 * the key's Id and one of these): */
#define KEYS_SLOT_USE "use" /* [0] last use, wall-clock ms */
#define KEYS_SLOT_RPM "rpm" /* [0] the request bucket (limit.h) */
#define KEYS_SLOT_TPM "tpm" /* [0] the token bucket */
/* and by the Id and keys_period_name: the period's spend, so far */
enum {
    KEYS_W_REQUESTS = 0,
    KEYS_W_PROMPT = 1,
    KEYS_W_COMPLETION = 2,
    KEYS_W_COST_MICRO = 3, /* USD x 10^6 */
    KEYS_W_LOADED = 4,     /* 1 once the spend in usage.db was added; 0 not yet; else loading */
};

#endif
