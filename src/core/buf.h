/*
 * buf.h - growable byte buffer with a cap, and a borrowed string slice.
 *
 * A zeroed struct buf (BUF_INIT) is valid, empty and owns nothing; its cap
 * is then unlimited. buf_init() sets the cap: an append that would make the
 * buffer longer than max fails with CHATD_ETOOBIG and leaves the buffer as
 * it was (curl's dynbuf "toobig"). The content is always NUL-terminated
 * when ptr is non-NULL, so it can be handed to C string functions, but it
 * may also hold NUL bytes: len is the truth.
 */
#ifndef CHATD_CORE_BUF_H
#define CHATD_CORE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

/* A borrowed byte range; never owns its memory. */
struct str {
    const char *ptr;
    size_t len;
};

#define STR_NULL   ((struct str){NULL, 0})
#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})

struct buf {
    char *ptr;  /* content, NUL-terminated, or NULL when nothing allocated */
    size_t len; /* bytes of content */
    size_t cap; /* bytes allocated, excluding the terminator slot */
    size_t max; /* largest len allowed; 0 means unlimited */
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/* Empties b and sets its cap (0 = unlimited). b must not own memory. */
void buf_init(struct buf *b, size_t max);
/* Frees the content; b is then empty and can be reused (cap kept). */
void buf_release(struct buf *b);
/* Sets len to 0 and keeps the allocation. */
void buf_reset(struct buf *b);

/* Appends n bytes. CHATD_ETOOBIG if the cap would be exceeded. */
enum chatd_err buf_append(struct buf *b, const void *p, size_t n);
enum chatd_err buf_append_str(struct buf *b, const char *s);
enum chatd_err buf_append_char(struct buf *b, char c);
enum chatd_err buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum chatd_err buf_vappendf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Hands the content to the caller (free() it) and empties b. Never NULL. */
char *buf_take(struct buf *b);

static inline struct str buf_str(const struct buf *b)
{
    return (struct str){b->ptr ? b->ptr : "", b->len};
}

bool str_eq(struct str a, const char *lit);

#endif
