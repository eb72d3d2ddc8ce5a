/* common.h - feature macros and helpers every translation unit includes first */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_COMMON_H
#define LLMPROXY_COMMON_H

#define _GNU_SOURCE 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLMPROXY_VERSION "0.1.0"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation wrappers: on out-of-memory they log and abort(); the web server
 * respawns the responder. Every other failure is returned to the caller. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Value of a hexadecimal digit, -1 for any other character. */
int hex_digit(char c);

/* Monotonic clock in microseconds. */
int64_t now_us(void);

#endif
