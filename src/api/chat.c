/*
 * chat.c - POST /api/chat and POST|GET /api/chat-stream (SPEC.md 1, 2).
 *
 * Both endpoints share the front half on the worker thread: validate the
 * request, find the conversation (unknown or expired id -> a new one),
 * read its last CHATD_HISTORY messages, and look the question up in the
 * cache. A miss becomes a struct chat handed to the LLM thread; the
 * connection is parked (never blocks a worker) until something happens:
 *
 *   /api/chat         the LLM thread collects the answer and resumes the
 *                     request when done; the worker hands the exchange to
 *                     the store's writer and parks the request again until
 *                     it is stored, then answers with one JSON body.
 *   /api/chat-stream  the request is resumed at the first piece of the
 *                     answer (so a failure before it is a plain HTTP
 *                     error), then becomes an SSE stream: the LLM thread
 *                     formats each piece as an event into the stream's
 *                     queue; at the end the stream's pull callback, on the
 *                     worker thread, hands the exchange to the writer and
 *                     sends `event: done` (or `event: error`) once it is
 *                     stored.
 *
 * A cache hit is stored too (SPEC.md), the same way: parked while the
 * writer stores it, then answered from the cached text. Exchanges reach
 * the database through store_append_exchange_async(), whose writer thread
 * commits everything that finished meanwhile in one transaction (group
 * commit); its callback resumes the parked request or wakes the stream.
 *
 * If the client goes away mid-answer, the request's done callback cancels
 * the upstream call at once and stores what was generated so far. The
 * struct chat is shared by the worker side, the LLM side and the writer,
 * guarded by its mutex and freed by whichever lets go last. Lock order:
 * chat, then stream (the stream's pull callback is called without the
 * stream lock), chat then server (the writer resumes a parked request
 * with the chat locked, so that the request's done callback, which takes
 * the chat lock and forgets the parked request, cannot free it meanwhile).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cache/cache.h"
#include "config.h"
#include "core/alloc.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "llm/client.h"
#include "store/store.h"

#define ANSWER_MAX       (8 * 1024 * 1024) /* bytes of answer kept */
#define STREAM_QUEUE_MAX (4 * 1024 * 1024) /* bytes queued for a slow client */

enum chat_state {
    CHAT_RUNNING,  /* the upstream is answering */
    CHAT_DONE,     /* the answer is complete */
    CHAT_FAILED,   /* upstream failure: nothing is stored */
    CHAT_STOPPED,  /* chatd is stopping: a stream stores what it has */
    CHAT_ABANDONED /* the client left: handled by the request's done callback */
};

enum chat_store {
    STORE_NONE,    /* not handed to the writer */
    STORE_PENDING, /* queued or being written */
    STORE_DONE     /* written, or failed: see store_err */
};

struct chat {
    struct app *app;
    pthread_mutex_t lock; /* guards everything below the line */
    unsigned refs;        /* the request side and the LLM side */
    bool streaming;       /* /api/chat-stream */
    char conv_id[UUID_STR_LEN + 1];
    char *question;
    size_t question_len;
    int64_t user_time; /* usec */
    struct llm_call *call;
    /* ---- */
    enum chat_state state;
    enum chatd_err err;
    char *err_msg;
    struct buf answer;           /* content so far */
    struct buf pending;          /* events formatted before the stream started */
    struct buf event;            /* the event being formatted (reused: no malloc per token) */
    struct http_request *parked; /* the request, while parked */
    struct http_stream *stream;  /* once the stream started */
    bool final_sent;             /* `event: done` / `event: error` queued */
    bool cached;                 /* the answer came from the cache */
    enum chat_store store;       /* where the exchange is on its way to the database */
    enum chatd_err store_err;    /* its result, once STORE_DONE */
};

/* ---- the request: validation, conversation, history ---- */

struct chat_input {
    struct str message;
    struct str conv_id; /* empty for a new conversation */
    json_t *json;       /* owns the strings above for a JSON body */
};

/* Fills in from the JSON body (POST) or the query string (GET). On bad
 * input answers the request and returns false. */
static bool read_input(struct http_request *req, struct chat_input *in)
{
    struct app *app = http_app(req);
    char msg[512];
    memset(in, 0, sizeof *in);
    if (http_method(req) == HTTP_GET) {
        if (!http_query(req, "message", &in->message)) {
            http_respond_error(req, CHATD_EINVAL, "missing query parameter 'message'");
            return false;
        }
        http_query(req, "conversation_id", &in->conv_id);
        if (!utf8_valid(in->message.ptr, in->message.len) ||
            memchr(in->message.ptr, '\0', in->message.len)) {
            http_respond_error(req, CHATD_EINVAL,
                               "query parameter 'message' is not valid UTF-8 text");
            return false;
        }
    } else {
        struct str body = http_body(req);
        json_error_t jerr;
        if (body.len == 0) {
            http_respond_error(req, CHATD_EINVAL,
                               "request body is empty: expected a JSON object with a 'message'");
            return false;
        }
        in->json = json_loadb(body.ptr, body.len, 0, &jerr);
        if (!in->json) {
            snprintf(msg, sizeof msg, "request body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
            http_respond_error(req, CHATD_EINVAL, msg);
            return false;
        }
        if (!json_is_object(in->json)) {
            http_respond_error(req, CHATD_EINVAL, "request body must be a JSON object");
            return false;
        }
        json_t *m = json_object_get(in->json, "message");
        if (!m) {
            http_respond_error(req, CHATD_EINVAL, "missing field 'message'");
            return false;
        }
        if (!json_is_string(m)) {
            http_respond_error(req, CHATD_EINVAL, "field 'message' must be a string");
            return false;
        }
        in->message = (struct str){json_string_value(m), json_string_length(m)};
        json_t *c = json_object_get(in->json, "conversation_id");
        if (c && !json_is_null(c)) {
            if (!json_is_string(c)) {
                http_respond_error(req, CHATD_EINVAL,
                                   "field 'conversation_id' must be a string or null");
                return false;
            }
            in->conv_id = (struct str){json_string_value(c), json_string_length(c)};
        }
    }
    if (in->message.len == 0) {
        http_respond_error(req, CHATD_EINVAL, "field 'message' must not be empty");
        return false;
    }
    if (in->message.len > app->cfg->max_message) {
        snprintf(msg, sizeof msg, "message of %zu bytes is larger than the limit of %zu bytes",
                 in->message.len, app->cfg->max_message);
        http_respond_error(req, CHATD_ETOOBIG, msg);
        return false;
    }
    return true;
}

struct history {
    struct llm_message *msgs;
    size_t n, cap;
};

static int collect_history(void *arg, const struct store_message *m)
{
    struct history *h = arg;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->msgs = xrealloc(h->msgs, h->cap * sizeof *h->msgs);
    }
    struct llm_message *dst = &h->msgs[h->n++];
    dst->role = xmemdup(m->role, m->role_len);
    dst->role_len = m->role_len;
    dst->content = xmemdup(m->content, m->content_len);
    dst->content_len = m->content_len;
    return 0;
}

static void history_release(struct history *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free((char *)h->msgs[i].role);
        free((char *)h->msgs[i].content);
    }
    free(h->msgs);
}

/* Finds the live conversation named by in (or picks a new id). On
 * failure answers the request and returns false. */
static bool find_conversation(struct http_request *req, const struct chat_input *in,
                              char id[UUID_STR_LEN + 1], bool *existing)
{
    struct app *app = http_app(req);
    *existing = false;
    char want[UUID_STR_LEN + 1];
    if (uuid_normalize(in->conv_id.ptr, in->conv_id.len, want)) {
        struct store_conversation conv;
        enum chatd_err err =
            store_conversation_get(app->store, want, time_now_usec(), false, &conv);
        if (err == CHATD_OK) {
            memcpy(id, want, sizeof want);
            *existing = true;
        }
        if (err && err != CHATD_ENOTFOUND) {
            api_store_error(req, err, "");
            return false;
        }
    }
    if (!*existing && uuid_v4(id) != CHATD_OK) {
        http_respond_error(req, CHATD_EINTERNAL, "cannot generate a conversation id");
        return false;
    }
    return true;
}

/* ---- storing: see submit_store() below ---- */

static void chat_unref(struct chat *c);

/* ---- formatting ---- */

static void format_success(struct buf *b, const char *answer, size_t alen, const char *conv_id,
                           bool cached)
{
    buf_append_str(b, "{");
    json_out_kv_str(b, true, "status", "success", 7);
    json_out_kv_str(b, false, "response", answer, alen);
    json_out_kv_str(b, false, "conversation_id", conv_id, UUID_STR_LEN);
    json_out_kv_bool(b, false, "cached", cached);
    buf_append_str(b, "}");
}

static void format_piece(struct buf *b, enum upstream_delta kind, const char *text, size_t len)
{
    buf_append_str(b, "data: {");
    json_out_kv_str(b, true, kind == UPSTREAM_CONTENT ? "content" : "reasoning", text, len);
    buf_append_str(b, "}\n\n");
}

static void format_done(struct buf *b, const char *conv_id, bool cached)
{
    buf_append_str(b, "event: done\ndata: {");
    json_out_kv_str(b, true, "conversation_id", conv_id, UUID_STR_LEN);
    json_out_kv_bool(b, false, "cached", cached);
    buf_append_str(b, "}\n\n");
}

static void format_error_event(struct buf *b, const char *message)
{
    buf_append_str(b, "event: error\ndata: {");
    json_out_kv_str(b, true, "message", message, strlen(message));
    buf_append_str(b, "}\n\n");
}

/* ---- the shared chat object ---- */

/* refs: how many sides hold it - the request, and the LLM side if the
 * model is asked (a cache hit has none). */
static struct chat *chat_new(struct app *app, unsigned refs, bool streaming, const char *conv_id,
                             struct str question, int64_t user_time)
{
    struct chat *c = xcalloc(1, sizeof *c);
    c->app = app;
    pthread_mutex_init(&c->lock, NULL);
    c->refs = refs;
    c->streaming = streaming;
    memcpy(c->conv_id, conv_id, UUID_STR_LEN + 1);
    c->question = xmemdup(question.ptr, question.len);
    c->question_len = question.len;
    c->user_time = user_time;
    c->state = CHAT_RUNNING;
    buf_init(&c->answer, ANSWER_MAX);
    buf_init(&c->pending, STREAM_QUEUE_MAX);
    return c;
}

static void chat_unref(struct chat *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned refs = --c->refs;
    pthread_mutex_unlock(&c->lock);
    if (refs)
        return;
    llm_call_release(c->call);
    http_stream_release(c->stream);
    buf_release(&c->answer);
    buf_release(&c->pending);
    buf_release(&c->event);
    free(c->err_msg);
    free(c->question);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Moves a running chat to a final state; the caller holds the lock. */
static void settle(struct chat *c, enum chat_state state, enum chatd_err err, const char *msg)
{
    if (c->state != CHAT_RUNNING)
        return;
    c->state = state;
    c->err = err;
    if (msg)
        c->err_msg = xstrdup(msg);
}

/* Writer thread: the exchange is stored (or not). Resumes the parked
 * request with the chat locked (see the lock order at the top). */
static void on_stored(void *arg, enum chatd_err err)
{
    struct chat *c = arg;
    if (err)
        log_error("chat: cannot store the exchange of conversation %s: %s", c->conv_id,
                  chatd_strerror(err));
    pthread_mutex_lock(&c->lock);
    c->store = STORE_DONE;
    c->store_err = err;
    if (c->parked) {
        http_resume(c->parked);
        c->parked = NULL;
    }
    if (c->stream)
        http_stream_wake(c->stream);
    pthread_mutex_unlock(&c->lock);
    chat_unref(c);
}

/* Hands the exchange (the answer as it is now: the caller has seen a final
 * state, so it no longer changes) to the store's writer, once. If req is
 * given it is parked until on_stored() and resumed into `resumed`.
 * Returns false if it was handed over before. */
static bool submit_store(struct chat *c, struct http_request *req, http_handler_fn resumed)
{
    pthread_mutex_lock(&c->lock);
    if (c->store != STORE_NONE) {
        pthread_mutex_unlock(&c->lock);
        return false;
    }
    c->store = STORE_PENDING;
    c->refs++; /* the writer's */
    if (req) {
        c->parked = req;
        http_defer(req, resumed);
    }
    pthread_mutex_unlock(&c->lock);

    int64_t now = time_now_usec();
    struct store_exchange x = {
        .conversation_id = c->conv_id,
        .question = c->question,
        .question_len = c->question_len,
        .answer = buf_str(&c->answer).ptr,
        .answer_len = c->answer.len,
        .user_time = c->user_time,
        .answer_time = now > c->user_time ? now : c->user_time + 1,
    };
    store_append_exchange_async(c->app->store, &x, on_stored, c);
    return true;
}

/* Takes the parked request, if any, for resuming after the lock is let go. */
static struct http_request *take_parked(struct chat *c)
{
    struct http_request *req = c->parked;
    c->parked = NULL;
    return req;
}

/* LLM thread: a piece of the answer. */
static void on_delta(void *arg, enum upstream_delta kind, const char *text, size_t len)
{
    struct chat *c = arg;
    struct http_request *wake = NULL;
    struct buf *ev = &c->event;
    pthread_mutex_lock(&c->lock);
    if (c->state != CHAT_RUNNING)
        goto out;
    if (kind == UPSTREAM_CONTENT && buf_append(&c->answer, text, len) != CHATD_OK) {
        settle(c, CHAT_FAILED, CHATD_EUPSTREAM, "the answer is larger than chatd accepts");
        llm_cancel(c->call);
        wake = take_parked(c);
        if (c->stream)
            http_stream_wake(c->stream);
        goto out;
    }
    if (!c->streaming)
        goto out;
    buf_reset(ev);
    format_piece(ev, kind, text, len);
    if (c->stream) {
        enum chatd_err err = http_stream_write(c->stream, ev->ptr, ev->len);
        if (err == CHATD_ETOOBIG) {
            settle(c, CHAT_FAILED, CHATD_EUPSTREAM,
                   "the client does not read the stream fast enough");
            llm_cancel(c->call);
            http_stream_end(c->stream, false);
        }
    } else if (buf_append(&c->pending, ev->ptr, ev->len) == CHATD_OK) {
        wake = take_parked(c); /* the first piece: start the stream */
    }
out:
    pthread_mutex_unlock(&c->lock);
    if (wake)
        http_resume(wake);
}

/* LLM thread: the end of the answer. */
static void on_done(void *arg, enum chatd_err err, const char *message)
{
    struct chat *c = arg;
    struct http_request *wake = NULL;
    pthread_mutex_lock(&c->lock);
    if (err == CHATD_OK)
        settle(c, CHAT_DONE, CHATD_OK, NULL);
    else if (err == CHATD_ECANCELLED)
        settle(c, CHAT_STOPPED, CHATD_EDB, message); /* only chatd cancels; see on_request_done */
    else
        settle(c, CHAT_FAILED, err, message);
    wake = take_parked(c);
    if (c->stream)
        http_stream_wake(c->stream);
    pthread_mutex_unlock(&c->lock);
    if (wake)
        http_resume(wake);
    chat_unref(c);
}

static const struct llm_callbacks chat_callbacks = {.delta = on_delta, .done = on_done};

/* Worker thread: the request is over (answered, or the client left). */
static void on_request_done(void *arg, bool ok)
{
    struct chat *c = arg;
    bool store_partial = false, cancel = false;
    (void)ok;
    pthread_mutex_lock(&c->lock);
    c->parked = NULL; /* the request is going: nobody may resume it now */
    if (c->state == CHAT_RUNNING) {
        /* The client left mid-answer: stop the upstream, keep what came. */
        c->state = CHAT_ABANDONED;
        cancel = true;
        store_partial = c->answer.len > 0;
    } else if ((c->state == CHAT_DONE || c->state == CHAT_STOPPED) && c->streaming &&
               c->answer.len > 0) {
        store_partial = true; /* it ended just as the client left */
    }
    pthread_mutex_unlock(&c->lock);
    if (cancel)
        llm_cancel(c->call);
    /* The state is final: nobody writes the answer any more. */
    if (store_partial && submit_store(c, NULL, NULL))
        log_info("chat: client left conversation %s mid-answer; storing %zu bytes of it",
                 c->conv_id, c->answer.len);
    chat_unref(c);
}

/* ---- /api/chat ---- */

static void chat_request_resumed(struct http_request *req);

/* Stores, caches and answers a finished /api/chat exchange. */
static void chat_answer(struct http_request *req, struct chat *c)
{
    struct app *app = c->app;
    pthread_mutex_lock(&c->lock);
    enum chat_state state = c->state;
    enum chat_store stored = c->store;
    enum chatd_err store_err = c->store_err;
    c->parked = NULL; /* resumed: by its waker, or by the server stopping */
    pthread_mutex_unlock(&c->lock);
    if (state == CHAT_RUNNING) {
        /* Resumed without an answer: the server is stopping. */
        llm_cancel(c->call);
        http_respond_error(req, CHATD_EDB, "chatd is shutting down");
        return;
    }
    if (state != CHAT_DONE) {
        http_respond_error(req, state == CHAT_STOPPED ? CHATD_EDB : c->err,
                           c->err_msg ? c->err_msg : "the model failed");
        return;
    }
    if (stored == STORE_NONE) {
        submit_store(c, req, chat_request_resumed);
        return;
    }
    if (stored == STORE_PENDING) {
        /* Resumed before the writer was done: the server is stopping. */
        http_respond_error(req, CHATD_EDB, "chatd is shutting down");
        return;
    }
    if (store_err) {
        api_store_error(req, store_err, "");
        return;
    }
    if (!c->cached)
        cache_put(app->cache, c->conv_id, c->question, c->question_len, buf_str(&c->answer).ptr,
                  c->answer.len, time_now_usec());
    struct buf b = BUF_INIT;
    format_success(&b, buf_str(&c->answer).ptr, c->answer.len, c->conv_id, c->cached);
    http_respond_json(req, 200, &b);
}

/* ---- /api/chat-stream ---- */

/* Worker thread, when the stream's queue is empty. */
static ssize_t stream_pull(void *arg, char *out, size_t max)
{
    struct chat *c = arg;
    struct buf ev = BUF_INIT;
    pthread_mutex_lock(&c->lock);
    enum chat_state state = c->state;
    bool final_sent = c->final_sent;
    pthread_mutex_unlock(&c->lock);
    if (final_sent)
        return HTTP_PULL_END;
    if (state == CHAT_RUNNING || state == CHAT_ABANDONED)
        return 0;

    /* The state is final: the answer no longer changes. */
    if (state == CHAT_DONE || (state == CHAT_STOPPED && c->answer.len > 0)) {
        if (submit_store(c, NULL, NULL))
            return 0; /* on_stored() wakes the stream */
        pthread_mutex_lock(&c->lock);
        enum chat_store stored = c->store;
        enum chatd_err err = c->store_err;
        pthread_mutex_unlock(&c->lock);
        if (stored != STORE_DONE)
            return 0;
        if (state == CHAT_STOPPED)
            format_error_event(&ev, "chatd is shutting down; the answer so far was stored");
        else if (err)
            format_error_event(&ev, "database unavailable: the answer was not stored");
        else {
            cache_put(c->app->cache, c->conv_id, c->question, c->question_len,
                      buf_str(&c->answer).ptr, c->answer.len, time_now_usec());
            format_done(&ev, c->conv_id, false);
        }
    } else {
        format_error_event(&ev, c->err_msg ? c->err_msg : "the model failed");
    }
    pthread_mutex_lock(&c->lock);
    c->final_sent = true;
    pthread_mutex_unlock(&c->lock);
    size_t n = ev.len < max ? ev.len : max; /* final events are far below a block */
    memcpy(out, ev.ptr, n);
    buf_release(&ev);
    return (ssize_t)n;
}

/* Starts the SSE response. With a chat, the chat keeps the stream and
 * its pending events go first; without one (a cache hit) the caller gets
 * the stream and must release it. */
static struct http_stream *start_stream(struct http_request *req, const char *conv_id,
                                        struct chat *c)
{
    http_add_header(req, "X-Conversation-Id", conv_id);
    struct http_stream_options opt = {
        .content_type = "text/event-stream; charset=utf-8",
        .queue_max = STREAM_QUEUE_MAX,
        .heartbeat = true,
        .block = 1024, /* events are small, and there are thousands of streams */
        .pull = c ? stream_pull : NULL,
        .pull_arg = c,
    };
    struct http_stream *s = http_respond_stream(req, &opt);
    if (!c)
        return s;
    pthread_mutex_lock(&c->lock);
    c->stream = s;
    if (c->pending.len)
        http_stream_write(s, c->pending.ptr, c->pending.len);
    buf_release(&c->pending);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Worker thread: the first piece arrived, or the call ended before it. */
static void stream_resumed(struct http_request *req)
{
    struct chat *c = http_data(req);
    pthread_mutex_lock(&c->lock);
    enum chat_state state = c->state;
    bool have_piece = c->pending.len > 0;
    pthread_mutex_unlock(&c->lock);
    if (!have_piece && state == CHAT_RUNNING) {
        /* Resumed with nothing to say: the server is stopping. */
        llm_cancel(c->call);
        http_respond_error(req, CHATD_EDB, "chatd is shutting down");
        return;
    }
    if (!have_piece && state != CHAT_DONE) {
        http_respond_error(req, state == CHAT_STOPPED ? CHATD_EDB : c->err,
                           c->err_msg ? c->err_msg : "the model failed");
        return;
    }
    start_stream(req, c->conv_id, c);
}

/* Worker thread: a cached answer to /api/chat-stream is stored (or the
 * server is stopping). The whole answer goes out as one piece. */
static void cached_stream_resumed(struct http_request *req)
{
    struct chat *c = http_data(req);
    pthread_mutex_lock(&c->lock);
    enum chat_store stored = c->store;
    enum chatd_err err = c->store_err;
    c->parked = NULL;
    pthread_mutex_unlock(&c->lock);
    if (stored != STORE_DONE) {
        http_respond_error(req, CHATD_EDB, "chatd is shutting down");
        return;
    }
    if (err) {
        api_store_error(req, err, "");
        return;
    }
    struct buf body = BUF_INIT;
    struct http_stream *s = start_stream(req, c->conv_id, NULL);
    format_piece(&body, UPSTREAM_CONTENT, buf_str(&c->answer).ptr, c->answer.len);
    format_done(&body, c->conv_id, true);
    http_stream_write(s, body.ptr, body.len);
    http_stream_end(s, true);
    http_stream_release(s);
    buf_release(&body);
}

/* Worker thread: the /api/chat answer is complete (or failed), or stored. */
static void chat_request_resumed(struct http_request *req)
{
    chat_answer(req, http_data(req));
}

/* ---- the shared front half ---- */

static void handle(struct http_request *req, bool streaming)
{
    struct app *app = http_app(req);
    struct chat_input in;
    struct history h = {0};
    char conv_id[UUID_STR_LEN + 1];
    bool existing;
    struct buf b = BUF_INIT;
    int64_t user_time = time_now_usec();

    if (!read_input(req, &in) || !find_conversation(req, &in, conv_id, &existing))
        goto out;

    /* The cache: same question, same conversation, within the TTL. The
     * exchange is stored like any other before the answer goes out. */
    if (existing && cache_get(app->cache, conv_id, in.message.ptr, in.message.len, user_time, &b)) {
        struct chat *c =
            chat_new(app, 1, streaming, conv_id, in.message, user_time); /* no LLM side */
        c->state = CHAT_DONE;
        c->cached = true;
        buf_release(&c->answer);
        c->answer = b;
        b = (struct buf)BUF_INIT;
        http_set_data(req, c, on_request_done);
        submit_store(c, req, streaming ? cached_stream_resumed : chat_request_resumed);
        goto out;
    }

    /* A miss: ask the model with the history, the question last. */
    if (existing && app->cfg->history) {
        enum chatd_err err =
            store_history_tail(app->store, conv_id, app->cfg->history, collect_history, &h);
        if (err) {
            api_store_error(req, err, "");
            goto out;
        }
    }
    if (h.n == h.cap) {
        h.cap = h.cap ? h.cap + 1 : 1;
        h.msgs = xrealloc(h.msgs, h.cap * sizeof *h.msgs);
    }
    h.msgs[h.n++] = (struct llm_message){xstrdup("user"), 4,
                                         xmemdup(in.message.ptr, in.message.len), in.message.len};
    struct chat *c = chat_new(app, 2, streaming, conv_id, in.message, user_time);
    http_set_data(req, c, on_request_done);
    c->parked = req;
    http_defer(req, streaming ? stream_resumed : chat_request_resumed);
    struct llm_call *call = NULL;
    enum chatd_err err = llm_submit(app->llm, h.msgs, h.n, streaming, &chat_callbacks, c, &call);
    pthread_mutex_lock(&c->lock);
    c->call = call;
    pthread_mutex_unlock(&c->lock);
    if (err) {
        /* No callback will run: settle and wake the request ourselves. */
        pthread_mutex_lock(&c->lock);
        settle(c, CHAT_FAILED, CHATD_EDB, "chatd is shutting down");
        struct http_request *wake = take_parked(c);
        pthread_mutex_unlock(&c->lock);
        chat_unref(c); /* the LLM side's reference */
        if (wake)
            http_resume(wake);
    }
out:
    history_release(&h);
    buf_release(&b);
    json_decref(in.json);
}

void api_chat(struct http_request *req)
{
    handle(req, false);
}

void api_chat_stream(struct http_request *req)
{
    handle(req, true);
}
