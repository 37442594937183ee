/* orchard/llm_gguf.h: the decoder LM as a GGUF file (llama.cpp's format).
 *
 * Export writes a GGUF v3 file with llama.cpp's `llama` architecture: its
 * hyper-parameter keys, its tensor names (token_embd, blk.N.attn_q, ...,
 * output_norm, output; output is left out when the embeddings are tied, as
 * llama.cpp then reuses token_embd) and, when a tokenizer is given, the
 * tokenizer as tokenizer.ggml.* keys of the `gpt2` (byte-level BPE) kind with
 * a pre-tokenizer name whose split matches orchard's, the special token ids
 * and a Jinja chat template that renders orchard's template (orchard/chat.h).
 *
 * RoPE layout: orchard (like Hugging Face) pairs dims i and i + hd/2 of each
 * head; llama.cpp's `llama` architecture pairs 2i and 2i + 1. Export permutes
 * the rows of q and k in every head so the two agree (the permutation of
 * llama.cpp's HF converter), import applies the inverse. The `llama`
 * architecture has no QK-norm, so a qk_norm model is refused (ORC_EUNSUPPORTED).
 *
 * Import reads a `llama`-architecture GGUF (tensors F32, F16, BF16, or Q8_0 /
 * Q4_0 dequantized) into an orchard model, and the tokenizer of either kind
 * found in the wild into Hugging Face tokenizer.json text: `gpt2` byte-level
 * BPE (which orchard's tokenizer module runs when the pre-tokenizer is one it
 * implements), and `llama` SentencePiece with byte fallback (written as the
 * Hugging Face BPE + byte_fallback file with merges ranked by piece score;
 * orchard's tokenizer module does not run it, and says why when loading it).
 * An unknown architecture, a missing tensor or a tensor of the wrong shape is
 * an error naming the file and the tensor. */
#ifndef ORCHARD_LLM_GGUF_H
#define ORCHARD_LLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/gguf.h"
#include "orchard/llm.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* tokenizer.ggml.pre written for each orchard pre-tokenizer mode. llama.cpp's
 * "smollm" splits every \p{N} on its own, then applies GPT-2's pattern (and
 * keeps spaces when detokenizing), which is orchard's split-digits mode on
 * ASCII text; "gpt-2" is GPT-2's pattern. */
#define ORC_GGUF_PRE_SPLIT_DIGITS "smollm"
#define ORC_GGUF_PRE_GPT2 "gpt-2"

/* llama.cpp's tokenizer.ggml.token_type values. */
enum {
    ORC_GGUF_TOKEN_NORMAL = 1,
    ORC_GGUF_TOKEN_UNKNOWN = 2,
    ORC_GGUF_TOKEN_CONTROL = 3,
    ORC_GGUF_TOKEN_USER_DEFINED = 4,
    ORC_GGUF_TOKEN_UNUSED = 5,
    ORC_GGUF_TOKEN_BYTE = 6
};

typedef struct orc_gguf_export_opts {
    orc_ggml_type type; /* ORC_GGML_F32 (default when zero) or ORC_GGML_F16 for the matrices;
                           1-D norm weights stay F32, as llama.cpp's converter keeps them */
    const char *name;   /* general.name; NULL: "orchard" */
} orc_gguf_export_opts;

/* Write m (and tok, which may be NULL: then no tokenizer keys, and llama.cpp
 * will not load the file) to path as GGUF v3, atomically. The tokenizer's
 * vocabulary must not exceed the model's; the rest of the model's ids are
 * padded with unused tokens. ORC_EUNSUPPORTED for a qk_norm model or a
 * tokenizer llama.cpp cannot reproduce (ByteLevel add_prefix_space,
 * ignore_merges). */
orc_status orc_llm_export_gguf(const orc_llm *m, const orc_tokenizer *tok, const char *path,
                               const orc_gguf_export_opts *opts, orc_error *err);

/* The Jinja chat template stored as tokenizer.chat_template: orchard's
 * template (orchard/chat.h) in the form llama.cpp's and transformers'
 * Jinja renderers take. */
extern const char *const orc_gguf_chat_template;

/* The model configuration of a `llama` GGUF. path names the file in messages. */
orc_status orc_llm_config_from_gguf(const orc_gguf_file *f, const char *path, orc_llm_config *cfg, orc_error *err);
/* A model with the weights of a `llama` GGUF (q and k rows un-permuted). */
orc_llm *orc_llm_from_gguf(const orc_gguf_file *f, const char *path, bool with_grad, orc_error *err);
/* The same from a file path. */
orc_llm *orc_llm_load_gguf(const char *path, bool with_grad, orc_error *err);

/* What import did with the tokenizer. */
typedef struct orc_gguf_tok_info {
    char kind[16];     /* tokenizer.ggml.model: "gpt2", "llama", ... ("" when absent) */
    char pre[64];      /* tokenizer.ggml.pre ("" when absent) */
    bool written;      /* tokenizer.json was written */
    bool loadable;     /* orchard's tokenizer module loads it */
    char note[ORC_ERROR_MSG_MAX]; /* why not written or not loadable ("" when it is both) */
} orc_gguf_tok_info;

/* tokenizer.json text (malloc'd, caller frees) for the tokenizer of a GGUF
 * file. NULL with ORC_EUNSUPPORTED when the kind or pre-tokenizer has no
 * Hugging Face form here (err says which), ORC_EFORMAT for a malformed one. */
char *orc_gguf_tokenizer_json(const orc_gguf_file *f, const char *path, orc_error *err);

/* orchard import: DIR/config.json + DIR/model.safetensors from the GGUF
 * file, and DIR/tokenizer.json when the tokenizer can be written (info, when
 * not NULL, says what happened; a tokenizer that cannot be written is not an
 * error: the weights are still imported). */
orc_status orc_llm_import_gguf(const char *gguf_path, const char *dir, orc_gguf_tok_info *info, orc_error *err);

/* The RoPE row permutation of q/k weights [n_head * head_dim, cols]:
 * to_gguf moves row h*hd + s*hd/2 + i (orchard, half-split pairs) to
 * h*hd + 2i + s (llama.cpp, adjacent pairs); !to_gguf inverts it. src and dst
 * must not overlap. */
void orc_gguf_permute_qk(float *dst, const float *src, int64_t n_head, int64_t head_dim, int64_t cols, bool to_gguf);

#ifdef __cplusplus
}
#endif
#endif
