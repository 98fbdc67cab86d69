/*
 * backend.h - private to src/store: the table of functions one database
 * backend fills in (curl's struct Curl_ssl, SQLite's sqlite3_io_methods).
 *
 * store.c parses the URL, picks the table and forwards every call of
 * store.h to it, with the backend's own object `be` first. Each entry
 * has exactly the contract of the store.h function of the same name
 * (errors, row callbacks, expiry); only the first argument differs, and
 * store.c answers the trivial calls itself, so a backend never sees them:
 * conversation_get and delete_conversation with an id longer than a UUID
 * (CHATD_ENOTFOUND), and
 * history_tail, messages_after or conversations_after for 0 rows; the
 * last two get *count already set to 0. A backend logs its native errors
 * itself, once, and returns chatd errors.
 * No database type appears here: each client library stays in its own
 * src/store/<name>.c.
 */
#ifndef CHATD_STORE_BACKEND_H
#define CHATD_STORE_BACKEND_H

#include "core/buf.h"
#include "store/store.h"

struct store_ops {
    const char *name; /* what store_backend() answers */

    /* target is the URL without the "sqlite:" prefix (or the whole URL for
     * network databases). On success *be is the backend object, owned by
     * the caller until close(). On failure *be is NULL and why is set. */
    enum chatd_err (*open)(const char *target, const struct store_options *opt, void **be,
                           char *why, size_t why_len);
    void (*close)(void *be);
    enum chatd_err (*ping)(void *be, char *why, size_t why_len);
    enum chatd_err (*conversation_get)(void *be, const char *id, int64_t now, bool count,
                                       struct store_conversation *out);
    enum chatd_err (*history_tail)(void *be, const char *id, size_t n, store_message_fn fn,
                                   void *arg);
    enum chatd_err (*append_exchange)(void *be, const struct store_exchange *x);
    /* Optional (NULL: append_exchange one at a time): stores n exchanges,
     * each all or nothing, in as few transactions as the backend can,
     * setting errs[i] to each one's result. For the writer thread. */
    void (*append_exchanges)(void *be, const struct store_exchange *xs, size_t n,
                             enum chatd_err *errs);
    enum chatd_err (*delete_conversation)(void *be, const char *id, int64_t now);
    enum chatd_err (*messages_after)(void *be, const char *id, int64_t after_id, size_t limit,
                                     store_message_fn fn, void *arg, size_t *count);
    enum chatd_err (*conversations_after)(void *be, int64_t after_created, const char *after_id,
                                          int64_t from, int64_t to, int64_t now, size_t limit,
                                          store_conversation_fn fn, void *arg, size_t *count);
    enum chatd_err (*count_conversations)(void *be, int64_t from, int64_t to, int64_t now,
                                          int64_t *out);
    enum chatd_err (*sweep_expired)(void *be, int64_t now, store_deleted_fn deleted, void *arg,
                                    int64_t *n);
    enum chatd_err (*count_active)(void *be, int64_t now, int64_t *out);
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_postgres_ops; /* if CHATD_HAVE_POSTGRESQL */
extern const struct store_ops store_mysql_ops;    /* if CHATD_HAVE_MYSQL */

/* store.h's content rule for a backend whose column holds only UTF-8 text
 * without NUL (PostgreSQL text, MySQL utf8mb4): returns s itself when it is
 * valid UTF-8 without NUL, else a copy in tmp in which each NUL and each
 * byte that is not part of valid UTF-8 is U+FFFD. *out_n is its length. s
 * may be NULL when n is 0. */
const char *store_text(const char *s, size_t n, struct buf *tmp, size_t *out_n);

/* now - ttl: a conversation whose last_active is older has expired
 * (store.h "Expiry"). Clamped to INT64_MIN/INT64_MAX instead of
 * overflowing. */
int64_t store_cutoff(int64_t now, int64_t ttl);

/* Writes a printf-formatted reason into why (why_len bytes, always
 * terminated); does nothing when why is NULL. For backends' `why`s. */
void store_set_why(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
