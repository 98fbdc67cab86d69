/*
 * export.c - exports at any size (SPEC.md 5, 6 and "Export files").
 *
 * An export is a pull-driven stream: libmicrohttpd asks for bytes only
 * when the client's socket can take them, and only then is the next batch
 * read from the database - 100 messages, or 50 conversations, by key
 * (WHERE key > last ORDER BY key LIMIT n, never OFFSET), each read its own
 * short statement, so a slow client holds neither a database snapshot nor
 * a worker thread between batches, and memory holds one batch whatever
 * the export's size. The same bytes go to the export file as they are
 * made (exportfile.h), which is renamed into place only once the response
 * is complete. A database or disk failure ends the response without
 * HTTP's final chunk and removes the partial file; so does a client that
 * goes away.
 *
 * Formats: CSV per RFC 4180 through csv.h; NDJSON, one JSON document per
 * line, through json_out.h (which repairs invalid UTF-8 so every line is
 * valid JSON). The export-all JSON line of a conversation is written in
 * pieces as its messages are read, so even a conversation of millions of
 * messages is never held whole.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/exportfile.h"
#include "config.h"
#include "core/alloc.h"
#include "core/csv.h"
#include "core/json_out.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "store/store.h"

#define MSG_BATCH  100
#define CONV_BATCH 50

enum stage { STAGE_HEADER, STAGE_BODY, STAGE_DONE };

struct export
{
    struct app *app;
    bool all;         /* export-all, else one conversation */
    bool csv;         /* else NDJSON */
    int64_t now;      /* usec: what "live" means for this export */
    int64_t from, to; /* usec: created_at range of export-all */
    int64_t total;    /* export-all: conversations announced */
    struct http_stream *stream;
    struct export_file file;
    bool file_finished;
    enum stage stage;
    struct buf out; /* bytes made and not yet handed over */
    size_t out_off; /* of which this many were handed over */
    /* the conversation being written */
    struct store_conversation cur;
    bool in_conv;
    int64_t last_msg;      /* key of the last message written */
    size_t msgs_written;   /* in the current conversation */
    struct buf csv_prefix; /* export-all CSV: "id,created_at,last_active," */
    /* export-all: the current batch of conversations and the key after it */
    struct store_conversation batch[CONV_BATCH];
    size_t nbatch, ibatch;
    bool batches_done;
    int64_t key_created;
    char key_id[UUID_STR_LEN + 1];
};

/* ---- formatting ---- */

static void put_iso(struct buf *b, bool first, const char *key, int64_t t)
{
    char ts[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(t, ts);
    json_out_kv_str(b, first, key, ts, TIMEFMT_ISO_LEN);
}

static void csv_time(struct buf *b, int64_t t)
{
    char ts[TIMEFMT_ISO_LEN + 1];
    timefmt_iso(t, ts);
    csv_field(b, ts, TIMEFMT_ISO_LEN);
}

static void write_header(struct export *e)
{
    struct buf *b = &e->out;
    if (e->csv) {
        buf_append_str(b, e->all
                              ? "conversation_id,created_at,last_active,timestamp,role,content\r\n"
                              : "Timestamp,Role,Content\r\n");
    } else if (e->all) {
        buf_append_str(b, "{");
        put_iso(b, true, "export_time", e->now);
        json_out_kv_int(b, false, "total_conversations", e->total);
        buf_append_str(b, "}\n");
    } else {
        buf_append_str(b, "{");
        json_out_kv_str(b, true, "conversation_id", e->cur.id, UUID_STR_LEN);
        put_iso(b, false, "created_at", e->cur.created_at);
        put_iso(b, false, "last_active", e->cur.last_active);
        json_out_kv_int(b, false, "message_count", e->cur.message_count);
        buf_append_str(b, "}\n");
    }
}

/* Export-all: what comes before a conversation's messages. */
static void begin_conversation(struct export *e)
{
    const struct store_conversation *c = &e->cur;
    if (e->csv) {
        buf_reset(&e->csv_prefix);
        csv_field(&e->csv_prefix, c->id, strlen(c->id));
        buf_append_char(&e->csv_prefix, ',');
        csv_time(&e->csv_prefix, c->created_at);
        buf_append_char(&e->csv_prefix, ',');
        csv_time(&e->csv_prefix, c->last_active);
        buf_append_char(&e->csv_prefix, ',');
        return;
    }
    struct buf *b = &e->out;
    buf_append_str(b, "{");
    json_out_kv_str(b, true, "id", c->id, strlen(c->id));
    put_iso(b, false, "created_at", c->created_at);
    put_iso(b, false, "last_active", c->last_active);
    json_out_kv_int(b, false, "message_count", c->message_count);
    json_out_key(b, false, "messages");
    buf_append_str(b, "[");
}

static void end_conversation(struct export *e)
{
    if (e->all && !e->csv)
        buf_append_str(&e->out, "]}\n");
}

static int put_message(void *arg, const struct store_message *m)
{
    struct export *e = arg;
    struct buf *b = &e->out;
    if (e->csv) {
        if (e->all)
            buf_append(b, e->csv_prefix.ptr, e->csv_prefix.len);
        csv_time(b, m->timestamp);
        buf_append_char(b, ',');
        csv_field(b, m->role, m->role_len);
        buf_append_char(b, ',');
        csv_field(b, m->content, m->content_len);
        buf_append(b, "\r\n", 2);
    } else {
        buf_append_str(b, e->all && e->msgs_written ? ", {" : "{");
        put_iso(b, true, "timestamp", m->timestamp);
        json_out_kv_str(b, false, "role", m->role, m->role_len);
        json_out_kv_str(b, false, "content", m->content, m->content_len);
        buf_append_str(b, e->all ? "}" : "}\n");
    }
    e->msgs_written++;
    e->last_msg = m->id;
    return 0;
}

static int take_conversation(void *arg, const struct store_conversation *c)
{
    struct export *e = arg;
    e->batch[e->nbatch++] = *c;
    return 0;
}

/* ---- producing: one database batch per call ---- */

static enum chatd_err next_conversation(struct export *e, bool *none)
{
    *none = false;
    if (e->ibatch == e->nbatch) {
        size_t got = 0;
        if (e->batches_done) {
            *none = true;
            return CHATD_OK;
        }
        e->nbatch = e->ibatch = 0;
        enum chatd_err err =
            store_conversations_after(e->app->store, e->key_created, e->key_id, e->from, e->to,
                                      e->now, CONV_BATCH, take_conversation, e, &got);
        if (err)
            return err;
        e->batches_done = got < CONV_BATCH;
        if (got == 0) {
            *none = true;
            return CHATD_OK;
        }
    }
    e->cur = e->batch[e->ibatch++];
    e->key_created = e->cur.created_at;
    memcpy(e->key_id, e->cur.id, sizeof e->key_id);
    return CHATD_OK;
}

static enum chatd_err produce(struct export *e)
{
    enum chatd_err err = CHATD_OK;
    switch (e->stage) {
    case STAGE_HEADER:
        write_header(e);
        e->stage = STAGE_BODY;
        e->in_conv = !e->all;
        break;
    case STAGE_BODY:
        if (!e->in_conv) {
            bool none;
            if ((err = next_conversation(e, &none)))
                return err;
            if (none) {
                e->stage = STAGE_DONE;
                break;
            }
            begin_conversation(e);
            e->in_conv = true;
            e->last_msg = 0;
            e->msgs_written = 0;
        }
        size_t got = 0;
        err = store_messages_after(e->app->store, e->cur.id, e->last_msg, MSG_BATCH, put_message, e,
                                   &got);
        if (err)
            return err;
        if (got < MSG_BATCH) {
            end_conversation(e);
            e->in_conv = false;
            if (!e->all)
                e->stage = STAGE_DONE;
        }
        break;
    case STAGE_DONE:
        break;
    }
    if (e->out.len)
        err = export_file_write(&e->file, e->out.ptr, e->out.len);
    return err;
}

/* Worker thread, whenever the client can take more. */
static ssize_t export_pull(void *arg, char *dst, size_t max)
{
    struct export *e = arg;
    while (e->out_off == e->out.len) {
        if (e->stage == STAGE_DONE) {
            if (!e->file_finished) {
                e->file_finished = true;
                if (export_file_finish(&e->file) != CHATD_OK)
                    return HTTP_PULL_ERROR;
            }
            return HTTP_PULL_END;
        }
        buf_reset(&e->out);
        e->out_off = 0;
        enum chatd_err err = produce(e);
        if (err) {
            log_error("export: %s ended early: %s", e->file.name, chatd_strerror(err));
            export_file_discard(&e->file);
            e->file_finished = true; /* nothing left to finish */
            e->stage = STAGE_DONE;
            return HTTP_PULL_ERROR;
        }
    }
    size_t n = e->out.len - e->out_off;
    if (n > max)
        n = max;
    memcpy(dst, e->out.ptr + e->out_off, n);
    e->out_off += n;
    return (ssize_t)n;
}

static void export_free(struct export *e)
{
    http_stream_release(e->stream);
    export_file_discard(&e->file); /* removes the .part unless finished */
    buf_release(&e->out);
    buf_release(&e->csv_prefix);
    free(e);
}

/* Worker thread: the response is over. */
static void export_done(void *data, bool ok)
{
    struct export *e = data;
    if (!ok && e->stage != STAGE_DONE)
        log_info("export: %s abandoned by the client; partial file removed", e->file.name);
    export_free(e);
}

/* ---- the requests ---- */

static bool read_format(struct http_request *req, bool *csv)
{
    struct str f;
    *csv = false;
    if (!http_query(req, "format", &f) || str_eq(f, "json"))
        return true;
    if (str_eq(f, "csv")) {
        *csv = true;
        return true;
    }
    http_respond_error(req, CHATD_EINVAL, "query parameter 'format' must be 'json' or 'csv'");
    return false;
}

/* A YYYY-MM-DD parameter; an absent or empty one leaves *out alone. */
static bool read_date(struct http_request *req, const char *name, int64_t *out)
{
    struct str v;
    if (!http_query(req, name, &v) || v.len == 0)
        return true;
    if (!timefmt_parse_date(v.ptr, v.len, out)) {
        char msg[160];
        snprintf(msg, sizeof msg, "query parameter '%s' must be a date as YYYY-MM-DD", name);
        http_respond_error(req, CHATD_EINVAL, msg);
        return false;
    }
    return true;
}

/* Compares in time that depends only on the length of the secret. */
static bool same_secret(const char *given, size_t given_len, const char *secret)
{
    size_t n = strlen(secret);
    unsigned char diff = (unsigned char)(given_len != n);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(secret[i] ^ (i < given_len ? given[i] : 0));
    return diff == 0;
}

/* True if the admin token is not set, or the request carries it;
 * otherwise answers 401. */
static bool admin_ok(struct http_request *req)
{
    struct app *app = http_app(req);
    const char *token = app->cfg->admin_token;
    if (!token)
        return true;
    const char *h = http_header(req, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && same_secret(h + 7, strlen(h + 7), token))
        return true;
    http_add_header(req, "WWW-Authenticate", "Bearer realm=\"chatd\"");
    http_respond_error(req, CHATD_EUNAUTH,
                       h ? "the admin token is not valid" : "admin token required");
    return false;
}

static struct export *export_new(struct http_request *req, bool all, bool csv)
{
    struct export *e = xcalloc(1, sizeof *e);
    e->app = http_app(req);
    e->all = all;
    e->csv = csv;
    e->now = time_now_usec();
    e->from = INT64_MIN;
    e->to = INT64_MAX;
    e->file.fd = -1;
    return e;
}

/* Creates the export file and starts streaming; takes e. */
static void start(struct http_request *req, struct export *e, const char *stem)
{
    struct app *app = e->app;
    const char *ext = e->csv ? ".csv" : ".jsonl";
    if (export_file_create(&e->file, app->cfg->export_dir, stem, ext) != CHATD_OK) {
        export_free(e);
        http_respond_error(req, CHATD_EIO, "cannot create the export file");
        return;
    }
    char disposition[EXPORT_NAME_MAX + 64];
    snprintf(disposition, sizeof disposition, "attachment; filename=%s%s", stem, ext);
    http_add_header(req, "Content-Disposition", disposition);
    http_add_header(req, "X-Export-File", e->file.name);
    http_set_data(req, e, export_done);
    struct http_stream_options opt = {
        .content_type = e->csv ? "text/csv; charset=utf-8" : "application/x-ndjson",
        .queue_max = 0,
        .heartbeat = false,
        .pull = export_pull,
        .pull_arg = e,
    };
    e->stream = http_respond_stream(req, &opt);
}

void api_export_one(struct http_request *req)
{
    struct app *app = http_app(req);
    struct str p = http_param(req, 0);
    char id[UUID_STR_LEN + 1];
    bool csv;
    if (!read_format(req, &csv))
        return;
    struct export *e = export_new(req, false, csv);
    enum chatd_err err = uuid_normalize(p.ptr, p.len, id)
                             ? store_conversation_get(app->store, id, e->now, true, &e->cur)
                             : CHATD_ENOTFOUND;
    if (err) {
        export_free(e);
        api_store_error(req, err, "Conversation not found");
        return;
    }
    char stem[64];
    snprintf(stem, sizeof stem, "conversation_%s", id);
    start(req, e, stem);
}

void api_export_all(struct http_request *req)
{
    struct app *app = http_app(req);
    bool csv;
    int64_t from = INT64_MIN, to = INT64_MAX;
    if (!admin_ok(req) || !read_format(req, &csv) || !read_date(req, "start_date", &from) ||
        !read_date(req, "end_date", &to))
        return;
    if (to != INT64_MAX)
        to += 86400 * USEC_PER_SEC; /* inclusive: up to the end of that day */
    if (from != INT64_MIN && to != INT64_MAX && from >= to) {
        http_respond_error(req, CHATD_EINVAL, "start_date is after end_date");
        return;
    }
    struct export *e = export_new(req, true, csv);
    e->from = from;
    e->to = to;
    if (!csv) {
        enum chatd_err err = store_count_conversations(app->store, from, to, e->now, &e->total);
        if (err) {
            export_free(e);
            api_store_error(req, err, "");
            return;
        }
    }
    char stamp[TIMEFMT_STAMP_LEN + 1], stem[64];
    timefmt_stamp(e->now, stamp);
    snprintf(stem, sizeof stem, "conversations_%s", stamp);
    start(req, e, stem);
}

/* ---- GET /api/exports/NAME ---- */

/* Parses a single "bytes=" range against size. Returns 1 and sets the
 * range, 0 to send the whole file (several ranges), -1 if unsatisfiable
 * or malformed. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (strncmp(h, "bytes=", 6) != 0)
        return -1;
    h += 6;
    if (strchr(h, ','))
        return 0;
    uint64_t a = 0, b = 0;
    bool has_a = false, has_b = false;
    while (*h == ' ')
        h++;
    for (; *h >= '0' && *h <= '9'; h++, has_a = true) {
        if (a > (UINT64_MAX - 9) / 10)
            return -1;
        a = a * 10 + (uint64_t)(*h - '0');
    }
    if (*h++ != '-')
        return -1;
    for (; *h >= '0' && *h <= '9'; h++, has_b = true) {
        if (b > (UINT64_MAX - 9) / 10)
            return -1;
        b = b * 10 + (uint64_t)(*h - '0');
    }
    while (*h == ' ')
        h++;
    if (*h || (!has_a && !has_b))
        return -1;
    if (!has_a) { /* the last b bytes */
        if (b == 0 || size == 0)
            return -1;
        *len = b < size ? b : size;
        *off = size - *len;
        return 1;
    }
    if (a >= size || (has_b && b < a))
        return -1;
    *off = a;
    *len = (has_b && b < size - 1 ? b : size - 1) - a + 1;
    return 1;
}

void api_export_file(struct http_request *req)
{
    struct app *app = http_app(req);
    struct str p = http_param(req, 0);
    bool all;
    char download[EXPORT_NAME_MAX], name[EXPORT_NAME_MAX];
    if (p.len >= sizeof name ||
        !export_file_name_valid(p.ptr, p.len, &all, download, sizeof download)) {
        http_respond_error(req, CHATD_ENOTFOUND, "no such export file");
        return;
    }
    if (all && !admin_ok(req))
        return;
    memcpy(name, p.ptr, p.len);
    name[p.len] = '\0';
    struct buf path = BUF_INIT;
    buf_appendf(&path, "%s/%s", app->cfg->export_dir, name);
    int fd = open(path.ptr, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    buf_release(&path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        http_respond_error(req, CHATD_ENOTFOUND, "no such export file");
        return;
    }
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
    if (time_now_usec() - mtime >= app->cfg->export_ttl * USEC_PER_SEC) {
        close(fd);
        http_respond_error(req, CHATD_ENOTFOUND, "the export file has expired");
        return;
    }
    uint64_t size = (uint64_t)st.st_size, off = 0, len = size;
    char etag[64], disposition[EXPORT_NAME_MAX + 64], range[96];
    snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)st.st_mtim.tv_nsec);
    snprintf(disposition, sizeof disposition, "attachment; filename=%s", download);
    http_add_header(req, "ETag", etag);
    http_add_header(req, "Accept-Ranges", "bytes");
    if (http_etag_match(req, etag)) {
        close(fd);
        http_respond(req, 304, NULL, "", 0);
        return;
    }
    int status = 200;
    const char *rh = http_header(req, "Range");
    if (rh) {
        int r = parse_range(rh, size, &off, &len);
        if (r < 0) {
            close(fd);
            snprintf(range, sizeof range, "bytes */%llu", (unsigned long long)size);
            http_add_header(req, "Content-Range", range);
            http_respond_error_status(req, 416,
                                      "the Range header cannot be satisfied: expected "
                                      "bytes=START-END within the file");
            return;
        }
        if (r == 1) {
            status = 206;
            snprintf(range, sizeof range, "bytes %llu-%llu/%llu", (unsigned long long)off,
                     (unsigned long long)(off + len - 1), (unsigned long long)size);
            http_add_header(req, "Content-Range", range);
        } else {
            off = 0;
            len = size;
        }
    }
    http_add_header(req, "Content-Disposition", disposition);
    size_t nl = strlen(name);
    http_respond_file(req, status,
                      nl > 4 && strcmp(name + nl - 4, ".csv") == 0 ? "text/csv; charset=utf-8"
                                                                   : "application/x-ndjson",
                      fd, off, len);
}
