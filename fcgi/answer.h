/* answer.h - what the responder answers itself: /health, /v1/models */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_ANSWER_H
#define LLMPROXY_ANSWER_H

#include <stddef.h>

struct conn;
struct endpoint;

/* Answers an endpoint of kind EP_HEALTH or EP_MODELS (only the models the
 * client key may use, when key is not NULL); returns the status. */
struct client_key;
int answer_local(struct conn *c, const struct endpoint *ep, const char *path,
                 const struct client_key *key);

#endif
