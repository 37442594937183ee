/* The math domain: multi-step arithmetic word problems. A person starts with
 * some objects and each following sentence changes the count by one
 * operation; the worked solution has one line per operation and ends with
 * "#### answer". Difficulty d means d operations, operands up to
 * 20/50/100/500/1000, and (from d = 3) multiplication and exact division.
 * With distractors, sentences whose number the answer does not use (another
 * person's count, or the person's count of another object) are put between
 * the steps, as in GSM8K's irrelevant-context variants: a solver can then
 * pick a wrong operand, an error in choosing a step rather than in the
 * arithmetic. */
#include <stdio.h>
#include <string.h>

#include "tasks_internal.h"

static const char *const TEMPLATES[] = {
    "Solve the word problem. Show one step per line and end with '#### <answer>'.",
    "Work through this problem step by step, then give the final number after '####'.",
    ("Read the story and compute the result. Write each calculation on its own line and finish with '#### "
     "<number>'."),
    "Answer the arithmetic question below, showing your working line by line; put the answer after '####'.",
};

static const char *const NAMES[] = {"Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas"};
static const char *const THINGS[] = {"apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells"};
#define COUNT(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))

static const int64_t MAX_OPERAND[ORC_TASK_MAX_DIFFICULTY + 1] = {0, 20, 50, 100, 500, 1000};

/* A divisor of v in [2, 5], or 0 if none. Drawn among the ones that work. */
static int64_t pick_divisor(task_rng *r, int64_t v) {
    int64_t ok[4];
    int n = 0;
    for (int64_t k = 2; k <= 5; k++)
        if (v > 0 && v % k == 0) ok[n++] = k;
    return n ? ok[trng_below(r, (uint32_t)n)] : 0;
}

/* One irrelevant sentence, drawn from the draft's side stream: another
 * person's count or purchase of the same object, or the person's count of
 * another object. */
static void distractor(task_draft *d, const char *name, const char *thing, int64_t max) {
    task_rng *s = &d->side;
    int64_t k = trng_range(s, 1, max);
    const char *other = NAMES[trng_below(s, COUNT(NAMES) - 1)];
    if (other == name) other = NAMES[COUNT(NAMES) - 1];
    const char *thing2 = THINGS[trng_below(s, COUNT(THINGS) - 1)];
    if (thing2 == thing) thing2 = THINGS[COUNT(THINGS) - 1];
    int t = (int)trng_below(s, 3);
    if (t == 0) sb_printf(&d->input, " %s has %lld %s.", other, (long long)k, thing);
    else if (t == 1) sb_printf(&d->input, " %s buys %lld %s.", other, (long long)k, thing);
    else sb_printf(&d->input, " %s also has %lld %s.", name, (long long)k, thing2);
}

/* The distractors placed at slot p: 0 right after the opening sentence,
 * i after the i-th step's sentence. */
static void distractors_at(task_draft *d, const int *slot, int p, const char *name, const char *thing, int64_t max) {
    for (int j = 0; j < d->distractors; j++)
        if (slot[j] == p) distractor(d, name, thing, max);
}

orc_status task_gen_math(task_rng *r, task_draft *d, orc_error *err) {
    (void)err;
    int diff = d->difficulty;
    int64_t max = MAX_OPERAND[diff];
    const char *name = NAMES[trng_below(r, COUNT(NAMES))];
    const char *thing = THINGS[trng_below(r, COUNT(THINGS))];
    int64_t v = trng_range(r, max / 4 + 1, max);
    snprintf(d->kind, sizeof d->kind, "word_problem");
    sb_printf(&d->input, "%s has %lld %s.", name, (long long)v, thing);
    sb_printf(&d->solution, "%s starts with %lld %s.\n", name, (long long)v, thing);
    int slot[ORC_TASK_MAX_DISTRACTORS];
    for (int j = 0; j < d->distractors; j++) slot[j] = (int)trng_below(&d->side, (uint32_t)diff + 1);
    for (int step = 0; step < diff; step++) {
        distractors_at(d, slot, step, name, thing, max);
        /* Choose an operation that keeps the count whole, non-negative and bounded. */
        int n_ops = diff >= 3 ? 4 : 2;
        int op = (int)trng_below(r, (uint32_t)n_ops);
        int64_t k = 0;
        if (op == 2 && v * 5 > max * 10) op = 1;
        if (op == 3 && (k = pick_divisor(r, v)) == 0) op = 0;
        if (op == 1 && v < 2) op = 0;
        int64_t before = v;
        if (op == 0) {
            k = trng_range(r, 1, max);
            v += k;
            int t = (int)trng_below(r, 3);
            if (t == 0) sb_printf(&d->input, " Then %s buys %lld more %s.", name, (long long)k, thing);
            else if (t == 1) sb_printf(&d->input, " %s receives another %lld %s as a gift.", name, (long long)k, thing);
            else sb_printf(&d->input, " Later %s finds %lld more %s.", name, (long long)k, thing);
            sb_printf(&d->solution, "%lld + %lld = %lld\n", (long long)before, (long long)k, (long long)v);
        } else if (op == 1) {
            k = trng_range(r, 1, v - 1 < max ? v - 1 : max);
            v -= k;
            int t = (int)trng_below(r, 3);
            if (t == 0) sb_printf(&d->input, " %s gives away %lld %s.", name, (long long)k, thing);
            else if (t == 1) sb_printf(&d->input, " Then %s sells %lld of them.", name, (long long)k);
            else sb_printf(&d->input, " %s loses %lld %s on the way.", name, (long long)k, thing);
            sb_printf(&d->solution, "%lld - %lld = %lld\n", (long long)before, (long long)k, (long long)v);
        } else if (op == 2) {
            k = trng_range(r, 2, 5);
            v *= k;
            sb_printf(&d->input, " Then the number of %s grows to %lld times as many.", thing, (long long)k);
            sb_printf(&d->solution, "%lld * %lld = %lld\n", (long long)before, (long long)k, (long long)v);
        } else {
            v /= k;
            sb_printf(&d->input, " %s splits the %s equally into %lld groups and keeps one group.", name, thing,
                      (long long)k);
            sb_printf(&d->solution, "%lld / %lld = %lld\n", (long long)before, (long long)k, (long long)v);
        }
    }
    distractors_at(d, slot, diff, name, thing, max);
    sb_printf(&d->input, " How many %s does %s have now?", thing, name);
    sb_printf(&d->solution, "#### %lld", (long long)v);
    sb_printf(&d->answer, "%lld", (long long)v);
    sb_printf(&d->key, "math|%s", d->input.s);
    d->templates = TEMPLATES;
    d->n_templates = (int)COUNT(TEMPLATES);
    return ORC_OK;
}
