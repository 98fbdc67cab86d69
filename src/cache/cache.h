/*
 * cache.h - the response cache: (conversation id, question) -> answer.
 *
 * SPEC.md section 1: if the same message was answered in the same
 * conversation within the TTL, the stored answer is returned without an
 * upstream call. Backends sit behind a table of function pointers: an
 * in-process sharded LRU (memory.c), and Redis (redis.c), which several
 * chatd instances share.
 *
 * Threads: every function may be called from any thread at any time.
 * Time: `now` (usec) is passed in by the caller, so TTL tests are exact.
 * Capacity: at most max_entries entries; inserting into a full cache evicts
 * the least recently used entry (of the shard). max_entries 0 disables the
 * cache: get always misses, put does nothing, count is 0.
 */
#ifndef CHATD_CACHE_CACHE_H
#define CHATD_CACHE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

struct cache;

struct cache_options {
    size_t max_entries; /* 0 disables the cache */
    int64_t ttl;        /* usec an entry stays valid after its put */
};

/* An in-process sharded LRU. Never fails (aborts on OOM). */
struct cache *cache_memory_new(const struct cache_options *opt);

/* Where the Redis cache lives (CHATD_REDIS); strings are copied. */
struct cache_redis_options {
    const char *host;     /* name or address */
    unsigned port;        /* 1-65535 */
    unsigned db;          /* SELECTed on every connection */
    const char *password; /* AUTH on every connection; NULL for none; never logged */
    int64_t timeout;      /* usec for a connect and for each command; 0: 300 ms */
};

/*
 * A cache shared by every chatd using the same Redis database (redis.c
 * explains the keys). Redis being down is not an error here: the cache
 * starts anyway, every get misses and put/remove do nothing until Redis
 * answers again (cache_probe says so meanwhile). Returns NULL and a reason
 * in why (no secret in it) only if chatd was built without hiredis or an
 * option is invalid. opt has the memory cache's meaning: max_entries bounds
 * the entries all instances hold together, 0 disables the cache.
 */
struct cache *cache_redis_new(const struct cache_options *opt, const struct cache_redis_options *ro,
                              char *why, size_t why_len);
/* Frees the cache and every entry. NULL is ok. */
void cache_free(struct cache *c);

/* On a hit (entry present and put at or after now - ttl) appends the answer
 * to out, marks the entry most recently used and returns true. An entry
 * found expired is removed. Returns false on a miss, or if out's cap is hit. */
bool cache_get(struct cache *c, const char *conv_id, const char *question, size_t question_len,
               int64_t now, struct buf *out);
/* Inserts or replaces the entry, valid from now. */
void cache_put(struct cache *c, const char *conv_id, const char *question, size_t question_len,
               const char *answer, size_t answer_len, int64_t now);
/* Removes every entry of the conversation (DELETE, expiry). */
void cache_remove_conversation(struct cache *c, const char *conv_id);
/* Number of entries held (expired ones not yet evicted included); 0 if
 * the backend cannot be asked. */
size_t cache_count(struct cache *c);
/* For /health: true with *count as cache_count's if the backend answers;
 * false with a short reason in why (never a secret) if it does not, e.g.
 * Redis is down. Never blocks longer than the backend's timeout. */
bool cache_probe(struct cache *c, size_t *count, char *why, size_t why_len);

#endif
