/*
 * cache_check.h - the checks that the memory cache's tests (test_cache.c)
 * and the Redis cache's (tests/db/test_cache_redis.c) share: every backend
 * is held to the same cache.h contract, so they ask the same questions.
 * Include after cmocka.h.
 */
#ifndef CHATD_TESTS_CACHE_CHECK_H
#define CHATD_TESTS_CACHE_CHECK_H

#include <string.h>

#include "cache/cache.h"
#include "core/buf.h"

/* True on a hit whose answer is exactly (want, n). */
static inline bool hit(struct cache *c, const char *conv, const char *q, size_t qlen, int64_t now,
                       const char *want, size_t n)
{
    struct buf out = BUF_INIT;
    bool got = cache_get(c, conv, q, qlen, now, &out);
    bool same = got && out.len == n && (n == 0 || memcmp(out.ptr, want, n) == 0);
    buf_release(&out);
    return same;
}

#define HIT(c, conv, q, now, a) hit((c), (conv), (q), strlen(q), (now), (a), strlen(a))

/* True on a miss, which must leave out empty. */
static inline bool miss(struct cache *c, const char *conv, const char *q, int64_t now)
{
    struct buf out = BUF_INIT;
    bool got = cache_get(c, conv, q, strlen(q), now, &out);
    assert_int_equal(out.len, 0);
    buf_release(&out);
    return !got;
}

static inline void put(struct cache *c, const char *conv, const char *q, const char *a, int64_t now)
{
    cache_put(c, conv, q, strlen(q), a, strlen(a), now);
}

#endif
