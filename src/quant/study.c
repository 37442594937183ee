/* `orchard study compress` (issue 5, "Result to reproduce"): for one float
 * model, the quality / size / speed table of fp32, q8_0, q4_0, pal4, mixed
 * ~3.5 bpw, mixed + an accuracy-recovery LoRA adapter and pal2 + a recovery
 * adapter. The text file is split once at a line boundary: the first part
 * trains the recovery adapters (and calibrates mixed:BITS unless --calib is
 * given), the held-out tail measures validation perplexity, so no row is
 * scored on text its adapter saw. Every quantized row is a real file written
 * by the same code as `orchard quantize`, evaluated like `orchard eval-q`,
 * and timed with generate-q's decode loop (greedy, fixed prompt and token
 * count, a fixed thread count); recovery adapters are trained by
 * orc_train_run exactly as `orchard train --recover-from` would. Writes
 * DIR/results.json and DIR/results.md; docs/quantization.md ("Results")
 * quotes a run. A control row, fp32 + the same adapter training over the
 * float model, separates what the adapters recover from what more training
 * on the text gives any model. Matrices whose rows are not whole blocks
 * (make run's ffn_down) stay F16 in every quantized row, as in `orchard
 * quantize`; the table says which. Several --model options run the study
 * once per model into OUT/K_NAME and join the tables in OUT/results.md. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "orchard/data.h"
#include "orchard/fileio.h"
#include "orchard/generate.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/runtime.h"
#include "orchard/train.h"

#define PATH_CAP 4400

void orc_compress_study_opts_default(orc_compress_study_opts *o) {
    memset(o, 0, sizeof *o);
    o->val_fraction = 0.1;
    o->mixed_bits = 3.5;
    o->recovery_steps = 60;
    o->recovery_batch = 8;
    o->recovery_seq = 64;
    o->recovery_lr = 2e-3;
    o->calib_tokens = 1024;
    o->decode_tokens = 64;
    o->prompt_tokens = 8;
    o->threads = 2;
    o->seed = 1;
}

static void note(const orc_compress_study_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const orc_compress_study_opts *o, const char *fmt, ...) {
    if (!o->progress) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(o->progress, fmt, ap);
    va_end(ap);
    fflush(o->progress);
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static orc_status make_dir(const char *path, orc_error *err) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "study compress: %s: cannot create the directory: %s", path,
                             strerror(errno));
    return ORC_OK;
}

/* ---- the text split ---------------------------------------------------------------- */

static orc_status read_all(const char *what, const char *path, char **buf, size_t *n, orc_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return orc_error_set(err, ORC_EIO, "study compress: %s %s: %s", what, path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    while (b) {
        if (len == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        size_t k = fread(b + len, 1, cap - len, f);
        len += k;
        if (k == 0) break;
    }
    const bool bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return orc_error_set(err, bad ? ORC_EIO : ORC_ENOMEM, "study compress: %s %s: %s", what, path,
                             bad ? "read error" : "out of memory");
    }
    b[len] = 0;
    *buf = b;
    *n = len;
    return ORC_OK;
}

/* The cut: the first line start at or after (1 - val_fraction) of the bytes. */
size_t orc_compress_split_point(const char *text, size_t n, double val_fraction) {
    size_t cut = (size_t)((1.0 - val_fraction) * (double)n);
    if (cut >= n) return n;
    while (cut > 0 && cut < n && text[cut - 1] != '\n') cut++;
    return cut;
}

/* Tokens of text[0..n) after a begin token (when the tokenizer has one). */
static orc_status encode(const orc_tokenizer *tok, const char *text, size_t n, int32_t **ids, size_t *k,
                         orc_error *err) {
    int32_t *t = NULL;
    size_t m = 0;
    orc_status st = orc_tokenizer_encode(tok, text, n, 0, &t, &m, err);
    if (st != ORC_OK) return st;
    const int32_t bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    int32_t *out = malloc(sizeof(int32_t) * (m + 1));
    if (!out) {
        free(t);
        return orc_error_set(err, ORC_ENOMEM, "study compress: out of memory for %zu tokens", m + 1);
    }
    size_t j = 0;
    if (bos >= 0) out[j++] = bos;
    memcpy(out + j, t, sizeof(int32_t) * m);
    free(t);
    *ids = out;
    *k = j + m;
    return ORC_OK;
}

/* ---- one row ----------------------------------------------------------------------- */

typedef struct row {
    char name[64];
    char scheme[64];
    char file[PATH_CAP];     /* the quantized GGUF ("" for fp32) */
    char adapter[PATH_CAP];  /* the recovery adapter ("" when none) */
    double bpw;
    int64_t adapter_params;
    orc_eval_result eval;
    double decode_tps;
    double decode_cpu_tps; /* tokens per second of process CPU time: less load-dependent than wall-clock */
    int64_t decoded;
} row;

/* Logits of the last of ids[0..n) after appending them (float or quantized). */
typedef struct decoder {
    orc_generator *g;             /* float */
    orc_qllm *q;                  /* quantized */
    orc_ctx ctx;
    orc_llm_cache *cache;
    float *logits;
} decoder;

static orc_status time_decode_once(decoder *d, int64_t V, const int32_t *prompt, size_t n_prompt, int64_t tokens,
                                   row *r, orc_error *err);

static const float *dec_feed(decoder *d, const int32_t *ids, size_t n, orc_error *err) {
    if (d->g) return orc_generator_feed(d->g, ids, n, err);
    orc_ctx_reset(&d->ctx);
    orc_tensor *t = orc_new(&d->ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * n);
    orc_tensor *h = t ? orc_qllm_hidden(&d->ctx, d->q, t, d->cache) : NULL;
    orc_tensor *y = h ? orc_qllm_linear(&d->ctx, orc_slice(&d->ctx, h, 1, (int64_t)n - 1, 1), &d->q->lm_head) : NULL;
    if (!y) {
        orc_error_set(err, d->ctx.err.code ? d->ctx.err.code : ORC_ENOMEM, "study compress: decode: %s",
                      d->ctx.err.code ? d->ctx.err.msg : "out of memory");
        return NULL;
    }
    orc_read_f32(y, d->logits);
    return d->logits;
}

static void dec_reset(decoder *d) {
    if (d->g) orc_generator_reset(d->g);
    else orc_llm_cache_clear(d->cache);
}

/* generate-q's measurement: prefill the prompt, then time `tokens` greedy
 * single-token steps (argmax; the same ids whatever the speed). The whole
 * run is done twice and the second one timed, so first-touch page faults
 * and thread start-up stay out of the number. */
static orc_status time_decode(decoder *d, int64_t V, const int32_t *prompt, size_t n_prompt, int64_t tokens,
                              row *r, orc_error *err) {
    for (int run = 0; run < 2; run++) {
        orc_status st = time_decode_once(d, V, prompt, n_prompt, tokens, r, err);
        dec_reset(d);
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

static orc_status time_decode_once(decoder *d, int64_t V, const int32_t *prompt, size_t n_prompt, int64_t tokens,
                                   row *r, orc_error *err) {
    const float *lg = dec_feed(d, prompt, n_prompt, err);
    int64_t k = 0;
    const double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    while (lg && k < tokens) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = (int32_t)v;
        k++;
        lg = dec_feed(d, &best, 1, err);
    }
    const double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (!lg) return err->code ? err->code : ORC_ENOMEM;
    r->decode_tps = dt > 0 ? (double)k / dt : 0.0;
    r->decode_cpu_tps = dc > 0 ? (double)k / dc : 0.0;
    r->decoded = k;
    return ORC_OK;
}

/* The trainable parameters of adapter ad (the table lists them). */
static int64_t adapter_params(const orc_lora *ad) {
    int64_t n = 0;
    for (int i = 0; i < ad->n_params; i++) n += ad->params[i]->numel;
    return n;
}

/* eval's and generate's numbers for the float model (with r->adapter active
 * when set: the control row). */
static orc_status measure_float(const orc_compress_study_opts *o, orc_llm *m, const orc_tokenizer *tok,
                                const char *const *val, const size_t *val_len, const int32_t *prompt,
                                size_t n_prompt, row *r, orc_error *err) {
    orc_lora *ad = NULL;
    orc_lora_stack stack = {0};
    orc_status st = ORC_OK;
    if (r->adapter[0]) {
        ad = orc_lora_load(r->adapter, &m->cfg, false, err);
        if (!ad) return err->code;
        stack.n = 1;
        stack.ad[0] = ad;
        stack.weight[0] = 1.0f;
        r->adapter_params = adapter_params(ad);
        st = orc_llm_set_adapters(m, &stack, err);
    }
    if (st == ORC_OK) st = orc_eval_texts(m, tok, val, val_len, 1, o->context, 0, &r->eval, err);
    decoder d = {0};
    if (st == ORC_OK && !(d.g = orc_generator_new(m, tok, (int64_t)n_prompt + o->decode_tokens + 1, err)))
        st = err->code;
    if (st == ORC_OK) {
        const int threads = orc_get_threads();
        orc_set_threads(o->threads);
        st = time_decode(&d, m->cfg.vocab_size, prompt, n_prompt, o->decode_tokens, r, err);
        orc_set_threads(threads);
    }
    orc_generator_free(d.g);
    orc_llm_set_adapters(m, NULL, NULL);
    orc_lora_free(ad);
    r->bpw = 32.0;
    return st;
}

/* eval-q and generate-q's numbers for the GGUF in r->file (with r->adapter). */
static orc_status measure_quant(const orc_compress_study_opts *o, const orc_tokenizer *tok, const char *const *val,
                                const size_t *val_len, const int32_t *prompt, size_t n_prompt, row *r,
                                orc_error *err) {
    orc_qllm *q = orc_qllm_load(r->file, err);
    if (!q) return err->code;
    orc_lora *ad = NULL;
    orc_lora_stack stack = {0};
    orc_status st = ORC_OK;
    if (r->adapter[0]) {
        ad = orc_lora_load(r->adapter, &q->cfg, false, err);
        if (!ad) st = err->code;
        if (st == ORC_OK) {
            stack.n = 1;
            stack.ad[0] = ad;
            stack.weight[0] = 1.0f;
            r->adapter_params = adapter_params(ad);
            st = orc_qllm_set_adapters(q, &stack, err);
        }
    }
    r->bpw = 8.0 * (double)orc_qllm_weight_bytes(q) / (double)orc_llm_config_num_params(&q->cfg);
    if (st == ORC_OK) st = orc_qllm_eval_texts(q, tok, val, val_len, 1, o->context, 0, &r->eval, err);
    decoder d = {0};
    orc_arena *arena = NULL;
    if (st == ORC_OK) {
        d.q = q;
        arena = orc_arena_create((size_t)32 << 20);
        d.cache = orc_llm_cache_new(&q->cfg, 1, (int64_t)n_prompt + o->decode_tokens + 1, err);
        d.logits = malloc(sizeof(float) * (size_t)q->cfg.vocab_size);
        if (!arena || !d.cache || !d.logits) st = orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
    }
    if (st == ORC_OK) {
        orc_ctx_init(&d.ctx, arena, 0);
        orc_set_no_grad(&d.ctx, true);
        const int threads = orc_get_threads();
        orc_set_threads(o->threads);
        st = time_decode(&d, q->cfg.vocab_size, prompt, n_prompt, o->decode_tokens, r, err);
        orc_set_threads(threads);
        orc_ctx_reset(&d.ctx);
    }
    free(d.logits);
    orc_llm_cache_free(d.cache);
    orc_arena_destroy(arena);
    orc_qllm_free(q);
    orc_lora_free(ad);
    return st;
}

/* ---- recovery ---------------------------------------------------------------------- */

/* An accuracy-recovery adapter (rank 16, alpha 32, every projection) over the
 * quantized base in qfile (NULL: the float model itself, for the control
 * row, through the recipe's init_from), trained on the training shard;
 * saved in adir. */
static orc_status train_recovery(const orc_compress_study_opts *o, const char *out, const char *name,
                                 const char *qfile, const char *shard, char *adir, orc_error *err) {
    char recipe[PATH_CAP];
    snprintf(recipe, sizeof recipe, "%s/recovery_%s.json", out, name);
    snprintf(adir, PATH_CAP, "%s/recovery_%s", out, name);
    /* Paths in a recipe are relative to its folder: give absolute ones. */
    char tok_abs[PATH_MAX], q_abs[PATH_MAX], shard_abs[PATH_MAX];
    const char *base = qfile ? qfile : o->model_dir;
    if (!realpath(o->model_dir, tok_abs) || !realpath(base, q_abs) || !realpath(shard, shard_abs))
        return orc_error_set(err, ORC_EIO, "study compress: cannot resolve %s, %s or %s: %s", o->model_dir, base,
                             shard, strerror(errno));
    json_t *j = json_object();
    json_t *data = json_object();
    json_object_set_new(data, "train", json_string(shard_abs));
    json_object_set_new(j, "tokenizer", json_string(tok_abs));
    json_object_set_new(j, qfile ? "recover_from" : "init_from", json_string(q_abs));
    json_object_set_new(j, "data", data);
    json_object_set_new(j, "batch", json_integer(o->recovery_batch));
    json_object_set_new(j, "seq", json_integer(o->recovery_seq));
    json_object_set_new(j, "steps", json_integer(o->recovery_steps));
    json_object_set_new(j, "lr", json_real(o->recovery_lr));
    json_object_set_new(j, "min_lr", json_real(o->recovery_lr / 10));
    json_object_set_new(j, "warmup", json_integer(o->recovery_steps / 10));
    json_object_set_new(j, "weight_decay", json_real(0.0));
    json_object_set_new(j, "eval_every", json_integer(0));
    json_object_set_new(j, "save_every", json_integer(0));
    json_object_set_new(j, "log_every", json_integer(o->recovery_steps > 10 ? o->recovery_steps / 5 : 1));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_t *lora = json_object();
    json_object_set_new(lora, "rank", json_integer(16));
    json_object_set_new(lora, "alpha", json_real(32.0));
    json_t *targets = json_array();
    for (int t = 0; t < ORC_LORA_N_TARGETS; t++) json_array_append_new(targets, json_string(orc_lora_target_short(t)));
    json_object_set_new(lora, "targets", targets);
    json_object_set_new(j, "lora", lora);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
    orc_status st = orc_write_file_atomic(recipe, text, strlen(text), "recovery recipe", err);
    free(text);
    if (st != ORC_OK) return st;
    orc_train_opts to = {0};
    to.recipe = recipe;
    to.out_dir = adir;
    to.progress = o->progress;
    orc_train_result res;
    note(o, "recovery adapter for %s: %d steps over %s\n", name, o->recovery_steps, base);
    return orc_train_run(&to, &res, err);
}

/* ---- output ------------------------------------------------------------------------ */

static void fmt_tps(char *buf, size_t n, const row *r) {
    snprintf(buf, n, "%.1f", r->decode_tps);
}

static orc_status write_results(const orc_compress_study_opts *o, const char *out, const orc_llm_config *cfg,
                                const row *rows, int n_rows, size_t train_bytes, size_t val_bytes,
                                int64_t train_tokens, const char *mixed_note, const char *fallback_note,
                                double load1, orc_error *err) {
    json_t *j = json_object();
    json_object_set_new(j, "study", json_string("compress"));
    json_object_set_new(j, "model", json_string(o->model_dir));
    json_object_set_new(j, "model_params", json_integer(orc_llm_config_num_params(cfg)));
    json_object_set_new(j, "hidden_size", json_integer(cfg->hidden_size));
    json_object_set_new(j, "num_hidden_layers", json_integer(cfg->num_hidden_layers));
    json_object_set_new(j, "intermediate_size", json_integer(cfg->intermediate_size));
    json_object_set_new(j, "vocab_size", json_integer(cfg->vocab_size));
    json_object_set_new(j, "text", json_string(o->text));
    json_object_set_new(j, "train_bytes", json_integer((json_int_t)train_bytes));
    json_object_set_new(j, "val_bytes", json_integer((json_int_t)val_bytes));
    json_object_set_new(j, "train_tokens", json_integer(train_tokens));
    json_object_set_new(j, "recovery_steps", json_integer(o->recovery_steps));
    json_object_set_new(j, "decode_tokens", json_integer(o->decode_tokens));
    json_object_set_new(j, "threads", json_integer(o->threads));
    json_object_set_new(j, "load_average_1m", json_real(load1));
    json_object_set_new(j, "kernels", json_string(orc_q_path_name(orc_q_active_path())));
    if (mixed_note[0]) json_object_set_new(j, "mixed_note", json_string(mixed_note));
    if (fallback_note[0]) json_object_set_new(j, "fallback_note", json_string(fallback_note));
    json_t *arr = json_array();
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(r->name));
        json_object_set_new(x, "scheme", json_string(r->scheme));
        json_object_set_new(x, "bits_per_weight", json_real(r->bpw));
        json_object_set_new(x, "val_loss", json_real(r->eval.loss));
        json_object_set_new(x, "val_ppl", json_real(r->eval.ppl));
        json_object_set_new(x, "val_bits_per_byte", json_real(r->eval.bits_per_byte));
        json_object_set_new(x, "val_tokens", json_integer(r->eval.tokens));
        json_object_set_new(x, "decode_tokens_per_s", json_real(r->decode_tps));
        json_object_set_new(x, "decode_tokens_per_cpu_s", json_real(r->decode_cpu_tps));
        json_object_set_new(x, "file", r->file[0] ? json_string(r->file) : json_null());
        json_object_set_new(x, "adapter", r->adapter[0] ? json_string(r->adapter) : json_null());
        json_object_set_new(x, "adapter_params", json_integer(r->adapter_params));
        json_array_append_new(arr, x);
    }
    json_object_set_new(j, "rows", arr);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    json_decref(j);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/results.json", out);
    orc_status st = orc_write_file_atomic(path, text, strlen(text), "study results", err);
    free(text);
    if (st != ORC_OK) return st;

    size_t cap = 8192 + (size_t)n_rows * 512 + strlen(fallback_note), len = 0;
    char *md = malloc(cap);
    if (!md) return orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
#define MD(...) len += (size_t)snprintf(md + len, cap - len, __VA_ARGS__)
    MD("Model: %s (%lld parameters: hidden %lld, %lld layers, FFN %lld, vocab %lld).\n\n", o->model_dir,
       (long long)orc_llm_config_num_params(cfg), (long long)cfg->hidden_size, (long long)cfg->num_hidden_layers,
       (long long)cfg->intermediate_size, (long long)cfg->vocab_size);
    MD("| row | bits/weight | val loss | val ppl | decode tokens/s | decode tokens/CPU-s | adapter params |\n");
    MD("|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_rows; i++) {
        char tps[32];
        fmt_tps(tps, sizeof tps, &rows[i]);
        MD("| %s | %.2f | %.4f | %.2f | %s | %.1f | %lld |\n", rows[i].name, rows[i].bpw, rows[i].eval.loss,
           rows[i].eval.ppl, tps, rows[i].decode_cpu_tps, (long long)rows[i].adapter_params);
    }
    MD("\nValidation: the last %zu bytes of %s (%lld tokens scored), held out from the %zu bytes that train the "
       "recovery adapters (rank 16, alpha 32, all 7 projections, %d steps of %d x %d tokens).\n",
       val_bytes, o->text, (long long)rows[0].eval.tokens, train_bytes, o->recovery_steps, o->recovery_batch,
       o->recovery_seq);
    MD("Control: fp32 + recovery trains the same adapter, on the same tokens, over the float model; a recovery "
       "row's gain beyond the control's is what the adapter recovers from quantization.\n");
    MD("Decode: greedy, %d-token prompt then %d tokens, %d thread%s, kernels %s; tokens/s is wall-clock, "
       "tokens/CPU-s divides by the process CPU time (both depend on the machine; wall-clock also on its load: "
       "1-minute load average %.2f at the end). Bits per weight count matrices, palette tables and float norms "
       "(not the adapter, which is F32: its parameters are listed).\n",
       o->prompt_tokens, o->decode_tokens, o->threads, o->threads == 1 ? "" : "s",
       orc_q_path_name(orc_q_active_path()), load1);
    if (mixed_note[0]) MD("%s\n", mixed_note);
    if (fallback_note[0]) MD("%s\n", fallback_note);
#undef MD
    snprintf(path, sizeof path, "%s/results.md", out);
    st = orc_write_file_atomic(path, md, len, "study results", err);
    if (st == ORC_OK && o->table) fwrite(md, 1, len, o->table);
    free(md);
    return st;
}

/* ---- the study --------------------------------------------------------------------- */

typedef struct study {
    const orc_compress_study_opts *o;
    orc_llm *m;
    orc_tokenizer *tok;
    char *text;
    size_t n_text, cut;
    int32_t *train_ids, *val_ids;
    size_t n_train, n_val;
    double *delta;
} study;

static void study_free(study *s) {
    orc_llm_free(s->m);
    orc_tokenizer_free(s->tok);
    free(s->text);
    free(s->train_ids);
    free(s->val_ids);
    free(s->delta);
}

/* The mixed plan: sensitivity on the calibration tokens, then the greedy
 * knapsack at the budget; when even all-pal2 is above the budget (a small
 * model whose 8-bit embeddings weigh a lot), the budget becomes all-pal2's
 * bits per weight + 0.25 and note says so. */
static orc_status plan_mixed(study *s, orc_quant_plan *plan, double *budget, char *note_buf, size_t note_cap,
                             orc_error *err) {
    const orc_compress_study_opts *o = s->o;
    int32_t *ids = s->train_ids;
    size_t n = s->n_train;
    int32_t *calib = NULL;
    if (o->calib) {
        char *ct = NULL;
        size_t cn = 0;
        orc_status st = read_all("--calib", o->calib, &ct, &cn, err);
        if (st == ORC_OK) st = encode(s->tok, ct, cn, &calib, &n, err);
        free(ct);
        if (st != ORC_OK) return st;
        ids = calib;
    }
    if (n > (size_t)o->calib_tokens) n = (size_t)o->calib_tokens;
    const int64_t N = s->m->cfg.num_hidden_layers * ORC_QLLM_PROJ;
    s->delta = malloc(sizeof(double) * (size_t)(N * ORC_QMIX_N));
    double base = 0.0, achieved = 0.0;
    orc_status st = s->delta ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
    if (st == ORC_OK) {
        note(o, "mixed: measuring %lld projections x %d schemes on %zu calibration tokens\n", (long long)N,
             ORC_QMIX_N, n);
        st = orc_quant_sensitivity(s->m, ids, n, o->context, ORC_Q_PAL_GROUP, &base, s->delta, err);
    }
    free(calib);
    if (st != ORC_OK) return st;
    orc_quant_plan low;
    st = orc_quant_plan_uniform(&low, s->m->cfg.num_hidden_layers, ORC_Q_PAL2, ORC_Q_PAL_GROUP, err);
    if (st != ORC_OK) return st;
    const double floor_bpw = orc_quant_plan_bpw(&s->m->cfg, &low);
    orc_quant_plan_release(&low);
    *budget = o->mixed_bits;
    note_buf[0] = 0;
    if (floor_bpw >= *budget) {
        const double want = *budget;
        *budget = floor(100.0 * (floor_bpw + 0.25)) / 100.0;
        snprintf(note_buf, note_cap, "mixed: the budget %.2f bits per weight is below what this model can reach "
                 "(every projection pal2 with 8-bit embeddings is %.3f), so the mixed rows use %.2f.",
                 want, floor_bpw, *budget);
        note(o, "%s\n", note_buf);
    }
    return orc_quant_plan_mixed(&s->m->cfg, *budget, ORC_Q_PAL_GROUP, s->delta, plan, &achieved, err);
}

static orc_status quantize_row(study *s, const char *out, const char *name, const orc_quant_plan *plan, row *r,
                               orc_error *err) {
    char dir[PATH_CAP];
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    orc_status st = make_dir(dir, err);
    if (st != ORC_OK) return st;
    const int k = snprintf(r->file, sizeof r->file, "%s/model.gguf", dir);
    if (k < 0 || (size_t)k >= sizeof r->file)
        return orc_error_set(err, ORC_EINVAL, "study compress: the path %s/model.gguf is too long", dir);
    note(s->o, "quantizing %s -> %s\n", plan->scheme, r->file);
    return orc_quantize_model_dir_plan(s->o->model_dir, r->file, plan, err);
}

orc_status orc_compress_study_run(const orc_compress_study_opts *o, orc_error *err) {
    if (!o->model_dir || !o->text || !o->out_dir)
        return orc_error_set(err, ORC_EINVAL, "study compress: --model, --text and --out are required");
    if (!(o->val_fraction > 0 && o->val_fraction < 1))
        return orc_error_set(err, ORC_EINVAL, "study compress: --val-fraction %g must be in (0, 1)", o->val_fraction);
    study s = {.o = o};
    orc_status st = orc_model_dir_load(o->model_dir, &s.m, &s.tok, err);
    if (st == ORC_OK) st = read_all("--text", o->text, &s.text, &s.n_text, err);
    if (st != ORC_OK) {
        study_free(&s);
        return st;
    }
    s.cut = orc_compress_split_point(s.text, s.n_text, o->val_fraction);
    if (s.cut == 0 || s.cut >= s.n_text) {
        study_free(&s);
        return orc_error_set(err, ORC_EINVAL, "study compress: --text %s (%zu bytes) cannot be split into a training "
                             "part and a %.0f%% validation part at a line boundary; give more lines",
                             o->text, s.n_text, 100.0 * o->val_fraction);
    }
    st = encode(s.tok, s.text, s.cut, &s.train_ids, &s.n_train, err);
    if (st == ORC_OK) st = encode(s.tok, s.text + s.cut, s.n_text - s.cut, &s.val_ids, &s.n_val, err);
    const size_t need = (size_t)o->recovery_seq + 2;
    if (st == ORC_OK && s.n_train < need)
        st = orc_error_set(err, ORC_EINVAL, "study compress: the training part of %s has %zu tokens; recovery "
                           "training needs at least %zu (seq %d + 2)",
                           o->text, s.n_train, need, o->recovery_seq);
    if (st == ORC_OK && s.n_val < (size_t)o->prompt_tokens + 2)
        st = orc_error_set(err, ORC_EINVAL, "study compress: the validation part of %s has %zu tokens; it needs at "
                           "least %d", o->text, s.n_val, o->prompt_tokens + 2);
    if (st == ORC_OK &&
        (int64_t)o->prompt_tokens + o->decode_tokens + 1 > s.m->cfg.max_position_embeddings)
        st = orc_error_set(err, ORC_EINVAL, "study compress: prompt %d + decode %d tokens exceed the model's %lld "
                           "positions", o->prompt_tokens, o->decode_tokens,
                           (long long)s.m->cfg.max_position_embeddings);
    if (st == ORC_OK) st = make_dir(o->out_dir, err);
    char path[PATH_CAP], shard[PATH_CAP];
    snprintf(shard, sizeof shard, "%s/train.bin", o->out_dir);
    if (st == ORC_OK) {
        snprintf(path, sizeof path, "%s/results.json", o->out_dir);
        struct stat sb;
        if (stat(path, &sb) == 0)
            st = orc_error_set(err, ORC_EINVAL, "study compress: --out %s already holds a study (results.json); "
                               "choose a new directory", o->out_dir);
    }
    if (st == ORC_OK) {
        orc_shard_writer *w = orc_shard_writer_open(shard, s.m->cfg.vocab_size, err);
        st = w ? orc_shard_writer_add(w, s.train_ids, s.n_train, err) : err->code;
        if (st == ORC_OK) st = orc_shard_writer_finish(w, err);
        else orc_shard_writer_abort(w);
    }
    if (st != ORC_OK) {
        study_free(&s);
        return st;
    }
    note(o, "text %s: %zu bytes train (%zu tokens), %zu bytes validation (%zu tokens)\n", o->text, s.cut, s.n_train,
         s.n_text - s.cut, s.n_val);
    const char *val[1] = {s.text + s.cut};
    const size_t val_len[1] = {s.n_text - s.cut};
    const int32_t *prompt = s.val_ids;
    const size_t n_prompt = (size_t)o->prompt_tokens;

    enum { N_ROWS = 8 }; /* the seven of the issue, then the control */
    row rows[N_ROWS];
    memset(rows, 0, sizeof rows);
    static const struct { const char *name; orc_ggml_type type; } uniform[] = {
        {"q8_0", ORC_GGML_Q8_0}, {"q4_0", ORC_GGML_Q4_0}, {"pal4", ORC_Q_PAL4}, {"pal2", ORC_Q_PAL2}};
    char mixed_note[512] = "";
    char *fallback_note = NULL; /* the F16 fallback notes of the q8_0 plan (the same in every row) */
    double budget = 0.0;
    orc_quant_plan plan = {0};

    snprintf(rows[0].name, sizeof rows[0].name, "fp32");
    snprintf(rows[0].scheme, sizeof rows[0].scheme, "f32");
    note(o, "fp32: evaluating\n");
    st = measure_float(o, s.m, s.tok, val, val_len, prompt, n_prompt, &rows[0], err);
    /* rows 1..3: q8_0, q4_0, pal4; row 6 (pal2 + recovery) reuses pal2's file. */
    char pal2_file[PATH_CAP] = "";
    for (int u = 0; u < 4 && st == ORC_OK; u++) {
        row tmp = {0};
        row *r = u < 3 ? &rows[1 + u] : &tmp;
        snprintf(r->name, sizeof r->name, "%s", uniform[u].name);
        snprintf(r->scheme, sizeof r->scheme, "%s", uniform[u].name);
        st = orc_quant_plan_uniform(&plan, s.m->cfg.num_hidden_layers, uniform[u].type, ORC_Q_PAL_GROUP, err);
        if (st == ORC_OK && u == 0) {
            size_t fn = 0;
            FILE *f = open_memstream(&fallback_note, &fn);
            if (f) {
                orc_quant_plan_fallbacks(&s.m->cfg, &plan, f);
                fclose(f);
            }
            if (!fallback_note) st = orc_error_set(err, ORC_ENOMEM, "study compress: out of memory");
            else note(o, "%s", fallback_note);
        }
        if (st == ORC_OK) st = quantize_row(&s, o->out_dir, uniform[u].name, &plan, r, err);
        orc_quant_plan_release(&plan);
        if (st == ORC_OK && u < 3) {
            note(o, "%s: evaluating\n", r->name);
            st = measure_quant(o, s.tok, val, val_len, prompt, n_prompt, r, err);
        }
        if (u == 3) snprintf(pal2_file, sizeof pal2_file, "%s", tmp.file);
    }
    /* rows 4, 5: mixed and mixed + recovery */
    if (st == ORC_OK) st = plan_mixed(&s, &plan, &budget, mixed_note, sizeof mixed_note, err);
    if (st == ORC_OK) {
        snprintf(rows[4].name, sizeof rows[4].name, "mixed:%g", budget);
        snprintf(rows[4].scheme, sizeof rows[4].scheme, "mixed:%g", budget);
        st = quantize_row(&s, o->out_dir, "mixed", &plan, &rows[4], err);
        orc_quant_plan_release(&plan);
    }
    if (st == ORC_OK) {
        note(o, "%s: evaluating\n", rows[4].name);
        st = measure_quant(o, s.tok, val, val_len, prompt, n_prompt, &rows[4], err);
    }
    if (st == ORC_OK) {
        rows[5] = rows[4];
        snprintf(rows[5].name, sizeof rows[5].name, "mixed:%g + recovery", budget);
        st = train_recovery(o, o->out_dir, "mixed", rows[4].file, shard, rows[5].adapter, err);
    }
    if (st == ORC_OK) {
        note(o, "%s: evaluating\n", rows[5].name);
        st = measure_quant(o, s.tok, val, val_len, prompt, n_prompt, &rows[5], err);
    }
    if (st == ORC_OK) {
        snprintf(rows[6].name, sizeof rows[6].name, "pal2 + recovery");
        snprintf(rows[6].scheme, sizeof rows[6].scheme, "pal2");
        snprintf(rows[6].file, sizeof rows[6].file, "%s", pal2_file);
        st = train_recovery(o, o->out_dir, "pal2", pal2_file, shard, rows[6].adapter, err);
    }
    if (st == ORC_OK) {
        note(o, "%s: evaluating\n", rows[6].name);
        st = measure_quant(o, s.tok, val, val_len, prompt, n_prompt, &rows[6], err);
    }
    /* row 7: the control, the same adapter training over the float model */
    if (st == ORC_OK) {
        snprintf(rows[7].name, sizeof rows[7].name, "fp32 + recovery (control)");
        snprintf(rows[7].scheme, sizeof rows[7].scheme, "f32");
        st = train_recovery(o, o->out_dir, "fp32", NULL, shard, rows[7].adapter, err);
    }
    if (st == ORC_OK) {
        note(o, "%s: evaluating\n", rows[7].name);
        st = measure_float(o, s.m, s.tok, val, val_len, prompt, n_prompt, &rows[7], err);
    }
    double load[1] = {0.0};
    if (getloadavg(load, 1) < 1) load[0] = -1.0;
    if (st == ORC_OK)
        st = write_results(o, o->out_dir, &s.m->cfg, rows, N_ROWS, s.cut, s.n_text - s.cut, (int64_t)s.n_train,
                           mixed_note, fallback_note ? fallback_note : "", load[0], err);
    free(fallback_note);
    orc_quant_plan_release(&plan);
    study_free(&s);
    return st;
}

/* ---- command line ------------------------------------------------------------------ */

void orc_compress_study_help(FILE *fp) {
    fprintf(fp,
            "usage: orchard study compress --model DIR [--model DIR2 ...] --text FILE --out DIR [--calib FILE]\n"
            "                              [--recovery-steps N] [--val-fraction F] [--mixed-bits B]\n"
            "                              [--decode-tokens N] [--threads N] [--context N] [--seed S]\n"
            "                              [--calib-tokens N]\n\n"
            "Quantize the float model in DIR (config.json + model.safetensors + tokenizer.json) as\n"
            "q8_0, q4_0, pal4, pal2 and mixed:B (default 3.5; calibrated on --calib or the training\n"
            "part of --text; first --calib-tokens, default 1024), train rank-16 accuracy-recovery LoRA adapters over mixed and pal2\n"
            "(`orchard train --recover-from`, --recovery-steps, default 60, of 8 x 64 tokens on the\n"
            "training part) and, as a control, over the float model itself, and measure for fp32 and\n"
            "every row: bits per weight, validation loss and perplexity on the held-out tail of --text\n"
            "(the last --val-fraction, default 0.1, cut at a line start), and greedy decode tokens per\n"
            "second of wall-clock and of CPU time (8-token prompt, --decode-tokens, default 64,\n"
            "--threads, default 2). Writes DIR/results.json and DIR/results.md (the table, also\n"
            "printed), the quantized files and the adapters. Matrices whose rows are not whole\n"
            "32-value blocks stay F16 (a note names them). With several --model options each model's\n"
            "study goes to DIR/K_NAME and DIR/results.md joins their tables.\n");
}

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < lo || d > hi) {
        fprintf(stderr, "orchard study compress: option %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi,
                v);
        return 2;
    }
    *out = d;
    return 0;
}

/* Several models: one study each in out/K_NAME, then out/results.md joins
 * their tables under a heading per model. */
#define MAX_MODELS 8
static int run_several(orc_compress_study_opts *o, const char *const *models, int n_models) {
    const char *out = o->out_dir;
    orc_error err = {0};
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/results.md", out);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        fprintf(stderr, "orchard study compress: --out %s already holds a study (results.md); choose a new "
                        "directory\n", out);
        return 1;
    }
    if (make_dir(out, &err) != ORC_OK) {
        fprintf(stderr, "orchard study compress: %s\n", err.msg);
        return 1;
    }
    char *joined = NULL;
    size_t jn = 0;
    FILE *jf = open_memstream(&joined, &jn);
    if (!jf) {
        fprintf(stderr, "orchard study compress: out of memory\n");
        return 1;
    }
    orc_status st = ORC_OK;
    char sub[PATH_CAP - 64]; /* room for "/results.md" in path */
    for (int k = 0; k < n_models && st == ORC_OK; k++) {
        char name[256];
        snprintf(name, sizeof name, "%s", models[k]);
        size_t L = strlen(name);
        while (L > 1 && name[L - 1] == '/') name[--L] = 0;
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        snprintf(sub, sizeof sub, "%s/%d_%s", out, k + 1, base);
        o->model_dir = models[k];
        o->out_dir = sub;
        note(o, "== model %d of %d: %s -> %s\n", k + 1, n_models, models[k], sub);
        st = orc_compress_study_run(o, &err);
        char *md = NULL;
        size_t mn = 0;
        snprintf(path, sizeof path, "%s/results.md", sub);
        if (st == ORC_OK) st = read_all("results", path, &md, &mn, &err);
        if (st == ORC_OK) fprintf(jf, "%s### %d. %s\n\n%s", k ? "\n" : "", k + 1, models[k], md);
        free(md);
    }
    fclose(jf);
    o->out_dir = out;
    snprintf(path, sizeof path, "%s/results.md", out);
    if (st == ORC_OK) st = orc_write_file_atomic(path, joined, jn, "study results", &err);
    free(joined);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard study compress: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int orc_compress_study_main(int argc, char **argv) {
    orc_compress_study_opts o;
    orc_compress_study_opts_default(&o);
    const char *models[MAX_MODELS];
    int n_models = 0;
    o.progress = stderr;
    o.table = stdout;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            orc_compress_study_help(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "orchard study compress: unexpected argument '%s'\n", a);
            return 2;
        }
        static const char *const known[] = {"--model", "--text", "--out", "--calib", "--recovery-steps",
                                            "--val-fraction", "--mixed-bits", "--decode-tokens", "--threads",
                                            "--context", "--seed", "--calib-tokens"};
        bool ok = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) ok |= !strcmp(a, known[k]);
        if (!ok) {
            fprintf(stderr, "orchard study compress: unknown option '%s'; see `orchard study compress --help`\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "orchard study compress: option %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        double d = 0;
        int rc = 0;
        if (!strcmp(a, "--model")) {
            if (n_models == MAX_MODELS) {
                fprintf(stderr, "orchard study compress: at most %d --model options\n", MAX_MODELS);
                return 2;
            }
            models[n_models++] = o.model_dir = v;
        }
        else if (!strcmp(a, "--text")) o.text = v;
        else if (!strcmp(a, "--out")) o.out_dir = v;
        else if (!strcmp(a, "--calib")) o.calib = v;
        else if (!strcmp(a, "--recovery-steps") && !(rc = parse_num(a, v, 1, 1e6, &d))) o.recovery_steps = (int)d;
        else if (!strcmp(a, "--val-fraction") && !(rc = parse_num(a, v, 0.001, 0.9, &d))) o.val_fraction = d;
        else if (!strcmp(a, "--mixed-bits") && !(rc = parse_num(a, v, 1, 31, &d))) o.mixed_bits = d;
        else if (!strcmp(a, "--decode-tokens") && !(rc = parse_num(a, v, 1, 1e6, &d))) o.decode_tokens = (int)d;
        else if (!strcmp(a, "--threads") && !(rc = parse_num(a, v, 1, 1024, &d))) o.threads = (int)d;
        else if (!strcmp(a, "--context") && !(rc = parse_num(a, v, 2, 1e7, &d))) o.context = (int64_t)d;
        else if (!strcmp(a, "--calib-tokens") && !(rc = parse_num(a, v, 2, 1e8, &d))) o.calib_tokens = (int)d;
        else if (!strcmp(a, "--seed") && !(rc = parse_num(a, v, 0, 2147483647.0, &d))) o.seed = (uint64_t)d;
        if (rc) return rc;
    }
    if (!o.model_dir || !o.text || !o.out_dir) {
        fprintf(stderr, "orchard study compress: --model, --text and --out are required; see `orchard study "
                        "compress --help`\n");
        return 2;
    }
    if (n_models > 1) return run_several(&o, models, n_models);
    orc_error err = {0};
    if (orc_compress_study_run(&o, &err) != ORC_OK) {
        fprintf(stderr, "orchard study compress: %s\n", err.msg);
        return 1;
    }
    return 0;
}
