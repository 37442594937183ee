/* Training recipes (see orchard/train.h): the JSON file a user writes, parsed
 * strictly (an unknown key or a wrong type is an error naming the file and
 * the key, so a typo never trains with a silent default), paths resolved
 * against the recipe's folder, range checks after command-line overrides,
 * and the effective recipe written back as JSON into trainer_state.json. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/moe.h"
#include "train_internal.h"

void orc_train_recipe_default(orc_train_recipe *r) {
    memset(r, 0, sizeof *r);
    r->batch = 16;
    r->seq = 128;
    r->accum = 1;
    r->steps = 1000;
    r->lr = 6e-4;
    r->min_lr = 6e-5;
    r->warmup = 100;
    r->weight_decay = 0.1;
    r->beta1 = 0.9;
    r->beta2 = 0.95;
    r->eps = 1e-8;
    r->grad_clip = 1.0;
    r->eval_every = 100;
    r->eval_batches = 10;
    r->save_every = 500;
    r->log_every = 10;
    r->seed = 1337;
}

/* ---- small parsers ------------------------------------------------------------ */

static orc_status resolve(const char *base_dir, const char *p, char *out, const char *label, const char *key,
                          orc_error *err) {
    int n = (p[0] == '/' || !base_dir || !base_dir[0]) ? snprintf(out, ORC_TRAIN_PATH_MAX, "%s", p)
                                                      : snprintf(out, ORC_TRAIN_PATH_MAX, "%s/%s", base_dir, p);
    if (n < 0 || n >= ORC_TRAIN_PATH_MAX)
        return orc_error_set(err, ORC_EINVAL, "%s: \"%s\": the path is too long", label, key);
    return ORC_OK;
}

static orc_status get_path(json_t *v, const char *base_dir, char *out, const char *label, const char *key,
                           orc_error *err) {
    if (!json_is_string(v) || json_string_length(v) == 0)
        return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be a non-empty path string", label, key);
    return resolve(base_dir, json_string_value(v), out, label, key, err);
}

static orc_status get_i64(json_t *v, int64_t *out, const char *label, const char *key, orc_error *err) {
    if (!json_is_integer(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be an integer", label, key);
    *out = (int64_t)json_integer_value(v);
    return ORC_OK;
}

static orc_status get_int(json_t *v, int *out, const char *label, const char *key, orc_error *err) {
    int64_t x = 0;
    orc_status st = get_i64(v, &x, label, key, err);
    if (st != ORC_OK) return st;
    if (x < INT_MIN || x > INT_MAX)
        return orc_error_set(err, ORC_ERANGE, "%s: \"%s\" = %lld is out of range", label, key, (long long)x);
    *out = (int)x;
    return ORC_OK;
}

static orc_status get_num(json_t *v, double *out, const char *label, const char *key, orc_error *err) {
    if (!json_is_number(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be a number", label, key);
    *out = json_number_value(v);
    return ORC_OK;
}

/* "model": a preset name, a config.json path (or a folder holding one), or
 * the config object itself. */
static orc_status get_model(json_t *v, const char *base_dir, orc_train_recipe *r, const char *label,
                            orc_error *err) {
    char where[ORC_TRAIN_PATH_MAX + 32];
    snprintf(where, sizeof where, "%s: \"model\"", label);
    orc_error local = {0};
    if (json_is_object(v)) {
        orc_status st = orc_llm_config_from_json(v, where, &r->model, err);
        r->has_model = st == ORC_OK;
        return st;
    }
    if (!json_is_string(v))
        return orc_error_set(err, ORC_EFORMAT, "%s must be a preset name (tiny, small, base), a config.json path "
                             "or a config object", where);
    const char *s = json_string_value(v);
    if (orc_llm_config_preset(s, &r->model, &local) == ORC_OK) {
        r->has_model = true;
        return ORC_OK;
    }
    char path[ORC_TRAIN_PATH_MAX];
    orc_status st = resolve(base_dir, s, path, label, "model", err);
    if (st != ORC_OK) return st;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return orc_error_set(err, ORC_EINVAL, "%s = \"%s\" is neither a preset (tiny, small, base) nor an existing "
                             "config file (%s)", where, s, path);
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path);
        if (n + 13 >= sizeof path) return orc_error_set(err, ORC_EINVAL, "%s: the path is too long", where);
        memcpy(path + n, "/config.json", 13);
    }
    orc_error_clear(&local); /* it still holds the preset lookup's message */
    if (orc_llm_config_load(path, &r->model, &local) != ORC_OK)
        return orc_error_set(err, local.code, "%s: %s", where, local.msg);
    r->has_model = true;
    return ORC_OK;
}

/* "data" / "sft": {"train": PATH, "val": PATH}. */
static orc_status get_data(json_t *v, const char *base_dir, orc_train_recipe *r, const char *label, const char *key,
                           orc_error *err) {
    if (!json_is_object(v))
        return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be an object {\"train\": ..., \"val\": ...}", label,
                             key);
    const char *k;
    json_t *x;
    char sub[64];
    json_object_foreach(v, k, x) {
        snprintf(sub, sizeof sub, "%s.%s", key, k);
        orc_status st;
        if (strcmp(k, "train") == 0) st = get_path(x, base_dir, r->train, label, sub, err);
        else if (strcmp(k, "val") == 0) st = get_path(x, base_dir, r->val, label, sub, err);
        else st = orc_error_set(err, ORC_EFORMAT, "%s: unknown key \"%s\" (%s takes train and val)", label, sub, key);
        if (st != ORC_OK) return st;
    }
    if (!r->train[0]) return orc_error_set(err, ORC_EFORMAT, "%s: missing key \"%s.train\"", label, key);
    r->sft = strcmp(key, "sft") == 0;
    return ORC_OK;
}

/* "lora": {"rank", "alpha", "targets" (list or "q,k,v"), "dropout"}. */
static orc_status get_lora(json_t *v, orc_train_recipe *r, const char *label, orc_error *err) {
    if (!json_is_object(v))
        return orc_error_set(err, ORC_EFORMAT, "%s: \"lora\" must be an object {\"rank\": 16, \"alpha\": 32, "
                             "\"targets\": [\"q\", ...]}", label);
    orc_lora_config_default(&r->lora_cfg);
    r->lora = true;
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        orc_status st = ORC_OK;
        if (strcmp(k, "rank") == 0 || strcmp(k, "r") == 0) st = get_int(x, &r->lora_cfg.rank, label, "lora.rank", err);
        else if (strcmp(k, "alpha") == 0) st = get_num(x, &r->lora_cfg.alpha, label, "lora.alpha", err);
        else if (strcmp(k, "dropout") == 0) st = get_num(x, &r->lora_cfg.dropout, label, "lora.dropout", err);
        else if (strcmp(k, "targets") == 0) {
            r->lora_cfg.targets = 0;
            if (json_is_string(x)) {
                char spec[256];
                snprintf(spec, sizeof spec, "targets=%s", json_string_value(x));
                orc_error local = {0};
                if (orc_lora_config_parse(spec, &r->lora_cfg, &local) != ORC_OK)
                    st = orc_error_set(err, local.code, "%s: \"lora.targets\": %s", label, local.msg);
            } else if (json_is_array(x) && json_array_size(x) > 0) {
                for (size_t i = 0; i < json_array_size(x) && st == ORC_OK; i++) {
                    const char *name = json_string_value(json_array_get(x, i));
                    int t = name ? orc_lora_target_parse(name) : -1;
                    if (t < 0)
                        st = orc_error_set(err, ORC_EINVAL, "%s: \"lora.targets\": unknown target '%s' (valid: q, k, "
                                           "v, o, gate, up, down)", label, name ? name : "(not a string)");
                    else
                        r->lora_cfg.targets |= 1u << t;
                }
            } else {
                st = orc_error_set(err, ORC_EFORMAT, "%s: \"lora.targets\" must be a non-empty list of names", label);
            }
        } else {
            st = orc_error_set(err, ORC_EFORMAT, "%s: unknown key \"lora.%s\" (lora takes rank, alpha, targets, "
                               "dropout)", label, k);
        }
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

/* ---- the recipe object ------------------------------------------------------------- */

orc_status orc_train_recipe_from_json(json_t *root, const char *label, const char *base_dir, orc_train_recipe *r,
                                      orc_error *err) {
    if (!json_is_object(root)) return orc_error_set(err, ORC_EFORMAT, "%s: the recipe must be a JSON object", label);
    orc_train_recipe_default(r);
    snprintf(r->path, sizeof r->path, "%s", label);
    bool seen_data = false;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        orc_status st = ORC_OK;
        int64_t i64 = 0;
        if (strcmp(key, "model") == 0) st = get_model(v, base_dir, r, label, err);
        else if (strcmp(key, "init_from") == 0) st = get_path(v, base_dir, r->init_from, label, key, err);
        else if (strcmp(key, "tokenizer") == 0) st = get_path(v, base_dir, r->tokenizer, label, key, err);
        else if (strcmp(key, "lora") == 0) st = get_lora(v, r, label, err);
        else if (strcmp(key, "recover_from") == 0) st = get_path(v, base_dir, r->recover_from, label, key, err);
        else if (strcmp(key, "lora_init") == 0) st = get_path(v, base_dir, r->lora_init, label, key, err);
        else if (strcmp(key, "data") == 0 || strcmp(key, "sft") == 0) {
            if (seen_data)
                return orc_error_set(err, ORC_EFORMAT, "%s: give either \"data\" (token shards) or \"sft\" (chat "
                                     "JSONL), not both", label);
            seen_data = true;
            st = get_data(v, base_dir, r, label, key, err);
        } else if (strcmp(key, "batch") == 0) st = get_int(v, &r->batch, label, key, err);
        else if (strcmp(key, "seq") == 0) st = get_int(v, &r->seq, label, key, err);
        else if (strcmp(key, "accum") == 0) st = get_int(v, &r->accum, label, key, err);
        else if (strcmp(key, "steps") == 0) st = get_i64(v, &r->steps, label, key, err);
        else if (strcmp(key, "lr") == 0) st = get_num(v, &r->lr, label, key, err);
        else if (strcmp(key, "min_lr") == 0) st = get_num(v, &r->min_lr, label, key, err);
        else if (strcmp(key, "warmup") == 0) st = get_i64(v, &r->warmup, label, key, err);
        else if (strcmp(key, "weight_decay") == 0) st = get_num(v, &r->weight_decay, label, key, err);
        else if (strcmp(key, "beta1") == 0) st = get_num(v, &r->beta1, label, key, err);
        else if (strcmp(key, "beta2") == 0) st = get_num(v, &r->beta2, label, key, err);
        else if (strcmp(key, "eps") == 0) st = get_num(v, &r->eps, label, key, err);
        else if (strcmp(key, "grad_clip") == 0) st = get_num(v, &r->grad_clip, label, key, err);
        else if (strcmp(key, "eval_every") == 0) st = get_i64(v, &r->eval_every, label, key, err);
        else if (strcmp(key, "eval_batches") == 0) st = get_i64(v, &r->eval_batches, label, key, err);
        else if (strcmp(key, "save_every") == 0) st = get_i64(v, &r->save_every, label, key, err);
        else if (strcmp(key, "log_every") == 0) st = get_i64(v, &r->log_every, label, key, err);
        else if (strcmp(key, "seed") == 0) {
            st = get_i64(v, &i64, label, key, err);
            if (st == ORC_OK && i64 < 0)
                st = orc_error_set(err, ORC_ERANGE, "%s: \"seed\" = %lld must be >= 0", label, (long long)i64);
            r->seed = (uint64_t)i64;
        } else if (strcmp(key, "comment") == 0 || key[0] == '_') {
            /* free-form notes: "comment" and keys starting with '_' are ignored on purpose */
        } else {
            st = orc_error_set(err, ORC_EFORMAT, "%s: unknown key \"%s\"", label, key);
        }
        if (st != ORC_OK) return st;
    }
    if (r->has_model && r->init_from[0])
        return orc_error_set(err, ORC_EFORMAT, "%s: give either \"model\" (a new model) or \"init_from\" (a "
                             "checkpoint to fine-tune), not both", label);
    if (r->recover_from[0] || r->lora_init[0]) {
        if (!r->lora) orc_lora_config_default(&r->lora_cfg);
        r->lora = true;
    }
    if (!r->has_model && !r->init_from[0] && !r->recover_from[0])
        return orc_error_set(err, ORC_EFORMAT, "%s: missing key \"model\" (a preset, a config or a config.json "
                             "path) or \"init_from\" (a checkpoint folder)", label);
    if (!r->tokenizer[0] && !r->init_from[0] && !r->recover_from[0])
        return orc_error_set(err, ORC_EFORMAT, "%s: missing key \"tokenizer\" (the folder holding tokenizer.json)",
                             label);
    if (!seen_data)
        return orc_error_set(err, ORC_EFORMAT, "%s: missing key \"data\" ({\"train\": \"train.bin\", \"val\": "
                             "\"val.bin\"}) or \"sft\" (chat JSONL)", label);
    return orc_train_recipe_check(r, err);
}

orc_status orc_train_recipe_load(const char *path, orc_train_recipe *r, orc_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        orc_train_recipe_default(r);
        return orc_error_set(err, errno == ENOENT && jerr.line <= 0 ? ORC_EIO : ORC_EFORMAT, "%s: line %d: %s",
                             path, jerr.line, jerr.text);
    }
    /* Relative paths are relative to the recipe's folder, absolute if we can. */
    char dir[ORC_TRAIN_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    char abs[PATH_MAX];
    const char *base = realpath(dir, abs) ? abs : dir;
    orc_status st = orc_train_recipe_from_json(root, path, base, r, err);
    json_decref(root);
    return st;
}

orc_status orc_train_recipe_check(const orc_train_recipe *r, orc_error *err) {
    const char *p = r->path;
#define NEED(cond, key, ...) \
    if (!(cond)) return orc_error_set(err, ORC_ERANGE, "%s: \"" key "\" " __VA_ARGS__)
    NEED(r->batch >= 1, "batch", "= %d must be >= 1", p, r->batch);
    NEED(r->seq >= 1, "seq", "= %d must be >= 1", p, r->seq);
    NEED(r->accum >= 1, "accum", "= %d must be >= 1", p, r->accum);
    NEED(r->steps >= 1, "steps", "= %lld must be >= 1", p, (long long)r->steps);
    NEED(isfinite(r->lr) && r->lr > 0, "lr", "= %g must be positive", p, r->lr);
    NEED(isfinite(r->min_lr) && r->min_lr >= 0 && r->min_lr <= r->lr, "min_lr", "= %g must be in [0, lr = %g]", p,
         r->min_lr, r->lr);
    NEED(r->warmup >= 0 && r->warmup <= r->steps, "warmup", "= %lld must be in [0, steps = %lld]", p,
         (long long)r->warmup, (long long)r->steps);
    NEED(isfinite(r->weight_decay) && r->weight_decay >= 0, "weight_decay", "= %g must be >= 0", p, r->weight_decay);
    NEED(r->beta1 >= 0 && r->beta1 < 1, "beta1", "= %g must be in [0, 1)", p, r->beta1);
    NEED(r->beta2 >= 0 && r->beta2 < 1, "beta2", "= %g must be in [0, 1)", p, r->beta2);
    NEED(isfinite(r->eps) && r->eps > 0, "eps", "= %g must be positive", p, r->eps);
    NEED(isfinite(r->grad_clip) && r->grad_clip >= 0, "grad_clip", "= %g must be >= 0 (0 turns clipping off)", p,
         r->grad_clip);
    NEED(r->eval_every >= 0, "eval_every", "= %lld must be >= 0 (0: never)", p, (long long)r->eval_every);
    NEED(r->eval_batches >= 1 && r->eval_batches <= 1000000, "eval_batches", "= %lld must be in [1, 1000000]", p,
         (long long)r->eval_batches);
    NEED(r->save_every >= 0, "save_every", "= %lld must be >= 0 (0: only at the end)", p, (long long)r->save_every);
    NEED(r->log_every >= 1, "log_every", "= %lld must be >= 1", p, (long long)r->log_every);
    NEED((int64_t)r->batch * r->seq <= ((int64_t)1 << 28), "batch", "x seq = %lld tokens is too many", p,
         (long long)r->batch * r->seq);
    if (r->lora) {
        orc_error local = {0};
        if (orc_lora_config_check(&r->lora_cfg, p, &local) != ORC_OK)
            return orc_error_set(err, local.code, "%s (key \"lora\")", local.msg);
    }
    if (r->has_model)
        NEED(r->seq <= r->model.max_position_embeddings, "seq", "= %d exceeds the model's max_position_embeddings "
             "= %lld", p, r->seq, (long long)r->model.max_position_embeddings);
#undef NEED
    return ORC_OK;
}

/* ---- back to JSON ------------------------------------------------------------------- */

json_t *orc_train_config_to_json(const orc_llm_config *c) {
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b, s:b, s:I, s:I}", "hidden_size",
                          (json_int_t)c->hidden_size, "num_hidden_layers", (json_int_t)c->num_hidden_layers,
                          "num_attention_heads", (json_int_t)c->num_attention_heads, "num_key_value_heads",
                          (json_int_t)c->num_key_value_heads, "head_dim", (json_int_t)c->head_dim, "intermediate_size",
                          (json_int_t)c->intermediate_size, "vocab_size", (json_int_t)c->vocab_size,
                          "max_position_embeddings", (json_int_t)c->max_position_embeddings, "rope_theta",
                          c->rope_theta, "rms_norm_eps", c->rms_norm_eps, "tie_word_embeddings",
                          c->tie_word_embeddings, "qk_norm", c->qk_norm, "bos_token_id", (json_int_t)c->bos_token_id,
                          "eos_token_id", (json_int_t)c->eos_token_id);
    if (o && c->bos_token_id < 0) json_object_del(o, "bos_token_id");
    if (o && c->eos_token_id < 0) json_object_del(o, "eos_token_id");
    if (o && c->num_experts > 0) {
        /* The MoE keys too, so that a resume compares them (check_same_model
         * in train.c) and a resume without --config rebuilds the same layers. */
        const struct { const char *key; json_int_t v; } ints[] = {
            {"num_experts", c->num_experts}, {"moe_every", c->moe_every}, {"moe_top_k", c->moe_top_k},
            {"moe_group_size", c->moe_group_size}, {"moe_intermediate_size", c->moe_intermediate_size}};
        const struct { const char *key; double v; } reals[] = {{"capacity_factor", c->capacity_factor},
                                                               {"router_aux_loss_coef", c->router_aux_loss_coef},
                                                               {"router_z_loss_coef", c->router_z_loss_coef}};
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
            json_object_set_new(o, ints[i].key, json_integer(ints[i].v));
        for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
            json_object_set_new(o, reals[i].key, json_real(reals[i].v));
        json_object_set_new(o, "router", json_string(orc_moe_router_name((orc_moe_router)c->moe_router)));
    }
    return o;
}

json_t *orc_train_recipe_to_json(const orc_train_recipe *r) {
    json_t *o = json_pack("{s:i, s:i, s:i, s:I, s:f, s:f, s:I, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I}",
                          "batch", r->batch, "seq", r->seq, "accum", r->accum, "steps", (json_int_t)r->steps, "lr",
                          r->lr, "min_lr", r->min_lr, "warmup", (json_int_t)r->warmup, "weight_decay",
                          r->weight_decay, "beta1", r->beta1, "beta2", r->beta2, "eps", r->eps, "grad_clip",
                          r->grad_clip, "eval_every", (json_int_t)r->eval_every, "eval_batches",
                          (json_int_t)r->eval_batches, "save_every", (json_int_t)r->save_every, "log_every",
                          (json_int_t)r->log_every, "seed", (json_int_t)r->seed);
    if (!o) return NULL;
    if (r->has_model) json_object_set_new(o, "model", orc_train_config_to_json(&r->model));
    if (r->init_from[0]) json_object_set_new(o, "init_from", json_string(r->init_from));
    if (r->tokenizer[0]) json_object_set_new(o, "tokenizer", json_string(r->tokenizer));
    if (r->recover_from[0]) json_object_set_new(o, "recover_from", json_string(r->recover_from));
    if (r->lora_init[0]) json_object_set_new(o, "lora_init", json_string(r->lora_init));
    if (r->lora) {
        json_t *t = json_array();
        for (int i = 0; i < ORC_LORA_N_TARGETS; i++)
            if (r->lora_cfg.targets & (1u << i)) json_array_append_new(t, json_string(orc_lora_target_short(i)));
        json_object_set_new(o, "lora", json_pack("{s:i, s:f, s:f, s:o}", "rank", r->lora_cfg.rank, "alpha",
                                                 r->lora_cfg.alpha, "dropout", r->lora_cfg.dropout, "targets", t));
    }
    json_t *d = json_pack("{s:s}", "train", r->train);
    if (d && r->val[0]) json_object_set_new(d, "val", json_string(r->val));
    json_object_set_new(o, r->sft ? "sft" : "data", d);
    return o;
}
