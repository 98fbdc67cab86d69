/*
 * health.c - GET /health (SPEC.md 7). The database is really asked: a
 * ping (a query) and the count of live conversations. If either fails the
 * answer is 503 with the database's reason.
 *
 * The cache line is the backend's: with Redis, the count of every
 * instance's entries, or "缓存不可用: <reason>" while Redis is down. A
 * cache outage keeps the answer 200: chat still works (uncached), and a
 * load balancer that checks /health must not take every instance out of
 * rotation because the shared cache is down. 503 stays the database's.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "cache/cache.h"
#include "core/json_out.h"
#include "core/timefmt.h"
#include "store/store.h"

void api_health(struct http_request *req)
{
    struct app *app = http_app(req);
    char why[256] = "";
    char line[400];
    int64_t now = time_now_usec(), active = 0;
    enum chatd_err err = store_ping(app->store, why, sizeof why);
    if (!err) {
        err = store_count_active(app->store, now, &active);
        if (err)
            snprintf(why, sizeof why, "%s", chatd_strerror(err));
    }
    char ts[TIMEFMT_HEALTH_LEN + 1];
    timefmt_health(now, ts);

    struct buf b = BUF_INIT;
    buf_append_str(&b, "{");
    const char *status = err ? "服务异常" : "服务正常";
    json_out_kv_str(&b, true, "status", status, strlen(status));
    json_out_kv_str(&b, false, "timestamp", ts, TIMEFMT_HEALTH_LEN);
    json_out_key(&b, false, "system");
    buf_append_str(&b, "{");
    if (err)
        snprintf(line, sizeof line, "数据库连接失败: %s", why[0] ? why : "unknown error");
    else
        snprintf(line, sizeof line, "数据库连接正常");
    json_out_kv_str(&b, true, "database", line, strlen(line));
    size_t cached = 0;
    char cache_why[200];
    if (cache_probe(app->cache, &cached, cache_why, sizeof cache_why))
        snprintf(line, sizeof line, "缓存 %zu 条记录", cached);
    else
        snprintf(line, sizeof line, "缓存不可用: %s", cache_why[0] ? cache_why : "unknown error");
    json_out_kv_str(&b, false, "cache", line, strlen(line));
    if (err)
        snprintf(line, sizeof line, "当前活动会话数量 未知");
    else
        snprintf(line, sizeof line, "当前活动会话数量 %lld 条记录", (long long)active);
    json_out_kv_str(&b, false, "active_sessions", line, strlen(line));
    buf_append_str(&b, "}}");
    http_respond_json(req, err ? 503 : 200, &b);
}
