/*
 * client.h - calls to the upstream OpenAI-compatible chat-completions API.
 *
 * One thread (the LLM thread) owns a libcurl multi handle and every easy
 * handle; nothing else ever touches them. Other threads hand it calls
 * through a command queue (llm_submit, llm_cancel) and get answers through
 * callbacks that run on the LLM thread. Callbacks must be quick and must
 * not block (no database, no network): copy the text, wake whoever waits.
 *
 * A call's life: llm_submit() queues it and returns a reference to it.
 * The LLM thread sends POST {base}/chat/completions with
 * {"model", "messages", "stream", "temperature": 1, "top_p": 1,
 * "max_tokens": 4096}, then calls delta() for each piece of the answer as
 * it arrives (streamed or not), and finally done() exactly once: CHATD_OK
 * when the answer is complete; CHATD_EUPSTREAM (HTTP error, malformed or
 * truncated reply, connection failure), CHATD_ETIMEOUT (no byte for
 * timeout seconds, or longer in all than allowed) or CHATD_ECANCELLED
 * otherwise, with a message fit for the client (the upstream's reason,
 * never the API key). No callback runs after done().
 *
 * Timeouts: connect min(timeout, 10) s; silence: no byte for `timeout`
 * seconds (checked once a second by the LLM thread); total: `timeout`
 * for a whole reply, 10 x `timeout` for a streamed one (a long answer
 * streams for minutes, but never silently).
 */
#ifndef CHATD_LLM_CLIENT_H
#define CHATD_LLM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "llm/upstream_sse.h"

struct llm;
struct llm_call;

struct llm_options {
    const char *url; /* base URL, e.g. https://integrate.api.nvidia.com/v1 */
    const char *key; /* sent as Authorization: Bearer; NULL for none */
    const char *model;
    int64_t timeout; /* seconds */
};

struct llm_message {
    const char *role;
    size_t role_len;
    const char *content;
    size_t content_len;
};

struct llm_callbacks {
    /* A piece of the answer or of the reasoning (LLM thread). */
    void (*delta)(void *arg, enum upstream_delta kind, const char *text, size_t len);
    /* The end (LLM thread), exactly once. message is NULL on CHATD_OK. */
    void (*done)(void *arg, enum chatd_err err, const char *message);
};

/* Starts the LLM thread. CHATD_EINTERNAL if curl or the thread cannot be
 * set up. The strings in opt are copied. */
enum chatd_err llm_start(const struct llm_options *opt, struct llm **out);
/* Ends every call in progress (done() with CHATD_ECANCELLED, "chatd is
 * shutting down") and joins the thread. Afterwards llm_submit() answers
 * CHATD_ECANCELLED and llm_cancel() does nothing, until llm_free(). */
void llm_stop(struct llm *llm);
/* Stops (if not yet) and frees llm. No other thread may use it any more.
 * NULL is ok. */
void llm_free(struct llm *llm);

/*
 * Queues a call. messages are copied into the request body before this
 * returns. cb must outlive the call; arg is passed to the callbacks. On
 * success *out holds a reference the caller must drop with
 * llm_call_release() (after which arg may still receive callbacks until
 * done()). On failure no callback ever runs.
 */
enum chatd_err llm_submit(struct llm *llm, const struct llm_message *messages, size_t n,
                          bool stream, const struct llm_callbacks *cb, void *arg,
                          struct llm_call **out);
/* Asks the LLM thread to abort the call at once; done() then runs with
 * CHATD_ECANCELLED unless the call already finished. Any thread.
 * NULL is ok. */
void llm_cancel(struct llm_call *call);
/* Drops the caller's reference. NULL is ok. */
void llm_call_release(struct llm_call *call);

#endif
