/*
 * exportfile.c - export files: made as .part, renamed when whole, served
 * by name, swept after their TTL (see exportfile.h).
 */
#include "api/exportfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "core/uuid.h"

#define RANDOM_BYTES 8 /* 16 hex digits */

enum chatd_err export_dir_prepare(const char *dir, char *why, size_t why_len)
{
    struct stat st;
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(why, why_len, "cannot create the export directory '%s': %s", dir, strerror(errno));
        return CHATD_EIO;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, why_len, "the export directory '%s' is not a directory", dir);
        return CHATD_EIO;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(why, why_len, "cannot write to the export directory '%s': %s", dir,
                 strerror(errno));
        return CHATD_EIO;
    }
    return CHATD_OK;
}

static char *join(const char *dir, const char *name, const char *suffix)
{
    struct buf b = BUF_INIT;
    buf_appendf(&b, "%s/%s%s", dir, name, suffix);
    return buf_take(&b);
}

enum chatd_err export_file_create(struct export_file *f, const char *dir, const char *stem,
                                  const char *ext)
{
    char rnd[2 * RANDOM_BYTES + 1];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (random_hex(rnd, RANDOM_BYTES) != CHATD_OK) {
        log_error("export: no randomness for a file name");
        return CHATD_EIO;
    }
    int n = snprintf(f->name, sizeof f->name, "%s_%s%s", stem, rnd, ext);
    if (n < 0 || (size_t)n >= sizeof f->name)
        return CHATD_EINTERNAL;
    f->part_path = join(dir, f->name, ".part");
    f->final_path = join(dir, f->name, "");
    f->fd = open(f->part_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        log_error("export: cannot create '%s': %s", f->part_path, strerror(errno));
        export_file_discard(f);
        return CHATD_EIO;
    }
    return CHATD_OK;
}

enum chatd_err export_file_write(struct export_file *f, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(f->fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            log_error("export: cannot write '%s': %s", f->part_path, strerror(errno));
            return CHATD_EIO;
        }
        c += w;
        n -= (size_t)w;
    }
    return CHATD_OK;
}

enum chatd_err export_file_finish(struct export_file *f)
{
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        log_error("export: cannot close '%s': %s", f->part_path, strerror(errno));
        unlink(f->part_path);
        return CHATD_EIO;
    }
    if (rename(f->part_path, f->final_path) != 0) {
        log_error("export: cannot rename '%s': %s", f->part_path, strerror(errno));
        unlink(f->part_path);
        return CHATD_EIO;
    }
    free(f->part_path);
    f->part_path = NULL;
    return CHATD_OK;
}

void export_file_discard(struct export_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
        if (f->part_path)
            unlink(f->part_path);
    }
    free(f->part_path);
    free(f->final_path);
    f->part_path = f->final_path = NULL;
}

static bool all_of(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

bool export_file_name_valid(const char *name, size_t n, bool *all, char *download,
                            size_t download_len)
{
    static const char one[] = "conversation_", many[] = "conversations_";
    size_t stem; /* length of the part before "_{16 hex}" */
    size_t ext_len;
    if (n > 6 && memcmp(name + n - 6, ".jsonl", 6) == 0)
        ext_len = 6;
    else if (n > 4 && memcmp(name + n - 4, ".csv", 4) == 0)
        ext_len = 4;
    else
        return false;
    if (n >= sizeof many - 1 && memcmp(name, many, sizeof many - 1) == 0) {
        *all = true;
        stem = sizeof many - 1 + TIMEFMT_STAMP_LEN;
        if (n < stem || !all_of(name + sizeof many - 1, TIMEFMT_STAMP_LEN, "0123456789"))
            return false;
    } else if (n >= sizeof one - 1 && memcmp(name, one, sizeof one - 1) == 0) {
        *all = false;
        stem = sizeof one - 1 + UUID_STR_LEN;
        char id[UUID_STR_LEN + 1];
        if (n < stem || !uuid_normalize(name + sizeof one - 1, UUID_STR_LEN, id) ||
            memcmp(id, name + sizeof one - 1, UUID_STR_LEN) != 0)
            return false;
    } else {
        return false;
    }
    if (n != stem + 1 + 2 * RANDOM_BYTES + ext_len || name[stem] != '_' ||
        !all_of(name + stem + 1, 2 * RANDOM_BYTES, "0123456789abcdef"))
        return false;
    if (download_len < stem + ext_len + 1)
        return false;
    memcpy(download, name, stem);
    memcpy(download + stem, name + n - ext_len, ext_len);
    download[stem + ext_len] = '\0';
    return true;
}

size_t export_files_sweep(const char *dir, int64_t ttl, int64_t now, bool stale_partials)
{
    DIR *d = opendir(dir);
    size_t removed = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        bool all;
        char download[EXPORT_NAME_MAX];
        bool partial = n > 5 && strcmp(e->d_name + n - 5, ".part") == 0 &&
                       export_file_name_valid(e->d_name, n - 5, &all, download, sizeof download);
        if (partial ? !stale_partials
                    : !export_file_name_valid(e->d_name, n, &all, download, sizeof download))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        int64_t mtime = (int64_t)st.st_mtim.tv_sec * USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
        if (!partial && now - mtime < ttl)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
        else
            log_warn("export: cannot remove '%s/%s': %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
    return removed;
}
