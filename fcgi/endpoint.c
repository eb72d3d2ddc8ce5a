/* endpoint.c - the client endpoints: one table row each (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "endpoint.h"

#include <string.h>

#define ROUTED(p, up, b, s, a)                                                                     \
    {                                                                                              \
        .path = (p), .kind = EP_ROUTED, .method = "POST", .allow = "POST", .upstream_path = (up),  \
        .body = (b), .stream = (s), .errors = EP_ERRORS_OPENAI, .guarded = true, .answer = (a),    \
        .api = CONFIG_API_OPENAI                                                                   \
    }
#define ANTHROPIC(p, up, s, a)                                                                     \
    {                                                                                              \
        .path = (p), .kind = EP_ROUTED, .method = "POST", .allow = "POST", .upstream_path = (up),  \
        .body = EP_BODY_JSON, .stream = (s), .errors = EP_ERRORS_ANTHROPIC, .guarded = true,       \
        .answer = (a), .api = CONFIG_API_ANTHROPIC                                                 \
    }
#define BY_ID(sfx, m, al)                                                                          \
    {                                                                                              \
        .path = "/v1/responses/", .prefix = true, .suffix = (sfx), .kind = EP_AFFINITY,            \
        .method = (m), .allow = (al), .body = EP_BODY_NONE, .stream = EP_STREAM_RESPONSES,         \
        .errors = EP_ERRORS_OPENAI, .guarded = true, .answer = EP_ANSWER_JSON,                     \
        .api = CONFIG_API_OPENAI                                                                   \
    }
#define LOCAL(p, pre, k, g)                                                                        \
    {                                                                                              \
        .path = (p), .prefix = (pre), .kind = (k), .method = "GET", .allow = "GET, HEAD",          \
        .errors = EP_ERRORS_OPENAI, .guarded = (g), .answer = EP_ANSWER_JSON                       \
    }

/* Keep in sync with the README's "Endpoints" table. */
static const struct endpoint table[] = {
    ROUTED("/v1/chat/completions", "/chat/completions", EP_BODY_JSON, EP_STREAM_CHAT_SSE,
           EP_ANSWER_TOKENS),
    ROUTED("/v1/completions", "/completions", EP_BODY_JSON, EP_STREAM_CHAT_SSE, EP_ANSWER_TOKENS),
    ROUTED("/v1/responses", "/responses", EP_BODY_JSON, EP_STREAM_RESPONSES, EP_ANSWER_TOKENS),
    ROUTED("/v1/embeddings", "/embeddings", EP_BODY_JSON, EP_STREAM_NONE, EP_ANSWER_TOKENS),
    ROUTED("/v1/moderations", "/moderations", EP_BODY_JSON, EP_STREAM_NONE, EP_ANSWER_JSON),
    ROUTED("/v1/rerank", "/rerank", EP_BODY_JSON, EP_STREAM_NONE, EP_ANSWER_JSON),
    ROUTED("/v1/images/generations", "/images/generations", EP_BODY_JSON, EP_STREAM_NONE,
           EP_ANSWER_JSON),
    ROUTED("/v1/audio/speech", "/audio/speech", EP_BODY_JSON, EP_STREAM_NONE, EP_ANSWER_BINARY),
    ROUTED("/v1/audio/transcriptions", "/audio/transcriptions", EP_BODY_MULTIPART, EP_STREAM_NONE,
           EP_ANSWER_JSON),
    ROUTED("/v1/audio/translations", "/audio/translations", EP_BODY_MULTIPART, EP_STREAM_NONE,
           EP_ANSWER_JSON),
    ROUTED("/v1/images/edits", "/images/edits", EP_BODY_MULTIPART, EP_STREAM_NONE, EP_ANSWER_JSON),
    ROUTED("/v1/images/variations", "/images/variations", EP_BODY_MULTIPART, EP_STREAM_NONE,
           EP_ANSWER_JSON),
    ANTHROPIC("/v1/messages", "/messages", EP_STREAM_ANTHROPIC, EP_ANSWER_TOKENS),
    ANTHROPIC("/v1/messages/count_tokens", "/messages/count_tokens", EP_STREAM_NONE,
              EP_ANSWER_JSON),
    BY_ID("", "GET DELETE", "GET, HEAD, DELETE"),
    BY_ID("/cancel", "POST", "POST"),
    BY_ID("/input_items", "GET", "GET, HEAD"),
    LOCAL("/v1/models", false, EP_MODELS, true),
    LOCAL("/v1/models/", true, EP_MODELS, true),
    LOCAL("/health", false, EP_HEALTH, false),
};

size_t endpoint_id(const struct endpoint *ep, const char *path, size_t *len)
{
    size_t off = strlen(ep->path);
    size_t n = 0;
    while (id_char(path[off + n])) {
        n++;
    }
    *len = n;
    return off;
}

static bool matches(const struct endpoint *ep, const char *path)
{
    size_t n = strlen(ep->path);
    if (!ep->prefix) {
        return strcmp(path, ep->path) == 0;
    }
    if (strncmp(path, ep->path, n) != 0 || path[n] == '\0') {
        return false;
    }
    if (ep->suffix == NULL) {
        return true;
    }
    size_t idlen;
    size_t off = endpoint_id(ep, path, &idlen);
    return idlen > 0 && idlen <= 256 && strcmp(path + off + idlen, ep->suffix) == 0;
}

const struct endpoint *endpoint_find(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(table); i++) {
        if (matches(&table[i], path)) {
            return &table[i];
        }
    }
    return NULL;
}

bool endpoint_method_ok(const struct endpoint *ep, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = ep->method; *p != '\0';) {
        size_t w = strcspn(p, " ");
        if ((w == n && strncmp(p, method, n) == 0) ||
            (w == 3 && strncmp(p, "GET", 3) == 0 && strcmp(method, "HEAD") == 0)) {
            return true;
        }
        p += w;
        p += *p == ' ';
    }
    return false;
}
