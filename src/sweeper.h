/*
 * sweeper.h - the thread that deletes what has expired.
 *
 * Every interval it deletes expired conversations (with their messages)
 * from the store and their entries from the cache; and, at least every
 * half export TTL, the export files older than their TTL. Expiry itself needs no
 * sweep to be correct: the store already hides expired conversations; the
 * sweep reclaims the space. A sweep that fails is logged and retried at
 * the next interval.
 */
#ifndef CHATD_SWEEPER_H
#define CHATD_SWEEPER_H

#include <stdint.h>

#include "core/err.h"

struct sweeper;
struct store;
struct cache;

struct sweeper_options {
    int64_t interval;       /* usec between sweeps of the store */
    const char *export_dir; /* kept by the caller while the sweeper runs */
    int64_t export_ttl;     /* usec an export file is kept */
};

/* Starts the thread; the first sweep runs one interval from now. */
enum chatd_err sweeper_start(struct store *st, struct cache *cache,
                             const struct sweeper_options *opt, struct sweeper **out);
/* Stops the thread (waiting for a sweep in progress) and frees it. NULL is ok. */
void sweeper_free(struct sweeper *sw);

#endif
