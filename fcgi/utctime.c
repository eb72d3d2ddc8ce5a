/* utctime.c - UTC calendar time: RFC 3339, days, months, hours (pure) */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "utctime.h"

#include <stdio.h>
#include <string.h>

long utctime_days_from_civil(long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

void utctime_civil_from_days(long z, long *y, unsigned *m, unsigned *d)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long yy = (long)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool leap(long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool date_ok(long y, int m, int d)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return y >= 1970 && y <= 9999 && m >= 1 && m <= 12 && d >= 1 &&
           d <= mdays[m - 1] + (m == 2 && leap(y));
}

bool utctime_parse_date(const char *s, long *days)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') {
        return false;
    }
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 0 || d < 0 || !date_ok(y, m, d)) {
        return false;
    }
    *days = utctime_days_from_civil(y, (unsigned)m, (unsigned)d);
    return true;
}

bool utctime_parse_rfc3339(const char *s, int64_t *out)
{
    long days;
    char date[11];
    if (strlen(s) < 20) {
        return false;
    }
    memcpy(date, s, 10);
    date[10] = '\0';
    if (!utctime_parse_date(date, &days) || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':') {
        return false;
    }
    int hh = digits(s + 11, 2), mm = digits(s + 14, 2), ss = digits(s + 17, 2);
    if (hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60) {
        return false;
    }
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') {
            return false;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    long offset = 0;
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        offset = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh = digits(p + 1, 2), om = digits(p + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59) {
            return false;
        }
        offset = (oh * 3600L + om * 60L) * (*p == '+' ? 1 : -1);
    } else {
        return false;
    }
    *out = (int64_t)days * 86400 + hh * 3600 + mm * 60 + (ss > 59 ? 59 : ss) - offset;
    return true;
}

void utctime_format_date(long days, char *out, size_t n)
{
    long y;
    unsigned m, d;
    utctime_civil_from_days(days, &y, &m, &d);
    snprintf(out, n, "%04ld-%02u-%02u", y, m, d);
}

void utctime_format_rfc3339(int64_t t, char *out, size_t n)
{
    long days = (long)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
    long rem = (long)(t - (int64_t)days * 86400);
    long y;
    unsigned m, d;
    utctime_civil_from_days(days, &y, &m, &d);
    snprintf(out, n, "%04ld-%02u-%02uT%02ld:%02ld:%02ldZ", y, m, d, rem / 3600, rem / 60 % 60,
             rem % 60);
}

int64_t utctime_day_start(int64_t t)
{
    return t - (t % 86400 + 86400) % 86400;
}

int64_t utctime_month_start(int64_t t)
{
    long y;
    unsigned m, d;
    utctime_civil_from_days((long)(utctime_day_start(t) / 86400), &y, &m, &d);
    return (int64_t)utctime_days_from_civil(y, m, 1) * 86400;
}
