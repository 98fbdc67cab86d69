/* uuid.c - UUIDv4 from getrandom(2) (see uuid.h). */
#include "core/uuid.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <sys/random.h>

static enum chatd_err fill_random(uint8_t *r, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(r + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return CHATD_EIO;
        }
        got += (size_t)k;
    }
    return CHATD_OK;
}

static const char hex[] = "0123456789abcdef";

enum chatd_err uuid_v4(char out[UUID_STR_LEN + 1])
{
    uint8_t r[16];
    if (fill_random(r, sizeof r) != CHATD_OK)
        return CHATD_EIO;
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
    return CHATD_OK;
}

enum chatd_err random_hex(char *out, size_t nbytes)
{
    uint8_t r[32];
    assert(nbytes <= sizeof r);
    if (fill_random(r, nbytes) != CHATD_OK)
        return CHATD_EIO;
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return CHATD_OK;
}

bool uuid_valid(const char *s, size_t n)
{
    if (n != UUID_STR_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

bool uuid_normalize(const char *s, size_t n, char out[UUID_STR_LEN + 1])
{
    if (!uuid_valid(s, n))
        return false;
    for (size_t i = 0; i < UUID_STR_LEN; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] + ('a' - 'A') : s[i]);
    out[UUID_STR_LEN] = '\0';
    return true;
}
