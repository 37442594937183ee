/* The training job (see orchard/train.h): setting up the model, tokenizer,
 * data and AdamW from a recipe, the step loop with gradient accumulation,
 * validation in nats and bits per byte, the progress line and JSONL log,
 * checkpoints written file by file with trainer_state.json last, resuming
 * bit for bit, and supervised fine-tuning rows from chat JSONL. Every batch
 * is a pure function of (seed, micro-batch index), so resuming needs no data
 * cursor beyond the step; the activation arena is sized once and reset each
 * micro-batch, so steady-state steps allocate nothing. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "orchard/data.h"
#include "orchard/dist.h"
#include "orchard/fileio.h"
#include "orchard/gguf.h"
#include "orchard/llm_gguf.h"
#include "orchard/quant.h"
#include "orchard/moe.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "train_internal.h"

/* Keys that keep the validation windows and the SFT row draws apart from the
 * training windows drawn with the recipe's seed. */
#define EVAL_KEY 0x6576616c5f736574ull
#define SFT_KEY 0x7366745f726f7773ull
/* LoRA: A's initialisation and the adapter dropout masks (re-seeded per
 * micro-batch, so a resumed run draws the masks an uninterrupted one would). */
#define LORA_INIT_KEY 0x6c6f72615f696e69ull
#define LORA_DROP_KEY 0x6c6f72615f64726full
#define PATH_CAP (ORC_TRAIN_PATH_MAX + 64)

typedef struct sft_set {
    int32_t *in, *tg;  /* n rows of seq each */
    int64_t n, cap;
    int64_t skipped;   /* conversations without a trained token in the window */
} sft_set;

typedef struct trainer {
    orc_train_recipe r;
    const orc_train_opts *o;
    orc_llm *m;
    orc_tokenizer *tok;
    orc_optim *opt;
    orc_tensor **decay, **no_decay;
    int n_decay, n_no_decay;
    orc_lr_schedule sched;
    orc_shard *train_shard, *val_shard;
    sft_set sft_train, sft_val;
    int32_t *in, *tg;       /* one micro-batch, batch * seq each */
    uint32_t *id_bytes;     /* text bytes of each id (0 for specials), for bits per byte */
    orc_arena *act;
    size_t act_chunk;
    orc_ctx ctx;
    FILE *log;
    int64_t step, saved_step;
    double best_val, last_val, last_bpb;
    bool tokenizer_saved;
    /* LoRA: the adapter trained over the frozen base (NULL: full training),
     * the stack that makes it active on m, and what the optimizer updates. */
    orc_lora *lora;
    orc_lora_stack lora_stack;
    orc_tensor **train_params;
    int n_train_params;
    /* MoE: the step's weighted router losses (mean over micro-batches), its
     * dropped fraction and router entropy over all MoE layers, and the JSON
     * log fragment with tokens per expert per layer (empty for dense). */
    double moe_aux, moe_dropped, moe_entropy;
    char *moe_log;
    size_t moe_log_cap;
    /* Multi-process (orchard/dist.h): the world (own_world when the caller
     * gave a mesh but no communicator), the mesh, data parallelism, this data
     * rank's rows of each global micro-batch (rows 0: all of it), the
     * interrupt every rank agreed on, and ZeRO-1 state gathered for a save. */
    orc_comm *world, *own_world;
    orc_mesh *mesh;
    orc_ddp *ddp;
    int row0, rows;
    bool dist_interrupted;
    float *zero_full[2];
    /* Tensor parallel (--mesh model=M): this rank's slices of t->m (which
     * keeps the full layout for checkpoints); expert parallel (expert=E):
     * t->m's MoE layers train views of this rank's experts, whose gradients
     * sync over the data ranks (ddp_ex) while the rest syncs over data x
     * expert (ddp); during a save, the optimizer moments gathered into the
     * full layout. overlap: the data-parallel all-reduce starts during the
     * last backward of a step (ORCHARD_DIST_OVERLAP=0 turns it off). */
    orc_tp_llm *tp;
    orc_ep_llm *ep;
    orc_ddp *ddp_ex;
    float **full_state;
    bool overlap;
} trainer;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void note(const trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const trainer *t, const char *fmt, ...) {
    if (!t->o->progress) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->o->progress, fmt, ap);
    va_end(ap);
    fflush(t->o->progress);
}

/* dir/file into out; a path too long for PATH_CAP comes out empty, so the
 * file operation on it fails with a message rather than touching a
 * truncated name. Recipe paths are checked against ORC_TRAIN_PATH_MAX. */
static void join(char *out, const char *dir, const char *file) {
    int n = snprintf(out, PATH_CAP, "%s/%s", dir, file);
    if (n < 0 || n >= PATH_CAP) out[0] = '\0';
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ---- supervised fine-tuning rows ------------------------------------------------ */

orc_status orc_sft_example(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs, int seq,
                           int32_t pad_id, int32_t *inputs, int32_t *targets, int *n_trained, orc_error *err) {
    if (seq <= 0 || !inputs || !targets) return orc_error_set(err, ORC_EINVAL, "sft example: bad arguments");
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t n = 0;
    orc_status st = orc_chat_encode(tok, msgs, n_msgs, false, &ids, &mask, &n, err);
    if (st != ORC_OK) return st;
    size_t len = n < (size_t)seq + 1 ? n : (size_t)seq + 1; /* tokens kept: inputs are len - 1 of them */
    int counted = 0;
    for (size_t t = 0; t < (size_t)seq; t++) {
        if (t + 1 < len) {
            inputs[t] = ids[t];
            targets[t] = mask[t + 1] ? ids[t + 1] : ORC_IGNORE_INDEX;
            counted += mask[t + 1] != 0;
        } else {
            inputs[t] = pad_id;
            targets[t] = ORC_IGNORE_INDEX;
        }
    }
    free(ids);
    free(mask);
    if (n_trained) *n_trained = counted;
    return ORC_OK;
}

static orc_status sft_grow(sft_set *s, int seq, orc_error *err) {
    if (s->n < s->cap) return ORC_OK;
    int64_t cap = s->cap ? s->cap * 2 : 256;
    int32_t *in = realloc(s->in, (size_t)cap * (size_t)seq * sizeof *in);
    if (in) s->in = in;
    int32_t *tg = realloc(s->tg, (size_t)cap * (size_t)seq * sizeof *tg);
    if (tg) s->tg = tg;
    if (!in || !tg) return orc_error_set(err, ORC_ENOMEM, "sft: out of memory for %lld rows", (long long)cap);
    s->cap = cap;
    return ORC_OK;
}

/* One JSONL line {"messages": [{"role", "content"}, ...]} into the next row. */
static orc_status sft_line(trainer *t, sft_set *s, const char *path, long line_no, const char *line, int32_t pad,
                           orc_error *err) {
    json_error_t jerr;
    json_t *root = json_loads(line, 0, &jerr);
    if (!root) return orc_error_set(err, ORC_EFORMAT, "%s:%ld: %s", path, line_no, jerr.text);
    json_t *msgs = json_object_get(root, "messages");
    orc_status st = ORC_OK;
    size_t n = json_is_array(msgs) ? json_array_size(msgs) : 0;
    orc_chat_msg *cm = calloc(n ? n : 1, sizeof *cm);
    if (!json_is_array(msgs))
        st = orc_error_set(err, ORC_EFORMAT, "%s:%ld: expected {\"messages\": [{\"role\": ..., \"content\": ...}]}",
                           path, line_no);
    else if (!cm)
        st = orc_error_set(err, ORC_ENOMEM, "%s:%ld: out of memory", path, line_no);
    for (size_t i = 0; i < n && st == ORC_OK; i++) {
        json_t *mo = json_array_get(msgs, i);
        cm[i].role = json_string_value(json_object_get(mo, "role"));
        cm[i].content = json_string_value(json_object_get(mo, "content"));
        if (!cm[i].role || !cm[i].content)
            st = orc_error_set(err, ORC_EFORMAT, "%s:%ld: message %zu needs string \"role\" and \"content\"", path,
                               line_no, i);
    }
    if (st == ORC_OK) st = sft_grow(s, t->r.seq, err);
    int counted = 0;
    if (st == ORC_OK) {
        orc_error local = {0};
        size_t off = (size_t)s->n * (size_t)t->r.seq;
        if (orc_sft_example(t->tok, cm, n, t->r.seq, pad, s->in + off, s->tg + off, &counted, &local) != ORC_OK)
            st = orc_error_set(err, local.code, "%s:%ld: %s", path, line_no, local.msg);
    }
    if (st == ORC_OK) {
        if (counted > 0) s->n++;
        else s->skipped++;
    }
    free(cm);
    json_decref(root);
    return st;
}

static orc_status load_sft(trainer *t, const char *path, sft_set *s, orc_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return orc_error_set(err, ORC_EIO, "%s: cannot open the chat JSONL: %s", path, strerror(errno));
    int32_t pad = orc_tokenizer_special_id(t->tok, ORC_TOK_PAD);
    if (pad < 0) pad = 0; /* padded positions are never targets, so any id works */
    char *line = NULL;
    size_t cap = 0;
    long line_no = 0;
    orc_status st = ORC_OK;
    while (st == ORC_OK && getline(&line, &cap, f) >= 0) {
        line_no++;
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (*p) st = sft_line(t, s, path, line_no, line, pad, err);
    }
    free(line);
    fclose(f);
    if (st == ORC_OK && s->n == 0)
        st = orc_error_set(err, ORC_EFORMAT, "%s: no conversation has an assistant token within seq = %d", path,
                           t->r.seq);
    if (st == ORC_OK && s->skipped)
        note(t, "%s: skipped %lld conversations with no assistant token within seq = %d\n", path,
             (long long)s->skipped, t->r.seq);
    return st;
}

/* ---- batches ------------------------------------------------------------------ */

static void sft_rows(const trainer *t, const sft_set *s, uint64_t key, uint64_t index, bool in_order) {
    const int B = t->r.batch, T = t->r.seq;
    for (int b = 0; b < B; b++) {
        uint64_t row;
        if (in_order) {
            row = (index * (uint64_t)B + (uint64_t)b) % (uint64_t)s->n;
        } else {
            uint32_t r[4];
            orc_philox4x32(key, index, (uint64_t)b, r);
            row = (((uint64_t)r[0] << 32) | r[1]) % (uint64_t)s->n;
        }
        memcpy(t->in + (size_t)b * T, s->in + row * (uint64_t)T, sizeof(int32_t) * (size_t)T);
        memcpy(t->tg + (size_t)b * T, s->tg + row * (uint64_t)T, sizeof(int32_t) * (size_t)T);
    }
}

/* Training micro-batch `index` (step * accum + k): a pure function of the
 * seed and the index, so a resumed run draws what the original would have. */
static orc_status train_batch(trainer *t, uint64_t index, orc_error *err) {
    if (t->r.sft) {
        sft_rows(t, &t->sft_train, t->r.seed ^ SFT_KEY, index, false);
        return ORC_OK;
    }
    return orc_shard_sample_batch(t->train_shard, t->r.seed, index, t->r.batch, t->r.seq, t->in, t->tg, err);
}

/* Validation batch e: the same windows at every evaluation. */
static orc_status val_batch(trainer *t, uint64_t e, orc_error *err) {
    if (t->r.sft) {
        sft_rows(t, &t->sft_val, 0, e, true);
        return ORC_OK;
    }
    return orc_shard_sample_batch(t->val_shard, t->r.seed ^ EVAL_KEY, e, t->r.batch, t->r.seq, t->in, t->tg, err);
}

/* ---- setup --------------------------------------------------------------------- */

static orc_status read_state(const char *out, json_t **state, int64_t *step, orc_error *err) {
    char path[PATH_CAP];
    join(path, out, "trainer_state.json");
    json_error_t jerr;
    *state = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!*state) {
        if (!file_exists(path))
            return orc_error_set(err, ORC_EIO, "%s: no checkpoint to resume (%s is missing)", out, path);
        return orc_error_set(err, ORC_EFORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    }
    json_t *s = json_object_get(*state, "step");
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        return orc_error_set(err, ORC_EFORMAT, "%s: \"step\" must be a non-negative integer", path);
    *step = (int64_t)json_integer_value(s);
    return ORC_OK;
}

/* Report recipe fields a resumed run changes: the run continues, but its
 * losses can no longer match an uninterrupted one. */
static void note_changes(const trainer *t, const orc_train_recipe *was) {
    const orc_train_recipe *r = &t->r;
    const struct { const char *key; double a, b; } f[] = {
        {"batch", was->batch, r->batch},       {"seq", was->seq, r->seq},
        {"accum", was->accum, r->accum},       {"steps", (double)was->steps, (double)r->steps},
        {"lr", was->lr, r->lr},                {"min_lr", was->min_lr, r->min_lr},
        {"warmup", (double)was->warmup, (double)r->warmup},
        {"weight_decay", was->weight_decay, r->weight_decay},
        {"beta1", was->beta1, r->beta1},       {"beta2", was->beta2, r->beta2},
        {"eps", was->eps, r->eps},             {"grad_clip", was->grad_clip, r->grad_clip},
        {"seed", (double)was->seed, (double)r->seed},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].a != f[i].b)
            note(t, "note: %s changes from %g (checkpoint) to %g; the run will differ from an uninterrupted one\n",
                 f[i].key, f[i].a, f[i].b);
    if (strcmp(was->train, r->train) != 0) note(t, "note: the training data changed (%s)\n", r->train);
}

/* --lora SPEC, --recover-from PATH, --lora-init DIR over the recipe. */
static orc_status apply_lora_opts(trainer *t, orc_error *err) {
    const orc_train_opts *o = t->o;
    orc_train_recipe *r = &t->r;
    if ((o->lora || o->recover_from || o->lora_init) && !r->lora) {
        orc_lora_config_default(&r->lora_cfg);
        r->lora = true;
    }
    if (o->lora) {
        orc_error local = {0};
        if (orc_lora_config_parse(o->lora, &r->lora_cfg, &local) != ORC_OK)
            return orc_error_set(err, local.code, "train: %s", local.msg);
    }
    const struct { const char *v; char *dst; const char *flag; } p[] = {
        {o->recover_from, r->recover_from, "--recover-from"}, {o->lora_init, r->lora_init, "--lora-init"}};
    for (size_t i = 0; i < 2; i++) {
        if (!p[i].v) continue;
        char abs[PATH_MAX];
        const char *v = realpath(p[i].v, abs) ? abs : p[i].v; /* the saved recipe must work from another cwd */
        int n = snprintf(p[i].dst, ORC_TRAIN_PATH_MAX, "%s", v);
        if (n < 0 || n >= ORC_TRAIN_PATH_MAX)
            return orc_error_set(err, ORC_EINVAL, "train: %s: the path is too long", p[i].flag);
    }
    return ORC_OK;
}

static orc_status setup_recipe(trainer *t, json_t *state, orc_error *err) {
    const orc_train_opts *o = t->o;
    orc_train_recipe saved;
    bool have_saved = false;
    if (state) {
        char label[PATH_CAP];
        join(label, o->out_dir, "trainer_state.json");
        orc_status st = orc_train_recipe_from_json(json_object_get(state, "recipe"), label, NULL, &saved, err);
        if (st != ORC_OK) return st;
        have_saved = true;
    }
    if (o->recipe) {
        orc_status st = orc_train_recipe_load(o->recipe, &t->r, err);
        if (st != ORC_OK) return st;
    } else if (have_saved) {
        t->r = saved;
    } else {
        return orc_error_set(err, ORC_EINVAL, "train: no recipe (give --config FILE.json)");
    }
    if (o->steps > 0) t->r.steps = o->steps;
    if (o->batch > 0) t->r.batch = o->batch;
    if (o->seq > 0) t->r.seq = o->seq;
    if (o->accum > 0) t->r.accum = o->accum;
    if (o->lr > 0) t->r.lr = o->lr;
    orc_status lst = apply_lora_opts(t, err);
    if (lst != ORC_OK) return lst;
    if (t->r.min_lr > t->r.lr) t->r.min_lr = t->r.lr; /* --lr below the recipe's min_lr: constant after warmup */
    orc_status st = orc_train_recipe_check(&t->r, err);
    if (st == ORC_OK && have_saved && o->recipe) note_changes(t, &saved);
    return st;
}

/* The tokenizer of a recover_from base: DIR/tokenizer.json, else the GGUF's keys. */
static orc_status lora_base_tokenizer(trainer *t, orc_error *err) {
    const char *src = t->r.recover_from;
    char path[PATH_CAP];
    struct stat sb;
    bool dir = stat(src, &sb) == 0 && S_ISDIR(sb.st_mode);
    orc_error local = {0};
    if (dir) {
        join(path, src, "tokenizer.json");
        if (file_exists(path)) {
            t->tok = orc_tokenizer_load(path, &local);
            if (!t->tok) return orc_error_set(err, local.code, "%s: \"recover_from\": %s", t->r.path, local.msg);
            return ORC_OK;
        }
        join(path, src, "model.gguf");
    } else {
        snprintf(path, sizeof path, "%s", src);
    }
    orc_gguf_file *f = orc_gguf_open(path, &local);
    char *json = f ? orc_gguf_tokenizer_json(f, path, &local) : NULL;
    if (json) t->tok = orc_tokenizer_from_json(json, strlen(json), path, &local);
    free(json);
    orc_gguf_close(f);
    if (!t->tok)
        return orc_error_set(err, local.code, "%s: \"recover_from\": no usable tokenizer (give \"tokenizer\"): %s",
                             t->r.path, local.msg);
    return ORC_OK;
}

static orc_status setup_tokenizer(trainer *t, orc_error *err) {
    char path[PATH_CAP];
    if (t->o->resume) join(path, t->o->out_dir, "tokenizer.json");
    else snprintf(path, sizeof path, "%s", t->r.tokenizer[0] ? t->r.tokenizer : t->r.init_from);
    orc_error local = {0};
    if (!t->o->resume && !t->r.tokenizer[0] && !t->r.init_from[0] && t->r.recover_from[0])
        return lora_base_tokenizer(t, err);
    t->tok = orc_tokenizer_load(path, &local);
    if (!t->tok) return orc_error_set(err, local.code, "%s: \"tokenizer\": %s", t->r.path, local.msg);
    return ORC_OK;
}

static orc_status check_same_model(const trainer *t, const orc_llm_config *want, orc_error *err) {
    const orc_llm_config *c = &t->m->cfg;
    const struct { const char *key; int64_t a, b; } f[] = {
        {"hidden_size", c->hidden_size, want->hidden_size},
        {"num_hidden_layers", c->num_hidden_layers, want->num_hidden_layers},
        {"num_attention_heads", c->num_attention_heads, want->num_attention_heads},
        {"num_key_value_heads", c->num_key_value_heads, want->num_key_value_heads},
        {"head_dim", c->head_dim, want->head_dim},
        {"intermediate_size", c->intermediate_size, want->intermediate_size},
        {"vocab_size", c->vocab_size, want->vocab_size},
        {"tie_word_embeddings", c->tie_word_embeddings, want->tie_word_embeddings},
        {"qk_norm", c->qk_norm, want->qk_norm},
        {"num_experts", c->num_experts, want->num_experts},
        {"moe_every", c->num_experts > 0 ? c->moe_every : 0, want->num_experts > 0 ? want->moe_every : 0},
        {"moe_top_k", c->num_experts > 0 ? c->moe_top_k : 0, want->num_experts > 0 ? want->moe_top_k : 0},
        {"moe_group_size", c->moe_group_size, want->moe_group_size},
        {"moe_intermediate_size", c->moe_intermediate_size, want->moe_intermediate_size},
        {"router (0 token_choice, 1 expert_choice)", c->num_experts > 0 ? c->moe_router : 0,
         want->num_experts > 0 ? want->moe_router : 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].a != f[i].b)
            return orc_error_set(err, ORC_EINVAL, "%s: the checkpoint in %s has %s = %lld but the recipe asks for %lld",
                                 t->r.path, t->o->out_dir, f[i].key, (long long)f[i].a, (long long)f[i].b);
    /* The MoE training knobs: a change would silently train another model. */
    const struct { const char *key; double a, b; } g[] = {
        {"capacity_factor", c->capacity_factor, want->capacity_factor},
        {"router_aux_loss_coef", c->router_aux_loss_coef, want->router_aux_loss_coef},
        {"router_z_loss_coef", c->router_z_loss_coef, want->router_z_loss_coef},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0] && c->num_experts > 0; i++)
        if (g[i].a != g[i].b)
            return orc_error_set(err, ORC_EINVAL, "%s: the checkpoint in %s has %s = %.17g but the recipe asks for "
                                 "%.17g", t->r.path, t->o->out_dir, g[i].key, g[i].a, g[i].b);
    return ORC_OK;
}

/* The "step" metadata of a checkpoint's safetensors file, or -1. */
static int64_t st_step(const orc_st_file *f) {
    const char *s = orc_st_metadata(f, "step");
    if (!s) return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    return (end == s || *end || v < 0) ? -1 : (int64_t)v;
}

/* LoRA: the frozen base (no gradient buffers) from recover_from (the
 * quantized GGUF, dequantized exactly), init_from, or the recipe's model and
 * seed; then the adapter: the checkpoint's on resume, lora_init's, or a new
 * one (A from the seed, B zero). */
static orc_status setup_lora(trainer *t, int64_t state_step, orc_error *err) {
    orc_train_recipe *r = &t->r;
    orc_error local = {0};
    const char *base_name = "";
    if (r->recover_from[0]) {
        orc_qllm *q = orc_qllm_load(r->recover_from, &local);
        if (q) t->m = orc_qllm_to_llm(q, false, &local);
        orc_qllm_free(q);
        if (!t->m) return orc_error_set(err, local.code, "%s: \"recover_from\": %s", r->path, local.msg);
        base_name = r->recover_from;
    } else if (r->init_from[0]) {
        t->m = orc_llm_load(r->init_from, false, &local);
        if (!t->m) return orc_error_set(err, local.code, "%s: \"init_from\": %s", r->path, local.msg);
        base_name = r->init_from;
    } else {
        t->m = orc_llm_create(&r->model, false, &local);
        if (!t->m) return orc_error_set(err, local.code, "%s: \"model\": %s", r->path, local.msg);
        orc_llm_init_weights(t->m, r->seed);
    }
    const char *from = t->o->resume ? t->o->out_dir : r->lora_init[0] ? r->lora_init : NULL;
    if (from) {
        t->lora = orc_lora_load(from, &t->m->cfg, true, &local);
        if (!t->lora)
            return orc_error_set(err, local.code, "%s%s: %s", t->o->resume ? "" : r->path,
                                 t->o->resume ? "resume" : ": \"lora_init\"", local.msg);
        if (!t->o->resume)
            note(t, "lora_init: starting from %s (rank %d, alpha %g)\n", from, t->lora->cfg.rank, t->lora->cfg.alpha);
        t->lora->cfg.dropout = r->lora_cfg.dropout; /* the recipe's, for this run */
    } else {
        t->lora = orc_lora_create(&t->m->cfg, &r->lora_cfg, true, &local);
        if (!t->lora) return orc_error_set(err, local.code, "%s: \"lora\": %s", r->path, local.msg);
        orc_lora_init_weights(t->lora, r->seed ^ LORA_INIT_KEY);
    }
    if (base_name[0] || !t->lora->cfg.base_model[0])
        snprintf(t->lora->cfg.base_model, sizeof t->lora->cfg.base_model, "%s", base_name);
    if (t->o->resume) {
        char path[PATH_CAP];
        join(path, t->o->out_dir, "adapter_model.safetensors");
        orc_st_file *f = orc_st_open(path, err);
        if (!f) return err ? err->code : ORC_EIO;
        int64_t s = st_step(f);
        orc_st_close(f);
        if (s != state_step)
            return orc_error_set(err, ORC_EFORMAT, "%s records step %lld but trainer_state.json step %lld: the last "
                                 "save was cut short; restore a complete checkpoint", path, (long long)s,
                                 (long long)state_step);
    }
    t->lora_stack = (orc_lora_stack){.n = 1, .ad = {t->lora}, .weight = {1.0f}};
    return orc_llm_set_adapters(t->m, &t->lora_stack, err);
}

static orc_status setup_model(trainer *t, int64_t state_step, orc_error *err) {
    orc_train_recipe *r = &t->r;
    if (r->lora) {
        orc_status st = setup_lora(t, state_step, err);
        if (st != ORC_OK) return st;
    } else if (t->o->resume) {
        t->m = orc_llm_load(t->o->out_dir, true, err);
        if (!t->m) return err ? err->code : ORC_EFORMAT;
        if (r->has_model) {
            orc_status st = check_same_model(t, &r->model, err);
            if (st != ORC_OK) return st;
        }
        char path[PATH_CAP];
        join(path, t->o->out_dir, "model.safetensors");
        orc_st_file *f = orc_st_open(path, err);
        if (!f) return err ? err->code : ORC_EIO;
        int64_t s = st_step(f);
        orc_st_close(f);
        if (s != state_step)
            return orc_error_set(err, ORC_EFORMAT, "%s records step %lld but trainer_state.json step %lld: the last "
                                 "save was cut short; restore a complete checkpoint", path, (long long)s,
                                 (long long)state_step);
    } else if (r->init_from[0]) {
        orc_error local = {0};
        t->m = orc_llm_load(r->init_from, true, &local);
        if (!t->m) return orc_error_set(err, local.code, "%s: \"init_from\": %s", r->path, local.msg);
    } else {
        orc_llm_config cfg = r->model;
        int32_t bos = orc_tokenizer_special_id(t->tok, ORC_TOK_BEGIN_OF_TEXT);
        int32_t eos = orc_tokenizer_special_id(t->tok, ORC_TOK_END_OF_TEXT);
        if (cfg.bos_token_id < 0 && bos >= 0 && bos < cfg.vocab_size) cfg.bos_token_id = bos;
        if (cfg.eos_token_id < 0 && eos >= 0 && eos < cfg.vocab_size) cfg.eos_token_id = eos;
        orc_error local = {0};
        t->m = orc_llm_create(&cfg, true, &local);
        if (!t->m) return orc_error_set(err, local.code, "%s: \"model\": %s", r->path, local.msg);
        orc_llm_init_weights(t->m, r->seed);
    }
    const orc_llm_config *c = &t->m->cfg;
    size_t tv = orc_tokenizer_vocab_size(t->tok);
    if ((int64_t)tv > c->vocab_size)
        return orc_error_set(err, ORC_EINVAL, "%s: \"model\": vocab_size = %lld is smaller than the tokenizer's %zu "
                             "ids; use a model with vocab_size >= %zu", r->path, (long long)c->vocab_size, tv, tv);
    if (r->seq > c->max_position_embeddings)
        return orc_error_set(err, ORC_ERANGE, "%s: \"seq\" = %d exceeds the model's max_position_embeddings = %lld",
                             r->path, r->seq, (long long)c->max_position_embeddings);
    /* Bits per byte: each target id counts the bytes of its text, specials none. */
    t->id_bytes = calloc((size_t)c->vocab_size, sizeof *t->id_bytes);
    if (!t->id_bytes) return orc_error_set(err, ORC_ENOMEM, "train: out of memory");
    for (size_t id = 0; id < tv; id++) {
        size_t len = 0;
        if (orc_tokenizer_is_special(t->tok, (int32_t)id)) continue;
        if (orc_tokenizer_id_to_token(t->tok, (int32_t)id, &len)) t->id_bytes[id] = (uint32_t)len;
    }
    return ORC_OK;
}

static orc_status open_shard(trainer *t, const char *path, const char *key, orc_shard **out, orc_error *err) {
    orc_error local = {0};
    *out = orc_shard_open(path, t->m->cfg.vocab_size, &local);
    if (!*out) return orc_error_set(err, local.code, "%s: \"%s\": %s", t->r.path, key, local.msg);
    uint64_t n = orc_shard_get_info(*out)->tokens;
    if (n < (uint64_t)t->r.seq + 1)
        return orc_error_set(err, ORC_ERANGE, "%s: \"%s\": %s holds %llu tokens, fewer than seq + 1 = %d", t->r.path,
                             key, path, (unsigned long long)n, t->r.seq + 1);
    return ORC_OK;
}

static orc_status setup_data(trainer *t, orc_error *err) {
    const orc_train_recipe *r = &t->r;
    size_t n = (size_t)r->batch * (size_t)r->seq;
    t->in = malloc(n * sizeof *t->in);
    t->tg = malloc(n * sizeof *t->tg);
    if (!t->in || !t->tg) return orc_error_set(err, ORC_ENOMEM, "train: out of memory for a batch");
    if (r->sft) {
        orc_status st = load_sft(t, r->train, &t->sft_train, err);
        if (st == ORC_OK && r->val[0]) st = load_sft(t, r->val, &t->sft_val, err);
        return st;
    }
    orc_status st = open_shard(t, r->train, "data.train", &t->train_shard, err);
    if (st == ORC_OK && r->val[0]) st = open_shard(t, r->val, "data.val", &t->val_shard, err);
    return st;
}

/* ---- multi-process (orchard/dist.h, docs/distributed.md) ------------------------------ */

/* The world (the caller's, or a one-rank one for a bare --mesh) and the
 * mesh. The spec is compared across ranks before the communicator splits,
 * which every rank must enter together. */
static orc_status dist_setup_mesh(trainer *t, orc_error *err) {
    const orc_train_opts *o = t->o;
    t->world = o->comm;
    if (!t->world) {
        t->world = t->own_world = orc_comm_single("world", err);
        if (!t->world) return err ? err->code : ORC_ENOMEM;
    }
    char spec[96];
    snprintf(spec, sizeof spec, "%s|zero=%d", o->mesh ? o->mesh : "", o->zero);
    orc_status st = orc_dist_check_same(t->world, orc_dist_hash(0, spec, strlen(spec)), "--mesh/--zero", err);
    if (st != ORC_OK) return st;
    t->mesh = orc_mesh_create(t->world, o->mesh, err);
    return t->mesh ? ORC_OK : (err ? err->code : ORC_EINVAL);
}

static orc_status dist_agree(trainer *t, orc_status st, orc_error *err) {
    return t->mesh ? orc_dist_agree(t->world, st, err) : st;
}

/* After the recipe and the model are set up (and every rank agreed they
 * were): the same recipe everywhere, a model and batch that fit the mesh,
 * this rank's rows of each global micro-batch. */
static orc_status dist_check(trainer *t, orc_error *err) {
    const orc_mesh *ms = t->mesh;
    json_t *j = orc_train_recipe_to_json(&t->r);
    char *text = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "train: out of memory");
    uint64_t h = orc_dist_hash(0, text, strlen(text));
    free(text);
    orc_status st = orc_dist_check_same(t->world, h, "training recipe (after command-line overrides)", err);
    if (st != ORC_OK) return st;
    char label[PATH_CAP];
    snprintf(label, sizeof label, "rank %d: %s", t->world->rank, t->r.path[0] ? t->r.path : t->o->out_dir);
    st = orc_mesh_check_model(ms, &t->m->cfg, label, err);
    if (st != ORC_OK) return st;
    if (ms->expert > 1 && (t->o->zero || t->lora))
        return orc_error_set(err, ORC_EINVAL, "%s: --mesh expert=%d works without --zero and LoRA so far", label,
                             ms->expert);
    if (ms->model > 1 && (t->o->zero || t->lora))
        return orc_error_set(err, ORC_EINVAL, "%s: --mesh model=%d works without --zero and LoRA so far", label,
                             ms->model);
    /* The expert axis is carved out of data parallelism: data x expert
     * ranks each train on their own rows of the global batch. */
    const int R = ms->data * ms->expert;
    if (t->r.batch % R != 0)
        return orc_error_set(err, ORC_EINVAL, "%s: batch = %d (the global batch) must be a multiple of --mesh "
                             "data=%d x expert=%d", label, t->r.batch, ms->data, ms->expert);
    t->rows = t->r.batch / R;
    t->row0 = (ms->data_rank * ms->expert + ms->expert_rank) * t->rows;
    if (ms->model > 1) {
        t->tp = orc_tp_llm_from_full(t->m, ms->model_comm, true, err);
        if (!t->tp) return err ? err->code : ORC_EINVAL;
    }
    if (ms->expert > 1) { /* with model > 1: the experts of this rank's (full-width) MoE layers */
        t->ep = orc_ep_llm_new(t->tp ? t->tp->local : t->m, ms->expert_comm, err);
        if (!t->ep) return err ? err->code : ORC_EINVAL;
    }
    return ORC_OK;
}

/* The model this rank runs: the full one or its tensor-parallel slices
 * (whose MoE layers hold the router losses and statistics). */
static orc_llm *run_model(const trainer *t) { return t->tp ? t->tp->local : t->m; }

/* The LM loss on this rank's model: the full one or its tensor-parallel slices. */
static orc_tensor *model_loss(trainer *t, orc_ctx *ctx, orc_tensor *ids, orc_tensor *tg) {
    return t->tp ? orc_tp_llm_loss(ctx, t->tp, ids, tg) : orc_llm_loss(ctx, t->m, ids, tg);
}

/* Tensor and expert parallelism: parameter i is replicated (0), split over
 * the model axis (1: attention and dense FFN slices) or over the expert
 * axis (2: expert weights; never both, the model axis does not split MoE
 * layers); its buffer to and from the full layout of a checkpoint. */
static int param_split_axis(const trainer *t, int i) {
    return t->ep && orc_ep_param_is_expert(t->ep, i) ? 2 : t->tp && orc_tp_param_is_split(t->tp, i) ? 1 : 0;
}
static orc_status gather_param(trainer *t, int i, const float *local, float *full, orc_error *err) {
    if (param_split_axis(t, i) == 2 || !t->tp) return orc_ep_gather(t->ep, i, local, full, err);
    return orc_tp_gather(t->tp, i, local, full, err);
}
static void scatter_param(const trainer *t, int i, const float *full, float *local) {
    if (param_split_axis(t, i) == 2 || !t->tp) orc_ep_scatter(t->ep, i, full, local);
    else orc_tp_scatter(t->tp, i, full, local);
}

/* Tensor or expert parallel: the global gradient norm counts the
 * replicated parameters once and the split ones from every rank of their
 * axis; then clipping. */
static orc_status split_clip(trainer *t, double *gn, orc_error *err) {
    double ss[3] = {0, 0, 0}; /* replicated, split over model, split over expert */
    for (int i = 0; i < t->n_train_params; i++) {
        const orc_tensor *p = t->train_params[i];
        double s = 0;
        for (int64_t k = 0; k < p->numel; k++) s += (double)p->grad[k] * (double)p->grad[k];
        ss[param_split_axis(t, i)] += s;
    }
    orc_status st = ORC_OK;
    if (t->tp) st = orc_allreduce_f64(t->mesh->model_comm, &ss[1], 1, ORC_REDUCE_SUM, err);
    if (st == ORC_OK && t->ep) st = orc_allreduce_f64(t->mesh->expert_comm, &ss[2], 1, ORC_REDUCE_SUM, err);
    if (st != ORC_OK) return st;
    *gn = sqrt(ss[0] + ss[1] + ss[2]);
    const double max_norm = t->r.grad_clip;
    if (max_norm > 0 && isfinite(*gn) && *gn > max_norm) {
        const float c = (float)(max_norm / (*gn + 1e-6));
        for (int i = 0; i < t->n_train_params; i++)
            for (int64_t k = 0; k < t->train_params[i]->numel; k++) t->train_params[i]->grad[k] *= c;
    }
    return ORC_OK;
}

static int param_index(const trainer *t, const orc_tensor *p) {
    for (int i = 0; i < t->n_train_params; i++)
        if (t->train_params[i] == p) return i;
    return -1;
}

/* This rank's share of the micro-batch's counted targets, so that the sum
 * over ranks of (local mean loss x share) is the global mean loss (and the
 * summed gradients are its gradient) even when ignore_index leaves ranks
 * with different counts. Every rank holds the whole global batch, so no
 * message is needed. 1 on one process. */
static double dist_share(const trainer *t) {
    if (!t->mesh || t->rows == t->r.batch) return 1.0;
    const int64_t T = t->r.seq, n = (int64_t)t->r.batch * T;
    int64_t all = 0, mine = 0;
    for (int64_t i = 0; i < n; i++) {
        if (t->tg[i] == ORC_IGNORE_INDEX) continue;
        all++;
        if (i / T >= t->row0 && i / T < t->row0 + t->rows) mine++;
    }
    return all > 0 ? (double)mine / (double)all : (double)t->rows / (double)t->r.batch;
}

/* The step's loss summed over data ranks, the interrupt flag agreed by all
 * ranks (so all stop at the same step), then the gradient sync and norm. */
static orc_status dist_sync(trainer *t, double *loss_sum, double *gn, orc_error *err) {
    double v[2] = {t->mesh->model_rank == 0 ? *loss_sum : 0.0, /* model ranks share rows; the rest do not */
                   t->o->interrupt && *t->o->interrupt ? 1.0 : 0.0};
    orc_status st = orc_allreduce_f64(t->world, v, 2, ORC_REDUCE_SUM, err);
    if (st != ORC_OK) return st;
    *loss_sum = v[0];
    t->dist_interrupted = v[1] > 0;
    if (t->tp && (st = orc_tp_llm_sync_grads(t->tp, err)) != ORC_OK) return st;
    orc_error local = {0};
    const bool split = t->tp || t->ep;
    *gn = orc_ddp_sync_grads(t->ddp, split ? 0 : t->r.grad_clip, &local);
    if (local.code == ORC_OK && t->ddp_ex) orc_ddp_sync_grads(t->ddp_ex, 0, &local);
    if (local.code != ORC_OK) return orc_error_set(err, local.code, "step %lld: %s", (long long)t->step + 1, local.msg);
    return split ? split_clip(t, gn, err) : ORC_OK;
}

/* ZeRO-1 resume: read each state buffer whole (the checkpoint has the
 * normal layout) into the flat vector and keep this rank's slice. */
static orc_status load_optim_zero(trainer *t, orc_st_file *f, const char *path, orc_error *err) {
    static const char *const suffix[2] = {"exp_avg", "exp_avg_sq"};
    int64_t total = orc_ddp_param_offset(t->ddp, t->n_train_params) + t->world->size;
    float *flat = calloc((size_t)total, sizeof *flat);
    if (!flat) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    orc_status st = ORC_OK;
    for (int k = 0; k < 2 && st == ORC_OK; k++) {
        for (int i = 0; i < t->n_train_params && st == ORC_OK; i++) {
            char name[256];
            snprintf(name, sizeof name, "%s.%s", t->train_params[i]->name, suffix[k]);
            if (!orc_st_find(f, name)) st = orc_error_set(err, ORC_EFORMAT, "%s: missing optimizer state %s", path, name);
            else st = orc_st_read_f32(f, name, flat + orc_ddp_param_offset(t->ddp, i), t->train_params[i]->numel, err);
        }
        if (st == ORC_OK) st = orc_ddp_load_state(t->ddp, t->opt, k, flat, err);
    }
    free(flat);
    return st;
}

/* ZeRO-1 save (world rank 0, after every rank gathered the state): the
 * normal layout, one buffer per parameter and kind. */
static orc_status save_optim_zero(trainer *t, const char *dir, const char *step, orc_error *err) {
    static const char *const suffix[2] = {"exp_avg", "exp_avg_sq"};
    const int np = t->n_train_params;
    orc_st_entry *e = calloc((size_t)(2 * np + 1), sizeof *e);
    char *names = calloc((size_t)(2 * np + 1), 256);
    orc_status st = ORC_OK;
    if (!e || !names) st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < np && st == ORC_OK; i++)
        for (int k = 0; k < 2; k++) {
            const orc_tensor *p = t->train_params[i];
            orc_st_entry *x = &e[2 * i + k];
            snprintf(names + (size_t)(2 * i + k) * 256, 256, "%s.%s", p->name, suffix[k]);
            x->name = names + (size_t)(2 * i + k) * 256;
            x->dtype = ORC_ST_F32;
            x->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) x->shape[d] = p->shape[d];
            x->data = t->zero_full[k] + orc_ddp_param_offset(t->ddp, i);
        }
    const orc_st_kv meta[] = {{"format", "pt"}, {"optimizer", orc_optim_kind(t->opt)}, {"step", step}};
    char path[PATH_CAP];
    join(path, dir, "optimizer.safetensors");
    if (st == ORC_OK) st = orc_st_write(path, e, (size_t)(2 * np), meta, 3, err);
    free(e);
    free(names);
    return st;
}

/* Validation: data rank r takes batches e with e % D == r; the sums meet. */
static orc_status dist_eval_reduce(trainer *t, double *nats, double *counted, double *bytes, orc_error *err) {
    double v[3] = {*nats, *counted, *bytes};
    orc_status st = orc_allreduce_f64(t->mesh->data_comm, v, 3, ORC_REDUCE_SUM, err);
    *nats = v[0], *counted = v[1], *bytes = v[2];
    return st;
}

static orc_status setup_optim(trainer *t, orc_error *err) {
    /* LoRA: only the adapter's A and B reach the optimizer (no state for the base). */
    t->train_params = t->lora ? t->lora->params : t->ep ? t->ep->params : t->tp ? t->tp->local->params : t->m->params;
    t->n_train_params = t->lora ? t->lora->n_params : t->tp ? t->tp->local->n_params : t->m->n_params;
    /* Data parallel: the optimizer updates what orc_ddp hands out (with
     * ZeRO-1, this rank's 1-D pieces; decay still follows each piece's
     * source parameter). */
    orc_tensor **opt_params = t->train_params;
    int np = t->n_train_params;
    if (t->mesh) {
        const char *kb = getenv("ORCHARD_DIST_BUCKET_KB"), *ov = getenv("ORCHARD_DIST_OVERLAP");
        const size_t bucket = kb && atol(kb) > 0 ? (size_t)atol(kb) << 10 : 0; /* 0: 4 MiB */
        t->overlap = !(ov && !strcmp(ov, "0")) && !t->tp; /* TP sums the QK-norm gradients after backward */
        if (t->ep) { /* experts sync over the data ranks, everything else over data x expert */
            orc_tensor **ex = calloc((size_t)np + 1, sizeof *ex), **dense = calloc((size_t)np + 1, sizeof *dense);
            int ne = 0, nd = 0;
            if (ex && dense)
                for (int i = 0; i < np; i++) {
                    if (orc_ep_param_is_expert(t->ep, i)) ex[ne++] = t->train_params[i];
                    else dense[nd++] = t->train_params[i];
                }
            t->ddp = ex && dense ? orc_ddp_new(t->mesh->replica_comm, dense, nd, 0, bucket, err) : NULL;
            t->ddp_ex = t->ddp ? orc_ddp_new(t->mesh->data_comm, ex, ne, 0, bucket, err) : NULL;
            free(ex);
            free(dense);
            if (!t->ddp_ex) return err && err->code ? err->code : orc_error_set(err, ORC_ENOMEM, "train: out of memory");
        } else {
            t->ddp = orc_ddp_new(t->mesh->data_comm, t->train_params, t->n_train_params, t->o->zero, bucket, err);
            if (!t->ddp) return err ? err->code : ORC_ENOMEM;
            opt_params = orc_ddp_opt_params(t->ddp, &np);
        }
    }
    t->decay = calloc((size_t)np + 1, sizeof *t->decay);
    t->no_decay = calloc((size_t)np + 1, sizeof *t->no_decay);
    if (!t->decay || !t->no_decay) return orc_error_set(err, ORC_ENOMEM, "train: out of memory");
    for (int i = 0; i < np; i++) {
        const orc_tensor *src = t->ddp && orc_ddp_zero(t->ddp) ? orc_ddp_piece_source(t->ddp, i) : opt_params[i];
        if (src->ndim >= 2) t->decay[t->n_decay++] = opt_params[i];
        else t->no_decay[t->n_no_decay++] = opt_params[i];
    }
    orc_param_group g[2] = {orc_group(t->decay, t->n_decay, (float)t->r.weight_decay),
                            orc_group(t->no_decay, t->n_no_decay, 0.0f)};
    orc_adamw_opts ao = {(float)t->r.beta1, (float)t->r.beta2, (float)t->r.eps};
    t->opt = orc_adamw_new(g, 2, ao, err);
    if (!t->opt) return err ? err->code : ORC_EINVAL;
    t->sched = (orc_lr_schedule){ORC_LR_WARMUP_COSINE, (float)t->r.lr, (float)t->r.min_lr, t->r.warmup, t->r.steps};
    orc_error local = {0};
    if (orc_lr_schedule_check(&t->sched, &local) != ORC_OK)
        return orc_error_set(err, local.code, "%s: %s", t->r.path, local.msg);
    return ORC_OK;
}

static orc_status load_optim_state(trainer *t, int64_t state_step, orc_error *err) {
    char path[PATH_CAP];
    join(path, t->o->out_dir, "optimizer.safetensors");
    orc_st_file *f = orc_st_open(path, err);
    if (!f) return err ? err->code : ORC_EIO;
    orc_status st = ORC_OK;
    int64_t s = st_step(f);
    if (s != state_step)
        st = orc_error_set(err, ORC_EFORMAT, "%s records step %lld but trainer_state.json step %lld: the last save "
                           "was cut short; restore a complete checkpoint", path, (long long)s, (long long)state_step);
    int n = orc_optim_state_count(t->opt);
    if (st == ORC_OK && t->ddp && orc_ddp_zero(t->ddp)) {
        st = load_optim_zero(t, f, path, err);
        n = 0;
    }
    for (int i = 0; i < n && st == ORC_OK; i++) {
        orc_optim_state b = orc_optim_state_get(t->opt, i);
        int k = t->tp || t->ep ? param_index(t, b.param) : -1;
        if (!orc_st_find(f, b.name)) {
            st = orc_error_set(err, ORC_EFORMAT, "%s: missing optimizer state %s", path, b.name);
        } else if (k >= 0) { /* tensor or expert parallel: the full buffer, then this rank's part */
            int64_t full_n = t->m->params[k]->numel;
            float *full = malloc(sizeof(float) * (size_t)full_n);
            st = full ? orc_st_read_f32(f, b.name, full, full_n, err) : orc_error_set(err, ORC_ENOMEM, "out of memory");
            if (st == ORC_OK) scatter_param(t, k, full, b.data);
            free(full);
        } else {
            st = orc_st_read_f32(f, b.name, b.data, b.numel, err);
        }
    }
    orc_st_close(f);
    if (st == ORC_OK) st = orc_optim_set_step(t->opt, state_step, err);
    return st;
}

/* ---- checkpoints ------------------------------------------------------------------ */

static orc_status write_json_atomic(const char *path, json_t *j, orc_error *err) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s: could not format the JSON", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room for the NUL, which the file does not need */
    orc_status st = orc_write_file_atomic(path, text, len + 1, "train", err);
    free(text);
    return st;
}

static orc_status save_model(trainer *t, const char *dir, const char *step, orc_error *err) {
    char path[PATH_CAP];
    if (t->lora) { /* the checkpoint is the adapter (the base stays where the recipe says) */
        const orc_lora_meta meta[] = {{"step", step}};
        return orc_lora_save(t->lora, dir, meta, 1, err);
    }
    join(path, dir, "config.json");
    orc_status st = orc_llm_config_save(path, &t->m->cfg, err);
    if (st != ORC_OK) return st;
    const orc_llm *m = t->m;
    orc_st_entry *e = calloc((size_t)m->n_params, sizeof *e);
    if (!e) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < m->n_params && st == ORC_OK; i++)
        st = orc_st_entry_from_tensor(&e[i], m->params[i]->name, m->params[i], ORC_ST_F32, err);
    const orc_st_kv meta[] = {{"format", "pt"}, {"producer", "orchard"}, {"step", step}};
    join(path, dir, "model.safetensors");
    if (st == ORC_OK) st = orc_st_write(path, e, (size_t)m->n_params, meta, 3, err);
    free(e);
    return st;
}

static orc_status save_optim(trainer *t, const char *dir, const char *step, orc_error *err) {
    if (t->zero_full[0]) return save_optim_zero(t, dir, step, err);
    int n = orc_optim_state_count(t->opt);
    orc_st_entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
    if (!e) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < n; i++) {
        orc_optim_state b = orc_optim_state_get(t->opt, i);
        /* tensor or expert parallel: the moments gathered into the full layout */
        const orc_tensor *shape_of = t->full_state ? t->m->params[param_index(t, b.param)] : b.param;
        e[i].name = b.name;
        e[i].dtype = ORC_ST_F32;
        e[i].ndim = shape_of->ndim;
        for (int d = 0; d < shape_of->ndim; d++) e[i].shape[d] = shape_of->shape[d];
        e[i].data = t->full_state ? t->full_state[i] : b.data;
    }
    const orc_st_kv meta[] = {{"format", "pt"}, {"optimizer", orc_optim_kind(t->opt)}, {"step", step}};
    char path[PATH_CAP];
    join(path, dir, "optimizer.safetensors");
    orc_status st = orc_st_write(path, e, (size_t)n, meta, 3, err);
    free(e);
    return st;
}

static json_t *real_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static orc_status save_state(trainer *t, const char *dir, orc_error *err) {
    const orc_train_recipe *r = &t->r;
    uint64_t micro = (uint64_t)t->step * (uint64_t)r->accum;
    json_t *j = json_pack("{s:s, s:i, s:I, s:I, s:I, s:{s:s, s:s, s:I, s:I}}", "format", "orchard-trainer-state",
                          "version", 1, "step", (json_int_t)t->step, "total_steps", (json_int_t)r->steps,
                          "tokens_seen", (json_int_t)(micro * (uint64_t)r->batch * (uint64_t)r->seq), "data", "kind",
                          r->sft ? "sft" : "tokens", "sampler", "philox(seed, micro_batch, row)", "seed",
                          (json_int_t)r->seed, "next_micro_batch", (json_int_t)micro);
    if (!j) return orc_error_set(err, ORC_ENOMEM, "%s: could not build trainer_state.json", dir);
    json_object_set_new(j, "best_val_loss", real_or_null(t->best_val));
    json_object_set_new(j, "last_val_loss", real_or_null(t->last_val));
    json_object_set_new(j, "last_val_bpb", real_or_null(t->last_bpb));
    json_object_set_new(j, "recipe", orc_train_recipe_to_json(r));
    char path[PATH_CAP];
    join(path, dir, "trainer_state.json");
    orc_status st = write_json_atomic(path, j, err);
    json_decref(j);
    return st;
}

/* A checkpoint is saved in two phases so that a crash at any point leaves a
 * resumable directory. Phase 1 writes every file into DIR/.pending and then
 * the marker DIR/.pending/COMMITTED; until the marker exists DIR itself is
 * untouched. Phase 2 renames the files into DIR, trainer_state.json last,
 * then removes the marker and the folder. recover_pending() (run before a
 * resume and before each save) finishes phase 2 when the marker exists and
 * throws a half-written .pending away when it does not. */
static const char *const CHECKPOINT_FILES[] = {"tokenizer.json", "config.json", "model.safetensors",
                                               "adapter_model.safetensors", "adapter_config.json",
                                               "optimizer.safetensors", "trainer_state.json"};
#define PENDING_DIR ".pending"
#define PENDING_MARK "COMMITTED"

static orc_status move_pending(const char *dir, const char *pending, orc_error *err) {
    char from[PATH_CAP], to[PATH_CAP];
    for (size_t i = 0; i < sizeof CHECKPOINT_FILES / sizeof CHECKPOINT_FILES[0]; i++) {
        join(from, pending, CHECKPOINT_FILES[i]);
        join(to, dir, CHECKPOINT_FILES[i]);
        if (!file_exists(from)) continue; /* moved before a crash, or not part of this save */
        if (rename(from, to) != 0)
            return orc_error_set(err, ORC_EIO, "%s: cannot move %s into place: %s", dir, from, strerror(errno));
    }
    join(from, pending, PENDING_MARK);
    unlink(from);
    rmdir(pending);
    return ORC_OK;
}

static void remove_pending(const char *pending) {
    char path[PATH_CAP];
    for (size_t i = 0; i < sizeof CHECKPOINT_FILES / sizeof CHECKPOINT_FILES[0]; i++) {
        join(path, pending, CHECKPOINT_FILES[i]);
        unlink(path);
    }
    rmdir(pending);
}

orc_status orc_train_recover_pending(const char *dir, orc_error *err) {
    char pending[PATH_CAP], mark[PATH_CAP];
    join(pending, dir, PENDING_DIR);
    join(mark, pending, PENDING_MARK);
    if (file_exists(mark)) return move_pending(dir, pending, err);
    remove_pending(pending); /* an incomplete phase 1: the previous checkpoint stands */
    return ORC_OK;
}

static orc_status save_checkpoint_files(trainer *t, orc_error *err) {
    const char *dir = t->o->out_dir;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create the checkpoint directory: %s", dir, strerror(errno));
    orc_status st = orc_train_recover_pending(dir, err);
    if (st != ORC_OK) return st;
    char pending[PATH_CAP], path[PATH_CAP];
    join(pending, dir, PENDING_DIR);
    if (mkdir(pending, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create %s: %s", dir, pending, strerror(errno));
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t->step);
    if (!t->tokenizer_saved) {
        join(path, pending, "tokenizer.json");
        st = orc_tokenizer_save(t->tok, path, err);
    }
    if (st == ORC_OK) st = save_model(t, pending, step, err);
    if (st == ORC_OK) st = save_optim(t, pending, step, err);
    if (st == ORC_OK) st = save_state(t, pending, err);
    join(path, pending, PENDING_MARK);
    if (st == ORC_OK) st = orc_write_file_atomic(path, step, strlen(step), "train", err);
    if (st != ORC_OK) {
        remove_pending(pending);
        return st;
    }
    st = move_pending(dir, pending, err);
    if (st == ORC_OK) {
        t->tokenizer_saved = true;
        t->saved_step = t->step;
    }
    return st;
}

/* Multi-process: every rank gathers what is sharded (ZeRO-1 optimizer
 * state), world rank 0 alone writes the normal checkpoint, and all ranks
 * agree on the outcome (so a failed write stops every rank). */
static orc_status save_checkpoint(trainer *t, orc_error *err) {
    if (!t->mesh) return save_checkpoint_files(t, err);
    orc_status st = ORC_OK;
    if (orc_ddp_zero(t->ddp))
        for (int k = 0; k < 2 && st == ORC_OK; k++) {
            const float *full = orc_ddp_full_state(t->ddp, t->opt, k, err);
            int64_t n = orc_ddp_param_offset(t->ddp, t->n_train_params);
            t->zero_full[k] = full ? malloc(sizeof(float) * (size_t)(n ? n : 1)) : NULL;
            if (!full) st = err ? err->code : ORC_EIO;
            else if (!t->zero_full[k]) st = orc_error_set(err, ORC_ENOMEM, "train: out of memory for the optimizer state");
            else memcpy(t->zero_full[k], full, sizeof(float) * (size_t)n);
        }
    const int n_states = orc_optim_state_count(t->opt);
    if (st == ORC_OK && (t->tp || t->ep)) { /* tensor or expert parallel: all into the full layout */
        /* experts first: into the (full-width) MoE tensors of the TP slices, which then go to t->m */
        if (t->ep) st = orc_ep_llm_to_full(t->ep, err);
        if (st == ORC_OK && t->tp) st = orc_tp_llm_to_full(t->tp, t->m, false, err);
        t->full_state = st == ORC_OK ? calloc((size_t)n_states + 1, sizeof *t->full_state) : NULL;
        if (st == ORC_OK && !t->full_state) st = orc_error_set(err, ORC_ENOMEM, "train: out of memory");
        for (int i = 0; i < n_states && st == ORC_OK; i++) {
            orc_optim_state b = orc_optim_state_get(t->opt, i);
            int k = param_index(t, b.param);
            t->full_state[i] = k >= 0 ? malloc(sizeof(float) * (size_t)t->m->params[k]->numel) : NULL;
            st = t->full_state[i] ? gather_param(t, k, b.data, t->full_state[i], err)
                                  : orc_error_set(err, ORC_ENOMEM, "train: out of memory");
        }
    }
    if (st == ORC_OK && t->world->rank == 0) st = save_checkpoint_files(t, err);
    for (int k = 0; k < 2; k++) {
        free(t->zero_full[k]);
        t->zero_full[k] = NULL;
    }
    if (t->full_state) {
        for (int i = 0; i < n_states; i++) free(t->full_state[i]);
        free(t->full_state);
        t->full_state = NULL;
    }
    st = orc_dist_agree(t->world, st, err);
    if (st == ORC_OK) {
        t->tokenizer_saved = true;
        t->saved_step = t->step;
    }
    return st;
}

/* ---- the step ---------------------------------------------------------------------- */

/* After the first micro-batch, give the activation arena one chunk that holds
 * a whole micro-batch, so later resets keep all the memory. */
static orc_status size_arena(trainer *t, size_t peak, orc_error *err) {
    if (orc_arena_reserved(t->act) <= t->act_chunk) return ORC_OK;
    size_t want = peak + peak / 8 + ((size_t)4 << 20);
    orc_arena *a = orc_arena_create(want);
    if (!a) return orc_error_set(err, ORC_ENOMEM, "train: out of memory for %zu MiB of activations", want >> 20);
    orc_arena_destroy(t->act);
    t->act = a;
    /* What the arena really reserved (it rounds up to its alignment): with
     * `want` here every later step would see reserved > act_chunk and build
     * a fresh arena, page-faulting all its memory again. */
    t->act_chunk = orc_arena_reserved(a);
    t->ctx.arena = a;
    return ORC_OK;
}

static orc_status ctx_error(trainer *t, const char *what, orc_error *err) {
    orc_status code = t->ctx.err.code != ORC_OK ? t->ctx.err.code : ORC_EINVAL;
    orc_status st = orc_error_set(err, code, "step %lld: %s: %s", (long long)t->step + 1, what, orc_ctx_message(&t->ctx));
    orc_ctx_reset(&t->ctx);
    return st;
}

/* The backward hook: the gradient all-reduce of finished buckets starts
 * while backward goes on (orc_ddp_overlap_hook). */
static void overlap_hook(void *user, int64_t k) {
    trainer *t = user;
    orc_ddp_overlap_hook(t->ddp, k);
    if (t->ddp_ex) orc_ddp_overlap_hook(t->ddp_ex, k);
}

/* last: the step's last micro-batch, whose backward may overlap the sync. */
static orc_status micro_step(trainer *t, float scale, bool last, double *loss_out, orc_error *err) {
    orc_ctx *ctx = &t->ctx;
    const int64_t B = t->rows ? t->rows : t->r.batch, T = t->r.seq; /* data parallel: this rank's rows */
    const size_t at = (size_t)t->row0 * (size_t)T;
    orc_tensor *ids = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->in + at, &ctx->err);
    orc_tensor *tg = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->tg + at, &ctx->err);
    orc_tensor *loss = ids && tg ? model_loss(t, ctx, ids, tg) : NULL;
    if (loss) *loss_out = orc_f32(loss)[0];
    orc_tensor *aux = run_model(t)->moe_aux;
    if (loss && aux) { /* MoE router losses train with the LM loss; the logged loss is the LM's */
        t->moe_aux += (double)orc_f32(aux)[0] / t->r.accum;
        loss = orc_add(ctx, loss, aux);
    }
    if (loss && scale != 1.0f) loss = orc_scale(ctx, loss, scale);
    if (!loss || !orc_ctx_ok(ctx)) return ctx_error(t, "forward", err);
    /* Only syncs with more than one rank have anything to overlap (the
     * experts' sync on a single data rank moves nothing). */
    const bool overlap = last && t->ddp && t->overlap;
    const orc_comm *dense_comm = t->ddp_ex ? t->mesh->replica_comm : t->mesh ? t->mesh->data_comm : NULL;
    orc_status ost = ORC_OK;
    if (overlap && dense_comm->size > 1) ost = orc_ddp_overlap_begin(t->ddp, ctx, err);
    if (overlap && ost == ORC_OK && t->ddp_ex && t->mesh->data > 1) ost = orc_ddp_overlap_begin(t->ddp_ex, ctx, err);
    if (ost != ORC_OK) return ost;
    if (orc_backward_hooked(ctx, loss, overlap ? overlap_hook : NULL, t) != ORC_OK) return ctx_error(t, "backward", err);
    size_t peak = orc_arena_used(ctx->arena);
    orc_ctx_reset(ctx);
    return size_arena(t, peak, err);
}

/* The step's MoE statistics, read before validation forwards add theirs. */
static void moe_snapshot(trainer *t) {
    const orc_llm_config *c = &t->m->cfg;
    if (c->num_experts <= 0) return;
    const int64_t E = c->num_experts;
    size_t need = 160 + (size_t)c->num_hidden_layers * (size_t)(E + 1) * 24, n = 0;
    if (need > t->moe_log_cap) {
        char *p = realloc(t->moe_log, need);
        if (!p) return;
        t->moe_log = p;
        t->moe_log_cap = need;
    }
    char *buf = t->moe_log;
/* Append; the buffer is sized for every count, and a short write stops there. */
#define MOE_PUT(...)                                                            \
    do {                                                                        \
        int w = snprintf(buf + n, need - n, __VA_ARGS__);                       \
        n = w < 0 || (size_t)w >= need - n ? need - 1 : n + (size_t)w;          \
    } while (0)
    orc_moe_stats sum = {0};
    MOE_PUT(", \"moe_tokens_per_expert\": [");
    bool first = true;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_moe_layer *y = run_model(t)->layers[l].moe;
        if (!y) continue;
        orc_moe_stats_add(&sum, &y->stats);
        MOE_PUT("%s[", first ? "" : ", ");
        for (int64_t e = 0; e < E; e++) MOE_PUT("%s%lld", e ? ", " : "", (long long)y->stats.per_expert[e]);
        MOE_PUT("]");
        first = false;
    }
    t->moe_dropped = orc_moe_stats_dropped_fraction(&sum, (orc_moe_router)c->moe_router);
    t->moe_entropy = orc_moe_stats_entropy(&sum);
    MOE_PUT("], \"moe_dropped\": %.6g, \"moe_router_entropy\": %.6g, \"moe_aux_loss\": %.9g", t->moe_dropped,
            t->moe_entropy, t->moe_aux);
#undef MOE_PUT
}

static orc_status train_step(trainer *t, orc_train_step_info *info, orc_error *err) {
    const orc_train_recipe *r = &t->r;
    double t0 = now_s(), loss_sum = 0;
    orc_optim_zero_grad(t->opt);
    if (t->ddp) /* with ZeRO-1 the optimizer holds pieces, not the parameters */
        for (int i = 0; i < t->n_train_params; i++) orc_zero_grad(t->train_params[i]);
    orc_llm_moe_stats_reset(run_model(t));
    t->moe_aux = 0;
    for (int k = 0; k < r->accum; k++) {
        double loss = 0;
        orc_status st = train_batch(t, (uint64_t)t->step * (uint64_t)r->accum + (uint64_t)k, err);
        if (t->lora)
            orc_rng_init(&t->ctx.rng, (r->seed ^ LORA_DROP_KEY) + (uint64_t)t->step * (uint64_t)r->accum + (uint64_t)k);
        const double share = dist_share(t); /* 1 on one process */
        if (st == ORC_OK)
            st = micro_step(t, t->mesh ? (float)(share / r->accum) : 1.0f / (float)r->accum, k == r->accum - 1, &loss,
                            err);
        if (st != ORC_OK) return st;
        loss_sum += t->mesh ? loss * share : loss;
    }
    double gn = 0;
    if (t->mesh) {
        orc_status st = dist_sync(t, &loss_sum, &gn, err);
        if (st != ORC_OK) return st;
    } else {
        gn = r->grad_clip > 0 ? orc_optim_clip_grad_norm(t->opt, r->grad_clip)
                              : orc_grad_norm(t->train_params, t->n_train_params);
    }
    double loss = loss_sum / r->accum;
    if (!isfinite(loss) || !isfinite(gn))
        return orc_error_set(err, ORC_ERANGE, "step %lld: the loss (%g) or the gradient norm (%g) is not finite; "
                             "try a lower lr than %g", (long long)t->step + 1, loss, gn, r->lr);
    moe_snapshot(t);
    float lr = orc_lr_at(&t->sched, t->step);
    orc_status st = orc_optim_step(t->opt, lr, err);
    if (st == ORC_OK && t->ddp) st = orc_ddp_after_step(t->ddp, err);
    if (st != ORC_OK) return st;
    t->step++;
    double dt = now_s() - t0;
    *info = (orc_train_step_info){.step = t->step, .total_steps = r->steps, .loss = loss, .lr = lr, .grad_norm = gn,
                                  .tokens_per_s = dt > 0 ? (double)r->accum * r->batch * r->seq / dt : 0,
                                  .val_loss = NAN, .val_bpb = NAN};
    return ORC_OK;
}

static orc_status evaluate(trainer *t, double *val_loss, double *val_bpb, orc_error *err) {
    orc_ctx *ctx = &t->ctx;
    const int64_t B = t->r.batch, T = t->r.seq, n = B * T;
    bool was = orc_set_no_grad(ctx, true);
    double nats = 0, bytes = 0, counted = 0;
    orc_status st = ORC_OK;
    for (int64_t e = 0; e < t->r.eval_batches && st == ORC_OK; e++) {
        if (t->mesh && e % t->mesh->data != t->mesh->data_rank) continue; /* data parallel: every D-th batch */
        st = val_batch(t, (uint64_t)e, err);
        if (st != ORC_OK) break;
        int64_t c = 0;
        double b = 0;
        for (int64_t i = 0; i < n; i++) {
            if (t->tg[i] == ORC_IGNORE_INDEX) continue;
            c++;
            b += t->id_bytes[t->tg[i]];
        }
        orc_tensor *ids = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->in, &ctx->err);
        orc_tensor *tg = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->tg, &ctx->err);
        orc_tensor *loss = ids && tg ? model_loss(t, ctx, ids, tg) : NULL;
        if (!loss || !orc_ctx_ok(ctx)) {
            st = ctx_error(t, "validation", err);
            break;
        }
        nats += (double)orc_f32(loss)[0] * (double)c;
        counted += (double)c;
        bytes += b;
        orc_ctx_reset(ctx);
    }
    orc_set_no_grad(ctx, was);
    if (t->mesh) st = dist_eval_reduce(t, &nats, &counted, &bytes, err);
    *val_loss = counted > 0 ? nats / counted : NAN;
    *val_bpb = bytes > 0 ? nats / (M_LN2 * bytes) : NAN;
    return st;
}

/* ---- reporting ------------------------------------------------------------------------ */

static void log_step(trainer *t, const orc_train_step_info *s) {
    if (!t->log) return;
    fprintf(t->log, "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.9g, \"tokens_per_s\": %.1f, \"grad_norm\": %.9g",
            (long long)s->step, s->loss, (double)s->lr, s->tokens_per_s, s->grad_norm);
    if (isfinite(s->val_loss)) fprintf(t->log, ", \"val_loss\": %.17g", s->val_loss);
    if (isfinite(s->val_bpb)) fprintf(t->log, ", \"val_bpb\": %.17g", s->val_bpb);
    if (t->moe_log && t->m->cfg.num_experts > 0) fputs(t->moe_log, t->log);
    fprintf(t->log, "}\n");
    fflush(t->log);
}

static const char *fmt_duration(char *buf, size_t cap, double s) {
    long v = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (v >= 3600) snprintf(buf, cap, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else if (v >= 60) snprintf(buf, cap, "%ldm%02lds", v / 60, v % 60);
    else snprintf(buf, cap, "%lds", v);
    return buf;
}

static void progress_line(trainer *t, const orc_train_step_info *s, double window_tps, double eta) {
    char eta_s[32], moe[96] = "";
    if (t->m->cfg.num_experts > 0)
        snprintf(moe, sizeof moe, " | moe drop %.1f%% H %.2f aux %.4f", 100 * t->moe_dropped, t->moe_entropy,
                 t->moe_aux);
    note(t, "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s%s | ETA %s\n", (long long)s->step,
         (long long)s->total_steps, s->loss, (double)s->lr, s->grad_norm, window_tps, moe,
         fmt_duration(eta_s, sizeof eta_s, eta));
}

/* ---- the run ---------------------------------------------------------------------------- */

static orc_status run_loop(trainer *t, orc_train_result *res, orc_error *err) {
    const orc_train_recipe *r = &t->r;
    const orc_train_opts *o = t->o;
    const double tokens_per_step = (double)r->accum * r->batch * r->seq;
    double start = now_s(), window_start = start, train_time = 0;
    int64_t window_steps = 0, first = t->step;
    while (t->step < r->steps) {
        orc_train_step_info info;
        double t0 = now_s();
        orc_status st = train_step(t, &info, err);
        if (st != ORC_OK) return st;
        train_time += now_s() - t0;
        window_steps++;
        bool last = t->step == r->steps || (o->stop_after > 0 && t->step >= o->stop_after);
        if (r->eval_every > 0 && (t->val_shard || t->sft_val.n) && (t->step % r->eval_every == 0 || last)) {
            st = evaluate(t, &info.val_loss, &info.val_bpb, err);
            if (st != ORC_OK) return st;
            t->last_val = info.val_loss;
            t->last_bpb = info.val_bpb;
            if (!isfinite(t->best_val) || info.val_loss < t->best_val) t->best_val = info.val_loss;
        }
        log_step(t, &info);
        if (o->on_step) o->on_step(o->user, &info);
        res->loss = info.loss;
        if (t->step % r->log_every == 0 || last) {
            double now = now_s(), per_step = (now - start) / (double)(t->step - first);
            progress_line(t, &info, window_steps * tokens_per_step / (now - window_start),
                          per_step * (double)(r->steps - t->step));
            window_start = now;
            window_steps = 0;
        }
        if (isfinite(info.val_loss))
            note(t, "eval step %lld | val_loss %.4f | val_bpb %.4f | best %.4f\n", (long long)t->step, info.val_loss,
                 info.val_bpb, t->best_val);
        bool interrupted = t->mesh ? t->dist_interrupted : o->interrupt && *o->interrupt;
        bool paused = o->stop_after > 0 && t->step >= o->stop_after && t->step < r->steps;
        if ((r->save_every > 0 && t->step % r->save_every == 0) || interrupted || paused) {
            st = save_checkpoint(t, err);
            if (st != ORC_OK) return st;
        }
        if (interrupted || paused) {
            res->interrupted = interrupted;
            res->paused = !interrupted;
            note(t, "%s at step %lld: checkpoint saved in %s (continue with --resume)\n",
                 interrupted ? "interrupted" : "paused", (long long)t->step, o->out_dir);
            break;
        }
    }
    res->tokens_per_s = train_time > 0 ? (double)(t->step - first) * tokens_per_step / train_time : 0;
    if (t->saved_step != t->step) {
        orc_status st = save_checkpoint(t, err);
        if (st != ORC_OK) return st;
        note(t, "saved step %lld in %s\n", (long long)t->step, o->out_dir);
    }
    return ORC_OK;
}

static void trainer_free(trainer *t) {
    if (t->log) fclose(t->log);
    orc_optim_free(t->opt);
    orc_ep_llm_free(t->ep); /* gives t->m its full expert tensors back */
    orc_llm_free(t->m);
    orc_lora_free(t->lora);
    orc_tokenizer_free(t->tok);
    orc_shard_close(t->train_shard);
    orc_shard_close(t->val_shard);
    free(t->sft_train.in);
    free(t->sft_train.tg);
    free(t->sft_val.in);
    free(t->sft_val.tg);
    free(t->in);
    free(t->tg);
    free(t->id_bytes);
    free(t->moe_log);
    free(t->decay);
    free(t->no_decay);
    if (t->act) orc_arena_destroy(t->act);
    orc_ddp_free(t->ddp);
    orc_ddp_free(t->ddp_ex);
    orc_tp_llm_free(t->tp);
    orc_mesh_free(t->mesh);
    orc_comm_free(t->own_world);
}

static orc_status setup(trainer *t, orc_train_result *res, orc_error *err) {
    const orc_train_opts *o = t->o;
    json_t *state = NULL;
    int64_t state_step = 0;
    orc_status st = ORC_OK;
    if (o->comm || o->mesh) st = dist_setup_mesh(t, err); /* before anything a rank could fail alone */
    if (st != ORC_OK) return st;
    if (o->resume) {
        if (!t->mesh || t->world->rank == 0) st = orc_train_recover_pending(o->out_dir, err); /* one renamer */
        st = dist_agree(t, st, err);
        if (st == ORC_OK) st = read_state(o->out_dir, &state, &state_step, err);
    } else {
        char path[PATH_CAP];
        join(path, o->out_dir, "trainer_state.json");
        if (file_exists(path))
            st = orc_error_set(err, ORC_EINVAL, "%s already holds a checkpoint; pass --resume to continue it or "
                               "choose another --out", o->out_dir);
    }
    if (st == ORC_OK) st = setup_recipe(t, state, err);
    if (st == ORC_OK) st = setup_tokenizer(t, err);
    if (st == ORC_OK) st = setup_model(t, state_step, err);
    if (st == ORC_OK) st = setup_data(t, err);
    if (t->mesh) { /* every rank reaches these checks together, failed or not */
        st = dist_agree(t, st, err);
        if (st == ORC_OK) st = dist_check(t, err);
    }
    if (st == ORC_OK) st = setup_optim(t, err);
    if (st == ORC_OK && o->resume) {
        st = load_optim_state(t, state_step, err);
        json_t *b = json_object_get(state, "best_val_loss");
        if (json_is_number(b)) t->best_val = json_number_value(b);
        t->step = t->saved_step = state_step;
        t->tokenizer_saved = true;
        res->start_step = state_step;
    }
    json_decref(state);
    if (t->mesh) { /* identical parameters everywhere: rank 0's */
        st = dist_agree(t, st, err);
        if (st == ORC_OK) st = orc_ddp_broadcast_params(t->ddp, err);
        if (st == ORC_OK && t->ddp_ex) st = orc_ddp_broadcast_params(t->ddp_ex, err);
    }
    if (st != ORC_OK) return st;
    t->act_chunk = (size_t)16 << 20;
    t->act = orc_arena_create(t->act_chunk);
    if (!t->act) return orc_error_set(err, ORC_ENOMEM, "train: out of memory for the activation arena");
    orc_ctx_init(&t->ctx, t->act, t->r.seed);
    t->ctx.training = t->lora != NULL; /* adapter dropout; the base model has none */
    if (o->log_path) {
        t->log = fopen(o->log_path, o->resume ? "a" : "w");
        if (!t->log) return orc_error_set(err, ORC_EIO, "%s: cannot open the log: %s", o->log_path, strerror(errno));
    }
    return ORC_OK;
}

orc_status orc_train_run(const orc_train_opts *opts, orc_train_result *res, orc_error *err) {
    orc_train_result local_res;
    if (!res) res = &local_res;
    memset(res, 0, sizeof *res);
    res->loss = res->val_loss = res->val_bpb = NAN;
    if (!opts || !opts->out_dir || !opts->out_dir[0])
        return orc_error_set(err, ORC_EINVAL, "train: no output directory (--out DIR)");
    snprintf(res->checkpoint, sizeof res->checkpoint, "%s", opts->out_dir);
    trainer *t = calloc(1, sizeof *t);
    if (!t) return orc_error_set(err, ORC_ENOMEM, "train: out of memory");
    t->o = opts;
    t->best_val = t->last_val = t->last_bpb = NAN;
    orc_status st = setup(t, res, err);
    if (st == ORC_OK) {
        const orc_llm_config *c = &t->m->cfg;
        note(t, "model: %lld parameters (dim %lld, %lld layers, vocab %lld); %s: %s; %d x %d tokens x %d accum; "
             "steps %lld%s\n", (long long)orc_llm_config_num_params(c), (long long)c->hidden_size,
             (long long)c->num_hidden_layers, (long long)c->vocab_size, t->r.sft ? "sft" : "data", t->r.train,
             t->r.batch, t->r.seq, t->r.accum, (long long)t->r.steps, opts->resume ? " (resumed)" : "");
        if (c->num_experts > 0)
            note(t, "moe: %lld experts (%s, top_k %lld, capacity factor %g) every %lld layers; %lld parameters "
                 "active per token\n", (long long)c->num_experts,
                 orc_moe_router_name((orc_moe_router)c->moe_router), (long long)c->moe_top_k, c->capacity_factor,
                 (long long)c->moe_every, (long long)orc_llm_config_active_params(c));
        if (t->lora) {
            int64_t n = 0;
            for (int i = 0; i < t->lora->n_params; i++) n += t->lora->params[i]->numel;
            note(t, "lora: rank %d, alpha %g, dropout %g; %lld trainable parameters; base %s frozen (no gradients)\n",
                 t->lora->cfg.rank, t->lora->cfg.alpha, t->lora->cfg.dropout, (long long)n,
                 t->r.recover_from[0] ? t->r.recover_from : t->r.init_from[0] ? t->r.init_from : "(from seed)");
        }
        if (t->step >= t->r.steps) note(t, "%s is already at step %lld of %lld\n", opts->out_dir,
                                         (long long)t->step, (long long)t->r.steps);
        st = run_loop(t, res, err);
    }
    res->step = t->step;
    res->val_loss = t->last_val;
    res->val_bpb = t->last_bpb;
    trainer_free(t);
    free(t);
    return st;
}
