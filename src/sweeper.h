/*
 * sweeper.h - the thread that deletes what has expired.
 *
 * Every interval it deletes expired conversations (with their messages)
 * from the store and their entries from the cache. Expiry itself needs no
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

/* Starts the thread; the first sweep runs one interval (usec) from now. */
enum chatd_err sweeper_start(struct store *st, struct cache *cache, int64_t interval,
                             struct sweeper **out);
/* Stops the thread (waiting for a sweep in progress) and frees it. NULL is ok. */
void sweeper_free(struct sweeper *sw);

#endif
