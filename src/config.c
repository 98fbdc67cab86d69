/*
 * config.c - settings from envp and argv, validated (see config.h).
 *
 * One table describes every setting: its variable, the value placeholder
 * and default shown by --help, a one-line meaning, and for numbers a
 * range. The flag name is derived from the variable (drop CHATD_,
 * lowercase, '_' -> '-'), so the two cannot drift apart. Loading runs in
 * three passes. The first collects the raw text of each setting from
 * envp: the first occurrence wins, as with getenv(). The second overrides
 * from argv: the last occurrence wins. The third parses each final value
 * once, so a bad environment value that a flag overrides is never an
 * error. Each message names where the bad value came from (CHATD_PORT,
 * PORT or --port).
 *
 * Numbers are decimal digits only: no sign, space, 0x or suffix. Empty
 * text means "unset" only for the settings that are off by default
 * (CHATD_DB_PASSWORD, CHATD_LLM_KEY, CHATD_REDIS, CHATD_ADMIN_TOKEN); anywhere else it is an
 * error.
 *
 * Secrets never reach a message. The LLM key and the admin token are never
 * quoted. A URL is quoted only in a redacted form: its user-info, a port
 * that is not a number, and its query are each shown as "***". Unknown
 * options are quoted without their "=value" part, in case that part was
 * a mistyped --llm-key=....
 *
 * Not done here: whether the database can be opened, or a backend is built
 * (the store decides); resolving host names (the listen address must be
 * an IP literal or "localhost").
 */
#include "config.h"

#include <netdb.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/url.h"

enum setting_id {
    S_HOST,
    S_PORT,
    S_DB,
    S_DB_PASSWORD,
    S_LLM_URL,
    S_LLM_KEY,
    S_LLM_MODEL,
    S_LLM_TIMEOUT,
    S_HISTORY,
    S_SESSION_TTL,
    S_SWEEP_INTERVAL,
    S_CACHE_SIZE,
    S_CACHE_TTL,
    S_REDIS,
    S_EXPORT_DIR,
    S_EXPORT_TTL,
    S_ADMIN_TOKEN,
    S_MAX_BODY,
    S_MAX_MESSAGE,
    S_CORS_ORIGIN,
    S_THREADS,
    S_LOG_LEVEL,
    S_COUNT
};

struct setting {
    const char *env;   /* CHATD_NAME; the flag is derived from it */
    const char *arg;   /* value placeholder in --help */
    const char *def;   /* default text, NULL = unset */
    const char *help;  /* one-line meaning */
    const char *unit;  /* numbers: what they count, for messages; NULL otherwise */
    uint64_t min, max; /* numbers: inclusive range */
};

#define TEN_YEARS UINT64_C(315360000)
#define ONE_GIB   UINT64_C(1073741824)

static const struct setting settings[S_COUNT] = {
    [S_HOST] = {"CHATD_HOST", "ADDR", "0.0.0.0", "listen address", NULL, 0, 0},
    [S_PORT] = {"CHATD_PORT", "N", "5010", "listen port, 0-65535 (0: any free port)", NULL, 0,
                65535},
    [S_DB] = {"CHATD_DB", "URL", "sqlite:chatd.db",
              "sqlite:PATH, postgresql://user:pass@host:port/db or mysql://user:pass@host:port/db",
              NULL, 0, 0},
    [S_DB_PASSWORD] = {"CHATD_DB_PASSWORD", "PASSWORD", NULL,
                       "database password, used when CHATD_DB's URL has none", NULL, 0, 0},
    [S_LLM_URL] = {"CHATD_LLM_URL", "URL", "https://integrate.api.nvidia.com/v1",
                   "base URL of an OpenAI-compatible API (/chat/completions is appended)", NULL, 0,
                   0},
    [S_LLM_KEY] = {"CHATD_LLM_KEY", "KEY", NULL, "sent upstream as 'Authorization: Bearer KEY'",
                   NULL, 0, 0},
    [S_LLM_MODEL] = {"CHATD_LLM_MODEL", "NAME", "deepseek-ai/deepseek-r1",
                     "model name sent upstream", NULL, 0, 0},
    [S_LLM_TIMEOUT] = {"CHATD_LLM_TIMEOUT", "SECONDS", "60",
                       "seconds an upstream call may take before the client gets 504, 1-86400",
                       "seconds", 1, 86400},
    [S_HISTORY] = {"CHATD_HISTORY", "N", "9",
                   "earlier messages of the conversation sent upstream with the new one, 0-1000",
                   "messages", 0, 1000},
    [S_SESSION_TTL] = {"CHATD_SESSION_TTL", "SECONDS", "86400",
                       "seconds of inactivity after which a conversation expires, 1-315360000",
                       "seconds", 1, TEN_YEARS},
    [S_SWEEP_INTERVAL] = {"CHATD_SWEEP_INTERVAL", "SECONDS", "3600",
                          "seconds between sweeps that delete expired conversations, 1-2592000",
                          "seconds", 1, 2592000},
    [S_CACHE_SIZE] = {"CHATD_CACHE_SIZE", "N", "10000",
                      "response-cache entries, 0-100000000 (0 disables the cache)", "entries", 0,
                      100000000},
    [S_CACHE_TTL] = {"CHATD_CACHE_TTL", "SECONDS", "86400",
                     "seconds a cached answer stays valid, 1-315360000", "seconds", 1, TEN_YEARS},
    [S_REDIS] = {"CHATD_REDIS", "URL", NULL,
                 "redis://[:password@]host[:port][/db]: share the response cache between instances",
                 NULL, 0, 0},
    [S_EXPORT_DIR] = {"CHATD_EXPORT_DIR", "DIR", "exports", "where finished export files are kept",
                      NULL, 0, 0},
    [S_EXPORT_TTL] = {"CHATD_EXPORT_TTL", "SECONDS", "600",
                      "seconds a finished export file is kept, 1-31536000", "seconds", 1, 31536000},
    [S_ADMIN_TOKEN] = {"CHATD_ADMIN_TOKEN", "TOKEN", NULL,
                       "when set, export-all and /metrics need 'Authorization: Bearer TOKEN'", NULL,
                       0, 0},
    [S_MAX_BODY] = {"CHATD_MAX_BODY", "BYTES", "1048576",
                    "largest request body in bytes (larger gets 413), 1-1073741824", "bytes", 1,
                    ONE_GIB},
    [S_MAX_MESSAGE] = {"CHATD_MAX_MESSAGE", "BYTES", "65536",
                       "largest 'message' in bytes (larger gets 413), 1-1073741824", "bytes", 1,
                       ONE_GIB},
    [S_CORS_ORIGIN] = {"CHATD_CORS_ORIGIN", "ORIGIN", "*", "value of Access-Control-Allow-Origin",
                       NULL, 0, 0},
    [S_THREADS] = {"CHATD_THREADS", "N", "0", "HTTP worker threads, 0-1024 (0: one per core)",
                   "threads", 0, 1024},
    [S_LOG_LEVEL] = {"CHATD_LOG_LEVEL", "LEVEL", "info", "debug, info, warn, error or off", NULL, 0,
                     0},
};

#define FLAG_MAX 32 /* longest derived flag, with its "--" and NUL */

/* The flag of setting i: CHATD_LLM_URL -> --llm-url. */
static void flag_of(enum setting_id i, char out[FLAG_MAX])
{
    const char *e = settings[i].env + 6; /* after "CHATD_" */
    size_t n = 0;
    out[n++] = '-';
    out[n++] = '-';
    for (; *e && n < FLAG_MAX - 1; e++) {
        char c = *e;
        out[n++] = c == '_' ? '-' : c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
}

static bool optional(enum setting_id i)
{
    return i == S_LLM_KEY || i == S_REDIS || i == S_ADMIN_TOKEN || i == S_DB_PASSWORD;
}

static bool secret(enum setting_id i)
{
    return i == S_LLM_KEY || i == S_ADMIN_TOKEN || i == S_DB_PASSWORD;
}

/* ---- message helpers ---- */

/* Appends s as one printable line of at most 100 bytes: control
 * characters become '?', longer text ends in "...". */
static void put_clean(struct buf *b, const char *s, size_t n)
{
    const size_t max = 100;
    size_t room = n <= max ? n : max - 3;
    for (size_t i = 0; i < room; i++) {
        unsigned char c = (unsigned char)s[i];
        (void)buf_append_char(b, c < 0x20 || c == 0x7f ? '?' : (char)c);
    }
    if (room < n)
        (void)buf_append(b, "...", 3);
}

static void put_quoted(struct buf *b, const char *s)
{
    (void)buf_append_char(b, '\'');
    put_clean(b, s, strlen(s));
    (void)buf_append_char(b, '\'');
}

/* After "scheme://" (or "scheme:"), or the whole string. */
static const char *after_scheme(const char *v)
{
    const char *s = strstr(v, "://");
    if (s)
        return s + 3;
    s = strchr(v, ':');
    return s ? s + 1 : v;
}

static bool all_digits(const char *p, const char *end)
{
    if (p == end)
        return false;
    for (; p < end; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Appends 'v' with what may be secret replaced by "***": the user-info (up
 * to the last '@'), a port that is not all digits (it may be a password
 * whose '@' was forgotten) and any query or fragment. */
static void put_url(struct buf *b, const char *v)
{
    struct buf r = BUF_INIT;
    const char *a = after_scheme(v);
    const char *end = a + strcspn(a, "?#");
    const char *at = NULL;
    for (const char *p = a; p < end; p++)
        if (*p == '@')
            at = p;
    (void)buf_append(&r, v, (size_t)(a - v));
    if (at) {
        (void)buf_append(&r, "***", 3);
        a = at;
    }
    const char *hp_end = a + strcspn(a, "/?#");
    const char *colon = NULL;
    for (const char *p = a; p < hp_end; p++)
        if (*p == ':')
            colon = p;
    if (colon && !all_digits(colon + 1, hp_end) && !memchr(colon, ']', (size_t)(hp_end - colon))) {
        (void)buf_append(&r, a, (size_t)(colon + 1 - a));
        (void)buf_append(&r, "***", 3);
        a = hp_end;
    }
    (void)buf_append(&r, a, (size_t)(end - a));
    if (*end) {
        (void)buf_append_char(&r, *end);
        (void)buf_append(&r, "***", 3);
    }
    put_quoted(b, r.ptr ? r.ptr : "");
    buf_release(&r);
}

/* ---- value parsers: each returns NULL or what is wrong ---- */

/* Decimal digits only, at least one; false on anything else or overflow. */
static bool parse_digits(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static const char *parse_redis(const char *v, struct redis_url *u)
{
    memset(u, 0, sizeof *u);
    if (!has_prefix(v, "redis://"))
        return "expected redis://[:password@]host[:port][/db]";
    struct url_authority a;
    const char *why = url_split_authority(v + 8, &a);
    if (!why)
        why = url_port(&a, 6379, &u->port);
    if (why)
        return why;
    if (a.host_len == 0)
        return "the host is missing";
    if (a.has_path && a.path_len) {
        uint64_t db;
        if (!parse_digits(a.path, a.path_len, &db) || db > 65535)
            return "the database must be a number from 0 to 65535";
        u->db = (unsigned)db;
    }
    if (a.has_userinfo && a.userinfo_len) {
        if (a.userinfo[0] != ':')
            return "only a password is supported before '@' (redis://:password@host)";
        if (a.userinfo_len > 1) {
            u->password = url_pct_decode(a.userinfo + 1, a.userinfo_len - 1);
            if (!u->password)
                return "bad percent-encoding in the password";
        }
    }
    u->host = xmemdup(a.host, a.host_len);
    return NULL;
}

/* Checks an LLM base URL; *out is the URL without one trailing '/'. */
static const char *parse_llm_url(const char *v, char **out)
{
    const char *rest;
    if (has_prefix(v, "http://"))
        rest = v + 7;
    else if (has_prefix(v, "https://"))
        rest = v + 8;
    else
        return "expected an http:// or https:// URL";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "the URL contains a space or control character";
    if (strpbrk(rest, "?#"))
        return "query parameters and fragments are not supported (/chat/completions is appended)";
    size_t alen = strcspn(rest, "/");
    const char *at = NULL;
    for (const char *p = rest; p < rest + alen; p++)
        if (*p == '@')
            at = p;
    const char *hp = at ? at + 1 : rest;
    size_t hlen = (size_t)(rest + alen - hp);
    const char *colon = NULL;
    if (hlen && *hp == '[') {
        const char *rb = memchr(hp, ']', hlen);
        if (!rb || rb == hp + 1)
            return "the URL has no host";
        if (rb + 1 < hp + hlen && rb[1] != ':')
            return "unexpected text after the IPv6 address";
        colon = rb + 1 < hp + hlen ? rb + 1 : NULL;
    } else {
        colon = memchr(hp, ':', hlen);
        if ((colon ? (size_t)(colon - hp) : hlen) == 0)
            return "the URL has no host";
    }
    if (colon) {
        uint64_t port;
        if (!parse_digits(colon + 1, (size_t)(hp + hlen - colon - 1), &port) || port < 1 ||
            port > 65535)
            return "the port must be a number from 1 to 65535";
    }
    size_t n = strlen(v);
    if (v[n - 1] == '/') /* the host is not empty, so this is not the scheme's */
        n--;
    *out = xmemdup(v, n);
    return NULL;
}

/* ---- loading ---- */

static void put_help(struct buf *out)
{
    (void)buf_append_str(out, "usage: chatd [--NAME VALUE | --NAME=VALUE]...\n"
                              "\n"
                              "chatd is a conversation server for LLM chat. Every setting is an\n"
                              "environment variable and the same-named flag (CHATD_LLM_URL=x is\n"
                              "--llm-url x or --llm-url=x); flags win over the environment.\n"
                              "Numbers are decimal digits only.\n"
                              "\n");
    for (int i = 0; i < S_COUNT; i++) {
        char flag[FLAG_MAX];
        flag_of((enum setting_id)i, flag);
        const struct setting *s = &settings[i];
        (void)buf_appendf(out, "  %s %s, %s%s (default: %s)\n      %s\n", flag, s->arg, s->env,
                          i == S_PORT ? " or PORT" : "", s->def ? s->def : "none", s->help);
    }
    (void)buf_append_str(out, "  --help\n      print this help and exit\n"
                              "  --version\n      print the version and exit\n");
}

/* Starts the error line in out: "chatd: " and "LABEL: " if label. */
static enum config_result fail(struct buf *out, const char *label)
{
    buf_reset(out);
    (void)buf_append_str(out, "chatd: ");
    if (label)
        (void)buf_appendf(out, "%s: ", label);
    return CONFIG_ERROR;
}

static enum config_result fail_with(struct buf *out, const char *label, const char *what)
{
    fail(out, label);
    (void)buf_append_str(out, what);
    return CONFIG_ERROR;
}

/* Parses the final text v of setting i into cfg. On error writes the
 * message (labelled with where v came from) to out. */
static enum config_result apply(struct config *cfg, enum setting_id i, const char *v,
                                const char *label, struct buf *out)
{
    const struct setting *s = &settings[i];
    const char *why = NULL;
    uint64_t num = 0;

    if (optional(i) && (!v || !*v))
        return CONFIG_OK; /* unset */
    if (s->unit || i == S_PORT) {
        if (!parse_digits(v, strlen(v), &num) || num < s->min || num > s->max) {
            fail(out, label);
            put_quoted(out, v);
            if (i == S_PORT)
                (void)buf_append_str(out, " is not a port (0-65535)");
            else
                (void)buf_appendf(out, " is not a whole number of %s from %llu to %llu", s->unit,
                                  (unsigned long long)s->min, (unsigned long long)s->max);
            return CONFIG_ERROR;
        }
    } else if (!*v) {
        return fail_with(out, label, "must not be empty");
    }
    if (secret(i) && has_control(v))
        return fail_with(out, label, "contains a control character");

    switch (i) {
    case S_HOST: {
        /* Checked here, so a bad address is one line before anything
         * starts (numeric only: a listen address is not looked up). */
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
        if (strcmp(v, "localhost") != 0 && getaddrinfo(v, NULL, &hints, &ai) != 0) {
            fail(out, label);
            put_quoted(out, v);
            (void)buf_append_str(out, " is not an IPv4 or IPv6 address");
            return CONFIG_ERROR;
        }
        freeaddrinfo(ai);
        cfg->host = xstrdup(v);
        break;
    }
    case S_PORT:
        cfg->port = (unsigned)num;
        break;
    case S_DB:
        cfg->db = xstrdup(v);
        why = db_url_parse(v, &cfg->db_url);
        break;
    case S_LLM_URL:
        why = parse_llm_url(v, &cfg->llm_url);
        break;
    case S_DB_PASSWORD:
        cfg->db_password = xstrdup(v);
        break;
    case S_LLM_KEY:
        cfg->llm_key = xstrdup(v);
        break;
    case S_LLM_MODEL:
        cfg->llm_model = xstrdup(v);
        break;
    case S_LLM_TIMEOUT:
        cfg->llm_timeout = (int64_t)num;
        break;
    case S_HISTORY:
        cfg->history = (unsigned)num;
        break;
    case S_SESSION_TTL:
        cfg->session_ttl = (int64_t)num;
        break;
    case S_SWEEP_INTERVAL:
        cfg->sweep_interval = (int64_t)num;
        break;
    case S_CACHE_SIZE:
        cfg->cache_size = (size_t)num;
        break;
    case S_CACHE_TTL:
        cfg->cache_ttl = (int64_t)num;
        break;
    case S_REDIS:
        cfg->redis = xstrdup(v);
        why = parse_redis(v, &cfg->redis_url);
        break;
    case S_EXPORT_DIR:
        cfg->export_dir = xstrdup(v);
        break;
    case S_EXPORT_TTL:
        cfg->export_ttl = (int64_t)num;
        break;
    case S_ADMIN_TOKEN:
        cfg->admin_token = xstrdup(v);
        break;
    case S_MAX_BODY:
        cfg->max_body = (size_t)num;
        break;
    case S_MAX_MESSAGE:
        cfg->max_message = (size_t)num;
        break;
    case S_CORS_ORIGIN:
        if (has_control(v))
            return fail_with(out, label, "contains a control character");
        cfg->cors_origin = xstrdup(v);
        break;
    case S_THREADS:
        cfg->threads = (unsigned)num;
        break;
    case S_LOG_LEVEL:
        if (!log_level_parse(v, &cfg->log_level)) {
            fail(out, label);
            put_quoted(out, v);
            (void)buf_append_str(out, " is not a log level (debug, info, warn, error, off)");
            return CONFIG_ERROR;
        }
        break;
    case S_COUNT:
        break;
    }
    if (why) {
        fail_with(out, label, "cannot parse ");
        put_url(out, v);
        (void)buf_appendf(out, ": %s", why);
        return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

/* The setting whose flag is name[0..n), or S_COUNT. */
static enum setting_id find_flag(const char *name, size_t n)
{
    for (int i = 0; i < S_COUNT; i++) {
        char flag[FLAG_MAX];
        flag_of((enum setting_id)i, flag);
        if (strlen(flag) == n && memcmp(flag, name, n) == 0)
            return (enum setting_id)i;
    }
    return S_COUNT;
}

enum config_result config_load(struct config *cfg, int argc, char *const *argv, char *const *envp,
                               struct buf *out)
{
    const char *val[S_COUNT] = {NULL};
    const char *label[S_COUNT] = {NULL};
    char flags[S_COUNT][FLAG_MAX];
    const char *port_alias = NULL;
    enum config_result res = CONFIG_OK;

    memset(cfg, 0, sizeof *cfg);
    buf_reset(out);
    for (int i = 0; i < S_COUNT; i++)
        flag_of((enum setting_id)i, flags[i]);

    for (char *const *e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t n = (size_t)(eq - *e);
        if (n == 4 && memcmp(*e, "PORT", 4) == 0 && !port_alias)
            port_alias = eq + 1;
        for (int i = 0; i < S_COUNT; i++) {
            if (!val[i] && strlen(settings[i].env) == n && memcmp(*e, settings[i].env, n) == 0) {
                val[i] = eq + 1;
                label[i] = settings[i].env;
            }
        }
    }
    if (!val[S_PORT] && port_alias) {
        val[S_PORT] = port_alias;
        label[S_PORT] = "PORT";
    }

    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        size_t n = strcspn(a, "=");
        bool inline_value = a[n] == '=';
        bool help = strcmp(a, "-h") == 0 || (n == 6 && memcmp(a, "--help", 6) == 0);
        bool version = n == 9 && memcmp(a, "--version", 9) == 0;
        if (help || version) {
            if (inline_value) {
                res = fail(out, NULL);
                (void)buf_appendf(out, "%.*s: takes no value", (int)n, a);
                goto out;
            }
            buf_reset(out);
            if (help)
                put_help(out);
            else
                (void)buf_append_str(out, "chatd " CHATD_VERSION "\n");
            res = CONFIG_EXIT;
            goto out;
        }
        if (a[0] != '-') {
            /* not quoted: it may be a secret that lost its flag to a typo */
            res = fail(out, NULL);
            (void)buf_appendf(out, "unexpected argument #%d, not an option (see --help)", k);
            goto out;
        }
        enum setting_id i = find_flag(a, n);
        if (i == S_COUNT) {
            res = fail_with(out, NULL, "unknown option '");
            put_clean(out, a, n);
            (void)buf_append_str(out, "' (see --help)");
            goto out;
        }
        if (inline_value) {
            val[i] = a + n + 1;
        } else if (k + 1 < argc && strncmp(argv[k + 1], "--", 2) != 0) {
            val[i] = argv[++k];
        } else {
            res = fail_with(out, flags[i], "missing value");
            goto out;
        }
        label[i] = flags[i];
    }

    for (int i = 0; i < S_COUNT && res == CONFIG_OK; i++)
        res = apply(cfg, (enum setting_id)i, val[i] ? val[i] : settings[i].def,
                    label[i] ? label[i] : "default", out);
out:
    if (res != CONFIG_OK)
        config_release(cfg);
    return res;
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void config_release(struct config *cfg)
{
    free(cfg->host);
    free_secret(cfg->db);
    db_url_release(&cfg->db_url);
    free_secret(cfg->db_password);
    free(cfg->llm_url);
    free_secret(cfg->llm_key);
    free(cfg->llm_model);
    free_secret(cfg->redis);
    free(cfg->redis_url.host);
    free_secret(cfg->redis_url.password);
    free(cfg->export_dir);
    free_secret(cfg->admin_token);
    free(cfg->cors_origin);
    memset(cfg, 0, sizeof *cfg);
}
