/*
 * test_exportfile.c - export file names, the .part/rename life cycle and
 * the TTL sweep, in a temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/exportfile.h"
#include "core/timefmt.h"

static char dir[] = "/tmp/chatd-test-exportfile-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static bool valid(const char *name, bool *all, char *download)
{
    return export_file_name_valid(name, strlen(name), all, download, EXPORT_NAME_MAX);
}

static void names(void **state)
{
    bool all;
    char d[EXPORT_NAME_MAX];
    (void)state;
    assert_true(
        valid("conversation_0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c_0123456789abcdef.csv", &all, d));
    assert_false(all);
    assert_string_equal(d, "conversation_0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c.csv");
    assert_true(valid("conversations_20261124105941_fedcba9876543210.jsonl", &all, d));
    assert_true(all);
    assert_string_equal(d, "conversations_20261124105941.jsonl");

    static const char *const bad[] = {
        "",
        "x.csv",
        "../conversations_20261124105941_fedcba9876543210.jsonl",
        "conversations_20261124105941_fedcba9876543210.jsonl.part",
        "conversations_20261124105941_fedcba9876543210.json",
        "conversations_20261124105941_FEDCBA9876543210.jsonl",
        "conversations_2026112410594_fedcba9876543210.jsonl",
        "conversations_2026112410594x_fedcba9876543210.jsonl",
        "conversations_20261124105941_fedcba987654321.jsonl",
        "conversations_20261124105941-fedcba9876543210.jsonl",
        "conversation_0B6F3C2A-1D4E-4F5A-9B8C-7D6E5F4A3B2C_0123456789abcdef.csv",
        "conversation_0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2_0123456789abcdef.csv",
        "conversation_0b6f3c2a/1d4e-4f5a-9b8c-7d6e5f4a3b2c_0123456789abcdef.csv",
        "conversation_0b6f3c2a-1d4e-4f5a-9b8c-7d6e5f4a3b2c_0123456789abcdef.csv/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (valid(bad[i], &all, d))
            fail_msg("accepted '%s'", bad[i]);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void life_cycle(void **state)
{
    struct export_file f;
    bool all;
    char d[EXPORT_NAME_MAX];
    (void)state;
    assert_int_equal(export_file_create(&f, dir, "conversations_20261124105941", ".csv"), CHATD_OK);
    assert_true(valid(f.name, &all, d));
    assert_true(exists(f.part_path));
    assert_false(exists(f.final_path));
    assert_int_equal(export_file_write(&f, "a,b\r\n", 5), CHATD_OK);
    char final_path[512];
    snprintf(final_path, sizeof final_path, "%s", f.final_path);
    assert_int_equal(export_file_finish(&f), CHATD_OK);
    export_file_discard(&f); /* frees; the finished file stays */
    assert_true(exists(final_path));
    struct stat st;
    assert_int_equal(stat(final_path, &st), 0);
    assert_int_equal(st.st_size, 5);

    /* a discarded export leaves nothing */
    assert_int_equal(export_file_create(&f, dir, "conversations_20261124105941", ".jsonl"),
                     CHATD_OK);
    char part[512];
    snprintf(part, sizeof part, "%s", f.part_path);
    export_file_discard(&f);
    export_file_discard(&f); /* twice is fine */
    assert_false(exists(part));
    unlink(final_path);
}

static void sweep(void **state)
{
    struct export_file old, fresh, partial;
    (void)state;
    assert_int_equal(export_file_create(&old, dir, "conversations_20260101000000", ".csv"),
                     CHATD_OK);
    assert_int_equal(export_file_finish(&old), CHATD_OK);
    assert_int_equal(export_file_create(&fresh, dir, "conversations_20260101000001", ".csv"),
                     CHATD_OK);
    assert_int_equal(export_file_finish(&fresh), CHATD_OK);
    assert_int_equal(export_file_create(&partial, dir, "conversations_20260101000002", ".csv"),
                     CHATD_OK);
    /* a stranger's file in the directory is never touched */
    char other[512];
    snprintf(other, sizeof other, "%s/notes.txt", dir);
    int fd = open(other, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);

    /* age the old one by an hour */
    struct timespec times[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    assert_int_equal(utimensat(AT_FDCWD, old.final_path, times, 0), 0);

    int64_t now = time_now_usec();
    assert_int_equal(export_files_sweep(dir, 600 * USEC_PER_SEC, now, false), 1);
    assert_false(exists(old.final_path));
    assert_true(exists(fresh.final_path));
    assert_true(exists(partial.part_path)); /* a running export */
    assert_true(exists(other));
    /* at start-up, partial files are leftovers of a crash */
    assert_int_equal(export_files_sweep(dir, 600 * USEC_PER_SEC, now, true), 1);
    assert_false(exists(partial.part_path));
    assert_true(exists(fresh.final_path));
    unlink(fresh.final_path);
    unlink(other);
    close(partial.fd);
    partial.fd = -1;
    export_file_discard(&old);
    export_file_discard(&fresh);
    export_file_discard(&partial);
}

static void write_failure(void **state)
{
    struct export_file f;
    (void)state;
    assert_int_equal(export_file_create(&f, dir, "conversations_20260101000003", ".csv"), CHATD_OK);
    /* a descriptor that cannot be written stands in for a full disk */
    close(f.fd);
    f.fd = open("/dev/null", O_RDONLY);
    assert_int_equal(export_file_write(&f, "x", 1), CHATD_EIO);
    char part[512];
    snprintf(part, sizeof part, "%s", f.part_path);
    export_file_discard(&f);
    assert_false(exists(part));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names),
        cmocka_unit_test(life_cycle),
        cmocka_unit_test(sweep),
        cmocka_unit_test(write_failure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
