/* Folding a LoRA adapter into its base model and writing it as llama.cpp's
 * GGUF LoRA adapter (see orchard/lora.h). The merge computes each element of
 * B A in double precision, row by row in parallel (each element is written
 * by one thread in a fixed order, so any thread count gives the same bits).
 * The GGUF layout follows llama.cpp's convert_lora_to_gguf.py and
 * llama_adapter_lora_init: the PEFT tensors keep their row-major shapes
 * (A [r, in] is ggml ne [in, r], B [out, r] is ne [r, out]) under the base
 * tensor's GGUF name plus ".lora_a" / ".lora_b", and since the converter
 * permutes q/k rows for llama.cpp's RoPE, B of q and k gets the same row
 * permutation (A is untouched: the permutation acts on output rows). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/gguf.h"
#include "orchard/llm_gguf.h"
#include "orchard/lora.h"

static orc_tensor *base_weight(orc_llm_layer *y, int t) {
    switch (t) {
    case ORC_LORA_Q: return y->wq;
    case ORC_LORA_K: return y->wk;
    case ORC_LORA_V: return y->wv;
    case ORC_LORA_O: return y->wo;
    case ORC_LORA_GATE: return y->w_gate;
    case ORC_LORA_UP: return y->w_up;
    default: return y->w_down;
    }
}

orc_status orc_lora_merge(orc_llm *m, const orc_lora *a, float weight, orc_error *err) {
    orc_status st = orc_lora_check_fits(a, &m->cfg, err);
    if (st != ORC_OK) return st;
    const double s = (double)weight * (double)a->scale;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int t = 0; t < ORC_LORA_N_TARGETS; t++) {
            const int64_t k = l * ORC_LORA_N_TARGETS + t;
            if (!a->a[k]) continue;
            orc_tensor *w = base_weight(&m->layers[l], t);
            const int64_t out = w->shape[0], in = w->shape[1], r = a->a[k]->shape[0];
            const float *A = orc_f32(a->a[k]), *B = orc_f32(a->b[k]);
            float *W = orc_f32(w);
#pragma omp parallel for schedule(static) if (out * in * r > 65536)
            for (int64_t o = 0; o < out; o++)
                for (int64_t i = 0; i < in; i++) {
                    double acc = 0;
                    for (int64_t j = 0; j < r; j++) acc += (double)B[o * r + j] * (double)A[j * in + i];
                    W[o * in + i] = (float)((double)W[o * in + i] + s * acc);
                }
        }
    return ORC_OK;
}

/* llama.cpp's name of target t's base tensor in block l. */
static const char *gguf_base_name(int64_t l, int t, char *buf, size_t n) {
    static const char *const names[ORC_LORA_N_TARGETS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                          "ffn_gate", "ffn_up", "ffn_down"};
    snprintf(buf, n, "blk.%lld.%s.weight", (long long)l, names[t]);
    return buf;
}

orc_status orc_lora_export_gguf(const orc_lora *a, const char *path, const char *name, orc_error *err) {
    const orc_llm_config *c = &a->base;
    orc_gguf_writer *w = orc_gguf_writer_new(err);
    if (!w) return err && err->code != ORC_OK ? err->code : ORC_ENOMEM;
    /* llama.cpp scales by alpha / rank; an rslora adapter's alpha / sqrt(r)
     * is the same scale with alpha * sqrt(r). */
    const double alpha = a->cfg.rslora ? a->cfg.alpha * sqrt((double)a->cfg.rank) : a->cfg.alpha;
    orc_status st = orc_gguf_add_str(w, "general.architecture", "llama", err);
    if (st == ORC_OK) st = orc_gguf_add_str(w, "general.type", "adapter", err);
    if (st == ORC_OK) st = orc_gguf_add_str(w, "general.name", name ? name : "orchard-lora", err);
    if (st == ORC_OK && a->cfg.base_model[0])
        st = orc_gguf_add_str(w, "general.base_model.0.name", a->cfg.base_model, err);
    if (st == ORC_OK) st = orc_gguf_add_str(w, "adapter.type", "lora", err);
    if (st == ORC_OK) st = orc_gguf_add_f32(w, "adapter.lora.alpha", (float)alpha, err);
    const int64_t n = c->num_hidden_layers * ORC_LORA_N_TARGETS;
    float **perm = calloc((size_t)n, sizeof *perm); /* permuted B copies; alive until the write */
    if (!perm && st == ORC_OK) st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    char tname[96], base[80];
    for (int64_t k = 0; k < n && st == ORC_OK; k++) {
        if (!a->a[k]) continue;
        const int64_t l = k / ORC_LORA_N_TARGETS;
        const int t = (int)(k % ORC_LORA_N_TARGETS);
        const orc_tensor *A = a->a[k], *B = a->b[k];
        const float *bdata = orc_f32(B);
        if (t == ORC_LORA_Q || t == ORC_LORA_K) {
            perm[k] = malloc(sizeof(float) * (size_t)B->numel);
            if (!perm[k]) {
                st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
                break;
            }
            const int64_t heads = t == ORC_LORA_Q ? c->num_attention_heads : c->num_key_value_heads;
            orc_gguf_permute_qk(perm[k], bdata, heads, c->head_dim, B->shape[1], true);
            bdata = perm[k];
        }
        gguf_base_name(l, t, base, sizeof base);
        snprintf(tname, sizeof tname, "%s.lora_a", base);
        st = orc_gguf_add_tensor_f32(w, tname, ORC_GGML_F32, 2, A->shape, orc_f32(A), err);
        snprintf(tname, sizeof tname, "%s.lora_b", base);
        if (st == ORC_OK) st = orc_gguf_add_tensor_f32(w, tname, ORC_GGML_F32, 2, B->shape, bdata, err);
    }
    if (st == ORC_OK) st = orc_gguf_write(w, path, err);
    for (int64_t k = 0; perm && k < n; k++) free(perm[k]);
    free(perm);
    orc_gguf_writer_free(w);
    return st;
}
