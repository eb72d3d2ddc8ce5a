/* policy.h - what each upstream outcome means: the next step and its health effect (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_POLICY_H
#define LLMPROXY_POLICY_H

#include "upstream.h"

/* The one place that decides what an attempt's outcome means. proxy.c turns
 * what happened (a status, a transport result, the first event) into an
 * outcome and does what its rule says; nothing else interprets outcomes. */
enum policy_outcome {
    /* before anything reached the client */
    PO_ANSWER = 0,   /* 2xx with a usable answer: relay it */
    PO_CLIENT_ERROR, /* 4xx the client caused (400 413 422 ...): relay it as it is */
    PO_KEY_REJECTED, /* 401 403: our key is bad or may not do this */
    PO_RATE_LIMITED, /* 429 */
    PO_NOT_HERE,     /* 404 409: this backend lacks the model or path */
    PO_SERVER_ERROR,
    /* 5xx, 408, and 1xx/3xx as a final answer */ PO_CONNECT, /* refused, DNS, TLS: the request
                                                                 never left */
    PO_NO_RESPONSE,
    /* the request left, then no answer (it may have been processed) */
    PO_TIMEOUT,     /* no connection, or no first byte, in time */
    PO_ERROR_EVENT, /* a 2xx stream whose first event is an error */
    PO_EMPTY,       /* a 2xx with an empty body, or an HTML page */
    /* after the answer was committed */
    PO_BROKEN,      /* the answer broke off */
    PO_IDLE,        /* no chunk within TimeoutSeconds */
    PO_TOO_LARGE,   /* past LLMPROXY_MAX_RESPONSE_BYTES */
    PO_SHUTDOWN,    /* still running when the drain after SIGTERM ran out */
    PO_CLIENT_GONE, /* the client left */
    PO_COUNT
};

enum policy_action {
    PA_RELAY,        /* send this answer to the client */
    PA_NEXT_KEY,     /* try the backend's next key, then the next backend */
    PA_NEXT_BACKEND, /* try the next backend */
    PA_END_ERROR,    /* committed: end the stream with an error event */
    PA_ABORT,        /* the client is gone: stop, send nothing */
};

enum policy_health {
    PH_NONE,             /* says nothing about the backend */
    PH_BACKEND_OK,       /* closes the backend's circuit */
    PH_BACKEND_FAILED,   /* counts toward opening it */
    PH_KEY_RATE_LIMITED, /* the key cools for its Retry-After (a keyless backend: circuit) */
    PH_KEY_REJECTED,     /* the key is taken out for HEALTH_REJECTED_MS, loudly */
};

/* How a failed attempt counts in the verdict when every attempt failed. */
enum policy_verdict {
    PV_OTHER,        /* 502 */
    PV_RATE_LIMITED, /* 429 when all were */
    PV_TIMEOUT,      /* 504 when all were */
};

struct policy_rule {
    enum policy_action action;
    enum policy_health health;
    enum policy_verdict verdict;
    const char *name; /* for the log line */
};

/* The rule of an outcome (never NULL for a valid outcome). */
const struct policy_rule *policy_rule(enum policy_outcome o);

/* The outcome of a final status, judged before the body: PO_ANSWER for
 * 2xx (the body may still turn it into PO_EMPTY or PO_ERROR_EVENT). */
enum policy_outcome policy_status(int status);

/* The outcome of a transfer that failed before its answer was committed. */
enum policy_outcome policy_transport(enum upstream_result r);

#endif
