/*
 * sqlite.c - the SQLite backend of store.h (SQLite 3.40, WAL).
 *
 * Connections: one per calling thread, opened on that thread's first call
 * and kept in the per-thread registry of conns.h, so that close() can
 * finish them all; a thread that exits closes its own. close() may run while
 * threads that used the store are still alive, but not while one of them
 * is exiting (main() joins its threads first). Each connection runs
 * journal_mode=WAL (checked), synchronous=NORMAL, foreign_keys=ON and a
 * 5 s busy_timeout, and prepares every statement once
 * (SQLITE_PREPARE_PERSISTENT). Statements are reset as soon as a call is
 * done with them: one left running would pin a read transaction and
 * starve checkpoints. A row callback runs while its statement is open, so
 * it must be short; from inside it, other store functions may be called,
 * but not the one that is iterating (that answers CHATD_EINTERNAL).
 *
 * Writes: every write transaction starts with BEGIN IMMEDIATE, so that it
 * waits for the write lock under busy_timeout instead of failing with
 * SQLITE_BUSY on upgrade (notes/libraries.md, pitfall 19). Before each
 * call the connection asks SQLite whether its file was deleted or replaced
 * (SQLITE_FCNTL_HAS_MOVED, one stat); if so it is reopened, so that writes
 * never go on into an unlinked file and a restored file is picked up.
 *
 * Times are TEXT 'YYYY-MM-DDTHH:MM:SS.ffffff' (timefmt_iso), which sorts
 * like time, so expiry and date filters compare text in SQL and use the
 * indexes. Rows written by other tools may use a space instead of the T
 * or fewer fraction digits: they read back fine (timefmt_parse_iso), and
 * bounds at midnight are bound as the bare date 'YYYY-MM-DD', which sorts
 * before every time of that day in either form, so date filters are exact
 * for them too. Left out: such a row's expiry is only exact to the day on
 * the cutoff's own day (' ' sorts before 'T'). A time that does not parse
 * reads as 0 and is logged once per store.
 *
 * Content and role are bound as UTF-8 TEXT with an explicit length (so
 * other tools, Python's sqlite3 included, see strings) and read back with
 * sqlite3_column_blob/bytes, which returns the stored bytes unchanged
 * whatever they hold (NUL, invalid UTF-8, or a BLOB a shell user wrote).
 *
 * Pagination is keyset only: messages by id; conversations by
 * (created_at, id), where the created_at of the key row is read back from
 * the table by its id, so the key compares in the stored text even for
 * foreign time formats (falling back to the caller's time if that row was
 * deleted meanwhile).
 */
#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "store/backend.h"
#include "store/conns.h"

#define BUSY_TIMEOUT_MS  5000
#define PROBE_TIMEOUT_MS 1000
#define SWEEP_BATCH      500

#define USEC_PER_DAY (86400 * USEC_PER_SEC)
/* The years timefmt_iso can print: 0001-01-01 .. 9999-12-31T23:59:59.999999. */
#define TIME_MIN (INT64_C(-62135596800) * USEC_PER_SEC)
#define TIME_MAX (INT64_C(253402300800) * USEC_PER_SEC - 1)

static const char schema_sql[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE IF NOT EXISTS conversations ("
    " id TEXT PRIMARY KEY,"
    " created_at TEXT NOT NULL,"
    " last_active TEXT NOT NULL);"
    /* (created_at, id): the keyset order of conversations_after. */
    "CREATE INDEX IF NOT EXISTS idx_conversations_created_at ON conversations(created_at, id);"
    "CREATE INDEX IF NOT EXISTS idx_conversations_last_active ON conversations(last_active);"
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    " role TEXT NOT NULL,"
    " content TEXT NOT NULL,"
    " timestamp TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages(conversation_id, id);"
    "COMMIT;";

enum stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_CONV_GET,
    ST_CONV_GET_COUNT,
    ST_HISTORY_TAIL,
    ST_UPSERT_CONV,
    ST_INSERT_MSG,
    ST_DELETE_LIVE_MSGS,
    ST_DELETE_LIVE_CONV,
    ST_MESSAGES_AFTER,
    ST_CONVS_AFTER,
    ST_COUNT_CONVS,
    ST_COUNT_ACTIVE,
    ST_SWEEP_SELECT,
    ST_DELETE_MSGS,
    ST_DELETE_CONV,
    ST_COUNT_
};

/* Deleting messages explicitly (not only by ON DELETE CASCADE) keeps
 * deletes right on a database whose tables another tool created without
 * the foreign key. Conversation ids longer than a UUID cannot be handed out
 * through struct store_conversation, so the listing skips them, and so does
 * its count. */
static const char *const stmt_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT 1 FROM conversations LIMIT 1",
    [ST_CONV_GET] = "SELECT created_at, last_active, -1"
                    " FROM conversations WHERE id = ?1 AND last_active >= ?2",
    [ST_CONV_GET_COUNT] = "SELECT created_at, last_active,"
                          " (SELECT count(*) FROM messages WHERE conversation_id = ?1)"
                          " FROM conversations WHERE id = ?1 AND last_active >= ?2",
    [ST_HISTORY_TAIL] = "SELECT id, role, content, timestamp FROM"
                        " (SELECT id, role, content, timestamp FROM messages"
                        "  WHERE conversation_id = ?1 ORDER BY id DESC LIMIT ?2)"
                        " ORDER BY id",
    [ST_UPSERT_CONV] = "INSERT INTO conversations(id, created_at, last_active) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT(id) DO UPDATE SET last_active = excluded.last_active",
    [ST_INSERT_MSG] = "INSERT INTO messages(conversation_id, role, content, timestamp)"
                      " VALUES (?1, ?2, ?3, ?4)",
    [ST_DELETE_LIVE_MSGS] = "DELETE FROM messages WHERE conversation_id = ?1 AND EXISTS"
                            " (SELECT 1 FROM conversations WHERE id = ?1 AND last_active >= ?2)",
    [ST_DELETE_LIVE_CONV] = "DELETE FROM conversations WHERE id = ?1 AND last_active >= ?2",
    [ST_MESSAGES_AFTER] = "SELECT id, role, content, timestamp FROM messages"
                          " WHERE conversation_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [ST_CONVS_AFTER] =
        "SELECT c.id, c.created_at, c.last_active,"
        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
        " FROM conversations c"
        " WHERE (c.created_at, c.id) >"
        "  (coalesce((SELECT k.created_at FROM conversations k WHERE k.id = ?2), ?1), ?2)"
        " AND c.created_at >= ?3 AND c.created_at < ?4 AND c.last_active >= ?5"
        " AND length(CAST(c.id AS BLOB)) <= 36"
        " ORDER BY c.created_at, c.id LIMIT ?6",
    [ST_COUNT_CONVS] = "SELECT count(*) FROM conversations"
                       " WHERE created_at >= ?1 AND created_at < ?2 AND last_active >= ?3"
                       " AND length(CAST(id AS BLOB)) <= 36",
    [ST_COUNT_ACTIVE] = "SELECT count(*) FROM conversations WHERE last_active >= ?1",
    [ST_SWEEP_SELECT] = "SELECT id FROM conversations WHERE last_active < ?1 LIMIT ?2",
    [ST_DELETE_MSGS] = "DELETE FROM messages WHERE conversation_id = ?1",
    [ST_DELETE_CONV] = "DELETE FROM conversations WHERE id = ?1",
};

struct sq {
    char *path;                  /* the database file, as given */
    int64_t ttl;                 /* usec of inactivity before expiry */
    struct store_conns conns;    /* every thread's connection */
    bool has_conns;              /* conns was initialised */
    pthread_mutex_t write_lock;  /* held for the whole of a write transaction */
    atomic_bool bad_time_logged; /* an unparseable time was logged */
    pthread_mutex_t probe_lock;  /* guards the three below */
    int64_t probed_at;           /* monotonic usec of the last probe, 0 = never */
    enum chatd_err probe_err;    /* its verdict */
    char probe_why[256];         /* and its reason */
};

struct conn {
    struct sq *owner;
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT_];
    bool busy[ST_COUNT_];        /* statement taken by a call in progress */
    bool writing;                /* holds owner->write_lock, in a write transaction */
    struct store_conn_link link; /* in owner->conns */
};

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    if (!c)
        return;
    for (int i = 0; i < ST_COUNT_; i++)
        sqlite3_finalize(c->st[i]);
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_error("store: closing '%s': %s", c->owner->path, sqlite3_errmsg(c->db));
    free(c);
}

static bool exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

/* journal_mode answers the mode it ended up in: WAL can be refused (e.g. on
 * a read-only directory), and silently running without it would turn every
 * reader into a writer-blocker.
 *
 * Several connections switching a new file to WAL at once (instances or
 * threads opening it together) can get SQLITE_BUSY at once: SQLite skips
 * the busy handler where waiting could deadlock. Such a switch is retried,
 * 10 ms apart, for as long as busy_timeout would have waited. */
static bool set_wal(sqlite3 *db, char *mode, size_t mode_len)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        goto out;
    int rc;
    for (int waited = 0;; waited += 10) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_BUSY || waited >= BUSY_TIMEOUT_MS)
            break;
        sqlite3_reset(st);
        sqlite3_sleep(10);
    }
    if (rc != SQLITE_ROW)
        goto out;
    const char *m = (const char *)sqlite3_column_text(st, 0);
    snprintf(mode, mode_len, "%s", m ? m : "");
    ok = true;
out:
    sqlite3_finalize(st);
    return ok;
}

/* Opens and sets up one connection. create: may create the file and the
 * schema (store_open only; later connections must find both). */
static struct conn *conn_open(struct sq *s, bool create, char *why, size_t why_len)
{
    struct conn *c = xcalloc(1, sizeof *c);
    char mode[16];
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);

    c->owner = s;
    int rc = sqlite3_open_v2(s->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        store_set_why(why, why_len, "cannot open database '%s': %s", s->path,
                      c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    if (!set_wal(c->db, mode, sizeof mode))
        goto fail_db;
    if (strcasecmp(mode, "wal") != 0) {
        store_set_why(why, why_len, "cannot open database '%s': journal_mode is '%s', not wal",
                      s->path, mode);
        goto fail;
    }
    if (!exec_sql(c->db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON"))
        goto fail_db;
    if (create && !exec_sql(c->db, schema_sql)) {
        store_set_why(why, why_len, "cannot create the schema in '%s': %s", s->path,
                      sqlite3_errmsg(c->db));
        exec_sql(c->db, "ROLLBACK");
        goto fail;
    }
    for (int i = 0; i < ST_COUNT_; i++) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i],
                               NULL) != SQLITE_OK)
            goto fail_db;
    }
    return c;
fail_db:
    store_set_why(why, why_len, "cannot open database '%s': %s", s->path, sqlite3_errmsg(c->db));
fail:
    conn_close(c);
    return NULL;
}

/* The registry's close function (conns.h). */
static void conn_close_link(struct store_conn_link *l, bool thread_exit)
{
    (void)thread_exit;
    conn_close(STORE_CONN_OF(l, struct conn, link));
}

static bool file_moved(struct conn *c)
{
    int moved = 0;
    if (sqlite3_file_control(c->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
        return false;
    return moved != 0;
}

/* This thread's connection, opened if it has none, reopened if its file was
 * deleted or replaced. On failure the reason is logged (and put in why). */
static enum chatd_err conn_get(struct sq *s, struct conn **out, char *why, size_t why_len)
{
    char reason[512];
    struct store_conn_link *l = store_conns_mine(&s->conns);
    struct conn *c = l ? STORE_CONN_OF(l, struct conn, link) : NULL;

    if (c && file_moved(c)) {
        log_warn("store: database file '%s' was deleted or replaced; reconnecting", s->path);
        store_conns_forget(&s->conns, &c->link);
        conn_close(c);
        c = NULL;
    }
    if (!c) {
        c = conn_open(s, false, reason, sizeof reason);
        if (!c) {
            log_error("store: %s", reason);
            store_set_why(why, why_len, "%s", reason);
            return CHATD_EDB;
        }
        if (!store_conns_add(&s->conns, &c->link)) {
            log_error("store: cannot keep a connection for this thread");
            store_set_why(why, why_len, "cannot keep a connection for this thread");
            conn_close(c);
            return CHATD_EDB;
        }
    }
    *out = c;
    return CHATD_OK;
}

/* ---- statements ---- */

/* Hands out a prepared statement; NULL if it is already iterating further
 * up this thread's stack (a row callback calling the same function). */
static sqlite3_stmt *take(struct conn *c, enum stmt i)
{
    if (c->busy[i]) {
        log_error("store: a row callback called the store function that is calling it");
        return NULL;
    }
    c->busy[i] = true;
    return c->st[i];
}

/* Every statement goes back reset: a statement left mid-result holds its
 * read transaction open. Bindings are cleared so no pointer outlives us. */
static void give(struct conn *c, enum stmt i)
{
    sqlite3_reset(c->st[i]);
    sqlite3_clear_bindings(c->st[i]);
    c->busy[i] = false;
}

/* Logs the failure once with SQLite's reason and maps it. */
static enum chatd_err fail(struct conn *c, const char *what)
{
    log_error("store: %s: %s", what, sqlite3_errmsg(c->db));
    return CHATD_EDB;
}

static int bind_bytes(sqlite3_stmt *st, int i, const char *p, size_t n)
{
    return sqlite3_bind_text64(st, i, n ? p : "", n, SQLITE_STATIC, SQLITE_UTF8);
}

static int bind_str(sqlite3_stmt *st, int i, const char *s)
{
    return bind_bytes(st, i, s, strlen(s));
}

/* A stored time, exactly. */
static int bind_time(sqlite3_stmt *st, int i, int64_t t)
{
    char iso[TIMEFMT_ISO_LEN + 1];
    if (t < TIME_MIN)
        t = TIME_MIN;
    if (t > TIME_MAX)
        t = TIME_MAX;
    timefmt_iso(t, iso);
    return sqlite3_bind_text(st, i, iso, TIMEFMT_ISO_LEN, SQLITE_TRANSIENT);
}

/* A bound to compare stored times against with >=, < (not an exact key).
 * Out of range: "" sorts before and "~" after every date. At midnight: the
 * bare date, which sorts before every time of that day whether it was
 * written with a T or a space. */
static int bind_bound(sqlite3_stmt *st, int i, int64_t t)
{
    char iso[TIMEFMT_ISO_LEN + 1];
    if (t < TIME_MIN)
        return sqlite3_bind_text(st, i, "", 0, SQLITE_STATIC);
    if (t > TIME_MAX)
        return sqlite3_bind_text(st, i, "~", 1, SQLITE_STATIC);
    timefmt_iso(t, iso);
    int n = t % USEC_PER_DAY == 0 ? 10 : TIMEFMT_ISO_LEN;
    return sqlite3_bind_text(st, i, iso, n, SQLITE_TRANSIENT);
}

static int bind_size(sqlite3_stmt *st, int i, size_t n)
{
    return sqlite3_bind_int64(st, i, n > (size_t)INT64_MAX ? INT64_MAX : (int64_t)n);
}

static void column(sqlite3_stmt *st, int i, const char **p, size_t *n)
{
    const char *b = sqlite3_column_blob(st, i); /* before _bytes: no conversion */
    *n = (size_t)sqlite3_column_bytes(st, i);
    *p = b ? b : "";
    if (!b)
        *n = 0;
}

static int64_t column_time(struct sq *s, sqlite3_stmt *st, int i)
{
    int64_t t = 0;
    const char *p = NULL;
    size_t n = 0;

    if (sqlite3_column_type(st, i) == SQLITE_TEXT) {
        p = (const char *)sqlite3_column_text(st, i);
        n = (size_t)sqlite3_column_bytes(st, i);
        if (p && timefmt_parse_iso(p, n, &t))
            return t;
    }
    if (!atomic_exchange(&s->bad_time_logged, true)) {
        char shown[41];
        size_t k = 0;
        for (; p && k < n && k < sizeof shown - 1; k++)
            shown[k] = p[k] >= 0x20 && p[k] < 0x7f && p[k] != '\'' ? p[k] : '?';
        shown[k] = '\0';
        log_warn("store: unreadable time '%s' in '%s' read as 0 (further ones not logged)", shown,
                 s->path);
    }
    return 0;
}

static void row_message(struct sq *s, sqlite3_stmt *st, struct store_message *m)
{
    m->id = sqlite3_column_int64(st, 0);
    column(st, 1, &m->role, &m->role_len);
    column(st, 2, &m->content, &m->content_len);
    m->timestamp = column_time(s, st, 3);
}

/* Steps through message rows, calling fn for each. */
static enum chatd_err each_message(struct sq *s, struct conn *c, sqlite3_stmt *st, const char *what,
                                   store_message_fn fn, void *arg, size_t *count)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_message m;
        row_message(s, st, &m);
        if (count)
            (*count)++;
        if (fn(arg, &m)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    return rc == SQLITE_DONE ? CHATD_OK : fail(c, what);
}

/* Runs a statement that returns no rows. */
static bool run(struct conn *c, enum stmt i)
{
    sqlite3_stmt *st = take(c, i);
    if (!st)
        return false;
    int rc = sqlite3_step(st);
    give(c, i);
    return rc == SQLITE_DONE;
}

/*
 * Write transactions of this process take turns on write_lock before
 * BEGIN IMMEDIATE: threads then queue on a mutex, while SQLite's busy
 * handler, which sleeps 1, 2, 5... ms between tries, is left for waits on
 * other processes. Every begin() that succeeds ends in commit() or
 * rollback(), which let go of the lock.
 */
static enum chatd_err begin(struct conn *c, const char *what)
{
    pthread_mutex_lock(&c->owner->write_lock);
    if (!run(c, ST_BEGIN)) {
        pthread_mutex_unlock(&c->owner->write_lock);
        return fail(c, what);
    }
    c->writing = true;
    return CHATD_OK;
}

static void end_write(struct conn *c)
{
    if (c->writing) {
        c->writing = false;
        pthread_mutex_unlock(&c->owner->write_lock);
    }
}

/* On failure the transaction is still open: the caller rolls back. */
static enum chatd_err commit(struct conn *c, const char *what)
{
    if (!run(c, ST_COMMIT))
        return fail(c, what);
    end_write(c);
    return CHATD_OK;
}

/* Some errors (SQLITE_FULL, SQLITE_IOERR, ...) roll back by themselves;
 * ROLLBACK then would only fail again. */
static void rollback(struct conn *c)
{
    if (!sqlite3_get_autocommit(c->db) && !run(c, ST_ROLLBACK))
        log_error("store: rollback: %s", sqlite3_errmsg(c->db));
    end_write(c);
}

static enum chatd_err count_one(struct conn *c, sqlite3_stmt *st, const char *what, int64_t *out)
{
    if (sqlite3_step(st) != SQLITE_ROW)
        return fail(c, what);
    *out = sqlite3_column_int64(st, 0);
    return CHATD_OK;
}

/* ---- the store_ops functions ---- */

static void sq_close(void *be)
{
    struct sq *s = be;

    if (!s)
        return;
    if (s->has_conns)
        store_conns_fini(&s->conns);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->probe_lock);
    free(s->path);
    free(s);
}

static enum chatd_err sq_open(const char *target, const struct store_options *opt, void **be,
                              char *why, size_t why_len)
{
    struct sq *s = NULL;
    struct conn *c = NULL;
    enum chatd_err err = CHATD_OK;

    *be = NULL;
    if (strcmp(target, ":memory:") == 0 || strncmp(target, "file:", 5) == 0) {
        store_set_why(why, why_len,
                      "sqlite:%s is not supported: give a file path (every thread opens its own "
                      "connection to it)",
                      target);
        return CHATD_EINVAL;
    }
    if (!sqlite3_threadsafe()) {
        store_set_why(why, why_len, "this sqlite library was built without thread support");
        return CHATD_EDB;
    }
    s = xcalloc(1, sizeof *s);
    s->path = xstrdup(target);
    s->ttl = opt->session_ttl;
    atomic_init(&s->bad_time_logged, false);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->probe_lock, NULL);
    s->has_conns = true;
    if (!store_conns_init(&s->conns, conn_close_link)) {
        store_set_why(why, why_len, "cannot create a thread key for the store");
        err = CHATD_EDB;
        goto out;
    }
    c = conn_open(s, true, why, why_len);
    if (!c) {
        err = CHATD_EDB;
        goto out;
    }
    if (!store_conns_add(&s->conns, &c->link)) {
        store_set_why(why, why_len, "cannot keep a connection for this thread");
        conn_close(c);
        err = CHATD_EDB;
        goto out;
    }
    log_info("store: sqlite database '%s' open (wal)", s->path);
out:
    if (err)
        sq_close(s);
    else
        *be = s;
    return err;
}

#define PROBE_EVERY_USEC (1 * USEC_PER_SEC)

static enum chatd_err probe_now(struct sq *s, char *why, size_t why_len);

/* The verdict of probe_now(), at most PROBE_EVERY_USEC old: opening a
 * connection for every /health would make it the slowest endpoint. */
static enum chatd_err probe(struct sq *s, char *why, size_t why_len)
{
    int64_t now = time_mono_usec();
    pthread_mutex_lock(&s->probe_lock);
    if (!s->probed_at || now - s->probed_at >= PROBE_EVERY_USEC) {
        s->probe_err = probe_now(s, s->probe_why, sizeof s->probe_why);
        s->probed_at = now;
    }
    enum chatd_err err = s->probe_err;
    if (err)
        store_set_why(why, why_len, "%s", s->probe_why);
    pthread_mutex_unlock(&s->probe_lock);
    return err;
}

/* A fresh connection reads the file from disk, not from a page cache, so it
 * also notices a file made unreadable, read-only or overwritten in place. */
static enum chatd_err probe_now(struct sq *s, char *why, size_t why_len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    enum chatd_err err = CHATD_EDB;

    int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        store_set_why(why, why_len, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(db, PROBE_TIMEOUT_MS);
    if (sqlite3_db_readonly(db, "main") == 1) {
        store_set_why(why, why_len, "database file '%s' is read-only", s->path);
        goto out;
    }
    if (sqlite3_prepare_v2(db, stmt_sql[ST_PING], -1, &st, NULL) != SQLITE_OK) {
        store_set_why(why, why_len, "%s", sqlite3_errmsg(db));
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_set_why(why, why_len, "%s", sqlite3_errmsg(db));
        goto out;
    }
    err = CHATD_OK;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return err;
}

static enum chatd_err sq_ping(void *be, char *why, size_t why_len)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    char reason[512];
    enum chatd_err err;

    if ((err = conn_get(s, &c, reason, sizeof reason)))
        goto out;
    if (!(st = take(c, ST_PING))) {
        snprintf(reason, sizeof reason, "ping called from a ping");
        err = CHATD_EINTERNAL;
        goto out;
    }
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(reason, sizeof reason, "%s", sqlite3_errmsg(c->db));
        err = fail(c, "ping");
    }
    give(c, ST_PING);
    if (!err && (err = probe(s, reason, sizeof reason)))
        log_error("store: ping '%s': %s", s->path, reason);
out:
    if (err)
        store_set_why(why, why_len, "%s", reason);
    return err;
}

static enum chatd_err sq_conversation_get(void *be, const char *id, int64_t now, bool count,
                                          struct store_conversation *out)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    size_t idlen = strlen(id);
    enum chatd_err err;

    assert(idlen <= UUID_STR_LEN); /* store.c answered longer ones */
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    enum stmt which = count ? ST_CONV_GET_COUNT : ST_CONV_GET;
    if (!(st = take(c, which)))
        return CHATD_EINTERNAL;
    if (bind_bytes(st, 1, id, idlen) || bind_bound(st, 2, store_cutoff(now, s->ttl))) {
        err = fail(c, "look up conversation");
        goto out;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = CHATD_ENOTFOUND;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        err = fail(c, "look up conversation");
        goto out;
    }
    memcpy(out->id, id, idlen + 1);
    out->created_at = column_time(s, st, 0);
    out->last_active = column_time(s, st, 1);
    out->message_count = sqlite3_column_int64(st, 2);
out:
    give(c, which);
    return err;
}

static enum chatd_err sq_history_tail(void *be, const char *id, size_t n, store_message_fn fn,
                                      void *arg)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if (!(st = take(c, ST_HISTORY_TAIL)))
        return CHATD_EINTERNAL;
    if (bind_str(st, 1, id) || bind_size(st, 2, n))
        err = fail(c, "read history");
    else
        err = each_message(s, c, st, "read history", fn, arg, NULL);
    give(c, ST_HISTORY_TAIL);
    return err;
}

static enum chatd_err insert_message(struct conn *c, const char *conv, const char *role,
                                     const char *p, size_t n, int64_t t)
{
    sqlite3_stmt *st = take(c, ST_INSERT_MSG);
    enum chatd_err err = CHATD_OK;
    if (!st)
        return CHATD_EINTERNAL;
    if (bind_str(st, 1, conv) || bind_str(st, 2, role) || bind_bytes(st, 3, p, n) ||
        bind_time(st, 4, t) || sqlite3_step(st) != SQLITE_DONE)
        err = fail(c, "store message");
    give(c, ST_INSERT_MSG);
    return err;
}

/* The statements of one exchange, inside a transaction the caller owns. */
static enum chatd_err write_exchange(struct conn *c, const struct store_exchange *x)
{
    sqlite3_stmt *st = take(c, ST_UPSERT_CONV);
    enum chatd_err err = CHATD_OK;
    if (!st)
        return CHATD_EINTERNAL;
    if (bind_str(st, 1, x->conversation_id) || bind_time(st, 2, x->user_time) ||
        bind_time(st, 3, x->answer_time) || sqlite3_step(st) != SQLITE_DONE)
        err = fail(c, "store conversation");
    give(c, ST_UPSERT_CONV);
    if (err)
        return err;
    err = insert_message(c, x->conversation_id, "user", x->question, x->question_len, x->user_time);
    if (err)
        return err;
    return insert_message(c, x->conversation_id, "assistant", x->answer, x->answer_len,
                          x->answer_time);
}

static enum chatd_err sq_append_exchange(void *be, const struct store_exchange *x)
{
    struct sq *s = be;
    struct conn *c;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if ((err = begin(c, "store exchange")))
        return err;
    err = write_exchange(c, x);
    if (!err)
        err = commit(c, "commit exchange");
    if (err)
        rollback(c);
    return err;
}

/* Group commit: all n in one transaction. If anything fails the whole
 * batch is rolled back and each exchange tried alone, so one bad exchange
 * costs only itself and every result is exact. */
static void sq_append_exchanges(void *be, const struct store_exchange *xs, size_t n,
                                enum chatd_err *errs)
{
    struct sq *s = be;
    struct conn *c;
    enum chatd_err err = CHATD_OK;

    if (n > 1 && !(err = conn_get(s, &c, NULL, 0)) && !(err = begin(c, "store exchanges"))) {
        for (size_t i = 0; i < n && !err; i++)
            err = write_exchange(c, &xs[i]);
        if (!err)
            err = commit(c, "commit exchanges");
        if (!err) {
            for (size_t i = 0; i < n; i++)
                errs[i] = CHATD_OK;
            return;
        }
        rollback(c);
    }
    for (size_t i = 0; i < n; i++)
        errs[i] = sq_append_exchange(be, &xs[i]);
}

static enum chatd_err sq_delete_conversation(void *be, const char *id, int64_t now)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    int64_t cut = store_cutoff(now, s->ttl);
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if ((err = begin(c, "delete conversation")))
        return err;
    /* Messages first: a foreign schema may have the key without CASCADE. */
    if (!(st = take(c, ST_DELETE_LIVE_MSGS))) {
        err = CHATD_EINTERNAL;
        goto out;
    }
    if (bind_str(st, 1, id) || bind_bound(st, 2, cut) || sqlite3_step(st) != SQLITE_DONE)
        err = fail(c, "delete messages");
    give(c, ST_DELETE_LIVE_MSGS);
    if (err)
        goto out;
    if (!(st = take(c, ST_DELETE_LIVE_CONV))) {
        err = CHATD_EINTERNAL;
        goto out;
    }
    if (bind_str(st, 1, id) || bind_bound(st, 2, cut) || sqlite3_step(st) != SQLITE_DONE)
        err = fail(c, "delete conversation");
    else if (sqlite3_changes(c->db) == 0)
        err = CHATD_ENOTFOUND;
    give(c, ST_DELETE_LIVE_CONV);
    if (err)
        goto out;
    err = commit(c, "commit delete");
out:
    if (err)
        rollback(c);
    return err;
}

static enum chatd_err sq_messages_after(void *be, const char *id, int64_t after_id, size_t limit,
                                        store_message_fn fn, void *arg, size_t *count)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if (!(st = take(c, ST_MESSAGES_AFTER)))
        return CHATD_EINTERNAL;
    if (bind_str(st, 1, id) || sqlite3_bind_int64(st, 2, after_id) || bind_size(st, 3, limit))
        err = fail(c, "read messages");
    else
        err = each_message(s, c, st, "read messages", fn, arg, count);
    give(c, ST_MESSAGES_AFTER);
    return err;
}

static enum chatd_err sq_conversations_after(void *be, int64_t after_created, const char *after_id,
                                             int64_t from, int64_t to, int64_t now, size_t limit,
                                             store_conversation_fn fn, void *arg, size_t *count)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    enum chatd_err err;
    int rc;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if (!(st = take(c, ST_CONVS_AFTER)))
        return CHATD_EINTERNAL;
    /* From the start: the key (from, "") sorts before every stored key at
     * or after `from`, so the index seek starts there. */
    rc = after_id[0] ? bind_time(st, 1, after_created) : bind_bound(st, 1, from);
    if (rc || bind_str(st, 2, after_id) || bind_bound(st, 3, from) || bind_bound(st, 4, to) ||
        bind_bound(st, 5, store_cutoff(now, s->ttl)) || bind_size(st, 6, limit)) {
        err = fail(c, "list conversations");
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_conversation conv;
        const char *p;
        size_t n;
        column(st, 0, &p, &n);
        assert(n <= UUID_STR_LEN); /* the query's length filter */
        if (n > UUID_STR_LEN)
            n = UUID_STR_LEN;
        memcpy(conv.id, p, n);
        conv.id[n] = '\0';
        conv.created_at = column_time(s, st, 1);
        conv.last_active = column_time(s, st, 2);
        conv.message_count = sqlite3_column_int64(st, 3);
        (*count)++;
        if (fn(arg, &conv)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        err = fail(c, "list conversations");
out:
    give(c, ST_CONVS_AFTER);
    return err;
}

static enum chatd_err sq_count_conversations(void *be, int64_t from, int64_t to, int64_t now,
                                             int64_t *out)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if (!(st = take(c, ST_COUNT_CONVS)))
        return CHATD_EINTERNAL;
    if (bind_bound(st, 1, from) || bind_bound(st, 2, to) ||
        bind_bound(st, 3, store_cutoff(now, s->ttl)))
        err = fail(c, "count conversations");
    else
        err = count_one(c, st, "count conversations", out);
    give(c, ST_COUNT_CONVS);
    return err;
}

static enum chatd_err sq_count_active(void *be, int64_t now, int64_t *out)
{
    struct sq *s = be;
    struct conn *c;
    sqlite3_stmt *st;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if (!(st = take(c, ST_COUNT_ACTIVE)))
        return CHATD_EINTERNAL;
    if (bind_bound(st, 1, store_cutoff(now, s->ttl)))
        err = fail(c, "count active conversations");
    else
        err = count_one(c, st, "count active conversations", out);
    give(c, ST_COUNT_ACTIVE);
    return err;
}

/* Deletes one conversation and its messages inside the caller's
 * transaction. */
static enum chatd_err delete_one(struct conn *c, const char *id)
{
    static const enum stmt order[] = {ST_DELETE_MSGS, ST_DELETE_CONV};
    enum chatd_err err = CHATD_OK;
    for (size_t i = 0; i < 2 && !err; i++) {
        sqlite3_stmt *st = take(c, order[i]);
        if (!st)
            return CHATD_EINTERNAL;
        if (bind_str(st, 1, id) || sqlite3_step(st) != SQLITE_DONE)
            err = fail(c, "sweep expired conversation");
        give(c, order[i]);
    }
    return err;
}

/* One batch: up to SWEEP_BATCH ids collected, NUL-separated, into ids,
 * then deleted, all in one transaction. */
static enum chatd_err sweep_batch(struct sq *s, struct conn *c, int64_t now, struct buf *ids,
                                  size_t *found)
{
    sqlite3_stmt *st;
    enum chatd_err err;
    int rc;

    *found = 0;
    buf_reset(ids);
    if ((err = begin(c, "sweep expired conversations")))
        return err;
    if (!(st = take(c, ST_SWEEP_SELECT))) {
        err = CHATD_EINTERNAL;
        goto out;
    }
    if (bind_bound(st, 1, store_cutoff(now, s->ttl)) || sqlite3_bind_int(st, 2, SWEEP_BATCH)) {
        err = fail(c, "sweep expired conversations");
    } else {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *id = (const char *)sqlite3_column_text(st, 0);
            if (buf_append_str(ids, id ? id : "") || buf_append_char(ids, '\0'))
                break; /* ids has no cap: cannot happen */
            (*found)++;
        }
        if (rc != SQLITE_DONE)
            err = fail(c, "sweep expired conversations");
    }
    give(c, ST_SWEEP_SELECT);
    for (size_t off = 0; !err && off < ids->len; off += strlen(ids->ptr + off) + 1)
        err = delete_one(c, ids->ptr + off);
    if (!err)
        err = commit(c, "commit sweep");
out:
    if (err)
        rollback(c);
    return err;
}

static enum chatd_err sq_sweep_expired(void *be, int64_t now, store_deleted_fn deleted, void *arg,
                                       int64_t *n)
{
    struct sq *s = be;
    struct conn *c;
    struct buf ids = BUF_INIT;
    size_t found;
    enum chatd_err err;

    *n = 0;
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    do {
        if ((err = sweep_batch(s, c, now, &ids, &found)))
            break;
        *n += (int64_t)found;
        for (size_t off = 0; deleted && off < ids.len; off += strlen(ids.ptr + off) + 1)
            deleted(arg, ids.ptr + off);
    } while (found == SWEEP_BATCH);
    buf_release(&ids);
    return err;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .conversation_get = sq_conversation_get,
    .history_tail = sq_history_tail,
    .append_exchange = sq_append_exchange,
    .append_exchanges = sq_append_exchanges,
    .delete_conversation = sq_delete_conversation,
    .messages_after = sq_messages_after,
    .conversations_after = sq_conversations_after,
    .count_conversations = sq_count_conversations,
    .sweep_expired = sq_sweep_expired,
    .count_active = sq_count_active,
};
