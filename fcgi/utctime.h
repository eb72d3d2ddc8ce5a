/* utctime.h - UTC calendar time: RFC 3339, days, months, hours (pure) */
/* SPDX-License-Identifier: MIT */
#ifndef LLMPROXY_UTCTIME_H
#define LLMPROXY_UTCTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian, m 1..12). */
long utctime_days_from_civil(long y, unsigned m, unsigned d);
/* The date of a day number. */
void utctime_civil_from_days(long days, long *y, unsigned *m, unsigned *d);

/* Parses "2027-01-01T00:00:00Z" (fractions and +hh:mm offsets too) into
 * seconds since the epoch; false when it is not RFC 3339. */
bool utctime_parse_rfc3339(const char *s, int64_t *out);
/* "2027-01-01T00:00:00Z" (at least 21 bytes). */
void utctime_format_rfc3339(int64_t t, char *out, size_t n);
/* "2027-01-01" (at least 11 bytes); false on a bad date. */
bool utctime_parse_date(const char *s, long *days);
void utctime_format_date(long days, char *out, size_t n);

/* Start of the UTC day / month holding t (seconds). */
int64_t utctime_day_start(int64_t t);
int64_t utctime_month_start(int64_t t);

#endif
