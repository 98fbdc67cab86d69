/*
 * cache.c - the cache.h front: each function forwards to the backend's
 * table (backend.h), so callers never know which backend is behind. A
 * build without hiredis answers "not built" for the Redis backend here.
 */
#include <stdio.h>

#include "cache/backend.h"

void cache_free(struct cache *c)
{
    if (c)
        c->ops->free(c);
}

bool cache_get(struct cache *c, const char *conv_id, const char *question, size_t question_len,
               int64_t now, struct buf *out)
{
    return c->ops->get(c, conv_id, question, question_len, now, out);
}

void cache_put(struct cache *c, const char *conv_id, const char *question, size_t question_len,
               const char *answer, size_t answer_len, int64_t now)
{
    c->ops->put(c, conv_id, question, question_len, answer, answer_len, now);
}

void cache_remove_conversation(struct cache *c, const char *conv_id)
{
    c->ops->remove_conversation(c, conv_id);
}

size_t cache_count(struct cache *c)
{
    size_t n;
    char why[1];
    return c->ops->probe(c, &n, why, sizeof why) ? n : 0;
}

bool cache_expired(int64_t put, int64_t now, int64_t ttl)
{
    int64_t age;
    if (__builtin_sub_overflow(now, put, &age))
        return now > put;
    return age > ttl;
}

bool cache_probe(struct cache *c, size_t *count, char *why, size_t why_len)
{
    *count = 0;
    if (why_len)
        why[0] = '\0';
    return c->ops->probe(c, count, why, why_len);
}

#ifndef CHATD_HAVE_HIREDIS
struct cache *cache_redis_new(const struct cache_options *opt, const struct cache_redis_options *ro,
                              char *why, size_t why_len)
{
    (void)opt;
    (void)ro;
    snprintf(why, why_len, "chatd was built without hiredis (libhiredis-dev)");
    return NULL;
}
#endif
