/*
 * test_config.c - settings from envp and argv (config.h).
 *
 * config_load() is pure (no getenv, no exit): each test passes its own
 * environment and arguments and checks the result, the filled config and
 * the exact text for stdout or stderr. Error cases check that the message
 * is one line starting with "chatd: ", and that no secret ever appears in
 * it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define SECRET "s3cretPW"

static enum config_result load(struct config *cfg, struct buf *out, const char *const *env,
                               const char *const *args)
{
    const char *argv[32] = {"chatd"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++) {
        assert_true(argc < 31);
        argv[argc] = args[argc - 1];
    }
    static const char *const no_env[] = {NULL};
    return config_load(cfg, argc, (char *const *)argv, (char *const *)(env ? env : no_env), out);
}

/* Loads and expects CONFIG_OK; the caller releases cfg. */
static void load_ok(struct config *cfg, const char *const *env, const char *const *args)
{
    struct buf out = BUF_INIT;
    enum config_result r = load(cfg, &out, env, args);
    if (r != CONFIG_OK)
        fail_msg("expected CONFIG_OK, got %d: %s", (int)r, out.ptr ? out.ptr : "");
    assert_int_equal(out.len, 0);
    buf_release(&out);
}

/* Loads and expects CONFIG_ERROR with one line; returns it (free()). */
static char *load_err(const char *const *env, const char *const *args)
{
    struct config cfg;
    struct buf out = BUF_INIT;
    enum config_result r = load(&cfg, &out, env, args);
    if (r != CONFIG_ERROR)
        fail_msg("expected CONFIG_ERROR, got %d (%s)", (int)r, args && args[0] ? args[0] : "env");
    struct config zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&cfg, &zero, sizeof cfg); /* nothing to release */
    assert_non_null(out.ptr);
    assert_int_equal(strncmp(out.ptr, "chatd: ", 7), 0);
    assert_null(strchr(out.ptr, '\n'));
    assert_null(strchr(out.ptr, '\r'));
    assert_true(out.len < 400);
    for (const unsigned char *c = (const unsigned char *)out.ptr; *c; c++)
        assert_true(*c >= 0x20 && *c != 0x7f);
    assert_null(strstr(out.ptr, SECRET));
    return buf_take(&out);
}

static void expect_err(const char *const *env, const char *const *args, const char *want)
{
    char *got = load_err(env, args);
    if (strcmp(got, want) != 0)
        fail_msg("got  '%s'\nwant '%s'", got, want);
    free(got);
}

static void expect_err_has(const char *const *env, const char *const *args, const char *part)
{
    char *got = load_err(env, args);
    if (!strstr(got, part))
        fail_msg("'%s' lacks '%s'", got, part);
    free(got);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ENV(...)  ((const char *const[]){__VA_ARGS__, NULL})

static void listen_addresses(void **state)
{
    static const char *const ok[] = {"127.0.0.1", "::", "::1", "0.0.0.0", "localhost"};
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct config c;
        load_ok(&c, NULL, ARGS("--host", ok[i]));
        assert_string_equal(c.host, ok[i]);
        config_release(&c);
    }
}

static void defaults(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, NULL, NULL);
    assert_string_equal(c.host, "0.0.0.0");
    assert_int_equal(c.port, 5010);
    assert_string_equal(c.db, "sqlite:chatd.db");
    assert_int_equal(c.db_url.kind, DB_SQLITE);
    assert_string_equal(c.db_url.path, "chatd.db");
    assert_null(c.db_url.password);
    assert_string_equal(c.llm_url, "https://integrate.api.nvidia.com/v1");
    assert_null(c.llm_key);
    assert_string_equal(c.llm_model, "deepseek-ai/deepseek-r1");
    assert_int_equal(c.llm_timeout, 60);
    assert_int_equal(c.history, 9);
    assert_int_equal(c.session_ttl, 86400);
    assert_int_equal(c.sweep_interval, 3600);
    assert_int_equal(c.cache_size, 10000);
    assert_int_equal(c.cache_ttl, 86400);
    assert_null(c.redis);
    assert_null(c.redis_url.host);
    assert_string_equal(c.export_dir, "exports");
    assert_int_equal(c.export_ttl, 600);
    assert_null(c.admin_token);
    assert_int_equal(c.max_body, 1048576);
    assert_int_equal(c.max_message, 65536);
    assert_string_equal(c.cors_origin, "*");
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    config_release(&c);
    config_release(&c); /* a released config is empty: releasing again is harmless */
}

static void from_env(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c,
            ENV("HOME=/root", "CHATD_HOST=127.0.0.1", "CHATD_PORT=8080",
                "CHATD_DB=sqlite:/tmp/x.db", "CHATD_LLM_URL=http://127.0.0.1:9000/v1/",
                "CHATD_LLM_KEY=" SECRET, "CHATD_LLM_MODEL=m", "CHATD_LLM_TIMEOUT=5",
                "CHATD_HISTORY=0", "CHATD_SESSION_TTL=1", "CHATD_SWEEP_INTERVAL=2",
                "CHATD_CACHE_SIZE=0", "CHATD_CACHE_TTL=3", "CHATD_REDIS=redis://cache:6380/2",
                "CHATD_EXPORT_DIR=/e", "CHATD_EXPORT_TTL=4", "CHATD_ADMIN_TOKEN=tok",
                "CHATD_MAX_BODY=100", "CHATD_MAX_MESSAGE=50", "CHATD_CORS_ORIGIN=https://a.example",
                "CHATD_THREADS=3", "CHATD_LOG_LEVEL=debug",
                /* not ours: ignored, even when they look like ours */
                "CHATD_BIN=/usr/bin/chatd", "CHATD_SANITIZE=1", "chatd_port=1", "NOEQUALS",
                "CHATD_PORT=9999" /* a second occurrence: the first wins, as getenv */),
            NULL);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 8080);
    assert_string_equal(c.db_url.path, "/tmp/x.db");
    assert_string_equal(c.llm_url, "http://127.0.0.1:9000/v1");
    assert_string_equal(c.llm_key, SECRET);
    assert_string_equal(c.llm_model, "m");
    assert_int_equal(c.llm_timeout, 5);
    assert_int_equal(c.history, 0);
    assert_int_equal(c.session_ttl, 1);
    assert_int_equal(c.sweep_interval, 2);
    assert_int_equal(c.cache_size, 0);
    assert_int_equal(c.cache_ttl, 3);
    assert_string_equal(c.redis, "redis://cache:6380/2");
    assert_string_equal(c.redis_url.host, "cache");
    assert_int_equal(c.redis_url.port, 6380);
    assert_int_equal(c.redis_url.db, 2);
    assert_null(c.redis_url.password);
    assert_string_equal(c.export_dir, "/e");
    assert_int_equal(c.export_ttl, 4);
    assert_string_equal(c.admin_token, "tok");
    assert_int_equal(c.max_body, 100);
    assert_int_equal(c.max_message, 50);
    assert_string_equal(c.cors_origin, "https://a.example");
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    config_release(&c);
}

static void flags_win(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, ENV("CHATD_PORT=1", "CHATD_HISTORY=3", "CHATD_LLM_KEY=envkey"),
            ARGS("--port", "2", "--history=4", "--llm-key", "flagkey"));
    assert_int_equal(c.port, 2);
    assert_int_equal(c.history, 4);
    assert_string_equal(c.llm_key, "flagkey");
    config_release(&c);

    /* a bad environment value that a flag overrides is no error */
    load_ok(&c, ENV("CHATD_PORT=banana", "CHATD_DB=nonsense"),
            ARGS("--port=7", "--db", "sqlite::memory:"));
    assert_int_equal(c.port, 7);
    assert_string_equal(c.db_url.path, ":memory:");
    config_release(&c);

    /* the last flag wins */
    load_ok(&c, NULL, ARGS("--port", "1", "--port=2", "--log-level", "off", "--log-level=warn"));
    assert_int_equal(c.port, 2);
    assert_int_equal(c.log_level, LOG_LEVEL_WARN);
    config_release(&c);

    /* an empty flag unsets an optional setting from the environment */
    load_ok(&c, ENV("CHATD_LLM_KEY=" SECRET, "CHATD_REDIS=redis://r"),
            ARGS("--llm-key=", "--redis", ""));
    assert_null(c.llm_key);
    assert_null(c.redis);
    config_release(&c);
}

static void port_alias(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, ENV("PORT=8080"), NULL);
    assert_int_equal(c.port, 8080);
    config_release(&c);
    load_ok(&c, ENV("PORT=8080", "CHATD_PORT=8081"), NULL);
    assert_int_equal(c.port, 8081);
    config_release(&c);
    load_ok(&c, ENV("CHATD_PORT=8081", "PORT=8080"), NULL);
    assert_int_equal(c.port, 8081);
    config_release(&c);
    load_ok(&c, ENV("PORT=8080"), ARGS("--port", "8082"));
    assert_int_equal(c.port, 8082);
    config_release(&c);
    expect_err(ENV("PORT=http"), NULL, "chatd: PORT: 'http' is not a port (0-65535)");
}

static void equals_form(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, NULL,
            ARGS("--db=sqlite:a=b.db", "--llm-url=https://h.example/v1/", "--host=::1",
                 "--cors-origin=*", "--llm-model=a=b"));
    assert_string_equal(c.db_url.path, "a=b.db");
    assert_string_equal(c.llm_url, "https://h.example/v1");
    assert_string_equal(c.host, "::1");
    assert_string_equal(c.llm_model, "a=b");
    config_release(&c);
}

static void empty_optional_env_is_unset(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, ENV("CHATD_LLM_KEY=", "CHATD_REDIS=", "CHATD_ADMIN_TOKEN="), NULL);
    assert_null(c.llm_key);
    assert_null(c.redis);
    assert_null(c.admin_token);
    config_release(&c);
    /* an empty required setting is an error, not a silent default */
    expect_err(ENV("CHATD_HOST="), NULL, "chatd: CHATD_HOST: must not be empty");
    expect_err(ENV("CHATD_PORT="), NULL, "chatd: CHATD_PORT: '' is not a port (0-65535)");
}

static void ranges(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, NULL,
            ARGS("--port", "0", "--history", "1000", "--threads", "1024", "--llm-timeout", "86400",
                 "--cache-size", "0", "--max-body", "1", "--max-message", "1", "--session-ttl", "1",
                 "--sweep-interval", "1", "--cache-ttl", "1", "--export-ttl", "1"));
    assert_int_equal(c.port, 0);
    assert_int_equal(c.history, 1000);
    assert_int_equal(c.threads, 1024);
    config_release(&c);
    load_ok(&c, NULL, ARGS("--port", "65535", "--max-body", "1073741824", "--history", "007"));
    assert_int_equal(c.port, 65535);
    assert_int_equal(c.max_body, 1073741824);
    assert_int_equal(c.history, 7);
    config_release(&c);

    static const char *const too_small[] = {"--llm-timeout", "--session-ttl", "--sweep-interval",
                                            "--cache-ttl",   "--export-ttl",  "--max-body",
                                            "--max-message"};
    for (size_t i = 0; i < sizeof too_small / sizeof too_small[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "chatd: %s: '0' is not a whole number of", too_small[i]);
        expect_err_has(NULL, ARGS(too_small[i], "0"), want);
    }
    expect_err(NULL, ARGS("--history", "1001"),
               "chatd: --history: '1001' is not a whole number of messages from 0 to 1000");
    expect_err(NULL, ARGS("--threads", "1025"),
               "chatd: --threads: '1025' is not a whole number of threads from 0 to 1024");
    expect_err(NULL, ARGS("--llm-timeout", "86401"),
               "chatd: --llm-timeout: '86401' is not a whole number of seconds from 1 to 86400");
    expect_err(NULL, ARGS("--cache-size", "100000001"),
               "chatd: --cache-size: '100000001' is not a whole number of entries from 0 to "
               "100000000");
}

static void number_syntax(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "-1", "+1", " 1", "1 ", "1s", "0x10", "1e3", "1.0", "", "99999999999999999999999", "١"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--history=%s", bad[i]);
        expect_err_has(NULL, ARGS(arg), "is not a whole number of messages from 0 to 1000");
        expect_err_has(NULL, ARGS("--port", bad[i]), "is not a port (0-65535)");
    }
    expect_err(NULL, ARGS("--port", "70000"), "chatd: --port: '70000' is not a port (0-65535)");
    expect_err(ENV("CHATD_SESSION_TTL=1d"), NULL,
               "chatd: CHATD_SESSION_TTL: '1d' is not a whole number of seconds from 1 to "
               "315360000");
}

static void error_kinds(void **state)
{
    (void)state;
    expect_err(NULL, ARGS("--bogus"), "chatd: unknown option '--bogus' (see --help)");
    expect_err(NULL, ARGS("--bogus=1"), "chatd: unknown option '--bogus' (see --help)");
    expect_err(NULL, ARGS("-p", "1"), "chatd: unknown option '-p' (see --help)");
    expect_err(NULL, ARGS("--"), "chatd: unknown option '--' (see --help)");
    expect_err(NULL, ARGS("--PORT", "1"), "chatd: unknown option '--PORT' (see --help)");
    expect_err(NULL, ARGS("--llm_url", "x"), "chatd: unknown option '--llm_url' (see --help)");
    expect_err(NULL, ARGS("serve"), "chatd: unexpected argument #1, not an option (see --help)");
    expect_err(NULL, ARGS("--history"), "chatd: --history: missing value");
    expect_err(NULL, ARGS("--history", "--port", "1"), "chatd: --history: missing value");
    expect_err(NULL, ARGS("--help=yes"), "chatd: --help: takes no value");
    expect_err(NULL, ARGS("--version=2"), "chatd: --version: takes no value");
    expect_err(NULL, ARGS("--host", ""), "chatd: --host: must not be empty");
    expect_err(NULL, ARGS("--host", "999.1.1.1"),
               "chatd: --host: '999.1.1.1' is not an IPv4 or IPv6 address");
    expect_err(ENV("CHATD_HOST=example.com"), NULL,
               "chatd: CHATD_HOST: 'example.com' is not an IPv4 or IPv6 address");
    expect_err(NULL, ARGS("--llm-model="), "chatd: --llm-model: must not be empty");
    expect_err(NULL, ARGS("--export-dir="), "chatd: --export-dir: must not be empty");
    expect_err(NULL, ARGS("--cors-origin", "a\r\nSet-Cookie: x"),
               "chatd: --cors-origin: contains a control character");
    expect_err(ENV("CHATD_LOG_LEVEL=loud"), NULL,
               "chatd: CHATD_LOG_LEVEL: 'loud' is not a log level (debug, info, warn, error, off)");
    expect_err(ENV("CHATD_DB=foo://x"), NULL,
               "chatd: CHATD_DB: cannot parse 'foo://x': expected sqlite:PATH, postgresql://... or "
               "mysql://...");
    /* an unprintable value is quoted as one short printable line */
    char long_val[400];
    memset(long_val, 'x', sizeof long_val - 1);
    long_val[sizeof long_val - 1] = '\0';
    long_val[3] = '\n';
    char *got = load_err(NULL, ARGS("--log-level", long_val));
    assert_non_null(strstr(got, "'xxx?xxx"));
    assert_non_null(strstr(got, "...'"));
    free(got);
}

static void db_urls(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, NULL, ARGS("--db", "postgresql://bob:p%40ss%3Aw%2F@db.example:6543/chat%20db"));
    assert_int_equal(c.db_url.kind, DB_POSTGRESQL);
    assert_string_equal(c.db_url.user, "bob");
    assert_string_equal(c.db_url.password, "p@ss:w/");
    assert_string_equal(c.db_url.host, "db.example");
    assert_int_equal(c.db_url.port, 6543);
    assert_string_equal(c.db_url.dbname, "chat db");
    assert_null(c.db_url.path);
    config_release(&c);

    load_ok(&c, NULL, ARGS("--db", "postgres://h/d"));
    assert_int_equal(c.db_url.kind, DB_POSTGRESQL);
    assert_null(c.db_url.user);
    assert_null(c.db_url.password);
    assert_string_equal(c.db_url.host, "h");
    assert_int_equal(c.db_url.port, 5432);
    config_release(&c);

    load_ok(&c, NULL, ARGS("--db", "mysql://root@localhost/chatd"));
    assert_int_equal(c.db_url.kind, DB_MYSQL);
    assert_string_equal(c.db_url.user, "root");
    assert_null(c.db_url.password);
    assert_int_equal(c.db_url.port, 3306);
    assert_string_equal(c.db_url.dbname, "chatd");
    config_release(&c);

    load_ok(&c, NULL, ARGS("--db", "postgresql:///chat"));
    assert_string_equal(c.db_url.host, "localhost");
    config_release(&c);

    load_ok(&c, NULL, ARGS("--db", "postgresql://u:pw@[::1]:5433/db"));
    assert_string_equal(c.db_url.host, "::1");
    assert_int_equal(c.db_url.port, 5433);
    config_release(&c);

    /* an unencoded '@' in the password: the last '@' ends the user-info */
    load_ok(&c, NULL, ARGS("--db", "mysql://u:p@ss@h:3307/db"));
    assert_string_equal(c.db_url.password, "p@ss");
    assert_string_equal(c.db_url.host, "h");
    config_release(&c);

    load_ok(&c, NULL, ARGS("--db", "sqlite:relative/dir/chatd.db"));
    assert_int_equal(c.db_url.kind, DB_SQLITE);
    assert_string_equal(c.db_url.path, "relative/dir/chatd.db");
    config_release(&c);

    static const struct {
        const char *url, *says;
    } bad[] = {
        {"sqlite:", "cannot parse 'sqlite:': the path is empty (sqlite:PATH)"},
        {"chatd.db", "cannot parse 'chatd.db': expected sqlite:PATH"},
        {"postgresql://h", "cannot parse 'postgresql://h': the database name is missing"},
        {"postgresql://h/", "the database name is missing"},
        {"postgresql://h/a/b", "the database name contains '/'"},
        {"postgresql://h:abc/db", "cannot parse 'postgresql://h:***/db': the port must be"},
        {"postgresql://h:0/db", "the port must be a number from 1 to 65535"},
        {"postgresql://h:65536/db", "the port must be a number from 1 to 65535"},
        {"postgresql://h:/db", "the port must be"},
        {"mysql://u:p%zz@h/db", "cannot parse 'mysql://***@h/db': bad percent-encoding in the "
                                "password"},
        {"mysql://u%4@h/db", "bad percent-encoding in the user name"},
        {"mysql://u:p%00@h/db", "bad percent-encoding in the password"},
        {"mysql://h/db?ssl=1", "cannot parse 'mysql://h/db?***': query parameters"},
        {"postgresql://[::1/db", "lacks its ']'"},
        {"mongodb://h/db", "expected sqlite:PATH, postgresql://... or mysql://..."},
        {"SQLite:x.db", "expected sqlite:PATH"}, /* exact, as store_open() matches */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err_has(NULL, ARGS("--db", bad[i].url), bad[i].says);
}

static void redis_urls(void **state)
{
    (void)state;
    struct config c;
    load_ok(&c, NULL, ARGS("--redis", "redis://localhost"));
    assert_string_equal(c.redis_url.host, "localhost");
    assert_int_equal(c.redis_url.port, 6379);
    assert_int_equal(c.redis_url.db, 0);
    assert_null(c.redis_url.password);
    config_release(&c);
    load_ok(&c, NULL, ARGS("--redis", "redis://:p%40w@r.example:6380/15"));
    assert_string_equal(c.redis_url.host, "r.example");
    assert_string_equal(c.redis_url.password, "p@w");
    assert_int_equal(c.redis_url.port, 6380);
    assert_int_equal(c.redis_url.db, 15);
    config_release(&c);
    load_ok(&c, NULL, ARGS("--redis", "redis://h/"));
    assert_int_equal(c.redis_url.db, 0);
    config_release(&c);

    static const struct {
        const char *url, *says;
    } bad[] = {
        {"redis://", "the host is missing"},
        {"redis://:pw@/0", "cannot parse 'redis://***@/0': the host is missing"},
        {"http://h", "expected redis://[:password@]host[:port][/db]"},
        {"rediss://h", "expected redis://"},
        {"redis://user:pw@h", "only a password is supported"},
        {"redis://h/x", "the database must be a number from 0 to 65535"},
        {"redis://h/65536", "the database must be"},
        {"redis://h:99999", "the port must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err_has(NULL, ARGS("--redis", bad[i].url), bad[i].says);
}

static void llm_urls(void **state)
{
    (void)state;
    struct config c;
    static const struct {
        const char *in, *out;
    } good[] = {
        {"http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"},
        {"https://h", "https://h"},
        {"https://h/", "https://h"},
        {"https://h//", "https://h/"},
        {"HTTPS://API.example/v1", "HTTPS://API.example/v1"},
        {"http://[::1]:9000/v1", "http://[::1]:9000/v1"},
        {"http://user:pw@h/v1", "http://user:pw@h/v1"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        load_ok(&c, NULL, ARGS("--llm-url", good[i].in));
        assert_string_equal(c.llm_url, good[i].out);
        config_release(&c);
    }
    static const struct {
        const char *url, *says;
    } bad[] = {
        {"ftp://h/v1", "cannot parse 'ftp://h/v1': expected an http:// or https:// URL"},
        {"integrate.api.nvidia.com/v1", "expected an http:// or https:// URL"},
        {"http://", "the URL has no host"},
        {"https:///v1", "the URL has no host"},
        {"http://:80/v1", "the URL has no host"},
        {"http://[]/v1", "the URL has no host"},
        {"http://h:abc/v1", "cannot parse 'http://h:***/v1': the port must be"},
        {"http://h:0/v1", "the port must be"},
        {"http://h/v1?key=x", "cannot parse 'http://h/v1?***': query parameters"},
        {"http://h /v1", "contains a space or control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err_has(NULL, ARGS("--llm-url", bad[i].url), bad[i].says);
}

static void secrets_never_shown(void **state)
{
    (void)state;
    /* load_err() itself fails if SECRET appears in the message */
    static const char *const db_urls[] = {
        "postgresql://bob:" SECRET "@host:badport/db",
        "postgresql://bob:" SECRET "@host",
        "postgresql://bob:" SECRET "/db", /* '@' forgotten: looks like a port */
        "postgresql://bob:" SECRET "@[::1/db",
        "mysql://u:" SECRET "%zz@h/db",
        "mysql://u:" SECRET "@h/db?x=1",
        "mysql://u:" SECRET "@h/a/b",
        "mysql://" SECRET "@/db/x",
        "postgresql://u:" SECRET "@h:0/db",
        "postgres://u:p@" SECRET "@h:x/db",
        "foo://u:" SECRET "@h/db",
        "postgresql:u:" SECRET "@h/db",
    };
    for (size_t i = 0; i < sizeof db_urls / sizeof db_urls[0]; i++) {
        char env[256];
        snprintf(env, sizeof env, "CHATD_DB=%s", db_urls[i]);
        free(load_err(NULL, ARGS("--db", db_urls[i])));
        free(load_err(ENV(env), NULL));
    }
    static const char *const redis_urls[] = {
        "redis://:" SECRET "@h:bad", "redis://:" SECRET "@/0",
        "redis://:" SECRET "@h/x",   "redis://u:" SECRET "@h",
        "redis://:" SECRET "%g@h",   "redis://:" SECRET "/0", /* '@' forgotten */
        "rediss://:" SECRET "@h",
    };
    for (size_t i = 0; i < sizeof redis_urls / sizeof redis_urls[0]; i++)
        free(load_err(NULL, ARGS("--redis", redis_urls[i])));
    static const char *const llm_urls[] = {
        "http://u:" SECRET "@/v1", "http://u:" SECRET "@h:x/v1", "http://u:" SECRET "/v1",
        "http://h/v1?key=" SECRET, "ftp://u:" SECRET "@h",
    };
    for (size_t i = 0; i < sizeof llm_urls / sizeof llm_urls[0]; i++)
        free(load_err(NULL, ARGS("--llm-url", llm_urls[i])));

    /* secrets with control characters: refused without quoting them */
    expect_err(ENV("CHATD_LLM_KEY=" SECRET "\r\n"), NULL,
               "chatd: CHATD_LLM_KEY: contains a control character");
    expect_err(NULL, ARGS("--admin-token", SECRET "\n"),
               "chatd: --admin-token: contains a control character");
    /* a mistyped secret flag, and a secret that lost its flag */
    expect_err(NULL, ARGS("--llm-kye=" SECRET), "chatd: unknown option '--llm-kye' (see --help)");
    expect_err(NULL, ARGS("--admin-token=", SECRET),
               "chatd: unexpected argument #2, not an option (see --help)");

    /* --help shows no configured secret */
    struct config c;
    struct buf out = BUF_INIT;
    assert_int_equal(load(&c, &out,
                          ENV("CHATD_LLM_KEY=" SECRET, "CHATD_ADMIN_TOKEN=" SECRET,
                              "CHATD_DB=postgresql://u:" SECRET "@h/d"),
                          ARGS("--help")),
                     CONFIG_EXIT);
    assert_null(strstr(out.ptr, SECRET));
    buf_release(&out);
}

static void help(void **state)
{
    (void)state;
    static const char *const vars[] = {
        "CHATD_HOST",        "CHATD_PORT",           "CHATD_DB",          "CHATD_LLM_URL",
        "CHATD_LLM_KEY",     "CHATD_LLM_MODEL",      "CHATD_LLM_TIMEOUT", "CHATD_HISTORY",
        "CHATD_SESSION_TTL", "CHATD_SWEEP_INTERVAL", "CHATD_CACHE_SIZE",  "CHATD_CACHE_TTL",
        "CHATD_REDIS",       "CHATD_EXPORT_DIR",     "CHATD_EXPORT_TTL",  "CHATD_ADMIN_TOKEN",
        "CHATD_MAX_BODY",    "CHATD_MAX_MESSAGE",    "CHATD_CORS_ORIGIN", "CHATD_THREADS",
        "CHATD_LOG_LEVEL",
    };
    static const char *const defaults_shown[] = {
        "(default: 0.0.0.0)",
        "(default: 5010)",
        "(default: sqlite:chatd.db)",
        "(default: https://integrate.api.nvidia.com/v1)",
        "(default: deepseek-ai/deepseek-r1)",
        "(default: 60)",
        "(default: 9)",
        "(default: 86400)",
        "(default: 3600)",
        "(default: 10000)",
        "(default: exports)",
        "(default: 600)",
        "(default: 1048576)",
        "(default: 65536)",
        "(default: *)",
        "(default: 0)",
        "(default: info)",
        "(default: none)",
    };
    struct config c;
    struct buf out = BUF_INIT;
    /* --help works whatever the environment holds, and stops at once */
    assert_int_equal(load(&c, &out, ENV("CHATD_PORT=bad"), ARGS("--help", "--bogus")), CONFIG_EXIT);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        char flag[64], line[96];
        size_t n = 0;
        flag[n++] = '-';
        flag[n++] = '-';
        for (const char *p = vars[i] + 6; *p; p++)
            flag[n++] = *p == '_' ? '-' : (char)(*p - 'A' + 'a');
        flag[n] = '\0';
        /* "  --flag ARG, CHATD_VAR" on one line */
        snprintf(line, sizeof line, "\n  %s ", flag);
        const char *at = strstr(out.ptr, line);
        if (!at)
            fail_msg("--help lacks %s", flag);
        const char *eol = strchr(at + 1, '\n');
        const char *var = strstr(at, vars[i]);
        if (!var || var > eol)
            fail_msg("--help lacks %s next to %s", vars[i], flag);
        /* a meaning on the next line */
        assert_true(eol[1] == ' ' && eol[7] != ' ' && eol[7] != '\n');
    }
    for (size_t i = 0; i < sizeof defaults_shown / sizeof defaults_shown[0]; i++)
        if (!strstr(out.ptr, defaults_shown[i]))
            fail_msg("--help lacks %s", defaults_shown[i]);
    assert_non_null(strstr(out.ptr, "or PORT"));
    assert_non_null(strstr(out.ptr, "--version"));
    assert_non_null(strstr(out.ptr, "0-65535"));
    assert_non_null(strstr(out.ptr, "1-86400"));
    assert_int_equal(out.ptr[out.len - 1], '\n');
    buf_release(&out);

    assert_int_equal(load(&c, &out, NULL, ARGS("-h")), CONFIG_EXIT);
    assert_non_null(strstr(out.ptr, "usage: chatd"));
    buf_release(&out);
}

static void version(void **state)
{
    (void)state;
    struct config c;
    struct buf out = BUF_INIT;
    assert_int_equal(buf_append_str(&out, "stale"), CHATD_OK);
    assert_int_equal(load(&c, &out, NULL, ARGS("--port", "1", "--version")), CONFIG_EXIT);
    assert_string_equal(out.ptr, "chatd 0.1.0\n");
    buf_release(&out);
    /* an error before --version wins: arguments are read in order */
    expect_err(NULL, ARGS("--bogus", "--version"), "chatd: unknown option '--bogus' (see --help)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(listen_addresses),
        cmocka_unit_test(from_env),
        cmocka_unit_test(flags_win),
        cmocka_unit_test(port_alias),
        cmocka_unit_test(equals_form),
        cmocka_unit_test(empty_optional_env_is_unset),
        cmocka_unit_test(ranges),
        cmocka_unit_test(number_syntax),
        cmocka_unit_test(error_kinds),
        cmocka_unit_test(db_urls),
        cmocka_unit_test(redis_urls),
        cmocka_unit_test(llm_urls),
        cmocka_unit_test(secrets_never_shown),
        cmocka_unit_test(help),
        cmocka_unit_test(version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
