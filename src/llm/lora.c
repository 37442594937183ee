/* LoRA adapters (see orchard/lora.h): the configuration and its command-line
 * spec, PEFT's adapter_config.json, creating and initialising A and B,
 * adapter_model.safetensors with PEFT's tensor names (strict shape checks
 * on load, so an adapter for another model is refused by name), the adapted
 * projection with the public ops (so autograd trains it), the stack of
 * active adapters a model carries, and the named set a server selects from.
 * Merging and the GGUF export live in lora_export.c. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/fileio.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"

static const char *const MODULES[ORC_LORA_N_TARGETS] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"};
static const char *const SHORT[ORC_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
/* The module's parent in the Llama names: self_attn for q..o, mlp for the rest. */
static const char *parent(int t) { return t <= ORC_LORA_O ? "self_attn" : "mlp"; }

const char *orc_lora_target_module(int t) { return t >= 0 && t < ORC_LORA_N_TARGETS ? MODULES[t] : NULL; }
const char *orc_lora_target_short(int t) { return t >= 0 && t < ORC_LORA_N_TARGETS ? SHORT[t] : NULL; }

int orc_lora_target_parse(const char *name) {
    for (int t = 0; t < ORC_LORA_N_TARGETS; t++)
        if (strcmp(name, MODULES[t]) == 0 || strcmp(name, SHORT[t]) == 0) return t;
    return -1;
}

/* ---- configuration ------------------------------------------------------------- */

void orc_lora_config_default(orc_lora_config *c) {
    memset(c, 0, sizeof *c);
    c->rank = 16;
    c->alpha = 32.0;
    c->dropout = 0.0;
    c->targets = ORC_LORA_ALL_TARGETS;
}

float orc_lora_config_scale(const orc_lora_config *c) {
    return (float)(c->rslora ? c->alpha / sqrt((double)c->rank) : c->alpha / (double)c->rank);
}

orc_status orc_lora_config_check(const orc_lora_config *c, const char *label, orc_error *err) {
    if (c->rank < 1) return orc_error_set(err, ORC_ERANGE, "%s: lora rank = %d must be >= 1", label, c->rank);
    if (!(isfinite(c->alpha) && c->alpha > 0))
        return orc_error_set(err, ORC_ERANGE, "%s: lora alpha = %g must be positive", label, c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return orc_error_set(err, ORC_ERANGE, "%s: lora dropout = %g must be in [0, 1)", label, c->dropout);
    if ((c->targets & ORC_LORA_ALL_TARGETS) == 0 || (c->targets & ~ORC_LORA_ALL_TARGETS))
        return orc_error_set(err, ORC_EINVAL, "%s: lora targets: choose some of q, k, v, o, gate, up, down", label);
    return ORC_OK;
}

static bool parse_number(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

orc_status orc_lora_config_parse(const char *spec, orc_lora_config *c, orc_error *err) {
    if (!spec) return orc_error_set(err, ORC_EINVAL, "lora: empty spec");
    char *copy = strdup(spec);
    if (!copy) return orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
    orc_status st = ORC_OK;
    bool in_targets = false;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && st == ORC_OK; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            int t = orc_lora_target_parse(tok);
            if (!in_targets)
                st = orc_error_set(err, ORC_EINVAL, "lora: '%s' is not KEY=VALUE (keys: rank, alpha, targets, "
                                   "dropout)", tok);
            else if (t < 0)
                st = orc_error_set(err, ORC_EINVAL, "lora: unknown target '%s' (valid: q, k, v, o, gate, up, down "
                                   "or q_proj, ..., down_proj)", tok);
            else
                c->targets |= 1u << t;
            continue;
        }
        *eq = 0;
        const char *key = tok, *val = eq + 1;
        double v = 0;
        in_targets = false;
        if (strcmp(key, "targets") == 0 || strcmp(key, "target_modules") == 0) {
            int t = orc_lora_target_parse(val);
            if (t < 0) {
                st = orc_error_set(err, ORC_EINVAL, "lora: unknown target '%s' (valid: q, k, v, o, gate, up, down "
                                   "or q_proj, ..., down_proj)", val);
            } else {
                c->targets = 1u << t;
                in_targets = true;
            }
        } else if (!parse_number(val, &v)) {
            st = orc_error_set(err, ORC_EINVAL, "lora: %s = '%s' is not a number", key, val);
        } else if (strcmp(key, "rank") == 0 || strcmp(key, "r") == 0) {
            if (v != floor(v) || v < 1 || v > 1 << 20)
                st = orc_error_set(err, ORC_ERANGE, "lora: rank = %s must be a positive integer", val);
            c->rank = (int)v;
        } else if (strcmp(key, "alpha") == 0 || strcmp(key, "lora_alpha") == 0) {
            c->alpha = v;
        } else if (strcmp(key, "dropout") == 0 || strcmp(key, "lora_dropout") == 0) {
            c->dropout = v;
        } else {
            st = orc_error_set(err, ORC_EINVAL, "lora: unknown key '%s' (keys: rank, alpha, targets, dropout)", key);
        }
    }
    free(copy);
    if (st == ORC_OK) st = orc_lora_config_check(c, "--lora", err);
    return st;
}

/* The base projection (out, in) of target t in layer l; false when the
 * layer has none (the FFN of a MoE layer). */
static bool target_shape(const orc_llm_config *c, int64_t l, int t, int64_t *out, int64_t *in) {
    const int64_t D = c->hidden_size, q = c->num_attention_heads * c->head_dim;
    const int64_t kv = c->num_key_value_heads * c->head_dim, F = c->intermediate_size;
    if (t >= ORC_LORA_GATE && orc_llm_layer_is_moe(c, l)) return false;
    switch (t) {
    case ORC_LORA_Q: *out = q, *in = D; break;
    case ORC_LORA_K:
    case ORC_LORA_V: *out = kv, *in = D; break;
    case ORC_LORA_O: *out = D, *in = q; break;
    case ORC_LORA_GATE:
    case ORC_LORA_UP: *out = F, *in = D; break;
    default: *out = D, *in = F; break;
    }
    return true;
}

const char *orc_lora_tensor_name(int64_t layer, int t, bool is_b, char *buf, size_t n) {
    snprintf(buf, n, "base_model.model.model.layers.%lld.%s.%s.lora_%c.weight", (long long)layer, parent(t),
             MODULES[t], is_b ? 'B' : 'A');
    return buf;
}

/* ---- adapter_config.json ----------------------------------------------------------- */

static void join(char *out, size_t cap, const char *dir, const char *file) { snprintf(out, cap, "%s/%s", dir, file); }

static orc_status save_config(const orc_lora *a, const char *dir, orc_error *err) {
    const orc_lora_config *c = &a->cfg;
    json_t *tm = json_array();
    for (int t = 0; t < ORC_LORA_N_TARGETS; t++)
        if (c->targets & (1u << t)) json_array_append_new(tm, json_string(MODULES[t]));
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(j, "r", json_integer(c->rank));
    /* PEFT writes lora_alpha as an int when it is one; keep that so tools that
     * compare configs see the same value. */
    bool whole = c->alpha == floor(c->alpha) && fabs(c->alpha) < 1e15;
    json_object_set_new(j, "lora_alpha", whole ? json_integer((json_int_t)c->alpha) : json_real(c->alpha));
    json_object_set_new(j, "lora_dropout", json_real(c->dropout));
    json_object_set_new(j, "target_modules", tm);
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "fan_in_fan_out", json_false());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "use_rslora", json_boolean(c->rslora));
    json_object_set_new(j, "use_dora", json_false());
    json_object_set_new(j, "modules_to_save", json_null());
    json_object_set_new(j, "layers_to_transform", json_null());
    json_object_set_new(j, "base_model_name_or_path", c->base_model[0] ? json_string(c->base_model) : json_null());
    json_object_set_new(j, "revision", json_null());
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s: could not format adapter_config.json", dir);
    size_t len = strlen(text);
    text[len] = '\n'; /* the NUL is not written */
    char path[4200];
    join(path, sizeof path, dir, "adapter_config.json");
    orc_status st = orc_write_file_atomic(path, text, len + 1, "lora", err);
    free(text);
    return st;
}

orc_status orc_lora_config_load(const char *dir, orc_lora_config *c, orc_error *err) {
    char path[4200];
    join(path, sizeof path, dir, "adapter_config.json");
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return orc_error_set(err, ORC_EIO, "%s: not a LoRA adapter (adapter_config.json is missing)", dir);
        return orc_error_set(err, ORC_EFORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    }
    orc_lora_config_default(c);
    c->targets = 0;
    orc_status st = ORC_OK;
    json_t *v = json_object_get(j, "peft_type");
    if (!json_is_string(v) || strcmp(json_string_value(v), "LORA") != 0)
        st = orc_error_set(err, ORC_EFORMAT, "%s: \"peft_type\" must be \"LORA\"", path);
    v = json_object_get(j, "r");
    if (st == ORC_OK && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 20))
        st = orc_error_set(err, ORC_EFORMAT, "%s: \"r\" must be a positive integer", path);
    if (st == ORC_OK) c->rank = (int)json_integer_value(v);
    v = json_object_get(j, "lora_alpha");
    if (st == ORC_OK && !json_is_number(v))
        st = orc_error_set(err, ORC_EFORMAT, "%s: \"lora_alpha\" must be a number", path);
    if (st == ORC_OK) c->alpha = json_number_value(v);
    v = json_object_get(j, "lora_dropout");
    if (st == ORC_OK && v && !json_is_null(v)) {
        if (!json_is_number(v)) st = orc_error_set(err, ORC_EFORMAT, "%s: \"lora_dropout\" must be a number", path);
        else c->dropout = json_number_value(v);
    }
    v = json_object_get(j, "target_modules");
    if (st == ORC_OK && !json_is_array(v))
        st = orc_error_set(err, ORC_EUNSUPPORTED, "%s: \"target_modules\" must be a list of module names (a regular "
                           "expression is not supported)", path);
    for (size_t i = 0; st == ORC_OK && i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        int t = s ? orc_lora_target_parse(s) : -1;
        if (t < 0)
            st = orc_error_set(err, ORC_EINVAL, "%s: unknown target module '%s' (orchard adapts q_proj, k_proj, "
                               "v_proj, o_proj, gate_proj, up_proj, down_proj)", path, s ? s : "(not a string)");
        else
            c->targets |= 1u << t;
    }
    const struct { const char *key; bool want; } flags[] = {{"fan_in_fan_out", false}, {"use_dora", false}};
    for (size_t i = 0; st == ORC_OK && i < sizeof flags / sizeof flags[0]; i++) {
        v = json_object_get(j, flags[i].key);
        if (json_is_true(v) != flags[i].want && v && !json_is_null(v))
            st = orc_error_set(err, ORC_EUNSUPPORTED, "%s: \"%s\" = true is not supported", path, flags[i].key);
    }
    v = json_object_get(j, "use_rslora");
    if (st == ORC_OK && json_is_true(v)) c->rslora = true;
    v = json_object_get(j, "bias");
    if (st == ORC_OK && v && !json_is_null(v) && !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
        st = orc_error_set(err, ORC_EUNSUPPORTED, "%s: \"bias\" must be \"none\" (adapter biases are not supported)",
                           path);
    const char *none_keys[] = {"layers_to_transform", "modules_to_save", "rank_pattern", "alpha_pattern"};
    for (size_t i = 0; st == ORC_OK && i < sizeof none_keys / sizeof none_keys[0]; i++) {
        v = json_object_get(j, none_keys[i]);
        bool empty = !v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0) ||
                     (json_is_array(v) && json_array_size(v) == 0);
        if (!empty) st = orc_error_set(err, ORC_EUNSUPPORTED, "%s: \"%s\" is not supported", path, none_keys[i]);
    }
    v = json_object_get(j, "base_model_name_or_path");
    if (st == ORC_OK && json_is_string(v)) snprintf(c->base_model, sizeof c->base_model, "%s", json_string_value(v));
    json_decref(j);
    if (st == ORC_OK) st = orc_lora_config_check(c, path, err);
    return st;
}

/* ---- the adapter -------------------------------------------------------------------- */

orc_lora *orc_lora_create(const orc_llm_config *base, const orc_lora_config *c, bool with_grad, orc_error *err) {
    if (orc_lora_config_check(c, "lora", err) != ORC_OK) return NULL;
    const int64_t L = base->num_hidden_layers;
    /* The rank against every targeted projection first: nothing to free. */
    size_t floats = 0;
    for (int64_t l = 0; l < L; l++)
        for (int t = 0; t < ORC_LORA_N_TARGETS; t++) {
            int64_t out, in;
            if (!(c->targets & (1u << t)) || !target_shape(base, l, t, &out, &in)) continue;
            if (c->rank > (out < in ? out : in)) {
                orc_error_set(err, ORC_EINVAL, "lora: rank %d is larger than the layer: model.layers.%lld.%s.%s is "
                              "[%lld, %lld], so the rank can be at most %lld", c->rank, (long long)l, parent(t),
                              MODULES[t], (long long)out, (long long)in, (long long)(out < in ? out : in));
                return NULL;
            }
            floats += (size_t)c->rank * (size_t)(out + in);
        }
    orc_lora *a = calloc(1, sizeof *a);
    if (!a) {
        orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
        return NULL;
    }
    a->cfg = *c;
    a->base = *base;
    a->scale = orc_lora_config_scale(c);
    a->arena = orc_arena_create(floats * sizeof(float) * (with_grad ? 2 : 1) + ((size_t)1 << 20));
    a->a = calloc((size_t)(L * ORC_LORA_N_TARGETS), sizeof *a->a);
    a->b = calloc((size_t)(L * ORC_LORA_N_TARGETS), sizeof *a->b);
    a->params = calloc((size_t)(2 * L * ORC_LORA_N_TARGETS), sizeof *a->params);
    if (!a->arena || !a->a || !a->b || !a->params) {
        orc_error_set(err, ORC_ENOMEM, "lora: out of memory for %zu parameters", floats);
        orc_lora_free(a);
        return NULL;
    }
    char name[256];
    for (int64_t l = 0; l < L; l++)
        for (int t = 0; t < ORC_LORA_N_TARGETS; t++) {
            int64_t out, in;
            if (!(c->targets & (1u << t)) || !target_shape(base, l, t, &out, &in)) continue;
            for (int k = 0; k < 2; k++) {
                const int64_t *shape = k ? ORC_SHAPE(out, c->rank) : ORC_SHAPE(c->rank, in);
                orc_lora_tensor_name(l, t, k == 1, name, sizeof name);
                orc_tensor *p;
                if (with_grad) {
                    p = orc_param_new(a->arena, 2, shape, name, err);
                } else {
                    p = orc_tensor_zeros(a->arena, ORC_F32, 2, shape, err);
                    if (p) p->name = orc_arena_strdup(a->arena, name);
                }
                if (!p) {
                    orc_lora_free(a);
                    return NULL;
                }
                (k ? a->b : a->a)[l * ORC_LORA_N_TARGETS + t] = p;
                a->params[a->n_params++] = p;
            }
        }
    return a;
}

void orc_lora_init_weights(orc_lora *a, uint64_t seed) {
    orc_rng r;
    orc_rng_init(&r, seed);
    for (int64_t i = 0; i < a->base.num_hidden_layers * ORC_LORA_N_TARGETS; i++) {
        if (!a->a[i]) continue;
        /* kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in). */
        const float bound = 1.0f / sqrtf((float)a->a[i]->shape[1]);
        orc_rng_fill_uniform(&r, orc_f32(a->a[i]), a->a[i]->numel, -bound, bound);
        memset(orc_f32(a->b[i]), 0, sizeof(float) * (size_t)a->b[i]->numel);
    }
}

void orc_lora_free(orc_lora *a) {
    if (!a) return;
    if (a->arena) orc_arena_destroy(a->arena);
    free(a->a);
    free(a->b);
    free(a->params);
    free(a);
}

orc_status orc_lora_save(const orc_lora *a, const char *dir, const orc_lora_meta *meta, size_t n_meta,
                         orc_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create the directory: %s", dir, strerror(errno));
    orc_st_entry *e = calloc((size_t)(a->n_params ? a->n_params : 1), sizeof *e);
    orc_st_kv *kv = calloc(n_meta + 2, sizeof *kv);
    orc_status st = e && kv ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < a->n_params && st == ORC_OK; i++)
        st = orc_st_entry_from_tensor(&e[i], a->params[i]->name, a->params[i], ORC_ST_F32, err);
    if (st == ORC_OK) {
        kv[0] = (orc_st_kv){"format", "pt"};
        kv[1] = (orc_st_kv){"producer", "orchard"};
        for (size_t i = 0; i < n_meta; i++) kv[2 + i] = (orc_st_kv){meta[i].key, meta[i].value};
        char path[4200];
        join(path, sizeof path, dir, "adapter_model.safetensors");
        st = orc_st_write(path, e, (size_t)a->n_params, kv, n_meta + 2, err);
    }
    free(e);
    free(kv);
    if (st == ORC_OK) st = save_config(a, dir, err);
    return st;
}

static const char *shape_of(char *buf, size_t n, int ndim, const int64_t *shape) {
    return orc_shape_str(buf, n, ndim, shape);
}

orc_lora *orc_lora_load(const char *dir, const orc_llm_config *base, bool with_grad, orc_error *err) {
    orc_lora_config c;
    if (orc_lora_config_load(dir, &c, err) != ORC_OK) return NULL;
    orc_error local = {0};
    orc_lora *a = orc_lora_create(base, &c, with_grad, &local);
    if (!a) {
        orc_error_set(err, local.code, "%s: %s", dir, local.msg);
        return NULL;
    }
    char path[4200];
    join(path, sizeof path, dir, "adapter_model.safetensors");
    orc_st_file *f = orc_st_open(path, err);
    if (!f) {
        orc_lora_free(a);
        return NULL;
    }
    orc_status st = ORC_OK;
    /* Every tensor in the file must have a place in this model... */
    for (size_t i = 0; i < orc_st_count(f) && st == ORC_OK; i++) {
        const orc_st_tensor_info *ti = orc_st_info(f, i);
        const orc_tensor *dst = NULL;
        for (int k = 0; k < a->n_params && !dst; k++)
            if (strcmp(a->params[k]->name, ti->name) == 0) dst = a->params[k];
        char s1[96], s2[96];
        if (!dst)
            st = orc_error_set(err, ORC_ESHAPE, "%s: tensor %s %s has no place in this model (%lld layers, targets "
                               "from adapter_config.json): an adapter for another architecture?", path, ti->name,
                               shape_of(s1, sizeof s1, ti->ndim, ti->shape), (long long)base->num_hidden_layers);
        else if (ti->ndim != 2 || ti->shape[0] != dst->shape[0] || ti->shape[1] != dst->shape[1])
            st = orc_error_set(err, ORC_ESHAPE, "%s: tensor %s is %s but this model needs %s: an adapter for "
                               "another model size?", path, ti->name, shape_of(s1, sizeof s1, ti->ndim, ti->shape),
                               shape_of(s2, sizeof s2, dst->ndim, dst->shape));
    }
    /* ... and every place must be filled. */
    for (int k = 0; k < a->n_params && st == ORC_OK; k++) {
        if (!orc_st_find(f, a->params[k]->name))
            st = orc_error_set(err, ORC_EFORMAT, "%s: missing tensor %s (adapter_config.json targets it)", path,
                               a->params[k]->name);
        else
            st = orc_st_read_into(f, a->params[k]->name, a->params[k], err);
    }
    orc_st_close(f);
    if (st != ORC_OK) {
        orc_lora_free(a);
        return NULL;
    }
    return a;
}

/* ---- applying ------------------------------------------------------------------------ */

orc_tensor *orc_lora_linear(orc_ctx *ctx, orc_tensor *x, orc_tensor *w, orc_tensor *a, orc_tensor *b, float scale,
                            float dropout) {
    orc_tensor *y = orc_linear(ctx, x, w, NULL);
    if (!y) return NULL;
    orc_tensor *xa = dropout > 0 && ctx->training && !ctx->no_grad ? orc_dropout(ctx, x, dropout) : x;
    orc_tensor *d = orc_linear(ctx, orc_linear(ctx, xa, a, NULL), b, NULL);
    return orc_add(ctx, y, orc_scale(ctx, d, scale));
}

bool orc_lora_stack_equal(const orc_lora_stack *a, const orc_lora_stack *b) {
    const int na = a ? a->n : 0, nb = b ? b->n : 0;
    if (na != nb) return false;
    for (int i = 0; i < na; i++) /* weights compared as bits: the same floats go into the same ops */
        if (a->ad[i] != b->ad[i] || memcmp(&a->weight[i], &b->weight[i], sizeof(float)) != 0) return false;
    return true;
}

orc_tensor *orc_lora_project(orc_ctx *ctx, const orc_lora_stack *s, int64_t layer, int target, orc_tensor *x,
                             orc_tensor *y) {
    if (!s || !y) return y;
    for (int i = 0; i < s->n; i++) {
        const orc_lora *ad = s->ad[i];
        if (!ad || layer >= ad->base.num_hidden_layers) continue;
        const int64_t k = layer * ORC_LORA_N_TARGETS + target;
        if (!ad->a[k]) continue;
        const float p = (float)ad->cfg.dropout;
        orc_tensor *xa = p > 0 && ctx->training && !ctx->no_grad ? orc_dropout(ctx, x, p) : x;
        orc_tensor *d = orc_linear(ctx, orc_linear(ctx, xa, ad->a[k], NULL), ad->b[k], NULL);
        y = orc_add(ctx, y, orc_scale(ctx, d, ad->scale * s->weight[i]));
    }
    return y;
}

orc_status orc_lora_check_fits(const orc_lora *a, const orc_llm_config *c, orc_error *err) {
    if (a->base.num_hidden_layers != c->num_hidden_layers)
        return orc_error_set(err, ORC_ESHAPE, "lora: the adapter is for %lld layers but the model has %lld",
                             (long long)a->base.num_hidden_layers, (long long)c->num_hidden_layers);
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        for (int t = 0; t < ORC_LORA_N_TARGETS; t++) {
            const int64_t k = l * ORC_LORA_N_TARGETS + t;
            int64_t out, in;
            bool has = target_shape(c, l, t, &out, &in);
            if (!a->a[k]) continue;
            char name[256];
            if (!has)
                return orc_error_set(err, ORC_ESHAPE, "lora: %s has no projection to adapt in this model (a MoE "
                                     "layer)", orc_lora_tensor_name(l, t, false, name, sizeof name));
            if (a->a[k]->shape[1] != in || a->b[k]->shape[0] != out)
                return orc_error_set(err, ORC_ESHAPE, "lora: %s is [%lld, %lld] and its lora_B [%lld, %lld], but "
                                     "the model's projection is [%lld, %lld] (out, in)",
                                     orc_lora_tensor_name(l, t, false, name, sizeof name),
                                     (long long)a->a[k]->shape[0], (long long)a->a[k]->shape[1],
                                     (long long)a->b[k]->shape[0], (long long)a->b[k]->shape[1], (long long)out,
                                     (long long)in);
        }
    return ORC_OK;
}

orc_status orc_llm_set_adapters(orc_llm *m, const orc_lora_stack *s, orc_error *err) {
    if (s && (s->n < 0 || s->n > ORC_LORA_MAX_STACK))
        return orc_error_set(err, ORC_EINVAL, "lora: a stack holds 0 to %d adapters, not %d", ORC_LORA_MAX_STACK,
                             s->n);
    for (int i = 0; s && i < s->n; i++) {
        if (!s->ad[i]) return orc_error_set(err, ORC_EINVAL, "lora: stack entry %d is empty", i);
        orc_status st = orc_lora_check_fits(s->ad[i], &m->cfg, err);
        if (st != ORC_OK) return st;
    }
    m->lora = s && s->n > 0 ? s : NULL;
    return ORC_OK;
}

/* ---- named sets ---------------------------------------------------------------------- */

struct orc_lora_set {
    size_t n, cap;
    char **names;
    orc_lora **ads;
};

orc_lora_set *orc_lora_set_new(orc_error *err) {
    orc_lora_set *s = calloc(1, sizeof *s);
    if (!s) orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
    return s;
}

void orc_lora_set_free(orc_lora_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->names[i]);
        orc_lora_free(s->ads[i]);
    }
    free(s->names);
    free(s->ads);
    free(s);
}

size_t orc_lora_set_count(const orc_lora_set *s) { return s->n; }
const char *orc_lora_set_name(const orc_lora_set *s, size_t i) { return i < s->n ? s->names[i] : NULL; }
const orc_lora *orc_lora_set_at(const orc_lora_set *s, size_t i) { return i < s->n ? s->ads[i] : NULL; }

const orc_lora *orc_lora_set_get(const orc_lora_set *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) return s->ads[i];
    return NULL;
}

orc_status orc_lora_set_load(orc_lora_set *s, const char *name, const char *dir, const orc_llm_config *base,
                             orc_error *err) {
    if (!name || !name[0]) return orc_error_set(err, ORC_EINVAL, "lora: an adapter needs a name");
    if (orc_lora_set_get(s, name)) return orc_error_set(err, ORC_EINVAL, "lora: adapter '%s' is already loaded", name);
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        char **nn = realloc(s->names, cap * sizeof *nn);
        if (nn) s->names = nn;
        orc_lora **na = nn ? realloc(s->ads, cap * sizeof *na) : NULL;
        if (na) s->ads = na;
        if (!nn || !na) return orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
        s->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
    orc_lora *a = orc_lora_load(dir, base, false, err);
    if (!a) {
        free(copy);
        return err && err->code != ORC_OK ? err->code : ORC_EFORMAT;
    }
    s->names[s->n] = copy;
    s->ads[s->n++] = a;
    return ORC_OK;
}

/* Split "NAME[:WEIGHT]" at its last ':' when what follows is a number. */
static void split_weight(char *item, float *w) {
    *w = 1.0f;
    char *colon = strrchr(item, ':');
    double v;
    if (colon && parse_number(colon + 1, &v) && isfinite(v)) {
        *colon = 0;
        *w = (float)v;
    }
}

static orc_status select_or_load(orc_lora_set *s, const char *spec, const orc_llm_config *base, bool load,
                                 orc_lora_stack *out, orc_error *err) {
    memset(out, 0, sizeof *out);
    if (!spec || !spec[0]) return ORC_OK;
    char *copy = strdup(spec);
    if (!copy) return orc_error_set(err, ORC_ENOMEM, "lora: out of memory");
    orc_status st = ORC_OK;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && st == ORC_OK; item = strtok_r(NULL, ",", &save)) {
        float w;
        split_weight(item, &w);
        if (out->n == ORC_LORA_MAX_STACK) {
            st = orc_error_set(err, ORC_EINVAL, "lora: at most %d adapters at once", ORC_LORA_MAX_STACK);
            break;
        }
        if (load && !orc_lora_set_get(s, item)) st = orc_lora_set_load(s, item, item, base, err);
        const orc_lora *a = st == ORC_OK ? orc_lora_set_get(s, item) : NULL;
        if (st == ORC_OK && !a) {
            char names[256] = "";
            size_t n = 0;
            for (size_t i = 0; i < s->n && n < sizeof names; i++)
                n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", s->names[i]);
            st = orc_error_set(err, ORC_EINVAL, "lora: no adapter named '%s' (loaded: %s)", item,
                               s->n ? names : "none");
        }
        if (st == ORC_OK) {
            out->ad[out->n] = a;
            out->weight[out->n++] = w;
        }
    }
    free(copy);
    return st;
}

orc_status orc_lora_set_select(const orc_lora_set *s, const char *spec, orc_lora_stack *out, orc_error *err) {
    return select_or_load((orc_lora_set *)s, spec, NULL, false, out, err);
}

orc_status orc_lora_set_load_list(orc_lora_set *s, const char *list, const orc_llm_config *base,
                                  orc_lora_stack *out, orc_error *err) {
    return select_or_load(s, list, base, true, out, err);
}
