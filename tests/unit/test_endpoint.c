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
    for (const char *const *p =
             (const char *const[]){"/v1/moderations", "/v1/rerank", "/v1/images/generations", NULL};
         *p != NULL; p++) {
        ep = endpoint_find(*p);
        ok(ep && ep->kind == EP_ROUTED && ep->body == EP_BODY_JSON &&
               ep->stream == EP_STREAM_NONE && ep->answer == EP_ANSWER_JSON &&
               strcmp(ep->upstream_path, *p + 3) == 0,
           "%s: routed by model, JSON, its usage never estimated", *p);
    }
    ep = endpoint_find("/v1/audio/speech");
    ok(ep && ep->kind == EP_ROUTED && ep->answer == EP_ANSWER_BINARY,
       "audio speech: routed, a binary answer");
    ok(endpoint_find("/v1/chat/completions")->answer == EP_ANSWER_TOKENS,
       "chat usage is read, else estimated");
    return tap_done();
}
