/* reply.h - our own JSON answers to the client, errors in the OpenAI or Anthropic shape */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_REPLY_H
#define LLMPROXY_REPLY_H

#include "buf.h"

#include <stddef.h>

struct conn;

/* Writes a complete JSON answer (status, headers, body) and flushes it.
 * extra: more header lines, each ending in CRLF, or NULL. */
void reply_json(struct conn *c, int status, const char *json, size_t len, const char *extra);

/* Appends {"error":{"message","type","param","code"}} to b; param and code
 * may be NULL (JSON null). */
void reply_error_object(struct buf *b, const char *msg, const char *type, const char *param,
                        const char *code);

/* An error answer in that shape. */
void reply_error(struct conn *c, int status, const char *msg, const char *type, const char *param,
                 const char *code, const char *extra);

/* The Anthropic Messages API's error type for a status. */
const char *reply_anthropic_type(int status);
/* Appends {"type":"error","error":{"type","message"}} to b. */
void reply_anthropic_error_object(struct buf *b, const char *type, const char *msg);
/* An error answer in that shape, its type from the status. */
void reply_anthropic_error(struct conn *c, int status, const char *msg, const char *extra);

#endif
