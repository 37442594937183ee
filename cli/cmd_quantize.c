/* `orchard quantize`, `orchard generate-q` and `orchard eval-q`: a model
 * directory or GGUF file to a Q8_0 / Q4_0 GGUF that llama.cpp runs, or to
 * orchard's palettized (pal4, pal2) or mixed:BITS GGUF (the per-tensor
 * choice measured on calibration text); text generation and evaluation with
 * such a file (or any `llama` GGUF, quantized on load) through the quantized
 * kernels. The work is in src/quant; this file parses options, samples with
 * the shared sampler and reports. generate-q and eval-q are separate
 * commands because the generator and evaluator of orchard/generate.h are
 * bound to the float model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "orchard/generate.h"
#include "orchard/llm_gguf.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"
#include "orchard/tokenizer.h"

void cmd_quantize_help(void) {
    printf("usage: orchard quantize --model DIR|FILE.gguf --scheme SCHEME --out DIR|FILE.gguf\n"
           "                        [--group N] [--calib FILE] [--calib-tokens N] [--context N]\n\n"
           "SCHEME is one of\n"
           "  q8_0, q4_0   ggml's blocks, bit-exact with llama.cpp (token_embd/output stay Q8_0\n"
           "               in q4_0: embeddings at 8 bits); the file runs in llama.cpp too\n"
           "  pal4, pal2   palettization: per group of N columns (--group, default 16) one\n"
           "               lookup table of 16 / 4 entries shared by all rows, learned by k-means;\n"
           "               each weight a 4 / 2-bit index (orchard-only GGUF; embeddings Q8_0)\n"
           "  mixed:BITS   per projection the choice among q8_0, q4_0, pal4, pal2 that keeps the\n"
           "               model at <= BITS bits per weight (embeddings at 8 bits), chosen by the\n"
           "               calibration loss increase of quantizing that projection alone\n"
           "               (--calib FILE: text, or .jsonl with a text field; first\n"
           "               --calib-tokens tokens, default 1024; windows of --context tokens)\n"
           "DIR input is config.json + model.safetensors (+ tokenizer.json, stored in the\n"
           "file as for `orchard export`); a GGUF input may be F32, F16, BF16, Q8_0 or\n"
           "Q4_0. An --out that does not end in .gguf is a directory: DIR/model.gguf.\n"
           "A matrix whose rows are not whole blocks (a row length that is not a multiple of 32,\n"
           "e.g. make run's ffn_down of 688 columns) stays F16, as in llama.cpp's quantizer; a note\n"
           "names it and the bits per weight count its 16 bits.\n"
           "Run the result with `orchard generate-q` / `orchard eval-q --model OUT`.\n");
}

void cmd_eval_q_help(void) {
    printf("usage: orchard eval-q --model FILE.gguf|DIR --text FILE [--field NAME] [--stride N]\n"
           "                      [--context N] [--tokenizer DIR] [--kernels PATH]\n"
           "                      [--adapter DIR[:WEIGHT][,DIR...]]\n\n"
           "`orchard eval` for a quantized model (any file generate-q runs): the same windows,\n"
           "scoring and JSON (tokens, loss, ppl, bits_per_byte, bytes, windows), plus\n"
           "bits_per_weight and scheme, computed through the quantized kernels.\n"
           "--adapter adds LoRA adapters (e.g. an accuracy-recovery adapter from `orchard train\n"
           "--recover-from`) in float over the quantized projections.\n");
}

void cmd_generate_q_help(void) {
    printf("usage: orchard generate-q --model FILE.gguf|DIR --prompt TEXT [--max-tokens N]\n"
           "                          [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
           "                          [--context N] [--tokenizer DIR] [--kernels PATH]\n"
           "                          [--adapter DIR[:WEIGHT][,DIR...]]\n\n"
           "Continue TEXT with a quantized model (a Q8_0/Q4_0, pal4/pal2 or mixed GGUF from\n"
           "`orchard quantize`, or DIR/model.gguf; F32/F16 matrices are quantized to Q8_0 on\n"
           "load) through the integer kernels.\n"
           "The tokenizer comes from --tokenizer, DIR/tokenizer.json, or the GGUF's keys.\n"
           "Prints the text, then prompt and decode speed on stderr.\n\n"
           "  --kernels auto|portable|avx2|avx512   force a kernel path (default auto)\n"
           "  --adapter DIR[:W],...                 LoRA adapters over the quantized base (docs/lora.md)\n"
           "  --temperature 0                       greedy (default 0.8, top-k 40, top-p 0.95)\n");
}

static int need_value(const char *cmd, const char *opt, int i, int argc) {
    if (i + 1 < argc) return 0;
    fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, opt);
    return 2;
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The first max_tokens tokens of the calibration texts (each after a begin token when the tokenizer has one). */
static orc_status calib_ids(const char *path, const orc_tokenizer *tok, long max_tokens, int32_t **ids, size_t *n,
                            orc_error *err) {
    cli_texts t = {0};
    orc_status st = cli_texts_read(path, cli_ends_with(path, ".jsonl") ? "text" : NULL, &t, err);
    *ids = malloc(sizeof(int32_t) * (size_t)(max_tokens + 1));
    *n = 0;
    if (st == ORC_OK && !*ids) st = orc_error_set(err, ORC_ENOMEM, "out of memory");
    const int32_t bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    for (size_t d = 0; st == ORC_OK && d < t.n && (long)*n < max_tokens; d++) {
        int32_t *x = NULL;
        size_t k = 0;
        st = orc_tokenizer_encode(tok, t.p[d], t.len[d], 0, &x, &k, err);
        if (bos >= 0 && (long)*n < max_tokens) (*ids)[(*n)++] = bos;
        for (size_t i = 0; st == ORC_OK && i < k && (long)*n < max_tokens; i++) (*ids)[(*n)++] = x[i];
        free(x);
    }
    cli_texts_free(&t);
    return st;
}

/* The float model and tokenizer behind a DIR or a GGUF file. */
static orc_status load_float(const char *model, orc_llm **m, orc_tokenizer **tok, orc_error *err) {
    if (is_dir(model)) return orc_model_dir_load(model, m, tok, err);
    orc_gguf_file *f = orc_gguf_open(model, err);
    if (!f) return err->code;
    *m = orc_llm_from_gguf(f, model, false, err);
    char *json = *m ? orc_gguf_tokenizer_json(f, model, err) : NULL;
    *tok = json ? orc_tokenizer_from_json(json, strlen(json), model, err) : NULL;
    free(json);
    orc_gguf_close(f);
    return *m && *tok ? ORC_OK : err->code;
}

/* mixed:BITS: measure, plan, print the choice. */
static int plan_mixed(const char *model, const char *calib, double budget, int64_t group, long calib_tokens,
                      long context, orc_quant_plan *plan) {
    orc_error err = {0};
    orc_llm *m = NULL;
    orc_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    double *delta = NULL, base = 0.0, achieved = 0.0;
    int rc = 1;
    if (load_float(model, &m, &tok, &err) != ORC_OK || calib_ids(calib, tok, calib_tokens, &ids, &n, &err) != ORC_OK) {
        fprintf(stderr, "orchard quantize: %s\n", err.msg);
        goto done;
    }
    const int64_t N = m->cfg.num_hidden_layers * ORC_QLLM_PROJ;
    delta = malloc(sizeof(double) * (size_t)(N * ORC_QMIX_N));
    if (!delta) {
        fprintf(stderr, "orchard quantize: out of memory\n");
        goto done;
    }
    fprintf(stderr, "mixed: measuring %lld projections x %d schemes on %zu calibration tokens\n", (long long)N,
            ORC_QMIX_N, n);
    if (orc_quant_sensitivity(m, ids, n, context, group, &base, delta, &err) != ORC_OK ||
        orc_quant_plan_mixed(&m->cfg, budget, group, delta, plan, &achieved, &err) != ORC_OK) {
        fprintf(stderr, "orchard quantize: %s\n", err.msg);
        goto done;
    }
    printf("calibration: %zu tokens, float loss %.4f; loss increase when only that tensor is quantized:\n", n, base);
    printf("  %-26s %10s %10s %10s %10s  %s\n", "tensor", "q8_0", "q4_0", "pal4", "pal2", "choice");
    for (int64_t t = 0; t < N; t++) {
        char name[96];
        orc_quant_proj_name(t / ORC_QLLM_PROJ, (int)(t % ORC_QLLM_PROJ), name, sizeof name);
        printf("  %-26s", name);
        for (int c = 0; c < ORC_QMIX_N; c++) printf(" %10.5f", delta[t * ORC_QMIX_N + c]);
        /* the row length of projection i (wo: heads x head_dim, ffn_down: FFN) decides the F16 fallback */
        const int i = (int)(t % ORC_QLLM_PROJ);
        const int64_t cols = i == 3   ? m->cfg.num_attention_heads * m->cfg.head_dim
                             : i == 6 ? m->cfg.intermediate_size
                                      : m->cfg.hidden_size;
        printf("  %s\n", orc_q_type_name(orc_quant_fit_type(plan->proj[t], cols)));
    }
    printf("  %-26s %s\n", m->cfg.tie_word_embeddings ? "token_embd (tied)" : "token_embd, output",
           orc_q_type_name(plan->embed));
    printf("mixed:%g: %.3f bits per weight\n", budget, achieved);
    rc = 0;
done:
    free(delta);
    free(ids);
    orc_tokenizer_free(tok);
    orc_llm_free(m);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *scheme = NULL, *out = NULL, *calib = NULL;
    long group = ORC_Q_PAL_GROUP, calib_tokens = 1024, context = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (need_value("quantize", a, i, argc)) return 2;
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--scheme") == 0) scheme = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--calib") == 0) calib = v;
        else if (strcmp(a, "--group") == 0) rc = cli_parse_int("quantize", a, v, 16, 1L << 20, &group);
        else if (strcmp(a, "--calib-tokens") == 0) rc = cli_parse_int("quantize", a, v, 2, 1L << 24, &calib_tokens);
        else if (strcmp(a, "--context") == 0) rc = cli_parse_int("quantize", a, v, 1, 1L << 24, &context);
        else {
            fprintf(stderr, "orchard quantize: unknown option '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!model || !scheme || !out) {
        fprintf(stderr, "orchard quantize: --model, --scheme and --out are required; see `orchard quantize --help`\n");
        return 2;
    }
    if (group % ORC_Q_PAL_SUB) {
        fprintf(stderr, "orchard quantize: --group %ld must be a multiple of %d\n", group, ORC_Q_PAL_SUB);
        return 2;
    }
    orc_error err = {0};
    orc_quant_plan plan = {0};
    double budget = 0.0;
    orc_llm_config cfg;
    orc_status st;
    char cpath[4200];
    if (is_dir(model)) {
        snprintf(cpath, sizeof cpath, "%s/config.json", model);
        st = orc_llm_config_load(cpath, &cfg, &err);
    } else {
        orc_gguf_file *f = orc_gguf_open(model, &err);
        st = f ? orc_llm_config_from_gguf(f, model, &cfg, &err) : err.code;
        orc_gguf_close(f);
    }
    if (st != ORC_OK) {
        fprintf(stderr, "orchard quantize: %s\n", err.msg);
        return 1;
    }
    if (orc_quant_scheme_mixed(scheme, &budget)) {
        if (!calib) {
            fprintf(stderr, "orchard quantize: %s needs --calib FILE (calibration text)\n", scheme);
            return 2;
        }
        int rc = plan_mixed(model, calib, budget, group, calib_tokens, context, &plan);
        if (rc) return rc;
    } else {
        orc_ggml_type type;
        if (strncmp(scheme, "mixed", 5) == 0) {
            fprintf(stderr, "orchard quantize: scheme '%s': expected mixed:BITS with BITS in (0, 32), e.g. mixed:3.5\n",
                    scheme);
            return 2;
        }
        if (orc_quant_scheme_parse(scheme, &type, &err) != ORC_OK) {
            fprintf(stderr, "orchard %s\n", err.msg);
            return 2;
        }
        st = orc_quant_plan_uniform(&plan, cfg.num_hidden_layers, type, group, &err);
        if (st != ORC_OK) {
            fprintf(stderr, "orchard quantize: %s\n", err.msg);
            return 1;
        }
    }
    char path[4200];
    if (cli_ends_with(out, ".gguf")) {
        snprintf(path, sizeof path, "%s", out);
    } else {
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "orchard quantize: %s: cannot create the directory: %s\n", out, strerror(errno));
            orc_quant_plan_release(&plan);
            return 1;
        }
        snprintf(path, sizeof path, "%s/model.gguf", out);
    }
    orc_quant_plan_fallbacks(&cfg, &plan, stderr);
    st = is_dir(model) ? orc_quantize_model_dir_plan(model, path, &plan, &err)
                       : orc_quantize_gguf_plan(model, path, &plan, &err);
    orc_quant_plan_release(&plan);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard quantize: %s\n", err.msg);
        return 1;
    }
    orc_qllm *q = orc_qllm_load(path, &err);
    if (!q) {
        fprintf(stderr, "orchard quantize: wrote %s, but it does not load: %s\n", path, err.msg);
        return 1;
    }
    const double params = (double)orc_llm_config_num_params(&q->cfg);
    const double bytes = (double)orc_qllm_weight_bytes(q);
    printf("wrote %s: %s, %.2f MB of weights, %.2f bits per weight\n", path, scheme, bytes / 1e6,
           8.0 * bytes / params);
    orc_qllm_free(q);
    return 0;
}

/* ---- generate-q --------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --adapter DIR[:W],...: load the adapters into set and make them active on
 * q (the stack must outlive q's use). No list: nothing to do. */
static int apply_adapters(const char *cmd, const char *list, orc_qllm *q, orc_lora_set **set,
                          orc_lora_stack *stack) {
    if (!list) return 0;
    orc_error err = {0};
    *set = orc_lora_set_new(&err);
    if (!*set || orc_lora_set_load_list(*set, list, &q->cfg, stack, &err) != ORC_OK ||
        orc_qllm_set_adapters(q, stack, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: --adapter: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

/* Logits of the last of ids[0..n) appended to the cache, into out [V]. */
static bool step(orc_ctx *ctx, orc_qllm *q, orc_llm_cache *c, const int32_t *ids, int64_t n, float *out) {
    orc_ctx_reset(ctx);
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * (size_t)n);
    orc_tensor *h = t ? orc_qllm_hidden(ctx, q, t, c) : NULL;
    orc_tensor *y = h ? orc_qllm_linear(ctx, orc_slice(ctx, h, 1, n - 1, 1), &q->lm_head) : NULL;
    if (!y) return false;
    orc_read_f32(y, out);
    return true;
}

typedef struct gen_args {
    const char *model, *prompt, *tok_dir, *kernels, *adapter;
    long max_tokens, context;
    orc_sampler_opts sampler;
} gen_args;

static int parse_float(const char *opt, const char *v, float *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "orchard generate-q: option %s expects a number, got '%s'\n", opt, v);
        return 2;
    }
    *out = (float)d;
    return 0;
}

static int parse_gen(int argc, char **argv, gen_args *g) {
    memset(g, 0, sizeof *g);
    g->max_tokens = 128;
    g->kernels = "auto";
    orc_sampler_opts_default(&g->sampler);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (need_value("generate-q", a, i, argc)) return 2;
        const char *v = argv[++i];
        long n;
        int rc = 0;
        if (strcmp(a, "--model") == 0) g->model = v;
        else if (strcmp(a, "--prompt") == 0) g->prompt = v;
        else if (strcmp(a, "--tokenizer") == 0) g->tok_dir = v;
        else if (strcmp(a, "--kernels") == 0) g->kernels = v;
        else if (strcmp(a, "--adapter") == 0) g->adapter = v;
        else if (strcmp(a, "--max-tokens") == 0) rc = cli_parse_int("generate-q", a, v, 1, 1 << 20, &g->max_tokens);
        else if (strcmp(a, "--context") == 0) rc = cli_parse_int("generate-q", a, v, 1, 1 << 24, &g->context);
        else if (strcmp(a, "--top-k") == 0) {
            rc = cli_parse_int("generate-q", a, v, 0, 1 << 30, &n);
            g->sampler.top_k = n;
        } else if (strcmp(a, "--seed") == 0) {
            rc = cli_parse_int("generate-q", a, v, 0, 0x7fffffffL, &n);
            g->sampler.seed = (uint64_t)n;
        } else if (strcmp(a, "--temperature") == 0) rc = parse_float(a, v, &g->sampler.temperature);
        else if (strcmp(a, "--top-p") == 0) rc = parse_float(a, v, &g->sampler.top_p);
        else {
            fprintf(stderr, "orchard generate-q: unknown option '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!g->model || !g->prompt) {
        fprintf(stderr, "orchard generate-q: --model and --prompt are required; see `orchard generate-q --help`\n");
        return 2;
    }
    const struct { const char *name; orc_q_path p; } paths[] = {
        {"auto", ORC_Q_AUTO}, {"portable", ORC_Q_PORTABLE}, {"avx2", ORC_Q_AVX2}, {"avx512", ORC_Q_AVX512}};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(g->kernels, paths[i].name) == 0) {
            orc_error err = {0};
            if (orc_q_set_path(paths[i].p, &err) != ORC_OK) {
                fprintf(stderr, "orchard generate-q: %s\n", err.msg);
                return 2;
            }
            return 0;
        }
    fprintf(stderr, "orchard generate-q: --kernels must be auto, portable, avx2 or avx512, got '%s'\n", g->kernels);
    return 2;
}

/* Decode loop: sample, print each token's bytes as it comes. */
static int run_gen(const gen_args *g, orc_qllm *q, const orc_tokenizer *tok, orc_ctx *ctx, orc_llm_cache *c,
                   int32_t *ids, size_t n_prompt, int64_t context) {
    orc_error err = {0};
    const int64_t V = q->cfg.vocab_size, tok_vocab = (int64_t)orc_tokenizer_vocab_size(tok);
    float *logits = malloc(sizeof(float) * (size_t)V);
    orc_sample_work work;
    if (!logits || orc_sample_work_init(&work, V, &err) != ORC_OK) {
        free(logits);
        fprintf(stderr, "orchard generate-q: out of memory\n");
        return 1;
    }
    size_t n = n_prompt;
    double t0 = now();
    bool ok = step(ctx, q, c, ids, (int64_t)n, logits);
    const double prefill = now() - t0;
    int64_t decoded = 0;
    t0 = now();
    while (ok && decoded < g->max_tokens) {
        for (int64_t i = tok_vocab; i < V; i++) logits[i] = -INFINITY;
        const float u = orc_rand_uniform(g->sampler.seed, 1, (uint64_t)decoded);
        const int32_t id = orc_sample(&g->sampler, logits, V, ids, n, u, &work);
        if (id < 0 || id == q->cfg.eos_token_id) break;
        ids[n++] = id;
        char *text = NULL;
        size_t len = 0;
        if (orc_tokenizer_decode(tok, &id, 1, &text, &len, &err) == ORC_OK) fwrite(text, 1, len, stdout);
        free(text);
        fflush(stdout);
        decoded++;
        if ((int64_t)n >= context || decoded >= g->max_tokens) break;
        ok = step(ctx, q, c, &id, 1, logits);
    }
    const double decode = now() - t0;
    printf("\n");
    if (!ok) fprintf(stderr, "orchard generate-q: %s\n", ctx->err.msg);
    fprintf(stderr, "prompt: %zu tokens in %.3f s; decode: %lld tokens in %.3f s (%.1f tokens/s); kernels %s\n",
            n_prompt, prefill, (long long)decoded, decode, decoded > 0 ? (double)decoded / decode : 0.0,
            orc_q_path_name(orc_q_active_path()));
    orc_sample_work_release(&work);
    free(logits);
    return ok ? 0 : 1;
}

int cmd_generate_q(int argc, char **argv) {
    gen_args g;
    int rc = parse_gen(argc, argv, &g);
    if (rc) return rc;
    orc_error err = {0};
    if (orc_sampler_opts_validate(&g.sampler, &err) != ORC_OK) {
        fprintf(stderr, "orchard generate-q: %s\n", err.msg);
        return 2;
    }
    orc_qllm *q = orc_qllm_load(g.model, &err);
    orc_tokenizer *tok = q ? orc_qllm_load_tokenizer(g.tok_dir, g.model, q, &err) : NULL;
    if (!tok) {
        fprintf(stderr, "orchard generate-q: %s\n", err.msg);
        orc_qllm_free(q);
        return 1;
    }
    orc_lora_set *lset = NULL;
    orc_lora_stack lstack = {0};
    if (apply_adapters("generate-q", g.adapter, q, &lset, &lstack)) {
        orc_lora_set_free(lset);
        orc_tokenizer_free(tok);
        orc_qllm_free(q);
        return 1;
    }
    const int64_t context = g.context > 0 && g.context < q->cfg.max_position_embeddings
                                ? g.context
                                : q->cfg.max_position_embeddings;
    int32_t *prompt = NULL, *ids = NULL;
    size_t n_prompt = 0;
    orc_llm_cache *c = NULL;
    orc_arena *arena = orc_arena_create((size_t)32 << 20);
    rc = 1;
    if (orc_tokenizer_encode(tok, g.prompt, strlen(g.prompt), ORC_TOK_ENCODE_SPECIAL, &prompt, &n_prompt, &err) !=
        ORC_OK) {
        fprintf(stderr, "orchard generate-q: %s\n", err.msg);
    } else if (n_prompt == 0 || (int64_t)n_prompt >= context) {
        fprintf(stderr, "orchard generate-q: the prompt has %zu tokens; it needs 1 to %lld\n", n_prompt,
                (long long)(context - 1));
        rc = 2;
    } else if (!arena || !(c = orc_llm_cache_new(&q->cfg, 1, context, &err)) ||
               !(ids = malloc(sizeof(int32_t) * (size_t)context))) {
        fprintf(stderr, "orchard generate-q: out of memory\n");
    } else {
        memcpy(ids, prompt, sizeof(int32_t) * n_prompt);
        orc_ctx ctx;
        orc_ctx_init(&ctx, arena, 0);
        orc_set_no_grad(&ctx, true);
        fwrite(g.prompt, 1, strlen(g.prompt), stdout);
        rc = run_gen(&g, q, tok, &ctx, c, ids, n_prompt, context);
        orc_ctx_reset(&ctx);
    }
    free(ids);
    free(prompt);
    orc_llm_cache_free(c);
    orc_arena_destroy(arena);
    orc_tokenizer_free(tok);
    orc_qllm_free(q);
    orc_lora_set_free(lset);
    return rc;
}

/* ---- eval-q ------------------------------------------------------------------------------ */

static int set_kernels(const char *cmd, const char *name) {
    const struct { const char *name; orc_q_path p; } paths[] = {
        {"auto", ORC_Q_AUTO}, {"portable", ORC_Q_PORTABLE}, {"avx2", ORC_Q_AVX2}, {"avx512", ORC_Q_AVX512}};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(name, paths[i].name) == 0) {
            orc_error err = {0};
            if (orc_q_set_path(paths[i].p, &err) != ORC_OK) {
                fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
                return 2;
            }
            return 0;
        }
    fprintf(stderr, "orchard %s: --kernels must be auto, portable, avx2 or avx512, got '%s'\n", cmd, name);
    return 2;
}

int cmd_eval_q(int argc, char **argv) {
    const char *cmd = "eval-q", *model = NULL, *path = NULL, *field = NULL, *tok_dir = NULL, *adapter = NULL;
    long stride = 0, context = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (need_value(cmd, a, i, argc)) return 2;
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--text") == 0) path = v;
        else if (strcmp(a, "--field") == 0) field = v;
        else if (strcmp(a, "--tokenizer") == 0) tok_dir = v;
        else if (strcmp(a, "--adapter") == 0) adapter = v;
        else if (strcmp(a, "--kernels") == 0) rc = set_kernels(cmd, v);
        else if (strcmp(a, "--stride") == 0) rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &stride);
        else if (strcmp(a, "--context") == 0) rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &context);
        else {
            fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!model || !path) {
        fprintf(stderr, "orchard %s: --model and --text are required; see `orchard eval-q --help`\n", cmd);
        return 2;
    }
    if (!field && cli_ends_with(path, ".jsonl")) field = "text";
    orc_error err = {0};
    orc_qllm *q = orc_qllm_load(model, &err);
    orc_tokenizer *tok = q ? orc_qllm_load_tokenizer(tok_dir, model, q, &err) : NULL;
    orc_lora_set *lset = NULL;
    orc_lora_stack lstack = {0};
    if (!tok || apply_adapters(cmd, adapter, q, &lset, &lstack)) {
        if (!tok) fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        orc_lora_set_free(lset);
        orc_tokenizer_free(tok);
        orc_qllm_free(q);
        return 1;
    }
    if (context > q->cfg.max_position_embeddings || stride > (context ? context : q->cfg.max_position_embeddings)) {
        fprintf(stderr, "orchard %s: --context %ld / --stride %ld exceed the model's %lld positions\n", cmd, context,
                stride, (long long)q->cfg.max_position_embeddings);
        orc_lora_set_free(lset);
        orc_tokenizer_free(tok);
        orc_qllm_free(q);
        return 2;
    }
    cli_texts t = {0};
    orc_eval_result r;
    int rc = 0;
    if (cli_texts_read(path, field, &t, &err) != ORC_OK ||
        orc_qllm_eval_texts(q, tok, (const char *const *)t.p, t.len, t.n, context, stride, &r, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        rc = 1;
    } else {
        const char *scheme = NULL;
        orc_error ignore = {0};
        if (orc_gguf_get_str(q->file, "orchard.quant.scheme", &scheme, NULL, &ignore) != ORC_OK) scheme = NULL;
        json_t *j = json_object();
        json_object_set_new(j, "tokens", json_integer(r.tokens));
        json_object_set_new(j, "loss", json_real(r.loss));
        json_object_set_new(j, "ppl", json_real(r.ppl));
        json_object_set_new(j, "bits_per_byte", json_real(r.bits_per_byte));
        json_object_set_new(j, "bytes", json_integer(r.bytes));
        json_object_set_new(j, "windows", json_integer(r.windows));
        json_object_set_new(j, "bits_per_weight",
                            json_real(8.0 * (double)orc_qllm_weight_bytes(q) / (double)orc_llm_config_num_params(&q->cfg)));
        json_object_set_new(j, "scheme", json_string(scheme ? scheme : orc_q_type_name(q->type)));
        if (adapter) json_object_set_new(j, "adapter", json_string(adapter));
        rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
    }
    cli_texts_free(&t);
    orc_tokenizer_free(tok);
    orc_qllm_free(q);
    orc_lora_set_free(lset);
    return rc;
}
