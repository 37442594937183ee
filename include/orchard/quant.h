/* orchard/quant.h: quantized weights and inference with them (GGUF Q8_0 / Q4_0).
 *
 * Weights stay in ggml's block layout (orchard/gguf.h: Q8_0 is an f16 scale
 * and 32 int8, Q4_0 an f16 scale and 32 nibbles), bit-exact with llama.cpp,
 * so a matrix can point straight into a mapped GGUF file. Kernels never make
 * a float copy of a weight: like llama.cpp, the activations are quantized on
 * the fly to Q8_0 (ggml's reference rounding) and each weight block is dotted
 * with its activation block in integer arithmetic; the float result is
 *   y = sum over blocks b, in order, of (d_w[b] * d_x[b]) * (float)isum[b].
 * The integer sums are exact and the float step runs in that fixed
 * sequential order on every path, so the portable C path, the AVX2 path and
 * the AVX-512 path (VNNI when present) give the same bits, and any thread
 * count does too (work is split by output row).
 *
 * The quantized LM keeps the float norms and replaces every projection (and
 * the embedding table) by a quantized matrix; its forward pass mirrors
 * orc_llm_hidden with the public ops, in no-grad inference only.
 * A quantized model file is a llama.cpp `llama` GGUF with Q8_0 or Q4_0
 * projections (token_embd and output stay Q8_0 in the q4_0 scheme: the
 * embeddings at 8 bits) and F32 norms. */
#ifndef ORCHARD_QUANT_H
#define ORCHARD_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/gguf.h"
#include "orchard/llm.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_Q_BLOCK 32          /* elements per block for both formats */
#define ORC_Q8_0_BYTES 34       /* f16 scale + 32 int8 */
#define ORC_Q4_0_BYTES 18       /* f16 scale + 16 bytes of nibbles */

/* ---- kernel paths ------------------------------------------------------------ */

typedef enum orc_q_path {
    ORC_Q_AUTO = 0,   /* the default: AVX2 when present (measured fastest), else AVX-512, else portable */
    ORC_Q_PORTABLE,   /* plain C */
    ORC_Q_AVX2,       /* AVX2 maddubs/madd */
    ORC_Q_AVX512      /* AVX-512 BW (dpbusd with VNNI) */
} orc_q_path;

const char *orc_q_path_name(orc_q_path p); /* "auto", "portable", "avx2", "avx512", "avx512-vnni" */
/* Whether this CPU runs path p (AUTO and PORTABLE always). */
bool orc_q_path_available(orc_q_path p);
/* Force a path for every later kernel call (tests, benchmarks). ORC_EUNSUPPORTED
 * when the CPU lacks it (the path is then unchanged). */
orc_status orc_q_set_path(orc_q_path p, orc_error *err);
/* The path kernels run now (AUTO resolved). */
orc_q_path orc_q_active_path(void);

/* ---- quantized matrices -------------------------------------------------------- */

/* A [rows, cols] matrix in ggml blocks, row-major (each row is cols/32 blocks). */
typedef struct orc_qmat {
    orc_ggml_type type;  /* ORC_GGML_Q8_0 or ORC_GGML_Q4_0 */
    int64_t rows, cols;  /* cols a multiple of 32 */
    size_t row_bytes;
    const uint8_t *data; /* rows * row_bytes bytes */
    void *owned;         /* freed by orc_qmat_release; NULL for a view */
} orc_qmat;

/* Bytes of one row of n elements of type (Q8_0 or Q4_0), 0 otherwise. */
size_t orc_q_row_bytes(orc_ggml_type type, int64_t n);
/* Quantize a float [rows, cols] matrix (ggml's reference rounding) into owned
 * memory. ORC_EINVAL for another type or cols not a multiple of 32. */
orc_status orc_qmat_quantize(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                             orc_error *err);
/* A view of existing blocks (e.g. a mapped GGUF tensor); nbytes must match
 * the shape exactly (ORC_EFORMAT otherwise; name names it in the message). */
orc_status orc_qmat_view(orc_qmat *q, orc_ggml_type type, int64_t rows, int64_t cols, const void *data,
                         size_t nbytes, const char *name, orc_error *err);
void orc_qmat_release(orc_qmat *q);
/* Row r as floats (cols values); for embedding lookups and checks. */
void orc_qmat_dequant_row(const orc_qmat *q, int64_t r, float *out);

/* ---- kernels -------------------------------------------------------------------- */

/* Quantize n rows of cols floats (cols a multiple of 32) to Q8_0 blocks:
 * out holds n * orc_q_row_bytes(Q8_0, cols) bytes. */
void orc_q8_quantize_rows(const float *x, int64_t n, int64_t cols, uint8_t *out);
/* The dot product of one weight row (type, nb blocks) with one Q8_0 row. */
float orc_q_dot(orc_ggml_type type, const uint8_t *w, const uint8_t *xq, int64_t nb);
/* y[t, r] = dot(w row r, xq row t) for T activation rows already in Q8_0
 * (T = 1 is decode's matrix-vector; larger T tiles rows x tokens). y is
 * [T, w->rows] floats. Parallel over rows; the same bits for any thread count. */
void orc_q_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y);
/* The same from float activations x [T, cols] (quantized on the fly). */
orc_status orc_q_matmul(const orc_qmat *w, const float *x, int64_t T, float *y, orc_error *err);

/* y = x @ w^T for x [..., cols] (any strides): output [..., rows]. An
 * inference op: it records nothing and fails (ORC_EINVAL) when x requires a
 * gradient outside no-grad mode. */
orc_tensor *orc_q_linear(orc_ctx *ctx, orc_tensor *x, const orc_qmat *w);

/* ---- the quantized LM ------------------------------------------------------------ */

typedef struct orc_qllm_layer {
    orc_tensor *attn_norm, *ffn_norm, *q_norm, *k_norm; /* float, as in orc_llm */
    orc_qmat wq, wk, wv, wo, w_gate, w_up, w_down;     /* q and k rows in orchard's order */
} orc_qllm_layer;

typedef struct orc_qllm {
    orc_llm_config cfg;
    orc_arena *arena;        /* the float norms */
    orc_qmat embed;          /* [V, D] */
    orc_qmat lm_head;        /* [V, D]; a view of embed when tied */
    orc_tensor *norm;        /* [D] */
    orc_qllm_layer *layers;  /* [L] */
    orc_gguf_file *file;     /* the mapped file views point into, or NULL */
    orc_ggml_type type;      /* the projections' type (Q8_0 or Q4_0) */
} orc_qllm;

/* Quantize a float model in memory: projections to type (Q8_0 or Q4_0), the
 * embedding and an untied lm_head to Q8_0 when type is Q4_0. */
orc_qllm *orc_qllm_from_llm(const orc_llm *m, orc_ggml_type type, orc_error *err);
/* Load a `llama` GGUF (a file, or a directory holding model.gguf). Q8_0 and
 * Q4_0 matrices are used in place from the mapping (q and k rows reordered
 * into a copy); F32/F16/BF16 matrices are quantized to Q8_0 on load. A
 * matrix of another type or a wrong block count is an error naming it. */
orc_qllm *orc_qllm_load(const char *path, orc_error *err);
void orc_qllm_free(orc_qllm *q);
/* Bytes of weights (blocks plus float norms) and bits per weight. */
size_t orc_qllm_weight_bytes(const orc_qllm *q);

/* Final hidden states [B, T, D] and logits [B, T, V], like orc_llm_hidden /
 * orc_llm_forward (ctx must be in no-grad mode). */
orc_tensor *orc_qllm_hidden(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache);
orc_tensor *orc_qllm_forward(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache);

/* ---- files -------------------------------------------------------------------------- */

/* A scheme name ("q8_0", "q4_0") to its projection type; ORC_EINVAL otherwise. */
orc_status orc_quant_scheme_parse(const char *scheme, orc_ggml_type *type, orc_error *err);
/* Rewrite a `llama` GGUF (F32/F16/BF16/Q8_0/Q4_0 tensors) with its 2-D
 * tensors in type (token_embd and output in Q8_0 when type is Q4_0) and its
 * 1-D tensors in F32, every key/value copied (general.file_type set to
 * llama.cpp's MOSTLY_Q8_0 = 7 or MOSTLY_Q4_0 = 2). Atomic write. */
orc_status orc_quantize_gguf(const char *in_path, const char *out_path, orc_ggml_type type, orc_error *err);
/* A model directory (config.json, model.safetensors, tokenizer.json when
 * present) to a quantized GGUF at out_path, through the float GGUF export
 * (tensor names, q/k permutation, tokenizer keys). */
orc_status orc_quantize_model_dir(const char *dir, const char *out_path, orc_ggml_type type, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
