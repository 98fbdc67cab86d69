/*
 * buf.c - growable, capped byte buffer (see buf.h). Grows geometrically;
 * never shrinks until released.
 */
#include "core/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

void buf_init(struct buf *b, size_t max)
{
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_release(struct buf *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
}

static enum chatd_err grow(struct buf *b, size_t add)
{
    if (add > SIZE_MAX / 2 - b->len)
        return CHATD_ETOOBIG;
    size_t need = b->len + add;
    if (b->max && need > b->max)
        return CHATD_ETOOBIG;
    if (need <= b->cap && b->ptr)
        return CHATD_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (b->max && cap > b->max)
        cap = b->max;
    b->ptr = xrealloc(b->ptr, cap + 1);
    b->cap = cap;
    return CHATD_OK;
}

enum chatd_err buf_append(struct buf *b, const void *p, size_t n)
{
    enum chatd_err err = grow(b, n);
    if (err)
        return err;
    if (n)
        memcpy(b->ptr + b->len, p, n);
    b->len += n;
    b->ptr[b->len] = '\0';
    return CHATD_OK;
}

enum chatd_err buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

enum chatd_err buf_append_char(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}

enum chatd_err buf_vappendf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return CHATD_EINVAL;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    enum chatd_err err = grow(b, (size_t)n);
    if (err)
        return err;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return CHATD_OK;
}

enum chatd_err buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum chatd_err err = buf_vappendf(b, fmt, ap);
    va_end(ap);
    return err;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->ptr, b->ptr + n, b->len - n);
    b->len -= n;
    b->ptr[b->len] = '\0';
}

char *buf_take(struct buf *b)
{
    char *p = b->ptr ? b->ptr : xstrdup("");
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

bool str_eq(struct str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && (n == 0 || memcmp(a.ptr, lit, n) == 0);
}
