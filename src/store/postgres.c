/*
 * postgres.c - the PostgreSQL backend of store.h (libpq, PostgreSQL 12+).
 *
 * URL: postgresql://user[:password]@host[:port]/dbname (also postgres://),
 * parsed by libpq (PQconninfoParse), so percent-encoding works as libpq
 * documents it. With no password in the URL, store_options.password
 * (CHATD_DB_PASSWORD / --db-password) is used if set (libpq's own
 * PGPASSWORD and ~/.pgpass work too). The password is
 * never logged: messages name the server as user@host:port/dbname.
 *
 * Connections: one per calling thread, made on that thread's first call and
 * kept in the per-thread registry of conns.h (as in sqlite.c), so that
 * close() can finish them all; a thread that exits finishes its own. Statements are prepared on a
 * connection the first time it needs them (PQprepare) and run with PQexecPrepared, binary
 * parameters and binary results: no text formatting or parsing of numbers
 * and times, and nothing depends on DateStyle or TimeZone.
 *
 * Reconnecting: a connection that the server dropped (restart, failover,
 * idle kill) is found CONNECTION_BAD by the statement that fails on it.
 * If that statement was the first of the call (a read, a single-statement
 * sweep batch, or the BEGIN of a transaction, so nothing can have been
 * done twice), the connection is reset (PQreset) and the statement run once
 * more; otherwise the call answers CHATD_EDB. A connection still bad at the
 * start of a later call is reset first. So during an outage each call makes
 * one connection attempt (bounded by connect_timeout, 5 s unless the URL
 * says otherwise) and answers CHATD_EDB; once the server is back the next
 * call goes through. There is no retry loop and no background thread.
 * Prepared statements die with the old session and are prepared again.
 *
 * Schema: created at open if absent, inside one transaction holding a
 * transaction-level advisory lock, so several instances starting at once
 * do not race on the catalog (CREATE TABLE IF NOT EXISTS alone can fail
 * with a unique violation on pg_type). Times are `timestamp` (without time
 * zone) holding UTC: PostgreSQL keeps them as int64 microseconds, exactly
 * chatd's unit, psql shows them readably, and they sort and index
 * natively. Bounds outside its range are sent as -infinity/infinity. Ids
 * are `text COLLATE "C"`, so (created_at, id) orders like strcmp whatever
 * the database's locale. messages.id is a bigint identity.
 *
 * Content is `text`, which must be valid UTF-8 and cannot hold NUL: each
 * byte that is not part of valid UTF-8, and each NUL, is stored as U+FFFD
 * (store.h "Content"); valid UTF-8 goes in unchanged. The database must
 * use the UTF8 encoding (checked at open).
 *
 * Writes: append_exchange is one transaction: the conversation is upserted
 * first (INSERT ... ON CONFLICT DO UPDATE), which locks its row, so
 * exchanges on one conversation take turns and get increasing ids; then
 * the two messages. append_exchanges (the store's writer, group commit)
 * writes a whole batch so in one transaction; how it keeps every result
 * exact when that fails, and why a batch whose COMMIT lost the connection
 * is reported failed and never retried, is told above pg_append_exchanges.
 * delete is one statement in a transaction. The sweep
 * deletes batches of SWEEP_BATCH, each one autocommitted statement that
 * picks its rows with FOR UPDATE SKIP LOCKED, so instances sweeping at
 * once split the work instead of waiting on each other or deleting twice.
 *
 * Reads fetch whole results, each bounded by the caller's LIMIT (history,
 * export batches of 100 or 50), then call the row callback: a callback may
 * call any store function, the one iterating included.
 */
#include <assert.h>
#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "store/backend.h"
#include "store/conns.h"

#define SWEEP_BATCH     500
#define CONNECT_TIMEOUT "5" /* seconds, unless the URL sets connect_timeout */
#define MAX_PARAMS      6

/* PostgreSQL's epoch (2000-01-01) in Unix microseconds, and the range of
 * its timestamp type in its own microseconds (MIN_TIMESTAMP, END_TIMESTAMP
 * of datatype/timestamp.h); INT64_MIN/MAX are -infinity/infinity. */
#define PG_EPOCH     INT64_C(946684800000000)
#define PG_TIME_MIN  INT64_C(-211813488000000000)
#define PG_TIME_END  INT64_C(9223371331200000000)
#define PG_TIME_NINF INT64_MIN
#define PG_TIME_PINF INT64_MAX

/* Type OIDs of the parameters (catalog/pg_type.dat; fixed forever). */
#define INT8OID      20
#define TEXTOID      25
#define TIMESTAMPOID 1114

/* Any constant: the advisory lock that serialises schema creation. */
#define SCHEMA_LOCK "7236828934752616548"

static const char schema_sql[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ");"
    "CREATE TABLE IF NOT EXISTS conversations ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " created_at timestamp NOT NULL,"
    " last_active timestamp NOT NULL);"
    /* (created_at, id): the keyset order of conversations_after. */
    "CREATE INDEX IF NOT EXISTS idx_conversations_created_at ON conversations(created_at, id);"
    "CREATE INDEX IF NOT EXISTS idx_conversations_last_active ON conversations(last_active);"
    "CREATE TABLE IF NOT EXISTS messages ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " conversation_id text COLLATE \"C\" NOT NULL"
    "  REFERENCES conversations(id) ON DELETE CASCADE,"
    " role text NOT NULL,"
    " content text NOT NULL,"
    " timestamp timestamp NOT NULL);"
    "CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages(conversation_id, id);"
    "COMMIT;";

enum stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_PING,
    ST_CONV_GET,
    ST_CONV_GET_COUNT,
    ST_HISTORY_TAIL,
    ST_UPSERT_CONV,
    ST_INSERT_MSG,
    ST_DELETE_LIVE,
    ST_MESSAGES_AFTER,
    ST_CONVS_AFTER,
    ST_COUNT_CONVS,
    ST_COUNT_ACTIVE,
    ST_SWEEP_BATCH,
    ST_COUNT_
};

struct stmt_def {
    const char *sql;
    int nparams;
    Oid types[MAX_PARAMS];
};

/* Messages are deleted explicitly as well as by ON DELETE CASCADE, so that
 * deletes stay right on tables another tool created without the foreign
 * key. Ids longer than a UUID cannot be handed out through struct
 * store_conversation, so the listing skips them, and so does its count. */
static const struct stmt_def stmts[ST_COUNT_] = {
    [ST_BEGIN] = {"BEGIN", 0, {0}},
    [ST_COMMIT] = {"COMMIT", 0, {0}},
    [ST_PING] = {"SELECT 1 FROM conversations LIMIT 1", 0, {0}},
    [ST_CONV_GET] = {"SELECT created_at, last_active, -1::bigint"
                     " FROM conversations WHERE id = $1 AND last_active >= $2",
                     2,
                     {TEXTOID, TIMESTAMPOID}},
    [ST_CONV_GET_COUNT] = {"SELECT created_at, last_active,"
                           " (SELECT count(*) FROM messages WHERE conversation_id = $1)"
                           " FROM conversations WHERE id = $1 AND last_active >= $2",
                           2,
                           {TEXTOID, TIMESTAMPOID}},
    [ST_HISTORY_TAIL] = {"SELECT id, role, content, timestamp FROM"
                         " (SELECT id, role, content, timestamp FROM messages"
                         "  WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2) t"
                         " ORDER BY id",
                         2,
                         {TEXTOID, INT8OID}},
    [ST_UPSERT_CONV] = {"INSERT INTO conversations(id, created_at, last_active)"
                        " VALUES ($1, $2, $3)"
                        " ON CONFLICT (id) DO UPDATE SET last_active = excluded.last_active",
                        3,
                        {TEXTOID, TIMESTAMPOID, TIMESTAMPOID}},
    [ST_INSERT_MSG] = {"INSERT INTO messages(conversation_id, role, content, timestamp)"
                       " VALUES ($1, $2, $3, $4)",
                       4,
                       {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPOID}},
    [ST_DELETE_LIVE] = {"WITH c AS (DELETE FROM conversations"
                        "  WHERE id = $1 AND last_active >= $2 RETURNING id),"
                        " m AS (DELETE FROM messages WHERE conversation_id IN (SELECT id FROM c))"
                        " SELECT count(*) FROM c",
                        2,
                        {TEXTOID, TIMESTAMPOID}},
    [ST_MESSAGES_AFTER] = {"SELECT id, role, content, timestamp FROM messages"
                           " WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                           3,
                           {TEXTOID, INT8OID, INT8OID}},
    [ST_CONVS_AFTER] = {"SELECT c.id, c.created_at, c.last_active,"
                        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
                        " FROM conversations c"
                        " WHERE (c.created_at, c.id) > ($1, $2 COLLATE \"C\")"
                        " AND c.created_at >= $3 AND c.created_at < $4 AND c.last_active >= $5"
                        " AND octet_length(c.id) <= 36"
                        " ORDER BY c.created_at, c.id LIMIT $6",
                        6,
                        {TIMESTAMPOID, TEXTOID, TIMESTAMPOID, TIMESTAMPOID, TIMESTAMPOID, INT8OID}},
    [ST_COUNT_CONVS] = {"SELECT count(*) FROM conversations"
                        " WHERE created_at >= $1 AND created_at < $2 AND last_active >= $3"
                        " AND octet_length(id) <= 36",
                        3,
                        {TIMESTAMPOID, TIMESTAMPOID, TIMESTAMPOID}},
    [ST_COUNT_ACTIVE] = {"SELECT count(*) FROM conversations WHERE last_active >= $1",
                         1,
                         {TIMESTAMPOID}},
    [ST_SWEEP_BATCH] = {"WITH d AS (DELETE FROM conversations WHERE id IN"
                        "  (SELECT id FROM conversations WHERE last_active < $1"
                        "   LIMIT $2 FOR UPDATE SKIP LOCKED)"
                        "  AND last_active < $1 RETURNING id),"
                        " m AS (DELETE FROM messages WHERE conversation_id IN (SELECT id FROM d))"
                        " SELECT id FROM d",
                        2,
                        {TIMESTAMPOID, INT8OID}},
};

static const char *const stmt_name[ST_COUNT_] = {
    [ST_BEGIN] = "chatd_begin",
    [ST_COMMIT] = "chatd_commit",
    [ST_PING] = "chatd_ping",
    [ST_CONV_GET] = "chatd_conv_get",
    [ST_CONV_GET_COUNT] = "chatd_conv_get_count",
    [ST_HISTORY_TAIL] = "chatd_history_tail",
    [ST_UPSERT_CONV] = "chatd_upsert_conv",
    [ST_INSERT_MSG] = "chatd_insert_msg",
    [ST_DELETE_LIVE] = "chatd_delete_live",
    [ST_MESSAGES_AFTER] = "chatd_messages_after",
    [ST_CONVS_AFTER] = "chatd_convs_after",
    [ST_COUNT_CONVS] = "chatd_count_convs",
    [ST_COUNT_ACTIVE] = "chatd_count_active",
    [ST_SWEEP_BATCH] = "chatd_sweep_batch",
};

struct pg {
    const char **keywords;    /* libpq connection parameters, NULL-terminated */
    const char **values;      /* ... their values (owned, one may be a secret) */
    size_t nparams;           /* entries used in both */
    char *where;              /* user@host:port/dbname, for messages */
    int64_t ttl;              /* usec of inactivity before expiry */
    struct store_conns conns; /* every thread's connection */
    bool has_conns;           /* conns was initialised */
};

struct conn {
    struct pg *owner;
    PGconn *db;
    bool prepared[ST_COUNT_];    /* on the current session */
    struct store_conn_link link; /* in owner->conns */
};

/* ---- parameters ---- */

/* Binary parameters of one statement; points into itself, so not copied. */
struct params {
    int n;
    const char *v[MAX_PARAMS];
    int len[MAX_PARAMS];
    int fmt[MAX_PARAMS];
    char raw[MAX_PARAMS][8]; /* big-endian int8 and timestamp values */
};

static void p_int8(struct params *p, int64_t v)
{
    uint64_t be = htobe64((uint64_t)v);
    memcpy(p->raw[p->n], &be, 8);
    p->v[p->n] = p->raw[p->n];
    p->len[p->n] = 8;
    p->fmt[p->n] = 1;
    p->n++;
}

/* The binary form of text is its bytes; n fits an int (checked by callers
 * through text_ok). */
static void p_text(struct params *p, const char *s, size_t n)
{
    p->v[p->n] = n ? s : "";
    p->len[p->n] = (int)n;
    p->fmt[p->n] = 1;
    p->n++;
}

static void p_str(struct params *p, const char *s)
{
    p_text(p, s, strlen(s));
}

/* A time to store: out of PostgreSQL's range it is sent as is and the
 * server refuses it. */
static void p_time(struct params *p, int64_t t)
{
    int64_t v;
    if (__builtin_sub_overflow(t, PG_EPOCH, &v))
        v = t < 0 ? PG_TIME_NINF + 1 : PG_TIME_PINF - 1;
    p_int8(p, v);
}

/* A bound to compare against: out of range becomes -infinity/infinity,
 * which compare as expected against every stored time. */
static void p_bound(struct params *p, int64_t t)
{
    int64_t v;
    if (__builtin_sub_overflow(t, PG_EPOCH, &v))
        v = t < 0 ? PG_TIME_NINF : PG_TIME_PINF;
    else if (v < PG_TIME_MIN)
        v = PG_TIME_NINF;
    else if (v >= PG_TIME_END)
        v = PG_TIME_PINF;
    p_int8(p, v);
}

static void p_size(struct params *p, size_t n)
{
    p_int8(p, n > (size_t)INT64_MAX ? INT64_MAX : (int64_t)n);
}

/* ---- results ---- */

static int64_t get_int8(const PGresult *r, int row, int col)
{
    uint64_t be;
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return 0;
    memcpy(&be, PQgetvalue(r, row, col), 8);
    return (int64_t)be64toh(be);
}

static int64_t get_time(const PGresult *r, int row, int col)
{
    int64_t v = get_int8(r, row, col), t;
    if (v == PG_TIME_NINF)
        return INT64_MIN;
    if (v == PG_TIME_PINF)
        return INT64_MAX;
    if (__builtin_add_overflow(v, PG_EPOCH, &t))
        return v < 0 ? INT64_MIN : INT64_MAX;
    return t;
}

static void get_text(const PGresult *r, int row, int col, const char **p, size_t *n)
{
    *p = PQgetvalue(r, row, col);
    *n = (size_t)PQgetlength(r, row, col);
}

/* ---- connections ---- */

/* A libpq message as one line, without its trailing newline, in a
 * per-thread buffer that the next call overwrites. */
static const char *one_line(const char *e)
{
    static _Thread_local char msg[512];
    snprintf(msg, sizeof msg, "%s", e);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    for (char *q = msg; *q; q++) /* libpq adds "\n\t" hints */
        if (*q == '\n' || *q == '\t')
            *q = ' ';
    return msg;
}

/* libpq's last error as one line, never NULL. */
static const char *pq_error(const PGconn *db)
{
    const char *e = db ? PQerrorMessage(db) : NULL;
    return one_line(e && *e ? e : "unknown error");
}

static const char *res_error(const PGresult *r, const PGconn *db)
{
    const char *e = r ? PQresultErrorMessage(r) : NULL;
    return e && *e ? one_line(e) : pq_error(db);
}

/* Notices (e.g. "relation already exists, skipping") are not errors. */
static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void conn_close(struct conn *c)
{
    if (!c)
        return;
    PQfinish(c->db);
    free(c);
}

/* Connects; the connection is kept even if that failed (c->db is then
 * CONNECTION_BAD and the next call resets it). NULL only if libpq could
 * not allocate. */
static struct conn *conn_new(struct pg *s)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->owner = s;
    c->db = PQconnectdbParams(s->keywords, s->values, 0);
    if (!c->db) {
        free(c);
        return NULL;
    }
    PQsetNoticeProcessor(c->db, quiet_notice, NULL);
    return c;
}

/* The registry's close function (conns.h). */
static void conn_close_link(struct store_conn_link *l, bool thread_exit)
{
    (void)thread_exit;
    conn_close(STORE_CONN_OF(l, struct conn, link));
}

/* Makes a bad connection good again, or says why not (logged). */
static enum chatd_err conn_reset(struct conn *c, char *why, size_t why_len)
{
    memset(c->prepared, 0, sizeof c->prepared);
    PQreset(c->db);
    if (PQstatus(c->db) == CONNECTION_OK) {
        PQsetNoticeProcessor(c->db, quiet_notice, NULL);
        log_info("store: reconnected to postgresql '%s'", c->owner->where);
        return CHATD_OK;
    }
    log_error("store: cannot connect to postgresql '%s': %s", c->owner->where, pq_error(c->db));
    store_set_why(why, why_len, "%s", pq_error(c->db));
    return CHATD_EDB;
}

/* This thread's connection, made if it has none, reset if it is bad. */
static enum chatd_err conn_get(struct pg *s, struct conn **out, char *why, size_t why_len)
{
    struct store_conn_link *l = store_conns_mine(&s->conns);
    struct conn *c = l ? STORE_CONN_OF(l, struct conn, link) : NULL;
    *out = NULL;
    if (!c) {
        c = conn_new(s);
        if (!c || !store_conns_add(&s->conns, &c->link)) {
            log_error("store: cannot keep a postgresql connection for this thread");
            store_set_why(why, why_len, "cannot keep a connection for this thread");
            conn_close(c);
            return CHATD_EDB;
        }
        if (PQstatus(c->db) != CONNECTION_OK) {
            log_error("store: cannot connect to postgresql '%s': %s", s->where, pq_error(c->db));
            store_set_why(why, why_len, "%s", pq_error(c->db));
            return CHATD_EDB;
        }
    } else if (PQstatus(c->db) != CONNECTION_OK) {
        enum chatd_err err = conn_reset(c, why, why_len);
        if (err)
            return err;
    } else if (PQtransactionStatus(c->db) != PQTRANS_IDLE) {
        /* Cannot happen (every call ends its transaction); be safe. */
        PQclear(PQexec(c->db, "ROLLBACK"));
    }
    *out = c;
    return CHATD_OK;
}

/* ---- statements ---- */

/*
 * Runs statement i. On success *out is its result (the caller PQclears it).
 * first: this is the call's first statement, so if the connection turns
 * out to be broken it is reset and the statement run once more. Errors are
 * logged here, once, with what; the server's reason goes into why.
 */
static enum chatd_err run(struct conn *c, enum stmt i, const struct params *p, bool first,
                          const char *what, PGresult **out, char *why, size_t why_len)
{
    PGresult *r = NULL;
    *out = NULL;
    for (int attempt = 0;; attempt++) {
        ExecStatusType st;
        if (!c->prepared[i]) {
            r = PQprepare(c->db, stmt_name[i], stmts[i].sql, stmts[i].nparams, stmts[i].types);
            st = PQresultStatus(r);
            if (st == PGRES_COMMAND_OK) {
                c->prepared[i] = true;
                PQclear(r);
                r = NULL;
            }
        }
        if (c->prepared[i]) {
            r = PQexecPrepared(c->db, stmt_name[i], p ? p->n : 0, p ? p->v : NULL,
                               p ? p->len : NULL, p ? p->fmt : NULL, 1);
            st = PQresultStatus(r);
            if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
                *out = r;
                return CHATD_OK;
            }
        }
        if (PQstatus(c->db) == CONNECTION_BAD && first && attempt == 0) {
            log_warn("store: connection to postgresql '%s' lost (%s); reconnecting",
                     c->owner->where, res_error(r, c->db));
            PQclear(r);
            r = NULL;
            enum chatd_err err = conn_reset(c, why, why_len);
            if (err)
                return err;
            continue;
        }
        log_error("store: %s: %s", what, res_error(r, c->db));
        store_set_why(why, why_len, "%s", res_error(r, c->db));
        PQclear(r);
        return CHATD_EDB;
    }
}

/* Runs a statement whose result is not needed. */
static enum chatd_err run_cmd(struct conn *c, enum stmt i, const struct params *p, bool first,
                              const char *what)
{
    PGresult *r;
    enum chatd_err err = run(c, i, p, first, what, &r, NULL, 0);
    PQclear(r);
    return err;
}

/* Ends a failed transaction; on a broken connection the server has done so. */
static void rollback(struct conn *c)
{
    if (PQstatus(c->db) != CONNECTION_OK || PQtransactionStatus(c->db) == PQTRANS_IDLE)
        return;
    PGresult *r = PQexec(c->db, "ROLLBACK");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        log_error("store: rollback: %s", res_error(r, c->db));
    PQclear(r);
}

static enum chatd_err count_one(struct conn *c, enum stmt i, const struct params *p,
                                const char *what, int64_t *out)
{
    PGresult *r;
    enum chatd_err err = run(c, i, p, true, what, &r, NULL, 0);
    if (!err) {
        if (PQntuples(r) == 1)
            *out = get_int8(r, 0, 0);
        else
            err = CHATD_EDB;
    }
    PQclear(r);
    return err;
}

static bool fits_int(size_t n)
{
    return n <= (size_t)0x7fffffff;
}

/* ---- the store_ops functions ---- */

static void pg_close(void *be)
{
    struct pg *s = be;

    if (!s)
        return;
    if (s->has_conns)
        store_conns_fini(&s->conns);
    for (size_t i = 0; i < s->nparams; i++) {
        if (strcmp(s->keywords[i], "password") == 0)
            explicit_bzero((char *)s->values[i], strlen(s->values[i]));
        free((char *)s->keywords[i]);
        free((char *)s->values[i]);
    }
    free(s->keywords);
    free(s->values);
    free(s->where);
    free(s);
}

static void add_param(struct pg *s, const char *k, const char *v)
{
    s->keywords[s->nparams] = xstrdup(k);
    s->values[s->nparams] = xstrdup(v);
    s->nparams++;
    s->keywords[s->nparams] = NULL;
    s->values[s->nparams] = NULL;
}

static const char *param(const struct pg *s, const char *k)
{
    for (size_t i = 0; i < s->nparams; i++)
        if (strcmp(s->keywords[i], k) == 0)
            return s->values[i];
    return NULL;
}

/* Turns the URL into libpq's keyword/value arrays, adding the password
 * given apart (CHATD_DB_PASSWORD) and chatd's defaults. Never echoes the
 * URL. */
static enum chatd_err parse_url(struct pg *s, const char *url, const char *password, char *why,
                                size_t why_len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    size_t n = 0;

    if (!opts) {
        /* libpq's message may quote the URL, password included. */
        store_set_why(why, why_len,
                      "cannot parse the postgresql url: expected "
                      "postgresql://user[:password]@host[:port]/dbname%s",
                      err ? "" : " (out of memory)");
        PQfreemem(err);
        return CHATD_EINVAL;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    s->keywords = xcalloc(n + 5, sizeof *s->keywords);
    s->values = xcalloc(n + 5, sizeof *s->values);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val)
            add_param(s, o->keyword, o->val);
    PQconninfoFree(opts);

    if (!param(s, "password") && password && *password)
        add_param(s, "password", password);
    if (!param(s, "connect_timeout"))
        add_param(s, "connect_timeout", CONNECT_TIMEOUT);
    if (!param(s, "application_name"))
        add_param(s, "application_name", "chatd");
    add_param(s, "client_encoding", "UTF8");

    const char *user = param(s, "user"), *host = param(s, "host"), *port = param(s, "port");
    const char *db = param(s, "dbname");
    struct buf w = BUF_INIT;
    buf_appendf(&w, "%s%s%s%s%s/%s", user ? user : "", user ? "@" : "", host ? host : "localhost",
                port ? ":" : "", port ? port : "", db ? db : "");
    s->where = buf_take(&w);
    return CHATD_OK;
}

static enum chatd_err pg_open(const char *target, const struct store_options *opt, void **be,
                              char *why, size_t why_len)
{
    struct pg *s = NULL;
    struct conn *c = NULL;
    PGresult *r = NULL;
    enum chatd_err err = CHATD_OK;

    *be = NULL;
    if (!PQisthreadsafe()) {
        store_set_why(why, why_len, "this libpq was built without thread support");
        return CHATD_EDB;
    }
    s = xcalloc(1, sizeof *s);
    s->ttl = opt->session_ttl;
    s->has_conns = true;
    if (!store_conns_init(&s->conns, conn_close_link)) {
        store_set_why(why, why_len, "cannot create a thread key for the store");
        err = CHATD_EDB;
        goto out;
    }
    if ((err = parse_url(s, target, opt->password, why, why_len)))
        goto out;
    c = conn_new(s);
    if (!c || PQstatus(c->db) != CONNECTION_OK) {
        store_set_why(why, why_len, "cannot connect to postgresql '%s': %s", s->where,
                      c ? pq_error(c->db) : "out of memory");
        conn_close(c);
        err = CHATD_EDB;
        goto out;
    }
    const char *enc = PQparameterStatus(c->db, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0) {
        store_set_why(why, why_len,
                      "postgresql database '%s' uses the encoding '%s': chatd needs UTF8 "
                      "(CREATE DATABASE ... ENCODING 'UTF8')",
                      s->where, enc ? enc : "?");
        conn_close(c);
        err = CHATD_EDB;
        goto out;
    }
    r = PQexec(c->db, schema_sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        store_set_why(why, why_len, "cannot create the schema in postgresql '%s': %s", s->where,
                      res_error(r, c->db));
        PQclear(r);
        PQclear(PQexec(c->db, "ROLLBACK"));
        conn_close(c);
        err = CHATD_EDB;
        goto out;
    }
    PQclear(r);
    if (!store_conns_add(&s->conns, &c->link)) {
        store_set_why(why, why_len, "cannot keep a connection for this thread");
        conn_close(c);
        err = CHATD_EDB;
        goto out;
    }
    log_info("store: postgresql database '%s' open (server %d)", s->where, PQserverVersion(c->db));
out:
    if (err)
        pg_close(s);
    else
        *be = s;
    return err;
}

static enum chatd_err pg_ping(void *be, char *why, size_t why_len)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r;
    enum chatd_err err;

    if ((err = conn_get(s, &c, why, why_len)))
        return err;
    err = run(c, ST_PING, NULL, true, "ping", &r, why, why_len);
    PQclear(r);
    return err;
}

static enum chatd_err pg_conversation_get(void *be, const char *id, int64_t now, bool count,
                                          struct store_conversation *out)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r = NULL;
    struct params p = {0};
    size_t idlen = strlen(id);
    enum chatd_err err;

    assert(idlen <= UUID_STR_LEN); /* store.c answered longer ones */
    if (!utf8_valid(id, idlen))
        return CHATD_ENOTFOUND; /* no text column can hold it */
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    p_text(&p, id, idlen);
    p_bound(&p, store_cutoff(now, s->ttl));
    err = run(c, count ? ST_CONV_GET_COUNT : ST_CONV_GET, &p, true, "look up conversation", &r,
              NULL, 0);
    if (err)
        return err;
    if (PQntuples(r) == 0) {
        err = CHATD_ENOTFOUND;
    } else {
        memcpy(out->id, id, idlen + 1);
        out->created_at = get_time(r, 0, 0);
        out->last_active = get_time(r, 0, 1);
        out->message_count = get_int8(r, 0, 2);
    }
    PQclear(r);
    return err;
}

/* Calls fn for each message row (id, role, content, timestamp) of r. */
static void each_message(const PGresult *r, store_message_fn fn, void *arg, size_t *count)
{
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        struct store_message m;
        m.id = get_int8(r, i, 0);
        get_text(r, i, 1, &m.role, &m.role_len);
        get_text(r, i, 2, &m.content, &m.content_len);
        m.timestamp = get_time(r, i, 3);
        if (count)
            (*count)++;
        if (fn(arg, &m))
            break;
    }
}

static enum chatd_err pg_history_tail(void *be, const char *id, size_t n, store_message_fn fn,
                                      void *arg)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r;
    struct params p = {0};
    enum chatd_err err;

    if (!utf8_valid(id, strlen(id)))
        return CHATD_OK;
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    p_str(&p, id);
    p_size(&p, n);
    if ((err = run(c, ST_HISTORY_TAIL, &p, true, "read history", &r, NULL, 0)))
        return err;
    each_message(r, fn, arg, NULL);
    PQclear(r);
    return CHATD_OK;
}

static enum chatd_err insert_message(struct conn *c, const char *conv, const char *role,
                                     const char *text, size_t n, int64_t t)
{
    struct params p = {0};
    p_str(&p, conv);
    p_str(&p, role);
    p_text(&p, text, n);
    p_time(&p, t);
    return run_cmd(c, ST_INSERT_MSG, &p, false, "store message");
}

/* An exchange's texts as PostgreSQL text holds them (in qbuf/abuf if they
 * needed repair), or CHATD_EDB (logged) if it cannot be stored at all. */
static enum chatd_err exchange_texts(const struct store_exchange *x, struct buf *qbuf,
                                     struct buf *abuf, const char **q, size_t *qn, const char **a,
                                     size_t *an)
{
    *q = store_text(x->question, x->question_len, qbuf, qn);
    *a = store_text(x->answer, x->answer_len, abuf, an);
    if (!fits_int(*qn) || !fits_int(*an) ||
        !utf8_valid(x->conversation_id, strlen(x->conversation_id))) {
        log_error("store: store exchange: a message over 2 GB or an id that is not UTF-8");
        return CHATD_EDB;
    }
    return CHATD_OK;
}

/* The statements of one exchange, inside a transaction the caller owns. */
static enum chatd_err write_exchange(struct conn *c, const struct store_exchange *x, const char *q,
                                     size_t qn, const char *a, size_t an)
{
    struct params p = {0};
    enum chatd_err err;
    p_str(&p, x->conversation_id);
    p_time(&p, x->user_time);
    p_time(&p, x->answer_time);
    err = run_cmd(c, ST_UPSERT_CONV, &p, false, "store conversation");
    if (!err)
        err = insert_message(c, x->conversation_id, "user", q, qn, x->user_time);
    if (!err)
        err = insert_message(c, x->conversation_id, "assistant", a, an, x->answer_time);
    return err;
}

/* One exchange in its own transaction; q and a as exchange_texts gave. */
static enum chatd_err append_one(struct pg *s, const struct store_exchange *x, const char *q,
                                 size_t qn, const char *a, size_t an)
{
    struct conn *c;
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if ((err = run_cmd(c, ST_BEGIN, NULL, true, "store exchange")))
        return err;
    err = write_exchange(c, x, q, qn, a, an);
    if (!err)
        err = run_cmd(c, ST_COMMIT, NULL, false, "commit exchange");
    if (err)
        rollback(c);
    return err;
}

static enum chatd_err pg_append_exchange(void *be, const struct store_exchange *x)
{
    struct buf qbuf = BUF_INIT, abuf = BUF_INIT;
    const char *q, *a;
    size_t qn, an;
    enum chatd_err err = exchange_texts(x, &qbuf, &abuf, &q, &qn, &a, &an);
    if (!err)
        err = append_one(be, x, q, qn, a, an);
    buf_release(&qbuf);
    buf_release(&abuf);
    return err;
}

/* One exchange of a batch, its texts ready. */
struct item {
    struct buf qbuf, abuf;
    const char *q, *a;
    size_t qn, an;
};

/*
 * Group commit: BEGIN, the statements of every exchange, COMMIT: one
 * transaction (and one WAL flush) for the batch. An exchange that cannot
 * be stored at all (exchange_texts) is answered at once and left out.
 *
 * If the batch fails, every result must still be exact and nothing may be
 * stored twice:
 *   - no connection, or BEGIN fails even after the one reset run() allows:
 *     nothing was sent, and the server is unreachable now. All answer
 *     CHATD_EDB, so an outage costs one connection attempt per batch, not
 *     one (of up to connect_timeout) per exchange.
 *   - a statement before COMMIT fails (a refused value, a deadlock, the
 *     connection lost): nothing is committed (the server rolls back the
 *     transaction of a session that ends before COMMIT), so the batch is
 *     rolled back and each exchange tried alone (append_one, whose first
 *     call resets a lost connection). Once one of those finds the
 *     connection lost again the rest answer CHATD_EDB without trying.
 *   - COMMIT fails with the server's answer (the connection is fine): the
 *     transaction was rolled back; each is tried alone as above.
 *   - COMMIT fails with the connection lost: the batch may or may not have
 *     been committed, and there is no way to ask. Trying again could store
 *     every exchange twice, so nothing is retried and all answer CHATD_EDB
 *     (as append_exchange answers for its own lost COMMIT): an exchange
 *     reported failed may in fact be stored, never one stored twice.
 */
static void pg_append_exchanges(void *be, const struct store_exchange *xs, size_t n,
                                enum chatd_err *errs)
{
    struct pg *s = be;
    struct conn *c = NULL;
    struct item *it = xcalloc(n ? n : 1, sizeof *it);
    size_t todo = 0;
    enum chatd_err err = CHATD_OK;

    for (size_t i = 0; i < n; i++) {
        errs[i] = exchange_texts(&xs[i], &it[i].qbuf, &it[i].abuf, &it[i].q, &it[i].qn, &it[i].a,
                                 &it[i].an);
        todo += errs[i] == CHATD_OK;
    }
    if (todo == 0)
        goto out;
    if (todo == 1) {
        for (size_t i = 0; i < n; i++)
            if (!errs[i])
                errs[i] = append_one(s, &xs[i], it[i].q, it[i].qn, it[i].a, it[i].an);
        goto out;
    }
    if ((err = conn_get(s, &c, NULL, 0)) ||
        (err = run_cmd(c, ST_BEGIN, NULL, true, "store exchanges"))) {
        for (size_t i = 0; i < n; i++)
            if (!errs[i])
                errs[i] = err;
        goto out;
    }
    for (size_t i = 0; i < n && !err; i++)
        if (!errs[i])
            err = write_exchange(c, &xs[i], it[i].q, it[i].qn, it[i].a, it[i].an);
    if (!err) {
        err = run_cmd(c, ST_COMMIT, NULL, false, "commit exchanges");
        if (!err)
            goto out; /* errs[] of the batch are CHATD_OK already */
        if (PQstatus(c->db) != CONNECTION_OK) {
            log_error("store: the connection was lost during the COMMIT of %zu exchanges, which"
                      " may or may not have been stored; reported failed, not retried",
                      todo);
            for (size_t i = 0; i < n; i++)
                if (!errs[i])
                    errs[i] = CHATD_EDB;
            goto out;
        }
    }
    rollback(c);
    log_warn("store: a batch of %zu exchanges failed; storing them one at a time", todo);
    bool lost = false;
    for (size_t i = 0; i < n; i++) {
        if (errs[i])
            continue;
        if (lost) {
            errs[i] = CHATD_EDB;
            continue;
        }
        errs[i] = append_one(s, &xs[i], it[i].q, it[i].qn, it[i].a, it[i].an);
        lost = errs[i] && PQstatus(c->db) != CONNECTION_OK;
    }
out:
    for (size_t i = 0; i < n; i++) {
        buf_release(&it[i].qbuf);
        buf_release(&it[i].abuf);
    }
    free(it);
}

static enum chatd_err pg_delete_conversation(void *be, const char *id, int64_t now)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r = NULL;
    struct params p = {0};
    size_t idlen = strlen(id);
    enum chatd_err err;

    if (!utf8_valid(id, idlen))
        return CHATD_ENOTFOUND;
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    if ((err = run_cmd(c, ST_BEGIN, NULL, true, "delete conversation")))
        return err;
    p_text(&p, id, idlen);
    p_bound(&p, store_cutoff(now, s->ttl));
    err = run(c, ST_DELETE_LIVE, &p, false, "delete conversation", &r, NULL, 0);
    if (!err && (PQntuples(r) != 1 || get_int8(r, 0, 0) == 0))
        err = CHATD_ENOTFOUND;
    PQclear(r);
    if (!err)
        err = run_cmd(c, ST_COMMIT, NULL, false, "commit delete");
    if (err)
        rollback(c);
    return err;
}

static enum chatd_err pg_messages_after(void *be, const char *id, int64_t after_id, size_t limit,
                                        store_message_fn fn, void *arg, size_t *count)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r;
    struct params p = {0};
    enum chatd_err err;

    if (!utf8_valid(id, strlen(id)))
        return CHATD_OK;
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    p_str(&p, id);
    p_int8(&p, after_id);
    p_size(&p, limit);
    if ((err = run(c, ST_MESSAGES_AFTER, &p, true, "read messages", &r, NULL, 0)))
        return err;
    each_message(r, fn, arg, count);
    PQclear(r);
    return CHATD_OK;
}

static enum chatd_err pg_conversations_after(void *be, int64_t after_created, const char *after_id,
                                             int64_t from, int64_t to, int64_t now, size_t limit,
                                             store_conversation_fn fn, void *arg, size_t *count)
{
    struct pg *s = be;
    struct conn *c;
    PGresult *r;
    struct params p = {0};
    enum chatd_err err;

    if (!utf8_valid(after_id, strlen(after_id))) {
        log_error("store: list conversations: the key id is not UTF-8");
        return CHATD_EINVAL;
    }
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    /* From the start: the key (from, "") sorts before every stored key at
     * or after `from`. */
    if (after_id[0])
        p_bound(&p, after_created);
    else
        p_bound(&p, from);
    p_str(&p, after_id);
    p_bound(&p, from);
    p_bound(&p, to);
    p_bound(&p, store_cutoff(now, s->ttl));
    p_size(&p, limit);
    if ((err = run(c, ST_CONVS_AFTER, &p, true, "list conversations", &r, NULL, 0)))
        return err;
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        struct store_conversation conv;
        const char *idp;
        size_t n;
        get_text(r, i, 0, &idp, &n);
        if (n > UUID_STR_LEN) /* the query's length filter */
            n = UUID_STR_LEN;
        memcpy(conv.id, idp, n);
        conv.id[n] = '\0';
        conv.created_at = get_time(r, i, 1);
        conv.last_active = get_time(r, i, 2);
        conv.message_count = get_int8(r, i, 3);
        (*count)++;
        if (fn(arg, &conv))
            break;
    }
    PQclear(r);
    return CHATD_OK;
}

static enum chatd_err pg_count_conversations(void *be, int64_t from, int64_t to, int64_t now,
                                             int64_t *out)
{
    struct pg *s = be;
    struct conn *c;
    struct params p = {0};
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    p_bound(&p, from);
    p_bound(&p, to);
    p_bound(&p, store_cutoff(now, s->ttl));
    return count_one(c, ST_COUNT_CONVS, &p, "count conversations", out);
}

static enum chatd_err pg_count_active(void *be, int64_t now, int64_t *out)
{
    struct pg *s = be;
    struct conn *c;
    struct params p = {0};
    enum chatd_err err;

    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    p_bound(&p, store_cutoff(now, s->ttl));
    return count_one(c, ST_COUNT_ACTIVE, &p, "count active conversations", out);
}

/* Each batch is one autocommitted statement: the callbacks of a batch run
 * after it committed. A batch cut short by rows another sweeper holds ends
 * the loop; that sweeper deletes them. */
static enum chatd_err pg_sweep_expired(void *be, int64_t now, store_deleted_fn deleted, void *arg,
                                       int64_t *n)
{
    struct pg *s = be;
    struct conn *c;
    enum chatd_err err;
    int rows;

    *n = 0;
    if ((err = conn_get(s, &c, NULL, 0)))
        return err;
    do {
        PGresult *r;
        struct params p = {0};
        p_bound(&p, store_cutoff(now, s->ttl));
        p_int8(&p, SWEEP_BATCH);
        if ((err = run(c, ST_SWEEP_BATCH, &p, true, "sweep expired conversations", &r, NULL, 0)))
            break;
        rows = PQntuples(r);
        *n += rows;
        for (int i = 0; deleted && i < rows; i++)
            deleted(arg, PQgetvalue(r, i, 0));
        PQclear(r);
    } while (rows == SWEEP_BATCH);
    return err;
}

const struct store_ops store_postgres_ops = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .conversation_get = pg_conversation_get,
    .history_tail = pg_history_tail,
    .append_exchange = pg_append_exchange,
    .append_exchanges = pg_append_exchanges,
    .delete_conversation = pg_delete_conversation,
    .messages_after = pg_messages_after,
    .conversations_after = pg_conversations_after,
    .count_conversations = pg_count_conversations,
    .sweep_expired = pg_sweep_expired,
    .count_active = pg_count_active,
};
