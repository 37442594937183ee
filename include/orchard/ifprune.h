/* orchard/ifprune.h: instruction-following pruning (IFPruning).
 *
 * A mask predictor (a small causal LM of its own config, over the same
 * tokenizer as the large LM) reads an instruction; its final hidden state at
 * the last instruction token goes through Linear(h, P) and Linear(P, L*F) to
 * per-channel scores, and SoftTopK (orc_soft_topk) keeps k of the F SwiGLU
 * channels in every layer of the large LM. The masked LM is the ordinary LM
 * forward with each layer's SwiGLU output multiplied by that layer's mask
 * [B, F]. Both are trained jointly: stage 1 continued pretraining on corpus
 * token shards (the predictor reads one chunk, the LM trains on the next),
 * stage 2 SFT on the task suite (the predictor reads the instruction, loss on
 * the response only). At inference the predictor runs once per prompt (or
 * once per task description) and the chosen rows of gate/up and columns of
 * down are gathered into a compact dense orc_llm with intermediate_size k,
 * which the normal generator prefills and decodes.
 *
 * An IFPruning directory:
 *   DIR/config.json, DIR/model.safetensors, DIR/tokenizer.json   the large LM
 *   DIR/predictor/config.json       the predictor backbone (Llama keys)
 *   DIR/predictor/model.safetensors backbone tensors under their Llama names
 *                                   plus mask_head.proj.{weight,bias} [P, h], [P]
 *                                   and mask_head.out.{weight,bias} [L*F, P], [L*F]
 *   DIR/ifprune.json                k, temperature, proj_dim, lm_layers,
 *                                   lm_ffn, lm_vocab, lr_mult, step (written last)
 * Every file is replaced atomically. See docs/ifprune.md. */
#ifndef ORCHARD_IFPRUNE_H
#define ORCHARD_IFPRUNE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/llm.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_ifp_config {
    int64_t k;             /* active FFN channels per layer, 1..lm_ffn */
    double temperature;    /* SoftTopK T (default 0.5) */
    int64_t proj_dim;      /* P of the mask head (default 128) */
    int64_t lm_layers;     /* L of the large LM the predictor was built for */
    int64_t lm_ffn;        /* F of the large LM */
    int64_t lm_vocab;      /* vocabulary shared with the large LM */
    double lr_mult;        /* predictor learning-rate multiplier (default 0.1) */
    int64_t step;          /* training steps done (informative) */
} orc_ifp_config;

/* Defaults above with k = lm_ffn / 3 (at least 1) for the given LM. */
void orc_ifp_config_default(orc_ifp_config *c, const orc_llm_config *lm);
/* k in [1, lm_ffn], T > 0, P > 0, lr_mult > 0; messages name the field. */
orc_status orc_ifp_config_check(const orc_ifp_config *c, orc_error *err);
/* The default predictor backbone for an LM: 2 layers, hidden min(D, 128)
 * (rounded to a multiple of 4 heads' even head_dim), FFN 2*hidden (rounded),
 * the LM's vocab, context and special ids, tied embeddings. */
void orc_ifp_predictor_config_default(orc_llm_config *pc, const orc_llm_config *lm);

typedef struct orc_ifp_predictor {
    orc_ifp_config cfg;
    orc_llm *lm;                /* backbone (its lm_head is never used) */
    orc_arena *arena;           /* the mask head */
    orc_tensor *proj_w, *proj_b; /* [P, h], [P] */
    orc_tensor *out_w, *out_b;   /* [L*F, P], [L*F] */
    orc_tensor *params[4];
} orc_ifp_predictor;

/* A predictor with backbone config pc for an LM with config lm (cfg's
 * lm_layers/lm_ffn/lm_vocab are set from lm). pc's vocab must equal lm's
 * (they share the tokenizer): ORC_EINVAL naming both otherwise. */
orc_ifp_predictor *orc_ifp_predictor_create(const orc_llm_config *pc, const orc_ifp_config *cfg,
                                            const orc_llm_config *lm, bool with_grad, orc_error *err);
/* Backbone as orc_llm_init_weights; head N(0, 1/sqrt(fan_in)), biases 0. */
void orc_ifp_predictor_init(orc_ifp_predictor *p, uint64_t seed);
void orc_ifp_predictor_free(orc_ifp_predictor *p);
/* Check the predictor against the LM it will mask: vocabulary, layers and
 * FFN width must match what it was built for. */
orc_status orc_ifp_check_match(const orc_ifp_predictor *p, const orc_llm_config *lm, orc_error *err);

/* Scores z [B, L, F] for instruction ids int32 [B, T] (right-padded; row b's
 * last instruction token is at lens[b] - 1, 1 <= lens[b] <= T). */
orc_tensor *orc_ifp_scores(orc_ctx *ctx, orc_ifp_predictor *p, orc_tensor *ids, const int32_t *lens);
/* SoftTopK of the scores: the training mask [B, L, F]. */
orc_tensor *orc_ifp_mask(orc_ctx *ctx, orc_ifp_predictor *p, orc_tensor *ids, const int32_t *lens);
/* The mask-balance loss of a batch of masks [B, L, F] with k active channels
 * per layer: each row's layer mask scaled to unit RMS (so the term does not
 * depend on the soft values' scale), u = their mean over the batch ([L, F],
 * each channel's usage), loss = sum u^2 / (k L), a scalar. 1 when the
 * batch's masks share the channels out evenly, F / k when every row keeps
 * the same k channels with equal values. The MoE load-balancing idea,
 * applied to channels: an option (train's balance) against masks that
 * collapse to one mask for every prompt. */
orc_tensor *orc_ifp_balance_loss(orc_ctx *ctx, orc_tensor *mask, int64_t k);

/* The large LM's forward with layer l's SwiGLU output multiplied by
 * mask[:, l, :] ([B, L, F]; NULL: unmasked, identical to orc_llm_hidden).
 * Cache as in orc_llm_hidden. */
orc_tensor *orc_ifp_lm_hidden(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *mask, orc_llm_cache *cache);
orc_tensor *orc_ifp_lm_forward(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *mask, orc_llm_cache *cache);

/* Tokenize an instruction for the predictor: <|begin_of_text|> (when the
 * tokenizer has it) + the text, cut to max_len tokens. An empty or
 * whitespace-only instruction is ORC_EINVAL. *ids malloc'd. */
orc_status orc_ifp_encode_instruction(const orc_tokenizer *tok, const char *instruction, int64_t max_len,
                                      int32_t **ids, size_t *n, orc_error *err);

/* Inference selection for one instruction: per layer the hard top-k channel
 * indices in ascending order (idx [L*k]) and their SoftTopK values (vals
 * [L*k], may be NULL). */
orc_status orc_ifp_select(orc_ifp_predictor *p, const orc_tokenizer *tok, const char *instruction, int32_t *idx,
                          float *vals, orc_error *err);

/* The compact dense model: m's weights with, in layer l, rows idx[l*k ..] of
 * gate/up and those columns of down (times vals when vals is not NULL: the
 * soft mask folded into down; NULL: the hard 0/1 mask). intermediate_size k,
 * no gradients. Indices must be distinct and in [0, F) per layer. */
orc_llm *orc_ifp_compact(const orc_llm *m, const int32_t *idx, const float *vals, int64_t k, orc_error *err);

/* ---- directories ----------------------------------------------------------------- */

typedef struct orc_ifp_model {
    orc_llm *lm;
    orc_tokenizer *tok;
    orc_ifp_predictor *pred;
} orc_ifp_model;

/* Load an IFPruning directory (see above), checking that the predictor
 * matches the LM and that the tokenizer fits both. */
orc_ifp_model *orc_ifp_load(const char *dir, bool with_grad, orc_error *err);
void orc_ifp_model_free(orc_ifp_model *m);
/* Write the LM (with the tokenizer), the predictor and ifprune.json (last). */
orc_status orc_ifp_save(const char *dir, const orc_llm *lm, const orc_tokenizer *tok, const orc_ifp_predictor *p,
                        orc_error *err);

/* ---- training -------------------------------------------------------------------- */

typedef struct orc_ifp_train_opts {
    const char *model_dir;       /* the large LM: config.json, model.safetensors, tokenizer.json */
    const char *out_dir;         /* written (created); an IFPruning dir, or a plain model dir when dense */
    const char *predictor_config;/* config.json of the predictor backbone; NULL: the default */
    bool dense;                  /* no predictor, no mask: the same recipe for a dense baseline */
    int64_t k;                   /* 0: lm_ffn / 3 */
    double temperature;          /* 0: 0.5 */
    double lr_mult;              /* 0: the config default, 0.1 */
    int64_t predictor_steps;     /* > 0: the predictor is frozen (lr multiplier 0) from this step on, so the
                                    masks stop changing while the LM trains on; 0: it trains throughout */
    int64_t dense_steps;         /* > 0: the LM trains dense (no mask, the predictor idle and unchanged) for
                                    the first dense_steps steps and masked after them: pruning a model
                                    pretrained dense, within the same step budget; 0: masked throughout */
    int64_t anneal_steps;        /* > 0: over the first anneal_steps masked steps the active width falls
                                    linearly from the FFN width to k (gradual pruning); 0: k at once */
    double balance;              /* > 0: this weight times orc_ifp_balance_loss is added to the loss at every
                                    masked step (masks pushed to share the channels out); 0: off */
    const char *corpus;          /* stage 1 token shard (train.bin); NULL skips stage 1 */
    const char *tasks;           /* stage 2 task JSONL (train.jsonl of `orchard tasks generate`); NULL skips it */
    int64_t stage1_steps, stage2_steps;
    int batch;                   /* 8 */
    int seq;                     /* LM tokens per row (128) */
    int pred_seq;                /* predictor tokens per row (32) */
    bool pred_reads_input;       /* stage 2: the predictor reads the whole user turn (instruction, a blank
                                    line, input), not the instruction alone */
    double lr, min_lr;           /* 3e-3, 3e-4 */
    int64_t warmup;              /* 20 (at most the total steps) */
    double weight_decay;         /* 0.1 on 2-D weights */
    double grad_clip;            /* 1.0 */
    uint64_t seed;               /* 1 */
    int64_t log_every;           /* 10 */
    int64_t save_every;          /* 0: only at the end */
    const char *log_path;        /* JSONL per step; NULL: none */
    FILE *progress;              /* progress lines; NULL: quiet */
} orc_ifp_train_opts;

void orc_ifp_train_opts_default(orc_ifp_train_opts *o);

typedef struct orc_ifp_train_result {
    int64_t steps;
    double loss;          /* last step's */
    double tokens;        /* LM tokens trained on (targets counted, ignore_index excluded) */
    double seconds;
} orc_ifp_train_result;

orc_status orc_ifp_train(const orc_ifp_train_opts *o, orc_ifp_train_result *res, orc_error *err);
/* The schedule of IFPruning's steps within a run of `total` steps: the
 * masks must switch on inside it (dense_steps < total), the annealing must
 * end inside it (dense_steps + anneal_steps <= total) and the predictor
 * cannot be frozen before it starts (predictor_steps > dense_steps); all
 * counts >= 0. The error names the options. orc_ifp_train checks it; the
 * study checks it before it trains anything. */
orc_status orc_ifp_check_schedule(int64_t total, int64_t dense_steps, int64_t anneal_steps, int64_t predictor_steps,
                                  orc_error *err);
/* The mask-balance weight must be in [0, 1e6]; orc_ifp_train and the study
 * check it the same way. */
orc_status orc_ifp_check_balance(double weight, orc_error *err);

/* ---- diagnostics ----------------------------------------------------------------- */

/* Per-layer mean Jaccard of the hard masks of n instructions, over pairs of
 * the same group and pairs of different groups (group ids in groups[]).
 * same/diff get [L] values (NAN when there are no such pairs); *all_equal is
 * set when every instruction got the same mask in every layer (collapse). */
orc_status orc_ifp_overlap(orc_ifp_predictor *p, const orc_tokenizer *tok, const char *const *instructions,
                           const int *groups, int n, double *same, double *diff, bool *all_equal, orc_error *err);

/* ---- the study -------------------------------------------------------------------- */

/* `orchard ifprune study`: on the same LM token budget, train a dense-full
 * LM (FFN width K), a dense-small LM (FFN k = K/3) and IFPruning (width K,
 * k active), then score each on held-out task-suite items per domain, time
 * their decoding, compute the mask-overlap table, and write
 * OUT/results.json and OUT/README.md. Everything (tasks, tokenizer, corpus
 * shard, the three models, their logs and predictions) goes under OUT. */
typedef struct orc_ifp_study_opts {
    const char *out_dir;
    const char *corpus_path;     /* sotu.jsonl; NULL: the default cache. Missing: no facts domain,
                                    and the task texts stand in for the stage-1 corpus */
    int64_t n_per_domain;        /* tasks generated per domain (1500) */
    int64_t eval_per_domain;     /* test items scored per domain (150) */
    int64_t hidden, layers, ffn; /* the LM: 64, 2, K = 576 */
    int64_t vocab;               /* tokenizer size (768) */
    int64_t stage1_steps, stage2_steps; /* 600, 5400 */
    int batch, seq, pred_seq;    /* 8, 128, 32 */
    double lr;                   /* 3e-3 */
    double lr_mult;              /* IFPruning predictor LR multiplier (0: the default, 0.1) */
    int64_t predictor_steps;     /* IFPruning: freeze the predictor from this step on (0: never) */
    int64_t dense_steps;         /* IFPruning: its LM trains dense for this many of its steps first (0: none) */
    int64_t anneal_steps;        /* IFPruning: k falls from K to k over this many masked steps (0: at once) */
    double temperature;          /* SoftTopK T (0: the default, 0.5) */
    double balance;              /* IFPruning: the mask-balance loss weight (0: off) */
    bool pred_reads_input;       /* the predictor reads instruction + input in training, scoring, the
                                    speed rounds and the overlap table (false: the instruction alone) */
    int min_difficulty, max_difficulty; /* task difficulty range, passed to the generator (1, 1; 0: 1..5) */
    int64_t max_new_tokens;      /* 96 */
    int speed_rounds;            /* decode-speed rounds, the three models alternating (20) */
    int64_t speed_tokens;        /* tokens decoded per model per round (128) */
    uint64_t seed;               /* 1 */
    const char *baselines;       /* NULL: train dense-full and dense-small; else a finished study's directory run
                                    with the same data and LM settings (seed, n, difficulty, sizes, steps), whose
                                    dense_full/ and dense_small/ are linked in and scored instead of retrained,
                                    to compare IFPruning settings against the same baselines */
    FILE *progress;
} orc_ifp_study_opts;

void orc_ifp_study_opts_default(orc_ifp_study_opts *o);
orc_status orc_ifp_study(const orc_ifp_study_opts *o, orc_error *err);
/* Only the decode-speed rounds, on the three models a finished study left in
 * o->out_dir (speed_rounds, speed_tokens; the predictor reads what
 * OUT/results.json's settings say it read); writes OUT/speed.json and prints
 * one line to o->progress. For re-measuring on a quieter machine. */
orc_status orc_ifp_study_speed(const orc_ifp_study_opts *o, orc_error *err);

/* The multi-seed summary (`orchard ifprune summary DIR...`): one row per
 * finished study (its results.json), the means over them, the mean
 * IFPruning - dense-small gain with its 95% interval over seeds (Student's
 * t, n - 1 degrees of freedom; NAN for one study) and the target on
 * the means (gain >= 5 points, >= half the dense-full - dense-small gap of
 * the means, decode speed >= 0.9x). The studies must differ only in their
 * seed (and speed rounds): another setting, or a seed twice, is an error
 * naming the directories. Free with orc_ifp_summary_free. */
#define ORC_IFP_SUMMARY_MAX_DOMAINS 8

typedef struct orc_ifp_summary {
    int n;
    long long *seed;         /* [n] */
    double (*acc)[3];        /* [n][dense-full, dense-small, ifprune]: mean accuracy over the domains, % */
    double *speed;           /* [n] ifprune / dense-small decode speed */
    double *gain;            /* [n] ifprune - dense-small, points */
    double mean_acc[3], mean_speed, mean_gain;
    double gain_sd, gain_ci95; /* over seeds; the interval is mean_gain +- gain_ci95 */
    double vs_full_ci95;     /* the same for ifprune - dense-full (its mean: mean_acc[2] - mean_acc[0]) */
    double gap_closed;       /* mean_gain / (mean dense-full - mean dense-small); NAN when there is no gap */
    bool target_met;
    int n_domains;           /* the task domains of the first study (every study must score the same ones) */
    char domain[ORC_IFP_SUMMARY_MAX_DOMAINS][32];
    double domain_mean[ORC_IFP_SUMMARY_MAX_DOMAINS][3]; /* per-domain accuracy of each model, mean over studies, % */
} orc_ifp_summary;

orc_status orc_ifp_study_summary(const char *const *dirs, int n, orc_ifp_summary *s, orc_error *err);
void orc_ifp_summary_free(orc_ifp_summary *s);

/* Two configurations compared seed by seed (`orchard ifprune summary A...
 * --versus B...`): each set is summarised as above, then every seed of a is
 * paired with b's study of the same seed and diff = b's IFPruning -
 * dense-small gain minus a's, with its mean and 95% interval over seeds
 * (Student's t; NAN for one seed). Both sets must hold the same seeds.
 * settings names what b's first study sets differently from a's first. Free
 * with orc_ifp_versus_free. */
typedef struct orc_ifp_versus {
    orc_ifp_summary a, b;
    int n;
    double *diff;            /* [n], in a's order of seeds, points */
    double mean_diff, diff_ci95;
    char settings[512];      /* "dense_steps, anneal_steps", or "" when none differs */
} orc_ifp_versus;

orc_status orc_ifp_study_versus(const char *const *a_dirs, int na, const char *const *b_dirs, int nb,
                                orc_ifp_versus *v, orc_error *err);
void orc_ifp_versus_free(orc_ifp_versus *v);

#ifdef __cplusplus
}
#endif
#endif
