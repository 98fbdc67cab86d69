/*
 * mock-llm - an OpenAI-compatible chat-completions server: the offline demo
 * model, the upstream of the end-to-end tests and of the benchmarks. The
 * contract, every mock: directive included, is tools/MOCK.md.
 *
 * One thread and one level-triggered epoll set drive every socket; all
 * sockets are non-blocking. A connection owns an input buffer (the request
 * being read) and an output buffer (what the kernel did not take yet) and
 * moves through states: reading the head, reading the body, answering (a
 * stream, a delayed whole reply or a stall), flushing the end of a reply,
 * lingering after an error. Token delays live in one binary min-heap of
 * connections keyed by due time; the loop sleeps in epoll_wait until the
 * earliest, so 10,000 slow streams cost 10,000 heap entries, never a thread
 * or a sleep each. Requests are parsed with jansson; replies are written by
 * hand (json_out_str escapes every string) from a per-reply preformatted
 * event prefix, so a token costs a few memcpys and one send(). A stream
 * stops producing while its reader has more than MOCK_OUT_HIGH bytes
 * queued. SIGINT and SIGTERM arrive on a signalfd, so shutdown is an
 * ordinary event after which everything is freed.
 *
 * Follows HTTP/1.1 (RFC 9112) with keep-alive and Content-Length bodies;
 * streams are chunked Server-Sent Events (WHATWG HTML, "Server-sent
 * events") in OpenAI's chat.completion.chunk format. Left out: TLS, HTTP/2,
 * chunked request bodies (answered 411), and concurrent pipelining
 * (pipelined requests are answered one after the other).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
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
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"

#define MOCK_BACKLOG     4096
#define MOCK_HEAD_MAX    (64 * 1024)       /* bytes of request line and headers */
#define MOCK_BODY_MAX    (8 * 1024 * 1024) /* bytes of request body */
#define MOCK_IN_MAX      (MOCK_HEAD_MAX + MOCK_BODY_MAX + MOCK_HEAD_MAX)
#define MOCK_OUT_HIGH    (256 * 1024)  /* bytes queued above which a stream pauses */
#define MOCK_OUT_LOW     (64 * 1024)   /* bytes queued below which it resumes */
#define MOCK_OUT_KEEP    (16 * 1024)   /* larger output buffers are freed when empty */
#define MOCK_PUMP_BUDGET (1024 * 1024) /* bytes one stream may produce per loop turn */
#define MOCK_TOKENS_MAX  1000000
#define MOCK_DELAY_MAX   3600000 /* ms */
#define MOCK_LINGER_USEC (2 * USEC_PER_SEC)
#define MOCK_READ_SIZE   65536
#define MOCK_MAX_EVENTS  1024
#define MOCK_NO_TIMER    SIZE_MAX

struct options {
    const char *host;
    long port;
    long tokens;   /* default of mock:tokens */
    long delay_ms; /* default of mock:delay */
    bool quiet;
};

enum conn_state {
    ST_HEAD,      /* reading a request line and headers (idle keep-alive too) */
    ST_BODY,      /* reading a Content-Length body */
    ST_STREAM,    /* producing SSE events, paced by the timer heap */
    ST_WHOLE,     /* waiting for the timer to send a whole reply */
    ST_STALL,     /* answering nothing more until the client goes away */
    ST_FLUSH_END, /* the reply is queued; waiting for the kernel to take it */
    ST_LINGER,    /* write side shut after an error; discarding input */
};

/* What happens once the last byte of a reply has been sent. */
enum after {
    AFTER_KEEPALIVE, /* read the next request (or close if the client asked) */
    AFTER_CLOSE,     /* close the connection */
    AFTER_LINGER,    /* shut the write side, drain input, then close */
};

/* Where the content tokens come from. */
enum text_kind {
    TEXT_WORDS,       /* w1 w2 ... wN */
    TEXT_UNICODE,     /* 你好 世界 🌟 ... */
    TEXT_STAMP,       /* <t=USEC> at the time of writing */
    TEXT_SPLIT_WORDS, /* r->text cut after each run of whitespace (demo) */
    TEXT_SPLIT_CHARS, /* r->text cut every 3 UTF-8 characters (echo) */
};

/* Everything one chat reply needs after its request has been consumed. */
struct reply {
    enum text_kind kind;
    char *model;           /* the request's model as a quoted JSON string */
    char *prefix;          /* a stream event up to and including `"delta":` */
    size_t prefix_len;     /* bytes of prefix */
    char *text;            /* demo or echo answer, NULL otherwise */
    size_t text_len;       /* bytes of text */
    size_t text_pos;       /* offset in text of the next token */
    int64_t created;       /* Unix seconds */
    int64_t delay;         /* usec between tokens */
    int64_t due;           /* monotonic usec when the next token is due */
    long reasoning, rsent; /* reasoning tokens: in all, sent so far */
    long content, csent;   /* content tokens: in all, sent so far */
    long stall_k;          /* content tokens sent before a stall */
    int status;            /* mock:status code, 0 if none */
    uint32_t rng;          /* xorshift32 state choosing mock:split piece sizes */
    bool stream, malformed, error_event, stall, stall_headers, crlf, split, close;
    bool triggered; /* malformed / error-event / close already acted on */
};

struct conn {
    int fd;
    enum conn_state state;
    enum after after;         /* meaningful in ST_FLUSH_END */
    uint32_t events;          /* epoll interest currently registered */
    struct buf in;            /* bytes read and not consumed yet */
    size_t scanned;           /* bytes of in already searched for the end of the head */
    size_t head_len;          /* bytes of the current request's head, CRLFCRLF included */
    size_t body_len;          /* bytes of its body (Content-Length) */
    size_t method_len;        /* the method starts at in.ptr */
    size_t target_off;        /* offset of the request target in in */
    size_t target_len;        /* bytes of the request target */
    char *auth;               /* Authorization header of the current request, or NULL */
    size_t auth_len;          /* bytes of auth */
    struct buf out;           /* bytes the kernel has not taken yet, from out_off */
    size_t out_off;           /* bytes of out already sent */
    size_t heap_idx;          /* position in the timer heap, MOCK_NO_TIMER if none */
    int64_t timer_due;        /* monotonic usec the timer fires at */
    struct reply r;           /* the chat reply in progress */
    bool keep_alive;          /* the client allows another request on this connection */
    bool chunked;             /* HTTP/1.1 client: streams use chunked encoding */
    bool expect;              /* Expect: 100-continue still to be answered */
    bool in_chat;             /* counted in stats.active */
    bool peer_eof;            /* the client closed (at least) its sending side */
    bool wait_drain;          /* a stream paused until out drains below MOCK_OUT_LOW */
    bool dead;                /* closed; freed at the end of the loop turn */
    struct conn *prev, *next; /* live list, or dead list (next only) */
};

struct server {
    struct options opt;
    int epfd, lfd, sigfd;
    int spare_fd;          /* released to accept-and-close when out of fds */
    int64_t now;           /* monotonic usec, read once per loop turn */
    int64_t emfile_logged; /* monotonic usec of the last out-of-fds warning */
    struct conn **heap;    /* timer min-heap on conn->timer_due */
    size_t heap_len, heap_cap;
    struct conn *live;    /* every open connection */
    struct conn *dead;    /* closed during this loop turn */
    struct buf ev;        /* scratch: one event or one response body, no cap */
    uint64_t requests;    /* /stats: chat requests received */
    uint64_t active;      /* in progress */
    uint64_t completed;   /* answered to the end */
    uint64_t cancelled;   /* ended by the client before the end */
    bool have_last;       /* a chat request has been received */
    bool last_is_json;    /* last_body parsed as JSON */
    struct buf last_body; /* body of the last chat request */
    struct buf last_auth; /* its Authorization header */
    char rbuf[MOCK_READ_SIZE];
};

/* ---- small output helpers ---------------------------------------------- */

/* These buffers have no cap, so appending can only fail by running out of
 * memory, which aborts inside xrealloc. */
static void put(struct buf *b, const void *p, size_t n)
{
    enum chatd_err err = buf_append(b, p, n);
    assert(err == CHATD_OK);
    (void)err;
}

#define PUT_LIT(b, s) put((b), (s), sizeof(s) - 1)

static void put_json(struct buf *b, struct str s)
{
    enum chatd_err err = json_out_str(b, s.ptr ? s.ptr : "", s.len);
    assert(err == CHATD_OK);
    (void)err;
}

static size_t fmt_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static void put_u64(struct buf *b, uint64_t v)
{
    char d[20];
    put(b, d, fmt_u64(d, v));
}

static size_t fmt_hex(char *dst, size_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[2 * sizeof v];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static void put_eol(struct buf *b, bool crlf)
{
    if (crlf)
        PUT_LIT(b, "\r\n");
    else
        PUT_LIT(b, "\n");
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static struct str str_make(const char *p, size_t n)
{
    return (struct str){p, n};
}

static bool str_ieq(struct str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && strncasecmp(a.ptr, lit, n) == 0;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* ---- timer heap ---------------------------------------------------------- */

static void heap_place(struct server *s, size_t i, struct conn *c)
{
    s->heap[i] = c;
    c->heap_idx = i;
}

static void heap_up(struct server *s, size_t i)
{
    struct conn *c = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent]->timer_due <= c->timer_due)
            break;
        heap_place(s, i, s->heap[parent]);
        i = parent;
    }
    heap_place(s, i, c);
}

static void heap_down(struct server *s, size_t i)
{
    struct conn *c = s->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->heap_len)
            break;
        if (child + 1 < s->heap_len && s->heap[child + 1]->timer_due < s->heap[child]->timer_due)
            child++;
        if (c->timer_due <= s->heap[child]->timer_due)
            break;
        heap_place(s, i, s->heap[child]);
        i = child;
    }
    heap_place(s, i, c);
}

/* Arms (or moves) c's one timer to fire at monotonic usec due. */
static void timer_set(struct server *s, struct conn *c, int64_t due)
{
    c->timer_due = due;
    if (c->heap_idx != MOCK_NO_TIMER) {
        heap_up(s, c->heap_idx);
        heap_down(s, c->heap_idx);
        return;
    }
    if (s->heap_len == s->heap_cap) {
        s->heap_cap = s->heap_cap ? 2 * s->heap_cap : 1024;
        s->heap = xrealloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    heap_place(s, s->heap_len++, c);
    heap_up(s, c->heap_idx);
}

static void timer_cancel(struct server *s, struct conn *c)
{
    size_t i = c->heap_idx;
    if (i == MOCK_NO_TIMER)
        return;
    c->heap_idx = MOCK_NO_TIMER;
    struct conn *last = s->heap[--s->heap_len];
    if (i < s->heap_len) {
        heap_place(s, i, last);
        heap_up(s, i);
        heap_down(s, last->heap_idx);
    }
}

/* ---- connections: lifetime and output ------------------------------------ */

static void reply_release(struct reply *r)
{
    free(r->model);
    free(r->prefix);
    free(r->text);
    memset(r, 0, sizeof *r);
}

static void conn_free(struct conn *c)
{
    buf_release(&c->in);
    buf_release(&c->out);
    free(c->auth);
    reply_release(&c->r);
    free(c);
}

/* Closes c at once. A chat reply still in progress counts as cancelled: the
 * client went away (or misbehaved) before the answer was complete. The
 * struct stays valid until the end of the loop turn. */
static void conn_close(struct server *s, struct conn *c)
{
    if (c->dead)
        return;
    if (c->in_chat) {
        s->cancelled++;
        s->active--;
        c->in_chat = false;
    }
    timer_cancel(s, c);
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = s->dead;
    s->dead = c;
    c->dead = true;
}

static size_t out_pending(const struct conn *c)
{
    return c->out.len - c->out_off;
}

static void conn_set_events(struct server *s, struct conn *c)
{
    uint32_t want = c->peer_eof ? 0 : EPOLLIN | EPOLLRDHUP;
    if (out_pending(c) > 0)
        want |= EPOLLOUT;
    if (want == c->events)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        log_error("mock-llm: epoll_ctl: %s", strerror(errno));
        conn_close(s, c);
        return;
    }
    c->events = want;
}

/* Sends what the kernel takes of c->out; closes c on a write error. */
static void conn_flush(struct server *s, struct conn *c)
{
    while (out_pending(c) > 0) {
        ssize_t n = send(c->fd, c->out.ptr + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(s, c);
        return;
    }
    if (c->out_off == c->out.len) {
        c->out_off = 0;
        if (c->out.cap > MOCK_OUT_KEEP)
            buf_release(&c->out);
        else
            buf_reset(&c->out);
    } else if (c->out_off > c->out.len / 2) {
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    conn_set_events(s, c);
}

/* Writes p with its own send() when nothing is queued before it, so that
 * mock:split pieces reach the socket as separate writes. */
static void send_piece(struct server *s, struct conn *c, const char *p, size_t n)
{
    while (n > 0 && out_pending(c) == 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(s, c);
        return;
    }
    if (n > 0) {
        put(&c->out, p, n);
        conn_set_events(s, c);
    }
}

/* mock:split: writes p in pieces of 1-3 bytes, each a separate send() and,
 * when chunked, a separate HTTP chunk, so that even a client that reads
 * whole chunks sees lines, CRLF pairs and UTF-8 sequences cut apart. */
static void split_write(struct server *s, struct conn *c, const char *p, size_t n, bool chunked)
{
    conn_flush(s, c);
    for (size_t i = 0; i < n && !c->dead;) {
        uint32_t x = c->r.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c->r.rng = x;
        size_t k = 1 + x % 3;
        if (k > n - i)
            k = n - i;
        char piece[16];
        size_t m = 0;
        if (chunked) {
            piece[m++] = (char)('0' + k);
            piece[m++] = '\r';
            piece[m++] = '\n';
        }
        memcpy(piece + m, p + i, k);
        m += k;
        if (chunked) {
            piece[m++] = '\r';
            piece[m++] = '\n';
        }
        send_piece(s, c, piece, m);
        i += k;
    }
}

/* Queues one SSE event (its bytes are p), framed as one HTTP chunk. */
static void queue_event(struct server *s, struct conn *c, const char *p, size_t n)
{
    if (c->r.split) {
        split_write(s, c, p, n, c->chunked);
        return;
    }
    if (c->chunked) {
        char h[24];
        size_t k = fmt_hex(h, n);
        h[k++] = '\r';
        h[k++] = '\n';
        put(&c->out, h, k);
    }
    put(&c->out, p, n);
    if (c->chunked)
        PUT_LIT(&c->out, "\r\n");
}

/* The reply is complete and sent: count it, then go on as c->after says. */
static void finish(struct server *s, struct conn *c)
{
    if (c->in_chat) {
        s->completed++;
        s->active--;
        c->in_chat = false;
    }
    reply_release(&c->r);
    c->wait_drain = false;
    timer_cancel(s, c);
    if (c->peer_eof || c->after == AFTER_CLOSE || (c->after == AFTER_KEEPALIVE && !c->keep_alive)) {
        conn_close(s, c);
        return;
    }
    if (c->after == AFTER_LINGER) {
        /* Closing with unread input would reset the connection and could
         * destroy the error reply before the client reads it. */
        shutdown(c->fd, SHUT_WR);
        buf_release(&c->in);
        c->state = ST_LINGER;
        timer_set(s, c, s->now + MOCK_LINGER_USEC);
        conn_set_events(s, c);
        return;
    }
    c->state = ST_HEAD;
    conn_set_events(s, c);
}

/* Everything of the reply is queued: send it, then finish. */
static void response_end(struct server *s, struct conn *c, enum after after)
{
    c->state = ST_FLUSH_END;
    c->after = after;
    timer_cancel(s, c);
    conn_flush(s, c);
    if (!c->dead && out_pending(c) == 0)
        finish(s, c);
}

static void reply_simple(struct server *s, struct conn *c, int status, const char *ctype,
                         const char *body, size_t len, enum after after)
{
    bool keep = c->keep_alive && !c->peer_eof && after == AFTER_KEEPALIVE;
    bool bodyless = status == 204 || status == 205 || status == 304;
    enum chatd_err err = buf_appendf(&c->out,
                                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                                     "Connection: %s\r\n\r\n",
                                     status, reason_phrase(status), ctype,
                                     bodyless ? (size_t)0 : len, keep ? "keep-alive" : "close");
    assert(err == CHATD_OK);
    (void)err;
    if (!bodyless)
        put(&c->out, body, len);
    response_end(s, c, after);
}

/* Replies {"error": {"message": msg, "type": type}}. */
static void reply_error(struct server *s, struct conn *c, int status, const char *type,
                        struct str msg, enum after after)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    PUT_LIT(b, "{\"error\": {\"message\": ");
    put_json(b, msg);
    PUT_LIT(b, ", \"type\": ");
    put_json(b, str_make(type, strlen(type)));
    PUT_LIT(b, "}}");
    reply_simple(s, c, status, "application/json", b->ptr, b->len, after);
}

/* ---- tokens -------------------------------------------------------------- */

static size_t utf8_seq_len(unsigned char c)
{
    if (c >= 0xf0 && c <= 0xf7)
        return 4;
    if (c >= 0xe0)
        return 3;
    if (c >= 0xc0)
        return 2;
    return 1;
}

/* The next token of r->text: a run of non-space bytes and the whitespace
 * after it (words), or up to 3 UTF-8 characters (chars). */
static struct str take_text(struct reply *r, bool words)
{
    size_t start = r->text_pos, i = start, n = r->text_len;
    if (words) {
        while (i < n && !is_space(r->text[i]))
            i++;
        while (i < n && is_space(r->text[i]))
            i++;
    } else {
        for (int k = 0; k < 3 && i < n; k++) {
            size_t l = utf8_seq_len((unsigned char)r->text[i]);
            i += l < n - i ? l : n - i;
        }
    }
    r->text_pos = i;
    return str_make(r->text + start, i - start);
}

static long count_text_tokens(struct reply *r, bool words)
{
    long n = 0;
    r->text_pos = 0;
    while (r->text_pos < r->text_len) {
        take_text(r, words);
        n++;
    }
    r->text_pos = 0;
    return n;
}

/* Content token r->csent + 1, in tmp or in r->text. */
static struct str next_content(struct reply *r, char tmp[48])
{
    static const char *const unicode[] = {"你好 ", "世界 ", "🌟 "};
    long i = r->csent + 1;
    size_t n = 0;
    switch (r->kind) {
    case TEXT_WORDS:
        tmp[n++] = 'w';
        n += fmt_u64(tmp + n, (uint64_t)i);
        if (i < r->content)
            tmp[n++] = ' ';
        return str_make(tmp, n);
    case TEXT_UNICODE:
        return str_make(unicode[(i - 1) % 3], strlen(unicode[(i - 1) % 3]));
    case TEXT_STAMP:
        memcpy(tmp, "<t=", 3);
        n = 3 + fmt_u64(tmp + 3, (uint64_t)time_now_usec());
        tmp[n++] = '>';
        tmp[n++] = ' ';
        return str_make(tmp, n);
    case TEXT_SPLIT_WORDS:
        return take_text(r, true);
    case TEXT_SPLIT_CHARS:
        return take_text(r, false);
    }
    return str_make("", 0);
}

/* Reasoning token r->rsent + 1: `ri ` but the last is `rN`. */
static struct str next_reasoning(struct reply *r, char tmp[48])
{
    long i = r->rsent + 1;
    size_t n = 0;
    tmp[n++] = 'r';
    n += fmt_u64(tmp + n, (uint64_t)i);
    if (i < r->reasoning)
        tmp[n++] = ' ';
    return str_make(tmp, n);
}

/* ---- streams ------------------------------------------------------------- */

/* Queues one chunk whose delta is {field: tok}; field is `{"name":`. */
static void emit_delta(struct server *s, struct conn *c, const char *field, size_t field_len,
                       struct str tok)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    put(b, c->r.prefix, c->r.prefix_len);
    put(b, field, field_len);
    put_json(b, tok);
    PUT_LIT(b, "},\"finish_reason\":null}]}");
    put_eol(b, c->r.crlf);
    put_eol(b, c->r.crlf);
    queue_event(s, c, b->ptr, b->len);
}

static void emit_line(struct server *s, struct conn *c, struct str line)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    put(b, line.ptr, line.len);
    put_eol(b, c->r.crlf);
    put_eol(b, c->r.crlf);
    queue_event(s, c, b->ptr, b->len);
}

/* Acts on mock:malformed, mock:error-event and mock:close once the first
 * content token is out. False if that ended the reply. */
static bool stream_trigger(struct server *s, struct conn *c)
{
    c->r.triggered = true;
    if (c->r.malformed)
        emit_line(s, c, STR_LIT("data: {this is not json"));
    if (c->dead)
        return false;
    if (c->r.error_event) {
        emit_line(s, c, STR_LIT("data: {\"error\": {\"message\": \"mock stream error\"}}"));
        if (c->dead)
            return false;
        if (c->chunked)
            PUT_LIT(&c->out, "0\r\n\r\n");
        response_end(s, c, AFTER_CLOSE);
        return false;
    }
    if (c->r.close) {
        response_end(s, c, AFTER_CLOSE); /* no [DONE], no last chunk */
        return false;
    }
    return true;
}

static void stream_end(struct server *s, struct conn *c)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    put(b, c->r.prefix, c->r.prefix_len);
    PUT_LIT(b, "{},\"finish_reason\":\"stop\"}]}");
    put_eol(b, c->r.crlf);
    put_eol(b, c->r.crlf);
    queue_event(s, c, b->ptr, b->len);
    if (c->dead)
        return;
    emit_line(s, c, STR_LIT("data: [DONE]"));
    if (c->dead)
        return;
    if (c->chunked)
        PUT_LIT(&c->out, "0\r\n\r\n");
    /* without chunked encoding (HTTP/1.0) only the close ends the body */
    response_end(s, c, c->chunked ? AFTER_KEEPALIVE : AFTER_CLOSE);
}

/* Produces every token that is due, then arms the timer for the next one.
 * Pauses while the client is behind (MOCK_OUT_HIGH) and yields to the
 * other connections after MOCK_PUMP_BUDGET bytes. */
static void pump(struct server *s, struct conn *c)
{
    struct reply *r = &c->r;
    size_t made = 0;
    char tmp[48];
    for (;;) {
        if (out_pending(c) > MOCK_OUT_HIGH) {
            conn_flush(s, c);
            if (c->dead)
                return;
            if (out_pending(c) > MOCK_OUT_LOW) {
                c->wait_drain = true; /* EPOLLOUT resumes us */
                return;
            }
        }
        if (made > MOCK_PUMP_BUDGET) {
            timer_set(s, c, s->now + 1);
            break;
        }
        bool reasoning = r->rsent < r->reasoning;
        bool content = !reasoning && r->csent < r->content && !(r->stall && r->csent >= r->stall_k);
        if (reasoning || content) {
            if (r->due > s->now) {
                timer_set(s, c, r->due);
                break;
            }
            if (reasoning) {
                emit_delta(s, c, "{\"reasoning_content\":", 21, next_reasoning(r, tmp));
                r->rsent++;
            } else {
                emit_delta(s, c, "{\"content\":", 11, next_content(r, tmp));
                r->csent++;
            }
            if (c->dead)
                return;
            made += s->ev.len;
            r->due += r->delay;
            if (content && r->csent == 1 && !stream_trigger(s, c))
                return;
            continue;
        }
        if (!r->triggered && r->content == 0 && !stream_trigger(s, c))
            return;
        if (r->stall) {
            c->state = ST_STALL;
            break;
        }
        stream_end(s, c);
        return;
    }
    conn_flush(s, c);
}

static void stream_start(struct server *s, struct conn *c)
{
    struct reply *r = &c->r;
    struct buf p = BUF_INIT;
    PUT_LIT(&p,
            "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":");
    put_u64(&p, (uint64_t)r->created);
    PUT_LIT(&p, ",\"model\":");
    put(&p, r->model, strlen(r->model));
    PUT_LIT(&p, ",\"choices\":[{\"index\":0,\"delta\":");
    r->prefix_len = p.len;
    r->prefix = buf_take(&p);

    if (c->chunked)
        PUT_LIT(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
    else
        PUT_LIT(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n");
    if (c->chunked && c->keep_alive)
        PUT_LIT(&c->out, "Connection: keep-alive\r\n\r\n");
    else
        PUT_LIT(&c->out, "Connection: close\r\n\r\n");
    c->state = ST_STREAM;
    r->due = s->now + r->delay;
    pump(s, c);
}

/* ---- whole replies ------------------------------------------------------- */

static void whole_reply(struct server *s, struct conn *c)
{
    struct reply *r = &c->r;
    struct buf text = BUF_INIT;
    struct buf thinking = BUF_INIT;
    struct buf *b = &s->ev;
    char tmp[48];
    buf_reset(b);
    if (r->malformed) {
        PUT_LIT(b, "{not json");
    } else {
        for (r->rsent = 0; r->rsent < r->reasoning; r->rsent++) {
            struct str t = next_reasoning(r, tmp);
            put(&thinking, t.ptr, t.len);
        }
        for (r->csent = 0; r->csent < r->content; r->csent++) {
            struct str t = next_content(r, tmp);
            put(&text, t.ptr, t.len);
        }
        PUT_LIT(b, "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":");
        put_u64(b, (uint64_t)r->created);
        PUT_LIT(b, ",\"model\":");
        put(b, r->model, strlen(r->model));
        PUT_LIT(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        put_json(b, buf_str(&text));
        if (r->reasoning > 0) {
            PUT_LIT(b, ",\"reasoning_content\":");
            put_json(b, buf_str(&thinking));
        }
        PUT_LIT(b, "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,"
                   "\"completion_tokens\":");
        put_u64(b, (uint64_t)(r->reasoning + r->content));
        PUT_LIT(b, ",\"total_tokens\":");
        put_u64(b, (uint64_t)(r->reasoning + r->content));
        PUT_LIT(b, "}}");
    }
    buf_release(&text);
    buf_release(&thinking);

    bool keep = c->keep_alive && !c->peer_eof;
    enum chatd_err err = buf_appendf(&c->out,
                                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                                     b->len, keep ? "keep-alive" : "close");
    assert(err == CHATD_OK);
    (void)err;
    if (r->split)
        split_write(s, c, b->ptr, b->len, false);
    else
        put(&c->out, b->ptr, b->len);
    if (!c->dead)
        response_end(s, c, AFTER_KEEPALIVE);
}

/* ---- requests ------------------------------------------------------------ */

struct directives {
    bool any; /* at least one mock:NAME in the message */
    bool echo, unicode, malformed, error_event, stall, stall_headers, crlf, split, stamp, close;
    long tokens;    /* -1 when not given */
    long delay;     /* ms, -1 when not given */
    long reasoning; /* 0 when not given */
    long status;    /* 0 when not given */
    long stall_k;   /* content tokens before mock:stall stops */
};

/* Leading decimal digits of v, clamped to max. False if v has none. */
static bool parse_num(struct str v, long max, long *out)
{
    long n = 0;
    size_t i = 0;
    if (v.len == 0 || !is_digit(v.ptr[0]))
        return false;
    for (; i < v.len && is_digit(v.ptr[i]); i++) {
        n = n * 10 + (v.ptr[i] - '0');
        if (n > max)
            n = max;
    }
    *out = n;
    return true;
}

static void apply_directive(struct directives *d, struct str name, struct str value)
{
    long n = 0;
    bool num = parse_num(value, MOCK_TOKENS_MAX, &n);
    d->any = true;
    if (str_eq(name, "tokens") && num)
        d->tokens = n;
    else if (str_eq(name, "delay") && parse_num(value, MOCK_DELAY_MAX, &n))
        d->delay = n;
    else if (str_eq(name, "reasoning") && num)
        d->reasoning = n;
    else if (str_eq(name, "status") && parse_num(value, 999, &n))
        d->status = n;
    else if (str_eq(name, "stall")) {
        d->stall = true;
        d->stall_k = num ? n : 1;
    } else if (str_eq(name, "echo"))
        d->echo = true;
    else if (str_eq(name, "unicode"))
        d->unicode = true;
    else if (str_eq(name, "malformed"))
        d->malformed = true;
    else if (str_eq(name, "error-event"))
        d->error_event = true;
    else if (str_eq(name, "stall-headers"))
        d->stall_headers = true;
    else if (str_eq(name, "crlf"))
        d->crlf = true;
    else if (str_eq(name, "split"))
        d->split = true;
    else if (str_eq(name, "stamp"))
        d->stamp = true;
    else if (str_eq(name, "close"))
        d->close = true;
}

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || is_digit(ch) || ch == '-' || ch == '_';
}

static bool is_word_char(char ch)
{
    return is_name_char(ch) || (ch >= 'A' && ch <= 'Z');
}

/* Finds every `mock:NAME` or `mock:NAME=VALUE` that starts a word in m. */
static void parse_directives(struct str m, struct directives *d)
{
    memset(d, 0, sizeof *d);
    d->tokens = -1;
    d->delay = -1;
    for (size_t i = 0; i + 5 <= m.len; i++) {
        if (memcmp(m.ptr + i, "mock:", 5) != 0 || (i > 0 && is_word_char(m.ptr[i - 1])))
            continue;
        size_t j = i + 5;
        while (j < m.len && is_name_char(m.ptr[j]))
            j++;
        if (j == i + 5)
            continue;
        struct str name = str_make(m.ptr + i + 5, j - i - 5);
        struct str value = STR_NULL;
        if (j < m.len && m.ptr[j] == '=') {
            size_t k = ++j;
            while (k < m.len && !is_space(m.ptr[k]))
                k++;
            value = str_make(m.ptr + j, k - j);
            j = k;
        }
        apply_directive(d, name, value);
        i = j - 1;
    }
}

/* Appends the text of a message's content: a string, or the "text" of
 * each part of an array of content parts. */
static void content_text(json_t *content, struct buf *out)
{
    size_t i;
    json_t *part;
    if (json_is_string(content)) {
        put(out, json_string_value(content), json_string_length(content));
        return;
    }
    json_array_foreach(content, i, part)
    {
        json_t *t = json_object_get(part, "text");
        if (json_is_string(t))
            put(out, json_string_value(t), json_string_length(t));
    }
}

static void last_user_text(json_t *messages, struct buf *out)
{
    for (size_t i = json_array_size(messages); i-- > 0;) {
        json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "user") == 0) {
            content_text(json_object_get(m, "content"), out);
            return;
        }
    }
}

/* mock:echo: `role:content` of every message, joined with `|`. */
static void echo_text(json_t *messages, struct buf *out)
{
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        json_t *role = json_object_get(m, "role");
        if (i > 0)
            PUT_LIT(out, "|");
        if (json_is_string(role))
            put(out, json_string_value(role), json_string_length(role));
        PUT_LIT(out, ":");
        content_text(json_object_get(m, "content"), out);
    }
}

/* Plans the reply to a valid chat request and starts it. */
static void chat_start(struct server *s, struct conn *c, json_t *root, json_t *messages)
{
    struct reply *r = &c->r;
    struct buf user = BUF_INIT;
    struct buf tmp = BUF_INIT;
    struct directives d;

    last_user_text(messages, &user);
    parse_directives(buf_str(&user), &d);

    json_t *model = json_object_get(root, "model");
    if (json_is_string(model))
        put_json(&tmp, str_make(json_string_value(model), json_string_length(model)));
    else
        PUT_LIT(&tmp, "\"mock\"");
    r->model = buf_take(&tmp);
    r->stream = json_is_true(json_object_get(root, "stream"));
    r->created = time_now_usec() / USEC_PER_SEC;
    r->delay = (d.delay >= 0 ? d.delay : s->opt.delay_ms) * 1000;
    r->rng = 0x9e3779b9u;
    r->kind = TEXT_WORDS;
    r->content = d.tokens >= 0 ? d.tokens : s->opt.tokens;

    if (!d.any) {
        PUT_LIT(&tmp, "Hello! I am the **chatd demo model**, running offline. You said: \"");
        put(&tmp, user.ptr, user.len);
        PUT_LIT(&tmp, "\". Set CHATD_LLM_URL and CHATD_LLM_KEY to talk to a real model.");
        r->text_len = tmp.len;
        r->text = buf_take(&tmp);
        r->kind = TEXT_SPLIT_WORDS;
        r->content = count_text_tokens(r, true);
    } else if (d.stamp) {
        r->kind = TEXT_STAMP;
    } else if (d.echo) {
        echo_text(messages, &tmp);
        r->text_len = tmp.len;
        r->text = buf_take(&tmp);
        r->kind = TEXT_SPLIT_CHARS;
        r->content = count_text_tokens(r, false);
    } else if (d.unicode) {
        r->kind = TEXT_UNICODE;
    }
    r->reasoning = d.reasoning;
    r->status = (int)d.status;
    if (r->status != 0 && (r->status < 200 || r->status > 599))
        r->status = 500; /* a 1xx would leave the client waiting for a final reply */
    r->malformed = d.malformed;
    r->error_event = d.error_event;
    r->stall = d.stall;
    r->stall_k = d.stall_k;
    r->stall_headers = d.stall_headers;
    r->crlf = d.crlf;
    r->split = d.split;
    r->close = d.close;

    if (r->status) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "mock failure %d", r->status);
        reply_error(s, c, r->status, "mock", str_make(msg, (size_t)n), AFTER_KEEPALIVE);
    } else if (r->stall_headers || (r->stall && !r->stream)) {
        c->state = ST_STALL;
    } else if (r->stream) {
        stream_start(s, c);
    } else {
        int64_t wait = (r->reasoning + r->content) * r->delay;
        if (wait > 0) {
            c->state = ST_WHOLE;
            timer_set(s, c, s->now + wait);
        } else {
            whole_reply(s, c);
        }
    }
    buf_release(&user);
    buf_release(&tmp);
}

static void remember_request(struct server *s, struct conn *c, struct str body, bool is_json)
{
    buf_reset(&s->last_body);
    put(&s->last_body, body.ptr, body.len);
    buf_reset(&s->last_auth);
    put(&s->last_auth, c->auth ? c->auth : "", c->auth_len);
    s->last_is_json = is_json;
    s->have_last = true;
}

static void handle_chat(struct server *s, struct conn *c, struct str body)
{
    json_error_t jerr;
    json_t *root = json_loadb(body.ptr, body.len, 0, &jerr);
    s->requests++;
    s->active++;
    c->in_chat = true;
    remember_request(s, c, body, root != NULL);
    if (!root) {
        char msg[256];
        int n = snprintf(msg, sizeof msg, "request body is not valid JSON: %s", jerr.text);
        size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
        reply_error(s, c, 400, "invalid_request_error", str_make(msg, len), AFTER_KEEPALIVE);
        goto out;
    }
    json_t *messages = json_object_get(root, "messages");
    if (!json_is_array(messages)) {
        reply_error(s, c, 400, "invalid_request_error",
                    STR_LIT("'messages' is required and must be an array"), AFTER_KEEPALIVE);
        goto out;
    }
    chat_start(s, c, root, messages);
out:
    json_decref(root);
}

static void handle_stats(struct server *s, struct conn *c)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    PUT_LIT(b, "{\"requests\": ");
    put_u64(b, s->requests);
    PUT_LIT(b, ", \"active\": ");
    put_u64(b, s->active);
    PUT_LIT(b, ", \"completed\": ");
    put_u64(b, s->completed);
    PUT_LIT(b, ", \"cancelled\": ");
    put_u64(b, s->cancelled);
    PUT_LIT(b, "}");
    reply_simple(s, c, 200, "application/json", b->ptr, b->len, AFTER_KEEPALIVE);
}

static void handle_last_request(struct server *s, struct conn *c)
{
    struct buf *b = &s->ev;
    buf_reset(b);
    PUT_LIT(b, "{\"body\": ");
    if (!s->have_last)
        PUT_LIT(b, "null");
    else if (s->last_is_json)
        put(b, s->last_body.ptr, s->last_body.len); /* jansson accepted it as is */
    else
        put_json(b, buf_str(&s->last_body));
    PUT_LIT(b, ", \"authorization\": ");
    put_json(b, buf_str(&s->last_auth));
    PUT_LIT(b, "}");
    reply_simple(s, c, 200, "application/json", b->ptr, b->len, AFTER_KEEPALIVE);
}

/* Routes the complete request at the start of c->in, then consumes it. */
static void dispatch(struct server *s, struct conn *c)
{
    static const char chat_suffix[] = "/chat/completions";
    const size_t suffix_len = sizeof chat_suffix - 1;
    struct str method = str_make(c->in.ptr, c->method_len);
    struct str target = str_make(c->in.ptr + c->target_off, c->target_len);
    struct str body = str_make(c->in.ptr + c->head_len, c->body_len);
    const char *q = memchr(target.ptr, '?', target.len);
    struct str path = str_make(target.ptr, q ? (size_t)(q - target.ptr) : target.len);
    bool chat = path.len >= suffix_len &&
                memcmp(path.ptr + path.len - suffix_len, chat_suffix, suffix_len) == 0;

    if (chat && str_eq(method, "POST")) {
        handle_chat(s, c, body);
    } else if (str_eq(method, "GET") && str_eq(path, "/stats")) {
        handle_stats(s, c);
    } else if (str_eq(method, "GET") && str_eq(path, "/last-request")) {
        handle_last_request(s, c);
    } else {
        struct buf msg = BUF_INIT;
        PUT_LIT(&msg, "unknown endpoint: ");
        put(&msg, method.ptr, method.len);
        PUT_LIT(&msg, " ");
        put(&msg, path.ptr, path.len);
        reply_error(s, c, 404, "invalid_request_error", buf_str(&msg), AFTER_KEEPALIVE);
        buf_release(&msg);
    }
    buf_consume(&c->in, c->head_len + c->body_len);
    if (c->in.len == 0)
        buf_release(&c->in);
    c->head_len = 0;
    c->body_len = 0;
    c->scanned = 0;
    free(c->auth);
    c->auth = NULL;
    c->auth_len = 0;
}

/* True if the comma-separated header value v lists token tok. */
static bool header_has_token(struct str v, const char *tok)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
            i++;
        size_t start = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v.ptr[end - 1] == ' ' || v.ptr[end - 1] == '\t'))
            end--;
        if (str_ieq(str_make(v.ptr + start, end - start), tok))
            return true;
    }
    return false;
}

/* Parses the request head at the start of c->in. Returns 1 when a head
 * was parsed (state ST_BODY), 0 when more bytes are needed, -1 when it was
 * answered with an error. */
static int parse_head(struct server *s, struct conn *c)
{
    const char *p = c->in.ptr;
    size_t len = c->in.len;
    size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
    const char *end = memmem(p + from, len - from, "\r\n\r\n", 4);
    if (!end || (size_t)(end - p) + 4 > MOCK_HEAD_MAX) {
        c->scanned = len;
        if (len <= MOCK_HEAD_MAX)
            return 0;
        reply_error(s, c, 431, "invalid_request_error", STR_LIT("request head too large"),
                    AFTER_LINGER);
        return -1;
    }
    size_t head_len = (size_t)(end - p) + 4;
    const char *line_end = memmem(p, head_len, "\r\n", 2);
    size_t line_len = (size_t)(line_end - p);
    const char *sp1 = memchr(p, ' ', line_len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (!sp2 || sp1 == p || sp2 == sp1 + 1 || sp1[1] != '/')
        goto bad;
    struct str version = str_make(sp2 + 1, (size_t)(line_end - sp2 - 1));
    bool http11 = str_eq(version, "HTTP/1.1");
    if (!http11 && !str_eq(version, "HTTP/1.0"))
        goto bad;

    bool has_length = false, te = false;
    size_t length = 0;
    c->keep_alive = http11;
    c->chunked = http11;
    c->expect = false;
    free(c->auth);
    c->auth = NULL;
    c->auth_len = 0;
    for (const char *h = line_end + 2; h < end + 2;) {
        const char *eol = memmem(h, (size_t)(end + 2 - h), "\r\n", 2);
        const char *colon = memchr(h, ':', (size_t)(eol - h));
        if (!colon || colon == h || h[0] == ' ' || h[0] == '\t')
            goto bad;
        struct str name = str_make(h, (size_t)(colon - h));
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        struct str value = str_make(v, (size_t)(ve - v));
        if (str_ieq(name, "content-length")) {
            size_t n = 0;
            if (value.len == 0 || value.len > 18)
                goto bad;
            for (size_t i = 0; i < value.len; i++) {
                if (!is_digit(value.ptr[i]))
                    goto bad;
                n = n * 10 + (size_t)(value.ptr[i] - '0');
            }
            if (has_length && n != length)
                goto bad;
            has_length = true;
            length = n;
        } else if (str_ieq(name, "transfer-encoding")) {
            te = true;
        } else if (str_ieq(name, "connection")) {
            if (header_has_token(value, "close"))
                c->keep_alive = false;
            else if (header_has_token(value, "keep-alive"))
                c->keep_alive = true;
        } else if (str_ieq(name, "authorization")) {
            free(c->auth);
            c->auth = xmemdup(value.ptr, value.len);
            c->auth_len = value.len;
        } else if (str_ieq(name, "expect")) {
            c->expect = str_ieq(value, "100-continue");
        }
        h = eol + 2;
    }
    if (te) {
        reply_error(s, c, 411, "invalid_request_error",
                    STR_LIT("chunked request bodies are not supported: send Content-Length"),
                    AFTER_LINGER);
        return -1;
    }
    if (length > MOCK_BODY_MAX) {
        reply_error(s, c, 413, "invalid_request_error", STR_LIT("request body larger than 8 MiB"),
                    AFTER_LINGER);
        return -1;
    }
    c->method_len = (size_t)(sp1 - p);
    c->target_off = (size_t)(sp1 + 1 - p);
    c->target_len = (size_t)(sp2 - sp1 - 1);
    c->head_len = head_len;
    c->body_len = length;
    c->scanned = 0;
    c->state = ST_BODY;
    return 1;
bad:
    c->keep_alive = false;
    reply_error(s, c, 400, "invalid_request_error", STR_LIT("malformed HTTP request"),
                AFTER_LINGER);
    return -1;
}

/* Parses and answers the complete requests buffered in c->in, in order. */
static void process_input(struct server *s, struct conn *c)
{
    while (!c->dead) {
        if (c->state == ST_HEAD) {
            /* RFC 9112 2.2: ignore empty lines before a request line */
            size_t skip = 0;
            while (skip + 1 < c->in.len && c->in.ptr[skip] == '\r' && c->in.ptr[skip + 1] == '\n')
                skip += 2;
            if (skip) {
                buf_consume(&c->in, skip);
                c->scanned = 0;
            }
            if (c->in.len == 0 || parse_head(s, c) <= 0)
                break;
        }
        if (c->state != ST_BODY)
            break;
        if (c->in.len < c->head_len + c->body_len) {
            if (c->expect) {
                c->expect = false;
                PUT_LIT(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                conn_flush(s, c);
            }
            break;
        }
        dispatch(s, c);
    }
}

/* ---- event handlers ------------------------------------------------------ */

static void conn_read(struct server *s, struct conn *c)
{
    for (int turn = 0; turn < 8; turn++) {
        ssize_t n = recv(c->fd, s->rbuf, sizeof s->rbuf, 0);
        if (n > 0) {
            if (c->state == ST_LINGER)
                continue;
            if (buf_append(&c->in, s->rbuf, (size_t)n) != CHATD_OK) {
                conn_close(s, c); /* past MOCK_IN_MAX: pipelining megabytes */
                return;
            }
            if ((size_t)n < sizeof s->rbuf)
                return;
            continue;
        }
        if (n == 0) {
            c->peer_eof = true;
            c->keep_alive = false;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_close(s, c);
        return;
    }
}

static void on_writable(struct server *s, struct conn *c)
{
    conn_flush(s, c);
    if (c->dead)
        return;
    if (c->state == ST_FLUSH_END && out_pending(c) == 0) {
        finish(s, c);
    } else if (c->state == ST_STREAM && c->wait_drain && out_pending(c) <= MOCK_OUT_LOW) {
        c->wait_drain = false;
        pump(s, c);
    }
}

/* After any event: answer what was read; close if the client is gone. */
static void conn_settle(struct server *s, struct conn *c)
{
    if (c->dead)
        return;
    if ((c->state == ST_HEAD || c->state == ST_BODY) && c->in.len > 0)
        process_input(s, c);
    if (c->dead)
        return;
    if (c->peer_eof) {
        if (c->state == ST_FLUSH_END)
            conn_set_events(s, c); /* stop polling for input; finish closes */
        else
            conn_close(s, c); /* mid-reply: cancelled */
    }
}

static void conn_event(struct server *s, struct conn *c, uint32_t events)
{
    if (c->dead)
        return;
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(s, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP))
        conn_read(s, c);
    if (!c->dead && (events & EPOLLOUT))
        on_writable(s, c);
    conn_settle(s, c);
}

static void conn_timer(struct server *s, struct conn *c)
{
    switch (c->state) {
    case ST_STREAM:
        pump(s, c);
        break;
    case ST_WHOLE:
        whole_reply(s, c);
        break;
    case ST_LINGER:
        conn_close(s, c);
        break;
    default:
        break;
    }
    conn_settle(s, c);
}

static void accept_all(struct server *s)
{
    for (int i = 0; i < 1024; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Take the connection off the queue and close it, or the
                 * level-triggered listener would wake us forever. */
                if (s->spare_fd >= 0) {
                    close(s->spare_fd);
                    int victim = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
                    if (victim >= 0)
                        close(victim);
                    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                if (s->now - s->emfile_logged > USEC_PER_SEC) {
                    log_warn("mock-llm: out of file descriptors; refusing connections");
                    s->emfile_logged = s->now;
                }
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_error("mock-llm: accept: %s", strerror(errno));
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = xcalloc(1, sizeof *c);
        c->fd = fd;
        c->state = ST_HEAD;
        c->heap_idx = MOCK_NO_TIMER;
        c->keep_alive = true;
        buf_init(&c->in, MOCK_IN_MAX);
        buf_init(&c->out, 0); /* bounded by MOCK_OUT_HIGH or one whole reply */
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event ev = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            log_error("mock-llm: epoll_ctl: %s", strerror(errno));
            close(fd);
            free(c);
            return;
        }
        c->next = s->live;
        if (s->live)
            s->live->prev = c;
        s->live = c;
    }
}

static void run_timers(struct server *s)
{
    while (s->heap_len > 0 && s->heap[0]->timer_due <= s->now) {
        struct conn *c = s->heap[0];
        timer_cancel(s, c);
        conn_timer(s, c);
    }
}

static void free_dead(struct server *s)
{
    while (s->dead) {
        struct conn *c = s->dead;
        s->dead = c->next;
        conn_free(c);
    }
}

static int next_timeout(const struct server *s)
{
    if (s->heap_len == 0)
        return -1;
    int64_t d = s->heap[0]->timer_due - time_mono_usec();
    if (d <= 0)
        return 0;
    d = (d + 999) / 1000;
    return d > INT_MAX ? INT_MAX : (int)d;
}

static void serve(struct server *s)
{
    struct epoll_event evs[MOCK_MAX_EVENTS];
    bool stop = false;
    while (!stop) {
        int n = epoll_wait(s->epfd, evs, MOCK_MAX_EVENTS, next_timeout(s));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("mock-llm: epoll_wait: %s", strerror(errno));
            return;
        }
        s->now = time_mono_usec();
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &s->lfd) {
                accept_all(s);
            } else if (tag == &s->sigfd) {
                struct signalfd_siginfo si;
                if (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                    stop = true;
            } else {
                conn_event(s, tag, evs[i].events);
            }
        }
        run_timers(s);
        free_dead(s);
        if (s->ev.cap > MOCK_OUT_HIGH)
            buf_release(&s->ev); /* after a huge whole reply */
    }
}

/* ---- start-up ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: mock-llm [--host 127.0.0.1] [--port 0] [--tokens 12] [--delay-ms 30] "
          "[--quiet]\n"
          "An OpenAI-compatible chat-completions server for tests and demos; see "
          "tools/MOCK.md.\n",
          f);
}

static bool parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max)
        return false;
    *out = n;
    return true;
}

/* Returns -1 to go on, or the exit status (0 after --help, 2 on error). */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const char *const names[] = {"--host", "--port", "--tokens", "--delay-ms"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        size_t which = 0;
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        for (which = 0; which < sizeof names / sizeof names[0]; which++) {
            size_t n = strlen(names[which]);
            if (strcmp(a, names[which]) == 0) {
                v = i + 1 < argc ? argv[++i] : NULL;
                break;
            }
            if (strncmp(a, names[which], n) == 0 && a[n] == '=') {
                v = a + n + 1;
                break;
            }
        }
        bool ok = v != NULL;
        switch (which) {
        case 0:
            o->host = v;
            break;
        case 1:
            ok = ok && parse_long(v, 0, 65535, &o->port);
            break;
        case 2:
            ok = ok && parse_long(v, 0, MOCK_TOKENS_MAX, &o->tokens);
            break;
        case 3:
            ok = ok && parse_long(v, 0, MOCK_DELAY_MAX, &o->delay_ms);
            break;
        default:
            fprintf(stderr, "mock-llm: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "mock-llm: bad or missing value for '%s'\n", a);
            return 2;
        }
    }
    return -1;
}

/* Thousands of concurrent streams need thousands of descriptors. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("mock-llm: cannot raise the open-file limit: %s", strerror(errno));
}

/* Returns a listening socket, or -1 after logging why not. */
static int listen_on(const struct options *o)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    int fd = -1, rc;
    snprintf(port, sizeof port, "%ld", o->port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(o->host, port, &hints, &res);
    if (rc != 0) {
        log_error("mock-llm: cannot resolve '%s': %s", o->host, gai_strerror(rc));
        goto out;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, MOCK_BACKLOG) == 0)
            goto out;
        log_error("mock-llm: cannot listen on '%s' port %s: %s", o->host, port, strerror(errno));
        close(fd);
        fd = -1;
    }
out:
    if (res)
        freeaddrinfo(res);
    return fd;
}

/* Prints the one ready line the tests wait for. */
static bool announce(int fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        log_error("mock-llm: cannot read the listening address");
        return false;
    }
    if (ss.ss_family == AF_INET6)
        printf("mock-llm: listening on [%s]:%s\n", host, serv);
    else
        printf("mock-llm: listening on %s:%s\n", host, serv);
    return fflush(stdout) == 0;
}

int main(int argc, char **argv)
{
    struct server *s = xcalloc(1, sizeof *s);
    int rc = 1;
    sigset_t set;
    struct sigaction ign = {.sa_handler = SIG_IGN};
    s->epfd = s->lfd = s->sigfd = s->spare_fd = -1;
    s->opt.host = "127.0.0.1";
    s->opt.port = 0;
    s->opt.tokens = 12;
    s->opt.delay_ms = 30;
    int args = parse_args(argc, argv, &s->opt);
    if (args >= 0) {
        rc = args;
        goto out;
    }
    log_set_level(s->opt.quiet ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN);
    raise_nofile();
    sigaction(SIGPIPE, &ign, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0 ||
        (s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        log_error("mock-llm: signalfd: %s", strerror(errno));
        goto out;
    }
    s->lfd = listen_on(&s->opt);
    if (s->lfd < 0)
        goto out;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &s->lfd};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &s->sigfd};
    if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &lev) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sigfd, &sev) != 0) {
        log_error("mock-llm: epoll: %s", strerror(errno));
        goto out;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->now = time_mono_usec();
    if (!announce(s->lfd))
        goto out;
    serve(s);
    rc = 0;
out:
    while (s->live) {
        struct conn *c = s->live;
        s->live = c->next;
        close(c->fd);
        conn_free(c);
    }
    free_dead(s);
    free(s->heap);
    buf_release(&s->ev);
    buf_release(&s->last_body);
    buf_release(&s->last_auth);
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    free(s);
    return rc;
}
