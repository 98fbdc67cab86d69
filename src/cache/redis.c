/*
 * redis.c - the response cache of cache.h kept in Redis (hiredis), so that
 * every chatd instance using the same Redis database shares it: a question
 * answered through one instance is a hit through any other.
 *
 * Keys (nothing in them depends on the process, unlike memory.c's random
 * SipHash key, so every instance computes the same names):
 *
 *   chatd:c:{conversation id}  a hash: field = 32 hex digits, a 128-bit
 *                              digest of the question (SipHash-2-4 under two
 *                              fixed, public keys); value = put time (usec,
 *                              8 bytes big-endian), question length (8
 *                              bytes), the question, the answer. The
 *                              question is compared on get, so a digest
 *                              collision is a miss, never a wrong answer.
 *   chatd:entries              a sorted set of every entry (member = field
 *                              followed by the conversation id; score = the
 *                              usec the entry expires), for the count and
 *                              for the max_entries bound.
 *
 * One hash per conversation makes cache_remove_conversation one atomic
 * script (the hash's fields leave the sorted set, then DEL): there is no
 * window in which a concurrent put could leave an entry outside the hash
 * that a later removal would miss. A put that runs after the removal (its
 * chat finished after the DELETE) creates the hash again; such an entry
 * cannot be read (the conversation is gone, and chat.c looks the cache up
 * only for existing conversations; ids are random UUIDs, never reused) and
 * leaves with the hash's expiry. Removal is idempotent, so every instance's
 * sweeper may remove the same expired conversations at once.
 *
 * Time: an entry is valid while now - put_time <= ttl, with now and
 * put_time the callers' clocks (as in memory.c; instances' clocks agree to
 * NTP precision, far below any TTL). A get that finds an expired entry
 * deletes it (if no other instance replaced it meanwhile). Redis itself
 * reclaims the memory: each put moves the hash's PEXPIRE to at least the
 * TTL, so a conversation's hash vanishes a TTL after its last put.
 *
 * Size: max_entries bounds the entries of all instances together: a put
 * that takes the sorted set past it removes the entries that expire first
 * (the oldest puts; memory.c evicts the least recently *used* instead - a
 * get here is one HGET and writes nothing). 0 disables the cache: no
 * connection is ever made. Redis's own maxmemory (with allkeys-lru) still
 * bounds its memory; if Redis evicts keys, the count is high until the
 * lost entries' expiry times pass. cache_probe prunes the expired members
 * of the sorted set and returns its size: the live entries of every
 * instance, the same on all of them.
 *
 * Every write is one Lua script (atomic; the eviction touches other
 * conversations' hashes, so this is for a standalone Redis, not Redis
 * Cluster). Questions, answers and ids are sent as counted arguments:
 * binary-safe, and nothing is ever spliced into a command.
 *
 * Connections: hiredis contexts are not thread-safe, so each call takes one
 * from a mutex-protected idle list (or connects a new one: AUTH, SELECT)
 * and gives it back; the list grows to the number of threads that call at
 * once. Connects and commands have a timeout (300 ms by default), so a dead
 * or unreachable Redis delays a chat by at most about that: a failure marks
 * Redis down, drops every idle connection, and for the next second every
 * call returns at once (get misses, put and remove do nothing); then one
 * thread tries to connect again, the others still return at once. The
 * outage is logged once when it starts and once when it ends, never per
 * request, and never with the password. Entries that a put or remove
 * skipped during an outage are just missing or left to their TTL.
 * Hostnames are resolved by getaddrinfo, which the timeout does not bound.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "cache/backend.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/timefmt.h"

#define DEFAULT_TIMEOUT  (300 * 1000)        /* usec */
#define REFUSED_LOG_USEC (60 * USEC_PER_SEC) /* between "refused" log lines */
#define RETRY_USEC       USEC_PER_SEC        /* between connect attempts while down */
#define CONV_PREFIX      "chatd:c:"          /* + conversation id: its hash */
#define ENTRIES_KEY      "chatd:entries"     /* sorted set of every entry */
#define DIGEST_HEX       32                  /* field name length */
#define VALUE_HEAD       16                  /* put time + question length */

struct conn {
    struct conn *next;
    redisContext *ctx;
};

struct cache_redis {
    struct cache base;
    int64_t ttl;        /* usec */
    size_t max_entries; /* 0: disabled, never connects */
    char *host;
    int port;
    unsigned db;
    char *password; /* NULL if none; never logged */
    struct timeval timeout;

    pthread_mutex_t lock;   /* guards everything below */
    struct conn *idle;      /* connections nobody is using */
    bool down;              /* the last attempt failed; not yet recovered */
    bool connecting;        /* while down: one thread is trying */
    int64_t retry_at;       /* mono usec: no connect attempt before it while down */
    char reason[200];       /* why it is down */
    int64_t refused_log;    /* mono usec of the last "refused" line */
    unsigned refused_quiet; /* refusals not logged since */
};

/* ---- the scripts ---- */

/* KEYS: conversation hash, entries. ARGV: field, value, ttl ms, member,
 * expiry score, max entries, conversation key prefix, now (usec). The
 * expired members leave the sorted set first, so the bound counts live
 * entries only. */
static const char put_script[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[8])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "local ttl = tonumber(ARGV[3])\n"
    "if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
    "redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])\n"
    "local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])\n"
    "if over > 0 then\n"
    "  local old = redis.call('ZPOPMIN', KEYS[2], over)\n"
    "  for i = 1, #old, 2 do\n"
    "    redis.call('HDEL', ARGV[7] .. string.sub(old[i], 33), string.sub(old[i], 1, 32))\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS: conversation hash, entries. ARGV: conversation id. */
static const char remove_script[] = "local f = redis.call('HKEYS', KEYS[1])\n"
                                    "for i = 1, #f do\n"
                                    "  redis.call('ZREM', KEYS[2], f[i] .. ARGV[1])\n"
                                    "end\n"
                                    "return redis.call('DEL', KEYS[1])\n";

/* KEYS: conversation hash, entries. ARGV: field, value head seen, member.
 * Deletes the entry only if it is still the expired one a get saw. */
static const char expire_script[] = "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
                                    "if v and string.sub(v, 1, 16) == ARGV[2] then\n"
                                    "  redis.call('HDEL', KEYS[1], ARGV[1])\n"
                                    "  redis.call('ZREM', KEYS[2], ARGV[3])\n"
                                    "end\n"
                                    "return 0\n";

/* KEYS: entries. ARGV: now (usec). */
static const char count_script[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])\n"
    "return redis.call('ZCARD', KEYS[1])\n";

/* ---- connections ---- */

static void free_list(struct conn *c)
{
    struct conn *next;
    for (; c; c = next) {
        next = c->next;
        redisFree(c->ctx);
        free(c);
    }
}

/* Describes a failed context or reply in a few words (hiredis's errstr
 * holds errno's text or Redis's message; neither carries the password). */
static void describe(redisContext *ctx, const redisReply *reply, const char *what, char *why,
                     size_t n)
{
    if (reply && reply->type == REDIS_REPLY_ERROR)
        snprintf(why, n, "%s: %.*s", what, (int)(reply->len < 120 ? reply->len : 120), reply->str);
    else if (!ctx)
        snprintf(why, n, "%s: out of memory", what);
    else if (ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        snprintf(why, n, "%s: timed out", what);
    else if (ctx->err == REDIS_ERR_EOF)
        snprintf(why, n, "%s: connection closed by redis", what);
    else if (ctx->err)
        snprintf(why, n, "%s: %s", what, ctx->errstr);
    else
        snprintf(why, n, "%s: unexpected reply", what);
}

/* Connects, AUTHs and SELECTs; NULL with why on failure. */
static redisContext *connect_new(struct cache_redis *r, char *why, size_t n)
{
    redisContext *ctx = redisConnectWithTimeout(r->host, r->port, r->timeout);
    redisReply *reply = NULL;
    if (!ctx || ctx->err) {
        describe(ctx, NULL, "connect", why, n);
        goto fail;
    }
    if (redisSetTimeout(ctx, r->timeout) != REDIS_OK) {
        describe(ctx, NULL, "connect", why, n);
        goto fail;
    }
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        size_t len[] = {4, strlen(r->password)};
        reply = redisCommandArgv(ctx, 2, argv, len);
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            describe(ctx, reply, "auth", why, n);
            goto fail;
        }
        freeReplyObject(reply);
        reply = NULL;
    }
    if (r->db) {
        char db[16];
        snprintf(db, sizeof db, "%u", r->db);
        const char *argv[] = {"SELECT", db};
        size_t len[] = {6, strlen(db)};
        reply = redisCommandArgv(ctx, 2, argv, len);
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            describe(ctx, reply, "select", why, n);
            goto fail;
        }
        freeReplyObject(reply);
    }
    return ctx;
fail:
    if (reply)
        freeReplyObject(reply);
    if (ctx)
        redisFree(ctx);
    return NULL;
}

/* Called with the lock held: Redis answered (again). */
static void mark_up(struct cache_redis *r)
{
    if (r->down)
        log_info("cache: redis %s:%d answers again; caching resumes", r->host, r->port);
    r->down = false;
    r->reason[0] = '\0';
}

/* Redis failed: remember why, stop trying for a second, drop the idle
 * connections (after a failure they are suspect: a restarted Redis has
 * closed them all). */
static void mark_down(struct cache_redis *r, const char *why)
{
    pthread_mutex_lock(&r->lock);
    struct conn *dead = r->idle;
    r->idle = NULL;
    if (!r->down)
        log_warn("cache: redis %s:%d unavailable (%s); answering uncached until it is back",
                 r->host, r->port, why);
    r->down = true;
    snprintf(r->reason, sizeof r->reason, "%s", why);
    r->retry_at = time_mono_usec() + RETRY_USEC;
    pthread_mutex_unlock(&r->lock);
    free_list(dead);
}

/* A connection for one call, or NULL (with why) if Redis is down. *fresh
 * tells a new connection from a reused one. */
static struct conn *acquire(struct cache_redis *r, bool *fresh, char *why, size_t n)
{
    pthread_mutex_lock(&r->lock);
    struct conn *c = r->idle;
    if (c) {
        r->idle = c->next;
        pthread_mutex_unlock(&r->lock);
        *fresh = false;
        return c;
    }
    bool probing = r->down;
    if (probing && (r->connecting || time_mono_usec() < r->retry_at)) {
        snprintf(why, n, "%s", r->reason);
        pthread_mutex_unlock(&r->lock);
        return NULL;
    }
    if (probing)
        r->connecting = true;
    pthread_mutex_unlock(&r->lock);

    redisContext *ctx = connect_new(r, why, n);
    if (probing) {
        pthread_mutex_lock(&r->lock);
        r->connecting = false;
        pthread_mutex_unlock(&r->lock);
    }
    if (!ctx) {
        mark_down(r, why);
        return NULL;
    }
    c = xmalloc(sizeof *c);
    c->ctx = ctx;
    c->next = NULL;
    *fresh = true;
    return c;
}

static void release(struct cache_redis *r, struct conn *c)
{
    pthread_mutex_lock(&r->lock);
    mark_up(r);
    c->next = r->idle;
    r->idle = c;
    pthread_mutex_unlock(&r->lock);
}

/*
 * Runs one command. Returns the reply (caller frees; it may be an error
 * reply, which leaves the connection usable) or NULL with why if Redis
 * cannot be reached. A reused connection that Redis closed (a restart) is
 * retried once on a new one.
 */
static redisReply *run(struct cache_redis *r, int argc, const char **argv, const size_t *len,
                       char *why, size_t n)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = false;
        struct conn *c = acquire(r, &fresh, why, n);
        if (!c)
            return NULL;
        redisReply *reply = redisCommandArgv(c->ctx, argc, argv, len);
        if (reply) {
            release(r, c);
            return reply;
        }
        int e = errno;
        bool closed = c->ctx->err == REDIS_ERR_EOF ||
                      (c->ctx->err == REDIS_ERR_IO && (e == ECONNRESET || e == EPIPE));
        describe(c->ctx, NULL, argv[0], why, n);
        redisFree(c->ctx);
        free(c);
        if (fresh || !closed)
            break;
        /* Drop the other stale idle connections too, then try a new one. */
        pthread_mutex_lock(&r->lock);
        struct conn *dead = r->idle;
        r->idle = NULL;
        pthread_mutex_unlock(&r->lock);
        free_list(dead);
    }
    mark_down(r, why);
    return NULL;
}

/* A command Redis refused (OOM under maxmemory noeviction, a replica's
 * READONLY, ...): not an outage, the connection is fine. Logged at most
 * once a minute, with how many were not logged since. */
static bool refused(struct cache_redis *r, const redisReply *reply, const char *what)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return false;
    int64_t now = time_mono_usec();
    pthread_mutex_lock(&r->lock);
    bool say = !r->refused_log || now - r->refused_log >= REFUSED_LOG_USEC;
    unsigned quiet = r->refused_quiet;
    if (say) {
        r->refused_log = now;
        r->refused_quiet = 0;
    } else {
        r->refused_quiet++;
    }
    pthread_mutex_unlock(&r->lock);
    if (say)
        log_warn("cache: redis refused %s: %.*s (%u more refusals since the last such line)", what,
                 (int)(reply->len < 200 ? reply->len : 200), reply->str, quiet);
    return true;
}

/* ---- keys and values ---- */

/* The hash's key, "chatd:c:" + id; caller frees. */
static char *conv_key(const char *conv_id, size_t *len)
{
    size_t idlen = strlen(conv_id);
    *len = sizeof CONV_PREFIX - 1 + idlen;
    char *k = xmalloc(*len + 1);
    memcpy(k, CONV_PREFIX, sizeof CONV_PREFIX - 1);
    memcpy(k + sizeof CONV_PREFIX - 1, conv_id, idlen + 1);
    return k;
}

/* 32 lowercase hex digits of a 128-bit digest of the question; the keys
 * are fixed so that every instance computes the same field. */
static void digest(const char *q, size_t n, char out[DIGEST_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t h[2] = {
        cache_siphash(UINT64_C(0x6368617464207265), UINT64_C(0x6469732063616368), q, n),
        cache_siphash(UINT64_C(0x7175657374696f6e), UINT64_C(0x2064696765737420), q, n),
    };
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 16; j++)
            out[i * 16 + j] = hex[(h[i] >> (60 - 4 * j)) & 0xf];
    out[DIGEST_HEX] = '\0';
}

/* The sorted-set member of an entry: field, then conversation id. */
static char *member(const char *field, const char *conv_id, size_t *len)
{
    size_t idlen = strlen(conv_id);
    *len = DIGEST_HEX + idlen;
    char *m = xmalloc(*len + 1);
    memcpy(m, field, DIGEST_HEX);
    memcpy(m + DIGEST_HEX, conv_id, idlen + 1);
    return m;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- the backend ---- */

static bool redis_get(struct cache *cache, const char *conv_id, const char *question,
                      size_t question_len, int64_t now, struct buf *out)
{
    struct cache_redis *r = (struct cache_redis *)cache;
    char why[200], field[DIGEST_HEX + 1];
    bool hit = false;
    if (!r->max_entries)
        return false;
    size_t klen;
    char *key = conv_key(conv_id, &klen);
    digest(question, question_len, field);
    const char *argv[] = {"HGET", key, field};
    size_t len[] = {4, klen, DIGEST_HEX};
    redisReply *reply = run(r, 3, argv, len, why, sizeof why);
    if (!reply || refused(r, reply, "a get") || reply->type != REDIS_REPLY_STRING)
        goto out;

    const unsigned char *v = (const unsigned char *)reply->str;
    size_t vlen = reply->len;
    if (vlen < VALUE_HEAD)
        goto out;
    int64_t put_time = (int64_t)get_be64(v);
    uint64_t qlen = get_be64(v + 8);
    if (qlen != question_len || qlen > vlen - VALUE_HEAD ||
        (qlen && memcmp(v + VALUE_HEAD, question, qlen) != 0))
        goto out; /* a digest collision, or not ours: a miss */
    if (cache_expired(put_time, now, r->ttl)) {
        size_t mlen;
        char *m = member(field, conv_id, &mlen);
        const char *xargv[] = {"EVAL", expire_script, "2", key, ENTRIES_KEY, field, reply->str, m};
        size_t xlen[] = {
            4,   sizeof expire_script - 1, 1, klen, sizeof ENTRIES_KEY - 1, DIGEST_HEX, VALUE_HEAD,
            mlen};
        redisReply *x = run(r, 8, xargv, xlen, why, sizeof why);
        if (x) {
            refused(r, x, "an expiry");
            freeReplyObject(x);
        }
        free(m);
        goto out;
    }
    hit = buf_append(out, v + VALUE_HEAD + qlen, vlen - VALUE_HEAD - qlen) == CHATD_OK;
out:
    if (reply)
        freeReplyObject(reply);
    free(key);
    return hit;
}

static void redis_put(struct cache *cache, const char *conv_id, const char *question,
                      size_t question_len, const char *answer, size_t answer_len, int64_t now)
{
    struct cache_redis *r = (struct cache_redis *)cache;
    char why[200], field[DIGEST_HEX + 1], ttl_ms[24], score[24], max[24], stamp[24];
    if (!r->max_entries)
        return;
    size_t klen, mlen, vlen = VALUE_HEAD + question_len + answer_len;
    char *key = conv_key(conv_id, &klen);
    digest(question, question_len, field);
    char *m = member(field, conv_id, &mlen);
    unsigned char *value = xmalloc(vlen);
    put_be64(value, (uint64_t)now);
    put_be64(value + 8, question_len);
    if (question_len)
        memcpy(value + VALUE_HEAD, question, question_len);
    if (answer_len)
        memcpy(value + VALUE_HEAD + question_len, answer, answer_len);
    /* The hash outlives its newest entry's validity by under a millisecond. */
    snprintf(ttl_ms, sizeof ttl_ms, "%lld", (long long)(r->ttl / 1000 + 1));
    int64_t until;
    if (__builtin_add_overflow(now, r->ttl, &until))
        until = INT64_MAX;
    snprintf(score, sizeof score, "%lld", (long long)until);
    snprintf(max, sizeof max, "%zu", r->max_entries);
    snprintf(stamp, sizeof stamp, "%lld", (long long)now);

    const char *argv[] = {"EVAL", put_script, "2",   key, ENTRIES_KEY, field, (const char *)value,
                          ttl_ms, m,          score, max, CONV_PREFIX, stamp};
    size_t len[] = {4,
                    sizeof put_script - 1,
                    1,
                    klen,
                    sizeof ENTRIES_KEY - 1,
                    DIGEST_HEX,
                    vlen,
                    strlen(ttl_ms),
                    mlen,
                    strlen(score),
                    strlen(max),
                    sizeof CONV_PREFIX - 1,
                    strlen(stamp)};
    redisReply *reply = run(r, 13, argv, len, why, sizeof why);
    if (reply) {
        refused(r, reply, "a put");
        freeReplyObject(reply);
    }
    free(value);
    free(m);
    free(key);
}

static void redis_remove_conversation(struct cache *cache, const char *conv_id)
{
    struct cache_redis *r = (struct cache_redis *)cache;
    char why[200];
    if (!r->max_entries)
        return;
    size_t klen;
    char *key = conv_key(conv_id, &klen);
    const char *argv[] = {"EVAL", remove_script, "2", key, ENTRIES_KEY, conv_id};
    size_t len[] = {4, sizeof remove_script - 1, 1, klen, sizeof ENTRIES_KEY - 1, strlen(conv_id)};
    redisReply *reply = run(r, 6, argv, len, why, sizeof why);
    if (reply) {
        refused(r, reply, "a removal");
        freeReplyObject(reply);
    }
    free(key);
}

static bool redis_probe(struct cache *cache, size_t *count, char *why, size_t why_len)
{
    struct cache_redis *r = (struct cache_redis *)cache;
    char now[24];
    bool ok = false;
    *count = 0;
    if (!r->max_entries)
        return true;
    snprintf(now, sizeof now, "%lld", (long long)time_now_usec());
    const char *argv[] = {"EVAL", count_script, "1", ENTRIES_KEY, now};
    size_t len[] = {4, sizeof count_script - 1, 1, sizeof ENTRIES_KEY - 1, strlen(now)};
    redisReply *reply = run(r, 5, argv, len, why, why_len);
    if (!reply)
        return false;
    if (reply->type == REDIS_REPLY_INTEGER) {
        *count = reply->integer > 0 ? (size_t)reply->integer : 0;
        ok = true;
    } else {
        describe(NULL, reply, "count", why, why_len);
        if (reply->type != REDIS_REPLY_ERROR)
            snprintf(why, why_len, "count: unexpected reply");
    }
    freeReplyObject(reply);
    return ok;
}

static void redis_free(struct cache *cache)
{
    struct cache_redis *r = (struct cache_redis *)cache;
    free_list(r->idle);
    pthread_mutex_destroy(&r->lock);
    free(r->host);
    if (r->password) {
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r);
}

static const struct cache_ops redis_ops = {
    .name = "redis",
    .get = redis_get,
    .put = redis_put,
    .remove_conversation = redis_remove_conversation,
    .probe = redis_probe,
    .free = redis_free,
};

struct cache *cache_redis_new(const struct cache_options *opt, const struct cache_redis_options *ro,
                              char *why, size_t why_len)
{
    if (!ro->host || !ro->host[0] || ro->port == 0 || ro->port > 65535) {
        snprintf(why, why_len, "redis: a host and a port 1-65535 are required");
        return NULL;
    }
    if (opt->ttl < 1000) {
        snprintf(why, why_len, "redis: the cache TTL must be at least a millisecond");
        return NULL;
    }
    struct cache_redis *r = xcalloc(1, sizeof *r);
    r->base.ops = &redis_ops;
    r->ttl = opt->ttl;
    r->max_entries = opt->max_entries;
    r->host = xstrdup(ro->host);
    r->port = (int)ro->port;
    r->db = ro->db;
    r->password = ro->password ? xstrdup(ro->password) : NULL;
    int64_t t = ro->timeout > 0 ? ro->timeout : DEFAULT_TIMEOUT;
    r->timeout.tv_sec = (time_t)(t / USEC_PER_SEC);
    r->timeout.tv_usec = (suseconds_t)(t % USEC_PER_SEC);
    pthread_mutex_init(&r->lock, NULL);
    return &r->base;
}
