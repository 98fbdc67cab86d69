/*
 * test_chunk_scan.c - the fast chunk scanner against jansson.
 *
 * Fixed cases check what it accepts, decodes and declines. The
 * differential test mutates realistic chunks at random (fixed seed) and
 * holds the scanner to its contract: whenever it accepts, jansson accepts
 * too and extracts exactly the same text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "llm/chunk_scan.h"

static char *decode(const struct chunk_text *t)
{
    struct buf b = BUF_INIT;
    if (!t->ptr)
        return NULL;
    assert_int_equal(chunk_unescape(t, &b), CHATD_OK);
    return buf_take(&b);
}

/* jansson's reading of a chunk, the way upstream_sse.c's full decoder
 * reads it; false if jansson rejects the chunk or its shape. */
static bool reference(const char *d, size_t n, char **content, char **reasoning)
{
    json_error_t jerr;
    *content = *reasoning = NULL;
    json_t *root = json_loadb(d, n, JSON_ALLOW_NUL, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return false;
    }
    bool ok = true;
    json_t *choices = json_object_get(root, "choices");
    json_t *err = json_object_get(root, "error");
    if (err && !json_is_null(err))
        ok = false;
    else if (choices && !json_is_null(choices) && !json_is_array(choices))
        ok = false;
    else if (json_array_size(choices) > 0) {
        json_t *c0 = json_array_get(choices, 0);
        json_t *delta = json_is_object(c0) ? json_object_get(c0, "delta") : NULL;
        if (!json_is_object(c0) || (delta && !json_is_null(delta) && !json_is_object(delta))) {
            ok = false;
        } else if (delta && json_is_object(delta)) {
            json_t *c = json_object_get(delta, "content");
            json_t *r = json_object_get(delta, "reasoning_content");
            if (!r || json_is_null(r))
                r = json_object_get(delta, "reasoning");
            if ((c && !json_is_null(c) && !json_is_string(c)) ||
                (r && !json_is_null(r) && !json_is_string(r)))
                ok = false;
            if (ok && json_is_string(c))
                *content = strndup(json_string_value(c), json_string_length(c));
            if (ok && json_is_string(r))
                *reasoning = strndup(json_string_value(r), json_string_length(r));
        }
    }
    json_decref(root);
    return ok;
}

static void assert_same_text(const char *fast, const char *ref)
{
    if (!fast || !ref) {
        /* absent/null and "" are both "nothing to report" */
        assert_true((!fast || !*fast) && (!ref || !*ref));
        return;
    }
    assert_string_equal(fast, ref);
}

static void check_accepts(const char *d, const char *content, const char *reasoning)
{
    struct chunk_fields f;
    assert_true(chunk_scan(d, strlen(d), &f));
    char *c = decode(&f.content), *r = decode(&f.reasoning);
    assert_same_text(c, content);
    assert_same_text(r, reasoning);
    free(c);
    free(r);
}

static void check_declines(const char *d)
{
    struct chunk_fields f;
    assert_false(chunk_scan(d, strlen(d), &f));
}

static void test_typical(void **state)
{
    (void)state;
    check_accepts(
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
        "\"logprobs\":null,\"finish_reason\":null}]}",
        "Hello", NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}", "",
                  NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"reasoning_content\":\"think\",\"content\":null}}]}",
                  NULL, "think");
    check_accepts("{\"choices\":[{\"delta\":{\"reasoning\":\"vllm\"}}]}", NULL, "vllm");
    check_accepts("{\"choices\":[{\"delta\":{\"reasoning_content\":null,\"reasoning\":\"r\"}}]}",
                  NULL, "r");
    check_accepts("{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"total_tokens\":5}}", NULL,
                  NULL);
    check_accepts("{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", NULL, NULL);
    check_accepts(
        "  {\"choices\" : [ { \"delta\" : { \"content\" : \"a b\" } } ] , \"x\": -0.5 }\r\n", "a b",
        NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"你好🌟\"}}]}", "你好🌟", NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"x\"}},{\"delta\":{\"content\":\"y\"}}]}",
                  "x", NULL);
}

static void test_escapes(void **state)
{
    (void)state;
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"a\\nb\\t\\\"q\\\"\\\\\\/\\b\\f\\r\"}}]}",
                  "a\nb\t\"q\"\\/\b\f\r", NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"\\u4f60\\u597D\"}}]}", "你好", NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\ude00!\"}}]}", "😀!", NULL);
    check_accepts("{\"choices\":[{\"delta\":{\"content\":\"\\u00e9\\u0041\"}}]}", "éA", NULL);
}

static void test_declines(void **state)
{
    (void)state;
    check_declines("{\"error\":{\"message\":\"boom\"}}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"c\\u006fntent\":\"a\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\\u0000\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\\udc00\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"n\":1e5}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"n\":12345678901234567890}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\"}}]} x");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\xe0\x80\x80\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"\xed\xa0\x80\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\nb\"}}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":5}}]}");
    check_declines("{\"choices\":{}}");
    check_declines("{\"choices\":[5]}");
    check_declines("{\"choices\":[{\"delta\":\"x\"}]}");
    check_declines("{\"choices\":[{\"delta\":{\"content\":\"a\"}}],}");
    check_declines("{\"a\":01}");
    check_declines("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}");
    check_declines("{\"a\":tru}");
    check_declines("{\"a\":\"\\x\"}");
    check_declines("");
    check_declines("[]");
}

/* A small fixed-seed PRNG: the test is the same on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_differential(void **state)
{
    static const char *const corpus[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi "
        "\\\"you\\\"\"},"
        "\"finish_reason\":null}]}",
        "{\"choices\":[{\"delta\":{\"reasoning_content\":\"\\u4f60 "
        "\\ud83d\\ude00\",\"content\":null}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"你好 "
        "🌟\\n\"},\"logprobs\":{\"a\":[1,2.5,true,false]}}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2}}",
        "{\"choices\":[{\"delta\":{\"reasoning\":\"r\",\"content\":\"c\"}}],\"x\":[{},[],\"s\"]}",
    };
    static const char alphabet[] = "{}[]\":,\\ nu0-1.eE\xe4\xbd\xa0\xff\x80tf\n";
    (void)state;
    size_t accepted = 0, agreed_rejects = 0;
    for (int iter = 0; iter < 60000; iter++) {
        const char *base = corpus[rng() % (sizeof corpus / sizeof corpus[0])];
        char d[1024];
        size_t n = strlen(base);
        memcpy(d, base, n);
        int edits = (int)(rng() % 4);
        for (int e = 0; e < edits && n > 1; e++) {
            size_t at = rng() % n;
            switch (rng() % 4) {
            case 0:
                d[at] = alphabet[rng() % (sizeof alphabet - 1)];
                break;
            case 1:
                memmove(d + at, d + at + 1, n - at - 1);
                n--;
                break;
            case 2:
                if (n + 1 < sizeof d) {
                    memmove(d + at + 1, d + at, n - at);
                    d[at] = alphabet[rng() % (sizeof alphabet - 1)];
                    n++;
                }
                break;
            default:
                n = at + 1;
                break;
            }
        }
        struct chunk_fields f;
        char *rc, *rr;
        bool ref_ok = reference(d, n, &rc, &rr);
        if (chunk_scan(d, n, &f)) {
            accepted++;
            if (!ref_ok)
                fail_msg("fast path accepted what jansson refuses: %.*s", (int)n, d);
            char *c = decode(&f.content), *r = decode(&f.reasoning);
            assert_same_text(c, rc);
            assert_same_text(r, rr);
            free(c);
            free(r);
        } else if (!ref_ok) {
            agreed_rejects++;
        }
        free(rc);
        free(rr);
    }
    /* The test means something only if both verdicts happened often. */
    assert_true(accepted > 5000);
    assert_true(agreed_rejects > 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typical),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_declines),
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
