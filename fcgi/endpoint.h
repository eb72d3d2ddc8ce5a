/* endpoint.h - the client endpoints: one table row each (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ENDPOINT_H
#define LLMPROXY_ENDPOINT_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

enum endpoint_kind {
    EP_ROUTED, /* routed by the body's model to a backend */
    EP_HEALTH, /* GET /health, answered here */
    EP_MODELS, /* GET /v1/models and /v1/models/{id}, answered here */
    /* a response made through llmproxy, by its id: GET/DELETE /v1/responses/{id},
     * .../cancel, .../input_items go to the backend and key that made it */
    EP_AFFINITY,
};

enum endpoint_body {
    EP_BODY_NONE,
    EP_BODY_JSON,      /* a JSON object with a top-level "model" */
    EP_BODY_MULTIPART, /* multipart/form-data with a "model" part */
};

/* The format of a streamed answer, which decides how its first event is
 * judged and how a broken stream ends. */
enum endpoint_stream {
    EP_STREAM_NONE,     /* no format of its own: a stream, if any, is judged as chat's */
    EP_STREAM_CHAT_SSE, /* OpenAI chat and legacy completions: data: {...}, [DONE] */
    /* OpenAI Responses: typed events; response.created and response.in_progress
     * are held with the first one after them, which decides */
    EP_STREAM_RESPONSES,
    EP_STREAM_ANTHROPIC, /* Anthropic Messages: message_start, ..., message_stop */
};

/* What an answer is made of, which decides how its usage is read. */
enum endpoint_answer {
    EP_ANSWER_TOKENS, /* JSON or chat SSE priced in tokens: read, else estimated */
    EP_ANSWER_JSON,   /* JSON whose usage, if any, is read; never estimated */
    EP_ANSWER_BINARY, /* bytes (audio): passed on as they come, not read */
};

enum endpoint_errors {
    EP_ERRORS_OPENAI,    /* {"error":{"message","type","param","code"}} */
    EP_ERRORS_ANTHROPIC, /* {"type":"error","error":{"type","message"}} */
};

struct endpoint {
    const char *path; /* as the client sends it */
    bool prefix;      /* path is a prefix (ends in '/'): /v1/models/{id} */
    /* with prefix: what the path ends in after an id of [A-Za-z0-9_.-]
     * ("" for none); NULL: anything may follow the prefix */
    const char *suffix;
    enum endpoint_kind kind;
    const char *method;        /* the methods it answers, by spaces; others get 405 */
    const char *allow;         /* the Allow header of that 405 */
    const char *upstream_path; /* appended to a backend's BaseUrl (NULL: the path without /v1) */
    enum endpoint_body body;
    enum endpoint_stream stream;
    enum endpoint_errors errors;
    bool guarded; /* served only to clients with a key (or, while none exists, local ones) */
    enum endpoint_answer answer;
    enum config_api api; /* the backends that serve it */
};

/* The endpoint of a path (without query), NULL when there is none. */
const struct endpoint *endpoint_find(const char *path);
/* Whether the method is one the endpoint answers (HEAD with GET). */
bool endpoint_method_ok(const struct endpoint *ep, const char *method);
/* The id in the path of a prefix endpoint with a suffix: its offset and length. */
size_t endpoint_id(const struct endpoint *ep, const char *path, size_t *len);

#endif
