/* uuid.c - UUIDv4 from getrandom(2) (see uuid.h). */
#include "core/uuid.h"

#include <errno.h>
#include <stdint.h>
#include <sys/random.h>

enum chatd_err uuid_v4(char out[UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return CHATD_EIO;
        }
        got += (size_t)n;
    }
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
