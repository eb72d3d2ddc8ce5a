/* answer.h - what the responder answers itself: /health, /v1/models */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ANSWER_H
#define LLMPROXY_ANSWER_H

#include <stddef.h>

struct conn;
struct endpoint;

/* Answers an endpoint of kind EP_HEALTH or EP_MODELS; returns the status. */
int answer_local(struct conn *c, const struct endpoint *ep, const char *path);

#endif
