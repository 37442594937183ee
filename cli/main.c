/* The orchard command: global options (--help, --version, --threads) and
 * git-style dispatch to the subcommands listed in one table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/runtime.h"

static const orc_command COMMANDS[] = {
    {"info", "show the version, threads, BLAS build and CPU features", cmd_info, cmd_info_help},
    {"inspect", "list the tensors and metadata of a safetensors or GGUF file", cmd_inspect, cmd_inspect_help},
    {"data", "fetch the corpus, tokenize it into shards, show a shard", cmd_data, cmd_data_help},
    {"tokenizer", "train a byte-level BPE tokenizer (tokenizer.json)", cmd_tokenizer, cmd_tokenizer_help},
    {"tokenize", "print the token ids of a text file as JSON", cmd_tokenize, cmd_tokenize_help},
    {"detokenize", "turn a JSON array of token ids back into text", cmd_detokenize, cmd_detokenize_help},
    {"export", "write a model directory as a GGUF file for llama.cpp", cmd_export, cmd_export_help},
    {"import", "read a llama-architecture GGUF file into a model directory", cmd_import, cmd_import_help},
    {"generate", "continue a text with a model (sampling, stop strings, speed stats)", cmd_generate, cmd_generate_help},
    {"chat", "chat with a model interactively using the chat template", cmd_chat, cmd_chat_help},
    {"eval", "loss, perplexity and bits per byte of a model on a text", cmd_eval, cmd_eval_help},
    {"train", "train the language model from a recipe (checkpoints, resume, SFT)", cmd_train, cmd_train_help},
    {"serve", "serve a model over HTTP with OpenAI's API (chat, completions, embeddings)", cmd_serve, cmd_serve_help},
    {"sandbox", "ToolSandbox world state and tools: list, call, show, gen-data", cmd_sandbox, cmd_sandbox_help},
    {"tasks", "instruction task suite: generate train/val/test items, score predictions", cmd_tasks, cmd_tasks_help},
    {"quantize", "write a model as a Q8_0 / Q4_0 GGUF file (llama.cpp's block formats)", cmd_quantize, cmd_quantize_help},
    {"generate-q", "continue a text with a quantized (Q8_0 / Q4_0 GGUF) model", cmd_generate_q, cmd_generate_q_help},
    {"eval-q", "loss, perplexity and bits per byte of a quantized model on a text", cmd_eval_q, cmd_eval_q_help},
    {"ifprune", "instruction-following pruning: train, generate, compact, overlap, study", cmd_ifprune, cmd_ifprune_help},
    {"lora", "LoRA adapters: merge into a model, export as a GGUF LoRA, info", cmd_lora, cmd_lora_help},
    {"tsmc", "twisted SMC for math: rollouts, value model, solve with any method, study", cmd_tsmc, cmd_tsmc_help},
    {"study", "run a paper's experiment end to end (tsmc)", cmd_study, cmd_study_help},
    {"init", NULL, cmd_init, cmd_init_help}, /* unlisted: a randomly initialised model directory */
};
static const int N_COMMANDS = (int)(sizeof COMMANDS / sizeof COMMANDS[0]);

static void usage(FILE *out) {
    fprintf(out,
            "usage: orchard [--threads N] <command> [options]\n"
            "       orchard --version | --help | help <command>\n\n"
            "orchard trains, compresses, evaluates and serves small foundation models.\n\n"
            "commands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        if (COMMANDS[i].summary) fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\nglobal options:\n"
                 "  --threads N   threads for kernels and BLAS (default: all cores; also OMP_NUM_THREADS)\n"
                 "  --version     print the version\n"
                 "  --help        this text; `orchard <command> --help` for a command\n");
}

static const orc_command *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
    return NULL;
}

int cli_parse_int(const char *cmd, const char *opt, const char *value, long lo, long hi, long *out) {
    if (!value) {
        fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, opt);
        return 2;
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        fprintf(stderr, "orchard %s: option %s expects an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo, hi,
                value);
        return 2;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("orchard %s\n", orc_version());
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--threads") == 0) {
            long n;
            int rc = cli_parse_int("", "--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 4096, &n);
            if (rc) return rc;
            orc_set_threads((int)n);
            i++;
        } else {
            fprintf(stderr, "orchard: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            usage(stdout);
            return 0;
        }
        const orc_command *c = find_command(argv[i + 1]);
        if (!c) {
            fprintf(stderr, "orchard: no command '%s'\n", argv[i + 1]);
            return 2;
        }
        c->help();
        return 0;
    }
    const orc_command *c = find_command(argv[i]);
    if (!c) {
        fprintf(stderr, "orchard: '%s' is not a command; `orchard --help` lists them\n", argv[i]);
        return 2;
    }
    for (int j = i + 1; j < argc; j++)
        if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
            c->help();
            return 0;
        }
    return c->run(argc - i, argv + i);
}
