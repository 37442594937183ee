/* orchard/moe_study.h: `orchard study moe-vs-dense` (issue 6, part 3).
 *
 * Given a training budget in FLOPs, the study picks a compute-optimal dense
 * model from a fixed ladder (C = 6 N D with D = tokens_per_param x N, so
 * N* = sqrt(C / (6 x tokens_per_param)); the rung whose parameter count is
 * closest to N* in log scale), builds MoE models with the same activated
 * parameters (every other layer MoE, E experts of half the FFN width, token
 * choice top-2 and expert choice with capacity factor 2), measures each
 * model's step time, trains the dense model on D tokens and every MoE model
 * for the same wall-clock time (steps = dense steps x dense step time / its
 * step time), and writes results.json, results.md and loss_vs_time.svg.
 * docs/moe.md ("Study") describes the protocol and a measured run. */
#ifndef ORCHARD_MOE_STUDY_H
#define ORCHARD_MOE_STUDY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_MOE_STUDY_MAX_EXPERT_COUNTS 4

typedef struct orc_moe_study_opts {
    double budget;            /* FLOPs for the dense model (> 0) */
    const char *out_dir;      /* results, tokenizer, shards, runs (created) */
    const char *data_dir;     /* NULL: shards made from the cached corpus; else holds train.bin, val.bin */
    const char *tokenizer;    /* with data_dir: the tokenizer the shards were made with */
    const char *cache_dir;    /* NULL: orc_corpus_default_cache() */
    int vocab_size;           /* tokenizer trained on the corpus (512) */
    int batch, seq;           /* rows per step and tokens per row (16, 64) */
    double tokens_per_param;  /* the Chinchilla ratio (20) */
    int experts[ORC_MOE_STUDY_MAX_EXPERT_COUNTS]; /* expert counts (4, 8) */
    int n_experts;
    double lr;                /* peak learning rate (3e-3; cosine to lr / 10) */
    int measure_steps;        /* timed steps after 2 warm-up steps, per round (5) */
    int measure_rounds;       /* interleaved timing rounds; each model keeps its fastest (3) */
    int evals;                /* validation points per run (8) */
    uint64_t seed;            /* init and batches, the same for every model (1) */
    FILE *progress;           /* notes and training progress; NULL: quiet */
} orc_moe_study_opts;

void orc_moe_study_opts_default(orc_moe_study_opts *o);

/* Run the whole study. Errors name the option or file at fault: a budget
 * that is not positive or too small for the smallest rung, a missing corpus
 * (run `orchard data fetch`), an --out that already holds a study. */
orc_status orc_moe_study_run(const orc_moe_study_opts *o, orc_error *err);

/* The command line (`orchard study moe-vs-dense ARGS`): argv[0] is the
 * first option. Returns the exit status: 0 done, 1 failed, 2 bad usage. */
int orc_moe_study_main(int argc, char **argv);
void orc_moe_study_help(FILE *fp);

#ifdef __cplusplus
}
#endif
#endif
