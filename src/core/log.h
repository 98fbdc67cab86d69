/*
 * log.h - one line per event on stderr.
 *
 * Lines look like `2026-11-24T10:03:00.123Z info  http: listening on
 * 0.0.0.0:5010`: UTC time, level, then the message, which by convention is
 * lowercase, starts with the module name and quotes variable data. Each
 * line is formatted in full and written with a single write(2), so lines
 * from different threads never interleave. The level is process-wide and is
 * set once by main() before any thread starts (the only such setting).
 * Never pass secrets (API keys, passwords, tokens) to these functions.
 */
#ifndef CHATD_CORE_LOG_H
#define CHATD_CORE_LOG_H

#include <stdbool.h>

enum log_level {
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_OFF,
};

/* Sets the lowest level that is printed. Call before starting threads. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error", "off"; false if unknown. */
bool log_level_parse(const char *s, enum log_level *out);
bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                                                                         \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_write(level, __VA_ARGS__);                                                         \
    } while (0)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
