/* endpoint.h - the client endpoints: one table row each (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ENDPOINT_H
#define LLMPROXY_ENDPOINT_H

#include <stdbool.h>

enum endpoint_kind {
    EP_ROUTED, /* routed by the body's model to a backend */
    EP_HEALTH, /* GET /health, answered here */
    EP_MODELS, /* GET /v1/models and /v1/models/{id}, answered here */
};

enum endpoint_body {
    EP_BODY_NONE,
    EP_BODY_JSON, /* a JSON object with a top-level "model" */
};

/* The format of a streamed answer, which decides how its first event is
 * judged and how a broken stream ends. */
enum endpoint_stream {
    EP_STREAM_NONE,
    EP_STREAM_CHAT_SSE, /* OpenAI chat and legacy completions: data: {...}, [DONE] */
};

/* What an answer is made of, which decides how its usage is read. */
enum endpoint_answer {
    EP_ANSWER_TOKENS, /* JSON or chat SSE priced in tokens: read, else estimated */
    EP_ANSWER_JSON,   /* JSON whose usage, if any, is read; never estimated */
    EP_ANSWER_BINARY, /* bytes (audio): passed on as they come, not read */
};

enum endpoint_errors {
    EP_ERRORS_OPENAI, /* {"error":{"message","type","param","code"}} */
};

struct endpoint {
    const char *path; /* as the client sends it */
    bool prefix;      /* path is a prefix (ends in '/'): /v1/models/{id} */
    enum endpoint_kind kind;
    const char *method;        /* the method it answers; others get 405 */
    const char *allow;         /* the Allow header of that 405 */
    const char *upstream_path; /* appended to a backend's BaseUrl */
    enum endpoint_body body;
    enum endpoint_stream stream;
    enum endpoint_errors errors;
    bool guarded; /* served only to clients with a key (or, while none exists, local ones) */
    enum endpoint_answer answer;
};

/* The endpoint of a path (without query), NULL when there is none. */
const struct endpoint *endpoint_find(const char *path);
/* Whether the method is one the endpoint answers (HEAD with GET). */
bool endpoint_method_ok(const struct endpoint *ep, const char *method);

#endif
