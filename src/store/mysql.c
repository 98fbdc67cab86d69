/*
 * mysql.c - the MySQL/MariaDB backend of store.h (MariaDB Connector/C 3.3,
 * tested against MariaDB 10.11; MySQL 5.7+ syntax only).
 *
 * URL: mysql://[user[:password]@]host[:port]/dbname, user, password and
 * database percent-decoded. Without a password in the URL, the one from
 * store_options (CHATD_DB_PASSWORD) is used. Messages name the server as
 * mysql://user@host:port/db: never the password. "localhost" means the
 * local socket, as everywhere in MySQL; 127.0.0.1 means TCP.
 *
 * Connections: one per calling thread, kept in the per-thread registry of
 * conns.h, so that close() can finish those of threads still alive; a
 * thread that exits closes its own (and calls mysql_thread_end). Each connection
 * is utf8mb4, time_zone +00:00, sql_mode STRICT_ALL_TABLES (so a value
 * that does not fit is an error, never silently cut) and READ COMMITTED
 * (fewer gap locks between instances that sweep at once). Statements are
 * server-side prepared statements, prepared on first use per connection.
 * MYSQL_OPT_RECONNECT stays off: it would drop the prepared statements
 * silently. Instead a call that meets a lost connection (server restart,
 * killed session) marks it broken and fails with CHATD_EDB; the next call
 * on that thread reconnects and prepares again. A call whose connection
 * was already dead before it sent anything is retried once, at once, on a
 * new connection - also after a deadlock - unless rows already went to
 * its callback or the loss hit a COMMIT (whose outcome is then unknown).
 * No loop: at most one retry per call. append_exchanges (the store's
 * writer, group commit) runs a whole batch in one transaction under the
 * same rules; my_append_exchanges says how it keeps each result exact and
 * why a batch whose COMMIT lost the connection is never retried.
 *
 * Results are buffered per call (mysql_stmt_store_result), which is what
 * lets a row callback call other store functions on the same connection;
 * every reading call is bounded by its `limit`, so memory stays
 * proportional to one batch. Exports page by key (LIMIT), never OFFSET.
 *
 * Schema (SPEC "Storage"): created if absent as the original Flask
 * service's (SQLAlchemy on MySQL 5.7) with two differences that only
 * widen it: DATETIME(6) (microseconds) and content MEDIUMTEXT. On tables
 * that exist (taking over the old service's database) nothing is altered
 * and no row is rewritten; only two indexes are added if missing,
 * messages(conversation_id, id) for keyset pages and conversations
 * (last_active) for expiry. Two instances starting together may both try:
 * the loser's "duplicate key name" counts as success.
 *
 * What old rows may hold, and how they read:
 *   - DATETIME without fraction: written times lose their microseconds
 *     (the server cuts or rounds them), read back as .000000.
 *   - last_active NULL: the conversation's last activity is its newest
 *     message's timestamp, or created_at if it has none; used for expiry
 *     and shown as last_active, never written back (a later exchange
 *     sets it). A NULL message timestamp reads as created_at.
 *   - content TEXT (65,535 bytes): a message or answer that does not fit
 *     is refused (CHATD_ETOOBIG, nothing stored), never truncated.
 * Content is stored as utf8mb4 text under store.h's rule for text-only
 * backends: each NUL and each byte that is not part of valid UTF-8 is
 * stored as U+FFFD (chatd's JSON and CSV show invalid bytes so anyway).
 */
#include <assert.h>
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/url.h"
#include "store/backend.h"
#include "store/conns.h"

#define CONNECT_TIMEOUT_S 5
#define IO_TIMEOUT_S      30 /* longer than the lock wait below */
#define LOCK_WAIT_S       10
#define SWEEP_BATCH       500
#define SWEEP_TRIES       3
#define MAX_PARAMS        8
#define MAX_COLS          4
#define TEXT_INITIAL      256
#define TEXT_KEEP         (1024 * 1024) /* larger fetch buffers are freed after a call */

/* What DATETIME holds: 0001-01-01 .. 9999-12-31 23:59:59.999999. */
#define TIME_MIN (INT64_C(-62135596800) * USEC_PER_SEC)
#define TIME_MAX (INT64_C(253402300800) * USEC_PER_SEC - 1)

static const char *const schema_sql[] = {
    "CREATE TABLE IF NOT EXISTS conversations ("
    " id VARCHAR(36) NOT NULL,"
    " last_active DATETIME(6) NULL,"
    " created_at DATETIME(6) NOT NULL,"
    " PRIMARY KEY (id),"
    " INDEX ix_conversations_created_at (created_at),"
    " INDEX idx_conversations_last_active (last_active)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INT NOT NULL AUTO_INCREMENT,"
    " conversation_id VARCHAR(36) NOT NULL,"
    " role VARCHAR(20) NOT NULL,"
    " content MEDIUMTEXT NOT NULL,"
    " timestamp DATETIME(6) NULL,"
    " PRIMARY KEY (id),"
    " INDEX idx_conv_time (conversation_id, timestamp),"
    " INDEX idx_messages_conversation_id (conversation_id, id),"
    " FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
};

/* The indexes chatd adds to a schema it finds (and to its own). */
static const struct {
    const char *table, *name, *create;
} added_indexes[] = {
    {"messages", "idx_messages_conversation_id",
     "CREATE INDEX idx_messages_conversation_id ON messages (conversation_id, id)"},
    {"conversations", "idx_conversations_last_active",
     "CREATE INDEX idx_conversations_last_active ON conversations (last_active)"},
};

/* A conversation's last activity: last_active, or for rows the old service
 * left NULL, its newest message's time, or created_at. */
#define LAST_ACTIVE(c)                                                                             \
    "COALESCE(" c ".last_active, (SELECT MAX(m9.timestamp) FROM messages m9"                       \
    " WHERE m9.conversation_id = " c ".id), " c ".created_at)"
/* The test "last activity < ?" written so that the index on last_active
 * serves the common case. Three parameters: 1 if the cutoff is past every
 * time DATETIME holds (everything expired), then the cutoff twice. */
#define EXPIRED(c)                                                                                 \
    "(? OR " c ".last_active < ? OR (" c ".last_active IS NULL AND " LAST_ACTIVE(c) " < ?))"
/* Its negation (not NOT EXPIRED: a NULL last_active would make that NULL).
 * The same three parameters. */
#define LIVE(c)                                                                                    \
    "(NOT ? AND (" c ".last_active >= ? OR (" c                                                    \
    ".last_active IS NULL AND " LAST_ACTIVE(c) " >= ?)))"
#define MSG_TIME                                                                                   \
    "COALESCE(m.timestamp, (SELECT c8.created_at FROM conversations c8"                            \
    " WHERE c8.id = m.conversation_id))"

enum stmt {
    ST_PING,
    ST_CONV_GET,
    ST_CONV_GET_COUNT,
    ST_HISTORY_TAIL,
    ST_UPSERT_CONV,
    ST_INSERT_MSG,
    ST_DELETE_LIVE_CONV,
    ST_DELETE_MSGS,
    ST_MESSAGES_AFTER,
    ST_CONVS_AFTER,
    ST_COUNT_CONVS,
    ST_COUNT_ACTIVE,
    ST_SWEEP_SELECT,
    ST_SWEEP_DELETE_CONV,
    ST_COUNT_
};

/* Message pages and the history tail name their index: the old schema's
 * idx_conv_time (conversation_id, timestamp) also matches the conversation,
 * and MariaDB picks it, then filters id > ? row by row - every page of an
 * export rescanned the conversation from its start (quadratic: 1,000,000
 * messages would take minutes). idx_messages_conversation_id always exists
 * (chatd creates it at open) and makes both a range seek.
 *
 * Conversation ids longer than a UUID cannot be handed out through struct
 * store_conversation, so the listing skips them, and so does its count.
 * Messages are deleted explicitly too (not only by ON DELETE CASCADE) for
 * schemas created without the foreign key. */
static const char *const stmt_sql[ST_COUNT_] = {
    [ST_PING] = "SELECT COUNT(*) FROM (SELECT 1 FROM conversations LIMIT 1) t",
    [ST_CONV_GET] =
        "SELECT c.created_at, " LAST_ACTIVE("c") ", -1 FROM conversations c"
                                                 " WHERE c.id = ? AND " LAST_ACTIVE("c") " >= ?",
    [ST_CONV_GET_COUNT] = "SELECT c.created_at, " LAST_ACTIVE(
        "c") ", (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
             " FROM conversations c WHERE c.id = ? AND " LAST_ACTIVE("c") " >= ?",
    [ST_HISTORY_TAIL] = "SELECT id, role, content, ts FROM"
                        " (SELECT m.id, m.role, m.content, " MSG_TIME " AS ts FROM messages m"
                        "  FORCE INDEX (idx_messages_conversation_id)"
                        "  WHERE m.conversation_id = ? ORDER BY m.id DESC LIMIT ?) t"
                        " ORDER BY id",
    [ST_UPSERT_CONV] = "INSERT INTO conversations (id, created_at, last_active) VALUES (?, ?, ?)"
                       " ON DUPLICATE KEY UPDATE last_active = ?",
    [ST_INSERT_MSG] = "INSERT INTO messages (conversation_id, role, content, timestamp)"
                      " VALUES (?, ?, ?, ?)",
    [ST_DELETE_LIVE_CONV] =
        "DELETE FROM conversations WHERE id = ? AND " LAST_ACTIVE("conversations") " >= ?",
    [ST_DELETE_MSGS] = "DELETE FROM messages WHERE conversation_id = ?",
    [ST_MESSAGES_AFTER] = "SELECT m.id, m.role, m.content, " MSG_TIME " FROM messages m"
                          " FORCE INDEX (idx_messages_conversation_id)"
                          " WHERE m.conversation_id = ? AND m.id > ? ORDER BY m.id LIMIT ?",
    [ST_CONVS_AFTER] = "SELECT c.id, c.created_at, " LAST_ACTIVE(
        "c") ", (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
             " FROM conversations c"
             " WHERE (c.created_at > ? OR (c.created_at = ? AND c.id > ?))"
             " AND c.created_at >= ? AND (c.created_at < ? OR ?) AND " LAST_ACTIVE(
                 "c") " >= ? AND LENGTH(c.id) <= 36"
                      " ORDER BY c.created_at, c.id LIMIT ?",
    [ST_COUNT_CONVS] = "SELECT COUNT(*) FROM conversations c"
                       " WHERE c.created_at >= ? AND (c.created_at < ? OR ?) AND " LAST_ACTIVE(
                           "c") " >= ? AND LENGTH(c.id) <= 36",
    [ST_COUNT_ACTIVE] = "SELECT COUNT(*) FROM conversations c WHERE " LIVE("c"),
    [ST_SWEEP_SELECT] = "SELECT c.id FROM conversations c WHERE " EXPIRED("c") " LIMIT ?",
    [ST_SWEEP_DELETE_CONV] = "DELETE FROM conversations WHERE id = ? AND " EXPIRED("conversations"),
};

/* Bound parameters of one execution; the binds point into the arrays. */
struct params {
    MYSQL_BIND b[MAX_PARAMS];
    MYSQL_TIME t[MAX_PARAMS];
    unsigned long len[MAX_PARAMS];
    long long ll[MAX_PARAMS];
    unsigned n;
};

/* Result buffers of one statement; owned by its connection. */
struct row {
    MYSQL_BIND b[MAX_COLS];
    MYSQL_TIME t[MAX_COLS];
    long long ll[MAX_COLS];
    char *text[MAX_COLS]; /* 's' columns: grown to the longest value */
    unsigned long cap[MAX_COLS];
    unsigned long len[MAX_COLS];
    my_bool is_null[MAX_COLS];
    my_bool error[MAX_COLS];
    const char *kinds; /* one letter per column: i int64, t time, s text */
};

struct my {
    struct db_url url;        /* connection parameters; password never shown */
    char *shown;              /* mysql://user@host:port/db, for messages */
    int64_t ttl;              /* usec of inactivity before expiry */
    size_t content_max;       /* bytes messages.content holds */
    bool has_library;         /* library_acquire() succeeded */
    struct store_conns conns; /* every thread's connection */
    bool has_conns;           /* conns was initialised */
    atomic_bool down;         /* the server was found unreachable: quieter logs until back */
    atomic_bool bad_time_logged;
};

struct conn {
    struct my *owner;
    MYSQL *db; /* NULL: not connected */
    MYSQL_STMT *st[ST_COUNT_];
    struct row row[ST_COUNT_];
    bool busy[ST_COUNT_];        /* statement taken by a call in progress */
    int depth;                   /* row callbacks running: no reconnect under them */
    bool broken;                 /* lost or out of sync: reconnect before the next call */
    bool retry;                  /* the last failure may be retried once */
    char last_error[512];        /* the server's reason for the last failure */
    struct store_conn_link link; /* in owner->conns */
};

/* ---- library set-up ---- */

/* Connector/C's global state is the library's own, so it is counted here:
 * the first store opened initialises it, the last one closed ends it. */
static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned library_users;

static bool library_acquire(void)
{
    bool ok = true;
    pthread_mutex_lock(&library_lock);
    if (library_users == 0 && mysql_library_init(0, NULL, NULL) != 0)
        ok = false;
    if (ok)
        library_users++;
    pthread_mutex_unlock(&library_lock);
    return ok;
}

static void library_release(void)
{
    pthread_mutex_lock(&library_lock);
    if (library_users > 0 && --library_users == 0)
        mysql_library_end();
    pthread_mutex_unlock(&library_lock);
}

/* ---- times ---- */

static void to_mysql_time(int64_t t, MYSQL_TIME *out)
{
    struct timefmt_civil c;
    timefmt_to_civil(t < TIME_MIN ? TIME_MIN : t > TIME_MAX ? TIME_MAX : t, &c);
    memset(out, 0, sizeof *out);
    out->year = (unsigned)c.year;
    out->month = (unsigned)c.mon;
    out->day = (unsigned)c.mday;
    out->hour = (unsigned)c.hour;
    out->minute = (unsigned)c.min;
    out->second = (unsigned)c.sec;
    out->second_part = (unsigned long)c.usec;
    out->time_type = MYSQL_TIMESTAMP_DATETIME;
}

/* False for what is not a date and time (zero dates of old MySQL). */
static bool from_mysql_time(const MYSQL_TIME *t, int64_t *out)
{
    if (t->month < 1 || t->month > 12 || t->day < 1 || t->day > 31 || t->hour > 23 ||
        t->minute > 59 || t->second > 59 || t->second_part > 999999)
        return false;
    struct timefmt_civil c = {.year = t->year,
                              .mon = (int)t->month,
                              .mday = (int)t->day,
                              .hour = (int)t->hour,
                              .min = (int)t->minute,
                              .sec = (int)t->second,
                              .usec = (long)t->second_part};
    *out = timefmt_from_civil(&c);
    return true;
}

/* A cutoff past every time DATETIME holds: nothing is live any more (the
 * bound itself cannot be bound, so queries are told so apart). */
static bool all_expired(int64_t cut)
{
    return cut > TIME_MAX;
}

/* ---- parameters ---- */

static MYSQL_BIND *p_next(struct params *p)
{
    assert(p->n < MAX_PARAMS);
    return &p->b[p->n];
}

static void p_bytes(struct params *p, const char *s, size_t n)
{
    MYSQL_BIND *b = p_next(p);
    p->len[p->n] = (unsigned long)n;
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(n ? s : "");
    b->buffer_length = (unsigned long)n;
    b->length = &p->len[p->n];
    p->n++;
}

static void p_str(struct params *p, const char *s)
{
    p_bytes(p, s, strlen(s));
}

static void p_i64(struct params *p, int64_t v)
{
    MYSQL_BIND *b = p_next(p);
    p->ll[p->n] = v;
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = &p->ll[p->n];
    p->n++;
}

static void p_size(struct params *p, size_t n)
{
    p_i64(p, n > (size_t)INT64_MAX ? INT64_MAX : (int64_t)n);
}

static void p_time(struct params *p, int64_t t)
{
    MYSQL_BIND *b = p_next(p);
    to_mysql_time(t, &p->t[p->n]);
    b->buffer_type = MYSQL_TYPE_DATETIME;
    b->buffer = &p->t[p->n];
    p->n++;
}

/* The three parameters of EXPIRED() and LIVE() for the cutoff cut. */
static void p_expiry(struct params *p, int64_t cut)
{
    p_i64(p, all_expired(cut));
    p_time(p, cut);
    p_time(p, cut);
}

/* ---- connections ---- */

static void disconnect(struct conn *c)
{
    for (int i = 0; i < ST_COUNT_; i++) {
        if (c->st[i])
            mysql_stmt_close(c->st[i]);
        c->st[i] = NULL;
    }
    if (c->db)
        mysql_close(c->db);
    c->db = NULL;
    c->broken = false;
}

static void conn_free(struct conn *c)
{
    if (!c)
        return;
    disconnect(c);
    for (int i = 0; i < ST_COUNT_; i++)
        for (int k = 0; k < MAX_COLS; k++)
            free(c->row[i].text[k]);
    free(c);
}

/* Runs one statement without parameters or rows (set-up, DDL). */
static bool exec_text(MYSQL *db, const char *sql)
{
    if (mysql_real_query(db, sql, (unsigned long)strlen(sql)) != 0)
        return false;
    MYSQL_RES *r = mysql_store_result(db);
    mysql_free_result(r);
    return mysql_errno(db) == 0;
}

/* Connects c. On failure c stays unconnected and why says what the server
 * or the network answered. */
static bool conn_connect(struct conn *c, char *why, size_t why_len)
{
    struct my *s = c->owner;
    unsigned connect_timeout = CONNECT_TIMEOUT_S, io_timeout = IO_TIMEOUT_S;
    my_bool off = 0;
    char init[160];

    assert(!c->db);
    c->db = mysql_init(NULL);
    if (!c->db) {
        store_set_why(why, why_len, "cannot connect to %s: out of memory", s->shown);
        return false;
    }
    snprintf(init, sizeof init,
             "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
             " innodb_lock_wait_timeout = %d",
             LOCK_WAIT_S);
    mysql_options(c->db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(c->db, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(c->db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(c->db, MYSQL_OPT_RECONNECT, &off);
    mysql_options(c->db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(c->db, MYSQL_INIT_COMMAND, init);
    mysql_options(c->db, MYSQL_INIT_COMMAND,
                  "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    if (!mysql_real_connect(c->db, s->url.host, s->url.user, s->url.password, s->url.dbname,
                            s->url.port, NULL, 0)) {
        store_set_why(why, why_len, "cannot connect to %s: %s", s->shown, mysql_error(c->db));
        mysql_close(c->db);
        c->db = NULL;
        return false;
    }
    c->broken = false;
    return true;
}

/* The registry's close function (conns.h): a thread that exits also
 * leaves the client library. */
static void conn_close_link(struct store_conn_link *l, bool thread_exit)
{
    conn_free(STORE_CONN_OF(l, struct conn, link));
    if (thread_exit)
        mysql_thread_end();
}

/* This thread's connection object, created on its first call. */
static struct conn *conn_of_thread(struct my *s)
{
    struct store_conn_link *l = store_conns_mine(&s->conns);
    if (l)
        return STORE_CONN_OF(l, struct conn, link);
    struct conn *c = xcalloc(1, sizeof *c);
    c->owner = s;
    if (!store_conns_add(&s->conns, &c->link)) {
        free(c);
        return NULL;
    }
    mysql_thread_init();
    return c;
}

/* This thread's connection, connected - again, if it was lost. A failure is
 * logged once per outage (then at debug level) and answered CHATD_EDB. */
static enum chatd_err conn_get(struct my *s, struct conn **out, char *why, size_t why_len)
{
    char reason[512];
    struct conn *c = conn_of_thread(s);

    if (!c) {
        log_error("store: cannot keep a connection for this thread");
        store_set_why(why, why_len, "cannot keep a connection for this thread");
        return CHATD_EDB;
    }
    if (c->db && c->broken) {
        if (c->depth > 0) {
            /* A row callback calling back in: its caller's statement
             * lives on this connection, so it cannot be replaced now. */
            store_set_why(why, why_len, "the connection to %s was lost", s->shown);
            return CHATD_EDB;
        }
        disconnect(c);
    }
    if (!c->db) {
        if (!conn_connect(c, reason, sizeof reason)) {
            if (!atomic_exchange(&s->down, true))
                log_error("store: %s", reason);
            else
                log_debug("store: %s", reason);
            snprintf(c->last_error, sizeof c->last_error, "%s", reason);
            store_set_why(why, why_len, "%s", reason);
            return CHATD_EDB;
        }
        if (atomic_exchange(&s->down, false))
            log_info("store: connected to %s again", s->shown);
    }
    c->retry = false;
    *out = c;
    return CHATD_OK;
}

/* ---- failures ---- */

/* Records a failure of the server or the connection: logs it (a lost
 * connection once per outage), decides whether it may be retried, and
 * answers CHATD_EDB. */
static enum chatd_err fail_with(struct conn *c, unsigned no, const char *msg, const char *what)
{
    struct my *s = c->owner;
    snprintf(c->last_error, sizeof c->last_error, "%s", msg);
    switch (no) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:
    case ER_UNKNOWN_STMT_HANDLER:
    case 4031: /* MySQL 8: disconnected for inactivity */
        c->broken = true;
        c->retry = true;
        if (!atomic_exchange(&s->down, true))
            log_error("store: %s: lost the connection to %s: %s", what, s->shown, msg);
        else
            log_debug("store: %s: lost the connection to %s: %s", what, s->shown, msg);
        return CHATD_EDB;
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
        c->retry = true;
        log_warn("store: %s: %s", what, msg);
        return CHATD_EDB;
    default:
        c->retry = false;
        log_error("store: %s: %s (error %u)", what, msg, no);
        return CHATD_EDB;
    }
}

static enum chatd_err fail_stmt(struct conn *c, MYSQL_STMT *st, const char *what)
{
    return fail_with(c, mysql_stmt_errno(st), mysql_stmt_error(st), what);
}

static enum chatd_err fail_db(struct conn *c, const char *what)
{
    return fail_with(c, mysql_errno(c->db), mysql_error(c->db), what);
}

/* ---- statements ---- */

/* Hands out statement i, prepared; NULL (with *err set) if it cannot be
 * prepared or is already iterating further up this thread's stack. */
static MYSQL_STMT *take(struct conn *c, enum stmt i, const char *what, enum chatd_err *err)
{
    if (c->busy[i]) {
        log_error("store: a row callback called the store function that is calling it");
        *err = CHATD_EINTERNAL;
        return NULL;
    }
    if (!c->st[i]) {
        MYSQL_STMT *st = mysql_stmt_init(c->db);
        if (!st) {
            *err = fail_db(c, what);
            return NULL;
        }
        if (mysql_stmt_prepare(st, stmt_sql[i], (unsigned long)strlen(stmt_sql[i])) != 0) {
            *err = fail_stmt(c, st, what);
            mysql_stmt_close(st);
            return NULL;
        }
        c->st[i] = st;
    }
    c->busy[i] = true;
    return c->st[i];
}

static void give(struct conn *c, enum stmt i)
{
    struct row *r = &c->row[i];
    if (c->st[i])
        mysql_stmt_free_result(c->st[i]);
    for (int k = 0; k < MAX_COLS; k++) {
        if (r->cap[k] > TEXT_KEEP) {
            free(r->text[k]);
            r->text[k] = NULL;
            r->cap[k] = 0;
        }
    }
    c->busy[i] = false;
}

/* Binds p and executes; for a statement with rows, binds the result
 * columns described by kinds and buffers the rows. */
static enum chatd_err execute(struct conn *c, enum stmt i, MYSQL_STMT *st, struct params *p,
                              const char *kinds, const char *what)
{
    if (p && p->n && mysql_stmt_bind_param(st, p->b) != 0)
        return fail_stmt(c, st, what);
    if (mysql_stmt_execute(st) != 0)
        return fail_stmt(c, st, what);
    if (!kinds)
        return CHATD_OK;
    struct row *r = &c->row[i];
    size_t n = strlen(kinds);
    assert(n <= MAX_COLS && n == mysql_stmt_field_count(st));
    memset(r->b, 0, sizeof r->b);
    r->kinds = kinds;
    for (size_t k = 0; k < n; k++) {
        MYSQL_BIND *b = &r->b[k];
        b->is_null = &r->is_null[k];
        b->error = &r->error[k];
        b->length = &r->len[k];
        switch (kinds[k]) {
        case 'i':
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &r->ll[k];
            break;
        case 't':
            b->buffer_type = MYSQL_TYPE_DATETIME;
            b->buffer = &r->t[k];
            break;
        default:
            if (!r->text[k]) {
                r->text[k] = xmalloc(TEXT_INITIAL);
                r->cap[k] = TEXT_INITIAL;
            }
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = r->text[k];
            b->buffer_length = r->cap[k];
            break;
        }
    }
    if (mysql_stmt_bind_result(st, r->b) != 0 || mysql_stmt_store_result(st) != 0)
        return fail_stmt(c, st, what);
    return CHATD_OK;
}

/* The next buffered row: 1 if there is one, 0 at the end or on failure
 * (*err set). Text longer than its buffer is fetched again whole. */
static int fetch(struct conn *c, enum stmt i, MYSQL_STMT *st, const char *what, enum chatd_err *err)
{
    struct row *r = &c->row[i];
    int rc = mysql_stmt_fetch(st);
    if (rc == MYSQL_NO_DATA)
        return 0;
    if (rc == 1) {
        *err = fail_stmt(c, st, what);
        return 0;
    }
    if (rc == MYSQL_DATA_TRUNCATED) {
        bool rebind = false;
        for (unsigned k = 0; r->kinds[k]; k++) {
            if (r->kinds[k] != 's' || r->is_null[k] || r->len[k] <= r->cap[k])
                continue;
            free(r->text[k]);
            r->cap[k] = r->len[k] + 1;
            r->text[k] = xmalloc(r->cap[k]);
            r->b[k].buffer = r->text[k];
            r->b[k].buffer_length = r->cap[k];
            if (mysql_stmt_fetch_column(st, &r->b[k], k, 0) != 0) {
                *err = fail_stmt(c, st, what);
                return 0;
            }
            rebind = true;
        }
        if (rebind && mysql_stmt_bind_result(st, r->b) != 0) {
            *err = fail_stmt(c, st, what);
            return 0;
        }
    }
    return 1;
}

static int64_t col_i64(struct conn *c, enum stmt i, unsigned k)
{
    struct row *r = &c->row[i];
    return r->is_null[k] ? 0 : r->ll[k];
}

static void col_text(struct conn *c, enum stmt i, unsigned k, const char **p, size_t *n)
{
    struct row *r = &c->row[i];
    *p = r->is_null[k] ? "" : r->text[k];
    *n = r->is_null[k] ? 0 : r->len[k];
}

static int64_t col_time(struct conn *c, enum stmt i, unsigned k)
{
    struct row *r = &c->row[i];
    int64_t t = 0;
    if (!r->is_null[k] && from_mysql_time(&r->t[k], &t))
        return t;
    if (!atomic_exchange(&c->owner->bad_time_logged, true))
        log_warn("store: a time in %s is NULL or not a date; read as 0 (further ones not logged)",
                 c->owner->shown);
    return 0;
}

/* One call's statement without rows: take, execute, give. *affected, if
 * not NULL, gets the rows it changed. */
static enum chatd_err run(struct conn *c, enum stmt i, struct params *p, const char *what,
                          uint64_t *affected)
{
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, i, what, &err);
    if (!st)
        return err;
    err = execute(c, i, st, p, NULL, what);
    if (!err && affected)
        *affected = mysql_stmt_affected_rows(st);
    give(c, i);
    return err;
}

/* Runs a statement whose one row holds one integer. */
static enum chatd_err count_one(struct conn *c, enum stmt i, struct params *p, const char *what,
                                int64_t *out)
{
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, i, what, &err);
    if (!st)
        return err;
    err = execute(c, i, st, p, "i", what);
    if (!err) {
        if (fetch(c, i, st, what, &err))
            *out = col_i64(c, i, 0);
        else if (!err)
            err = fail_with(c, 0, "no row", what);
    }
    give(c, i);
    return err;
}

/* ---- transactions ---- */

static enum chatd_err begin(struct conn *c, const char *what)
{
    if (mysql_real_query(c->db, "START TRANSACTION", 17) != 0)
        return fail_db(c, what);
    return CHATD_OK;
}

/* A COMMIT whose connection is lost may or may not have happened, so its
 * failure is never retried. */
static enum chatd_err commit(struct conn *c, const char *what)
{
    if (mysql_commit(c->db) != 0) {
        enum chatd_err err = fail_db(c, what);
        if (c->broken)
            c->retry = false;
        return err;
    }
    return CHATD_OK;
}

static void rollback(struct conn *c)
{
    if (c->db && !c->broken && mysql_rollback(c->db) != 0)
        fail_db(c, "rollback");
}

/* ---- the store_ops functions ---- */

/* The shape of every call: get the connection, run once, and run again on
 * a new connection if the first failure allows it. */
#define WITH_RETRY(s, call)                                                                        \
    do {                                                                                           \
        for (int attempt_ = 0;; attempt_++) {                                                      \
            if ((err = conn_get((s), &c, NULL, 0)))                                                \
                break;                                                                             \
            err = (call);                                                                          \
            if (!err || attempt_ > 0 || !c->retry || c->depth > 0)                                 \
                break;                                                                             \
        }                                                                                          \
    } while (0)

static void my_close(void *be)
{
    struct my *s = be;

    if (!s)
        return;
    /* This thread leaves the client library too if it had a connection. */
    if (s->has_conns && store_conns_fini(&s->conns))
        mysql_thread_end();
    db_url_release(&s->url);
    free(s->shown);
    if (s->has_library)
        library_release();
    free(s);
}

/* mysql://[user[:password]@]host[:port]/dbname, as config.c read it
 * (db_url_parse); the password from CHATD_DB_PASSWORD if the URL has
 * none. */
static const char *parse_url(struct my *s, const char *url, const char *password)
{
    const char *bad = db_url_parse(url, &s->url);
    if (bad)
        return bad;
    if (s->url.kind != DB_MYSQL)
        return "expected mysql://user:password@host:port/dbname";
    if (!s->url.password && password && *password)
        s->url.password = xstrdup(password);
    struct buf b = BUF_INIT;
    (void)buf_appendf(&b, "mysql://%s%s%s:%u/%s", s->url.user ? s->url.user : "",
                      s->url.user ? "@" : "", s->url.host, s->url.port, s->url.dbname);
    s->shown = buf_take(&b);
    return NULL;
}

/* An index of added_indexes exists (or was just created, by us or by
 * another instance starting at the same time). */
static bool ensure_index(MYSQL *db, size_t i)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
             " AND TABLE_NAME = '%s' AND INDEX_NAME = '%s'",
             added_indexes[i].table, added_indexes[i].name);
    if (mysql_real_query(db, sql, (unsigned long)strlen(sql)) != 0)
        return false;
    MYSQL_RES *r = mysql_store_result(db);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    bool exists = row && row[0] && strcmp(row[0], "0") != 0;
    mysql_free_result(r);
    if (exists)
        return true;
    log_info("store: adding index %s to table %s", added_indexes[i].name, added_indexes[i].table);
    if (mysql_real_query(db, added_indexes[i].create,
                         (unsigned long)strlen(added_indexes[i].create)) == 0)
        return true;
    return mysql_errno(db) == ER_DUP_KEYNAME;
}

/* How many bytes messages.content holds (65,535 for the old TEXT). */
static bool read_content_max(MYSQL *db, size_t *out)
{
    static const char sql[] =
        "SELECT CHARACTER_OCTET_LENGTH FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages' AND COLUMN_NAME = 'content'";
    if (mysql_real_query(db, sql, sizeof sql - 1) != 0)
        return false;
    MYSQL_RES *r = mysql_store_result(db);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    bool ok = row && row[0];
    if (ok) {
        unsigned long long v = strtoull(row[0], NULL, 10);
        *out = v > SIZE_MAX ? SIZE_MAX : (size_t)v;
    }
    mysql_free_result(r);
    return ok;
}

static enum chatd_err my_open(const char *target, const struct store_options *opt, void **be,
                              char *why, size_t why_len)
{
    struct my *s = xcalloc(1, sizeof *s);
    struct conn *c = NULL;
    enum chatd_err err = CHATD_OK;
    const char *bad;

    *be = NULL;
    s->ttl = opt->session_ttl;
    atomic_init(&s->down, false);
    atomic_init(&s->bad_time_logged, false);
    if ((bad = parse_url(s, target, opt->password))) {
        store_set_why(why, why_len, "cannot parse the mysql url: %s", bad);
        err = CHATD_EINVAL;
        goto out;
    }
    if (!library_acquire()) {
        store_set_why(why, why_len, "cannot initialise the mysql client library");
        err = CHATD_EDB;
        goto out;
    }
    s->has_library = true;
    s->has_conns = true;
    if (!store_conns_init(&s->conns, conn_close_link)) {
        store_set_why(why, why_len, "cannot create a thread key for the store");
        err = CHATD_EDB;
        goto out;
    }
    if (!(c = conn_of_thread(s))) {
        store_set_why(why, why_len, "cannot keep a connection for this thread");
        err = CHATD_EDB;
        goto out;
    }
    if (!conn_connect(c, why, why_len)) {
        err = CHATD_EDB;
        goto out;
    }
    for (size_t i = 0; i < sizeof schema_sql / sizeof schema_sql[0]; i++) {
        if (!exec_text(c->db, schema_sql[i])) {
            store_set_why(why, why_len, "cannot create the schema in %s: %s", s->shown,
                          mysql_error(c->db));
            err = CHATD_EDB;
            goto out;
        }
    }
    for (size_t i = 0; i < sizeof added_indexes / sizeof added_indexes[0]; i++) {
        if (!ensure_index(c->db, i)) {
            store_set_why(why, why_len, "cannot add index %s in %s: %s", added_indexes[i].name,
                          s->shown, mysql_error(c->db));
            err = CHATD_EDB;
            goto out;
        }
    }
    if (!read_content_max(c->db, &s->content_max)) {
        store_set_why(why, why_len, "cannot read the type of messages.content in %s: %s", s->shown,
                      mysql_errno(c->db) ? mysql_error(c->db) : "no such column");
        err = CHATD_EDB;
        goto out;
    }
    /* Every statement once, so that a schema chatd cannot use is refused
     * now, with the server's reason, rather than at the first request. */
    for (int i = 0; i < ST_COUNT_; i++) {
        enum chatd_err e2 = CHATD_OK;
        if (!take(c, (enum stmt)i, "prepare", &e2)) {
            store_set_why(why, why_len, "cannot use the tables in %s: %s", s->shown, c->last_error);
            err = CHATD_EDB;
            goto out;
        }
        give(c, (enum stmt)i);
    }
    log_info("store: mysql database %s open (server %s; messages.content holds %zu bytes)",
             s->shown, mysql_get_server_info(c->db), s->content_max);
out:
    if (err)
        my_close(s);
    else
        *be = s;
    return err;
}

static enum chatd_err ping_once(struct conn *c)
{
    int64_t n;
    return count_one(c, ST_PING, NULL, "ping", &n);
}

static enum chatd_err my_ping(void *be, char *why, size_t why_len)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;
    char reason[512] = "";

    for (int attempt = 0;; attempt++) {
        if ((err = conn_get(s, &c, reason, sizeof reason)))
            break;
        err = ping_once(c);
        if (!err || attempt > 0 || !c->retry || c->depth > 0) {
            if (err)
                snprintf(reason, sizeof reason, "%s", c->last_error);
            break;
        }
    }
    if (err)
        store_set_why(why, why_len, "%s", reason);
    return err;
}

static enum chatd_err conv_get_once(struct my *s, struct conn *c, const char *id, size_t idlen,
                                    int64_t now, bool count, struct store_conversation *out)
{
    enum stmt i = count ? ST_CONV_GET_COUNT : ST_CONV_GET;
    static const char what[] = "look up conversation";
    struct params p = {0};
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, i, what, &err);
    if (!st)
        return err;
    int64_t cut = store_cutoff(now, s->ttl);
    if (all_expired(cut)) {
        give(c, i);
        return CHATD_ENOTFOUND;
    }
    p_bytes(&p, id, idlen);
    p_time(&p, cut);
    if (!(err = execute(c, i, st, &p, "tti", what))) {
        if (fetch(c, i, st, what, &err)) {
            memcpy(out->id, id, idlen + 1);
            out->created_at = col_time(c, i, 0);
            out->last_active = col_time(c, i, 1);
            out->message_count = col_i64(c, i, 2);
        } else if (!err) {
            err = CHATD_ENOTFOUND;
        }
    }
    give(c, i);
    return err;
}

static enum chatd_err my_conversation_get(void *be, const char *id, int64_t now, bool count,
                                          struct store_conversation *out)
{
    struct my *s = be;
    struct conn *c = NULL;
    size_t idlen = strlen(id);
    enum chatd_err err;

    assert(idlen <= UUID_STR_LEN); /* store.c answered longer ones */
    WITH_RETRY(s, conv_get_once(s, c, id, idlen, now, count, out));
    return err;
}

/* Steps through message rows (id, role, content, time), calling fn. */
static enum chatd_err each_message(struct conn *c, enum stmt i, MYSQL_STMT *st, const char *what,
                                   store_message_fn fn, void *arg, size_t *count)
{
    enum chatd_err err = CHATD_OK;
    while (fetch(c, i, st, what, &err)) {
        struct store_message m;
        m.id = col_i64(c, i, 0);
        col_text(c, i, 1, &m.role, &m.role_len);
        col_text(c, i, 2, &m.content, &m.content_len);
        m.timestamp = col_time(c, i, 3);
        if (count)
            (*count)++;
        c->depth++;
        int stop = fn(arg, &m);
        c->depth--;
        c->retry = false; /* rows went out: never run again */
        if (stop)
            break;
    }
    return err;
}

static enum chatd_err history_once(struct conn *c, const char *id, size_t n, store_message_fn fn,
                                   void *arg)
{
    static const char what[] = "read history";
    struct params p = {0};
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, ST_HISTORY_TAIL, what, &err);
    if (!st)
        return err;
    p_str(&p, id);
    p_size(&p, n);
    if (!(err = execute(c, ST_HISTORY_TAIL, st, &p, "isst", what)))
        err = each_message(c, ST_HISTORY_TAIL, st, what, fn, arg, NULL);
    give(c, ST_HISTORY_TAIL);
    return err;
}

static enum chatd_err my_history_tail(void *be, const char *id, size_t n, store_message_fn fn,
                                      void *arg)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    WITH_RETRY(s, history_once(c, id, n, fn, arg));
    return err;
}

static enum chatd_err insert_message(struct conn *c, const char *conv, const char *role,
                                     const char *p, size_t n, int64_t t)
{
    struct params pr = {0};
    p_str(&pr, conv);
    p_str(&pr, role);
    p_bytes(&pr, p, n);
    p_time(&pr, t);
    return run(c, ST_INSERT_MSG, &pr, "store message", NULL);
}

/* The statements of one exchange, inside a transaction the caller owns. */
static enum chatd_err write_exchange(struct conn *c, const struct store_exchange *x, const char *q,
                                     size_t qlen, const char *a, size_t alen)
{
    struct params p = {0};
    enum chatd_err err;

    p_str(&p, x->conversation_id);
    p_time(&p, x->user_time);
    p_time(&p, x->answer_time);
    p_time(&p, x->answer_time);
    if ((err = run(c, ST_UPSERT_CONV, &p, "store conversation", NULL)))
        return err;
    if ((err = insert_message(c, x->conversation_id, "user", q, qlen, x->user_time)))
        return err;
    return insert_message(c, x->conversation_id, "assistant", a, alen, x->answer_time);
}

static enum chatd_err append_once(struct conn *c, const struct store_exchange *x, const char *q,
                                  size_t qlen, const char *a, size_t alen)
{
    enum chatd_err err;

    if ((err = begin(c, "store exchange")))
        return err;
    err = write_exchange(c, x, q, qlen, a, alen);
    if (!err)
        err = commit(c, "commit exchange");
    if (err)
        rollback(c);
    return err;
}

/* An exchange's texts as messages.content holds them (in qtmp/atmp if they
 * needed repair), or CHATD_ETOOBIG (logged) if one does not fit. */
static enum chatd_err exchange_texts(const struct my *s, const struct store_exchange *x,
                                     struct buf *qtmp, struct buf *atmp, const char **q,
                                     size_t *qlen, const char **a, size_t *alen)
{
    *q = store_text(x->question, x->question_len, qtmp, qlen);
    *a = store_text(x->answer, x->answer_len, atmp, alen);
    if (*qlen > s->content_max || *alen > s->content_max) {
        log_error("store: a %s of %zu bytes does not fit messages.content (%zu bytes) in %s;"
                  " nothing stored (see README: widen the column to MEDIUMTEXT)",
                  *qlen > s->content_max ? "message" : "answer",
                  *qlen > s->content_max ? *qlen : *alen, s->content_max, s->shown);
        return CHATD_ETOOBIG;
    }
    return CHATD_OK;
}

/* One exchange in its own transaction, retried once as WITH_RETRY allows. */
static enum chatd_err append_one(struct my *s, const struct store_exchange *x, const char *q,
                                 size_t qlen, const char *a, size_t alen)
{
    struct conn *c = NULL;
    enum chatd_err err;
    WITH_RETRY(s, append_once(c, x, q, qlen, a, alen));
    return err;
}

static enum chatd_err my_append_exchange(void *be, const struct store_exchange *x)
{
    struct my *s = be;
    struct buf qtmp = BUF_INIT, atmp = BUF_INIT;
    const char *q, *a;
    size_t qlen, alen;
    enum chatd_err err = exchange_texts(s, x, &qtmp, &atmp, &q, &qlen, &a, &alen);
    if (!err)
        err = append_one(s, x, q, qlen, a, alen);
    buf_release(&qtmp);
    buf_release(&atmp);
    return err;
}

/* One exchange of a batch, its texts ready. */
struct item {
    struct buf qtmp, atmp;
    const char *q, *a;
    size_t qlen, alen;
};

/* The batch (the exchanges whose errs[i] is CHATD_OK) in one transaction.
 * *unknown is set if the COMMIT lost the connection: its outcome is then
 * unknown. */
static enum chatd_err batch_once(struct conn *c, const struct store_exchange *xs,
                                 const struct item *it, const enum chatd_err *errs, size_t n,
                                 bool *unknown)
{
    enum chatd_err err;

    *unknown = false;
    if ((err = begin(c, "store exchanges")))
        return err;
    for (size_t i = 0; i < n && !err; i++)
        if (!errs[i])
            err = write_exchange(c, &xs[i], it[i].q, it[i].qlen, it[i].a, it[i].alen);
    if (!err) {
        err = commit(c, "commit exchanges");
        *unknown = err && c->broken;
    }
    if (err)
        rollback(c);
    return err;
}

/*
 * Group commit: START TRANSACTION, the statements of every exchange,
 * COMMIT: one transaction (and one redo log flush) for the batch. An
 * exchange too big for the column is answered CHATD_ETOOBIG at once and
 * left out. The batch follows the single path's rules: no connection at
 * the start answers CHATD_EDB for all (one connection attempt per batch
 * during an outage, not one per exchange); a connection lost before COMMIT
 * or a deadlock (InnoDB rolled the transaction back) runs the batch once
 * more, at once. If it still fails, it is rolled back and each exchange
 * tried alone (append_one, with its own one retry), so one refused
 * exchange costs only itself and every result is exact; once one of those
 * finds the server unreachable, the rest answer CHATD_EDB without trying.
 *
 * A COMMIT that lost the connection is the exception: the batch may or
 * may not have been committed and there is no way to ask, so running it
 * again, whole or one by one, could store every exchange twice. Nothing is
 * retried and all answer CHATD_EDB (as append_exchange does for its own
 * lost COMMIT): an exchange reported failed may be stored, none twice.
 */
static void my_append_exchanges(void *be, const struct store_exchange *xs, size_t n,
                                enum chatd_err *errs)
{
    struct my *s = be;
    struct conn *c = NULL;
    struct item *it = xcalloc(n ? n : 1, sizeof *it);
    size_t todo = 0;
    bool unknown = false;
    enum chatd_err err = CHATD_OK;

    for (size_t i = 0; i < n; i++) {
        errs[i] = exchange_texts(s, &xs[i], &it[i].qtmp, &it[i].atmp, &it[i].q, &it[i].qlen,
                                 &it[i].a, &it[i].alen);
        todo += errs[i] == CHATD_OK;
    }
    if (todo == 0)
        goto out;
    if (todo == 1) {
        for (size_t i = 0; i < n; i++)
            if (!errs[i])
                errs[i] = append_one(s, &xs[i], it[i].q, it[i].qlen, it[i].a, it[i].alen);
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        if ((err = conn_get(s, &c, NULL, 0))) {
            c = NULL; /* the server is unreachable: answer, do not retry */
            break;
        }
        err = batch_once(c, xs, it, errs, n, &unknown);
        if (!err || unknown || attempt > 0 || !c->retry)
            break;
    }
    if (!err)
        goto out; /* errs[] of the batch are CHATD_OK already */
    if (unknown)
        log_error("store: the connection to %s was lost during the COMMIT of %zu exchanges,"
                  " which may or may not have been stored; reported failed, not retried",
                  s->shown, todo);
    if (!c || unknown) {
        for (size_t i = 0; i < n; i++)
            if (!errs[i])
                errs[i] = CHATD_EDB;
        goto out;
    }
    log_warn("store: a batch of %zu exchanges failed; storing them one at a time", todo);
    bool down = false;
    for (size_t i = 0; i < n; i++) {
        if (errs[i])
            continue;
        if (down) {
            errs[i] = CHATD_EDB;
            continue;
        }
        errs[i] = append_one(s, &xs[i], it[i].q, it[i].qlen, it[i].a, it[i].alen);
        down = errs[i] && (!c->db || c->broken);
    }
out:
    for (size_t i = 0; i < n; i++) {
        buf_release(&it[i].qtmp);
        buf_release(&it[i].atmp);
    }
    free(it);
}

static enum chatd_err delete_once(struct my *s, struct conn *c, const char *id, int64_t now)
{
    struct params p = {0};
    uint64_t n = 0;
    int64_t cut = store_cutoff(now, s->ttl);
    enum chatd_err err;

    if (all_expired(cut))
        return CHATD_ENOTFOUND;
    if ((err = begin(c, "delete conversation")))
        return err;
    /* The conversation first: its row lock orders this against an exchange
     * or a sweep of the same conversation. */
    p_str(&p, id);
    p_time(&p, cut);
    if ((err = run(c, ST_DELETE_LIVE_CONV, &p, "delete conversation", &n)))
        goto out;
    if (n == 0) {
        err = CHATD_ENOTFOUND;
        goto out;
    }
    memset(&p, 0, sizeof p);
    p_str(&p, id);
    if ((err = run(c, ST_DELETE_MSGS, &p, "delete messages", NULL)))
        goto out;
    err = commit(c, "commit delete");
out:
    if (err)
        rollback(c);
    return err;
}

static enum chatd_err my_delete_conversation(void *be, const char *id, int64_t now)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    assert(strlen(id) <= UUID_STR_LEN);
    WITH_RETRY(s, delete_once(s, c, id, now));
    return err;
}

static enum chatd_err messages_once(struct conn *c, const char *id, int64_t after_id, size_t limit,
                                    store_message_fn fn, void *arg, size_t *count)
{
    static const char what[] = "read messages";
    struct params p = {0};
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, ST_MESSAGES_AFTER, what, &err);
    if (!st)
        return err;
    p_str(&p, id);
    p_i64(&p, after_id);
    p_size(&p, limit);
    if (!(err = execute(c, ST_MESSAGES_AFTER, st, &p, "isst", what)))
        err = each_message(c, ST_MESSAGES_AFTER, st, what, fn, arg, count);
    give(c, ST_MESSAGES_AFTER);
    return err;
}

static enum chatd_err my_messages_after(void *be, const char *id, int64_t after_id, size_t limit,
                                        store_message_fn fn, void *arg, size_t *count)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    WITH_RETRY(s, messages_once(c, id, after_id, limit, fn, arg, count));
    return err;
}

static enum chatd_err convs_once(struct my *s, struct conn *c, int64_t after_created,
                                 const char *after_id, int64_t from, int64_t to, int64_t now,
                                 size_t limit, store_conversation_fn fn, void *arg, size_t *count)
{
    static const char what[] = "list conversations";
    const enum stmt i = ST_CONVS_AFTER;
    struct params p = {0};
    int64_t cut = store_cutoff(now, s->ttl);
    enum chatd_err err = CHATD_OK;
    if (all_expired(cut))
        return CHATD_OK;
    MYSQL_STMT *st = take(c, i, what, &err);
    if (!st)
        return err;
    /* From the start: the key (from, "") sorts before every stored key at
     * or after `from`, so the index range starts there. */
    int64_t key = after_id[0] ? after_created : from;
    p_time(&p, key);
    p_time(&p, key);
    p_str(&p, after_id);
    p_time(&p, from);
    p_time(&p, to);
    p_i64(&p, to > TIME_MAX);
    p_time(&p, cut);
    p_size(&p, limit);
    if (!(err = execute(c, i, st, &p, "stti", what))) {
        while (fetch(c, i, st, what, &err)) {
            struct store_conversation conv;
            const char *id;
            size_t n;
            col_text(c, i, 0, &id, &n);
            assert(n <= UUID_STR_LEN); /* the query's length filter */
            if (n > UUID_STR_LEN)
                n = UUID_STR_LEN;
            memcpy(conv.id, id, n);
            conv.id[n] = '\0';
            conv.created_at = col_time(c, i, 1);
            conv.last_active = col_time(c, i, 2);
            conv.message_count = col_i64(c, i, 3);
            (*count)++;
            c->depth++;
            int stop = fn(arg, &conv);
            c->depth--;
            c->retry = false;
            if (stop)
                break;
        }
    }
    give(c, i);
    return err;
}

static enum chatd_err my_conversations_after(void *be, int64_t after_created, const char *after_id,
                                             int64_t from, int64_t to, int64_t now, size_t limit,
                                             store_conversation_fn fn, void *arg, size_t *count)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    WITH_RETRY(s, convs_once(s, c, after_created, after_id, from, to, now, limit, fn, arg, count));
    return err;
}

static enum chatd_err count_convs_once(struct my *s, struct conn *c, int64_t from, int64_t to,
                                       int64_t now, int64_t *out)
{
    struct params p = {0};
    int64_t cut = store_cutoff(now, s->ttl);
    if (all_expired(cut)) {
        *out = 0;
        return CHATD_OK;
    }
    p_time(&p, from);
    p_time(&p, to);
    p_i64(&p, to > TIME_MAX);
    p_time(&p, cut);
    return count_one(c, ST_COUNT_CONVS, &p, "count conversations", out);
}

static enum chatd_err my_count_conversations(void *be, int64_t from, int64_t to, int64_t now,
                                             int64_t *out)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    WITH_RETRY(s, count_convs_once(s, c, from, to, now, out));
    return err;
}

static enum chatd_err count_active_once(struct my *s, struct conn *c, int64_t now, int64_t *out)
{
    struct params p = {0};
    p_expiry(&p, store_cutoff(now, s->ttl));
    return count_one(c, ST_COUNT_ACTIVE, &p, "count active conversations", out);
}

static enum chatd_err my_count_active(void *be, int64_t now, int64_t *out)
{
    struct my *s = be;
    struct conn *c = NULL;
    enum chatd_err err;

    WITH_RETRY(s, count_active_once(s, c, now, out));
    return err;
}

/* Collects up to SWEEP_BATCH expired ids, NUL-separated, into ids. A plain
 * (non-locking) read: the deletes check expiry again under their locks. */
static enum chatd_err sweep_select(struct my *s, struct conn *c, int64_t now, struct buf *ids,
                                   size_t *found)
{
    static const char what[] = "sweep expired conversations";
    const enum stmt i = ST_SWEEP_SELECT;
    struct params p = {0};
    enum chatd_err err = CHATD_OK;
    MYSQL_STMT *st = take(c, i, what, &err);

    *found = 0;
    buf_reset(ids);
    if (!st)
        return err;
    p_expiry(&p, store_cutoff(now, s->ttl));
    p_i64(&p, SWEEP_BATCH);
    if (!(err = execute(c, i, st, &p, "s", what))) {
        while (fetch(c, i, st, what, &err)) {
            const char *id;
            size_t n;
            col_text(c, i, 0, &id, &n);
            (void)buf_append(ids, id, n);
            (void)buf_append_char(ids, '\0');
            (*found)++;
        }
    }
    give(c, i);
    return err;
}

/* Deletes the batch's conversations that are still expired - another
 * instance may have swept one, or a chat revived it, since the select -
 * and their messages, in one transaction. done gets the ids deleted. */
static enum chatd_err sweep_delete(struct my *s, struct conn *c, int64_t now, const struct buf *ids,
                                   struct buf *done, size_t *deleted)
{
    int64_t cut = store_cutoff(now, s->ttl);
    enum chatd_err err;

    *deleted = 0;
    buf_reset(done);
    if ((err = begin(c, "sweep expired conversations")))
        return err;
    for (size_t off = 0; !err && off < ids->len; off += strlen(ids->ptr + off) + 1) {
        const char *id = ids->ptr + off;
        struct params p = {0};
        uint64_t n = 0;
        p_str(&p, id);
        p_expiry(&p, cut);
        if ((err = run(c, ST_SWEEP_DELETE_CONV, &p, "sweep expired conversation", &n)) || n == 0)
            continue;
        memset(&p, 0, sizeof p);
        p_str(&p, id);
        if ((err = run(c, ST_DELETE_MSGS, &p, "sweep expired conversation", NULL)))
            continue;
        (void)buf_append_str(done, id);
        (void)buf_append_char(done, '\0');
        (*deleted)++;
    }
    if (!err)
        err = commit(c, "commit sweep");
    if (err) {
        rollback(c);
        *deleted = 0;
        buf_reset(done);
    }
    return err;
}

static enum chatd_err my_sweep_expired(void *be, int64_t now, store_deleted_fn deleted, void *arg,
                                       int64_t *n)
{
    struct my *s = be;
    struct conn *c = NULL;
    struct buf ids = BUF_INIT, done = BUF_INIT;
    size_t found = 0, gone = 0;
    enum chatd_err err;

    *n = 0;
    do {
        WITH_RETRY(s, sweep_select(s, c, now, &ids, &found));
        if (err || found == 0)
            break;
        /* Instances sweeping at once may deadlock or wait on each other's
         * locks: the loser rolls back and tries its batch again. */
        for (int tries = 0; tries < SWEEP_TRIES; tries++) {
            WITH_RETRY(s, sweep_delete(s, c, now, &ids, &done, &gone));
            if (!err || !c || !c->retry)
                break;
        }
        if (err)
            break;
        *n += (int64_t)gone;
        for (size_t off = 0; deleted && off < done.len; off += strlen(done.ptr + off) + 1)
            deleted(arg, done.ptr + off);
    } while (found == SWEEP_BATCH && gone > 0);
    buf_release(&ids);
    buf_release(&done);
    return err;
}

const struct store_ops store_mysql_ops = {
    .name = "mysql",
    .open = my_open,
    .close = my_close,
    .ping = my_ping,
    .conversation_get = my_conversation_get,
    .history_tail = my_history_tail,
    .append_exchange = my_append_exchange,
    .append_exchanges = my_append_exchanges,
    .delete_conversation = my_delete_conversation,
    .messages_after = my_messages_after,
    .conversations_after = my_conversations_after,
    .count_conversations = my_count_conversations,
    .sweep_expired = my_sweep_expired,
    .count_active = my_count_active,
};
