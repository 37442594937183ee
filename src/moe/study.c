/* `orchard study moe-vs-dense`: MoE against dense at equal wall-clock time
 * under a Chinchilla compute budget (issue 6, part 3). This file owns the
 * whole experiment: the data (token shards from the cached corpus with a
 * tokenizer trained under --out, or shards and a tokenizer the user gives),
 * the dense ladder and the choice of the compute-optimal rung, the MoE
 * candidates with the same activated parameters, the step-time measurement,
 * the training runs (through orc_train_run, one recipe per model), and the
 * outputs: results.json, results.md and a hand-written SVG of validation
 * loss against training seconds. Models train one after another in this
 * process, so each gets the machine alone (as far as the OS allows). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "orchard/data.h"
#include "orchard/fileio.h"
#include "orchard/llm.h"
#include "orchard/moe.h"
#include "orchard/moe_study.h"
#include "orchard/tokenizer.h"
#include "orchard/train.h"

#define P 4400 /* room for a path under --out (its length is checked once up front) */
#define WARM_STEPS 2
#define MIN_DENSE_STEPS 10

void orc_moe_study_opts_default(orc_moe_study_opts *o) {
    memset(o, 0, sizeof *o);
    o->budget = 2e11; /* the smallest rung with the corpus tokenizer: a few minutes on 2 cores */
    o->vocab_size = 512;
    o->batch = 16;
    o->seq = 64;
    o->tokens_per_param = 20;
    o->experts[0] = 4;
    o->experts[1] = 8;
    o->n_experts = 2;
    o->lr = 3e-3;
    o->measure_steps = 5;
    o->measure_rounds = 3;
    o->evals = 8;
    o->seed = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_join(char *out, size_t cap, const char *a, const char *b) {
    int n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap) out[0] = '\0';
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static orc_status make_dir(const char *path, orc_error *err) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "study moe-vs-dense: %s: cannot create: %s", path, strerror(errno));
    return ORC_OK;
}

/* ---- the dense ladder ------------------------------------------------------------------
 * Llama-style shapes, widths growing by about 1.5x and parameters by 2-3x per
 * rung; every rung has an even number of layers (half of them become MoE) and
 * an even FFN width (the experts take half of it). */

typedef struct rung {
    int64_t dim, layers, heads, ffn;
} rung;

static const rung LADDER[] = {
    {32, 2, 4, 96},    {48, 4, 4, 128},   {64, 4, 4, 176},   {96, 4, 6, 256},    {128, 6, 8, 352},
    {192, 6, 6, 512},  {288, 6, 6, 768},  {384, 8, 6, 1024}, {512, 8, 8, 1376},  {768, 12, 12, 2048},
};
#define N_RUNGS ((int)(sizeof LADDER / sizeof LADDER[0]))

static void dense_config(const rung *r, int64_t vocab, int seq, orc_llm_config *c) {
    orc_llm_config_default(c);
    c->hidden_size = r->dim;
    c->num_hidden_layers = r->layers;
    c->num_attention_heads = r->heads;
    c->num_key_value_heads = r->heads;
    c->head_dim = r->dim / r->heads;
    c->intermediate_size = r->ffn;
    c->vocab_size = vocab;
    c->max_position_embeddings = seq;
}

/* ---- candidates and their runs ------------------------------------------------------------ */

typedef struct point {
    int64_t step;
    double train_s, wall_s, val_loss, val_bpb;
} point;

typedef struct model {
    char name[32];
    orc_llm_config cfg;
    int64_t total, active;
    double step_s;            /* measured: median of the timed steps */
    int64_t steps;
    double planned_s;         /* steps x step_s */
    double train_s, wall_s;   /* the training run: sum of step times; everything */
    double final_val, final_bpb, final_train_loss;
    point *pts;
    int n_pts, cap_pts;
    double *dts;              /* measuring: every step's time */
    int n_dts, cap_dts;
    bool oom;
    double t_start, tokens_per_step;
} model;

static void push_double(model *m, double v) {
    if (m->n_dts == m->cap_dts) {
        int cap = m->cap_dts ? 2 * m->cap_dts : 16;
        double *d = realloc(m->dts, (size_t)cap * sizeof *d);
        if (!d) {
            m->oom = true;
            return;
        }
        m->dts = d;
        m->cap_dts = cap;
    }
    m->dts[m->n_dts++] = v;
}

/* on_step: a step's time is its tokens over its tokens/s (the trainer times
 * the step alone, without validation, logging or checkpoints); validation
 * points get the summed step time so far, which is what the budget counts. */
static void on_step(void *user, const orc_train_step_info *info) {
    model *m = user;
    const double dt = info->tokens_per_s > 0 ? m->tokens_per_step / info->tokens_per_s : 0;
    m->train_s += dt;
    push_double(m, dt);
    if (!isfinite(info->val_loss)) return;
    if (m->n_pts == m->cap_pts) {
        int cap = m->cap_pts ? 2 * m->cap_pts : 16;
        point *p = realloc(m->pts, (size_t)cap * sizeof *p);
        if (!p) {
            m->oom = true;
            return;
        }
        m->pts = p;
        m->cap_pts = cap;
    }
    m->pts[m->n_pts++] = (point){info->step, m->train_s, now_s() - m->t_start, info->val_loss, info->val_bpb};
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct paths {
    char dir[P], tok[P], train[P], val[P];
} paths;

/* One orc_train_run: a config file and a recipe with absolute paths under
 * DIR/runs, the checkpoint in DIR/runs/NAME, the log in DIR/runs/NAME.jsonl. */
static orc_status run_model(const orc_moe_study_opts *o, const paths *pa, model *m, const char *name, int64_t steps,
                            int64_t eval_every, orc_error *err) {
    char runs[P], cfg_path[P], recipe[P], out[P], log[P], f[64];
    path_join(runs, sizeof runs, pa->dir, "runs");
    orc_status st = make_dir(runs, err);
    if (st != ORC_OK) return st;
    snprintf(f, sizeof f, "%s.config.json", name);
    path_join(cfg_path, sizeof cfg_path, runs, f);
    snprintf(f, sizeof f, "%s.recipe.json", name);
    path_join(recipe, sizeof recipe, runs, f);
    snprintf(f, sizeof f, "%s.jsonl", name);
    path_join(log, sizeof log, runs, f);
    path_join(out, sizeof out, runs, name);
    if ((st = orc_llm_config_save(cfg_path, &m->cfg, err)) != ORC_OK) return st;
    const int64_t warmup = steps >= 20 ? steps / 20 : 1;
    json_t *r = json_pack("{s:s, s:s, s:{s:s, s:s}, s:i, s:i, s:i, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I}",
                          "model", cfg_path, "tokenizer", pa->tok, "data", "train", pa->train, "val", pa->val, "batch",
                          o->batch, "seq", o->seq, "accum", 1, "steps", (json_int_t)steps, "lr", o->lr, "min_lr",
                          o->lr / 10, "warmup", (json_int_t)warmup, "eval_every", (json_int_t)eval_every,
                          "eval_batches", (json_int_t)4, "save_every", (json_int_t)0, "log_every",
                          (json_int_t)(eval_every > 0 ? eval_every : steps), "seed", (json_int_t)o->seed);
    char *text = r ? json_dumps(r, JSON_INDENT(2)) : NULL;
    json_decref(r);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "study moe-vs-dense: out of memory");
    st = orc_write_file_atomic(recipe, text, strlen(text), "study recipe", err);
    free(text);
    if (st != ORC_OK) return st;
    orc_train_opts to;
    memset(&to, 0, sizeof to);
    to.recipe = recipe;
    to.out_dir = out;
    to.log_path = eval_every > 0 ? log : NULL;
    to.progress = eval_every > 0 ? o->progress : NULL;
    to.on_step = on_step;
    to.user = m;
    m->tokens_per_step = (double)o->batch * o->seq;
    m->t_start = now_s();
    orc_train_result res;
    st = orc_train_run(&to, &res, err);
    if (st == ORC_OK && m->oom) st = orc_error_set(err, ORC_ENOMEM, "study moe-vs-dense: out of memory");
    if (st == ORC_OK) {
        m->wall_s = now_s() - m->t_start;
        m->final_val = res.val_loss;
        m->final_bpb = res.val_bpb;
        m->final_train_loss = res.loss;
    }
    return st;
}

/* One timing round: the median time of the steps after the warm-up ones. */
static orc_status measure_round(const orc_moe_study_opts *o, const paths *pa, model *m, int round, double *med,
                                orc_error *err) {
    char name[64];
    snprintf(name, sizeof name, "measure-%s-r%d", m->name, round + 1);
    m->n_dts = 0;
    m->train_s = 0;
    orc_status st = run_model(o, pa, m, name, WARM_STEPS + o->measure_steps, 0, err);
    if (st != ORC_OK) return st;
    if (m->n_dts < WARM_STEPS + 1)
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: %s: no step was timed", m->name);
    double *d = m->dts + WARM_STEPS;
    const int n = m->n_dts - WARM_STEPS;
    qsort(d, (size_t)n, sizeof *d, cmp_double);
    *med = n % 2 ? d[n / 2] : 0.5 * (d[n / 2 - 1] + d[n / 2]);
    m->n_dts = 0;
    m->train_s = 0;
    if (!(*med > 0))
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: %s: the measured step time is %g s", m->name, *med);
    return ORC_OK;
}

/* Step times in interleaved rounds (every model once per round), each model
 * keeping its fastest round: load from other processes only ever slows a
 * step down, and interleaving spreads a slow spell over all models instead
 * of one. */
static orc_status measure_all(const orc_moe_study_opts *o, const paths *pa, model *ms, int n, orc_error *err) {
    for (int i = 0; i < n; i++) ms[i].step_s = INFINITY;
    for (int r = 0; r < o->measure_rounds; r++)
        for (int i = 0; i < n; i++) {
            double med = 0;
            orc_status st = measure_round(o, pa, &ms[i], r, &med, err);
            if (st != ORC_OK) return st;
            if (med < ms[i].step_s) ms[i].step_s = med;
            if (o->progress)
                fprintf(o->progress, "study moe-vs-dense: round %d: %s: %.2f ms/step\n", r + 1, ms[i].name, 1e3 * med);
        }
    return ORC_OK;
}

/* ---- data -------------------------------------------------------------------------------- */

static orc_status encode_cb(void *user, const char *text, size_t len, int32_t **ids, size_t *n, orc_error *err) {
    return orc_tokenizer_encode(user, text, len, 0, ids, n, err);
}

static orc_status append_file(FILE *dst, const char *src, orc_error *err) {
    FILE *fp = fopen(src, "rb");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot open: %s", src, strerror(errno));
    char buf[65536];
    size_t n;
    orc_status st = ORC_OK;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        if (fwrite(buf, 1, n, dst) != n) {
            st = orc_error_set(err, ORC_EIO, "study moe-vs-dense: cannot write the corpus copy");
            break;
        }
    if (st == ORC_OK && ferror(fp)) st = orc_error_set(err, ORC_EIO, "%s: read error", src);
    fclose(fp);
    return st;
}

/* Shards from the cached corpus (State of the Union + Moby Dick, as
 * scripts/run.sh), reusing DIR/tokenizer and DIR/data when present. */
static orc_status corpus_data(const orc_moe_study_opts *o, paths *pa, orc_error *err) {
    char cache[4096], sotu[P], moby[P], corpus[P], data[P], tokdir[P];
    if (o->cache_dir)
        snprintf(cache, sizeof cache, "%s", o->cache_dir);
    else if (orc_corpus_default_cache(cache, sizeof cache, err) != ORC_OK)
        return err->code;
    path_join(sotu, sizeof sotu, cache, "sotu.jsonl");
    path_join(moby, sizeof moby, cache, "moby_dick.jsonl");
    if (!exists(sotu) || !exists(moby))
        return orc_error_set(err, ORC_EIO,
                             "study moe-vs-dense: the corpus is not in %s (no sotu.jsonl / moby_dick.jsonl); run "
                             "`orchard data fetch` first, or pass --data DIR --tokenizer DIR",
                             cache);
    path_join(tokdir, sizeof tokdir, pa->dir, "tokenizer");
    path_join(pa->tok, sizeof pa->tok, tokdir, "tokenizer.json");
    path_join(data, sizeof data, pa->dir, "data");
    path_join(pa->train, sizeof pa->train, data, "train.bin");
    path_join(pa->val, sizeof pa->val, data, "val.bin");
    orc_status st = ORC_OK;
    if (!exists(pa->tok)) {
        if (o->progress)
            fprintf(o->progress, "study moe-vs-dense: training a %d-token tokenizer on %s and %s\n", o->vocab_size, sotu,
                    moby);
        orc_tokenizer_train_opts to = {.vocab_size = (size_t)o->vocab_size};
        orc_tok_trainer *tr = orc_tok_trainer_new(&to, err);
        if (!tr) return err->code;
        st = orc_tok_trainer_add_file(tr, sotu, "text", err);
        if (st == ORC_OK) st = orc_tok_trainer_add_file(tr, moby, "text", err);
        orc_tokenizer *tok = st == ORC_OK ? orc_tok_trainer_finish(tr, err) : NULL;
        orc_tok_trainer_free(tr);
        if (!tok) return err->code;
        st = make_dir(tokdir, err);
        if (st == ORC_OK) st = orc_tokenizer_save(tok, pa->tok, err);
        orc_tokenizer_free(tok);
        if (st != ORC_OK) return st;
    }
    if (exists(pa->train) && exists(pa->val)) return ORC_OK;
    orc_tokenizer *tok = orc_tokenizer_load(pa->tok, err);
    if (!tok) return err->code;
    path_join(corpus, sizeof corpus, pa->dir, "corpus.jsonl");
    FILE *fp = fopen(corpus, "wb");
    if (!fp) st = orc_error_set(err, ORC_EIO, "%s: cannot write: %s", corpus, strerror(errno));
    if (st == ORC_OK) st = append_file(fp, sotu, err);
    if (st == ORC_OK) st = append_file(fp, moby, err);
    if (fp && fclose(fp) != 0 && st == ORC_OK) st = orc_error_set(err, ORC_EIO, "%s: cannot write", corpus);
    orc_prepare_opts po = {.input = corpus, .field = "text", .out_dir = data, .val_fraction = 0.05, .seed = 1,
                           .vocab_size = (int64_t)orc_tokenizer_vocab_size(tok), .encode = encode_cb,
                           .encode_user = tok, .log = o->progress};
    po.eos_id = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    orc_prepare_result pr;
    if (st == ORC_OK) st = make_dir(data, err);
    if (st == ORC_OK) st = orc_data_prepare(&po, &pr, err);
    orc_tokenizer_free(tok);
    remove(corpus); /* a copy of the cache; the shards are what the runs read */
    return st;
}

/* ---- outputs ------------------------------------------------------------------------------ */

static const char *COLORS[] = {"#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                               "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define N_COLORS ((int)(sizeof COLORS / sizeof COLORS[0]))

static char *svg_plot(const model *ms, int n) {
    double xmax = 0, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < ms[i].n_pts; j++) {
            const point *p = &ms[i].pts[j];
            if (p->train_s > xmax) xmax = p->train_s;
            if (p->val_loss < ymin) ymin = p->val_loss;
            if (p->val_loss > ymax) ymax = p->val_loss;
        }
    if (!(xmax > 0)) xmax = 1;
    if (!isfinite(ymin)) ymin = 0, ymax = 1;
    if (ymax - ymin < 1e-6) ymin -= 0.5, ymax += 0.5;
    const double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
    size_t cap = 4096 + (size_t)n * 512, len = 0;
    for (int i = 0; i < n; i++) cap += (size_t)ms[i].n_pts * 32;
    char *b = malloc(cap);
    if (!b) return NULL;
#define OUT(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
    const double W = 640, H = 400, L = 64, R = 170, T = 20, B = 50;
#define X(v) (L + (W - L - R) * (v) / xmax)
#define Y(v) (H - B - (H - B - T) * ((v) - ymin) / (ymax - ymin))
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        W, H);
    OUT("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    OUT("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
    for (int k = 0; k <= 4; k++) {
        const double yv = ymin + (ymax - ymin) * k / 4.0, xv = xmax * k / 4.0;
        OUT("<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", L - 6, Y(yv) + 4, yv);
        OUT("<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.3g</text>\n", X(xv), H - B + 16, xv);
    }
    OUT("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">training time (s, summed step times)</text>\n",
        (L + W - R) / 2, H - 12);
    OUT("<text x=\"14\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 14 %.0f)\">validation loss "
        "(nats/token)</text>\n",
        (T + H - B) / 2, (T + H - B) / 2);
    for (int i = 0; i < n; i++) {
        const char *c = COLORS[i % N_COLORS];
        OUT("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int j = 0; j < ms[i].n_pts; j++) OUT("%.1f,%.1f ", X(ms[i].pts[j].train_s), Y(ms[i].pts[j].val_loss));
        OUT("\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", W - R + 10, T + 16.0 * (i + 1), c,
            ms[i].name);
    }
    OUT("</svg>\n");
#undef X
#undef Y
#undef OUT
    if (len >= cap) {
        free(b);
        return NULL;
    }
    return b;
}

static const char *router_name(const orc_llm_config *c) {
    if (c->num_experts == 0) return "-";
    return c->moe_router == ORC_MOE_EXPERT_CHOICE ? "expert choice" : "top-2";
}

static orc_status write_results(const orc_moe_study_opts *o, const paths *pa, const model *ms, int n, double n_star,
                                int rung_i, const char *notes, orc_error *err) {
    json_t *root = json_pack("{s:f, s:f, s:f, s:i, s:i, s:i, s:f, s:I, s:s, s:s, s:s}", "budget_flops", o->budget,
                             "tokens_per_param", o->tokens_per_param, "optimal_params", n_star, "batch", o->batch,
                             "seq", o->seq, "rung", rung_i, "lr", o->lr, "seed", (json_int_t)o->seed, "tokenizer",
                             pa->tok, "train", pa->train, "val", pa->val);
    json_t *arr = json_array();
    size_t cap = 16384, len = 0;
    char *md = malloc(cap);
    if (!root || !arr || !md) {
        json_decref(root);
        json_decref(arr);
        free(md);
        return orc_error_set(err, ORC_ENOMEM, "study moe-vs-dense: out of memory");
    }
#define MD(...) len += (size_t)snprintf(md + len, len < cap ? cap - len : 0, __VA_ARGS__)
    const orc_llm_config *d = &ms[0].cfg;
    MD("Budget %.3g FLOPs, %.3g tokens per parameter: compute-optimal N* = %.0f; dense rung %d: hidden %lld, "
       "%lld layers, %lld heads, FFN %lld, vocab %lld. Batch %d x %d tokens. MoE: every other layer, experts of "
       "FFN width %lld, capacity factor 2.\n\n",
       o->budget, o->tokens_per_param, n_star, rung_i, (long long)d->hidden_size, (long long)d->num_hidden_layers,
       (long long)d->num_attention_heads, (long long)d->intermediate_size, (long long)d->vocab_size, o->batch, o->seq,
       (long long)(d->intermediate_size / 2));
    MD("| model | experts | router | total params | active params | ms/step (measured) | steps | tokens | "
       "planned s | train s | wall s | final val loss | val bpb |\n"
       "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const model *m = &ms[i];
        const int64_t tokens = m->steps * o->batch * o->seq;
        MD("| %s | %lld | %s | %lld | %lld | %.2f | %lld | %lld | %.1f | %.1f | %.1f | %.4f | %.4f |\n", m->name,
           (long long)m->cfg.num_experts, router_name(&m->cfg), (long long)m->total, (long long)m->active,
           1e3 * m->step_s, (long long)m->steps, (long long)tokens, m->planned_s, m->train_s, m->wall_s, m->final_val,
           m->final_bpb);
        json_t *curve = json_array();
        for (int j = 0; curve && j < m->n_pts; j++)
            json_array_append_new(curve, json_pack("{s:I, s:f, s:f, s:f, s:f}", "step", (json_int_t)m->pts[j].step,
                                                   "train_seconds", m->pts[j].train_s, "wall_seconds",
                                                   m->pts[j].wall_s, "val_loss", m->pts[j].val_loss, "val_bpb",
                                                   m->pts[j].val_bpb));
        json_array_append_new(
            arr, json_pack("{s:s, s:I, s:I, s:s, s:I, s:I, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:o}",
                           "name", m->name, "num_experts", (json_int_t)m->cfg.num_experts, "moe_every",
                           (json_int_t)(m->cfg.num_experts ? m->cfg.moe_every : 0), "router", router_name(&m->cfg),
                           "total_params", (json_int_t)m->total, "active_params", (json_int_t)m->active,
                           "step_seconds", m->step_s, "steps", (json_int_t)m->steps, "tokens", (json_int_t)tokens,
                           "flops_6ND", 6.0 * (double)m->active * (double)tokens, "planned_seconds", m->planned_s,
                           "train_seconds", m->train_s, "wall_seconds", m->wall_s, "final_val_loss", m->final_val,
                           "final_val_bpb", m->final_bpb, "final_train_loss", m->final_train_loss, "curve",
                           curve ? curve : json_array()));
    }
    if (notes[0]) MD("\n%s", notes);
    MD("\nms/step: the fastest of %d interleaved rounds, each the median of %d timed steps after %d warm-up steps. planned s = steps x ms/step (the dense model's is "
       "the wall-clock budget every MoE model gets); train s = summed step times of the run (validation excluded); "
       "wall s = the whole run. Validation: 4 batches of %d x %d tokens.\n",
       o->measure_rounds, o->measure_steps, WARM_STEPS, o->batch, o->seq);
#undef MD
    json_object_set_new(root, "models", arr);
    if (notes[0]) json_object_set_new(root, "notes", json_string(notes));
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    char *svg = svg_plot(ms, n);
    char p[P];
    orc_status st = ORC_OK;
    if (!text || !svg || len >= cap) st = orc_error_set(err, ORC_ENOMEM, "study moe-vs-dense: out of memory");
    path_join(p, sizeof p, pa->dir, "results.json");
    if (st == ORC_OK) st = orc_write_file_atomic(p, text, strlen(text), "study results", err);
    path_join(p, sizeof p, pa->dir, "results.md");
    if (st == ORC_OK) st = orc_write_file_atomic(p, md, len, "study results", err);
    path_join(p, sizeof p, pa->dir, "loss_vs_time.svg");
    if (st == ORC_OK) st = orc_write_file_atomic(p, svg, strlen(svg), "study plot", err);
    if (st == ORC_OK) printf("%s", md);
    free(text);
    free(svg);
    free(md);
    return st;
}

/* ---- the study ----------------------------------------------------------------------------- */

static orc_status check_opts(const orc_moe_study_opts *o, orc_error *err) {
    if (!o->out_dir) return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: --out is required");
    if (!(o->budget > 0) || !isfinite(o->budget))
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: --budget must be a positive number of FLOPs, got %g",
                             o->budget);
    if (!!o->data_dir != !!o->tokenizer)
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: --data and --tokenizer go together (the shards "
                                              "must have been made with that tokenizer)");
    if (o->batch < 1 || o->seq < 2 || o->measure_steps < 1 || o->measure_rounds < 1 || o->evals < 1 || o->vocab_size < 260 ||
        !(o->tokens_per_param > 0) || !(o->lr > 0) || o->n_experts < 0)
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: batch %d, seq %d, measure steps %d, evals %d, "
                             "vocab %d, tokens per parameter %g and lr %g must all be positive (seq >= 2, vocab >= 260)",
                             o->batch, o->seq, o->measure_steps, o->evals, o->vocab_size, o->tokens_per_param, o->lr);
    for (int i = 0; i < o->n_experts; i++)
        if (o->experts[i] < 2 || o->experts[i] > 256)
            return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: %d experts; each count must be in [2, 256]",
                                 o->experts[i]);
    if (strlen(o->out_dir) > 3000 || (o->data_dir && strlen(o->data_dir) > 3000) ||
        (o->tokenizer && strlen(o->tokenizer) > 3000))
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: a path is too long");
    return ORC_OK;
}

orc_status orc_moe_study_run(const orc_moe_study_opts *o, orc_error *err) {
    orc_status st = check_opts(o, err);
    if (st != ORC_OK) return st;
    paths pa;
    memset(&pa, 0, sizeof pa);
    char runs[P];
    if ((st = make_dir(o->out_dir, err)) != ORC_OK) return st;
    if (!realpath(o->out_dir, pa.dir))
        return orc_error_set(err, ORC_EIO, "study moe-vs-dense: %s: %s", o->out_dir, strerror(errno));
    path_join(runs, sizeof runs, pa.dir, "runs");
    if (exists(runs))
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: %s already holds a study (runs/); choose a new --out "
                             "(its tokenizer/ and data/ may be copied over to be reused)", o->out_dir);
    /* 1. data */
    if (o->data_dir) {
        char abs_data[PATH_MAX], abs_tok[PATH_MAX];
        if (!realpath(o->data_dir, abs_data))
            return orc_error_set(err, ORC_EIO, "study moe-vs-dense: --data %s: %s", o->data_dir, strerror(errno));
        if (!realpath(o->tokenizer, abs_tok))
            return orc_error_set(err, ORC_EIO, "study moe-vs-dense: --tokenizer %s: %s", o->tokenizer, strerror(errno));
        snprintf(pa.tok, sizeof pa.tok, "%s", abs_tok);
        path_join(pa.train, sizeof pa.train, abs_data, "train.bin");
        path_join(pa.val, sizeof pa.val, abs_data, "val.bin");
        if (!exists(pa.train) || !exists(pa.val))
            return orc_error_set(err, ORC_EIO, "study moe-vs-dense: --data %s must hold train.bin and val.bin (from "
                                 "`orchard data prepare`)", o->data_dir);
    } else if ((st = corpus_data(o, &pa, err)) != ORC_OK) {
        return st;
    }
    orc_tokenizer *tok = orc_tokenizer_load(pa.tok, err);
    if (!tok) return err->code;
    const int64_t vocab = (int64_t)orc_tokenizer_vocab_size(tok);
    orc_tokenizer_free(tok);
    orc_shard *sh = orc_shard_open(pa.train, vocab, err);
    if (!sh) return err->code;
    const uint64_t train_tokens = orc_shard_get_info(sh)->tokens;
    orc_shard_close(sh);

    /* 2. the dense rung closest to N* in log scale */
    const double n_star = sqrt(o->budget / (6.0 * o->tokens_per_param));
    int best = 0;
    double best_d = INFINITY;
    int64_t rung_n[N_RUNGS];
    for (int i = 0; i < N_RUNGS; i++) {
        orc_llm_config c;
        dense_config(&LADDER[i], vocab, o->seq, &c);
        rung_n[i] = orc_llm_config_num_params(&c);
        const double dl = fabs(log((double)rung_n[i] / n_star));
        if (dl < best_d) best_d = dl, best = i;
    }
    if (n_star < 0.5 * (double)rung_n[0]) {
        const double need = 6.0 * o->tokens_per_param * 0.25 * (double)rung_n[0] * (double)rung_n[0];
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: --budget %g FLOPs is too small: it is compute-optimal "
                             "for N* = %.0f parameters, less than half the smallest dense model (%lld parameters with "
                             "vocab %lld); use --budget %.3g or more", o->budget, n_star, (long long)rung_n[0],
                             (long long)vocab, need);
    }
    char notes[1024] = "";
    if (n_star > 2.0 * (double)rung_n[N_RUNGS - 1])
        snprintf(notes, sizeof notes, "Note: N* = %.0f is above the largest rung (%lld parameters); that rung is "
                 "used with %.3g tokens per parameter, so the run spends less than the budget.\n", n_star,
                 (long long)rung_n[N_RUNGS - 1], o->tokens_per_param);
    const int64_t tok_step = (int64_t)o->batch * o->seq;
    const double dense_tokens = o->tokens_per_param * (double)rung_n[best];
    const int64_t dense_steps = (int64_t)ceil(dense_tokens / (double)tok_step);
    if (dense_steps < MIN_DENSE_STEPS)
        return orc_error_set(err, ORC_EINVAL, "study moe-vs-dense: --budget %g FLOPs gives the dense model (%lld "
                             "parameters) %.0f tokens, only %lld steps of %lld tokens (at least %d are needed); raise "
                             "--budget or lower --batch/--seq", o->budget, (long long)rung_n[best], dense_tokens,
                             (long long)dense_steps, (long long)tok_step, MIN_DENSE_STEPS);

    /* 3. the candidates */
    const int n_models = 1 + 2 * o->n_experts;
    model *ms = calloc((size_t)n_models, sizeof *ms);
    if (!ms) return orc_error_set(err, ORC_ENOMEM, "study moe-vs-dense: out of memory");
    dense_config(&LADDER[best], vocab, o->seq, &ms[0].cfg);
    snprintf(ms[0].name, sizeof ms[0].name, "dense");
    for (int e = 0; e < o->n_experts; e++)
        for (int r = 0; r < 2; r++) {
            model *m = &ms[1 + 2 * e + r];
            m->cfg = ms[0].cfg;
            m->cfg.num_experts = o->experts[e];
            m->cfg.moe_every = 2;
            m->cfg.moe_router = r ? ORC_MOE_EXPERT_CHOICE : ORC_MOE_TOKEN_CHOICE;
            m->cfg.moe_top_k = 2;
            m->cfg.capacity_factor = 2.0;
            m->cfg.moe_intermediate_size = ms[0].cfg.intermediate_size / 2;
            snprintf(m->name, sizeof m->name, "moe-e%d-%s", o->experts[e], r ? "ec" : "top2");
        }
    for (int i = 0; i < n_models; i++) {
        ms[i].total = orc_llm_config_num_params(&ms[i].cfg);
        ms[i].active = orc_llm_config_active_params(&ms[i].cfg);
    }
    if (o->progress)
        fprintf(o->progress, "study moe-vs-dense: budget %.3g FLOPs -> N* = %.0f; dense rung %d (%lld parameters), "
                "%.0f tokens = %lld steps of %d x %d\n", o->budget, n_star, best, (long long)rung_n[best], dense_tokens,
                (long long)dense_steps, o->batch, o->seq);
    if ((double)(dense_steps * tok_step) > (double)train_tokens)
        snprintf(notes + strlen(notes), sizeof notes - strlen(notes), "Note: the dense run reads %lld tokens, more "
                 "than the %llu of the training shard, so the data repeats.\n", (long long)(dense_steps * tok_step),
                 (unsigned long long)train_tokens);

    /* 4. step times, then the runs */
    st = measure_all(o, &pa, ms, n_models, err);
    for (int i = 0; st == ORC_OK && i < n_models; i++) {
        if (o->progress)
            fprintf(o->progress, "study moe-vs-dense: %s: %lld parameters (%lld active), %.2f ms/step\n", ms[i].name,
                    (long long)ms[i].total, (long long)ms[i].active, 1e3 * ms[i].step_s);
    }
    if (st == ORC_OK) {
        ms[0].steps = dense_steps;
        ms[0].planned_s = (double)dense_steps * ms[0].step_s;
        for (int i = 1; i < n_models; i++) {
            ms[i].steps = (int64_t)floor(ms[0].planned_s / ms[i].step_s);
            if (ms[i].steps < 1) ms[i].steps = 1;
            ms[i].planned_s = (double)ms[i].steps * ms[i].step_s;
        }
    }
    for (int i = 0; st == ORC_OK && i < n_models; i++) {
        model *m = &ms[i];
        const int64_t every = m->steps / o->evals > 0 ? m->steps / o->evals : 1;
        if (o->progress)
            fprintf(o->progress, "study moe-vs-dense: training %s for %lld steps (%.1f s planned)\n", m->name,
                    (long long)m->steps, m->planned_s);
        st = run_model(o, &pa, m, m->name, m->steps, every, err);
    }
    if (st == ORC_OK) st = write_results(o, &pa, ms, n_models, n_star, best, notes, err);
    for (int i = 0; i < n_models; i++) {
        free(ms[i].pts);
        free(ms[i].dts);
    }
    free(ms);
    return st;
}

/* ---- the command line ----------------------------------------------------------------------- */

void orc_moe_study_help(FILE *fp) {
    fprintf(fp,
            "usage: orchard study moe-vs-dense [--budget FLOPS] --out DIR [options]\n\n"
            "Dense vs MoE at equal wall-clock time under a Chinchilla budget: the dense model is the\n"
            "ladder rung closest to N* = sqrt(FLOPS / (6 x tokens-per-param)) trained on tokens-per-param\n"
            "x N tokens; MoE models (every other layer, E experts of half the FFN width, top-2 token\n"
            "choice and expert choice) with the same activated parameters train for the dense run's\n"
            "measured time. Writes DIR/results.json, DIR/results.md and DIR/loss_vs_time.svg.\n\n"
            "  --budget FLOPS          dense training FLOPs, C = 6 N D (2e11: the smallest rung, minutes on 2 cores)\n"
            "  --out DIR               results, runs/ (checkpoints, logs), tokenizer/ and data/\n"
            "  --data DIR              train.bin and val.bin to use (needs --tokenizer); default: made from\n"
            "                          the cached corpus (`orchard data fetch`) under DIR\n"
            "  --tokenizer DIR         the tokenizer of --data\n"
            "  --cache DIR             corpus cache (default $ORCHARD_CACHE or ~/.cache/orchard)\n"
            "  --vocab-size N          tokenizer trained on the corpus (512)\n"
            "  --batch N, --seq N      rows per step and tokens per row (16, 64)\n"
            "  --tokens-per-param X    the Chinchilla ratio (20)\n"
            "  --experts LIST          expert counts, comma separated (4,8)\n"
            "  --lr X                  peak learning rate, cosine to X/10 (0.003)\n"
            "  --measure-steps N       timed steps per model and round after 2 warm-up steps (5)\n"
            "  --measure-rounds N      interleaved timing rounds; each model keeps its fastest (3)\n"
            "  --evals N               validation points per run (8)\n"
            "  --seed N                init and batches, the same for every model (1)\n"
            "  --quiet                 no progress on stderr\n");
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "orchard study moe-vs-dense: %s; see `orchard study moe-vs-dense --help`\n", msg);
    return 2;
}

static bool parse_double(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno == ERANGE || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int orc_moe_study_main(int argc, char **argv) {
    orc_moe_study_opts o;
    orc_moe_study_opts_default(&o);
    o.progress = stderr;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            orc_moe_study_help(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = NULL;
            continue;
        }
        static const char *const with_value[] = {"--budget", "--out", "--data", "--tokenizer", "--cache",
                                                 "--vocab-size", "--batch", "--seq", "--tokens-per-param", "--experts",
                                                 "--lr", "--measure-steps", "--measure-rounds", "--evals",
                                                 "--seed"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) return usage_error("unknown argument '%s'", a);
        if (i + 1 >= argc) return usage_error("option %s needs a value", a);
        const char *v = argv[++i];
        long n = 0;
        if (!strcmp(a, "--budget")) {
            if (!parse_double(v, &o.budget) || !(o.budget > 0))
                return usage_error("--budget expects a positive number of FLOPs (e.g. 2e11), got '%s'", v);
        } else if (!strcmp(a, "--out")) {
            o.out_dir = v;
        } else if (!strcmp(a, "--data")) {
            o.data_dir = v;
        } else if (!strcmp(a, "--tokenizer")) {
            o.tokenizer = v;
        } else if (!strcmp(a, "--cache")) {
            o.cache_dir = v;
        } else if (!strcmp(a, "--tokens-per-param")) {
            if (!parse_double(v, &o.tokens_per_param) || !(o.tokens_per_param > 0))
                return usage_error("%s expects a positive number, got '%s'", a, v);
        } else if (!strcmp(a, "--lr")) {
            if (!parse_double(v, &o.lr) || !(o.lr > 0)) return usage_error("%s expects a positive number, got '%s'", a, v);
        } else if (!strcmp(a, "--experts")) {
            o.n_experts = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o.n_experts == ORC_MOE_STUDY_MAX_EXPERT_COUNTS || !parse_long(t, 2, 256, &n))
                    return usage_error("--experts expects 1 to 4 counts in [2, 256] separated by commas, got '%s'", v);
                o.experts[o.n_experts++] = (int)n;
            }
            if (o.n_experts == 0) return usage_error("--experts expects at least one count, got '%s'", v);
        } else if (!strcmp(a, "--seed")) {
            if (!parse_long(v, 0, LONG_MAX, &n)) return usage_error("%s expects a non-negative integer, got '%s'", a, v);
            o.seed = (uint64_t)n;
        } else {
            const long hi = !strcmp(a, "--vocab-size") ? 65536 : 1000000;
            const long lo = !strcmp(a, "--vocab-size") ? 260 : !strcmp(a, "--seq") ? 2 : 1;
            if (!parse_long(v, lo, hi, &n)) return usage_error("%s expects an integer in range, got '%s'", a, v);
            if (!strcmp(a, "--vocab-size")) o.vocab_size = (int)n;
            else if (!strcmp(a, "--batch")) o.batch = (int)n;
            else if (!strcmp(a, "--seq")) o.seq = (int)n;
            else if (!strcmp(a, "--measure-steps")) o.measure_steps = (int)n;
            else if (!strcmp(a, "--measure-rounds")) o.measure_rounds = (int)n;
            else o.evals = (int)n;
        }
    }
    if (!o.out_dir) return usage_error("--out is required");
    orc_error err = {0};
    if (orc_moe_study_run(&o, &err) != ORC_OK) {
        const bool named = !strncmp(err.msg, "study moe-vs-dense: ", 20); /* most messages name the study */
        fprintf(stderr, "orchard %s%s\n", named ? "" : "study moe-vs-dense: ", err.msg);
        return 1;
    }
    return 0;
}
