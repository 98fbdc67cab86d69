/*
 * test_json_out.c - JSON string escaping and UTF-8 repair (core/json_out.h).
 *
 * Each case checks the exact bytes written. It then parses them back with
 * jansson, a strict independent parser that also validates UTF-8, and
 * checks that they decode to the expected string. A seeded random sweep
 * checks that arbitrary bytes always give valid JSON, and that valid UTF-8
 * survives the round trip unchanged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/json_out.h"

#define FFFD "\xef\xbf\xbd"

/* Parses json (a JSON string) with jansson; checks it decodes to want. */
static void assert_parses_to(const char *json, size_t n, const char *want, size_t want_len)
{
    json_error_t jerr;
    json_t *v = json_loadb(json, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        fail_msg("jansson rejects %.*s: %s", (int)n, json, jerr.text);
    assert_true(json_is_string(v));
    assert_int_equal(json_string_length(v), want_len);
    assert_memory_equal(json_string_value(v), want, want_len);
    json_decref(v);
}

/* json_out_str(in) must be exactly "\"" want_body "\"", and parse to
 * decoded (the input with invalid bytes replaced). */
static void check(const char *in, size_t n, const char *want_body, const char *decoded,
                  size_t decoded_len)
{
    struct buf b = BUF_INIT;
    assert_int_equal(json_out_str(&b, in, n), CHATD_OK);
    size_t wn = strlen(want_body);
    if (b.len != wn + 2 || b.ptr[0] != '"' || memcmp(b.ptr + 1, want_body, wn) != 0 ||
        b.ptr[b.len - 1] != '"')
        fail_msg("got %s, want \"%s\"", b.ptr, want_body);
    assert_parses_to(b.ptr, b.len, decoded, decoded_len);
    buf_release(&b);
}

#define CHECK_SAME(lit)       check(lit, sizeof(lit) - 1, lit, lit, sizeof(lit) - 1)
#define CHECK(lit, body, dec) check(lit, sizeof(lit) - 1, body, dec, sizeof(dec) - 1)

static void quotes_and_backslash(void **state)
{
    (void)state;
    CHECK("a\"b", "a\\\"b", "a\"b");
    CHECK("\\", "\\\\", "\\");
    CHECK("\"\\\"", "\\\"\\\\\\\"", "\"\\\"");
    CHECK("/", "/", "/"); /* the solidus need not be escaped */
    CHECK_SAME("");
    CHECK_SAME("plain ascii text, nothing to escape: {}[]:,'");
}

static void control_characters(void **state)
{
    (void)state;
    for (int c = 0; c < 0x20; c++) {
        char in[3] = {'x', (char)c, 'y'};
        char want[16];
        switch (c) {
        case '\b':
            snprintf(want, sizeof want, "x\\by");
            break;
        case '\f':
            snprintf(want, sizeof want, "x\\fy");
            break;
        case '\n':
            snprintf(want, sizeof want, "x\\ny");
            break;
        case '\r':
            snprintf(want, sizeof want, "x\\ry");
            break;
        case '\t':
            snprintf(want, sizeof want, "x\\ty");
            break;
        default:
            snprintf(want, sizeof want, "x\\u%04xy", (unsigned)c);
            break;
        }
        check(in, 3, want, in, 3);
    }
    CHECK("\x7f", "\x7f", "\x7f"); /* DEL passes */
    CHECK("\x1f\x20", "\\u001f ", "\x1f ");
}

static void unicode_passes(void **state)
{
    (void)state;
    CHECK_SAME("用户消息内容");
    CHECK_SAME("会话历史已清除");
    CHECK_SAME("🌟 emoji 👩‍💻 ZWJ 🇨🇳 flag");
    CHECK_SAME("mixed 中文 and \xc3\xa9 and \xe2\x82\xac");
    /* the edges of each sequence length */
    CHECK_SAME("\xc2\x80");         /* U+0080 */
    CHECK_SAME("\xdf\xbf");         /* U+07FF */
    CHECK_SAME("\xe0\xa0\x80");     /* U+0800 */
    CHECK_SAME("\xed\x9f\xbf");     /* U+D7FF, just below the surrogates */
    CHECK_SAME("\xee\x80\x80");     /* U+E000, just above */
    CHECK_SAME("\xef\xbf\xbf");     /* U+FFFF */
    CHECK_SAME("\xf0\x90\x80\x80"); /* U+10000 */
    CHECK_SAME("\xf4\x8f\xbf\xbf"); /* U+10FFFF */
    CHECK_SAME(FFFD);               /* a real U+FFFD stays one */
}

static void invalid_utf8_replaced(void **state)
{
    (void)state;
    /* lone continuation bytes */
    CHECK("\x80", FFFD, FFFD);
    CHECK("a\xbf"
          "b",
          "a" FFFD "b", "a" FFFD "b");
    /* truncated sequences, at the end and in the middle */
    CHECK("\xc3", FFFD, FFFD);
    CHECK("\xc3z", FFFD "z", FFFD "z");
    CHECK("\xe4\xb8", FFFD FFFD, FFFD FFFD);
    CHECK("\xe4\xb8z", FFFD FFFD "z", FFFD FFFD "z");
    CHECK("\xf0\x9f\x98", FFFD FFFD FFFD, FFFD FFFD FFFD);
    CHECK("\xf0\x9f\x98\"", FFFD FFFD FFFD "\\\"", FFFD FFFD FFFD "\"");
    /* overlong forms */
    CHECK("\xc0\xaf", FFFD FFFD, FFFD FFFD);
    CHECK("\xc1\xbf", FFFD FFFD, FFFD FFFD);
    CHECK("\xe0\x80\xaf", FFFD FFFD FFFD, FFFD FFFD FFFD);
    CHECK("\xe0\x9f\xbf", FFFD FFFD FFFD, FFFD FFFD FFFD);
    CHECK("\xf0\x80\x80\xaf", FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD);
    CHECK("\xf0\x8f\xbf\xbf", FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD);
    /* UTF-16 surrogates */
    CHECK("\xed\xa0\x80", FFFD FFFD FFFD, FFFD FFFD FFFD);
    CHECK("\xed\xbf\xbf", FFFD FFFD FFFD, FFFD FFFD FFFD);
    CHECK("\xed\xa0\xbd\xed\xb8\x80", FFFD FFFD FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD FFFD FFFD);
    /* beyond U+10FFFF */
    CHECK("\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD);
    CHECK("\xf5\x80\x80\x80", FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD);
    CHECK("\xf8\x88\x80\x80\x80", FFFD FFFD FFFD FFFD FFFD, FFFD FFFD FFFD FFFD FFFD);
    /* bytes that never occur in UTF-8 */
    CHECK("\xff", FFFD, FFFD);
    CHECK("\xfe\xff", FFFD FFFD, FFFD FFFD);
    /* a bad byte between good characters damages only itself */
    CHECK("你\xff好", "你" FFFD "好", "你" FFFD "好");
    CHECK("\xe4\xbd\xa0\xe5\xa5", "你" FFFD FFFD, "你" FFFD FFFD);
}

static void nul_bytes(void **state)
{
    (void)state;
    check("a\0b", 3, "a\\u0000b", "a\0b", 3);
}

/* xorshift64*: deterministic, so a failure can be replayed */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static void random_bytes_always_valid_json(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    static const char pool[][5] = {"a",    "\"",       "\\",           "\n",   "\x01",
                                   "\x7f", "\xc3\xa9", "中",           "🌟",    "\x80",
                                   "\xc3", "\xe4\xb8", "\xed\xa0\x80", "\xff", "\xf4\x90\x80\x80"};
    for (int round = 0; round < 20000; round++) {
        char in[64];
        size_t n = 0;
        size_t parts = rnd(&seed) % 12;
        for (size_t i = 0; i < parts; i++) {
            if (rnd(&seed) % 3 == 0) {
                in[n++] = (char)(rnd(&seed) & 0xff); /* any byte at all */
            } else {
                const char *p = pool[rnd(&seed) % (sizeof pool / sizeof pool[0])];
                size_t l = strlen(p);
                memcpy(in + n, p, l);
                n += l;
            }
        }
        struct buf b = BUF_INIT;
        assert_int_equal(json_out_str(&b, in, n), CHATD_OK);
        json_error_t jerr;
        json_t *v = json_loadb(b.ptr, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!v)
            fail_msg("round %d: jansson rejects the output: %s", round, jerr.text);
        assert_true(utf8_valid(json_string_value(v), json_string_length(v)));
        if (utf8_valid(in, n)) {
            assert_int_equal(json_string_length(v), n);
            assert_memory_equal(json_string_value(v), in, n);
        }
        json_decref(v);
        buf_release(&b);
    }
}

static void kv_helpers_exact_bytes(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_char(&b, '{'), CHATD_OK);
    assert_int_equal(json_out_kv_str(&b, true, "status", "success", 7), CHATD_OK);
    assert_int_equal(json_out_kv_bool(&b, false, "cached", false), CHATD_OK);
    assert_int_equal(buf_append_char(&b, '}'), CHATD_OK);
    assert_string_equal(b.ptr, "{\"status\": \"success\", \"cached\": false}");
    buf_reset(&b);

    assert_int_equal(buf_append_char(&b, '{'), CHATD_OK);
    assert_int_equal(json_out_kv_str(&b, true, "status", "成功", strlen("成功")), CHATD_OK);
    assert_int_equal(
        json_out_kv_str(&b, false, "message", "会话历史已清除", strlen("会话历史已清除")),
        CHATD_OK);
    assert_int_equal(json_out_kv_bool(&b, false, "ok", true), CHATD_OK);
    assert_int_equal(json_out_kv_int(&b, false, "n", 0), CHATD_OK);
    assert_int_equal(json_out_kv_int(&b, false, "max", INT64_MAX), CHATD_OK);
    assert_int_equal(json_out_kv_int(&b, false, "min", INT64_MIN), CHATD_OK);
    assert_int_equal(json_out_key(&b, false, "system"), CHATD_OK);
    assert_int_equal(buf_append_char(&b, '{'), CHATD_OK);
    assert_int_equal(json_out_kv_int(&b, true, "neg", -42), CHATD_OK);
    assert_int_equal(buf_append_str(&b, "}}"), CHATD_OK);
    assert_string_equal(b.ptr, "{\"status\": \"成功\", \"message\": \"会话历史已清除\", "
                               "\"ok\": true, \"n\": 0, \"max\": 9223372036854775807, "
                               "\"min\": -9223372036854775808, \"system\": {\"neg\": -42}}");
    json_t *v = json_loadb(b.ptr, b.len, 0, NULL);
    assert_non_null(v);
    json_decref(v);
    buf_reset(&b);

    /* keys are escaped like any string */
    assert_int_equal(json_out_kv_str(&b, true, "a\"b", "\n", 1), CHATD_OK);
    assert_string_equal(b.ptr, "\"a\\\"b\": \"\\n\"");
    buf_release(&b);
}

static void cap_is_enforced(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(json_out_str(&b, "abcdef", 6), CHATD_OK); /* 8 bytes with quotes */
    assert_string_equal(b.ptr, "\"abcdef\"");
    buf_reset(&b);
    assert_int_equal(json_out_str(&b, "abcdefg", 7), CHATD_ETOOBIG);
    buf_reset(&b);
    assert_int_equal(json_out_str(&b, "\n\n\n\n", 4), CHATD_ETOOBIG); /* escapes count */
    buf_release(&b);
}

static void utf8_prefix(void **state)
{
    (void)state;
    bool complete;
    assert_int_equal(utf8_valid_prefix("", 0, &complete), 0);
    assert_true(complete);
    assert_int_equal(utf8_valid_prefix("abc", 3, &complete), 3);
    assert_true(complete);
    /* cut inside a character: more input may finish it */
    assert_int_equal(utf8_valid_prefix("ab\xe4\xb8", 4, &complete), 2);
    assert_false(complete);
    assert_int_equal(utf8_valid_prefix("\xf0\x9f", 2, &complete), 0);
    assert_false(complete);
    assert_int_equal(utf8_valid_prefix("中\xe6", 4, &complete), 3);
    assert_false(complete);
    /* invalid: no more input can help */
    assert_int_equal(utf8_valid_prefix("ab\xff", 3, &complete), 2);
    assert_true(complete);
    assert_int_equal(utf8_valid_prefix("\xed\xa0", 2, &complete), 0); /* a surrogate already */
    assert_true(complete);
    assert_int_equal(utf8_valid_prefix("\xe0\x80", 2, &complete), 0); /* overlong already */
    assert_true(complete);
    assert_int_equal(utf8_valid_prefix("\xf4\x90", 2, &complete), 0); /* > U+10FFFF already */
    assert_true(complete);
    assert_int_equal(utf8_valid_prefix("a\x80"
                                       "b",
                                       3, &complete),
                     1);
    assert_true(complete);

    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("你好🌟", strlen("你好🌟")));
    assert_false(utf8_valid("\xc3", 1));
    assert_false(utf8_valid("\xed\xa0\x80", 3));
    assert_false(utf8_valid("\xc0\x80", 2));
    assert_true(utf8_valid("a\0b", 3)); /* NUL is valid UTF-8 */
}

/* The word-at-a-time fast path: every byte that needs attention, at every
 * offset of a 24-byte ASCII string, must come out exactly as alone. */
static void specials_at_every_offset(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        bool special = c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
        if (!special && c != 0x7f && c != 'a')
            continue;
        for (size_t at = 0; at < 24; at++) {
            char in[24];
            memset(in, 'x', sizeof in);
            in[at] = (char)c;
            struct buf alone = BUF_INIT, got = BUF_INIT, want = BUF_INIT;
            assert_int_equal(json_out_str(&alone, &in[at], 1), CHATD_OK);
            /* what the whole must be: x's, the byte's escape, x's */
            buf_append_char(&want, '"');
            buf_append(&want, in, at);
            buf_append(&want, alone.ptr + 1, alone.len - 2);
            buf_append(&want, in + at + 1, sizeof in - at - 1);
            buf_append_char(&want, '"');
            assert_int_equal(json_out_str(&got, in, sizeof in), CHATD_OK);
            if (got.len != want.len || memcmp(got.ptr, want.ptr, got.len) != 0)
                fail_msg("byte 0x%02x at %zu: got %s", c, at, got.ptr);
            buf_release(&alone);
            buf_release(&got);
            buf_release(&want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quotes_and_backslash),
        cmocka_unit_test(control_characters),
        cmocka_unit_test(unicode_passes),
        cmocka_unit_test(invalid_utf8_replaced),
        cmocka_unit_test(nul_bytes),
        cmocka_unit_test(random_bytes_always_valid_json),
        cmocka_unit_test(kv_helpers_exact_bytes),
        cmocka_unit_test(cap_is_enforced),
        cmocka_unit_test(utf8_prefix),
        cmocka_unit_test(specials_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
