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
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "orchard/data.h"
#include "orchard/fileio.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "train_internal.h"

/* Keys that keep the validation windows and the SFT row draws apart from the
 * training windows drawn with the recipe's seed. */
#define EVAL_KEY 0x6576616c5f736574ull
#define SFT_KEY 0x7366745f726f7773ull
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
    if (t->r.min_lr > t->r.lr) t->r.min_lr = t->r.lr; /* --lr below the recipe's min_lr: constant after warmup */
    orc_status st = orc_train_recipe_check(&t->r, err);
    if (st == ORC_OK && have_saved && o->recipe) note_changes(t, &saved);
    return st;
}

static orc_status setup_tokenizer(trainer *t, orc_error *err) {
    char path[PATH_CAP];
    if (t->o->resume) join(path, t->o->out_dir, "tokenizer.json");
    else snprintf(path, sizeof path, "%s", t->r.tokenizer[0] ? t->r.tokenizer : t->r.init_from);
    orc_error local = {0};
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
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].a != f[i].b)
            return orc_error_set(err, ORC_EINVAL, "%s: the checkpoint in %s has %s = %lld but the recipe asks for %lld",
                                 t->r.path, t->o->out_dir, f[i].key, (long long)f[i].a, (long long)f[i].b);
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

static orc_status setup_model(trainer *t, int64_t state_step, orc_error *err) {
    orc_train_recipe *r = &t->r;
    if (t->o->resume) {
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

static orc_status setup_optim(trainer *t, orc_error *err) {
    orc_llm *m = t->m;
    t->decay = calloc((size_t)m->n_params, sizeof *t->decay);
    t->no_decay = calloc((size_t)m->n_params, sizeof *t->no_decay);
    if (!t->decay || !t->no_decay) return orc_error_set(err, ORC_ENOMEM, "train: out of memory");
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i]->ndim >= 2) t->decay[t->n_decay++] = m->params[i];
        else t->no_decay[t->n_no_decay++] = m->params[i];
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
    for (int i = 0; i < n && st == ORC_OK; i++) {
        orc_optim_state b = orc_optim_state_get(t->opt, i);
        if (!orc_st_find(f, b.name))
            st = orc_error_set(err, ORC_EFORMAT, "%s: missing optimizer state %s", path, b.name);
        else
            st = orc_st_read_f32(f, b.name, b.data, b.numel, err);
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
    int n = orc_optim_state_count(t->opt);
    orc_st_entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
    if (!e) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < n; i++) {
        orc_optim_state b = orc_optim_state_get(t->opt, i);
        e[i].name = b.name;
        e[i].dtype = ORC_ST_F32;
        e[i].ndim = b.param->ndim;
        for (int d = 0; d < b.param->ndim; d++) e[i].shape[d] = b.param->shape[d];
        e[i].data = b.data;
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

static orc_status save_checkpoint(trainer *t, orc_error *err) {
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

static orc_status micro_step(trainer *t, float scale, double *loss_out, orc_error *err) {
    orc_ctx *ctx = &t->ctx;
    const int64_t B = t->r.batch, T = t->r.seq;
    orc_tensor *ids = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->in, &ctx->err);
    orc_tensor *tg = orc_tensor_wrap(ctx->arena, ORC_I32, 2, ORC_SHAPE(B, T), t->tg, &ctx->err);
    orc_tensor *loss = ids && tg ? orc_llm_loss(ctx, t->m, ids, tg) : NULL;
    if (loss) *loss_out = orc_f32(loss)[0];
    if (loss && scale != 1.0f) loss = orc_scale(ctx, loss, scale);
    if (!loss || !orc_ctx_ok(ctx)) return ctx_error(t, "forward", err);
    if (orc_backward(ctx, loss) != ORC_OK) return ctx_error(t, "backward", err);
    size_t peak = orc_arena_used(ctx->arena);
    orc_ctx_reset(ctx);
    return size_arena(t, peak, err);
}

static orc_status train_step(trainer *t, orc_train_step_info *info, orc_error *err) {
    const orc_train_recipe *r = &t->r;
    double t0 = now_s(), loss_sum = 0;
    orc_optim_zero_grad(t->opt);
    for (int k = 0; k < r->accum; k++) {
        double loss = 0;
        orc_status st = train_batch(t, (uint64_t)t->step * (uint64_t)r->accum + (uint64_t)k, err);
        if (st == ORC_OK) st = micro_step(t, 1.0f / (float)r->accum, &loss, err);
        if (st != ORC_OK) return st;
        loss_sum += loss;
    }
    double gn = r->grad_clip > 0 ? orc_optim_clip_grad_norm(t->opt, r->grad_clip)
                                 : orc_grad_norm(t->m->params, t->m->n_params);
    double loss = loss_sum / r->accum;
    if (!isfinite(loss) || !isfinite(gn))
        return orc_error_set(err, ORC_ERANGE, "step %lld: the loss (%g) or the gradient norm (%g) is not finite; "
                             "try a lower lr than %g", (long long)t->step + 1, loss, gn, r->lr);
    float lr = orc_lr_at(&t->sched, t->step);
    orc_status st = orc_optim_step(t->opt, lr, err);
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
        orc_tensor *loss = ids && tg ? orc_llm_loss(ctx, t->m, ids, tg) : NULL;
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
    char eta_s[32];
    note(t, "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | ETA %s\n", (long long)s->step,
         (long long)s->total_steps, s->loss, (double)s->lr, s->grad_norm, window_tps,
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
        bool interrupted = o->interrupt && *o->interrupt;
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
    orc_llm_free(t->m);
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
    free(t->decay);
    free(t->no_decay);
    if (t->act) orc_arena_destroy(t->act);
}

static orc_status setup(trainer *t, orc_train_result *res, orc_error *err) {
    const orc_train_opts *o = t->o;
    json_t *state = NULL;
    int64_t state_step = 0;
    orc_status st = ORC_OK;
    if (o->resume) {
        st = orc_train_recover_pending(o->out_dir, err);
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
    if (st != ORC_OK) return st;
    t->act_chunk = (size_t)16 << 20;
    t->act = orc_arena_create(t->act_chunk);
    if (!t->act) return orc_error_set(err, ORC_ENOMEM, "train: out of memory for the activation arena");
    orc_ctx_init(&t->ctx, t->act, t->r.seed);
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
