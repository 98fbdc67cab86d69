/*
 * url.h - the one piece of URL handling shared by the settings parser
 * (config.c) and the MySQL backend, which reads the user, password and
 * database name of a mysql:// URL itself.
 */
#ifndef CHATD_CORE_URL_H
#define CHATD_CORE_URL_H

#include <stddef.h>

/* Percent-decodes s[0..n) (RFC 3986 2.1) into a new NUL-terminated string
 * (free() it). NULL on a bad escape, or on %00, which would cut the
 * result short. */
char *url_pct_decode(const char *s, size_t n);

#endif
