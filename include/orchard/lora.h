/* orchard/lora.h: LoRA adapters on the decoder LM's linear projections.
 *
 * An adapter adds a low-rank update to some of each block's seven
 * projections (q, k, v, o, gate, up, down):
 *   y = x W^T + (alpha / r) * (dropout(x) A^T) B^T,   A [r, in], B [out, r]
 * (alpha / sqrt(r) with use_rslora). A new adapter starts as PEFT's default:
 * A uniform in +-1/sqrt(in) (kaiming_uniform with a = sqrt(5)), B zero, so
 * the adapted model starts equal to its base. The base stays frozen: the
 * model is created without gradient buffers and only A and B are trained.
 *
 * Files (PEFT's layout, so PEFT and llama.cpp's convert_lora_to_gguf.py read
 * them): DIR/adapter_config.json (peft_type "LORA", r, lora_alpha,
 * target_modules ["q_proj", ...], lora_dropout, bias "none", task_type
 * "CAUSAL_LM", base_model_name_or_path, fan_in_fan_out false) and
 * DIR/adapter_model.safetensors with F32 tensors named
 *   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight   [r, in]
 *   base_model.model.model.layers.N.mlp.down_proj.lora_B.weight       [out, r]
 * Loading checks every tensor against the model it is meant for; a missing,
 * extra or mis-shaped tensor is an error naming the tensor (and both shapes).
 *
 * Applying adapters: a model carries a pointer to an orc_lora_stack (the
 * active adapters and their weights); the forward pass adds each one's delta
 * to the targeted projections. Switching adapters is one pointer store
 * (orc_llm_set_adapters), so a program can pick the adapters per request
 * from an orc_lora_set loaded once. Threads that serve different stacks at
 * once pass them per sequence to the batched step instead
 * (orc_llm_step_adapters in orchard/batch.h, as `orchard serve` does). A KV
 * cache filled under one stack is not valid under another. */
#ifndef ORCHARD_LORA_H
#define ORCHARD_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/llm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The projections an adapter can target, in the model's order. */
typedef enum orc_lora_target {
    ORC_LORA_Q = 0,
    ORC_LORA_K,
    ORC_LORA_V,
    ORC_LORA_O,
    ORC_LORA_GATE,
    ORC_LORA_UP,
    ORC_LORA_DOWN,
    ORC_LORA_N_TARGETS
} orc_lora_target;

#define ORC_LORA_ALL_TARGETS ((1u << ORC_LORA_N_TARGETS) - 1u)
#define ORC_LORA_NAME_MAX 4096
#define ORC_LORA_MAX_STACK 8 /* adapters active at once */

/* "q_proj", ..., "down_proj" (PEFT's target_modules) and "q", ..., "down"
 * (orchard's short names); NULL out of range. */
const char *orc_lora_target_module(int target);
const char *orc_lora_target_short(int target);
/* Either spelling to the target; -1 when unknown. */
int orc_lora_target_parse(const char *name);

typedef struct orc_lora_config {
    int rank;            /* r (16) */
    double alpha;        /* lora_alpha (32) */
    double dropout;      /* lora_dropout, on the adapter's input while training (0) */
    unsigned targets;    /* bit t for target t (all seven) */
    bool rslora;         /* use_rslora: scale alpha / sqrt(r) instead of alpha / r (false) */
    char base_model[ORC_LORA_NAME_MAX]; /* base_model_name_or_path ("" when unknown) */
} orc_lora_config;

void orc_lora_config_default(orc_lora_config *c);
/* "rank=16,alpha=32,targets=q,k,v,o,gate,up,down,dropout=0.05" onto c (keys
 * left out keep c's values; `r` is a synonym of rank; a target list runs
 * until the next key=value). An unknown key or target is ORC_EINVAL naming
 * it and listing the valid ones. */
orc_status orc_lora_config_parse(const char *spec, orc_lora_config *c, orc_error *err);
/* rank >= 1, alpha > 0 and finite, dropout in [0, 1), a target. label names
 * the source in messages. */
orc_status orc_lora_config_check(const orc_lora_config *c, const char *label, orc_error *err);
/* alpha / r (or alpha / sqrt(r) with rslora). */
float orc_lora_config_scale(const orc_lora_config *c);
/* Read DIR/adapter_config.json (PEFT keys; unsupported settings such as
 * use_dora, fan_in_fan_out, bias other than "none", layers_to_transform or a
 * regex target_modules are errors naming the key). */
orc_status orc_lora_config_load(const char *dir, orc_lora_config *c, orc_error *err);

typedef struct orc_lora {
    orc_lora_config cfg;
    orc_llm_config base;     /* the model shapes it fits */
    float scale;             /* orc_lora_config_scale(&cfg) */
    orc_arena *arena;        /* owns A, B and their gradients */
    orc_tensor **a, **b;     /* [num_hidden_layers * 7]: layer l target t at l * 7 + t; NULL when untargeted */
    int n_params;            /* every A and B, in (layer, target, A then B) order */
    orc_tensor **params;
} orc_lora;

/* An adapter for a model of config base: A and B zero, with gradient buffers
 * when with_grad. A rank above min(in, out) of a targeted projection is
 * ORC_EINVAL naming the projection and its shape. */
orc_lora *orc_lora_create(const orc_llm_config *base, const orc_lora_config *c, bool with_grad, orc_error *err);
/* PEFT's initialisation from a seed: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0.
 * The same values for any thread count. */
void orc_lora_init_weights(orc_lora *a, uint64_t seed);
void orc_lora_free(orc_lora *a);
/* PEFT's tensor name of layer l, target t, A (is_b false) or B, into buf. */
const char *orc_lora_tensor_name(int64_t layer, int target, bool is_b, char *buf, size_t n);

/* DIR/adapter_config.json + DIR/adapter_model.safetensors, written
 * atomically (DIR is created). meta: extra safetensors metadata (may be
 * NULL; e.g. a training step). */
typedef struct orc_lora_meta {
    const char *key, *value;
} orc_lora_meta;
orc_status orc_lora_save(const orc_lora *a, const char *dir, const orc_lora_meta *meta, size_t n_meta,
                         orc_error *err);
/* Load the adapter in DIR for a model of config base. Errors name the file,
 * the tensor and both shapes (another architecture or size), a tensor the
 * model has no place for, a missing tensor, an unsupported config. */
orc_lora *orc_lora_load(const char *dir, const orc_llm_config *base, bool with_grad, orc_error *err);

/* ---- applying adapters ---------------------------------------------------------- */

/* y = x W^T + scale * (dropout(x) A^T) B^T with the public ops (recorded for
 * autograd). Dropout acts only while ctx->training and not in no-grad mode. */
orc_tensor *orc_lora_linear(orc_ctx *ctx, orc_tensor *x, orc_tensor *w, orc_tensor *a, orc_tensor *b, float scale,
                            float dropout);

/* The adapters active on a model: their deltas add up, adapter i's scaled by
 * weight[i] (1 for plain use). The stack does not own the adapters. */
typedef struct orc_lora_stack {
    int n;
    const orc_lora *ad[ORC_LORA_MAX_STACK];
    float weight[ORC_LORA_MAX_STACK];
} orc_lora_stack;

/* Whether a and b apply the same adapters with the same weights in the same
 * order (NULL and an empty stack are both the base alone). A KV cache filled
 * under one stack can be reused only under an equal one. */
bool orc_lora_stack_equal(const orc_lora_stack *a, const orc_lora_stack *b);
/* Add the stack's deltas for (layer, target) to y = x W^T. Returns y when no
 * adapter targets it. */
orc_tensor *orc_lora_project(orc_ctx *ctx, const orc_lora_stack *s, int64_t layer, int target, orc_tensor *x,
                             orc_tensor *y);
/* Check that every adapter of s fits m (shapes), then make s active on m
 * (NULL or an empty stack: the base alone). O(n) in the stack, no copies:
 * cheap enough per request. s must outlive its use by m. */
orc_status orc_llm_set_adapters(orc_llm *m, const orc_lora_stack *s, orc_error *err);
/* Whether adapter a fits a model of config c (same shapes on every target);
 * ORC_ESHAPE naming the first differing projection otherwise. */
orc_status orc_lora_check_fits(const orc_lora *a, const orc_llm_config *c, orc_error *err);

/* ---- several adapters, selectable by name ------------------------------------------ */

typedef struct orc_lora_set orc_lora_set;

orc_lora_set *orc_lora_set_new(orc_error *err);
void orc_lora_set_free(orc_lora_set *s);
/* Load DIR under name (no gradients). A name already present is ORC_EINVAL. */
orc_status orc_lora_set_load(orc_lora_set *s, const char *name, const char *dir, const orc_llm_config *base,
                             orc_error *err);
size_t orc_lora_set_count(const orc_lora_set *s);
const char *orc_lora_set_name(const orc_lora_set *s, size_t i);
const orc_lora *orc_lora_set_at(const orc_lora_set *s, size_t i);
/* NULL when absent. */
const orc_lora *orc_lora_set_get(const orc_lora_set *s, const char *name);
/* A stack from "NAME[:WEIGHT][,NAME[:WEIGHT]...]" (weight 1 by default); an
 * empty spec is the empty stack. An unknown name is ORC_EINVAL listing the
 * loaded ones. */
orc_status orc_lora_set_select(const orc_lora_set *s, const char *spec, orc_lora_stack *out, orc_error *err);
/* For `--adapter DIR[:WEIGHT][,DIR...]`: load each DIR into s under the name
 * DIR and fill out with all of them in order. */
orc_status orc_lora_set_load_list(orc_lora_set *s, const char *list, const orc_llm_config *base,
                                  orc_lora_stack *out, orc_error *err);

/* ---- merge and export ---------------------------------------------------------------- */

/* Fold an adapter into m's weights: W += weight * scale * B A (in double
 * precision per element). The model must fit the adapter. */
orc_status orc_lora_merge(orc_llm *m, const orc_lora *a, float weight, orc_error *err);
/* llama.cpp's GGUF LoRA adapter: general.architecture "llama", general.type
 * "adapter", adapter.type "lora", adapter.lora.alpha (alpha; llama.cpp
 * scales by alpha / rank), and per target F32 tensors blk.N.<name>.weight.lora_a
 * (ggml ne [in, r]) and .lora_b (ne [r, out]); lora_b of attn_q / attn_k has
 * its rows permuted like the GGUF export permutes q and k. An rslora adapter
 * is written with alpha * sqrt(r) so llama.cpp's alpha / r gives its scale.
 * Atomic write. name: general.name (NULL: "orchard-lora"). */
orc_status orc_lora_export_gguf(const orc_lora *a, const char *path, const char *name, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
