/* `orchard ifprune`: instruction-following pruning (orchard/ifprune.h does
 * the work). This file owns the subcommands' flags and output: train (joint
 * training of the LM and the mask predictor), generate (predict a mask once
 * for the prompt's instruction, gather a compact dense model, decode with
 * the normal generator), compact (the per-task mode: one mask from a task
 * description, written as an ordinary model directory that generate, serve
 * and eval run), overlap (mask Jaccard within and across task domains, with
 * a collapse warning) and study (the dense-full / dense-small / IFPruning
 * comparison). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commands.h"
#include "orchard/chat.h"
#include "orchard/fileio.h"
#include "orchard/generate.h"
#include "orchard/ifprune.h"
#include "orchard/tasks.h"

void cmd_ifprune_help(void) {
    printf("usage: orchard ifprune <train|generate|compact|overlap|study|summary> [options]\n\n"
           "Instruction-following pruning: a small predictor LM reads the instruction and keeps k of the\n"
           "FFN channels in every layer of a larger LM (see docs/ifprune.md).\n\n"
           "  train    --model DIR --out DIR [--k K] [--corpus train.bin] [--tasks train.jsonl]\n"
           "           [--steps1 N] [--steps2 N] [--batch N] [--seq N] [--pred-seq N] [--lr X] [--min-lr X]\n"
           "           [--warmup N] [--lr-mult X] [--predictor-steps N] [--temperature T] [--seed N]\n"
           "           [--predictor-config FILE] [--dense-steps N] [--anneal-steps N] [--log FILE.jsonl]\n"
           "           [--save-every N] [--dense] [--predictor-reads instruction|prompt] [--balance X] [--quiet]\n"
           "           stage 1: continued pretraining on the corpus shard (the predictor reads one chunk,\n"
           "           the masked LM trains on the next); stage 2: SFT on the task file (the predictor\n"
           "           reads the instruction, or with --predictor-reads prompt the whole user turn,\n"
           "           instruction + input; loss on the response only). --dense trains the plain LM on\n"
           "           the same batches (a baseline); --dense-steps N trains the LM unmasked for its first\n"
           "           N steps (the predictor idle), then masked: pruning a dense-trained model;\n"
           "           --anneal-steps N lowers the active width from the FFN width to k over the first\n"
           "           N masked steps (gradual pruning); --balance X adds X times the mask-balance loss\n"
           "           (channel usage over the batch, 1 when shared out evenly) against masks that collapse.\n"
           "           Writes DIR/{config.json,model.safetensors,tokenizer.json}, DIR/predictor/ and\n"
           "           DIR/ifprune.json, each atomically.\n"
           "  generate --model DIR --prompt TEXT [--instruction TEXT] [--chat] [--max-tokens N]\n"
           "           [--temperature X] [--top-k N] [--seed N] [--hard-mask] [--quiet]\n"
           "           the predictor reads --instruction (default: the prompt) once; the chosen channels\n"
           "           are gathered into a compact dense model (FFN width k) that prefills and decodes.\n"
           "           --chat wraps the prompt in the chat template as a user turn.\n"
           "  compact  --model DIR --task TEXT --out DIR [--hard-mask]\n"
           "           per-task mode: one mask from a task description, saved as a normal model dir\n"
           "           (use it with orchard generate / serve / eval).\n"
           "  overlap  --model DIR --tasks FILE.jsonl [--n N] [--json]\n"
           "           per-layer mean Jaccard of the masks of N prompts per domain (default 8), same\n"
           "           domain vs different domains; warns when every prompt gets the same mask.\n"
           "  study    --out DIR [--steps1 N] [--steps2 N] [--ffn K] [--hidden D] [--layers L] [--n N]\n"
           "           [--eval-n N] [--vocab N] [--batch N] [--seq N] [--lr X] [--max-tokens N]\n"
           "           [--difficulty N|LO-HI] [--lr-mult X] [--predictor-steps N] [--temperature T]\n"
           "           [--dense-steps N] [--anneal-steps N] [--speed-rounds N] [--speed-tokens N] [--pred-seq N]\n"
           "           [--predictor-reads instruction|prompt] [--balance X]\n"
           "           [--corpus sotu.jsonl] [--seed N] [--quiet] [--speed-only] [--baselines DIR]\n"
           "           trains dense-full (FFN K), dense-small (FFN K/3) and IFPruning (FFN K, K/3 active)\n"
           "           on the same token budget and writes per-domain accuracy, decode tokens/s and the\n"
           "           overlap table to DIR/results.json and DIR/README.md. --speed-only: only time the\n"
           "           decoding of the three models a finished study left in DIR (DIR/speed.json).\n"
           "           --baselines DIR: take dense-full and dense-small from a finished study with the same\n"
           "           data and settings (linked, scored again, not retrained) and train only IFPruning.\n"
           "  summary  DIR... [--versus DIR...] [--json]\n"
           "           finished studies that differ only in --seed: each one's row, the means, the mean\n"
           "           IFPruning - dense-small gain with its 95%% interval over seeds, the target on the means,\n"
           "           the per-domain means;\n"
           "           with --versus, a second set of the same seeds (another configuration) summarised too\n"
           "           and the two sets' gains compared seed by seed (B - A, its mean and 95%% interval).\n\n"
           "--hard-mask: gather with the 0/1 top-k mask; by default the predictor's SoftTopK values on\n"
           "the chosen channels are folded into the down projection, so the compact model computes\n"
           "exactly what the masked LM was trained to compute.\n");
}

static int need(const char *sub, const char *opt, const char *v) {
    if (v) return 0;
    fprintf(stderr, "orchard ifprune %s: option %s needs a value\n", sub, opt);
    return 2;
}

static int parse_double(const char *sub, const char *opt, const char *v, double lo, double hi, double *out) {
    if (need(sub, opt, v)) return 2;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "orchard ifprune %s: option %s expects a number in [%g, %g], got '%s'\n", sub, opt, lo, hi, v);
        return 2;
    }
    *out = x;
    return 0;
}

/* --predictor-reads instruction|prompt: what the mask predictor reads in SFT
 * (prompt: the whole user turn, instruction + input). */
static int parse_reads(const char *sub, const char *opt, const char *v, bool *whole_turn) {
    if (need(sub, opt, v)) return 2;
    if (strcmp(v, "instruction") != 0 && strcmp(v, "prompt") != 0) {
        fprintf(stderr, "orchard ifprune %s: option %s expects 'instruction' or 'prompt', got '%s'\n", sub, opt, v);
        return 2;
    }
    *whole_turn = strcmp(v, "prompt") == 0;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- train ------------------------------------------------------------------------ */

static int sub_train(int argc, char **argv) {
    const char *sub = "train";
    orc_ifp_train_opts o;
    orc_ifp_train_opts_default(&o);
    o.stage1_steps = -1;
    o.stage2_steps = -1;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        if (strcmp(a, "--quiet") == 0) {
            quiet = true;
            continue;
        }
        if (strcmp(a, "--dense") == 0) {
            o.dense = true;
            continue;
        }
        if (strcmp(a, "--model") == 0) rc = need(sub, a, v), o.model_dir = v;
        else if (strcmp(a, "--out") == 0) rc = need(sub, a, v), o.out_dir = v;
        else if (strcmp(a, "--corpus") == 0) rc = need(sub, a, v), o.corpus = v;
        else if (strcmp(a, "--tasks") == 0) rc = need(sub, a, v), o.tasks = v;
        else if (strcmp(a, "--log") == 0) rc = need(sub, a, v), o.log_path = v;
        else if (strcmp(a, "--predictor-config") == 0) rc = need(sub, a, v), o.predictor_config = v;
        else if (strcmp(a, "--k") == 0) rc = cli_parse_int("ifprune train", a, v, 1, 1L << 30, &n), o.k = n;
        else if (strcmp(a, "--steps1") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.stage1_steps = n;
        else if (strcmp(a, "--steps2") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.stage2_steps = n;
        else if (strcmp(a, "--batch") == 0) rc = cli_parse_int("ifprune train", a, v, 1, 1 << 16, &n), o.batch = (int)n;
        else if (strcmp(a, "--seq") == 0) rc = cli_parse_int("ifprune train", a, v, 2, 1 << 20, &n), o.seq = (int)n;
        else if (strcmp(a, "--pred-seq") == 0) rc = cli_parse_int("ifprune train", a, v, 1, 1 << 20, &n), o.pred_seq = (int)n;
        else if (strcmp(a, "--warmup") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.warmup = n;
        else if (strcmp(a, "--save-every") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.save_every = n;
        else if (strcmp(a, "--seed") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 2147483647L, &n), o.seed = (uint64_t)n;
        else if (strcmp(a, "--lr") == 0) rc = parse_double(sub, a, v, 1e-12, 10, &o.lr);
        else if (strcmp(a, "--min-lr") == 0) rc = parse_double(sub, a, v, 0, 10, &o.min_lr);
        else if (strcmp(a, "--lr-mult") == 0) rc = parse_double(sub, a, v, 1e-6, 1e6, &o.lr_mult);
        else if (strcmp(a, "--predictor-steps") == 0) rc = cli_parse_int("ifprune train", a, v, 1, 1L << 30, &n), o.predictor_steps = n;
        else if (strcmp(a, "--dense-steps") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.dense_steps = n;
        else if (strcmp(a, "--anneal-steps") == 0) rc = cli_parse_int("ifprune train", a, v, 0, 1L << 30, &n), o.anneal_steps = n;
        else if (strcmp(a, "--temperature") == 0) rc = parse_double(sub, a, v, 1e-6, 1e6, &o.temperature);
        else if (strcmp(a, "--balance") == 0) rc = parse_double(sub, a, v, 0, 1e6, &o.balance);
        else if (strcmp(a, "--predictor-reads") == 0) rc = parse_reads(sub, a, v, &o.pred_reads_input);
        else {
            fprintf(stderr, "orchard ifprune train: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!o.model_dir || !o.out_dir) {
        fprintf(stderr, "orchard ifprune train: --model DIR and --out DIR are required; see `orchard ifprune --help`\n");
        return 2;
    }
    if (!o.corpus && !o.tasks) {
        fprintf(stderr, "orchard ifprune train: give --corpus (stage 1), --tasks (stage 2) or both\n");
        return 2;
    }
    if (o.stage1_steps < 0) o.stage1_steps = o.corpus ? 100 : 0;
    if (o.stage2_steps < 0) o.stage2_steps = o.tasks ? 200 : 0;
    if (o.min_lr > o.lr) o.min_lr = o.lr;
    o.progress = quiet ? NULL : stderr;
    orc_error err = {0};
    orc_ifp_train_result res;
    if (orc_ifp_train(&o, &res, &err) != ORC_OK) {
        fprintf(stderr, "orchard ifprune train: %s\n", err.msg);
        return 1;
    }
    printf("step %lld: loss %.4f, %.0f trained tokens in %.1f s; saved %s\n", (long long)res.steps, res.loss,
           res.tokens, res.seconds, o.out_dir);
    return 0;
}

/* ---- generate / compact ------------------------------------------------------------------ */

static bool print_token(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

static orc_llm *select_and_gather(orc_ifp_model *im, const char *instruction, bool hard, int32_t **idx_out,
                                  orc_error *err) {
    const int64_t L = im->pred->cfg.lm_layers, k = im->pred->cfg.k;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(L * k));
    float *vals = malloc(sizeof(float) * (size_t)(L * k));
    orc_llm *cm = NULL;
    if (!idx || !vals) orc_error_set(err, ORC_ENOMEM, "out of memory");
    else if (orc_ifp_select(im->pred, im->tok, instruction, idx, vals, err) == ORC_OK)
        cm = orc_ifp_compact(im->lm, idx, hard ? NULL : vals, k, err);
    free(vals);
    if (idx_out && cm) *idx_out = idx;
    else free(idx);
    return cm;
}

static int sub_generate(int argc, char **argv) {
    const char *sub = "generate", *model = NULL, *prompt = NULL, *instruction = NULL;
    bool chat = false, hard = false, quiet = false;
    orc_gen_opts go;
    orc_gen_opts_default(&go);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        double x = 0;
        if (strcmp(a, "--chat") == 0) { chat = true; continue; }
        if (strcmp(a, "--hard-mask") == 0) { hard = true; continue; }
        if (strcmp(a, "--quiet") == 0) { quiet = true; continue; }
        if (strcmp(a, "--model") == 0) rc = need(sub, a, v), model = v;
        else if (strcmp(a, "--prompt") == 0) rc = need(sub, a, v), prompt = v;
        else if (strcmp(a, "--instruction") == 0) rc = need(sub, a, v), instruction = v;
        else if (strcmp(a, "--max-tokens") == 0) rc = cli_parse_int("ifprune generate", a, v, 1, 1 << 20, &n), go.max_tokens = n;
        else if (strcmp(a, "--top-k") == 0) rc = cli_parse_int("ifprune generate", a, v, 0, 1 << 30, &n), go.sampler.top_k = n;
        else if (strcmp(a, "--seed") == 0) rc = cli_parse_int("ifprune generate", a, v, 0, 2147483647L, &n), go.sampler.seed = (uint64_t)n;
        else if (strcmp(a, "--temperature") == 0) {
            rc = parse_double(sub, a, v, 0, 100, &x);
            go.sampler.temperature = (float)x;
        } else {
            fprintf(stderr, "orchard ifprune generate: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!model || !prompt) {
        fprintf(stderr, "orchard ifprune generate: --model DIR and --prompt TEXT are required\n");
        return 2;
    }
    if (!instruction) instruction = prompt;
    orc_error err = {0};
    orc_ifp_model *im = orc_ifp_load(model, false, &err);
    if (!im) {
        fprintf(stderr, "orchard ifprune generate: %s\n", err.msg);
        return 1;
    }
    double t0 = now_s();
    orc_llm *cm = select_and_gather(im, instruction, hard, NULL, &err);
    double t_sel = now_s() - t0;
    int rc = 1;
    orc_generator *g = cm ? orc_generator_new(cm, im->tok, 0, &err) : NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int32_t stops[8];
    size_t ns = 0;
    if (g) {
        orc_status st;
        if (chat) {
            orc_chat_msg msg = {"user", prompt};
            st = orc_chat_encode(im->tok, &msg, 1, true, &ids, NULL, &n, &err);
            ns = orc_chat_stop_ids(im->tok, stops, 8);
            if (ns > 8) ns = 8;
        } else {
            st = orc_tokenizer_encode(im->tok, prompt, strlen(prompt), 0, &ids, &n, &err);
            if (st == ORC_OK && im->lm->cfg.bos_token_id >= 0) {
                int32_t *b = malloc(sizeof(int32_t) * (n + 1));
                if (b) {
                    b[0] = (int32_t)im->lm->cfg.bos_token_id;
                    memcpy(b + 1, ids, sizeof(int32_t) * n);
                    free(ids);
                    ids = b;
                    n++;
                }
            }
            if (im->lm->cfg.eos_token_id >= 0) stops[ns++] = (int32_t)im->lm->cfg.eos_token_id;
        }
        go.stop_ids = stops;
        go.n_stop_ids = ns;
        go.on_token = print_token;
        orc_gen_result res;
        if (st == ORC_OK) st = orc_generate(g, ids, n, &go, &res, &err);
        if (st == ORC_OK) {
            printf("\n");
            if (!quiet)
                fprintf(stderr, "[ifprune: k = %lld of %lld channels per layer, mask + gather %.1f ms; prompt %lld "
                        "tokens in %.1f ms; %lld tokens at %.1f tokens/s; stop: %s]\n",
                        (long long)im->pred->cfg.k, (long long)im->pred->cfg.lm_ffn, 1e3 * t_sel,
                        (long long)res.prompt_tokens, 1e3 * res.prompt_seconds, (long long)res.decode_tokens,
                        res.decode_seconds > 0 ? (double)res.decode_tokens / res.decode_seconds : 0.0,
                        orc_gen_stop_name(res.stop));
            orc_gen_result_free(&res);
            rc = 0;
        }
    }
    if (rc) fprintf(stderr, "orchard ifprune generate: %s\n", err.msg);
    free(ids);
    orc_generator_free(g);
    orc_llm_free(cm);
    orc_ifp_model_free(im);
    return rc;
}

static int sub_compact(int argc, char **argv) {
    const char *sub = "compact", *model = NULL, *task = NULL, *out = NULL;
    bool hard = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--hard-mask") == 0) { hard = true; continue; }
        if (strcmp(a, "--model") == 0) rc = need(sub, a, v), model = v;
        else if (strcmp(a, "--task") == 0) rc = need(sub, a, v), task = v;
        else if (strcmp(a, "--out") == 0) rc = need(sub, a, v), out = v;
        else {
            fprintf(stderr, "orchard ifprune compact: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!model || !task || !out) {
        fprintf(stderr, "orchard ifprune compact: --model DIR, --task TEXT and --out DIR are required\n");
        return 2;
    }
    orc_error err = {0};
    orc_ifp_model *im = orc_ifp_load(model, false, &err);
    int32_t *idx = NULL;
    orc_llm *cm = im ? select_and_gather(im, task, hard, &idx, &err) : NULL;
    orc_status st = cm ? orc_ifp_save(out, cm, im->tok, NULL, &err) : ORC_EINVAL;
    if (st == ORC_OK) {
        /* Provenance: which channels each layer kept, for which task. */
        const int64_t L = im->pred->cfg.lm_layers, k = im->pred->cfg.k;
        json_t *layers = json_array();
        for (int64_t l = 0; l < L; l++) {
            json_t *row = json_array();
            for (int64_t j = 0; j < k; j++) json_array_append_new(row, json_integer(idx[l * k + j]));
            json_array_append_new(layers, row);
        }
        json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:b, s:o}", "source", model, "task", task, "k", (json_int_t)k,
                              "ffn", (json_int_t)im->pred->cfg.lm_ffn, "hard_mask", hard, "channels", layers);
        char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        char path[4200];
        snprintf(path, sizeof path, "%s/ifprune_task.json", out);
        st = text ? orc_write_file_atomic(path, text, strlen(text), "ifprune", &err)
                  : orc_error_set(&err, ORC_ENOMEM, "out of memory");
        free(text);
        json_decref(j);
    }
    if (st == ORC_OK)
        printf("compact model (FFN %lld of %lld) for the task written to %s\n", (long long)cm->cfg.intermediate_size,
               (long long)im->pred->cfg.lm_ffn, out);
    else
        fprintf(stderr, "orchard ifprune compact: %s\n", err.msg);
    free(idx);
    orc_llm_free(cm);
    orc_ifp_model_free(im);
    return st == ORC_OK ? 0 : 1;
}

/* ---- overlap ------------------------------------------------------------------------------ */

static int sub_overlap(int argc, char **argv) {
    const char *sub = "overlap", *model = NULL, *tasks = NULL;
    long per = 8;
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--json") == 0) { as_json = true; continue; }
        if (strcmp(a, "--model") == 0) rc = need(sub, a, v), model = v;
        else if (strcmp(a, "--tasks") == 0) rc = need(sub, a, v), tasks = v;
        else if (strcmp(a, "--n") == 0) rc = cli_parse_int("ifprune overlap", a, v, 1, 100000, &per);
        else {
            fprintf(stderr, "orchard ifprune overlap: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!model || !tasks) {
        fprintf(stderr, "orchard ifprune overlap: --model DIR and --tasks FILE.jsonl are required\n");
        return 2;
    }
    orc_error err = {0};
    FILE *fp = fopen(tasks, "r");
    if (!fp) {
        fprintf(stderr, "orchard ifprune overlap: %s: cannot open: %s\n", tasks, strerror(errno));
        return 1;
    }
    char **ins = NULL;
    int *groups = NULL, n = 0, cap = 0;
    long counts[ORC_TASK_NDOMAINS] = {0};
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, fp) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        const char *s = json_string_value(json_object_get(j, "instruction"));
        int d = orc_task_domain_parse(json_string_value(json_object_get(j, "domain")) ? json_string_value(json_object_get(j, "domain")) : "");
        if (s && d >= 0 && counts[d] < per) {
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                ins = realloc(ins, sizeof(char *) * (size_t)cap);
                groups = realloc(groups, sizeof(int) * (size_t)cap);
            }
            if (ins && groups) {
                ins[n] = strdup(s);
                groups[n++] = d;
                counts[d]++;
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(fp);
    orc_ifp_model *im = n >= 2 ? orc_ifp_load(model, false, &err) : NULL;
    int rc = 1;
    if (n < 2) {
        fprintf(stderr, "orchard ifprune overlap: %s has fewer than 2 task instructions\n", tasks);
    } else if (!im) {
        fprintf(stderr, "orchard ifprune overlap: %s\n", err.msg);
    } else {
        const int64_t L = im->pred->cfg.lm_layers;
        double *same = calloc((size_t)L, sizeof(double)), *diff = calloc((size_t)L, sizeof(double));
        bool collapsed = false;
        if (same && diff &&
            orc_ifp_overlap(im->pred, im->tok, (const char *const *)ins, groups, n, same, diff, &collapsed, &err) ==
                ORC_OK) {
            if (as_json) {
                printf("{\"prompts\": %d, \"k\": %lld, \"ffn\": %lld, \"collapsed\": %s, \"layers\": [", n,
                       (long long)im->pred->cfg.k, (long long)im->pred->cfg.lm_ffn, collapsed ? "true" : "false");
                for (int64_t l = 0; l < L; l++)
                    printf("%s{\"layer\": %lld, \"same_domain\": %.6f, \"cross_domain\": %.6f}", l ? ", " : "",
                           (long long)l, isfinite(same[l]) ? same[l] : -1.0, isfinite(diff[l]) ? diff[l] : -1.0);
                printf("]}\n");
            } else {
                printf("mask overlap (mean Jaccard of the top-%lld sets) over %d prompts\n| layer | same domain | "
                       "different domains |\n|---|---|---|\n", (long long)im->pred->cfg.k, n);
                for (int64_t l = 0; l < L; l++) printf("| %lld | %.3f | %.3f |\n", (long long)l, same[l], diff[l]);
            }
            if (collapsed)
                fprintf(stderr, "orchard ifprune overlap: warning: the masks collapsed: every prompt gets the same "
                        "mask in every layer, so the predictor ignores the instruction\n");
            rc = 0;
        } else {
            fprintf(stderr, "orchard ifprune overlap: %s\n", err.msg);
        }
        free(same);
        free(diff);
    }
    for (int i = 0; i < n; i++) free(ins[i]);
    free(ins);
    free(groups);
    orc_ifp_model_free(im);
    return rc;
}

/* ---- study ------------------------------------------------------------------------------------ */

static int sub_study(int argc, char **argv) {
    const char *sub = "study";
    orc_ifp_study_opts o;
    orc_ifp_study_opts_default(&o);
    bool quiet = false, speed_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        if (strcmp(a, "--quiet") == 0) { quiet = true; continue; }
        if (strcmp(a, "--speed-only") == 0) { speed_only = true; continue; }
        if (strcmp(a, "--out") == 0) rc = need(sub, a, v), o.out_dir = v;
        else if (strcmp(a, "--corpus") == 0) rc = need(sub, a, v), o.corpus_path = v;
        else if (strcmp(a, "--baselines") == 0) rc = need(sub, a, v), o.baselines = v;
        else if (strcmp(a, "--steps1") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 1L << 30, &n), o.stage1_steps = n;
        else if (strcmp(a, "--steps2") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 1L << 30, &n), o.stage2_steps = n;
        else if (strcmp(a, "--ffn") == 0) rc = cli_parse_int("ifprune study", a, v, 3, 1 << 20, &n), o.ffn = n;
        else if (strcmp(a, "--hidden") == 0) rc = cli_parse_int("ifprune study", a, v, 8, 1 << 16, &n), o.hidden = n / 8 * 8;
        else if (strcmp(a, "--layers") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 256, &n), o.layers = n;
        else if (strcmp(a, "--n") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 24, &n), o.n_per_domain = n;
        else if (strcmp(a, "--eval-n") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 24, &n), o.eval_per_domain = n;
        else if (strcmp(a, "--vocab") == 0) rc = cli_parse_int("ifprune study", a, v, 300, 1 << 20, &n), o.vocab = n;
        else if (strcmp(a, "--batch") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 16, &n), o.batch = (int)n;
        else if (strcmp(a, "--seq") == 0) rc = cli_parse_int("ifprune study", a, v, 16, 1 << 16, &n), o.seq = (int)n;
        else if (strcmp(a, "--max-tokens") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 16, &n), o.max_new_tokens = n;
        else if (strcmp(a, "--seed") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 2147483647L, &n), o.seed = (uint64_t)n;
        else if (strcmp(a, "--lr") == 0) rc = parse_double(sub, a, v, 1e-12, 10, &o.lr);
        else if (strcmp(a, "--lr-mult") == 0) rc = parse_double(sub, a, v, 1e-6, 100, &o.lr_mult);
        else if (strcmp(a, "--predictor-steps") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1L << 30, &n), o.predictor_steps = n;
        else if (strcmp(a, "--dense-steps") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 1L << 30, &n), o.dense_steps = n;
        else if (strcmp(a, "--anneal-steps") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 1L << 30, &n), o.anneal_steps = n;
        else if (strcmp(a, "--temperature") == 0) rc = parse_double(sub, a, v, 1e-6, 1e6, &o.temperature);
        else if (strcmp(a, "--balance") == 0) rc = parse_double(sub, a, v, 0, 1e6, &o.balance);
        else if (strcmp(a, "--predictor-reads") == 0) rc = parse_reads(sub, a, v, &o.pred_reads_input);
        else if (strcmp(a, "--pred-seq") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 16, &n), o.pred_seq = (int)n;
        else if (strcmp(a, "--speed-rounds") == 0) rc = cli_parse_int("ifprune study", a, v, 0, 1000, &n), o.speed_rounds = (int)n;
        else if (strcmp(a, "--speed-tokens") == 0) rc = cli_parse_int("ifprune study", a, v, 1, 1 << 16, &n), o.speed_tokens = n;
        else if (strcmp(a, "--difficulty") == 0) {
            orc_task_gen g = {0};
            orc_error derr = {0};
            rc = need(sub, a, v);
            if (!rc && orc_task_difficulty_parse(v, &g, &derr) != ORC_OK) {
                fprintf(stderr, "orchard ifprune study: --difficulty: %s\n", derr.msg);
                rc = 2;
            }
            o.min_difficulty = g.min_difficulty;
            o.max_difficulty = g.max_difficulty;
        } else {
            fprintf(stderr, "orchard ifprune study: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!o.out_dir) {
        fprintf(stderr, "orchard ifprune study: --out DIR is required\n");
        return 2;
    }
    if (o.stage1_steps + o.stage2_steps < 1) {
        fprintf(stderr, "orchard ifprune study: --steps1 + --steps2 must be at least 1\n");
        return 2;
    }
    o.progress = quiet ? NULL : stderr;
    orc_error err = {0};
    if (speed_only) {
        if (orc_ifp_study_speed(&o, &err) != ORC_OK) {
            fprintf(stderr, "orchard ifprune study: %s\n", err.msg);
            return 1;
        }
        printf("decode speeds written to %s/speed.json\n", o.out_dir);
        return 0;
    }
    if (orc_ifp_study(&o, &err) != ORC_OK) {
        fprintf(stderr, "orchard ifprune study: %s\n", err.msg);
        return 1;
    }
    printf("study written to %s/README.md and %s/results.json\n", o.out_dir, o.out_dir);
    return 0;
}

/* For `orchard study ifprune ...`: argv[0] is the study's name, options follow
 * (the dispatcher in cli/cmd_study.c calls it with argc - 1, argv + 1). */
int cmd_ifprune_study(int argc, char **argv) { return sub_study(argc, argv); }

/* ---- summary ---------------------------------------------------------------------------------- */

static void print_summary(const char *const *dirs, const orc_ifp_summary *s) {
    printf("%-40s %6s %11s %12s %8s %16s %16s\n", "study", "seed", "dense-full", "dense-small", "ifprune",
           "ifprune - small", "decode vs small");
    for (int i = 0; i < s->n; i++)
        printf("%-40s %6lld %10.1f%% %11.1f%% %7.1f%% %+16.1f %15.2fx\n", dirs[i], s->seed[i], s->acc[i][0],
               s->acc[i][1], s->acc[i][2], s->gain[i], s->speed[i]);
    printf("%-40s %6s %10.1f%% %11.1f%% %7.1f%% %+16.1f %15.2fx\n", "mean", "", s->mean_acc[0], s->mean_acc[1],
           s->mean_acc[2], s->mean_gain, s->mean_speed);
    printf("per domain, mean over the studies:\n");
    for (int d = 0; d < s->n_domains; d++)
        printf("  %-38s %6s %10.1f%% %11.1f%% %7.1f%% %+16.1f\n", s->domain[d], "", s->domain_mean[d][0],
               s->domain_mean[d][1], s->domain_mean[d][2], s->domain_mean[d][2] - s->domain_mean[d][1]);
    if (s->n > 1)
        printf("IFPruning - dense-small over %d seeds: %+.1f points, 95%% interval [%+.1f, %+.1f] (Student's t, %d df; "
               "sd %.1f)\n", s->n, s->mean_gain, s->mean_gain - s->gain_ci95, s->mean_gain + s->gain_ci95, s->n - 1,
               s->gain_sd);
    else
        printf("IFPruning - dense-small: %+.1f points (one seed: no interval over seeds)\n", s->mean_gain);
    const double vs_full = s->mean_acc[2] - s->mean_acc[0];
    if (s->n > 1)
        printf("IFPruning - dense-full over %d seeds: %+.1f points, 95%% interval [%+.1f, %+.1f]\n", s->n, vs_full,
               vs_full - s->vs_full_ci95, vs_full + s->vs_full_ci95);
    if (isfinite(s->gap_closed))
        printf("Gap dense-full - dense-small of the means: %.1f points, %.0f%% of it closed.\n",
               s->mean_acc[0] - s->mean_acc[1], 100 * s->gap_closed);
    else
        printf("No gap: dense-small's mean is at or above dense-full's.\n");
    printf("Target on the means (>= +5 points, >= half the gap, >= 0.9x decode speed): %s\n",
           s->target_met ? "met" : "NOT met");
}

static json_t *summary_json(const char *const *dirs, const orc_ifp_summary *s) {
    json_t *rows = json_array();
    for (int i = 0; i < s->n; i++)
        json_array_append_new(rows, json_pack("{s:s, s:I, s:f, s:f, s:f, s:f, s:f}", "study", dirs[i], "seed",
                                              (json_int_t)s->seed[i], "dense_full", s->acc[i][0], "dense_small",
                                              s->acc[i][1], "ifprune", s->acc[i][2], "gain", s->gain[i],
                                              "decode_speed_vs_dense_small", s->speed[i]));
    json_t *j = json_pack("{s:o, s:I, s:f, s:f, s:f, s:f, s:f}", "studies", rows, "n", (json_int_t)s->n,
                          "mean_dense_full", s->mean_acc[0], "mean_dense_small", s->mean_acc[1], "mean_ifprune",
                          s->mean_acc[2], "mean_gain", s->mean_gain, "mean_decode_speed_vs_dense_small", s->mean_speed);
    json_object_set_new(j, "gain_sd", isfinite(s->gain_sd) ? json_real(s->gain_sd) : json_null());
    json_object_set_new(j, "gain_ci95", isfinite(s->gain_ci95) ? json_real(s->gain_ci95) : json_null());
    json_object_set_new(j, "ifprune_minus_dense_full", json_real(s->mean_acc[2] - s->mean_acc[0]));
    json_object_set_new(j, "ifprune_minus_dense_full_ci95",
                        isfinite(s->vs_full_ci95) ? json_real(s->vs_full_ci95) : json_null());
    json_object_set_new(j, "gap_closed_fraction", isfinite(s->gap_closed) ? json_real(s->gap_closed) : json_null());
    json_object_set_new(j, "target_met", json_boolean(s->target_met));
    json_t *doms = json_object();
    for (int d = 0; d < s->n_domains; d++)
        json_object_set_new(doms, s->domain[d], json_pack("{s:f, s:f, s:f}", "dense_full", s->domain_mean[d][0],
                                                          "dense_small", s->domain_mean[d][1], "ifprune",
                                                          s->domain_mean[d][2]));
    json_object_set_new(j, "domain_means", doms);
    return j;
}

static void print_json(json_t *j) {
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt) printf("%s\n", txt);
    free(txt);
    json_decref(j);
}

static json_t *versus_json(const char *const *a_dirs, const char *const *b_dirs, const orc_ifp_versus *v) {
    json_t *diff = json_array();
    for (int i = 0; i < v->n; i++)
        json_array_append_new(diff, json_pack("{s:I, s:f}", "seed", (json_int_t)v->a.seed[i], "diff", v->diff[i]));
    json_t *vs = json_pack("{s:s, s:o, s:f}", "settings", v->settings, "by_seed", diff, "mean_diff", v->mean_diff);
    json_object_set_new(vs, "diff_ci95", isfinite(v->diff_ci95) ? json_real(v->diff_ci95) : json_null());
    return json_pack("{s:o, s:o, s:o}", "a", summary_json(a_dirs, &v->a), "b", summary_json(b_dirs, &v->b),
                     "b_minus_a", vs);
}

/* B - A, seed by seed: the gains' differences, their mean and interval. */
static void print_versus(const char *const *a_dirs, const orc_ifp_versus *v) {
    printf("\nB - A, paired by seed (B sets differently: %s)\n", v->settings[0] ? v->settings : "nothing");
    printf("%-40s %6s %14s %14s %10s\n", "study (A)", "seed", "A: ifp - small", "B: ifp - small", "B - A");
    for (int i = 0; i < v->n; i++)
        printf("%-40s %6lld %+14.1f %+14.1f %+10.1f\n", a_dirs[i], v->a.seed[i], v->a.gain[i],
               v->a.gain[i] + v->diff[i], v->diff[i]);
    if (v->n > 1)
        printf("B - A in IFPruning - dense-small over %d seeds: %+.1f points, 95%% interval [%+.1f, %+.1f] "
               "(Student's t, %d df)\n", v->n, v->mean_diff, v->mean_diff - v->diff_ci95, v->mean_diff + v->diff_ci95,
               v->n - 1);
    else
        printf("B - A in IFPruning - dense-small: %+.1f points (one seed: no interval)\n", v->mean_diff);
}

static int summary_usage_error(const char *msg, const char **dirs) {
    fprintf(stderr, "orchard ifprune summary: %s\n", msg);
    free(dirs);
    return 2;
}

static int sub_summary(int argc, char **argv) {
    bool as_json = false;
    const char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
    int n = 0, na = -1; /* na: the number of A's directories once --versus is seen */
    if (!dirs) return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) as_json = true;
        else if (strcmp(argv[i], "--versus") == 0) {
            if (na >= 0) return summary_usage_error("--versus given twice", dirs);
            na = n;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "orchard ifprune summary: unknown option '%s'\n", argv[i]);
            free(dirs);
            return 2;
        } else dirs[n++] = argv[i];
    }
    if (n == 0 || na == 0) return summary_usage_error("give the directories of finished studies (DIR...)", dirs);
    if (na == n) return summary_usage_error("give the directories to compare after --versus", dirs);
    orc_error err = {0};
    int rc = 0;
    if (na < 0) {
        orc_ifp_summary s;
        if (orc_ifp_study_summary(dirs, n, &s, &err) != ORC_OK) {
            fprintf(stderr, "orchard ifprune %s\n", err.msg);
            rc = 1;
        } else {
            if (as_json) print_json(summary_json(dirs, &s));
            else print_summary(dirs, &s);
            orc_ifp_summary_free(&s);
        }
    } else {
        orc_ifp_versus v;
        if (orc_ifp_study_versus(dirs, na, dirs + na, n - na, &v, &err) != ORC_OK) {
            fprintf(stderr, "orchard ifprune %s\n", err.msg);
            rc = 1;
        } else if (as_json) {
            print_json(versus_json(dirs, dirs + na, &v));
        } else {
            printf("A:\n");
            print_summary(dirs, &v.a);
            printf("\nB:\n");
            print_summary(dirs + na, &v.b);
            print_versus(dirs, &v);
        }
        if (rc == 0) orc_ifp_versus_free(&v);
    }
    free(dirs);
    return rc;
}

int cmd_ifprune(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "orchard ifprune: a subcommand is required (train, generate, compact, overlap, study, "
                        "summary); see `orchard ifprune --help`\n");
        return 2;
    }
    const char *s = argv[1];
    if (strcmp(s, "train") == 0) return sub_train(argc - 1, argv + 1);
    if (strcmp(s, "generate") == 0) return sub_generate(argc - 1, argv + 1);
    if (strcmp(s, "compact") == 0) return sub_compact(argc - 1, argv + 1);
    if (strcmp(s, "overlap") == 0) return sub_overlap(argc - 1, argv + 1);
    if (strcmp(s, "study") == 0) return sub_study(argc - 1, argv + 1);
    if (strcmp(s, "summary") == 0) return sub_summary(argc - 1, argv + 1);
    fprintf(stderr, "orchard ifprune: unknown subcommand '%s' (train, generate, compact, overlap, study, "
                    "summary)\n", s);
    return 2;
}
