/* `orchard generate`, `orchard chat`, `orchard eval` and the unlisted
 * `orchard init`: text continuation with streaming output and optional
 * token ids and speed figures, an interactive chat with orchard's template,
 * the loss / perplexity / bits per byte of a text file, and a randomly
 * initialised model directory (for tests, benchmarks and as the starting
 * point of training). The work itself lives in orchard/generate.h. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "orchard/chat.h"
#include "orchard/generate.h"
#include "orchard/lora.h"

#define MAX_STOPS 16

static const char SAMPLER_HELP[] =
    "  --max-tokens N       tokens to generate at most (default %d)\n"
    "  --temperature F      0 is greedy (default 0.8)\n"
    "  --top-k N            keep the N most likely tokens; 0 = off (default 40)\n"
    "  --top-p F            keep the smallest set with this much probability; 1 = off (default 0.95)\n"
    "  --min-p F            drop tokens below F times the top probability; 0 = off (default 0.05)\n"
    "  --repeat-penalty F   divide positive / multiply negative logits of recent tokens; 1 = off (default)\n"
    "  --repeat-last-n N    how many recent tokens the penalty covers; -1 = all (default 64)\n"
    "  --seed N             the sampler's random seed: same seed, same text (default 0)\n"
    "  --context N          positions to use, at most the model's max_position_embeddings\n"
    "  --adapter DIR[:W][,DIR[:W]...]  LoRA adapters (docs/lora.md): each adds W (default 1)\n"
    "                       times its alpha/r * B A to the projections it targets\n";

void cmd_generate_help(void) {
    printf("usage: orchard generate --model DIR (--prompt TEXT | --prompt-file FILE) [options]\n\n"
           "Continue a text with the model in DIR (config.json, model.safetensors, tokenizer.json)\n"
           "and stream the continuation to standard output. The prompt is prefilled in one\n"
           "batched pass, then tokens are decoded one at a time through a KV cache. Generation\n"
           "stops after --max-tokens, at the end-of-text token, or at a --stop string (which is\n"
           "not printed).\n\n"
           "  --ifprune            DIR is an IFPruning model: run `orchard ifprune generate` (the predictor\n"
           "                       picks the FFN channels once, a compact model decodes; its options apply)\n"
           "  --prompt TEXT        the text to continue\n"
           "  --prompt-file FILE   read it from FILE\n"
           "  --stop TEXT          stop when the output contains TEXT (repeatable)\n"
           "  --ids                print the generated token ids as a JSON array instead of the text\n"
           "  --stats              print prompt and decode speed as JSON on standard error\n"
           "  --no-bos             do not start the prompt with <|begin_of_text|>\n"
           "  --ignore-eos         keep going past the end-of-text token (benchmarks)\n"
           "  --no-cache           recompute the whole sequence for every token (a check; slow)\n");
    printf(SAMPLER_HELP, 256);
}

void cmd_chat_help(void) {
    printf("usage: orchard chat --model DIR [--system TEXT] [--chat-template T] [options]\n\n"
           "Chat with the model in DIR using its chat template. Each line typed is a user\n"
           "message; the reply streams back. The conversation is kept as long as it fits the\n"
           "context; when it does not, the oldest turns are dropped (with a notice on standard\n"
           "error). /reset starts over, /exit (or end of input) quits. When standard input is\n"
           "not a terminal every line is one message and no prompt is printed.\n\n"
           "  --system TEXT        a system message that starts every conversation\n"
           "  --chat-template T    orchard, chatml, llama3 or auto (default: DIR/chat_template if\n"
           "                       present, else chosen from the tokenizer's special tokens)\n");
    printf(SAMPLER_HELP, 512);
}

void cmd_eval_help(void) {
    printf("usage: orchard eval --model DIR --text FILE [--field NAME] [--stride N] [--context N]\n"
           "                    [--adapter DIR[:W][,DIR...]]\n\n"
           "Score a text with the model and print one JSON object: tokens (scored), loss (mean\n"
           "next-token negative log-likelihood in nats), ppl (exp(loss)), bits_per_byte (total\n"
           "nats / ln 2 / bytes of the scored text), bytes, windows. Each document starts with\n"
           "<|begin_of_text|> when the tokenizer has it. The token stream is scored in windows of\n"
           "the context length; --stride smaller than the context overlaps them, and each\n"
           "window scores only its new tokens, so every token gets more left context.\n\n"
           "  --text FILE      plain text (one document), or FILE.jsonl: one JSON object per line\n"
           "  --field NAME     the JSONL field holding the text (default text)\n"
           "  --stride N       tokens between window starts (default: the context)\n"
           "  --context N      window length (default: the model's max_position_embeddings)\n"
           "  --adapter LIST   score with these LoRA adapters active (as for generate)\n");
}

void cmd_init_help(void) {
    printf("usage: orchard init --config FILE.json|tiny|small|base --tokenizer DIR --out DIR [--seed N]\n\n"
           "Write a randomly initialised model directory: OUT/config.json, OUT/model.safetensors\n"
           "and OUT/tokenizer.json. The configuration is a Hugging Face Llama config.json or a\n"
           "preset name; its vocab_size must hold the tokenizer's ids, and bos/eos ids come\n"
           "from the tokenizer when the config has none. Weights are N(0, 0.02) (residual\n"
           "projections scaled by 1/sqrt(2 layers)), norms 1, from --seed (default 0).\n");
}

/* ---- option parsing --------------------------------------------------------------- */

static int parse_float(const char *cmd, const char *opt, const char *value, double lo, double hi, float *out) {
    if (!value) {
        fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, opt);
        return 2;
    }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "orchard %s: option %s expects a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, value);
        return 2;
    }
    *out = (float)v;
    return 0;
}

static int parse_u64(const char *cmd, const char *opt, const char *value, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = value ? strtoull(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || value[0] == '-') {
        fprintf(stderr, "orchard %s: option %s expects a non-negative integer, got '%s'\n", cmd, opt,
                value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

/* Options shared by generate and chat. Returns -1 when arg is not one of
 * them, else 0 or the exit status of a bad value; *used is how many argv
 * entries it took. */
typedef struct gen_flags {
    const char *model;
    const char *adapter; /* --adapter list, or NULL */
    orc_gen_opts gen;
    long context;
} gen_flags;

static int parse_common(const char *cmd, gen_flags *f, const char *a, const char *v, int *used) {
    long n;
    int rc;
    *used = 2;
    orc_sampler_opts *s = &f->gen.sampler;
    if (strcmp(a, "--model") == 0) {
        if (!v) {
            fprintf(stderr, "orchard %s: option --model needs a value\n", cmd);
            return 2;
        }
        f->model = v;
        return 0;
    }
    if (strcmp(a, "--adapter") == 0) {
        if (!v) {
            fprintf(stderr, "orchard %s: option --adapter needs a value\n", cmd);
            return 2;
        }
        f->adapter = v;
        return 0;
    }
    if (strcmp(a, "--max-tokens") == 0) {
        rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &n);
        f->gen.max_tokens = n;
        return rc;
    }
    if (strcmp(a, "--top-k") == 0) {
        rc = cli_parse_int(cmd, a, v, 0, ORC_TOK_MAX_VOCAB, &n);
        s->top_k = n;
        return rc;
    }
    if (strcmp(a, "--repeat-last-n") == 0) {
        rc = cli_parse_int(cmd, a, v, -1, 1L << 30, &n);
        s->repeat_last_n = n;
        return rc;
    }
    if (strcmp(a, "--context") == 0) return cli_parse_int(cmd, a, v, 1, 1L << 30, &f->context);
    if (strcmp(a, "--temperature") == 0) return parse_float(cmd, a, v, 0.0, 1e6, &s->temperature);
    if (strcmp(a, "--top-p") == 0) {
        rc = parse_float(cmd, a, v, 0.0, 1.0, &s->top_p);
        if (!rc && s->top_p <= 0.0f) {
            fprintf(stderr, "orchard %s: option --top-p must be above 0, got '%s'\n", cmd, v);
            rc = 2;
        }
        return rc;
    }
    if (strcmp(a, "--min-p") == 0) return parse_float(cmd, a, v, 0.0, 1.0, &s->min_p);
    if (strcmp(a, "--repeat-penalty") == 0) {
        rc = parse_float(cmd, a, v, 0.0, 1e6, &s->repeat_penalty);
        if (!rc && s->repeat_penalty <= 0.0f) {
            fprintf(stderr, "orchard %s: option --repeat-penalty must be above 0, got '%s'\n", cmd, v);
            rc = 2;
        }
        return rc;
    }
    if (strcmp(a, "--seed") == 0) return parse_u64(cmd, a, v, &s->seed);
    return -1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) free(buf);
        buf = nb;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* A model directory with its generator; load() prints the error and returns 1. */
typedef struct loaded {
    orc_llm *m;
    orc_tokenizer *tok;
    orc_generator *g;
    orc_lora_set *adapters; /* --adapter, or NULL */
    orc_lora_stack stack;
} loaded;

static int load(const char *cmd, const char *dir, long context, loaded *l) {
    orc_error err = {0};
    memset(l, 0, sizeof *l);
    if (orc_model_dir_load(dir, &l->m, &l->tok, &err) != ORC_OK ||
        !(l->g = orc_generator_new(l->m, l->tok, context, &err))) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        orc_tokenizer_free(l->tok);
        orc_llm_free(l->m);
        return 1;
    }
    return 0;
}

/* Load the --adapter list and make all of them active on the model. */
static int use_adapters(const char *cmd, const char *list, loaded *l) {
    if (!list) return 0;
    orc_error err = {0};
    l->adapters = orc_lora_set_new(&err);
    if (!l->adapters || orc_lora_set_load_list(l->adapters, list, &l->m->cfg, &l->stack, &err) != ORC_OK ||
        orc_llm_set_adapters(l->m, &l->stack, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: --adapter: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

static void unload(loaded *l) {
    orc_lora_set_free(l->adapters);
    orc_generator_free(l->g);
    orc_tokenizer_free(l->tok);
    orc_llm_free(l->m);
}

/* ---- generate ------------------------------------------------------------------------ */

static bool print_piece(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return true;
}

static void print_stats(const orc_gen_result *r) {
    double pps = r->prompt_seconds > 0 ? (double)r->prefilled / r->prompt_seconds : 0.0;
    double dps = r->decode_seconds > 0 ? (double)r->decode_tokens / r->decode_seconds : 0.0;
    fprintf(stderr,
            "{\"prompt_tokens\": %lld, \"prompt_tokens_per_s\": %.2f, \"decode_tokens\": %lld, "
            "\"decode_tokens_per_s\": %.2f, \"generated_tokens\": %zu, \"stop\": \"%s\"}\n",
            (long long)r->prompt_tokens, pps, (long long)r->decode_tokens, dps, r->n_ids, orc_gen_stop_name(r->stop));
}

/* `orchard generate --ifprune ...` is `orchard ifprune generate ...`: the
 * predictor reads the instruction once and a compact model decodes. */
static int generate_ifprune(int argc, char **argv) {
    char **args = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!args) return 1;
    int n = 0;
    args[n++] = "ifprune";
    args[n++] = "generate";
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--ifprune") != 0) args[n++] = argv[i];
    args[n] = NULL;
    int rc = cmd_ifprune(n, args);
    free(args);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--ifprune") == 0) return generate_ifprune(argc, argv);
    const char *cmd = "generate";
    gen_flags f = {0};
    orc_gen_opts_default(&f.gen);
    const char *prompt = NULL, *prompt_file = NULL;
    const char *stops[MAX_STOPS];
    size_t n_stops = 0;
    bool ids_out = false, stats = false, no_bos = false, ignore_eos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1, rc = parse_common(cmd, &f, a, v, &used);
        if (rc < 0) {
            rc = 0;
            used = 2;
            if (strcmp(a, "--prompt") == 0 || strcmp(a, "--prompt-file") == 0 || strcmp(a, "--stop") == 0) {
                if (!v) {
                    fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, a);
                    return 2;
                }
                if (strcmp(a, "--prompt") == 0) prompt = v;
                else if (strcmp(a, "--prompt-file") == 0) prompt_file = v;
                else if (!v[0]) {
                    fprintf(stderr, "orchard %s: --stop needs a non-empty string\n", cmd);
                    return 2;
                } else if (n_stops == MAX_STOPS) {
                    fprintf(stderr, "orchard %s: at most %d --stop strings\n", cmd, MAX_STOPS);
                    return 2;
                } else {
                    stops[n_stops++] = v;
                }
            } else {
                used = 1;
                if (strcmp(a, "--ids") == 0) ids_out = true;
                else if (strcmp(a, "--stats") == 0) stats = true;
                else if (strcmp(a, "--no-bos") == 0) no_bos = true;
                else if (strcmp(a, "--ignore-eos") == 0) ignore_eos = true;
                else if (strcmp(a, "--no-cache") == 0) f.gen.no_cache = true;
                else {
                    fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
                    return 2;
                }
            }
        }
        if (rc) return rc;
        i += used - 1;
    }
    if (!f.model || (!prompt == !prompt_file)) {
        fprintf(stderr, "orchard %s: --model and one of --prompt or --prompt-file are required; see "
                        "`orchard generate --help`\n", cmd);
        return 2;
    }
    size_t plen = prompt ? strlen(prompt) : 0;
    char *file_text = NULL;
    if (prompt_file) {
        file_text = read_file(prompt_file, &plen);
        if (!file_text) {
            fprintf(stderr, "orchard %s: %s: cannot read the prompt: %s\n", cmd, prompt_file, strerror(errno));
            return 1;
        }
        prompt = file_text;
    }
    loaded l;
    if (load(cmd, f.model, f.context, &l)) {
        free(file_text);
        return 1;
    }
    if (use_adapters(cmd, f.adapter, &l)) {
        free(file_text);
        unload(&l);
        return 1;
    }
    orc_error err = {0};
    int rc = 0;
    int32_t *enc = NULL, *ids = NULL;
    size_t n_enc = 0;
    orc_gen_result res = {0};
    if (orc_tokenizer_encode(l.tok, prompt, plen, 0, &enc, &n_enc, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        rc = 1;
        goto done;
    }
    const int32_t bos = no_bos ? -1 : orc_tokenizer_special_id(l.tok, ORC_TOK_BEGIN_OF_TEXT);
    size_t n = n_enc + (bos >= 0);
    ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!ids) {
        fprintf(stderr, "orchard %s: out of memory\n", cmd);
        rc = 1;
        goto done;
    }
    if (bos >= 0) ids[0] = bos;
    memcpy(ids + (bos >= 0), enc, sizeof(int32_t) * n_enc);
    if (n == 0) {
        fprintf(stderr, "orchard %s: the prompt is empty and the tokenizer has no %s to start from\n", cmd,
                ORC_TOK_BEGIN_OF_TEXT);
        rc = 1;
        goto done;
    }
    int32_t stop_ids[2];
    size_t n_stop_ids = 0;
    if (!ignore_eos) {
        int32_t eot = orc_tokenizer_special_id(l.tok, ORC_TOK_END_OF_TEXT);
        if (eot >= 0) stop_ids[n_stop_ids++] = eot;
        if (l.m->cfg.eos_token_id >= 0 && l.m->cfg.eos_token_id != eot)
            stop_ids[n_stop_ids++] = (int32_t)l.m->cfg.eos_token_id;
    }
    f.gen.stop_ids = stop_ids;
    f.gen.n_stop_ids = n_stop_ids;
    f.gen.stop_strings = stops;
    f.gen.n_stop_strings = n_stops;
    f.gen.on_token = ids_out ? NULL : print_piece;
    if (orc_generate(l.g, ids, n, &f.gen, &res, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        rc = 1;
        goto done;
    }
    if (ids_out) {
        printf("[");
        for (size_t i = 0; i < res.n_ids; i++) printf(i ? ", %d" : "%d", (int)res.ids[i]);
        printf("]\n");
    } else if (isatty(STDOUT_FILENO)) {
        printf("\n");
    }
    fflush(stdout);
    if (stats) print_stats(&res);
done:
    orc_gen_result_free(&res);
    free(enc);
    free(ids);
    free(file_text);
    unload(&l);
    return rc;
}

/* ---- chat ------------------------------------------------------------------------------ */

typedef struct history {
    orc_chat_msg *msgs;
    size_t n, cap;
    size_t first_turn; /* index after the system message, if any */
} history;

static bool history_push(history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        orc_chat_msg *m = realloc(h->msgs, cap * sizeof *m);
        if (!m) return false;
        h->msgs = m;
        h->cap = cap;
    }
    char *c = strdup(content);
    if (!c) return false;
    h->msgs[h->n++] = (orc_chat_msg){role, c};
    return true;
}

static void history_drop(history *h, size_t from, size_t count) {
    for (size_t i = from; i < from + count; i++) free((char *)h->msgs[i].content);
    memmove(h->msgs + from, h->msgs + from + count, (h->n - from - count) * sizeof *h->msgs);
    h->n -= count;
}

static void history_reset(history *h) { history_drop(h, h->first_turn, h->n - h->first_turn); }

/* Encode the conversation with a generation prompt, dropping the oldest
 * turns until it leaves room for a reply. Returns 0, or 1 when even the
 * newest message alone does not fit (the message is then dropped). */
static int encode_fitting(const char *cmd, orc_chat_template tmpl, const orc_tokenizer *tok, history *h,
                          int64_t context, int64_t reserve, int32_t **ids, size_t *n) {
    orc_error err = {0};
    for (;;) {
        *ids = NULL;
        if (orc_chat_encode_with(tmpl, tok, h->msgs, h->n, true, ids, NULL, n, &err) != ORC_OK) {
            fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
            history_drop(h, h->n - 1, 1);
            return 1;
        }
        if ((int64_t)*n + reserve <= context) return 0;
        if (h->n - h->first_turn <= 1) {
            if ((int64_t)*n < context) return 0; /* room for a short reply */
            fprintf(stderr, "orchard %s: the message needs %zu tokens but the context holds only %lld; not sent\n",
                    cmd, *n, (long long)context);
            free(*ids);
            history_drop(h, h->n - 1, 1);
            return 1;
        }
        free(*ids);
        /* The oldest turn: a user message and the reply that followed it. */
        size_t k = h->n - h->first_turn > 2 && strcmp(h->msgs[h->first_turn + 1].role, "assistant") == 0 ? 2 : 1;
        history_drop(h, h->first_turn, k);
        fprintf(stderr, "[dropped the oldest turn to fit the context of %lld tokens]\n", (long long)context);
    }
}

int cmd_chat(int argc, char **argv) {
    const char *cmd = "chat";
    gen_flags f = {0};
    orc_gen_opts_default(&f.gen);
    f.gen.max_tokens = 512;
    const char *system = NULL, *template_name = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1, rc = parse_common(cmd, &f, a, v, &used);
        if (rc < 0) {
            if ((strcmp(a, "--system") == 0 || strcmp(a, "--chat-template") == 0) && v) {
                if (a[2] == 's') system = v;
                else template_name = v;
                rc = 0;
                used = 2;
            } else if (strcmp(a, "--system") == 0 || strcmp(a, "--chat-template") == 0) {
                fprintf(stderr, "orchard %s: option --system needs a value\n", cmd);
                return 2;
            } else {
                fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
                return 2;
            }
        }
        if (rc) return rc;
        i += used - 1;
    }
    if (!f.model) {
        fprintf(stderr, "orchard %s: --model is required; see `orchard chat --help`\n", cmd);
        return 2;
    }
    loaded l;
    if (load(cmd, f.model, f.context, &l)) return 1;
    if (use_adapters(cmd, f.adapter, &l)) {
        unload(&l);
        return 1;
    }
    orc_chat_template tmpl = ORC_CHAT_AUTO;
    {
        orc_error terr = {0};
        orc_status tst = template_name ? orc_chat_template_parse(template_name, &tmpl, &terr)
                                       : orc_chat_template_for_model(f.model, l.tok, &tmpl, &terr);
        if (tst != ORC_OK) {
            fprintf(stderr, "orchard %s: %s\n", cmd, terr.msg);
            unload(&l);
            return 2;
        }
        if (tmpl == ORC_CHAT_AUTO) tmpl = orc_chat_template_detect(l.tok);
    }
    int32_t stop_ids[4];
    f.gen.stop_ids = stop_ids;
    f.gen.n_stop_ids = orc_chat_stop_ids_with(tmpl, l.tok, stop_ids, 4);
    if (f.gen.n_stop_ids > 4) f.gen.n_stop_ids = 4;
    f.gen.on_token = print_piece;
    const int64_t context = orc_generator_context(l.g);
    const int64_t reserve = f.gen.max_tokens < context / 4 ? f.gen.max_tokens : context / 4;
    const bool tty = isatty(STDIN_FILENO);
    const uint64_t seed = f.gen.sampler.seed;
    history h = {0};
    int rc = 0;
    if (system && !history_push(&h, "system", system)) rc = 1;
    h.first_turn = h.n;
    {
        /* Fail early, before reading input, if the tokenizer lacks the template's tokens. */
        orc_chat_msg probe = {"user", ""};
        int32_t *ids = NULL;
        size_t n = 0;
        orc_error err = {0};
        if (orc_chat_encode_with(tmpl, l.tok, &probe, 1, true, &ids, NULL, &n, &err) != ORC_OK) {
            fprintf(stderr, "orchard %s: %s/tokenizer.json: %s\n", cmd, f.model, err.msg);
            rc = 1;
        }
        free(ids);
    }
    if (tty && rc == 0) fprintf(stderr, "chat with %s; /reset starts over, /exit quits\n", f.model);
    char *line = NULL;
    size_t line_cap = 0;
    for (uint64_t turn = 0; rc == 0; turn++) {
        if (tty) {
            printf("> ");
            fflush(stdout);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            history_reset(&h);
            orc_generator_reset(l.g);
            fprintf(stderr, "[conversation reset]\n");
            continue;
        }
        if (!history_push(&h, "user", line)) {
            rc = 1;
            break;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        if (encode_fitting(cmd, tmpl, l.tok, &h, context, reserve, &ids, &n)) continue;
        orc_gen_result res;
        orc_error err = {0};
        f.gen.sampler.seed = seed + turn; /* reproducible, yet not the same draws every turn */
        if (orc_generate(l.g, ids, n, &f.gen, &res, &err) != ORC_OK) {
            fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
            free(ids);
            rc = 1;
            break;
        }
        printf("\n");
        fflush(stdout);
        if (!history_push(&h, "assistant", res.text)) rc = 1;
        orc_gen_result_free(&res);
        free(ids);
    }
    free(line);
    history_drop(&h, 0, h.n);
    free(h.msgs);
    unload(&l);
    return rc;
}

/* ---- eval -------------------------------------------------------------------------------- */

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval", *model = NULL, *path = NULL, *field = NULL, *adapter = NULL;
    long stride = 0, context = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--model") == 0 || strcmp(a, "--text") == 0 || strcmp(a, "--field") == 0 ||
            strcmp(a, "--adapter") == 0) {
            if (!v) {
                fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, a);
                return 2;
            }
            if (a[2] == 'a') adapter = v;
            else if (a[2] == 'm') model = v;
            else if (a[2] == 't') path = v;
            else field = v;
        } else if (strcmp(a, "--stride") == 0) {
            rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &stride);
        } else if (strcmp(a, "--context") == 0) {
            rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &context);
        } else {
            fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!model || !path) {
        fprintf(stderr, "orchard %s: --model and --text are required; see `orchard eval --help`\n", cmd);
        return 2;
    }
    if (!field && cli_ends_with(path, ".jsonl")) field = "text";
    orc_llm *m = NULL;
    orc_tokenizer *tok = NULL;
    orc_error err = {0};
    if (orc_model_dir_load(model, &m, &tok, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        return 1;
    }
    if (context > m->cfg.max_position_embeddings || stride > (context ? context : m->cfg.max_position_embeddings)) {
        fprintf(stderr, "orchard %s: --context %ld / --stride %ld exceed the model's %lld positions\n", cmd, context,
                stride, (long long)m->cfg.max_position_embeddings);
        orc_tokenizer_free(tok);
        orc_llm_free(m);
        return 2;
    }
    cli_texts t = {0};
    orc_eval_result r;
    int rc = 0;
    loaded ad = {.m = m};
    if (use_adapters(cmd, adapter, &ad)) {
        orc_lora_set_free(ad.adapters);
        orc_tokenizer_free(tok);
        orc_llm_free(m);
        return 1;
    }
    if (cli_texts_read(path, field, &t, &err) != ORC_OK ||
        orc_eval_texts(m, tok, (const char *const *)t.p, t.len, t.n, context, stride, &r, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        rc = 1;
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "tokens", json_integer(r.tokens));
        json_object_set_new(j, "loss", json_real(r.loss));
        json_object_set_new(j, "ppl", json_real(r.ppl));
        json_object_set_new(j, "bits_per_byte", json_real(r.bits_per_byte));
        json_object_set_new(j, "bytes", json_integer(r.bytes));
        json_object_set_new(j, "windows", json_integer(r.windows));
        rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
    }
    cli_texts_free(&t);
    orc_lora_set_free(ad.adapters);
    orc_tokenizer_free(tok);
    orc_llm_free(m);
    return rc;
}

/* ---- init ----------------------------------------------------------------------------------- */

int cmd_init(int argc, char **argv) {
    const char *cmd = "init", *config = NULL, *tok_dir = NULL, *out = NULL;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seed") == 0) {
            int rc = parse_u64(cmd, a, v, &seed);
            if (rc) return rc;
        } else if (strcmp(a, "--config") == 0 || strcmp(a, "--tokenizer") == 0 || strcmp(a, "--out") == 0) {
            if (!v) {
                fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, a);
                return 2;
            }
            if (a[2] == 'c') config = v;
            else if (a[2] == 't') tok_dir = v;
            else out = v;
        } else {
            fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
            return 2;
        }
    }
    if (!config || !tok_dir || !out) {
        fprintf(stderr, "orchard %s: --config, --tokenizer and --out are required; see `orchard init --help`\n", cmd);
        return 2;
    }
    orc_error err = {0};
    orc_llm_config cfg;
    bool preset = !strchr(config, '/') && !cli_ends_with(config, ".json");
    if ((preset ? orc_llm_config_preset(config, &cfg, &err) : orc_llm_config_load(config, &cfg, &err)) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        return preset ? 2 : 1;
    }
    orc_tokenizer *tok = orc_tokenizer_load(tok_dir, &err);
    if (!tok) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        return 1;
    }
    int rc = 0;
    size_t tv = orc_tokenizer_vocab_size(tok);
    if ((int64_t)tv > cfg.vocab_size) {
        fprintf(stderr, "orchard %s: %s: the tokenizer has %zu ids but %s has vocab_size %lld\n", cmd, tok_dir, tv,
                config, (long long)cfg.vocab_size);
        orc_tokenizer_free(tok);
        return 1;
    }
    if (cfg.bos_token_id < 0) cfg.bos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    if (cfg.eos_token_id < 0) cfg.eos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    orc_llm *m = orc_llm_create(&cfg, false, &err);
    if (m) orc_llm_init_weights(m, seed);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    if (!m || orc_llm_save(m, out, &err) != ORC_OK || orc_tokenizer_save(tok, path, &err) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        rc = 1;
    } else {
        printf("%s: %lld parameters, vocab %lld, context %lld, seed %llu\n", out,
               (long long)orc_llm_config_num_params(&cfg), (long long)cfg.vocab_size,
               (long long)cfg.max_position_embeddings, (unsigned long long)seed);
    }
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    return rc;
}
