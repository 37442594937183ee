/* Scratch directories for tests (see testdir.h). Removal walks the tree
 * depth first without following symbolic links, so a test that plants a link
 * never deletes what it points to. */
#define _XOPEN_SOURCE 700
#include "testdir.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int orc_test_dir_make(char *dir, size_t cap, const char *tag) {
    int n = snprintf(dir, cap, "/tmp/orc_%s_XXXXXX", tag);
    if (n < 0 || (size_t)n >= cap) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP) rmdir(path);
    else unlink(path);
    return 0;
}

void orc_test_dir_remove(const char *dir) {
    if (dir && dir[0]) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void orc_test_dir_clear(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        orc_test_dir_remove(orc_test_path(p, sizeof p, dir, e->d_name));
    }
    closedir(d);
}

const char *orc_test_path(char *buf, size_t cap, const char *dir, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

int orc_test_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

char orc_test_scratch[64];

int orc_test_scratch_setup(void **state) {
    (void)state;
    return orc_test_dir_make(orc_test_scratch, sizeof orc_test_scratch, "test");
}

int orc_test_scratch_teardown(void **state) {
    (void)state;
    orc_test_dir_remove(orc_test_scratch);
    return 0;
}

const char *orc_test_scratch_path(char *buf, size_t cap, const char *name) {
    return orc_test_path(buf, cap, orc_test_scratch, name);
}
