/* libFuzzer target for the TSMC rollouts reader: every input goes through
 * orc_rollouts_parse with a 300-id vocabulary. A rejected input must carry a
 * code and a message. An accepted one must hold only what the value model may
 * index with: ids below the vocabulary, a non-empty prompt, step ends
 * increasing and inside their sample, log-probabilities (when present) at
 * most 0; and it must survive our writer: saved and read back, every id,
 * step end, label and answer is the same and each logp within rounding. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orchard/tsmc.h"

#define VOCAB 300

static void check_accepted(const orc_rollout_set *s) {
    if (s->n_problems < 1) __builtin_trap();
    for (int p = 0; p < s->n_problems; p++) {
        const orc_rollout_problem *pr = &s->problems[p];
        if (pr->n_prompt < 1 || !pr->id || !pr->question || !pr->gold) __builtin_trap();
        for (int i = 0; i < pr->n_prompt; i++)
            if (pr->prompt[i] < 0 || pr->prompt[i] >= VOCAB) __builtin_trap();
        for (int k = 0; k < pr->n_samples; k++) {
            const orc_rollout_sample *x = &pr->samples[k];
            for (int i = 0; i < x->n_ids; i++)
                if (x->ids[i] < 0 || x->ids[i] >= VOCAB || (x->logp && !(x->logp[i] <= 0.0f))) __builtin_trap();
            for (int t = 0; t < x->n_steps; t++)
                if (x->step_end[t] < 0 || x->step_end[t] >= (x->n_ids > 0 ? x->n_ids : 1) ||
                    (t > 0 && x->step_end[t] <= x->step_end[t - 1]))
                    __builtin_trap();
        }
    }
}

static bool same_text(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static void check_round_trip(const orc_rollout_set *s) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_rollouts.%d.jsonl", (int)getpid());
    orc_error err = {0};
    if (orc_rollouts_save(s, path, &err) != ORC_OK) __builtin_trap();
    orc_rollout_set b;
    if (orc_rollouts_load(path, VOCAB, &b, &err) != ORC_OK) __builtin_trap();
    unlink(path);
    if (b.n_problems != s->n_problems) __builtin_trap();
    for (int p = 0; p < s->n_problems; p++) {
        const orc_rollout_problem *x = &s->problems[p], *y = &b.problems[p];
        if (strcmp(x->id, y->id) || strcmp(x->question, y->question) || strcmp(x->gold, y->gold)) __builtin_trap();
        if (x->n_prompt != y->n_prompt || memcmp(x->prompt, y->prompt, (size_t)x->n_prompt * 4)) __builtin_trap();
        if (x->n_samples != y->n_samples) __builtin_trap();
        for (int k = 0; k < x->n_samples; k++) {
            const orc_rollout_sample *u = &x->samples[k], *v = &y->samples[k];
            if (u->n_ids != v->n_ids || u->n_steps != v->n_steps || u->correct != v->correct) __builtin_trap();
            if (memcmp(u->ids, v->ids, (size_t)u->n_ids * 4) || memcmp(u->step_end, v->step_end, (size_t)u->n_steps * 4))
                __builtin_trap();
            if (!same_text(u->answer, v->answer) || (u->logp == NULL) != (v->logp == NULL)) __builtin_trap();
            for (int i = 0; u->logp && i < u->n_ids; i++) /* written to 1e-4 nats; huge values keep float's step */
                if (!(fabsf(u->logp[i] - v->logp[i]) <= 1e-4f + 1e-6f * fabsf(u->logp[i]))) __builtin_trap();
        }
    }
    orc_rollout_set_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    orc_rollout_set s;
    orc_error err = {0};
    if (orc_rollouts_parse((const char *)data, size, "fuzz", VOCAB, &s, &err) != ORC_OK) {
        if (err.code == ORC_OK || err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    check_accepted(&s);
    check_round_trip(&s);
    orc_rollout_set_free(&s);
    return 0;
}
