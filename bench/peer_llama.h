/* The llama.cpp peer of the inference benchmarks (bench_decode, bench_quant):
 * a small tokenizer so an exported GGUF carries a vocabulary llama.cpp
 * accepts, and one run of llama-bench on a GGUF file with its prefill (pp)
 * and decode (tg) rates read from its CSV output. The llama-bench binary is
 * the user's (--llama-bench PATH); the repository never builds it. */
#ifndef ORCHARD_BENCH_PEER_LLAMA_H
#define ORCHARD_BENCH_PEER_LLAMA_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/tokenizer.h"

static orc_tokenizer *small_tokenizer(orc_error *err) {
    static const char text[] = "the quick brown fox jumps over the lazy dog while the president speaks to the "
                               "congress of the united states about the state of the union and the whale";
    const char *texts[1] = {text};
    size_t lens[1] = {sizeof text - 1};
    orc_tokenizer_train_opts o = {0};
    o.vocab_size = 300;
    return orc_tokenizer_train(texts, lens, 1, &o, err);
}

/* llama-bench -t threads -p n_prompt -n n_gen -r 3 on gguf: 0 with *pp and
 * *tg (tokens/s, the average of the repetitions) set, -1 when it failed. */
static int llama_bench(const char *bin, const char *gguf, int threads, int n_prompt, int n_gen, double *pp,
                       double *tg) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -m %s -t %d -p %d -n %d -r 3 -o csv 2>/dev/null", bin, gguf, threads, n_prompt,
             n_gen);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[8192];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        /* csv: the last two fields are avg_ts and stddev_ts; n_prompt / n_gen tell the test apart. */
        if (strncmp(line, "\"build_commit\"", 14) == 0) continue;
        char *f[64];
        int nf = 0;
        for (char *tok = strtok(line, ","); tok && nf < 64; tok = strtok(NULL, ",")) f[nf++] = tok;
        if (nf < 4) continue;
        double avg = atof(f[nf - 2] + (f[nf - 2][0] == '"'));
        /* find n_prompt and n_gen: the fields that hold our numbers exactly */
        int is_pp = 0, is_tg = 0;
        for (int i = 0; i < nf - 2; i++) {
            char v[32];
            snprintf(v, sizeof v, "\"%d\"", n_prompt);
            if (!strcmp(f[i], v) && i + 1 < nf && !strcmp(f[i + 1], "\"0\"")) is_pp = 1;
            snprintf(v, sizeof v, "\"%d\"", n_gen);
            if (i > 0 && !strcmp(f[i], v) && !strcmp(f[i - 1], "\"0\"")) is_tg = 1;
        }
        if (is_pp) {
            *pp = avg;
            got |= 1;
        }
        if (is_tg) {
            *tg = avg;
            got |= 2;
        }
    }
    pclose(p);
    return got == 3 ? 0 : -1;
}

#endif
