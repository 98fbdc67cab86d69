/*
 * store.h - where conversations live: the one interface every database
 * backend implements (SQLite, PostgreSQL, MySQL/MariaDB; backend.h).
 *
 * Schema (SPEC.md "Storage"): conversations(id, created_at, last_active)
 * and messages(id, conversation_id, role, content, timestamp), indexed on
 * (conversation_id, id). Times cross this interface as int64 microseconds
 * since the epoch, UTC; each backend converts to its own column type.
 *
 * Threads: a struct store is shared by all threads. Each calling thread
 * gets its own database connection, opened on first use and closed when
 * the thread exits or the store is freed, so no call ever waits for
 * another thread's connection. Every function may be called from any
 * thread. No SQL exists outside src/store/.
 *
 * Expiry: a conversation whose last_active is older than now - session_ttl
 * does not exist for these functions (CHATD_ENOTFOUND), even before the
 * sweep deletes it. `now` is always passed in so tests are exact.
 *
 * Errors: CHATD_ENOTFOUND for a missing/expired conversation, CHATD_EDB
 * when the database cannot be reached or fails (the native detail is
 * logged once, here), CHATD_EINVAL for a bad URL at open time.
 *
 * Content: message content is bytes. A backend whose column keeps bytes
 * (SQLite) gives them back unchanged, NUL and invalid UTF-8 included. A
 * backend whose column can only hold UTF-8 text (PostgreSQL's text) stores
 * each byte that is not part of valid UTF-8, and each NUL, as U+FFFD, and
 * nothing else changes: the API shows invalid bytes as U+FFFD anyway
 * (json_out.h, csv.h), so only a NUL reads differently. Valid UTF-8
 * without NUL comes back unchanged from every backend. Ids are compared as
 * the exact strings given (the API lowercases UUIDs before asking).
 * tests/store/conformance.c checks all of this against every backend.
 *
 * Row callbacks: functions that return rows call a callback once per row,
 * in order, with pointers that stay valid only during that call; returning
 * non-zero from the callback stops the iteration early (the function then
 * returns CHATD_OK). Nothing proportional to the number of rows is held.
 */
#ifndef CHATD_STORE_STORE_H
#define CHATD_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/uuid.h"

struct store;

struct store_options {
    int64_t session_ttl;  /* usec of inactivity after which a conversation expires */
    const char *password; /* network databases: used when the URL has none; NULL = none */
};

struct store_conversation {
    char id[UUID_STR_LEN + 1];
    int64_t created_at;    /* usec */
    int64_t last_active;   /* usec */
    int64_t message_count; /* filled only where a function says so, else -1 */
};

struct store_message {
    int64_t id;       /* the key: increasing in insertion order */
    const char *role; /* "user" or "assistant" (any text for foreign rows) */
    size_t role_len;
    const char *content; /* may hold any bytes, including NUL and invalid UTF-8 */
    size_t content_len;
    int64_t timestamp; /* usec */
};

/* One question and its answer, written in one transaction. */
struct store_exchange {
    const char *conversation_id; /* created if absent (created_at = user_time) */
    const char *question;
    size_t question_len;
    const char *answer;
    size_t answer_len;
    int64_t user_time;   /* usec: timestamp of the user message */
    int64_t answer_time; /* usec: timestamp of the answer; last_active moves to it */
};

typedef int (*store_message_fn)(void *arg, const struct store_message *m);
typedef int (*store_conversation_fn)(void *arg, const struct store_conversation *c);
typedef void (*store_deleted_fn)(void *arg, const char *conversation_id);

/*
 * Opens the database named by url ("sqlite:PATH", "postgresql://...",
 * "mysql://..."), creates the schema if absent and checks it can be used.
 * On failure returns an error, sets *out to NULL and writes one line
 * saying why into why (never a password). Backends not built answer
 * CHATD_ENOTBUILT with a message saying so.
 */
enum chatd_err store_open(const char *url, const struct store_options *opt, struct store **out,
                          char *why, size_t why_len);
/* Closes every connection. No call may be running or follow. NULL is ok. */
void store_free(struct store *st);
/* "sqlite", "postgresql" or "mysql". */
const char *store_backend(const struct store *st);

/* Runs a trivial query. On failure writes the database's reason into why. */
enum chatd_err store_ping(struct store *st, char *why, size_t why_len);

/* Looks up a live conversation. message_count is filled if count is
 * true (it costs a scan of the conversation's messages), else -1. */
enum chatd_err store_conversation_get(struct store *st, const char *id, int64_t now, bool count,
                                      struct store_conversation *out);

/* Calls fn for the last n messages of conversation id, oldest first.
 * Does not check expiry (the caller has just looked the conversation up). */
enum chatd_err store_history_tail(struct store *st, const char *id, size_t n, store_message_fn fn,
                                  void *arg);

/* Stores both messages and moves last_active, atomically. */
enum chatd_err store_append_exchange(struct store *st, const struct store_exchange *x);

/* Called on the store's writer thread when an exchange handed to
 * store_append_exchange_async() has been stored (CHATD_OK) or not. */
typedef void (*store_written_fn)(void *arg, enum chatd_err err);

/*
 * Group commit: queues a copy of x for the store's writer thread and
 * returns at once. The writer stores everything queued while it was busy
 * in one transaction where the backend can (each exchange still all or
 * nothing: a failing batch is retried one exchange at a time), then calls
 * done(arg, err) for each, in queue order, on the writer thread. One
 * commit then pays for many exchanges that finish together, and no
 * worker thread waits on the database. Everything queued is written and
 * its done called before store_free() returns.
 */
void store_append_exchange_async(struct store *st, const struct store_exchange *x,
                                 store_written_fn done, void *arg);

/* Deletes a live conversation and its messages. CHATD_ENOTFOUND if there is
 * no such live conversation. */
enum chatd_err store_delete_conversation(struct store *st, const char *id, int64_t now);

/* Calls fn for up to limit messages of conversation id whose key is greater
 * than after_id, in key order (keyset pagination; after_id 0 = from the
 * start). *count is set to the number of rows passed to fn. */
enum chatd_err store_messages_after(struct store *st, const char *id, int64_t after_id,
                                    size_t limit, store_message_fn fn, void *arg, size_t *count);

/* Calls fn for up to limit live conversations ordered by (created_at, id)
 * strictly after the key (after_created, after_id) (after_id "" = from the
 * start), with created_at in [from, to) (pass INT64_MIN / INT64_MAX for no
 * bound). message_count is filled. *count is set to the rows passed. */
enum chatd_err store_conversations_after(struct store *st, int64_t after_created,
                                         const char *after_id, int64_t from, int64_t to,
                                         int64_t now, size_t limit, store_conversation_fn fn,
                                         void *arg, size_t *count);

/* Counts live conversations with created_at in [from, to). */
enum chatd_err store_count_conversations(struct store *st, int64_t from, int64_t to, int64_t now,
                                         int64_t *out);

/* Deletes every expired conversation with its messages, in small batches
 * (each its own short transaction), calling deleted(arg, id) for each after
 * its batch commits. *n is set to the number deleted. */
enum chatd_err store_sweep_expired(struct store *st, int64_t now, store_deleted_fn deleted,
                                   void *arg, int64_t *n);

/* Counts live conversations (the /health "active sessions"). */
enum chatd_err store_count_active(struct store *st, int64_t now, int64_t *out);

#endif
