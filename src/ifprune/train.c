/* IFPruning's joint training (orc_ifp_train): the large LM and the mask
 * predictor learn together through SoftTopK. Stage 1 is continued
 * pretraining on a corpus token shard: each row is one window of
 * pred_seq + seq + 1 tokens; the predictor reads the first pred_seq tokens
 * and the masked LM is trained on the next seq. Stage 2 is SFT on the task
 * suite: the predictor reads the item's instruction (or the whole user turn,
 * pred_reads_input), the LM reads the chat
 * (user: instruction + input, assistant: worked solution) with the loss on
 * the response only. AdamW (decay on 2-D weights), one warmup + cosine
 * schedule over both stages, the predictor's groups at lr * lr_mult,
 * global-norm clipping over all parameters. Batches are pure functions of
 * (seed, step), so a run is reproducible. With dense_steps the LM first
 * trains unmasked (the predictor idle, its learning rate 0) and the masks
 * switch on at that step: the paper prunes a pretrained dense model, and
 * this does so inside the same step budget. With anneal_steps the active
 * width then falls linearly from the FFN width to k over that many steps
 * (gradual pruning), so the predictor learns which channels matter before
 * most of them are cut. With balance > 0 a load-balancing term on the
 * batch's channel usage (orc_ifp_balance_loss) is added to the loss, which
 * pushes prompts towards different channels. With `dense` the same loop trains
 * the plain LM on the same tokens (the study's baselines). The output
 * directory is written with atomic file replacement (orc_ifp_save) at
 * save_every steps and at the end. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "orchard/chat.h"
#include "orchard/data.h"
#include "orchard/ifprune.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/rng.h"
#include "orchard/train.h"

void orc_ifp_train_opts_default(orc_ifp_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->seq = 128;
    o->pred_seq = 32;
    o->lr = 3e-3;
    o->min_lr = 3e-4;
    o->warmup = 20;
    o->weight_decay = 0.1;
    o->grad_clip = 1.0;
    o->seed = 1;
    o->log_every = 10;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Stage 2 rows, tokenized once: LM inputs/targets [n, seq] and the
 * predictor's instruction ids [n, pred_seq] with their lengths. */
typedef struct sft_rows {
    int64_t n;
    int32_t *in, *tg, *pin, *plen;
} sft_rows;

static void sft_rows_free(sft_rows *s) {
    free(s->in);
    free(s->tg);
    free(s->pin);
    free(s->plen);
    memset(s, 0, sizeof *s);
}

/* The predictor reads the instruction, or with whole_turn the user turn the
 * LM sees (instruction + input); inputs longer than pred_seq tokens are cut
 * to their start and counted in *cut (inference reads them whole). */
static orc_status load_tasks(const char *path, const orc_tokenizer *tok, int seq, int pred_seq, bool whole_turn,
                             int32_t pad, sft_rows *s, int64_t *cut, orc_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot open the task file: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int64_t n_cap = 0, lineno = 0;
    orc_status st = ORC_OK;
    while (st == ORC_OK && getline(&line, &cap, fp) > 0) {
        lineno++;
        if (line[0] == '\n' || line[0] == '\0') continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        const char *ins = json_string_value(json_object_get(j, "instruction"));
        const char *inp = json_string_value(json_object_get(j, "input"));
        const char *sol = json_string_value(json_object_get(j, "solution"));
        if (!ins || !sol) {
            st = orc_error_set(err, ORC_EFORMAT, "%s:%lld: a task needs string fields \"instruction\" and "
                               "\"solution\"", path, (long long)lineno);
            json_decref(j);
            break;
        }
        if (s->n == n_cap) {
            n_cap = n_cap ? 2 * n_cap : 256;
            int32_t *a = realloc(s->in, sizeof(int32_t) * (size_t)(n_cap * seq));
            if (a) s->in = a;
            int32_t *b = realloc(s->tg, sizeof(int32_t) * (size_t)(n_cap * seq));
            if (b) s->tg = b;
            int32_t *c = realloc(s->pin, sizeof(int32_t) * (size_t)(n_cap * pred_seq));
            if (c) s->pin = c;
            int32_t *d = realloc(s->plen, sizeof(int32_t) * (size_t)n_cap);
            if (d) s->plen = d;
            if (!a || !b || !c || !d) {
                st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory for %lld tasks", path, (long long)n_cap);
                json_decref(j);
                break;
            }
        }
        size_t plen = strlen(ins) + (inp ? strlen(inp) : 0) + 3;
        char *prompt = malloc(plen);
        if (!prompt) {
            st = orc_error_set(err, ORC_ENOMEM, "out of memory");
            json_decref(j);
            break;
        }
        snprintf(prompt, plen, "%s%s%s", ins, inp && *inp ? "\n\n" : "", inp && *inp ? inp : "");
        orc_chat_msg msgs[2] = {{"user", prompt}, {"assistant", sol}};
        int trained = 0;
        st = orc_sft_example(tok, msgs, 2, seq, pad, s->in + s->n * seq, s->tg + s->n * seq, &trained, err);
        int32_t *ids = NULL;
        size_t m = 0;
        if (st == ORC_OK) st = orc_ifp_encode_instruction(tok, whole_turn ? prompt : ins, 0, &ids, &m, err);
        if (st == ORC_OK && m > (size_t)pred_seq) {
            m = (size_t)pred_seq;
            if (trained > 0) (*cut)++;
        }
        if (st == ORC_OK) {
            for (int i = 0; i < pred_seq; i++) s->pin[s->n * pred_seq + i] = i < (int)m ? ids[i] : pad;
            s->plen[s->n] = (int32_t)m;
            if (trained > 0) s->n++; /* a response cut off entirely by seq teaches nothing */
        } else if (err) {
            orc_error copy = *err;
            orc_error_clear(err);
            orc_error_set(err, copy.code, "%s:%lld: %s", path, (long long)lineno, copy.msg);
        }
        free(ids);
        free(prompt);
        json_decref(j);
    }
    free(line);
    fclose(fp);
    if (st == ORC_OK && s->n == 0)
        st = orc_error_set(err, ORC_EFORMAT, "%s: no task fits in seq = %d tokens", path, seq);
    return st;
}

typedef struct trainer {
    const orc_ifp_train_opts *o;
    orc_llm *lm;
    orc_tokenizer *tok;
    orc_ifp_predictor *pred;
    orc_shard *shard;
    sft_rows sft;
    orc_optim *opt;
    orc_lr_schedule sched;
    orc_tensor **groups[4];
    int n_group[4];
    orc_tensor **all;
    int n_all;
    int32_t *in, *tg, *pin, *plen, *win_in, *win_tg;
    orc_arena *act;
    orc_ctx ctx;
    FILE *log;
} trainer;

static void trainer_free(trainer *t) {
    orc_llm_free(t->lm);
    orc_tokenizer_free(t->tok);
    orc_ifp_predictor_free(t->pred);
    orc_shard_close(t->shard);
    sft_rows_free(&t->sft);
    orc_optim_free(t->opt);
    for (int i = 0; i < 4; i++) free(t->groups[i]);
    free(t->all);
    free(t->in);
    free(t->tg);
    free(t->pin);
    free(t->plen);
    free(t->win_in);
    free(t->win_tg);
    orc_arena_destroy(t->act);
    if (t->log) fclose(t->log);
}

static void add_params(trainer *t, orc_tensor *const *ps, int n, int decay_group, int other_group) {
    for (int i = 0; i < n; i++) {
        const int g = ps[i]->ndim >= 2 ? decay_group : other_group;
        t->groups[g][t->n_group[g]++] = ps[i];
        t->all[t->n_all++] = ps[i];
    }
}

orc_status orc_ifp_check_schedule(int64_t total, int64_t dense_steps, int64_t anneal_steps, int64_t predictor_steps,
                                  orc_error *err) {
    if (dense_steps < 0 || anneal_steps < 0 || predictor_steps < 0)
        return orc_error_set(err, ORC_EINVAL, "ifprune: --dense-steps %lld, --anneal-steps %lld and --predictor-steps "
                             "%lld must be >= 0", (long long)dense_steps, (long long)anneal_steps,
                             (long long)predictor_steps);
    if (dense_steps > 0 && dense_steps >= total)
        return orc_error_set(err, ORC_EINVAL, "ifprune: --dense-steps %lld must be below the %lld steps in all (the "
                             "masks switch on after it)", (long long)dense_steps, (long long)total);
    if (anneal_steps > 0 && dense_steps + anneal_steps > total)
        return orc_error_set(err, ORC_EINVAL, "ifprune: --dense-steps %lld + --anneal-steps %lld exceed the %lld steps "
                             "in all", (long long)dense_steps, (long long)anneal_steps, (long long)total);
    if (predictor_steps > 0 && predictor_steps <= dense_steps)
        return orc_error_set(err, ORC_EINVAL, "ifprune: --predictor-steps %lld must come after --dense-steps %lld (the "
                             "predictor starts training there)", (long long)predictor_steps, (long long)dense_steps);
    return ORC_OK;
}

orc_status orc_ifp_check_balance(double weight, orc_error *err) {
    if (!(weight >= 0 && weight <= 1e6))
        return orc_error_set(err, ORC_EINVAL, "ifprune: the balance weight %g must be in [0, 1e6]", weight);
    return ORC_OK;
}

/* The predictor's two parameter groups (2: decayed, 3: not) at lr * mult
 * from the next step on; 0 holds them exactly. */
static orc_status set_predictor_lr_mult(trainer *t, float mult, orc_error *err) {
    orc_status st = orc_optim_set_lr_mult(t->opt, 2, mult, err);
    return st == ORC_OK ? orc_optim_set_lr_mult(t->opt, 3, mult, err) : st;
}

static orc_status setup(trainer *t, orc_error *err) {
    const orc_ifp_train_opts *o = t->o;
    char path[4096];
    if (!o->model_dir || !o->out_dir)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: the model directory and the output directory are needed");
    if (!o->corpus && !o->tasks)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: give a corpus shard (stage 1), a task file (stage 2) "
                             "or both");
    if (o->stage1_steps < 0 || o->stage2_steps < 0 || o->stage1_steps + o->stage2_steps < 1)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: the stage step counts must be >= 0 with at least one "
                             "step in all");
    orc_status bst = orc_ifp_check_balance(o->balance, err);
    if (bst != ORC_OK) return bst;
    if (!o->dense) {
        orc_status st = orc_ifp_check_schedule(o->stage1_steps + o->stage2_steps, o->dense_steps, o->anneal_steps,
                                               o->predictor_steps, err);
        if (st != ORC_OK) return st;
    }
    if (o->batch < 1 || o->seq < 2 || o->pred_seq < 1)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: batch %d, seq %d and pred_seq %d must be positive "
                             "(seq >= 2)", o->batch, o->seq, o->pred_seq);
    snprintf(path, sizeof path, "%s/model.safetensors", o->out_dir);
    struct stat sb;
    if (stat(path, &sb) == 0)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: %s already holds a model; choose a new --out "
                             "directory", o->out_dir);
    if (!(t->lm = orc_llm_load(o->model_dir, true, err))) return err ? err->code : ORC_EIO;
    if (!(t->tok = orc_tokenizer_load(o->model_dir, err))) return err ? err->code : ORC_EIO;
    const orc_llm_config *lc = &t->lm->cfg;
    if ((int64_t)orc_tokenizer_vocab_size(t->tok) > lc->vocab_size)
        return orc_error_set(err, ORC_EINVAL, "%s: the tokenizer has %zu ids but vocab_size is %lld", o->model_dir,
                             orc_tokenizer_vocab_size(t->tok), (long long)lc->vocab_size);
    if (o->seq > lc->max_position_embeddings)
        return orc_error_set(err, ORC_EINVAL, "ifprune train: seq = %d exceeds the LM's max_position_embeddings = "
                             "%lld", o->seq, (long long)lc->max_position_embeddings);
    if (!o->dense) {
        orc_llm_config pc;
        if (o->predictor_config) {
            if (orc_llm_config_load(o->predictor_config, &pc, err) != ORC_OK) return err ? err->code : ORC_EIO;
        } else {
            orc_ifp_predictor_config_default(&pc, lc);
        }
        if (o->pred_seq > pc.max_position_embeddings)
            return orc_error_set(err, ORC_EINVAL, "ifprune train: pred_seq = %d exceeds the predictor's "
                                 "max_position_embeddings = %lld", o->pred_seq, (long long)pc.max_position_embeddings);
        orc_ifp_config c;
        orc_ifp_config_default(&c, lc);
        if (o->k) c.k = o->k;
        if (o->temperature > 0) c.temperature = o->temperature;
        if (o->lr_mult > 0) c.lr_mult = o->lr_mult;
        if (!(t->pred = orc_ifp_predictor_create(&pc, &c, lc, true, err))) return err ? err->code : ORC_EINVAL;
        orc_ifp_predictor_init(t->pred, o->seed);
    }
    const int32_t pad_tok = orc_tokenizer_special_id(t->tok, ORC_TOK_PAD);
    const int32_t pad = pad_tok >= 0 ? pad_tok : 0;
    if (o->corpus && o->stage1_steps > 0) {
        if (!(t->shard = orc_shard_open(o->corpus, lc->vocab_size, err))) return err ? err->code : ORC_EIO;
        const uint64_t need = (uint64_t)o->pred_seq + (uint64_t)o->seq + 1;
        if (orc_shard_get_info(t->shard)->tokens < need)
            return orc_error_set(err, ORC_EINVAL, "%s: %llu tokens, fewer than one window of pred_seq + seq + 1 = %llu",
                                 o->corpus, (unsigned long long)orc_shard_get_info(t->shard)->tokens,
                                 (unsigned long long)need);
    } else if (o->stage1_steps > 0) {
        return orc_error_set(err, ORC_EINVAL, "ifprune train: stage 1 has %lld steps but no corpus shard",
                             (long long)o->stage1_steps);
    }
    if (o->tasks && o->stage2_steps > 0) {
        int64_t cut = 0;
        orc_status st = load_tasks(o->tasks, t->tok, o->seq, o->pred_seq, o->pred_reads_input, pad, &t->sft, &cut, err);
        if (st != ORC_OK) return st;
        if (cut > 0 && o->progress && !o->dense)
            fprintf(o->progress, "ifprune train: %lld of %lld predictor inputs are longer than pred_seq = %d tokens "
                    "and were cut to their start\n", (long long)cut, (long long)t->sft.n, o->pred_seq);
    } else if (o->stage2_steps > 0) {
        return orc_error_set(err, ORC_EINVAL, "ifprune train: stage 2 has %lld steps but no task file",
                             (long long)o->stage2_steps);
    }
    const size_t B = (size_t)o->batch, S = (size_t)o->seq, P = (size_t)o->pred_seq, W = P + S;
    t->in = malloc(sizeof(int32_t) * B * S);
    t->tg = malloc(sizeof(int32_t) * B * S);
    t->pin = malloc(sizeof(int32_t) * B * P);
    t->plen = malloc(sizeof(int32_t) * B);
    t->win_in = malloc(sizeof(int32_t) * B * W);
    t->win_tg = malloc(sizeof(int32_t) * B * W);
    int n_params = t->lm->n_params + (t->pred ? t->pred->lm->n_params + 4 : 0);
    for (int i = 0; i < 4; i++) t->groups[i] = calloc((size_t)n_params, sizeof(orc_tensor *));
    t->all = calloc((size_t)n_params, sizeof(orc_tensor *));
    t->act = orc_arena_create((size_t)64 << 20);
    if (!t->in || !t->tg || !t->pin || !t->plen || !t->win_in || !t->win_tg || !t->groups[0] || !t->groups[1] ||
        !t->groups[2] || !t->groups[3] || !t->all || !t->act)
        return orc_error_set(err, ORC_ENOMEM, "ifprune train: out of memory");
    orc_ctx_init(&t->ctx, t->act, o->seed);
    add_params(t, t->lm->params, t->lm->n_params, 0, 1);
    if (t->pred) {
        add_params(t, t->pred->lm->params, t->pred->lm->n_params, 2, 3);
        add_params(t, t->pred->params, 4, 2, 3);
    }
    const float mult = t->pred ? (float)t->pred->cfg.lr_mult : 1.0f;
    orc_param_group g[4] = {orc_group(t->groups[0], t->n_group[0], (float)o->weight_decay),
                            orc_group(t->groups[1], t->n_group[1], 0.0f),
                            {t->groups[2], t->n_group[2], mult, (float)o->weight_decay},
                            {t->groups[3], t->n_group[3], mult, 0.0f}};
    if (!(t->opt = orc_adamw_new(g, t->pred ? 4 : 2, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, err)))
        return err ? err->code : ORC_EINVAL;
    if (t->pred && o->dense_steps > 0) { /* idle until the masks switch on: no update, no decay */
        orc_status st = set_predictor_lr_mult(t, 0.0f, err);
        if (st != ORC_OK) return st;
    }
    const int64_t total = o->stage1_steps + o->stage2_steps;
    t->sched = (orc_lr_schedule){ORC_LR_WARMUP_COSINE, (float)o->lr, (float)o->min_lr,
                                 o->warmup < total ? o->warmup : total, total};
    orc_status st = orc_lr_schedule_check(&t->sched, err);
    if (st != ORC_OK) return st;
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create the directory: %s", o->out_dir, strerror(errno));
    if (o->log_path && !(t->log = fopen(o->log_path, "w")))
        return orc_error_set(err, ORC_EIO, "%s: cannot open the log: %s", o->log_path, strerror(errno));
    return ORC_OK;
}

/* Fill t->in/tg (LM) and t->pin/plen (predictor) for step; returns the
 * number of counted targets. */
static orc_status make_batch(trainer *t, int64_t step, int stage, int64_t *counted, orc_error *err) {
    const orc_ifp_train_opts *o = t->o;
    const int B = o->batch, S = o->seq, P = o->pred_seq, W = P + S;
    if (stage == 1) {
        orc_status st = orc_shard_sample_batch(t->shard, o->seed, (uint64_t)step, B, W, t->win_in, t->win_tg, err);
        if (st != ORC_OK) return st;
        for (int b = 0; b < B; b++) {
            memcpy(t->pin + b * P, t->win_in + b * W, sizeof(int32_t) * (size_t)P);
            memcpy(t->in + b * S, t->win_in + b * W + P, sizeof(int32_t) * (size_t)S);
            memcpy(t->tg + b * S, t->win_tg + b * W + P, sizeof(int32_t) * (size_t)S);
            t->plen[b] = P;
        }
    } else {
        for (int b = 0; b < B; b++) {
            const uint64_t r = orc_rand_u32(o->seed, 0x5f7ull + (uint64_t)step, (uint64_t)b) % (uint64_t)t->sft.n;
            memcpy(t->in + b * S, t->sft.in + r * (uint64_t)S, sizeof(int32_t) * (size_t)S);
            memcpy(t->tg + b * S, t->sft.tg + r * (uint64_t)S, sizeof(int32_t) * (size_t)S);
            memcpy(t->pin + b * P, t->sft.pin + r * (uint64_t)P, sizeof(int32_t) * (size_t)P);
            t->plen[b] = t->sft.plen[r];
        }
    }
    int64_t c = 0;
    for (int i = 0; i < B * S; i++) c += t->tg[i] != ORC_IGNORE_INDEX;
    *counted = c;
    return ORC_OK;
}

/* The active width at a masked step: k, or during annealing a linear fall
 * from the FFN width F that reaches k at the last annealing step. */
static int64_t active_k(const orc_ifp_train_opts *o, int64_t F, int64_t k, int64_t step) {
    const int64_t i = step - o->dense_steps; /* 0 at the first masked step */
    if (o->anneal_steps <= 0 || i >= o->anneal_steps) return k;
    return F - ((F - k) * (i + 1) + o->anneal_steps / 2) / o->anneal_steps;
}

static orc_status ctx_fail(trainer *t, int64_t step, const char *what, orc_error *err) {
    orc_status st = orc_error_set(err, t->ctx.err.code != ORC_OK ? t->ctx.err.code : ORC_EINVAL,
                                  "ifprune train step %lld: %s: %s", (long long)step + 1, what, orc_ctx_message(&t->ctx));
    orc_ctx_reset(&t->ctx);
    return st;
}

static orc_status save(trainer *t, int64_t step, orc_error *err) {
    if (t->pred) t->pred->cfg.step = step;
    return orc_ifp_save(t->o->out_dir, t->lm, t->tok, t->pred, err);
}

orc_status orc_ifp_train(const orc_ifp_train_opts *o, orc_ifp_train_result *res, orc_error *err) {
    trainer t;
    memset(&t, 0, sizeof t);
    t.o = o;
    orc_status st = setup(&t, err);
    const int64_t total = o->stage1_steps + o->stage2_steps;
    const int64_t B = o->batch, S = o->seq, P = o->pred_seq;
    double start = now_s(), tokens = 0, loss = NAN;
    int64_t step = 0;
    for (; st == ORC_OK && step < total; step++) {
        const int stage = step < o->stage1_steps ? 1 : 2;
        double t0 = now_s();
        int64_t counted = 0;
        st = make_batch(&t, step, stage, &counted, err);
        if (st != ORC_OK) break;
        orc_optim_zero_grad(t.opt);
        orc_ctx *ctx = &t.ctx;
        orc_tensor *ids = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, S), t.in, &ctx->err);
        orc_tensor *tg = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, S), t.tg, &ctx->err);
        orc_tensor *mask = NULL, *balance = NULL;
        const bool masked = t.pred && step >= o->dense_steps;
        const int64_t F = t.lm->cfg.intermediate_size;
        const int64_t k_now = masked ? active_k(o, F, t.pred->cfg.k, step) : F;
        if (masked) {
            orc_tensor *pid = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, P), t.pin, &ctx->err);
            orc_tensor *z = pid ? orc_ifp_scores(ctx, t.pred, pid, t.plen) : NULL;
            mask = z ? orc_soft_topk(ctx, z, k_now, (float)t.pred->cfg.temperature) : NULL;
            if (mask && o->balance > 0) balance = orc_ifp_balance_loss(ctx, mask, k_now);
        }
        orc_tensor *logits = ids && (mask || !masked) ? orc_ifp_lm_forward(ctx, t.lm, ids, mask, NULL) : NULL;
        orc_tensor *l = logits ? orc_cross_entropy(ctx, logits, tg, NULL, ORC_IGNORE_INDEX) : NULL;
        orc_tensor *objective = l && balance ? orc_add(ctx, l, orc_scale(ctx, balance, (float)o->balance)) : l;
        if (!objective || !orc_ctx_ok(ctx)) {
            st = ctx_fail(&t, step, "forward", err);
            break;
        }
        loss = orc_f32(l)[0];
        const double balance_now = balance ? orc_f32(balance)[0] : NAN;
        if (orc_backward(ctx, objective) != ORC_OK) {
            st = ctx_fail(&t, step, "backward", err);
            break;
        }
        orc_ctx_reset(ctx);
        double gn = o->grad_clip > 0 ? orc_optim_clip_grad_norm(t.opt, o->grad_clip) : orc_grad_norm(t.all, t.n_all);
        if (!isfinite(loss) || !isfinite(gn)) {
            st = orc_error_set(err, ORC_ERANGE, "ifprune train step %lld: the loss (%g) or gradient norm (%g) is not "
                               "finite; try a lower --lr than %g", (long long)step + 1, loss, gn, o->lr);
            break;
        }
        float lr = orc_lr_at(&t.sched, step);
        if (t.pred && o->dense_steps > 0 && step == o->dense_steps) {
            if ((st = set_predictor_lr_mult(&t, (float)t.pred->cfg.lr_mult, err)) != ORC_OK) break;
            if (o->progress) fprintf(o->progress, "ifprune: masks on from step %lld (dense before)\n", (long long)step + 1);
        }
        if (t.pred && o->predictor_steps > 0 && step == o->predictor_steps) {
            if ((st = set_predictor_lr_mult(&t, 0.0f, err)) != ORC_OK) break;
            if (o->progress) fprintf(o->progress, "ifprune: predictor frozen from step %lld on\n", (long long)step + 1);
        }
        st = orc_optim_step(t.opt, lr, err);
        if (st != ORC_OK) break;
        tokens += (double)counted;
        double dt = now_s() - t0, tps = dt > 0 ? (double)counted / dt : 0;
        if (t.log) {
            fprintf(t.log, "{\"step\": %lld, \"stage\": %d, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, "
                    "\"tokens\": %lld, \"tokens_per_s\": %.1f, \"active\": %lld", (long long)step + 1, stage, loss,
                    (double)lr, gn, (long long)counted, tps, (long long)k_now);
            if (balance) fprintf(t.log, ", \"balance\": %.6g", balance_now);
            fputs("}\n", t.log);
            fflush(t.log);
        }
        if (o->progress && o->log_every > 0 && ((step + 1) % o->log_every == 0 || step + 1 == total))
            fprintf(o->progress, "ifprune%s step %5lld/%lld | stage %d | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s\n",
                    masked ? "" : " (dense)", (long long)step + 1, (long long)total, stage, loss, (double)lr, gn, tps);
        if (o->save_every > 0 && (step + 1) % o->save_every == 0 && step + 1 < total) st = save(&t, step + 1, err);
    }
    if (st == ORC_OK) st = save(&t, step, err);
    if (res) *res = (orc_ifp_train_result){.steps = step, .loss = loss, .tokens = tokens, .seconds = now_s() - start};
    trainer_free(&t);
    return st;
}
