/* `orchard serve`: load a model directory, or a quantized model (a GGUF
 * file or a directory holding model.gguf, as `orchard generate-q` runs it,
 * with --recovery adapters under every request), and any --adapter LoRA
 * adapters, selectable per request, and run the OpenAI-compatible
 * server (orchard/server.h) until SIGINT or SIGTERM, then stop cleanly:
 * queued and running requests are cancelled, every thread joined, all freed.
 * The signals are blocked in every thread and taken with sigwait here, so no
 * handler runs inside the server's threads. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "orchard/ifprune.h"
#include "orchard/lora.h"
#include "orchard/quant.h"
#include "orchard/server.h"

void cmd_serve_help(void) {
    printf("usage: orchard serve --model DIR|FILE.gguf [options]\n\n"
           "Serve the model in DIR (config.json, model.safetensors, tokenizer.json), or a quantized\n"
           "model (FILE.gguf, or DIR/model.gguf without model.safetensors: what `orchard quantize`\n"
           "writes and `orchard generate-q` runs; Q8_0, Q4_0, pal4, pal2, mixed) over HTTP with\n"
           "OpenAI's API: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models,\n"
           "/health, /metrics (Prometheus). N slots decode N requests at once, each with its own KV\n"
           "cache; others wait in a queue, and a full queue answers 429. Ctrl-C stops it.\n"
           "See docs/server.md.\n\n"
           "  --host ADDR       address to listen on (default 127.0.0.1)\n"
           "  --port N          port (default 8080; 0 picks a free one)\n"
           "  --parallel N      decode slots (default 1)\n"
           "  --ctx N           positions per slot (default: the model's max_position_embeddings)\n"
           "  --api-key KEY     require 'Authorization: Bearer KEY' on /v1 endpoints\n"
           "                    (also from the ORCHARD_API_KEY environment variable)\n"
           "  --queue N         requests that may wait for a slot (default 16)\n"
           "  --max-body BYTES  largest request body (default 1048576)\n"
           "  --name NAME       the model id clients use (default: the directory's name)\n"
           "  --ifprune-task T  DIR is an IFPruning model (orchard ifprune train): its predictor reads the task\n"
           "                    description T once and the compact model with the chosen FFN channels is served\n"
           "  --chat-template T orchard, chatml, llama3 or auto (default: DIR/chat_template if\n"
           "                    present, else chosen from the tokenizer's special tokens)\n"
           "  --adapter NAME=PATH  load the LoRA adapter in PATH (PEFT layout, as `orchard train --lora`\n"
           "                    writes) under NAME (a bare PATH: its directory name); repeat for more.\n"
           "                    A request selects it with \"model\": NAME, or a stack with\n"
           "                    \"adapters\": [NAME, ...]; /v1/models lists each with its parent\n"
           "  --recovery DIR[:W][,DIR[:W]...]  quantized models: LoRA adapters (e.g. an accuracy-recovery\n"
           "                    adapter from `orchard train --recover-from`) under every request's, as\n"
           "                    generate-q's --adapter\n"
           "  --tokenizer PATH  quantized models: the tokenizer (default: DIR/tokenizer.json, else the GGUF's)\n");
}

static const char *base_name(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash && slash[1] ? slash + 1 : buf;
}

#define MAX_ADAPTERS 64

/* Load every --adapter NAME=PATH (or PATH) into a set, checked against m:
 * an adapter for another model is refused naming the adapter and the
 * tensor. Returns the set, or NULL with the error printed. */
static orc_lora_set *load_adapters(const char *cmd, const char *const *specs, int n, const orc_llm_config *cfg) {
    orc_error err = {0};
    orc_lora_set *set = orc_lora_set_new(&err);
    for (int i = 0; set && i < n; i++) {
        const char *spec = specs[i], *eq = strchr(spec, '='), *slash = strchr(spec, '/');
        char name[256], buf[4096];
        const char *path = spec;
        if (eq && (!slash || slash > eq)) { /* NAME=PATH (a PATH may hold '=' after a '/') */
            snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
            path = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", base_name(spec, buf, sizeof buf));
        }
        if (!name[0] || !path[0]) {
            fprintf(stderr, "orchard %s: --adapter '%s': want NAME=PATH or PATH\n", cmd, spec);
            orc_lora_set_free(set);
            return NULL;
        }
        if (orc_lora_set_load(set, name, path, cfg, &err) != ORC_OK) {
            fprintf(stderr, "orchard %s: adapter '%s' (%s): %s\n", cmd, name, path, err.msg);
            orc_lora_set_free(set);
            return NULL;
        }
        const orc_lora *a = orc_lora_set_get(set, name);
        fprintf(stderr, "orchard %s: adapter '%s' from %s (rank %d, alpha %g)\n", cmd, name, path, a->cfg.rank,
                a->cfg.alpha);
    }
    if (!set) fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
    return set;
}

/* A quantized model: a file (a GGUF), or a directory with model.gguf and
 * no model.safetensors. */
static bool is_quantized(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return false;
    if (!S_ISDIR(sb.st_mode)) return true;
    char f[4200], g[4200];
    snprintf(f, sizeof f, "%s/model.gguf", path);
    snprintf(g, sizeof g, "%s/model.safetensors", path);
    return access(f, F_OK) == 0 && access(g, F_OK) != 0;
}

/* The served model, its tokenizer and adapters; freed by served_free. */
typedef struct served {
    orc_llm *m;
    orc_qllm *q;
    orc_tokenizer *tok;
    orc_lora_set *adapters, *recovery;
    orc_lora_stack recovery_stack;
} served;

static void served_free(served *v) {
    orc_lora_set_free(v->adapters);
    orc_lora_set_free(v->recovery);
    orc_tokenizer_free(v->tok);
    orc_llm_free(v->m);
    orc_qllm_free(v->q);
}

/* IFPruning, per-task mode: the predictor reads the task once, the chosen
 * FFN channels become a compact dense model, and that is served. */
static orc_status load_ifprune(const char *cmd, const char *model, const char *task, served *v, orc_error *err) {
    orc_ifp_model *im = orc_ifp_load(model, false, err);
    if (!im) return err->code;
    const int64_t L = im->pred->cfg.lm_layers, k = im->pred->cfg.k;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(L * k));
    float *vals = malloc(sizeof(float) * (size_t)(L * k));
    if (!idx || !vals) orc_error_set(err, ORC_ENOMEM, "out of memory");
    else if (orc_ifp_select(im->pred, im->tok, task, idx, vals, err) == ORC_OK)
        v->m = orc_ifp_compact(im->lm, idx, vals, k, err);
    free(idx);
    free(vals);
    if (v->m) {
        v->tok = im->tok;
        im->tok = NULL;
        fprintf(stderr, "orchard %s: IFPruning: serving a compact model with %lld of %lld FFN channels\n", cmd,
                (long long)k, (long long)im->lm->cfg.intermediate_size);
    }
    orc_ifp_model_free(im);
    return v->m ? ORC_OK : err->code;
}

/* A quantized model, its tokenizer (tok_path, or as generate-q finds it)
 * and the --recovery list made active on it (the server keeps it under
 * every request). */
static orc_status load_quantized(const char *cmd, const char *model, const char *tok_path, const char *recovery,
                                 served *v, orc_error *err) {
    if (!(v->q = orc_qllm_load(model, err))) return err->code;
    if (!(v->tok = orc_qllm_load_tokenizer(tok_path, model, v->q, err))) return err->code;
    if (recovery) {
        orc_error e = {0};
        if (!(v->recovery = orc_lora_set_new(&e)) ||
            orc_lora_set_load_list(v->recovery, recovery, &v->q->cfg, &v->recovery_stack, &e) != ORC_OK ||
            orc_qllm_set_adapters(v->q, &v->recovery_stack, &e) != ORC_OK)
            return orc_error_set(err, e.code ? e.code : ORC_ENOMEM, "--recovery: %s", e.msg);
    }
    fprintf(stderr, "orchard %s: quantized model %s (%s, %.2f bits per weight, %d recovery adapter%s)\n", cmd, model,
            orc_q_type_name(v->q->type),
            8.0 * (double)orc_qllm_weight_bytes(v->q) / (double)orc_llm_config_num_params(&v->q->cfg),
            v->recovery_stack.n, v->recovery_stack.n == 1 ? "" : "s");
    return ORC_OK;
}

int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve", *model = NULL, *name = NULL, *template_name = NULL, *ifp_task = NULL;
    const char *recovery = NULL, *tok_path = NULL;
    const char *adapter_specs[MAX_ADAPTERS];
    int n_adapters = 0;
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.api_key = getenv("ORCHARD_API_KEY");
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        if (strcmp(a, "--model") == 0 || strcmp(a, "--host") == 0 || strcmp(a, "--api-key") == 0 ||
            strcmp(a, "--name") == 0 || strcmp(a, "--chat-template") == 0 || strcmp(a, "--recovery") == 0 ||
            strcmp(a, "--tokenizer") == 0) {
            if (!v) {
                fprintf(stderr, "orchard %s: option %s needs a value\n", cmd, a);
                return 2;
            }
            if (a[2] == 'm') model = v;
            else if (a[2] == 'h') o.host = v;
            else if (a[2] == 'a') o.api_key = v;
            else if (a[2] == 'c') template_name = v;
            else if (a[2] == 'r') recovery = v;
            else if (a[2] == 't') tok_path = v;
            else name = v;
        } else if (strcmp(a, "--adapter") == 0) {
            if (!v || !*v) {
                fprintf(stderr, "orchard %s: --adapter needs NAME=PATH or PATH\n", cmd);
                return 2;
            }
            if (n_adapters == MAX_ADAPTERS) {
                fprintf(stderr, "orchard %s: at most %d --adapter options\n", cmd, MAX_ADAPTERS);
                return 2;
            }
            adapter_specs[n_adapters++] = v;
        } else if (strcmp(a, "--ifprune-task") == 0) {
            if (!v || !*v) {
                fprintf(stderr, "orchard %s: --ifprune-task needs a task description\n", cmd);
                return 2;
            }
            ifp_task = v;
        } else if (strcmp(a, "--port") == 0) {
            rc = cli_parse_int(cmd, a, v, 0, 65535, &n);
            o.port = (int)n;
        } else if (strcmp(a, "--parallel") == 0) {
            rc = cli_parse_int(cmd, a, v, 1, 256, &n);
            o.parallel = (int)n;
        } else if (strcmp(a, "--ctx") == 0) {
            rc = cli_parse_int(cmd, a, v, 1, 1L << 30, &n);
            o.context = n;
        } else if (strcmp(a, "--queue") == 0) {
            rc = cli_parse_int(cmd, a, v, 0, 100000, &n);
            o.queue = (int)n;
        } else if (strcmp(a, "--max-body") == 0) {
            rc = cli_parse_int(cmd, a, v, 64, 1L << 30, &n);
            o.max_body = (size_t)n;
        } else {
            fprintf(stderr, "orchard %s: unknown argument '%s'\n", cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!model) {
        fprintf(stderr, "orchard %s: --model is required; see `orchard serve --help`\n", cmd);
        return 2;
    }
    const bool quant = !ifp_task && is_quantized(model);
    if (!quant && (recovery || tok_path)) {
        fprintf(stderr, "orchard %s: %s is for a quantized model (a GGUF or DIR/model.gguf); %s is not one\n", cmd,
                recovery ? "--recovery" : "--tokenizer", model);
        return 2;
    }
    char buf[4096];
    o.model_name = name ? name : base_name(model, buf, sizeof buf);
    served v = {0};
    orc_error err = {0};
    orc_status st = ifp_task ? load_ifprune(cmd, model, ifp_task, &v, &err)
                    : quant  ? load_quantized(cmd, model, tok_path, recovery, &v, &err)
                             : orc_model_dir_load(model, &v.m, &v.tok, &err);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        served_free(&v);
        return 1;
    }
    const orc_llm_config *cfg = v.m ? &v.m->cfg : &v.q->cfg;
    orc_status tst = ORC_OK;
    struct stat sb;
    if (template_name) {
        tst = orc_chat_template_parse(template_name, &o.chat_template, &err);
        if (tst == ORC_OK && o.chat_template == ORC_CHAT_AUTO) o.chat_template = orc_chat_template_detect(v.tok);
    } else if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        tst = orc_chat_template_for_model(model, v.tok, &o.chat_template, &err);
    } else { /* a GGUF file: no chat_template file beside it is its own */
        o.chat_template = orc_chat_template_detect(v.tok);
    }
    if (tst != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        served_free(&v);
        return 2;
    }
    if (o.context > cfg->max_position_embeddings) {
        fprintf(stderr, "orchard %s: --ctx %lld exceeds the model's max_position_embeddings %lld\n", cmd,
                (long long)o.context, (long long)cfg->max_position_embeddings);
        served_free(&v);
        return 2;
    }
    if (n_adapters) {
        if (!(v.adapters = load_adapters(cmd, adapter_specs, n_adapters, cfg))) {
            served_free(&v);
            return 1;
        }
        o.adapters = v.adapters;
    }
    /* Block the stop signals before any thread starts, so all inherit the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    orc_server *s = v.q ? orc_server_start_quant(v.q, v.tok, &o, &err) : orc_server_start(v.m, v.tok, &o, &err);
    if (!s) {
        fprintf(stderr, "orchard %s: %s\n", cmd, err.msg);
        served_free(&v);
        return 1;
    }
    fprintf(stderr, "orchard %s: '%s' on http://%s:%d (%d slot%s, queue %d, %s chat template%s, %d adapter%s)\n",
            cmd, o.model_name, o.host, orc_server_port(s), o.parallel, o.parallel == 1 ? "" : "s", o.queue,
            orc_chat_template_name(o.chat_template), o.api_key ? ", API key required" : "", n_adapters,
            n_adapters == 1 ? "" : "s");
    printf("listening on port %d\n", orc_server_port(s));
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "orchard %s: %s, stopping\n", cmd, sig == SIGINT ? "SIGINT" : "SIGTERM");
    orc_server_stop(s);
    served_free(&v);
    return 0;
}
