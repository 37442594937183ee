/* `orchard quantize` and `orchard generate-q`: a model directory or GGUF file
 * to a Q8_0 / Q4_0 GGUF that llama.cpp runs, and text generation with such a
 * file (or any `llama` GGUF, quantized on load) through the quantized
 * kernels. The work is in src/quant; this file parses options, samples with
 * the shared sampler and reports. generate-q is a separate command because
 * the generator of orchard/generate.h is bound to the float model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "orchard/generate.h"
#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"

void cmd_quantize_help(void) {
    printf("usage: orchard quantize --model DIR|FILE.gguf --scheme q8_0|q4_0 --out DIR|FILE.gguf\n\n"
           "Write the model as a llama.cpp `llama` GGUF with its matrices in ggml's Q8_0 or\n"
           "Q4_0 blocks (bit-exact with llama.cpp's reference quantizer; token_embd and\n"
           "output stay Q8_0 in q4_0: embeddings at 8 bits) and its norms in F32. DIR\n"
           "input is config.json + model.safetensors (+ tokenizer.json, stored in the\n"
           "file as for `orchard export`); a GGUF input may be F32, F16, BF16, Q8_0 or\n"
           "Q4_0. An --out that does not end in .gguf is a directory: DIR/model.gguf.\n"
           "Run the result with `orchard generate-q --model OUT` or llama.cpp.\n");
}

void cmd_generate_q_help(void) {
    printf("usage: orchard generate-q --model FILE.gguf|DIR --prompt TEXT [--max-tokens N]\n"
           "                          [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
           "                          [--context N] [--tokenizer DIR] [--kernels PATH]\n\n"
           "Continue TEXT with a quantized model (a Q8_0/Q4_0 GGUF, or DIR/model.gguf;\n"
           "F32/F16 matrices are quantized to Q8_0 on load) through the integer kernels.\n"
           "The tokenizer comes from --tokenizer, DIR/tokenizer.json, or the GGUF's keys.\n"
           "Prints the text, then prompt and decode speed on stderr.\n\n"
           "  --kernels auto|portable|avx2|avx512   force a kernel path (default auto)\n"
           "  --temperature 0                       greedy (default 0.8, top-k 40, top-p 0.95)\n");
}

static int need_value(const char *cmd, const char *opt, int i, int argc) {
    if (i + 1 < argc) return 0;
    fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, opt);
    return 2;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *scheme = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--model") == 0    ? &model
                            : strcmp(a, "--scheme") == 0 ? &scheme
                            : strcmp(a, "--out") == 0    ? &out
                                                         : NULL;
        if (!slot) {
            fprintf(stderr, "orchard quantize: unknown option '%s'\n", a);
            return 2;
        }
        if (need_value("quantize", a, i, argc)) return 2;
        *slot = argv[++i];
    }
    if (!model || !scheme || !out) {
        fprintf(stderr, "orchard quantize: --model, --scheme and --out are required; see `orchard quantize --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_ggml_type type;
    if (orc_quant_scheme_parse(scheme, &type, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s\n", err.msg);
        return 2;
    }
    char path[4200];
    if (ends_with(out, ".gguf")) {
        snprintf(path, sizeof path, "%s", out);
    } else {
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "orchard quantize: %s: cannot create the directory: %s\n", out, strerror(errno));
            return 1;
        }
        snprintf(path, sizeof path, "%s/model.gguf", out);
    }
    orc_status st = is_dir(model) ? orc_quantize_model_dir(model, path, type, &err)
                                  : orc_quantize_gguf(model, path, type, &err);
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

static orc_tokenizer *load_tokenizer(const char *tok_dir, const char *model, const orc_qllm *q, orc_error *err) {
    char path[4200];
    if (tok_dir) return orc_tokenizer_load(tok_dir, err);
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    if (is_dir(model) && access(path, F_OK) == 0) return orc_tokenizer_load(path, err);
    char *json = orc_gguf_tokenizer_json(q->file, model, err);
    if (!json) return NULL;
    orc_tokenizer *tok = orc_tokenizer_from_json(json, strlen(json), model, err);
    free(json);
    return tok;
}

/* Logits of the last of ids[0..n) appended to the cache, into out [V]. */
static bool step(orc_ctx *ctx, orc_qllm *q, orc_llm_cache *c, const int32_t *ids, int64_t n, float *out) {
    orc_ctx_reset(ctx);
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * (size_t)n);
    orc_tensor *h = t ? orc_qllm_hidden(ctx, q, t, c) : NULL;
    orc_tensor *y = h ? orc_q_linear(ctx, orc_slice(ctx, h, 1, n - 1, 1), &q->lm_head) : NULL;
    if (!y) return false;
    orc_read_f32(y, out);
    return true;
}

typedef struct gen_args {
    const char *model, *prompt, *tok_dir, *kernels;
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
    orc_tokenizer *tok = q ? load_tokenizer(g.tok_dir, g.model, q, &err) : NULL;
    if (!tok) {
        fprintf(stderr, "orchard generate-q: %s\n", err.msg);
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
    return rc;
}
