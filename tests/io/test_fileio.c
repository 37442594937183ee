/* Mapped reads and atomic writes: errors name the path, a failed or
 * aborted write leaves the target as it was and no temporary behind. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/fileio.h"
#include "testdir.h"

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void test_atomic_write_and_map(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "fileio"), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/a.bin", dir);
    orc_error err = {0};
    assert_int_equal(orc_write_file_atomic(path, "hello", 5, "test", &err), ORC_OK);
    orc_mapped_file m;
    assert_int_equal(orc_file_map(path, "test", &m, &err), ORC_OK);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.data, "hello", 5);
    orc_file_unmap(&m);

    /* An aborted write keeps the old content and leaves no temporary. */
    orc_atomic_file f;
    assert_int_equal(orc_atomic_open(&f, path, "test", &err), ORC_OK);
    assert_true(orc_atomic_write(&f, "xyz", 3));
    orc_atomic_abort(&f);
    assert_int_equal(orc_file_map(path, "test", &m, &err), ORC_OK);
    assert_memory_equal(m.data, "hello", 5);
    orc_file_unmap(&m);
    assert_int_equal(count_entries(dir), 1);

    /* A target that cannot be replaced (a directory) fails with the path named. */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    char inner[320];
    snprintf(inner, sizeof inner, "%s/x", sub);
    assert_int_equal(orc_write_file_atomic(inner, "1", 1, "test", &err), ORC_OK);
    orc_error_clear(&err);
    assert_int_equal(orc_write_file_atomic(sub, "2", 1, "test", &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "sub"));
    assert_int_equal(count_entries(dir), 2); /* a.bin and sub: no temporary left */

    /* Missing directory, missing file, not a regular file. */
    orc_error_clear(&err);
    assert_int_equal(orc_write_file_atomic("/nonexistent/dir/f", "1", 1, "test", &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/f"));
    orc_error_clear(&err);
    assert_int_equal(orc_file_map("/nonexistent/file", "test", &m, &err), ORC_EIO);
    orc_error_clear(&err);
    assert_int_equal(orc_file_map(dir, "test", &m, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "regular file"));

    orc_test_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_atomic_write_and_map)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
