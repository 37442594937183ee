/* The decoder LM as a GGUF file (see orchard/llm_gguf.h): export to
 * llama.cpp's `llama` architecture (hyper-parameter keys, tensor names, the
 * RoPE row permutation of q and k, the byte-level BPE tokenizer and a chat
 * template), and import of `llama` GGUF files back into config.json,
 * model.safetensors and a Hugging Face tokenizer.json (byte-level BPE or
 * SentencePiece with byte fallback). The key names and the permutation follow
 * llama.cpp's src/llama-arch.cpp and convert_hf_to_gguf.py. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orchard/chat.h"
#include "orchard/fileio.h"
#include "orchard/llm_gguf.h"
#include "orchard/safetensors.h"

const char *const orc_gguf_chat_template =
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/* ---- the RoPE permutation --------------------------------------------------------- */

void orc_gguf_permute_qk(float *dst, const float *src, int64_t n_head, int64_t head_dim, int64_t cols, bool to_gguf) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t s = 0; s < 2; s++)
            for (int64_t i = 0; i < half; i++) {
                const int64_t orc_row = h * head_dim + s * half + i, gguf_row = h * head_dim + 2 * i + s;
                const int64_t from = to_gguf ? orc_row : gguf_row, to = to_gguf ? gguf_row : orc_row;
                memcpy(dst + to * cols, src + from * cols, sizeof(float) * (size_t)cols);
            }
}

/* ---- tensor names ------------------------------------------------------------------- */

/* The GGUF name of a model parameter, from its place in the model. */
typedef struct name_map {
    orc_tensor *t;
    char name[64];
    int64_t permute_heads; /* > 0: q or k with this many heads */
} name_map;

/* Every parameter in a fixed order: token_embd, the blocks, output_norm,
 * output (only when untied). Returns the count; out holds L * 9 + 3. */
static int map_params(const orc_llm *m, name_map *out) {
    const orc_llm_config *c = &m->cfg;
    int n = 0;
#define PUT(tensor, heads, ...)                                         \
    do {                                                                \
        out[n].t = (tensor);                                            \
        out[n].permute_heads = (heads);                                 \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);         \
        n++;                                                            \
    } while (0)
    PUT(m->embed, 0, "token_embd.weight");
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_llm_layer *y = &m->layers[l];
        PUT(y->attn_norm, 0, "blk.%lld.attn_norm.weight", (long long)l);
        PUT(y->wq, c->num_attention_heads, "blk.%lld.attn_q.weight", (long long)l);
        PUT(y->wk, c->num_key_value_heads, "blk.%lld.attn_k.weight", (long long)l);
        PUT(y->wv, 0, "blk.%lld.attn_v.weight", (long long)l);
        PUT(y->wo, 0, "blk.%lld.attn_output.weight", (long long)l);
        PUT(y->ffn_norm, 0, "blk.%lld.ffn_norm.weight", (long long)l);
        PUT(y->w_gate, 0, "blk.%lld.ffn_gate.weight", (long long)l);
        PUT(y->w_up, 0, "blk.%lld.ffn_up.weight", (long long)l);
        PUT(y->w_down, 0, "blk.%lld.ffn_down.weight", (long long)l);
    }
    PUT(m->norm, 0, "output_norm.weight");
    if (!c->tie_word_embeddings) PUT(m->lm_head, 0, "output.weight");
#undef PUT
    return n;
}

/* ---- export: tokenizer ------------------------------------------------------------- */

/* GPT-2's byte-level form of bytes (each byte one code point below 324). */
static char *byte_level(const char *bytes, size_t len) {
    char *out = malloc(2 * len + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = orc_tok_byte_to_char((uint8_t)bytes[i]);
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    return out;
}

typedef struct tok_export {
    uint64_t n;       /* = the model's vocabulary */
    char **tokens;    /* [n] */
    int32_t *types;   /* [n] */
    uint64_t n_merges;
    char **merges;    /* [n_merges] */
    float *scores;    /* [n], SentencePiece kind only */
} tok_export;

static void tok_export_free(tok_export *x) {
    for (uint64_t i = 0; x->tokens && i < x->n; i++) free(x->tokens[i]);
    for (uint64_t i = 0; x->merges && i < x->n_merges; i++) free(x->merges[i]);
    free(x->tokens);
    free(x->types);
    free(x->merges);
    free(x->scores);
}

/* SentencePiece kind (`llama` in GGUF): the pieces as tokenizer.json spells
 * them, token types, and scores that make llama.cpp's highest-score-first
 * merging follow orchard's merge ranks (score = -rank of the first merge
 * that makes the token; tokens no merge makes get a score below all). */
static orc_status build_spm_export(const orc_tokenizer *tok, tok_export *x, orc_error *err) {
    char *text = orc_tokenizer_to_json(tok, err);
    if (!text) return err ? err->code : ORC_ENOMEM;
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    if (!root) return orc_error_set(err, ORC_ENOMEM, "gguf export: cannot read the tokenizer's JSON form");
    json_t *model = json_object_get(root, "model");
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    orc_status st = ORC_OK;
    x->scores = malloc(x->n * sizeof *x->scores);
    if (!x->scores) st = orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    for (uint64_t i = 0; st == ORC_OK && i < x->n; i++) x->scores[i] = -1e9f;
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(model, "vocab"), key, v) {
        json_int_t id = json_integer_value(v);
        if (st != ORC_OK || id < 0 || (uint64_t)id >= x->n) continue;
        free(x->tokens[id]);
        x->tokens[id] = strdup(key);
        x->types[id] = strlen(key) == 6 && strncmp(key, "<0x", 3) == 0 ? ORC_GGUF_TOKEN_BYTE : ORC_GGUF_TOKEN_NORMAL;
        if (!x->tokens[id]) st = orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    }
    for (uint64_t r = 0; st == ORC_OK && r < x->n_merges; r++) {
        int32_t res;
        st = orc_tokenizer_merge(tok, r, NULL, NULL, &res, err);
        if (st == ORC_OK && res >= 0 && (uint64_t)res < x->n && x->scores[res] == -1e9f) x->scores[res] = -(float)r;
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *content = json_string_value(json_object_get(v, "content"));
        if (st != ORC_OK || !content || id < 0 || (uint64_t)id >= x->n) continue;
        free(x->tokens[id]);
        x->tokens[id] = strdup(content);
        x->types[id] = unk && strcmp(unk, content) == 0               ? ORC_GGUF_TOKEN_UNKNOWN
                       : json_is_true(json_object_get(v, "special")) ? ORC_GGUF_TOKEN_CONTROL
                                                                      : ORC_GGUF_TOKEN_USER_DEFINED;
        x->scores[id] = 0.0f;
        if (!x->tokens[id]) st = orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    }
    json_decref(root);
    x->n_merges = 0; /* the `llama` kind merges by score */
    return st;
}

/* The tokenizer's added tokens and options, which only its tokenizer.json
 * form shows: added token texts go to tokens as they are (CONTROL when
 * special, USER_DEFINED otherwise); options llama.cpp lacks are refused. */
static orc_status read_added(const orc_tokenizer *tok, tok_export *x, orc_error *err) {
    char *text = orc_tokenizer_to_json(tok, err);
    if (!text) return err ? err->code : ORC_ENOMEM;
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    if (!root) return orc_error_set(err, ORC_ENOMEM, "gguf export: cannot read the tokenizer's JSON form");
    orc_status st = ORC_OK;
    json_t *model = json_object_get(root, "model");
    if (json_is_true(json_object_get(model, "ignore_merges")))
        st = orc_error_set(err, ORC_EUNSUPPORTED,
                           "gguf export: the tokenizer ignores merges for whole-word tokens; llama.cpp's \"%s\" "
                           "pre-tokenizer applies every merge, so the tokenizations would differ",
                           ORC_GGUF_PRE_SPLIT_DIGITS);
    json_t *pre = json_object_get(root, "pre_tokenizer"), *bl = pre;
    json_t *list = json_object_get(pre, "pretokenizers");
    if (json_is_array(list)) bl = json_array_get(list, json_array_size(list) - 1);
    if (st == ORC_OK && json_is_true(json_object_get(bl, "add_prefix_space")))
        st = orc_error_set(err, ORC_EUNSUPPORTED,
                           "gguf export: the tokenizer adds a prefix space (ByteLevel add_prefix_space); llama.cpp's "
                           "byte-level BPE has no such option");
    json_t *added = json_object_get(root, "added_tokens");
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        if (st != ORC_OK) break;
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!content || id < 0 || (uint64_t)id >= x->n) continue;
        free(x->tokens[id]);
        x->tokens[id] = strdup(content);
        x->types[id] = json_is_true(json_object_get(a, "special")) ? ORC_GGUF_TOKEN_CONTROL
                                                                   : ORC_GGUF_TOKEN_USER_DEFINED;
        if (!x->tokens[id]) st = orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    }
    json_decref(root);
    return st;
}

static orc_status build_tok_export(const orc_tokenizer *tok, int64_t vocab, tok_export *x, orc_error *err) {
    memset(x, 0, sizeof *x);
    const size_t n_tok = orc_tokenizer_vocab_size(tok);
    if ((int64_t)n_tok > vocab)
        return orc_error_set(err, ORC_ESHAPE,
                             "gguf export: the tokenizer has %zu tokens, more than the model's vocab_size %lld", n_tok,
                             (long long)vocab);
    x->n = (uint64_t)vocab;
    x->n_merges = orc_tokenizer_merge_count(tok);
    x->tokens = calloc(x->n, sizeof *x->tokens);
    x->types = calloc(x->n, sizeof *x->types);
    x->merges = calloc(x->n_merges + 1, sizeof *x->merges);
    if (!x->tokens || !x->types || !x->merges) return orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    for (uint64_t i = 0; i < x->n; i++) {
        size_t len = 0;
        const char *b = i < n_tok ? orc_tokenizer_id_to_token(tok, (int32_t)i, &len) : NULL;
        if (b) {
            x->tokens[i] = byte_level(b, len);
            x->types[i] = ORC_GGUF_TOKEN_NORMAL;
        } else {
            char pad[48];
            snprintf(pad, sizeof pad, "<|unused_%llu|>", (unsigned long long)i);
            x->tokens[i] = strdup(pad);
            x->types[i] = ORC_GGUF_TOKEN_UNUSED;
        }
        if (!x->tokens[i]) return orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    }
    if (orc_tokenizer_kind(tok) == ORC_TOK_SENTENCEPIECE) return build_spm_export(tok, x, err);
    orc_status st = read_added(tok, x, err);
    if (st != ORC_OK) return st;
    for (uint64_t r = 0; r < x->n_merges; r++) {
        int32_t l, rt, res;
        if ((st = orc_tokenizer_merge(tok, r, &l, &rt, &res, err)) != ORC_OK) return st;
        size_t la, lb;
        const char *a = orc_tokenizer_id_to_token(tok, l, &la), *b = orc_tokenizer_id_to_token(tok, rt, &lb);
        char *sa = byte_level(a, la), *sb = byte_level(b, lb);
        size_t n = (sa ? strlen(sa) : 0) + (sb ? strlen(sb) : 0) + 2;
        x->merges[r] = sa && sb ? malloc(n) : NULL;
        if (x->merges[r]) snprintf(x->merges[r], n, "%s %s", sa, sb);
        free(sa);
        free(sb);
        if (!x->merges[r]) return orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    }
    return ORC_OK;
}

static orc_status add_special_id(orc_gguf_writer *w, const char *key, int64_t id, orc_error *err) {
    return id >= 0 ? orc_gguf_add_u32(w, key, (uint32_t)id, err) : ORC_OK;
}

static orc_status add_tokenizer(orc_gguf_writer *w, const orc_llm *m, const orc_tokenizer *tok, tok_export *x,
                                orc_error *err) {
    orc_status st = build_tok_export(tok, m->cfg.vocab_size, x, err);
    const bool digits = orc_tokenizer_pretok_mode(tok) == ORC_PRETOK_SPLIT_DIGITS;
    int64_t bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    int64_t eos = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    if (eos < 0) eos = orc_tokenizer_special_id(tok, "<|endoftext|>");
    if (m->cfg.bos_token_id >= 0) bos = m->cfg.bos_token_id;
    if (m->cfg.eos_token_id >= 0) eos = m->cfg.eos_token_id;
    const int64_t eot = orc_tokenizer_special_id(tok, ORC_TOK_END), pad = orc_tokenizer_special_id(tok, ORC_TOK_PAD);
    const bool spm = orc_tokenizer_kind(tok) == ORC_TOK_SENTENCEPIECE;
    if (spm) {
        int64_t id = orc_tokenizer_special_id(tok, "<s>");
        if (bos < 0) bos = id;
        if (eos < 0) eos = orc_tokenizer_special_id(tok, "</s>");
    }
    if (st == ORC_OK) st = orc_gguf_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err);
    if (st == ORC_OK && !spm)
        st = orc_gguf_add_str(w, "tokenizer.ggml.pre", digits ? ORC_GGUF_PRE_SPLIT_DIGITS : ORC_GGUF_PRE_GPT2, err);
    if (st == ORC_OK)
        st = orc_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)x->tokens, x->n, err);
    if (st == ORC_OK && spm) st = orc_gguf_add_arr(w, "tokenizer.ggml.scores", ORC_GGUF_FLOAT32, x->scores, x->n, err);
    if (st == ORC_OK) st = orc_gguf_add_arr(w, "tokenizer.ggml.token_type", ORC_GGUF_INT32, x->types, x->n, err);
    if (st == ORC_OK && !spm)
        st = orc_gguf_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)x->merges, x->n_merges, err);
    if (st == ORC_OK && spm)
        st = orc_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", orc_tokenizer_space_prefix(tok), err);
    if (st == ORC_OK) st = add_special_id(w, "tokenizer.ggml.bos_token_id", bos, err);
    if (st == ORC_OK) st = add_special_id(w, "tokenizer.ggml.eos_token_id", eos, err);
    if (st == ORC_OK) st = add_special_id(w, "tokenizer.ggml.eot_token_id", eot, err);
    if (st == ORC_OK) st = add_special_id(w, "tokenizer.ggml.padding_token_id", pad, err);
    /* orchard's documents end with the end-of-text token and start with nothing. */
    if (st == ORC_OK) st = orc_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", false, err);
    if (st == ORC_OK) st = orc_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", false, err);
    const bool has_chat = orc_tokenizer_special_id(tok, ORC_TOK_USER) >= 0 &&
                          orc_tokenizer_special_id(tok, ORC_TOK_ASSISTANT) >= 0 && eot >= 0;
    if (st == ORC_OK && has_chat) st = orc_gguf_add_str(w, "tokenizer.chat_template", orc_gguf_chat_template, err);
    return st;
}

/* ---- export ---------------------------------------------------------------------------- */

static orc_status add_hparams(orc_gguf_writer *w, const orc_llm_config *c, const char *name, uint32_t file_type,
                              orc_error *err) {
    orc_status st = orc_gguf_add_str(w, "general.architecture", "llama", err);
    if (st == ORC_OK) st = orc_gguf_add_str(w, "general.name", name, err);
    if (st == ORC_OK) st = orc_gguf_add_u32(w, "general.file_type", file_type, err);
    const struct { const char *key; int64_t v; } u[] = {
        {"llama.vocab_size", c->vocab_size},
        {"llama.context_length", c->max_position_embeddings},
        {"llama.embedding_length", c->hidden_size},
        {"llama.block_count", c->num_hidden_layers},
        {"llama.feed_forward_length", c->intermediate_size},
        {"llama.attention.head_count", c->num_attention_heads},
        {"llama.attention.head_count_kv", c->num_key_value_heads},
        {"llama.attention.key_length", c->head_dim},
        {"llama.attention.value_length", c->head_dim},
        {"llama.rope.dimension_count", c->head_dim},
    };
    for (size_t i = 0; st == ORC_OK && i < sizeof u / sizeof u[0]; i++)
        st = orc_gguf_add_u32(w, u[i].key, (uint32_t)u[i].v, err);
    if (st == ORC_OK) st = orc_gguf_add_f32(w, "llama.rope.freq_base", (float)c->rope_theta, err);
    if (st == ORC_OK)
        st = orc_gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps, err);
    return st;
}

orc_status orc_llm_export_gguf(const orc_llm *m, const orc_tokenizer *tok, const char *path,
                               const orc_gguf_export_opts *opts, orc_error *err) {
    if (!m || !path) return orc_error_set(err, ORC_EINVAL, "gguf export: NULL model or path");
    const orc_llm_config *c = &m->cfg;
    if (c->num_experts > 0)
        return orc_error_set(err, ORC_EUNSUPPORTED,
                             "gguf export: %s: mixture-of-experts models (num_experts = %lld) cannot be exported to "
                             "GGUF yet",
                             path, (long long)c->num_experts);
    const orc_ggml_type type = opts && opts->type ? opts->type : ORC_GGML_F32;
    if (type != ORC_GGML_F32 && type != ORC_GGML_F16)
        return orc_error_set(err, ORC_EUNSUPPORTED, "gguf export: tensor type %s is not offered (F32 or F16)",
                             orc_ggml_type_name(type));
    if (c->qk_norm)
        return orc_error_set(err, ORC_EUNSUPPORTED,
                             "gguf export: %s: the model uses QK-norm, which llama.cpp's `llama` architecture does "
                             "not have (its `qwen3` architecture would, but the llama.cpp this was checked "
                             "against predates it)",
                             path);
    orc_gguf_writer *w = orc_gguf_writer_new(err);
    if (!w) return err ? err->code : ORC_ENOMEM;
    const int n_max = (int)(c->num_hidden_layers * 9 + 3);
    name_map *map = calloc((size_t)n_max, sizeof *map);
    float **perm = calloc((size_t)n_max, sizeof *perm);
    tok_export x = {0};
    orc_status st = map && perm ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
    /* general.file_type: llama_ftype ALL_F32 = 0, MOSTLY_F16 = 1 */
    if (st == ORC_OK)
        st = add_hparams(w, c, opts && opts->name ? opts->name : "orchard", type == ORC_GGML_F16 ? 1u : 0u, err);
    if (st == ORC_OK && tok) st = add_tokenizer(w, m, tok, &x, err);
    const int n = st == ORC_OK ? map_params(m, map) : 0;
    for (int i = 0; st == ORC_OK && i < n; i++) {
        const orc_tensor *t = map[i].t;
        const float *data = orc_f32(t);
        if (map[i].permute_heads) {
            perm[i] = malloc(sizeof(float) * (size_t)t->numel);
            if (!perm[i]) {
                st = orc_error_set(err, ORC_ENOMEM, "gguf export: out of memory");
                break;
            }
            orc_gguf_permute_qk(perm[i], data, map[i].permute_heads, c->head_dim, t->shape[1], true);
            data = perm[i];
        }
        st = orc_gguf_add_tensor_f32(w, map[i].name, t->ndim == 1 ? ORC_GGML_F32 : type, t->ndim, t->shape, data,
                                     err);
    }
    if (st == ORC_OK) st = orc_gguf_write(w, path, err);
    for (int i = 0; perm && i < n_max; i++) free(perm[i]);
    free(perm);
    free(map);
    tok_export_free(&x);
    orc_gguf_writer_free(w);
    return st;
}

/* ---- import: configuration ---------------------------------------------------------- */

static orc_status opt_u32(const orc_gguf_file *f, const char *key, int64_t *out, orc_error *err) {
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, key);
    if (!kv) return ORC_OK;
    uint32_t v;
    orc_status st = orc_gguf_kv_get_u32(kv, &v, err);
    if (st == ORC_OK) *out = v;
    return st;
}

/* A float32 key as the shortest decimal that rounds to it (1e-05, not
 * 9.99999974738e-06), so a config survives export and import unchanged. */
static double short_decimal(float v) {
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        double d = strtod(buf, NULL);
        if ((float)d == v) return d;
    }
    return (double)v;
}

static orc_status opt_f32(const orc_gguf_file *f, const char *key, double *out, orc_error *err) {
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, key);
    if (!kv) return ORC_OK;
    float v;
    orc_status st = orc_gguf_kv_get_f32(kv, &v, err);
    if (st == ORC_OK) *out = short_decimal(v);
    return st;
}

/* Features of a `llama` file that orchard's model does not have. */
static orc_status check_unsupported(const orc_gguf_file *f, const char *path, orc_error *err) {
    int64_t experts = 0;
    orc_status st = opt_u32(f, "llama.expert_count", &experts, err);
    if (st != ORC_OK) return st;
    if (experts > 0)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: a mixture of %lld experts is not supported", path,
                             (long long)experts);
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, "llama.rope.scaling.type");
    const char *scaling = NULL;
    if (kv && orc_gguf_kv_get_str(kv, &scaling, NULL, err) != ORC_OK) return err ? err->code : ORC_EFORMAT;
    double factor = 1.0;
    if ((st = opt_f32(f, "llama.rope.scaling.factor", &factor, err)) != ORC_OK) return st;
    if (scaling && strcmp(scaling, "none") != 0 && !(strcmp(scaling, "linear") == 0 && factor == 1.0))
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: RoPE scaling '%s' is not supported", path, scaling);
    const char *extra[] = {"rope_freqs.weight", "blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias",
                           "blk.0.attn_output.bias", "blk.0.ffn_gate.bias", "blk.0.ffn_up.bias",
                           "blk.0.ffn_down.bias"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (orc_gguf_find_tensor(f, extra[i]))
            return orc_error_set(err, ORC_EUNSUPPORTED, "%s: tensor '%s' (%s) is not supported by orchard's model",
                                 path, extra[i], i == 0 ? "RoPE frequency factors" : "a bias");
    return ORC_OK;
}

orc_status orc_llm_config_from_gguf(const orc_gguf_file *f, const char *path, orc_llm_config *cfg, orc_error *err) {
    const char *arch = NULL;
    orc_status st = orc_gguf_get_str(f, "general.architecture", &arch, NULL, err);
    if (st != ORC_OK) return st;
    if (strcmp(arch, "llama") != 0)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: architecture '%s' is not supported (only 'llama')", path,
                             arch);
    if ((st = check_unsupported(f, path, err)) != ORC_OK) return st;
    orc_llm_config_default(cfg);
    uint32_t v;
    const struct { const char *key; int64_t *out; } req[] = {
        {"llama.embedding_length", &cfg->hidden_size},
        {"llama.block_count", &cfg->num_hidden_layers},
        {"llama.feed_forward_length", &cfg->intermediate_size},
        {"llama.attention.head_count", &cfg->num_attention_heads},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        if ((st = orc_gguf_get_u32(f, req[i].key, &v, err)) != ORC_OK) return st;
        *req[i].out = v;
    }
    cfg->num_key_value_heads = cfg->num_attention_heads;
    cfg->max_position_embeddings = 2048;
    cfg->head_dim = cfg->num_attention_heads ? cfg->hidden_size / cfg->num_attention_heads : 0;
    cfg->rope_theta = 10000.0; /* llama.cpp's default when the key is absent */
    int64_t v_len = -1, rot = -1, bos = -1, eos = -1;
    if ((st = opt_u32(f, "llama.attention.head_count_kv", &cfg->num_key_value_heads, err)) ||
        (st = opt_u32(f, "llama.context_length", &cfg->max_position_embeddings, err)) ||
        (st = opt_u32(f, "llama.attention.key_length", &cfg->head_dim, err)) ||
        (st = opt_u32(f, "llama.attention.value_length", &v_len, err)) ||
        (st = opt_u32(f, "llama.rope.dimension_count", &rot, err)) ||
        (st = opt_u32(f, "tokenizer.ggml.bos_token_id", &bos, err)) ||
        (st = opt_u32(f, "tokenizer.ggml.eos_token_id", &eos, err)) ||
        (st = opt_f32(f, "llama.rope.freq_base", &cfg->rope_theta, err)))
        return st;
    float eps;
    if ((st = orc_gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps, err)) != ORC_OK) return st;
    cfg->rms_norm_eps = short_decimal(eps);
    if (v_len >= 0 && v_len != cfg->head_dim)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: value_length %lld differs from key_length %lld", path,
                             (long long)v_len, (long long)cfg->head_dim);
    if (rot >= 0 && rot != cfg->head_dim)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: partial RoPE (rope.dimension_count %lld of head_dim %lld)",
                             path, (long long)rot, (long long)cfg->head_dim);
    const orc_gguf_tensor_info *emb = orc_gguf_find_tensor(f, "token_embd.weight");
    if (!emb) return orc_error_set(err, ORC_EFORMAT, "%s: tensor 'token_embd.weight' is missing", path);
    cfg->vocab_size = emb->n_dims == 2 ? emb->shape[0] : 0;
    if ((st = opt_u32(f, "llama.vocab_size", &cfg->vocab_size, err)) != ORC_OK) return st;
    cfg->tie_word_embeddings = orc_gguf_find_tensor(f, "output.weight") == NULL;
    cfg->bos_token_id = bos < cfg->vocab_size ? bos : -1;
    cfg->eos_token_id = eos < cfg->vocab_size ? eos : -1;
    orc_error local = {0};
    if (orc_llm_config_validate(cfg, &local) != ORC_OK)
        return orc_error_set(err, local.code, "%s: %.400s", path, local.msg);
    return ORC_OK;
}

/* ---- import: weights --------------------------------------------------------------- */

static orc_status read_param(const orc_gguf_file *f, const char *path, const name_map *p, int64_t head_dim,
                             orc_error *err) {
    const orc_gguf_tensor_info *ti = orc_gguf_find_tensor(f, p->name);
    if (!ti) return orc_error_set(err, ORC_EFORMAT, "%s: tensor '%s' is missing", path, p->name);
    const orc_tensor *t = p->t;
    bool same = ti->n_dims == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = ti->shape[d] == t->shape[d];
    if (!same) {
        char want[96], got[96];
        orc_shape_str(want, sizeof want, t->ndim, t->shape);
        orc_shape_str(got, sizeof got, ti->n_dims, ti->shape);
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' has shape %s, the config needs %s", path, p->name, got,
                             want);
    }
    orc_error local = {0};
    if (!p->permute_heads) {
        if (orc_gguf_read_f32(f, p->name, orc_f32(t), t->numel, &local) != ORC_OK)
            return orc_error_set(err, local.code, "%s: tensor '%s': %.400s", path, p->name, local.msg);
        return ORC_OK;
    }
    float *tmp = malloc(sizeof(float) * (size_t)t->numel);
    if (!tmp) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    orc_status st = orc_gguf_read_f32(f, p->name, tmp, t->numel, &local);
    if (st == ORC_OK)
        orc_gguf_permute_qk(orc_f32(t), tmp, p->permute_heads, head_dim, t->shape[1], false);
    else
        orc_error_set(err, local.code, "%s: tensor '%s': %.400s", path, p->name, local.msg);
    free(tmp);
    return st;
}

orc_llm *orc_llm_from_gguf(const orc_gguf_file *f, const char *path, bool with_grad, orc_error *err) {
    orc_llm_config cfg;
    if (orc_llm_config_from_gguf(f, path, &cfg, err) != ORC_OK) return NULL;
    orc_llm *m = orc_llm_create(&cfg, with_grad, err);
    if (!m) return NULL;
    name_map *map = calloc((size_t)(cfg.num_hidden_layers * 9 + 3), sizeof *map);
    orc_status st = map ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    const int n = map ? map_params(m, map) : 0;
    for (int i = 0; st == ORC_OK && i < n; i++) st = read_param(f, path, &map[i], cfg.head_dim, err);
    free(map);
    if (st != ORC_OK) {
        orc_llm_free(m);
        return NULL;
    }
    return m;
}

orc_llm *orc_llm_load_gguf(const char *path, bool with_grad, orc_error *err) {
    orc_gguf_file *f = orc_gguf_open(path, err);
    if (!f) return NULL;
    orc_llm *m = orc_llm_from_gguf(f, path, with_grad, err);
    orc_gguf_close(f);
    return m;
}

/* ---- import: tokenizer ------------------------------------------------------------- */

typedef struct gguf_vocab {
    uint64_t n;
    int32_t *types; /* [n]; NORMAL when the file has no token_type */
    float *scores;  /* [n] or NULL */
    const orc_gguf_kv *tokens;
} gguf_vocab;

static orc_status read_vocab(const orc_gguf_file *f, const char *path, gguf_vocab *v, orc_error *err) {
    memset(v, 0, sizeof *v);
    v->tokens = orc_gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (!v->tokens || orc_gguf_kv_type(v->tokens) != ORC_GGUF_ARRAY ||
        orc_gguf_kv_elem_type(v->tokens) != ORC_GGUF_STRING)
        return orc_error_set(err, ORC_EFORMAT, "%s: tokenizer.ggml.tokens is missing or not a string array", path);
    v->n = orc_gguf_kv_len(v->tokens);
    if (v->n == 0 || v->n >= ORC_TOK_MAX_VOCAB)
        return orc_error_set(err, ORC_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                             (unsigned long long)v->n);
    v->types = malloc(sizeof(int32_t) * v->n);
    if (!v->types) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < v->n; i++) v->types[i] = ORC_GGUF_TOKEN_NORMAL;
    orc_status st = ORC_OK;
    if (orc_gguf_find_kv(f, "tokenizer.ggml.token_type"))
        st = orc_gguf_get_arr_i32(f, "tokenizer.ggml.token_type", v->types, v->n, err);
    if (st == ORC_OK && orc_gguf_find_kv(f, "tokenizer.ggml.scores")) {
        v->scores = malloc(sizeof(float) * v->n);
        st = v->scores ? orc_gguf_get_arr_f32(f, "tokenizer.ggml.scores", v->scores, v->n, err)
                       : orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    }
    return st;
}

static void vocab_free(gguf_vocab *v) {
    free(v->types);
    free(v->scores);
}

static json_t *added_token(uint64_t id, const char *content, bool special) {
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", content, "single_word", 0,
                     "lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
}

/* Hugging Face's regex for each llama.cpp pre-tokenizer family orchard's
 * tokenizer module does not implement (from llama-vocab.cpp's comments). */
static const char *const RE_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char *const RE_QWEN2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

static bool in_list(const char *s, const char *const *list) {
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return true;
    return false;
}

/* The pre_tokenizer JSON for llama.cpp's pre-tokenizer name, or NULL. */
static json_t *pretok_for(const char *pre, bool *ignore_merges) {
    static const char *const digits[] = {"smollm", "refact", "starcoder", "codeshell", "exaone", "minerva-7b",
                                         "command-r", NULL};
    static const char *const gpt2[] = {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en",
                                       "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo",
                                       "jais", NULL};
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", NULL};
    *ignore_merges = false;
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                           "use_regex", 1);
    if (in_list(pre, gpt2)) return bl;
    const char *re = NULL;
    const bool digit_split = in_list(pre, digits);
    if (digit_split) {
        re = "\\p{N}";
    } else if (in_list(pre, llama3)) {
        re = RE_LLAMA3;
        *ignore_merges = strncmp(pre, "llama", 5) == 0 || strcmp(pre, "falcon3") == 0;
    } else if (in_list(pre, qwen2)) {
        re = RE_QWEN2;
    }
    if (!re) {
        json_decref(bl);
        return NULL;
    }
    /* the digit split is followed by GPT-2's pattern; the others replace it */
    if (!digit_split) json_object_set_new(bl, "use_regex", json_false());
    json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", re, "behavior",
                              "Isolated", "invert", 0);
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split, bl);
}

static char *dump_root(json_t *root, const char *path, orc_error *err) {
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text) orc_error_set(err, ORC_ENOMEM, "%s: cannot build tokenizer.json (out of memory or invalid UTF-8)", path);
    return text;
}

/* `gpt2` kind: byte-level strings; control/user-defined tokens become added
 * tokens; unused tokens at the end (vocabulary padding) are dropped. */
static char *gpt2_json(const orc_gguf_file *f, const char *path, const gguf_vocab *v, orc_error *err) {
    const char *pre = NULL;
    const orc_gguf_kv *pkv = orc_gguf_find_kv(f, "tokenizer.ggml.pre");
    if (!pkv) {
        orc_error_set(err, ORC_EUNSUPPORTED,
                      "%s: the gpt2 tokenizer has no tokenizer.ggml.pre; llama.cpp's fallback split has no "
                      "tokenizer.json form",
                      path);
        return NULL;
    }
    if (orc_gguf_kv_get_str(pkv, &pre, NULL, err) != ORC_OK) return NULL;
    bool ignore_merges = false;
    json_t *pretok = pretok_for(pre, &ignore_merges);
    if (!pretok) {
        orc_error_set(err, ORC_EUNSUPPORTED, "%s: pre-tokenizer '%s' (tokenizer.ggml.pre) is not known to orchard's import",
                      path, pre);
        return NULL;
    }
    const orc_gguf_kv *mkv = orc_gguf_find_kv(f, "tokenizer.ggml.merges");
    if (!mkv || orc_gguf_kv_type(mkv) != ORC_GGUF_ARRAY || orc_gguf_kv_elem_type(mkv) != ORC_GGUF_STRING) {
        json_decref(pretok);
        orc_error_set(err, ORC_EFORMAT, "%s: tokenizer.ggml.merges is missing or not a string array", path);
        return NULL;
    }
    uint64_t n = v->n;
    while (n > 1 && v->types[n - 1] == ORC_GGUF_TOKEN_UNUSED) n--;
    json_t *vocab = json_object(), *added = json_array(), *merges = json_array();
    bool ok = vocab && added && merges;
    for (uint64_t i = 0; ok && i < n; i++) {
        const char *s = orc_gguf_kv_arr_str(v->tokens, i, NULL);
        if (v->types[i] == ORC_GGUF_TOKEN_NORMAL) {
            if (json_object_get(vocab, s)) {
                orc_error_set(err, ORC_EFORMAT, "%s: token %llu '%.80s' appears twice in tokenizer.ggml.tokens", path,
                              (unsigned long long)i, s);
                ok = false;
                break;
            }
            ok = json_object_set_new(vocab, s, json_integer((json_int_t)i)) == 0;
        } else {
            bool special = v->types[i] != ORC_GGUF_TOKEN_USER_DEFINED;
            ok = json_array_append_new(added, added_token(i, s, special)) == 0;
        }
    }
    for (uint64_t r = 0; ok && r < orc_gguf_kv_len(mkv); r++)
        ok = json_array_append_new(merges, json_string(orc_gguf_kv_arr_str(mkv, r, NULL))) == 0;
    if (!ok) {
        json_decref(vocab);
        json_decref(added);
        json_decref(merges);
        json_decref(pretok);
        orc_error_set(err, ORC_EFORMAT, "%s: the vocabulary or merges are not valid UTF-8", path);
        return NULL;
    }
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", ignore_merges, "vocab", vocab, "merges", merges);
    json_t *dec = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:o, s:o}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pretok,
                             "post_processor", "decoder", dec, "model", model);
    return dump_root(root, path, err);
}

/* ---- SentencePiece (`llama` kind) ---- */

typedef struct spm_merge {
    float score;
    int64_t left, right;
} spm_merge;

static int cmp_merge(const void *pa, const void *pb) {
    const spm_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->left != b->left) return a->left < b->left ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

/* Merges as Hugging Face's SentencePiece converter derives them: every split
 * of a piece into two pieces of the vocabulary, ranked by the merged piece's
 * score (llama.cpp's SPM tokenizer merges the best-scoring pair first). */
static json_t *spm_merges(const gguf_vocab *v, json_t *vocab) {
    size_t cap = 1024, n = 0;
    spm_merge *list = malloc(cap * sizeof *list);
    char buf[1024];
    for (uint64_t i = 0; list && i < v->n; i++) {
        if (v->types[i] != ORC_GGUF_TOKEN_NORMAL) continue;
        size_t len = 0;
        const char *s = orc_gguf_kv_arr_str(v->tokens, i, &len);
        if (len >= sizeof buf) continue;
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)s[k] & 0xC0) == 0x80) continue; /* inside a UTF-8 character */
            memcpy(buf, s, k);
            buf[k] = '\0';
            json_t *l = json_object_get(vocab, buf);
            json_t *r = json_object_get(vocab, s + k);
            if (!l || !r) continue;
            if (n == cap) {
                spm_merge *g = realloc(list, 2 * cap * sizeof *list);
                if (!g) {
                    free(list);
                    return NULL;
                }
                list = g;
                cap *= 2;
            }
            list[n++] = (spm_merge){v->scores ? v->scores[i] : 0.0f, json_integer_value(l), json_integer_value(r)};
        }
    }
    if (!list) return NULL;
    qsort(list, n, sizeof *list, cmp_merge);
    json_t *out = json_array();
    for (size_t i = 0; out && i < n; i++) {
        snprintf(buf, sizeof buf, "%s %s", orc_gguf_kv_arr_str(v->tokens, (uint64_t)list[i].left, NULL),
                 orc_gguf_kv_arr_str(v->tokens, (uint64_t)list[i].right, NULL));
        if (json_array_append_new(out, json_string(buf)) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    free(list);
    return out;
}

/* `llama` kind: Hugging Face's form of a SentencePiece BPE model with byte
 * fallback (Llama 2's tokenizer.json): "▁" for spaces via a normalizer,
 * <0xNN> byte tokens, merges from the scores. */
static char *spm_json(const orc_gguf_file *f, const char *path, const gguf_vocab *v, orc_error *err) {
    bool prefix = true;
    const orc_gguf_kv *akv = orc_gguf_find_kv(f, "tokenizer.ggml.add_space_prefix");
    if (akv && orc_gguf_kv_get_bool(akv, &prefix, err) != ORC_OK) return NULL;
    json_t *vocab = json_object(), *added = json_array();
    const char *unk = NULL;
    bool ok = vocab && added;
    for (uint64_t i = 0; ok && i < v->n; i++) {
        const char *s = orc_gguf_kv_arr_str(v->tokens, i, NULL);
        if (json_object_get(vocab, s)) continue; /* keep the first id of a duplicated piece */
        ok = json_object_set_new(vocab, s, json_integer((json_int_t)i)) == 0;
        int32_t t = v->types[i];
        if (t == ORC_GGUF_TOKEN_UNKNOWN && !unk) unk = s;
        if (ok && (t == ORC_GGUF_TOKEN_CONTROL || t == ORC_GGUF_TOKEN_UNKNOWN || t == ORC_GGUF_TOKEN_USER_DEFINED))
            ok = json_array_append_new(added, added_token(i, s, t != ORC_GGUF_TOKEN_USER_DEFINED)) == 0;
    }
    json_t *merges = ok ? spm_merges(v, vocab) : NULL;
    if (!merges) {
        json_decref(vocab);
        json_decref(added);
        orc_error_set(err, ORC_EFORMAT, "%s: the SentencePiece vocabulary is not valid UTF-8 (or out of memory)", path);
        return NULL;
    }
    json_t *model = json_pack("{s:s, s:n, s:s?, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", unk, "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 1,
                              "byte_fallback", 1, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    json_t *replace = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81");
    json_t *norm = prefix ? json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence", "normalizers", "type", "Prepend",
                                      "prepend", "\xe2\x96\x81", replace)
                          : replace;
    json_t *dec = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                            "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type",
                            "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", prefix ? 1 : 0,
                            "stop", 0);
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:o, s:n, s:n, s:o, s:o}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", norm, "pre_tokenizer", "post_processor",
                             "decoder", dec, "model", model);
    return dump_root(root, path, err);
}

char *orc_gguf_tokenizer_json(const orc_gguf_file *f, const char *path, orc_error *err) {
    const char *kind = NULL;
    const orc_gguf_kv *kkv = orc_gguf_find_kv(f, "tokenizer.ggml.model");
    if (!kkv) {
        orc_error_set(err, ORC_EUNSUPPORTED, "%s: the file has no tokenizer (tokenizer.ggml.model)", path);
        return NULL;
    }
    if (orc_gguf_kv_get_str(kkv, &kind, NULL, err) != ORC_OK) return NULL;
    bool gpt2 = strcmp(kind, "gpt2") == 0, spm = strcmp(kind, "llama") == 0;
    if (!gpt2 && !spm) {
        orc_error_set(err, ORC_EUNSUPPORTED, "%s: tokenizer kind '%s' is not supported (gpt2 or llama)", path, kind);
        return NULL;
    }
    gguf_vocab v;
    char *text = NULL;
    if (read_vocab(f, path, &v, err) == ORC_OK) text = gpt2 ? gpt2_json(f, path, &v, err) : spm_json(f, path, &v, err);
    vocab_free(&v);
    return text;
}

/* ---- import ------------------------------------------------------------------------ */

static orc_status write_text(const char *path, const char *text, orc_error *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot write: %s", path, strerror(errno));
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, fp) == len;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return orc_error_set(err, ORC_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return ORC_OK;
}

static void import_tokenizer(const orc_gguf_file *f, const char *gguf_path, const char *dir, orc_gguf_tok_info *info) {
    const char *s = NULL;
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, "tokenizer.ggml.model");
    if (kv && orc_gguf_kv_get_str(kv, &s, NULL, NULL) == ORC_OK) snprintf(info->kind, sizeof info->kind, "%s", s);
    kv = orc_gguf_find_kv(f, "tokenizer.ggml.pre");
    if (kv && orc_gguf_kv_get_str(kv, &s, NULL, NULL) == ORC_OK) snprintf(info->pre, sizeof info->pre, "%s", s);
    orc_error local = {0};
    char *text = orc_gguf_tokenizer_json(f, gguf_path, &local);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!text || write_text(path, text, &local) != ORC_OK) {
        snprintf(info->note, sizeof info->note, "no tokenizer.json written: %.440s", local.msg);
        free(text);
        return;
    }
    info->written = true;
    orc_tokenizer *tok = orc_tokenizer_from_json(text, strlen(text), path, &local);
    free(text);
    info->loadable = tok != NULL;
    if (!tok)
        snprintf(info->note, sizeof info->note, "tokenizer.json written, but orchard's tokenizer cannot run it: %.400s",
                 local.msg);
    orc_tokenizer_free(tok);
}

/* Keep the file's tokenizer.chat_template as DIR/chat_template when orchard
 * recognises it (orchard, ChatML, Llama-3), written as the template's name so
 * `orchard chat` and `orchard serve` pick the same format the file asks for.
 * An unrecognised template is left out: the special tokens still decide. */
static orc_status import_chat_template(const orc_gguf_file *f, const char *dir, orc_error *err) {
    const char *text = NULL;
    size_t len = 0;
    if (orc_gguf_get_str(f, "tokenizer.chat_template", &text, &len, NULL) != ORC_OK || !text) return ORC_OK;
    orc_chat_template t;
    if (orc_chat_template_parse(text, &t, NULL) != ORC_OK || t == ORC_CHAT_AUTO) return ORC_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template", dir);
    const char *name = orc_chat_template_name(t);
    return orc_write_file_atomic(path, name, strlen(name), "import", err);
}

orc_status orc_llm_import_gguf(const char *gguf_path, const char *dir, orc_gguf_tok_info *info, orc_error *err) {
    orc_gguf_tok_info local_info;
    if (!info) info = &local_info;
    memset(info, 0, sizeof *info);
    orc_gguf_file *f = orc_gguf_open(gguf_path, err);
    if (!f) return err ? err->code : ORC_EIO;
    orc_llm *m = orc_llm_from_gguf(f, gguf_path, false, err);
    orc_status st = m ? orc_llm_save(m, dir, err) : (err ? err->code : ORC_EFORMAT);
    if (st == ORC_OK) import_tokenizer(f, gguf_path, dir, info);
    if (st == ORC_OK) st = import_chat_template(f, dir, err);
    orc_llm_free(m);
    orc_gguf_close(f);
    return st;
}
