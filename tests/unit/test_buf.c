/*
 * test_buf.c - the capped byte buffer (core/buf.h): a zeroed buffer is
 * valid, the cap refuses an append and leaves the buffer exactly as it
 * was, appendf handles text longer than its stack scratch, and consume,
 * take, reset and release do what the header says.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static void zeroed_is_valid(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    struct buf z;
    memset(&z, 0, sizeof z);
    assert_memory_equal(&b, &z, sizeof b);
    struct str s = buf_str(&b);
    assert_non_null(s.ptr);
    assert_int_equal(s.len, 0);
    assert_string_equal(s.ptr, "");
    buf_reset(&b);
    buf_consume(&b, 0);
    buf_release(&b);
    assert_null(b.ptr);
    /* no cap: grows as needed */
    assert_int_equal(buf_append_str(&z, "hello"), CHATD_OK);
    assert_string_equal(z.ptr, "hello");
    assert_int_equal(z.len, 5);
    buf_release(&z);
    /* take from an empty buffer: an empty, freeable string */
    char *t = buf_take(&b);
    assert_string_equal(t, "");
    free(t);
}

static void append_and_terminate(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append(&b, "a\0b", 3), CHATD_OK); /* NUL bytes are content */
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.ptr, "a\0b", 4);
    assert_int_equal(buf_append_char(&b, 'c'), CHATD_OK);
    assert_int_equal(buf_append(&b, NULL, 0), CHATD_OK);
    assert_int_equal(b.len, 4);
    assert_int_equal(b.ptr[4], '\0');
    assert_true(str_eq(buf_str(&b), "a\0bc") == false); /* str_eq compares with a C string */
    buf_reset(&b);
    assert_int_equal(buf_append_str(&b, "xyz"), CHATD_OK);
    assert_true(str_eq(buf_str(&b), "xyz"));
    assert_false(str_eq(buf_str(&b), "xy"));
    assert_false(str_eq(buf_str(&b), "xyzz"));
    assert_true(str_eq(STR_LIT(""), ""));
    assert_true(str_eq(STR_NULL, ""));

    /* many small appends: content intact across every reallocation */
    buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(buf_append_char(&b, (char)('a' + i % 26)), CHATD_OK);
    assert_int_equal(b.len, 100000);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(b.ptr[i], 'a' + i % 26);
    assert_int_equal(b.ptr[b.len], '\0');
    buf_release(&b);
}

/* The cap refuses, and the buffer is byte for byte what it was. */
static void cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789A", 11), CHATD_ETOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_str(&b).len, 0);
    assert_int_equal(buf_append_str(&b, "01234"), CHATD_OK);
    char *before = b.ptr;
    assert_int_equal(buf_append_str(&b, "567890"), CHATD_ETOOBIG);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.ptr, "01234");
    assert_ptr_equal(b.ptr, before);
    assert_int_equal(buf_appendf(&b, "%s", "567890"), CHATD_ETOOBIG);
    assert_string_equal(b.ptr, "01234");
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_appendf(&b, "%s", big), CHATD_ETOOBIG); /* the long path too */
    assert_string_equal(b.ptr, "01234");
    assert_int_equal(b.len, 5);
    /* exactly up to the cap is fine */
    assert_int_equal(buf_append_str(&b, "56789"), CHATD_OK);
    assert_string_equal(b.ptr, "0123456789");
    assert_int_equal(buf_append(&b, "", 0), CHATD_OK);
    assert_int_equal(buf_append_char(&b, 'X'), CHATD_ETOOBIG);
    assert_string_equal(b.ptr, "0123456789");
    /* release keeps the cap */
    buf_release(&b);
    assert_int_equal(b.max, 10);
    assert_int_equal(buf_append(&b, "0123456789A", 11), CHATD_ETOOBIG);
    assert_null(b.ptr);
    /* a cap smaller than the first allocation */
    buf_init(&b, 3);
    assert_int_equal(buf_append_str(&b, "abc"), CHATD_OK);
    assert_int_equal(buf_append_str(&b, "d"), CHATD_ETOOBIG);
    assert_string_equal(b.ptr, "abc");
    buf_release(&b);
}

static void appendf_long(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    /* around the 256-byte scratch: 255, 256, 257 bytes, and far beyond */
    static const size_t sizes[] = {0, 1, 254, 255, 256, 257, 1000, 100000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        char *s = malloc(n + 1);
        assert_non_null(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)('A' + i % 26);
        s[n] = '\0';
        buf_reset(&b);
        assert_int_equal(buf_append_str(&b, "pre:"), CHATD_OK);
        assert_int_equal(buf_appendf(&b, "%s|%d|%s", s, 42, "end"), CHATD_OK);
        assert_int_equal(b.len, 4 + n + 4 + 3);
        assert_memory_equal(b.ptr, "pre:", 4);
        assert_memory_equal(b.ptr + 4, s, n);
        assert_string_equal(b.ptr + 4 + n, "|42|end");
        free(s);
    }
    /* several long appends in a row */
    buf_reset(&b);
    for (int i = 0; i < 50; i++)
        assert_int_equal(buf_appendf(&b, "%0300d", i), CHATD_OK);
    assert_int_equal(b.len, 50 * 300);
    assert_int_equal(b.ptr[299], '0');
    assert_int_equal(b.ptr[50 * 300 - 1], '9');
    assert_int_equal(b.ptr[50 * 300 - 2], '4');
    buf_release(&b);
}

static void consume(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "0123456789"), CHATD_OK);
    buf_consume(&b, 0);
    assert_string_equal(b.ptr, "0123456789");
    buf_consume(&b, 3);
    assert_string_equal(b.ptr, "3456789");
    assert_int_equal(b.len, 7);
    buf_consume(&b, 6);
    assert_string_equal(b.ptr, "9");
    buf_consume(&b, 1);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.ptr, "");
    /* still usable after being drained */
    assert_int_equal(buf_append_str(&b, "ab"), CHATD_OK);
    assert_string_equal(b.ptr, "ab");
    buf_release(&b);
}

static void take(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_append_str(&b, "owned"), CHATD_OK);
    char *s = buf_take(&b);
    assert_string_equal(s, "owned");
    assert_null(b.ptr);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 100); /* the cap stays with the buffer */
    free(s);
    assert_int_equal(buf_append_str(&b, "again"), CHATD_OK);
    assert_string_equal(b.ptr, "again");
    buf_release(&b);
}

static void reset_keeps_memory(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "something"), CHATD_OK);
    char *p = b.ptr;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_ptr_equal(b.ptr, p);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.ptr, "");
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zeroed_is_valid),
        cmocka_unit_test(append_and_terminate),
        cmocka_unit_test(cap),
        cmocka_unit_test(appendf_long),
        cmocka_unit_test(consume),
        cmocka_unit_test(take),
        cmocka_unit_test(reset_keeps_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
