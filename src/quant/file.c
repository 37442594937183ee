/* Quantized model files (orchard/quant.h): rewriting a `llama` GGUF with its
 * matrices in Q8_0 or Q4_0 (every key/value copied, so the tokenizer and
 * hyper-parameters llama.cpp needs come along), and quantizing a model
 * directory through the float GGUF export, which already owns the tensor
 * names, the q/k permutation and the tokenizer keys. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orchard/generate.h"
#include "orchard/llm_gguf.h"
#include "orchard/quant.h"

orc_status orc_quant_scheme_parse(const char *scheme, orc_ggml_type *type, orc_error *err) {
    static const struct { const char *name; orc_ggml_type type; } schemes[] = {
        {"q8_0", ORC_GGML_Q8_0}, {"q4_0", ORC_GGML_Q4_0}, {"pal4", ORC_Q_PAL4}, {"pal2", ORC_Q_PAL2}};
    for (size_t i = 0; scheme && i < sizeof schemes / sizeof schemes[0]; i++)
        if (strcmp(scheme, schemes[i].name) == 0) {
            *type = schemes[i].type;
            return ORC_OK;
        }
    return orc_error_set(err, ORC_EINVAL, "quantize: scheme '%s' is not offered (q8_0, q4_0, pal4, pal2 or "
                         "mixed:BITS)",
                         scheme ? scheme : "(null)");
}

bool orc_quant_scheme_mixed(const char *scheme, double *bits) {
    if (!scheme || strncmp(scheme, "mixed:", 6) != 0) return false;
    char *end;
    errno = 0;
    const double b = strtod(scheme + 6, &end);
    if (errno || end == scheme + 6 || *end || !(b > 0.0 && b < 32.0)) return false;
    *bits = b;
    return true;
}

/* ---- key/values ----------------------------------------------------------------- */

static orc_status copy_array(orc_gguf_writer *w, const orc_gguf_kv *kv, const char *key, orc_error *err) {
    const orc_gguf_vtype et = orc_gguf_kv_elem_type(kv);
    const uint64_t n = orc_gguf_kv_len(kv);
    if (et == ORC_GGUF_ARRAY)
        return orc_error_set(err, ORC_EUNSUPPORTED, "quantize: key '%s' is a nested array, which is not copied", key);
    if (et != ORC_GGUF_STRING) return orc_gguf_add_arr(w, key, et, orc_gguf_kv_arr_data(kv), n, err);
    const char **s = malloc(sizeof *s * (size_t)(n ? n : 1));
    if (!s) return orc_error_set(err, ORC_ENOMEM, "quantize: out of memory copying '%s'", key);
    for (uint64_t i = 0; i < n; i++) s[i] = orc_gguf_kv_arr_str(kv, i, NULL);
    orc_status st = orc_gguf_add_arr_str(w, key, s, n, err);
    free(s);
    return st;
}

static orc_status copy_kv(orc_gguf_writer *w, const orc_gguf_kv *kv, orc_error *err) {
    const char *key = orc_gguf_kv_key(kv);
    uint64_t u;
    int64_t i;
    double d;
    float f;
    bool b;
    const char *s;
    orc_status st;
    switch (orc_gguf_kv_type(kv)) {
    case ORC_GGUF_UINT8:
    case ORC_GGUF_UINT16:
    case ORC_GGUF_UINT32:
    case ORC_GGUF_UINT64:
        if ((st = orc_gguf_kv_get_u64(kv, &u, err)) != ORC_OK) return st;
        switch (orc_gguf_kv_type(kv)) {
        case ORC_GGUF_UINT8: return orc_gguf_add_u8(w, key, (uint8_t)u, err);
        case ORC_GGUF_UINT16: return orc_gguf_add_u16(w, key, (uint16_t)u, err);
        case ORC_GGUF_UINT32: return orc_gguf_add_u32(w, key, (uint32_t)u, err);
        default: return orc_gguf_add_u64(w, key, u, err);
        }
    case ORC_GGUF_INT8:
    case ORC_GGUF_INT16:
    case ORC_GGUF_INT32:
    case ORC_GGUF_INT64:
        if ((st = orc_gguf_kv_get_i64(kv, &i, err)) != ORC_OK) return st;
        switch (orc_gguf_kv_type(kv)) {
        case ORC_GGUF_INT8: return orc_gguf_add_i8(w, key, (int8_t)i, err);
        case ORC_GGUF_INT16: return orc_gguf_add_i16(w, key, (int16_t)i, err);
        case ORC_GGUF_INT32: return orc_gguf_add_i32(w, key, (int32_t)i, err);
        default: return orc_gguf_add_i64(w, key, i, err);
        }
    case ORC_GGUF_FLOAT32:
        if ((st = orc_gguf_kv_get_f32(kv, &f, err)) != ORC_OK) return st;
        return orc_gguf_add_f32(w, key, f, err);
    case ORC_GGUF_FLOAT64:
        if ((st = orc_gguf_kv_get_f64(kv, &d, err)) != ORC_OK) return st;
        return orc_gguf_add_f64(w, key, d, err);
    case ORC_GGUF_BOOL:
        if ((st = orc_gguf_kv_get_bool(kv, &b, err)) != ORC_OK) return st;
        return orc_gguf_add_bool(w, key, b, err);
    case ORC_GGUF_STRING:
        if ((st = orc_gguf_kv_get_str(kv, &s, NULL, err)) != ORC_OK) return st;
        return orc_gguf_add_str(w, key, s, err);
    case ORC_GGUF_ARRAY: return copy_array(w, kv, key, err);
    default: return orc_error_set(err, ORC_EFORMAT, "quantize: key '%s' has an unknown value type", key);
    }
}

/* ---- tensors ------------------------------------------------------------------------ */

static bool is_embedding(const char *name) {
    return strcmp(name, "token_embd.weight") == 0 || strcmp(name, "output.weight") == 0;
}

/* The plan's type for a 2-D tensor name (F32 for names it does not cover). */
static orc_ggml_type planned_type(const orc_quant_plan *p, const char *name) {
    if (is_embedding(name)) return p->embed;
    char buf[96];
    for (int64_t l = 0; l < p->n_layers; l++)
        for (int i = 0; i < ORC_QLLM_PROJ; i++)
            if (strcmp(name, orc_quant_proj_name(l, i, buf, sizeof buf)) == 0) return p->proj[l * ORC_QLLM_PROJ + i];
    return ORC_GGML_F32;
}

/* What add_tensor keeps alive until the write. */
typedef struct kept {
    float *floats;
    orc_qmat pal;
} kept;

/* A palettized matrix as its three tensors (see orchard/quant.h). */
static orc_status add_pal(orc_gguf_writer *w, const orc_gguf_tensor_info *ti, const orc_qmat *q, orc_error *err) {
    char ln[200], sn[200];
    snprintf(ln, sizeof ln, "%s.pal_lut", ti->name);
    snprintf(sn, sizeof sn, "%s.pal_scale", ti->name);
    const int64_t G = q->cols / q->group;
    const int64_t ishape[2] = {q->rows, (int64_t)q->row_bytes}, lshape[2] = {G, q->entries}, sshape[1] = {G};
    orc_status st = orc_gguf_add_tensor(w, ti->name, ORC_GGML_I8, 2, ishape, q->data, q->row_bytes * (size_t)q->rows,
                                        err);
    if (st == ORC_OK) st = orc_gguf_add_tensor(w, ln, ORC_GGML_I8, 2, lshape, q->lut, (size_t)(G * q->entries), err);
    if (st == ORC_OK) st = orc_gguf_add_tensor(w, sn, ORC_GGML_F32, 1, sshape, q->lut_scale, sizeof(float) * (size_t)G, err);
    return st;
}

/* One tensor into w in its target type; bytes it needs stay in *keep until the write. */
static orc_status add_tensor(orc_gguf_writer *w, const orc_gguf_file *f, const orc_gguf_tensor_info *ti,
                             const orc_quant_plan *p, kept *keep, orc_error *err) {
    /* 1-D tensors and 2-D ones the plan does not name stay F32; a planned
     * matrix whose rows are not whole blocks falls back to F16 (the plan's
     * bits per weight count it so: orc_quant_fit_type). */
    orc_ggml_type target = ORC_GGML_F32;
    if (ti->n_dims == 2) {
        target = planned_type(p, ti->name);
        if (target != ORC_GGML_F32) target = orc_quant_fit_type(target, ti->shape[1]);
    }
    if (ti->type == ORC_GGML_I8 || strstr(ti->name, ".pal_"))
        return orc_error_set(err, ORC_EUNSUPPORTED, "quantize: tensor '%s' is already palettized; quantize the float "
                             "model instead",
                             ti->name);
    if (ti->type == target) return orc_gguf_add_tensor(w, ti->name, target, ti->n_dims, ti->shape, ti->data,
                                                       ti->nbytes, err);
    float *x = malloc(sizeof(float) * (size_t)(ti->numel ? ti->numel : 1));
    if (!x) return orc_error_set(err, ORC_ENOMEM, "quantize: out of memory for tensor '%s'", ti->name);
    keep->floats = x;
    orc_status st = orc_gguf_read_f32(f, ti->name, x, ti->numel, err);
    if (st != ORC_OK) return st;
    if (orc_q_type_is_pal(target)) {
        st = orc_qmat_quantize_ex(&keep->pal, target, x, ti->shape[0], ti->shape[1], p->group, err);
        if (st != ORC_OK) {
            char msg[ORC_ERROR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
            if (err) err->code = ORC_OK;
            return orc_error_set(err, st, "quantize: tensor '%s' [%lld, %lld]: %s", ti->name, (long long)ti->shape[0],
                                 (long long)ti->shape[1], msg);
        }
        return add_pal(w, ti, &keep->pal, err);
    }
    return orc_gguf_add_tensor_f32(w, ti->name, target, ti->n_dims, ti->shape, x, err);
}

static bool plan_has_pal(const orc_quant_plan *p) {
    if (orc_q_type_is_pal(p->embed)) return true;
    for (int64_t i = 0; i < p->n_layers * ORC_QLLM_PROJ; i++)
        if (orc_q_type_is_pal(p->proj[i])) return true;
    return false;
}

/* llama_ftype for a plan without palettized matrices: MOSTLY_Q4_0 = 2 when
 * any projection is Q4_0, else MOSTLY_Q8_0 = 7. */
static uint32_t llama_ftype(const orc_quant_plan *p) {
    for (int64_t i = 0; i < p->n_layers * ORC_QLLM_PROJ; i++)
        if (p->proj[i] == ORC_GGML_Q4_0) return 2u;
    return 7u;
}

orc_status orc_quantize_gguf_plan(const char *in_path, const char *out_path, const orc_quant_plan *p,
                                  orc_error *err) {
    orc_gguf_file *f = orc_gguf_open(in_path, err);
    if (!f) return err ? err->code : ORC_EIO;
    orc_llm_config cfg;
    orc_status st = orc_llm_config_from_gguf(f, in_path, &cfg, err);
    if (st == ORC_OK && (!p->proj || p->n_layers != cfg.num_hidden_layers))
        st = orc_error_set(err, ORC_EINVAL, "quantize: the plan has %lld layers, %s has %lld", (long long)p->n_layers,
                           in_path, (long long)cfg.num_hidden_layers);
    orc_gguf_writer *w = st == ORC_OK ? orc_gguf_writer_new(err) : NULL;
    if (st == ORC_OK && !w) st = err ? err->code : ORC_ENOMEM;
    const size_t nt = orc_gguf_tensor_count(f);
    kept *keep = calloc(nt + 1, sizeof *keep);
    if (st == ORC_OK && !keep) st = orc_error_set(err, ORC_ENOMEM, "quantize: out of memory");
    for (size_t i = 0; st == ORC_OK && i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        const char *key = orc_gguf_kv_key(kv);
        if (strcmp(key, "general.alignment") == 0) continue;
        if (strcmp(key, "general.file_type") == 0 || strcmp(key, "general.quantization_version") == 0) continue;
        if (strncmp(key, "orchard.quant.", 14) == 0) continue;
        st = copy_kv(w, kv, err);
    }
    if (st == ORC_OK && !plan_has_pal(p)) {
        /* llama_ftype: LLAMA_FTYPE_MOSTLY_Q4_0 = 2, LLAMA_FTYPE_MOSTLY_Q8_0 = 7 */
        st = orc_gguf_add_u32(w, "general.file_type", llama_ftype(p), err);
        if (st == ORC_OK) st = orc_gguf_add_u32(w, "general.quantization_version", 2u, err); /* GGML_QNT_VERSION */
    } else if (st == ORC_OK) {
        st = orc_gguf_add_u32(w, "orchard.quant.version", ORC_Q_PAL_VERSION, err);
    }
    if (st == ORC_OK && p->scheme[0]) st = orc_gguf_add_str(w, "orchard.quant.scheme", p->scheme, err);
    for (size_t i = 0; st == ORC_OK && i < nt; i++) st = add_tensor(w, f, orc_gguf_tensor_at(f, i), p, &keep[i], err);
    if (st == ORC_OK) st = orc_gguf_write(w, out_path, err);
    for (size_t i = 0; keep && i < nt; i++) {
        free(keep[i].floats);
        orc_qmat_release(&keep[i].pal);
    }
    free(keep);
    orc_gguf_writer_free(w);
    orc_gguf_close(f);
    return st;
}

orc_status orc_quantize_gguf(const char *in_path, const char *out_path, orc_ggml_type type, orc_error *err) {
    orc_gguf_file *f = orc_gguf_open(in_path, err);
    if (!f) return err ? err->code : ORC_EIO;
    orc_llm_config cfg;
    orc_status st = orc_llm_config_from_gguf(f, in_path, &cfg, err);
    orc_gguf_close(f);
    if (st != ORC_OK) return st;
    orc_quant_plan p;
    st = orc_quant_plan_uniform(&p, cfg.num_hidden_layers, type, ORC_Q_PAL_GROUP, err);
    if (st != ORC_OK) return st;
    st = orc_quantize_gguf_plan(in_path, out_path, &p, err);
    orc_quant_plan_release(&p);
    return st;
}

orc_status orc_quantize_model_dir(const char *dir, const char *out_path, orc_ggml_type type, orc_error *err) {
    orc_llm_config cfg;
    char cpath[4200];
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    orc_status st = orc_llm_config_load(cpath, &cfg, err);
    if (st != ORC_OK) return st;
    orc_quant_plan p;
    st = orc_quant_plan_uniform(&p, cfg.num_hidden_layers, type, ORC_Q_PAL_GROUP, err);
    if (st != ORC_OK) return st;
    st = orc_quantize_model_dir_plan(dir, out_path, &p, err);
    orc_quant_plan_release(&p);
    return st;
}

orc_status orc_quantize_model_dir_plan(const char *dir, const char *out_path, const orc_quant_plan *p,
                                       orc_error *err) {
    orc_llm *m = NULL;
    orc_tokenizer *tok = NULL;
    char tpath[4200];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
    orc_status st;
    if (access(tpath, F_OK) == 0) {
        st = orc_model_dir_load(dir, &m, &tok, err);
    } else {
        m = orc_llm_load(dir, false, err);
        st = m ? ORC_OK : (err ? err->code : ORC_EIO);
    }
    if (st != ORC_OK) return st;
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.f32.%d", out_path, (int)getpid());
    orc_gguf_export_opts o = {.type = ORC_GGML_F32, .name = "orchard"};
    st = orc_llm_export_gguf(m, tok, tmp, &o, err);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    if (st == ORC_OK) st = orc_quantize_gguf_plan(tmp, out_path, p, err);
    unlink(tmp);
    return st;
}
