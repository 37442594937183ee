/* Shared pieces of the task generators: the per-item random stream, a
 * growable string, and the draft a domain generator fills in (problem,
 * solution, answer, its canonical key and its phrasing table). The common
 * code turns a draft into an orc_task_item (split, phrasing, id). */
#ifndef ORCHARD_TASKS_INTERNAL_H
#define ORCHARD_TASKS_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/tasks.h"

/* The draws for one item: Philox keyed by the seed, stream (domain, index). */
typedef struct task_rng {
    uint64_t seed, stream, counter;
} task_rng;

uint32_t trng_below(task_rng *r, uint32_t n);        /* [0, n), n > 0 */
int64_t trng_range(task_rng *r, int64_t lo, int64_t hi); /* [lo, hi] */

/* A growable NUL-terminated string; `failed` latches on allocation failure. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_putc(sbuf *b, char c);
void sb_free(sbuf *b);
/* Hand over the string ("" if empty), leaving b empty; NULL on failure. */
char *sb_take(sbuf *b);

/* What a domain generator produces. Templates may hold one "{}" that is
 * replaced by `slot` (a key, a year, a name). The last template is held out. */
typedef struct task_draft {
    char kind[32];
    int difficulty;
    sbuf key;       /* canonical problem: the split hash input; no phrasing */
    sbuf input, solution, answer;
    const char *const *templates;
    int n_templates;
    char slot[128];
    int distractors;   /* math: irrelevant-number sentences to add (orc_task_gen.distractors) */
    task_rng side;     /* their own draws, so the main stream is as without them */
} task_draft;

orc_status task_gen_math(task_rng *r, task_draft *d, orc_error *err);
orc_status task_gen_code(task_rng *r, task_draft *d, orc_error *err);
orc_status task_gen_strings(task_rng *r, task_draft *d, orc_error *err);
orc_status task_gen_facts(task_rng *r, const orc_task_facts *f, task_draft *d, orc_error *err);
orc_status task_gen_ciphers(task_rng *r, task_draft *d, orc_error *err);

#endif
