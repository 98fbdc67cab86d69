/*
 * alloc.h - allocation that never returns NULL.
 *
 * Out of memory is not a recoverable condition for a server like this one
 * (Redis zmalloc does the same): these wrappers log one line and abort.
 * Hitting a configured size cap is not OOM; buffers report that as
 * CHATD_ETOOBIG (see buf.h).
 */
#ifndef CHATD_CORE_ALLOC_H
#define CHATD_CORE_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Copies n bytes of p and adds a NUL terminator. */
char *xmemdup(const void *p, size_t n);

#endif
