/* `orchard tsmc`: step-by-step verification with twisted SMC from the
 * command line. `rollouts` samples K solutions per training problem with
 * the generator and labels them by their final answer, `train-value`
 * trains the value model on them, `solve` answers questions (or a task
 * file, with accuracy) with any method, and `study` runs the whole
 * experiment (also `orchard study tsmc`). The work lives in orchard/tsmc.h. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "orchard/tasks.h"
#include "orchard/tsmc.h"

void cmd_tsmc_help(void) {
    printf("usage: orchard tsmc rollouts --model GEN --tasks FILE.jsonl --out FILE.jsonl [--k 8] [--problems N]\n"
           "                            [--temperature 0.7] [--max-steps 16] [--seed S]\n"
           "       orchard tsmc train-value --model GEN --rollouts FILE.jsonl --out DIR [--objective twist|bce]\n"
           "                            [--steps 200] [--lr 1e-4] [--problems-per-step 4] [--seed S]\n"
           "                            [--val-rollouts FILE.jsonl [--eval-every N]\n"
           "                             [--keep-best [--keep-by twist|pairs]]] [--confidence] [--mixed-only]\n"
           "       orchard tsmc eval-value --value DIR --rollouts FILE.jsonl [--json]\n"
           "       orchard tsmc solve --model GEN [--value DIR] (--question TEXT | --tasks FILE.jsonl [--problems N])\n"
           "                            [--method tsmc|greedy|majority|orm|prm|weighted] [--n 16] [--alpha 1]\n"
           "                            [--ess 0.5] [--resample systematic|multinomial|stratified]\n"
           "                            [--temperature 0.7] [--max-steps 16] [--seed S]\n"
           "       orchard tsmc study --model BASE --out DIR [--tasks 3000] [--sft-steps 800] [--rollouts 96]\n"
           "                            [--k 8] [--value-steps 100] [--test 200] [--n 4,8,16,32,64] [--no-bce] [--seed S]\n"
           "                            [--difficulty 1] [--sft-lr 1e-3] [--generator DIR] [--temperature 0.7]\n"
           "                            [--val-problems 160] [--eval-every N] [--lr 1e-4] [--problems-per-step 4]\n"
           "                            [--keep-by twist|pairs] [--value DIR] [--value-bce DIR] [--distractors K]\n"
           "                            [--sft-from DIR] [--unseen-rollouts] [--confidence] [--mixed-only]\n"
           "                            [--alpha 1] [--ess 0.5] [--resample systematic|multinomial|stratified]\n\n"
           "GEN is a math-tuned orchard LM directory (config.json, model.safetensors, tokenizer.json);\n"
           "the task files are `orchard tasks generate --domains math` output. A step is one line; the\n"
           "answer follows '####'. `study` fine-tunes BASE on the math tasks itself, then writes\n"
           "DIR/results.{json,md} and DIR/accuracy.svg (docs/tsmc.md), rewritten after every test problem.\n"
           "--difficulty LO-HI draws math problems of LO..HI operations (1-5; default 1). --generator DIR\n"
           "skips the fine-tuning and uses DIR, a generator fine-tuned on the same tasks (same --tasks,\n"
           "--seed, --difficulty and --distractors); --model is then only recorded. --distractors K adds K\n"
           "sentences with numbers the answer does not use to each problem (`orchard tasks generate\n"
           "--distractors`). --sft-from DIR starts the fine-tuning from DIR (e.g. a generator tuned on\n"
           "easier problems) instead of --model. --unseen-rollouts leaves the rollout problems (the first\n"
           "--rollouts of the train split) out of the fine-tuning, so the value model learns from problems\n"
           "the generator has not seen. The study also samples K solutions for\n"
           "--val-problems validation problems, scores the value model on them every --eval-every value steps\n"
           "and keeps its best weights (lowest held-out twist loss; with --keep-by pairs the highest share of\n"
           "right samples valued above wrong ones); --lr and --problems-per-step are the value training's.\n"
           "--value DIR (--value-bce DIR) uses a value model trained before for this generator instead of\n"
           "training one. --confidence (train-value, study) gives the value head one more input, the\n"
           "generator's confidence in the prefix (the lowest log-probability it gave any token so far, which\n"
           "rollouts record); solve and eval-value read from the head whether it has it. --mixed-only\n"
           "(train-value, study) trains the value model only on the problems whose samples include both a\n"
           "right and a wrong answer. In study, --alpha, --ess and --resample are TSMC's settings (as in solve).\n");
}

typedef struct args {
    const char *model, *tasks, *out, *rollouts, *value, *question, *method, *resample;
    long k, problems, steps, pps, n, max_steps, sft_steps, value_steps, test;
    double temperature, lr, alpha, ess, sft_lr;
    const char *objective, *ns, *difficulty, *generator, *val_rollouts, *value_bce, *keep_by;
    long eval_every, val_problems, distractors;
    unsigned long long seed;
    const char *sft_from;
    bool no_bce, n_given, keep_best, json, unseen_rollouts, confidence, mixed_only;
} args;

static int parse(const char *cmd, int argc, char **argv, args *a) {
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool *flag = !strcmp(o, "--no-bce") ? &a->no_bce : !strcmp(o, "--keep-best") ? &a->keep_best
                   : !strcmp(o, "--json")                                                ? &a->json
                   : !strcmp(o, "--unseen-rollouts")                                     ? &a->unseen_rollouts
                   : !strcmp(o, "--confidence")                                          ? &a->confidence
                   : !strcmp(o, "--mixed-only")                                          ? &a->mixed_only
                                                                                         : NULL;
        if (flag) {
            *flag = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "orchard tsmc %s: %s needs a value\n", cmd, o);
            return 2;
        }
        i++;
#define S(name, field) else if (!strcmp(o, name)) a->field = v;
#define I(name, field, lo, hi) \
    else if (!strcmp(o, name)) { if (cli_parse_int("tsmc", name, v, lo, hi, &a->field)) return 2; }
#define D(name, field) else if (!strcmp(o, name)) { char *e; a->field = strtod(v, &e); if (*e || e == v) { \
        fprintf(stderr, "orchard tsmc %s: %s expects a number, got '%s'\n", cmd, name, v); return 2; } }
        if (0) {
        }
        S("--model", model) S("--tasks", tasks) S("--out", out) S("--rollouts", rollouts) S("--value", value)
        S("--question", question) S("--method", method) S("--resample", resample) S("--objective", objective)
        S("--n-list", ns) S("--difficulty", difficulty) S("--generator", generator)
        S("--val-rollouts", val_rollouts) S("--value-bce", value_bce) S("--keep-by", keep_by) S("--sft-from", sft_from)
        I("--eval-every", eval_every, 1, 10000000)
        I("--val-problems", val_problems, 0, 10000000) I("--distractors", distractors, 0, ORC_TASK_MAX_DISTRACTORS)
        I("--k", k, 2, 1024) I("--problems", problems, 1, 10000000) I("--steps", steps, 1, 10000000)
        I("--problems-per-step", pps, 1, 4096) I("--max-steps", max_steps, 1, 4096) I("--sft-steps", sft_steps, 1, 10000000)
        I("--value-steps", value_steps, 1, 10000000) I("--test", test, 1, 10000000)
        D("--temperature", temperature) D("--lr", lr) D("--alpha", alpha) D("--ess", ess) D("--sft-lr", sft_lr)
        else if (!strcmp(o, "--n")) {
            a->n_given = true;
            if (strchr(v, ',')) a->ns = v;
            else if (cli_parse_int("tsmc", "--n", v, 0, 100000, &a->n)) return 2;
        } else if (!strcmp(o, "--seed")) {
            char *e;
            a->seed = strtoull(v, &e, 10);
            if (*e || e == v || v[0] == '-') {
                fprintf(stderr, "orchard tsmc %s: --seed expects a non-negative integer, got '%s'\n", cmd, v);
                return 2;
            }
        } else {
            fprintf(stderr, "orchard tsmc %s: unknown option %s (see orchard tsmc --help)\n", cmd, o);
            return 2;
        }
#undef S
#undef I
#undef D
    }
    return 0;
}

static int fail(const char *cmd, const orc_error *err) {
    fprintf(stderr, "orchard tsmc %s: %s\n", cmd, err->msg);
    return 1;
}

/* --resample NAME into *kind; false (after saying so) on an unknown name. */
static bool parse_resample(const char *cmd, const char *name, orc_resample_kind *kind) {
    const int k = orc_resample_parse(name);
    if (k < 0) {
        fprintf(stderr, "orchard %s: unknown --resample '%s' (systematic, multinomial, stratified)\n", cmd, name);
        return false;
    }
    *kind = (orc_resample_kind)k;
    return true;
}

/* --keep-by is "twist" (the default) or "pairs": *pairs says which, false on a bad value. */
static bool parse_keep_by(const args *a, bool *pairs) {
    *pairs = a->keep_by && !strcmp(a->keep_by, "pairs");
    return !a->keep_by || *pairs || !strcmp(a->keep_by, "twist");
}

static int need(const char *cmd, const char *what, const void *v) {
    if (v) return 0;
    fprintf(stderr, "orchard tsmc %s: %s is required\n", cmd, what);
    return 2;
}

/* The question text and gold answer of each task line (up to limit). */
typedef struct qa {
    char *id, *q, *gold;
} qa;

static int read_tasks(const char *cmd, const char *path, long limit, qa **out, int *n) {
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "orchard tsmc %s: cannot open %s\n", cmd, path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    int alloc = 0;
    *out = NULL;
    *n = 0;
    while ((limit <= 0 || *n < limit) && getline(&line, &cap, fp) >= 0) {
        line_no++;
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "id")), *ins = json_string_value(json_object_get(o, "instruction"));
        const char *in = json_string_value(json_object_get(o, "input")), *ans = json_string_value(json_object_get(o, "answer"));
        if (!id || !ins || !ans) {
            fprintf(stderr, "orchard tsmc %s: %s:%zu: not a task line (id, instruction, answer)\n", cmd, path, line_no);
            json_decref(o);
            free(line);
            fclose(fp);
            return 1;
        }
        if (*n == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            *out = realloc(*out, (size_t)alloc * sizeof **out);
        }
        qa *t = &(*out)[(*n)++];
        size_t ql = strlen(ins) + (in ? strlen(in) : 0) + 2;
        t->q = malloc(ql);
        snprintf(t->q, ql, "%s%s%s", ins, in && *in ? "\n" : "", in && *in ? in : "");
        t->id = strdup(id);
        t->gold = strdup(ans);
        json_decref(o);
    }
    free(line);
    fclose(fp);
    return 0;
}

static void free_tasks(qa *t, int n) {
    for (int i = 0; i < n; i++) {
        free(t[i].id);
        free(t[i].q);
        free(t[i].gold);
    }
    free(t);
}

static int load_models(const char *cmd, const args *a, orc_llm **gen, orc_tokenizer **tok, orc_value_model **val) {
    orc_error err = {0};
    *gen = orc_llm_load(a->model, false, &err);
    *tok = *gen ? orc_tokenizer_load(a->model, &err) : NULL;
    *val = *tok && a->value ? orc_value_load(a->value, false, &err) : NULL;
    if (!*tok || (a->value && !*val)) {
        orc_llm_free(*gen);
        orc_tokenizer_free(*tok);
        return fail(cmd, &err);
    }
    if ((int64_t)orc_tokenizer_vocab_size(*tok) > (*gen)->cfg.vocab_size) {
        fprintf(stderr, "orchard tsmc %s: the tokenizer has more ids than the model's vocabulary\n", cmd);
        return 1;
    }
    return 0;
}

static int do_rollouts(const args *a) {
    const char *cmd = "rollouts";
    if (need(cmd, "--model", a->model) || need(cmd, "--tasks", a->tasks) || need(cmd, "--out", a->out)) return 2;
    orc_llm *gen;
    orc_tokenizer *tok;
    orc_value_model *val;
    if (load_models(cmd, a, &gen, &tok, &val)) return 1;
    qa *t = NULL;
    int n = 0;
    int rc = read_tasks(cmd, a->tasks, a->problems, &t, &n);
    orc_tsmc_models mo = {gen, NULL, tok, gen->cfg.max_position_embeddings};
    orc_tsmc_opts so;
    orc_tsmc_opts_default(&so);
    if (a->temperature > 0) so.sampler.temperature = (float)a->temperature;
    if (a->max_steps) so.max_steps = (int)a->max_steps;
    orc_rollout_set set = {calloc((size_t)(n > 0 ? n : 1), sizeof(orc_rollout_problem)), 0};
    orc_error err = {0};
    int correct = 0, total = 0, no_answer = 0;
    const bool tty = isatty(fileno(stderr));
    for (int i = 0; !rc && i < n; i++) {
        orc_rollout_problem *p = &set.problems[set.n_problems++];
        p->id = strdup(t[i].id);
        p->question = strdup(t[i].q);
        p->gold = strdup(t[i].gold);
        so.seed = a->seed * 1000003ull + (uint64_t)i;
        if (orc_tsmc_prompt(tok, t[i].q, &p->prompt, &p->n_prompt, &err) != ORC_OK ||
            orc_tsmc_sample(&mo, p->prompt, p->n_prompt, (int)(a->k ? a->k : 8), &so, p, &err) != ORC_OK) {
            rc = fail(cmd, &err);
            break;
        }
        char *gold = orc_task_normalize(t[i].gold);
        for (int k = 0; k < p->n_samples; k++) {
            p->samples[k].correct = gold && p->samples[k].answer && !strcmp(gold, p->samples[k].answer);
            correct += p->samples[k].correct;
            no_answer += !p->samples[k].answer;
            total++;
        }
        free(gold);
        /* a progress line redrawn on a terminal; in a log, a line per tenth of the problems */
        if (tty) fprintf(stderr, "\rrollouts: %d/%d problems%s", i + 1, n, i + 1 == n ? "\n" : "");
        else if ((int64_t)(i + 1) * 10 / n != (int64_t)i * 10 / n)
            fprintf(stderr, "rollouts: %d/%d problems\n", i + 1, n);
    }
    if (!rc && orc_rollouts_save(&set, a->out, &err) != ORC_OK) rc = fail(cmd, &err);
    if (!rc)
        printf("{\"problems\": %d, \"samples\": %d, \"correct\": %d, \"no_answer\": %d, \"out\": \"%s\"}\n", n, total,
               correct, no_answer, a->out);
    orc_rollout_set_free(&set);
    free_tasks(t, n);
    orc_tokenizer_free(tok);
    orc_llm_free(gen);
    return rc;
}

static int do_train_value(const args *a) {
    const char *cmd = "train-value";
    if (need(cmd, "--model", a->model) || need(cmd, "--rollouts", a->rollouts) || need(cmd, "--out", a->out)) return 2;
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(a->model, true, a->confidence, &err);
    if (!v) return fail(cmd, &err);
    orc_rollout_set set;
    if (orc_rollouts_load(a->rollouts, v->body->cfg.vocab_size, &set, &err) != ORC_OK) {
        orc_value_free(v);
        return fail(cmd, &err);
    }
    orc_value_train_opts o;
    orc_value_train_opts_default(&o);
    if (a->objective && strcmp(a->objective, "twist") && strcmp(a->objective, "bce")) {
        fprintf(stderr, "orchard tsmc %s: --objective is twist or bce, got '%s'\n", cmd, a->objective);
        orc_rollout_set_free(&set);
        orc_value_free(v);
        return 2;
    }
    o.objective = a->objective && !strcmp(a->objective, "bce") ? ORC_VALUE_BCE : ORC_VALUE_TWIST;
    if (a->steps) o.steps = (int)a->steps;
    if (a->pps) o.problems_per_step = (int)a->pps;
    if (a->lr > 0) {
        o.lr = (float)a->lr;
        o.min_lr = o.lr / 10;
    }
    if (a->seed) o.seed = a->seed;
    o.mixed_only = a->mixed_only;
    orc_rollout_set val = {0};
    orc_value_report rep;
    int rep_step = -1;
    bool keep_by_pairs;
    const char *usage = !parse_keep_by(a, &keep_by_pairs) ? "--keep-by is twist or pairs"
                        : a->keep_by && !a->keep_best ? "--keep-by needs --keep-best"
                        : (a->eval_every || a->keep_best) && !a->val_rollouts
                            ? "--eval-every and --keep-best need --val-rollouts"
                            : NULL;
    if (usage) {
        fprintf(stderr, "orchard tsmc %s: %s\n", cmd, usage);
        orc_rollout_set_free(&set);
        orc_value_free(v);
        return 2;
    }
    if (a->val_rollouts) {
        if (orc_rollouts_load(a->val_rollouts, v->body->cfg.vocab_size, &val, &err) != ORC_OK) {
            orc_rollout_set_free(&set);
            orc_value_free(v);
            return fail(cmd, &err);
        }
        o.val = &val;
        o.eval_every = (int)a->eval_every;
        o.keep_best = a->keep_best;
        o.keep_by_pairs = keep_by_pairs;
        o.val_report = &rep;
        o.val_step = &rep_step;
    }
    double final = 0;
    int rc = 0;
    if (orc_value_train(v, &set, &o, &final, &err) != ORC_OK || orc_value_save(v, a->out, &err) != ORC_OK)
        rc = fail(cmd, &err);
    orc_rollout_set_free(&val);
    if (!rc) {
        /* the tokenizer travels with the value model so `solve --value` can check it */
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/tokenizer.json", a->model);
        snprintf(dst, sizeof dst, "%s/tokenizer.json", a->out);
        orc_tokenizer *tok = orc_tokenizer_load(src, &err);
        if (!tok || orc_tokenizer_save(tok, dst, &err) != ORC_OK) rc = fail(cmd, &err);
        orc_tokenizer_free(tok);
        if (!rc && a->val_rollouts)
            printf("{\"objective\": \"%s\", \"steps\": %d, \"final_loss\": %.5f, \"kept_step\": %d, "
                   "\"heldout_twist_loss\": %.5f, \"heldout_pair_final\": %.4f, \"out\": \"%s\"}\n",
                   o.objective == ORC_VALUE_BCE ? "bce" : "twist", o.steps, final, rep_step, rep.twist_loss,
                   rep.pair_final, a->out);
        else if (!rc)
            printf("{\"objective\": \"%s\", \"steps\": %d, \"final_loss\": %.5f, \"out\": \"%s\"}\n",
                   o.objective == ORC_VALUE_BCE ? "bce" : "twist", o.steps, final, a->out);
    }
    orc_rollout_set_free(&set);
    orc_value_free(v);
    return rc;
}

/* JSON numbers cannot be NaN: null instead. */
static json_t *num_or_null(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static int do_eval_value(const args *a) {
    const char *cmd = "eval-value";
    if (need(cmd, "--value", a->value) || need(cmd, "--rollouts", a->rollouts)) return 2;
    orc_error err = {0};
    orc_value_model *v = orc_value_load(a->value, false, &err);
    if (!v) return fail(cmd, &err);
    orc_rollout_set set = {0};
    orc_value_report r;
    int rc = 0;
    if (orc_rollouts_load(a->rollouts, v->body->cfg.vocab_size, &set, &err) != ORC_OK ||
        orc_value_eval(v, &set, &r, &err) != ORC_OK)
        rc = fail(cmd, &err);
    if (!rc && a->json) {
        json_t *steps = json_array();
        for (int t = 0; t < ORC_VALUE_EVAL_STEPS; t++) json_array_append_new(steps, num_or_null(r.pair_step[t]));
        json_t *o = json_pack("{s:i,s:i,s:i,s:i,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "problems", r.problems,
                              "samples", r.samples, "correct", r.correct, "any_correct", r.any_correct, "mixed", r.mixed,
                              "sample_accuracy", num_or_null(r.sample_accuracy), "pair_final", num_or_null(r.pair_final),
                              "pair_step", steps, "auc_final", num_or_null(r.auc_final), "twist_loss",
                              num_or_null(r.twist_loss), "twist_loss_uniform", num_or_null(r.twist_loss_uniform),
                              "majority", num_or_null(r.majority), "orm", num_or_null(r.orm), "prm", num_or_null(r.prm),
                              "weighted", num_or_null(r.weighted), "k", json_integer(set.problems[0].n_samples));
        char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        if (text) printf("%s\n", text);
        else rc = 1, fprintf(stderr, "orchard tsmc %s: out of memory\n", cmd);
        free(text);
        json_decref(o);
    } else if (!rc) {
        printf("%d problems, %d samples, %.1f%% right; %d problems with a right sample, %d with right and wrong\n",
               r.problems, r.samples, 100 * r.sample_accuracy, r.any_correct, r.mixed);
        printf("twist loss %.4f (a constant value: %.4f)\n", r.twist_loss, r.twist_loss_uniform);
        printf("right sample valued above a wrong one of the same problem: final %.3f", r.pair_final);
        for (int t = 0; t < ORC_VALUE_EVAL_STEPS && isfinite(r.pair_step[t]); t++)
            printf(", after step %d %.3f", t + 1, r.pair_step[t]);
        printf(" (0.5 is chance)\nfinal value AUC over all samples %.3f\n", r.auc_final);
        printf("picking among each problem's %d samples: majority %.1f%%, orm %.1f%%, prm %.1f%%, weighted %.1f%%\n",
               set.problems[0].n_samples, 100 * r.majority, 100 * r.orm, 100 * r.prm, 100 * r.weighted);
    }
    orc_rollout_set_free(&set);
    orc_value_free(v);
    return rc;
}

static int do_solve(const args *a) {
    const char *cmd = "solve";
    if (need(cmd, "--model", a->model)) return 2;
    if (!a->question == !a->tasks) {
        fprintf(stderr, "orchard tsmc solve: give exactly one of --question and --tasks\n");
        return 2;
    }
    const int method = a->method ? orc_tsmc_method_parse(a->method) : ORC_TSMC_SMC;
    if (method < 0) {
        fprintf(stderr, "orchard tsmc solve: unknown --method '%s' (tsmc, greedy, majority, orm, prm, weighted)\n",
                a->method);
        return 2;
    }
    orc_tsmc_opts so;
    orc_tsmc_opts_default(&so);
    so.n_particles = a->n_given ? (int)a->n : 16;
    if (a->alpha > 0) so.alpha = a->alpha;
    if (a->ess > 0) so.ess_threshold = a->ess;
    if (a->temperature > 0) so.sampler.temperature = (float)a->temperature;
    if (a->max_steps) so.max_steps = (int)a->max_steps;
    so.seed = a->seed ? a->seed : 1;
    if (a->resample && !parse_resample("tsmc solve", a->resample, &so.resample)) return 2;
    orc_llm *gen;
    orc_tokenizer *tok;
    orc_value_model *val;
    if (load_models(cmd, a, &gen, &tok, &val)) return 1;
    orc_tsmc_models mo = {gen, val, tok, gen->cfg.max_position_embeddings};
    qa one = {NULL, (char *)a->question, NULL}, *t = &one;
    int n = 1, rc = 0, correct = 0, no_answer = 0;
    int64_t tokens = 0;
    if (a->tasks) rc = read_tasks(cmd, a->tasks, a->problems, &t, &n);
    orc_error err = {0};
    for (int i = 0; !rc && i < n; i++) {
        int32_t *prompt = NULL;
        int n_prompt = 0;
        orc_tsmc_answer ans;
        if (orc_tsmc_prompt(tok, t[i].q, &prompt, &n_prompt, &err) != ORC_OK ||
            orc_tsmc_run(&mo, (orc_tsmc_method)method, prompt, n_prompt, &so, &ans, &err) != ORC_OK) {
            free(prompt);
            rc = fail(cmd, &err);
            break;
        }
        free(prompt);
        tokens += ans.tokens;
        no_answer += !ans.answer;
        if (a->tasks) {
            char *gold = orc_task_normalize(t[i].gold);
            const bool ok = gold && ans.answer && !strcmp(gold, ans.answer);
            correct += ok;
            free(gold);
            json_t *line = json_pack("{s:s, s:s?, s:s, s:b, s:I, s:i}", "id", t[i].id, "answer", ans.answer, "gold",
                                     t[i].gold, "correct", ok, "tokens", (json_int_t)ans.tokens, "resamples",
                                     ans.resamples);
            char *s = json_dumps(line, JSON_COMPACT);
            printf("%s\n", s);
            free(s);
            json_decref(line);
        } else {
            json_t *out = json_pack("{s:s, s:s?, s:s?, s:I, s:i, s:i}", "method", orc_tsmc_method_name((orc_tsmc_method)method),
                                    "answer", ans.answer, "solution", ans.text, "tokens", (json_int_t)ans.tokens,
                                    "finished", ans.finished, "resamples", ans.resamples);
            char *s = json_dumps(out, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(out);
        }
        orc_tsmc_answer_free(&ans);
    }
    if (!rc && a->tasks)
        printf("{\"method\": \"%s\", \"n\": %d, \"problems\": %d, \"correct\": %d, \"accuracy\": %.4f, \"no_answer\": %d, "
               "\"tokens\": %lld}\n",
               orc_tsmc_method_name((orc_tsmc_method)method), so.n_particles, n, correct, n ? (double)correct / n : 0.0,
               no_answer, (long long)tokens);
    if (a->tasks) free_tasks(t, n);
    orc_value_free(val);
    orc_tokenizer_free(tok);
    orc_llm_free(gen);
    return rc;
}

static int parse_ns(const char *list, int *ns, int *n) {
    *n = 0;
    for (const char *p = list; *p;) {
        char *e;
        long v = strtol(p, &e, 10);
        if (e == p || v < 1 || v > 4096 || *n >= ORC_TSMC_STUDY_MAX_NS) return 1;
        ns[(*n)++] = (int)v;
        p = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return 1;
    }
    return *n == 0;
}

int cmd_tsmc_study(int argc, char **argv) {
    args a = {0};
    a.sft_lr = a.alpha = a.ess = NAN; /* not given */
    a.val_problems = -1;
    if (parse("study", argc, argv, &a)) return 2;
    if (need("study", "--model", a.model) || need("study", "--out", a.out)) return 2;
    orc_tsmc_study_opts o;
    orc_tsmc_study_opts_default(&o);
    o.base_model = a.model;
    o.out_dir = a.out;
    if (a.tasks) {
        long v;
        if (cli_parse_int("tsmc study", "--tasks", a.tasks, 10, 10000000, &v)) return 2;
        o.n_tasks = (int)v;
    }
    if (a.sft_steps) o.sft_steps = (int)a.sft_steps;
    if (!isnan(a.sft_lr)) {
        if (!(a.sft_lr > 0 && a.sft_lr <= 1)) {
            fprintf(stderr, "orchard study tsmc: --sft-lr = %g; it must be in (0, 1]\n", a.sft_lr);
            return 2;
        }
        o.sft_lr = a.sft_lr;
    }
    o.generator = a.generator;
    o.sft_from = a.sft_from;
    o.unseen_rollouts = a.unseen_rollouts;
    o.value_confidence = a.confidence;
    o.value_mixed_only = a.mixed_only;
    if (!isnan(a.alpha)) o.tsmc_alpha = a.alpha; /* the study checks the ranges */
    if (!isnan(a.ess)) o.tsmc_ess = a.ess;
    if (a.resample && !parse_resample("study tsmc", a.resample, &o.tsmc_resample)) return 2;
    o.value_dirs[0] = a.value;
    o.value_dirs[1] = a.value_bce;
    if (a.rollouts) {
        long v;
        if (cli_parse_int("tsmc study", "--rollouts", a.rollouts, 1, 10000000, &v)) return 2;
        o.rollout_problems = (int)v;
    }
    if (a.k) o.k = (int)a.k;
    if (a.value_steps) o.value_steps = (int)a.value_steps;
    if (a.val_problems >= 0) o.val_rollout_problems = (int)a.val_problems;
    if (a.eval_every) o.value_eval_every = (int)a.eval_every;
    if (!parse_keep_by(&a, &o.value_keep_by_pairs)) {
        fprintf(stderr, "orchard study tsmc: --keep-by is twist or pairs\n");
        return 2;
    }
    if (a.lr != 0) {
        if (!(a.lr > 0 && a.lr <= 1)) {
            fprintf(stderr, "orchard study tsmc: --lr = %g; it must be in (0, 1]\n", a.lr);
            return 2;
        }
        o.value_lr = a.lr;
    }
    if (a.pps) o.value_problems_per_step = (int)a.pps;
    if (a.test) o.test_problems = (int)a.test;
    if (a.ns && parse_ns(a.ns, o.ns, &o.n_ns)) {
        fprintf(stderr, "orchard tsmc study: --n expects a list like 4,8,16 (at most %d values, each >= 1)\n",
                ORC_TSMC_STUDY_MAX_NS);
        return 2;
    }
    if (a.n) {
        o.ns[0] = (int)a.n;
        o.n_ns = 1;
    }
    o.bce_ablation = !a.no_bce;
    if (a.seed) o.seed = a.seed;
    if (a.temperature != 0) o.temperature = a.temperature; /* the study checks the range */
    o.distractors = (int)a.distractors;
    orc_error err = {0};
    if (a.difficulty) {
        orc_task_gen g = {0};
        if (orc_task_difficulty_parse(a.difficulty, &g, &err) != ORC_OK) {
            fprintf(stderr, "orchard study tsmc: --difficulty: %s\n", err.msg);
            return 2;
        }
        o.min_difficulty = g.min_difficulty;
        o.max_difficulty = g.max_difficulty;
    }
    if (orc_tsmc_study(&o, &err) != ORC_OK) {
        fprintf(stderr, "orchard study tsmc: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int cmd_tsmc(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cmd_tsmc_help();
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "study")) return cmd_tsmc_study(argc - 2, argv + 2);
    args a = {0};
    if (parse(sub, argc - 2, argv + 2, &a)) return 2;
    if (a.confidence && strcmp(sub, "train-value")) {
        fprintf(stderr, "orchard tsmc %s: --confidence is a train-value (or study) option; a trained value model's "
                "head says whether it reads the confidence\n", sub);
        return 2;
    }
    if (a.mixed_only && strcmp(sub, "train-value")) {
        fprintf(stderr, "orchard tsmc %s: --mixed-only chooses value training's problems (train-value, study)\n", sub);
        return 2;
    }
    if (!strcmp(sub, "rollouts")) return do_rollouts(&a);
    if (!strcmp(sub, "train-value")) return do_train_value(&a);
    if (!strcmp(sub, "eval-value")) return do_eval_value(&a);
    if (!strcmp(sub, "solve")) return do_solve(&a);
    fprintf(stderr, "orchard tsmc: unknown subcommand '%s' (rollouts, train-value, eval-value, solve, study)\n", sub);
    return 2;
}
