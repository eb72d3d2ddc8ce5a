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
    ep = endpoint_find("/v1/responses");
    ok(ep && ep->kind == EP_ROUTED && ep->stream == EP_STREAM_RESPONSES, "responses: routed");
    ep = endpoint_find("/v1/responses/resp_1");
    ok(ep && ep->kind == EP_AFFINITY && endpoint_method_ok(ep, "GET") &&
           endpoint_method_ok(ep, "DELETE") && endpoint_method_ok(ep, "HEAD") &&
           !endpoint_method_ok(ep, "POST") && !endpoint_method_ok(ep, "DEL"),
       "a response by id: GET, HEAD, DELETE");
    size_t n;
    size_t off = endpoint_id(ep, "/v1/responses/resp_1", &n);
    ok(off == 14 && n == 6, "its id");
    ep = endpoint_find("/v1/responses/resp_1/cancel");
    ok(ep && ep->kind == EP_AFFINITY && endpoint_method_ok(ep, "POST"), "cancel: POST");
    ep = endpoint_find("/v1/responses/resp_1/input_items");
    ok(ep && ep->kind == EP_AFFINITY && endpoint_method_ok(ep, "GET"), "input items: GET");
    ok(endpoint_find("/v1/responses/a/b") == NULL && endpoint_find("/v1/responses/a%20b") == NULL &&
           endpoint_find("/v1/responses/") == NULL &&
           endpoint_find("/v1/responses/x/cancel/") == NULL,
       "other paths under /v1/responses/ are not endpoints");
    ep = endpoint_find("/v1/messages");
    ok(ep && ep->api == CONFIG_API_ANTHROPIC && ep->errors == EP_ERRORS_ANTHROPIC &&
           ep->stream == EP_STREAM_ANTHROPIC,
       "messages: Anthropic backends, errors and stream");
    ep = endpoint_find("/v1/messages/count_tokens");
    ok(ep && ep->api == CONFIG_API_ANTHROPIC && ep->answer == EP_ANSWER_JSON,
       "count_tokens: Anthropic, not priced");
    for (const char *const *p =
             (const char *const[]){"/v1/audio/transcriptions", "/v1/audio/translations",
                                   "/v1/images/edits", "/v1/images/variations", NULL};
         *p != NULL; p++) {
        ep = endpoint_find(*p);
        ok(ep && ep->body == EP_BODY_MULTIPART && ep->api == CONFIG_API_OPENAI, "%s: multipart",
           *p);
    }
    return tap_done();
}
