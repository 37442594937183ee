/* `orchard train`: run a training job from a recipe (orchard/train.h does the
 * work). This file owns the flags, the Ctrl-C handler (finish the step, save
 * a checkpoint, exit 130) and the exit statuses. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/train.h"

void cmd_train_help(void) {
    printf("usage: orchard train --config FILE.json --out DIR [--resume] [--log FILE.jsonl]\n"
           "                     [--steps N] [--batch N] [--seq N] [--accum N] [--lr X]\n"
           "                     [--stop-after N] [--quiet]\n\n"
           "Train the language model described by a recipe (see docs/training.md and configs/).\n"
           "Checkpoints go to DIR: config.json, model.safetensors (Llama tensor names),\n"
           "tokenizer.json, optimizer.safetensors and trainer_state.json, each written atomically.\n"
           "A progress line goes to stderr every log_every steps; Ctrl-C finishes the current\n"
           "step, saves a checkpoint and exits with status 130.\n\n"
           "  --config FILE     the recipe (optional with --resume: the checkpoint keeps a copy)\n"
           "  --out DIR         checkpoint directory (created)\n"
           "  --resume          continue the checkpoint in DIR; the losses match an uninterrupted run\n"
           "  --log FILE        one JSON line per step: step, loss, lr, tokens_per_s, grad_norm\n"
           "                    (and val_loss, val_bpb on validation steps); appended on --resume\n"
           "  --steps --batch --seq --accum --lr   override the recipe's fields\n"
           "  --stop-after N    stop after step N and save, as if interrupted (exit 0)\n"
           "  --quiet           no progress lines\n");
}

static volatile sig_atomic_t g_interrupt = 0;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupt = 1;
}

static int parse_lr(const char *value, double *out) {
    char *end;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || errno || end == value || *end || !isfinite(v) || v <= 0) {
        fprintf(stderr, "orchard train: --lr expects a positive number, got '%s'\n", value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, orc_train_opts *o, bool *quiet) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        if (strcmp(a, "--resume") == 0) {
            o->resume = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            *quiet = true;
            continue;
        }
        if (strcmp(a, "--config") == 0 || strcmp(a, "--out") == 0 || strcmp(a, "--log") == 0) {
            if (!v) {
                fprintf(stderr, "orchard train: option %s needs a value\n", a);
                return 2;
            }
            if (a[2] == 'c') o->recipe = v;
            else if (a[2] == 'o') o->out_dir = v;
            else o->log_path = v;
        } else if (strcmp(a, "--steps") == 0 || strcmp(a, "--stop-after") == 0) {
            rc = cli_parse_int("train", a, v, 1, 2147483647L, &n);
            if (strcmp(a, "--steps") == 0) o->steps = n;
            else o->stop_after = n;
        } else if (strcmp(a, "--batch") == 0) {
            rc = cli_parse_int("train", a, v, 1, 1 << 20, &n);
            o->batch = (int)n;
        } else if (strcmp(a, "--seq") == 0) {
            rc = cli_parse_int("train", a, v, 1, 1 << 20, &n);
            o->seq = (int)n;
        } else if (strcmp(a, "--accum") == 0) {
            rc = cli_parse_int("train", a, v, 1, 1 << 20, &n);
            o->accum = (int)n;
        } else if (strcmp(a, "--lr") == 0) {
            rc = parse_lr(v, &o->lr);
        } else {
            fprintf(stderr, "orchard train: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!o->out_dir || (!o->recipe && !o->resume)) {
        fprintf(stderr, "orchard train: --config FILE.json and --out DIR are required; see `orchard train --help`\n");
        return 2;
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    orc_train_opts o = {0};
    bool quiet = false;
    int rc = parse_args(argc, argv, &o, &quiet);
    if (rc) return rc;
    o.progress = quiet ? NULL : stderr;
    o.interrupt = &g_interrupt;
    /* One Ctrl-C asks for a clean stop; a second one (SA_RESETHAND) kills,
     * which is safe because every checkpoint file is replaced atomically. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    orc_error err = {0};
    orc_train_result res;
    orc_status st = orc_train_run(&o, &res, &err);
    signal(SIGINT, SIG_DFL);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard train: %s\n", err.msg);
        return 1;
    }
    printf("step %lld: loss %.4f", (long long)res.step, res.loss);
    if (isfinite(res.val_loss)) printf(", val_loss %.4f, val_bpb %.4f", res.val_loss, res.val_bpb);
    if (res.tokens_per_s > 0) printf(", %.0f tokens/s", res.tokens_per_s);
    printf("; checkpoint %s\n", res.checkpoint);
    return res.interrupted ? 130 : 0;
}
