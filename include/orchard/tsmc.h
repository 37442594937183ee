/* orchard/tsmc.h: step-by-step verification with twisted sequential Monte
 * Carlo (TSMC) for math word problems.
 *
 * A generator (an orchard LM fine-tuned on the task suite's math domain:
 * one reasoning step per line, then "#### answer") proposes solutions one
 * line at a time. A value model, the generator's body with a scalar head
 * (psi = sigmoid(h . w + b) at a token), estimates for a partial solution
 * the chance that its final answer is right. It learns from the outcome
 * labels of the generator's own samples (rollouts) only:
 *   - contrastive twist learning (the default): for each question and step
 *     t, a softmax of log psi over that question's sampled prefixes of t
 *     steps, fitted by cross-entropy to the uniform distribution over the
 *     prefixes of correct samples (steps where no sample is correct are
 *     skipped);
 *   - as an ablation, binary cross-entropy of psi against the outcome at
 *     every step.
 * A step ends at a token whose text holds a newline; the value of a prefix
 * is psi at its last token.
 *
 * SMC keeps N particles; each step extends every unfinished particle by one
 * line, multiplies its weight by (psi_t / psi_{t-1})^alpha, and resamples
 * (multinomial, systematic or stratified) every step or when the effective
 * sample size falls below a fraction of N. A particle finishes at an
 * end-of-turn token or after its "####" line; finished particles keep their
 * weight and are carried through resampling. The answer is the weighted
 * majority over the finished particles. Particles are sequences of a paged
 * KV pool (orchard/batch.h): the prompt is prefilled once and forked, the
 * particles decode as one batch, and resampling shares the parents' pages
 * (no copy of keys, no recompute).
 *
 * Baselines under the same number of samples: greedy, majority vote,
 * best-of-N by the final value (ORM), best-of-N by the smallest step value
 * (PRM style) and value-weighted majority vote. */
#ifndef ORCHARD_TSMC_H
#define ORCHARD_TSMC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/rng.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- resampling and weights (pure functions) -------------------------------------- */

typedef enum orc_resample_kind {
    ORC_RESAMPLE_MULTINOMIAL = 0, /* N independent draws */
    ORC_RESAMPLE_SYSTEMATIC,      /* one uniform u, points (u + i) / N */
    ORC_RESAMPLE_STRATIFIED       /* one uniform per stratum [i/N, (i+1)/N) */
} orc_resample_kind;

const char *orc_resample_name(orc_resample_kind k);
int orc_resample_parse(const char *name); /* the kind, or -1 */

/* Effective sample size of normalised-or-not log weights: (sum w)^2 / sum w^2.
 * Entries of -inf weigh nothing; all -inf gives 0. */
double orc_ess(const double *logw, int n);

/* Draw n ancestors (out[i] in [0, n)) with probabilities proportional to
 * exp(logw). Uses the rng's next numbers. Ancestors come out sorted for the
 * systematic and stratified kinds. ORC_EINVAL when every weight is zero. */
orc_status orc_resample(orc_resample_kind kind, const double *logw, int n, orc_rng *rng, int *out, orc_error *err);

/* The answer with the largest total weight among answers[0..n) (NULL entries
 * are "no answer" and never win); ties go to the answer seen first. Returns
 * its index, or -1 when every answer is NULL. weights NULL: all 1. */
int orc_weighted_majority(const char *const *answers, const double *weights, int n);

/* ---- the value model --------------------------------------------------------------- */

typedef struct orc_value_model {
    orc_llm *body;      /* the generator's architecture; starts as its weights */
    orc_arena *arena;   /* owns the head */
    bool confidence;    /* the head also reads the generator's confidence in the prefix (see
                           orc_value_confidence): one more input, head_w [1, D + 1] */
    orc_tensor *head_w; /* [1, D] value_head.weight ([1, D + 1] with confidence) */
    orc_tensor *head_b; /* [1]    value_head.bias */
    orc_arena *scratch; /* orc_value_step_logpsi's activations, kept between calls (made on first use): a
                           fresh 32 MB arena per problem cost more system time than the forwards did */
} orc_value_model;

/* A value model over a copy of the generator in gen_dir (config.json,
 * model.safetensors); the head starts at zero (psi = 0.5 everywhere). With
 * confidence the head has one more input, the generator's confidence in the
 * prefix (orc_value_confidence), whose weight starts at 1 (psi =
 * sigmoid(confidence) before training); such a model needs the token
 * log-probabilities of what it scores (rollouts record them). */
orc_value_model *orc_value_from_generator(const char *gen_dir, bool with_grad, bool confidence, orc_error *err);
/* DIR/config.json + model.safetensors (the body) + value_head.safetensors;
 * the head's width says whether it reads the confidence input. */
orc_value_model *orc_value_load(const char *dir, bool with_grad, orc_error *err);
/* Writes the three files atomically (creates DIR). */
orc_status orc_value_save(const orc_value_model *v, const char *dir, orc_error *err);
void orc_value_free(orc_value_model *v);

/* The confidence input at each of n positions of a solution: the lowest
 * log-probability the generator gave any token so far (running minimum of
 * logp[0..t], floored at ORC_VALUE_CONF_FLOOR). Wrong samples of a
 * generator that mostly knows the answer tend to hold one unlikely token
 * (a slip of the sampler), which a head on the hidden state alone learns
 * to see only from far more data. */
#define ORC_VALUE_CONF_FLOOR (-30.0f)
void orc_value_confidence(const float *logp, int n, float *out);
/* One step of it: the confidence after a token of log-probability logp,
 * given conf before it (0 before the first token). SMC keeps it per particle. */
float orc_value_confidence_next(float conf, float logp);

/* Logits of psi at every position, [B, T], for ids int32 [B, T]; with a
 * cache (no-grad) the positions continue from the cache. conf [B, T] is the
 * confidence input at each position (orc_value_confidence; required when
 * v->confidence, ignored otherwise). */
orc_tensor *orc_value_logits(orc_ctx *ctx, orc_value_model *v, orc_tensor *ids, const float *conf,
                             orc_llm_cache *cache);

/* ---- rollouts ---------------------------------------------------------------------------- */

/* One sampled solution: its token ids (after the prompt), the token index
 * that ends each step, its extracted answer and whether it is right. */
typedef struct orc_rollout_sample {
    int32_t *ids;
    int n_ids;
    float *logp;   /* [n_ids] the generator's log-probability of each token (its softmax at temperature 1);
                      NULL when the rollouts file has none (files written before they were recorded) */
    int *step_end; /* [n_steps] token indices into ids */
    int n_steps;
    char *answer;  /* NULL: no parseable answer */
    bool correct;
} orc_rollout_sample;

typedef struct orc_rollout_problem {
    char *id, *question, *gold;
    int32_t *prompt; /* the chat prompt's ids, ending with the assistant header */
    int n_prompt;
    orc_rollout_sample *samples;
    int n_samples;
} orc_rollout_problem;

typedef struct orc_rollout_set {
    orc_rollout_problem *problems;
    int n_problems;
} orc_rollout_set;

void orc_rollout_set_free(orc_rollout_set *s);
/* JSON lines, one problem per line: {"id", "question", "gold", "prompt": [ids],
 * "samples": [{"ids": [...], "step_end": [...], "answer", "correct"}]}. */
orc_status orc_rollouts_save(const orc_rollout_set *s, const char *path, orc_error *err);
/* Checks every id against vocab (a rollout file for another tokenizer is an
 * error naming the line) and every step end against its sample. */
orc_status orc_rollouts_load(const char *path, int64_t vocab, orc_rollout_set *s, orc_error *err);
/* The same from a rollouts file's bytes in memory (buf need not end in NUL);
 * path names the source in messages. The fuzz target's entry. */
orc_status orc_rollouts_parse(const char *buf, size_t len, const char *path, int64_t vocab, orc_rollout_set *s,
                              orc_error *err);

/* The ids that end a step: every token whose bytes hold '\n'. */
bool orc_tsmc_is_step_end(const orc_tokenizer *tok, int32_t id);
/* Step ends of a sampled solution (the token indices that end a line, plus
 * the last token when the text does not end with one); returns the count,
 * out needs n entries. */
int orc_tsmc_step_ends(const orc_tokenizer *tok, const int32_t *ids, int n, int *out);

/* ---- value training ------------------------------------------------------------------------ */

typedef enum orc_value_objective { ORC_VALUE_TWIST = 0, ORC_VALUE_BCE } orc_value_objective;

/* The loss of a batch of problems (all samples of each), a scalar on the
 * tape: the contrastive twist loss (mean over the (problem, step) groups
 * that have a correct sample) or the mean BCE over every (sample, step). */
orc_tensor *orc_value_loss(orc_ctx *ctx, orc_value_model *v, const orc_rollout_problem *const *probs, int n_probs,
                           orc_value_objective obj, int *n_groups);

typedef struct orc_value_train_opts {
    orc_value_objective objective;
    int steps;          /* optimizer steps */
    int problems_per_step;
    float lr, min_lr;   /* cosine from lr to min_lr after warmup */
    int warmup;
    float weight_decay;
    float head_lr_mult; /* the head learns faster than the body */
    uint64_t seed;
    bool quiet;
    /* Held-out rollouts (other problems): every eval_every steps (and at the
     * end) the value model is scored on them (orc_value_eval) and the line
     * printed; with keep_best the weights of the evaluation with the lowest
     * held-out twist loss are the result (early stopping). NULL: none. */
    const struct orc_rollout_set *val;
    int eval_every;
    bool keep_best;
    bool keep_by_pairs; /* keep_best ranks the evaluations by the right > wrong pair accuracy of the final value
                           (higher is better) instead of the twist loss, which hardly moves when the values are
                           all near one level even as the ranking improves */
    bool mixed_only;    /* train only on problems whose samples include a right and a wrong answer: the only
                           ones whose twist targets rank one prefix above another (with the generator right most
                           of the time, most problems are all right and teach only that their prefixes tie) */
    struct orc_value_report *val_report; /* out (may be NULL): the held-out report of the weights returned */
    int *val_step;                       /* out (may be NULL): the step those weights are from */
} orc_value_train_opts;

void orc_value_train_opts_default(orc_value_train_opts *o);
/* Train v on the rollouts; *final_loss gets the mean loss of the last 10 steps. */
orc_status orc_value_train(orc_value_model *v, const orc_rollout_set *set, const orc_value_train_opts *o,
                           double *final_loss, orc_error *err);
/* log psi at every step end of every sample of pr: out[k][t] for sample k,
 * step t (out[k] needs samples[k].n_steps entries). Several samples share
 * one forward (rows padded after their end, which the causal mask keeps out
 * of every position read), so scoring N samples costs a few batched
 * forwards instead of N. */
orc_status orc_value_step_logpsi(orc_value_model *v, const orc_rollout_problem *pr, double *const *out, orc_error *err);
/* From those step values, each sample's final log psi and its smallest step
 * log psi (the ORM and PRM scores; both -inf for a sample with no step). */
void orc_value_sample_scores(const orc_rollout_problem *pr, double *const *lp, double *final, double *minv);

/* Held-out checks of a value model on labelled rollouts (problems it was not
 * trained on); see orc_value_eval. */
#define ORC_VALUE_EVAL_STEPS 8
typedef struct orc_value_report {
    int problems, samples, correct;
    int any_correct;          /* problems with at least one right sample */
    int mixed;                /* problems with right and wrong samples: where ranking matters */
    double sample_accuracy;   /* correct / samples */
    double pair_final;        /* within a problem, P(final psi of a right sample > a wrong one's), ties half */
    double pair_step[ORC_VALUE_EVAL_STEPS]; /* the same for psi after step t, over the samples that reach it */
    double auc_final;         /* the final psi's AUC pooled over all problems (calibration across problems) */
    double twist_loss;        /* contrastive twist loss on these rollouts (mean over groups with a right sample) */
    double twist_loss_uniform;/* the same loss for a constant psi: the no-information level */
    int twist_groups;
    double majority, orm, prm, weighted; /* accuracy of picking among each problem's K samples */
} orc_value_report;
/* Scores every sample of every problem with v and fills r (no generation).
 * 0.5 pair accuracy is chance; an ORM accuracy below the sample accuracy
 * means the value model prefers wrong answers. */
orc_status orc_value_eval(orc_value_model *v, const orc_rollout_set *set, orc_value_report *r, orc_error *err);

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct orc_tsmc_opts {
    int n_particles;               /* >= 1 */
    double alpha;                  /* exponent of the incremental weight; default 1 */
    double ess_threshold;          /* resample when ESS < threshold * (unfinished count); 1 = every step */
    orc_resample_kind resample;
    orc_sampler_opts sampler;      /* the proposal: temperature etc. (top-k/p off by default) */
    int max_steps;                 /* lines per solution; default 16 */
    int max_line_tokens;           /* default 48 */
    uint64_t seed;
    bool check_caches;             /* tests: at the end, compare every particle's cached logits with a fresh
                                      forward of its tokens (an error if they differ) */
} orc_tsmc_opts;

void orc_tsmc_opts_default(orc_tsmc_opts *o);
/* The weighting settings' ranges: alpha >= 0, the ESS threshold in [0, 1]
 * (orc_tsmc_run checks them; the study too, before any work). */
orc_status orc_tsmc_check_weighting(double alpha, double ess_threshold, orc_error *err);

/* What the generator and value model need at decode time. The value model
 * may be NULL for the value-free methods (greedy, majority). */
typedef struct orc_tsmc_models {
    orc_llm *gen;
    orc_value_model *value;
    const orc_tokenizer *tok;
    int64_t context;                /* positions per particle */
} orc_tsmc_models;

typedef enum orc_tsmc_method {
    ORC_TSMC_GREEDY = 0,
    ORC_TSMC_MAJORITY,      /* N samples, majority vote */
    ORC_TSMC_ORM,           /* N samples, the one with the largest final value */
    ORC_TSMC_PRM,           /* N samples, the one with the largest smallest step value */
    ORC_TSMC_WEIGHTED,      /* N samples, majority weighted by final value */
    ORC_TSMC_SMC,           /* twisted SMC */
    ORC_TSMC_N_METHODS
} orc_tsmc_method;

const char *orc_tsmc_method_name(orc_tsmc_method m);
int orc_tsmc_method_parse(const char *name);
/* The sample a best-of-N or voting baseline answers with among n scored
 * samples (the study's and orc_value_eval's picks): ORC_TSMC_MAJORITY
 * (votes), ORC_TSMC_ORM (the largest final log psi among samples with an
 * answer, the first on ties), ORC_TSMC_PRM (the largest smallest step log
 * psi, likewise) or ORC_TSMC_WEIGHTED (votes weighted by final psi; plain
 * votes when no final value is finite).
 * final[k], minv[k]: log psi of sample k (-inf: no step); w: n doubles of
 * scratch. Returns the index, or -1 when no sample has an answer or the
 * method is not one of these four. orc_tsmc_run picks with it too. */
int orc_tsmc_pick(orc_tsmc_method m, const char *const *answers, const double *final, const double *minv, int n,
                  double *w);

typedef struct orc_tsmc_answer {
    char *answer;           /* malloc'd; NULL: no particle gave a parseable answer ("no answer") */
    char *text;             /* the chosen solution's text (malloc'd), for inspection */
    int64_t tokens;         /* tokens generated (all particles, all steps) */
    int finished;           /* particles or samples that finished */
    int resamples;          /* SMC only */
} orc_tsmc_answer;

void orc_tsmc_answer_free(orc_tsmc_answer *a);

/* Solve one problem (the prompt's ids, e.g. from orc_tsmc_prompt) with a
 * method. ORC_EINVAL for n_particles < 1 or a value-based method without a
 * value model. */
orc_status orc_tsmc_run(const orc_tsmc_models *mo, orc_tsmc_method method, const int32_t *prompt, int n_prompt,
                        const orc_tsmc_opts *o, orc_tsmc_answer *out, orc_error *err);

/* K independent samples (the proposal's settings in o, o->n_particles
 * ignored) for one prompt into out->samples: ids, step ends, answer;
 * `correct` is left false for the caller to label. */
orc_status orc_tsmc_sample(const orc_tsmc_models *mo, const int32_t *prompt, int n_prompt, int k,
                           const orc_tsmc_opts *o, orc_rollout_problem *out, orc_error *err);

/* The chat prompt for a question: the user turn, then the assistant header. */
orc_status orc_tsmc_prompt(const orc_tokenizer *tok, const char *question, int32_t **ids, int *n, orc_error *err);

/* ---- the study ----------------------------------------------------------------------------- */

#define ORC_TSMC_STUDY_MAX_NS 8

typedef struct orc_tsmc_study_opts {
    const char *base_model;  /* a pretrained orchard LM directory with its tokenizer */
    const char *out_dir;
    int n_tasks;             /* math items generated (split about 80/10/10 by problem) */
    int sft_steps;           /* generator fine-tuning steps (batch 16; default 800) */
    double sft_lr;           /* its peak learning rate (cosine to a tenth); default 1e-3 */
    const char *generator;   /* NULL: fine-tune base_model; else an already fine-tuned generator directory
                                (trained on the train split of the same tasks: same seed, count, difficulty) */
    const char *sft_from;    /* NULL: the fine-tuning starts from base_model; else from this LM (e.g. a
                                generator tuned on easier problems); base_model is then only recorded */
    bool unseen_rollouts;    /* leave the rollout problems (the first rollout_problems of the train split) out
                                of the fine-tuning, so the value model learns from problems the generator has
                                not seen, like the validation and test ones; needs the study's fine-tuning */
    int rollout_problems;    /* train problems sampled for the value model */
    int k;                   /* samples per rollout problem */
    int value_steps;
    int val_rollout_problems;/* validation problems sampled (K each) to score the value model on problems it was
                                not trained on and keep its best weights (orc_value_eval); 0: none */
    int value_eval_every;    /* steps between those checks; 0: value_steps / 5 */
    bool value_confidence;   /* the value models' heads also read the generator's confidence in the prefix
                                (orc_value_from_generator's confidence) */
    bool value_keep_by_pairs;/* keep the check with the highest right > wrong pair accuracy (default: the lowest
                                held-out twist loss) */
    double value_lr;         /* value training's peak learning rate (0: orc_value_train_opts_default's) */
    int value_problems_per_step; /* 0: the default */
    bool value_mixed_only;   /* orc_value_train_opts.mixed_only for the value models the study trains */
    const char *value_dirs[2]; /* NULL: train; else a value model trained before for this generator
                                  ([0] twist, [1] the BCE ablation's), used as it is */
    int test_problems;
    int ns[ORC_TSMC_STUDY_MAX_NS];
    int n_ns;
    uint64_t seed;
    bool bce_ablation;       /* also train a BCE value model and run TSMC with it */
    int min_difficulty, max_difficulty; /* math items' difficulty range (operations per problem; default
                                           1..1, where a 4M-parameter generator learns something);
                                           0: the task suite's default 1..5 */
    double temperature;      /* sampling temperature of the rollouts, the baselines' samples and the
                                particles (default 0.7) */
    int distractors;         /* irrelevant-number sentences per math problem (orc_task_gen.distractors;
                                default 0) */
    double tsmc_alpha;       /* TSMC's orc_tsmc_opts.alpha (default 1) */
    double tsmc_ess;         /* TSMC's orc_tsmc_opts.ess_threshold (default 0.5; 1 = resample every step) */
    orc_resample_kind tsmc_resample; /* default systematic */
} orc_tsmc_study_opts;

void orc_tsmc_study_opts_default(orc_tsmc_study_opts *o);
/* Runs the whole study into out_dir: tasks/, generator/, rollouts.jsonl,
 * value/ (value_bce/), results.json, results.md, accuracy.svg; prints the
 * Markdown table. */
orc_status orc_tsmc_study(const orc_tsmc_study_opts *o, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
