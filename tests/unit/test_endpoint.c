/* test_endpoint.c - unit tests of endpoint.c: the endpoint table */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/endpoint.c"
#include "tap.h"

int main(void)
{
    const struct endpoint *ep = endpoint_find("/v1/chat/completions");
    ok(ep && ep->kind == EP_ROUTED && strcmp(ep->upstream_path, "/chat/completions") == 0 &&
           ep->body == EP_BODY_JSON && ep->stream == EP_STREAM_CHAT_SSE,
       "chat completions: routed JSON, chat SSE");
    ep = endpoint_find("/v1/completions");
    ok(ep && strcmp(ep->upstream_path, "/completions") == 0, "legacy completions");
    ep = endpoint_find("/v1/embeddings");
    ok(ep && ep->stream == EP_STREAM_NONE, "embeddings never stream");
    ok(endpoint_find("/v1/chat/completions/") == NULL && endpoint_find("/v1/chat") == NULL &&
           endpoint_find("/v2/chat/completions") == NULL,
       "exact paths only");
    ep = endpoint_find("/v1/models/org/m2");
    ok(ep && ep->kind == EP_MODELS && ep->prefix, "a model by id");
    ok(endpoint_find("/v1/models/") == NULL, "no id: no endpoint");
    ep = endpoint_find("/health");
    ok(ep && ep->kind == EP_HEALTH && endpoint_method_ok(ep, "GET") &&
           endpoint_method_ok(ep, "HEAD") && !endpoint_method_ok(ep, "POST"),
       "health: GET and HEAD");
    ep = endpoint_find("/v1/chat/completions");
    ok(endpoint_method_ok(ep, "POST") && !endpoint_method_ok(ep, "GET") &&
           strcmp(ep->allow, "POST") == 0,
       "completions: POST only, Allow says so");
    return tap_done();
}
