/* Memory-mapped reads and atomic writes shared by every file format (see
 * orchard/fileio.h). */
#include "orchard/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

orc_status orc_file_map(const char *path, const char *what, orc_mapped_file *out, orc_error *err) {
    out->data = NULL;
    out->len = 0;
    if (!path) return orc_error_set(err, ORC_EINVAL, "%s: NULL path", what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return orc_error_set(err, ORC_EIO, "%s: cannot open %s: %s", what, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return orc_error_set(err, ORC_EIO, "%s: %s is not a readable regular file", what, path);
    }
    size_t len = (size_t)sb.st_size;
    if (len > 0) {
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return orc_error_set(err, ORC_EIO, "%s: cannot map %s: %s", what, path, strerror(e));
        }
        out->data = map;
    }
    close(fd); /* the mapping stays valid */
    out->len = len;
    return ORC_OK;
}

void orc_file_unmap(orc_mapped_file *m) {
    if (m && m->data) munmap(m->data, m->len);
    if (m) {
        m->data = NULL;
        m->len = 0;
    }
}

orc_status orc_atomic_open(orc_atomic_file *f, const char *path, const char *what, orc_error *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->what = what;
    if (!path) return orc_error_set(err, ORC_EINVAL, "%s: NULL path", what);
    size_t cap = strlen(path) + 32;
    f->path = strdup(path);
    f->tmp = malloc(cap);
    if (!f->path || !f->tmp) {
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return orc_error_set(err, ORC_ENOMEM, "%s: out of memory writing %s", what, path);
    }
    snprintf(f->tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        orc_status st = orc_error_set(err, ORC_EIO, "%s: cannot create %s: %s", what, f->tmp, strerror(errno));
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return st;
    }
    return ORC_OK;
}

int orc_atomic_write(orc_atomic_file *f, const void *buf, size_t n) {
    if (f->failed || f->fd < 0) return 0;
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            f->failed = w < 0 ? errno : EIO;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

static void release(orc_atomic_file *f) {
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
    f->fd = -1;
}

void orc_atomic_abort(orc_atomic_file *f) {
    if (!f || !f->tmp) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    release(f);
}

/* Best effort: make the rename itself durable. */
static void sync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(copy);
}

orc_status orc_atomic_commit(orc_atomic_file *f, orc_error *err) {
    if (!f->tmp) return orc_error_set(err, ORC_EINVAL, "%s: commit of a file that is not open", f->what);
    int e = f->failed;
    if (!e && fsync(f->fd) != 0) e = errno;
    if (close(f->fd) != 0 && !e) e = errno;
    f->fd = -1;
    orc_status st = ORC_OK;
    if (e) {
        st = orc_error_set(err, ORC_EIO, "%s: cannot write %s: %s", f->what, f->tmp, strerror(e));
    } else if (rename(f->tmp, f->path) != 0) {
        st = orc_error_set(err, ORC_EIO, "%s: cannot rename %s to %s: %s", f->what, f->tmp, f->path,
                           strerror(errno));
    }
    if (st != ORC_OK)
        unlink(f->tmp);
    else
        sync_parent_dir(f->path);
    release(f);
    return st;
}

orc_status orc_write_file_atomic(const char *path, const void *buf, size_t n, const char *what, orc_error *err) {
    orc_atomic_file f;
    orc_status st = orc_atomic_open(&f, path, what, err);
    if (st != ORC_OK) return st;
    orc_atomic_write(&f, buf, n);
    return orc_atomic_commit(&f, err);
}
