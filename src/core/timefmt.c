/*
 * timefmt.c - usec <-> text (see timefmt.h). Calendar arithmetic is done
 * by hand (days_from_civil) rather than with timegm(), so parsing never
 * depends on the process's time zone or locale.
 */
#include "core/timefmt.h"

#include <stdio.h>
#include <time.h>

int64_t time_now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

int64_t time_mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

static void split(int64_t t, time_t *sec, long *usec)
{
    int64_t s = t / USEC_PER_SEC, u = t % USEC_PER_SEC;
    if (u < 0) {
        u += USEC_PER_SEC;
        s -= 1;
    }
    *sec = (time_t)s;
    *usec = (long)u;
}

void timefmt_iso(int64_t t, char out[TIMEFMT_ISO_LEN + 1])
{
    time_t sec;
    long usec;
    struct tm tm;
    split(t, &sec, &usec);
    gmtime_r(&sec, &tm);
    snprintf(out, TIMEFMT_ISO_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06ld",
             (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, usec);
}

void timefmt_health(int64_t t, char out[TIMEFMT_HEALTH_LEN + 1])
{
    time_t sec;
    long usec;
    struct tm tm;
    split(t, &sec, &usec);
    localtime_r(&sec, &tm);
    snprintf(out, TIMEFMT_HEALTH_LEN + 1, "%04d-%02d-%02d %02d:%02d:%02d",
             (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

void timefmt_stamp(int64_t t, char out[TIMEFMT_STAMP_LEN + 1])
{
    time_t sec;
    long usec;
    struct tm tm;
    split(t, &sec, &usec);
    gmtime_r(&sec, &tm);
    snprintf(out, TIMEFMT_STAMP_LEN + 1, "%04d%02d%02d%02d%02d%02d", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool digits(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool parse_ymd(const char *s, int64_t *days)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t y, m, d;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return false;
    if (m < 1 || m > 12 || d < 1)
        return false;
    if (d > mdays[m - 1] + (m == 2 && leap(y)))
        return false;
    *days = days_from_civil(y, m, d);
    return true;
}

bool timefmt_parse_date(const char *s, size_t n, int64_t *out)
{
    int64_t days;
    if (n != 10 || !parse_ymd(s, &days))
        return false;
    *out = days * 86400 * USEC_PER_SEC;
    return true;
}

bool timefmt_parse_iso(const char *s, size_t n, int64_t *out)
{
    int64_t days, hh, mm, ss, frac = 0;
    if (n < 19 || !parse_ymd(s, &days) || (s[10] != 'T' && s[10] != ' '))
        return false;
    if (!digits(s + 11, 2, &hh) || s[13] != ':' || !digits(s + 14, 2, &mm) || s[16] != ':' ||
        !digits(s + 17, 2, &ss))
        return false;
    if (hh > 23 || mm > 59 || ss > 60)
        return false;
    if (n > 19) {
        size_t fn = n - 20;
        if (s[19] != '.' || fn < 1 || fn > 6 || !digits(s + 20, fn, &frac))
            return false;
        for (size_t i = fn; i < 6; i++)
            frac *= 10;
    }
    *out = ((days * 86400) + hh * 3600 + mm * 60 + ss) * USEC_PER_SEC + frac;
    return true;
}
