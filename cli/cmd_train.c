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
#include "orchard/dist.h"
#include "orchard/train.h"

void cmd_train_help(void) {
    printf("usage: orchard train --config FILE.json --out DIR [--resume] [--log FILE.jsonl]\n"
           "                     [--steps N] [--batch N] [--seq N] [--accum N] [--lr X]\n"
           "                     [--stop-after N] [--quiet]\n"
           "                     [--lora rank=R,alpha=A,targets=q,k,v,o,gate,up,down[,dropout=P]]\n"
           "                     [--recover-from QUANT.gguf|DIR] [--lora-init DIR]\n\n"
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
           "  --quiet           no progress lines\n"
           "  --lora SPEC       train only a LoRA adapter over the frozen base (the recipe's init_from,\n"
           "                    or model); DIR then holds adapter_config.json + adapter_model.safetensors\n"
           "                    (PEFT's layout; see docs/lora.md)\n"
           "  --recover-from Q  accuracy recovery: the frozen base is the quantized GGUF Q (from `orchard\n"
           "                    quantize`), dequantized exactly; implies --lora (rank 16, alpha 32, all targets)\n"
           "  --lora-init DIR   start the adapter from the one in DIR (e.g. a recovery adapter)\n"
           "  --mesh data=D,expert=E,model=M   multi-process: run as `mpirun -np N orchard train ...`\n"
           "                    with D*E*M = N; the recipe's batch is the global batch, split over the\n"
           "                    D x E data and expert ranks; model=M splits heads and FFN columns (tensor\n"
           "                    parallel); expert=E splits a MoE model's experts (tokens travel by\n"
           "                    all-to-all); rank 0 writes the checkpoint (docs/distributed.md).\n"
           "                    ORCHARD_DIST_OVERLAP=0: all-reduce after backward, not during it\n"
           "  --zero 1          shard the optimizer state over the data ranks (ZeRO-1)\n");
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
        if (strcmp(a, "--mesh") == 0) {
            if (!v) {
                fprintf(stderr, "orchard train: option %s needs a value\n", a);
                return 2;
            }
            o->mesh = v;
        } else if (strcmp(a, "--zero") == 0) {
            rc = cli_parse_int("train", a, v, 0, 1, &n);
            o->zero = (int)n;
        } else if (strcmp(a, "--lora") == 0 || strcmp(a, "--recover-from") == 0 || strcmp(a, "--lora-init") == 0) {
            if (!v) {
                fprintf(stderr, "orchard train: option %s needs a value\n", a);
                return 2;
            }
            if (strcmp(a, "--lora") == 0) o->lora = v;
            else if (strcmp(a, "--recover-from") == 0) o->recover_from = v;
            else o->lora_init = v;
        } else if (strcmp(a, "--config") == 0 || strcmp(a, "--out") == 0 || strcmp(a, "--log") == 0) {
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
    /* Multi-process: MPI starts under mpirun when --mesh is given or
     * several ranks were launched (then --mesh is required, so N copies
     * never write one checkpoint directory unknowingly); --mesh without
     * mpirun runs on the one-rank communicator. Only rank 0 prints and logs. */
    int launched = 1;
    bool under_mpi = orc_dist_launched(&launched);
    orc_comm *world = NULL;
    if (under_mpi && (o.mesh || launched > 1)) {
        orc_error derr = {0};
        world = orc_dist_init(NULL, NULL, &derr);
        if (!world) {
            fprintf(stderr, "orchard train: %s\n", derr.msg);
            return 1;
        }
        if (!o.mesh) {
            fprintf(stderr, "orchard train: rank %d: started with %d ranks but no --mesh; pass --mesh data=%d\n",
                    world->rank, world->size, world->size);
            orc_dist_finalize(world, false);
            return 2;
        }
        o.comm = world;
        if (world->rank != 0) {
            o.progress = NULL;
            o.log_path = NULL;
        }
    }
    /* One Ctrl-C asks for a clean stop; a second one (SA_RESETHAND) kills,
     * which is safe because every checkpoint file is replaced atomically. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* mpirun ends the job on Ctrl-C but forwards SIGUSR1 to every rank:
     * `kill -USR1 <mpirun pid>` is the clean stop of a multi-process run. */
    if (world) sigaction(SIGUSR1, &sa, NULL);
    orc_error err = {0};
    orc_train_result res;
    orc_status st = orc_train_run(&o, &res, &err);
    signal(SIGINT, SIG_DFL);
    if (world) signal(SIGUSR1, SIG_DFL);
    int rank = world ? world->rank : 0;
    /* The message goes out before MPI_Finalize: once one rank exits
     * non-zero, mpirun kills the others, which must have spoken by then. */
    if (st != ORC_OK) fprintf(stderr, "orchard train: %s\n", err.msg);
    fflush(stderr);
    orc_dist_finalize(world, false);
    if (st != ORC_OK) return 1;
    if (rank != 0) return res.interrupted ? 130 : 0;
    printf("step %lld: loss %.4f", (long long)res.step, res.loss);
    if (isfinite(res.val_loss)) printf(", val_loss %.4f, val_bpb %.4f", res.val_loss, res.val_bpb);
    if (res.tokens_per_s > 0) printf(", %.0f tokens/s", res.tokens_per_s);
    printf("; checkpoint %s\n", res.checkpoint);
    return res.interrupted ? 130 : 0;
}
