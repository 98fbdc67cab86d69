/*
 * conversations.c - GET and DELETE /api/conversations/{id} (SPEC.md 3, 4).
 *
 * GET writes the history as it reads it, in keyset batches of 100
 * messages, straight into the JSON body: the only copy of the history in
 * memory is the response itself. Ids that are not UUIDs cannot name a
 * conversation and are answered 404 without asking the database.
 */
#include <string.h>

#include "api/api.h"
#include "cache/cache.h"
#include "core/json_out.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "store/store.h"

#define BATCH 100

static const char NOT_FOUND[] = "Conversation not found";

/* Copies a UUID parameter, lowercased, into id; false if it is not one. */
static bool param_id(struct http_request *req, char id[UUID_STR_LEN + 1])
{
    struct str p = http_param(req, 0);
    return uuid_normalize(p.ptr, p.len, id);
}

struct history_writer {
    struct buf *out;
    int64_t last_id;
    bool first;
};

static int write_message(void *arg, const struct store_message *m)
{
    struct history_writer *w = arg;
    char ts[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(m->timestamp, ts);
    buf_append_str(w->out, w->first ? "{" : ", {");
    json_out_kv_str(w->out, true, "role", m->role, m->role_len);
    json_out_kv_str(w->out, false, "content", m->content, m->content_len);
    json_out_kv_str(w->out, false, "timestamp", ts, TIMEFMT_ISO_LEN);
    buf_append_str(w->out, "}");
    w->first = false;
    w->last_id = m->id;
    return 0;
}

void api_conversation_get(struct http_request *req)
{
    struct app *app = http_app(req);
    char id[UUID_STR_LEN + 1];
    struct store_conversation conv;
    if (!param_id(req, id)) {
        http_respond_error(req, CHATD_ENOTFOUND, NOT_FOUND);
        return;
    }
    enum chatd_err err = store_conversation_get(app->store, id, time_now_usec(), false, &conv);
    if (err) {
        api_store_error(req, err, NOT_FOUND);
        return;
    }
    struct buf b = BUF_INIT;
    struct history_writer w = {&b, 0, true};
    buf_append_str(&b, "{");
    json_out_kv_str(&b, true, "status", "success", 7);
    json_out_key(&b, false, "history");
    buf_append_str(&b, "[");
    size_t got;
    do {
        err = store_messages_after(app->store, id, w.last_id, BATCH, write_message, &w, &got);
    } while (!err && got == BATCH);
    if (err) {
        buf_release(&b);
        api_store_error(req, err, NOT_FOUND);
        return;
    }
    buf_append_str(&b, "]");
    char ts[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(conv.created_at, ts);
    json_out_kv_str(&b, false, "created_at", ts, TIMEFMT_ISO_LEN);
    timefmt_iso(conv.last_active, ts);
    json_out_kv_str(&b, false, "last_active", ts, TIMEFMT_ISO_LEN);
    buf_append_str(&b, "}");
    http_respond_json(req, 200, &b);
}

void api_conversation_delete(struct http_request *req)
{
    static const char gone[] = "{\"status\": \"错误\", \"message\": \"会话历史未找到\"}";
    static const char done[] = "{\"status\": \"成功\", \"message\": \"会话历史已清除\"}";
    struct app *app = http_app(req);
    char id[UUID_STR_LEN + 1];
    enum chatd_err err = CHATD_ENOTFOUND;
    if (param_id(req, id))
        err = store_delete_conversation(app->store, id, time_now_usec());
    if (err == CHATD_ENOTFOUND) {
        http_respond(req, 404, "application/json; charset=utf-8", gone, sizeof gone - 1);
        return;
    }
    if (err) {
        api_store_error(req, err, "");
        return;
    }
    cache_remove_conversation(app->cache, id);
    http_respond(req, 200, "application/json; charset=utf-8", done, sizeof done - 1);
}
