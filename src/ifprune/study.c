/* The IFPruning study (orc_ifp_study): the result table at laptop
 * scale. It builds everything it needs under OUT: the task suite
 * (orchard/tasks.h), a stage-1 corpus of State of the Union documents (each
 * prefixed with its year, president and party, so the facts domain can be
 * learned in pretraining), a BPE tokenizer trained on both, and three models
 * trained by orc_ifp_train on the same LM token budget: dense-full (FFN K),
 * dense-small (FFN k = K/3) and IFPruning (FFN K, k active per layer). Each
 * is scored by exact match on held-out test items per domain (greedy
 * decoding through the normal generator; IFPruning gathers a compact model
 * per prompt), decode speed is timed, the mask overlap is measured on the
 * same prompts, and OUT/results.json + OUT/README.md are written. */
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
#include <unistd.h>

#include "orchard/chat.h"
#include "orchard/data.h"
#include "orchard/fileio.h"
#include "orchard/generate.h"
#include "orchard/ifprune.h"
#include "orchard/tasks.h"

void orc_ifp_study_opts_default(orc_ifp_study_opts *o) {
    memset(o, 0, sizeof *o);
    /* The documented run (docs/ifprune.md, "The study"): difficulty-1 items
     * and 6000 steps, where 64-wide models learn some math and code (not only
     * facts), in some seeds, so FFN width can show beyond facts; 150 test
     * items per domain (fewer where the test split is smaller) so that the
     * test-sampling standard error of the IFPruning - dense-small difference
     * is about 2 points (the seed-to-seed spread is larger, see the doc). */
    o->n_per_domain = 1500;
    o->eval_per_domain = 150;
    o->min_difficulty = 1;
    o->max_difficulty = 1;
    o->hidden = 64;
    o->layers = 2;
    o->ffn = 576;
    o->vocab = 768;
    o->stage1_steps = 600;
    o->stage2_steps = 5400;
    o->batch = 8;
    o->seq = 128;
    o->pred_seq = 32;
    o->lr = 3e-3;
    o->max_new_tokens = 96;
    o->speed_rounds = 20;
    o->speed_tokens = 128;
    o->seed = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Process CPU time: what a decode step costs, whatever else the machine runs. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void note(const orc_ifp_study_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const orc_ifp_study_opts *o, const char *fmt, ...) {
    if (!o->progress) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(o->progress, fmt, ap);
    va_end(ap);
    fflush(o->progress);
}

static void pjoin(char *out, size_t cap, const char *dir, const char *file) {
    if (snprintf(out, cap, "%s/%s", dir, file) >= (int)cap) out[cap - 1] = '\0';
}

/* A growing list of malloc'ed strings. */
typedef struct strlist {
    char **s;
    size_t n, cap;
} strlist;

static int sl_push(strlist *l, char *s) {
    if (!s) return -1;
    if (l->n == l->cap) {
        size_t c = l->cap ? 2 * l->cap : 256;
        char **p = realloc(l->s, c * sizeof *p);
        if (!p) {
            free(s);
            return -1;
        }
        l->s = p;
        l->cap = c;
    }
    l->s[l->n++] = s;
    return 0;
}

static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* One test item kept for scoring. */
typedef struct eval_item {
    char *id, *instruction, *prompt, *answer;
    int domain;
    bool held_out; /* a phrasing of the instruction that training never showed */
} eval_item;

static orc_status read_jsonl(const char *path, orc_status (*fn)(void *, json_t *, orc_error *), void *user,
                             orc_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return orc_error_set(err, ORC_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    orc_status st = ORC_OK;
    long no = 0;
    while (st == ORC_OK && getline(&line, &cap, fp) > 0) {
        no++;
        if (line[0] == '\n') continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!json_is_object(j)) st = orc_error_set(err, ORC_EFORMAT, "%s:%ld: not a JSON object", path, no);
        else st = fn(user, j, err);
        json_decref(j);
    }
    free(line);
    fclose(fp);
    return st;
}

static const char *jstr(json_t *j, const char *key) {
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static orc_status add_train_text(void *user, json_t *j, orc_error *err) {
    (void)err;
    strlist *l = user;
    if (sl_push(l, dupf("%s\n\n%s\n%s", jstr(j, "instruction"), jstr(j, "input"), jstr(j, "solution"))))
        return orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    return ORC_OK;
}

/* The stage-1 documents: a header with the address's metadata, then the
 * start of its text. */
static orc_status add_sotu_doc(void *user, json_t *j, orc_error *err) {
    strlist *l = user;
    json_t *y = json_object_get(j, "year");
    const char *text = jstr(j, "text");
    int keep = (int)(strlen(text) < 1500 ? strlen(text) : 1500);
    if (sl_push(l, dupf("The %lld State of the Union address was given by %s (%s).\n%.*s",
                        (long long)json_integer_value(y), jstr(j, "name"), jstr(j, "party"), keep, text)))
        return orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    return ORC_OK;
}

typedef struct eval_set {
    eval_item *items;
    int64_t n, cap;
    int64_t per_domain[ORC_TASK_NDOMAINS];
    int64_t limit;
} eval_set;

static orc_status add_eval(void *user, json_t *j, orc_error *err) {
    eval_set *e = user;
    int d = orc_task_domain_parse(jstr(j, "domain"));
    if (d < 0 || e->per_domain[d] >= e->limit) return ORC_OK;
    if (e->n == e->cap) {
        int64_t c = e->cap ? 2 * e->cap : 64;
        eval_item *p = realloc(e->items, sizeof *p * (size_t)c);
        if (!p) return orc_error_set(err, ORC_ENOMEM, "study: out of memory");
        e->items = p;
        e->cap = c;
    }
    const char *ins = jstr(j, "instruction"), *inp = jstr(j, "input");
    eval_item *it = &e->items[e->n];
    it->id = strdup(jstr(j, "id"));
    it->instruction = strdup(ins);
    it->prompt = dupf("%s%s%s", ins, *inp ? "\n\n" : "", inp);
    it->answer = strdup(jstr(j, "answer"));
    it->domain = d;
    it->held_out = json_is_true(json_object_get(j, "held_out_phrasing"));
    if (!it->id || !it->instruction || !it->prompt || !it->answer)
        return orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    e->n++;
    e->per_domain[d]++;
    return ORC_OK;
}

static void eval_set_free(eval_set *e) {
    for (int64_t i = 0; i < e->n; i++) {
        free(e->items[i].id);
        free(e->items[i].instruction);
        free(e->items[i].prompt);
        free(e->items[i].answer);
    }
    free(e->items);
}

/* What the predictor reads for an item: the instruction, or the whole user
 * turn when the study trained it that way (o->pred_reads_input). */
static const char *pred_text(bool whole_turn, const eval_item *it) { return whole_turn ? it->prompt : it->instruction; }

typedef struct arm_result {
    const char *name;
    int64_t correct[ORC_TASK_NDOMAINS], total[ORC_TASK_NDOMAINS];
    int64_t correct_held, total_held; /* the items with a held-out phrasing (all domains) */
    double decode_tokens, decode_seconds, select_seconds, train_seconds, train_loss, train_tokens;
    double bench_tps;     /* best decode tokens/s (wall) of the back-to-back speed rounds */
    double bench_cpu_tps; /* best decode tokens per CPU second of those rounds */
    int64_t ffn, active;
} arm_result;

/* A baseline arm from o->baselines (a finished study with the same settings): its model directory is linked
 * into this study (so scoring and the speed rounds find it where they look) and its training numbers are read
 * from that study's results.json. The tokenizer must be this study's, byte for byte, or the data differ. */
static orc_status link_baseline(const orc_ifp_study_opts *o, const char *name, const char *out, arm_result *arm,
                                orc_error *err) {
    char src[4096], a[4200], b[4200];
    if (snprintf(src, sizeof src, "%s/%s", o->baselines, name) >= (int)sizeof src)
        return orc_error_set(err, ORC_EINVAL, "study: --baselines path too long");
    snprintf(a, sizeof a, "%s/tokenizer.json", src);
    snprintf(b, sizeof b, "%s/init_full/tokenizer.json", o->out_dir);
    orc_mapped_file fa, fb;
    if (orc_file_map(a, "baseline tokenizer", &fa, err) != ORC_OK) return err->code;
    if (orc_file_map(b, "tokenizer", &fb, err) != ORC_OK) {
        orc_file_unmap(&fa);
        return err->code;
    }
    const bool same = fa.len == fb.len && (fa.len == 0 || memcmp(fa.data, fb.data, fa.len) == 0);
    orc_file_unmap(&fa);
    orc_file_unmap(&fb);
    if (!same)
        return orc_error_set(err, ORC_EINVAL, "study: --baselines %s was run on other data (its tokenizer differs "
                             "from this study's; use the same --seed, --n, --difficulty, --vocab and --corpus)",
                             o->baselines);
    char abs[PATH_MAX], old[PATH_MAX];
    if (!realpath(src, abs)) return orc_error_set(err, ORC_EIO, "%s: %s", src, strerror(errno));
    if (symlink(abs, out) != 0) {
        const int e = errno;
        if (e != EEXIST) return orc_error_set(err, ORC_EIO, "%s: cannot link to %s: %s", out, abs, strerror(e));
        /* a rerun into the same directory finds its own link; anything else there is not this baseline */
        const ssize_t n = readlink(out, old, sizeof old - 1);
        if (n < 0 || (old[n] = '\0', strcmp(old, abs) != 0))
            return orc_error_set(err, ORC_EIO, "%s exists and is not a link to %s", out, abs);
    }
    snprintf(a, sizeof a, "%s/results.json", o->baselines);
    json_error_t je;
    json_t *r = json_load_file(a, 0, &je);
    json_t *models = r ? json_object_get(r, "models") : NULL;
    for (size_t i = 0; models && i < json_array_size(models); i++) {
        json_t *m = json_array_get(models, i);
        const char *name_m = json_string_value(json_object_get(m, "model"));
        if (!name_m || strcmp(name_m, arm->name) != 0) continue;
        arm->train_seconds = json_number_value(json_object_get(m, "train_seconds"));
        arm->train_loss = json_number_value(json_object_get(m, "final_train_loss"));
        arm->train_tokens = json_number_value(json_object_get(m, "train_tokens"));
    }
    json_decref(r);
    note(o, "study: %s from %s (not retrained)\n", arm->name, abs);
    return ORC_OK;
}

/* Greedy answer for one prompt with generator g; appends a prediction line. */
static orc_status answer_one(orc_generator *g, const orc_tokenizer *tok, const eval_item *it, int64_t max_new,
                             arm_result *r, FILE *preds, orc_error *err) {
    orc_chat_msg msg = {"user", it->prompt};
    int32_t *ids = NULL;
    size_t n = 0;
    orc_status st = orc_chat_encode(tok, &msg, 1, true, &ids, NULL, &n, err);
    if (st != ORC_OK) return st;
    int32_t stops[4];
    size_t ns = orc_chat_stop_ids(tok, stops, 4);
    orc_gen_opts go;
    orc_gen_opts_default(&go);
    go.sampler.temperature = 0;
    go.max_tokens = max_new;
    go.stop_ids = stops;
    go.n_stop_ids = ns < 4 ? ns : 4;
    int64_t room = orc_generator_context(g) - (int64_t)n - 1;
    if (room < 1) {
        free(ids);
        r->total[it->domain]++; /* a prompt that does not fit counts as wrong */
        r->total_held += it->held_out;
        return ORC_OK;
    }
    if (go.max_tokens > room) go.max_tokens = room;
    orc_gen_result res;
    orc_generator_reset(g);
    st = orc_generate(g, ids, n, &go, &res, err);
    free(ids);
    if (st != ORC_OK) return st;
    const bool ok = orc_task_correct(it->answer, res.text);
    r->total[it->domain]++;
    r->correct[it->domain] += ok;
    r->total_held += it->held_out;
    r->correct_held += it->held_out && ok;
    r->decode_tokens += (double)res.decode_tokens;
    r->decode_seconds += res.decode_seconds;
    if (preds) {
        json_t *j = json_pack("{s:s, s:s}", "id", it->id, "output", res.text);
        char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (line) fprintf(preds, "%s\n", line);
        free(line);
        json_decref(j);
    }
    orc_gen_result_free(&res);
    return ORC_OK;
}

static orc_status eval_dense(const char *dir, const eval_set *e, int64_t max_new, arm_result *r, const char *preds_path,
                             orc_error *err) {
    orc_llm *m = NULL;
    orc_tokenizer *tok = NULL;
    orc_status st = orc_model_dir_load(dir, &m, &tok, err);
    if (st != ORC_OK) return st;
    orc_generator *g = orc_generator_new(m, tok, 0, err);
    FILE *preds = fopen(preds_path, "w");
    if (!g) st = err ? err->code : ORC_EINVAL;
    for (int64_t i = 0; i < e->n && st == ORC_OK; i++) st = answer_one(g, tok, &e->items[i], max_new, r, preds, err);
    if (preds) fclose(preds);
    orc_generator_free(g);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    return st;
}

static orc_status eval_ifprune(const char *dir, const eval_set *e, bool whole_turn, int64_t max_new, arm_result *r,
                               const char *preds_path, orc_error *err) {
    orc_ifp_model *im = orc_ifp_load(dir, false, err);
    if (!im) return err ? err->code : ORC_EIO;
    const int64_t L = im->pred->cfg.lm_layers, k = im->pred->cfg.k;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(L * k));
    float *vals = malloc(sizeof(float) * (size_t)(L * k));
    FILE *preds = fopen(preds_path, "w");
    orc_status st = idx && vals ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    for (int64_t i = 0; i < e->n && st == ORC_OK; i++) {
        double t0 = now_s();
        st = orc_ifp_select(im->pred, im->tok, pred_text(whole_turn, &e->items[i]), idx, vals, err);
        orc_llm *cm = st == ORC_OK ? orc_ifp_compact(im->lm, idx, vals, k, err) : NULL;
        r->select_seconds += now_s() - t0;
        if (!cm) {
            if (st == ORC_OK) st = err ? err->code : ORC_EINVAL;
            break;
        }
        orc_generator *g = orc_generator_new(cm, im->tok, 0, err);
        if (!g) st = err ? err->code : ORC_EINVAL;
        else st = answer_one(g, im->tok, &e->items[i], max_new, r, preds, err);
        orc_generator_free(g);
        orc_llm_free(cm);
    }
    if (preds) fclose(preds);
    free(idx);
    free(vals);
    orc_ifp_model_free(im);
    return st;
}

/* Decode speed of the three models in one process, back to back: each round
 * decodes the same prompt greedily for a fixed number of tokens (no stop ids)
 * with every model, the order rotating per round, and each model keeps its
 * best round, counted in decode steps per second of process CPU time (and,
 * for the record, of wall time). Load on a shared machine then hits all three
 * alike and hardly moves the CPU-time numbers, which the speeds seen while
 * scoring (minutes apart, different output lengths) do not guarantee. IFPruning runs the compact model gathered for the prompt's
 * instruction: the predictor runs once per prompt, so its cost is prefill-side
 * and reported separately (select_seconds). */
static orc_status speed_bench(const orc_ifp_study_opts *o, const eval_set *e, arm_result arms[3], orc_error *err) {
    if (e->n < 1 || o->speed_rounds < 1 || o->speed_tokens < 1) return ORC_OK;
    orc_llm *m[3] = {NULL, NULL, NULL};
    orc_tokenizer *toks[2] = {NULL, NULL};
    orc_generator *g[3] = {NULL, NULL, NULL};
    orc_ifp_model *im = NULL;
    int32_t *idx = NULL, *ids = NULL;
    float *vals = NULL;
    size_t n = 0;
    char dir[4096];
    const char *dirs[2] = {"dense_full", "dense_small"};
    orc_status st = ORC_OK;
    for (int a = 0; a < 2 && st == ORC_OK; a++) {
        pjoin(dir, sizeof dir, o->out_dir, dirs[a]);
        st = orc_model_dir_load(dir, &m[a], &toks[a], err);
    }
    if (st == ORC_OK) {
        pjoin(dir, sizeof dir, o->out_dir, "ifprune");
        im = orc_ifp_load(dir, false, err);
        if (!im) st = err ? err->code : ORC_EIO;
    }
    if (st == ORC_OK) {
        const int64_t L = im->pred->cfg.lm_layers, k = im->pred->cfg.k;
        idx = malloc(sizeof(int32_t) * (size_t)(L * k));
        vals = malloc(sizeof(float) * (size_t)(L * k));
        if (!idx || !vals) st = orc_error_set(err, ORC_ENOMEM, "study: out of memory");
        if (st == ORC_OK)
            st = orc_ifp_select(im->pred, im->tok, pred_text(o->pred_reads_input, &e->items[0]), idx, vals, err);
        if (st == ORC_OK && !(m[2] = orc_ifp_compact(im->lm, idx, vals, k, err))) st = err ? err->code : ORC_EINVAL;
    }
    for (int a = 0; a < 3 && st == ORC_OK; a++)
        if (!(g[a] = orc_generator_new(m[a], a < 2 ? toks[a] : im->tok, 0, err))) st = err ? err->code : ORC_EINVAL;
    orc_chat_msg msg = {"user", e->items[0].prompt};
    if (st == ORC_OK) st = orc_chat_encode(im->tok, &msg, 1, true, &ids, NULL, &n, err);
    int64_t max_tok = o->speed_tokens;
    for (int a = 0; a < 3 && st == ORC_OK; a++) {
        int64_t room = orc_generator_context(g[a]) - (int64_t)n - 1;
        if (room < max_tok) max_tok = room;
    }
    if (st == ORC_OK && max_tok < 1)
        st = orc_error_set(err, ORC_EINVAL, "study: the speed prompt (%zu tokens) leaves no room to decode", n);
    for (int r = 0; r < o->speed_rounds && st == ORC_OK; r++)
        for (int j = 0; j < 3 && st == ORC_OK; j++) {
            const int a = (r + j) % 3;
            /* One token (the prefill) then max_tok: the difference of their
             * CPU times is the decode steps' alone. */
            double cpu[2] = {0, 0};
            int64_t steps[2] = {0, 0};
            for (int pass = 0; pass < 2 && st == ORC_OK; pass++) {
                orc_gen_opts go;
                orc_gen_opts_default(&go);
                go.sampler.temperature = 0;
                go.max_tokens = pass == 0 ? 1 : max_tok;
                orc_gen_result res;
                orc_generator_reset(g[a]);
                const double c0 = cpu_s();
                st = orc_generate(g[a], ids, n, &go, &res, err);
                cpu[pass] = cpu_s() - c0;
                if (st != ORC_OK) break;
                steps[pass] = res.decode_tokens;
                if (pass == 1 && res.decode_seconds > 0) {
                    const double t = (double)res.decode_tokens / res.decode_seconds;
                    if (t > arms[a].bench_tps) arms[a].bench_tps = t;
                }
                orc_gen_result_free(&res);
            }
            if (st == ORC_OK && steps[1] > steps[0] && cpu[1] > cpu[0]) {
                const double t = (double)(steps[1] - steps[0]) / (cpu[1] - cpu[0]);
                if (t > arms[a].bench_cpu_tps) arms[a].bench_cpu_tps = t;
            }
        }
    free(ids);
    free(idx);
    free(vals);
    for (int a = 0; a < 3; a++) {
        orc_generator_free(g[a]);
        orc_llm_free(m[a]);
    }
    for (int a = 0; a < 2; a++) orc_tokenizer_free(toks[a]);
    orc_ifp_model_free(im);
    return st;
}

static double acc(const arm_result *r, int d) { return r->total[d] ? 100.0 * (double)r->correct[d] / (double)r->total[d] : NAN; }

static double mean_acc(const arm_result *r, unsigned dmask) {
    double s = 0;
    int n = 0;
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
        if (dmask >> d & 1) {
            s += acc(r, d);
            n++;
        }
    return n ? s / n : NAN;
}

/* Standard error (points) of mean_acc(a) - mean_acc(b): the domains' binomial
 * variances, the two models treated as independent (they answer the same
 * items, so this overstates the error a little). */
static double gain_se(const arm_result *a, const arm_result *b, unsigned dmask) {
    double v = 0;
    int n = 0;
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
        if (dmask >> d & 1) {
            const double pa = acc(a, d) / 100, pb = acc(b, d) / 100;
            if (a->total[d] > 0) v += pa * (1 - pa) / (double)a->total[d];
            if (b->total[d] > 0) v += pb * (1 - pb) / (double)b->total[d];
            n++;
        }
    return n ? 100.0 * sqrt(v) / n : NAN;
}

static double tps(const arm_result *r) { return r->decode_seconds > 0 ? r->decode_tokens / r->decode_seconds : 0; }
/* The speed the table and the target use: tokens per CPU second of the
 * back-to-back rounds when they ran (wall-clock speeds on a shared machine
 * measure the load as much as the model). */
static double speed(const arm_result *r) {
    return r->bench_cpu_tps > 0 ? r->bench_cpu_tps : r->bench_tps > 0 ? r->bench_tps : tps(r);
}

static orc_status write_text(const char *path, const char *text, orc_error *err) {
    return orc_write_file_atomic(path, text, strlen(text), "study", err);
}

orc_status orc_ifp_study_speed(const orc_ifp_study_opts *o, orc_error *err) {
    if (!o->out_dir) return orc_error_set(err, ORC_EINVAL, "study: --out DIR is required");
    if (o->speed_rounds < 1)
        return orc_error_set(err, ORC_EINVAL, "study: --speed-rounds %d: at least 1 round is needed", o->speed_rounds);
    char path[4096], tasks_dir[4096];
    pjoin(tasks_dir, sizeof tasks_dir, o->out_dir, "tasks");
    pjoin(path, sizeof path, tasks_dir, "test.jsonl");
    eval_set ev = {.limit = 1}; /* the bench decodes the first test prompt only */
    arm_result arms[3] = {{.name = "dense-full"}, {.name = "dense-small"}, {.name = "ifprune"}};
    orc_status st = read_jsonl(path, add_eval, &ev, err);
    if (st == ORC_OK && ev.n < 1) st = orc_error_set(err, ORC_EFORMAT, "%s: no test items", path);
    /* The predictor reads what it read in the study (results.json's
     * settings), so the compact model timed is the one that was scored. */
    orc_ifp_study_opts so = *o;
    pjoin(path, sizeof path, o->out_dir, "results.json");
    json_t *rj = json_load_file(path, 0, NULL);
    const char *reads = json_string_value(json_object_get(json_object_get(rj, "settings"), "predictor_reads"));
    if (reads) so.pred_reads_input = strcmp(reads, "prompt") == 0;
    json_decref(rj);
    if (st == ORC_OK) st = speed_bench(&so, &ev, arms, err);
    eval_set_free(&ev);
    if (st != ORC_OK) return st;
    const double ratio = speed(&arms[1]) > 0 ? speed(&arms[2]) / speed(&arms[1]) : 0;
    const double wall_ratio = arms[1].bench_tps > 0 ? arms[2].bench_tps / arms[1].bench_tps : 0;
    json_t *j = json_pack("{s:[s,s,s], s:i, s:I, s:[f,f,f], s:f, s:[f,f,f], s:f}", "models", "dense-full",
                          "dense-small", "ifprune", "rounds", o->speed_rounds, "tokens", (json_int_t)o->speed_tokens,
                          "cpu_tokens_per_s", speed(&arms[0]), speed(&arms[1]), speed(&arms[2]),
                          "ifprune_vs_dense_small", ratio, "wall_tokens_per_s", arms[0].bench_tps, arms[1].bench_tps,
                          arms[2].bench_tps, "wall_ifprune_vs_dense_small", wall_ratio);
    char *js = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    pjoin(path, sizeof path, o->out_dir, "speed.json");
    st = js ? write_text(path, js, err) : orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    free(js);
    json_decref(j);
    note(o, "decode tokens per CPU second, best of %d rounds of %lld tokens: dense-full %.0f, dense-small %.0f, "
            "ifprune %.0f (%.2fx dense-small); wall clock: %.0f, %.0f, %.0f (%.2fx)\n", o->speed_rounds,
         (long long)o->speed_tokens, speed(&arms[0]), speed(&arms[1]), speed(&arms[2]), ratio, arms[0].bench_tps,
         arms[1].bench_tps, arms[2].bench_tps, wall_ratio);
    return st;
}

orc_status orc_ifp_study(const orc_ifp_study_opts *o, orc_error *err) {
    const double t_start = now_s();
    if (!o->out_dir) return orc_error_set(err, ORC_EINVAL, "study: --out DIR is required");
    if (o->ffn < 3 || o->hidden < 8 || o->layers < 1)
        return orc_error_set(err, ORC_EINVAL, "study: ffn %lld (>= 3), hidden %lld (>= 8) and layers %lld (>= 1) are "
                             "too small", (long long)o->ffn, (long long)o->hidden, (long long)o->layers);
    /* Checked before hours of baseline training, not when IFPruning's turn comes. */
    orc_status sst = orc_ifp_check_schedule(o->stage1_steps + o->stage2_steps, o->dense_steps, o->anneal_steps,
                                            o->predictor_steps, err);
    if (sst != ORC_OK) return sst;
    if ((sst = orc_ifp_check_balance(o->balance, err)) != ORC_OK) return sst;
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create: %s", o->out_dir, strerror(errno));
    char path[4096], path2[4096], tasks_dir[4096], corpus_bin[4096];
    orc_status st = ORC_OK;
    strlist texts = {0}, docs = {0};
    eval_set ev = {.limit = o->eval_per_domain};
    orc_tokenizer *tok = NULL;
    orc_task_facts *facts = NULL;
    char *md = NULL;
    json_t *res_json = NULL;

    /* 1. the task suite; facts only when the corpus is there. */
    char sotu[4096] = "";
    if (o->corpus_path) snprintf(sotu, sizeof sotu, "%s", o->corpus_path);
    else orc_task_facts_default_path(sotu, sizeof sotu, NULL);
    orc_error ferr = {0};
    unsigned dmask = (1u << ORC_TASK_NDOMAINS) - 1;
    if (sotu[0]) facts = orc_task_facts_load(sotu, &ferr);
    if (!facts) {
        dmask &= ~(1u << ORC_TASK_FACTS);
        note(o, "study: no State of the Union corpus (%s); leaving out the facts domain\n", ferr.msg);
    }
    orc_task_gen gen = {.seed = o->seed, .facts = facts, .min_difficulty = o->min_difficulty,
                        .max_difficulty = o->max_difficulty};
    pjoin(tasks_dir, sizeof tasks_dir, o->out_dir, "tasks");
    orc_task_counts counts;
    note(o, "study: generating %lld tasks per domain into %s\n", (long long)o->n_per_domain, tasks_dir);
    st = orc_tasks_generate(&gen, dmask, o->n_per_domain, tasks_dir, &counts, err);

    /* 2. texts for the tokenizer and the stage-1 corpus. */
    pjoin(path, sizeof path, tasks_dir, "train.jsonl");
    if (st == ORC_OK) st = read_jsonl(path, add_train_text, &texts, err);
    if (st == ORC_OK && facts) st = read_jsonl(sotu, add_sotu_doc, &docs, err);
    if (st == ORC_OK && !facts)
        for (size_t i = 0; i < texts.n && st == ORC_OK; i++)
            if (sl_push(&docs, strdup(texts.s[i]))) st = orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    if (st == ORC_OK) {
        note(o, "study: training a %lld-token BPE tokenizer on %zu task texts and %zu corpus documents\n",
             (long long)o->vocab, texts.n, docs.n);
        orc_tokenizer_train_opts to = {.vocab_size = (size_t)o->vocab};
        orc_tok_trainer *tr = orc_tok_trainer_new(&to, err);
        if (!tr) st = err ? err->code : ORC_EINVAL;
        for (size_t i = 0; i < texts.n && st == ORC_OK; i++) st = orc_tok_trainer_add(tr, texts.s[i], strlen(texts.s[i]), err);
        for (size_t i = 0; i < docs.n && st == ORC_OK; i++) st = orc_tok_trainer_add(tr, docs.s[i], strlen(docs.s[i]), err);
        if (st == ORC_OK && !(tok = orc_tok_trainer_finish(tr, err))) st = err ? err->code : ORC_EINVAL;
        orc_tok_trainer_free(tr);
    }
    const int64_t V = tok ? ((int64_t)orc_tokenizer_vocab_size(tok) + 63) / 64 * 64 : 0;
    pjoin(corpus_bin, sizeof corpus_bin, o->out_dir, "corpus.bin");
    if (st == ORC_OK) {
        orc_shard_writer *w = orc_shard_writer_open(corpus_bin, V, err);
        int32_t eos = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
        if (!w) st = err ? err->code : ORC_EIO;
        for (size_t i = 0; i < docs.n && st == ORC_OK; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            st = orc_tokenizer_encode(tok, docs.s[i], strlen(docs.s[i]), 0, &ids, &n, err);
            if (st == ORC_OK && eos >= 0) {
                int32_t *g = realloc(ids, sizeof(int32_t) * (n + 1));
                if (g) {
                    ids = g;
                    ids[n++] = eos;
                }
            }
            if (st == ORC_OK) st = orc_shard_writer_add(w, ids, n, err);
            free(ids);
        }
        if (w && st == ORC_OK) st = orc_shard_writer_finish(w, err);
        else orc_shard_writer_abort(w);
    }

    /* 3. the initial models (the same seed for both widths). */
    const int64_t K = o->ffn, k = o->ffn / 3;
    char init_full[4096], init_small[4096];
    pjoin(init_full, sizeof init_full, o->out_dir, "init_full");
    pjoin(init_small, sizeof init_small, o->out_dir, "init_small");
    for (int w = 0; w < 2 && st == ORC_OK; w++) {
        orc_llm_config c;
        orc_llm_config_default(&c);
        c.hidden_size = o->hidden;
        c.num_hidden_layers = o->layers;
        c.num_attention_heads = 4;
        c.num_key_value_heads = 2;
        c.head_dim = o->hidden / 4;
        c.intermediate_size = w == 0 ? K : k;
        c.vocab_size = V;
        c.max_position_embeddings = 256 > o->seq ? 256 : o->seq;
        c.bos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
        c.eos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
        orc_llm *m = orc_llm_create(&c, false, err);
        if (!m) {
            st = err ? err->code : ORC_EINVAL;
            break;
        }
        orc_llm_init_weights(m, o->seed);
        st = orc_ifp_save(w == 0 ? init_full : init_small, m, tok, NULL, err);
        orc_llm_free(m);
    }

    /* 4. train the three arms on the same batches. */
    arm_result arms[3] = {{.name = "dense-full", .ffn = K, .active = K},
                          {.name = "dense-small", .ffn = k, .active = k},
                          {.name = "ifprune", .ffn = K, .active = k}};
    const char *dirs[3] = {"dense_full", "dense_small", "ifprune"};
    pjoin(path2, sizeof path2, tasks_dir, "train.jsonl");
    for (int a = 0; a < 3 && st == ORC_OK; a++) {
        char out[4096], log[4200];
        pjoin(out, sizeof out, o->out_dir, dirs[a]);
        snprintf(log, sizeof log, "%s.log.jsonl", out);
        orc_ifp_train_opts to;
        orc_ifp_train_opts_default(&to);
        to.model_dir = a == 1 ? init_small : init_full;
        to.out_dir = out;
        to.dense = a < 2;
        to.k = k;
        to.corpus = corpus_bin;
        to.tasks = path2;
        to.stage1_steps = o->stage1_steps;
        to.stage2_steps = o->stage2_steps;
        to.batch = o->batch;
        to.seq = o->seq;
        to.pred_seq = o->pred_seq;
        to.lr = o->lr;
        to.min_lr = o->lr / 10;
        to.lr_mult = o->lr_mult;
        to.predictor_steps = o->predictor_steps;
        to.dense_steps = a == 2 ? o->dense_steps : 0;
        to.anneal_steps = a == 2 ? o->anneal_steps : 0;
        to.temperature = o->temperature;
        to.balance = a == 2 ? o->balance : 0;
        to.pred_reads_input = o->pred_reads_input;
        to.seed = o->seed;
        to.log_every = 50;
        to.log_path = log;
        to.progress = o->progress;
        if (a < 2 && o->baselines) {
            st = link_baseline(o, dirs[a], out, &arms[a], err);
            continue;
        }
        note(o, "study: training %s (FFN %lld, %lld active)\n", arms[a].name, (long long)arms[a].ffn,
             (long long)arms[a].active);
        orc_ifp_train_result tr;
        st = orc_ifp_train(&to, &tr, err);
        arms[a].train_seconds = tr.seconds;
        arms[a].train_loss = tr.loss;
        arms[a].train_tokens = tr.tokens;
    }

    /* 5. score on test items. */
    pjoin(path, sizeof path, tasks_dir, "test.jsonl");
    if (st == ORC_OK) st = read_jsonl(path, add_eval, &ev, err);
    for (int a = 0; a < 3 && st == ORC_OK; a++) {
        char dir[4096], preds[4200];
        pjoin(dir, sizeof dir, o->out_dir, dirs[a]);
        snprintf(preds, sizeof preds, "%s.predictions.jsonl", dir);
        note(o, "study: scoring %s on %lld test items\n", arms[a].name, (long long)ev.n);
        st = a < 2 ? eval_dense(dir, &ev, o->max_new_tokens, &arms[a], preds, err)
                   : eval_ifprune(dir, &ev, o->pred_reads_input, o->max_new_tokens, &arms[a], preds, err);
    }

    if (st == ORC_OK) {
        note(o, "study: decode speed, %d rounds of %lld tokens per model, alternating\n", o->speed_rounds,
             (long long)o->speed_tokens);
        st = speed_bench(o, &ev, arms, err);
    }

    /* 6. mask overlap on the same prompts. */
    const int64_t L = o->layers;
    double *same = calloc((size_t)L, sizeof(double)), *diff = calloc((size_t)L, sizeof(double));
    bool collapsed = false;
    if (st == ORC_OK && (!same || !diff)) st = orc_error_set(err, ORC_ENOMEM, "study: out of memory");
    if (st == ORC_OK) {
        char dir[4096];
        pjoin(dir, sizeof dir, o->out_dir, "ifprune");
        orc_ifp_model *im = orc_ifp_load(dir, false, err);
        const char **ins = malloc(sizeof(char *) * (size_t)(ev.n ? ev.n : 1));
        int *groups = malloc(sizeof(int) * (size_t)(ev.n ? ev.n : 1));
        if (!im || !ins || !groups) st = err && err->code ? err->code : orc_error_set(err, ORC_ENOMEM, "out of memory");
        for (int64_t i = 0; i < ev.n && st == ORC_OK; i++) {
            ins[i] = pred_text(o->pred_reads_input, &ev.items[i]);
            groups[i] = ev.items[i].domain;
        }
        if (st == ORC_OK) st = orc_ifp_overlap(im->pred, im->tok, ins, groups, (int)ev.n, same, diff, &collapsed, err);
        free(ins);
        free(groups);
        orc_ifp_model_free(im);
    }

    /* 7. results.json and README.md. */
    if (st == ORC_OK) {
        const arm_result *df = &arms[0], *ds = &arms[1], *ip = &arms[2];
        const double a_full = mean_acc(df, dmask), a_small = mean_acc(ds, dmask), a_ifp = mean_acc(ip, dmask);
        const double gain = a_ifp - a_small, gap = a_full - a_small, gain_se_v = gain_se(ip, ds, dmask);
        const double speed_ratio = speed(ds) > 0 ? speed(ip) / speed(ds) : NAN;
        const double lr_mult = o->lr_mult > 0 ? o->lr_mult : 0.1, temp = o->temperature > 0 ? o->temperature : 0.5;
        const int d_lo = o->min_difficulty > 0 ? o->min_difficulty : 1;
        const int d_hi = o->max_difficulty > 0 ? o->max_difficulty : ORC_TASK_MAX_DIFFICULTY;
        const bool target = gain >= 5.0 && (gap <= 0 || gain >= 0.5 * gap) && speed_ratio >= 0.9;
        res_json = json_object();
        json_t *arr = json_array();
        for (int a = 0; a < 3; a++) {
            json_t *ad = json_object();
            for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
                if (dmask >> d & 1)
                    json_object_set_new(ad, orc_task_domain_name((orc_task_domain)d),
                                        json_pack("{s:I, s:I, s:f}", "correct", (json_int_t)arms[a].correct[d], "total",
                                                  (json_int_t)arms[a].total[d], "accuracy", acc(&arms[a], d)));
            json_array_append_new(
                arr, json_pack("{s:s, s:I, s:I, s:o, s:f, s:f, s:f, s:f, s:f}", "model", arms[a].name, "ffn",
                               (json_int_t)arms[a].ffn, "active", (json_int_t)arms[a].active, "domains", ad,
                               "mean_accuracy", mean_acc(&arms[a], dmask), "decode_tokens_per_s", speed(&arms[a]),
                               "train_tokens", arms[a].train_tokens, "train_seconds", arms[a].train_seconds,
                               "final_train_loss", isfinite(arms[a].train_loss) ? arms[a].train_loss : -1.0));
            json_t *last = json_array_get(arr, json_array_size(arr) - 1);
            json_object_set_new(last, "decode_tokens_per_s_wall", json_real(arms[a].bench_tps));
            json_object_set_new(last, "decode_tokens_per_s_while_scoring", json_real(tps(&arms[a])));
            json_object_set_new(last, "held_out_phrasing", json_pack("{s:I, s:I}", "correct",
                                                                     (json_int_t)arms[a].correct_held, "total",
                                                                     (json_int_t)arms[a].total_held));
        }
        json_object_set_new(res_json, "models", arr);
        json_t *ov = json_array();
        for (int64_t l = 0; l < L; l++)
            json_array_append_new(ov, json_pack("{s:I, s:f, s:f}", "layer", (json_int_t)l, "same_domain",
                                                isfinite(same[l]) ? same[l] : -1.0, "cross_domain",
                                                isfinite(diff[l]) ? diff[l] : -1.0));
        json_object_set_new(res_json, "overlap", ov);
        json_object_set_new(res_json, "masks_collapsed", json_boolean(collapsed));
        json_object_set_new(res_json, "ifprune_minus_dense_small", json_real(gain));
        json_object_set_new(res_json, "ifprune_minus_dense_small_se", json_real(isfinite(gain_se_v) ? gain_se_v : -1.0));
        json_object_set_new(res_json, "gap_closed_fraction", json_real(gap > 0 ? gain / gap : 0.0));
        json_object_set_new(res_json, "decode_speed_vs_dense_small", json_real(isfinite(speed_ratio) ? speed_ratio : 0));
        json_object_set_new(res_json, "paper_target_met", json_boolean(target));
        json_object_set_new(res_json, "settings",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I}", "hidden",
                                      (json_int_t)o->hidden, "layers", (json_int_t)o->layers, "ffn_K",
                                      (json_int_t)K, "active_k", (json_int_t)k, "stage1_steps",
                                      (json_int_t)o->stage1_steps, "stage2_steps", (json_int_t)o->stage2_steps,
                                      "batch", (json_int_t)o->batch, "seq", (json_int_t)o->seq, "n_per_domain",
                                      (json_int_t)o->n_per_domain, "eval_per_domain",
                                      (json_int_t)o->eval_per_domain, "lr", o->lr, "seed", (json_int_t)o->seed));
        json_t *set = json_object_get(res_json, "settings");
        json_object_set_new(set, "lr_mult", json_real(lr_mult));
        json_object_set_new(set, "predictor_steps", json_integer(o->predictor_steps));
        json_object_set_new(set, "dense_steps", json_integer(o->dense_steps));
        json_object_set_new(set, "anneal_steps", json_integer(o->anneal_steps));
        json_object_set_new(set, "temperature", json_real(temp));
        json_object_set_new(set, "balance", json_real(o->balance));
        json_object_set_new(set, "pred_seq", json_integer(o->pred_seq));
        json_object_set_new(set, "predictor_reads", json_string(o->pred_reads_input ? "prompt" : "instruction"));
        json_object_set_new(set, "min_difficulty", json_integer(d_lo));
        json_object_set_new(set, "max_difficulty", json_integer(d_hi));
        json_object_set_new(set, "speed_rounds", json_integer(o->speed_rounds));
        json_object_set_new(set, "speed_tokens", json_integer((json_int_t)o->speed_tokens));
        json_object_set_new(res_json, "seconds", json_real(now_s() - t_start));
        char *js = json_dumps(res_json, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        pjoin(path, sizeof path, o->out_dir, "results.json");
        st = js ? write_text(path, js, err) : orc_error_set(err, ORC_ENOMEM, "out of memory");
        free(js);

        /* The Markdown page. */
        size_t cap = 0;
        FILE *mf = open_memstream(&md, &cap);
        if (mf) {
            fprintf(mf, "# IFPruning study\n\nCommand: `orchard ifprune study --out %s --steps1 %lld --steps2 %lld "
                        "--ffn %lld --hidden %lld --layers %lld --n %lld --eval-n %lld --difficulty %d-%d --batch %d "
                        "--seq %d --pred-seq %d --predictor-reads %s --lr %g --lr-mult %g --temperature %g --seed %llu`\n\n",
                    o->out_dir, (long long)o->stage1_steps, (long long)o->stage2_steps, (long long)K,
                    (long long)o->hidden, (long long)o->layers, (long long)o->n_per_domain,
                    (long long)o->eval_per_domain, d_lo, d_hi, o->batch, o->seq, o->pred_seq,
                    o->pred_reads_input ? "prompt" : "instruction", o->lr, lr_mult, temp,
                    (unsigned long long)o->seed);
            if (o->predictor_steps > 0)
                fprintf(mf, "The predictor was frozen from step %lld on (`--predictor-steps %lld`).\n\n",
                        (long long)o->predictor_steps + 1, (long long)o->predictor_steps);
            if (o->dense_steps > 0)
                fprintf(mf, "IFPruning's LM trained dense for its first %lld steps and masked from step %lld on "
                            "(`--dense-steps %lld`).\n\n", (long long)o->dense_steps, (long long)o->dense_steps + 1,
                        (long long)o->dense_steps);
            if (o->anneal_steps > 0)
                fprintf(mf, "IFPruning's active FFN width fell linearly from %lld to %lld over its first %lld masked "
                            "steps (`--anneal-steps %lld`).\n\n", (long long)K, (long long)k, (long long)o->anneal_steps,
                        (long long)o->anneal_steps);
            if (o->balance > 0)
                fprintf(mf, "IFPruning's loss included the mask-balance term (channel usage over the batch) with "
                            "weight %g (`--balance %g`).\n\n", o->balance, o->balance);
            if (o->baselines)
                fprintf(mf, "Dense-full and dense-small from `%s` (same data and settings; linked, not retrained: "
                            "`--baselines %s`).\n\n", o->baselines, o->baselines);
            fprintf(mf, "Same LM token budget for every model: %lld steps x %d rows x %d tokens (stage 1 corpus, "
                        "stage 2 task-suite SFT).\nAccuracy: exact match on %lld held-out test items per domain, "
                        "greedy decoding.\n", (long long)(o->stage1_steps + o->stage2_steps), o->batch, o->seq,
                    (long long)o->eval_per_domain);
            if (ds->bench_tps > 0)
                fprintf(mf, "Decode tok/s: decode steps per second of process CPU time, the best of %d rounds of %lld "
                            "greedy tokens on one test prompt, the three models alternating in this process "
                            "(IFPruning: the compact model of that prompt; wall-clock speeds in results.json).\n",
                        o->speed_rounds, (long long)o->speed_tokens);
            fprintf(mf, "\n");
            fprintf(mf, "| model | FFN | active |");
            for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
                if (dmask >> d & 1) fprintf(mf, " %s |", orc_task_domain_name((orc_task_domain)d));
            fprintf(mf, " mean | decode tok/s |\n|---|---|---|");
            for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
                if (dmask >> d & 1) fprintf(mf, "---|");
            fprintf(mf, "---|---|\n");
            for (int a = 0; a < 3; a++) {
                fprintf(mf, "| %s | %lld | %lld |", arms[a].name, (long long)arms[a].ffn, (long long)arms[a].active);
                for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
                    if (dmask >> d & 1) fprintf(mf, " %.1f%% |", acc(&arms[a], d));
                fprintf(mf, " %.1f%% | %.0f |\n", mean_acc(&arms[a], dmask), speed(&arms[a]));
            }
            fprintf(mf, "\nTest items whose instruction is a phrasing held out of training (all domains): ");
            for (int a = 0; a < 3; a++) {
                int64_t c = 0, t = 0;
                for (int d = 0; d < ORC_TASK_NDOMAINS; d++) c += arms[a].correct[d], t += arms[a].total[d];
                fprintf(mf, "%s %lld/%lld right (seen phrasings %lld/%lld)%s", arms[a].name,
                        (long long)arms[a].correct_held, (long long)arms[a].total_held,
                        (long long)(c - arms[a].correct_held), (long long)(t - arms[a].total_held), a < 2 ? ", " : ".\n");
            }
            fprintf(mf, "\nIFPruning - dense-small: %+.1f points (mean over domains; standard error %.1f). ", gain,
                    gain_se_v);
            if (gap > 0) fprintf(mf, "Gap dense-full - dense-small: %.1f points, %.0f%% of it closed. ", gap, 100.0 * gain / gap);
            else fprintf(mf, "Dense-full is not above dense-small here, so there is no gap to close. ");
            fprintf(mf, "Decode speed vs dense-small: %.2fx. Paper-level target (>= +5 points, >= half the gap, "
                        ">= 0.9x speed): %s.\n\n", speed_ratio, target ? "met" : "NOT met at this budget");
            fprintf(mf, "Mask overlap (mean Jaccard of the hard top-%lld sets between test prompts):\n\n"
                        "| layer | same domain | different domains |\n|---|---|---|\n", (long long)k);
            for (int64_t l = 0; l < L; l++) fprintf(mf, "| %lld | %.3f | %.3f |\n", (long long)l, same[l], diff[l]);
            if (collapsed) fprintf(mf, "\n**Warning: the masks collapsed to one mask for every prompt.**\n");
            fprintf(mf, "\nIFPruning selection + gather time over all prompts: %.2f s. Whole study: %.0f s.\n",
                    ip->select_seconds, now_s() - t_start);
            fclose(mf);
            pjoin(path, sizeof path, o->out_dir, "README.md");
            if (st == ORC_OK) st = write_text(path, md ? md : "", err);
        }
        if (o->progress && md) fprintf(o->progress, "\n%s", md);
        if (collapsed) note(o, "study: warning: the masks collapsed to one mask for every prompt\n");
    }
    free(same);
    free(diff);
    free(md);
    json_decref(res_json);
    eval_set_free(&ev);
    sl_free(&texts);
    sl_free(&docs);
    orc_tokenizer_free(tok);
    orc_task_facts_free(facts);
    return st;
}
