/* GGUF export/import of the LM (orchard/llm_gguf.h), without llama.cpp:
 * export -> import gives identical tensors, config and logits; the q/k row
 * permutation is the one that turns orchard's half-split RoPE into
 * llama.cpp's adjacent-pair RoPE, and import inverts it exactly; f16 export
 * is f16 rounding; the tokenizer keys (types, merges, specials, pre name,
 * chat template) round-trip to a tokenizer that encodes the same; a
 * SentencePiece vocabulary becomes Hugging Face's byte-fallback form; bad
 * inputs give errors naming the file and the tensor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/llm.h"
#include "orchard/llm_gguf.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "testdir.h"

static void fill_rand(float *x, int64_t n, uint64_t seed) {
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_uniform(&r, x, n, -1.0f, 1.0f);
}

static orc_llm_config small_config(bool tied) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 48;
    c.vocab_size = 300;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    return c;
}

static const char *SAMPLE = "The 3 models ran 1790 steps; it's fine.\n  Tabs\tand  spaces!";

static orc_tokenizer *small_tokenizer(void) {
    const char *texts[] = {"the theme of the thesis: 1234 then 5678, there and their other thing's theory",
                           "hello world, hello there; the world is there 42 times"};
    size_t lens[] = {strlen(texts[0]), strlen(texts[1])};
    orc_tokenizer_train_opts o = {.vocab_size = 290};
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_train(texts, lens, 2, &o, &err);
    assert_non_null(t);
    return t;
}

typedef struct tmpdir {
    char dir[64];
    char gguf[128];
    char out[128];
} tmpdir;

static void tmp_make(tmpdir *t) {
    assert_int_equal(orc_test_dir_make(t->dir, sizeof t->dir, "ggufm"), 0);
    snprintf(t->gguf, sizeof t->gguf, "%s/m.gguf", t->dir);
    snprintf(t->out, sizeof t->out, "%s/imported", t->dir);
}

static float *logits_of(orc_llm *m, const int32_t *ids, int64_t n) {
    orc_arena *a = orc_arena_create(16 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_set_no_grad(&ctx, true);
    orc_tensor *t = orc_tensor_zeros(a, ORC_I32, 2, ORC_SHAPE(1, n), NULL);
    memcpy(orc_i32(t), ids, sizeof(int32_t) * (size_t)n);
    orc_tensor *lg = orc_llm_forward(&ctx, m, t, NULL);
    assert_non_null(lg);
    float *out = malloc(sizeof(float) * (size_t)lg->numel);
    memcpy(out, orc_f32(lg), sizeof(float) * (size_t)lg->numel);
    orc_arena_destroy(a);
    return out;
}

/* ---- the permutation ---------------------------------------------------------- */

static void test_permutation_inverts_exactly(void **state) {
    (void)state;
    const int64_t H = 3, hd = 8, cols = 5, n = H * hd * cols;
    float src[120], mid[120], back[120];
    for (int64_t i = 0; i < n; i++) src[i] = (float)i;
    orc_gguf_permute_qk(mid, src, H, hd, cols, true);
    orc_gguf_permute_qk(back, mid, H, hd, cols, false);
    assert_memory_equal(src, back, sizeof src);
    /* head 1, pair i = 2: orchard rows 8+2 (first half) and 8+6 (second half)
     * sit next to each other in llama.cpp's layout, at rows 8+4 and 8+5 */
    assert_true(mid[(8 + 4) * cols] == src[(8 + 2) * cols]);
    assert_true(mid[(8 + 5) * cols] == src[(8 + 6) * cols]);
    assert_true(mid[0] == src[0] && mid[1 * cols] == src[4 * cols]);
}

/* Rotate one head of q at position p: half-split pairs (orchard, HF) or
 * adjacent pairs (llama.cpp's LLAMA_ROPE_TYPE_NORM). */
static void rope_head(float *q, int64_t hd, double p, double base, bool adjacent) {
    for (int64_t i = 0; i < hd / 2; i++) {
        double ang = p * pow(base, -2.0 * (double)i / (double)hd);
        int64_t a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + hd / 2;
        double x = q[a], y = q[b];
        q[a] = (float)(x * cos(ang) - y * sin(ang));
        q[b] = (float)(x * sin(ang) + y * cos(ang));
    }
}

static void test_permutation_matches_adjacent_rope(void **state) {
    (void)state;
    const int64_t H = 2, hd = 8, D = 6, rows = H * hd;
    float w[96], wp[96], x[6], q[16], qp[16];
    fill_rand(w, rows * D, 11);
    fill_rand(x, D, 12);
    orc_gguf_permute_qk(wp, w, H, hd, D, true);
    for (int64_t r = 0; r < rows; r++) {
        q[r] = qp[r] = 0;
        for (int64_t c = 0; c < D; c++) {
            q[r] += w[r * D + c] * x[c];
            qp[r] += wp[r * D + c] * x[c];
        }
    }
    for (int64_t h = 0; h < H; h++) {
        rope_head(q + h * hd, hd, 5.0, 10000.0, false);
        rope_head(qp + h * hd, hd, 5.0, 10000.0, true);
    }
    /* the rotated vectors agree up to the same row permutation, so q.k dot
     * products (all attention sees) are unchanged */
    float q_as_gguf[16];
    orc_gguf_permute_qk(q_as_gguf, q, H, hd, 1, true);
    for (int64_t r = 0; r < rows; r++) assert_true(fabsf(q_as_gguf[r] - qp[r]) < 1e-6f);
}

/* ---- round trips ----------------------------------------------------------------- */

static void round_trip(bool tied) {
    tmpdir t;
    tmp_make(&t);
    orc_llm_config c = small_config(tied);
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-5;
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, 7);
    /* norms away from 1 so that a swapped norm would show */
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->ndim == 1) fill_rand(orc_f32(m->params[i]), m->params[i]->numel, 100 + (uint64_t)i);
    orc_tokenizer *tok = small_tokenizer();
    assert_int_equal(orc_llm_export_gguf(m, tok, t.gguf, NULL, &err), ORC_OK);

    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    assert_non_null(f);
    assert_int_equal(orc_gguf_tensor_count(f), (size_t)(2 * 9 + 2 + (tied ? 0 : 1)));
    assert_int_equal(orc_gguf_find_tensor(f, "output.weight") == NULL, tied);
    assert_non_null(orc_gguf_find_tensor(f, "blk.1.ffn_down.weight"));
    orc_gguf_close(f);

    orc_gguf_tok_info info;
    assert_int_equal(orc_llm_import_gguf(t.gguf, t.out, &info, &err), ORC_OK);
    assert_true(info.written && info.loadable);
    assert_string_equal(info.kind, "gpt2");
    assert_string_equal(info.pre, ORC_GGUF_PRE_SPLIT_DIGITS);
    /* The exported Jinja template comes back as the template's name. */
    {
        char tp[1024], got[64] = {0};
        snprintf(tp, sizeof tp, "%s/chat_template", t.out);
        FILE *ct = fopen(tp, "r");
        assert_non_null(ct);
        assert_non_null(fgets(got, sizeof got, ct));
        fclose(ct);
        assert_string_equal(got, "orchard");
    }
    orc_llm *back = orc_llm_load(t.out, false, &err);
    assert_non_null(back);
    assert_int_equal(back->n_params, m->n_params);
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *p = orc_llm_param(back, m->params[i]->name);
        assert_non_null(p);
        assert_memory_equal(orc_f32(p), orc_f32(m->params[i]), sizeof(float) * (size_t)p->numel);
    }
    assert_true(back->cfg.rope_theta == c.rope_theta && back->cfg.rms_norm_eps == c.rms_norm_eps);
    assert_int_equal(back->cfg.tie_word_embeddings, tied);
    assert_int_equal(back->cfg.num_key_value_heads, 2);
    assert_int_equal(back->cfg.head_dim, 8);
    assert_int_equal(back->cfg.max_position_embeddings, 64);

    int32_t ids[7] = {5, 99, 250, 3, 17, 288, 1};
    float *la = logits_of(m, ids, 7), *lb = logits_of(back, ids, 7);
    assert_memory_equal(la, lb, sizeof(float) * 7 * 300);
    free(la);
    free(lb);

    /* the imported tokenizer encodes as the original, specials included */
    orc_tokenizer *tok2 = orc_tokenizer_load(t.out, &err);
    assert_non_null(tok2);
    assert_int_equal(orc_tokenizer_vocab_size(tok2), orc_tokenizer_vocab_size(tok));
    assert_int_equal(orc_tokenizer_pretok_mode(tok2), ORC_PRETOK_SPLIT_DIGITS);
    char text[256];
    snprintf(text, sizeof text, "%s<|user|>hi<|end|>", SAMPLE);
    int32_t *a = NULL, *b = NULL;
    size_t na, nb;
    assert_int_equal(orc_tokenizer_encode(tok, text, strlen(text), ORC_TOK_ENCODE_SPECIAL, &a, &na, &err), ORC_OK);
    assert_int_equal(orc_tokenizer_encode(tok2, text, strlen(text), ORC_TOK_ENCODE_SPECIAL, &b, &nb, &err), ORC_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof(int32_t) * na);
    assert_true(orc_tokenizer_is_special(tok2, orc_tokenizer_special_id(tok, ORC_TOK_END)));
    free(a);
    free(b);
    orc_tokenizer_free(tok2);
    orc_tokenizer_free(tok);
    orc_llm_free(back);
    orc_llm_free(m);
    orc_test_dir_remove(t.dir);
}

static void test_round_trip_untied(void **state) {
    (void)state;
    round_trip(false);
}

static void test_round_trip_tied(void **state) {
    (void)state;
    round_trip(true);
}

static void test_tokenizer_keys(void **state) {
    (void)state;
    tmpdir t;
    tmp_make(&t);
    orc_llm_config c = small_config(true);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    orc_llm_init_weights(m, 1);
    orc_tokenizer *tok = small_tokenizer();
    orc_gguf_export_opts o = {.type = ORC_GGML_F32, .name = "tiny test"};
    assert_int_equal(orc_llm_export_gguf(m, tok, t.gguf, &o, &err), ORC_OK);
    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    assert_non_null(f);
    const char *s;
    assert_int_equal(orc_gguf_get_str(f, "general.architecture", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "llama");
    assert_int_equal(orc_gguf_get_str(f, "general.name", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "tiny test");
    assert_int_equal(orc_gguf_get_str(f, "tokenizer.ggml.model", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "gpt2");
    assert_int_equal(orc_gguf_get_str(f, "tokenizer.chat_template", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, orc_gguf_chat_template);
    uint32_t u;
    assert_int_equal(orc_gguf_get_u32(f, "llama.rope.dimension_count", &u, &err), ORC_OK);
    assert_int_equal(u, 8);
    assert_int_equal(orc_gguf_get_u32(f, "tokenizer.ggml.eot_token_id", &u, &err), ORC_OK);
    assert_int_equal((int32_t)u, orc_tokenizer_special_id(tok, ORC_TOK_END));
    /* 300 ids: the tokenizer's 290 and 10 unused ones */
    int32_t types[300];
    assert_int_equal(orc_gguf_get_arr_i32(f, "tokenizer.ggml.token_type", types, 300, &err), ORC_OK);
    assert_int_equal(types[' '], ORC_GGUF_TOKEN_NORMAL);
    assert_int_equal(types[orc_tokenizer_special_id(tok, ORC_TOK_USER)], ORC_GGUF_TOKEN_CONTROL);
    assert_int_equal(types[299], ORC_GGUF_TOKEN_UNUSED);
    const orc_gguf_kv *toks = orc_gguf_find_kv(f, "tokenizer.ggml.tokens");
    assert_string_equal(orc_gguf_kv_arr_str(toks, ' ', NULL), "\xc4\xa0"); /* GPT-2's "Ġ" */
    const orc_gguf_kv *merges = orc_gguf_find_kv(f, "tokenizer.ggml.merges");
    assert_int_equal(orc_gguf_kv_len(merges), orc_tokenizer_merge_count(tok));
    assert_non_null(strchr(orc_gguf_kv_arr_str(merges, 0, NULL), ' '));
    orc_gguf_close(f);
    orc_tokenizer_free(tok);
    orc_llm_free(m);
    orc_test_dir_remove(t.dir);
}

static void test_f16_export_is_f16_rounding(void **state) {
    (void)state;
    tmpdir t;
    tmp_make(&t);
    orc_llm_config c = small_config(false);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    orc_llm_init_weights(m, 3);
    orc_gguf_export_opts o = {.type = ORC_GGML_F16};
    assert_int_equal(orc_llm_export_gguf(m, NULL, t.gguf, &o, &err), ORC_OK);
    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    assert_int_equal(orc_gguf_find_tensor(f, "blk.0.attn_q.weight")->type, ORC_GGML_F16);
    assert_int_equal(orc_gguf_find_tensor(f, "blk.0.attn_norm.weight")->type, ORC_GGML_F32);
    uint32_t ft;
    assert_int_equal(orc_gguf_get_u32(f, "general.file_type", &ft, &err), ORC_OK);
    assert_int_equal(ft, 1);
    orc_gguf_close(f);
    orc_llm *back = orc_llm_load_gguf(t.gguf, false, &err);
    assert_non_null(back);
    for (int i = 0; i < m->n_params; i++) {
        const float *x = orc_f32(m->params[i]), *y = orc_f32(orc_llm_param(back, m->params[i]->name));
        for (int64_t j = 0; j < m->params[i]->numel; j++) {
            float want = m->params[i]->ndim == 1 ? x[j] : orc_st_f16_to_f32(orc_st_f32_to_f16(x[j]));
            assert_true(want == y[j]);
        }
    }
    orc_llm_free(back);
    orc_llm_free(m);
    orc_test_dir_remove(t.dir);
}

/* ---- errors ------------------------------------------------------------------------ */

static void test_qk_norm_is_refused(void **state) {
    (void)state;
    orc_llm_config c = small_config(true);
    c.qk_norm = true;
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_int_equal(orc_llm_export_gguf(m, NULL, "/tmp/orchard_never.gguf", NULL, &err), ORC_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "QK-norm"));
    assert_int_equal(access("/tmp/orchard_never.gguf", F_OK), -1);
    orc_llm_free(m);
}

/* Write a small GGUF with the keys of a 1-layer llama model and the
 * tensors of `model`, optionally renaming one tensor or changing the arch. */
static void write_variant(const char *path, const char *arch, const char *drop, bool bad_shape) {
    orc_llm_config c = small_config(true);
    c.num_hidden_layers = 1;
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_int_equal(orc_llm_export_gguf(m, NULL, path, NULL, &err), ORC_OK);
    orc_gguf_file *f = orc_gguf_open(path, &err);
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        const char *key = orc_gguf_kv_key(kv), *s;
        uint32_t u;
        float x;
        if (orc_gguf_kv_type(kv) == ORC_GGUF_STRING) {
            orc_gguf_kv_get_str(kv, &s, NULL, &err);
            orc_gguf_add_str(w, key, strcmp(key, "general.architecture") == 0 ? arch : s, &err);
        } else if (orc_gguf_kv_type(kv) == ORC_GGUF_UINT32) {
            orc_gguf_kv_get_u32(kv, &u, &err);
            orc_gguf_add_u32(w, key, u, &err);
        } else {
            orc_gguf_kv_get_f32(kv, &x, &err);
            orc_gguf_add_f32(w, key, x, &err);
        }
    }
    for (size_t i = 0; i < orc_gguf_tensor_count(f); i++) {
        const orc_gguf_tensor_info *ti = orc_gguf_tensor_at(f, i);
        if (drop && strcmp(ti->name, drop) == 0) {
            if (!bad_shape) continue;
            int64_t shape[2] = {ti->shape[0] / 2, ti->shape[1]};
            assert_int_equal(orc_gguf_add_tensor(w, ti->name, ti->type, 2, shape, ti->data, ti->nbytes / 2, &err),
                             ORC_OK);
            continue;
        }
        assert_int_equal(orc_gguf_add_tensor(w, ti->name, ti->type, ti->n_dims, ti->shape, ti->data, ti->nbytes, &err),
                         ORC_OK);
    }
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.v", path);
    assert_int_equal(orc_gguf_write(w, tmp, &err), ORC_OK);
    orc_gguf_writer_free(w);
    orc_gguf_close(f);
    orc_llm_free(m);
    assert_int_equal(rename(tmp, path), 0);
}

static void expect_import_error(const char *path, const char *dir, orc_status code, const char *a, const char *b) {
    orc_error err = {0};
    assert_int_equal(orc_llm_import_gguf(path, dir, NULL, &err), code);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, a));
    if (b) assert_non_null(strstr(err.msg, b));
}

static void test_malformed_inputs(void **state) {
    (void)state;
    tmpdir t;
    tmp_make(&t);
    write_variant(t.gguf, "gpt2", NULL, false);
    expect_import_error(t.gguf, t.out, ORC_EUNSUPPORTED, "architecture 'gpt2'", NULL);
    write_variant(t.gguf, "llama", "blk.0.ffn_up.weight", false);
    expect_import_error(t.gguf, t.out, ORC_EFORMAT, "blk.0.ffn_up.weight", "missing");
    write_variant(t.gguf, "llama", "blk.0.attn_k.weight", true);
    expect_import_error(t.gguf, t.out, ORC_ESHAPE, "blk.0.attn_k.weight", "[16, 32]");
    /* a model without a tokenizer imports, and says there is none */
    write_variant(t.gguf, "llama", NULL, false);
    orc_gguf_tok_info info;
    orc_error err = {0};
    assert_int_equal(orc_llm_import_gguf(t.gguf, t.out, &info, &err), ORC_OK);
    assert_false(info.written);
    assert_non_null(strstr(info.note, "tokenizer.ggml.model"));
    /* not a GGUF file at all */
    FILE *fp = fopen(t.gguf, "wb");
    fputs("GGUF\x03", fp);
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_llm_import_gguf(t.gguf, t.out, NULL, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, t.gguf));
    orc_test_dir_remove(t.dir);
}

/* A SentencePiece vocabulary (tokenizer.ggml.model "llama") with byte
 * fallback: written in Hugging Face's form, with merges ranked by score. */
static void test_sentencepiece_vocabulary(void **state) {
    (void)state;
    tmpdir t;
    tmp_make(&t);
    const char *toks[] = {"<unk>", "<s>", "</s>", "<0x00>", "<0x41>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a",
                          "ab", "\xe2\x96\x81" "ab"};
    const int32_t types[] = {2, 3, 3, 6, 6, 1, 1, 1, 1, 1, 1};
    const float scores[] = {0, 0, 0, 0, 0, -1, -2, -3, -4, -5, -6};
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    assert_int_equal(orc_gguf_add_str(w, "general.architecture", "llama", &err), ORC_OK);
    assert_int_equal(orc_gguf_add_str(w, "tokenizer.ggml.model", "llama", &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr_str(w, "tokenizer.ggml.tokens", toks, 11, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "tokenizer.ggml.token_type", ORC_GGUF_INT32, types, 11, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "tokenizer.ggml.scores", ORC_GGUF_FLOAT32, scores, 11, &err), ORC_OK);
    assert_int_equal(orc_gguf_write(w, t.gguf, &err), ORC_OK);
    orc_gguf_writer_free(w);
    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    char *json = orc_gguf_tokenizer_json(f, t.gguf, &err);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"byte_fallback\": true"));
    assert_non_null(strstr(json, "\"unk_token\": \"<unk>\""));
    assert_non_null(strstr(json, "\"Prepend\""));
    /* "▁a" (score -4) merges before "ab" (-5) and "▁ab" (-6: two splits, the
     * one with the smaller left id first) */
    const char *m1 = strstr(json, "\"\xe2\x96\x81 a\""), *m2 = strstr(json, "\"a b\""),
               *m3 = strstr(json, "\"\xe2\x96\x81" "a b\""), *m4 = strstr(json, "\"\xe2\x96\x81 ab\"");
    assert_true(m1 && m2 && m3 && m4 && m1 < m2 && m2 < m4 && m4 < m3);
    /* this vocabulary has only two of the 256 byte tokens byte fallback needs:
     * the tokenizer names the first one missing (tests/tokenizer/test_spm.c
     * runs a complete one against llama.cpp) */
    orc_error_clear(&err);
    assert_null(orc_tokenizer_from_json(json, strlen(json), "spm", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "<0x01>"));
    free(json);
    orc_gguf_close(f);
    orc_test_dir_remove(t.dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permutation_inverts_exactly),
        cmocka_unit_test(test_permutation_matches_adjacent_rope),
        cmocka_unit_test(test_round_trip_untied),
        cmocka_unit_test(test_round_trip_tied),
        cmocka_unit_test(test_tokenizer_keys),
        cmocka_unit_test(test_f16_export_is_f16_rounding),
        cmocka_unit_test(test_qk_norm_is_refused),
        cmocka_unit_test(test_malformed_inputs),
        cmocka_unit_test(test_sentencepiece_vocabulary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
