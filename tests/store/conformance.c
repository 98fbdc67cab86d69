/*
 * conformance.c - the store.h contract, run against any backend.
 *
 *   store_conformance            a fresh SQLite database in a temporary dir
 *   store_conformance VAR        the database whose URL is in $VAR
 *                                (e.g. CHATD_TEST_PG_URL, set by
 *                                tests/db/with-postgres.sh)
 *
 * Only the interface is used: no backend's SQL, no raw connection, so the
 * same program checks SQLite, PostgreSQL and MySQL/MariaDB alike. Times are
 * passed in, so expiry is tested at the exact microsecond.
 *
 * Isolation: every test of one run shares one database (a network server
 * cannot cheaply be fresh per test). Each test's setup opens the store and
 * empties it through the interface: store_sweep_expired() at a `now` far in
 * the future, where every conversation is expired, deletes them all. So
 * each test starts from an empty database and every count is exact; ids
 * are fresh random UUIDs on top of that. The price: this program deletes
 * every conversation of the database it is given. Never point it at a
 * database you care about.
 *
 * Content: store.h says content may hold any bytes. A backend that keeps
 * bytes (SQLite) must give them back unchanged; a backend whose column can
 * only hold UTF-8 text may instead apply store.h's documented rule (each
 * byte that is not part of valid UTF-8, and each NUL, becomes U+FFFD), and
 * then must apply it every time. Valid UTF-8 without NUL comes back
 * unchanged from every backend.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "store/store.h"

#define SEC USEC_PER_SEC
#define DAY (86400 * USEC_PER_SEC)
#define TTL (100 * SEC)
#define T0  INT64_C(1739179800000000) /* 2025-02-10T09:30:00Z */
#define D0  INT64_C(1739145600000000) /* 2025-02-10T00:00:00Z */
/* A `now` at which every conversation any test wrote is expired. */
#define FAR_FUTURE (INT64_MAX / 2)

static char g_url[4096];  /* the database under test */
static char g_dir[64];    /* the SQLite run's temporary directory, or "" */
static char g_mode = '?'; /* content: '=' kept as bytes, 'n' normalized */

struct fx {
    struct store *st;
};

static struct store *open_store(int64_t ttl)
{
    struct store_options opt = {.session_ttl = ttl};
    struct store *st = NULL;
    char why[512] = "";
    enum chatd_err err = store_open(g_url, &opt, &st, why, sizeof why);
    if (err)
        print_error("store_open: %s\n", why);
    assert_int_equal(err, CHATD_OK);
    assert_non_null(st);
    return st;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    int64_t n;
    if (!f)
        return -1;
    f->st = open_store(TTL);
    if (store_sweep_expired(f->st, FAR_FUTURE, NULL, NULL, &n) != CHATD_OK ||
        store_count_active(f->st, INT64_MIN / 2, &n) != CHATD_OK || n != 0) {
        print_error("setup: cannot empty the database\n");
        store_free(f->st);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_free(f->st);
    free(f);
    return 0;
}

static void new_id(char id[UUID_STR_LEN + 1])
{
    assert_int_equal(uuid_v4(id), CHATD_OK);
}

static enum chatd_err append_n(struct store *st, const char *id, const char *q, size_t qn,
                               const char *a, size_t an, int64_t t)
{
    struct store_exchange x = {.conversation_id = id,
                               .question = q,
                               .question_len = qn,
                               .answer = a,
                               .answer_len = an,
                               .user_time = t,
                               .answer_time = t + SEC};
    return store_append_exchange(st, &x);
}

/* One exchange: the question at t, the answer at t + 1 s. */
static enum chatd_err append(struct store *st, const char *id, const char *q, const char *a,
                             int64_t t)
{
    return append_n(st, id, q, strlen(q), a, strlen(a), t);
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
    struct rows *rs = calloc(1, sizeof(struct rows));
    assert_non_null(rs);
    return rs;
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

static bool bytes_are(const struct row *r, const char *p, size_t n)
{
    return r->content.len == n && (n == 0 || memcmp(r->content.ptr, p, n) == 0);
}

static bool content_is(const struct row *r, const char *s)
{
    return bytes_are(r, s, strlen(s));
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
        for (size_t i = 0; i < page.n; i++) {
            assert_true(out->n < sizeof out->c / sizeof out->c[0]);
            out->c[out->n++] = page.c[i];
        }
        if (page.n) {
            key_created = page.c[page.n - 1].created_at;
            memcpy(key_id, page.c[page.n - 1].id, sizeof key_id);
        }
    } while (got == limit);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* ---- tests ---- */

struct opener {
    pthread_t t;
    struct store *st;
    enum chatd_err err, ping;
    char why[512];
};

static void *opener_main(void *p)
{
    struct opener *o = p;
    struct store_options opt = {.session_ttl = TTL};
    o->err = store_open(g_url, &opt, &o->st, o->why, sizeof o->why);
    if (!o->err)
        o->ping = store_ping(o->st, NULL, 0);
    return NULL;
}

/* The first test of a run: on a fresh database, several instances create
 * the schema at once (as a fleet starting together would). */
static void test_open_concurrently(void **state)
{
    (void)state;
    enum { N = 4 };
    struct opener o[N];
    memset(o, 0, sizeof o);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&o[i].t, NULL, opener_main, &o[i]), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_join(o[i].t, NULL), 0);
    for (int i = 0; i < N; i++) {
        if (o[i].err)
            print_error("store_open: %s\n", o[i].why);
        assert_int_equal(o[i].err, CHATD_OK);
        assert_int_equal(o[i].ping, CHATD_OK);
    }
    /* One writes, every other sees it. */
    char id[UUID_STR_LEN + 1];
    new_id(id);
    assert_int_equal(append(o[0].st, id, "q", "a", T0), CHATD_OK);
    for (int i = 0; i < N; i++) {
        struct store_conversation c;
        assert_int_equal(store_conversation_get(o[i].st, id, T0 + SEC, true, &c), CHATD_OK);
        assert_int_equal(c.message_count, 2);
        store_free(o[i].st);
    }
}

static void test_open_twice_and_ping(void **state)
{
    struct fx *f = *state;
    char why[256] = "";
    const char *name = store_backend(f->st);
    assert_true(strcmp(name, "sqlite") == 0 || strcmp(name, "postgresql") == 0 ||
                strcmp(name, "mysql") == 0);
    assert_int_equal(store_ping(f->st, why, sizeof why), CHATD_OK);
    assert_int_equal(store_ping(f->st, NULL, 0), CHATD_OK);

    /* A second store on the same database: the schema is already there. */
    struct store *other = open_store(TTL);
    assert_string_equal(store_backend(other), name);
    char id[UUID_STR_LEN + 1];
    struct store_conversation c, lite;
    new_id(id);
    assert_int_equal(append(f->st, id, "q", "a", T0), CHATD_OK);
    assert_int_equal(store_conversation_get(other, id, T0, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    assert_int_equal(append(other, id, "q2", "a2", T0 + 10 * SEC), CHATD_OK);
    store_free(other);

    /* Reopened, the rows are still there. */
    store_free(f->st);
    f->st = open_store(TTL);
    assert_int_equal(store_conversation_get(f->st, id, T0 + 10 * SEC, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 4);
    assert_int_equal(store_conversation_get(f->st, id, T0 + 10 * SEC, false, &lite), CHATD_OK);
    assert_int_equal(lite.message_count, -1);
    assert_string_equal(lite.id, id);
    assert_true(lite.created_at == c.created_at && lite.last_active == c.last_active);
}

static void test_append_and_get(void **state)
{
    struct fx *f = *state;
    char id[UUID_STR_LEN + 1];
    struct store_conversation c;
    new_id(id);
    assert_int_equal(store_conversation_get(f->st, id, T0, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_conversation_get(f->st, id, T0, false, &c), CHATD_ENOTFOUND);
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

    struct rows *rs = rows_new();
    size_t got;
    assert_int_equal(store_messages_after(f->st, id, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 4);
    assert_true(content_is(&rs->r[0], "hello") && strcmp(rs->r[0].role, "user") == 0);
    assert_true(content_is(&rs->r[1], "world") && strcmp(rs->r[1].role, "assistant") == 0);
    assert_true(content_is(&rs->r[2], "again") && strcmp(rs->r[2].role, "user") == 0);
    assert_true(content_is(&rs->r[3], "still here") && strcmp(rs->r[3].role, "assistant") == 0);
    assert_true(rs->r[0].timestamp == T0 && rs->r[1].timestamp == T0 + SEC);
    assert_true(rs->r[2].timestamp == T0 + 50 * SEC + 123456);
    assert_true(rs->r[3].timestamp == T0 + 51 * SEC + 123456);
    for (size_t i = 1; i < got; i++)
        assert_true(rs->r[i - 1].id < rs->r[i].id);
    assert_true(rs->r[0].id > 0);
    rows_free(rs);
}

/* Microseconds survive the round trip whatever the backend's time type,
 * including around its own epochs (1970, 2000) and far from now. */
static void test_microsecond_times(void **state)
{
    struct fx *f = *state;
    static const int64_t times[] = {
        T0 + 1,
        T0 + 999999,
        INT64_C(946684800000000),     /* 2000-01-01T00:00:00.000000 */
        INT64_C(946684800000000) - 1, /* 1999-12-31T23:59:59.999999 */
        INT64_C(946684800000000) + 1,
        1,                             /* 1970-01-01T00:00:00.000001 */
        INT64_C(4102444800000000) + 7, /* 2100-01-01T00:00:00.000007 */
        INT64_C(253402300799999999),   /* 9999-12-31T23:59:59.999999 */
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        char id[UUID_STR_LEN + 1];
        struct store_conversation c;
        struct rows *rs = rows_new();
        size_t got;
        int64_t t = times[i];
        new_id(id);
        struct store_exchange x = {.conversation_id = id,
                                   .question = "q",
                                   .question_len = 1,
                                   .answer = "a",
                                   .answer_len = 1,
                                   .user_time = t - 3,
                                   .answer_time = t};
        assert_int_equal(store_append_exchange(f->st, &x), CHATD_OK);
        assert_int_equal(store_conversation_get(f->st, id, t, true, &c), CHATD_OK);
        assert_true(c.created_at == t - 3);
        assert_true(c.last_active == t);
        assert_int_equal(store_messages_after(f->st, id, 0, 10, collect, rs, &got), CHATD_OK);
        assert_int_equal(got, 2);
        assert_true(rs->r[0].timestamp == t - 3);
        assert_true(rs->r[1].timestamp == t);
        rows_free(rs);
        /* expired one microsecond past the TTL */
        assert_int_equal(store_conversation_get(f->st, id, t + TTL + 1, false, &c),
                         CHATD_ENOTFOUND);
        assert_int_equal(store_conversation_get(f->st, id, t + TTL, false, &c), CHATD_OK);
    }
}

static void expiry_at(struct fx *f, int64_t last_active)
{
    char id[UUID_STR_LEN + 1];
    struct store_conversation c;
    int64_t n;
    new_id(id);
    assert_int_equal(append(f->st, id, "q", "a", last_active - SEC), CHATD_OK);
    int64_t edge = last_active + TTL; /* last_active == now - ttl: not older, still live */
    assert_int_equal(store_conversation_get(f->st, id, edge, true, &c), CHATD_OK);
    assert_int_equal(store_count_active(f->st, edge, &n), CHATD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_count_conversations(f->st, INT64_MIN, INT64_MAX, edge, &n), CHATD_OK);
    assert_int_equal(n, 1);
    struct convs cs;
    list_all(f->st, INT64_MIN, INT64_MAX, edge, 10, &cs);
    assert_int_equal(cs.n, 1);
    assert_int_equal(store_sweep_expired(f->st, edge, NULL, NULL, &n), CHATD_OK);
    assert_int_equal(n, 0);

    assert_int_equal(store_conversation_get(f->st, id, edge + 1, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_conversation_get(f->st, id, edge + 1, false, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_count_active(f->st, edge + 1, &n), CHATD_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_count_conversations(f->st, INT64_MIN, INT64_MAX, edge + 1, &n),
                     CHATD_OK);
    assert_int_equal(n, 0);
    list_all(f->st, INT64_MIN, INT64_MAX, edge + 1, 10, &cs);
    assert_int_equal(cs.n, 0);
    assert_int_equal(store_delete_conversation(f->st, id, edge + 1), CHATD_ENOTFOUND);
    /* Still there for a `now` at which it is live: delete refused, not done. */
    assert_int_equal(store_conversation_get(f->st, id, edge, true, &c), CHATD_OK);
    assert_int_equal(store_sweep_expired(f->st, edge + 1, NULL, NULL, &n), CHATD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_conversation_get(f->st, id, edge, true, &c), CHATD_ENOTFOUND);
}

static void test_expiry_exact_boundary(void **state)
{
    expiry_at(*state, T0 + 654321);
}

static void test_expiry_exact_boundary_at_midnight(void **state)
{
    expiry_at(*state, D0);
}

static void test_history_tail(void **state)
{
    struct fx *f = *state;
    char id[UUID_STR_LEN + 1], other[UUID_STR_LEN + 1], q[32], a[32];
    new_id(id);
    new_id(other);
    assert_int_equal(append(f->st, other, "x", "y", T0), CHATD_OK);
    for (int i = 0; i < 5; i++) {
        snprintf(q, sizeof q, "q%d", i);
        snprintf(a, sizeof a, "a%d", i);
        assert_int_equal(append(f->st, id, q, a, T0 + i * 10 * SEC), CHATD_OK);
        assert_int_equal(append(f->st, other, "x", "y", T0 + i * 10 * SEC), CHATD_OK);
    }
    struct rows *rs = rows_new();
    assert_int_equal(store_history_tail(f->st, id, 3, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 3);
    assert_true(content_is(&rs->r[0], "a3") && strcmp(rs->r[0].role, "assistant") == 0);
    assert_true(content_is(&rs->r[1], "q4") && strcmp(rs->r[1].role, "user") == 0);
    assert_true(content_is(&rs->r[2], "a4") && strcmp(rs->r[2].role, "assistant") == 0);
    assert_true(rs->r[1].timestamp == T0 + 40 * SEC);
    assert_true(rs->r[2].timestamp == T0 + 41 * SEC);
    assert_true(rs->r[0].id < rs->r[1].id && rs->r[1].id < rs->r[2].id);
    rows_free(rs);

    rs = rows_new(); /* n beyond the count: all, oldest first */
    assert_int_equal(store_history_tail(f->st, id, 100, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 10);
    assert_true(content_is(&rs->r[0], "q0") && content_is(&rs->r[9], "a4"));
    rows_free(rs);

    rs = rows_new();
    assert_int_equal(store_history_tail(f->st, id, 0, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 0);
    rows_free(rs);

    rs = rows_new(); /* stops when the callback says so */
    rs->stop_after = 2;
    assert_int_equal(store_history_tail(f->st, id, 9, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 2);
    assert_true(content_is(&rs->r[0], "a0") && content_is(&rs->r[1], "q1"));
    rows_free(rs);

    char unknown[UUID_STR_LEN + 1];
    new_id(unknown);
    rs = rows_new();
    assert_int_equal(store_history_tail(f->st, unknown, 9, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 0);
    rows_free(rs);
}

static void test_messages_after_keyset(void **state)
{
    struct fx *f = *state;
    char id[UUID_STR_LEN + 1], other[UUID_STR_LEN + 1], q[32], a[32];
    new_id(id);
    new_id(other);
    for (int i = 0; i < 125; i++) {
        snprintf(q, sizeof q, "q%d", i);
        snprintf(a, sizeof a, "a%d", i);
        assert_int_equal(append(f->st, id, q, a, T0 + i * SEC), CHATD_OK);
        if (i % 10 == 0) /* interleave another conversation's rows */
            assert_int_equal(append(f->st, other, q, a, T0 + i * SEC), CHATD_OK);
    }
    struct rows *all = rows_new();
    int64_t last = 0;
    size_t got, batches = 0;
    do {
        struct rows *page = rows_new();
        assert_int_equal(store_messages_after(f->st, id, last, 100, collect, page, &got), CHATD_OK);
        assert_int_equal(got, page->n);
        for (size_t i = 0; i < page->n; i++) {
            assert_true(page->r[i].id > last);
            last = page->r[i].id;
            all->r[all->n].id = page->r[i].id;
            buf_append(&all->r[all->n].content, page->r[i].content.ptr, page->r[i].content.len);
            all->n++;
        }
        rows_free(page);
        batches++;
    } while (got == 100);
    assert_int_equal(batches, 3); /* 100, 100, 50 */
    assert_int_equal(all->n, 250);
    for (int i = 0; i < 125; i++) { /* every row exactly once, in order */
        snprintf(q, sizeof q, "q%d", i);
        snprintf(a, sizeof a, "a%d", i);
        assert_true(content_is(&all->r[2 * i], q));
        assert_true(content_is(&all->r[2 * i + 1], a));
    }
    /* From the middle of the keyset. */
    struct rows *rs = rows_new();
    assert_int_equal(store_messages_after(f->st, id, all->r[246].id, 100, collect, rs, &got),
                     CHATD_OK);
    assert_int_equal(got, 3);
    assert_true(rs->r[0].id == all->r[247].id);
    rows_free(rs);
    rows_free(all);

    /* Early stop counts the row that stopped it. */
    rs = rows_new();
    rs->stop_after = 7;
    assert_int_equal(store_messages_after(f->st, id, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 7);
    rows_free(rs);
    rs = rows_new();
    assert_int_equal(store_messages_after(f->st, id, 0, 0, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 0);
    char unknown[UUID_STR_LEN + 1];
    new_id(unknown);
    assert_int_equal(store_messages_after(f->st, unknown, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 0);
    assert_int_equal(rs->n, 0);
    rows_free(rs);
}

static void test_conversations_after_bounds_and_keyset(void **state)
{
    struct fx *f = *state;
    /* created_at per conversation: midnight edges, ties, an expired one. */
    static const int64_t created[] = {
        D0, /* day 0 00:00:00.000000 exactly */
        D0 + 12 * 3600 * SEC,
        D0 + DAY, /* day 1 00:00:00.000000 exactly */
        D0 + DAY, /* ties on created_at: ordered by id */
        D0 + DAY,
        D0 + 2 * DAY - 1, /* day 1 23:59:59.999999 */
        D0 + 2 * DAY,     /* day 2 00:00:00.000000 */
        D0 - 1,           /* day -1 23:59:59.999999 */
    };
    enum { N = sizeof created / sizeof created[0] };
    char ids[N][UUID_STR_LEN + 1], expired[UUID_STR_LEN + 1];
    const int64_t now = D0 + 3 * DAY;
    for (int i = 0; i < N; i++) {
        new_id(ids[i]);
        assert_int_equal(append(f->st, ids[i], "q", "a", created[i]), CHATD_OK);
        assert_int_equal(append(f->st, ids[i], "q2", "a2", now - 10 * SEC), CHATD_OK);
    }
    new_id(expired);
    assert_int_equal(append(f->st, expired, "q", "a", D0 + 3600 * SEC), CHATD_OK);

    for (size_t limit = 1; limit <= N + 1; limit++) {
        struct convs cs;
        list_all(f->st, INT64_MIN, INT64_MAX, now, limit, &cs);
        assert_int_equal(cs.n, N);
        for (size_t i = 0; i < cs.n; i++) {
            assert_int_equal(cs.c[i].message_count, 4);
            assert_true(cs.c[i].last_active == now - 9 * SEC);
            assert_int_not_equal(strcmp(cs.c[i].id, expired), 0);
            if (i > 0) /* strictly increasing (created_at, id): each once */
                assert_true(cs.c[i - 1].created_at < cs.c[i].created_at ||
                            (cs.c[i - 1].created_at == cs.c[i].created_at &&
                             strcmp(cs.c[i - 1].id, cs.c[i].id) < 0));
        }
        assert_true(cs.c[0].created_at == D0 - 1);
        assert_true(cs.c[N - 1].created_at == D0 + 2 * DAY);
    }

    /* [day 0, day 2): the six created on days 0 and 1. */
    struct convs cs;
    int64_t n;
    list_all(f->st, D0, D0 + 2 * DAY, now, 2, &cs);
    assert_int_equal(cs.n, 6);
    assert_true(cs.c[0].created_at == D0 && cs.c[5].created_at == D0 + 2 * DAY - 1);
    assert_int_equal(store_count_conversations(f->st, D0, D0 + 2 * DAY, now, &n), CHATD_OK);
    assert_int_equal(n, 6);
    /* [day 1, day 1 + 1 us): exactly the three tied at midnight. */
    list_all(f->st, D0 + DAY, D0 + DAY + 1, now, 50, &cs);
    assert_int_equal(cs.n, 3);
    assert_int_equal(store_count_conversations(f->st, D0 + DAY, D0 + DAY + 1, now, &n), CHATD_OK);
    assert_int_equal(n, 3);
    /* Empty ranges. */
    list_all(f->st, D0 + DAY + 1, D0 + 2 * DAY - 1, now, 50, &cs);
    assert_int_equal(cs.n, 0);
    assert_int_equal(store_count_conversations(f->st, D0 + DAY, D0 + DAY, now, &n), CHATD_OK);
    assert_int_equal(n, 0);
    /* Open-ended on one side. */
    assert_int_equal(store_count_conversations(f->st, INT64_MIN, D0, now, &n), CHATD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_count_conversations(f->st, D0 + 2 * DAY, INT64_MAX, now, &n), CHATD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_count_conversations(f->st, INT64_MIN, INT64_MAX, now, &n), CHATD_OK);
    assert_int_equal(n, N);
    assert_int_equal(store_count_active(f->st, now, &n), CHATD_OK);
    assert_int_equal(n, N);
    /* At a `now` where it is live, the expired one counts too. */
    assert_int_equal(store_count_active(f->st, D0 + 3600 * SEC, &n), CHATD_OK);
    assert_int_equal(n, N + 1);

    /* A key in the middle of a tie continues with the rest of the tie. */
    char tied[3][UUID_STR_LEN + 1];
    list_all(f->st, D0 + DAY, D0 + DAY + 1, now, 50, &cs);
    for (int i = 0; i < 3; i++)
        memcpy(tied[i], cs.c[i].id, sizeof tied[i]);
    struct convs page = {0};
    size_t got;
    assert_int_equal(store_conversations_after(f->st, D0 + DAY, tied[0], INT64_MIN, INT64_MAX, now,
                                               50, collect_conv, &page, &got),
                     CHATD_OK);
    assert_int_equal(got, 4);
    assert_string_equal(page.c[0].id, tied[1]);
    assert_string_equal(page.c[1].id, tied[2]);
    assert_true(page.c[2].created_at == D0 + 2 * DAY - 1);
    /* A limit of 0 returns nothing; an early stop counts the stopping row. */
    assert_int_equal(store_conversations_after(f->st, 0, "", INT64_MIN, INT64_MAX, now, 0,
                                               collect_conv, &page, &got),
                     CHATD_OK);
    assert_int_equal(got, 0);
}

static void test_delete(void **state)
{
    struct fx *f = *state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1], x[UUID_STR_LEN + 1];
    struct store_conversation c;
    size_t got;
    int64_t n;
    new_id(a);
    new_id(b);
    new_id(x);
    assert_int_equal(append(f->st, a, "q", "a", T0), CHATD_OK);
    assert_int_equal(append(f->st, a, "q", "a", T0 + SEC), CHATD_OK);
    assert_int_equal(append(f->st, b, "q", "a", T0), CHATD_OK);
    assert_int_equal(store_delete_conversation(f->st, a, T0 + 10 * SEC), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, a, T0 + 10 * SEC, true, &c), CHATD_ENOTFOUND);
    struct rows *rs = rows_new();
    assert_int_equal(store_messages_after(f->st, a, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 0);
    assert_int_equal(store_history_tail(f->st, a, 100, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 0);
    rows_free(rs);
    assert_int_equal(store_delete_conversation(f->st, a, T0 + 10 * SEC), CHATD_ENOTFOUND);
    assert_int_equal(store_delete_conversation(f->st, x, T0), CHATD_ENOTFOUND);
    assert_int_equal(store_delete_conversation(f->st, "no-such-id", T0), CHATD_ENOTFOUND);
    /* Longer than any id: not found on every backend, before any query. */
    assert_int_equal(
        store_delete_conversation(f->st, "0123456789abcdef0123456789abcdef01234567", T0),
        CHATD_ENOTFOUND);
    assert_int_equal(store_conversation_get(f->st, b, T0 + 10 * SEC, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    assert_int_equal(store_count_active(f->st, T0 + 10 * SEC, &n), CHATD_OK);
    assert_int_equal(n, 1);

    /* A deleted id used again starts a new conversation with no old rows. */
    assert_int_equal(append(f->st, a, "new", "life", T0 + 20 * SEC), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, a, T0 + 20 * SEC, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    assert_true(c.created_at == T0 + 20 * SEC);
}

struct sweep_seen {
    struct store *other; /* a second store: sees only what was committed */
    int64_t live_at;     /* a `now` at which every swept one was still live */
    int64_t n;
    int visible; /* callbacks for ids the other store could still see */
    char ids[2000][UUID_STR_LEN + 1];
};

static void on_deleted(void *arg, const char *id)
{
    struct sweep_seen *s = arg;
    struct store_conversation c;
    if (store_conversation_get(s->other, id, s->live_at, false, &c) != CHATD_ENOTFOUND)
        s->visible++;
    if (s->n < 2000)
        snprintf(s->ids[s->n], sizeof s->ids[0], "%s", id);
    s->n++;
}

static void test_sweep_batches_and_callback(void **state)
{
    struct fx *f = *state;
    enum { EXPIRED = 1203 };
    char live[2][UUID_STR_LEN + 1];
    static char made[EXPIRED][UUID_STR_LEN + 1];
    int64_t n;
    for (int i = 0; i < EXPIRED; i++) {
        new_id(made[i]);
        assert_int_equal(append(f->st, made[i], "q", "a", T0 + i), CHATD_OK);
    }
    const int64_t now = T0 + 2 * TTL;
    for (int i = 0; i < 2; i++) {
        new_id(live[i]);
        assert_int_equal(append(f->st, live[i], "q", "a", now - 10 * SEC), CHATD_OK);
    }
    struct sweep_seen *seen = calloc(1, sizeof *seen);
    assert_non_null(seen);
    seen->other = open_store(TTL);
    seen->live_at = T0 + SEC;
    assert_int_equal(store_sweep_expired(f->st, now, on_deleted, seen, &n), CHATD_OK);
    assert_int_equal(n, EXPIRED);
    assert_int_equal(seen->n, EXPIRED);
    /* Each callback came after its deletion was committed. */
    assert_int_equal(seen->visible, 0);
    /* Each expired id exactly once, and no other. */
    qsort(seen->ids, EXPIRED, sizeof seen->ids[0], cmp_id);
    qsort(made, EXPIRED, sizeof made[0], cmp_id);
    for (int i = 0; i < EXPIRED; i++)
        assert_string_equal(seen->ids[i], made[i]);
    store_free(seen->other);
    free(seen);

    struct store_conversation c;
    assert_int_equal(store_conversation_get(f->st, live[0], now, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2);
    assert_int_equal(store_conversation_get(f->st, live[1], now, true, &c), CHATD_OK);
    /* At a `now` where the swept ones would be live, only the two are left. */
    assert_int_equal(store_count_active(f->st, T0 + SEC, &n), CHATD_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_sweep_expired(f->st, now, on_deleted, NULL, &n), CHATD_OK);
    assert_int_equal(n, 0);
    /* Without a callback. */
    assert_int_equal(store_sweep_expired(f->st, now + TTL, NULL, NULL, &n), CHATD_OK);
    assert_int_equal(n, 2);
}

struct sweeper {
    pthread_t t;
    struct store *st;
    int64_t now, n;
    enum chatd_err err;
};

static void *sweeper_main(void *p)
{
    struct sweeper *s = p;
    s->err = store_sweep_expired(s->st, s->now, NULL, NULL, &s->n);
    return NULL;
}

/* Several instances sweeping at once delete each conversation once. */
static void test_sweep_concurrently(void **state)
{
    struct fx *f = *state;
    enum { EXPIRED = 1500, N = 3 };
    char id[UUID_STR_LEN + 1];
    for (int i = 0; i < EXPIRED; i++) {
        new_id(id);
        assert_int_equal(append(f->st, id, "q", "a", T0 + i), CHATD_OK);
    }
    struct sweeper s[N];
    int64_t total = 0;
    for (int i = 0; i < N; i++) {
        s[i] = (struct sweeper){.st = i ? open_store(TTL) : f->st, .now = T0 + 2 * TTL};
        assert_int_equal(pthread_create(&s[i].t, NULL, sweeper_main, &s[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(s[i].t, NULL), 0);
        assert_int_equal(s[i].err, CHATD_OK);
        total += s[i].n;
        if (i)
            store_free(s[i].st);
    }
    assert_int_equal(total, EXPIRED);
    int64_t n;
    assert_int_equal(store_count_active(f->st, T0, &n), CHATD_OK);
    assert_int_equal(n, 0);
}

/* What store.h allows a text-only backend to make of content: each byte
 * that is not part of valid UTF-8, and each NUL, becomes U+FFFD. */
static void normalized(const char *s, size_t n, struct buf *out)
{
    buf_reset(out);
    while (n) {
        bool complete;
        size_t ok = utf8_valid_prefix(s, n, &complete);
        for (size_t i = 0; i < ok; i++) {
            if (s[i] == '\0')
                buf_append(out, "\xef\xbf\xbd", 3);
            else
                buf_append_char(out, s[i]);
        }
        s += ok;
        n -= ok;
        if (n) {
            buf_append(out, "\xef\xbf\xbd", 3);
            s++;
            n--;
        }
    }
}

/* Checks that the row holds p[0..n) under the backend's content rule,
 * and that the backend keeps to one rule. */
static void check_content(const char *backend, const struct row *r, const char *p, size_t n)
{
    struct buf norm = BUF_INIT;
    normalized(p, n, &norm);
    bool exact = bytes_are(r, p, n);
    bool is_norm = bytes_are(r, norm.ptr ? norm.ptr : "", norm.len);
    bool odd = norm.len != n || (n && memcmp(norm.ptr, p, n) != 0);
    buf_release(&norm);
    if (!odd) {
        assert_true(exact); /* valid UTF-8 without NUL: unchanged everywhere */
        return;
    }
    if (!exact && !is_norm)
        print_error("content of %zu bytes came back as %zu bytes, neither unchanged nor "
                    "normalized\n",
                    n, r->content.len);
    assert_true(exact || is_norm);
    char mode = exact ? '=' : 'n';
    if (strcmp(backend, "sqlite") == 0)
        assert_int_equal(mode, '='); /* the reference keeps bytes */
    if (g_mode == '?')
        g_mode = mode;
    assert_int_equal(mode, g_mode);
}

static void test_content_round_trips(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *p;
        size_t n;
    } cases[] = {
#define C(s) {s, sizeof s - 1}
        C(""),
        C("plain ascii, with \"quotes\", 'apostrophes', \\backslashes\\ and %s %d"),
        C("中文内容：你好，世界！🙂 emoji and ¿accents?"),
        C("tabs\tnewlines\ncarriage\rreturns\r\n\x01\x1f\x7f controls"),
        C("'; DROP TABLE messages; --"),
        C("a\0b"),               /* NUL inside */
        C("\0"),                 /* only NUL */
        C("bad \xff\xfe utf-8"), /* invalid bytes */
        C("truncated \xe4\xbd"), /* a sequence cut at the end */
        C("\xc0\xaf overlong, \xed\xa0\x80 surrogate"),
        C("mixed \0 and \x80 and 好"),
#undef C
    };
    enum { N = sizeof cases / sizeof cases[0] };
    const char *backend = store_backend(f->st);
    char id[UUID_STR_LEN + 1];
    new_id(id);
    for (int i = 0; i < N; i++) /* each as the question and as the answer */
        assert_int_equal(append_n(f->st, id, cases[i].p, cases[i].n, cases[N - 1 - i].p,
                                  cases[N - 1 - i].n, T0 + i * SEC),
                         CHATD_OK);
    struct rows *rs = rows_new();
    size_t got;
    assert_int_equal(store_messages_after(f->st, id, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 2 * N);
    for (int i = 0; i < N; i++) {
        check_content(backend, &rs->r[2 * i], cases[i].p, cases[i].n);
        check_content(backend, &rs->r[2 * i + 1], cases[N - 1 - i].p, cases[N - 1 - i].n);
    }
    rows_free(rs);
    /* history_tail reads the same bytes. */
    rs = rows_new();
    assert_int_equal(store_history_tail(f->st, id, 2, collect, rs), CHATD_OK);
    assert_int_equal(rs->n, 2);
    check_content(backend, &rs->r[0], cases[N - 1].p, cases[N - 1].n);
    check_content(backend, &rs->r[1], cases[0].p, cases[0].n);
    rows_free(rs);
}

/* 1 MB of valid UTF-8 in, the same 1 MB out. */
static void test_large_content(void **state)
{
    struct fx *f = *state;
    enum { SIZE = 1 << 20 };
    char *big = malloc(SIZE);
    assert_non_null(big);
    static const char unit[] = "长文本 long text 0123456789 ";
    size_t k = 0;
    while (k + sizeof unit - 1 <= SIZE) {
        memcpy(big + k, unit, sizeof unit - 1);
        k += sizeof unit - 1;
    }
    memset(big + k, 'x', SIZE - k);
    char id[UUID_STR_LEN + 1];
    new_id(id);
    assert_int_equal(append_n(f->st, id, big, SIZE, big, SIZE / 2, T0), CHATD_OK);
    struct rows *rs = rows_new();
    size_t got;
    assert_int_equal(store_messages_after(f->st, id, 0, 100, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 2);
    assert_true(bytes_are(&rs->r[0], big, SIZE));
    assert_true(bytes_are(&rs->r[1], big, SIZE / 2));
    rows_free(rs);
    free(big);
}

/* Ids are compared as the exact strings given: the API lowercases a UUID
 * before it asks (uuid_normalize), so the store never folds case. */
static void test_ids_are_exact(void **state)
{
    struct fx *f = *state;
    char id[UUID_STR_LEN + 1], upper[UUID_STR_LEN + 1];
    struct store_conversation c;
    int64_t n;
    new_id(id);
    for (size_t i = 0; i <= UUID_STR_LEN; i++)
        upper[i] = (char)(id[i] >= 'a' && id[i] <= 'f' ? id[i] - 'a' + 'A' : id[i]);
    assert_int_equal(append(f->st, id, "q", "a", T0), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, id, T0, false, &c), CHATD_OK);
    assert_int_equal(store_conversation_get(f->st, upper, T0, false, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_delete_conversation(f->st, upper, T0), CHATD_ENOTFOUND);

    /* Too long to be one of ours, or empty: not found, never an error. */
    char longer[UUID_STR_LEN + 2];
    snprintf(longer, sizeof longer, "%sx", id);
    assert_int_equal(store_conversation_get(f->st, longer, T0, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_conversation_get(f->st, "", T0, true, &c), CHATD_ENOTFOUND);
    assert_int_equal(store_delete_conversation(f->st, longer, T0), CHATD_ENOTFOUND);
    assert_int_equal(store_count_active(f->st, T0, &n), CHATD_OK);
    assert_int_equal(n, 1);
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
    struct store_conversation again;
    n->convs++;
    n->inner = store_messages_after(n->st, c->id, 0, 100, count_message, n, &got);
    if (!n->inner)
        n->inner = store_conversation_get(n->st, c->id, c->last_active, true, &again);
    return n->inner != CHATD_OK;
}

/* An export calls messages_after from inside conversations_after's callback. */
static void test_callbacks_may_nest_other_calls(void **state)
{
    struct fx *f = *state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    size_t got;
    new_id(a);
    new_id(b);
    assert_int_equal(append(f->st, a, "q", "a", T0), CHATD_OK);
    assert_int_equal(append(f->st, b, "q", "a", T0), CHATD_OK);
    assert_int_equal(append(f->st, b, "q", "a", T0 + SEC), CHATD_OK);
    struct nest n = {.st = f->st};
    assert_int_equal(store_conversations_after(f->st, 0, "", INT64_MIN, INT64_MAX, T0 + SEC, 10,
                                               nest_conv, &n, &got),
                     CHATD_OK);
    assert_int_equal(got, 2);
    assert_int_equal(n.convs, 2);
    assert_int_equal(n.messages, 6);
    assert_int_equal(n.inner, CHATD_OK);
}

/* ---- threads ---- */

enum { THREADS = 8, PER_THREAD = 25 };

struct worker {
    struct store *st;
    int no;
    const char *shared;
    char own[UUID_STR_LEN + 1];
    int bad; /* failures; cmocka asserts only on the main thread */
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    char q[48], a[48];
    if (uuid_v4(w->own) != CHATD_OK)
        w->bad++;
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(q, sizeof q, "q-%d-%d", w->no, i);
        snprintf(a, sizeof a, "a-%d-%d", w->no, i);
        if (append(w->st, w->own, q, a, T0 + i * SEC) != CHATD_OK)
            w->bad++;
        if (append(w->st, w->shared, q, a, T0 + i * SEC) != CHATD_OK)
            w->bad++;
        struct store_conversation c;
        if (store_conversation_get(w->st, w->own, T0 + i * SEC, true, &c) != CHATD_OK ||
            c.message_count != 2 * (i + 1))
            w->bad++;
        if (store_ping(w->st, NULL, 0) != CHATD_OK)
            w->bad++;
    }
    return NULL;
}

static void test_threads_append_concurrently(void **state)
{
    struct fx *f = *state;
    char shared[UUID_STR_LEN + 1];
    pthread_t t[THREADS];
    struct worker w[THREADS];
    size_t got;
    new_id(shared);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.st = f->st, .no = i, .shared = shared};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].bad, 0);
    }
    /* The threads have exited and closed their connections; ours is fine. */
    struct store_conversation c;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(store_conversation_get(f->st, w[i].own, T0 + TTL, true, &c), CHATD_OK);
        assert_int_equal(c.message_count, 2 * PER_THREAD);
    }
    assert_int_equal(store_conversation_get(f->st, shared, T0 + TTL, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2 * PER_THREAD * THREADS);
    /* No message lost, ids increasing, each exchange whole and contiguous:
     * a question, then its own answer. */
    struct rows *rs = rows_new();
    assert_int_equal(store_messages_after(f->st, shared, 0, 1000, collect, rs, &got), CHATD_OK);
    assert_int_equal(got, 2 * PER_THREAD * THREADS);
    static bool seen[THREADS][PER_THREAD];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < got; i += 2) {
        int no = -1, k = -1;
        assert_string_equal(rs->r[i].role, "user");
        assert_string_equal(rs->r[i + 1].role, "assistant");
        assert_string_equal(rs->r[i].content.ptr + 1, rs->r[i + 1].content.ptr + 1);
        assert_int_equal(sscanf(rs->r[i].content.ptr, "q-%d-%d", &no, &k), 2);
        assert_true(no >= 0 && no < THREADS && k >= 0 && k < PER_THREAD);
        assert_false(seen[no][k]);
        seen[no][k] = true;
        if (i)
            assert_true(rs->r[i - 1].id < rs->r[i].id);
        assert_true(rs->r[i].id < rs->r[i + 1].id);
    }
    rows_free(rs);
}

struct idle {
    struct store *st;
    pthread_barrier_t used, freed;
    enum chatd_err err;
};

static void *idle_main(void *p)
{
    struct idle *d = p;
    char id[UUID_STR_LEN + 1];
    if (uuid_v4(id) == CHATD_OK)
        d->err = append(d->st, id, "q", "a", T0);
    pthread_barrier_wait(&d->used);
    pthread_barrier_wait(&d->freed); /* exits after store_free closed its connection */
    return NULL;
}

/* store_free closes the connections of threads that are still alive (and
 * the sanitizer build checks nothing leaks). */
static void test_free_closes_connections_of_live_threads(void **state)
{
    struct fx *f = *state;
    struct idle d = {.st = f->st};
    pthread_t t;
    pthread_barrier_init(&d.used, NULL, 2);
    pthread_barrier_init(&d.freed, NULL, 2);
    assert_int_equal(pthread_create(&t, NULL, idle_main, &d), 0);
    pthread_barrier_wait(&d.used);
    assert_int_equal(d.err, CHATD_OK);
    store_free(f->st);
    f->st = NULL;
    pthread_barrier_wait(&d.freed);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&d.used);
    pthread_barrier_destroy(&d.freed);
    f->st = open_store(TTL);
    int64_t n;
    assert_int_equal(store_count_active(f->st, T0, &n), CHATD_OK);
    assert_int_equal(n, 1);
}

/* ---- group commit (store_append_exchange_async) ---- */

enum { ASYNC_THREADS = 4, ASYNC_EACH = 300, ASYNC_PAGE = 500 };

/* One queued exchange's callback: how often it ran, with what. */
struct slot {
    int calls;
    enum chatd_err err;
};

/* Callbacks run on the store's writer thread; the test waits on this. */
struct written {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t calls;
};

struct async_arg {
    struct written *w;
    struct slot *slot;
};

struct async_worker {
    struct store *st;
    struct written *w;
    int no;
    const char *shared;
    char own[UUID_STR_LEN + 1];
    struct slot slot[ASYNC_EACH][2]; /* [k][0] own, [k][1] shared */
    struct async_arg arg[ASYNC_EACH][2];
};

/* Exchange k of thread no: the question at user_time, the answer 0.5 ms
 * later; times increase in each thread's queue order. */
static int64_t async_user_time(int no, int k)
{
    return T0 + ((int64_t)k * ASYNC_THREADS + no) * 1000;
}

static int64_t async_answer_time(int no, int k)
{
    return async_user_time(no, k) + 500;
}

static void async_done(void *p, enum chatd_err err)
{
    struct async_arg *a = p;
    pthread_mutex_lock(&a->w->lock);
    a->slot->calls++;
    a->slot->err = err;
    a->w->calls++;
    pthread_cond_broadcast(&a->w->cond);
    pthread_mutex_unlock(&a->w->lock);
}

static void async_queue(struct async_worker *aw, int k, int which)
{
    char q[48], a[48];
    snprintf(q, sizeof q, "q-%d-%d-%c", aw->no, k, which ? 's' : 'o');
    snprintf(a, sizeof a, "a-%d-%d-%c", aw->no, k, which ? 's' : 'o');
    struct store_exchange x = {.conversation_id = which ? aw->shared : aw->own,
                               .question = q,
                               .question_len = strlen(q),
                               .answer = a,
                               .answer_len = strlen(a),
                               .user_time = async_user_time(aw->no, k),
                               .answer_time = async_answer_time(aw->no, k)};
    aw->arg[k][which] = (struct async_arg){.w = aw->w, .slot = &aw->slot[k][which]};
    store_append_exchange_async(aw->st, &x, async_done, &aw->arg[k][which]);
}

static void *async_main(void *p)
{
    struct async_worker *aw = p;
    for (int k = 0; k < ASYNC_EACH; k++) {
        async_queue(aw, k, 0);
        async_queue(aw, k, 1);
    }
    return NULL;
}

/* Waits (at most two minutes) until `want` callbacks have run. */
static size_t wait_written(struct written *w, size_t want)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 120;
    pthread_mutex_lock(&w->lock);
    while (w->calls < want && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
        ;
    size_t got = w->calls;
    pthread_mutex_unlock(&w->lock);
    return got;
}

/* Streams a conversation's messages, checking that each exchange is whole
 * and contiguous (its question, then its own answer, at their exact times)
 * and that each thread's exchanges come in the order it queued them. */
struct async_check {
    char tag;                /* 'o' own or 's' shared */
    int next[ASYNC_THREADS]; /* the k each thread's next exchange must have */
    int no, k;               /* the question waiting for its answer; no = -1: none */
    int64_t last_id, last_time;
    size_t n;
    int bad;
    char why[160];
};

static void async_bad(struct async_check *ck, const struct store_message *m, const char *what)
{
    if (!ck->bad++)
        snprintf(ck->why, sizeof ck->why, "message %zu (%.*s: %.*s): %s", ck->n, (int)m->role_len,
                 m->role, (int)(m->content_len < 40 ? m->content_len : 40), m->content, what);
}

static int async_check_row(void *arg, const struct store_message *m)
{
    struct async_check *ck = arg;
    char text[64];
    int no, k;
    char tag, end;

    if (ck->n && m->id <= ck->last_id)
        async_bad(ck, m, "ids do not increase");
    ck->last_id = m->id;
    ck->last_time = m->timestamp;
    if (ck->no < 0) {
        snprintf(text, sizeof text, "%.*s", (int)(m->content_len < 63 ? m->content_len : 63),
                 m->content);
        if (m->role_len != 4 || memcmp(m->role, "user", 4) != 0)
            async_bad(ck, m, "a question was expected");
        else if (sscanf(text, "q-%d-%d-%c%c", &no, &k, &tag, &end) != 3 || tag != ck->tag ||
                 no < 0 || no >= ASYNC_THREADS)
            async_bad(ck, m, "not a question of this test");
        else if (k != ck->next[no])
            async_bad(ck, m, "out of its thread's order");
        else if (m->timestamp != async_user_time(no, k))
            async_bad(ck, m, "wrong question time");
        else {
            ck->no = no;
            ck->k = k;
        }
    } else {
        snprintf(text, sizeof text, "a-%d-%d-%c", ck->no, ck->k, ck->tag);
        if (m->role_len != 9 || memcmp(m->role, "assistant", 9) != 0 ||
            m->content_len != strlen(text) || memcmp(m->content, text, m->content_len) != 0)
            async_bad(ck, m, "not the answer of the question before it");
        else if (m->timestamp != async_answer_time(ck->no, ck->k))
            async_bad(ck, m, "wrong answer time");
        ck->next[ck->no]++;
        ck->no = -1;
    }
    ck->n++;
    return 0;
}

/* Checks a conversation of the test through the interface; ck->next then
 * holds the number of exchanges of each thread found in it. */
static void async_verify(struct store *st, const char *id, char tag, size_t exchanges,
                         struct async_check *ck)
{
    struct store_conversation c;
    size_t got;

    *ck = (struct async_check){.tag = tag, .no = -1};
    assert_int_equal(store_conversation_get(st, id, T0 + TTL, true, &c), CHATD_OK);
    assert_int_equal(c.message_count, 2 * exchanges);
    do {
        assert_int_equal(
            store_messages_after(st, id, ck->last_id, ASYNC_PAGE, async_check_row, ck, &got),
            CHATD_OK);
    } while (got == ASYNC_PAGE && !ck->bad);
    if (ck->bad)
        print_error("conversation %s: %s\n", id, ck->why);
    assert_int_equal(ck->bad, 0);
    assert_int_equal(ck->n, 2 * exchanges);
    assert_int_equal(ck->no, -1);
    /* Created by its first exchange; last_active moved by each, so it is
     * the answer time of the one written last, the newest. */
    struct rows *first = rows_new();
    first->stop_after = 1;
    assert_int_equal(store_messages_after(st, id, 0, 1, collect, first, &got), CHATD_OK);
    assert_int_equal(got, 1);
    assert_int_equal(c.created_at, first->r[0].timestamp);
    rows_free(first);
    assert_int_equal(c.last_active, ck->last_time);
}

static struct async_worker *async_run(struct store *st, struct written *w, const char *shared)
{
    struct async_worker *aw = calloc(ASYNC_THREADS, sizeof *aw);
    pthread_t t[ASYNC_THREADS];
    assert_non_null(aw);
    for (int i = 0; i < ASYNC_THREADS; i++) {
        aw[i].st = st;
        aw[i].w = w;
        aw[i].no = i;
        aw[i].shared = shared;
        new_id(aw[i].own);
        assert_int_equal(pthread_create(&t[i], NULL, async_main, &aw[i]), 0);
    }
    for (int i = 0; i < ASYNC_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    return aw;
}

/* Every callback ran exactly once, with `want`. */
static void async_slots_are(const struct async_worker *aw, enum chatd_err want)
{
    for (int i = 0; i < ASYNC_THREADS; i++) {
        for (int k = 0; k < ASYNC_EACH; k++) {
            for (int which = 0; which < 2; which++) {
                assert_int_equal(aw[i].slot[k][which].calls, 1);
                assert_int_equal(aw[i].slot[k][which].err, want);
            }
        }
    }
}

static void async_verify_all(struct store *st, const struct async_worker *aw, const char *shared)
{
    struct async_check ck;
    int64_t n;
    for (int i = 0; i < ASYNC_THREADS; i++) {
        async_verify(st, aw[i].own, 'o', ASYNC_EACH, &ck);
        for (int j = 0; j < ASYNC_THREADS; j++)
            assert_int_equal(ck.next[j], j == i ? ASYNC_EACH : 0);
        struct store_conversation c;
        assert_int_equal(store_conversation_get(st, aw[i].own, T0 + TTL, false, &c), CHATD_OK);
        assert_int_equal(c.created_at, async_user_time(i, 0));
        assert_int_equal(c.last_active, async_answer_time(i, ASYNC_EACH - 1));
    }
    async_verify(st, shared, 's', (size_t)ASYNC_THREADS * ASYNC_EACH, &ck);
    for (int j = 0; j < ASYNC_THREADS; j++)
        assert_int_equal(ck.next[j], ASYNC_EACH);
    assert_int_equal(store_count_active(st, T0 + TTL, &n), CHATD_OK);
    assert_int_equal(n, ASYNC_THREADS + 1);
}

/* Group commit: threads queue exchanges to their own conversation and to
 * one shared by all; the writer stores them in batches. Each callback runs
 * once, with CHATD_OK, and what is stored is exactly what was queued, each
 * exchange whole, each thread's in its order. */
static void test_async_append(void **state)
{
    struct fx *f = *state;
    struct written w = {.calls = 0};
    char shared[UUID_STR_LEN + 1];
    const size_t total = (size_t)ASYNC_THREADS * ASYNC_EACH * 2;

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    new_id(shared);
    struct async_worker *aw = async_run(f->st, &w, shared);
    assert_int_equal(wait_written(&w, total), total);
    async_slots_are(aw, CHATD_OK);
    async_verify_all(f->st, aw, shared);
    /* Nothing more is called later, not even by store_free. */
    store_free(f->st);
    f->st = NULL;
    assert_int_equal(w.calls, total);
    async_slots_are(aw, CHATD_OK);
    f->st = open_store(TTL);
    free(aw);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
}

/* store_free() right after queueing writes everything first: when it
 * returns every callback has run, and a new store finds the data. */
static void test_async_free_waits(void **state)
{
    struct fx *f = *state;
    struct written w = {.calls = 0};
    char shared[UUID_STR_LEN + 1];
    const size_t total = (size_t)ASYNC_THREADS * ASYNC_EACH * 2;

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    new_id(shared);
    struct async_worker *aw = async_run(f->st, &w, shared);
    store_free(f->st);
    f->st = NULL;
    assert_int_equal(w.calls, total);
    async_slots_are(aw, CHATD_OK);
    f->st = open_store(TTL);
    async_verify_all(f->st, aw, shared);
    free(aw);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
}

/* ---- main ---- */

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(int argc, char **argv)
{
    log_set_level(LOG_LEVEL_ERROR);
    if (argc > 2) {
        fprintf(stderr, "usage: %s [ENV_VAR_NAME]\n", argv[0]);
        return 2;
    }
    if (argc == 2) {
        const char *url = getenv(argv[1]);
        if (!url || !*url) {
            fprintf(stderr, "store_conformance: $%s is not set\n", argv[1]);
            return 2;
        }
        snprintf(g_url, sizeof g_url, "%s", url);
    } else {
        snprintf(g_dir, sizeof g_dir, "/tmp/chatd-conformance-XXXXXX");
        if (!mkdtemp(g_dir)) {
            perror("mkdtemp");
            return 2;
        }
        snprintf(g_url, sizeof g_url, "sqlite:%s/chatd.db", g_dir);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_concurrently), /* first: creates the schema */
        T(test_open_twice_and_ping),
        T(test_append_and_get),
        T(test_microsecond_times),
        T(test_expiry_exact_boundary),
        T(test_expiry_exact_boundary_at_midnight),
        T(test_history_tail),
        T(test_messages_after_keyset),
        T(test_conversations_after_bounds_and_keyset),
        T(test_delete),
        T(test_sweep_batches_and_callback),
        T(test_sweep_concurrently),
        T(test_content_round_trips),
        T(test_large_content),
        T(test_ids_are_exact),
        T(test_callbacks_may_nest_other_calls),
        T(test_threads_append_concurrently),
        T(test_free_closes_connections_of_live_threads),
        T(test_async_append),
        T(test_async_free_waits),
    };
    int rc = cmocka_run_group_tests_name("store conformance", tests, NULL, NULL);
    if (g_dir[0])
        remove_dir(g_dir);
    return rc;
}
