/*
 * chunk_scan.c - strict, allocation-free scan of one OpenAI stream chunk
 * (see chunk_scan.h). A recursive-descent validator over RFC 8259 that
 * skips every value it does not need and remembers where the wanted
 * strings are. Anything it declines goes to jansson, so every shortcut
 * here errs towards declining.
 */
#include "llm/chunk_scan.h"

#include <stdint.h>
#include <string.h>

#include "core/json_out.h"

#define MAX_DEPTH  32
#define MAX_NUMBER 15 /* characters; longer numbers could overflow jansson's types */

struct scan {
    const unsigned char *p, *end;
    int depth;
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool eat(struct scan *s, unsigned char c)
{
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool hex4(struct scan *s, unsigned *v)
{
    if (s->end - s->p < 4)
        return false;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s->p[i]);
        if (h < 0)
            return false;
        r = (r << 4) | (unsigned)h;
    }
    s->p += 4;
    *v = r;
    return true;
}

static bool string(struct scan *s, struct chunk_text *t)
{
    if (!eat(s, '"'))
        return false;
    const unsigned char *start = s->p;
    bool escaped = false, ascii = true;
    while (s->p < s->end) {
        unsigned char c = *s->p;
        if (c == '"') {
            t->ptr = (const char *)start;
            t->len = (size_t)(s->p - start);
            t->escaped = escaped;
            s->p++;
            /* Bytes >= 0x80 are never '"', '\\' or controls, so the body
             * is valid UTF-8 exactly when the raw bytes are. */
            return ascii || utf8_valid(t->ptr, t->len);
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            escaped = true;
            s->p++;
            if (s->p >= s->end)
                return false;
            c = *s->p++;
            if (c == 'u') {
                unsigned v, w;
                if (!hex4(s, &v) || v == 0 || (v >= 0xdc00 && v <= 0xdfff))
                    return false; /* \u0000 and lone low surrogates: decline */
                if (v >= 0xd800 && v <= 0xdbff &&
                    (!eat(s, '\\') || !eat(s, 'u') || !hex4(s, &w) || w < 0xdc00 || w > 0xdfff))
                    return false;
            } else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
                return false;
            }
            continue;
        }
        ascii = ascii && c < 0x80;
        s->p++;
    }
    return false;
}

static bool number(struct scan *s)
{
    const unsigned char *start = s->p;
    eat(s, '-');
    if (s->p >= s->end)
        return false;
    if (*s->p == '0') {
        s->p++;
    } else if (*s->p >= '1' && *s->p <= '9') {
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    } else {
        return false;
    }
    if (eat(s, '.')) {
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return false;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
        return false; /* exponents: let jansson judge overflow */
    return s->p - start <= MAX_NUMBER;
}

static bool literal(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool value(struct scan *s);

/*
 * Walks the object (close is '}') or array (close is ']') at s->p, calling
 * each() with s->p at every value, which each() consumes; key is the
 * member's name, or NULL in an array.
 */
typedef bool (*each_fn)(struct scan *s, const struct chunk_text *key, void *arg);

static bool walk(struct scan *s, unsigned char close, each_fn each, void *arg)
{
    if (!eat(s, close == '}' ? '{' : '[') || ++s->depth > MAX_DEPTH)
        return false;
    ws(s);
    if (eat(s, close)) {
        s->depth--;
        return true;
    }
    for (;;) {
        struct chunk_text key;
        if (close == '}') {
            if (!string(s, &key))
                return false;
            ws(s);
            if (!eat(s, ':'))
                return false;
            ws(s);
        }
        if (!each(s, close == '}' ? &key : NULL, arg))
            return false;
        ws(s);
        if (eat(s, close))
            break;
        if (!eat(s, ','))
            return false;
        ws(s);
    }
    s->depth--;
    return true;
}

/* A value nobody wants. */
static bool skip(struct scan *s, const struct chunk_text *key, void *arg)
{
    (void)key;
    (void)arg;
    return value(s);
}

static bool value(struct scan *s)
{
    struct chunk_text t;
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
        return walk(s, '}', skip, NULL);
    case '[':
        return walk(s, ']', skip, NULL);
    case '"':
        return string(s, &t);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    default:
        return number(s);
    }
}

/* True if the member is name. The members on the path are matched with
 * this; a name with escapes could spell a wanted one, so the callers
 * decline it (skipped objects need no such care). */
static bool key_is(const struct chunk_text *k, const char *name)
{
    size_t n = strlen(name);
    return k->len == n && memcmp(k->ptr, name, n) == 0;
}

struct delta_state {
    struct chunk_text content, reasoning_content, reasoning;
    bool seen_content, seen_rc, seen_r;
};

/* A string or null; anything else is declined (jansson reports it). */
static bool text_or_null(struct scan *s, struct chunk_text *t, bool *seen)
{
    if (*seen)
        return false; /* duplicate member */
    *seen = true;
    if (s->p < s->end && *s->p == 'n') {
        t->ptr = NULL;
        return literal(s, "null", 4);
    }
    return string(s, t);
}

static bool delta_member(struct scan *s, const struct chunk_text *key, void *arg)
{
    struct delta_state *d = arg;
    if (key->escaped)
        return false;
    if (key_is(key, "content"))
        return text_or_null(s, &d->content, &d->seen_content);
    if (key_is(key, "reasoning_content"))
        return text_or_null(s, &d->reasoning_content, &d->seen_rc);
    if (key_is(key, "reasoning"))
        return text_or_null(s, &d->reasoning, &d->seen_r);
    return value(s);
}

struct choice_state {
    struct delta_state delta;
    bool seen_delta;
    bool read; /* choices[0] was read */
};

static bool choice_member(struct scan *s, const struct chunk_text *key, void *arg)
{
    struct choice_state *c = arg;
    if (key->escaped)
        return false;
    if (!key_is(key, "delta"))
        return value(s);
    if (c->seen_delta)
        return false;
    c->seen_delta = true;
    if (s->p < s->end && *s->p == 'n')
        return literal(s, "null", 4);
    return walk(s, '}', delta_member, &c->delta);
}

struct top_state {
    struct choice_state choice;
    bool seen_choices;
};

/* choices[0] must be an object, and is read; the others are skipped. */
static bool choice_element(struct scan *s, const struct chunk_text *key, void *arg)
{
    struct choice_state *c = arg;
    (void)key;
    if (c->read)
        return value(s);
    c->read = true;
    return walk(s, '}', choice_member, c);
}

static bool choices(struct scan *s, struct choice_state *c)
{
    if (s->p < s->end && *s->p == 'n')
        return literal(s, "null", 4);
    return walk(s, ']', choice_element, c); /* not an array: jansson reports it */
}

static bool top_member(struct scan *s, const struct chunk_text *key, void *arg)
{
    struct top_state *t = arg;
    if (key->escaped)
        return false;
    if (key_is(key, "error"))
        return false; /* the rare path: jansson extracts the reason */
    if (!key_is(key, "choices"))
        return value(s);
    if (t->seen_choices)
        return false;
    t->seen_choices = true;
    return choices(s, &t->choice);
}

bool chunk_scan(const char *d, size_t n, struct chunk_fields *out)
{
    struct scan s = {(const unsigned char *)d, (const unsigned char *)d + n, 0};
    struct top_state t;
    memset(&t, 0, sizeof t);
    memset(out, 0, sizeof *out);
    ws(&s);
    if (!walk(&s, '}', top_member, &t))
        return false;
    ws(&s);
    if (s.p != s.end)
        return false;
    const struct delta_state *ds = &t.choice.delta;
    out->content = ds->content;
    out->reasoning = ds->reasoning_content.ptr ? ds->reasoning_content : ds->reasoning;
    return true;
}

static void put_utf8(char *o, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        o[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*n)++] = (char)(0xc0 | (cp >> 6));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xe0 | (cp >> 12));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*n)++] = (char)(0xf0 | (cp >> 18));
        o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

enum chatd_err chunk_unescape(const struct chunk_text *t, struct buf *out)
{
    if (!t->escaped)
        return buf_append(out, t->ptr, t->len);
    const char *p = t->ptr, *end = t->ptr + t->len;
    enum chatd_err err = CHATD_OK;
    while (!err && p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        if (!bs)
            return buf_append(out, p, (size_t)(end - p));
        err = buf_append(out, p, (size_t)(bs - p));
        p = bs + 1;
        char o[4];
        size_t on = 0;
        /* chunk_scan() validated every escape, so no checks here. */
        switch (*p++) {
        case 'b':
            o[on++] = '\b';
            break;
        case 'f':
            o[on++] = '\f';
            break;
        case 'n':
            o[on++] = '\n';
            break;
        case 'r':
            o[on++] = '\r';
            break;
        case 't':
            o[on++] = '\t';
            break;
        case 'u': {
            struct scan s = {(const unsigned char *)p, (const unsigned char *)end, 0};
            unsigned v = 0, w = 0;
            hex4(&s, &v);
            uint32_t cp = v;
            if (v >= 0xd800 && v <= 0xdbff) {
                s.p += 2; /* the "\u" of the low surrogate */
                hex4(&s, &w);
                cp = 0x10000 + ((v - 0xd800) << 10) + (w - 0xdc00);
            }
            p = (const char *)s.p;
            put_utf8(o, &on, cp);
            break;
        }
        default:
            o[on++] = p[-1];
            break; /* " \ / */
        }
        if (!err)
            err = buf_append(out, o, on);
    }
    return err;
}
