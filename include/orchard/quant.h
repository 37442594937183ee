/* orchard/quant.h: quantized weights and inference with them (GGUF Q8_0 / Q4_0).
 *
 * Weights stay in ggml's block layout (orchard/gguf.h: Q8_0 is an f16 scale
 * and 32 int8, Q4_0 an f16 scale and 32 nibbles), bit-exact with llama.cpp,
 * so a matrix can point straight into a mapped GGUF file. Kernels never make
 * a float copy of a weight: like llama.cpp, the activations are quantized on
 * the fly to Q8_0 (ggml's reference rounding) and each weight block is dotted
 * with its activation block in integer arithmetic; block b's term
 *   (d_w[b] * d_x[b]) * (float)isum[b]
 * is added (unfused) into lane b % 8 of eight float accumulators, which are
 * summed by one fixed tree (orc_q_reduce8). The integer sums are exact and
 * every path keeps that one order, so the portable C path, the AVX2 path and
 * the AVX-512 path (VNNI when present) give the same bits, and any thread
 * count does too (work is split by output row). docs/quantization.md spells
 * the order out.
 *
 * The quantized LM keeps the float norms and replaces every projection (and
 * the embedding table) by a quantized matrix; its forward pass mirrors
 * orc_llm_hidden with the public ops, in no-grad inference only.
 * A quantized model file is a llama.cpp `llama` GGUF with Q8_0 or Q4_0
 * projections (token_embd and output stay Q8_0 in the q4_0 scheme: the
 * embeddings at 8 bits) and F32 norms.
 *
 * Palettized matrices (pal4, pal2; docs/quantization.md) are orchard's own:
 * each group of `group` columns (16 by default) shares one lookup table of
 * 16 (pal4) or 4 (pal2) entries across all rows, learned by 1-D k-means, and
 * each weight is a 4- or 2-bit index. An entry is lut_scale[g] * lut[g][e]
 * with lut an int8 in [-127, 127], so the kernels look indices up with a
 * byte shuffle and use the same exact integer sums as Q8_0; the float step
 * runs in one fixed 8-lane order shared by every path. Such files are GGUF
 * with orchard-only companion tensors (llama.cpp does not run them). */
#ifndef ORCHARD_QUANT_H
#define ORCHARD_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/generate.h"
#include "orchard/gguf.h"
#include "orchard/llm.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_Q_BLOCK 32          /* elements per block for both formats */
#define ORC_Q8_0_BYTES 34       /* f16 scale + 32 int8 */
#define ORC_Q4_0_BYTES 18       /* f16 scale + 16 bytes of nibbles */

/* orchard's palettized matrix types: outside ggml's id range, never a GGUF
 * tensor type (the file stores them as I8 indices plus table tensors). */
#define ORC_Q_PAL4 ((orc_ggml_type)1004) /* 16-entry tables, 4-bit indices */
#define ORC_Q_PAL2 ((orc_ggml_type)1002) /* 4-entry tables, 2-bit indices */
#define ORC_Q_PAL_GROUP 16               /* default columns per table (AFM) */
#define ORC_Q_PAL_SUB 16                 /* kernel sub-group: the group size is a multiple of it */
#define ORC_Q_PAL_VERSION 1              /* orchard.quant.version of the file format */

/* "Q8_0", "Q4_0", "PAL4", "PAL2" (ggml's name otherwise). */
const char *orc_q_type_name(orc_ggml_type type);
/* True for ORC_Q_PAL4 / ORC_Q_PAL2. */
bool orc_q_type_is_pal(orc_ggml_type type);

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

/* A [rows, cols] matrix in ggml blocks, row-major (each row is cols/32 blocks),
 * or palettized: each row is cols/32 chunks of 32 indices (pal4: 16 bytes,
 * byte i = element i | element 16+i << 4; pal2: 8 bytes, element e in bits
 * 2*(e/8) of byte e%8), weight [r, k] = lut_scale[k/group] * lut[k/group][idx]. */
typedef struct orc_qmat {
    orc_ggml_type type;  /* ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_Q_PAL4 or ORC_Q_PAL2 */
    int64_t rows, cols;  /* cols a multiple of 32 */
    size_t row_bytes;
    const uint8_t *data; /* rows * row_bytes bytes */
    void *owned;         /* freed by orc_qmat_release; NULL for a view */
    /* palettized only (zero otherwise) */
    int64_t group;          /* columns per table: a multiple of 16 dividing cols */
    int entries;            /* 16 (pal4) or 4 (pal2) */
    const int8_t *lut;      /* [cols/group, entries], each in [-127, 127] */
    const float *lut_scale; /* [cols/group] */
    int8_t *ktab;           /* [cols/16, 16]: the table of each 16-column sub-group, for the byte shuffle */
    void *owned_lut;        /* lut, lut_scale (when not views) and ktab; freed by orc_qmat_release */
    /* Q8_0 / Q4_0 only: the same blocks repacked by orc_qmat_pack (NULL: not
     * packed), read by the AVX2 / AVX-512 kernels instead of data */
    const uint8_t *packed;
    void *owned_packed; /* freed by orc_qmat_release; NULL for an alias */
} orc_qmat;

/* Bytes of one row of n elements of type (Q8_0, Q4_0, PAL4, PAL2), 0 otherwise. */
size_t orc_q_row_bytes(orc_ggml_type type, int64_t n);
/* All bytes of a matrix: rows, plus tables and their scales when palettized. */
size_t orc_qmat_bytes(const orc_qmat *q);
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
/* The embedding lookup of a quantized table: ids int32 [B, T] -> float
 * [B, T, cols], each row dequantized; an id outside [0, rows) is an
 * ORC_ERANGE error in ctx naming its position. */
orc_tensor *orc_qmat_embedding(orc_ctx *ctx, const orc_qmat *e, const orc_tensor *ids);
/* The whole matrix as floats [rows, cols]: exactly the weight values the
 * kernels multiply with (for a palettized matrix lut_scale[g] * lut[g][idx]). */
void orc_qmat_dequantize(const orc_qmat *q, float *out);
/* A copy of q that does not own its memory (e.g. a tied lm_head). */
orc_qmat orc_qmat_alias(const orc_qmat *q);
/* Repack a Q8_0 / Q4_0 matrix's blocks in memory for the SIMD kernels:
 * groups of 8 rows, per block column the 8 scales then the quants with 4
 * consecutive ones of each row side by side (docs/quantization.md), so one
 * vector instruction works on 8 rows. data stays as it was (the portable
 * path, dequantization and files read it); the kernels give the same bits
 * packed or not. False, leaving q as it was, where the layout does not apply
 * (rows not a multiple of 8, another type, a Q8_0 quant of -128, which the
 * packed kernel's sign trick cannot take) or memory is short. */
bool orc_qmat_pack(orc_qmat *q);

/* ---- palettization ---------------------------------------------------------------- */

/* Quantize a float [rows, cols] matrix to type: Q8_0 / Q4_0 as
 * orc_qmat_quantize (group ignored), or PAL4 / PAL2 with one table per group
 * of `group` columns shared by all rows (group <= 0: 16; a multiple of 16
 * dividing cols). Each table: unweighted 1-D k-means of the group's
 * rows*group values (quantile init, ORC_Q_PAL_ITERS Lloyd iterations,
 * deterministic, independent of the thread count), the centroids then set
 * to scale * int8 with scale = max|centroid| / 127, and every weight takes
 * the nearest entry (the lower index on a tie). */
#define ORC_Q_PAL_ITERS 30
orc_status orc_qmat_quantize_ex(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                                int64_t group, orc_error *err);
/* A palettized view: indices (rows * row_bytes bytes), lut [cols/group,
 * entries] and lut_scale [cols/group] point into existing memory (a mapped
 * file). Checks the byte counts, the group, the entries (in [-127, 127]) and
 * the scales (finite); ORC_EFORMAT / ORC_ESHAPE naming `name` otherwise. */
orc_status orc_qmat_view_pal(orc_qmat *q, orc_ggml_type type, int64_t rows, int64_t cols, int64_t group,
                             const void *indices, size_t nbytes, const int8_t *lut, size_t lut_bytes,
                             const float *lut_scale, size_t scale_bytes, const char *name, orc_error *err);
/* 1-D k-means as used by the palettizer: k centroids (ascending) of the n
 * values x (sorted in place), quantile init then iters Lloyd iterations.
 * Exposed for tests. ORC_EINVAL for k < 1 or n < 1. */
orc_status orc_q_kmeans1d(float *x, int64_t n, int k, int iters, float *centroids, orc_error *err);

/* ---- kernels -------------------------------------------------------------------- */

/* Quantize n rows of cols floats (cols a multiple of 32) to Q8_0 blocks:
 * out holds n * orc_q_row_bytes(Q8_0, cols) bytes. */
void orc_q8_quantize_rows(const float *x, int64_t n, int64_t cols, uint8_t *out);
/* The dot product of one weight row (type, nb blocks) with one Q8_0 row
 * (Q8_0 and Q4_0 only; palettized rows go through orc_q_matmul_q8). */
float orc_q_dot(orc_ggml_type type, const uint8_t *w, const uint8_t *xq, int64_t nb);
/* y[t, r] = dot(w row r, xq row t) for T activation rows already in Q8_0
 * (as orc_q8_quantize_rows writes them: quants in [-127, 127])
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
    orc_ggml_type type;      /* the projections' type (Q8_0, Q4_0, PAL4, PAL2); the narrowest when mixed */
    /* The active LoRA adapters (orc_qllm_set_adapters), added in float after
     * each quantized projection (orchard/lora.h); NULL: the base alone. */
    const struct orc_lora_stack *lora;
    /* The packed copies of the projections and lm_head (orc_qmat_pack's
     * layout), one allocation in huge pages where the kernel gives them;
     * NULL when each matrix owns its own or none is packed. */
    void *packed_arena;
} orc_qllm;

/* Which type each matrix of a model gets. */
#define ORC_QLLM_PROJ 7 /* per layer, in this order: wq, wk, wv, wo, w_gate, w_up, w_down */
typedef struct orc_quant_plan {
    orc_ggml_type embed;  /* token_embd and an untied output: Q8_0 (the embeddings at 8 bits) */
    orc_ggml_type *proj;  /* [n_layers * 7], owned */
    int64_t n_layers;
    int64_t group;        /* columns per palettization table (<= 0: 16) */
    char scheme[32];      /* written to the file as orchard.quant.scheme ("pal4", "mixed:3.5", ...) */
} orc_quant_plan;

/* Every projection in type (Q8_0, Q4_0, PAL4, PAL2), the embeddings Q8_0. */
orc_status orc_quant_plan_uniform(orc_quant_plan *p, int64_t n_layers, orc_ggml_type type, int64_t group,
                                  orc_error *err);
void orc_quant_plan_release(orc_quant_plan *p);
/* "blk.L.attn_q.weight"-style GGUF name of projection i of layer l (into buf). */
const char *orc_quant_proj_name(int64_t l, int i, char *buf, size_t n);
/* Bytes of a [rows, cols] matrix in type (tables included for PAL4 / PAL2;
 * group <= 0: 16), 0 when the shape does not fit the type. */
size_t orc_quant_matrix_bytes(orc_ggml_type type, int64_t rows, int64_t cols, int64_t group);
/* Bits per weight of the whole model under a plan (as orc_qllm_weight_bytes
 * counts: matrices, tables, float norms; over orc_llm_config_num_params). */
double orc_quant_plan_bpw(const orc_llm_config *cfg, const orc_quant_plan *p);

/* The float fallback, as llama.cpp's quantizer does for a tensor whose rows
 * are not a whole number of blocks (e.g. make run's ffn_down, rows of 688):
 * such a matrix stays F16 in the file and in memory (an orc_qmat of type
 * ORC_GGML_F16, row_bytes 2 * cols, counted at 16 bits per weight) and is
 * multiplied in float by orc_qllm_linear. The type a matrix with rows of
 * cols values planned as `type` (Q8_0, Q4_0, PAL4, PAL2) really gets: type
 * when cols is a multiple of 32, ORC_GGML_F16 otherwise (other types as
 * given). */
orc_ggml_type orc_quant_fit_type(orc_ggml_type type, int64_t cols);
/* orc_qmat_quantize_ex into orc_quant_fit_type's type (an owned F16 matrix
 * on the fallback). */
orc_status orc_qmat_quantize_fit(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                                 int64_t group, orc_error *err);
/* One line per matrix of cfg that falls back under p ("note: blk.0.ffn_down.weight
 * [256, 688]: ... kept in F16"), written to fp (NULL: none); returns their count. */
int orc_quant_plan_fallbacks(const orc_llm_config *cfg, const orc_quant_plan *p, FILE *fp);

/* mixed:BITS. The candidates, from the widest down. */
#define ORC_QMIX_N 4
extern const orc_ggml_type ORC_QMIX_TYPES[ORC_QMIX_N]; /* Q8_0, Q4_0, PAL4, PAL2 */
/* Sensitivity: delta[(l * 7 + i) * ORC_QMIX_N + c] is the increase of the
 * mean next-token loss on ids[0..n) (windows of context tokens, <= 0: the
 * model's) when only projection i of layer l is replaced by its candidate-c
 * quantization (dequantized into the float model, every other weight float).
 * base_loss gets the float loss. m's weights are restored before return.
 * Cost: 7 * L * 4 + 1 evaluations of the calibration tokens. */
orc_status orc_quant_sensitivity(orc_llm *m, const int32_t *ids, size_t n, int64_t context, int64_t group,
                                 double *base_loss, double *delta, orc_error *err);
/* The greedy knapsack: start with every projection at Q8_0, then repeatedly
 * take the move (one projection to a narrower candidate) with the smallest
 * loss increase per bit saved (increases below 0 count as 0; ties to the
 * earlier tensor) until the model's bits per weight are <= budget. ORC_EINVAL
 * naming the smallest reachable bpw when the budget is below it. Fills p
 * (scheme "mixed:BUDGET") and *achieved. */
orc_status orc_quant_plan_mixed(const orc_llm_config *cfg, double budget, int64_t group, const double *delta,
                                orc_quant_plan *p, double *achieved, orc_error *err);

/* Quantize a float model in memory: projections to type (Q8_0, Q4_0, PAL4 or
 * PAL2, group 16), the embedding and an untied lm_head to Q8_0 unless type is
 * Q8_0. */
orc_qllm *orc_qllm_from_llm(const orc_llm *m, orc_ggml_type type, orc_error *err);
/* The same with a per-matrix plan (p->n_layers must match). */
orc_qllm *orc_qllm_from_llm_plan(const orc_llm *m, const orc_quant_plan *p, orc_error *err);
/* A float model whose weights are exactly the quantized model's weights as
 * the kernels use them (orc_qmat_dequantize of every matrix, q/k rows in
 * orchard's order, norms copied; tied when q is). For training recovery
 * adapters over a frozen quantized base. Free with orc_llm_free. */
orc_llm *orc_qllm_to_llm(const orc_qllm *q, bool with_grad, orc_error *err);
/* Load a `llama` GGUF (a file, or a directory holding model.gguf). Q8_0 and
 * Q4_0 matrices are used in place from the mapping (q and k rows reordered
 * into a copy); F32/F16/BF16 matrices are quantized to Q8_0 on load (kept
 * F16 when their rows are not whole blocks: orc_quant_fit_type). A
 * palettized matrix (an I8 index tensor NAME with NAME.pal_lut and
 * NAME.pal_scale) is used in place too. A matrix of another type, a wrong
 * block count or table shape is an error naming it. */
orc_qllm *orc_qllm_load(const char *path, orc_error *err);
void orc_qllm_free(orc_qllm *q);
/* Bytes of weights (blocks plus float norms) and bits per weight. */
size_t orc_qllm_weight_bytes(const orc_qllm *q);

/* Check that every adapter of s fits q's shapes (orc_lora_check_fits), then
 * make s active on q (NULL or empty: the base alone). Each adapted
 * projection becomes orc_q_linear(x, W) + scale * (x A^T) B^T with the
 * adapter in float (A and B are small); as orc_llm_set_adapters, s must
 * outlive its use and a KV cache filled under one stack is not valid under
 * another. */
orc_status orc_qllm_set_adapters(orc_qllm *q, const struct orc_lora_stack *s, orc_error *err);

/* Final hidden states [B, T, D] and logits [B, T, V], like orc_llm_hidden /
 * orc_llm_forward (ctx must be in no-grad mode). */
orc_tensor *orc_qllm_hidden(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache);
orc_tensor *orc_qllm_forward(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache);
/* orc_q_linear, or for an F16 fallback matrix x @ w^T in float (orc_linear). */
orc_tensor *orc_qllm_linear(orc_ctx *ctx, orc_tensor *x, const orc_qmat *w);

/* orc_eval_ids / orc_eval_texts (orchard/generate.h) for the quantized model:
 * the same windows, scoring, stream (a begin token per text) and byte count,
 * with orc_qllm_forward in place of the float forward. */
orc_status orc_qllm_eval_ids(orc_qllm *q, const int32_t *ids, size_t n, const uint8_t *scored, int64_t context,
                             int64_t stride, orc_eval_result *res, orc_error *err);
orc_status orc_qllm_eval_texts(orc_qllm *q, const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res,
                               orc_error *err);

/* The tokenizer of a quantized model at `model` (what orc_qllm_load took;
 * q is the loaded model): tok_path when not NULL (a tokenizer.json or a
 * directory), else model/tokenizer.json when model is a directory holding
 * one, else the GGUF's tokenizer keys. (src/quant/step.c) */
orc_tokenizer *orc_qllm_load_tokenizer(const char *tok_path, const char *model, const orc_qllm *q, orc_error *err);

/* ---- files -------------------------------------------------------------------------- */

/* A scheme name ("q8_0", "q4_0", "pal4", "pal2") to its projection type;
 * ORC_EINVAL otherwise (mixed:BITS is parsed by orc_quant_scheme_mixed). */
orc_status orc_quant_scheme_parse(const char *scheme, orc_ggml_type *type, orc_error *err);
/* "mixed:BITS" to BITS (in (0, 32)); false for any other scheme. */
bool orc_quant_scheme_mixed(const char *scheme, double *bits);
/* Rewrite a `llama` GGUF (F32/F16/BF16/Q8_0/Q4_0 tensors) with its 2-D
 * tensors in type (token_embd and output in Q8_0 when type is Q4_0) and its
 * 1-D tensors in F32, every key/value copied (general.file_type set to
 * llama.cpp's MOSTLY_Q8_0 = 7 or MOSTLY_Q4_0 = 2). Atomic write. */
orc_status orc_quantize_gguf(const char *in_path, const char *out_path, orc_ggml_type type, orc_error *err);
/* A model directory (config.json, model.safetensors, tokenizer.json when
 * present) to a quantized GGUF at out_path, through the float GGUF export
 * (tensor names, q/k permutation, tokenizer keys). */
orc_status orc_quantize_model_dir(const char *dir, const char *out_path, orc_ggml_type type, orc_error *err);
/* The same two with a per-matrix plan. Palettized matrices are written as
 * NAME (I8 [rows, cols*bits/8] packed indices), NAME.pal_lut (I8 [cols/group,
 * entries]) and NAME.pal_scale (F32 [cols/group]), with the keys
 * orchard.quant.version = 1 and orchard.quant.scheme; a file without
 * palettized matrices keeps llama.cpp's general.file_type. */
orc_status orc_quantize_gguf_plan(const char *in_path, const char *out_path, const orc_quant_plan *p,
                                  orc_error *err);
orc_status orc_quantize_model_dir_plan(const char *dir, const char *out_path, const orc_quant_plan *p,
                                       orc_error *err);

/* ---- the compression study (`orchard study compress`, src/quant/study.c) ------------ */

typedef struct orc_compress_study_opts {
    const char *model_dir;  /* the float model: config.json, model.safetensors, tokenizer.json */
    const char *text;       /* plain text: the first 1 - val_fraction trains, the tail validates */
    const char *out_dir;    /* created; must not hold a results.json */
    const char *calib;      /* mixed:BITS calibration text; NULL: the training part */
    double val_fraction;    /* 0.1, cut at the next line start */
    double mixed_bits;      /* 3.5 (raised to all-pal2 + 0.25 when out of reach, with a note) */
    int recovery_steps;     /* 60 */
    int recovery_batch, recovery_seq; /* 8, 64 */
    double recovery_lr;     /* 2e-3 (cosine to a tenth) */
    int calib_tokens;       /* 1024 */
    int decode_tokens;      /* 64 timed greedy steps */
    int prompt_tokens;      /* 8: the first tokens of the validation part */
    int threads;            /* 2, during the decode timing */
    int64_t context;        /* evaluation windows (<= 0: the model's) */
    uint64_t seed;          /* recovery training (1) */
    FILE *progress;         /* notes and training progress; NULL: quiet */
    FILE *table;            /* results.md is also written here; NULL: not */
} orc_compress_study_opts;

void orc_compress_study_opts_default(orc_compress_study_opts *o);
/* Where the study cuts text[0..n): the first line start at or after
 * (1 - val_fraction) * n (n when there is none). */
size_t orc_compress_split_point(const char *text, size_t n, double val_fraction);
/* The seven rows (fp32, q8_0, q4_0, pal4, mixed, mixed + recovery, pal2 +
 * recovery) and the control (fp32 + the same recovery training over the
 * float model) into out_dir/results.json and results.md. */
orc_status orc_compress_study_run(const orc_compress_study_opts *o, orc_error *err);
/* `orchard study compress ARGS` (argv[0] is the first option): 0, 1 failed, 2 usage. */
int orc_compress_study_main(int argc, char **argv);
void orc_compress_study_help(FILE *fp);

#ifdef __cplusplus
}
#endif
#endif
