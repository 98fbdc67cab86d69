/*
 * timefmt.c - usec <-> text (see timefmt.h). Calendar arithmetic is done
 * by hand (days_from_civil, civil_from_days) rather than with timegm() and
 * gmtime_r(), so UTC formatting and parsing never depend on the process's
 * time zone or locale; only the /health form asks localtime_r(). Digits are
 * written by hand too, so every output has its fixed length whatever the
 * input (times beyond year 0000-9999 are clamped to it). A leap second
 * (:60) is not accepted: Python's isoformat never prints one.
 */
#include "core/timefmt.h"

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

/* The range the 4-digit year of every format can show: 0000-01-01T00:00:00
 * to 9999-12-31T23:59:59.999999 UTC. Times outside it are clamped, so the
 * output always has its documented length. */
#define T_MIN INT64_C(-62167219200000000)
#define T_MAX INT64_C(253402300799999999)

/* Year, month, day of a day count since 1970-01-01 (H. Hinnant). */
static void civil_from_days(int64_t z, struct timefmt_civil *c)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    c->mday = (int)(doy - (153 * mp + 2) / 5 + 1);
    c->mon = (int)(mp < 10 ? mp + 3 : mp - 9);
    c->year = yoe + era * 400 + (c->mon <= 2);
}

static int64_t clamp(int64_t t)
{
    return t < T_MIN ? T_MIN : t > T_MAX ? T_MAX : t;
}

void timefmt_to_civil(int64_t t, struct timefmt_civil *c)
{
    t = clamp(t);
    int64_t s = t / USEC_PER_SEC, u = t % USEC_PER_SEC;
    if (u < 0) {
        u += USEC_PER_SEC;
        s -= 1;
    }
    int64_t days = s / 86400, rem = s % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    civil_from_days(days, c);
    c->hour = (int)(rem / 3600);
    c->min = (int)(rem / 60 % 60);
    c->sec = (int)(rem % 60);
    c->usec = (long)u;
}

/* Writes v as exactly w decimal digits (v clamped to what w digits hold);
 * returns the position after them. Hand-written because snprintf's
 * int-sized fields cannot be proven to fit the fixed-size outputs. */
static char *put(char *p, int64_t v, int w)
{
    int64_t lim = 1;
    for (int i = 0; i < w; i++)
        lim *= 10;
    if (v < 0)
        v = 0;
    if (v >= lim)
        v = lim - 1;
    for (int i = w - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + w;
}

static char *put_date(char *p, const struct timefmt_civil *c, bool dashes)
{
    p = put(p, c->year, 4);
    if (dashes)
        *p++ = '-';
    p = put(p, c->mon, 2);
    if (dashes)
        *p++ = '-';
    return put(p, c->mday, 2);
}

static char *put_time(char *p, const struct timefmt_civil *c, bool colons)
{
    p = put(p, c->hour, 2);
    if (colons)
        *p++ = ':';
    p = put(p, c->min, 2);
    if (colons)
        *p++ = ':';
    return put(p, c->sec, 2);
}

void timefmt_iso(int64_t t, char out[TIMEFMT_ISO_LEN + 1])
{
    struct timefmt_civil c;
    timefmt_to_civil(t, &c);
    char *p = put_date(out, &c, true);
    *p++ = 'T';
    p = put_time(p, &c, true);
    *p++ = '.';
    p = put(p, c.usec, 6);
    *p = '\0';
}

void timefmt_health(int64_t t, char out[TIMEFMT_HEALTH_LEN + 1])
{
    struct timefmt_civil c;
    struct tm tm;
    timefmt_to_civil(t, &c); /* the answer if localtime_r() cannot convert t */
    t = clamp(t);
    time_t sec = (time_t)(t / USEC_PER_SEC - (t % USEC_PER_SEC < 0)); /* floor */
    if (localtime_r(&sec, &tm)) {
        c.year = (int64_t)tm.tm_year + 1900;
        c.mon = tm.tm_mon + 1;
        c.mday = tm.tm_mday;
        c.hour = tm.tm_hour;
        c.min = tm.tm_min;
        c.sec = tm.tm_sec;
    }
    char *p = put_date(out, &c, true);
    *p++ = ' ';
    p = put_time(p, &c, true);
    *p = '\0';
}

void timefmt_stamp(int64_t t, char out[TIMEFMT_STAMP_LEN + 1])
{
    struct timefmt_civil c;
    timefmt_to_civil(t, &c);
    char *p = put_date(out, &c, false);
    p = put_time(p, &c, false);
    *p = '\0';
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

int64_t timefmt_from_civil(const struct timefmt_civil *c)
{
    int64_t days = days_from_civil(c->year, c->mon, c->mday);
    return (days * 86400 + c->hour * 3600 + c->min * 60 + c->sec) * USEC_PER_SEC + c->usec;
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
    if (hh > 23 || mm > 59 || ss > 59)
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
