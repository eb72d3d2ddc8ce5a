/* endpoint.c - the client endpoints: one table row each (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "endpoint.h"

#include <string.h>

/* Keep in sync with the README's "Endpoints" table. */
static const struct endpoint table[] = {
    {"/v1/chat/completions", false, EP_ROUTED, "POST", "POST", "/chat/completions", EP_BODY_JSON,
     EP_STREAM_CHAT_SSE, EP_ERRORS_OPENAI, true, EP_ANSWER_TOKENS},
    {"/v1/completions", false, EP_ROUTED, "POST", "POST", "/completions", EP_BODY_JSON,
     EP_STREAM_CHAT_SSE, EP_ERRORS_OPENAI, true, EP_ANSWER_TOKENS},
    {"/v1/embeddings", false, EP_ROUTED, "POST", "POST", "/embeddings", EP_BODY_JSON,
     EP_STREAM_NONE, EP_ERRORS_OPENAI, true, EP_ANSWER_TOKENS},
    {"/v1/moderations", false, EP_ROUTED, "POST", "POST", "/moderations", EP_BODY_JSON,
     EP_STREAM_NONE, EP_ERRORS_OPENAI, true, EP_ANSWER_JSON},
    {"/v1/rerank", false, EP_ROUTED, "POST", "POST", "/rerank", EP_BODY_JSON, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, true, EP_ANSWER_JSON},
    {"/v1/images/generations", false, EP_ROUTED, "POST", "POST", "/images/generations",
     EP_BODY_JSON, EP_STREAM_NONE, EP_ERRORS_OPENAI, true, EP_ANSWER_JSON},
    {"/v1/audio/speech", false, EP_ROUTED, "POST", "POST", "/audio/speech", EP_BODY_JSON,
     EP_STREAM_NONE, EP_ERRORS_OPENAI, true, EP_ANSWER_BINARY},
    {"/v1/models", false, EP_MODELS, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, true, EP_ANSWER_JSON},
    {"/v1/models/", true, EP_MODELS, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, true, EP_ANSWER_JSON},
    {"/health", false, EP_HEALTH, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, false, EP_ANSWER_JSON},
};

const struct endpoint *endpoint_find(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(table); i++) {
        const struct endpoint *ep = &table[i];
        size_t n = strlen(ep->path);
        if (ep->prefix ? strncmp(path, ep->path, n) == 0 && path[n] != '\0'
                       : strcmp(path, ep->path) == 0) {
            return ep;
        }
    }
    return NULL;
}

bool endpoint_method_ok(const struct endpoint *ep, const char *method)
{
    return strcmp(method, ep->method) == 0 ||
           (strcmp(ep->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}
