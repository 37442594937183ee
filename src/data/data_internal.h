/* Helpers shared by the data module's files and nobody else: atomic file
 * writes, directories, whole-file reads, running a child process without a
 * shell, and the word count used by the corpus checks. */
#ifndef ORCHARD_DATA_INTERNAL_H
#define ORCHARD_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/data.h"
#include "orchard/fileio.h"
#include "orchard/error.h"

/* Create a temporary file next to path (path.tmp.XXXXXX), opened for writing. */
orc_status orc_tmpfile_open(const char *path, char **tmp_path, FILE **fp, orc_error *err);
/* Flush, fsync and close fp, then rename tmp_path to path. On failure the
 * temporary file is removed. fp is closed in every case. */
orc_status orc_tmpfile_commit(FILE *fp, const char *tmp_path, const char *path, orc_error *err);
/* dir + "/" + name into buf; ORC_EINVAL if it does not fit. */
orc_status orc_path_join(char *buf, size_t cap, const char *dir, const char *name, orc_error *err);
/* mkdir -p. */
orc_status orc_mkdir_p(const char *path, orc_error *err);
/* Read a whole file into a malloc'ed, NUL-terminated buffer. */
orc_status orc_read_file(const char *path, char **data, size_t *len, orc_error *err);
/* Remove a directory tree we created (does not follow symbolic links). */
void orc_remove_tree(const char *path);
/* 1 if path names an existing regular file. */
int orc_is_file(const char *path);
/* The full path of an executable found on $PATH, into buf; 0 if none. */
int orc_find_program(const char *name, char *buf, size_t cap);
/* Run argv (argv[0] looked up on $PATH) in cwd (NULL: ours), without a shell.
 * stdout_to_stderr sends the child's stdout to our stderr, so our stdout stays
 * clean. Returns ORC_OK only for exit status 0. */
orc_status orc_run_program(char *const argv[], const char *cwd, int stdout_to_stderr, orc_error *err);
/* Maximal runs of bytes other than ASCII space, \t, \n, \v, \f, \r. */
uint64_t orc_count_words(const char *text, size_t len);

/* Names and files of the three corpora, counts zeroed. */
void orc_corpus_init_stats(orc_corpus_stats stats[ORC_CORPUS_COUNT]);
/* Compare with the counts pinned for ORC_CORPUS_VERSION; ORC_EFORMAT naming the file. */
orc_status orc_corpus_check_counts(const orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err);

#endif
