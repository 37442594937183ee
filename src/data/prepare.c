/* `orc_data_prepare`: JSONL or plain text in, train.bin and val.bin token
 * shards out. Documents are found first (so the val set can be an exact,
 * seeded share of them), then encoded one at a time through the caller's
 * tokenizer callback and written whole to one shard or the other; a document
 * is never cut between the two. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "orchard/data.h"
#include "orchard/rng.h"

#define SPLIT_TAG 0x53504c54u /* "SPLT": keeps the split's draws apart from other uses of the seed */

orc_status orc_data_split(uint64_t d, double val_fraction, uint64_t seed, uint8_t *is_val, orc_error *err) {
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return orc_error_set(err, ORC_EINVAL, "data split: val fraction %g must be in [0, 1)", val_fraction);
    if (d == 0) return ORC_OK;
    uint64_t k = (uint64_t)llround(val_fraction * (double)d);
    if (val_fraction > 0 && k == 0 && d >= 2) k = 1;
    if (k >= d) k = d - 1; /* train keeps at least one document */
    uint64_t *idx = malloc(d * sizeof *idx);
    if (!idx) return orc_error_set(err, ORC_ENOMEM, "data split: out of memory for %llu documents", (unsigned long long)d);
    for (uint64_t i = 0; i < d; i++) idx[i] = i;
    memset(is_val, 0, d);
    /* The first k steps of a Fisher-Yates shuffle pick k documents uniformly. */
    for (uint64_t i = 0; i < k; i++) {
        uint32_t r[4];
        orc_philox4x32(seed, i, (uint64_t)SPLIT_TAG << 32, r);
        uint64_t x = ((uint64_t)r[0] << 32) | r[1];
        uint64_t j = i + x % (d - i);
        uint64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        is_val[idx[i]] = 1;
    }
    free(idx);
    return ORC_OK;
}

/* ---- finding documents ------------------------------------------------------------- */

typedef struct span {
    size_t start, len;
    uint64_t line; /* 1-based line where the document starts */
} span;

typedef struct span_list {
    span *v;
    size_t n, cap;
} span_list;

static int push(span_list *l, size_t start, size_t len, uint64_t line) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        span *v = realloc(l->v, cap * sizeof *v);
        if (!v) return 0;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (span){start, len, line};
    return 1;
}

static int blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

/* JSONL: every non-blank line. Text: runs of non-blank lines, split at blank lines. */
static int find_docs(const char *data, size_t len, int jsonl, span_list *out) {
    size_t pos = 0, doc_start = 0, doc_end = 0;
    uint64_t line = 0, doc_line = 0;
    int in_doc = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        line++;
        int is_blank = blank(data + pos, end - pos);
        if (jsonl) {
            if (!is_blank && !push(out, pos, end - pos, line)) return 0;
        } else if (!is_blank) {
            if (!in_doc) {
                doc_start = pos;
                doc_line = line;
                in_doc = 1;
            }
            doc_end = end;
        } else if (in_doc) {
            if (!push(out, doc_start, doc_end - doc_start, doc_line)) return 0;
            in_doc = 0;
        }
        pos = end + 1;
    }
    if (in_doc && !push(out, doc_start, doc_end - doc_start, doc_line)) return 0;
    return 1;
}

/* ---- the run ----------------------------------------------------------------------- */

typedef struct prep {
    const orc_prepare_opts *o;
    const char *field;
    const char *data;
    int jsonl;
    orc_shard_writer *train, *val;
    int32_t *buf;
    size_t buf_cap;
} prep;

/* The text of document s: a slice of the input, or a JSON string (held by *hold). */
static orc_status doc_text(prep *p, const span *s, const char **text, size_t *len, json_t **hold, orc_error *err) {
    *hold = NULL;
    if (!p->jsonl) {
        *text = p->data + s->start;
        *len = s->len;
        return ORC_OK;
    }
    json_error_t je;
    json_t *j = json_loadb(p->data + s->start, s->len, 0, &je);
    if (!j)
        return orc_error_set(err, ORC_EFORMAT, "%s:%llu: invalid JSON: %s", p->o->input, (unsigned long long)s->line,
                             je.text);
    json_t *v = json_object_get(j, p->field);
    if (!json_is_string(v)) {
        json_decref(j);
        return orc_error_set(err, ORC_EFORMAT, "%s:%llu: no string field \"%s\"", p->o->input,
                             (unsigned long long)s->line, p->field);
    }
    *text = json_string_value(v);
    *len = json_string_length(v);
    *hold = j;
    return ORC_OK;
}

/* Encode one document, append the end-of-document id, check the ids. */
static orc_status encode_doc(prep *p, const span *s, size_t *n_out, orc_error *err) {
    const char *text = NULL;
    size_t len = 0, n = 0;
    json_t *hold = NULL;
    orc_status st = doc_text(p, s, &text, &len, &hold, err);
    if (st != ORC_OK) return st;
    int32_t *ids = NULL;
    st = p->o->encode(p->o->encode_user, text, len, &ids, &n, err);
    json_decref(hold);
    if (st != ORC_OK) {
        free(ids);
        return orc_error_set(err, st, "%s:%llu: the tokenizer failed", p->o->input, (unsigned long long)s->line);
    }
    size_t need = n + 1;
    if (need > p->buf_cap) {
        int32_t *b = realloc(p->buf, need * sizeof *b);
        if (!b) {
            free(ids);
            return orc_error_set(err, ORC_ENOMEM, "%s: out of memory for %zu tokens", p->o->input, need);
        }
        p->buf = b;
        p->buf_cap = need;
    }
    if (n) memcpy(p->buf, ids, n * sizeof *ids);
    free(ids);
    if (p->o->eos_id >= 0) p->buf[n++] = p->o->eos_id;
    for (size_t i = 0; i < n; i++)
        if (p->buf[i] < 0 || p->buf[i] >= p->o->vocab_size)
            return orc_error_set(err, ORC_ERANGE, "%s:%llu: the tokenizer returned id %d, outside [0, %lld)",
                                 p->o->input, (unsigned long long)s->line, p->buf[i], (long long)p->o->vocab_size);
    *n_out = n;
    return ORC_OK;
}

static orc_status write_meta(const orc_prepare_opts *o, const orc_prepare_result *r, uint64_t d, orc_error *err) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/prepare.json", o->out_dir) >= sizeof path)
        return orc_error_set(err, ORC_EINVAL, "%s: path too long", o->out_dir);
    json_t *m = json_pack("{s:s, s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "input", o->input, "field",
                          o->field ? o->field : "text", "val_fraction", o->val_fraction, "seed", (json_int_t)o->seed,
                          "vocab_size", (json_int_t)o->vocab_size, "eos_id", (json_int_t)o->eos_id, "documents",
                          (json_int_t)d, "train_documents", (json_int_t)r->train_documents, "val_documents",
                          (json_int_t)r->val_documents, "train_tokens", (json_int_t)r->train_tokens, "val_tokens",
                          (json_int_t)r->val_tokens);
    char *text = m ? json_dumps(m, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(m);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    orc_status st = orc_write_file_atomic(path, text, strlen(text), "data", err);
    free(text);
    return st;
}

static orc_status check_opts(const orc_prepare_opts *o, orc_error *err) {
    if (!o || !o->input || !o->out_dir || !o->encode)
        return orc_error_set(err, ORC_EINVAL, "data prepare: input, out_dir and encode are required");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return orc_error_set(err, ORC_EINVAL, "data prepare: val fraction %g must be in [0, 1)", o->val_fraction);
    if (o->vocab_size <= 0 || o->vocab_size > (int64_t)INT32_MAX + 1)
        return orc_error_set(err, ORC_EINVAL, "data prepare: vocab size %lld must be in [1, 2^31]",
                             (long long)o->vocab_size);
    if (o->eos_id >= o->vocab_size)
        return orc_error_set(err, ORC_EINVAL, "data prepare: end-of-document id %d is not below the vocab size %lld",
                             o->eos_id, (long long)o->vocab_size);
    return ORC_OK;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Encode and write every document; the writers are open. */
static orc_status run(prep *p, const span_list *docs, const uint8_t *is_val, orc_prepare_result *r, orc_error *err) {
    for (size_t i = 0; i < docs->n; i++) {
        size_t n = 0;
        orc_status st = encode_doc(p, &docs->v[i], &n, err);
        if (st != ORC_OK) return st;
        st = orc_shard_writer_add(is_val[i] ? p->val : p->train, p->buf, n, err);
        if (st != ORC_OK) return st;
        if (is_val[i]) {
            r->val_documents++;
            r->val_tokens += n;
        } else {
            r->train_documents++;
            r->train_tokens += n;
        }
    }
    return ORC_OK;
}

/* Map the input read-only (an empty file maps to an empty buffer). */
static orc_status map_input(const char *path, const char **data, size_t *len, orc_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return orc_error_set(err, ORC_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    *len = (size_t)st.st_size;
    if (*len) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return orc_error_set(err, ORC_EIO, "%s: cannot map: %s", path, strerror(errno));
        }
        *data = m;
    }
    close(fd);
    return ORC_OK;
}

orc_status orc_data_prepare(const orc_prepare_opts *o, orc_prepare_result *out, orc_error *err) {
    orc_status st = check_opts(o, err);
    if (st != ORC_OK) return st;
    orc_prepare_result r = {0};
    prep p = {.o = o, .field = o->field ? o->field : "text", .jsonl = ends_with(o->input, ".jsonl")};
    size_t len;
    if ((st = map_input(o->input, &p.data, &len, err)) != ORC_OK) return st;
    span_list docs = {0};
    uint8_t *is_val = NULL;
    char train_path[4096], val_path[4096];
    if (!find_docs(p.data, len, p.jsonl, &docs)) st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", o->input);
    if (st == ORC_OK && docs.n == 0) st = orc_error_set(err, ORC_EFORMAT, "%s: no documents", o->input);
    if (st == ORC_OK && !(is_val = malloc(docs.n)))
        st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", o->input);
    if (st == ORC_OK) st = orc_data_split(docs.n, o->val_fraction, o->seed, is_val, err);
    if (st == ORC_OK) st = orc_mkdir_p(o->out_dir, err);
    if (st == ORC_OK && ((size_t)snprintf(train_path, sizeof train_path, "%s/train.bin", o->out_dir) >= sizeof train_path ||
                         (size_t)snprintf(val_path, sizeof val_path, "%s/val.bin", o->out_dir) >= sizeof val_path))
        st = orc_error_set(err, ORC_EINVAL, "%s: path too long", o->out_dir);
    if (st == ORC_OK && !(p.train = orc_shard_writer_open(train_path, o->vocab_size, err))) st = ORC_EIO;
    if (st == ORC_OK && !(p.val = orc_shard_writer_open(val_path, o->vocab_size, err))) st = ORC_EIO;
    if (st == ORC_OK) st = run(&p, &docs, is_val, &r, err);
    if (st == ORC_OK) {
        st = orc_shard_writer_finish(p.train, err);
        p.train = NULL;
    }
    if (st == ORC_OK) {
        st = orc_shard_writer_finish(p.val, err);
        p.val = NULL;
    }
    r.documents = docs.n;
    if (st == ORC_OK) st = write_meta(o, &r, docs.n, err);
    if (st == ORC_OK && o->log)
        fprintf(o->log, "orchard data prepare: %llu documents: train %llu (%llu tokens), val %llu (%llu tokens)\n",
                (unsigned long long)docs.n, (unsigned long long)r.train_documents, (unsigned long long)r.train_tokens,
                (unsigned long long)r.val_documents, (unsigned long long)r.val_tokens);
    orc_shard_writer_abort(p.train);
    orc_shard_writer_abort(p.val);
    free(p.buf);
    free(is_val);
    free(docs.v);
    if (p.data) munmap((void *)p.data, len);
    if (st == ORC_OK && out) *out = r;
    return st;
}
