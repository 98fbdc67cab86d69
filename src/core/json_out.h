/*
 * json_out.h - writing JSON text into a buffer, without building a tree.
 *
 * Used for every response body, SSE event and export line, so it is the
 * one place that decides how text becomes a JSON string (RFC 8259):
 *   - '"' and '\\' are escaped; control characters U+0000-U+001F become
 *     \b \f \n \r \t or \u00XX; DEL and everything else pass through;
 *   - valid UTF-8 is copied as is (the original service printed Chinese
 *     unescaped, like json.dumps(..., ensure_ascii=False));
 *   - bytes that are not valid UTF-8 (stray continuation bytes, truncated
 *     or overlong sequences, surrogates, > U+10FFFF) are each replaced by
 *     U+FFFD, so the output is always valid JSON and valid UTF-8 whatever
 *     the upstream or the database holds.
 * Separators follow the original service: ", " between members and ": "
 * after keys, e.g. {"status": "success", "cached": false}.
 */
#ifndef CHATD_CORE_JSON_OUT_H
#define CHATD_CORE_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Appends s (n bytes) as a quoted JSON string. CHATD_ETOOBIG past b's cap. */
enum chatd_err json_out_str(struct buf *b, const char *s, size_t n);

/* Appends `"key": "value"` preceded by ", " unless first. */
enum chatd_err json_out_kv_str(struct buf *b, bool first, const char *key, const char *v, size_t n);
/* Appends `"key": 123`. */
enum chatd_err json_out_kv_int(struct buf *b, bool first, const char *key, int64_t v);
/* Appends `"key": true|false`. */
enum chatd_err json_out_kv_bool(struct buf *b, bool first, const char *key, bool v);
/* Appends `"key": ` (for a nested value the caller writes next). */
enum chatd_err json_out_key(struct buf *b, bool first, const char *key);

/* Length of the longest prefix of s (n bytes) that is valid UTF-8 and does
 * not end inside a multi-byte sequence; *complete is set false when the
 * remaining bytes could still become valid with more input. */
size_t utf8_valid_prefix(const char *s, size_t n, bool *complete);
/* True if all n bytes of s are valid UTF-8. */
bool utf8_valid(const char *s, size_t n);

#endif
