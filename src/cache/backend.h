/*
 * backend.h - private to src/cache: the table of functions a cache backend
 * fills in, and the hash the backends share.
 *
 * Every backend's object starts with a struct cache whose ops point at its
 * table (SQLite's sqlite3_file / sqlite3_io_methods pattern), so cache.h's
 * functions forward with one indirect call and cache.h names no backend
 * type. Each entry has exactly the contract of the cache.h function of the
 * same name.
 */
#ifndef CHATD_CACHE_BACKEND_H
#define CHATD_CACHE_BACKEND_H

#include <stdint.h>

#include "cache/cache.h"

struct cache_ops {
    const char *name; /* "memory", "redis" */
    bool (*get)(struct cache *c, const char *conv_id, const char *question, size_t question_len,
                int64_t now, struct buf *out);
    void (*put)(struct cache *c, const char *conv_id, const char *question, size_t question_len,
                const char *answer, size_t answer_len, int64_t now);
    void (*remove_conversation)(struct cache *c, const char *conv_id);
    bool (*probe)(struct cache *c, size_t *count, char *why, size_t why_len);
    void (*free)(struct cache *c); /* frees the whole backend object */
};

/* The first member of every backend's object. */
struct cache {
    const struct cache_ops *ops;
};

/* SipHash-2-4 (Aumasson and Bernstein, 2012) of n bytes at p under the
 * 128-bit key (k0, k1): a keyed hash whose collisions cannot be found
 * without the key, so a cache keyed with a secret random key cannot be
 * flooded into one bucket. Pure function; p may be NULL when n is 0. */
uint64_t cache_siphash(uint64_t k0, uint64_t k1, const void *p, size_t n);

/* The TTL rule of every backend: an entry put at `put` (usec) is still
 * valid at now while now - put <= ttl (overflow-safe). */
bool cache_expired(int64_t put, int64_t now, int64_t ttl);

#endif
