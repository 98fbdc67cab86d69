/*
 * test_cache.c - the in-process response cache (src/cache/memory.c).
 *
 * Time is passed in, so TTL boundaries are tested to the microsecond. A
 * cache of at most 127 entries is one shard, an exact LRU, which is what
 * the order tests rely on; bigger caches exercise the shards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "cache/cache.h"
#include "cache_check.h"
#include "core/buf.h"

static struct cache *new_cache(size_t max_entries, int64_t ttl)
{
    struct cache_options opt = {.max_entries = max_entries, .ttl = ttl};
    return cache_memory_new(&opt);
}

static void test_siphash_reference_vectors(void **state)
{
    (void)state;
    /* From the SipHash paper: key 00 01 .. 0f, messages 00 01 .. (n-1). */
    unsigned char msg[15];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)i;
    uint64_t k0 = UINT64_C(0x0706050403020100), k1 = UINT64_C(0x0f0e0d0c0b0a0908);
    assert_true(cache_siphash(k0, k1, msg, 0) == UINT64_C(0x726fdb47dd0e0e31));
    assert_true(cache_siphash(k0, k1, msg, 15) == UINT64_C(0xa129ca6149be45e5));
}

static void test_put_get(void **state)
{
    (void)state;
    struct cache *c = new_cache(100, 1000);
    assert_true(miss(c, "conv-a", "hello", 0));
    put(c, "conv-a", "hello", "world", 0);
    assert_true(HIT(c, "conv-a", "hello", 10, "world"));
    assert_true(miss(c, "conv-a", "hello!", 10));
    assert_true(miss(c, "conv-b", "hello", 10)); /* same question, other conversation */
    assert_int_equal(cache_count(c), 1);
    cache_free(c);
    cache_free(NULL);
}

static void test_get_appends_to_buffer(void **state)
{
    (void)state;
    struct cache *c = new_cache(100, 1000);
    struct buf out = BUF_INIT;
    put(c, "conv", "q", "answer", 0);
    assert_int_equal(buf_append_str(&out, "pre:"), CHATD_OK);
    assert_true(cache_get(c, "conv", "q", 1, 0, &out));
    assert_int_equal(out.len, 10);
    assert_memory_equal(out.ptr, "pre:answer", 10);
    buf_release(&out);
    cache_free(c);
}

static void test_lru_eviction_order(void **state)
{
    (void)state;
    struct cache *c = new_cache(3, 1000);
    put(c, "conv", "a", "A", 0);
    put(c, "conv", "b", "B", 1);
    put(c, "conv", "c", "C", 2);
    assert_true(HIT(c, "conv", "a", 3, "A")); /* a is now the newest; b the oldest */
    put(c, "conv", "d", "D", 4);
    assert_int_equal(cache_count(c), 3);
    assert_true(miss(c, "conv", "b", 5));
    assert_true(HIT(c, "conv", "a", 5, "A"));
    assert_true(HIT(c, "conv", "c", 5, "C"));
    assert_true(HIT(c, "conv", "d", 5, "D"));
    /* Order now (oldest first): a, c, d. Two more puts evict a then c. */
    put(c, "other", "e", "E", 6);
    assert_true(miss(c, "conv", "a", 7));
    put(c, "other", "f", "F", 7);
    assert_true(miss(c, "conv", "c", 8));
    assert_true(HIT(c, "conv", "d", 8, "D"));
    assert_true(HIT(c, "other", "e", 8, "E"));
    assert_true(HIT(c, "other", "f", 8, "F"));
    assert_int_equal(cache_count(c), 3);
    cache_free(c);
}

static void test_replace_refreshes_value_time_and_order(void **state)
{
    (void)state;
    struct cache *c = new_cache(2, 500);
    put(c, "conv", "q", "one", 0);
    put(c, "conv", "r", "R", 1);
    put(c, "conv", "q", "two", 1000); /* replaces: newer answer, put time and LRU place */
    assert_int_equal(cache_count(c), 2);
    assert_true(HIT(c, "conv", "q", 1500, "two"));
    put(c, "conv", "s", "S", 1500); /* evicts r, not q */
    assert_true(miss(c, "conv", "r", 1500));
    assert_true(HIT(c, "conv", "q", 1500, "two"));
    cache_free(c);
}

static void test_ttl_exact_boundary(void **state)
{
    (void)state;
    const int64_t ttl = 500, t0 = INT64_C(1739179800000000);
    struct cache *c = new_cache(10, ttl);
    put(c, "conv", "q", "a", t0);
    assert_true(HIT(c, "conv", "q", t0 - 1, "a"));   /* clock stepped back */
    assert_true(HIT(c, "conv", "q", t0 + ttl, "a")); /* put at now - ttl: still a hit */
    assert_int_equal(cache_count(c), 1);
    assert_true(miss(c, "conv", "q", t0 + ttl + 1)); /* one microsecond later: gone */
    assert_int_equal(cache_count(c), 0);             /* and removed */
    /* A hit does not extend the TTL: only a put does. */
    put(c, "conv", "q", "a", t0);
    assert_true(HIT(c, "conv", "q", t0 + ttl - 1, "a"));
    assert_true(miss(c, "conv", "q", t0 + ttl + 1));
    cache_free(c);
}

static void test_ttl_extreme_times(void **state)
{
    (void)state;
    struct cache *c = new_cache(10, INT64_MAX);
    put(c, "conv", "q", "a", INT64_MIN);
    assert_true(miss(c, "conv", "q", INT64_MAX)); /* age overflows: expired */
    put(c, "conv", "q", "a", 0);
    assert_true(HIT(c, "conv", "q", INT64_MAX, "a"));
    cache_free(c);
}

static void test_remove_conversation(void **state)
{
    (void)state;
    struct cache *c = new_cache(100, 1000);
    put(c, "A", "1", "a1", 0);
    put(c, "A", "2", "a2", 0);
    put(c, "A", "3", "a3", 0);
    put(c, "B", "1", "b1", 0);
    put(c, "B", "2", "b2", 0);
    assert_int_equal(cache_count(c), 5);
    cache_remove_conversation(c, "A");
    assert_int_equal(cache_count(c), 2);
    assert_true(miss(c, "A", "1", 1));
    assert_true(miss(c, "A", "2", 1));
    assert_true(miss(c, "A", "3", 1));
    assert_true(HIT(c, "B", "1", 1, "b1"));
    assert_true(HIT(c, "B", "2", 1, "b2"));
    cache_remove_conversation(c, "A");       /* again: nothing */
    cache_remove_conversation(c, "unknown"); /* never seen: nothing */
    assert_int_equal(cache_count(c), 2);
    put(c, "A", "1", "again", 2); /* the conversation can come back */
    assert_true(HIT(c, "A", "1", 3, "again"));
    cache_free(c);
}

static void test_remove_conversation_sharded(void **state)
{
    (void)state;
    char conv[32], q[32];
    struct cache *c = new_cache(10000, 1000000);
    for (int i = 0; i < 200; i++) {
        snprintf(conv, sizeof conv, "conv-%d", i);
        for (int j = 0; j < 10; j++) {
            snprintf(q, sizeof q, "question %d", j);
            put(c, conv, q, conv, 0);
        }
    }
    assert_int_equal(cache_count(c), 2000);
    for (int i = 0; i < 200; i += 2) {
        snprintf(conv, sizeof conv, "conv-%d", i);
        cache_remove_conversation(c, conv);
    }
    assert_int_equal(cache_count(c), 1000);
    for (int i = 0; i < 200; i++) {
        snprintf(conv, sizeof conv, "conv-%d", i);
        snprintf(q, sizeof q, "question %d", i % 10);
        if (i % 2)
            assert_true(HIT(c, conv, q, 1, conv));
        else
            assert_true(miss(c, conv, q, 1));
    }
    cache_free(c);
}

static void test_disabled_when_max_entries_zero(void **state)
{
    (void)state;
    struct cache *c = new_cache(0, 1000);
    put(c, "conv", "q", "a", 0);
    assert_true(miss(c, "conv", "q", 0));
    assert_int_equal(cache_count(c), 0);
    cache_remove_conversation(c, "conv");
    cache_free(c);
}

static void test_nul_bytes_and_empty(void **state)
{
    (void)state;
    struct cache *c = new_cache(100, 1000);
    static const char q1[] = "a\0b", q2[] = "a\0c", ans[] = "x\0y\0z";
    cache_put(c, "conv", q1, 3, ans, 5, 0);
    cache_put(c, "conv", q2, 3, "two", 3, 0);
    cache_put(c, "conv", "a", 1, "one", 3, 0);
    cache_put(c, "conv", "", 0, "", 0, 0); /* empty question and answer */
    assert_int_equal(cache_count(c), 4);
    assert_true(hit(c, "conv", q1, 3, 1, ans, 5));
    assert_true(hit(c, "conv", q2, 3, 1, "two", 3));
    assert_true(hit(c, "conv", "a", 1, 1, "one", 3));
    assert_true(hit(c, "conv", NULL, 0, 1, "", 0));
    assert_true(miss(c, "conv", "b", 1));
    cache_free(c);
}

static void test_buffer_cap_is_a_miss_not_a_loss(void **state)
{
    (void)state;
    struct cache *c = new_cache(10, 1000);
    struct buf small;
    buf_init(&small, 4);
    put(c, "conv", "q", "a long answer", 0);
    assert_false(cache_get(c, "conv", "q", 1, 0, &small));
    assert_int_equal(small.len, 0);
    buf_release(&small);
    assert_true(HIT(c, "conv", "q", 0, "a long answer"));
    cache_free(c);
}

static void test_capacity_is_exact_across_shards(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 5, 63, 64, 127, 128, 1000, 1030, 5000};
    char conv[32], q[32];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        struct cache *c = new_cache(sizes[s], 1000);
        for (int i = 0; i < 20000; i++) {
            snprintf(conv, sizeof conv, "conv-%d", i % 701);
            snprintf(q, sizeof q, "q-%d", i);
            put(c, conv, q, "answer", i);
            assert_true(cache_count(c) <= sizes[s]);
        }
        /* Every shard has been filled: the split adds up to max_entries. */
        assert_int_equal(cache_count(c), sizes[s]);
        for (int i = 0; i < 701; i++) {
            snprintf(conv, sizeof conv, "conv-%d", i);
            cache_remove_conversation(c, conv);
        }
        assert_int_equal(cache_count(c), 0);
        cache_free(c);
    }
}

struct worker {
    struct cache *c;
    unsigned seed;
    int hits;
    int bad; /* failures seen; cmocka must only assert on the main thread */
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    char conv[32], q[32], want[64];
    for (int i = 0; i < 20000; i++) {
        unsigned r = (unsigned)rand_r(&w->seed);
        int cv = (int)(r % 64), k = (int)((r >> 8) % 32);
        snprintf(conv, sizeof conv, "conv-%d", cv);
        snprintf(q, sizeof q, "question-%d", k);
        snprintf(want, sizeof want, "answer-%d-%d", cv, k);
        switch ((r >> 16) % 8) {
        case 0:
            cache_remove_conversation(w->c, conv);
            break;
        case 1:
        case 2:
        case 3:
            put(w->c, conv, q, want, i);
            break;
        default: {
            struct buf out = BUF_INIT;
            if (cache_get(w->c, conv, q, strlen(q), i, &out)) {
                /* Whoever put it, the answer for a key is always the same. */
                if (out.len != strlen(want) || memcmp(out.ptr, want, out.len) != 0)
                    w->bad++;
                w->hits++;
            }
            buf_release(&out);
        }
        }
        if (i % 1000 == 0 && cache_count(w->c) > 1000)
            w->bad++;
    }
    return NULL;
}

static void test_threads_smoke(void **state)
{
    (void)state;
    enum { N = 8 };
    pthread_t t[N];
    struct worker w[N];
    struct cache *c = new_cache(1000, INT64_MAX);
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.c = c, .seed = (unsigned)i * 7919u + 1};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    int hits = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        hits += w[i].hits;
        assert_int_equal(w[i].bad, 0);
    }
    assert_true(hits > 0);
    assert_true(cache_count(c) <= 1000);
    cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_reference_vectors),
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_get_appends_to_buffer),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_replace_refreshes_value_time_and_order),
        cmocka_unit_test(test_ttl_exact_boundary),
        cmocka_unit_test(test_ttl_extreme_times),
        cmocka_unit_test(test_remove_conversation),
        cmocka_unit_test(test_remove_conversation_sharded),
        cmocka_unit_test(test_disabled_when_max_entries_zero),
        cmocka_unit_test(test_nul_bytes_and_empty),
        cmocka_unit_test(test_buffer_cap_is_a_miss_not_a_loss),
        cmocka_unit_test(test_capacity_is_exact_across_shards),
        cmocka_unit_test(test_threads_smoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
