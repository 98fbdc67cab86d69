/*
 * err.h - the one error enum of chatd.
 *
 * Every module returns an enum chatd_err. Native error codes (errno,
 * SQLITE_*, CURLcode, SQLSTATE) are translated at the module boundary and
 * logged there once; they never travel further. The list is an X-macro so
 * that the enum and the strings cannot drift apart (curl's CURLcode, libuv's
 * UV_ERRNO_MAP). The mapping to HTTP statuses lives in exactly one place:
 * http_status_for() in src/http/server.c.
 */
#ifndef CHATD_CORE_ERR_H
#define CHATD_CORE_ERR_H

#define CHATD_ERRORS(X)                                                                            \
    X(OK, "ok")                                                                                    \
    X(EINVAL, "invalid input")                                                                     \
    X(ENOTFOUND, "not found")                                                                      \
    X(EMETHOD, "method not allowed")                                                               \
    X(ETOOBIG, "too large")                                                                        \
    X(EUNAUTH, "authorization required")                                                           \
    X(ERATE, "rate limited")                                                                       \
    X(EDB, "database unavailable")                                                                 \
    X(EUPSTREAM, "upstream failed")                                                                \
    X(ETIMEOUT, "upstream timed out")                                                              \
    X(EIO, "i/o error")                                                                            \
    X(ECLOSED, "connection closed")                                                                \
    X(ECANCELLED, "cancelled")                                                                     \
    X(ENOTBUILT, "not built yet")                                                                  \
    X(EINTERNAL, "internal error")

enum chatd_err {
#define CHATD_ERR_ENUM(name, text) CHATD_##name,
    CHATD_ERRORS(CHATD_ERR_ENUM)
#undef CHATD_ERR_ENUM
};

/* A short lowercase description of err; never NULL, static storage. */
const char *chatd_strerror(enum chatd_err err);

#endif
