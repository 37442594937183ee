/* orchard/tokenizer.h: BPE tokenizers, byte-level and SentencePiece.
 *
 * This module owns text <-> token ids: the pre-tokenizer (hand-written, no
 * regex library), byte-level BPE encoding and decoding, training a vocabulary
 * from text, and the files a tokenizer lives in: Hugging Face's
 * tokenizer.json (read and written) and GPT-2's encoder.json + vocab.bpe
 * (read). Every byte string is representable: each of the 256 byte values is
 * a token, so decode(encode(x)) == x for any bytes, including invalid UTF-8
 * and NUL. A malformed file fails with ORC_EFORMAT naming the file and the
 * problem; a well-formed file asking for something orchard does not implement
 * (a normalizer, another pre-tokenizer, byte fallback) fails with
 * ORC_EUNSUPPORTED. Writes go through a temporary file and a rename.
 *
 * Pre-tokenization (orc_pretok_next) follows GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^\sLN]+|\s+(?!\S)|\s+
 * with these classes on bytes: L = ASCII letters and every byte >= 0x80 (so a
 * UTF-8 word in any script stays one piece), N = ASCII digits 0-9, \s = space,
 * \t \n \v \f \r, anything else is punctuation. In ORC_PRETOK_SPLIT_DIGITS
 * mode (the default for trained tokenizers; AFM-style) every digit is its own
 * pre-token and never takes a leading space. That mode is written to
 * tokenizer.json as a Sequence pre_tokenizer: Split on the regex [0-9] with
 * behavior "Isolated", then ByteLevel, which Hugging Face reads the same way
 * on ASCII text. The classes differ from Unicode's for non-ASCII characters
 * (e.g. U+00A0 counts as a letter here, not as space).
 *
 * Ids: a trained tokenizer has the 256 byte tokens at ids 0..255 (id = byte
 * value), each merge makes the next id (unless an earlier merge already
 * spelled the same bytes, as "a"+"bc" and "ab"+"c" do; then it reuses that
 * id), and the special tokens follow. A loaded file keeps its own ids.
 * Special (added) tokens are never produced by merges; encode matches them
 * in the text only with ORC_TOK_ENCODE_SPECIAL.
 *
 * SentencePiece kind (Llama 2's tokenizer.json: model.byte_fallback true,
 * a normalizer that prepends "\u2581" and turns spaces into it, or the
 * equivalent Metaspace pre-tokenizer; what `orchard import` writes for a
 * GGUF `llama` vocabulary): the text is not pre-tokenized; each run between
 * special tokens gets one leading space (when the file asks for the prefix)
 * and starts as characters; a character missing from the vocabulary becomes
 * its <0xNN> byte tokens; then the merges apply by rank. Token bytes are the
 * decoded form ("\u2581" is a space, <0xNN> is byte NN), so decode is a
 * concatenation, minus the leading space the prefix added. A literal U+2581
 * in the text is kept as that character (through byte tokens) rather than
 * read as a space, so the round trip stays exact. Metaspace's split into
 * words is not done (llama.cpp does not split either); for SentencePiece
 * vocabularies, whose pieces do not span a space, that changes nothing.
 *
 * Threads: a tokenizer is read-only after it is built, so encode and decode
 * may run on one tokenizer from many threads at once. Training is
 * single-threaded and deterministic (ties between equally frequent pairs go
 * to the smallest (left id, right id)). */
#ifndef ORCHARD_TOKENIZER_H
#define ORCHARD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ids must lie in [0, ORC_TOK_MAX_VOCAB). */
#define ORC_TOK_MAX_VOCAB (1 << 24)

/* The special tokens a trained tokenizer gets unless told otherwise, in id
 * order after the merges: begin/end of a document, padding, the chat roles
 * and the end of a chat turn. */
#define ORC_TOK_BEGIN_OF_TEXT "<|begin_of_text|>"
#define ORC_TOK_END_OF_TEXT "<|end_of_text|>"
#define ORC_TOK_PAD "<|pad|>"
#define ORC_TOK_SYSTEM "<|system|>"
#define ORC_TOK_USER "<|user|>"
#define ORC_TOK_ASSISTANT "<|assistant|>"
#define ORC_TOK_TOOL "<|tool|>"
#define ORC_TOK_END "<|end|>"
#define ORC_TOK_N_DEFAULT_SPECIALS 8
extern const char *const orc_tok_default_specials[ORC_TOK_N_DEFAULT_SPECIALS];

typedef enum orc_pretok_mode {
    ORC_PRETOK_SPLIT_DIGITS = 0, /* every digit its own pre-token */
    ORC_PRETOK_GPT2 = 1          /* digit runs with an optional leading space */
} orc_pretok_mode;

/* The end of the pre-token that starts at s[i] (i < n); always > i. */
size_t orc_pretok_next(orc_pretok_mode mode, const char *s, size_t n, size_t i);

/* GPT-2's byte <-> character map: the character (a code point below 324)
 * that stands for byte b in token strings of tokenizer.json, and back
 * (-1 for a code point that stands for no byte). */
uint32_t orc_tok_byte_to_char(uint8_t b);
int orc_tok_char_to_byte(uint32_t cp);

typedef struct orc_tokenizer orc_tokenizer;

typedef enum orc_tok_kind {
    ORC_TOK_BYTE_LEVEL = 0,   /* GPT-2 style byte-level BPE */
    ORC_TOK_SENTENCEPIECE = 1 /* SentencePiece BPE with byte fallback */
} orc_tok_kind;

/* ---- files ---------------------------------------------------------------- */

/* A directory holding tokenizer.json (preferred) or encoder.json + vocab.bpe,
 * or a tokenizer.json file itself. */
orc_tokenizer *orc_tokenizer_load(const char *dir_or_file, orc_error *err);
/* tokenizer.json contents from memory; name is used in messages. */
orc_tokenizer *orc_tokenizer_from_json(const char *json, size_t len, const char *name, orc_error *err);
/* GPT-2's pair of files; "<|endoftext|>", if in the vocabulary, is special. */
orc_tokenizer *orc_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, orc_error *err);
/* Writes tokenizer.json (merges in the "a b" string form). A path naming an
 * existing directory gets DIR/tokenizer.json. Atomic: tmp file + rename. */
orc_status orc_tokenizer_save(const orc_tokenizer *tok, const char *path, orc_error *err);
/* The tokenizer.json text (caller frees), or NULL with err set. */
char *orc_tokenizer_to_json(const orc_tokenizer *tok, orc_error *err);

void orc_tokenizer_free(orc_tokenizer *tok);

/* ---- encoding --------------------------------------------------------------- */

enum {
    ORC_TOK_ENCODE_SPECIAL = 1u << 0 /* turn special/added token text such as "<|user|>" into its id */
};

/* Token ids of text[0..len) into *ids (malloc'd, caller frees; non-NULL even
 * when *n is 0). Without ORC_TOK_ENCODE_SPECIAL, "<|user|>" in the text is
 * encoded as ordinary bytes. */
orc_status orc_tokenizer_encode(const orc_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                int32_t **ids, size_t *n, orc_error *err);
/* The bytes of ids (special tokens give their text) into *out (malloc'd,
 * NUL-terminated, caller frees); *len excludes the NUL. An id outside the
 * vocabulary is ORC_ERANGE. */
orc_status orc_tokenizer_decode(const orc_tokenizer *tok, const int32_t *ids, size_t n, char **out, size_t *len,
                                orc_error *err);

/* ---- the vocabulary ----------------------------------------------------------- */

size_t orc_tokenizer_vocab_size(const orc_tokenizer *tok); /* all ids, specials included */
size_t orc_tokenizer_merge_count(const orc_tokenizer *tok);
orc_pretok_mode orc_tokenizer_pretok_mode(const orc_tokenizer *tok);
orc_tok_kind orc_tokenizer_kind(const orc_tokenizer *tok);
/* SentencePiece only: whether each run of text gets a leading space. */
bool orc_tokenizer_space_prefix(const orc_tokenizer *tok);
/* The id of a token given by its bytes (an ordinary token first, then a
 * special/added token with that text), or -1. */
int32_t orc_tokenizer_token_to_id(const orc_tokenizer *tok, const char *bytes, size_t len);
/* The bytes of id (NUL-terminated; *len gets the length, may hold NULs), or
 * NULL for an id out of range. Valid while tok lives. */
const char *orc_tokenizer_id_to_token(const orc_tokenizer *tok, int32_t id, size_t *len);
/* The id of the special/added token with text name, e.g. ORC_TOK_USER, or -1. */
int32_t orc_tokenizer_special_id(const orc_tokenizer *tok, const char *name);
bool orc_tokenizer_is_special(const orc_tokenizer *tok, int32_t id);
/* Merge rank r (0 = applied first) as (left, right) -> result ids; a rank
 * past orc_tokenizer_merge_count is ORC_ERANGE. Any output may be NULL. */
orc_status orc_tokenizer_merge(const orc_tokenizer *tok, size_t rank, int32_t *left, int32_t *right,
                               int32_t *result, orc_error *err);

/* ---- training ------------------------------------------------------------------- */

typedef struct orc_tokenizer_train_opts {
    size_t vocab_size;            /* target: 256 bytes + learned tokens + specials */
    const char *const *specials;  /* NULL: orc_tok_default_specials */
    size_t n_specials;
    bool no_specials;             /* true: no special tokens at all */
    int64_t min_frequency;        /* stop early when the best pair is rarer; 0 means 2 */
    orc_pretok_mode pretok;       /* default ORC_PRETOK_SPLIT_DIGITS */
} orc_tokenizer_train_opts;

/* Pre-tokens longer than this are cut into pieces of this length for
 * training only (keeps a merge's cost bounded on pathological input). */
#define ORC_TOK_TRAIN_MAX_WORD 256

/* A trainer counts pre-tokens as text is added, then learns the merges. */
typedef struct orc_tok_trainer orc_tok_trainer;
orc_tok_trainer *orc_tok_trainer_new(const orc_tokenizer_train_opts *opts, orc_error *err);
orc_status orc_tok_trainer_add(orc_tok_trainer *tr, const char *text, size_t len, orc_error *err);
/* A plain text file, or with jsonl_field, one JSON object per line whose
 * string field jsonl_field is the text. */
orc_status orc_tok_trainer_add_file(orc_tok_trainer *tr, const char *path, const char *jsonl_field,
                                    orc_error *err);
/* Learns the merges from everything added. The trainer stays usable. */
orc_tokenizer *orc_tok_trainer_finish(orc_tok_trainer *tr, orc_error *err);
size_t orc_tok_trainer_word_count(const orc_tok_trainer *tr); /* distinct pre-tokens seen */
void orc_tok_trainer_free(orc_tok_trainer *tr);

/* One call: train on n texts (lens[i] bytes each). */
orc_tokenizer *orc_tokenizer_train(const char *const *texts, const size_t *lens, size_t n,
                                   const orc_tokenizer_train_opts *opts, orc_error *err);

/* Calls fn on each text of a file: the whole file, or with jsonl_field each
 * line's field (blank lines skipped). A line that is not a JSON object with
 * that string field is ORC_EFORMAT naming the file and line. Stops at the
 * first status fn returns other than ORC_OK. */
typedef orc_status (*orc_tok_text_fn)(void *ctx, const char *text, size_t len, orc_error *err);
orc_status orc_tok_for_each_text(const char *path, const char *jsonl_field, orc_tok_text_fn fn, void *ctx,
                                 orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
