/* orchard/fileio.h: reading files through a memory map and writing them
 * atomically.
 *
 * Every file orchard writes (checkpoints, tokenizers, configs, GGUF and
 * safetensors files, shards) goes through an orc_atomic_file: the bytes go
 * to "PATH.tmp.<pid>", which is synced, closed and renamed over PATH, and the
 * directory entry is synced too. On any failure the temporary is removed and
 * PATH keeps its old content, so a crash never leaves a half-written file.
 * Readers of large binary formats map the file read-only. Messages start with
 * the caller's `what` (e.g. "safetensors") and name the path. */
#ifndef ORCHARD_FILEIO_H
#define ORCHARD_FILEIO_H

#include <stddef.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_mapped_file {
    void *data; /* NULL for an empty file */
    size_t len;
} orc_mapped_file;

/* Map a regular file read-only. ORC_EIO naming the path when it cannot be
 * opened, is not a regular file, or cannot be mapped. */
orc_status orc_file_map(const char *path, const char *what, orc_mapped_file *out, orc_error *err);
void orc_file_unmap(orc_mapped_file *m);

typedef struct orc_atomic_file {
    int fd;
    char *tmp;
    char *path;
    const char *what;
    int failed; /* errno of the first failed write, 0 if none */
} orc_atomic_file;

/* Create PATH.tmp.<pid> for writing. */
orc_status orc_atomic_open(orc_atomic_file *f, const char *path, const char *what, orc_error *err);
/* Append bytes; a failure is remembered and reported by commit. Returns
 * false once a write has failed. */
int orc_atomic_write(orc_atomic_file *f, const void *buf, size_t n);
/* fsync, close, rename over PATH, sync the directory. On failure removes the
 * temporary and reports ORC_EIO naming the path. Frees f's memory either way. */
orc_status orc_atomic_commit(orc_atomic_file *f, orc_error *err);
/* Give up: close and remove the temporary, leave PATH as it was. */
void orc_atomic_abort(orc_atomic_file *f);

/* The whole of buf to path, atomically. */
orc_status orc_write_file_atomic(const char *path, const void *buf, size_t n, const char *what, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
