/*
 * upstream_sse.h - incremental parser for an OpenAI-compatible streaming
 * chat-completions reply (text/event-stream).
 *
 * Two layers, both incremental, fed whatever byte chunks the network gives
 * (split anywhere: mid-line, mid-CRLF, mid-UTF-8 sequence):
 *   1. SSE framing (WHATWG HTML "Server-sent events"): a UTF-8 BOM at the
 *      start of the stream is skipped; lines end in LF, CR
 *      or CRLF; lines starting with ':' are comments; "field: value" with
 *      one optional space removed; data lines of one event are joined with
 *      LF; a blank line dispatches the event; fields other than data and
 *      event are ignored; a final event without its blank line is dropped.
 *   2. OpenAI chunk decoding of each event's data: "[DONE]" ends the
 *      stream; otherwise the data is a JSON object whose
 *      choices[0].delta.content and choices[0].delta.reasoning_content
 *      (strings, possibly null or absent) are reported as deltas; an object
 *      with an "error" member (or an event named "error") is an upstream
 *      error whose message is error.message (or error as a string); data
 *      that is not a JSON object is malformed.
 * The parser owns no network state and calls back synchronously from
 * upstream_sse_feed(). Lines longer than the cap are an error, so a broken
 * upstream cannot make chatd buffer without bound.
 */
#ifndef CHATD_LLM_UPSTREAM_SSE_H
#define CHATD_LLM_UPSTREAM_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

enum upstream_delta {
    UPSTREAM_CONTENT,   /* part of the answer */
    UPSTREAM_REASONING, /* part of the model's reasoning ("thinking") */
};

struct upstream_sse_callbacks {
    /* A non-empty piece of text (complete UTF-8 as sent by the upstream;
     * not validated here). Return non-zero to stop parsing (feed returns
     * CHATD_ECANCELLED). */
    int (*delta)(void *arg, enum upstream_delta kind, const char *text, size_t len);
};

#define UPSTREAM_SSE_MAX_LINE (1024 * 1024)

struct upstream_sse {
    struct buf line;    /* the current, unfinished line */
    struct buf data;    /* data of the current event */
    struct buf event;   /* event name of the current event */
    bool has_data;      /* a data field was seen in the current event */
    bool last_cr;       /* the previous chunk ended in CR: skip one LF */
    bool started;       /* the first line was seen: no BOM to skip any more */
    bool done;          /* [DONE] was seen; later input is ignored */
    bool failed;        /* an error was reported; later input is ignored */
    struct buf error;   /* human-readable reason when failed */
    struct buf scratch; /* a decoded piece that held escapes */
    enum chatd_err err; /* why it failed: as upstream_sse_feed() returns */
    size_t events;      /* events decoded so far (for tests and logs) */
    const struct upstream_sse_callbacks *cb;
    void *arg;
};

/* Prepares p. cb and arg are kept; cb must outlive p. */
void upstream_sse_init(struct upstream_sse *p, const struct upstream_sse_callbacks *cb, void *arg);
void upstream_sse_release(struct upstream_sse *p);

/* Feeds n bytes. Returns CHATD_OK, or once the stream failed:
 * CHATD_EUPSTREAM for an error reported by the upstream, CHATD_EINVAL for
 * malformed input (p->error says what was wrong, e.g. "upstream sent an
 * event that is not JSON: ..."), CHATD_ETOOBIG for an over-long line,
 * CHATD_ECANCELLED if a callback asked to stop. After a failure every
 * further call returns the same error. */
enum chatd_err upstream_sse_feed(struct upstream_sse *p, const char *data, size_t n);
/* True once "data: [DONE]" has been seen. */
bool upstream_sse_done(const struct upstream_sse *p);

/*
 * Decodes a whole non-streamed chat-completions reply (JSON). On success
 * appends choices[0].message.content to answer and
 * choices[0].message.reasoning_content (if any) to reasoning. On an
 * {"error": ...} body returns CHATD_EUPSTREAM with the message in why; on
 * anything else malformed returns CHATD_EINVAL with why saying what.
 */
enum chatd_err upstream_decode_reply(const char *body, size_t n, struct buf *answer,
                                     struct buf *reasoning, struct buf *why);

/* Extracts a human-readable reason from an upstream error body (JSON with
 * error.message, error, message or detail; else the text itself, cut to
 * 200 bytes, control characters replaced). Appends it to why. */
void upstream_error_reason(const char *body, size_t n, struct buf *why);

#endif
