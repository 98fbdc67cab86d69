/*
 * streamload.c - load generator for chatd's POST /api/chat-stream.
 *
 * Opens N concurrent streaming requests against a server on the loopback
 * interface and measures what a client sees. One thread, one epoll set,
 * non-blocking sockets and raw HTTP/1.1, so that the generator costs far
 * less CPU per event than the server it measures (no libcurl, no threads).
 *
 * Each request asks the mock upstream (tools/MOCK.md) for T tokens D ms
 * apart with `mock:stamp`, so every token carries `<t=USEC>`, the
 * wall-clock microsecond at which the mock wrote it. The message ends in the
 * request's index, so no two requests share a cache key.
 *
 * Connections are opened at --ramp per second so the server's listen
 * backlog is not overrun (a dropped SYN costs a 1 s retransmission that
 * would show up as a false TTFT tail). Responses are decoded incrementally:
 * HTTP/1.1 status and headers, then chunked transfer coding (RFC 9112 7.1),
 * Content-Length or read-until-close bodies, then Server-Sent Events (WHATWG
 * HTML "Server-sent events": LF, CR or CRLF line ends, ':' comments, one
 * optional space after the field colon, blank line dispatches).
 *
 * Modes:
 *   default       POST /api/chat-stream, chatd's format (SPEC.md section 2):
 *                 `data: {"content": ...}` pieces, then `event: done`, or
 *                 `event: error`; `: ping` comments are counted and ignored.
 *   --raw-openai  POST /v1/chat/completions with "stream": true straight to
 *                 the mock: OpenAI chunks, `data: [DONE]` ends the stream.
 *                 This is the reference: the mock alone, no chatd between.
 *
 * A stream is completed when it got 200, the end event, exactly T tokens and
 * an orderly end of the response; anything else is a failure with a reason.
 * Measured: time to first token (request fully written -> first content
 * event, CLOCK_MONOTONIC), added delay per token (CLOCK_REALTIME when the
 * read that completed the event returned, minus the token's stamp; the mock
 * and this tool share the machine's clock; every token received counts,
 * failed streams' too), stream duration, wall time.
 * Arrival times include this tool's own scheduling lag, so its CPU time is
 * reported too: if it nears the wall time, the generator is the bottleneck.
 *
 * --hold S (idle-stream mode): each request asks for `mock:stall=1
 * mock:tokens=T <i>` instead (one token, then the upstream stays silent with
 * its connection open), so each stream gets one content event and then
 * idles. Once every stream has its first token (or failed, or --timeout
 * expired), one JSON line with "phase": "held" goes to stdout; the streams
 * are then held open until SIGUSR1 (or S seconds), closed by the client,
 * and reported as usual: completed = held open to the end. Used by
 * bench/http.sh to measure chatd's memory with thousands of idle streams.
 *
 * Left out on purpose: keep-alive reuse (one connection per stream, as
 * browsers' EventSource does), TLS, IPv6 and any target other than
 * 127.0.0.1, retries.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "core/alloc.h"
#include "core/buf.h"

#define MAX_EVENTS       4096
#define READ_CHUNK       65536
#define MAX_HEADER_BYTES 16384
#define MAX_LINE_BYTES   (256 * 1024)
#define MAX_SAMPLES      8  /* distinct failure details kept for the report */
#define FD_SLACK         16 /* fds the tool needs besides its sockets */

enum mode {
    MODE_CHATD,
    MODE_OPENAI,
};

enum conn_state {
    ST_IDLE,     /* not opened yet */
    ST_SENDING,  /* connecting or writing the request */
    ST_HEADERS,  /* request sent, reading status line and headers */
    ST_BODY,     /* reading the event stream */
    ST_FINISHED, /* counted as completed or failed, fd closed */
};

enum body_mode {
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_EOF,
};

enum chunk_state {
    CH_SIZE,     /* reading the hex size line */
    CH_EXT,      /* skipping a chunk extension up to LF */
    CH_DATA,     /* inside chunk data */
    CH_DATA_END, /* expecting the CRLF after chunk data */
    CH_TRAILER,  /* reading trailer lines after the last chunk */
    CH_END,      /* response complete */
};

enum fail_reason {
    FAIL_CONNECT,     /* connect or request write failed */
    FAIL_HTTP,        /* status other than 200 */
    FAIL_ERROR_EVENT, /* event: error (chatd) or an error object (OpenAI) */
    FAIL_TOKENS,      /* end event with a token count other than T */
    FAIL_CLOSED,      /* connection ended before the end event */
    FAIL_PROTOCOL,    /* unparseable HTTP, chunking or an oversized line */
    FAIL_TIMEOUT,     /* still unfinished when --timeout expired */
    FAIL_COUNT,
};

static const char *const fail_names[FAIL_COUNT] = {
    "connect", "http", "error_event", "token_count", "closed", "protocol", "timeout",
};

struct conn {
    int fd;                 /* socket, -1 when closed */
    uint32_t index;         /* request number, part of the message */
    uint8_t state;          /* enum conn_state */
    uint8_t body_mode;      /* enum body_mode */
    uint8_t chunk_state;    /* enum chunk_state */
    bool cr_pending;        /* last SSE line ended in CR: skip one LF */
    bool done;              /* got the end event */
    bool held;              /* --hold: got the first token, now idle */
    bool chunk_size_digits; /* at least one hex digit in the size line */
    bool trailer_nonempty;  /* current trailer line has content */
    int status;             /* HTTP status code */
    uint32_t tokens;        /* tokens received (stamps, or unstamped events) */
    uint32_t events;        /* content events received */
    uint64_t body_left;     /* chunk or Content-Length bytes still expected */
    size_t req_off;         /* bytes of the request already written */
    int64_t t_sent;         /* monotonic us when the request was written */
    int64_t t_first;        /* monotonic us of the first content event, 0 before */
    struct buf io;          /* request while sending, header bytes while reading headers */
    struct buf line;        /* current SSE line */
    struct buf data;        /* data of the current SSE event */
    char event[16];         /* name of the current SSE event (truncated) */
};

struct i64s {
    int64_t *v; /* samples */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

struct load {
    enum mode mode;
    const char *host;        /* as given, for the report */
    const char *extra;       /* more words for the message, e.g. mock:split */
    struct sockaddr_in addr; /* target */
    int port;
    long n;             /* streams */
    long tokens;        /* tokens per stream */
    long delay_ms;      /* mock delay between tokens */
    long ramp;          /* connections opened per second */
    long timeout_s;     /* give up after this many seconds */
    long hold_s;        /* --hold: seconds to hold the idle streams, 0 = off */
    long held;          /* --hold: streams that got their first token */
    long dropped;       /* --hold: held streams that failed afterwards */
    bool json;          /* print the JSON line */
    bool progress;      /* one status line per second on stderr */
    int ep;             /* epoll fd */
    struct conn *conns; /* n of them */
    long opened;        /* connections started */
    long active;        /* opened and not finished */
    long peak_active;   /* largest value of active */
    long completed;
    long failed;
    long fail[FAIL_COUNT];              /* failures by reason */
    long timeout_by_state[ST_FINISHED]; /* where the timed-out streams were */
    long unstamped;                     /* content events without a <t=...> stamp */
    long pings;                         /* SSE comment lines */
    long reasoning;                     /* reasoning events (chatd) */
    long eof_after_done;                /* done seen, then EOF without the last chunk */
    struct i64s ttft;                   /* us */
    struct i64s delay;                  /* us, may be negative if clocks disagree */
    struct i64s duration;               /* us, request written -> end event */
    char *samples[MAX_SAMPLES];         /* first distinct failure details */
    int nsamples;
    int64_t t_start;  /* monotonic us */
    int64_t t_ramped; /* monotonic us when the last connection was opened */
    int64_t now_real; /* realtime us of the current read */
    int64_t t_held;   /* --hold: monotonic us when the hold began */
    rlim_t nofile;    /* soft RLIMIT_NOFILE after raising it */
};

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void i64s_push(struct i64s *a, int64_t v)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = xrealloc(a->v, a->cap * sizeof(*a->v));
    }
    a->v[a->n++] = v;
}

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of a sorted array; 0 when empty. */
static int64_t pct(const struct i64s *a, double q)
{
    if (a->n == 0)
        return 0;
    size_t rank = (size_t)(q * (double)a->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > a->n)
        rank = a->n;
    return a->v[rank - 1];
}

static void add_sample(struct load *ld, const char *reason, const char *detail, size_t n)
{
    if (ld->nsamples >= MAX_SAMPLES)
        return;
    struct buf b = BUF_INIT;
    buf_appendf(&b, "%s: %.*s", reason, (int)(n > 200 ? 200 : n), detail);
    for (int i = 0; i < ld->nsamples; i++) {
        if (strcmp(ld->samples[i], b.ptr) == 0) {
            buf_release(&b);
            return;
        }
    }
    ld->samples[ld->nsamples++] = buf_take(&b);
}

static void conn_close(struct load *ld, struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set: the fd is never dup'ed */
    c->fd = -1;
    buf_release(&c->io);
    buf_release(&c->line);
    buf_release(&c->data);
    c->state = ST_FINISHED;
    ld->active--;
}

static void conn_fail(struct load *ld, struct conn *c, enum fail_reason why, const char *detail)
{
    if (c->state == ST_FINISHED)
        return;
    if (c->held)
        ld->dropped++;
    ld->failed++;
    ld->fail[why]++;
    add_sample(ld, fail_names[why], detail, strlen(detail));
    conn_close(ld, c);
}

/* The response ended (last chunk, Content-Length reached, or EOF). */
static void conn_end(struct load *ld, struct conn *c)
{
    if (ld->hold_s) {
        conn_fail(ld, c, FAIL_CLOSED, "stream ended although the upstream stalls (--hold)");
        return;
    }
    if (!c->done) {
        conn_fail(ld, c, FAIL_CLOSED, "response ended before the end event");
        return;
    }
    if (c->tokens != (uint64_t)ld->tokens) {
        char msg[64];
        snprintf(msg, sizeof(msg), "got %" PRIu32 " tokens, want %ld", c->tokens, ld->tokens);
        conn_fail(ld, c, FAIL_TOKENS, msg);
        return;
    }
    ld->completed++;
    conn_close(ld, c);
}

/* --- request ------------------------------------------------------------ */

static void build_request(const struct load *ld, struct conn *c)
{
    struct buf body = BUF_INIT;
    /* --extra was checked to hold no character that JSON must escape */
    if (ld->hold_s && ld->mode == MODE_CHATD)
        buf_appendf(&body, "{\"message\": \"mock:stall=1 mock:tokens=%ld%s%s %" PRIu32 "\"}",
                    ld->tokens, *ld->extra ? " " : "", ld->extra, c->index);
    else if (ld->hold_s)
        buf_appendf(&body,
                    "{\"model\": \"mock\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
                    "\"content\": \"mock:stall=1 mock:tokens=%ld%s%s %" PRIu32 "\"}]}",
                    ld->tokens, *ld->extra ? " " : "", ld->extra, c->index);
    else if (ld->mode == MODE_CHATD)
        buf_appendf(&body,
                    "{\"message\": \"mock:tokens=%ld mock:delay=%ld mock:stamp%s%s %" PRIu32 "\"}",
                    ld->tokens, ld->delay_ms, *ld->extra ? " " : "", ld->extra, c->index);
    else
        buf_appendf(&body,
                    "{\"model\": \"mock\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
                    "\"content\": \"mock:tokens=%ld mock:delay=%ld mock:stamp%s%s %" PRIu32 "\"}]}",
                    ld->tokens, ld->delay_ms, *ld->extra ? " " : "", ld->extra, c->index);
    buf_init(&c->io, 0);
    buf_appendf(&c->io,
                "POST %s HTTP/1.1\r\n"
                "Host: 127.0.0.1:%d\r\n"
                "Accept: text/event-stream\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: %zu\r\n"
                "Connection: close\r\n"
                "\r\n"
                "%s",
                ld->mode == MODE_CHATD ? "/api/chat-stream" : "/v1/chat/completions", ld->port,
                body.len, body.ptr);
    buf_release(&body);
    c->req_off = 0;
}

static void conn_open(struct load *ld, struct conn *c)
{
    char msg[96];
    ld->active++;
    if (ld->active > ld->peak_active)
        ld->peak_active = ld->active;
    c->state = ST_SENDING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(msg, sizeof(msg), "socket: %s", strerror(errno));
        conn_fail(ld, c, FAIL_CONNECT, msg);
        return;
    }
    int one = 1;
    /* Requests are one write; NODELAY keeps Nagle from holding a tail. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&ld->addr, sizeof(ld->addr)) < 0 &&
        errno != EINPROGRESS) {
        snprintf(msg, sizeof(msg), "connect: %s", strerror(errno));
        conn_fail(ld, c, FAIL_CONNECT, msg);
        return;
    }
    build_request(ld, c);
    /* Edge-triggered and registered once: EPOLLOUT edges after the request
     * is written are ignored, which saves an EPOLL_CTL_MOD per stream and
     * the level-triggered re-poll of every ready socket. */
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ld->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        snprintf(msg, sizeof(msg), "epoll_ctl: %s", strerror(errno));
        conn_fail(ld, c, FAIL_CONNECT, msg);
    }
}

static void conn_send(struct load *ld, struct conn *c)
{
    char msg[96];
    while (c->req_off < c->io.len) {
        ssize_t w = send(c->fd, c->io.ptr + c->req_off, c->io.len - c->req_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                return; /* still connecting, or the socket buffer is full */
            if (errno == EINTR)
                continue;
            snprintf(msg, sizeof(msg), "send: %s", strerror(errno));
            conn_fail(ld, c, FAIL_CONNECT, msg);
            return;
        }
        c->req_off += (size_t)w;
    }
    c->t_sent = clock_us(CLOCK_MONOTONIC);
    buf_release(&c->io);
    buf_init(&c->io, MAX_HEADER_BYTES);
    c->state = ST_HEADERS;
}

/* --- SSE ------------------------------------------------------------------ */

/* Counts the <t=USEC> stamps in s and records each one's added delay. */
static uint32_t take_stamps(struct load *ld, const char *s, size_t n)
{
    uint32_t count = 0;
    const char *end = s + n;
    while (s < end) {
        const char *p = memmem(s, (size_t)(end - s), "<t=", 3);
        if (!p)
            break;
        p += 3;
        int64_t v = 0;
        const char *digits = p;
        while (p < end && *p >= '0' && *p <= '9' && p - digits < 18)
            v = v * 10 + (*p++ - '0');
        if (p > digits && p < end && *p == '>') {
            i64s_push(&ld->delay, ld->now_real - v);
            count++;
        }
        s = p;
    }
    return count;
}

static void content_event(struct load *ld, struct conn *c, const char *data, size_t n)
{
    uint32_t stamps = take_stamps(ld, data, n);
    if (stamps == 0) {
        ld->unstamped++;
        stamps = 1;
    }
    c->tokens += stamps;
    c->events++;
    if (!c->t_first) {
        c->t_first = clock_us(CLOCK_MONOTONIC);
        i64s_push(&ld->ttft, c->t_first - c->t_sent);
    }
    if (ld->hold_s && !c->held) {
        c->held = true;
        ld->held++;
    }
}

static void end_event(struct load *ld, struct conn *c)
{
    c->done = true;
    i64s_push(&ld->duration, clock_us(CLOCK_MONOTONIC) - c->t_sent);
}

/* Returns false if the stream failed (and was closed). */
static bool dispatch(struct load *ld, struct conn *c)
{
    const char *d = c->data.ptr ? c->data.ptr : "";
    size_t n = c->data.len;
    bool ok = true;
    if (c->done) {
        /* nothing may follow the end event but the end of the response */
    } else if (ld->mode == MODE_CHATD) {
        if (c->event[0] == '\0' || strcmp(c->event, "message") == 0) {
            if (memmem(d, n, "\"content\"", 9))
                content_event(ld, c, d, n);
            else if (memmem(d, n, "\"reasoning\"", 11))
                ld->reasoning++;
        } else if (strcmp(c->event, "done") == 0) {
            end_event(ld, c);
        } else if (strcmp(c->event, "error") == 0) {
            struct buf m = BUF_INIT;
            buf_append(&m, d, n);
            conn_fail(ld, c, FAIL_ERROR_EVENT, m.ptr ? m.ptr : "");
            buf_release(&m);
            ok = false;
        }
    } else {
        if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
            end_event(ld, c);
        } else if (strcmp(c->event, "error") == 0 || memmem(d, n, "\"error\"", 7)) {
            struct buf m = BUF_INIT;
            buf_append(&m, d, n);
            conn_fail(ld, c, FAIL_ERROR_EVENT, m.ptr ? m.ptr : "");
            buf_release(&m);
            ok = false;
        } else if (memmem(d, n, "\"content\":", 10) || memmem(d, n, "\"content\" :", 11)) {
            /* the final chunk carries "delta":{} and no content member */
            content_event(ld, c, d, n);
        }
    }
    if (ok) {
        buf_reset(&c->data);
        c->event[0] = '\0';
    }
    return ok;
}

/* One complete SSE line (without its terminator). */
static bool sse_line(struct load *ld, struct conn *c, const char *s, size_t n)
{
    if (n == 0) {
        if (c->data.len == 0 && c->event[0] == '\0')
            return true;
        return dispatch(ld, c);
    }
    if (s[0] == ':') {
        ld->pings++;
        return true;
    }
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        if ((c->data.len && buf_append_char(&c->data, '\n')) || buf_append(&c->data, v, vlen)) {
            conn_fail(ld, c, FAIL_PROTOCOL, "event data too long");
            return false;
        }
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        size_t k = vlen < sizeof(c->event) - 1 ? vlen : sizeof(c->event) - 1;
        memcpy(c->event, v, k);
        c->event[k] = '\0';
    }
    return true;
}

/* Body bytes after transfer decoding. Returns false if the stream ended. */
static bool sse_feed(struct load *ld, struct conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        if (c->cr_pending) {
            c->cr_pending = false;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        const char *q = p;
        while (q < end && *q != '\n' && *q != '\r')
            q++;
        if (q == end) {
            if (buf_append(&c->line, p, (size_t)(q - p))) {
                conn_fail(ld, c, FAIL_PROTOCOL, "sse line too long");
                return false;
            }
            return true;
        }
        bool ok;
        if (c->line.len == 0) {
            ok = sse_line(ld, c, p, (size_t)(q - p)); /* the common case: no copy */
        } else {
            if (buf_append(&c->line, p, (size_t)(q - p))) {
                conn_fail(ld, c, FAIL_PROTOCOL, "sse line too long");
                return false;
            }
            ok = sse_line(ld, c, c->line.ptr, c->line.len);
            if (ok)
                buf_reset(&c->line);
        }
        if (!ok)
            return false;
        c->cr_pending = *q == '\r';
        p = q + 1;
    }
    return true;
}

/* --- HTTP ---------------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The size line of a chunk ended: data follows, or the last chunk's trailer. */
static void chunk_size_done(struct conn *c)
{
    c->chunk_size_digits = false;
    if (c->body_left == 0) {
        c->chunk_state = CH_TRAILER;
        c->trailer_nonempty = false;
    } else {
        c->chunk_state = CH_DATA;
    }
}

/* Chunked transfer decoding. Returns false if the stream ended. */
static bool chunked_feed(struct load *ld, struct conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        switch (c->chunk_state) {
        case CH_SIZE: {
            char ch = *p++;
            int h = hexval(ch);
            if (h >= 0) {
                if (c->body_left > (UINT64_MAX >> 8)) {
                    conn_fail(ld, c, FAIL_PROTOCOL, "chunk size too large");
                    return false;
                }
                c->body_left = c->body_left * 16 + (uint64_t)h;
                c->chunk_size_digits = true;
            } else if (ch == ';' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
                if (!c->chunk_size_digits) {
                    conn_fail(ld, c, FAIL_PROTOCOL, "chunk size line without digits");
                    return false;
                }
                if (ch == '\n')
                    chunk_size_done(c);
                else
                    c->chunk_state = CH_EXT;
            } else {
                conn_fail(ld, c, FAIL_PROTOCOL, "bad chunk size");
                return false;
            }
            break;
        }
        case CH_EXT:
            if (*p++ == '\n')
                chunk_size_done(c);
            break;
        case CH_DATA: {
            size_t k = (size_t)(end - p);
            if (k > c->body_left)
                k = (size_t)c->body_left;
            if (!sse_feed(ld, c, p, k))
                return false;
            p += k;
            c->body_left -= k;
            if (c->body_left == 0)
                c->chunk_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END: {
            char ch = *p++;
            if (ch == '\r')
                break;
            if (ch != '\n') {
                conn_fail(ld, c, FAIL_PROTOCOL, "chunk data not followed by CRLF");
                return false;
            }
            c->chunk_state = CH_SIZE;
            break;
        }
        case CH_TRAILER: {
            char ch = *p++;
            if (ch == '\n') {
                if (!c->trailer_nonempty) {
                    c->chunk_state = CH_END;
                    conn_end(ld, c);
                    return false;
                }
                c->trailer_nonempty = false;
            } else if (ch != '\r') {
                c->trailer_nonempty = true;
            }
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

static bool body_feed(struct load *ld, struct conn *c, const char *p, size_t n)
{
    switch (c->body_mode) {
    case BODY_CHUNKED:
        return chunked_feed(ld, c, p, n);
    case BODY_LENGTH: {
        size_t k = n < c->body_left ? n : (size_t)c->body_left;
        if (!sse_feed(ld, c, p, k))
            return false;
        c->body_left -= k;
        if (c->body_left == 0) {
            conn_end(ld, c);
            return false;
        }
        return true;
    }
    default:
        return sse_feed(ld, c, p, n);
    }
}

static bool header_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
        return false;
    const char *v = line + k + 1;
    const char *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return true;
}

/* Parses the status line and headers in c->io (complete, ending at hend).
 * Returns false and fails the stream when they are unusable. */
static bool parse_headers(struct load *ld, struct conn *c, size_t hend)
{
    const char *s = c->io.ptr;
    const char *end = s + hend;
    const char *eol = memchr(s, '\n', (size_t)(end - s));
    if (!eol || end - s < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ') {
        conn_fail(ld, c, FAIL_PROTOCOL, "bad status line");
        return false;
    }
    c->status = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9') {
            conn_fail(ld, c, FAIL_PROTOCOL, "bad status code");
            return false;
        }
        c->status = c->status * 10 + (s[i] - '0');
    }
    bool chunked = false, have_len = false;
    uint64_t len = 0;
    for (const char *line = eol + 1; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            nl = end;
        size_t ln = (size_t)(nl - line);
        if (ln && line[ln - 1] == '\r')
            ln--;
        const char *v;
        size_t vlen;
        if (header_is(line, ln, "transfer-encoding", &v, &vlen)) {
            chunked = vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0;
        } else if (header_is(line, ln, "content-length", &v, &vlen)) {
            len = 0;
            have_len = vlen > 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || len > UINT64_MAX / 10 - 10) {
                    have_len = false;
                    break;
                }
                len = len * 10 + (uint64_t)(v[i] - '0');
            }
        }
        line = nl + 1;
    }
    if (c->status != 200) {
        /* the error body is short; keep the status line as the detail */
        struct buf m = BUF_INIT;
        buf_append(&m, s, (size_t)(eol - s));
        if (m.len && m.ptr[m.len - 1] == '\r')
            m.ptr[--m.len] = '\0';
        conn_fail(ld, c, FAIL_HTTP, m.ptr);
        buf_release(&m);
        return false;
    }
    if (chunked) {
        c->body_mode = BODY_CHUNKED;
        c->chunk_state = CH_SIZE;
        c->body_left = 0;
    } else if (have_len) {
        c->body_mode = BODY_LENGTH;
        c->body_left = len;
        if (len == 0) {
            conn_end(ld, c);
            return false;
        }
    } else {
        c->body_mode = BODY_EOF;
    }
    buf_init(&c->line, MAX_LINE_BYTES);
    buf_init(&c->data, MAX_LINE_BYTES);
    c->state = ST_BODY;
    return true;
}

/* Bytes read while in ST_HEADERS. */
static void headers_feed(struct load *ld, struct conn *c, const char *p, size_t n)
{
    size_t old = c->io.len;
    if (buf_append(&c->io, p, n)) {
        conn_fail(ld, c, FAIL_PROTOCOL, "response headers too large");
        return;
    }
    /* the blank line may straddle reads: search from a little before */
    size_t from = old > 3 ? old - 3 : 0;
    const char *hit = memmem(c->io.ptr + from, c->io.len - from, "\r\n\r\n", 4);
    size_t hend;
    if (hit) {
        hend = (size_t)(hit - c->io.ptr) + 4;
    } else {
        hit = memmem(c->io.ptr + from, c->io.len - from, "\n\n", 2);
        if (!hit)
            return;
        hend = (size_t)(hit - c->io.ptr) + 2;
    }
    if (!parse_headers(ld, c, hend))
        return;
    /* Headers could not have ended in an earlier read (they would have been
     * parsed then), so the body bytes after them are the tail of p. */
    size_t rest = c->io.len - hend;
    buf_release(&c->io);
    if (rest)
        body_feed(ld, c, p + n - rest, rest);
}

/* Edge-triggered: reads until a short read. A short read means the socket
 * was drained at that moment, and any later arrival raises a new edge --
 * except an end of stream that had already arrived with the data, which
 * the event reports as EPOLLRDHUP/EPOLLHUP: then read on to the EOF. */
static void conn_read(struct load *ld, struct conn *c, uint32_t events, char *rbuf)
{
    bool to_eof = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    char msg[96];
    for (;;) {
        ssize_t r = read(c->fd, rbuf, READ_CHUNK);
        ld->now_real = clock_us(CLOCK_REALTIME);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            snprintf(msg, sizeof(msg), "read: %s", strerror(errno));
            conn_fail(ld, c, FAIL_CLOSED, msg);
            return;
        }
        if (r == 0) {
            if (c->state == ST_HEADERS) {
                conn_fail(ld, c, FAIL_CLOSED, "connection closed before the response headers");
            } else if (c->body_mode == BODY_EOF) {
                conn_end(ld, c);
            } else if (c->done) {
                ld->eof_after_done++;
                conn_end(ld, c);
            } else {
                conn_fail(ld, c, FAIL_CLOSED, "connection closed before the end event");
            }
            return;
        }
        if (c->state == ST_HEADERS)
            headers_feed(ld, c, rbuf, (size_t)r);
        else
            body_feed(ld, c, rbuf, (size_t)r);
        if (c->state == ST_FINISHED || ((size_t)r < READ_CHUNK && !to_eof))
            return;
    }
}

static void conn_event(struct load *ld, struct conn *c, uint32_t events, char *rbuf)
{
    if (c->state == ST_SENDING) {
        if (events & EPOLLERR) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            char msg[96];
            snprintf(msg, sizeof(msg), "connect: %s", strerror(err ? err : EIO));
            conn_fail(ld, c, FAIL_CONNECT, msg);
            return;
        }
        if (events & EPOLLOUT)
            conn_send(ld, c);
        if (c->state != ST_HEADERS)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR))
        conn_read(ld, c, events, rbuf);
}

/* --- report -------------------------------------------------------------- */

/* One table row: p50, p99 and max of samples in us, divided by unit. */
static void print_row(const char *name, const struct i64s *a, double unit, const char *what)
{
    if (a->n == 0) {
        printf("  %-22s %8s %8s %8s   (no %s)\n", name, "-", "-", "-", what);
        return;
    }
    printf("  %-22s %8.2f %8.2f %8.2f   (%zu %s)\n", name, (double)pct(a, .50) / unit,
           (double)pct(a, .99) / unit, (double)pct(a, 1) / unit, a->n, what);
}

/* Appends `, "NAME_p50": x, "NAME_p99": x, "NAME_max": x`, null when empty. */
static void json_pcts(struct buf *j, const char *name, const struct i64s *a, double unit)
{
    static const double qs[3] = {.50, .99, 1};
    static const char *const qn[3] = {"p50", "p99", "max"};
    for (int i = 0; i < 3; i++) {
        if (a->n)
            buf_appendf(j, ", \"%s_%s\": %.4f", name, qn[i], (double)pct(a, qs[i]) / unit);
        else
            buf_appendf(j, ", \"%s_%s\": null", name, qn[i]);
    }
}

static void report(struct load *ld, int64_t t_end, double cpu_s)
{
    qsort(ld->ttft.v, ld->ttft.n, sizeof(int64_t), cmp_i64);
    qsort(ld->delay.v, ld->delay.n, sizeof(int64_t), cmp_i64);
    qsort(ld->duration.v, ld->duration.n, sizeof(int64_t), cmp_i64);
    double wall = (double)(t_end - ld->t_start) / 1e6;
    double ramp_s = ld->t_ramped ? (double)(ld->t_ramped - ld->t_start) / 1e6 : 0.0;
    const char *mode = ld->mode == MODE_CHATD ? "chatd" : "raw-openai";

    if (ld->hold_s)
        printf("streamload %s %s:%d  n=%ld hold (mock:stall=1 mock:tokens=%ld) ramp=%ld/s "
               "timeout=%lds\n",
               mode, ld->host, ld->port, ld->n, ld->tokens, ld->ramp, ld->timeout_s);
    else
        printf("streamload %s %s:%d  n=%ld tokens=%ld delay=%ldms ramp=%ld/s timeout=%lds\n", mode,
               ld->host, ld->port, ld->n, ld->tokens, ld->delay_ms, ld->ramp, ld->timeout_s);
    if (ld->hold_s)
        printf("  %-22s %ld (got a first token: %ld, failed after it: %ld, idle for %.3f s)\n",
               "held to the end", ld->completed, ld->held, ld->dropped,
               (double)(t_end - ld->t_held) / 1e6);
    else
        printf("  %-22s %ld\n", "completed", ld->completed);
    printf("  %-22s %ld", "failed", ld->failed);
    if (ld->failed) {
        const char *sep = "  (";
        for (int i = 0; i < FAIL_COUNT; i++) {
            if (ld->fail[i]) {
                printf("%s%s %ld", sep, fail_names[i], ld->fail[i]);
                sep = ", ";
            }
        }
        printf(")");
    }
    printf("\n");
    if (ld->fail[FAIL_TIMEOUT])
        printf("  %-22s connecting %ld, awaiting headers %ld, streaming %ld\n", "timed out while",
               ld->timeout_by_state[ST_SENDING], ld->timeout_by_state[ST_HEADERS],
               ld->timeout_by_state[ST_BODY]);
    printf("  %-22s %8s %8s %8s\n", "", "p50", "p99", "max");
    print_row("ttft ms", &ld->ttft, 1e3, "streams");
    print_row("added delay/token ms", &ld->delay, 1e3, "tokens");
    print_row("stream duration s", &ld->duration, 1e6, "streams");
    printf("  %-22s %.3f s (ramp %.3f s)\n", "wall time", wall, ramp_s);
    printf("  %-22s %ld\n", "peak open streams", ld->peak_active);
    printf("  %-22s %.3f s\n", "streamload cpu", cpu_s);
    if (ld->unstamped || ld->pings || ld->reasoning || ld->eof_after_done)
        printf("  %-22s unstamped %ld, pings %ld, reasoning %ld, eof after done %ld\n", "notes",
               ld->unstamped, ld->pings, ld->reasoning, ld->eof_after_done);
    for (int i = 0; i < ld->nsamples; i++)
        printf("  %-22s %s\n", i ? "" : "failure samples", ld->samples[i]);

    if (ld->json) {
        struct buf j = BUF_INIT;
        buf_appendf(&j,
                    "{\"tool\": \"streamload\", \"mode\": \"%s\", \"port\": %d, \"n\": %ld, "
                    "\"tokens\": %ld, \"delay_ms\": %ld, \"ramp\": %ld, \"timeout_s\": %ld, "
                    "\"completed\": %ld, \"failed\": %ld",
                    mode, ld->port, ld->n, ld->tokens, ld->delay_ms, ld->ramp, ld->timeout_s,
                    ld->completed, ld->failed);
        for (int i = 0; i < FAIL_COUNT; i++)
            buf_appendf(&j, ", \"fail_%s\": %ld", fail_names[i], ld->fail[i]);
        if (ld->hold_s)
            buf_appendf(&j, ", \"hold_s\": %ld, \"held\": %ld, \"dropped\": %ld, \"held_s\": %.3f",
                        ld->hold_s, ld->held, ld->dropped, (double)(t_end - ld->t_held) / 1e6);
        json_pcts(&j, "ttft_ms", &ld->ttft, 1e3);
        json_pcts(&j, "delay_ms", &ld->delay, 1e3);
        json_pcts(&j, "duration_s", &ld->duration, 1e6);
        buf_appendf(&j,
                    ", \"delay_samples\": %zu, \"wall_s\": %.3f, \"ramp_s\": %.3f"
                    ", \"peak_open\": %ld, \"loader_cpu_s\": %.3f, \"unstamped\": %ld"
                    ", \"pings\": %ld, \"eof_after_done\": %ld, \"nofile\": %llu}",
                    ld->delay.n, wall, ramp_s, ld->peak_active, cpu_s, ld->unstamped, ld->pings,
                    ld->eof_after_done, (unsigned long long)ld->nofile);
        printf("%s\n", j.ptr);
        buf_release(&j);
    }
    fflush(stdout);
}

/* --- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: streamload [--host 127.0.0.1] --port PORT [-n 100] [--tokens 100]\n"
               "                  [--delay-ms 50] [--ramp 2000] [--timeout 60] [--json]\n"
               "                  [--raw-openai] [--progress] [--extra 'mock:split ...']\n"
               "                  [--hold SECONDS]\n"
               "  Opens N concurrent streaming chats against chatd's POST /api/chat-stream\n"
               "  (or, with --raw-openai, the mock's POST /v1/chat/completions) and reports\n"
               "  completed/failed streams, time to first token and added delay per token.\n"
               "  --hold S: each stream gets one token (mock:stall=1 mock:tokens=T) and idles;\n"
               "  when all have it, a JSON line with \"phase\": \"held\" is printed and the\n"
               "  streams stay open until SIGUSR1 or S seconds, then are closed.\n"
               "  Exit status: 0 all completed, 1 some failed, 2 usage error.\n");
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static void raise_nofile(struct load *ld)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        ld->nofile = rl.rlim_cur;
    }
    if (ld->nofile != RLIM_INFINITY && (rlim_t)ld->n + FD_SLACK > ld->nofile)
        fprintf(stderr,
                "streamload: -n %ld exceeds the open-file limit %llu (hard limit; %d fds are "
                "needed besides the sockets): streams beyond it cannot be open at once and "
                "will fail to connect\n",
                ld->n, (unsigned long long)ld->nofile, FD_SLACK);
}

static void progress(struct load *ld, int64_t now)
{
    fprintf(stderr, "streamload: %6.1f s  opened %ld  open %ld  %s %ld  failed %ld\n",
            (double)(now - ld->t_start) / 1e6, ld->opened, ld->active,
            ld->hold_s ? "held" : "completed", ld->hold_s ? ld->held - ld->dropped : ld->completed,
            ld->failed);
}

static volatile sig_atomic_t release_hold; /* SIGUSR1: end the hold */

static void on_usr1(int sig)
{
    (void)sig;
    release_hold = 1;
}

/* Streams that are neither finished nor (with --hold) holding. */
static long unsettled(const struct load *ld)
{
    return ld->n - ld->completed - ld->failed - (ld->held - ld->dropped);
}

/* One epoll_wait of up to wait_ms and the events it returns; false when
 * epoll_wait failed (other than by a signal). */
static bool poll_once(struct load *ld, struct epoll_event *evs, int wait_ms, char *rbuf)
{
    int k = epoll_wait(ld->ep, evs, MAX_EVENTS, wait_ms);
    if (k < 0 && errno != EINTR) {
        fprintf(stderr, "streamload: epoll_wait: %s\n", strerror(errno));
        return false;
    }
    for (int i = 0; i < k; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->state != ST_FINISHED)
            conn_event(ld, c, evs[i].events, rbuf);
    }
    return true;
}

/* One JSON line when every stream holds (or failed): the cue to measure. */
static void report_held(const struct load *ld, int64_t now)
{
    printf("{\"tool\": \"streamload\", \"phase\": \"held\", \"n\": %ld, \"held\": %ld, "
           "\"failed\": %ld, \"open\": %ld, \"elapsed_s\": %.3f}\n",
           ld->n, ld->held - ld->dropped, ld->failed, ld->active,
           (double)(now - ld->t_start) / 1e6);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct load ld = {
        .mode = MODE_CHATD,
        .host = "127.0.0.1",
        .extra = "",
        .port = 0,
        .n = 100,
        .tokens = 100,
        .delay_ms = 50,
        .ramp = 2000,
        .timeout_s = 60,
        .ep = -1,
        .nofile = RLIM_INFINITY,
    };
    int rc = 2;
    char *rbuf = NULL;
    struct epoll_event *evs = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long port = 0;
        bool ok = true;
        if (strcmp(a, "--json") == 0) {
            ld.json = true;
            continue;
        } else if (strcmp(a, "--raw-openai") == 0) {
            ld.mode = MODE_OPENAI;
            continue;
        } else if (strcmp(a, "--progress") == 0) {
            ld.progress = true;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (!v) {
            ok = false;
        } else if (strcmp(a, "--host") == 0) {
            ld.host = v;
        } else if (strcmp(a, "--port") == 0) {
            ok = parse_long(v, 1, 65535, &port);
            ld.port = (int)port;
        } else if (strcmp(a, "-n") == 0) {
            ok = parse_long(v, 1, 1000000, &ld.n);
        } else if (strcmp(a, "--tokens") == 0) {
            ok = parse_long(v, 1, 100000, &ld.tokens);
        } else if (strcmp(a, "--delay-ms") == 0) {
            ok = parse_long(v, 0, 600000, &ld.delay_ms);
        } else if (strcmp(a, "--ramp") == 0) {
            ok = parse_long(v, 1, 10000000, &ld.ramp);
        } else if (strcmp(a, "--timeout") == 0) {
            ok = parse_long(v, 1, 86400, &ld.timeout_s);
        } else if (strcmp(a, "--hold") == 0) {
            ok = parse_long(v, 1, 86400, &ld.hold_s);
        } else if (strcmp(a, "--extra") == 0) {
            ld.extra = v;
            for (const char *q = v; *q && ok; q++)
                ok = *q >= 0x20 && *q != '"' && *q != '\\' && *q < 0x7f;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "streamload: bad or incomplete option '%s'\n", a);
            usage(stderr);
            goto out;
        }
        i++;
    }
    if (ld.port == 0) {
        fprintf(stderr, "streamload: --port is required\n");
        usage(stderr);
        goto out;
    }
    /* a load generator aimed elsewhere is a denial-of-service tool */
    if (strcmp(ld.host, "127.0.0.1") != 0 && strcmp(ld.host, "localhost") != 0) {
        fprintf(stderr, "streamload: only 127.0.0.1 or localhost may be targeted, not '%s'\n",
                ld.host);
        goto out;
    }
    ld.addr.sin_family = AF_INET;
    ld.addr.sin_port = htons((uint16_t)ld.port);
    ld.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: epoll_wait returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    raise_nofile(&ld);

    ld.ep = epoll_create1(EPOLL_CLOEXEC);
    if (ld.ep < 0) {
        fprintf(stderr, "streamload: epoll_create1: %s\n", strerror(errno));
        rc = 1;
        goto out;
    }
    ld.conns = xcalloc((size_t)ld.n, sizeof(*ld.conns));
    for (long i = 0; i < ld.n; i++) {
        ld.conns[i].fd = -1;
        ld.conns[i].index = (uint32_t)i;
    }
    ld.ttft.cap = (size_t)ld.n;
    ld.ttft.v = xmalloc(ld.ttft.cap * sizeof(int64_t));
    ld.delay.cap = (size_t)ld.n * (size_t)ld.tokens;
    if (ld.delay.cap > 50000000)
        ld.delay.cap = 50000000;
    ld.delay.v = xmalloc(ld.delay.cap * sizeof(int64_t));
    rbuf = xmalloc(READ_CHUNK);
    evs = xcalloc(MAX_EVENTS, sizeof(*evs));

    ld.t_start = clock_us(CLOCK_MONOTONIC);
    int64_t deadline = ld.t_start + (int64_t)ld.timeout_s * 1000000;
    int64_t next_progress = ld.t_start + 1000000;
    int64_t now = ld.t_start;
    while (unsettled(&ld) > 0 && now < deadline) {
        int wait_ms;
        if (ld.opened < ld.n) {
            /* open whatever the schedule says is due by now, then sleep
             * about until the next slot */
            long due = (long)((now - ld.t_start) * ld.ramp / 1000000) + 1;
            if (due > ld.n)
                due = ld.n;
            while (ld.opened < due)
                conn_open(&ld, &ld.conns[ld.opened++]);
            if (ld.opened == ld.n)
                ld.t_ramped = clock_us(CLOCK_MONOTONIC);
            wait_ms = ld.opened < ld.n ? 1 : 0;
        } else {
            int64_t left = (deadline - now) / 1000 + 1;
            wait_ms = left < 100 ? (int)left : 100;
        }
        if (!poll_once(&ld, evs, wait_ms, rbuf))
            break;
        now = clock_us(CLOCK_MONOTONIC);
        if (ld.progress && now >= next_progress) {
            progress(&ld, now);
            next_progress += 1000000;
        }
    }
    int64_t t_end = clock_us(CLOCK_MONOTONIC);
    for (long i = 0; i < ld.n; i++) {
        struct conn *c = &ld.conns[i];
        if (c->state == ST_FINISHED || c->held)
            continue;
        if (c->state == ST_IDLE) {
            ld.active++; /* conn_fail counts it down again */
            c->state = ST_SENDING;
        }
        ld.timeout_by_state[c->state]++;
        conn_fail(&ld, c, FAIL_TIMEOUT, "unfinished when --timeout expired");
    }
    if (ld.hold_s) {
        /* Hold the idle streams (reading pings, noting any that end) until
         * SIGUSR1 or --hold seconds, then close them: completed. */
        ld.t_held = clock_us(CLOCK_MONOTONIC);
        report_held(&ld, ld.t_held);
        int64_t hold_end = ld.t_held + (int64_t)ld.hold_s * 1000000;
        now = ld.t_held;
        while (!release_hold && now < hold_end && ld.held > ld.dropped) {
            if (!poll_once(&ld, evs, 100, rbuf))
                break;
            now = clock_us(CLOCK_MONOTONIC);
        }
        for (long i = 0; i < ld.n; i++) {
            struct conn *c = &ld.conns[i];
            if (c->state != ST_FINISHED && c->held) {
                ld.completed++;
                conn_close(&ld, c);
            }
        }
        t_end = clock_us(CLOCK_MONOTONIC);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    report(&ld, t_end, cpu_s);
    rc = ld.failed ? 1 : 0;

out:
    if (ld.ep >= 0)
        close(ld.ep);
    free(ld.conns);
    free(ld.ttft.v);
    free(ld.delay.v);
    free(ld.duration.v);
    for (int i = 0; i < ld.nsamples; i++)
        free(ld.samples[i]);
    free(rbuf);
    free(evs);
    return rc;
}
