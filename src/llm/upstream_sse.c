/*
 * upstream_sse.c - incremental SSE framing and OpenAI chunk decoding (see
 * upstream_sse.h).
 *
 * Framing follows the WHATWG "Server-sent events" parsing rules. feed()
 * scans each chunk with memchr for LF and CR. A line that lies whole
 * inside one chunk is processed in place, without a copy. Only a line
 * split across chunks is gathered in p->line. A CR that ends a chunk sets
 * last_cr, so that an LF at the start of the next chunk is taken as the
 * second half of the same CRLF. Data lines are gathered in p->data. All
 * buffers are reset, never freed, between events: the steady state
 * allocates nothing but what json_loadb() needs for one event.
 *
 * Decoding: "[DONE]" (surrounding whitespace tolerated) ends the stream;
 * an event whose data is empty or only whitespace is skipped as a
 * keep-alive; anything else must be a JSON object. Of that object only
 * choices[0].delta is read: reasoning_content (or "reasoning", which
 * vLLM and Ollama use for the same text) is reported before content. A
 * chunk without choices, or with an empty array, carries usage only and is
 * fine; so is a null or absent delta, content or reasoning. A member of
 * the wrong type is malformed. An event named "error", or an object with
 * a non-null "error" member, is an upstream error. Its message goes
 * through upstream_error_reason().
 *
 * Every message that quotes upstream data quotes at most 100 bytes of it.
 * Control characters and invalid UTF-8 in the quote become '?'. A message
 * is therefore always one printable line.
 *
 * Not done here: event ids, retry and reconnection (chatd never
 * reconnects a chat), and UTF-8 validation of deltas (jansson has already
 * validated the JSON text).
 */
#include "llm/upstream_sse.h"

#include "llm/chunk_scan.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/json_out.h"

#define EXCERPT_MAX 100 /* bytes of upstream data quoted in a message */
#define REASON_MAX  200 /* bytes of an upstream error reason */

/* Bytes in the UTF-8 sequence that lead byte c starts (1 if c is ASCII or
 * cannot start one). */
static size_t seq_len(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* Appends s (n bytes) as printable text of at most max bytes. Control
 * characters and bytes that are not valid UTF-8 become '?'. A whole
 * multi-byte character is kept or dropped, never cut. Text longer than max
 * ends in "...". */
static void put_clean(struct buf *b, const char *s, size_t n, size_t max)
{
    size_t room = n <= max ? n : max - 3;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t l = 1;
        bool ok = c >= 0x20 && c != 0x7f;
        if (c >= 0x80) {
            size_t want = seq_len(c);
            bool complete;
            ok = want > 1 && want <= n - i && utf8_valid_prefix(s + i, want, &complete) == want;
            l = ok ? want : 1;
        }
        if (i + l > room)
            break;
        if (ok)
            (void)buf_append(b, s + i, l);
        else
            (void)buf_append_char(b, '?');
        i += l;
    }
    if (i < n)
        (void)buf_append(b, "...", 3);
}

/* Appends 'excerpt' of s: the at most 100 bytes quoted in messages. */
static void put_excerpt(struct buf *b, const char *s, size_t n)
{
    (void)buf_append_char(b, '\'');
    put_clean(b, s, n, EXCERPT_MAX);
    (void)buf_append_char(b, '\'');
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_space((*s)[*n - 1]))
        (*n)--;
}

/* A non-empty string member, or NULL. */
static const char *nonempty(json_t *v, size_t *len)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* The reason in a parsed error body: error.message, error (a string),
 * message, detail (a string, or FastAPI's [{"msg": ...}]), or the body
 * itself when it is a JSON string. NULL if none. */
static const char *reason_in(json_t *root, size_t *len)
{
    const char *r = NULL;
    if (json_is_string(root))
        return nonempty(root, len);
    if (!json_is_object(root))
        return NULL;
    json_t *e = json_object_get(root, "error");
    if (json_is_object(e))
        r = nonempty(json_object_get(e, "message"), len);
    if (!r)
        r = nonempty(e, len);
    if (!r)
        r = nonempty(json_object_get(root, "message"), len);
    json_t *d = json_object_get(root, "detail");
    if (!r)
        r = nonempty(d, len);
    if (!r && json_is_array(d))
        r = nonempty(json_object_get(json_array_get(d, 0), "msg"), len);
    return r;
}

void upstream_error_reason(const char *body, size_t n, struct buf *why)
{
    trim(&body, &n);
    if (n == 0) {
        (void)buf_append_str(why, "(empty reply)");
        return;
    }
    json_t *root = NULL;
    if (body[0] == '{' || body[0] == '"')
        root = json_loadb(body, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    size_t len = 0;
    const char *r = reason_in(root, &len);
    if (r)
        put_clean(why, r, len, REASON_MAX);
    else
        put_clean(why, body, n, REASON_MAX);
    json_decref(root);
}

/* ---- streaming ---- */

void upstream_sse_init(struct upstream_sse *p, const struct upstream_sse_callbacks *cb, void *arg)
{
    assert(cb && cb->delta);
    memset(p, 0, sizeof *p);
    buf_init(&p->line, UPSTREAM_SSE_MAX_LINE);
    buf_init(&p->data, UPSTREAM_SSE_MAX_LINE);
    buf_init(&p->event, UPSTREAM_SSE_MAX_LINE);
    buf_init(&p->error, 0);
    buf_init(&p->scratch, UPSTREAM_SSE_MAX_LINE);
    p->err = CHATD_OK;
    p->cb = cb;
    p->arg = arg;
}

void upstream_sse_release(struct upstream_sse *p)
{
    buf_release(&p->line);
    buf_release(&p->data);
    buf_release(&p->event);
    buf_release(&p->error);
    buf_release(&p->scratch);
}

bool upstream_sse_done(const struct upstream_sse *p)
{
    return p->done;
}

/* Marks p failed with err; the caller then writes p->error. */
static struct buf *fail(struct upstream_sse *p, enum chatd_err err)
{
    p->failed = true;
    p->err = err;
    buf_reset(&p->error);
    return &p->error;
}

/* A malformed chunk: what is wrong, then an excerpt of the event's data. */
static void fail_chunk(struct upstream_sse *p, const char *what, const char *d, size_t n)
{
    struct buf *e = fail(p, CHATD_EINVAL);
    (void)buf_appendf(e, "upstream sent a chunk whose %s: ", what);
    put_excerpt(e, d, n);
}

/* Reports one optional string member of delta; false once p failed. */
static bool report(struct upstream_sse *p, json_t *v, enum upstream_delta kind, const char *name,
                   const char *d, size_t n)
{
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        char what[64];
        snprintf(what, sizeof what, "choices[0].delta.%s is not a string", name);
        fail_chunk(p, what, d, n);
        return false;
    }
    size_t len = json_string_length(v);
    if (len && p->cb->delta(p->arg, kind, json_string_value(v), len)) {
        (void)buf_append_str(fail(p, CHATD_ECANCELLED), "stopped by the delta callback");
        return false;
    }
    return true;
}

static void decode_chunk(struct upstream_sse *p, const char *d, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(d, n, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        struct buf *e = fail(p, CHATD_EINVAL);
        (void)buf_append_str(e, "upstream sent an event that is not JSON (");
        put_clean(e, jerr.text, strlen(jerr.text), EXCERPT_MAX);
        (void)buf_append_str(e, "): ");
        put_excerpt(e, d, n);
        return;
    }
    json_t *err = json_object_get(root, "error");
    if (err && !json_is_null(err)) {
        upstream_error_reason(d, n, fail(p, CHATD_EUPSTREAM));
        goto out;
    }
    json_t *choices = json_object_get(root, "choices");
    if (!choices || json_is_null(choices) || json_array_size(choices) == 0) {
        if (choices && !json_is_null(choices) && !json_is_array(choices))
            fail_chunk(p, "choices is not an array", d, n);
        goto out; /* usage-only or empty: nothing to report */
    }
    json_t *c0 = json_array_get(choices, 0);
    if (!json_is_object(c0)) {
        fail_chunk(p, "choices[0] is not an object", d, n);
        goto out;
    }
    json_t *delta = json_object_get(c0, "delta");
    if (!delta || json_is_null(delta))
        goto out;
    if (!json_is_object(delta)) {
        fail_chunk(p, "choices[0].delta is not an object", d, n);
        goto out;
    }
    json_t *rc = json_object_get(delta, "reasoning_content");
    const char *rname = "reasoning_content";
    if (!rc || json_is_null(rc)) {
        rc = json_object_get(delta, "reasoning");
        rname = "reasoning";
    }
    if (report(p, rc, UPSTREAM_REASONING, rname, d, n))
        report(p, json_object_get(delta, "content"), UPSTREAM_CONTENT, "content", d, n);
out:
    json_decref(root);
}

/* Reports one piece found by chunk_scan(); false once p failed. */
static bool report_fast(struct upstream_sse *p, const struct chunk_text *t,
                        enum upstream_delta kind)
{
    const char *text = t->ptr;
    size_t len = t->len;
    if (!text || !len)
        return true;
    if (t->escaped) {
        buf_reset(&p->scratch);
        if (chunk_unescape(t, &p->scratch) != CHATD_OK) {
            (void)buf_append_str(fail(p, CHATD_ETOOBIG), "upstream sent a piece too large");
            return false;
        }
        text = p->scratch.ptr;
        len = p->scratch.len;
    }
    if (len && p->cb->delta(p->arg, kind, text, len)) {
        (void)buf_append_str(fail(p, CHATD_ECANCELLED), "stopped by the delta callback");
        return false;
    }
    return true;
}

/* The common case without building a JSON tree (chunk_scan.h); false if
 * the chunk needs the full decoder. */
static bool decode_fast(struct upstream_sse *p, const char *d, size_t n)
{
    struct chunk_fields f;
    if (!chunk_scan(d, n, &f))
        return false;
    if (report_fast(p, &f.reasoning, UPSTREAM_REASONING))
        report_fast(p, &f.content, UPSTREAM_CONTENT);
    return true;
}

/* One complete event: its data is in p->data, its name in p->event. */
static void dispatch(struct upstream_sse *p)
{
    if (p->has_data) {
        const char *d = buf_str(&p->data).ptr;
        size_t n = p->data.len;
        p->events++;
        if (str_eq(buf_str(&p->event), "error")) {
            upstream_error_reason(d, n, fail(p, CHATD_EUPSTREAM));
        } else {
            const char *t = d;
            size_t tn = n;
            trim(&t, &tn);
            if (tn == 6 && memcmp(t, "[DONE]", 6) == 0) {
                p->done = true;
            } else if (tn > 0) {
                if (t[0] != '{') {
                    struct buf *e = fail(p, CHATD_EINVAL);
                    (void)buf_append_str(e, "upstream sent an event that is not a JSON object: ");
                    put_excerpt(e, d, n);
                } else if (!decode_fast(p, d, n)) {
                    decode_chunk(p, d, n);
                }
            }
        }
    }
    buf_reset(&p->data);
    buf_reset(&p->event);
    p->has_data = false;
}

static void fail_too_long(struct upstream_sse *p, const char *what, const char *a, size_t an,
                          const char *b, size_t bn)
{
    char head[EXCERPT_MAX + 1];
    size_t hn = an < sizeof head ? an : sizeof head;
    memcpy(head, a, hn);
    size_t more = bn < sizeof head - hn ? bn : sizeof head - hn;
    memcpy(head + hn, b, more);
    struct buf *e = fail(p, CHATD_ETOOBIG);
    (void)buf_appendf(e, "upstream sent %s longer than %d bytes: ", what, UPSTREAM_SSE_MAX_LINE);
    put_excerpt(e, head, hn + more);
}

/* One complete line, without its end. */
static void process_line(struct upstream_sse *p, const char *s, size_t n)
{
    if (!p->started) {
        p->started = true;
        if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
            s += 3;
            n -= 3;
        }
    }
    if (n == 0) {
        dispatch(p);
        return;
    }
    if (s[0] == ':')
        return; /* comment, e.g. a keep-alive */
    const char *colon = memchr(s, ':', n);
    size_t fn = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vn = n - (colon ? fn + 1 : n);
    if (vn && *v == ' ') {
        v++;
        vn--;
    }
    if (fn == 4 && memcmp(s, "data", 4) == 0) {
        enum chatd_err err = CHATD_OK;
        if (p->has_data)
            err = buf_append_char(&p->data, '\n');
        if (!err)
            err = buf_append(&p->data, v, vn);
        if (err)
            fail_too_long(p, "an event", buf_str(&p->data).ptr, p->data.len, v, vn);
        p->has_data = true;
    } else if (fn == 5 && memcmp(s, "event", 5) == 0) {
        buf_reset(&p->event);
        (void)buf_append(&p->event, v, vn); /* vn < the line cap == the event cap */
    }
}

enum chatd_err upstream_sse_feed(struct upstream_sse *p, const char *data, size_t n)
{
    if (p->failed)
        return p->err;
    size_t i = 0;
    if (p->last_cr && n > 0) {
        p->last_cr = false;
        if (data[0] == '\n')
            i = 1;
    }
    while (i < n && !p->done && !p->failed) {
        const char *s = data + i;
        size_t rest = n - i;
        const char *lf = memchr(s, '\n', rest);
        const char *cr = memchr(s, '\r', lf ? (size_t)(lf - s) : rest);
        const char *eol = cr ? cr : lf;
        if (!eol) {
            /* an unfinished line: keep it for the next chunk */
            if (buf_append(&p->line, s, rest))
                fail_too_long(p, "a line", buf_str(&p->line).ptr, p->line.len, s, rest);
            break;
        }
        size_t len = (size_t)(eol - s);
        size_t adv = len + 1;
        if (*eol == '\r') {
            if (adv < rest)
                adv += s[adv] == '\n';
            else
                p->last_cr = true;
        }
        if (p->line.len) {
            if (buf_append(&p->line, s, len)) {
                fail_too_long(p, "a line", p->line.ptr, p->line.len, s, len);
                break;
            }
            process_line(p, p->line.ptr, p->line.len);
            buf_reset(&p->line);
        } else if (len > UPSTREAM_SSE_MAX_LINE) {
            fail_too_long(p, "a line", s, len, "", 0);
            break;
        } else {
            process_line(p, s, len);
        }
        i += adv;
    }
    return p->failed ? p->err : CHATD_OK;
}

/* ---- whole replies ---- */

enum chatd_err upstream_decode_reply(const char *body, size_t n, struct buf *answer,
                                     struct buf *reasoning, struct buf *why)
{
    enum chatd_err err = CHATD_OK;
    size_t answer_len = answer->len, reasoning_len = reasoning ? reasoning->len : 0;
    json_error_t jerr;
    json_t *root = json_loadb(body, n, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        err = CHATD_EINVAL;
        (void)buf_append_str(why, "upstream reply is not JSON (");
        put_clean(why, jerr.text, strlen(jerr.text), EXCERPT_MAX);
        (void)buf_append_str(why, "): ");
        put_excerpt(why, body, n);
        goto out;
    }
    if (!json_is_object(root)) {
        err = CHATD_EINVAL;
        (void)buf_append_str(why, "upstream reply is not a JSON object: ");
        put_excerpt(why, body, n);
        goto out;
    }
    json_t *e = json_object_get(root, "error");
    if (e && !json_is_null(e)) {
        err = CHATD_EUPSTREAM;
        upstream_error_reason(body, n, why);
        goto out;
    }
    const char *what = NULL;
    json_t *c0 = json_array_get(json_object_get(root, "choices"), 0);
    json_t *msg = json_object_get(c0, "message");
    json_t *content = json_object_get(msg, "content");
    json_t *rc = json_object_get(msg, "reasoning_content");
    if (!rc || json_is_null(rc))
        rc = json_object_get(msg, "reasoning");
    if (!c0)
        what = "has no choices";
    else if (!json_is_object(c0))
        what = "has a choices[0] that is not an object";
    else if (!json_is_object(msg))
        what = "has no choices[0].message object";
    else if (content && !json_is_null(content) && !json_is_string(content))
        what = "has a message.content that is not a string";
    else if (rc && !json_is_null(rc) && !json_is_string(rc))
        what = "has a message.reasoning_content that is not a string";
    if (what) {
        err = CHATD_EINVAL;
        (void)buf_appendf(why, "upstream reply %s: ", what);
        put_excerpt(why, body, n);
        goto out;
    }
    if (json_is_string(content))
        err = buf_append(answer, json_string_value(content), json_string_length(content));
    if (!err && reasoning && json_is_string(rc))
        err = buf_append(reasoning, json_string_value(rc), json_string_length(rc));
    if (err)
        (void)buf_append_str(why, "upstream reply is larger than the answer may be");
out:
    if (err) {
        /* leave answer and reasoning as they were */
        answer->len = answer_len;
        if (answer->ptr)
            answer->ptr[answer_len] = '\0';
        if (reasoning) {
            reasoning->len = reasoning_len;
            if (reasoning->ptr)
                reasoning->ptr[reasoning_len] = '\0';
        }
    }
    json_decref(root);
    return err;
}
