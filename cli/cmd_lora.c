/* `orchard lora`: tools for LoRA adapters (orchard/lora.h does the work).
 * `merge` folds one or more adapters into a model directory's weights and
 * writes a new model directory; `export` writes an adapter as llama.cpp's
 * GGUF LoRA file; `info` prints an adapter's configuration and size. This
 * file owns the options, the copying of the tokenizer files next to a merged
 * model, and the exit statuses (0 done, 1 error, 2 bad usage). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "orchard/fileio.h"
#include "orchard/gguf.h"
#include "orchard/llm_gguf.h"
#include "orchard/lora.h"

void cmd_lora_help(void) {
    printf("usage: orchard lora merge --model DIR --adapter DIR[:W][,DIR[:W]...] --out DIR\n"
           "       orchard lora export --adapter DIR --model DIR|FILE.gguf --out FILE.gguf [--name NAME]\n"
           "       orchard lora info --adapter DIR --model DIR|FILE.gguf\n\n"
           "LoRA adapters are folders with adapter_config.json and adapter_model.safetensors in\n"
           "PEFT's layout (`orchard train --lora ...` writes them; see docs/lora.md).\n\n"
           "  merge    W += W_i * (alpha/r) * B A for each adapter i (weight W_i, default 1) and\n"
           "           write the merged model (config.json, model.safetensors, tokenizer.json,\n"
           "           chat_template when present) to --out\n"
           "  export   llama.cpp's GGUF LoRA adapter (general.type adapter, adapter.lora.alpha,\n"
           "           blk.N.attn_q.weight.lora_a / .lora_b, ...) for `llama-cli --lora FILE`;\n"
           "           --model gives the base's shapes (q/k rows are permuted as in the GGUF export)\n"
           "  info     rank, alpha, targets and parameter count, after checking it fits --model\n");
}

static int usage(const char *msg) {
    fprintf(stderr, "orchard lora: %s; see `orchard lora --help`\n", msg);
    return 2;
}

/* The base configuration from a model directory or a `llama` GGUF file. */
static int load_config(const char *model, orc_llm_config *cfg) {
    orc_error err = {0};
    struct stat sb;
    orc_status st;
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", model);
        st = orc_llm_config_load(path, cfg, &err);
    } else {
        orc_gguf_file *f = orc_gguf_open(model, &err);
        st = f ? orc_llm_config_from_gguf(f, model, cfg, &err) : err.code;
        orc_gguf_close(f);
    }
    if (st != ORC_OK) {
        fprintf(stderr, "orchard lora: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Copy DIR/name to OUT/name when it exists (atomic write). */
static int copy_optional(const char *dir, const char *out, const char *name) {
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to, sizeof to, "%s/%s", out, name);
    FILE *f = fopen(from, "rb");
    if (!f) return 0;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    orc_error err = {0};
    if (!buf || bad || orc_write_file_atomic(to, buf, n, "lora merge", &err) != ORC_OK) {
        fprintf(stderr, "orchard lora merge: cannot copy %s to %s: %s\n", from, to,
                buf && !bad ? err.msg : "read error");
        free(buf);
        return 1;
    }
    free(buf);
    return 0;
}

static int lora_merge(const char *model, const char *adapters, const char *out) {
    orc_error err = {0};
    orc_llm *m = orc_llm_load(model, false, &err);
    orc_lora_set *set = m ? orc_lora_set_new(&err) : NULL;
    orc_lora_stack stack;
    int rc = 0;
    if (!set || orc_lora_set_load_list(set, adapters, &m->cfg, &stack, &err) != ORC_OK) {
        rc = 1;
    } else {
        for (int i = 0; i < stack.n && rc == 0; i++)
            if (orc_lora_merge(m, stack.ad[i], stack.weight[i], &err) != ORC_OK) rc = 1;
        if (rc == 0 && orc_llm_save(m, out, &err) != ORC_OK) rc = 1;
    }
    if (rc) fprintf(stderr, "orchard lora merge: %s\n", err.msg);
    if (rc == 0) rc = copy_optional(model, out, "tokenizer.json") || copy_optional(model, out, "chat_template");
    if (rc == 0)
        printf("%s: %s merged into %s (%d adapter%s)\n", out, adapters, model, stack.n, stack.n == 1 ? "" : "s");
    orc_lora_set_free(set);
    orc_llm_free(m);
    return rc;
}

static int lora_export(const char *adapter, const char *model, const char *out, const char *name) {
    orc_llm_config cfg;
    if (load_config(model, &cfg)) return 1;
    orc_error err = {0};
    orc_lora *a = orc_lora_load(adapter, &cfg, false, &err);
    if (!a || orc_lora_export_gguf(a, out, name, &err) != ORC_OK) {
        fprintf(stderr, "orchard lora export: %s\n", err.msg);
        orc_lora_free(a);
        return 1;
    }
    printf("%s: LoRA adapter rank %d, alpha %g, %d tensors\n", out, a->cfg.rank, a->cfg.alpha, a->n_params);
    orc_lora_free(a);
    return 0;
}

static int lora_info(const char *adapter, const char *model) {
    orc_llm_config cfg;
    if (load_config(model, &cfg)) return 1;
    orc_error err = {0};
    orc_lora *a = orc_lora_load(adapter, &cfg, false, &err);
    if (!a) {
        fprintf(stderr, "orchard lora info: %s\n", err.msg);
        return 1;
    }
    int64_t n = 0;
    for (int i = 0; i < a->n_params; i++) n += a->params[i]->numel;
    printf("{\"rank\": %d, \"alpha\": %g, \"scale\": %g, \"dropout\": %g, \"targets\": [", a->cfg.rank, a->cfg.alpha,
           (double)a->scale, a->cfg.dropout);
    for (int t = 0, k = 0; t < ORC_LORA_N_TARGETS; t++)
        if (a->cfg.targets & (1u << t)) printf("%s\"%s\"", k++ ? ", " : "", orc_lora_target_module(t));
    printf("], \"tensors\": %d, \"parameters\": %lld}\n", a->n_params, (long long)n);
    orc_lora_free(a);
    return 0;
}

int cmd_lora(int argc, char **argv) {
    if (argc < 2) return usage("give a subcommand: merge, export or info");
    const char *sub = argv[1];
    const char *model = NULL, *adapter = NULL, *out = NULL, *name = NULL;
    for (int i = 2; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **dst = strcmp(a, "--model") == 0     ? &model
                           : strcmp(a, "--adapter") == 0 ? &adapter
                           : strcmp(a, "--out") == 0     ? &out
                           : strcmp(a, "--name") == 0    ? &name
                                                         : NULL;
        if (!dst) {
            fprintf(stderr, "orchard lora %s: unknown argument '%s'\n", sub, a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "orchard lora %s: option %s needs a value\n", sub, a);
            return 2;
        }
        *dst = v;
    }
    if (strcmp(sub, "merge") == 0) {
        if (!model || !adapter || !out) return usage("merge needs --model, --adapter and --out");
        return lora_merge(model, adapter, out);
    }
    if (strcmp(sub, "export") == 0) {
        if (!model || !adapter || !out) return usage("export needs --adapter, --model and --out");
        return lora_export(adapter, model, out, name);
    }
    if (strcmp(sub, "info") == 0) {
        if (!model || !adapter) return usage("info needs --adapter and --model");
        return lora_info(adapter, model);
    }
    fprintf(stderr, "orchard lora: unknown subcommand '%s' (merge, export, info)\n", sub);
    return 2;
}
