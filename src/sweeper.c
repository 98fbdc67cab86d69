/*
 * sweeper.c - periodic deletion of expired conversations (see sweeper.h).
 * The thread sleeps on a condition variable so that sweeper_free() can
 * wake it at once instead of waiting out the interval.
 */
#include "sweeper.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "api/exportfile.h"
#include "cache/cache.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "store/store.h"

struct sweeper {
    struct store *store;
    struct cache *cache;
    struct sweeper_options opt;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping; /* under lock */
    pthread_t thread;
};

static void forget(void *arg, const char *conversation_id)
{
    cache_remove_conversation(arg, conversation_id);
}

static void sweep_store(struct sweeper *sw)
{
    int64_t n = 0, started = time_mono_usec();
    enum chatd_err err = store_sweep_expired(sw->store, time_now_usec(), forget, sw->cache, &n);
    if (err)
        log_warn("sweeper: sweep failed: %s (next try in %lld s)", chatd_strerror(err),
                 (long long)(sw->opt.interval / USEC_PER_SEC));
    else if (n)
        log_info("sweeper: deleted %lld expired conversations in %.1f ms", (long long)n,
                 (double)(time_mono_usec() - started) / 1000.0);
}

static void *sweeper_main(void *arg)
{
    struct sweeper *sw = arg;
    /* Export files are swept at least every half TTL, so none outlives
     * its TTL by much even with a long store interval. */
    int64_t tick = sw->opt.export_ttl / 2;
    if (tick < USEC_PER_SEC)
        tick = USEC_PER_SEC;
    if (tick > sw->opt.interval)
        tick = sw->opt.interval;
    int64_t next_store = time_mono_usec() + sw->opt.interval;
    pthread_mutex_lock(&sw->lock);
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t due = (int64_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000 + tick;
        ts.tv_sec = (time_t)(due / USEC_PER_SEC);
        ts.tv_nsec = (long)(due % USEC_PER_SEC) * 1000;
        while (!sw->stopping && pthread_cond_timedwait(&sw->cond, &sw->lock, &ts) == 0)
            ;
        if (sw->stopping)
            break;
        pthread_mutex_unlock(&sw->lock);
        size_t files =
            export_files_sweep(sw->opt.export_dir, sw->opt.export_ttl, time_now_usec(), false);
        if (files)
            log_info("sweeper: removed %zu expired export files", files);
        if (time_mono_usec() >= next_store) {
            sweep_store(sw);
            next_store = time_mono_usec() + sw->opt.interval;
        }
        pthread_mutex_lock(&sw->lock);
    }
    pthread_mutex_unlock(&sw->lock);
    return NULL;
}

enum chatd_err sweeper_start(struct store *st, struct cache *cache,
                             const struct sweeper_options *opt, struct sweeper **out)
{
    struct sweeper *sw = xcalloc(1, sizeof *sw);
    sw->store = st;
    sw->cache = cache;
    sw->opt = *opt;
    pthread_mutex_init(&sw->lock, NULL);
    pthread_cond_init(&sw->cond, NULL);
    if (pthread_create(&sw->thread, NULL, sweeper_main, sw) != 0) {
        pthread_cond_destroy(&sw->cond);
        pthread_mutex_destroy(&sw->lock);
        free(sw);
        *out = NULL;
        return CHATD_EINTERNAL;
    }
    pthread_setname_np(sw->thread, "chatd-sweep");
    *out = sw;
    return CHATD_OK;
}

void sweeper_free(struct sweeper *sw)
{
    if (!sw)
        return;
    pthread_mutex_lock(&sw->lock);
    sw->stopping = true;
    pthread_cond_signal(&sw->cond);
    pthread_mutex_unlock(&sw->lock);
    pthread_join(sw->thread, NULL);
    pthread_cond_destroy(&sw->cond);
    pthread_mutex_destroy(&sw->lock);
    free(sw);
}
