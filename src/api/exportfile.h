/*
 * exportfile.h - the files that exports leave in CHATD_EXPORT_DIR
 * (SPEC.md "Export files").
 *
 * While an export streams, its bytes are also written to NAME.part; only
 * a complete export is renamed to NAME, so a name that can be downloaded
 * always holds a whole file. Names are made here and only here:
 *   conversation_{uuid}_{16 hex}.csv|jsonl     one conversation
 *   conversations_{YYYYmmddHHMMSS}_{16 hex}.csv|jsonl   export-all
 * The 16 random hex digits (from the OS's CSPRNG) make names unguessable;
 * dropping "_{16 hex}" gives the name a browser should save the file as.
 * Anything else, ".part" files and paths included, is not an export file.
 */
#ifndef CHATD_API_EXPORTFILE_H
#define CHATD_API_EXPORTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define EXPORT_NAME_MAX 96 /* bytes, terminator included */

struct export_file {
    int fd;                     /* the .part file; -1 when none is open */
    char name[EXPORT_NAME_MAX]; /* the final name */
    char *part_path;            /* dir/NAME.part */
    char *final_path;           /* dir/NAME */
};

/* Creates dir if it does not exist. On failure writes why. */
enum chatd_err export_dir_prepare(const char *dir, char *why, size_t why_len);

/* Starts a file for the download named stem + ext (stem "conversation_{id}"
 * or "conversations_{stamp}", ext ".csv" or ".jsonl"). CHATD_EIO (logged)
 * if it cannot be created. */
enum chatd_err export_file_create(struct export_file *f, const char *dir, const char *stem,
                                  const char *ext);
/* Appends n bytes. CHATD_EIO (logged once, e.g. the disk is full): the
 * export must then be discarded. */
enum chatd_err export_file_write(struct export_file *f, const void *p, size_t n);
/* Closes the file and renames it into place. CHATD_EIO (logged) if that
 * fails; the partial file is then removed. */
enum chatd_err export_file_finish(struct export_file *f);
/* Closes and removes the partial file, if any. Safe to call twice, and on
 * a finished file (then only frees). */
void export_file_discard(struct export_file *f);

/* True if name (n bytes) is an export file name. Then *all says whether
 * it is an export-all file, and download (of download_len bytes, at least
 * EXPORT_NAME_MAX) receives the name to save it as. */
bool export_file_name_valid(const char *name, size_t n, bool *all, char *download,
                            size_t download_len);

/* Removes finished export files older than ttl (usec) at now (usec), and
 * with stale_partials also every ".part" file (left by a crash: call it so
 * only before any export runs). Returns how many were removed. */
size_t export_files_sweep(const char *dir, int64_t ttl, int64_t now, bool stale_partials);

#endif
