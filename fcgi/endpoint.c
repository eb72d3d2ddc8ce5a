/* endpoint.c - the client endpoints: one table row each (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "endpoint.h"

#include <string.h>

/* Keep in sync with the README's "Endpoints" table. */
static const struct endpoint table[] = {
    {"/v1/chat/completions", false, EP_ROUTED, "POST", "POST", "/chat/completions", EP_BODY_JSON,
     EP_STREAM_CHAT_SSE, EP_ERRORS_OPENAI, true},
    {"/v1/completions", false, EP_ROUTED, "POST", "POST", "/completions", EP_BODY_JSON,
     EP_STREAM_CHAT_SSE, EP_ERRORS_OPENAI, true},
    {"/v1/embeddings", false, EP_ROUTED, "POST", "POST", "/embeddings", EP_BODY_JSON,
     EP_STREAM_NONE, EP_ERRORS_OPENAI, true},
    {"/v1/models", false, EP_MODELS, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, true},
    {"/v1/models/", true, EP_MODELS, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, true},
    {"/health", false, EP_HEALTH, "GET", "GET, HEAD", NULL, EP_BODY_NONE, EP_STREAM_NONE,
     EP_ERRORS_OPENAI, false},
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
