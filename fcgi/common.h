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

/* A byte of the ids llmproxy routes by (Responses ids): [A-Za-z0-9_.-]. */
static inline bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* s is one or more such bytes. */
static inline bool id_string(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    while (id_char(*s)) {
        s++;
    }
    return *s == '\0';
}

/* Value of a hexadecimal digit, -1 for any other character. */
int hex_digit(char c);

/* Monotonic clock in microseconds. */
int64_t now_us(void);

/* n random bytes from the kernel (getrandom by system call: glibc before
 * 2.25 has no wrapper). 0, or -1 with errno. */
int random_bytes(void *p, size_t n);

/* The state dir: LLMPROXY_STATE_DIR; else, for a CGI program (cgi true),
 * the llmproxy-state directory of the shared-hosting layout, next to the web
 * root that holds cgi-bin/ (suEXEC drops SetEnv's variables), or the
 * account's home's llmproxy-state, when one exists; else "./var". The
 * result is in out (n bytes) or a static string. */
const char *state_dir(bool cgi, char *out, size_t n);

#endif
