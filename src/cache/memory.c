/*
 * memory.c - the in-process response cache of cache.h: a sharded LRU with
 * a TTL (cache.c holds the front that forwards to a backend's table).
 *
 * Sharding: a conversation's entries all live in one shard, picked by a
 * hash of its id, so that removing a conversation takes one lock. Up to 16
 * shards, each with its own mutex, but never fewer than 64 entries a shard
 * (a small cache is one shard, an exact LRU). max_entries is split across
 * the shards exactly, so the total never exceeds it.
 *
 * In a shard: a chained hash table of entries keyed by (conversation,
 * question bytes), an intrusive doubly linked LRU list (head = most recent;
 * a full shard evicts its tail), and a second table from conversation id to
 * a node listing that conversation's entries, so that
 * cache_remove_conversation costs O(that conversation's entries). Tables
 * double when their load passes 1 and never shrink (the entry count is
 * capped anyway). Questions and answers are counted bytes; NUL is fine.
 *
 * Hashing: SipHash-2-4 under a per-cache key from getrandom(2). The
 * conversation hash picks the shard and the conversation's bucket; the
 * entry hash is SipHash of the question under the key mixed with the
 * conversation hash. Hashes are computed and entries allocated before the
 * shard lock is taken; freeing happens after it is released.
 *
 * Expiry (cache.h): an entry put at time p is a hit for now <= p + ttl and
 * is removed when a get finds it later than that; entries nobody asks for
 * again leave by LRU eviction. No background thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cache/backend.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/timefmt.h"

#define SHARDS_MAX        16
#define SHARD_MIN_ENTRIES 64
#define TABLE_MIN         16 /* initial buckets of each table */

struct conv;

struct entry {
    struct entry *hnext;                 /* next in the bucket chain */
    struct entry *lru_prev, *lru_next;   /* shard LRU list, head = newest */
    struct entry *conv_prev, *conv_next; /* the conversation's entries */
    struct conv *conv;                   /* owning conversation node */
    uint64_t hash;                       /* of (conversation, question) */
    int64_t put_time;                    /* usec */
    size_t qlen;                         /* bytes of question in data */
    size_t alen;                         /* bytes of answer after it */
    char data[];                         /* question bytes, then answer bytes */
};

struct conv {
    struct conv *hnext;    /* next in the bucket chain */
    struct entry *entries; /* head of this conversation's entries */
    uint64_t hash;         /* of the id */
    char id[];             /* NUL-terminated */
};

struct shard {
    pthread_mutex_t lock;
    struct entry **ebuckets;           /* entry table */
    size_t emask;                      /* buckets - 1 (power of two) */
    size_t count;                      /* entries held */
    size_t cap;                        /* most entries held, >= 1 */
    struct conv **cbuckets;            /* conversation table */
    size_t cmask;                      /* buckets - 1 */
    size_t nconv;                      /* conversation nodes held */
    struct entry *lru_head, *lru_tail; /* most / least recently used */
    char pad[64];                      /* keeps hot locks off one cache line */
};

struct cache_memory {
    struct cache base;
    uint64_t k0, k1; /* SipHash key, random per cache */
    int64_t ttl;     /* usec */
    size_t nshards;  /* 0: the cache is disabled */
    struct shard *shards;
};

/* ---- SipHash-2-4, written from the paper's description ---- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

uint64_t cache_siphash(uint64_t k0, uint64_t k1, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    size_t whole = n & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(s + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (size_t i = 0; i < (n & 7); i++)
        last |= (uint64_t)s[whole + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- shard internals (all called with the shard locked) ---- */

static struct conv *conv_find(struct shard *sh, uint64_t h, const char *id)
{
    for (struct conv *v = sh->cbuckets[h & sh->cmask]; v; v = v->hnext)
        if (v->hash == h && strcmp(v->id, id) == 0)
            return v;
    return NULL;
}

static void conv_grow(struct shard *sh)
{
    size_t n = (sh->cmask + 1) * 2;
    struct conv **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i <= sh->cmask; i++) {
        struct conv *v = sh->cbuckets[i], *next;
        for (; v; v = next) {
            next = v->hnext;
            v->hnext = b[v->hash & (n - 1)];
            b[v->hash & (n - 1)] = v;
        }
    }
    free(sh->cbuckets);
    sh->cbuckets = b;
    sh->cmask = n - 1;
}

static struct conv *conv_add(struct shard *sh, uint64_t h, const char *id)
{
    size_t len = strlen(id);
    struct conv *v = xmalloc(sizeof *v + len + 1);
    v->entries = NULL;
    v->hash = h;
    memcpy(v->id, id, len + 1);
    if (sh->nconv + 1 > sh->cmask + 1)
        conv_grow(sh);
    v->hnext = sh->cbuckets[h & sh->cmask];
    sh->cbuckets[h & sh->cmask] = v;
    sh->nconv++;
    return v;
}

/* Unlinks a conversation node that has no entries left; caller frees it. */
static void conv_unlink(struct shard *sh, struct conv *v)
{
    struct conv **pp = &sh->cbuckets[v->hash & sh->cmask];
    while (*pp != v)
        pp = &(*pp)->hnext;
    *pp = v->hnext;
    sh->nconv--;
}

static struct entry *entry_find(struct shard *sh, struct conv *v, uint64_t h, const char *q,
                                size_t qlen)
{
    for (struct entry *e = sh->ebuckets[h & sh->emask]; e; e = e->hnext)
        if (e->hash == h && e->conv == v && e->qlen == qlen &&
            (qlen == 0 || memcmp(e->data, q, qlen) == 0))
            return e;
    return NULL;
}

static void entry_grow(struct shard *sh)
{
    size_t n = (sh->emask + 1) * 2;
    struct entry **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i <= sh->emask; i++) {
        struct entry *e = sh->ebuckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(sh->ebuckets);
    sh->ebuckets = b;
    sh->emask = n - 1;
}

static void lru_unlink(struct shard *sh, struct entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        sh->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        sh->lru_tail = e->lru_prev;
}

static void lru_push_head(struct shard *sh, struct entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = sh->lru_head;
    if (sh->lru_head)
        sh->lru_head->lru_prev = e;
    else
        sh->lru_tail = e;
    sh->lru_head = e;
}

/* Links e (its conv set) into the table, the LRU head and its conversation. */
static void entry_link(struct shard *sh, struct entry *e)
{
    if (sh->count + 1 > sh->emask + 1)
        entry_grow(sh);
    e->hnext = sh->ebuckets[e->hash & sh->emask];
    sh->ebuckets[e->hash & sh->emask] = e;
    lru_push_head(sh, e);
    e->conv_prev = NULL;
    e->conv_next = e->conv->entries;
    if (e->conv->entries)
        e->conv->entries->conv_prev = e;
    e->conv->entries = e;
    sh->count++;
}

/* Unlinks e from the table, the LRU and its conversation. Its conversation
 * node stays, possibly empty: the caller decides whether to drop it. */
static void entry_unlink(struct shard *sh, struct entry *e)
{
    struct entry **pp = &sh->ebuckets[e->hash & sh->emask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(sh, e);
    if (e->conv_prev)
        e->conv_prev->conv_next = e->conv_next;
    else
        e->conv->entries = e->conv_next;
    if (e->conv_next)
        e->conv_next->conv_prev = e->conv_prev;
    sh->count--;
}

/* Unlinks e and, if that emptied it, its conversation node. Both go on the
 * caller's lists, to be freed once the lock is released. */
static void entry_drop(struct shard *sh, struct entry *e, struct entry **dead_e,
                       struct conv **dead_c)
{
    struct conv *v = e->conv;
    entry_unlink(sh, e);
    e->hnext = *dead_e;
    *dead_e = e;
    if (!v->entries) {
        conv_unlink(sh, v);
        v->hnext = *dead_c;
        *dead_c = v;
    }
}

static void free_dead(struct entry *e, struct conv *v)
{
    struct entry *en;
    struct conv *vn;
    for (; e; e = en) {
        en = e->hnext;
        free(e);
    }
    for (; v; v = vn) {
        vn = v->hnext;
        free(v);
    }
}

/* ---- the memory backend ---- */

static struct shard *shard_of(struct cache_memory *m, uint64_t conv_hash)
{
    /* High bits pick the shard; low bits pick buckets inside it. */
    return &m->shards[(conv_hash >> 32) % m->nshards];
}

static uint64_t conv_hash(const struct cache_memory *m, const char *id)
{
    return cache_siphash(m->k0, m->k1, id, strlen(id));
}

static uint64_t entry_hash(const struct cache_memory *m, uint64_t ch, const char *q, size_t n)
{
    return cache_siphash(m->k0 ^ ch, m->k1, q, n);
}

static bool mem_get(struct cache *c, const char *conv_id, const char *question, size_t question_len,
                    int64_t now, struct buf *out)
{
    struct cache_memory *m = (struct cache_memory *)c;
    struct entry *dead_e = NULL;
    struct conv *dead_c = NULL;
    bool hit = false;

    if (!m->nshards)
        return false;
    uint64_t ch = conv_hash(m, conv_id);
    uint64_t eh = entry_hash(m, ch, question, question_len);
    struct shard *sh = shard_of(m, ch);

    pthread_mutex_lock(&sh->lock);
    struct conv *v = conv_find(sh, ch, conv_id);
    struct entry *e = v ? entry_find(sh, v, eh, question, question_len) : NULL;
    if (e && cache_expired(e->put_time, now, m->ttl)) {
        entry_drop(sh, e, &dead_e, &dead_c);
    } else if (e && buf_append(out, e->data + e->qlen, e->alen) == CHATD_OK) {
        lru_unlink(sh, e);
        lru_push_head(sh, e);
        hit = true;
    }
    pthread_mutex_unlock(&sh->lock);
    free_dead(dead_e, dead_c);
    return hit;
}

static void mem_put(struct cache *c, const char *conv_id, const char *question, size_t question_len,
                    const char *answer, size_t answer_len, int64_t now)
{
    struct cache_memory *m = (struct cache_memory *)c;
    struct entry *dead_e = NULL;
    struct conv *dead_c = NULL;

    if (!m->nshards)
        return;
    uint64_t ch = conv_hash(m, conv_id);
    struct shard *sh = shard_of(m, ch);
    struct entry *e = xmalloc(sizeof *e + question_len + answer_len);
    e->hash = entry_hash(m, ch, question, question_len);
    e->put_time = now;
    e->qlen = question_len;
    e->alen = answer_len;
    if (question_len)
        memcpy(e->data, question, question_len);
    if (answer_len)
        memcpy(e->data + question_len, answer, answer_len);

    pthread_mutex_lock(&sh->lock);
    struct conv *v = conv_find(sh, ch, conv_id);
    if (!v)
        v = conv_add(sh, ch, conv_id);
    struct entry *old = entry_find(sh, v, e->hash, question, question_len);
    if (old) {
        entry_unlink(sh, old); /* v stays: e joins it below */
        old->hnext = dead_e;
        dead_e = old;
    }
    while (sh->count >= sh->cap) {
        struct entry *victim = sh->lru_tail;
        if (victim->conv == v) {
            entry_unlink(sh, victim);
            victim->hnext = dead_e;
            dead_e = victim;
        } else {
            entry_drop(sh, victim, &dead_e, &dead_c);
        }
    }
    e->conv = v;
    entry_link(sh, e);
    pthread_mutex_unlock(&sh->lock);
    free_dead(dead_e, dead_c);
}

static void mem_remove_conversation(struct cache *c, const char *conv_id)
{
    struct cache_memory *m = (struct cache_memory *)c;
    struct entry *dead_e = NULL;
    struct conv *dead_c = NULL;

    if (!m->nshards)
        return;
    uint64_t ch = conv_hash(m, conv_id);
    struct shard *sh = shard_of(m, ch);

    pthread_mutex_lock(&sh->lock);
    struct conv *v = conv_find(sh, ch, conv_id);
    while (v && v->entries)
        entry_drop(sh, v->entries, &dead_e, &dead_c); /* the last one drops v */
    pthread_mutex_unlock(&sh->lock);
    free_dead(dead_e, dead_c);
}

/* Always answers: the count of every shard. */
static bool mem_probe(struct cache *c, size_t *count, char *why, size_t why_len)
{
    struct cache_memory *m = (struct cache_memory *)c;
    (void)why;
    (void)why_len;
    *count = 0;
    for (size_t i = 0; i < m->nshards; i++) {
        pthread_mutex_lock(&m->shards[i].lock);
        *count += m->shards[i].count;
        pthread_mutex_unlock(&m->shards[i].lock);
    }
    return true;
}

static void mem_free(struct cache *c)
{
    struct cache_memory *m = (struct cache_memory *)c;
    for (size_t i = 0; i < m->nshards; i++) {
        struct shard *sh = &m->shards[i];
        struct entry *e = sh->lru_head, *en;
        for (; e; e = en) {
            en = e->lru_next;
            free(e);
        }
        for (size_t b = 0; b <= sh->cmask; b++) {
            struct conv *v = sh->cbuckets[b], *vn;
            for (; v; v = vn) {
                vn = v->hnext;
                free(v);
            }
        }
        free(sh->ebuckets);
        free(sh->cbuckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(m->shards);
    free(m);
}

static const struct cache_ops memory_ops = {
    .name = "memory",
    .get = mem_get,
    .put = mem_put,
    .remove_conversation = mem_remove_conversation,
    .probe = mem_probe,
    .free = mem_free,
};

/* The key only has to be unknown to clients; if the kernel cannot give
 * randomness (it blocks rather than fail, so this is theory), a key from
 * the clocks and an address still differs per process. */
static void random_key(uint64_t *k0, uint64_t *k1)
{
    uint64_t k[2];
    size_t got = 0;
    while (got < sizeof k) {
        ssize_t n = getrandom((char *)k + got, sizeof k - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            log_warn("cache: getrandom failed; hashing with a key from the clocks");
            k[0] = (uint64_t)time_now_usec() ^ (uint64_t)(uintptr_t)k;
            k[1] = (uint64_t)time_mono_usec() * UINT64_C(0x9e3779b97f4a7c15);
            break;
        }
        got += (size_t)n;
    }
    *k0 = k[0];
    *k1 = k[1];
}

struct cache *cache_memory_new(const struct cache_options *opt)
{
    struct cache_memory *m = xcalloc(1, sizeof *m);
    m->base.ops = &memory_ops;
    m->ttl = opt->ttl;
    random_key(&m->k0, &m->k1);
    if (opt->max_entries == 0)
        return &m->base; /* disabled: nshards 0 */

    size_t n = opt->max_entries / SHARD_MIN_ENTRIES;
    if (n > SHARDS_MAX)
        n = SHARDS_MAX;
    if (n == 0)
        n = 1;
    m->nshards = n;
    m->shards = xcalloc(n, sizeof *m->shards);
    for (size_t i = 0; i < n; i++) {
        struct shard *sh = &m->shards[i];
        pthread_mutex_init(&sh->lock, NULL);
        /* The remainder goes one each to the first shards: exact total. */
        sh->cap = opt->max_entries / n + (i < opt->max_entries % n);
        sh->ebuckets = xcalloc(TABLE_MIN, sizeof *sh->ebuckets);
        sh->emask = TABLE_MIN - 1;
        sh->cbuckets = xcalloc(TABLE_MIN, sizeof *sh->cbuckets);
        sh->cmask = TABLE_MIN - 1;
    }
    return &m->base;
}
