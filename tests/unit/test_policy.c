/* test_policy.c - unit tests of policy.c: every outcome's rule, row by row */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/policy.c"
#include "tap.h"

struct row {
    enum policy_outcome o;
    enum policy_action action;
    enum policy_health health;
    enum policy_verdict verdict;
};

int main(void)
{
    /* the README's rules, written out once more: a changed row fails here */
    static const struct row rows[] = {
        {PO_ANSWER, PA_RELAY, PH_BACKEND_OK, PV_OTHER},
        {PO_CLIENT_ERROR, PA_RELAY, PH_BACKEND_OK, PV_OTHER},
        {PO_KEY_REJECTED, PA_NEXT_KEY, PH_KEY_REJECTED, PV_OTHER},
        {PO_RATE_LIMITED, PA_NEXT_KEY, PH_KEY_RATE_LIMITED, PV_RATE_LIMITED},
        {PO_NOT_HERE, PA_NEXT_BACKEND, PH_NONE, PV_OTHER},
        {PO_SERVER_ERROR, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER},
        {PO_CONNECT, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER},
        {PO_NO_RESPONSE, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER},
        {PO_TIMEOUT, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_TIMEOUT},
        {PO_ERROR_EVENT, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER},
        {PO_EMPTY, PA_NEXT_BACKEND, PH_BACKEND_FAILED, PV_OTHER},
        {PO_BROKEN, PA_END_ERROR, PH_BACKEND_FAILED, PV_OTHER},
        {PO_IDLE, PA_END_ERROR, PH_BACKEND_FAILED, PV_OTHER},
        {PO_TOO_LARGE, PA_END_ERROR, PH_NONE, PV_OTHER},
        {PO_SHUTDOWN, PA_END_ERROR, PH_NONE, PV_OTHER},
        {PO_CLIENT_GONE, PA_ABORT, PH_NONE, PV_OTHER},
    };
    ok(ARRAY_LEN(rows) == PO_COUNT, "every outcome has a row here");
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const struct policy_rule *r = policy_rule(rows[i].o);
        ok(r->action == rows[i].action && r->health == rows[i].health &&
               r->verdict == rows[i].verdict && r->name != NULL,
           "rule of %s", r->name ? r->name : "?");
    }
    static const struct {
        int status;
        enum policy_outcome o;
    } st[] = {{200, PO_ANSWER},       {204, PO_ANSWER},       {400, PO_CLIENT_ERROR},
              {413, PO_CLIENT_ERROR}, {422, PO_CLIENT_ERROR}, {418, PO_CLIENT_ERROR},
              {401, PO_KEY_REJECTED}, {403, PO_KEY_REJECTED}, {404, PO_NOT_HERE},
              {409, PO_NOT_HERE},     {408, PO_SERVER_ERROR}, {429, PO_RATE_LIMITED},
              {500, PO_SERVER_ERROR}, {503, PO_SERVER_ERROR}, {302, PO_SERVER_ERROR},
              {101, PO_SERVER_ERROR}};
    for (size_t i = 0; i < ARRAY_LEN(st); i++) {
        ok(policy_status(st[i].status) == st[i].o, "status %d -> %s", st[i].status,
           policy_rule(st[i].o)->name);
    }
    ok(policy_transport(UPSTREAM_CONNECT) == PO_CONNECT &&
           policy_transport(UPSTREAM_DNS) == PO_CONNECT &&
           policy_transport(UPSTREAM_TLS) == PO_CONNECT,
       "connect, DNS and TLS errors: the request never left");
    ok(policy_transport(UPSTREAM_TIMEOUT) == PO_TIMEOUT,
       "a connect timeout counts as a timeout (504)");
    ok(policy_transport(UPSTREAM_NO_RESPONSE) == PO_NO_RESPONSE,
       "sent, then no answer: not a connect error");
    ok(policy_transport(UPSTREAM_BROKEN) == PO_SERVER_ERROR &&
           policy_transport(UPSTREAM_OTHER) == PO_SERVER_ERROR,
       "anything else fails over as a server error");
    ok(policy_rule(PO_COUNT) == policy_rule(PO_SERVER_ERROR), "out of range is safe");
    return tap_done();
}
