/* err.c - strings for enum chatd_err, generated from the X-macro list. */
#include "core/err.h"

const char *chatd_strerror(enum chatd_err err)
{
    switch (err) {
#define CHATD_ERR_CASE(name, text)                                                                 \
    case CHATD_##name:                                                                             \
        return text;
        CHATD_ERRORS(CHATD_ERR_CASE)
#undef CHATD_ERR_CASE
    }
    return "unknown error";
}
