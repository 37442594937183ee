/* orchard/llm.h: the decoder-only language model (AFM's architecture).
 *
 * Pre-RMSNorm blocks with grouped-query attention (optional QK-norm, RoPE with
 * a configurable base), a SwiGLU feed-forward, and tied or separate input and
 * output embeddings. The configuration uses the Hugging Face Llama keys in
 * config.json (plus orchard's `qk_norm`); parameters use the Llama tensor
 * names in model.safetensors, so transformers and llama.cpp's converter can
 * read an orchard checkpoint. The model owns its parameters in one arena; a
 * forward pass builds its graph in the caller's orc_ctx, so the same code
 * trains (with autograd) and infers (no-grad, with a KV cache). */
#ifndef ORCHARD_LLM_H
#define ORCHARD_LLM_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_llm_config {
    int64_t hidden_size;             /* D */
    int64_t num_hidden_layers;       /* L */
    int64_t num_attention_heads;     /* Hq */
    int64_t num_key_value_heads;     /* Hkv (divides Hq) */
    int64_t head_dim;                /* D / Hq unless given */
    int64_t intermediate_size;       /* F */
    int64_t vocab_size;              /* V */
    int64_t max_position_embeddings; /* context length */
    double rope_theta;               /* 500000 by default (AFM) */
    double rms_norm_eps;             /* 1e-5 */
    bool tie_word_embeddings;        /* true by default (AFM) */
    bool qk_norm;                    /* RMSNorm on each head's q and k before RoPE */
    int64_t bos_token_id, eos_token_id; /* -1 when absent */
    /* Mixture of experts (docs/moe.md); num_experts 0 = every FFN dense. */
    int64_t num_experts;             /* E */
    int64_t moe_every;               /* layer l is MoE when (l + 1) % moe_every == 0; default 1 */
    int moe_router;                  /* orc_moe_router: 0 token choice ("top2"), 1 expert choice */
    int64_t moe_top_k;               /* token choice: experts per token (2) */
    double capacity_factor;          /* 2 */
    double router_aux_loss_coef;     /* load-balance loss weight (0.01; token choice only) */
    double router_z_loss_coef;       /* router z-loss weight (0.001) */
    int64_t moe_group_size;          /* tokens per routing group; 0 = all tokens of a forward */
    int64_t moe_intermediate_size;   /* Fe, each expert's FFN width; default intermediate_size */
} orc_llm_config;

/* AFM defaults with every size unset (0): fill the sizes, then validate. */
void orc_llm_config_default(orc_llm_config *cfg);
/* "tiny" (dim 288, 6 layers, 6 heads, FFN 768, vocab 4096, ctx 256),
 * "small" (dim 512, 8 layers, 8 heads, 4 KV heads, FFN 1408, vocab 8192, ctx 512),
 * "base" (dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000, ctx 1024). */
orc_status orc_llm_config_preset(const char *name, orc_llm_config *cfg, orc_error *err);
/* Sizes positive, heads divide, head_dim even; the message names the key. */
orc_status orc_llm_config_validate(const orc_llm_config *cfg, orc_error *err);
/* config.json in the Hugging Face Llama layout (architectures, model_type
 * "llama", the keys above). Unknown keys are ignored; a wrong type or a
 * missing size is an error naming the file and the key. Atomic write. */
orc_status orc_llm_config_load(const char *path, orc_llm_config *cfg, orc_error *err);
orc_status orc_llm_config_save(const char *path, const orc_llm_config *cfg, orc_error *err);
/* The same from an already parsed jansson object (json_t *), e.g. a config
 * embedded in a training recipe; path is only used in messages. */
orc_status orc_llm_config_from_json(void *json_obj, const char *path, orc_llm_config *cfg, orc_error *err);
int64_t orc_llm_config_num_params(const orc_llm_config *cfg);
/* Parameters one token uses: num_params less the experts it does not visit
 * (token choice: E - top_k of them; expert choice: E - capacity_factor on
 * average). Equal to num_params for a dense model. */
int64_t orc_llm_config_active_params(const orc_llm_config *cfg);
/* True when layer l has a MoE FFN. */
bool orc_llm_layer_is_moe(const orc_llm_config *cfg, int64_t l);

/* One block's parameters. q_norm/k_norm are NULL unless cfg.qk_norm. */
typedef struct orc_llm_layer {
    orc_tensor *attn_norm;              /* [D]                input_layernorm */
    orc_tensor *wq, *wk, *wv, *wo;      /* [Hq*hd, D], [Hkv*hd, D] x2, [D, Hq*hd] */
    orc_tensor *q_norm, *k_norm;        /* [hd] */
    orc_tensor *ffn_norm;               /* [D]                post_attention_layernorm */
    orc_tensor *w_gate, *w_up, *w_down; /* [F, D], [F, D], [D, F]; NULL in a MoE layer */
    struct orc_moe_layer *moe;          /* router and experts (orchard/moe.h); NULL in a dense layer */
} orc_llm_layer;

typedef struct orc_llm {
    orc_llm_config cfg;
    orc_arena *arena;        /* owns every parameter and its gradient */
    orc_tensor *embed;       /* [V, D]  model.embed_tokens.weight */
    orc_llm_layer *layers;   /* [L] */
    orc_tensor *norm;        /* [D]     model.norm.weight */
    orc_tensor *lm_head;     /* [V, D]  lm_head.weight; == embed when tied */
    int n_params;            /* every distinct parameter tensor, in a fixed order */
    orc_tensor **params;
    /* The weighted router losses of the last orc_llm_hidden that recorded a
     * gradient (sum over MoE layers of router_aux_loss_coef * balance +
     * router_z_loss_coef * z), a scalar in that context's arena; NULL for a
     * dense model or in no-grad mode. A trainer adds it to the loss. */
    orc_tensor *moe_aux;
    /* The active LoRA adapters (orchard/lora.h: orc_llm_set_adapters), added
     * to the projections they target; NULL: the base alone. Not owned. */
    const struct orc_lora_stack *lora;
} orc_llm;

/* Allocate a model (weights zero, gradients zero). With_grad false allocates
 * no gradient buffers (inference, frozen bases). */
orc_llm *orc_llm_create(const orc_llm_config *cfg, bool with_grad, orc_error *err);
/* Deterministic initialisation from a seed: N(0, 0.02) for projections and
 * embeddings, the residual output projections (wo, w_down) scaled by
 * 1/sqrt(2L), norms at 1. */
void orc_llm_init_weights(orc_llm *m, uint64_t seed);
void orc_llm_free(orc_llm *m);
/* Zero the routing statistics every MoE layer sums over its forwards. */
void orc_llm_moe_stats_reset(orc_llm *m);
/* Parameter by its Hugging Face name, or NULL. */
orc_tensor *orc_llm_param(const orc_llm *m, const char *name);

/* DIR/config.json + DIR/model.safetensors (F32, F16 or BF16 tensors). Every
 * expected tensor must be present with its shape; an error names the file,
 * the tensor and both shapes. */
orc_llm *orc_llm_load(const char *dir, bool with_grad, orc_error *err);
/* Writes DIR/config.json and DIR/model.safetensors atomically (creates DIR). */
orc_status orc_llm_save(const orc_llm *m, const char *dir, orc_error *err);

/* Key/value cache for incremental decoding: per layer [B, max_seq, Hkv, hd]
 * for k and v; len is the number of positions filled (the same for every
 * sequence of the batch). */
typedef struct orc_llm_cache {
    int64_t batch, max_seq, len;
    int64_t n_layers, n_kv_heads, head_dim;
    float **k, **v; /* [n_layers] each */
} orc_llm_cache;

orc_llm_cache *orc_llm_cache_new(const orc_llm_config *cfg, int64_t batch, int64_t max_seq, orc_error *err);
void orc_llm_cache_free(orc_llm_cache *c);
void orc_llm_cache_clear(orc_llm_cache *c);

/* Final hidden states (after the last norm), [B, T, D]. ids int32 [B, T].
 * With a cache: the tokens sit at positions cache->len .. cache->len+T-1,
 * their keys and values are appended, and cache->len advances by T (only
 * valid in no-grad mode). Without a cache positions start at 0. */
orc_tensor *orc_llm_hidden(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_llm_cache *cache);
/* Final hidden states [B, S, D] of B continuations ids int32 [B, S] of one
 * shared prefix int32 [1, P]: what orc_llm_hidden gives at positions P ..
 * P+S-1 of each row prefix + ids[b], with the prefix computed once instead
 * of B times (its keys and values are shared by the rows). Works with
 * gradients (to score or train on many samples of one prompt). In a MoE
 * model m->moe_aux covers the prefix's tokens once and the rows'. */
orc_tensor *orc_llm_hidden_prefixed(orc_ctx *ctx, orc_llm *m, orc_tensor *prefix, orc_tensor *ids);
/* Logits [B, T, V] = hidden @ lm_head^T. */
orc_tensor *orc_llm_forward(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_llm_cache *cache);
/* Mean next-token cross-entropy of the logits for ids against targets
 * (int32 [B, T]; ignore_index -100 skips a position, e.g. prompt tokens in
 * SFT). A scalar. */
orc_tensor *orc_llm_loss(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *targets);

#define ORC_IGNORE_INDEX (-100)

/* ---- pieces shared by other forwards of the same architecture (the
 * quantized LM) so they differ only in how they project ---------------------- */

/* Check ids (int32 [B, T]) against the config and the cache (batch, room,
 * max_position_embeddings) and return the positions int32 [T] they take:
 * cache->len .. cache->len+T-1, or from 0 without a cache. `who` names the
 * caller in messages. */
orc_tensor *orc_llm_positions(orc_ctx *ctx, const orc_llm_config *cfg, orc_tensor *ids, const orc_llm_cache *cache,
                              const char *who);
/* One block's attention after the q, k, v projections ([B, T, H*hd] each):
 * optional QK-norm (q_norm, k_norm may be NULL), RoPE at pos, the layer's
 * cache append, causal GQA attention. Returns [B, T, Hq*hd], ready for the
 * output projection. */
orc_tensor *orc_llm_attend(orc_ctx *ctx, const orc_llm_config *cfg, int64_t layer, orc_tensor *q, orc_tensor *k,
                           orc_tensor *v, orc_tensor *q_norm, orc_tensor *k_norm, orc_tensor *pos,
                           orc_llm_cache *cache);
/* Layer `layer`'s MoE FFN on x [.., D] (the layer must have one): the router
 * settings of m's config, and the weighted router losses added into
 * m->moe_aux. Shared by the forward and the tensor-parallel forward. */
orc_tensor *orc_llm_moe_ffn(orc_ctx *ctx, orc_llm *m, int64_t layer, orc_tensor *x);

#ifdef __cplusplus
}
#endif
#endif
