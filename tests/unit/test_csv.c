/*
 * test_csv.c - RFC 4180 quoting, the formula guard and UTF-8 repair.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/csv.h"

static void expect_field(const char *in, size_t n, const char *want, size_t want_len)
{
    struct buf b = BUF_INIT;
    assert_int_equal(csv_field(&b, in, n), CHATD_OK);
    assert_int_equal(b.len, want_len);
    assert_memory_equal(b.ptr, want, b.len);
    buf_release(&b);
}

#define FIELD(in, want) expect_field(in, sizeof(in) - 1, want, sizeof(want) - 1)

static void plain(void **state)
{
    (void)state;
    FIELD("", "");
    FIELD("hello world", "hello world");
    FIELD("你好 🌟", "你好 🌟");
    FIELD("2025-02-10T09:30:00.123456", "2025-02-10T09:30:00.123456");
    FIELD("it's", "it's");
}

static void quoting(void **state)
{
    (void)state;
    FIELD("a,b", "\"a,b\"");
    FIELD("say \"hi\"", "\"say \"\"hi\"\"\"");
    FIELD("\"", "\"\"\"\"");
    FIELD("line1\nline2", "\"line1\nline2\"");
    FIELD("crlf\r\nend", "\"crlf\r\nend\"");
    FIELD("a\rb", "\"a\rb\"");
}

static void formula_guard(void **state)
{
    (void)state;
    FIELD("=1+1", "'=1+1");
    FIELD("+1", "'+1");
    FIELD("-1", "'-1");
    FIELD("@SUM(A1)", "'@SUM(A1)");
    FIELD("\tx", "'\tx");
    FIELD("\rx", "\"'\rx\"");
    FIELD("=HYPERLINK(\"http://x\",\"y\")", "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
    FIELD("a=1", "a=1"); /* only a leading sign */
    FIELD("\0=", "\0="); /* NUL is not a sign */
}

static void utf8_repair(void **state)
{
    (void)state;
    FIELD("a\xff"
          "b",
          "a\xef\xbf\xbd"
          "b");
    FIELD("\xe4\xbd", "\xef\xbf\xbd\xef\xbf\xbd");                 /* truncated sequence */
    FIELD("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    FIELD("q\"\xff,", "\"q\"\"\xef\xbf\xbd,\"");
    FIELD("a\0b", "a\0b"); /* NUL is valid UTF-8: kept */
}

static void cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4);
    assert_int_equal(csv_field(&b, "abc,def", 7), CHATD_ETOOBIG);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain),       cmocka_unit_test(quoting), cmocka_unit_test(formula_guard),
        cmocka_unit_test(utf8_repair), cmocka_unit_test(cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
