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
 */
#include "store/store.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"

struct store {
    const struct store_ops *ops; /* the backend's table */
    void *be;                    /* the backend's object, owned */
};

struct scheme {
    const char *prefix;          /* what the URL starts with */
    const char *name;            /* backend name for messages */
    const struct store_ops *ops; /* NULL: not built */
    size_t skip;                 /* bytes of prefix dropped before open() */
};

#ifdef CHATD_WITH_MYSQL
#define MYSQL_OPS (&store_mysql_ops)
#else
#define MYSQL_OPS NULL
#endif

static const struct scheme schemes[] = {
    {"sqlite:", "sqlite", &store_sqlite_ops, sizeof "sqlite:" - 1},
#ifdef CHATD_HAVE_POSTGRESQL
    {"postgresql://", "postgresql", &store_postgres_ops, 0},
    {"postgres://", "postgresql", &store_postgres_ops, 0},
#else
    {"postgresql://", "postgresql", NULL, 0},
    {"postgres://", "postgresql", NULL, 0},
#endif
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
    struct store *st = xmalloc(sizeof *st);
    st->ops = sc->ops;
    st->be = be;
    *out = st;
out:
    return err;
}

void store_free(struct store *st)
{
    if (!st)
        return;
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
    return st->ops->conversation_get(st->be, id, now, count, out);
}

enum chatd_err store_history_tail(struct store *st, const char *id, size_t n, store_message_fn fn,
                                  void *arg)
{
    assert(id && fn);
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
    return st->ops->delete_conversation(st->be, id, now);
}

enum chatd_err store_messages_after(struct store *st, const char *id, int64_t after_id,
                                    size_t limit, store_message_fn fn, void *arg, size_t *count)
{
    assert(id && fn && count);
    return st->ops->messages_after(st->be, id, after_id, limit, fn, arg, count);
}

enum chatd_err store_conversations_after(struct store *st, int64_t after_created,
                                         const char *after_id, int64_t from, int64_t to,
                                         int64_t now, size_t limit, store_conversation_fn fn,
                                         void *arg, size_t *count)
{
    assert(after_id && fn && count);
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
