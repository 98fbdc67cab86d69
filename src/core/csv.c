/*
 * csv.c - RFC 4180 fields with the formula guard (see csv.h). The common
 * field (plain text, nothing to quote or repair) is one append.
 */
#include "core/csv.h"

#include <string.h>

#include "core/json_out.h"

static const char REPLACEMENT[] = "\xef\xbf\xbd"; /* U+FFFD */

/* Appends a run of valid UTF-8, doubling quotes if asked. */
static enum chatd_err put_run(struct buf *b, const char *s, size_t n, bool quoted)
{
    enum chatd_err err = CHATD_OK;
    while (quoted && !err && n) {
        const char *q = memchr(s, '"', n);
        if (!q)
            break;
        size_t k = (size_t)(q - s) + 1; /* up to and including the quote */
        err = buf_append(b, s, k);
        if (!err)
            err = buf_append_char(b, '"');
        s += k;
        n -= k;
    }
    return err ? err : buf_append(b, s, n);
}

enum chatd_err csv_field(struct buf *b, const char *s, size_t n)
{
    static const char signs[] = "=+-@\t\r";
    bool guard = n > 0 && memchr(signs, s[0], sizeof signs - 1) != NULL;
    bool quoted = false;
    for (size_t i = 0; i < n && !quoted; i++)
        quoted = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    enum chatd_err err = CHATD_OK;
    if (quoted)
        err = buf_append_char(b, '"');
    if (!err && guard)
        err = buf_append_char(b, '\'');
    while (!err && n) {
        bool complete;
        size_t ok = utf8_valid_prefix(s, n, &complete);
        err = put_run(b, s, ok, quoted);
        s += ok;
        n -= ok;
        if (!err && n) { /* one invalid byte */
            err = buf_append(b, REPLACEMENT, sizeof REPLACEMENT - 1);
            s++;
            n--;
        }
    }
    if (!err && quoted)
        err = buf_append_char(b, '"');
    return err;
}
