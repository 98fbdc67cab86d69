/*
 * store.c - the front of store.h: picks a backend from the URL and
 * forwards every call to its table of functions (backend.h).
 *
 * URL forms (SPEC.md "Configuration"): "sqlite:PATH" (PATH taken
 * literally, no URI parsing), "postgresql://..." (also "postgres://", as
 * libpq accepts) and "mysql://...". A backend left out of the build is
 * still recognised here and answers CHATD_ENOTBUILT, so callers never
 * #ifdef; this table is the one place that knows which backends exist.
 * Nothing here logs: a bad URL is reported through `why` to main(), which
 * prints it and exits, and backends log their own native errors.
 *
 * The writer (group commit): store_append_exchange_async() queues a copy
 * of the exchange; one thread per store takes whatever has gathered -
 * the queue fills while the previous batch commits, so no timer is needed
 * and a lone exchange waits for nothing - and hands it to the backend's
 * append_exchanges in one call. Under load a commit (the WAL append, the
 * page writes, the fsync) is paid once per batch instead of once per
 * exchange; idle, the cost is one thread hand-off.
 */
#include "store/store.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_out.h"
#include "store/backend.h"

#define WRITE_BATCH_MAX 256 /* exchanges handed to the backend at once */

/* One queued exchange, with copies of its strings after it. */
struct pending {
    struct pending *next;
    struct store_exchange x; /* points into data */
    store_written_fn done;
    void *arg;
    char data[];
};

struct store {
    const struct store_ops *ops; /* the backend's table */
    void *be;                    /* the backend's object, owned */

    pthread_t writer;
    bool writer_started;
    pthread_mutex_t lock;  /* guards the queue and stopping */
    pthread_cond_t cond;   /* signalled when the queue fills or on stop */
    struct pending *head;  /* queue, oldest first */
    struct pending **tail; /* where the next one goes */
    bool stopping;
};

struct scheme {
    const char *prefix;          /* what the URL starts with */
    const char *name;            /* backend name for messages */
    const struct store_ops *ops; /* NULL: not built */
    size_t skip;                 /* bytes of prefix dropped before open() */
};

#ifdef CHATD_HAVE_POSTGRESQL
#define POSTGRES_OPS (&store_postgres_ops)
#else
#define POSTGRES_OPS NULL
#endif
#ifdef CHATD_HAVE_MYSQL
#define MYSQL_OPS (&store_mysql_ops)
#else
#define MYSQL_OPS NULL
#endif

static const struct scheme schemes[] = {
    {"sqlite:", "sqlite", &store_sqlite_ops, sizeof "sqlite:" - 1},
    {"postgresql://", "postgresql", POSTGRES_OPS, 0},
    {"postgres://", "postgresql", POSTGRES_OPS, 0},
    {"mysql://", "mysql", MYSQL_OPS, 0},
};

void store_set_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

int64_t store_cutoff(int64_t now, int64_t ttl)
{
    int64_t c;
    if (__builtin_sub_overflow(now, ttl, &c))
        c = ttl > 0 ? INT64_MIN : INT64_MAX;
    return c;
}

const char *store_text(const char *s, size_t n, struct buf *tmp, size_t *out_n)
{
    if (!s || (!memchr(s, '\0', n) && utf8_valid(s, n))) {
        *out_n = s ? n : 0;
        return s ? s : "";
    }
    buf_reset(tmp);
    while (n) {
        bool complete;
        size_t ok = utf8_valid_prefix(s, n, &complete);
        const char *nul = memchr(s, '\0', ok);
        if (nul)
            ok = (size_t)(nul - s);
        buf_append(tmp, s, ok);
        s += ok;
        n -= ok;
        if (n) { /* a NUL, or one byte that is not part of valid UTF-8 */
            buf_append(tmp, "\xef\xbf\xbd", 3);
            s++;
            n--;
        }
    }
    *out_n = tmp->len;
    return tmp->len ? tmp->ptr : "";
}

/* The scheme of a URL we do not know, if it looks like one, for the error
 * message. Never the rest: a misspelt URL may still hold a password. */
static size_t scheme_len(const char *url)
{
    size_t n = 0;
    while (n < 16 &&
           ((url[n] >= 'a' && url[n] <= 'z') || (url[n] >= 'A' && url[n] <= 'Z') ||
            (url[n] >= '0' && url[n] <= '9') || url[n] == '+' || url[n] == '.' || url[n] == '-'))
        n++;
    return url[n] == ':' ? n : 0;
}

/* Writes one batch (at most WRITE_BATCH_MAX) and calls its callbacks. */
static void write_batch(struct store *st, struct pending *const *batch, size_t n)
{
    struct store_exchange xs[WRITE_BATCH_MAX];
    enum chatd_err errs[WRITE_BATCH_MAX];
    for (size_t i = 0; i < n; i++)
        xs[i] = batch[i]->x;
    if (st->ops->append_exchanges) {
        st->ops->append_exchanges(st->be, xs, n, errs);
    } else {
        for (size_t i = 0; i < n; i++)
            errs[i] = st->ops->append_exchange(st->be, &xs[i]);
    }
    for (size_t i = 0; i < n; i++)
        batch[i]->done(batch[i]->arg, errs[i]);
}

static void *writer_main(void *arg)
{
    struct store *st = arg;
    struct pending *batch[WRITE_BATCH_MAX];

    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (!st->head && !st->stopping)
            pthread_cond_wait(&st->cond, &st->lock);
        if (!st->head)
            break; /* stopping, and everything is written */
        size_t n = 0;
        while (st->head && n < WRITE_BATCH_MAX) {
            batch[n++] = st->head;
            st->head = st->head->next;
        }
        if (!st->head)
            st->tail = &st->head;
        pthread_mutex_unlock(&st->lock);
        write_batch(st, batch, n);
        for (size_t i = 0; i < n; i++)
            free(batch[i]);
        pthread_mutex_lock(&st->lock);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

void store_append_exchange_async(struct store *st, const struct store_exchange *x,
                                 store_written_fn done, void *arg)
{
    assert(x && x->conversation_id && (x->question || !x->question_len) &&
           (x->answer || !x->answer_len) && done);
    size_t idlen = strlen(x->conversation_id) + 1;
    struct pending *p = xmalloc(sizeof *p + idlen + x->question_len + x->answer_len);
    char *q = p->data + idlen, *a = q + x->question_len;
    memcpy(p->data, x->conversation_id, idlen);
    if (x->question_len)
        memcpy(q, x->question, x->question_len);
    if (x->answer_len)
        memcpy(a, x->answer, x->answer_len);
    p->next = NULL;
    p->x = *x;
    p->x.conversation_id = p->data;
    p->x.question = q;
    p->x.answer = a;
    p->done = done;
    p->arg = arg;

    pthread_mutex_lock(&st->lock);
    assert(!st->stopping);
    bool was_empty = !st->head;
    *st->tail = p;
    st->tail = &p->next;
    if (was_empty)
        pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

enum chatd_err store_open(const char *url, const struct store_options *opt, struct store **out,
                          char *why, size_t why_len)
{
    const struct scheme *sc = NULL;
    void *be = NULL;
    enum chatd_err err = CHATD_OK;

    assert(url && opt && out);
    *out = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0) {
            sc = &schemes[i];
            break;
        }
    }
    if (!sc) {
        size_t n = scheme_len(url);
        if (n)
            store_set_why(why, why_len,
                          "unsupported database url scheme '%.*s': expected sqlite:PATH, "
                          "postgresql://... or mysql://...",
                          (int)n, url);
        else
            store_set_why(why, why_len,
                          "unsupported database url: expected sqlite:PATH, postgresql://... or "
                          "mysql://...");
        err = CHATD_EINVAL;
        goto out;
    }
    if (!sc->ops) {
        store_set_why(why, why_len, "the %s backend is not built yet", sc->name);
        err = CHATD_ENOTBUILT;
        goto out;
    }
    if (url[sc->skip] == '\0') {
        store_set_why(why, why_len, "database url '%s' has no path: expected %sPATH", url,
                      sc->prefix);
        err = CHATD_EINVAL;
        goto out;
    }
    err = sc->ops->open(url + sc->skip, opt, &be, why, why_len);
    if (err)
        goto out;
    struct store *st = xcalloc(1, sizeof *st);
    st->ops = sc->ops;
    st->be = be;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, NULL);
    st->tail = &st->head;
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
        store_set_why(why, why_len, "cannot start the store's writer thread");
        store_free(st);
        err = CHATD_EINTERNAL;
        goto out;
    }
    pthread_setname_np(st->writer, "chatd-write");
    st->writer_started = true;
    *out = st;
out:
    return err;
}

void store_free(struct store *st)
{
    if (!st)
        return;
    if (st->writer_started) {
        pthread_mutex_lock(&st->lock);
        st->stopping = true;
        pthread_cond_signal(&st->cond);
        pthread_mutex_unlock(&st->lock);
        pthread_join(st->writer, NULL); /* after it wrote what was queued */
    }
    pthread_cond_destroy(&st->cond);
    pthread_mutex_destroy(&st->lock);
    st->ops->close(st->be);
    free(st);
}

const char *store_backend(const struct store *st)
{
    return st->ops->name;
}

enum chatd_err store_ping(struct store *st, char *why, size_t why_len)
{
    return st->ops->ping(st->be, why, why_len);
}

enum chatd_err store_conversation_get(struct store *st, const char *id, int64_t now, bool count,
                                      struct store_conversation *out)
{
    assert(id && out);
    if (strlen(id) > UUID_STR_LEN)
        return CHATD_ENOTFOUND; /* cannot be one of ours, nor fit in out->id */
    return st->ops->conversation_get(st->be, id, now, count, out);
}

enum chatd_err store_history_tail(struct store *st, const char *id, size_t n, store_message_fn fn,
                                  void *arg)
{
    assert(id && fn);
    if (n == 0)
        return CHATD_OK;
    return st->ops->history_tail(st->be, id, n, fn, arg);
}

enum chatd_err store_append_exchange(struct store *st, const struct store_exchange *x)
{
    assert(x && x->conversation_id && (x->question || !x->question_len) &&
           (x->answer || !x->answer_len));
    return st->ops->append_exchange(st->be, x);
}

enum chatd_err store_delete_conversation(struct store *st, const char *id, int64_t now)
{
    assert(id);
    if (strlen(id) > UUID_STR_LEN)
        return CHATD_ENOTFOUND; /* cannot be one of ours */
    return st->ops->delete_conversation(st->be, id, now);
}

enum chatd_err store_messages_after(struct store *st, const char *id, int64_t after_id,
                                    size_t limit, store_message_fn fn, void *arg, size_t *count)
{
    assert(id && fn && count);
    *count = 0;
    if (limit == 0)
        return CHATD_OK;
    return st->ops->messages_after(st->be, id, after_id, limit, fn, arg, count);
}

enum chatd_err store_conversations_after(struct store *st, int64_t after_created,
                                         const char *after_id, int64_t from, int64_t to,
                                         int64_t now, size_t limit, store_conversation_fn fn,
                                         void *arg, size_t *count)
{
    assert(after_id && fn && count);
    *count = 0;
    if (limit == 0)
        return CHATD_OK;
    return st->ops->conversations_after(st->be, after_created, after_id, from, to, now, limit, fn,
                                        arg, count);
}

enum chatd_err store_count_conversations(struct store *st, int64_t from, int64_t to, int64_t now,
                                         int64_t *out)
{
    assert(out);
    return st->ops->count_conversations(st->be, from, to, now, out);
}

enum chatd_err store_sweep_expired(struct store *st, int64_t now, store_deleted_fn deleted,
                                   void *arg, int64_t *n)
{
    assert(n);
    return st->ops->sweep_expired(st->be, now, deleted, arg, n);
}

enum chatd_err store_count_active(struct store *st, int64_t now, int64_t *out)
{
    assert(out);
    return st->ops->count_active(st->be, now, out);
}
