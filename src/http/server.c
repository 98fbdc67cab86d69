/*
 * server.c - the HTTP layer on libmicrohttpd 0.9.75 (see server.h).
 *
 * Design, and the pitfalls it avoids (shared/notes/libraries.md section 8):
 *   - epoll thread pool with MHD_ALLOW_SUSPEND_RESUME; the connection limit
 *     is set explicitly from RLIMIT_NOFILE, raised to its hard limit (MHD's
 *     default would stop at 1020);
 *   - an idle timeout for ordinary connections, none for streams;
 *   - early answers (preflight, 404, 405, 413) are queued on the first
 *     call of the access handler, so no body is read for them;
 *   - a streaming response is a byte queue drained by a content reader
 *     that suspends the connection when the queue is empty (returning 0
 *     without suspending would spin) and is resumed by the producer. The
 *     `suspended` flag lives under the stream's mutex, so a connection is
 *     never resumed unless it is suspended, and never after the request
 *     is over (conn is cleared then). Lock order: MHD's response mutex,
 *     then the stream's, then MHD's internal ones;
 *   - a suspended connection cannot notice its client leaving, so SSE
 *     streams get a ": ping" comment when idle for 15 s; the failed write
 *     then ends the request;
 *   - shutdown resumes every suspended connection before stopping MHD.
 * One struct http_request owns everything a request allocates; it is
 * created on the first call of the access handler and freed in the
 * completion callback, after the access-log line.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"

#define MAX_PARAMS        4
#define MAX_HEADERS       8
#define HEARTBEAT_USEC    (15 * USEC_PER_SEC)
#define FD_RESERVE        128 /* descriptors kept for files, the database, epoll, eventfds */
#define STREAM_BLOCK      (16 * 1024)
#define RESUME_BATCH_USEC 5000 /* how long wake-ups are collected before resuming */
#define ALLOWED_METHODS   "GET, POST, DELETE, OPTIONS"
#define ALLOWED_HEADERS   "Content-Type, Authorization, Range, If-None-Match, Last-Event-ID"
#define EXPOSED_HEADERS                                                                            \
    "X-Conversation-Id, X-Export-File, Content-Disposition, Content-Length, ETag"

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_options opt;
    unsigned port;
    pthread_mutex_t lock;          /* guards everything below */
    struct http_request *requests; /* live requests, doubly linked */
    struct http_stream *beating;   /* live streams that want heartbeats */
    size_t active;                 /* live requests */
    bool stopping;
    pthread_cond_t tick;
    pthread_t ticker;
    bool ticker_started;
    /* Streams to resume, collected for a few ms and resumed together:
     * each resume makes libmicrohttpd's worker walk its whole list of
     * suspended connections, so one walk per batch instead of one per
     * token. A leaf lock: nothing else is taken while holding it. */
    pthread_mutex_t rq_lock;
    pthread_cond_t rq_cond;
    struct http_stream *rq; /* singly linked through rq_next */
    bool rq_stopping;
    pthread_t resumer;
    bool resumer_started;
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct http_request *prev, *next; /* srv->requests */
    const struct http_route *route;
    unsigned allowed; /* methods of routes whose pattern matched */
    enum http_method method;
    char method_name[12];
    char *path;
    size_t param_off[MAX_PARAMS];
    size_t param_len[MAX_PARAMS];
    struct buf body;
    bool body_too_big;
    bool dispatched; /* the route's handler has run */
    bool answered;   /* a response is queued */
    bool deferred;   /* parked; resumed() runs when resumed */
    bool suspended;  /* deferred and not yet resumed; under srv->lock */
    http_handler_fn resumed;
    int status;
    uint64_t bytes;  /* body bytes of a complete response */
    int64_t started; /* monotonic usec */
    struct http_stream *stream;
    void *data;
    void (*done)(void *data, bool ok);
    char *hdr_name[MAX_HEADERS];
    char *hdr_value[MAX_HEADERS];
    size_t nhdr;
};

struct http_stream {
    struct http_server *srv;
    struct MHD_Connection *conn; /* NULL once the request is over */
    pthread_mutex_t lock;        /* guards everything below */
    unsigned refs;               /* producer, response, request */
    struct buf queue;            /* bytes not yet handed to MHD */
    bool suspended;              /* the reader suspended the connection */
    bool wake;                   /* something happened since the last pull */
    bool ended;                  /* no more bytes after the queue */
    bool ok;                     /* ...and the response is complete */
    bool closed;                 /* the request is over */
    bool heartbeat;
    bool resume_queued; /* on srv->rq (holding a reference) */
    struct http_stream *rq_next;
    int64_t last_write; /* monotonic usec */
    uint64_t sent;      /* bytes handed to MHD */
    http_pull_fn pull;
    void *pull_arg;
    struct http_stream *hb_prev, *hb_next; /* srv->beating, if heartbeat */
};

int http_status_for(enum chatd_err err)
{
    switch (err) {
    case CHATD_OK:
        return 200;
    case CHATD_EINVAL:
        return 400;
    case CHATD_EUNAUTH:
        return 401;
    case CHATD_ENOTFOUND:
        return 404;
    case CHATD_EMETHOD:
        return 405;
    case CHATD_ETOOBIG:
        return 413;
    case CHATD_ERATE:
        return 429;
    case CHATD_EUPSTREAM:
        return 502;
    case CHATD_EDB:
        return 503;
    case CHATD_ETIMEOUT:
        return 504;
    case CHATD_EIO:
    case CHATD_ECLOSED:
    case CHATD_ECANCELLED:
    case CHATD_ENOTBUILT:
    case CHATD_EINTERNAL:
        return 500;
    }
    return 500;
}

static enum http_method parse_method(const char *m)
{
    static const struct {
        const char *name;
        enum http_method method;
    } methods[] = {
        {"GET", HTTP_GET},     {"HEAD", HTTP_HEAD},     {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},     {"DELETE", HTTP_DELETE}, {"OPTIONS", HTTP_OPTIONS},
        {"PATCH", HTTP_PATCH},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(m, methods[i].name) == 0)
            return methods[i].method;
    return HTTP_OTHER;
}

/* Matches path against pattern segment by segment; fills the params. */
static bool route_match(const char *pattern, const char *path, size_t path_len,
                        struct http_request *req)
{
    size_t np = 0, i = 0;
    const char *p = pattern;
    while (*p) {
        if (*p != '/' || i >= path_len || path[i] != '/')
            return false;
        p++;
        i++;
        const char *pend = strchr(p, '/');
        size_t plen = pend ? (size_t)(pend - p) : strlen(p);
        size_t start = i;
        while (i < path_len && path[i] != '/')
            i++;
        size_t slen = i - start;
        if (plen == 1 && p[0] == '*') {
            if (slen == 0 || np >= MAX_PARAMS)
                return false;
            req->param_off[np] = start;
            req->param_len[np] = slen;
            np++;
        } else if (plen != slen || memcmp(p, path + start, slen) != 0) {
            return false;
        }
        p += plen;
    }
    return i == path_len;
}

/* ---- responses ---- */

static void add_common_headers(struct http_request *req, struct MHD_Response *r)
{
    MHD_add_response_header(r, "Access-Control-Allow-Origin", req->srv->opt.cors_origin);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", EXPOSED_HEADERS);
    for (size_t i = 0; i < req->nhdr; i++)
        MHD_add_response_header(r, req->hdr_name[i], req->hdr_value[i]);
}

static void queue(struct http_request *req, int status, struct MHD_Response *r)
{
    if (req->answered) {
        log_error("http: %s %s: answered twice (bug)", req->method_name, req->path);
        MHD_destroy_response(r);
        return;
    }
    add_common_headers(req, r);
    req->answered = true;
    req->status = status;
    if (MHD_queue_response(req->conn, (unsigned)status, r) != MHD_YES)
        log_warn("http: cannot queue the %d response to %s %s", status, req->method_name,
                 req->path);
    MHD_destroy_response(r);
}

/* Queues a response with a body of len bytes, labelled content_type. */
static void queue_body(struct http_request *req, int status, const char *content_type,
                       struct MHD_Response *r, uint64_t len)
{
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    req->bytes = len;
    queue(req, status, r);
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
    if (req->nhdr == MAX_HEADERS) {
        log_error("http: too many response headers for %s (bug)", req->path);
        return;
    }
    req->hdr_name[req->nhdr] = xstrdup(name);
    req->hdr_value[req->nhdr] = xstrdup(value);
    req->nhdr++;
}

void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    queue_body(req, status, content_type, r, len);
}

void http_respond_static(struct http_request *req, int status, const char *content_type,
                         const void *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    queue_body(req, status, content_type, r, len);
}

bool http_etag_match(const struct http_request *req, const char *etag)
{
    const char *h = http_header(req, "If-None-Match");
    size_t n = strlen(etag);
    if (!h)
        return false;
    for (;;) {
        while (*h == ' ' || *h == '\t' || *h == ',')
            h++;
        if (!*h)
            return false;
        if (*h == '*')
            return true;
        if (strncmp(h, "W/", 2) == 0)
            h += 2;
        if (strncmp(h, etag, n) == 0 && (h[n] == '\0' || h[n] == ',' || h[n] == ' '))
            return true;
        const char *next = strchr(h, ',');
        if (!next)
            return false;
        h = next;
    }
}

void http_respond_json(struct http_request *req, int status, struct buf *b)
{
    size_t len = b->len;
    char *body = buf_take(b);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    queue_body(req, status, "application/json; charset=utf-8", r, len);
}

void http_respond_file(struct http_request *req, int status, const char *content_type, int fd,
                       uint64_t offset, uint64_t len)
{
    struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, offset);
    if (!r) {
        close(fd);
        http_respond_error(req, CHATD_EINTERNAL, "cannot send the file");
        return;
    }
    queue_body(req, status, content_type, r, len);
}

void http_respond_error_status(struct http_request *req, int status, const char *message)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "{");
    json_out_kv_str(&b, true, "status", "error", 5);
    json_out_kv_str(&b, false, "message", message, strlen(message));
    buf_append_str(&b, "}");
    http_respond_json(req, status, &b);
}

void http_respond_error(struct http_request *req, enum chatd_err err, const char *message)
{
    http_respond_error_status(req, http_status_for(err), message);
}

static void respond_preflight(struct http_request *req)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", ALLOWED_METHODS);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", ALLOWED_HEADERS);
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    queue(req, 204, r);
}

static void respond_method_not_allowed(struct http_request *req, unsigned allowed)
{
    static const struct {
        enum http_method m;
        const char *name;
    } names[] = {{HTTP_GET, "GET"}, {HTTP_HEAD, "HEAD"},     {HTTP_POST, "POST"},
                 {HTTP_PUT, "PUT"}, {HTTP_DELETE, "DELETE"}, {HTTP_PATCH, "PATCH"}};
    struct buf allow = BUF_INIT;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (allowed & names[i].m) {
            buf_append_str(&allow, allow.len ? ", " : "");
            buf_append_str(&allow, names[i].name);
        }
    }
    buf_append_str(&allow, ", OPTIONS");
    http_add_header(req, "Allow", allow.ptr);
    struct buf msg = BUF_INIT;
    buf_appendf(&msg, "method %s is not allowed on %s (allowed: %s)", req->method_name, req->path,
                allow.ptr);
    http_respond_error(req, CHATD_EMETHOD, msg.ptr);
    buf_release(&allow);
    buf_release(&msg);
}

/* ---- deferral ---- */

void http_defer(struct http_request *req, http_handler_fn resumed)
{
    struct http_server *srv = req->srv;
    req->deferred = true;
    req->resumed = resumed;
    pthread_mutex_lock(&srv->lock);
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    pthread_mutex_unlock(&srv->lock);
}

void http_resume(struct http_request *req)
{
    struct http_server *srv = req->srv;
    pthread_mutex_lock(&srv->lock);
    if (req->suspended) {
        req->suspended = false;
        MHD_resume_connection(req->conn);
    }
    pthread_mutex_unlock(&srv->lock);
}

/* ---- streams ---- */

/* Resumes the stream's connection if it sleeps. The caller holds s->lock. */
static void stream_resume_locked(struct http_stream *s)
{
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* Wakes the reader: if it sleeps, queue the connection for the resumer.
 * The caller holds s->lock. */
static void stream_wake_locked(struct http_stream *s)
{
    s->wake = true;
    if (!s->suspended || !s->conn || s->resume_queued)
        return;
    struct http_server *srv = s->srv;
    s->resume_queued = true;
    s->refs++; /* the queue's reference */
    pthread_mutex_lock(&srv->rq_lock);
    bool first = !srv->rq;
    s->rq_next = srv->rq;
    srv->rq = s;
    if (first)
        pthread_cond_signal(&srv->rq_cond);
    pthread_mutex_unlock(&srv->rq_lock);
}

static void stream_unref(struct http_stream *s);

/* Resumes queued streams in batches (see struct http_server). */
static void *resumer_main(void *arg)
{
    struct http_server *srv = arg;
    pthread_mutex_lock(&srv->rq_lock);
    for (;;) {
        while (!srv->rq && !srv->rq_stopping)
            pthread_cond_wait(&srv->rq_cond, &srv->rq_lock);
        if (!srv->rq && srv->rq_stopping)
            break;
        if (!srv->rq_stopping) {
            /* Let more wake-ups gather. */
            pthread_mutex_unlock(&srv->rq_lock);
            struct timespec ts = {0, RESUME_BATCH_USEC * 1000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&srv->rq_lock);
        }
        struct http_stream *list = srv->rq;
        srv->rq = NULL;
        pthread_mutex_unlock(&srv->rq_lock);
        while (list) {
            struct http_stream *s = list;
            list = s->rq_next;
            pthread_mutex_lock(&s->lock);
            s->resume_queued = false;
            stream_resume_locked(s);
            pthread_mutex_unlock(&s->lock);
            stream_unref(s);
        }
        pthread_mutex_lock(&srv->rq_lock);
    }
    pthread_mutex_unlock(&srv->rq_lock);
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct http_stream *s = cls;
    (void)pos;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (s->queue.len) {
            size_t n = s->queue.len < max ? s->queue.len : max;
            memcpy(out, s->queue.ptr, n);
            buf_consume(&s->queue, n);
            s->sent += n;
            pthread_mutex_unlock(&s->lock);
            return (ssize_t)n;
        }
        if (s->ended) {
            bool ok = s->ok;
            pthread_mutex_unlock(&s->lock);
            return ok ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (s->pull) {
            s->wake = false;
            pthread_mutex_unlock(&s->lock);
            ssize_t r = s->pull(s->pull_arg, out, max);
            pthread_mutex_lock(&s->lock);
            if (r > 0 && s->queue.len) {
                /* A producer queued bytes while pull ran: they were there
                 * first, so pull's bytes go behind them (past the cap: they
                 * are already made). */
                size_t cap = s->queue.max;
                s->queue.max = 0;
                buf_append(&s->queue, out, (size_t)r);
                s->queue.max = cap;
                continue;
            }
            if (r > 0) {
                s->sent += (uint64_t)r;
                s->last_write = time_mono_usec();
                pthread_mutex_unlock(&s->lock);
                return r;
            }
            if (r == HTTP_PULL_END || r == HTTP_PULL_ERROR) {
                if (!s->ended) {
                    s->ended = true;
                    s->ok = r == HTTP_PULL_END;
                }
                continue;
            }
            if (s->wake)
                continue;
        }
        /* Nothing to send: sleep until a producer wakes us. */
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
}

static void stream_unref(struct http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned refs = --s->refs;
    pthread_mutex_unlock(&s->lock);
    if (refs)
        return;
    if (s->heartbeat) {
        struct http_server *srv = s->srv;
        pthread_mutex_lock(&srv->lock);
        if (s->hb_prev)
            s->hb_prev->hb_next = s->hb_next;
        else
            srv->beating = s->hb_next;
        if (s->hb_next)
            s->hb_next->hb_prev = s->hb_prev;
        pthread_mutex_unlock(&srv->lock);
    }
    buf_release(&s->queue);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void stream_response_free(void *cls)
{
    stream_unref(cls);
}

struct http_stream *http_respond_stream(struct http_request *req,
                                        const struct http_stream_options *opt)
{
    struct http_server *srv = req->srv;
    struct http_stream *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->conn = req->conn;
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 3; /* producer, MHD response, request */
    buf_init(&s->queue, opt->queue_max);
    s->heartbeat = opt->heartbeat;
    s->pull = opt->pull;
    s->pull_arg = opt->pull_arg;
    s->last_write = time_mono_usec();
    req->stream = s;

    if (s->heartbeat) {
        pthread_mutex_lock(&srv->lock);
        s->hb_next = srv->beating;
        if (srv->beating)
            srv->beating->hb_prev = s;
        srv->beating = s;
        pthread_mutex_unlock(&srv->lock);
    }

    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, opt->block ? opt->block : STREAM_BLOCK,
                                          stream_read, s, stream_response_free);
    MHD_add_response_header(r, "Content-Type", opt->content_type);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    /* Streams may be quiet for long: no idle timeout for this connection. */
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned int)0);
    queue(req, 200, r);
    return s;
}

enum chatd_err http_stream_write(struct http_stream *s, const void *p, size_t n)
{
    enum chatd_err err = CHATD_ECLOSED;
    pthread_mutex_lock(&s->lock);
    if (!s->closed && !s->ended) {
        err = buf_append(&s->queue, p, n);
        if (!err) {
            s->last_write = time_mono_usec();
            stream_wake_locked(s);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

void http_stream_end(struct http_stream *s, bool ok)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ended) {
        s->ended = true;
        s->ok = ok;
    }
    stream_wake_locked(s);
    pthread_mutex_unlock(&s->lock);
}

void http_stream_wake(struct http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    stream_wake_locked(s);
    pthread_mutex_unlock(&s->lock);
}

bool http_stream_closed(struct http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool closed = s->closed;
    pthread_mutex_unlock(&s->lock);
    return closed;
}

void http_stream_release(struct http_stream *s)
{
    if (s)
        stream_unref(s);
}

/*
 * True if the client of a suspended connection has closed its end, in
 * which case the socket is shut down so that the next send fails. A
 * suspended connection is not polled by libmicrohttpd, and the first send
 * to a half-closed socket still succeeds, so without this a quiet stream's
 * client would be noticed only at the second heartbeat, 30 s late.
 */
static bool peer_closed(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    char c;
    ssize_t r = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return false;
    shutdown(ci->connect_fd, SHUT_RDWR);
    return true;
}

/* Once a second: ": ping" on streams idle for 15 s, and at once on
 * streams whose client has gone (so the failed send ends the request). */
static void *ticker_main(void *arg)
{
    static const char ping[] = ": ping\n\n";
    struct http_server *srv = arg;
    pthread_mutex_lock(&srv->lock);
    while (!srv->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&srv->tick, &srv->lock, &ts);
        if (srv->stopping)
            break;
        int64_t now = time_mono_usec();
        for (struct http_stream *s = srv->beating; s; s = s->hb_next) {
            pthread_mutex_lock(&s->lock);
            bool gone = s->suspended && s->conn && !s->closed && peer_closed(s->conn);
            if (!s->closed && !s->ended && !s->queue.len &&
                (gone || now - s->last_write >= HEARTBEAT_USEC) &&
                buf_append(&s->queue, ping, sizeof ping - 1) == CHATD_OK) {
                s->last_write = now;
                stream_wake_locked(s);
            }
            pthread_mutex_unlock(&s->lock);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* ---- the request, for handlers ---- */

void *http_app(const struct http_request *req)
{
    return req->srv->opt.app;
}

enum http_method http_method(const struct http_request *req)
{
    return req->method;
}

const char *http_path(const struct http_request *req)
{
    return req->path;
}

struct str http_param(const struct http_request *req, size_t i)
{
    if (i >= MAX_PARAMS)
        return STR_NULL;
    return (struct str){req->path + req->param_off[i], req->param_len[i]};
}

bool http_query(const struct http_request *req, const char *key, struct str *out)
{
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &n) !=
        MHD_YES)
        return false;
    *out = v ? (struct str){v, n} : (struct str){"", 0};
    return true;
}

const char *http_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct str http_body(const struct http_request *req)
{
    return buf_str(&req->body);
}

void http_set_data(struct http_request *req, void *data, void (*done)(void *data, bool ok))
{
    req->data = data;
    req->done = done;
}

void *http_data(const struct http_request *req)
{
    return req->data;
}

/* ---- libmicrohttpd callbacks ---- */

static struct http_request *request_new(struct http_server *srv, struct MHD_Connection *conn,
                                        const char *url, const char *method)
{
    struct http_request *req = xcalloc(1, sizeof *req);
    req->srv = srv;
    req->conn = conn;
    req->started = time_mono_usec();
    req->method = parse_method(method);
    snprintf(req->method_name, sizeof req->method_name, "%s", method);
    size_t len = strlen(url);
    if (len > 1 && url[len - 1] == '/')
        len--; /* "/api/chat/" is "/api/chat" */
    req->path = xmemdup(url, len);
    buf_init(&req->body, srv->opt.max_body);
    pthread_mutex_lock(&srv->lock);
    req->next = srv->requests;
    if (srv->requests)
        srv->requests->prev = req;
    srv->requests = req;
    srv->active++;
    pthread_mutex_unlock(&srv->lock);
    return req;
}

/* Answers a request the router has no handler for: preflight, 404, 405. */
static void respond_unrouted(struct http_request *req)
{
    if (req->method == HTTP_OPTIONS) {
        respond_preflight(req);
    } else if (req->allowed) {
        respond_method_not_allowed(req, req->allowed);
    } else {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "no such endpoint: %s", req->path);
        http_respond_error(req, CHATD_ENOTFOUND, msg.ptr);
        buf_release(&msg);
    }
}

/* First call, headers only: route, and refuse at once what must not be
 * read. Answers for requests without a body wait for the final call, so
 * that the connection stays open for the next request (libmicrohttpd
 * closes a connection whose answer came before the request was read). */
static void request_begin(struct http_request *req)
{
    struct http_server *srv = req->srv;
    size_t path_len = strlen(req->path);
    if (req->method != HTTP_OPTIONS) {
        for (size_t i = 0; i < srv->opt.route_count; i++) {
            const struct http_route *r = &srv->opt.routes[i];
            if (!route_match(r->pattern, req->path, path_len, req))
                continue;
            if (r->methods & req->method) {
                req->route = r;
                break;
            }
            req->allowed |= r->methods;
        }
    }
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    unsigned long long n = 0;
    bool digits = cl && *cl != '\0';
    for (const char *p = cl; digits && *p; p++) {
        if (*p < '0' || *p > '9' || n > UINT64_MAX / 10)
            digits = false;
        else
            n = n * 10 + (unsigned long long)(*p - '0');
    }
    bool has_body = te || (cl && (!digits || n > 0));
    if (!has_body)
        return;
    if (!req->route) {
        respond_unrouted(req);
    } else if (digits && n > srv->opt.max_body) {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "request body of %llu bytes is larger than the limit of %zu bytes", n,
                    srv->opt.max_body);
        http_respond_error(req, CHATD_ETOOBIG, msg.ptr);
        buf_release(&msg);
    }
}

static void dispatch(struct http_request *req)
{
    req->dispatched = true;
    if (!req->route) {
        respond_unrouted(req);
        return;
    }
    if (req->body_too_big) {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "request body is larger than the limit of %zu bytes",
                    req->srv->opt.max_body);
        http_respond_error(req, CHATD_ETOOBIG, msg.ptr);
        buf_release(&msg);
        return;
    }
    req->route->handler(req);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;
    (void)version;
    if (!req) {
        req = request_new(srv, conn, url, method);
        *con_cls = req;
        request_begin(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->answered && !req->body_too_big &&
            buf_append(&req->body, upload_data, *upload_data_size) != CHATD_OK) {
            req->body_too_big = true;
            buf_release(&req->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->answered)
        return MHD_YES;
    if (req->deferred) {
        req->deferred = false;
        req->resumed(req);
    } else if (!req->dispatched) {
        dispatch(req);
    } else {
        return MHD_YES;
    }
    if (!req->answered && !req->deferred) {
        log_error("http: %s %s: handler did not answer (bug)", req->method_name, req->path);
        http_respond_error(req, CHATD_EINTERNAL, "internal error");
    }
    return MHD_YES;
}

static void log_access(struct http_request *req, bool ok)
{
    if (!log_enabled(LOG_LEVEL_INFO))
        return;
    char path[256];
    size_t n = 0;
    for (const char *p = req->path; *p && n < sizeof path - 4; p++)
        path[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"') ? '?' : *p;
    if (*(req->path + n))
        path[n++] = '.', path[n++] = '.';
    path[n] = '\0';
    uint64_t bytes = req->bytes;
    if (req->stream) {
        pthread_mutex_lock(&req->stream->lock);
        bytes = req->stream->sent;
        pthread_mutex_unlock(&req->stream->lock);
    }
    double ms = (double)(time_mono_usec() - req->started) / 1000.0;
    log_info("access: \"%s %s\" %d %llu %.1fms%s", req->method_name, path,
             req->status ? req->status : 499, (unsigned long long)bytes, ms,
             ok ? "" : " (connection closed early)");
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;
    (void)conn;
    if (!req)
        return;
    *con_cls = NULL;
    bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (req->stream) {
        struct http_stream *s = req->stream;
        pthread_mutex_lock(&s->lock);
        s->closed = true;
        s->conn = NULL;
        s->suspended = false;
        pthread_mutex_unlock(&s->lock);
    }
    if (req->done)
        req->done(req->data, ok);
    log_access(req, ok);

    pthread_mutex_lock(&srv->lock);
    if (req->prev)
        req->prev->next = req->next;
    else
        srv->requests = req->next;
    if (req->next)
        req->next->prev = req->prev;
    srv->active--;
    pthread_mutex_unlock(&srv->lock);

    if (req->stream)
        stream_unref(req->stream);
    for (size_t i = 0; i < req->nhdr; i++) {
        free(req->hdr_name[i]);
        free(req->hdr_value[i]);
    }
    buf_release(&req->body);
    free(req->path);
    free(req);
}

/* libmicrohttpd's own unescaping turns %00 into a NUL that silently cuts
 * a path or value short ("name.csv%00.part" would read as "name.csv").
 * %00 becomes 0xFF instead, a byte that is never valid UTF-8: such a path
 * matches nothing, and such a value fails validation. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    for (char *p = s; (p = strstr(p, "%00")) != NULL; p += 3) {
        p[1] = 'f';
        p[2] = 'f';
    }
    return MHD_http_unescape(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    /* A client that left mid-response is routine, not a warning. */
    if (strstr(line, "Failed to send") || strstr(line, "no longer available"))
        log_debug("http: libmicrohttpd: %s", line);
    else
        log_warn("http: libmicrohttpd: %s", line);
}

/* Raises the descriptor limit to the hard limit; returns the soft limit. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

enum chatd_err http_server_start(const struct http_options *opt, struct http_server **out,
                                 char *why, size_t why_len)
{
    *out = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof port, "%u", opt->port);
    int rc = getaddrinfo(opt->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(why, why_len, "cannot listen on '%s': %s", opt->host, gai_strerror(rc));
        return CHATD_EIO;
    }

    rlim_t nofile = raise_nofile();
    unsigned limit = nofile > FD_RESERVE * 2 ? (unsigned)(nofile - FD_RESERVE) : 64;

    struct http_server *srv = xcalloc(1, sizeof *srv);
    srv->opt = *opt;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->tick, NULL);
    pthread_mutex_init(&srv->rq_lock, NULL);
    pthread_cond_init(&srv->rq_cond, NULL);

    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)opt->port, NULL, NULL, access_handler, srv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)opt->threads, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)opt->idle_timeout, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096,
        MHD_OPTION_NOTIFY_COMPLETED, completed, srv, MHD_OPTION_UNESCAPE_CALLBACK, unescape, srv,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        snprintf(why, why_len, "cannot listen on %s:%u: %s", opt->host, opt->port,
                 errno ? strerror(errno) : "libmicrohttpd refused to start");
        http_server_free(srv);
        return CHATD_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opt->port;
    if (pthread_create(&srv->resumer, NULL, resumer_main, srv) != 0) {
        snprintf(why, why_len, "cannot start the resumer thread");
        http_server_free(srv);
        return CHATD_EIO;
    }
    pthread_setname_np(srv->resumer, "chatd-resume");
    srv->resumer_started = true;
    if (pthread_create(&srv->ticker, NULL, ticker_main, srv) != 0) {
        snprintf(why, why_len, "cannot start the heartbeat thread");
        http_server_free(srv);
        return CHATD_EIO;
    }
    pthread_setname_np(srv->ticker, "chatd-beat");
    srv->ticker_started = true;
    log_info("http: descriptor limit %llu: up to %u connections, about %u concurrent streams "
             "(a stream holds a client and an upstream connection)",
             (unsigned long long)nofile, limit, limit / 2);
    log_info("http: listening on %s:%u with %u worker threads", opt->host, srv->port, opt->threads);
    *out = srv;
    return CHATD_OK;
}

unsigned http_server_port(const struct http_server *srv)
{
    return srv->port;
}

size_t http_server_active(struct http_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    size_t n = srv->active;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

void http_server_quiesce(struct http_server *srv)
{
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void http_server_free(struct http_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->tick);
    pthread_mutex_unlock(&srv->lock);
    if (srv->ticker_started)
        pthread_join(srv->ticker, NULL);
    if (srv->daemon) {
        /* Streams still queued for resuming are resumed below directly.
         * (The resumer runs only if the daemon started: stopping it here
         * covers every start failure too.) */
        pthread_mutex_lock(&srv->rq_lock);
        srv->rq_stopping = true;
        pthread_cond_signal(&srv->rq_cond);
        pthread_mutex_unlock(&srv->rq_lock);
        if (srv->resumer_started)
            pthread_join(srv->resumer, NULL);
        /* MHD must not be stopped with connections still suspended. */
        pthread_mutex_lock(&srv->lock);
        for (struct http_request *req = srv->requests; req; req = req->next) {
            if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->conn);
            }
            if (req->stream) {
                struct http_stream *s = req->stream;
                pthread_mutex_lock(&s->lock);
                if (!s->ended) {
                    s->ended = true;
                    s->ok = false;
                }
                s->wake = true;
                stream_resume_locked(s);
                pthread_mutex_unlock(&s->lock);
            }
        }
        pthread_mutex_unlock(&srv->lock);
        MHD_stop_daemon(srv->daemon);
    }
    while (srv->rq) { /* woken after the resumer left: only drop the reference */
        struct http_stream *s = srv->rq;
        srv->rq = s->rq_next;
        stream_unref(s);
    }
    pthread_cond_destroy(&srv->rq_cond);
    pthread_mutex_destroy(&srv->rq_lock);
    pthread_cond_destroy(&srv->tick);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
