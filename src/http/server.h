/*
 * server.h - chatd's HTTP layer: libmicrohttpd behind a small interface.
 *
 * The server runs libmicrohttpd in epoll thread-pool mode (one worker per
 * core) with suspend/resume. No libmicrohttpd type appears here, so the
 * layer can be swapped without touching the handlers.
 *
 * A request's life:
 *   1. The headers arrive. The router matches the path (one trailing slash
 *      tolerated) against the route table: OPTIONS anywhere is a 204 CORS
 *      preflight, an unknown path a 404, a known path with another method
 *      a 405, a Content-Length over max_body a 413 - all answered before
 *      any body is read.
 *   2. The body is read into a buffer capped at max_body.
 *   3. The route's handler runs on the worker thread with the whole
 *      request. It must do exactly one of:
 *        - answer: http_respond() / http_respond_json() / http_respond_error();
 *        - defer: http_defer(), then hand the request to another thread,
 *          which calls http_resume() exactly once when the answer can be
 *          made; the given callback then runs on a worker thread and
 *          answers (or defers again);
 *        - stream: http_respond_stream(), see struct http_stream below.
 *   4. When the response is over, or the client went away, the done
 *      callback set with http_set_data() runs on a worker thread (ok tells
 *      which), the access-log line is written, and the request is freed.
 * Every response carries Access-Control-Allow-Origin. Errors are JSON
 * {"status": "error", "message": "..."} (SPEC.md conventions), and
 * http_status_for() is the one mapping from chatd errors to HTTP statuses.
 *
 * Threads: handlers, resume callbacks, pull callbacks and done callbacks
 * run on libmicrohttpd's worker threads. http_resume(), http_stream_write(),
 * http_stream_end() and http_stream_wake() may be called from any thread.
 */
#ifndef CHATD_HTTP_SERVER_H
#define CHATD_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/err.h"

struct http_server;
struct http_request;
struct http_stream;

enum http_method {
    HTTP_GET = 1,
    HTTP_HEAD = 2,
    HTTP_POST = 4,
    HTTP_PUT = 8,
    HTTP_DELETE = 16,
    HTTP_OPTIONS = 32,
    HTTP_PATCH = 64,
    HTTP_OTHER = 128,
};

typedef void (*http_handler_fn)(struct http_request *req);

/* A route: pattern segments are literal or "*" (one non-empty segment,
 * available through http_param()). The first route whose pattern and
 * method both match wins. */
struct http_route {
    const char *pattern; /* e.g. "/api/conversations/" then a star */
    unsigned methods;    /* HTTP_GET | HTTP_POST ... */
    http_handler_fn handler;
};

struct http_options {
    const char *host;        /* listen address (IPv4 or IPv6 literal) */
    unsigned port;           /* 0 = any free port */
    unsigned threads;        /* worker threads, >= 1 */
    size_t max_body;         /* bytes */
    const char *cors_origin; /* Access-Control-Allow-Origin value */
    unsigned idle_timeout;   /* seconds an idle ordinary connection is kept */
    const struct http_route *routes;
    size_t route_count;
    void *app; /* handed to handlers by http_app() */
};

/* Starts listening and serving. Raises RLIMIT_NOFILE to its hard limit
 * and sizes the connection limit from it (logged). On failure returns
 * CHATD_EIO and writes why into why. */
enum chatd_err http_server_start(const struct http_options *opt, struct http_server **out,
                                 char *why, size_t why_len);
/* The port actually listened on (useful with port 0). */
unsigned http_server_port(const struct http_server *srv);
/* Requests in progress (streams included). */
size_t http_server_active(struct http_server *srv);
/* Stops accepting new connections; requests in progress go on. */
void http_server_quiesce(struct http_server *srv);
/* Resumes whatever is still suspended, closes every connection, joins the
 * workers and frees srv. Producers must have stopped calling into it.
 * NULL is ok. */
void http_server_free(struct http_server *srv);

/* ---- the request, for handlers ---- */

void *http_app(const struct http_request *req);
enum http_method http_method(const struct http_request *req);
/* The decoded path, without query string. */
const char *http_path(const struct http_request *req);
/* The i-th "*" segment of the matched route (i from 0). */
struct str http_param(const struct http_request *req, size_t i);
/* A decoded query-string argument: true and *out set if present (a key
 * without '=' has an empty value). The value may hold any bytes. */
bool http_query(const struct http_request *req, const char *key, struct str *out);
/* A request header (case-insensitive name), NULL if absent. */
const char *http_header(const struct http_request *req, const char *name);
/* The request body (empty for GET). Valid until the request ends. */
struct str http_body(const struct http_request *req);

/* Attaches handler state: done(data, ok) runs once when the request ends
 * (ok = the response was sent completely), after which the request is
 * gone. Replaces an earlier attachment. */
void http_set_data(struct http_request *req, void *data, void (*done)(void *data, bool ok));
/* The data attached with http_set_data(), or NULL. */
void *http_data(const struct http_request *req);

/* ---- answering ---- */

/* Adds a response header for the coming response (copied). */
void http_add_header(struct http_request *req, const char *name, const char *value);
/* Sends a complete response; body is copied. */
void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t len);
/* Like http_respond() for data that lives as long as the program (the
 * embedded web page): body is sent without being copied. */
void http_respond_static(struct http_request *req, int status, const char *content_type,
                         const void *body, size_t len);
/* True if the request's If-None-Match lists etag (a quoted entity tag;
 * weak comparison, RFC 9110 13.1.2) or is "*": answer 304 then. Any
 * header value is safe to give. */
bool http_etag_match(const struct http_request *req, const char *etag);
/* Sends body (taken: b is left empty) as application/json; charset=utf-8. */
void http_respond_json(struct http_request *req, int status, struct buf *b);
/* Sends len bytes of the open file fd from offset (sendfile where the
 * kernel can), with Content-Length. Takes fd: it is closed when the
 * response is done, or at once if it cannot be sent. */
void http_respond_file(struct http_request *req, int status, const char *content_type, int fd,
                       uint64_t offset, uint64_t len);
/* Sends {"status": "error", "message": message} with http_status_for(err). */
void http_respond_error(struct http_request *req, enum chatd_err err, const char *message);
/* The same body with a status no chatd error stands for (416 for a Range
 * outside the file). */
void http_respond_error_status(struct http_request *req, int status, const char *message);
/* The HTTP status for a chatd error (the one mapping of the project). */
int http_status_for(enum chatd_err err);

/* Parks the request: the connection is suspended until http_resume(),
 * then resumed(req) runs on a worker thread. Call before handing req to
 * another thread. If the server stops first, resumed() runs anyway and
 * must answer (e.g. with an error). */
void http_defer(struct http_request *req, http_handler_fn resumed);
/* Any thread, exactly once per http_defer(); req must not be touched by
 * the caller afterwards. */
void http_resume(struct http_request *req);

/* ---- streaming responses ---- */

/*
 * A streaming response is a bounded byte queue. Producers on any thread
 * append with http_stream_write(); the connection sends what is queued as
 * fast as the client takes it, and sleeps (suspended, no CPU) when the
 * queue is empty. Optionally a pull callback is asked for more bytes, on
 * the worker thread, whenever the queue is empty: it writes up to max
 * bytes into out and returns how many, or 0 for "nothing now" (someone
 * will call http_stream_wake()), or HTTP_PULL_END / HTTP_PULL_ERROR.
 * Bytes written by producers while pull runs are sent before pull's.
 * An ended stream finishes the response properly once the queue drains;
 * an errored one is cut off without the final chunk, so the client can
 * tell it was truncated. The stream is reference-counted: the producer
 * owns the reference that http_respond_stream() returns and must drop it
 * with http_stream_release().
 */
#define HTTP_PULL_END   ((ssize_t)-1)
#define HTTP_PULL_ERROR ((ssize_t)-2)

typedef ssize_t (*http_pull_fn)(void *arg, char *out, size_t max);

struct http_stream_options {
    const char *content_type;
    size_t queue_max;  /* bytes queued before a write fails with ETOOBIG */
    bool heartbeat;    /* send ": ping\n\n" when idle for 15 s (SSE) */
    size_t block;      /* most bytes handed over per read; 0 = 16 KiB. libmicrohttpd
                          allocates this much per response: keep it small for many
                          small streams */
    http_pull_fn pull; /* may be NULL */
    void *pull_arg;
};

/* Starts a 200 streaming response (chunked) with the headers added so far.
 * Never fails; returns the producer's reference. */
struct http_stream *http_respond_stream(struct http_request *req,
                                        const struct http_stream_options *opt);
/* Queues n bytes. CHATD_ECLOSED if the client is gone or the stream ended,
 * CHATD_ETOOBIG if the queue is full (the client does not keep up). */
enum chatd_err http_stream_write(struct http_stream *s, const void *p, size_t n);
/* Ends the stream after the queued bytes (ok) or cuts it off (!ok). */
void http_stream_end(struct http_stream *s, bool ok);
/* Asks for the pull callback to be called again. */
void http_stream_wake(struct http_stream *s);
/* True once the client is gone or the response is over. */
bool http_stream_closed(struct http_stream *s);
void http_stream_release(struct http_stream *s);

#endif
