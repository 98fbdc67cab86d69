/*
 * chunk_scan.h - the fast path for decoding an OpenAI streaming chunk.
 *
 * At thousands of streams the LLM thread decodes hundreds of thousands of
 * chunks a second, and a general JSON parser that builds a tree for each
 * one was a third of its time. This scanner validates the whole chunk as
 * strict JSON (RFC 8259: grammar, UTF-8, escapes) without building
 * anything, and picks out choices[0].delta.content and
 * choices[0].delta.reasoning_content (or .reasoning) as they stand in the
 * input, so an unescaped piece of text is passed on without a copy.
 *
 * It is a fast path, not a second parser of record: it accepts only what
 * it can vouch for, and says "decline" for everything unusual (an "error"
 * member, duplicate members on the path, escaped member names, numbers
 * with exponents or more than 15 digits, \u0000, lone surrogates, nesting
 * deeper than 32, any invalid input). The caller then decodes the chunk
 * with jansson, which gives the verdict and the error message. Whenever
 * it accepts, it reports exactly what jansson would.
 */
#ifndef CHATD_LLM_CHUNK_SCAN_H
#define CHATD_LLM_CHUNK_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct chunk_text {
    const char *ptr; /* the JSON string's body, between the quotes; NULL if absent or null */
    size_t len;
    bool escaped; /* holds backslash escapes: decode with chunk_unescape() */
};

struct chunk_fields {
    struct chunk_text content;
    struct chunk_text reasoning; /* reasoning_content, or reasoning if that is absent/null */
};

/* Scans the n bytes of d. True: d is valid JSON and out says what it
 * holds (pointers into d). False: decline, decode d with a full parser. */
bool chunk_scan(const char *d, size_t n, struct chunk_fields *out);

/* Appends the decoded text of a string body that chunk_scan() accepted.
 * CHATD_ETOOBIG past out's cap. */
enum chatd_err chunk_unescape(const struct chunk_text *t, struct buf *out);

#endif
