/* policy.c - what each upstream outcome means: the next step and its health effect (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "policy.h"

/* Keep in sync with the README's "Routing, failover and streaming rules";
 * tests/unit/test_policy.c checks every row. */
static const struct policy_rule rules[PO_COUNT] = {
    [PO_ANSWER] = {PA_RELAY, PH_BACKEND_OK, PV_OTHER, "ok"},
    [PO_CLIENT_ERROR] = {PA_RELAY, PH_BACKEND_OK, PV_OTHER, "client_error"},
    [PO_KEY_REJECTED] = {PA_NEXT_KEY, PH_KEY_REJECTED, PV_OTHER, "key_rejected"},
    [PO_RATE_LIMITED] = {PA_NEXT_KEY, PH_KEY_RATE_LIMITED, PV_RATE_LIMITED, "rate_limited"},
    [PO_NOT_HERE] = {PA_NEXT_BACKEND, PH_NONE, PV_OTHER, "not_here"},
    [PO_SERVER_ERROR] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER, "server_error"},
    [PO_CONNECT] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER, "connect_error"},
    [PO_NO_RESPONSE] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER, "no_response"},
    [PO_TIMEOUT] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_TIMEOUT, "timeout"},
    [PO_ERROR_EVENT] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER, "error_event"},
    [PO_EMPTY] = {PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER, "empty_answer"},
    [PO_BROKEN] = {PA_END_ERROR, PH_BACKEND_FAILED, PV_OTHER, "broken"},
    [PO_IDLE] = {PA_END_ERROR, PH_BACKEND_FAILED, PV_OTHER, "idle_timeout"},
    [PO_TOO_LARGE] = {PA_END_ERROR, PH_NONE, PV_OTHER, "response_too_large"},
    [PO_SHUTDOWN] = {PA_END_ERROR, PH_NONE, PV_OTHER, "shutdown"},
    [PO_CLIENT_GONE] = {PA_ABORT, PH_NONE, PV_OTHER, "client_gone"},
};

const struct policy_rule *policy_rule(enum policy_outcome o)
{
    return (unsigned)o < PO_COUNT ? &rules[o] : &rules[PO_SERVER_ERROR];
}

enum policy_outcome policy_status(int status)
{
    if (status >= 200 && status < 300) {
        return PO_ANSWER;
    }
    switch (status) {
    case 401:
    case 403:
        return PO_KEY_REJECTED;
    case 429:
        return PO_RATE_LIMITED;
    case 404:
    case 409:
        return PO_NOT_HERE;
    case 408:
        return PO_SERVER_ERROR;
    default:
        break;
    }
    if (status >= 400 && status < 500) {
        return PO_CLIENT_ERROR;
    }
    /* 5xx, and 1xx/3xx that no API backend should send as a final answer */
    return PO_SERVER_ERROR;
}

enum policy_outcome policy_transport(enum upstream_result r)
{
    switch (r) {
    case UPSTREAM_CONNECT:
    case UPSTREAM_DNS:
    case UPSTREAM_TLS:
        return PO_CONNECT;
    case UPSTREAM_TIMEOUT:
        return PO_TIMEOUT; /* connecting took too long: a timeout for the verdict (504) */
    case UPSTREAM_NO_RESPONSE:
        return PO_NO_RESPONSE;
    case UPSTREAM_OK:
    case UPSTREAM_ABORTED:
    case UPSTREAM_BROKEN:
    case UPSTREAM_OTHER:
        break;
    }
    return PO_SERVER_ERROR;
}
