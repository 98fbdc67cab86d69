/*
 * test_uuid.c - random UUIDv4 ids (core/uuid.h): the RFC 9562 text form,
 * the version and variant bits, uniqueness over 10,000 ids, and what
 * uuid_valid() accepts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/uuid.h"

#define N_IDS 10000

static void format(void **state)
{
    (void)state;
    for (int k = 0; k < 1000; k++) {
        char id[UUID_STR_LEN + 1];
        memset(id, 'z', sizeof id);
        assert_int_equal(uuid_v4(id), CHATD_OK);
        assert_int_equal(strlen(id), UUID_STR_LEN);
        for (int i = 0; i < UUID_STR_LEN; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(id[i], '-');
            else
                assert_non_null(strchr("0123456789abcdef", id[i])); /* lowercase hex */
        }
        assert_int_equal(id[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", id[19])); /* variant 10xx */
        assert_true(uuid_valid(id, UUID_STR_LEN));
    }
}

static int cmp(const void *a, const void *b)
{
    return memcmp(a, b, UUID_STR_LEN);
}

static void unique(void **state)
{
    (void)state;
    char(*ids)[UUID_STR_LEN + 1] = calloc(N_IDS, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N_IDS; i++)
        assert_int_equal(uuid_v4(ids[i]), CHATD_OK);
    qsort(ids, N_IDS, sizeof *ids, cmp);
    for (int i = 1; i < N_IDS; i++)
        assert_true(memcmp(ids[i - 1], ids[i], UUID_STR_LEN) != 0);

    /* every random nibble position takes more than one value: not a
     * counter or a constant with a few random bits */
    for (int pos = 0; pos < UUID_STR_LEN; pos++) {
        if (pos == 8 || pos == 13 || pos == 14 || pos == 18 || pos == 23)
            continue;
        int seen[256] = {0}, distinct = 0;
        for (int i = 0; i < N_IDS; i++)
            if (!seen[(unsigned char)ids[i][pos]]++)
                distinct++;
        assert_true(distinct >= (pos == 19 ? 4 : 16));
    }
    free(ids);
}

static void valid_accepts(void **state)
{
    (void)state;
    assert_true(uuid_valid("123e4567-e89b-42d3-a456-426614174000", 36));
    assert_true(uuid_valid("123E4567-E89B-42D3-A456-426614174000", 36)); /* any case */
    assert_true(uuid_valid("00000000-0000-0000-0000-000000000000", 36)); /* form, not version */
    /* n is the length: a longer string's first 36 bytes are judged */
    assert_true(uuid_valid("123e4567-e89b-42d3-a456-426614174000/export", 36));
}

static void valid_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "123e4567-e89b-42d3-a456-42661417400",   /* 35 */
        "123e4567-e89b-42d3-a456-4266141740000", /* 37 */
        "123e4567e89b-42d3-a456-4266141740000",  /* hyphen missing */
        "123e4567-e89b-42d3-a4564-26614174000",  /* hyphen moved */
        "123e4567-e89b-42d3-a456-42661417400g",  /* not hex */
        "{23e4567-e89b-42d3-a456-426614174000",
        "123e4567 e89b 42d3 a456 426614174000",
        "123e4567-e89b-42d3-a456-4266141740 0",
        "../../../../../../../../../etc/passwd",
        "123e4567-e89b-42d3-a456-42661417400\xc3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (uuid_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted '%s'", bad[i]);
    /* an embedded NUL is not hex */
    static const char with_nul[] = "123e4567-e89b-42d3-a456-4266141740\0000";
    assert_int_equal(sizeof with_nul - 1, 36);
    assert_false(uuid_valid(with_nul, 36));
    /* a valid id judged with the wrong length */
    assert_false(uuid_valid("123e4567-e89b-42d3-a456-426614174000", 35));
}

static void normalize(void **state)
{
    char out[UUID_STR_LEN + 1];
    (void)state;
    assert_true(uuid_normalize("0B6F3C2A-1D4E-4F5A-9B8C-7D6E5F4A3B2C", 36, out));
    assert_string_equal(out, "0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c");
    assert_true(uuid_normalize("0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c", 36, out));
    assert_string_equal(out, "0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c");
    memset(out, 'x', sizeof out);
    assert_false(uuid_normalize("0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2", 35, out));
    assert_false(uuid_normalize("0b6f3c2a_1d4e-4f5a-9b8c-7d6e5f4a3b2c", 36, out));
    assert_int_equal(out[0], 'x'); /* untouched when refused */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format),        cmocka_unit_test(unique),
        cmocka_unit_test(valid_accepts), cmocka_unit_test(valid_rejects),
        cmocka_unit_test(normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
