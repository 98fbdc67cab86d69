/*
 * uuid.h - random (version 4) UUIDs from the OS's CSPRNG.
 *
 * Conversation ids are the only key to a conversation, so they come from
 * getrandom(2), never from rand() or the time. Text form is lowercase
 * 8-4-4-4-12 hex (RFC 9562).
 */
#ifndef CHATD_CORE_UUID_H
#define CHATD_CORE_UUID_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

#define UUID_STR_LEN 36 /* without the terminator */

/* Writes a new UUIDv4 and a NUL into out. CHATD_EIO if the OS has no
 * randomness to give (never falls back to a weaker source). */
enum chatd_err uuid_v4(char out[UUID_STR_LEN + 1]);
/* Writes 2 * nbytes random lowercase hex digits and a NUL into out (which
 * holds 2 * nbytes + 1); nbytes is at most 32 (asserted). CHATD_EIO if the
 * OS has no randomness to give. */
enum chatd_err random_hex(char *out, size_t nbytes);
/* True if s (n bytes) is a UUID in 8-4-4-4-12 hex form, any case. */
bool uuid_valid(const char *s, size_t n);
/* If s (n bytes) is a UUID, writes its lowercase form (the form chatd
 * stores) and a NUL into out and returns true; else returns false. */
bool uuid_normalize(const char *s, size_t n, char out[UUID_STR_LEN + 1]);

#endif
