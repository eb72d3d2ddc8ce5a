/* config.h - dynamic_routing.json <-> structs, validation */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_CONFIG_H
#define LLMPROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_strategy {
    CONFIG_FAILOVER = 0,
    CONFIG_ROUND_ROBIN = 1,
    CONFIG_WEIGHTED = 2,
};

/* The API a backend speaks ("Api"): which client endpoints it serves. */
enum config_api {
    CONFIG_API_OPENAI = 0,    /* "openai" (the default): every endpoint but /v1/messages */
    CONFIG_API_ANTHROPIC = 1, /* "anthropic": /v1/messages and /v1/messages/count_tokens */
};

/* Limits enforced by config_parse (and so by everything that writes the file). */
#define CONFIG_MAX_MODEL_NAME 256
#define CONFIG_MAX_BACKENDS 64
/* Models a model may fall back to (its "Fallbacks"), and the longest chain
 * that following theirs in turn may give. */
#define CONFIG_MAX_FALLBACKS 8
#define CONFIG_MAX_CHAIN 16
#define CONFIG_MAX_KEYS 256
#define CONFIG_MAX_WEIGHT 1000
#define CONFIG_MAX_TIMEOUT_S 3600
#define CONFIG_MAX_STRING 4096
/* Default time allowed to the first byte of the upstream's answer. */
#define CONFIG_DEFAULT_TIMEOUT_S 120

struct config_backend {
    char *name;
    char *base_url; /* without a trailing '/' */
    char **keys;    /* nkeys strings; may be 0 (no Authorization sent) */
    size_t nkeys;
    char *model_name; /* BackendModelName, NULL when not set */
    unsigned weight;  /* 1..CONFIG_MAX_WEIGHT */
    bool enabled;
    unsigned timeout_ms; /* first-byte deadline */
    /* USD per million tokens (InputCostPerMTok, OutputCostPerMTok,
     * CachedInputCostPerMTok); < 0: not set */
    double input_cost, output_cost, cached_cost;
    bool stream_usage; /* StreamUsage (default true): ask streams for their usage */
    enum config_api api;
};

/* The cost of an answer in micro-USD from the backend's prices. */
uint64_t config_cost_micro(const struct config_backend *b, uint64_t prompt, uint64_t completion,
                           uint64_t cached);

struct config_model {
    char *name;
    enum config_strategy strategy;
    struct config_backend *backends;
    size_t nbackends;
    /* "Fallbacks": models tried, in order, when every attempt for this one
     * failed; each is configured, and they never lead back here (checked) */
    char **fallbacks;
    size_t nfallbacks;
    /* Filled by route_prepare(): the smooth weighted round robin sequence
     * over enabled backends (indexes into backends), freed by config_free. */
    uint8_t *wseq;
    size_t wseq_len;
};

struct config {
    struct config_model *models; /* sorted by name (byte order) */
    size_t nmodels;
};

/* Parse and validate a routing file. JSON comments are allowed (the original's
 * README example carries them). On success returns a config the caller frees
 * with config_free(); on failure returns NULL and writes a message (which never
 * contains a key) to err. */
struct config *config_parse(const char *json, size_t len, char *err, size_t errlen);
void config_free(struct config *cfg);

/* Exact, case-sensitive lookup; NULL when absent. */
const struct config_model *config_find(const struct config *cfg, const char *name);

/* Model names: [A-Za-z0-9._:/@-]{1,256}, never containing "..". */
bool config_model_name_ok(const char *name);

const char *config_strategy_name(enum config_strategy s);
const char *config_api_name(enum config_api a);

/* Masked form of an API key, as the admin API shows it: CONFIG_MASK_PREFIX
 * and, for keys of at least CONFIG_MASK_MIN_LEN characters, their last 4.
 * Writes at most n bytes (n >= 9) to out. */
#define CONFIG_MASK_PREFIX "****"
#define CONFIG_MASK_MIN_LEN 12
void config_mask_key(const char *key, char *out, size_t n);
/* True when s has the masked form (it cannot then be a real key). */
bool config_is_masked(const char *s);

#endif
