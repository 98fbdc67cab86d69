/*
 * config.h - chatd's settings, from the environment and long flags.
 *
 * Every setting of SPEC.md's table is an environment variable CHATD_NAME
 * and the flag --name (lowercase, '_' -> '-'); flags win over the
 * environment; PORT is accepted as an alias of CHATD_PORT (CHATD_PORT wins).
 * Flags take "--name value" or "--name=value". Two settings beyond SPEC's
 * table: CHATD_THREADS (HTTP worker threads, 0 = one per core) and
 * CHATD_LOG_LEVEL (debug, info, warn, error, off).
 *
 * Validation happens here, completely, so main() can refuse to start with
 * one clear line: numbers must be whole and within range, URLs must parse
 * (DB, Redis, LLM), nothing unknown is accepted. Database URLs are parsed
 * into their parts here; whether a backend is built is the store's
 * business. Secrets (LLM key, DB password, admin token) are never printed,
 * not even in error messages.
 */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/url.h"

#define CHATD_VERSION "0.1.0"

struct redis_url {
    char *host;     /* required */
    unsigned port;  /* default 6379 */
    unsigned db;    /* default 0 */
    char *password; /* from redis://:pass@host, may be NULL; never log */
};

struct config {
    char *host;           /* listen address, default "0.0.0.0" */
    unsigned port;        /* 0-65535; 0 = any free port (logged) */
    char *db;             /* the URL as given */
    struct db_url db_url; /* ... and parsed */
    char *db_password;    /* CHATD_DB_PASSWORD, NULL if unset; never log */
    char *llm_url;        /* base URL, http:// or https://, no trailing '/' */
    char *llm_key;        /* NULL if unset; never log */
    char *llm_model;
    int64_t llm_timeout;    /* seconds, 1..86400 */
    unsigned history;       /* earlier messages sent upstream, 0..1000 */
    int64_t session_ttl;    /* seconds, >= 1 */
    int64_t sweep_interval; /* seconds, >= 1 */
    size_t cache_size;      /* entries, 0 disables */
    int64_t cache_ttl;      /* seconds, >= 1 */
    char *redis;            /* NULL if unset */
    struct redis_url redis_url;
    char *export_dir;
    int64_t export_ttl; /* seconds, >= 1 */
    char *admin_token;  /* NULL if unset; never log */
    size_t max_body;    /* bytes, >= 1 */
    size_t max_message; /* bytes, >= 1 */
    char *cors_origin;
    unsigned threads; /* 0 = one per core */
    enum log_level log_level;
};

enum config_result {
    CONFIG_OK,    /* cfg is filled; run */
    CONFIG_EXIT,  /* --help or --version: out holds the text for stdout; exit 0 */
    CONFIG_ERROR, /* out holds one line (no newline) for stderr; exit 2 */
};

/*
 * Fills cfg from envp (NULL-terminated "NAME=value" strings, as main's
 * third argument or environ) and argv (argv[0] skipped). On CONFIG_OK the
 * caller must config_release(cfg); on the other results cfg holds nothing
 * to release. out receives the help/version text or the error line.
 */
enum config_result config_load(struct config *cfg, int argc, char *const *argv, char *const *envp,
                               struct buf *out);
void config_release(struct config *cfg);

#endif
