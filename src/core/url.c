/*
 * url.c - percent-decoding, authorities and CHATD_DB URLs (url.h).
 */
#include "core/url.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

char *url_pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? hex_digit(s[i + 1]) : -1;
        int lo = i + 2 < n ? hex_digit(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi | lo) == 0) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

const char *url_split_authority(const char *rest, struct url_authority *a)
{
    memset(a, 0, sizeof *a);
    if (strchr(rest, '?') || strchr(rest, '#'))
        return "query parameters and fragments are not supported";
    const char *at = strrchr(rest, '@');
    const char *hp = rest;
    if (at) {
        a->has_userinfo = true;
        a->userinfo = rest;
        a->userinfo_len = (size_t)(at - rest);
        hp = at + 1;
    }
    const char *slash = strchr(hp, '/');
    const char *hp_end = slash ? slash : hp + strlen(hp);
    if (slash) {
        a->has_path = true;
        a->path = slash + 1;
        a->path_len = strlen(slash + 1);
    }
    const char *colon;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(hp_end - hp));
        if (!rb)
            return "an IPv6 address lacks its ']'";
        a->host = hp + 1;
        a->host_len = (size_t)(rb - hp - 1);
        if (rb + 1 < hp_end && rb[1] != ':')
            return "unexpected text after the IPv6 address";
        colon = rb + 1 < hp_end ? rb + 1 : NULL;
    } else {
        colon = memchr(hp, ':', (size_t)(hp_end - hp));
        a->host = hp;
        a->host_len = (size_t)((colon ? colon : hp_end) - hp);
    }
    if (colon) {
        a->has_port = true;
        a->port = colon + 1;
        a->port_len = (size_t)(hp_end - colon - 1);
    }
    return NULL;
}

const char *url_port(const struct url_authority *a, unsigned def, unsigned *port)
{
    unsigned v = 0;
    *port = def;
    if (!a->has_port)
        return NULL;
    for (size_t i = 0; i < a->port_len; i++) {
        if (a->port[i] < '0' || a->port[i] > '9' || v > 65535)
            return "the port must be a number from 1 to 65535";
        v = v * 10 + (unsigned)(a->port[i] - '0');
    }
    if (v < 1 || v > 65535)
        return "the port must be a number from 1 to 65535";
    *port = v;
    return NULL;
}

static bool has_db_scheme(const char *s, const char *scheme)
{
    return strncmp(s, scheme, strlen(scheme)) == 0;
}

const char *db_url_parse(const char *v, struct db_url *u)
{
    const char *rest;
    memset(u, 0, sizeof *u);
    if (has_db_scheme(v, "sqlite:")) {
        u->kind = DB_SQLITE;
        if (!v[7])
            return "the path is empty (sqlite:PATH)";
        u->path = xstrdup(v + 7);
        return NULL;
    }
    if (has_db_scheme(v, "postgresql://") || has_db_scheme(v, "postgres://")) {
        u->kind = DB_POSTGRESQL;
        u->port = 5432;
    } else if (has_db_scheme(v, "mysql://")) {
        u->kind = DB_MYSQL;
        u->port = 3306;
    } else {
        return "expected sqlite:PATH, postgresql://... or mysql://...";
    }
    rest = strstr(v, "://") + 3;
    struct url_authority a;
    const char *why = url_split_authority(rest, &a);
    if (!why)
        why = url_port(&a, u->port, &u->port);
    if (why)
        return why;
    if (!a.has_path || a.path_len == 0)
        return "the database name is missing (.../dbname)";
    if (memchr(a.path, '/', a.path_len))
        return "the database name contains '/'";
    if (a.has_userinfo) {
        const char *colon = memchr(a.userinfo, ':', a.userinfo_len);
        size_t ulen = colon ? (size_t)(colon - a.userinfo) : a.userinfo_len;
        if (ulen) {
            u->user = url_pct_decode(a.userinfo, ulen);
            if (!u->user)
                return "bad percent-encoding in the user name";
        }
        if (colon && a.userinfo_len > ulen + 1) {
            u->password = url_pct_decode(colon + 1, a.userinfo_len - ulen - 1);
            if (!u->password)
                return "bad percent-encoding in the password";
        }
    }
    u->host = a.host_len ? xmemdup(a.host, a.host_len) : xstrdup("localhost");
    u->dbname = url_pct_decode(a.path, a.path_len);
    if (!u->dbname)
        return "bad percent-encoding in the database name";
    return NULL;
}

void db_url_release(struct db_url *u)
{
    free(u->path);
    free(u->user);
    if (u->password) {
        explicit_bzero(u->password, strlen(u->password));
        free(u->password);
    }
    free(u->host);
    free(u->dbname);
    memset(u, 0, sizeof *u);
}
