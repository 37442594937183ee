/* The data module's file-system and process helpers: every file it produces
 * is written to a temporary name and renamed into place (so a crash or a
 * full disk never leaves a truncated shard or JSONL file under the real
 * name), and child processes (npm, tar, apt-get) are started with
 * posix_spawnp from an argv array, never through a shell. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data_internal.h"

extern char **environ;

orc_status orc_tmpfile_open(const char *path, char **tmp_path, FILE **fp, orc_error *err) {
    *tmp_path = NULL;
    *fp = NULL;
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    char *t = malloc(n);
    if (!t) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    snprintf(t, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(t);
    if (fd < 0) {
        orc_error_set(err, ORC_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(t);
        return ORC_EIO;
    }
    fchmod(fd, 0644); /* mkstemp's 0600 would make the results private to us */
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        orc_error_set(err, ORC_EIO, "%s: %s", t, strerror(errno));
        close(fd);
        unlink(t);
        free(t);
        return ORC_EIO;
    }
    *tmp_path = t;
    *fp = f;
    return ORC_OK;
}

orc_status orc_tmpfile_commit(FILE *fp, const char *tmp_path, const char *path, orc_error *err) {
    int ok = fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp_path, path) == 0) return ORC_OK;
    if (ok) saved = errno;
    unlink(tmp_path);
    return orc_error_set(err, ORC_EIO, "%s: cannot write: %s", path, strerror(saved));
}

orc_status orc_path_join(char *buf, size_t cap, const char *dir, const char *name, orc_error *err) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return orc_error_set(err, ORC_EINVAL, "%s/%s: path too long", dir, name);
    return ORC_OK;
}

orc_status orc_mkdir_p(const char *path, orc_error *err) {
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            orc_error_set(err, ORC_EIO, "%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return ORC_EIO;
        }
        p[i] = c;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return orc_error_set(err, ORC_EIO, "%s: not a directory", path);
    return ORC_OK;
}

orc_status orc_read_file(const char *path, char **data, size_t *len, orc_error *err) {
    *data = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (n < cap) break;
        char *b = realloc(buf, cap * 2 + 1);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    int failed = ferror(fp);
    fclose(fp);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    if (failed) {
        free(buf);
        return orc_error_set(err, ORC_EIO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return ORC_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void orc_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int orc_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int orc_find_program(const char *name, char *buf, size_t cap) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (n > 0 && (size_t)snprintf(buf, cap, "%.*s/%s", (int)n, path, name) < cap && access(buf, X_OK) == 0 &&
            orc_is_file(buf))
            return 1;
        path += n;
        if (*path == ':') path++;
    }
    return 0;
}

orc_status orc_run_program(char *const argv[], const char *cwd, int stdout_to_stderr, orc_error *err) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return orc_error_set(err, ORC_ENOMEM, "%s: cannot start", argv[0]);
    int rc = 0;
    if (cwd) rc = posix_spawn_file_actions_addchdir_np(&fa, cwd);
    if (!rc && stdout_to_stderr) rc = posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
    pid_t pid;
    if (!rc) rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) return orc_error_set(err, ORC_EIO, "cannot run %s: %s", argv[0], strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return orc_error_set(err, ORC_EIO, "waiting for %s: %s", argv[0], strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ORC_OK;
    if (WIFEXITED(status))
        return orc_error_set(err, ORC_EIO, "%s exited with status %d", argv[0], WEXITSTATUS(status));
    return orc_error_set(err, ORC_EIO, "%s was killed by signal %d", argv[0], WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

uint64_t orc_count_words(const char *text, size_t len) {
    uint64_t words = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        int space = c == ' ' || (c >= '\t' && c <= '\r');
        if (!space && !in_word) words++;
        in_word = !space;
    }
    return words;
}
