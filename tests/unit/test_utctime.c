/* test_utctime.c - unit tests of utctime.c: RFC 3339, dates, periods */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/utctime.c"
#include "tap.h"

#include <time.h>

int main(void)
{
    int64_t t;
    ok(utctime_parse_rfc3339("2027-01-01T00:00:00Z", &t) && t == 1798761600, "a UTC time");
    ok(utctime_parse_rfc3339("2027-01-01T01:00:00+01:00", &t) && t == 1798761600,
       "an offset east of UTC");
    ok(utctime_parse_rfc3339("2026-12-31T19:00:00.250-05:00", &t) && t == 1798761600,
       "a fraction and an offset west");
    ok(utctime_parse_rfc3339("2024-02-29t12:00:00z", &t), "a leap day, lower case");
    const char *bad[] = {"2023-02-29T00:00:00Z",
                         "2027-13-01T00:00:00Z",
                         "2027-01-01 00:00:00Z",
                         "2027-01-01T24:00:00Z",
                         "2027-01-01T00:00:00",
                         "2027-01-01T00:00:00+1",
                         "2027-01-01T00:00:00.Z",
                         "27-01-01T00:00:00Z",
                         "",
                         "tomorrow"};
    int refused = 0;
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        refused += !utctime_parse_rfc3339(bad[i], &t);
    }
    ok(refused == (int)ARRAY_LEN(bad), "%d of %zu malformed times refused", refused,
       ARRAY_LEN(bad));
    char out[32];
    utctime_format_rfc3339(1798761600, out, sizeof(out));
    ok(strcmp(out, "2027-01-01T00:00:00Z") == 0, "formatted: %s", out);
    /* every day of 1970..2200 goes there and back */
    int round = 1;
    for (long d = 0; d < 84000; d += 7) {
        long y;
        unsigned m, dd;
        utctime_civil_from_days(d, &y, &m, &dd);
        round &= utctime_days_from_civil(y, m, dd) == d;
    }
    ok(round, "day numbers and dates agree over two centuries");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    ok(utctime_day_start(now) == now - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec),
       "start of today (UTC)");
    ok(utctime_month_start(now) == utctime_day_start(now) - (int64_t)(tm.tm_mday - 1) * 86400,
       "start of this month (UTC)");
    long days;
    ok(utctime_parse_date("2026-12-01", &days) && days * 86400 == 1796083200 &&
           !utctime_parse_date("2026-12-1", &days) && !utctime_parse_date("2026-02-30", &days),
       "dates for the usage API");
    return tap_done();
}
