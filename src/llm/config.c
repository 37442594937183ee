/* The LM configuration: defaults, presets, validation and config.json in the
 * Hugging Face Llama layout (see orchard/llm.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "orchard/fileio.h"
#include "orchard/llm.h"
#include "orchard/moe.h"

void orc_llm_config_default(orc_llm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->rope_theta = 500000.0;
    cfg->rms_norm_eps = 1e-5;
    cfg->tie_word_embeddings = true;
    cfg->qk_norm = false;
    cfg->bos_token_id = -1;
    cfg->eos_token_id = -1;
    cfg->moe_every = 1;
    cfg->moe_router = ORC_MOE_TOKEN_CHOICE;
    cfg->moe_top_k = 2;
    cfg->capacity_factor = 2.0;
    cfg->router_aux_loss_coef = 0.01;
    cfg->router_z_loss_coef = 0.001;
}

typedef struct preset {
    const char *name;
    int64_t dim, layers, heads, kv_heads, ffn, vocab, ctx;
} preset;

static const preset PRESETS[] = {
    {"tiny", 288, 6, 6, 6, 768, 4096, 256},
    {"small", 512, 8, 8, 4, 1408, 8192, 512},
    {"base", 768, 12, 12, 12, 2048, 32000, 1024},
};

orc_status orc_llm_config_preset(const char *name, orc_llm_config *cfg, orc_error *err) {
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        const preset *p = &PRESETS[i];
        if (strcmp(p->name, name) != 0) continue;
        orc_llm_config_default(cfg);
        cfg->hidden_size = p->dim;
        cfg->num_hidden_layers = p->layers;
        cfg->num_attention_heads = p->heads;
        cfg->num_key_value_heads = p->kv_heads;
        cfg->head_dim = p->dim / p->heads;
        cfg->intermediate_size = p->ffn;
        cfg->vocab_size = p->vocab;
        cfg->max_position_embeddings = p->ctx;
        return ORC_OK;
    }
    return orc_error_set(err, ORC_EINVAL, "model preset '%s' is unknown (tiny, small, base)", name);
}

/* The MoE keys, checked only when num_experts > 0. */
static orc_status moe_validate(const orc_llm_config *c, orc_error *err) {
    if (c->num_experts < 0 || c->num_experts > 4096)
        return orc_error_set(err, ORC_EINVAL, "model config: num_experts = %lld must be in [0, 4096]",
                             (long long)c->num_experts);
    if (c->num_experts == 0) return ORC_OK;
    if (c->moe_every < 1 || c->moe_every > c->num_hidden_layers)
        return orc_error_set(err, ORC_EINVAL, "model config: moe_every = %lld must be in [1, num_hidden_layers = %lld]",
                             (long long)c->moe_every, (long long)c->num_hidden_layers);
    if (c->moe_router != ORC_MOE_TOKEN_CHOICE && c->moe_router != ORC_MOE_EXPERT_CHOICE)
        return orc_error_set(err, ORC_EINVAL, "model config: router must be \"token_choice\" or \"expert_choice\"");
    if (c->moe_router == ORC_MOE_TOKEN_CHOICE && (c->moe_top_k < 1 || c->moe_top_k > c->num_experts))
        return orc_error_set(err, ORC_EINVAL, "model config: moe_top_k = %lld must be in [1, num_experts = %lld]",
                             (long long)c->moe_top_k, (long long)c->num_experts);
    if (!(c->capacity_factor > 0) || c->capacity_factor > 1e6)
        return orc_error_set(err, ORC_EINVAL, "model config: capacity_factor = %g must be in (0, 1e6]",
                             c->capacity_factor);
    if (!(c->router_aux_loss_coef >= 0) || !(c->router_z_loss_coef >= 0))
        return orc_error_set(err, ORC_EINVAL, "model config: router_aux_loss_coef and router_z_loss_coef must be >= 0");
    if (c->moe_group_size < 0)
        return orc_error_set(err, ORC_EINVAL, "model config: moe_group_size = %lld must be >= 0 (0 = whole batch)",
                             (long long)c->moe_group_size);
    if (c->moe_intermediate_size < 0 || c->moe_intermediate_size > (int64_t)1 << 30)
        return orc_error_set(err, ORC_EINVAL, "model config: moe_intermediate_size = %lld must be a positive size",
                             (long long)c->moe_intermediate_size);
    return ORC_OK;
}

orc_status orc_llm_config_validate(const orc_llm_config *c, orc_error *err) {
    const struct { const char *key; int64_t v; } sizes[] = {
        {"hidden_size", c->hidden_size},           {"num_hidden_layers", c->num_hidden_layers},
        {"num_attention_heads", c->num_attention_heads}, {"num_key_value_heads", c->num_key_value_heads},
        {"head_dim", c->head_dim},                 {"intermediate_size", c->intermediate_size},
        {"vocab_size", c->vocab_size},             {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0 || sizes[i].v > (int64_t)1 << 30)
            return orc_error_set(err, ORC_EINVAL, "model config: %s = %lld must be a positive size", sizes[i].key,
                                 (long long)sizes[i].v);
    if (c->num_attention_heads % c->num_key_value_heads)
        return orc_error_set(err, ORC_EINVAL,
                             "model config: num_attention_heads = %lld is not a multiple of num_key_value_heads = %lld",
                             (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
    if (c->head_dim % 2)
        return orc_error_set(err, ORC_EINVAL, "model config: head_dim = %lld must be even for RoPE",
                             (long long)c->head_dim);
    if (!(c->rope_theta > 0))
        return orc_error_set(err, ORC_EINVAL, "model config: rope_theta must be positive");
    if (!(c->rms_norm_eps > 0) || c->rms_norm_eps > 1)
        return orc_error_set(err, ORC_EINVAL, "model config: rms_norm_eps must be in (0, 1]");
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
        return orc_error_set(err, ORC_EINVAL, "model config: bos/eos token id outside the vocabulary of %lld",
                             (long long)c->vocab_size);
    return moe_validate(c, err);
}

bool orc_llm_layer_is_moe(const orc_llm_config *c, int64_t l) {
    return c->num_experts > 0 && c->moe_every > 0 && (l + 1) % c->moe_every == 0;
}

/* Experts a token visits on average: top_k, or capacity_factor (expert choice). */
static double moe_visits(const orc_llm_config *c) {
    if (c->moe_router == ORC_MOE_EXPERT_CHOICE)
        return c->capacity_factor < (double)c->num_experts ? c->capacity_factor : (double)c->num_experts;
    return (double)c->moe_top_k;
}

static int64_t count_params(const orc_llm_config *c, bool active) {
    const int64_t D = c->hidden_size, hd = c->head_dim, F = c->intermediate_size;
    const int64_t Fe = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : F;
    int64_t attn = D * hd * (c->num_attention_heads * 2 + c->num_key_value_heads * 2);
    int64_t base = attn + 2 * D + (c->qk_norm ? 2 * hd : 0);
    int64_t n = c->vocab_size * D + D;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        n += base;
        if (!orc_llm_layer_is_moe(c, l)) n += 3 * D * F;
        else if (!active) n += c->num_experts * (3 * D * Fe + D);
        else n += (int64_t)(moe_visits(c) * (double)(3 * D * Fe) + 0.5) + c->num_experts * D;
    }
    if (!c->tie_word_embeddings) n += c->vocab_size * D;
    return n;
}

int64_t orc_llm_config_num_params(const orc_llm_config *c) { return count_params(c, false); }
int64_t orc_llm_config_active_params(const orc_llm_config *c) { return count_params(c, true); }

/* ---- config.json ---------------------------------------------------------- */

static orc_status get_int(json_t *root, const char *path, const char *key, int64_t *out, bool required,
                          orc_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return orc_error_set(err, ORC_EFORMAT, "%s: missing key \"%s\"", path, key);
        return ORC_OK;
    }
    if (!json_is_integer(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be an integer", path, key);
    *out = (int64_t)json_integer_value(v);
    return ORC_OK;
}

static orc_status get_real(json_t *root, const char *path, const char *key, double *out, orc_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return ORC_OK;
    if (!json_is_number(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be a number", path, key);
    *out = json_number_value(v);
    return ORC_OK;
}

static orc_status get_bool(json_t *root, const char *path, const char *key, bool *out, orc_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return ORC_OK;
    if (!json_is_boolean(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return ORC_OK;
}

/* Fill cfg from an already parsed JSON object (also used for configs
 * embedded in training recipes). */
orc_status orc_llm_config_from_json(void *json_obj, const char *path, orc_llm_config *cfg, orc_error *err) {
    json_t *root = json_obj;
    if (!json_is_object(root)) return orc_error_set(err, ORC_EFORMAT, "%s: the config must be a JSON object", path);
    orc_llm_config_default(cfg);
    orc_status st = ORC_OK;
    int64_t n = 0;
    if ((st = get_int(root, path, "hidden_size", &cfg->hidden_size, true, err))) return st;
    if ((st = get_int(root, path, "num_hidden_layers", &cfg->num_hidden_layers, true, err))) return st;
    if ((st = get_int(root, path, "num_attention_heads", &cfg->num_attention_heads, true, err))) return st;
    cfg->num_key_value_heads = cfg->num_attention_heads;
    if ((st = get_int(root, path, "num_key_value_heads", &cfg->num_key_value_heads, false, err))) return st;
    if ((st = get_int(root, path, "intermediate_size", &cfg->intermediate_size, true, err))) return st;
    if ((st = get_int(root, path, "vocab_size", &cfg->vocab_size, true, err))) return st;
    cfg->max_position_embeddings = 2048;
    if ((st = get_int(root, path, "max_position_embeddings", &cfg->max_position_embeddings, false, err))) return st;
    cfg->head_dim = cfg->num_attention_heads > 0 ? cfg->hidden_size / cfg->num_attention_heads : 0;
    if ((st = get_int(root, path, "head_dim", &cfg->head_dim, false, err))) return st;
    if ((st = get_real(root, path, "rope_theta", &cfg->rope_theta, err))) return st;
    if ((st = get_real(root, path, "rms_norm_eps", &cfg->rms_norm_eps, err))) return st;
    if ((st = get_bool(root, path, "tie_word_embeddings", &cfg->tie_word_embeddings, err))) return st;
    if ((st = get_bool(root, path, "qk_norm", &cfg->qk_norm, err))) return st;
    n = -1;
    if ((st = get_int(root, path, "bos_token_id", &n, false, err))) return st;
    cfg->bos_token_id = n;
    n = -1;
    if ((st = get_int(root, path, "eos_token_id", &n, false, err))) return st;
    cfg->eos_token_id = n;
    if ((st = get_int(root, path, "num_experts", &cfg->num_experts, false, err))) return st;
    if ((st = get_int(root, path, "moe_every", &cfg->moe_every, false, err))) return st;
    if ((st = get_int(root, path, "moe_top_k", &cfg->moe_top_k, false, err))) return st;
    if ((st = get_real(root, path, "capacity_factor", &cfg->capacity_factor, err))) return st;
    if ((st = get_real(root, path, "router_aux_loss_coef", &cfg->router_aux_loss_coef, err))) return st;
    if ((st = get_real(root, path, "router_z_loss_coef", &cfg->router_z_loss_coef, err))) return st;
    if ((st = get_int(root, path, "moe_group_size", &cfg->moe_group_size, false, err))) return st;
    if ((st = get_int(root, path, "moe_intermediate_size", &cfg->moe_intermediate_size, false, err))) return st;
    json_t *rt = json_object_get(root, "router");
    if (rt && !json_is_null(rt)) {
        orc_moe_router r;
        if (!json_is_string(rt) || !orc_moe_router_parse(json_string_value(rt), &r))
            return orc_error_set(err, ORC_EFORMAT, "%s: \"router\" must be \"top2\", \"token_choice\" or "
                                 "\"expert_choice\"", path);
        cfg->moe_router = (int)r;
    }
    if (cfg->num_experts > 0 && cfg->moe_intermediate_size == 0) cfg->moe_intermediate_size = cfg->intermediate_size;
    json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: hidden_act must be \"silu\" (SwiGLU)", path);
    orc_error local = {0};
    if (orc_llm_config_validate(cfg, &local) != ORC_OK)
        return orc_error_set(err, local.code, "%s: %.400s", path, local.msg);
    return ORC_OK;
}

orc_status orc_llm_config_load(const char *path, orc_llm_config *cfg, orc_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return orc_error_set(err, ORC_EFORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    orc_status st = orc_llm_config_from_json(root, path, cfg, err);
    json_decref(root);
    return st;
}

orc_status orc_llm_config_save(const char *path, const orc_llm_config *c, orc_error *err) {
    json_t *root = json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b, s:b, s:s, s:b, "
                             "s:s, s:b, s:f}",
                             "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size",
                             (json_int_t)c->hidden_size, "num_hidden_layers", (json_int_t)c->num_hidden_layers,
                             "num_attention_heads", (json_int_t)c->num_attention_heads, "num_key_value_heads",
                             (json_int_t)c->num_key_value_heads, "head_dim", (json_int_t)c->head_dim,
                             "intermediate_size", (json_int_t)c->intermediate_size, "vocab_size",
                             (json_int_t)c->vocab_size, "max_position_embeddings",
                             (json_int_t)c->max_position_embeddings, "rope_theta", c->rope_theta, "rms_norm_eps",
                             c->rms_norm_eps, "tie_word_embeddings", c->tie_word_embeddings, "qk_norm", c->qk_norm,
                             "hidden_act", "silu", "attention_bias", 0, "torch_dtype", "float32", "mlp_bias", 0,
                             "initializer_range", 0.02);
    if (!root) return orc_error_set(err, ORC_ENOMEM, "%s: could not build the config JSON", path);
    if (c->bos_token_id >= 0) json_object_set_new(root, "bos_token_id", json_integer(c->bos_token_id));
    if (c->eos_token_id >= 0) json_object_set_new(root, "eos_token_id", json_integer(c->eos_token_id));
    if (c->num_experts > 0) { /* MoE keys only for MoE models, so dense configs stay plain Llama */
        json_object_set_new(root, "num_experts", json_integer(c->num_experts));
        json_object_set_new(root, "moe_every", json_integer(c->moe_every));
        json_object_set_new(root, "router", json_string(orc_moe_router_name((orc_moe_router)c->moe_router)));
        json_object_set_new(root, "moe_top_k", json_integer(c->moe_top_k));
        json_object_set_new(root, "capacity_factor", json_real(c->capacity_factor));
        json_object_set_new(root, "router_aux_loss_coef", json_real(c->router_aux_loss_coef));
        json_object_set_new(root, "router_z_loss_coef", json_real(c->router_z_loss_coef));
        json_object_set_new(root, "moe_group_size", json_integer(c->moe_group_size));
        json_object_set_new(root, "moe_intermediate_size",
                            json_integer(c->moe_intermediate_size > 0 ? c->moe_intermediate_size
                                                                      : c->intermediate_size));
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s: could not format the config JSON", path);
    orc_status st = orc_write_file_atomic(path, text, strlen(text), "model config", err);
    free(text);
    return st;
}
