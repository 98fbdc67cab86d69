/*
 * main.c - chatd: configuration -> store -> cache -> LLM thread ->
 * sweeper -> HTTP server -> wait for SIGINT/SIGTERM -> drain -> exit.
 *
 * Signals are blocked in every thread and taken synchronously here with
 * sigwait(), so no handler ever runs inside library code. SIGPIPE is
 * ignored (OpenSSL inside libcurl can raise it), and so is SIGXFSZ (an
 * export file past a size limit fails that export, not the server). Bad settings exit 2 with
 * one line before listening; a clean stop exits 0.
 *
 * The stop: stop accepting; give running requests and streams a few
 * seconds to finish; then end the upstream calls still running (streams
 * store the answer so far and end with an error event); give those a
 * moment to reach their clients; close everything; close the database.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/exportfile.h"
#include "cache/cache.h"
#include "config.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "http/server.h"
#include "llm/client.h"
#include "store/store.h"
#include "sweeper.h"

#define DRAIN_USEC   (5 * USEC_PER_SEC) /* running streams may finish */
#define FLUSH_USEC   (2 * USEC_PER_SEC) /* cut streams reach their clients */
#define IDLE_TIMEOUT 60                 /* seconds an idle connection is kept */

extern char **environ;

static void wait_idle(struct http_server *srv, int64_t limit)
{
    int64_t until = time_mono_usec() + limit;
    while (http_server_active(srv) > 0 && time_mono_usec() < until)
        usleep(20 * 1000);
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct buf out = BUF_INIT;
    enum config_result cr = config_load(&cfg, argc, argv, environ, &out);
    if (cr != CONFIG_OK) {
        fprintf(cr == CONFIG_EXIT ? stdout : stderr, "%s%s", out.ptr ? out.ptr : "",
                cr == CONFIG_ERROR ? "\n" : "");
        buf_release(&out);
        return cr == CONFIG_EXIT ? 0 : 2;
    }
    buf_release(&out);
    log_set_level(cfg.log_level);

    int status = 2;
    char why[512] = "";
    struct store *store = NULL;
    struct cache *cache = NULL;
    struct llm *llm = NULL;
    struct sweeper *sweeper = NULL;
    struct http_server *http = NULL;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file size limit fails the write (EFBIG), not the process */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* inherited by every thread */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0);

    struct store_options so = {.session_ttl = cfg.session_ttl * USEC_PER_SEC,
                               .password = cfg.db_password};
    if (store_open(cfg.db, &so, &store, why, sizeof why) != CHATD_OK) {
        fprintf(stderr, "chatd: CHATD_DB: %s\n", why);
        goto out;
    }
    struct cache_options co = {.max_entries = cfg.cache_size, .ttl = cfg.cache_ttl * USEC_PER_SEC};
    if (cfg.redis) {
        struct cache_redis_options ro = {.host = cfg.redis_url.host,
                                         .port = cfg.redis_url.port,
                                         .db = cfg.redis_url.db,
                                         .password = cfg.redis_url.password};
        cache = cache_redis_new(&co, &ro, why, sizeof why);
        if (!cache) {
            fprintf(stderr, "chatd: CHATD_REDIS: %s\n", why);
            goto out;
        }
        size_t n;
        if (!cache_probe(cache, &n, why, sizeof why))
            log_warn("cache: starting without redis for now: %s", why);
    } else {
        cache = cache_memory_new(&co);
    }

    struct llm_options lo = {
        .url = cfg.llm_url, .key = cfg.llm_key, .model = cfg.llm_model, .timeout = cfg.llm_timeout};
    if (llm_start(&lo, &llm) != CHATD_OK) {
        fprintf(stderr, "chatd: cannot start the upstream client\n");
        status = 1;
        goto out;
    }
    log_info("llm: model '%s' at %s/chat/completions, %s, timeout %lld s", cfg.llm_model,
             cfg.llm_url, cfg.llm_key ? "with an API key" : "without an API key",
             (long long)cfg.llm_timeout);
    if (!cfg.llm_key && strncmp(cfg.llm_url, "https://", 8) == 0)
        log_warn("llm: no CHATD_LLM_KEY is set; %s will probably refuse the calls", cfg.llm_url);

    if (export_dir_prepare(cfg.export_dir, why, sizeof why) != CHATD_OK) {
        fprintf(stderr, "chatd: CHATD_EXPORT_DIR: %s\n", why);
        goto out;
    }
    /* Partial files of exports that a crash cut short. */
    export_files_sweep(cfg.export_dir, cfg.export_ttl * USEC_PER_SEC, time_now_usec(), true);

    struct sweeper_options wo = {
        .interval = cfg.sweep_interval * USEC_PER_SEC,
        .export_dir = cfg.export_dir,
        .export_ttl = cfg.export_ttl * USEC_PER_SEC,
    };
    if (sweeper_start(store, cache, &wo, &sweeper) != CHATD_OK) {
        fprintf(stderr, "chatd: cannot start the sweeper thread\n");
        status = 1;
        goto out;
    }

    struct app app = {
        .cfg = &cfg,
        .store = store,
        .cache = cache,
        .llm = llm,
    };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct http_options ho = {
        .host = cfg.host,
        .port = cfg.port,
        .threads = cfg.threads ? cfg.threads : (unsigned)(cores > 0 ? cores : 1),
        .max_body = cfg.max_body,
        .cors_origin = cfg.cors_origin,
        .idle_timeout = IDLE_TIMEOUT,
        .routes = api_routes,
        .route_count = api_route_count,
        .app = &app,
    };
    if (http_server_start(&ho, &http, why, sizeof why) != CHATD_OK) {
        fprintf(stderr, "chatd: %s\n", why);
        goto out;
    }
    log_info("chatd %s ready: database %s (%s), cache %zu entries%s", CHATD_VERSION,
             store_backend(store), cfg.db_url.kind == DB_SQLITE ? cfg.db_url.path : "remote",
             cfg.cache_size, cfg.redis ? " in redis" : "");

    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("chatd: %s received: stopping (running streams get %lld s to finish)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)(DRAIN_USEC / USEC_PER_SEC));
    http_server_quiesce(http);
    wait_idle(http, DRAIN_USEC);
    llm_stop(llm);
    wait_idle(http, FLUSH_USEC);
    status = 0;

out:
    sweeper_free(sweeper);
    http_server_free(http);
    llm_free(llm);
    cache_free(cache);
    store_free(store);
    config_release(&cfg);
    curl_global_cleanup();
    if (status == 0)
        log_info("chatd: stopped cleanly");
    return status;
}
