/* `orchard export` and `orchard import`: a model directory (config.json,
 * model.safetensors, tokenizer.json) to a GGUF file that llama.cpp runs, and
 * a llama-architecture GGUF file back to a model directory. The work is in
 * src/llm/gguf_model.c; this file parses options and reports. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "orchard/llm_gguf.h"

void cmd_export_help(void) {
    printf("usage: orchard export --model DIR --format gguf --out FILE.gguf [--type f32|f16]\n"
           "                      [--name NAME] [--no-tokenizer]\n\n"
           "Write the model in DIR (config.json, model.safetensors, tokenizer.json) as a\n"
           "GGUF v3 file with llama.cpp's `llama` architecture: its tensor names, q/k\n"
           "rows permuted to llama.cpp's RoPE layout, the tokenizer as a byte-level BPE\n"
           "(`gpt2`) vocabulary and orchard's chat template as tokenizer.chat_template\n"
           "(run it with llama-cli --jinja). Models with QK-norm are refused: the\n"
           "`llama` architecture has no QK-norm.\n\n"
           "  --type f32|f16   matrices as float32 (default) or float16; norms stay f32\n"
           "  --name NAME      general.name (default: orchard)\n"
           "  --no-tokenizer   write the weights only (llama.cpp needs a vocabulary)\n");
}

void cmd_import_help(void) {
    printf("usage: orchard import --gguf FILE.gguf --out DIR\n\n"
           "Read a llama-architecture GGUF file (F32, F16, BF16 tensors; Q8_0 and Q4_0\n"
           "are dequantized) into DIR/config.json + DIR/model.safetensors, undoing\n"
           "llama.cpp's q/k row permutation, and its tokenizer into DIR/tokenizer.json:\n"
           "byte-level BPE (`gpt2`) as orchard runs it, SentencePiece (`llama`, byte\n"
           "fallback) in Hugging Face's form, which orchard's tokenizer does not run yet\n"
           "(the command says so).\n");
}

static int need_value(const char *cmd, const char *opt, int i, int argc) {
    if (i + 1 < argc) return 0;
    fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, opt);
    return 2;
}

int cmd_export(int argc, char **argv) {
    const char *dir = NULL, *format = NULL, *out = NULL, *type = "f32", *name = NULL;
    int no_tok = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--model") == 0    ? &dir
                            : strcmp(a, "--format") == 0 ? &format
                            : strcmp(a, "--out") == 0    ? &out
                            : strcmp(a, "--type") == 0   ? &type
                            : strcmp(a, "--name") == 0   ? &name
                                                         : NULL;
        if (slot) {
            if (need_value("export", a, i, argc)) return 2;
            *slot = argv[++i];
        } else if (strcmp(a, "--no-tokenizer") == 0) {
            no_tok = 1;
        } else {
            fprintf(stderr, "orchard export: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!dir || !out || !format) {
        fprintf(stderr, "orchard export: --model, --format and --out are required; see `orchard export --help`\n");
        return 2;
    }
    if (strcmp(format, "gguf") != 0) {
        fprintf(stderr, "orchard export: format '%s' is not offered (gguf)\n", format);
        return 2;
    }
    orc_gguf_export_opts opts = {.name = name};
    if (strcmp(type, "f32") == 0) {
        opts.type = ORC_GGML_F32;
    } else if (strcmp(type, "f16") == 0) {
        opts.type = ORC_GGML_F16;
    } else {
        fprintf(stderr, "orchard export: --type must be f32 or f16, got '%s'\n", type);
        return 2;
    }
    orc_error err = {0};
    orc_tokenizer *tok = NULL;
    if (!no_tok) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (stat(path, &st) != 0) {
            fprintf(stderr,
                    "orchard export: %s is missing (llama.cpp needs the vocabulary); pass --no-tokenizer to write "
                    "the weights only\n",
                    path);
            return 1;
        }
        if (!(tok = orc_tokenizer_load(path, &err))) {
            fprintf(stderr, "orchard export: %s\n", err.msg);
            return 1;
        }
    }
    orc_llm *m = orc_llm_load(dir, false, &err);
    int rc = 0;
    if (!m || orc_llm_export_gguf(m, tok, out, &opts, &err) != ORC_OK) {
        fprintf(stderr, "orchard export: %s\n", err.msg);
        rc = 1;
    } else {
        printf("wrote %s (llama architecture, %s, %lld parameters%s)\n", out, type,
               (long long)orc_llm_config_num_params(&m->cfg), tok ? ", with tokenizer" : "");
    }
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    return rc;
}

int cmd_import(int argc, char **argv) {
    const char *gguf = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--gguf") == 0 ? &gguf : strcmp(a, "--out") == 0 ? &out : NULL;
        if (!slot) {
            fprintf(stderr, "orchard import: unknown option '%s'\n", a);
            return 2;
        }
        if (need_value("import", a, i, argc)) return 2;
        *slot = argv[++i];
    }
    if (!gguf || !out) {
        fprintf(stderr, "orchard import: --gguf and --out are required; see `orchard import --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_gguf_tok_info info;
    if (orc_llm_import_gguf(gguf, out, &info, &err) != ORC_OK) {
        fprintf(stderr, "orchard import: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s/config.json and %s/model.safetensors\n", out, out);
    if (info.written)
        printf("wrote %s/tokenizer.json (%s%s%s)\n", out, info.kind, info.pre[0] ? ", pre-tokenizer " : "",
               info.pre);
    if (info.note[0]) fprintf(stderr, "orchard import: warning: %s\n", info.note);
    return 0;
}
