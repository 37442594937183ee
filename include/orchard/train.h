/* orchard/train.h: training the language model from a recipe.
 *
 * This module owns a whole training job: the recipe (a JSON file naming the
 * model, the tokenizer, the data and the hyperparameters), the loop (batches
 * drawn deterministically from (seed, step), gradient accumulation, AdamW
 * with weight decay on 2-D weights only, warmup + cosine learning rate,
 * global-norm clipping), validation (mean loss in nats and bits per byte on a
 * fixed set of windows), the progress line and the JSONL log, checkpoints and
 * resuming. `orchard train` is a thin wrapper around orc_train_run; tests and
 * later tools call it directly.
 *
 * A checkpoint is a directory:
 *   config.json              the model config (Hugging Face Llama keys)
 *   model.safetensors        F32 weights under Llama tensor names; metadata "step"
 *   tokenizer.json           the tokenizer the data was encoded with
 *   optimizer.safetensors    every optimizer state buffer by its name
 *                            ("<param>.exp_avg", "<param>.exp_avg_sq"); metadata "step"
 *   trainer_state.json       step, the effective recipe, data position, best val loss
 * With "lora" the checkpoint is the adapter instead of config.json and
 * model.safetensors: adapter_config.json + adapter_model.safetensors (PEFT's
 * layout, metadata "step"), and the optimizer state covers A and B only; the
 * frozen base is reloaded from the recipe on resume (docs/lora.md).
 * Each file is written to a temporary name and renamed; trainer_state.json is
 * written last and resume checks that the steps recorded in the two
 * safetensors files match it, so a save cut short is reported, never half
 * loaded. Resuming continues with exactly (bit for bit) the losses an
 * uninterrupted run would have produced, for the same thread count. */
#ifndef ORCHARD_TRAIN_H
#define ORCHARD_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/chat.h"
#include "orchard/error.h"
#include "orchard/llm.h"
#include "orchard/lora.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_TRAIN_PATH_MAX 4096

/* A recipe with every path resolved (relative paths in the file are taken
 * relative to the file's folder). Keys of the JSON file, all optional except
 * the model source, the tokenizer (unless init_from holds one) and the data:
 *   "model": "tiny" | "small" | "base" | {config.json object} | "path/config.json"
 *   "init_from": DIR          fine-tune: start from the checkpoint in DIR
 *   "tokenizer": DIR          tokenizer.json (or GPT-2 files) in DIR, or the file
 *   "data": {"train": "train.bin", "val": "val.bin"}   token shards
 *   "sft": {"train": "chat.jsonl", "val": "chat_val.jsonl"}   chat JSONL
 *   "batch", "seq", "accum", "steps", "lr", "min_lr", "warmup", "weight_decay",
 *   "beta1", "beta2", "eps", "grad_clip", "eval_every", "eval_batches",
 *   "save_every", "log_every", "seed"
 *   "lora": {"rank": 16, "alpha": 32, "targets": ["q", ...], "dropout": 0}
 *                             train only a LoRA adapter over the frozen base
 *                             (init_from, recover_from, or the model from seed);
 *                             checkpoints then hold the adapter (docs/lora.md)
 *   "recover_from": PATH      the frozen base is this quantized GGUF (file or
 *                             DIR/model.gguf), dequantized: an accuracy-recovery
 *                             adapter; implies "lora" (defaults above)
 *   "lora_init": DIR          start the adapter from this one (its rank,
 *                             alpha and targets), e.g. a recovery adapter
 * Unknown keys are errors naming the file and the key. */
typedef struct orc_train_recipe {
    char path[ORC_TRAIN_PATH_MAX];        /* the recipe file, for messages */
    orc_llm_config model;                 /* valid when has_model */
    bool has_model;
    char init_from[ORC_TRAIN_PATH_MAX];   /* "" unless fine-tuning */
    char tokenizer[ORC_TRAIN_PATH_MAX];   /* "" means init_from's tokenizer */
    bool sft;                             /* chat JSONL instead of token shards */
    char train[ORC_TRAIN_PATH_MAX];
    char val[ORC_TRAIN_PATH_MAX];         /* "" means no validation */
    int batch;          /* rows per micro-batch (16) */
    int seq;            /* tokens per row (128; at most max_position_embeddings) */
    int accum;          /* micro-batches per optimizer step (1) */
    int64_t steps;      /* optimizer steps in all (1000) */
    double lr, min_lr;  /* peak and final learning rate (6e-4, 6e-5) */
    int64_t warmup;     /* linear warmup steps (100; at most steps) */
    double weight_decay;            /* on 2-D weights only (0.1) */
    double beta1, beta2, eps;       /* AdamW (0.9, 0.95, 1e-8) */
    double grad_clip;               /* global norm; 0 turns clipping off (1.0) */
    int64_t eval_every;             /* validation every N steps and at the end; 0: never (100) */
    int64_t eval_batches;           /* validation batches (10) */
    int64_t save_every;             /* checkpoint every N steps; 0: only at the end (500) */
    int64_t log_every;              /* progress line every N steps (10) */
    uint64_t seed;                  /* init and batch sampling (1337) */
    bool lora;                      /* train a LoRA adapter only */
    orc_lora_config lora_cfg;       /* valid when lora */
    char recover_from[ORC_TRAIN_PATH_MAX]; /* "" unless the base is a quantized GGUF */
    char lora_init[ORC_TRAIN_PATH_MAX];    /* "" unless the adapter starts from one */
} orc_train_recipe;

/* Defaults as listed above, no model, no paths. */
void orc_train_recipe_default(orc_train_recipe *r);
/* Parse and check a recipe file. Errors name the file and the key. */
orc_status orc_train_recipe_load(const char *path, orc_train_recipe *r, orc_error *err);
/* The range checks alone (after overrides); messages name r->path and the key. */
orc_status orc_train_recipe_check(const orc_train_recipe *r, orc_error *err);

/* What one optimizer step did, for callbacks. val_* are NAN when the step
 * ran no validation. */
typedef struct orc_train_step_info {
    int64_t step;          /* steps completed, counted from 1 */
    int64_t total_steps;
    double loss;           /* mean of the micro-batch losses, nats per token */
    float lr;              /* the rate this step used */
    double grad_norm;      /* before clipping */
    double tokens_per_s;   /* this step's tokens over its wall time */
    double val_loss, val_bpb;
} orc_train_step_info;

typedef struct orc_train_opts {
    const char *recipe;     /* recipe file; NULL only with resume (use the saved recipe) */
    const char *out_dir;    /* checkpoint directory (created) */
    bool resume;            /* continue from the checkpoint in out_dir */
    const char *log_path;   /* JSONL, one line per step (appended to on resume); NULL: none */
    /* Overrides of recipe fields; 0 leaves the recipe's value. */
    int64_t steps;
    int batch, seq, accum;
    double lr;
    /* LoRA overrides (NULL: the recipe's): an orc_lora_config_parse spec,
     * a quantized GGUF base (accuracy recovery), an adapter to start from. */
    const char *lora, *recover_from, *lora_init;
    /* > 0: stop after this step as if interrupted (save, return). */
    int64_t stop_after;
    /* Set asynchronously (a SIGINT handler): the current step finishes, a
     * checkpoint is saved and the run returns with interrupted set. */
    volatile sig_atomic_t *interrupt;
    FILE *progress;         /* progress lines and notes; NULL: quiet */
    void (*on_step)(void *user, const orc_train_step_info *info);
    void *user;
    /* Multi-process training (orchard/dist.h, docs/distributed.md). comm:
     * the world communicator (NULL: this process alone); mesh:
     * "data=D,expert=E,model=M" (NULL with a comm: data = its size); zero:
     * 1 shards the optimizer state over the data ranks (ZeRO-1). recipe
     * batch is the global batch: each data rank trains on batch / D of its
     * rows. Only world rank 0 writes checkpoints; give the others no log
     * and no progress stream. */
    struct orc_comm *comm;
    const char *mesh;
    int zero;
} orc_train_opts;

typedef struct orc_train_result {
    int64_t start_step;     /* 0, or the step resumed from */
    int64_t step;           /* steps completed when the run returned */
    bool interrupted;       /* stopped by opts->interrupt */
    bool paused;            /* stopped by opts->stop_after */
    double loss;            /* the last step's loss (NAN if no step ran) */
    double val_loss, val_bpb;   /* the last validation (NAN if none) */
    double tokens_per_s;    /* over all steps of this run */
    char checkpoint[ORC_TRAIN_PATH_MAX];   /* the directory saved to */
} orc_train_result;

/* Run a training job: load the recipe (or the checkpoint's recipe when
 * resuming without one), apply the overrides, build or load the model, train
 * until steps (or stop_after / an interrupt), validate and checkpoint as the
 * recipe says, and save a final checkpoint. A fresh run refuses an out_dir
 * that already holds a checkpoint. res may be NULL. */
orc_status orc_train_run(const orc_train_opts *opts, orc_train_result *res, orc_error *err);

/* One supervised fine-tuning row: encode msgs with the chat template
 * (orchard/chat.h), keep the first seq + 1 tokens, and fill inputs[0..seq)
 * with the tokens (pad after the end) and targets[0..seq) with the next
 * token where the chat template marks it as trained (the assistant's
 * content and its <|end|>) and ORC_IGNORE_INDEX elsewhere, padding
 * included. *n_trained (may be NULL) gets the number of counted targets. */
orc_status orc_sft_example(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs, int seq,
                           int32_t pad_id, int32_t *inputs, int32_t *targets, int *n_trained, orc_error *err);

/* Finish or discard a checkpoint save that a crash interrupted in DIR (see
 * the two-phase save in src/llm/train.c); a no-op when there is none.
 * orc_train_run calls it before resuming. */
orc_status orc_train_recover_pending(const char *dir, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
