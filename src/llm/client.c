/*
 * client.c - the LLM thread (see client.h).
 *
 * libcurl's multi_socket API driven by epoll, as its docs recommend past
 * a few thousand transfers: curl tells us which sockets to watch
 * (socket callback -> epoll_ctl) and when to call it back (timer callback
 * -> a timerfd); an eventfd wakes the thread for commands from other
 * threads (add, cancel, stop). Every CURL and CURLM handle is created,
 * used and destroyed on this thread only (libcurl's rule; curl_easy_pause
 * and curl_multi_remove_handle in particular).
 *
 * The reply is classified on its first bytes: a non-2xx status collects
 * the error body (capped) for the message; text/event-stream goes through
 * the incremental parser (upstream_sse.c) and out as deltas as it
 * arrives; anything else is collected (capped) and decoded as a whole
 * chat-completions reply. Upstream transfers are never paused: an LLM
 * generates at its own pace, and pausing only invites the HTTP/2 stalls
 * listed in notes/libraries.md. HTTP/1.1 is pinned for the same reason.
 */
#include "llm/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"

#define WHOLE_REPLY_MAX (16 * 1024 * 1024) /* a non-streamed reply */
#define ERROR_BODY_MAX  (64 * 1024)        /* kept of an error body */
#define MAX_EVENTS      256

enum reply_kind { REPLY_UNKNOWN, REPLY_SSE, REPLY_WHOLE, REPLY_ERROR };

struct llm_call {
    atomic_uint refs;
    struct llm *llm;
    CURL *easy;
    char *body; /* the request JSON */
    size_t body_len;
    bool stream;
    enum reply_kind kind;
    struct upstream_sse parser;
    struct buf raw;      /* whole reply or error body */
    enum chatd_err fail; /* set when the write callback aborts */
    struct buf fail_msg;
    bool finished;     /* done() has run */
    int64_t last_byte; /* monotonic usec of the last byte received (or start) */
    const struct llm_callbacks *cb;
    void *arg;
    struct llm_call *prev, *next; /* llm->running */
    char errbuf[CURL_ERROR_SIZE];
};

enum cmd_type { CMD_ADD, CMD_CANCEL };

struct cmd {
    enum cmd_type type;
    struct llm_call *call; /* holds a reference */
    struct cmd *next;
};

struct llm {
    char *endpoint; /* base + "/chat/completions" */
    char *model;
    int64_t timeout; /* seconds */
    struct curl_slist *hdr_stream, *hdr_whole;
    CURLM *multi;
    int epfd, evfd, tfd;
    int idlefd; /* ticks once a second: silent calls time out */
    pthread_t thread;
    pthread_mutex_t lock; /* guards cmds, cmds_tail, stopping */
    struct cmd *cmds, *cmds_tail;
    bool stopping;
    struct llm_call *running; /* LLM thread only */
};

static const struct upstream_sse_callbacks sse_callbacks;

static void call_unref(struct llm_call *call)
{
    if (atomic_fetch_sub(&call->refs, 1) != 1)
        return;
    upstream_sse_release(&call->parser);
    buf_release(&call->raw);
    buf_release(&call->fail_msg);
    free(call->body);
    free(call);
}

void llm_call_release(struct llm_call *call)
{
    if (call)
        call_unref(call);
}

/* Queues a command for the LLM thread; false (and nothing queued) once the
 * client is stopping. The command takes over one reference to call. */
static bool post(struct llm *llm, enum cmd_type type, struct llm_call *call)
{
    struct cmd *c = xcalloc(1, sizeof *c);
    c->type = type;
    c->call = call;
    pthread_mutex_lock(&llm->lock);
    bool stopping = llm->stopping;
    if (!stopping) {
        if (llm->cmds_tail)
            llm->cmds_tail->next = c;
        else
            llm->cmds = c;
        llm->cmds_tail = c;
    }
    pthread_mutex_unlock(&llm->lock);
    if (stopping) {
        free(c);
        return false;
    }
    uint64_t one = 1;
    ssize_t w = write(llm->evfd, &one, sizeof one);
    (void)w; /* the counter only saturates; the thread will still wake */
    return true;
}

/* ---- the LLM thread ---- */

static void set_fail(struct llm_call *call, enum chatd_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_fail(struct llm_call *call, enum chatd_err err, const char *fmt, ...)
{
    if (call->fail)
        return;
    call->fail = err;
    va_list ap;
    va_start(ap, fmt);
    buf_reset(&call->fail_msg);
    buf_vappendf(&call->fail_msg, fmt, ap);
    va_end(ap);
}

static int sse_delta(void *arg, enum upstream_delta kind, const char *text, size_t len)
{
    struct llm_call *call = arg;
    call->cb->delta(call->arg, kind, text, len);
    return 0;
}

static const struct upstream_sse_callbacks sse_callbacks = {.delta = sse_delta};

static void classify(struct llm_call *call)
{
    long status = 0;
    char *ct = NULL;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (status < 200 || status > 299) {
        call->kind = REPLY_ERROR;
        buf_init(&call->raw, ERROR_BODY_MAX);
    } else if (call->stream && (!ct || strncasecmp(ct, "text/event-stream", 17) == 0)) {
        call->kind = REPLY_SSE;
    } else {
        call->kind = REPLY_WHOLE;
        buf_init(&call->raw, WHOLE_REPLY_MAX);
    }
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct llm_call *call = ud;
    size_t n = size * nmemb;
    call->last_byte = time_mono_usec();
    if (call->kind == REPLY_UNKNOWN)
        classify(call);
    switch (call->kind) {
    case REPLY_SSE: {
        enum chatd_err err = upstream_sse_feed(&call->parser, p, n);
        if (err == CHATD_EUPSTREAM) {
            set_fail(call, CHATD_EUPSTREAM, "upstream error: %s", call->parser.error.ptr);
            return 0;
        }
        if (err) {
            set_fail(call, CHATD_EUPSTREAM, "upstream sent a malformed stream: %s",
                     call->parser.error.len ? call->parser.error.ptr : chatd_strerror(err));
            return 0;
        }
        return n;
    }
    case REPLY_ERROR:
        if (call->raw.len < ERROR_BODY_MAX)
            buf_append(&call->raw, p,
                       n < ERROR_BODY_MAX - call->raw.len ? n : ERROR_BODY_MAX - call->raw.len);
        return n;
    case REPLY_WHOLE:
        if (buf_append(&call->raw, p, n) != CHATD_OK) {
            set_fail(call, CHATD_EUPSTREAM, "upstream reply is larger than %d bytes",
                     WHOLE_REPLY_MAX);
            return 0;
        }
        return n;
    case REPLY_UNKNOWN:
        break;
    }
    return 0;
}

/* Seconds curl may take to connect: the timeout, but at most 10 s. */
static long connect_limit_s(const struct llm *llm)
{
    return llm->timeout < 10 ? (long)llm->timeout : 10;
}

/* Works out how the call ended, tells its owner, and forgets it. */
static void finish(struct llm *llm, struct llm_call *call, CURLcode result, enum chatd_err forced,
                   const char *forced_msg)
{
    if (call->finished)
        return;
    struct buf msg = BUF_INIT;
    enum chatd_err err = CHATD_OK;
    long status = 0;
    if (call->easy)
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);

    if (forced) {
        err = forced;
        buf_append_str(&msg, forced_msg);
    } else if (call->fail) {
        err = call->fail;
        buf_append(&msg, call->fail_msg.ptr, call->fail_msg.len);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        /* curl's limits (start_call): connecting, and the whole call - ten
         * times the timeout for a stream, whose silence check_idle bounds. */
        curl_off_t connected = 0;
        err = CHATD_ETIMEOUT;
        if (call->easy)
            curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connected);
        if (!connected)
            buf_appendf(&msg, "the model did not answer in time (no connection within %ld s)",
                        connect_limit_s(llm));
        else
            buf_appendf(&msg, "the model did not answer in time (limit %lld s%s)",
                        (long long)llm->timeout * (call->stream ? 10 : 1),
                        call->stream ? " for a whole stream" : "");
    } else if (result != CURLE_OK) {
        err = CHATD_EUPSTREAM;
        buf_appendf(&msg, "cannot reach the model: %s",
                    call->errbuf[0] ? call->errbuf : curl_easy_strerror(result));
    } else if (call->kind == REPLY_ERROR || call->kind == REPLY_UNKNOWN) {
        err = CHATD_EUPSTREAM;
        buf_appendf(&msg, "upstream returned HTTP %ld: ", status);
        upstream_error_reason(buf_str(&call->raw).ptr, call->raw.len, &msg);
    } else if (call->kind == REPLY_SSE) {
        if (!upstream_sse_done(&call->parser)) {
            err = CHATD_EUPSTREAM;
            buf_append_str(&msg, "upstream closed the stream before the answer was complete");
        }
    } else {
        struct buf answer = BUF_INIT, reasoning = BUF_INIT, why = BUF_INIT;
        enum chatd_err e = upstream_decode_reply(buf_str(&call->raw).ptr, call->raw.len, &answer,
                                                 &reasoning, &why);
        if (e == CHATD_OK) {
            if (reasoning.len)
                call->cb->delta(call->arg, UPSTREAM_REASONING, reasoning.ptr, reasoning.len);
            if (answer.len)
                call->cb->delta(call->arg, UPSTREAM_CONTENT, answer.ptr, answer.len);
        } else {
            err = CHATD_EUPSTREAM;
            buf_appendf(&msg,
                        e == CHATD_EUPSTREAM ? "upstream error: %s"
                                             : "upstream sent a malformed reply: %s",
                        why.len ? why.ptr : chatd_strerror(e));
        }
        buf_release(&answer);
        buf_release(&reasoning);
        buf_release(&why);
    }

    if (call->easy) {
        curl_multi_remove_handle(llm->multi, call->easy);
        curl_easy_cleanup(call->easy);
        call->easy = NULL;
    }
    if (call->prev)
        call->prev->next = call->next;
    else if (llm->running == call)
        llm->running = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
    call->finished = true;
    if (err && err != CHATD_ECANCELLED)
        log_warn("llm: call failed: %s", msg.ptr);
    call->cb->done(call->arg, err, err ? msg.ptr : NULL);
    buf_release(&msg);
    call_unref(call); /* the LLM thread's reference */
}

static void start_call(struct llm *llm, struct llm_call *call)
{
    CURL *e = curl_easy_init();
    if (!e) {
        finish(llm, call, CURLE_OK, CHATD_EUPSTREAM, "cannot create an upstream request");
        return;
    }
    call->easy = e;
    call->last_byte = time_mono_usec();
    long timeout_ms = (long)llm->timeout * 1000;
    long connect_ms = connect_limit_s(llm) * 1000;
    curl_easy_setopt(e, CURLOPT_URL, llm->endpoint);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->stream ? llm->hdr_stream : llm->hdr_whole);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "chatd");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Tokens are small; curl's 16 KiB default receive buffer per transfer
     * is most of a stream's memory at thousands of streams. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, call->stream ? timeout_ms * 10 : timeout_ms);
    CURLMcode mc = curl_multi_add_handle(llm->multi, e);
    if (mc != CURLM_OK) {
        finish(llm, call, CURLE_OK, CHATD_EUPSTREAM, curl_multi_strerror(mc));
        return;
    }
    call->next = llm->running;
    if (llm->running)
        llm->running->prev = call;
    llm->running = call;
}

/* Runs the queued commands; returns false once asked to stop. */
static bool run_commands(struct llm *llm)
{
    uint64_t count;
    ssize_t r = read(llm->evfd, &count, sizeof count);
    (void)r;
    pthread_mutex_lock(&llm->lock);
    struct cmd *c = llm->cmds;
    bool stopping = llm->stopping;
    llm->cmds = llm->cmds_tail = NULL;
    pthread_mutex_unlock(&llm->lock);
    while (c) {
        struct cmd *next = c->next;
        if (c->type == CMD_ADD) {
            if (stopping)
                finish(llm, c->call, CURLE_OK, CHATD_ECANCELLED, "chatd is shutting down");
            else
                start_call(llm, c->call);
        } else {
            finish(llm, c->call, CURLE_OK, CHATD_ECANCELLED, "cancelled");
        }
        call_unref(c->call); /* the command's reference */
        free(c);
        c = next;
    }
    return !stopping;
}

static void check_done(struct llm *llm)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(llm->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct llm_call *call = NULL;
        CURLcode result = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        finish(llm, call, result, CHATD_OK, NULL);
    }
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct llm *llm = userp;
    (void)e;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(llm->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    ev.data.fd = s;
    if (epoll_ctl(llm->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT &&
        epoll_ctl(llm->epfd, EPOLL_CTL_ADD, s, &ev) != 0)
        log_error("llm: epoll_ctl(%d): %s", (int)s, strerror(errno));
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct llm *llm = userp;
    struct itimerspec its = {0};
    (void)multi;
    if (timeout_ms > 0) {
        its.it_value.tv_sec = timeout_ms / 1000;
        its.it_value.tv_nsec = (timeout_ms % 1000) * 1000000;
    } else if (timeout_ms == 0) {
        its.it_value.tv_nsec = 1; /* as soon as possible */
    }
    timerfd_settime(llm->tfd, 0, &its, NULL);
    return 0;
}

/* Ends the calls that received nothing for `timeout` seconds. curl's own
 * low-speed check averages over several seconds, so a stall after some
 * data would be noticed late; this is exact to the tick. */
static void check_idle(struct llm *llm)
{
    int64_t limit = llm->timeout * USEC_PER_SEC, now = time_mono_usec();
    struct llm_call *call = llm->running;
    while (call) {
        struct llm_call *next = call->next;
        if (now - call->last_byte >= limit) {
            struct buf msg = BUF_INIT;
            buf_appendf(&msg, "the model did not answer in time (%lld s without a byte)",
                        (long long)llm->timeout);
            finish(llm, call, CURLE_OK, CHATD_ETIMEOUT, msg.ptr);
            buf_release(&msg);
        }
        call = next;
    }
}

static void *llm_main(void *arg)
{
    struct llm *llm = arg;
    struct epoll_event evs[MAX_EVENTS];
    int running = 0;
    bool go = true;
    while (go) {
        int n = epoll_wait(llm->epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("llm: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == llm->evfd) {
                go = run_commands(llm) && go;
            } else if (fd == llm->idlefd) {
                uint64_t exp;
                ssize_t r = read(llm->idlefd, &exp, sizeof exp);
                (void)r;
                check_idle(llm);
            } else if (fd == llm->tfd) {
                uint64_t exp;
                ssize_t r = read(llm->tfd, &exp, sizeof exp);
                (void)r;
                curl_multi_socket_action(llm->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            } else {
                int flags = ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                            ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                            ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
                curl_multi_socket_action(llm->multi, fd, flags, &running);
            }
        }
        check_done(llm);
    }
    /* Stopping: end every call in progress. */
    while (llm->running)
        finish(llm, llm->running, CURLE_OK, CHATD_ECANCELLED, "chatd is shutting down");
    return NULL;
}

/* ---- the public side ---- */

static void free_llm(struct llm *llm)
{
    if (llm->multi)
        curl_multi_cleanup(llm->multi);
    curl_slist_free_all(llm->hdr_stream);
    curl_slist_free_all(llm->hdr_whole);
    if (llm->epfd >= 0)
        close(llm->epfd);
    if (llm->evfd >= 0)
        close(llm->evfd);
    if (llm->tfd >= 0)
        close(llm->tfd);
    if (llm->idlefd >= 0)
        close(llm->idlefd);
    pthread_mutex_destroy(&llm->lock);
    free(llm->endpoint);
    free(llm->model);
    free(llm);
}

enum chatd_err llm_start(const struct llm_options *opt, struct llm **out)
{
    *out = NULL;
    struct llm *llm = xcalloc(1, sizeof *llm);
    llm->epfd = llm->evfd = llm->tfd = llm->idlefd = -1;
    pthread_mutex_init(&llm->lock, NULL);
    struct buf b = BUF_INIT;
    buf_appendf(&b, "%s/chat/completions", opt->url);
    llm->endpoint = buf_take(&b);
    llm->model = xstrdup(opt->model);
    llm->timeout = opt->timeout;

    struct curl_slist **lists[2] = {&llm->hdr_stream, &llm->hdr_whole};
    for (int i = 0; i < 2; i++) {
        *lists[i] = curl_slist_append(*lists[i], "Content-Type: application/json");
        *lists[i] = curl_slist_append(*lists[i], i == 0 ? "Accept: text/event-stream"
                                                        : "Accept: application/json");
        *lists[i] = curl_slist_append(*lists[i], "Expect:"); /* no 100-continue round trip */
        if (opt->key && *opt->key) {
            struct buf h = BUF_INIT;
            buf_appendf(&h, "Authorization: Bearer %s", opt->key);
            *lists[i] = curl_slist_append(*lists[i], h.ptr);
            buf_release(&h);
        }
    }
    llm->multi = curl_multi_init();
    llm->epfd = epoll_create1(EPOLL_CLOEXEC);
    llm->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    llm->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    llm->idlefd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!llm->multi || llm->epfd < 0 || llm->evfd < 0 || llm->tfd < 0 || llm->idlefd < 0 ||
        !llm->hdr_stream || !llm->hdr_whole) {
        log_error("llm: cannot set up the upstream client: %s", strerror(errno));
        free_llm(llm);
        return CHATD_EINTERNAL;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = llm->evfd;
    epoll_ctl(llm->epfd, EPOLL_CTL_ADD, llm->evfd, &ev);
    ev.data.fd = llm->tfd;
    epoll_ctl(llm->epfd, EPOLL_CTL_ADD, llm->tfd, &ev);
    ev.data.fd = llm->idlefd;
    epoll_ctl(llm->epfd, EPOLL_CTL_ADD, llm->idlefd, &ev);
    struct itimerspec tick = {.it_interval = {.tv_sec = 1}, .it_value = {.tv_sec = 1}};
    timerfd_settime(llm->idlefd, 0, &tick, NULL);
    curl_multi_setopt(llm->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(llm->multi, CURLMOPT_SOCKETDATA, llm);
    curl_multi_setopt(llm->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(llm->multi, CURLMOPT_TIMERDATA, llm);
    curl_multi_setopt(llm->multi, CURLMOPT_MAXCONNECTS, 256L);
    if (pthread_create(&llm->thread, NULL, llm_main, llm) != 0) {
        log_error("llm: cannot start the LLM thread");
        free_llm(llm);
        return CHATD_EINTERNAL;
    }
    pthread_setname_np(llm->thread, "chatd-llm");
    *out = llm;
    return CHATD_OK;
}

void llm_stop(struct llm *llm)
{
    if (!llm)
        return;
    pthread_mutex_lock(&llm->lock);
    bool was = llm->stopping;
    llm->stopping = true;
    pthread_mutex_unlock(&llm->lock);
    if (was)
        return;
    uint64_t one = 1;
    ssize_t w = write(llm->evfd, &one, sizeof one);
    (void)w;
    pthread_join(llm->thread, NULL);
    /* Commands queued before stopping was set but after the thread's last
     * look at the queue. No new ones can arrive now. */
    struct cmd *c = llm->cmds;
    llm->cmds = llm->cmds_tail = NULL;
    while (c) {
        struct cmd *next = c->next;
        if (c->type == CMD_ADD)
            finish(llm, c->call, CURLE_OK, CHATD_ECANCELLED, "chatd is shutting down");
        call_unref(c->call);
        free(c);
        c = next;
    }
}

void llm_free(struct llm *llm)
{
    if (!llm)
        return;
    llm_stop(llm);
    free_llm(llm);
}

enum chatd_err llm_submit(struct llm *llm, const struct llm_message *messages, size_t n,
                          bool stream, const struct llm_callbacks *cb, void *arg,
                          struct llm_call **out)
{
    *out = NULL;
    struct buf b = BUF_INIT;
    buf_append_str(&b, "{");
    json_out_kv_str(&b, true, "model", llm->model, strlen(llm->model));
    json_out_key(&b, false, "messages");
    buf_append_str(&b, "[");
    for (size_t i = 0; i < n; i++) {
        buf_append_str(&b, i ? ", {" : "{");
        json_out_kv_str(&b, true, "role", messages[i].role, messages[i].role_len);
        json_out_kv_str(&b, false, "content", messages[i].content, messages[i].content_len);
        buf_append_str(&b, "}");
    }
    buf_append_str(&b, "]");
    json_out_kv_bool(&b, false, "stream", stream);
    json_out_kv_int(&b, false, "temperature", 1);
    json_out_kv_int(&b, false, "top_p", 1);
    json_out_kv_int(&b, false, "max_tokens", 4096);
    buf_append_str(&b, "}");

    struct llm_call *call = xcalloc(1, sizeof *call);
    atomic_init(&call->refs, 3); /* caller, LLM thread, the add command */
    call->llm = llm;
    call->body_len = b.len;
    call->body = buf_take(&b);
    call->stream = stream;
    call->cb = cb;
    call->arg = arg;
    upstream_sse_init(&call->parser, &sse_callbacks, call);

    if (!post(llm, CMD_ADD, call)) {
        atomic_store(&call->refs, 1);
        call_unref(call);
        return CHATD_ECANCELLED;
    }
    *out = call;
    return CHATD_OK;
}

void llm_cancel(struct llm_call *call)
{
    if (!call)
        return;
    atomic_fetch_add(&call->refs, 1); /* the command's reference */
    if (!post(call->llm, CMD_CANCEL, call))
        call_unref(call); /* stopping: every call is being ended anyway */
}
