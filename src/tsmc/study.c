/* `orchard study tsmc`: the whole TSMC experiment from a pretrained LM.
 * It generates the math task suite, fine-tunes the generator on the train
 * split (SFT through orchard's trainer), samples rollouts and trains the
 * value model on them, then answers the test problems with every method
 * for N in a list, and writes a JSON and a Markdown table (accuracy with a
 * 95% interval, tokens generated), an SVG plot, and the TSMC-minus-baseline
 * gaps with paired 95% intervals. The best-of-N baselines share one set of
 * max(N) samples per problem, taking the first N for each N (the usual
 * nested protocol), their values come from batched value-model forwards,
 * and TSMC runs once per N and value model. The tables are rewritten after
 * every test problem, so a run stopped early keeps what it measured. The
 * task difficulty range is an option (a small generator needs easy
 * problems), and an already fine-tuned generator can be given instead of
 * fine-tuning one. */
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "orchard/fileio.h"
#include "orchard/tasks.h"
#include "orchard/train.h"
#include "orchard/tsmc.h"

void orc_tsmc_study_opts_default(orc_tsmc_study_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_tasks = 3000;
    o->sft_steps = 800;
    o->sft_lr = 1e-3;
    o->rollout_problems = 96;
    o->k = 8;
    o->value_steps = 100;
    o->val_rollout_problems = 160;
    o->value_eval_every = 0;
    o->test_problems = 200;
    static const int ns[] = {4, 8, 16, 32, 64};
    memcpy(o->ns, ns, sizeof ns);
    o->n_ns = 5;
    o->seed = 1;
    o->bce_ablation = true;
    o->temperature = 0.7;
    orc_tsmc_opts so; /* TSMC's own defaults */
    orc_tsmc_opts_default(&so);
    o->tsmc_alpha = so.alpha;
    o->tsmc_ess = so.ess_threshold;
    o->tsmc_resample = so.resample;
    /* one operation per problem: what the small generators this study runs on can learn (docs/tsmc.md) */
    o->min_difficulty = o->max_difficulty = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a/b into out; a path that does not fit becomes "" (and then fails to open, naming nothing useful),
 * so the study checks its directory's length once up front instead. */
static void path_join(char *out, size_t cap, const char *a, const char *b) {
    int n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap) out[0] = '\0';
}

/* ---- task files ------------------------------------------------------------------------ */

typedef struct task {
    char *id, *question, *solution, *answer;
    bool held_out; /* written in one of the task suite's held-out phrasings (test only) */
} task;

static void tasks_free(task *t, int n) {
    for (int i = 0; t && i < n; i++) {
        free(t[i].id);
        free(t[i].question);
        free(t[i].solution);
        free(t[i].answer);
    }
    free(t);
}

static orc_status read_tasks(const char *path, int limit, task **out, int *n, orc_error *err) {
    *out = NULL;
    *n = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    int alloc = 0;
    orc_status st = ORC_OK;
    while (st == ORC_OK && (limit <= 0 || *n < limit) && getline(&line, &cap, fp) >= 0) {
        line_no++;
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "id")), *ins = json_string_value(json_object_get(o, "instruction"));
        const char *in = json_string_value(json_object_get(o, "input")), *sol = json_string_value(json_object_get(o, "solution"));
        const char *ans = json_string_value(json_object_get(o, "answer"));
        if (!id || !ins || !sol || !ans) {
            json_decref(o);
            st = orc_error_set(err, ORC_EFORMAT, "%s:%zu: a task needs string id, instruction, solution and answer", path,
                               line_no);
            break;
        }
        if (*n == alloc) {
            alloc = alloc ? 2 * alloc : 256;
            task *t = realloc(*out, (size_t)alloc * sizeof *t);
            if (!t) {
                json_decref(o);
                st = orc_error_set(err, ORC_ENOMEM, "out of memory");
                break;
            }
            *out = t;
        }
        task *t = &(*out)[(*n)++];
        size_t ql = strlen(ins) + (in ? strlen(in) : 0) + 2;
        t->question = malloc(ql);
        if (t->question) snprintf(t->question, ql, "%s%s%s", ins, in && *in ? "\n" : "", in && *in ? in : "");
        t->id = strdup(id);
        t->solution = strdup(sol);
        t->answer = strdup(ans);
        t->held_out = json_is_true(json_object_get(o, "held_out_phrasing"));
        json_decref(o);
        if (!t->question || !t->id || !t->solution || !t->answer) st = orc_error_set(err, ORC_ENOMEM, "out of memory");
    }
    free(line);
    fclose(fp);
    return st;
}

/* Chat JSONL for SFT: the question as the user turn, the worked solution as the answer. *max_len (when tok
 * is given) grows to the longest conversation in tokens, so the fine-tuning's rows are as long as the data
 * needs: every row is padded to the recipe's seq, and easy problems are half the length of hard ones. */
static orc_status write_sft(const char *tasks_path, int skip, const char *out_path, const orc_tokenizer *tok,
                            size_t *max_len, int *n_written, orc_error *err) {
    task *t = NULL;
    int n = 0;
    orc_status st = read_tasks(tasks_path, 0, &t, &n, err);
    if (st == ORC_OK && skip > 0 && skip >= n) /* skip 0: an empty split stays what it was, not this error */
        st = orc_error_set(err, ORC_EINVAL, "study tsmc: %s has %d problems; holding out %d for the rollouts leaves "
                           "none to fine-tune on (more --tasks or fewer --rollouts)", tasks_path, n, skip);
    FILE *fp = st == ORC_OK ? fopen(out_path, "w") : NULL;
    if (st == ORC_OK && !fp) st = orc_error_set(err, ORC_EIO, "%s: cannot write: %s", out_path, strerror(errno));
    if (n_written) *n_written = st == ORC_OK ? n - skip : 0;
    for (int i = skip; st == ORC_OK && i < n; i++) {
        if (tok) {
            const orc_chat_msg msgs[2] = {{"user", t[i].question}, {"assistant", t[i].solution}};
            int32_t *ids = NULL;
            size_t len = 0;
            st = orc_chat_encode(tok, msgs, 2, false, &ids, NULL, &len, err);
            free(ids);
            if (st != ORC_OK) break;
            if (len > *max_len) *max_len = len;
        }
        json_t *o = json_pack("{s:[{s:s, s:s}, {s:s, s:s}]}", "messages", "role", "user", "content", t[i].question,
                              "role", "assistant", "content", t[i].solution);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!line || fprintf(fp, "%s\n", line) < 0) st = orc_error_set(err, ORC_EIO, "%s: cannot write", out_path);
        free(line);
    }
    if (fp && fclose(fp) != 0 && st == ORC_OK) st = orc_error_set(err, ORC_EIO, "%s: cannot write", out_path);
    tasks_free(t, n);
    return st;
}

/* ---- steps ------------------------------------------------------------------------------ */

/* Recipe paths are relative to the recipe's directory, so it gets absolute ones. The fine-tuning starts
 * from --sft-from when given (else the base model); with unseen_rollouts the rollout problems are left out. */
static orc_status fine_tune(const orc_tsmc_study_opts *o, const char *rel_dir, orc_error *err) {
    char sft_train[4200], sft_val[4200], recipe[4200], gen[4200], tasks_dir[4200], p[4200];
    char dir[PATH_MAX], base[PATH_MAX];
    const char *init = o->sft_from ? o->sft_from : o->base_model;
    if (!realpath(rel_dir, dir) || !realpath(init, base))
        return orc_error_set(err, ORC_EIO, "study tsmc: %s: %s", realpath(rel_dir, dir) ? init : rel_dir,
                             strerror(errno));
    path_join(tasks_dir, sizeof tasks_dir, dir, "tasks");
    path_join(sft_train, sizeof sft_train, dir, "sft_train.jsonl");
    path_join(sft_val, sizeof sft_val, dir, "sft_val.jsonl");
    path_join(recipe, sizeof recipe, dir, "sft_recipe.json");
    path_join(gen, sizeof gen, dir, "generator");
    /* seq: the longest training conversation (inputs are all its tokens but the last), rounded up to 16 and
     * at most the model's context; longer validation rows are cut like any SFT row. */
    orc_llm_config cfg;
    path_join(p, sizeof p, base, "config.json");
    if (orc_llm_config_load(p, &cfg, err) != ORC_OK) return err->code;
    orc_tokenizer *tok = orc_tokenizer_load(base, err);
    if (!tok) return err->code;
    const int max_pos = (int)cfg.max_position_embeddings;
    size_t max_len = 0;
    int n_sft = 0;
    path_join(p, sizeof p, tasks_dir, "train.jsonl");
    orc_status st = write_sft(p, o->unseen_rollouts ? o->rollout_problems : 0, sft_train, tok, &max_len, &n_sft, err);
    orc_tokenizer_free(tok);
    path_join(p, sizeof p, tasks_dir, "val.jsonl");
    if (st == ORC_OK) st = write_sft(p, 0, sft_val, NULL, NULL, NULL, err);
    if (st != ORC_OK) return st;
    fprintf(stderr, "study tsmc: fine-tuning %s on %d math problems%s\n", init, n_sft,
            o->unseen_rollouts ? " (the rollout problems held out)" : "");
    int seq = ((int)max_len - 1 + 15) / 16 * 16;
    if (seq > max_pos) seq = max_pos;
    if (seq < 16) seq = 16;
    json_t *r = json_pack("{s:s, s:{s:s, s:s}, s:i, s:i, s:i, s:I, s:f, s:f, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I}",
                          "init_from", base, "sft", "train", sft_train, "val", sft_val, "batch", 16, "seq", seq,
                          "accum", 1, "steps", (json_int_t)o->sft_steps, "lr", o->sft_lr, "min_lr", o->sft_lr / 10, "warmup",
                          (json_int_t)(o->sft_steps / 10), "weight_decay", 0.0, "grad_clip", 1.0, "eval_every",
                          (json_int_t)o->sft_steps, "eval_batches", (json_int_t)4, "save_every", (json_int_t)0,
                          "log_every", (json_int_t)25, "seed", (json_int_t)o->seed);
    char *text = r ? json_dumps(r, JSON_INDENT(2)) : NULL;
    json_decref(r);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "out of memory");
    st = orc_write_file_atomic(recipe, text, strlen(text), "study", err);
    free(text);
    if (st != ORC_OK) return st;
    orc_train_opts to;
    memset(&to, 0, sizeof to);
    to.recipe = recipe;
    to.out_dir = gen;
    /* the fine-tuning is most of a study's time: its progress on stderr and its loss curve in the study */
    path_join(p, sizeof p, dir, "sft_log.jsonl");
    to.log_path = p;
    to.progress = stderr;
    orc_train_result res;
    return orc_train_run(&to, &res, err);
}

/* K labelled samples for each of the first `limit` problems of tasks/<split>.jsonl, saved as DIR/<file>. */
static orc_status make_rollouts(const orc_tsmc_study_opts *o, const orc_tsmc_models *mo, const char *dir,
                                const char *split, int limit, const char *file, orc_rollout_set *set,
                                double *frac_correct, orc_error *err) {
    char p[4200];
    snprintf(p, sizeof p, "%s/tasks/%s.jsonl", dir, split);
    task *t = NULL;
    int n = 0;
    orc_status st = read_tasks(p, limit, &t, &n, err);
    set->problems = st == ORC_OK ? calloc((size_t)(n > 0 ? n : 1), sizeof *set->problems) : NULL;
    if (st == ORC_OK && !set->problems) st = orc_error_set(err, ORC_ENOMEM, "out of memory");
    orc_tsmc_opts so;
    orc_tsmc_opts_default(&so);
    so.seed = o->seed;
    so.sampler.temperature = (float)o->temperature;
    int correct = 0, total = 0;
    for (int i = 0; st == ORC_OK && i < n; i++) {
        orc_rollout_problem *pr = &set->problems[i];
        set->n_problems = i + 1;
        pr->id = strdup(t[i].id);
        pr->question = strdup(t[i].question);
        pr->gold = strdup(t[i].answer);
        st = orc_tsmc_prompt(mo->tok, t[i].question, &pr->prompt, &pr->n_prompt, err);
        so.seed = o->seed * 1000003u + (uint64_t)i + (strcmp(split, "train") ? 0x9e3779b9u : 0u);
        if (st == ORC_OK) st = orc_tsmc_sample(mo, pr->prompt, pr->n_prompt, o->k, &so, pr, err);
        char *gold = orc_task_normalize(t[i].answer);
        for (int k = 0; st == ORC_OK && k < pr->n_samples; k++) {
            pr->samples[k].correct = gold && pr->samples[k].answer && strcmp(gold, pr->samples[k].answer) == 0;
            correct += pr->samples[k].correct;
            total++;
        }
        free(gold);
    }
    *frac_correct = total ? (double)correct / total : 0.0;
    if (st == ORC_OK)
        fprintf(stderr, "rollouts (%s): %d problems x %d samples, %.1f%% correct\n", split, n, o->k,
                100.0 * *frac_correct);
    snprintf(p, sizeof p, "%s/%s", dir, file);
    if (st == ORC_OK) st = orc_rollouts_save(set, p, err);
    tasks_free(t, n);
    return st;
}

/* ---- scoring ---------------------------------------------------------------------------- */

typedef struct cell {
    int correct, total;
    double tokens;
    int resamples, resampled; /* TSMC rows: resampling rounds, and problems resampled at least once */
    unsigned char *hit; /* per test problem */
} cell;

static void wilson(int k, int n, double *lo, double *hi) {
    if (n == 0) {
        *lo = *hi = 0;
        return;
    }
    const double z = 1.96, p = (double)k / n, d = 1 + z * z / n;
    const double c = (p + z * z / (2.0 * n)) / d, h = z * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / d;
    *lo = c - h > 0 ? c - h : 0.0; /* no "-0" for 0 of n */
    *hi = c + h < 1 ? c + h : 1.0;
}

/* Mean paired difference a - b over n problems and its normal 95% half-width. */
static void paired_gap(const unsigned char *a, const unsigned char *b, int n, double *mean, double *half) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d;
        s2 += d * d;
    }
    *mean = n ? s / n : 0;
    const double var = n > 1 ? (s2 - n * *mean * *mean) / (n - 1) : 0;
    *half = n > 1 ? 1.96 * sqrt(var > 0 ? var : 0) / sqrt((double)n) : 0;
}

static bool is_correct(const char *gold_norm, const char *answer) {
    return gold_norm && answer && strcmp(gold_norm, answer) == 0;
}

/* Rows 1 .. n_rows - 1 of cells as lines (row ORC_TSMC_N_METHODS is TSMC with the BCE value model), greedy
 * (row 0) as a dashed level. */
static char *svg_plot(cell (*cells)[ORC_TSMC_STUDY_MAX_NS], int n_rows, const int *ns, int n_ns) {
    static const char *colors[ORC_TSMC_N_METHODS + 1] = {"#888888", "#1f77b4", "#ff7f0e", "#2ca02c",
                                                          "#9467bd", "#d62728", "#8c564b"};
    size_t cap = 16384, len = 0;
    char *b = malloc(cap);
    if (!b) return NULL;
#define OUT(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
    const double W = 560, H = 360, L = 60, R = 140, T = 20, B = 50;
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    OUT("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    OUT("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
    for (int k = 0; k <= 4; k++) {
        const double y = H - B - (H - B - T) * k / 4.0;
        OUT("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%d%%</text>\n", L - 6, y + 4, 25 * k);
    }
    for (int j = 0; j < n_ns; j++) {
        const double x = L + (W - L - R) * (n_ns > 1 ? (double)j / (n_ns - 1) : 0.5);
        OUT("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x, H - B + 16, ns[j]);
    }
    OUT("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">N (samples / particles)</text>\n", (L + W - R) / 2, H - 10);
    for (int m = 1; m < n_rows; m++) {
        OUT("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[m]);
        for (int j = 0; j < n_ns; j++) {
            const cell *c = &cells[m][j];
            const double acc = c->total ? (double)c->correct / c->total : 0;
            OUT("%.1f,%.1f ", L + (W - L - R) * (n_ns > 1 ? (double)j / (n_ns - 1) : 0.5), H - B - (H - B - T) * acc);
        }
        OUT("\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", W - R + 10, T + 16.0 * m, colors[m],
            m < ORC_TSMC_N_METHODS ? orc_tsmc_method_name((orc_tsmc_method)m) : "tsmc (bce)");
    }
    const double g = cells[0][0].total ? (double)cells[0][0].correct / cells[0][0].total : 0;
    OUT("<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"4 3\"/>\n"
        "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">greedy</text>\n</svg>\n",
        L, H - B - (H - B - T) * g, W - R, H - B - (H - B - T) * g, colors[0], W - R + 10, T + 16.0 * 8, colors[0]);
#undef OUT
    if (len >= cap) {
        free(b);
        return NULL;
    }
    return b;
}

/* A JSON number, or null for NaN (no pair to compare). */
static json_t *jnum(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

/* What results.json says besides the cells. */
typedef struct study_meta {
    int n_test;           /* test problems planned */
    int rollout_problems;
    double rollout_correct; /* fraction of rollout samples that are right */
    int val_problems;       /* held-out (validation split) rollout problems, 0: none */
    double val_correct;
    orc_value_report val[2]; /* the kept value models on them: twist, bce */
    int val_step[2];
    int no_answer_smc;
    int n_obj;            /* 2: the BCE value model's TSMC row too */
    double t0;
    const unsigned char *held; /* [n_test] 1: the test problem is in a held-out phrasing */
} study_meta;

/* Correct answers of one cell among the first n test problems in a held-out
 * phrasing (held = 1) or in the phrasings training used (held = 0). */
static int hits_where(const cell *c, const unsigned char *held_of, int n, int held, int *total) {
    int k = 0;
    *total = 0;
    for (int i = 0; i < n; i++)
        if ((held_of ? held_of[i] : 0) == held) {
            k += c->hit[i];
            (*total)++;
        }
    return k;
}

/* Every value model the study uses was given (--value, and --value-bce with the BCE ablation): none is trained. */
static bool all_values_given(const orc_tsmc_study_opts *o) {
    return o->value_dirs[0] && (!o->bce_ablation || o->value_dirs[1]);
}

static const char *row_name(int m) {
    return m < ORC_TSMC_N_METHODS ? orc_tsmc_method_name((orc_tsmc_method)m) : "tsmc (bce value)";
}

/* A Markdown table's header with one column per N, first column `first`; returns the new length of md
 * (snprintf-style: past cap it only counts). */
static size_t md_n_header(char *md, size_t len, size_t cap, const char *first, const orc_tsmc_study_opts *o) {
#define HDR(...) len += (size_t)snprintf(md + len, len < cap ? cap - len : 0, __VA_ARGS__)
    HDR("| %s |", first);
    for (int j = 0; j < o->n_ns; j++) HDR(" N=%d |", o->ns[j]);
    HDR("\n|---|");
    for (int j = 0; j < o->n_ns; j++) HDR("---:|");
    HDR("\n");
#undef HDR
    return len;
}

/* results.json, results.md and accuracy.svg over the first n_done test problems (the study calls it after
 * every problem, so a run stopped early leaves its tables so far). *md_out (optional) gets the Markdown. */
static orc_status write_results(const orc_tsmc_study_opts *o, const study_meta *sm, cell (*cells)[ORC_TSMC_STUDY_MAX_NS],
                                int n_done, char **md_out, orc_error *err) {
    char p[4200];
    const int n_rows = ORC_TSMC_N_METHODS + (sm->n_obj > 1);
    json_t *root = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:f}", "base_model", o->base_model,
                             "test_problems", n_done, "test_problems_planned", sm->n_test, "min_difficulty",
                             o->min_difficulty, "max_difficulty", o->max_difficulty, "rollout_problems",
                             sm->rollout_problems, "k", o->k, "value_steps", o->value_steps, "rollout_accuracy",
                             sm->rollout_correct, "tsmc_no_answer", sm->no_answer_smc, "seconds", now_s() - sm->t0);
    if (root && o->generator) json_object_set_new(root, "generator", json_string(o->generator));
    if (root && o->sft_from) json_object_set_new(root, "sft_from", json_string(o->sft_from));
    if (root) json_object_set_new(root, "unseen_rollouts", json_boolean(o->unseen_rollouts));
    if (root && o->value_dirs[0]) json_object_set_new(root, "value", json_string(o->value_dirs[0]));
    if (root && o->value_dirs[1]) json_object_set_new(root, "value_bce", json_string(o->value_dirs[1]));
    if (root) json_object_set_new(root, "temperature", json_real(o->temperature));
    if (root) json_object_set_new(root, "tsmc_alpha", json_real(o->tsmc_alpha));
    if (root) json_object_set_new(root, "tsmc_ess", json_real(o->tsmc_ess));
    if (root) json_object_set_new(root, "tsmc_resample", json_string(orc_resample_name(o->tsmc_resample)));
    if (root) json_object_set_new(root, "distractors", json_integer(o->distractors));
    if (root) json_object_set_new(root, "value_keep_by", json_string(o->value_keep_by_pairs ? "pairs" : "twist"));
    if (root) json_object_set_new(root, "value_confidence", json_boolean(o->value_confidence));
    if (root) json_object_set_new(root, "value_mixed_only", json_boolean(o->value_mixed_only));
    if (root) {
        orc_value_train_opts vd; /* what the value training ran with */
        orc_value_train_opts_default(&vd);
        json_object_set_new(root, "value_lr", json_real(o->value_lr > 0 ? o->value_lr : vd.lr));
        json_object_set_new(root, "value_problems_per_step",
                            json_integer(o->value_problems_per_step > 0 ? o->value_problems_per_step : vd.problems_per_step));
    }
    json_t *rows = json_array(), *gaps = json_array();
    size_t cap = 65536, len = 0;
    char *md = malloc(cap);
    if (!md) {
        json_decref(root);
        json_decref(rows);
        json_decref(gaps);
        return orc_error_set(err, ORC_ENOMEM, "study tsmc: out of memory");
    }
#define MD(...) len += (size_t)snprintf(md + len, len < cap ? cap - len : 0, __VA_ARGS__)
    MD("Accuracy on %d held-out test problems (Wilson 95%% interval) and tokens generated per problem:\n\n", n_done);
    len = md_n_header(md, len, cap, "method", o);
    for (int m = 0; m < n_rows; m++) {
        MD("| %s |", row_name(m));
        for (int j = 0; j < o->n_ns; j++) {
            const cell *c = &cells[m][j];
            double lo, hi;
            wilson(c->correct, c->total, &lo, &hi);
            MD(" %.1f%% [%.0f, %.0f] (%.0f tok) |", c->total ? 100.0 * c->correct / c->total : 0, 100 * lo, 100 * hi,
               c->total ? c->tokens / c->total : 0);
            int n_held, n_seen;
            const int k_held = hits_where(c, sm->held, n_done, 1, &n_held);
            const int k_seen = hits_where(c, sm->held, n_done, 0, &n_seen);
            json_array_append_new(rows, json_pack("{s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:{s:i, s:i}, s:{s:i, s:i}}",
                                                  "method", row_name(m), "n", o->ns[j], "correct", c->correct, "total",
                                                  c->total, "ci_low", lo, "ci_high", hi, "tokens_per_problem",
                                                  c->total ? c->tokens / c->total : 0.0, "seen_phrasing", "correct",
                                                  k_seen, "total", n_seen, "held_out_phrasing", "correct", k_held,
                                                  "total", n_held));
        }
        MD("\n");
    }
    int n_held = 0;
    for (int i = 0; sm->held && i < n_done; i++) n_held += sm->held[i];
    if (n_held > 0) { /* the generator and the value model never saw these phrasings: they can tell a different story */
        MD("\nThe same by phrasing: the %d test problems in the phrasings training used / the %d in the task suite's "
           "held-out phrasings:\n\n", n_done - n_held, n_held);
        len = md_n_header(md, len, cap, "method", o);
        for (int m = 0; m < n_rows; m++) {
            MD("| %s |", row_name(m));
            for (int j = 0; j < o->n_ns; j++) {
                int ns, nh;
                const int ks = hits_where(&cells[m][j], sm->held, n_done, 0, &ns);
                const int kh = hits_where(&cells[m][j], sm->held, n_done, 1, &nh);
                MD(" %.1f%% / %.1f%% |", ns ? 100.0 * ks / ns : 0, nh ? 100.0 * kh / nh : 0);
            }
            MD("\n");
        }
    }
    /* how often SMC resampled: with values that hardly differ between particles the ESS stays high, SMC never
     * resamples and its answer is the value-weighted vote of its particles */
    MD("\nTSMC's resampling (alpha %g, resampling when the ESS falls below %g N, %s): the share of test problems "
       "resampled at least once / resampling rounds per problem:\n\n", o->tsmc_alpha, o->tsmc_ess,
       orc_resample_name(o->tsmc_resample));
    len = md_n_header(md, len, cap, "value model", o);
    json_t *resampling = json_array();
    for (int r = 0; r < sm->n_obj; r++) {
        const int row = r ? ORC_TSMC_N_METHODS : ORC_TSMC_SMC;
        MD("| %s |", r ? "bce" : "twist");
        for (int j = 0; j < o->n_ns; j++) {
            const cell *c = &cells[row][j];
            MD(" %.1f%% / %.2f |", c->total ? 100.0 * c->resampled / c->total : 0,
               c->total ? (double)c->resamples / c->total : 0);
            json_array_append_new(resampling, json_pack("{s:s, s:i, s:i, s:i, s:i}", "value", r ? "bce" : "twist", "n",
                                                        o->ns[j], "problems_resampled", c->resampled, "rounds",
                                                        c->resamples, "total", c->total));
        }
        MD("\n");
    }
    if (root) json_object_set_new(root, "tsmc_resampling", resampling);
    else json_decref(resampling);
    MD("\nTSMC (twist value) minus a baseline, paired over the same test problems (mean difference in accuracy, "
       "points, 95%% interval):\n\n");
    len = md_n_header(md, len, cap, "vs", o);
    const int vs[3] = {ORC_TSMC_WEIGHTED, ORC_TSMC_MAJORITY, ORC_TSMC_N_METHODS};
    for (int b = 0; b < (sm->n_obj > 1 ? 3 : 2); b++) {
        MD("| %s |", row_name(vs[b]));
        for (int j = 0; j < o->n_ns; j++) {
            double mean, half;
            paired_gap(cells[ORC_TSMC_SMC][j].hit, cells[vs[b]][j].hit, n_done, &mean, &half);
            MD(" %+.1f ± %.1f |", 100 * mean, 100 * half);
            json_array_append_new(gaps, json_pack("{s:s, s:i, s:f, s:f}", "vs", row_name(vs[b]), "n", o->ns[j], "gap",
                                                  mean, "ci_half_width", half));
        }
        MD("\n");
    }
    if (o->value_confidence)
        MD("\nThe value models trained here read the generator's confidence in the prefix as well (`--confidence`: "
           "the lowest token log-probability so far).\n");
    if (o->value_mixed_only)
        MD("\nThe value models trained here learned only from the rollout problems with both right and wrong samples "
           "(`--mixed-only`).\n");
    if (sm->val_problems > 0) {
        MD("\nValue models on %d held-out validation problems x %d samples (%.1f%% right; not trained on), the weights "
           "kept (%s): P(a right sample valued above a wrong one of the same problem), the "
           "twist loss against a constant value's, and the pick among the %d samples:\n\n"
           "| value model | kept step | right > wrong, final | after step 1 | after step 2 | twist loss (constant) | "
           "majority | orm | prm | weighted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
           sm->val_problems, o->k, 100 * sm->val_correct,
           all_values_given(o) ? "given by --value, trained before"
               : o->value_keep_by_pairs ? "highest held-out right > wrong" : "lowest held-out twist loss", o->k);
        json_t *vr = json_array();
        for (int obj = 0; obj < sm->n_obj; obj++) {
            const orc_value_report *r = &sm->val[obj];
            MD("| %s | %d%s | %.3f | %.3f | %.3f | %.3f (%.3f) | %.1f%% | %.1f%% | %.1f%% | %.1f%% |\n",
               obj ? "bce" : "twist", sm->val_step[obj], sm->val_step[obj] < 0 ? " (given)" : "", r->pair_final,
               r->pair_step[0], r->pair_step[1], r->twist_loss, r->twist_loss_uniform, 100 * r->majority,
               100 * r->orm, 100 * r->prm, 100 * r->weighted);
            json_t *ps = json_array();
            for (int t = 0; t < ORC_VALUE_EVAL_STEPS; t++)
                json_array_append_new(ps, isfinite(r->pair_step[t]) ? json_real(r->pair_step[t]) : json_null());
            json_array_append_new(vr, json_pack("{s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "objective",
                                                obj ? "bce" : "twist", "kept_step", sm->val_step[obj], "pair_final",
                                                jnum(r->pair_final), "pair_step", ps, "auc_final", jnum(r->auc_final),
                                                "twist_loss", jnum(r->twist_loss), "twist_loss_constant",
                                                jnum(r->twist_loss_uniform), "pick_majority", jnum(r->majority),
                                                "pick_orm", jnum(r->orm), "pick_prm", jnum(r->prm), "pick_weighted",
                                                jnum(r->weighted)));
        }
        json_object_set_new(root, "value_heldout", vr);
        json_object_set_new(root, "val_rollout_problems", json_integer(sm->val_problems));
        json_object_set_new(root, "val_rollout_accuracy", json_real(sm->val_correct));
    }
#undef MD
    json_object_set_new(root, "accuracy", rows);
    json_object_set_new(root, "tsmc_gaps", gaps);
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    char *svg = svg_plot(cells, n_rows, o->ns, o->n_ns);
    orc_status st = ORC_OK;
    if (!text || len >= cap || !svg) st = orc_error_set(err, ORC_ENOMEM, "study tsmc: out of memory");
    const struct {
        const char *name, *buf;
        size_t n;
    } files[3] = {{"results.json", text, text ? strlen(text) : 0}, {"results.md", md, len},
                  {"accuracy.svg", svg, svg ? strlen(svg) : 0}};
    for (int f = 0; st == ORC_OK && f < 3; f++) {
        path_join(p, sizeof p, o->out_dir, files[f].name);
        st = orc_write_file_atomic(p, files[f].buf, files[f].n, "study", err);
    }
    free(text);
    free(svg);
    if (st == ORC_OK && md_out) *md_out = md;
    else free(md);
    return st;
}

/* ---- the study ----------------------------------------------------------------------------- */

orc_status orc_tsmc_study(const orc_tsmc_study_opts *o, orc_error *err) {
    if (!o->base_model || !o->out_dir) return orc_error_set(err, ORC_EINVAL, "study tsmc: --model and --out are required");
    if (o->n_ns < 1 || o->n_ns > ORC_TSMC_STUDY_MAX_NS || o->k < 2 || o->test_problems < 1)
        return orc_error_set(err, ORC_EINVAL, "study tsmc: need 1..%d values of N, K >= 2 and test problems >= 1",
                             ORC_TSMC_STUDY_MAX_NS);
    if (orc_tsmc_check_weighting(o->tsmc_alpha, o->tsmc_ess, err) != ORC_OK) return err->code;
    if (!(o->temperature > 0 && o->temperature <= 10))
        return orc_error_set(err, ORC_EINVAL, "study tsmc: temperature = %g; it must be in (0, 10]", o->temperature);
    int max_n = 0;
    for (int j = 0; j < o->n_ns; j++) {
        if (o->ns[j] < 1) return orc_error_set(err, ORC_EINVAL, "study tsmc: N = %d; it must be at least 1", o->ns[j]);
        if (o->ns[j] > max_n) max_n = o->ns[j];
    }
    if (strlen(o->out_dir) > 3000 || strlen(o->base_model) > 3000 || (o->generator && strlen(o->generator) > 3000))
        return orc_error_set(err, ORC_EINVAL, "study tsmc: the --out or --model path is too long");
    if (o->generator && (o->sft_from || o->unseen_rollouts))
        return orc_error_set(err, ORC_EINVAL, "study tsmc: --%s needs the study's own fine-tuning, and --generator "
                             "skips it (start the fine-tuning from that model with --sft-from instead)",
                             o->sft_from ? "sft-from" : "unseen-rollouts");
    if (o->value_confidence && all_values_given(o))
        return orc_error_set(err, ORC_EINVAL, "study tsmc: --confidence shapes the value models the study trains, and "
                             "--value gives them all (a given model's head says whether it reads the confidence)");
    if (o->value_mixed_only && all_values_given(o))
        return orc_error_set(err, ORC_EINVAL, "study tsmc: --mixed-only chooses the problems of the value training, "
                             "and --value gives every value model (trained before, so nothing is trained here)");
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create: %s", o->out_dir, strerror(errno));
    const double t0 = now_s();
    char p[4200], gen_dir[4200], val_dir[4200];
    /* 1. the math tasks */
    path_join(p, sizeof p, o->out_dir, "tasks");
    orc_task_gen g = {.seed = o->seed, .min_difficulty = o->min_difficulty, .max_difficulty = o->max_difficulty,
                      .distractors = o->distractors};
    orc_task_counts counts;
    orc_status st = orc_tasks_generate(&g, 1u << ORC_TASK_MATH, o->n_tasks, p, &counts, err);
    if (st != ORC_OK) return st;
    /* 2. the generator: fine-tuned here, or one given (fine-tuned on these same tasks' train split) */
    if (o->generator) {
        snprintf(gen_dir, sizeof gen_dir, "%s", o->generator);
        fprintf(stderr, "study tsmc: generator %s (no fine-tuning)\n", gen_dir);
    } else {
        path_join(gen_dir, sizeof gen_dir, o->out_dir, "generator");
        if ((st = fine_tune(o, o->out_dir, err)) != ORC_OK) return st;
    }
    orc_llm *gen = orc_llm_load(gen_dir, false, err);
    orc_tokenizer *tok = gen ? orc_tokenizer_load(gen_dir, err) : NULL;
    if (!tok) {
        orc_llm_free(gen);
        return err->code;
    }
    orc_tsmc_models mo = {gen, NULL, tok, gen->cfg.max_position_embeddings};
    /* 3. rollouts and value models */
    orc_rollout_set set = {0};
    orc_value_model *vals[2] = {NULL, NULL};
    study_meta sm = {.n_obj = o->bce_ablation ? 2 : 1, .t0 = t0};
    orc_rollout_set val_set = {0};
    /* the training rollouts only feed value training: none when every value model is given */
    const bool train_any = !o->value_dirs[0] || (o->bce_ablation && !o->value_dirs[1]);
    if (train_any)
        st = make_rollouts(o, &mo, o->out_dir, "train", o->rollout_problems, "rollouts.jsonl", &set,
                           &sm.rollout_correct, err);
    sm.rollout_problems = set.n_problems;
    /* held-out rollouts (validation problems) to check the value model and keep its best weights */
    if (st == ORC_OK && o->val_rollout_problems > 0)
        st = make_rollouts(o, &mo, o->out_dir, "val", o->val_rollout_problems, "rollouts_val.jsonl", &val_set,
                           &sm.val_correct, err);
    sm.val_problems = val_set.n_problems;
    const int n_obj = o->bce_ablation ? 2 : 1;
    for (int obj = 0; st == ORC_OK && obj < n_obj; obj++) {
        if (o->value_dirs[obj]) { /* a value model trained before (for this generator): scored, not trained */
            vals[obj] = orc_value_load(o->value_dirs[obj], false, err);
            if (vals[obj] && vals[obj]->body->cfg.vocab_size != gen->cfg.vocab_size)
                st = orc_error_set(err, ORC_EINVAL, "study tsmc: the value model %s has %lld token ids, the generator "
                                   "%lld: it was made for another tokenizer", o->value_dirs[obj],
                                   (long long)vals[obj]->body->cfg.vocab_size, (long long)gen->cfg.vocab_size);
            else if (!vals[obj]) st = err->code;
            else if (val_set.n_problems > 0) {
                fprintf(stderr, "study tsmc: value model %s (%s, no training)\n", o->value_dirs[obj], obj ? "bce" : "twist");
                sm.val_step[obj] = -1;
                st = orc_value_eval(vals[obj], &val_set, &sm.val[obj], err);
            }
            continue;
        }
        vals[obj] = orc_value_from_generator(gen_dir, true, o->value_confidence, err);
        if (!vals[obj]) {
            st = err->code;
            break;
        }
        orc_value_train_opts vo;
        orc_value_train_opts_default(&vo);
        vo.objective = (orc_value_objective)obj;
        vo.steps = o->value_steps;
        vo.seed = o->seed;
        if (o->value_lr > 0) {
            vo.lr = (float)o->value_lr;
            vo.min_lr = vo.lr / 10;
        }
        if (o->value_problems_per_step > 0) vo.problems_per_step = o->value_problems_per_step;
        vo.mixed_only = o->value_mixed_only;
        if (val_set.n_problems > 0) {
            vo.val = &val_set;
            vo.eval_every = o->value_eval_every > 0 ? o->value_eval_every : (o->value_steps + 4) / 5;
            vo.keep_best = true;
            vo.keep_by_pairs = o->value_keep_by_pairs;
            vo.val_report = &sm.val[obj];
            vo.val_step = &sm.val_step[obj];
        }
        double fl = 0;
        fprintf(stderr, "study tsmc: training the value model (%s)\n", obj ? "bce" : "twist");
        st = orc_value_train(vals[obj], &set, &vo, &fl, err);
        path_join(val_dir, sizeof val_dir, o->out_dir, obj ? "value_bce" : "value");
        if (st == ORC_OK) st = orc_value_save(vals[obj], val_dir, err);
    }
    /* 4. the test problems */
    path_join(p, sizeof p, o->out_dir, "tasks/test.jsonl");
    task *tests = NULL;
    int n_test = 0;
    if (st == ORC_OK) st = read_tasks(p, o->test_problems, &tests, &n_test, err);
    /* cells[method][N index]; an extra row set for the BCE value model's TSMC */
    cell cells[ORC_TSMC_N_METHODS + 1][ORC_TSMC_STUDY_MAX_NS];
    memset(cells, 0, sizeof cells);
    for (int m = 0; m <= ORC_TSMC_N_METHODS; m++)
        for (int j = 0; j < o->n_ns; j++) cells[m][j].hit = calloc((size_t)(n_test > 0 ? n_test : 1), 1);
    orc_tsmc_opts so;
    orc_tsmc_opts_default(&so);
    so.sampler.temperature = (float)o->temperature;
    so.alpha = o->tsmc_alpha;
    so.ess_threshold = o->tsmc_ess;
    so.resample = o->tsmc_resample;
    sm.n_test = n_test;
    unsigned char *held = calloc((size_t)(n_test > 0 ? n_test : 1), 1);
    if (!held && st == ORC_OK) st = orc_error_set(err, ORC_ENOMEM, "study tsmc: out of memory");
    for (int i = 0; held && i < n_test; i++) held[i] = tests[i].held_out;
    sm.held = held;
    for (int i = 0; st == ORC_OK && i < n_test; i++) {
        int32_t *prompt = NULL;
        int n_prompt = 0;
        char *gold = orc_task_normalize(tests[i].answer);
        st = orc_tsmc_prompt(tok, tests[i].question, &prompt, &n_prompt, err);
        /* greedy */
        orc_tsmc_answer a;
        mo.value = vals[0];
        if (st == ORC_OK && (st = orc_tsmc_run(&mo, ORC_TSMC_GREEDY, prompt, n_prompt, &so, &a, err)) == ORC_OK) {
            for (int j = 0; j < o->n_ns; j++) {
                cells[0][j].correct += is_correct(gold, a.answer);
                cells[0][j].hit[i] = is_correct(gold, a.answer);
                cells[0][j].total++;
                cells[0][j].tokens += (double)a.tokens;
            }
            orc_tsmc_answer_free(&a);
        }
        /* max_n samples shared by the voting / best-of-N baselines */
        orc_rollout_problem pr = {0};
        so.seed = o->seed * 7919u + (uint64_t)i;
        if (st == ORC_OK) st = orc_tsmc_sample(&mo, prompt, n_prompt, max_n, &so, &pr, err);
        double *final = calloc((size_t)max_n + 1, sizeof *final), *minv = calloc((size_t)max_n + 1, sizeof *minv);
        double **lp = calloc((size_t)max_n + 1, sizeof *lp);
        if (st == ORC_OK && (!final || !minv || !lp)) st = orc_error_set(err, ORC_ENOMEM, "out of memory");
        for (int k = 0; st == ORC_OK && k < pr.n_samples; k++)
            if (!(lp[k] = malloc((size_t)(pr.samples[k].n_steps + 1) * sizeof **lp)))
                st = orc_error_set(err, ORC_ENOMEM, "out of memory");
        if (st == ORC_OK) {
            pr.prompt = prompt; /* borrowed for the scoring; pr.prompt is NULL again before pr is freed */
            pr.n_prompt = n_prompt;
            st = orc_value_step_logpsi(vals[0], &pr, lp, err);
            pr.prompt = NULL;
        }
        if (st == ORC_OK) orc_value_sample_scores(&pr, lp, final, minv);
        for (int k = 0; lp && k < max_n; k++) free(lp[k]);
        free(lp);
        for (int j = 0; st == ORC_OK && j < o->n_ns; j++) {
            const int n = o->ns[j];
            const char **ans = calloc((size_t)n, sizeof *ans);
            double *w = malloc((size_t)n * sizeof *w), tokens = 0;
            if (!ans || !w) {
                free(ans);
                free(w);
                st = orc_error_set(err, ORC_ENOMEM, "out of memory");
                break;
            }
            for (int k = 0; k < n; k++) {
                ans[k] = pr.samples[k].answer;
                tokens += pr.samples[k].n_ids + 1;
            }
            for (int m = ORC_TSMC_MAJORITY; m <= ORC_TSMC_WEIGHTED; m++) {
                const int k = orc_tsmc_pick((orc_tsmc_method)m, ans, final, minv, n, w);
                const bool ok = k >= 0 && is_correct(gold, ans[k]);
                cells[m][j].correct += ok;
                cells[m][j].hit[i] = ok;
                cells[m][j].total++;
                cells[m][j].tokens += tokens;
            }
            free(ans);
            free(w);
            /* TSMC with this N, with the twist value model (and the BCE one) */
            for (int obj = 0; st == ORC_OK && obj < n_obj; obj++) {
                orc_tsmc_opts to = so;
                to.n_particles = n;
                to.seed = o->seed * 104729u + (uint64_t)i * 131u + (uint64_t)n;
                mo.value = vals[obj];
                st = orc_tsmc_run(&mo, ORC_TSMC_SMC, prompt, n_prompt, &to, &a, err);
                if (st != ORC_OK) break;
                const int row = obj ? ORC_TSMC_N_METHODS : ORC_TSMC_SMC;
                const bool ok = is_correct(gold, a.answer);
                sm.no_answer_smc += obj == 0 && !a.answer;
                cells[row][j].correct += ok;
                cells[row][j].hit[i] = ok;
                cells[row][j].total++;
                cells[row][j].tokens += (double)a.tokens;
                cells[row][j].resamples += a.resamples;
                cells[row][j].resampled += a.resamples > 0;
                orc_tsmc_answer_free(&a);
            }
            mo.value = vals[0];
        }
        if (st == ORC_OK) st = write_results(o, &sm, cells, i + 1, NULL, err);
        /* redrawn on a terminal; in a log, a line per tenth of the test problems */
        if (isatty(fileno(stderr)))
            fprintf(stderr, "\rstudy tsmc: test problem %d/%d (%.0f s)%s", i + 1, n_test, now_s() - t0,
                    i + 1 == n_test ? "\n" : "");
        else if ((int64_t)(i + 1) * 10 / n_test != (int64_t)i * 10 / n_test)
            fprintf(stderr, "study tsmc: test problem %d/%d (%.0f s)\n", i + 1, n_test, now_s() - t0);
        free(final);
        free(minv);
        orc_rollout_problem *prp = malloc(sizeof *prp);
        if (prp) {
            *prp = pr;
            orc_rollout_set one = {prp, 1};
            orc_rollout_set_free(&one);
        }
        free(prompt);
        free(gold);
    }
    fprintf(stderr, "\n");
    /* 5. the tables (also rewritten after every test problem) */
    char *md = NULL;
    if (st == ORC_OK) st = write_results(o, &sm, cells, n_test, &md, err);
    if (st == ORC_OK) printf("%s", md);
    free(md);
    for (int m = 0; m <= ORC_TSMC_N_METHODS; m++)
        for (int j = 0; j < o->n_ns; j++) free(cells[m][j].hit);
    tasks_free(tests, n_test);
    free(held);
    orc_value_free(vals[0]);
    orc_value_free(vals[1]);
    orc_rollout_set_free(&set);
    orc_rollout_set_free(&val_set);
    orc_tokenizer_free(tok);
    orc_llm_free(gen);
    return st;
}
