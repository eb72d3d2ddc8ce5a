/* sha256.h - SHA-256 (FIPS 180-4), for storing client keys as hashes (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_SHA256_H
#define LLMPROXY_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* Why not libcrypto: the shared-hosting build (make dist) must run against
 * whatever libcurl a host has, and linking libcrypto would tie it to one
 * OpenSSL soname (1.1 on Debian 11, 3 on Debian 12 and 13). */

#define SHA256_LEN 32

void sha256(const void *data, size_t n, uint8_t out[SHA256_LEN]);
/* Lower-case hex of the digest: 64 characters and a NUL. */
void sha256_hex(const void *data, size_t n, char out[2 * SHA256_LEN + 1]);

#endif
