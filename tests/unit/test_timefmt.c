/*
 * test_timefmt.c - the time formats of SPEC.md (core/timefmt.h).
 *
 * Known instants were computed with Python's datetime, the reference the
 * ISO form must match byte for byte. The /health form is local time, so
 * the tests pin TZ=UTC (and one other zone) with setenv + tzset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timefmt.h"

struct instant {
    int64_t usec;
    const char *iso;
};

static const struct instant known[] = {
    {0, "1970-01-01T00:00:00.000000"},
    {1, "1970-01-01T00:00:00.000001"},
    {1709251199999999, "2024-02-29T23:59:59.999999"}, /* leap day */
    {1739179800123456, "2025-02-10T09:30:00.123456"}, /* SPEC's example */
    {951868800000007, "2000-03-01T00:00:00.000007"},  /* day after 2000's leap day */
    {2147483648000000, "2038-01-19T03:14:08.000000"}, /* past 32-bit time_t */
    {-1, "1969-12-31T23:59:59.999999"},               /* negative: floor, not trunc */
    {-2203934400000000, "1900-02-28T12:00:00.000000"},
    {-62135596800000000, "0001-01-01T00:00:00.000000"},
    {253402300799999999, "9999-12-31T23:59:59.999999"},
};

static void iso_known_instants(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char out[TIMEFMT_ISO_LEN + 1];
        memset(out, 'x', sizeof out);
        timefmt_iso(known[i].usec, out);
        assert_string_equal(out, known[i].iso);
        assert_int_equal(strlen(out), TIMEFMT_ISO_LEN);
    }
}

static void iso_microsecond_padding(void **state)
{
    (void)state;
    char out[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(1739179800000000 + 42, out);
    assert_string_equal(out, "2025-02-10T09:30:00.000042");
    timefmt_iso(1739179800000000 + 100000, out);
    assert_string_equal(out, "2025-02-10T09:30:00.100000");
}

static void iso_out_of_range_keeps_length(void **state)
{
    (void)state;
    char out[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(INT64_MIN, out);
    assert_int_equal(strlen(out), TIMEFMT_ISO_LEN);
    assert_string_equal(out, "0000-01-01T00:00:00.000000");
    timefmt_iso(INT64_MAX, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999");
}

static void parse_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        int64_t t = 12345;
        assert_true(timefmt_parse_iso(known[i].iso, strlen(known[i].iso), &t));
        assert_int_equal(t, known[i].usec);
    }
    /* every second of a day and a spread of microseconds survive the trip */
    for (int64_t t = 1709164800000000; t < 1709251200000000; t += 7777777) {
        char out[TIMEFMT_ISO_LEN + 1];
        int64_t back;
        timefmt_iso(t, out);
        assert_true(timefmt_parse_iso(out, strlen(out), &back));
        assert_int_equal(back, t);
    }
}

static void parse_accepted_variants(void **state)
{
    (void)state;
    int64_t t;
    assert_true(timefmt_parse_iso("2025-02-10 09:30:00", 19, &t)); /* SQL DATETIME */
    assert_int_equal(t, 1739179800000000);
    assert_true(timefmt_parse_iso("2025-02-10T09:30:00.1", 21, &t));
    assert_int_equal(t, 1739179800100000);
    assert_true(timefmt_parse_iso("2025-02-10 09:30:00.000042", 26, &t));
    assert_int_equal(t, 1739179800000042);
    assert_true(timefmt_parse_iso("2024-02-29T00:00:00", 19, &t));
    assert_true(timefmt_parse_iso("2000-02-29T00:00:00", 19, &t)); /* 400-year leap */
}

static void parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2025-02-30T00:00:00",         /* Feb 30 */
        "2025-02-29T00:00:00",         /* not a leap year */
        "1900-02-29T00:00:00",         /* century, not leap */
        "2025-13-01T00:00:00",         /* month 13 */
        "2025-00-01T00:00:00",         /* month 0 */
        "2025-04-31T00:00:00",         /* April 31 */
        "2025-01-00T00:00:00",         /* day 0 */
        "2025-01-01T24:00:00",         /* hour 24 */
        "2025-01-01T00:60:00",         /* minute 60 */
        "2025-01-01T00:00:60",         /* leap second */
        "2025-01-01",                  /* no time */
        "2025-01-01T00:00",            /* no seconds */
        "2025-01-01T00:00:00.",        /* empty fraction */
        "2025-01-01T00:00:00.1234567", /* 7 digits */
        "2025-01-01T00:00:00Z",        /* trailing junk */
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T00:00:00.12x",
        "2025-01-01X00:00:00",
        "2025/01/01T00:00:00",
        "25-01-01T00:00:00",
        "2025-1-01T00:00:00 ",
        "+025-01-01T00:00:00",
        "2025-01-01T0a:00:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = 777;
        if (timefmt_parse_iso(bad[i], strlen(bad[i]), &t))
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(t, 777);
    }
    /* the length is the truth, not a NUL */
    int64_t t;
    assert_false(timefmt_parse_iso("2025-01-01T00:00:00", 18, &t));
    assert_true(timefmt_parse_iso("2025-01-01T00:00:00junk", 19, &t));
}

static void parse_date(void **state)
{
    (void)state;
    int64_t t;
    assert_true(timefmt_parse_date("1970-01-01", 10, &t));
    assert_int_equal(t, 0);
    assert_true(timefmt_parse_date("2024-02-29", 10, &t));
    assert_int_equal(t, 1709164800000000);
    assert_true(timefmt_parse_date("1969-12-31", 10, &t));
    assert_int_equal(t, -86400 * USEC_PER_SEC);
    static const char *const bad[] = {
        "2023-02-29",  "2025-02-30", "2025-13-01", "2025-00-10",          "2025-01-32",
        "2025-1-1",    "2025-01-1",  "20250101",   "2025-01-01T00:00:00", "2025-01-01 ",
        " 2025-01-01", "2025/01/01", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = 777;
        if (timefmt_parse_date(bad[i], strlen(bad[i]), &t))
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(t, 777);
    }
}

static void stamp(void **state)
{
    (void)state;
    char out[TIMEFMT_STAMP_LEN + 1];
    timefmt_stamp(1739179800123456, out);
    assert_string_equal(out, "20250210093000");
    timefmt_stamp(0, out);
    assert_string_equal(out, "19700101000000");
    timefmt_stamp(1709251199999999, out);
    assert_string_equal(out, "20240229235959");
    timefmt_stamp(-1, out);
    assert_string_equal(out, "19691231235959");
}

static void health_format(void **state)
{
    (void)state;
    char out[TIMEFMT_HEALTH_LEN + 1];
    setenv("TZ", "UTC", 1);
    tzset();
    timefmt_health(1739179800123456, out);
    assert_string_equal(out, "2025-02-10 09:30:00");
    timefmt_health(-1, out);
    assert_string_equal(out, "1969-12-31 23:59:59");

    /* local time really is local: a fixed-offset zone, UTC+8, no DST */
    setenv("TZ", "XXX-8", 1);
    tzset();
    timefmt_health(1739179800123456, out);
    assert_string_equal(out, "2025-02-10 17:30:00");
    setenv("TZ", "UTC", 1);
    tzset();

    /* the shape holds for the current time */
    timefmt_health(time_now_usec(), out);
    assert_int_equal(strlen(out), TIMEFMT_HEALTH_LEN);
    for (size_t i = 0; i < TIMEFMT_HEALTH_LEN; i++) {
        if (i == 4 || i == 7)
            assert_int_equal(out[i], '-');
        else if (i == 10)
            assert_int_equal(out[i], ' ');
        else if (i == 13 || i == 16)
            assert_int_equal(out[i], ':');
        else
            assert_true(out[i] >= '0' && out[i] <= '9');
    }
}

static void clocks(void **state)
{
    (void)state;
    int64_t now = time_now_usec();
    assert_true(now > 1700000000 * USEC_PER_SEC); /* after Nov 2023 */
    int64_t a = time_mono_usec(), b = time_mono_usec();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(iso_known_instants),
        cmocka_unit_test(iso_microsecond_padding),
        cmocka_unit_test(iso_out_of_range_keeps_length),
        cmocka_unit_test(parse_round_trip),
        cmocka_unit_test(parse_accepted_variants),
        cmocka_unit_test(parse_rejects),
        cmocka_unit_test(parse_date),
        cmocka_unit_test(stamp),
        cmocka_unit_test(health_format),
        cmocka_unit_test(clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
