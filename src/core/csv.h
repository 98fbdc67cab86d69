/*
 * csv.h - writing CSV fields (RFC 4180) that spreadsheets cannot run.
 *
 * A field is quoted when it holds a comma, a double quote, CR or LF, and
 * its quotes are doubled. A field that begins with '=', '+', '-', '@',
 * TAB or CR gets a leading "'" first (the OWASP "CSV injection" guard), so
 * a spreadsheet shows it as text instead of evaluating it. Bytes that are
 * not valid UTF-8 become U+FFFD, like every other text chatd writes. Rows
 * end in CRLF; writing the separators is the caller's business.
 */
#ifndef CHATD_CORE_CSV_H
#define CHATD_CORE_CSV_H

#include <stddef.h>

#include "core/buf.h"

/* Appends s (n bytes) as one field. CHATD_ETOOBIG past b's cap. */
enum chatd_err csv_field(struct buf *b, const char *s, size_t n);

#endif
