/*
 * test_store.c - the store interface against its SQLite backend: what
 * is SQLite's own. The contract every backend keeps (expiry at the exact
 * microsecond, history and keyset paging, threads, store_free) is checked
 * by tests/store/conformance.c, which CTest also runs on a fresh SQLite
 * database (store.sqlite), so it is not repeated here.
 *
 * Each test gets a fresh database file in its own temporary directory.
 * Time is passed in, so expiry is tested at the exact microsecond. Rows
 * "written by other tools" are inserted through the plain sqlite3 API,
 * the way the sqlite3 shell or Python's sqlite3 module would write them;
 * the test also uses a raw connection to look behind the interface
 * (schema, pragmas, what a sweep really committed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "store/store.h"

#define SEC USEC_PER_SEC
#define DAY (86400 * USEC_PER_SEC)
#define TTL (100 * SEC)
#define T0  INT64_C(1739179800000000) /* 2025-02-10T09:30:00Z */
#define D0  INT64_C(1739145600000000) /* 2025-02-10T00:00:00Z */

struct fx {
    char dir[64];
    char path[128];
    char url[160];
    struct store *st;
};

static struct store *open_store(const char *url, int64_t ttl)
{
    struct store_options opt = {.session_ttl = ttl};
    struct store *st = NULL;
    char why[256] = "";
    enum chatd_err err = store_open(url, &opt, &st, why, sizeof why);
    if (err)
        print_error("store_open(%s): %s\n", url, why);
    assert_int_equal(err, CHATD_OK);
    assert_non_null(st);
    return st;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/chatd-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/chatd.db", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    f->st = open_store(f->url, TTL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_free(f->st);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        print_error("%s: %s\n", sql, msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(rc, SQLITE_OK);
}

static int64_t raw_count(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (arg)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void new_id(char id[UUID_STR_LEN + 1])
{
    assert_int_equal(uuid_v4(id), CHATD_OK);
}

/* One exchange: the question at t, the answer at t + 1 s. */
static enum chatd_err append(struct store *st, const char *id, const char *q, const char *a,
                             int64_t t)
{
    struct store_exchange x = {.conversation_id = id,
                               .question = q,
                               .question_len = strlen(q),
                               .answer = a,
                               .answer_len = strlen(a),
                               .user_time = t,
                               .answer_time = t + SEC};
    return store_append_exchange(st, &x);
}

/* ---- collecting rows ---- */

struct row {
    int64_t id;
    int64_t timestamp;
    char role[16];
    struct buf content;
};

struct rows {
    size_t n;
    size_t stop_after; /* 0: never stop early */
    struct row r[1024];
};

static struct rows *rows_new(void)
{
    return calloc(1, sizeof(struct rows));
}

static void rows_free(struct rows *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        buf_release(&rs->r[i].content);
    free(rs);
}

static int collect(void *arg, const struct store_message *m)
{
    struct rows *rs = arg;
    if (rs->n == sizeof rs->r / sizeof rs->r[0])
        return 1;
    struct row *r = &rs->r[rs->n++];
    r->id = m->id;
    r->timestamp = m->timestamp;
    snprintf(r->role, sizeof r->role, "%.*s", (int)m->role_len, m->role);
    buf_append(&r->content, m->content, m->content_len);
    return rs->stop_after && rs->n == rs->stop_after;
}

static bool content_is(const struct row *r, const char *s)
{
    return r->content.len == strlen(s) && memcmp(buf_str(&r->content).ptr, s, r->content.len) == 0;
}

struct convs {
    size_t n;
    struct store_conversation c[256];
};

static int collect_conv(void *arg, const struct store_conversation *c)
{
    struct convs *cs = arg;
    if (cs->n == sizeof cs->c / sizeof cs->c[0])
        return 1;
    cs->c[cs->n++] = *c;
    return 0;
}

/* Walks conversations_after in pages of `limit`, as the export does. */
static void list_all(struct store *st, int64_t from, int64_t to, int64_t now, size_t limit,
                     struct convs *out)
{
    int64_t key_created = 0;
    char key_id[UUID_STR_LEN + 1] = "";
    size_t got;
    out->n = 0;
    do {
        struct convs page = {0};
        assert_int_equal(store_conversations_after(st, key_created, key_id, from, to, now, limit,
                                                   collect_conv, &page, &got),
                         CHATD_OK);
        assert_int_equal(got, page.n);
        assert_true(got <= limit);
        for (size_t i = 0; i < page.n; i++)
            out->c[out->n++] = page.c[i];
        if (page.n) {
            key_created = page.c[page.n - 1].created_at;
            memcpy(key_id, page.c[page.n - 1].id, sizeof key_id);
        }
    } while (got == limit);
}

/* ---- tests ---- */

static void test_open_ping_and_schema(void **state)
{
    struct fx *f = *state;
    char why[256] = "";
    assert_string_equal(store_backend(f->st), "sqlite");
    assert_int_equal(store_ping(f->st, why, sizeof why), CHATD_OK);
    assert_int_equal(store_ping(f->st, NULL, 0), CHATD_OK);

    sqlite3 *db = raw_open(f->path);
    assert_int_equal(raw_count(db,
                               "SELECT count(*) FROM sqlite_master WHERE name IN"
                               " ('conversations', 'messages')",
                               NULL),
                     2);
    assert_int_equal(raw_count(db,
                               "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                               " AND tbl_name = 'conversations' AND sql IS NOT NULL",
                               NULL),
                     2);
    assert_int_equal(raw_count(db,
                               "SELECT count(*) FROM pragma_index_info("
                               "'idx_messages_conversation')",
                               NULL),
                     2);
    assert_int_equal(raw_count(db, "SELECT journal_mode = 'wal' FROM pragma_journal_mode", NULL),
                     1);
    sqlite3_close(db);

    /* Reopening an existing database keeps its rows. */
    char id[UUID_STR_LEN + 1];
    new_id(id);
    assert_int_equal(append(f->st, id, "q", "a", T0), CHATD_OK);
    store_free(f->st);
    f->st = open_store(f->url, TTL);
    struct store_conversation c;
    assert_int_equal(store_conversation_get(f->st, id, T0, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    {
        struct store_conversation lite;
        assert_int_equal(store_conversation_get(f->st, id, T0, false, &lite), CHATD_OK);
        assert_int_equal(lite.message_count, -1);
        assert_int_equal(lite.created_at, c.created_at);
        assert_int_equal(lite.last_active, c.last_active);
    }
}

static void test_append_and_get(void **state)
{
    struct fx *f = *state;
    char id[UUID_STR_LEN + 1];
    struct store_conversation c;
    new_id(id);
    assert_int_equal(store_conversation_get(f->st, id, T0, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(append(f->st, id, "hello", "world", T0), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, id, T0 + 2 * SEC, true, &c), CHATD_OK);
    assert_string_equal(c.id, id);
    assert_true(c.created_at == T0);
    assert_true(c.last_active == T0 + SEC);
    assert_int_equal(c.message_count, 2);

    /* A second exchange: created_at stays, last_active moves to the answer. */
    assert_int_equal(append(f->st, id, "again", "still here", T0 + 50 * SEC + 123456), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, id, T0 + 60 * SEC, true, &c), CHATD_OK);
    assert_true(c.created_at == T0);
    assert_true(c.last_active == T0 + 51 * SEC + 123456);
    assert_int_equal(c.message_count, 4);

    /* Stored as the exact ISO text. */
    sqlite3 *db = raw_open(f->path);
    assert_int_equal(raw_count(db,
                               "SELECT count(*) FROM conversations WHERE id = ?1 AND"
                               " created_at = '2025-02-10T09:30:00.000000' AND"
                               " last_active = '2025-02-10T09:30:51.123456'",
                               id),
                     1);
    assert_int_equal(raw_count(db,
                               "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND"
                               " typeof(content) = 'text'",
                               id),
                     4);
    sqlite3_close(db);
}

static void test_delete(void **state)
{
    struct fx *f = *state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    struct store_conversation c;
    size_t got;
    new_id(a);
    new_id(b);
    assert_int_equal(append(f->st, a, "q", "a", T0), CHATD_OK);
    assert_int_equal(append(f->st, b, "q", "a", T0), CHATD_OK);
    assert_int_equal(store_delete_conversation(f->st, a, T0 + 10 * SEC), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, a, T0 + 10 * SEC, true, &c), CHATD_ENOTFOUND);
    struct rows *rs = rows_new();
    assert_int_equal(store_messages_after(f->st, a, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 0);
    assert_int_equal(store_delete_conversation(f->st, a, T0 + 10 * SEC), CHATD_ENOTFOUND);
    assert_int_equal(store_delete_conversation(f->st, "no-such-id", T0), CHATD_ENOTFOUND);
    assert_int_equal(store_conversation_get(f->st, b, T0 + 10 * SEC, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    rows_free(rs);

    sqlite3 *db = raw_open(f->path);
    assert_int_equal(raw_count(db, "SELECT count(*) FROM messages WHERE conversation_id = ?1", a),
                     0);
    sqlite3_close(db);
}

struct sweep_seen {
    sqlite3 *db; /* a second connection: sees only what was committed */
    int64_t n;
    int64_t remaining[2000]; /* rows left, as seen at each callback */
    char ids[2000][UUID_STR_LEN + 1];
};

static void on_deleted(void *arg, const char *id)
{
    struct sweep_seen *s = arg;
    if (s->n < 2000) {
        s->remaining[s->n] = raw_count(s->db, "SELECT count(*) FROM conversations", NULL);
        snprintf(s->ids[s->n], sizeof s->ids[0], "%s", id);
    }
    s->n++;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_sweep_batches_and_callback(void **state)
{
    struct fx *f = *state;
    enum { EXPIRED = 1203 };
    char live[2][UUID_STR_LEN + 1], id[UUID_STR_LEN + 1];
    int64_t n;
    for (int i = 0; i < EXPIRED; i++) {
        new_id(id);
        assert_int_equal(append(f->st, id, "q", "a", T0 + i), CHATD_OK);
    }
    const int64_t now = T0 + 2 * TTL;
    for (int i = 0; i < 2; i++) {
        new_id(live[i]);
        assert_int_equal(append(f->st, live[i], "q", "a", now - 10 * SEC), CHATD_OK);
    }
    struct sweep_seen *seen = calloc(1, sizeof *seen);
    seen->db = raw_open(f->path);
    assert_int_equal(store_sweep_expired(f->st, now, on_deleted, seen, &n), CHATD_OK);
    assert_int_equal(n, EXPIRED);
    assert_int_equal(seen->n, EXPIRED);
    /* Called after each batch of 500 committed, never before. */
    for (int i = 0; i < EXPIRED; i++) {
        int64_t want = i < 500 ? EXPIRED + 2 - 500 : i < 1000 ? EXPIRED + 2 - 1000 : 2;
        assert_int_equal(seen->remaining[i], want);
    }
    qsort(seen->ids, EXPIRED, sizeof seen->ids[0], cmp_id);
    for (int i = 1; i < EXPIRED; i++) /* each id once */
        assert_true(strcmp(seen->ids[i - 1], seen->ids[i]) < 0);
    assert_int_equal(raw_count(seen->db, "SELECT count(*) FROM messages", NULL), 4);
    sqlite3_close(seen->db);
    free(seen);

    struct store_conversation c;
    assert_int_equal(store_conversation_get(f->st, live[0], now, true, &c), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, live[1], now, true, &c), CHATD_OK);
    assert_int_equal(store_sweep_expired(f->st, now, on_deleted, NULL, &n), CHATD_OK);
    assert_int_equal(n, 0);
}

static void insert_raw_message(sqlite3 *db, const char *conv, const char *role, const char *p,
                               int n, const char *ts)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO messages(conversation_id, role, content,"
                                        " timestamp) VALUES (?, ?, ?, ?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, conv, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p, n, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, ts, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static void test_rows_written_by_other_tools(void **state)
{
    struct fx *f = *state;
    static const char conv[] = "11111111-2222-4333-8444-555555555555";
    static const char nul_bad[] = "a\0b\xff\xfe"
                                  "c"; /* NUL and invalid UTF-8 */
    sqlite3 *db = raw_open(f->path);
    /* As the sqlite3 shell or Python would write them: a space for the T,
     * fewer fraction digits, a blob literal, a time nobody can read. */
    raw_exec(db, "INSERT INTO conversations VALUES ('11111111-2222-4333-8444-555555555555',"
                 " '2025-02-10 09:30:00', '2025-02-10T09:30:00.5')");
    raw_exec(db, "INSERT INTO messages(conversation_id, role, content, timestamp) VALUES"
                 " ('11111111-2222-4333-8444-555555555555', 'user', 'plain text 你好',"
                 "  '2025-02-10 09:30:00')");
    insert_raw_message(db, conv, "assistant", nul_bad, (int)sizeof nul_bad - 1,
                       "2025-02-10T09:30:00.5");
    raw_exec(db, "INSERT INTO messages(conversation_id, role, content, timestamp) VALUES"
                 " ('11111111-2222-4333-8444-555555555555', 'system', X'00FF41', 'yesterday')");
    raw_exec(db, "INSERT INTO messages(conversation_id, role, content, timestamp) VALUES"
                 " ('11111111-2222-4333-8444-555555555555', 'user', '', 12345)");
    sqlite3_close(db);

    int64_t created, active;
    assert_true(timefmt_parse_iso("2025-02-10T09:30:00", 19, &created));
    active = created + 500000;
    struct store_conversation c;
    /* (Not at active + TTL exactly: '...00.5' sorts before '...00.500000'.) */
    assert_int_equal(store_conversation_get(f->st, conv, active + TTL - 1, true, &c), CHATD_OK);
    assert_true(c.created_at == created);
    assert_true(c.last_active == active);
    assert_int_equal(c.message_count, 4);

    struct rows *rs = rows_new();
    size_t got;
    assert_int_equal(store_messages_after(f->st, conv, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 4);
    assert_true(content_is(&rs->r[0], "plain text 你好"));
    assert_true(rs->r[0].timestamp == created);
    assert_int_equal(rs->r[1].content.len, sizeof nul_bad - 1);
    assert_memory_equal(rs->r[1].content.ptr, nul_bad, sizeof nul_bad - 1);
    assert_true(rs->r[1].timestamp == active);
    assert_int_equal(rs->r[2].content.len, 3);
    assert_memory_equal(rs->r[2].content.ptr,
                        "\0\xff"
                        "A",
                        3);
    assert_string_equal(rs->r[2].role, "system");
    assert_true(rs->r[2].timestamp == 0); /* unreadable: 0, logged once */
    assert_int_equal(rs->r[3].content.len, 0);
    assert_true(rs->r[3].timestamp == 0);
    rows_free(rs);

    /* A date filter on that day finds it although it was written with a space. */
    struct convs cs;
    int64_t n;
    list_all(f->st, D0, D0 + DAY, active, 10, &cs);
    assert_int_equal(cs.n, 1);
    assert_string_equal(cs.c[0].id, conv);
    assert_int_equal(store_count_conversations(f->st, D0, D0 + DAY, active, &n), CHATD_OK);
    assert_int_equal(n, 1);

    /* Chatting on moves last_active into chatd's own form. */
    assert_int_equal(append(f->st, conv, "q", "a", active + SEC), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, conv, active + 2 * SEC, true, &c), CHATD_OK);
    assert_true(c.created_at == created && c.last_active == active + 2 * SEC);
    assert_int_equal(c.message_count, 6);
}

/* Mixed foreign and own time forms do not sort like time against each
 * other, but paging must still return every row exactly once. */
static void test_keyset_over_foreign_time_forms(void **state)
{
    struct fx *f = *state;
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "INSERT INTO conversations VALUES"
                 " ('00000000-0000-4000-8000-000000000001', '2025-02-10 08:00:00',"
                 "  '2025-02-12T00:00:00.000000'),"
                 " ('00000000-0000-4000-8000-000000000002', '2025-02-10 10:00:00',"
                 "  '2025-02-12T00:00:00.000000'),"
                 " ('00000000-0000-4000-8000-000000000003', '2025-02-10T09:00:00.000000',"
                 "  '2025-02-12T00:00:00.000000'),"
                 " ('00000000-0000-4000-8000-000000000004', 'not a time',"
                 "  '2025-02-12T00:00:00.000000'),"
                 " ('00000000-0000-4000-8000-000000000005', 'not a time',"
                 "  '2025-02-12T00:00:00.000000')");
    sqlite3_close(db);
    for (size_t limit = 1; limit <= 3; limit++) {
        struct convs cs;
        list_all(f->st, INT64_MIN, INT64_MAX, D0 + 2 * DAY, limit, &cs);
        assert_int_equal(cs.n, 5);
        qsort(cs.c, cs.n, sizeof cs.c[0], cmp_id);
        for (size_t i = 0; i < cs.n; i++) {
            char want[64];
            snprintf(want, sizeof want, "00000000-0000-4000-8000-%012zu", i + 1);
            assert_string_equal(cs.c[i].id, want);
        }
    }
}

static void test_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        enum chatd_err err;
        const char *why;
    } cases[] = {
#ifdef CHATD_HAVE_POSTGRESQL /* nothing listens on port 1: refused at once */
        {"postgresql://chatd:s3cret@127.0.0.1:1/chatd", CHATD_EDB, NULL},
        {"postgres://chatd:s3cret@127.0.0.1:1/chatd", CHATD_EDB, NULL},
#else
        {"postgresql://chatd:s3cret@db:5432/chatd", CHATD_ENOTBUILT,
         "the postgresql backend is not built yet"},
        {"postgres://chatd:s3cret@db/chatd", CHATD_ENOTBUILT,
         "the postgresql backend is not built yet"},
#endif
#ifdef CHATD_HAVE_MYSQL
        /* nothing listens on port 1: refused at once, without the password */
        {"mysql://chatd:s3cret@127.0.0.1:1/chatd", CHATD_EDB, NULL},
        {"mysql://chatd:s3cret@db:99999/chatd", CHATD_EINVAL, NULL},
        {"mysql://chatd:s3cret@db:3306", CHATD_EINVAL, NULL},
        {"mysql://chatd:s3%zz@db/chatd", CHATD_EINVAL, NULL},
#else
        {"mysql://chatd:s3cret@db:3306/chatd", CHATD_ENOTBUILT,
         "the mysql backend is not built yet"},
#endif
        {"garbage", CHATD_EINVAL, NULL},
        {"", CHATD_EINVAL, NULL},
        {"redis://h:6379/0", CHATD_EINVAL, NULL},
        {"htp://chatd:s3cret@db/chatd", CHATD_EINVAL, NULL},
        {"sqlite:", CHATD_EINVAL, NULL},
        {"sqlite::memory:", CHATD_EINVAL, NULL},
    };
    struct store_options opt = {.session_ttl = TTL};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct store *st = (struct store *)&opt; /* must come back NULL */
        char why[256] = "";
        assert_int_equal(store_open(cases[i].url, &opt, &st, why, sizeof why), cases[i].err);
        assert_null(st);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "s3cret"));
        if (cases[i].why)
            assert_string_equal(why, cases[i].why);
    }
    /* why may be absent */
    struct store *st = NULL;
    assert_int_equal(store_open("nonsense", &opt, &st, NULL, 0), CHATD_EINVAL);
}

static void test_open_failures(void **state)
{
    struct fx *f = *state;
    struct store_options opt = {.session_ttl = TTL};
    struct store *st = NULL;
    char url[300], why[512];

    /* A directory that does not exist. */
    snprintf(url, sizeof url, "sqlite:%s/missing/chatd.db", f->dir);
    assert_int_not_equal(store_open(url, &opt, &st, why, sizeof why), CHATD_OK);
    assert_null(st);
    assert_non_null(strstr(why, "cannot open database"));
    assert_non_null(strstr(why, "unable to open database file"));

    /* A file that is not a database. */
    char path[200];
    snprintf(path, sizeof path, "%s/notes.txt", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database, just some text\n", fp);
    fclose(fp);
    snprintf(url, sizeof url, "sqlite:%s", path);
    assert_int_not_equal(store_open(url, &opt, &st, why, sizeof why), CHATD_OK);
    assert_null(st);
    assert_non_null(strstr(why, "file is not a database"));

    /* A directory instead of a file. */
    snprintf(url, sizeof url, "sqlite:%s", f->dir);
    assert_int_not_equal(store_open(url, &opt, &st, why, sizeof why), CHATD_OK);
    assert_null(st);
}

static void test_ping_notices_deleted_file(void **state)
{
    struct fx *f = *state;
    char why[512] = "";
    char id[UUID_STR_LEN + 1];
    new_id(id);
    assert_int_equal(append(f->st, id, "q", "a", T0), CHATD_OK);
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(store_ping(f->st, why, sizeof why), CHATD_EDB);
    assert_non_null(strstr(why, "unable to open database file"));
    /* Writes do not go on into the unlinked file either. */
    assert_int_equal(append(f->st, id, "q", "a", T0 + SEC), CHATD_EDB);
}

static void test_ping_notices_corrupt_file(void **state)
{
    struct fx *f = *state;
    char why[512] = "";
    char id[UUID_STR_LEN + 1], junk[4096];
    new_id(id);
    assert_int_equal(append(f->st, id, "q", "a", T0), CHATD_OK);
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
    memset(junk, 'x', sizeof junk);
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(store_ping(f->st, why, sizeof why), CHATD_EDB);
    assert_true(strstr(why, "not a database") || strstr(why, "malformed"));
}

static void test_failed_append_rolls_back(void **state)
{
    struct fx *f = *state;
    char fresh[UUID_STR_LEN + 1], old[UUID_STR_LEN + 1];
    struct store_conversation c;
    new_id(fresh);
    new_id(old);
    assert_int_equal(append(f->st, old, "q", "a", T0), CHATD_OK);
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = 'FAIL'"
                 " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");

    /* The answer fails after the conversation and the question went in. */
    assert_int_equal(append(f->st, fresh, "q", "FAIL", T0), CHATD_EDB);
    assert_int_equal(store_conversation_get(f->st, fresh, T0, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(
        raw_count(db, "SELECT count(*) FROM messages WHERE conversation_id = ?1", fresh), 0);
    assert_int_equal(append(f->st, old, "q", "FAIL", T0 + 30 * SEC), CHATD_EDB);
    assert_int_equal(store_conversation_get(f->st, old, T0 + 30 * SEC, true, &c), CHATD_OK);
    assert_true(c.last_active == T0 + SEC);
    assert_int_equal(c.message_count, 2);
    /* The connection is usable afterwards (no transaction left open). */
    assert_int_equal(append(f->st, old, "q", "fine", T0 + 40 * SEC), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, old, T0 + 40 * SEC, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 4);
    sqlite3_close(db);
}

struct nest {
    struct store *st;
    size_t convs, messages;
    enum chatd_err inner;
};

static int count_message(void *arg, const struct store_message *m)
{
    (void)m;
    ((struct nest *)arg)->messages++;
    return 0;
}

static int nest_conv(void *arg, const struct store_conversation *c)
{
    struct nest *n = arg;
    size_t got;
    n->convs++;
    n->inner = store_messages_after(n->st, c->id, 0, 100, count_message, n, &got);
    return n->inner != CHATD_OK;
}

static int nest_same(void *arg, const struct store_message *m)
{
    struct nest *n = arg;
    size_t got;
    (void)m;
    n->messages++;
    n->inner = store_messages_after(n->st, "x", 0, 100, count_message, n, &got);
    return 0;
}

static void test_callbacks_may_nest_other_calls(void **state)
{
    struct fx *f = *state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    size_t got;
    new_id(a);
    new_id(b);
    assert_int_equal(append(f->st, a, "q", "a", T0), CHATD_OK);
    assert_int_equal(append(f->st, b, "q", "a", T0), CHATD_OK);
    struct nest n = {.st = f->st};
    assert_int_equal(
        store_conversations_after(f->st, 0, "", INT64_MIN, INT64_MAX, T0, 10, nest_conv, &n, &got),
        CHATD_OK);
    assert_int_equal(n.convs, 2);
    assert_int_equal(n.messages, 4);
    assert_int_equal(n.inner, CHATD_OK);

    /* The same call from inside its own callback is refused, not looped. */
    n = (struct nest){.st = f->st};
    assert_int_equal(store_messages_after(f->st, a, 0, 100, nest_same, &n, &got), CHATD_OK);
    assert_int_equal(got, 2);
    assert_int_equal(n.inner, CHATD_EINTERNAL);
}

/* ---- the writer: store_append_exchange_async ---- */

#define ASYNC_THREADS 4
#define ASYNC_EACH    300

struct async_slot {
    int calls;
    enum chatd_err err;
};

struct async_worker {
    struct store *st;
    char own[UUID_STR_LEN + 1];
    struct async_slot slot[ASYNC_EACH];
};

static void async_done(void *arg, enum chatd_err err)
{
    struct async_slot *s = arg;
    s->calls++; /* each slot is touched by the writer thread only */
    s->err = err;
}

static void *async_main(void *p)
{
    struct async_worker *w = p;
    for (int i = 0; i < ASYNC_EACH; i++) {
        char q[32];
        snprintf(q, sizeof q, "q%d", i);
        const char *a = i % 50 == 7 ? "FAIL" : q; /* refused by the test's trigger */
        struct store_exchange x = {.conversation_id = w->own,
                                   .question = q,
                                   .question_len = strlen(q),
                                   .answer = a,
                                   .answer_len = strlen(a),
                                   .user_time = T0 + i,
                                   .answer_time = T0 + i + 1};
        store_append_exchange_async(w->st, &x, async_done, &w->slot[i]);
    }
    return NULL;
}

static int check_async_row(void *arg, const struct store_message *m)
{
    int *next = arg; /* the number the next question must carry */
    char want[32];
    int n = *next / 2;
    while (n % 50 == 7)
        n++, *next += 2;
    snprintf(want, sizeof want, "q%d", n);
    assert_int_equal(m->content_len, strlen(want));
    assert_memory_equal(m->content, want, m->content_len);
    assert_string_equal(m->role, *next % 2 ? "assistant" : "user");
    (*next)++;
    return 0;
}

/* Exchanges queued from several threads are all written, in each thread's
 * order, each callback runs once, a refused exchange fails alone (the
 * batch it was in is retried one by one), and store_free() writes what is
 * still queued before it returns. */
static void test_async_group_commit(void **state)
{
    struct fx *f = *state;
    struct async_worker *w = calloc(ASYNC_THREADS, sizeof *w);
    pthread_t t[ASYNC_THREADS];
    assert_non_null(w);
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = 'FAIL'"
                 " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    sqlite3_close(db);
    for (int i = 0; i < ASYNC_THREADS; i++) {
        w[i].st = f->st;
        new_id(w[i].own);
        assert_int_equal(pthread_create(&t[i], NULL, async_main, &w[i]), 0);
    }
    for (int i = 0; i < ASYNC_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    store_free(f->st); /* drains the queue */
    f->st = NULL;

    int refused = 0;
    for (int i = 0; i < ASYNC_THREADS; i++) {
        for (int j = 0; j < ASYNC_EACH; j++) {
            assert_int_equal(w[i].slot[j].calls, 1);
            assert_int_equal(w[i].slot[j].err, j % 50 == 7 ? CHATD_EDB : CHATD_OK);
            refused += j % 50 == 7;
        }
    }
    assert_int_equal(refused, ASYNC_THREADS * (ASYNC_EACH / 50));

    f->st = open_store(f->url, TTL);
    for (int i = 0; i < ASYNC_THREADS; i++) {
        struct store_conversation c;
        int next = 0;
        size_t got;
        assert_int_equal(store_conversation_get(f->st, w[i].own, T0, true, &c), CHATD_OK);
        assert_int_equal(c.message_count, 2 * (ASYNC_EACH - ASYNC_EACH / 50));
        assert_int_equal(
            store_messages_after(f->st, w[i].own, 0, 1000, check_async_row, &next, &got), CHATD_OK);
        assert_int_equal(got, 2 * (ASYNC_EACH - ASYNC_EACH / 50));
    }
    free(w);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        T(test_open_ping_and_schema),
        T(test_append_and_get),
        T(test_delete),
        T(test_sweep_batches_and_callback),
        T(test_rows_written_by_other_tools),
        T(test_keyset_over_foreign_time_forms),
        T(test_urls),
        T(test_open_failures),
        T(test_ping_notices_deleted_file),
        T(test_ping_notices_corrupt_file),
        T(test_failed_append_rolls_back),
        T(test_callbacks_may_nest_other_calls),
        T(test_async_group_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
