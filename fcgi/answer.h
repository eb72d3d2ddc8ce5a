/* answer.h - what the responder answers itself: /health, /v1/models; the request path */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ANSWER_H
#define LLMPROXY_ANSWER_H

#include <stddef.h>

struct conn;
struct endpoint;

/* The request's path without query or fragment (REQUEST_URI, else
 * SCRIPT_NAME + PATH_INFO), cut to n - 1 bytes. */
void answer_path(const struct conn *c, char *out, size_t n);

/* Answers an endpoint of kind EP_HEALTH or EP_MODELS; returns the status. */
int answer_local(struct conn *c, const struct endpoint *ep, const char *path);

#endif
