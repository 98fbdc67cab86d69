/*
 * timefmt.h - the time formats of SPEC.md.
 *
 * chatd keeps time as int64 microseconds since the Unix epoch, UTC
 * ("usec"). Callers pass the current time in, so that expiry and TTL logic
 * can be tested exactly. Formats:
 *   ISO     2025-02-10T09:30:00.123456   (Python's datetime.isoformat(),
 *                                         always with microseconds)
 *   health  2025-02-10 09:30:00          (local time, /health only)
 *   date    2025-02-10                   (export filters)
 *   stamp   20250210093000               (export file names)
 */
#ifndef CHATD_CORE_TIMEFMT_H
#define CHATD_CORE_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TIMEFMT_ISO_LEN    26 /* without the terminator */
#define TIMEFMT_HEALTH_LEN 19
#define TIMEFMT_STAMP_LEN  14

#define USEC_PER_SEC INT64_C(1000000)

/* Current wall-clock time in usec (CLOCK_REALTIME). */
int64_t time_now_usec(void);
/* Monotonic time in usec, for durations and timeouts. */
int64_t time_mono_usec(void);

/* Writes the ISO form of t (UTC) and a NUL into out. */
void timefmt_iso(int64_t t, char out[TIMEFMT_ISO_LEN + 1]);
/* Writes "YYYY-MM-DD HH:MM:SS" of t in local time. */
void timefmt_health(int64_t t, char out[TIMEFMT_HEALTH_LEN + 1]);
/* Writes "YYYYmmddHHMMSS" of t in UTC. */
void timefmt_stamp(int64_t t, char out[TIMEFMT_STAMP_LEN + 1]);

/* The UTC calendar fields of a time, for code that hands times to
 * libraries in that form (MySQL's MYSQL_TIME). */
struct timefmt_civil {
    int64_t year;
    int mon, mday, hour, min, sec; /* 1-12, 1-31, 0-23, 0-59, 0-59 */
    long usec;                     /* 0-999999 */
};
/* The fields of t, clamped to years 0000-9999. */
void timefmt_to_civil(int64_t t, struct timefmt_civil *c);
/* usec since the epoch of c, which must hold valid fields (the day is not
 * checked against the month: 02-31 is 03-03). */
int64_t timefmt_from_civil(const struct timefmt_civil *c);

/* Parses the ISO form (fraction of 0-6 digits optional, a space allowed
 * instead of the T, as SQL DATETIME prints). False if s is not exactly that. */
bool timefmt_parse_iso(const char *s, size_t n, int64_t *out);
/* Parses a strict YYYY-MM-DD (a real calendar date) to usec at 00:00:00 UTC. */
bool timefmt_parse_date(const char *s, size_t n, int64_t *out);

#endif
