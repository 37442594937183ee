/* Token shards: the writer (temporary file, then rename, so a reader never
 * sees half a shard), the memory-mapped reader that checks every rule of the
 * format in data.h before handing out a token, and the batch sampler whose
 * window positions are a pure function of (seed, step, row). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "orchard/data.h"
#include "orchard/rng.h"

/* ---- little-endian helpers ------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- writer ------------------------------------------------------------------------ */

struct orc_shard_writer {
    char *path;
    char *tmp_path;
    FILE *fp;
    int64_t vocab_size;
    uint32_t width;
    uint64_t tokens;
    uint64_t *starts; /* starts[0..docs] */
    uint64_t docs, cap;
    uint8_t *buf;     /* staging for one document's encoded tokens */
    size_t buf_cap;
};

orc_shard_writer *orc_shard_writer_open(const char *path, int64_t vocab_size, orc_error *err) {
    if (!path || vocab_size <= 0 || vocab_size > (int64_t)INT32_MAX + 1) {
        orc_error_set(err, ORC_EINVAL, "shard writer %s: vocab size %lld must be in [1, 2^31]",
                      path ? path : "(null)", (long long)vocab_size);
        return NULL;
    }
    orc_shard_writer *w = calloc(1, sizeof *w);
    if (!w) {
        orc_error_set(err, ORC_ENOMEM, "shard writer %s: out of memory", path);
        return NULL;
    }
    w->vocab_size = vocab_size;
    w->width = vocab_size <= 65536 ? 2 : 4;
    w->cap = 1024;
    w->starts = malloc(w->cap * sizeof *w->starts);
    w->path = strdup(path);
    if (!w->starts || !w->path) {
        orc_error_set(err, ORC_ENOMEM, "shard writer %s: out of memory", path);
        orc_shard_writer_abort(w);
        return NULL;
    }
    w->starts[0] = 0;
    if (orc_tmpfile_open(path, &w->tmp_path, &w->fp, err) != ORC_OK) {
        orc_shard_writer_abort(w);
        return NULL;
    }
    uint8_t zeros[ORC_SHARD_HEADER_BYTES] = {0}; /* the real header is written at finish */
    if (fwrite(zeros, 1, sizeof zeros, w->fp) != sizeof zeros) {
        orc_error_set(err, ORC_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        orc_shard_writer_abort(w);
        return NULL;
    }
    return w;
}

static orc_status grow_starts(orc_shard_writer *w, orc_error *err) {
    if (w->docs + 2 <= w->cap) return ORC_OK;
    uint64_t cap = w->cap * 2;
    uint64_t *p = realloc(w->starts, cap * sizeof *p);
    if (!p) return orc_error_set(err, ORC_ENOMEM, "shard writer %s: out of memory", w->path);
    w->starts = p;
    w->cap = cap;
    return ORC_OK;
}

orc_status orc_shard_writer_add(orc_shard_writer *w, const int32_t *ids, size_t n, orc_error *err) {
    if (!w) return orc_error_set(err, ORC_EINVAL, "shard writer: NULL writer");
    if (n && !ids) return orc_error_set(err, ORC_EINVAL, "shard writer %s: NULL ids with n = %zu", w->path, n);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->vocab_size)
            return orc_error_set(err, ORC_ERANGE, "shard writer %s: document %llu token %zu is id %d, outside [0, %lld)",
                                 w->path, (unsigned long long)w->docs, i, ids[i], (long long)w->vocab_size);
    if (grow_starts(w, err) != ORC_OK) return ORC_ENOMEM;
    size_t bytes = n * w->width;
    if (bytes > w->buf_cap) {
        uint8_t *b = realloc(w->buf, bytes);
        if (!b) return orc_error_set(err, ORC_ENOMEM, "shard writer %s: out of memory", w->path);
        w->buf = b;
        w->buf_cap = bytes;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        if (w->width == 2) {
            w->buf[2 * i] = (uint8_t)v;
            w->buf[2 * i + 1] = (uint8_t)(v >> 8);
        } else {
            put_u32(w->buf + 4 * i, v);
        }
    }
    if (bytes && fwrite(w->buf, 1, bytes, w->fp) != bytes)
        return orc_error_set(err, ORC_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    w->tokens += n;
    w->docs++;
    w->starts[w->docs] = w->tokens;
    return ORC_OK;
}

static orc_status write_tail(orc_shard_writer *w, orc_error *err) {
    uint8_t b[8];
    for (uint64_t d = 0; d <= w->docs; d++) {
        put_u64(b, w->starts[d]);
        if (fwrite(b, 1, 8, w->fp) != 8) return orc_error_set(err, ORC_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    }
    uint8_t h[ORC_SHARD_HEADER_BYTES];
    memcpy(h, ORC_SHARD_MAGIC, 8); /* includes the NUL */
    put_u32(h + 8, ORC_SHARD_VERSION);
    put_u32(h + 12, w->width);
    put_u64(h + 16, w->tokens);
    put_u64(h + 24, w->docs);
    if (fseek(w->fp, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->fp) != sizeof h)
        return orc_error_set(err, ORC_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    return ORC_OK;
}

orc_status orc_shard_writer_finish(orc_shard_writer *w, orc_error *err) {
    if (!w) return orc_error_set(err, ORC_EINVAL, "shard writer: NULL writer");
    orc_status st = write_tail(w, err);
    if (st == ORC_OK) {
        FILE *fp = w->fp;
        w->fp = NULL;
        st = orc_tmpfile_commit(fp, w->tmp_path, w->path, err);
        if (st == ORC_OK) {
            free(w->tmp_path);
            w->tmp_path = NULL;
        }
    }
    orc_shard_writer_abort(w);
    return st;
}

void orc_shard_writer_abort(orc_shard_writer *w) {
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->tmp_path);
    free(w->path);
    free(w->starts);
    free(w->buf);
    free(w);
}

/* ---- reader ------------------------------------------------------------------------ */

struct orc_shard {
    char *path;
    const uint8_t *map;
    size_t map_len;
    const uint8_t *tokens;
    const uint8_t *starts;
    orc_shard_info info;
};

static orc_status bad(orc_error *err, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static orc_status bad(orc_error *err, const char *path, const char *fmt, ...) {
    char what[ORC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return orc_error_set(err, ORC_EFORMAT, "%s: not a valid token shard: %s", path, what);
}

static orc_status check_header(const orc_shard *s, orc_error *err) {
    const uint8_t *h = s->map;
    const char *p = s->path;
    if (s->map_len < ORC_SHARD_HEADER_BYTES)
        return bad(err, p, "%zu bytes, shorter than the %d-byte header", s->map_len, ORC_SHARD_HEADER_BYTES);
    if (memcmp(h, ORC_SHARD_MAGIC, 8) != 0) return bad(err, p, "bad magic (expected \"ORCHTOK\\0\")");
    uint32_t version = get_u32(h + 8), width = get_u32(h + 12);
    if (version != ORC_SHARD_VERSION) return bad(err, p, "version %u, this build reads version %u", version, ORC_SHARD_VERSION);
    if (width != 2 && width != 4) return bad(err, p, "token width %u, expected 2 or 4", width);
    uint64_t n = get_u64(h + 16), d = get_u64(h + 24);
    uint64_t room = s->map_len - ORC_SHARD_HEADER_BYTES;
    /* Compare without overflow: tokens first, then the offsets table. */
    if (n > room / width)
        return bad(err, p, "header says %llu tokens of %u bytes, but the file has only %zu bytes", (unsigned long long)n,
                   width, s->map_len);
    uint64_t rest = room - n * width;
    if (d >= UINT64_MAX / 8 || rest != (d + 1) * 8)
        return bad(err, p, "file is %zu bytes, but %llu tokens of %u bytes and %llu documents need %s",
                   s->map_len, (unsigned long long)n, width, (unsigned long long)d,
                   d >= UINT64_MAX / 8 ? "more than 2^64" : "a different length");
    return ORC_OK;
}

static int64_t raw_token(const orc_shard *s, uint64_t i) {
    if (s->info.width == 2) return s->tokens[2 * i] | (s->tokens[2 * i + 1] << 8);
    return get_u32(s->tokens + 4 * i);
}

static orc_status check_body(orc_shard *s, int64_t vocab_size, orc_error *err) {
    const uint8_t *h = s->map;
    orc_shard_info *in = &s->info;
    in->version = get_u32(h + 8);
    in->width = get_u32(h + 12);
    in->tokens = get_u64(h + 16);
    in->documents = get_u64(h + 24);
    in->file_bytes = s->map_len;
    s->tokens = s->map + ORC_SHARD_HEADER_BYTES;
    s->starts = s->tokens + in->tokens * in->width;
    uint64_t prev = get_u64(s->starts);
    if (prev != 0) return bad(err, s->path, "document 0 starts at %llu, expected 0", (unsigned long long)prev);
    for (uint64_t d = 1; d <= in->documents; d++) {
        uint64_t cur = get_u64(s->starts + 8 * d);
        if (cur < prev)
            return bad(err, s->path, "document offsets are not monotone: start[%llu] = %llu < start[%llu] = %llu",
                       (unsigned long long)d, (unsigned long long)cur, (unsigned long long)(d - 1),
                       (unsigned long long)prev);
        if (cur > in->tokens)
            return bad(err, s->path, "document offset start[%llu] = %llu is past the end (%llu tokens)",
                       (unsigned long long)d, (unsigned long long)cur, (unsigned long long)in->tokens);
        prev = cur;
    }
    if (prev != in->tokens)
        return bad(err, s->path, "the last document ends at %llu, but the file has %llu tokens", (unsigned long long)prev,
                   (unsigned long long)in->tokens);
    int64_t max_id = -1;
    for (uint64_t i = 0; i < in->tokens; i++) {
        int64_t v = raw_token(s, i);
        if (v > max_id) max_id = v;
    }
    in->max_id = max_id;
    int64_t limit = vocab_size > 0 ? vocab_size : (int64_t)INT32_MAX + 1; /* ids must fit an int32 */
    if (max_id >= limit) {
        uint64_t i = 0;
        while (raw_token(s, i) < limit) i++;
        return bad(err, s->path, "token %llu is id %lld, not below the %s %lld", (unsigned long long)i,
                   (long long)raw_token(s, i), vocab_size > 0 ? "vocabulary size" : "int32 limit", (long long)limit);
    }
    return ORC_OK;
}

orc_shard *orc_shard_open(const char *path, int64_t vocab_size, orc_error *err) {
    if (!path) {
        orc_error_set(err, ORC_EINVAL, "shard open: NULL path");
        return NULL;
    }
    orc_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        orc_error_set(err, ORC_EIO, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        orc_shard_close(s);
        return NULL;
    }
    s->map_len = (size_t)st.st_size;
    if (s->map_len > 0) {
        void *m = mmap(NULL, s->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            orc_error_set(err, ORC_EIO, "%s: cannot map: %s", path, strerror(errno));
            close(fd);
            s->map_len = 0;
            orc_shard_close(s);
            return NULL;
        }
        s->map = m;
    }
    close(fd);
    if (check_header(s, err) != ORC_OK || check_body(s, vocab_size, err) != ORC_OK) {
        orc_shard_close(s);
        return NULL;
    }
    return s;
}

void orc_shard_close(orc_shard *s) {
    if (!s) return;
    if (s->map) munmap((void *)s->map, s->map_len);
    free(s->path);
    free(s);
}

const orc_shard_info *orc_shard_get_info(const orc_shard *s) { return &s->info; }

const char *orc_shard_path(const orc_shard *s) { return s->path; }

int32_t orc_shard_token(const orc_shard *s, uint64_t i) {
    if (s->info.width == 2) {
        const uint8_t *p = s->tokens + 2 * i;
        return (int32_t)(p[0] | (p[1] << 8));
    }
    return (int32_t)get_u32(s->tokens + 4 * i);
}

uint64_t orc_shard_doc_start(const orc_shard *s, uint64_t d) { return get_u64(s->starts + 8 * d); }

orc_status orc_shard_read(const orc_shard *s, uint64_t start, size_t n, int32_t *out, orc_error *err) {
    if (start > s->info.tokens || n > s->info.tokens - start)
        return orc_error_set(err, ORC_ERANGE, "%s: tokens [%llu, %llu) are past the end (%llu tokens)", s->path,
                             (unsigned long long)start, (unsigned long long)(start + n),
                             (unsigned long long)s->info.tokens);
    for (size_t i = 0; i < n; i++) out[i] = orc_shard_token(s, start + i);
    return ORC_OK;
}

/* ---- batches ------------------------------------------------------------------------ */

/* Tag in the low counter word so the sampler's draws never collide with other
 * users of the same seed (dropout, init use orc_rand_* streams). */
#define LOADER_TAG 0x4c4f4144u /* "LOAD" */

uint64_t orc_shard_sample_pos(const orc_shard *s, uint64_t seed, uint64_t step, int row, int seq) {
    if (seq < 0 || s->info.tokens <= (uint64_t)seq) return 0; /* no window fits; sample_batch reports it */
    uint64_t positions = s->info.tokens - (uint64_t)seq; /* starts in [0, tokens - seq - 1] */
    uint32_t r[4];
    orc_philox4x32(seed, step, ((uint64_t)LOADER_TAG << 32) | (uint32_t)row, r);
    uint64_t x = ((uint64_t)r[0] << 32) | r[1];
    /* The modulo bias is below positions / 2^64: negligible for any real shard. */
    return x % positions;
}

orc_status orc_shard_sample_batch(const orc_shard *s, uint64_t seed, uint64_t step, int batch, int seq,
                                  int32_t *inputs, int32_t *targets, orc_error *err) {
    if (!s || !inputs || !targets) return orc_error_set(err, ORC_EINVAL, "sample batch: NULL argument");
    if (batch <= 0 || seq <= 0)
        return orc_error_set(err, ORC_EINVAL, "%s: sample batch: batch %d and seq %d must be positive", s->path,
                             batch, seq);
    if (s->info.tokens < (uint64_t)seq + 1)
        return orc_error_set(err, ORC_ERANGE, "%s: %llu tokens, fewer than one window of seq + 1 = %d", s->path,
                             (unsigned long long)s->info.tokens, seq + 1);
    for (int b = 0; b < batch; b++) {
        uint64_t pos = orc_shard_sample_pos(s, seed, step, b, seq);
        int32_t *in = inputs + (size_t)b * seq, *tg = targets + (size_t)b * seq;
        for (int t = 0; t < seq; t++) {
            in[t] = orc_shard_token(s, pos + t);
            tg[t] = orc_shard_token(s, pos + t + 1);
        }
    }
    return ORC_OK;
}
