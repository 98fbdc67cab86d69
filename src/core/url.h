/*
 * url.h - the URL handling shared by the settings parser (config.c) and
 * the MySQL backend, which reads the user, password, host, port and
 * database name of a mysql:// URL itself: one parser, so the two never
 * disagree about what a URL means.
 */
#ifndef CHATD_CORE_URL_H
#define CHATD_CORE_URL_H

#include <stdbool.h>
#include <stddef.h>

/* Percent-decodes s[0..n) (RFC 3986 2.1) into a new NUL-terminated string
 * (free() it). NULL on a bad escape, or on %00, which would cut the
 * result short. */
char *url_pct_decode(const char *s, size_t n);

/* The pieces of scheme://[userinfo@]host[:port][/path], borrowed from the
 * URL text. */
struct url_authority {
    const char *userinfo, *host, *port, *path;
    size_t userinfo_len, host_len, port_len, path_len;
    bool has_userinfo, has_port, has_path;
};

/* Splits rest (the text after "://"); NULL, or what is wrong. The
 * user-info runs to the last '@' (so an unencoded '@' or '/' in a password
 * still parses); an IPv6 host is in brackets; '?' and '#' are refused. */
const char *url_split_authority(const char *rest, struct url_authority *a);

/* a's port into *port, or def when a has none; NULL, or what is wrong. */
const char *url_port(const struct url_authority *a, unsigned def, unsigned *port);

enum db_kind { DB_SQLITE, DB_POSTGRESQL, DB_MYSQL };

/* A parsed CHATD_DB URL; every string is owned (db_url_release). */
struct db_url {
    enum db_kind kind;
    char *path;     /* sqlite: file path (":memory:" allowed) */
    char *user;     /* postgresql/mysql: may be NULL */
    char *password; /* may be NULL; never log */
    char *host;     /* default "localhost" */
    unsigned port;  /* default 5432 / 3306 */
    char *dbname;   /* required for postgresql/mysql */
};

/* Parses sqlite:PATH, postgresql://, postgres:// or mysql://
 * [user[:password]@]host[:port]/dbname into *u; NULL, or what is wrong.
 * Schemes match exactly, as store_open() matches them. Release u either
 * way. */
const char *db_url_parse(const char *v, struct db_url *u);
/* Frees u's strings (the password wiped first). */
void db_url_release(struct db_url *u);

#endif
