/* auth.h - the admin token: creation, storage, constant-time check, cross-site refusal */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_AUTH_H
#define LLMPROXY_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Random bytes in a generated token (hex encoded: twice as many characters). */
#define AUTH_TOKEN_BYTES 32
#define AUTH_TOKEN_MAX 512
#define AUTH_TOKEN_FILE "admin.token"

/* The admin token: LLMPROXY_ADMIN_TOKEN when set, else STATE_DIR/admin.token,
 * which is created (0600, from getrandom) when absent. *created tells
 * whether this call made it. Returns 0, or -1 with a message in err. */
int auth_token_load(const char *state_dir, char *out, size_t n, bool *created, char *err,
                    size_t errlen);

/* True when header is "Bearer <token>" (compared in constant time). */
bool auth_bearer_ok(const char *header, const char *token);

/* True when a state-changing request comes from another site: a
 * Sec-Fetch-Site other than same-origin/none, or an Origin whose host
 * differs from Host. Any argument may be NULL (header absent). */
bool auth_cross_site(const char *origin, const char *host, const char *sec_fetch_site);

/* Whether a request may be served while no client key exists (keyless
 * mode, like Redis's protected mode): it comes from a loopback address
 * (remote_addr), names a loopback Host (127.0.0.1, localhost or [::1], any
 * port) and carries no cross-site browser marks. Any argument may be NULL. */
bool auth_keyless_ok(const char *remote_addr, const char *host, const char *origin,
                     const char *sec_fetch_site);

#endif
