/*
 * test_upstream_sse.c - the upstream SSE parser and reply decoding
 * (llm/upstream_sse.h).
 *
 * The central property: however the network splits a stream, the parser
 * reports the same deltas. A realistic sample (role chunk, reasoning,
 * Chinese and emoji content, comments, ignored fields, a multi-line data
 * field, a usage-only chunk, [DONE]) is fed in every 2-piece split, byte
 * by byte, and (a shorter sample) in every 3-piece split. It is fed with
 * LF, CRLF and CR line ends and with a leading BOM. Every result is
 * compared with one expected transcript. Error paths check the error kind
 * and that the message says what was wrong and quotes at most 100
 * printable bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "llm/upstream_sse.h"

/* ---- a recorder: deltas as "R:text|" / "C:text|" ---- */

struct rec {
    struct buf log;
    int stop_after; /* stop (return 1) at this delta; 0 = never */
    int n;
};

static int on_delta(void *arg, enum upstream_delta kind, const char *text, size_t len)
{
    struct rec *r = arg;
    assert_true(len > 0);
    assert_int_equal(buf_append_str(&r->log, kind == UPSTREAM_REASONING ? "R:" : "C:"), CHATD_OK);
    assert_int_equal(buf_append(&r->log, text, len), CHATD_OK);
    assert_int_equal(buf_append_char(&r->log, '|'), CHATD_OK);
    r->n++;
    return r->stop_after && r->n == r->stop_after;
}

static const struct upstream_sse_callbacks cbs = {on_delta};

/* Feeds s in the pieces that cuts[] (ascending positions) make; returns the
 * result of the last feed and leaves the transcript in r. */
static enum chatd_err feed_cuts(struct upstream_sse *p, struct rec *r, const char *s, size_t n,
                                const size_t *cuts, size_t ncuts)
{
    enum chatd_err err = CHATD_OK;
    size_t at = 0;
    memset(r, 0, sizeof *r);
    upstream_sse_init(p, &cbs, r);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        err = upstream_sse_feed(p, s + at, end - at);
        at = end;
    }
    return err;
}

/* Runs one feeding, checks it against want, frees everything. */
static void check_cuts(const char *s, size_t n, const size_t *cuts, size_t ncuts, const char *want)
{
    struct upstream_sse p;
    struct rec r;
    enum chatd_err err = feed_cuts(&p, &r, s, n, cuts, ncuts);
    const char *got = r.log.ptr ? r.log.ptr : "";
    if (err != CHATD_OK || strcmp(got, want) != 0 || !upstream_sse_done(&p)) {
        fail_msg("cuts %zu at %zu,%zu: err %d (%s)\n got:  %s\n want: %s", ncuts,
                 ncuts > 0 ? cuts[0] : 0, ncuts > 1 ? cuts[1] : 0, (int)err,
                 p.error.ptr ? p.error.ptr : "", got, want);
    }
    buf_release(&r.log);
    upstream_sse_release(&p);
}

/* ---- the sample ---- */

/* Appends one OpenAI-style chunk event whose choices[0].delta is delta. */
static void add_chunk(struct buf *b, const char *delta)
{
    assert_int_equal(buf_append_str(b, "data: {\"id\":\"chatcmpl-1\",\"object\":"
                                       "\"chat.completion.chunk\",\"created\":1739179800,"
                                       "\"model\":\"deepseek-ai/deepseek-r1\",\"choices\":"
                                       "[{\"index\":0,\"delta\":"),
                     CHATD_OK);
    assert_int_equal(buf_append_str(b, delta), CHATD_OK);
    assert_int_equal(buf_append_str(b, ",\"finish_reason\":null}]}\n\n"), CHATD_OK);
}

static void add(struct buf *b, const char *text)
{
    assert_int_equal(buf_append_str(b, text), CHATD_OK);
}

/* The sample stream with LF line ends (free() the result). */
static char *sample(void)
{
    struct buf b = BUF_INIT;
    add(&b, ": OPENROUTER PROCESSING\n\n");
    add_chunk(&b, "{\"role\":\"assistant\",\"content\":\"\"}");
    add_chunk(&b, "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"用户在问\"}");
    add_chunk(&b, "{\"content\":null,\"reasoning_content\":\"候。🤔 Think\"}");
    add(&b, "id: 17\nretry: 3000\n");
    add_chunk(&b, "{\"content\":\"你好\",\"reasoning_content\":null}");
    add(&b, ": keep-alive\n");
    /* no space after the colon */
    add(&b, "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"，世界 🌍\\n\"}}]}\n\n");
    /* one JSON text over two data lines */
    add(&b, "data: {\"choices\":[{\"index\":0,\n");
    add(&b, "data: \"delta\":{\"content\":\"👩‍💻 \\\"quoted\\\" \\\\ done\"}}]}\n\n");
    add_chunk(&b, "{\"content\":null}");
    add(&b, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    /* usage only */
    add(&b, "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
            "\"completion_tokens\":34,\"total_tokens\":46}}\n\n");
    add(&b, "data: [DONE]\n\n");
    /* ignored: after [DONE] */
    add(&b, "data: {\"choices\":[{\"delta\":{\"content\":\"after done\"}}]}\n\n");
    return buf_take(&b);
}

static const char sample_want[] = "R:用户在问|R:候。🤔 Think|C:你好|C:，世界 🌍\n|"
                                  "C:👩‍💻 \"quoted\" \\ done|";

/* Rewrites every LF of s as eol (the JSON text itself holds no raw LF). */
static char *with_eol(const char *s, const char *eol, size_t *n)
{
    struct buf b = BUF_INIT;
    for (; *s; s++) {
        if (*s == '\n')
            assert_int_equal(buf_append_str(&b, eol), CHATD_OK);
        else
            assert_int_equal(buf_append_char(&b, *s), CHATD_OK);
    }
    *n = b.len;
    return buf_take(&b);
}

static void every_split(const char *s, size_t n, const char *want)
{
    check_cuts(s, n, NULL, 0, want);
    for (size_t i = 0; i <= n; i++)
        check_cuts(s, n, &i, 1, want);
    /* byte by byte */
    size_t *cuts = xmalloc(n * sizeof *cuts);
    for (size_t i = 0; i < n; i++)
        cuts[i] = i;
    check_cuts(s, n, cuts, n, want);
    free(cuts);
}

static void sample_lf_every_split(void **state)
{
    (void)state;
    char *s = sample();
    every_split(s, strlen(s), sample_want);
    free(s);
}

static void sample_crlf_every_split(void **state)
{
    (void)state;
    size_t n;
    char *lf = sample();
    char *s = with_eol(lf, "\r\n", &n);
    every_split(s, n, sample_want);
    free(s);
    free(lf);
}

static void sample_cr_every_split(void **state)
{
    (void)state;
    size_t n;
    char *lf = sample();
    char *s = with_eol(lf, "\r", &n);
    every_split(s, n, sample_want);
    free(s);
    free(lf);
}

static void sample_bom_every_split(void **state)
{
    (void)state;
    /* the BOM right before a data field: unstripped, it would hide it */
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "\xef\xbb\xbf"), CHATD_OK);
    char *lf = sample();
    add_chunk(&b, "{\"content\":\"B\"}");
    add(&b, lf);
    free(lf);
    struct buf want = BUF_INIT;
    assert_int_equal(buf_append_str(&want, "C:B|"), CHATD_OK);
    assert_int_equal(buf_append_str(&want, sample_want), CHATD_OK);
    every_split(b.ptr, b.len, want.ptr);
    buf_release(&want);
    buf_release(&b);
}

static void mixed_line_ends_every_split(void **state)
{
    (void)state;
    static const char s[] = "\xef\xbb\xbf: hi\r\n\r"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\r"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\r\n"
                            "data:{\"choices\":[{\"delta\":{\"reasoning_content\":\"c\"}}]}\r\n\n"
                            "data: [DONE]\r";
    /* the last line has its end but no blank line: [DONE] never dispatches */
    struct upstream_sse p;
    struct rec r;
    assert_int_equal(feed_cuts(&p, &r, s, sizeof s - 1, NULL, 0), CHATD_OK);
    assert_string_equal(r.log.ptr, "C:a|C:b|R:c|");
    assert_false(upstream_sse_done(&p));
    buf_release(&r.log);
    upstream_sse_release(&p);

    /* "\r" + "\n" ends the [DONE] line once (not twice); a last lone CR is
     * the blank line that dispatches it */
    char full[sizeof s + 1];
    memcpy(full, s, sizeof s - 1);
    memcpy(full + sizeof s - 1, "\n\r", 2);
    every_split(full, sizeof s + 1, "C:a|C:b|R:c|");
}

/* Every 3-piece split of a shorter sample, with CR LF pairs to cut. */
static void short_sample_every_3_split(void **state)
{
    (void)state;
    static const char s[] =
        "\xef\xbb\xbf"
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"思\"}}]}\r\n\r\n"
        ":c\r\n"
        "data:{\"choices\":[{\"delta\":{\"content\":\"好🌟\"}}]}\r\n\r\n"
        "data: {\"choices\":[]}\r\n\r\n"
        "data: [DONE]\r\n\r\n";
    size_t n = sizeof s - 1;
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b};
            check_cuts(s, n, cuts, 2, "R:思|C:好🌟|");
        }
    }
}

/* ---- framing details ---- */

static void field_without_colon_and_unknown_fields(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    /* "data" alone is a data field with an empty value; joined with the next
     * by LF, the JSON parses; "dat" and "Data" are not data fields */
    static const char s[] = "data\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n"
                            "dat: junk\nData: junk\nevent\nid\n\n"
                            "data:  {\"choices\":[{\"delta\":{\"content\":\"two spaces\"}}]}\n\n"
                            "data\n\n"
                            "data:\n\n";
    assert_int_equal(feed_cuts(&p, &r, s, sizeof s - 1, NULL, 0), CHATD_OK);
    assert_string_equal(r.log.ptr, "C:x|C:two spaces|");
    assert_int_equal(p.events, 4);
    buf_release(&r.log);
    upstream_sse_release(&p);
}

static void unfinished_event_is_dropped(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    static const char s[] = "data: {\"choices\":[{\"delta\":{\"content\":\"kept\"}}]}\n\n"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"lost\"}}]}\n";
    assert_int_equal(feed_cuts(&p, &r, s, sizeof s - 1, NULL, 0), CHATD_OK);
    assert_string_equal(r.log.ptr, "C:kept|");
    assert_false(upstream_sse_done(&p));
    buf_release(&r.log);
    upstream_sse_release(&p);
}

static void bom_only_at_start(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    /* only the first BOM is skipped; a BOM later in the stream is part of
     * its line: "\xef\xbb\xbf" + "data" is an unknown field */
    static const char s[] = "\xef\xbb\xbf"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n"
                            "\xef\xbb\xbf"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"no\"}}]}\n\n"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"yes\"}}]}\n\n";
    assert_int_equal(feed_cuts(&p, &r, s, sizeof s - 1, NULL, 0), CHATD_OK);
    assert_string_equal(r.log.ptr, "C:first|C:yes|");
    buf_release(&r.log);
    upstream_sse_release(&p);
}

static void done_with_spaces_and_ignores_rest(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    static const char s[] = "data: [DONE] \n\ndata: {not json}\n\n";
    assert_int_equal(feed_cuts(&p, &r, s, sizeof s - 1, NULL, 0), CHATD_OK);
    assert_true(upstream_sse_done(&p));
    assert_int_equal(upstream_sse_feed(&p, "garbage\n\n", 9), CHATD_OK);
    assert_null(r.log.ptr);
    upstream_sse_release(&p);
}

static void empty_feeds(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    memset(&r, 0, sizeof r);
    upstream_sse_init(&p, &cbs, &r);
    assert_int_equal(upstream_sse_feed(&p, NULL, 0), CHATD_OK);
    assert_int_equal(upstream_sse_feed(&p, "data: [DONE]\r", 13), CHATD_OK);
    assert_int_equal(upstream_sse_feed(&p, "", 0), CHATD_OK); /* keeps the pending CR */
    assert_int_equal(upstream_sse_feed(&p, "\n", 1), CHATD_OK);
    assert_false(upstream_sse_done(&p)); /* CR LF was one line end, not a blank line */
    assert_int_equal(upstream_sse_feed(&p, "\n", 1), CHATD_OK);
    assert_true(upstream_sse_done(&p));
    upstream_sse_release(&p);
    upstream_sse_release(&p); /* release twice is harmless */
}

/* ---- errors ---- */

/* msg is one printable line that ends in ": 'EXCERPT'", EXCERPT at most
 * 100 bytes (quotes earlier in msg may come from jansson's own message). */
static void assert_excerpt_ok(const char *msg)
{
    for (const unsigned char *c = (const unsigned char *)msg; *c; c++)
        assert_true(*c >= 0x20 && *c != 0x7f);
    size_t n = strlen(msg);
    const char *a = NULL;
    for (const char *f = strstr(msg, ": '"); f; f = strstr(f + 1, ": '"))
        a = f + 3;
    if (!a || n < 1 || msg[n - 1] != '\'')
        fail_msg("no excerpt at the end of '%s'", msg);
    assert_true((size_t)(msg + n - 1 - a) <= 100);
}

static enum chatd_err feed_all(struct upstream_sse *p, struct rec *r, const char *s)
{
    return feed_cuts(p, r, s, strlen(s), NULL, 0);
}

static void error_event(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    assert_int_equal(feed_all(&p, &r,
                              "data: {\"choices\":[{\"delta\":{\"content\":\"w1 \"}}]}\n\n"
                              "event: error\n"
                              "data: {\"error\":{\"message\":\"Rate limit exceeded\","
                              "\"type\":\"rate_limit\"}}\n\n"
                              "data: {\"choices\":[{\"delta\":{\"content\":\"w2\"}}]}\n\n"),
                     CHATD_EUPSTREAM);
    assert_string_equal(r.log.ptr, "C:w1 |");
    assert_string_equal(p.error.ptr, "Rate limit exceeded");
    assert_true(p.failed);
    assert_int_equal(p.err, CHATD_EUPSTREAM);
    /* sticky */
    static const char more[] = "data: {\"choices\":[{\"delta\":{\"content\":\"w3\"}}]}\n\n";
    assert_int_equal(upstream_sse_feed(&p, more, sizeof more - 1), CHATD_EUPSTREAM);
    assert_string_equal(r.log.ptr, "C:w1 |");
    buf_release(&r.log);
    upstream_sse_release(&p);

    /* an error member in an unnamed event (mock-llm's mock:error-event) */
    assert_int_equal(
        feed_all(&p, &r, "data: {\"error\": {\"message\": \"mock stream error\"}}\n\n"),
        CHATD_EUPSTREAM);
    assert_string_equal(p.error.ptr, "mock stream error");
    upstream_sse_release(&p);

    assert_int_equal(feed_all(&p, &r, "data: {\"error\": \"overloaded\"}\n\n"), CHATD_EUPSTREAM);
    assert_string_equal(p.error.ptr, "overloaded");
    upstream_sse_release(&p);

    /* a named error event with plain text */
    assert_int_equal(feed_all(&p, &r, "event: error\ndata: worker\ndata: died\n\n"),
                     CHATD_EUPSTREAM);
    assert_string_equal(p.error.ptr, "worker?died");
    upstream_sse_release(&p);

    /* "error": null is no error */
    assert_int_equal(
        feed_all(&p, &r,
                 "data: {\"error\":null,\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n"),
        CHATD_OK);
    assert_string_equal(r.log.ptr, "C:ok|");
    buf_release(&r.log);
    upstream_sse_release(&p);
}

static void malformed_json(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    assert_int_equal(feed_all(&p, &r,
                              "data: {\"choices\":[{\"delta\":{\"content\":\"w1\"}}]}\n\n"
                              "data: {this is not json\n\n"
                              "data: {\"choices\":[{\"delta\":{\"content\":\"w2\"}}]}\n\n"),
                     CHATD_EINVAL);
    assert_string_equal(r.log.ptr, "C:w1|");
    assert_non_null(strstr(p.error.ptr, "upstream sent an event that is not JSON"));
    assert_non_null(strstr(p.error.ptr, "'{this is not json'"));
    assert_excerpt_ok(p.error.ptr);
    assert_int_equal(upstream_sse_feed(&p, "\n", 1), CHATD_EINVAL);
    buf_release(&r.log);
    upstream_sse_release(&p);

    static const struct {
        const char *in, *says;
    } cases[] = {
        {"data: [1, 2]\n\n", "is not a JSON object: '[1, 2]'"},
        {"data: hello\n\n", "is not a JSON object: 'hello'"},
        {"data: \"str\"\n\n", "is not a JSON object"},
        {"data: {\"a\":1} trailing\n\n", "is not JSON"},
        {"data: {\"choices\":{\"0\":1}}\n\n", "choices is not an array"},
        {"data: {\"choices\":[\"x\"]}\n\n", "choices[0] is not an object"},
        {"data: {\"choices\":[{\"delta\":\"x\"}]}\n\n", "choices[0].delta is not an object"},
        {"data: {\"choices\":[{\"delta\":{\"content\":5}}]}\n\n",
         "choices[0].delta.content is not a string"},
        {"data: {\"choices\":[{\"delta\":{\"reasoning_content\":[]}}]}\n\n",
         "choices[0].delta.reasoning_content is not a string"},
        {"data: {\"choices\":[{\"delta\":{\"content\":\"bad utf-8 \xff\"}}]}\n\n", "is not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(feed_all(&p, &r, cases[i].in), CHATD_EINVAL);
        if (!strstr(p.error.ptr, cases[i].says))
            fail_msg("'%s': error '%s' lacks '%s'", cases[i].in, p.error.ptr, cases[i].says);
        assert_excerpt_ok(p.error.ptr);
        assert_null(r.log.ptr);
        upstream_sse_release(&p);
    }
}

static void excerpt_is_short_and_clean(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    struct buf in = BUF_INIT;
    assert_int_equal(buf_append_str(&in, "data: {broken \x01\x7f"), CHATD_OK);
    for (int i = 0; i < 200; i++)
        assert_int_equal(buf_append_str(&in, "汉"), CHATD_OK);
    assert_int_equal(buf_append_str(&in, "\ndata: tail\n\n"), CHATD_OK);
    assert_int_equal(feed_cuts(&p, &r, in.ptr, in.len, NULL, 0), CHATD_EINVAL);
    assert_excerpt_ok(p.error.ptr);
    assert_non_null(strstr(p.error.ptr, "'{broken ?\?汉"));
    assert_non_null(strstr(p.error.ptr, "...'"));
    buf_release(&in);
    upstream_sse_release(&p);
}

static void line_cap(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    size_t max = UPSTREAM_SSE_MAX_LINE;
    char *s = xmalloc(max + 16);

    /* a comment line of exactly the cap is fine, in one piece or two */
    s[0] = ':';
    memset(s + 1, 'x', max - 1);
    memcpy(s + max, "\ndata: [DONE]\n\n", 15);
    size_t cut = max / 2;
    assert_int_equal(feed_cuts(&p, &r, s, max + 15, NULL, 0), CHATD_OK);
    assert_true(upstream_sse_done(&p));
    upstream_sse_release(&p);
    assert_int_equal(feed_cuts(&p, &r, s, max + 15, &cut, 1), CHATD_OK);
    assert_true(upstream_sse_done(&p));
    upstream_sse_release(&p);

    /* one byte more is refused, however it arrives */
    memset(s + 1, 'y', max);
    memcpy(s + max + 1, "\n\n", 2);
    size_t cuts[] = {0, 1, max / 2, max, max + 1, max + 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(feed_cuts(&p, &r, s, max + 3, &cuts[i], 1), CHATD_ETOOBIG);
        assert_non_null(strstr(p.error.ptr, "upstream sent a line longer than 1048576 bytes"));
        assert_excerpt_ok(p.error.ptr);
        assert_int_equal(upstream_sse_feed(&p, "\n", 1), CHATD_ETOOBIG);
        upstream_sse_release(&p);
    }
    /* a line without end that grows past the cap is refused before its end */
    assert_int_equal(feed_cuts(&p, &r, s, max + 1, NULL, 0), CHATD_ETOOBIG);
    upstream_sse_release(&p);

    /* many short data lines cannot build an event past the cap either */
    memset(&r, 0, sizeof r);
    upstream_sse_init(&p, &cbs, &r);
    memset(s, ' ', 1024);
    memcpy(s, "data:", 5);
    s[1023] = '\n';
    enum chatd_err err = CHATD_OK;
    for (int i = 0; i < 2048 && !err; i++)
        err = upstream_sse_feed(&p, s, 1024);
    assert_int_equal(err, CHATD_ETOOBIG);
    assert_non_null(strstr(p.error.ptr, "upstream sent an event longer than"));
    upstream_sse_release(&p);
    free(s);
}

static void callback_stops(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    memset(&r, 0, sizeof r);
    r.stop_after = 2;
    upstream_sse_init(&p, &cbs, &r);
    static const char s[] = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"b\","
                            "\"content\":\"c\"}}]}\n\n"
                            "data: {\"choices\":[{\"delta\":{\"content\":\"d\"}}]}\n\n";
    assert_int_equal(upstream_sse_feed(&p, s, sizeof s - 1), CHATD_ECANCELLED);
    assert_string_equal(r.log.ptr, "C:a|R:b|");
    assert_int_equal(upstream_sse_feed(&p, s, sizeof s - 1), CHATD_ECANCELLED);
    assert_string_equal(r.log.ptr, "C:a|R:b|");
    buf_release(&r.log);
    upstream_sse_release(&p);
}

static void reasoning_alias_and_nul(void **state)
{
    (void)state;
    struct upstream_sse p;
    struct rec r;
    assert_int_equal(
        feed_all(&p, &r,
                 "data: {\"choices\":[{\"delta\":{\"reasoning\":\"r\",\"content\":\"\"}}]}\n\n"
                 "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"rc\","
                 "\"reasoning\":\"dup\"}}]}\n\n"
                 "data: {\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\"}}]}\n\n"),
        CHATD_OK);
    assert_int_equal(r.log.len, strlen("R:r|R:rc|C:a") + 3);
    assert_memory_equal(r.log.ptr, "R:r|R:rc|C:a\0b|", r.log.len);
    buf_release(&r.log);
    upstream_sse_release(&p);
}

/* ---- whole replies ---- */

static void decode_reply(void **state)
{
    (void)state;
    struct buf ans = BUF_INIT, rsn = BUF_INIT, why = BUF_INIT;
    static const char ok[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"你好 🌟\","
        "\"reasoning_content\":\"想一想\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"total_tokens\":9}}";
    assert_int_equal(upstream_decode_reply(ok, sizeof ok - 1, &ans, &rsn, &why), CHATD_OK);
    assert_string_equal(ans.ptr, "你好 🌟");
    assert_string_equal(rsn.ptr, "想一想");
    assert_null(why.ptr);
    buf_release(&ans);
    buf_release(&rsn);

    /* content null (e.g. all tokens spent thinking): an empty answer */
    static const char null_content[] = "{\"choices\":[{\"message\":{\"content\":null}}]}";
    assert_int_equal(upstream_decode_reply(null_content, sizeof null_content - 1, &ans, &rsn, &why),
                     CHATD_OK);
    assert_int_equal(ans.len, 0);
    assert_int_equal(rsn.len, 0);

    /* reasoning may be NULL: not wanted */
    assert_int_equal(upstream_decode_reply(ok, sizeof ok - 1, &ans, NULL, &why), CHATD_OK);
    assert_string_equal(ans.ptr, "你好 🌟");
    buf_release(&ans);

    /* an error body */
    static const char err[] = "{\"error\":{\"message\":\"mock failure 500\",\"type\":\"mock\"}}";
    assert_int_equal(upstream_decode_reply(err, sizeof err - 1, &ans, &rsn, &why), CHATD_EUPSTREAM);
    assert_string_equal(why.ptr, "mock failure 500");
    buf_release(&why);

    static const struct {
        const char *in, *says;
    } bad[] = {
        {"{not json", "upstream reply is not JSON"},
        {"", "upstream reply is not JSON"},
        {"[1]", "upstream reply is not a JSON object: '[1]'"},
        {"{\"choices\":[]}", "has no choices"},
        {"{\"object\":\"chat.completion\"}", "has no choices"},
        {"{\"choices\":[7]}", "choices[0] that is not an object"},
        {"{\"choices\":[{\"delta\":{}}]}", "no choices[0].message"},
        {"{\"choices\":[{\"message\":{\"content\":1}}]}", "message.content that is not a string"},
        {"{\"choices\":[{\"message\":{\"content\":\"x\",\"reasoning_content\":{}}}]}",
         "reasoning_content that is not a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(buf_append_str(&ans, "before"), CHATD_OK);
        assert_int_equal(upstream_decode_reply(bad[i].in, strlen(bad[i].in), &ans, &rsn, &why),
                         CHATD_EINVAL);
        if (!strstr(why.ptr, bad[i].says))
            fail_msg("'%s': why '%s' lacks '%s'", bad[i].in, why.ptr, bad[i].says);
        assert_excerpt_ok(why.ptr);
        assert_string_equal(ans.ptr, "before"); /* unchanged */
        buf_release(&ans);
        buf_release(&why);
    }

    /* an answer past the caller's cap: ETOOBIG, both buffers unchanged */
    buf_init(&ans, 8);
    assert_int_equal(buf_append_str(&ans, "ab"), CHATD_OK);
    assert_int_equal(buf_append_str(&rsn, "r0"), CHATD_OK);
    static const char big[] =
        "{\"choices\":[{\"message\":{\"content\":\"0123456789\",\"reasoning_content\":\"x\"}}]}";
    assert_int_equal(upstream_decode_reply(big, sizeof big - 1, &ans, &rsn, &why), CHATD_ETOOBIG);
    assert_string_equal(ans.ptr, "ab");
    assert_string_equal(rsn.ptr, "r0");
    assert_non_null(why.ptr);
    buf_release(&ans);
    buf_release(&rsn);
    buf_release(&why);
}

static void check_reason(const char *body, const char *want)
{
    struct buf why = BUF_INIT;
    upstream_error_reason(body, strlen(body), &why);
    if (strcmp(why.ptr ? why.ptr : "", want) != 0)
        fail_msg("reason of '%s': got '%s', want '%s'", body, why.ptr, want);
    buf_release(&why);
}

static void error_reason(void **state)
{
    (void)state;
    check_reason("{\"error\":{\"message\":\"Invalid API key\",\"type\":\"invalid_request_error\"}}",
                 "Invalid API key");
    check_reason("{\"error\":\"model not found\"}", "model not found");
    check_reason("{\"message\":\"Unauthorized\"}", "Unauthorized");
    check_reason("{\"detail\":\"Not Found\"}", "Not Found");
    check_reason("{\"detail\":[{\"loc\":[\"body\",\"model\"],\"msg\":\"field required\"}]}",
                 "field required");
    check_reason("  \"plain json string\"\n", "plain json string");
    check_reason("Bad Gateway\n", "Bad Gateway");
    check_reason("<html>\r\n<body>502</body>\r\n</html>", "<html>?\?<body>502</body>?\?</html>");
    check_reason("", "(empty reply)");
    check_reason(" \r\n", "(empty reply)");
    /* an error object without a message: the body itself */
    check_reason("{\"error\":{\"code\":500}}", "{\"error\":{\"code\":500}}");
    /* a multi-line message becomes one line */
    check_reason("{\"error\":{\"message\":\"line1\\nline2\"}}", "line1?line2");

    /* long bodies are cut to 200 bytes, whole characters only */
    struct buf body = BUF_INIT, why = BUF_INIT;
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_append_str(&body, "é"), CHATD_OK);
    assert_int_equal(buf_append_str(&why, "upstream: "), CHATD_OK);
    upstream_error_reason(body.ptr, body.len, &why);
    assert_true(why.len - 10 <= 200);
    assert_int_equal(memcmp(why.ptr, "upstream: éé", 14), 0); /* appended, not replaced */
    assert_int_equal(memcmp(why.ptr + why.len - 3, "...", 3), 0);
    assert_int_equal((why.len - 10 - 3) % 2, 0);
    buf_release(&body);
    buf_release(&why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sample_lf_every_split),
        cmocka_unit_test(sample_crlf_every_split),
        cmocka_unit_test(sample_cr_every_split),
        cmocka_unit_test(sample_bom_every_split),
        cmocka_unit_test(mixed_line_ends_every_split),
        cmocka_unit_test(short_sample_every_3_split),
        cmocka_unit_test(field_without_colon_and_unknown_fields),
        cmocka_unit_test(unfinished_event_is_dropped),
        cmocka_unit_test(bom_only_at_start),
        cmocka_unit_test(done_with_spaces_and_ignores_rest),
        cmocka_unit_test(empty_feeds),
        cmocka_unit_test(error_event),
        cmocka_unit_test(malformed_json),
        cmocka_unit_test(excerpt_is_short_and_clean),
        cmocka_unit_test(line_cap),
        cmocka_unit_test(callback_stops),
        cmocka_unit_test(reasoning_alias_and_nul),
        cmocka_unit_test(decode_reply),
        cmocka_unit_test(error_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
