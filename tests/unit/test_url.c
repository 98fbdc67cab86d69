/*
 * test_url.c - percent-decoding.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/url.h"

static void decodes(const char *in, const char *want)
{
    char *out = url_pct_decode(in, strlen(in));
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
}

static void refuses(const char *in)
{
    assert_null(url_pct_decode(in, strlen(in)));
}

static void test_decodes(void **state)
{
    (void)state;
    decodes("", "");
    decodes("plain", "plain");
    decodes("p%40ss%3Aw%2Fd", "p@ss:w/d");
    decodes("%e4%bd%a0%E5%A5%BD", "你好");
    decodes("100%25", "100%");
    decodes("a+b", "a+b"); /* '+' is not a space in a URL's authority or path */
}

static void test_refuses(void **state)
{
    (void)state;
    refuses("%");
    refuses("%4");
    refuses("abc%");
    refuses("%zz");
    refuses("%4g");
    refuses("%00"); /* would cut the string short */
    refuses("a%00b");
}

static void test_counted_input(void **state)
{
    (void)state;
    /* Only n bytes are read: an escape cut by n is refused. */
    char *out = url_pct_decode("ab%41", 2);
    assert_string_equal(out, "ab");
    free(out);
    assert_null(url_pct_decode("ab%41", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_counted_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
