/* log.h - log lines on stderr (the web server's error log) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_LOG_H
#define LLMPROXY_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* Never pass an API key or an Authorization header to these. */
void log_msg(const char *level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Writes one finished line (a request summary) with a single write(). */
void log_line(const char *text, size_t len);
/* The same from a format; a line longer than 8 KiB is cut there. */
void log_linef(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* While on (a responder loop's thread), this thread's lines other than
 * log_msg's are held and written together by log_flush, which the loop calls
 * at the end of each turn: a request's summary leaves after its answer (a
 * crash or _exit mid-turn loses at most that turn's lines). Off flushes. */
void log_hold(bool on);
void log_flush(void);

/* LLMPROXY_LOG_FORMAT=json: every line is one JSON object, for log
 * shippers: {"time", "pid", then the line's own members}. */
bool log_json(void);
/* Writes {"time":...,"pid":...,<members>} as one line; members is JSON
 * members text ("a":1,"b":"x"). */
void log_json_line(const char *members, size_t len);
/* Appends s as the inside of a JSON string (escaped, control characters
 * as \u00XX) to out[*k..n), never past n - 1; false when it did not fit. */
bool log_json_escape(char *out, size_t n, size_t *k, const char *s);

#define LOG_ERROR(...) log_msg("error", __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...) log_msg("warn", __FILE__, __LINE__, __VA_ARGS__)
#define LOG_INFO(...) log_msg("info", __FILE__, __LINE__, __VA_ARGS__)

#endif
