/*
 * json_out.c - JSON string escaping with UTF-8 repair (see json_out.h).
 *
 * The common case, a run of plain ASCII that needs no escaping, is copied
 * with one buf_append per run, not per byte.
 */
#include "core/json_out.h"

#include <string.h>

/* Decodes one UTF-8 sequence at s[0..n); returns its length (1-4) if valid,
 * 0 if invalid, or -1 if s is a valid but incomplete prefix. */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return -1;
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
        /* reject overlong forms and surrogates as early as possible */
        if (i == 1) {
            if (len == 3 && c == 0xe0 && s[1] < 0xa0)
                return 0;
            if (len == 3 && c == 0xed && s[1] > 0x9f)
                return 0;
            if (len == 4 && c == 0xf0 && s[1] < 0x90)
                return 0;
            if (len == 4 && c == 0xf4 && s[1] > 0x8f)
                return 0;
        }
    }
    (void)cp;
    return len;
}

size_t utf8_valid_prefix(const char *s, size_t n, bool *complete)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    *complete = true;
    while (i < n) {
        /* Most text is ASCII: skip it eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        while (i < n && u[i] < 0x80)
            i++;
        if (i == n)
            break;
        int l = utf8_seq(u + i, n - i);
        if (l == -1) {
            *complete = false;
            break;
        }
        if (l == 0)
            break;
        i += (size_t)l;
    }
    return i;
}

bool utf8_valid(const char *s, size_t n)
{
    bool complete;
    return utf8_valid_prefix(s, n, &complete) == n;
}

/* True if none of the 8 bytes in w needs attention: no control
 * character, quote, backslash or non-ASCII byte (the "hasless"/"haszero"
 * bit tricks, exact for existence). */
static inline bool plain8(uint64_t w)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    uint64_t special = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs) | w;
    return (special & highs) == 0;
}

enum chatd_err json_out_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    enum chatd_err err = buf_append_char(b, '"');
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    size_t i = 0;
    while (!err && i < n) {
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (!plain8(w))
                break;
            i += 8;
        }
        if (i == n)
            break;
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            int l = utf8_seq(u + i, n - i);
            if (l > 0) {
                i += (size_t)l;
                continue;
            }
        }
        err = buf_append(b, s + run, i - run);
        if (err)
            break;
        char esc[6];
        size_t elen = 2;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (c < 0x20) {
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                elen = 6;
            } else {
                /* an invalid UTF-8 byte: U+FFFD in place of it */
                memcpy(esc, "\xef\xbf\xbd", 3);
                elen = 3;
            }
        }
        err = buf_append(b, esc, elen);
        i++;
        run = i;
    }
    if (!err)
        err = buf_append(b, s + run, n - run);
    if (!err)
        err = buf_append_char(b, '"');
    return err;
}

enum chatd_err json_out_key(struct buf *b, bool first, const char *key)
{
    enum chatd_err err = first ? CHATD_OK : buf_append(b, ", ", 2);
    if (!err)
        err = json_out_str(b, key, strlen(key));
    if (!err)
        err = buf_append(b, ": ", 2);
    return err;
}

enum chatd_err json_out_kv_str(struct buf *b, bool first, const char *key, const char *v, size_t n)
{
    enum chatd_err err = json_out_key(b, first, key);
    return err ? err : json_out_str(b, v, n);
}

enum chatd_err json_out_kv_int(struct buf *b, bool first, const char *key, int64_t v)
{
    enum chatd_err err = json_out_key(b, first, key);
    return err ? err : buf_appendf(b, "%lld", (long long)v);
}

enum chatd_err json_out_kv_bool(struct buf *b, bool first, const char *key, bool v)
{
    enum chatd_err err = json_out_key(b, first, key);
    return err ? err : buf_append_str(b, v ? "true" : "false");
}
