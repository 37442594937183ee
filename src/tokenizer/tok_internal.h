/* Internals shared by the tokenizer's files: the tokenizer struct, the two
 * hash maps (byte strings -> int64 and uint64 -> int64) and the builder that
 * both the trainer and the file readers use to assemble a tokenizer. */
#ifndef ORCHARD_TOK_INTERNAL_H
#define ORCHARD_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/tokenizer.h"

/* ---- byte-string -> int64 map (owns copies of its keys) ---------------- */

typedef struct tok_bslot {
    uint64_t hash; /* 0: empty */
    uint64_t off;  /* key bytes in pool */
    uint32_t len;
    int64_t value;
} tok_bslot;

typedef struct tok_bmap {
    tok_bslot *slots;
    size_t cap, count; /* cap is a power of two */
    uint8_t *pool;
    size_t pool_len, pool_cap;
} tok_bmap;

bool tok_bmap_init(tok_bmap *m, size_t expected);
void tok_bmap_free(tok_bmap *m);
void tok_bmap_clear(tok_bmap *m);
/* Pointer to the value, or NULL. */
int64_t *tok_bmap_get(const tok_bmap *m, const void *key, size_t len);
/* Pointer to the value, inserting value init if absent; NULL on no memory. */
int64_t *tok_bmap_put(tok_bmap *m, const void *key, size_t len, int64_t init, bool *inserted);

/* ---- uint64 -> int64 map --------------------------------------------------- */

typedef struct tok_u64slot {
    uint64_t key; /* stored as key + 1 so that 0 marks an empty slot */
    int64_t value;
} tok_u64slot;

typedef struct tok_u64map {
    tok_u64slot *slots;
    size_t cap, count;
} tok_u64map;

bool tok_u64map_init(tok_u64map *m, size_t expected);
void tok_u64map_free(tok_u64map *m);
int64_t *tok_u64map_get(const tok_u64map *m, uint64_t key);
int64_t *tok_u64map_put(tok_u64map *m, uint64_t key, int64_t init, bool *inserted);

static inline uint64_t tok_pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

/* ---- the tokenizer ------------------------------------------------------------ */

/* TOK_BYTE: a SentencePiece byte-fallback token <0xNN>; its bytes are the
 * one byte it stands for, and it is in no lookup map (byte_id finds it). */
enum { TOK_IN_MODEL = 1, TOK_ADDED = 2, TOK_SPECIAL = 4, TOK_BYTE = 8 };

typedef struct tok_entry {
    uint64_t off; /* bytes in tok->pool (NUL-terminated there) */
    uint32_t len;
    uint8_t flags;
} tok_entry;

struct orc_tokenizer {
    size_t n_vocab;
    tok_entry *tokens;
    uint8_t *pool;
    size_t pool_len, pool_cap;
    tok_bmap model_ids;  /* bytes -> id of TOK_IN_MODEL tokens */
    tok_bmap added_ids;  /* text -> id of TOK_ADDED tokens */
    int32_t byte_id[256];
    size_t n_merges;
    int32_t *merges;     /* 3 per rank: left, right, result */
    tok_u64map merge_of; /* pair key -> rank */
    int32_t *added;      /* ids of TOK_ADDED tokens, longest text first */
    size_t n_added;
    uint8_t added_first[32]; /* bitmap of first bytes of added tokens */
    orc_pretok_mode pretok;
    bool add_prefix_space;
    bool ignore_merges;
    /* SentencePiece BPE with byte fallback (Llama 2's kind): token bytes are
     * the decoded form ("\xe2\x96\x81" read as a space), text is not
     * pre-tokenized, symbols start as characters, and a character outside
     * the vocabulary becomes its byte tokens. */
    bool spm;
    bool spm_prefix;       /* a space goes before each run of text (SentencePiece's add_dummy_prefix) */
    bool spm_prefix_first; /* ... only before the run that starts the text (Metaspace prepend_scheme "first") */
    char *unk_token;  /* model.unk_token, kept for writing the file back; may be NULL */
};

/* Builder: start with n ids, set each, add merges, then finish. */
orc_tokenizer *tok_new(size_t n_vocab, orc_error *err, const char *name);
/* Set id's bytes and flags. Fails (EFORMAT) on a second model token with the
 * same bytes or a second added token with the same text. */
orc_status tok_set(orc_tokenizer *t, int32_t id, const void *bytes, size_t len, uint8_t flags, const char *name,
                   orc_error *err);
/* Append merge (left, right) -> result at the next rank. A pair already
 * merged keeps its first rank. */
orc_status tok_add_merge(orc_tokenizer *t, int32_t left, int32_t right, int32_t result, orc_error *err);
/* Checks every id is set and every byte has a token; builds the tables. */
orc_status tok_finish(orc_tokenizer *t, const char *name, orc_error *err);

/* Printable form of token bytes for messages (\xNN for the rest). */
const char *tok_escape(char *buf, size_t cap, const void *bytes, size_t len);

/* Reads a whole file (NUL-terminated copy; *len excludes the NUL). */
char *tok_read_file(const char *path, size_t *len, orc_error *err);
/* Atomic write: path.tmp.PID, fsync, rename. */
orc_status tok_write_file_atomic(const char *path, const char *data, size_t len, orc_error *err);

#endif
