/* testdir.h: scratch directories for tests that write files. Each test file
 * makes one directory under /tmp (mkdtemp, so parallel CTest runs never
 * share one), builds paths inside it, counts what a writer left behind (the
 * atomic-write tests check that no temporary file survives) and removes the
 * whole tree at the end. */
#ifndef ORCHARD_TEST_TESTDIR_H
#define ORCHARD_TEST_TESTDIR_H
#include <stddef.h>

/* Make /tmp/orc_<tag>_XXXXXX into dir (cap >= 32 + strlen(tag)); 0 on success. */
int orc_test_dir_make(char *dir, size_t cap, const char *tag);

/* Remove everything below dir; keep dir itself. */
void orc_test_dir_clear(const char *dir);

/* Remove dir and everything below it. */
void orc_test_dir_remove(const char *dir);

/* "<dir>/<name>" into buf; returns buf. */
const char *orc_test_path(char *buf, size_t cap, const char *dir, const char *name);

/* Entries in dir other than "." and ".."; -1 if it cannot be opened. */
int orc_test_count_entries(const char *dir);

/* One scratch directory per test program, for cmocka group or per-test
 * setup/teardown: setup makes it, teardown removes it with its contents. */
extern char orc_test_scratch[64];
int orc_test_scratch_setup(void **state);
int orc_test_scratch_teardown(void **state);

/* "<orc_test_scratch>/<name>" into buf; returns buf. */
const char *orc_test_scratch_path(char *buf, size_t cap, const char *name);

#endif
