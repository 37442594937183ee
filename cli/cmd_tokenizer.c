/* `orchard tokenizer train`, `orchard tokenize` and `orchard detokenize`:
 * train a byte-level BPE tokenizer from text files into DIR/tokenizer.json,
 * turn a text file into a JSON array of ids, and turn such an array back
 * into text. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commands.h"
#include "orchard/tokenizer.h"

void cmd_tokenizer_help(void) {
    printf("usage: orchard tokenizer train --input FILE [--input FILE ...] --vocab-size N --out DIR\n"
           "                                [--jsonl-field NAME] [--min-frequency N] [--gpt2-digits]\n\n"
           "Train a byte-level BPE tokenizer and write DIR/tokenizer.json (Hugging Face format).\n"
           "The vocabulary holds the 256 bytes, the learned merges and the special tokens\n"
           "<|begin_of_text|> <|end_of_text|> <|pad|> <|system|> <|user|> <|assistant|> <|tool|> <|end|>.\n"
           "Prints the vocabulary size, the merges, the time and the compression on the input.\n\n"
           "  --input FILE        a text file (repeatable)\n"
           "  --jsonl-field NAME  the inputs hold one JSON object per line; train on field NAME\n"
           "  --vocab-size N      target vocabulary size, specials included\n"
           "  --out DIR           output directory (created if missing)\n"
           "  --min-frequency N   stop when the most frequent pair occurs fewer times (default 2)\n"
           "  --gpt2-digits       keep digit runs together (default: every digit its own token)\n");
}

void cmd_tokenize_help(void) {
    printf("usage: orchard tokenize --model DIR --text FILE [--special]\n\n"
           "Print the token ids of FILE's bytes as a JSON array on one line. DIR holds\n"
           "tokenizer.json or encoder.json + vocab.bpe (a tokenizer.json path works too).\n\n"
           "  --special   turn special-token text such as <|user|> into its id\n");
}

void cmd_detokenize_help(void) {
    printf("usage: orchard detokenize --model DIR --ids FILE.json\n\n"
           "Write the bytes of a JSON array of token ids to standard output.\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct ratio_ctx {
    const orc_tokenizer *tok;
    size_t bytes, tokens;
} ratio_ctx;

static orc_status count_tokens(void *ctx, const char *text, size_t len, orc_error *err) {
    ratio_ctx *r = ctx;
    int32_t *ids;
    size_t n;
    orc_status st = orc_tokenizer_encode(r->tok, text, len, 0, &ids, &n, err);
    if (st != ORC_OK) return st;
    free(ids);
    r->bytes += len;
    r->tokens += n;
    return ORC_OK;
}

static int train_usage(const char *msg, const char *arg) {
    fprintf(stderr, "orchard tokenizer train: %s%s%s\n", msg, arg ? arg : "", arg ? "'" : "");
    return 2;
}

static int train(int argc, char **argv) {
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    size_t n_inputs = 0;
    const char *field = NULL, *out = NULL;
    long vocab = 0, min_freq = 0;
    bool gpt2 = false;
    int rc = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--input") == 0 || strcmp(a, "--jsonl-field") == 0 || strcmp(a, "--out") == 0) {
            if (!v) {
                rc = train_usage("option needs a value: '", a);
                break;
            }
            if (a[2] == 'i') inputs[n_inputs++] = v;
            else if (a[2] == 'j') field = v;
            else out = v;
            i++;
        } else if (strcmp(a, "--vocab-size") == 0) {
            rc = cli_parse_int("tokenizer train", a, v, 256, ORC_TOK_MAX_VOCAB, &vocab);
            i++;
        } else if (strcmp(a, "--min-frequency") == 0) {
            rc = cli_parse_int("tokenizer train", a, v, 1, 1L << 40, &min_freq);
            i++;
        } else if (strcmp(a, "--gpt2-digits") == 0) {
            gpt2 = true;
        } else {
            rc = train_usage("unknown option '", a);
        }
    }
    if (rc == 0 && (!n_inputs || !vocab || !out))
        rc = train_usage("--input, --vocab-size and --out are required; see `orchard help tokenizer`", NULL);
    if (rc) {
        free(inputs);
        return rc;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "orchard tokenizer train: cannot create %s: %s\n", out, strerror(errno));
        free(inputs);
        return 1;
    }
    orc_error err = {0};
    orc_tokenizer_train_opts opts = {.vocab_size = (size_t)vocab, .min_frequency = min_freq,
                                     .pretok = gpt2 ? ORC_PRETOK_GPT2 : ORC_PRETOK_SPLIT_DIGITS};
    double t0 = now_s();
    orc_tok_trainer *tr = orc_tok_trainer_new(&opts, &err);
    orc_tokenizer *tok = NULL;
    for (size_t i = 0; tr && i < n_inputs; i++)
        if (orc_tok_trainer_add_file(tr, inputs[i], field, &err) != ORC_OK) goto fail;
    double t1 = now_s();
    if (tr) tok = orc_tok_trainer_finish(tr, &err);
    if (!tok) goto fail;
    double t2 = now_s();
    if (orc_tokenizer_save(tok, out, &err) != ORC_OK) goto fail;
    ratio_ctx r = {.tok = tok};
    for (size_t i = 0; i < n_inputs; i++)
        if (orc_tok_for_each_text(inputs[i], field, count_tokens, &r, &err) != ORC_OK) goto fail;
    double t3 = now_s();
    printf("vocab size: %zu (%zu merges, %zu words counted)\n", orc_tokenizer_vocab_size(tok),
           orc_tokenizer_merge_count(tok), orc_tok_trainer_word_count(tr));
    printf("time: %.2f s counting, %.2f s merging, %.2f s encoding the input\n", t1 - t0, t2 - t1, t3 - t2);
    printf("compression: %.3f bytes per token (%zu bytes, %zu tokens)\n",
           r.tokens ? (double)r.bytes / (double)r.tokens : 0.0, r.bytes, r.tokens);
    printf("wrote %s/tokenizer.json\n", out);
    goto done;
fail:
    fprintf(stderr, "orchard tokenizer train: %s\n", err.msg);
    rc = 1;
done:
    orc_tokenizer_free(tok);
    orc_tok_trainer_free(tr);
    free(inputs);
    return rc;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "train") != 0) {
        fprintf(stderr, "orchard tokenizer: expected `train`; see `orchard help tokenizer`\n");
        return 2;
    }
    return train(argc, argv);
}

/* --model DIR and one file option; 0 on success, else the exit status. */
static int model_and_file(int argc, char **argv, const char *cmd, const char *file_opt, const char **model,
                          const char **file, bool *special) {
    *model = *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (special && strcmp(argv[i], "--special") == 0) {
            *special = true;
            continue;
        }
        bool m = strcmp(argv[i], "--model") == 0, f = strcmp(argv[i], file_opt) == 0;
        if (!m && !f) {
            fprintf(stderr, "orchard %s: unknown option '%s'\n", cmd, argv[i]);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, argv[i]);
            return 2;
        }
        *(m ? model : file) = v;
        i++;
    }
    if (!*model || !*file) {
        fprintf(stderr, "orchard %s: --model and %s are required; see `orchard help %s`\n", cmd, file_opt, cmd);
        return 2;
    }
    return 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model, *file;
    bool special = false;
    int rc = model_and_file(argc, argv, "tokenize", "--text", &model, &file, &special);
    if (rc) return rc;
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_load(model, &err);
    if (!tok) {
        fprintf(stderr, "orchard tokenize: %s\n", err.msg);
        return 1;
    }
    size_t len = 0, n = 0;
    char *text = slurp(file, &len);
    int32_t *ids = NULL;
    if (!text) {
        fprintf(stderr, "orchard tokenize: cannot read %s: %s\n", file, strerror(errno));
        rc = 1;
    } else if (orc_tokenizer_encode(tok, text, len, special ? ORC_TOK_ENCODE_SPECIAL : 0, &ids, &n, &err) != ORC_OK) {
        fprintf(stderr, "orchard tokenize: %s\n", err.msg);
        rc = 1;
    } else {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
    }
    free(ids);
    free(text);
    orc_tokenizer_free(tok);
    return rc;
}

/* The ids of a JSON array file; NULL with a message printed on failure. */
static int32_t *read_ids(const char *path, size_t *n) {
    json_error_t jerr;
    json_t *arr = json_load_file(path, 0, &jerr);
    if (!arr) {
        fprintf(stderr, "orchard detokenize: %s: bad JSON at line %d: %s\n", path, jerr.line, jerr.text);
        return NULL;
    }
    size_t m = json_array_size(arr);
    int32_t *ids = json_is_array(arr) ? malloc((m ? m : 1) * sizeof *ids) : NULL;
    for (size_t i = 0; ids && i < m; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX) {
            fprintf(stderr, "orchard detokenize: %s: element %zu is not a token id\n", path, i);
            free(ids);
            ids = NULL;
            json_decref(arr);
            return NULL;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    if (!json_is_array(arr)) fprintf(stderr, "orchard detokenize: %s: not a JSON array of ids\n", path);
    json_decref(arr);
    *n = m;
    return ids;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model, *file;
    int rc = model_and_file(argc, argv, "detokenize", "--ids", &model, &file, NULL);
    if (rc) return rc;
    orc_error err = {0};
    size_t n = 0, len = 0;
    int32_t *ids = read_ids(file, &n);
    if (!ids) return 1;
    orc_tokenizer *tok = orc_tokenizer_load(model, &err);
    char *text = NULL;
    if (!tok || orc_tokenizer_decode(tok, ids, n, &text, &len, &err) != ORC_OK) {
        fprintf(stderr, "orchard detokenize: %s\n", err.msg);
        rc = 1;
    } else if (fwrite(text, 1, len, stdout) != len) {
        fprintf(stderr, "orchard detokenize: cannot write the output\n");
        rc = 1;
    }
    free(text);
    free(ids);
    orc_tokenizer_free(tok);
    return rc;
}
