/* orchard/tasks.h: a synthetic instruction task suite with exact-match scoring.
 *
 * Five domains (math word problems, code tracing, string edits, facts about
 * the State of the Union corpus, ciphers), each with difficulties 1..5. An
 * item is a pure function of (seed, domain, index): the problem comes from a
 * Philox stream keyed by the seed, so any subset of indices and any thread
 * count give the same items. The split (train/val/test) is a hash of the
 * underlying problem alone (not the seed, not the phrasing), so a problem never
 * appears in two splits. Every task kind has several instruction phrasings;
 * the last one of each kind is held out and used only by test items. Scoring
 * extracts the final answer from a model's output (`#### x` if present, else
 * the last non-empty line), normalises it and compares exactly. See
 * docs/tasks.md for the difficulty scales. */
#ifndef ORCHARD_TASKS_H
#define ORCHARD_TASKS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_task_domain {
    ORC_TASK_MATH = 0,
    ORC_TASK_CODE,
    ORC_TASK_STRINGS,
    ORC_TASK_FACTS,
    ORC_TASK_CIPHERS,
    ORC_TASK_NDOMAINS
} orc_task_domain;

typedef enum orc_task_split { ORC_SPLIT_TRAIN = 0, ORC_SPLIT_VAL, ORC_SPLIT_TEST, ORC_SPLIT_COUNT } orc_task_split;

#define ORC_TASK_MAX_DIFFICULTY 5

/* One task. Strings are malloc'ed and owned by the item. */
typedef struct orc_task_item {
    char id[48];            /* "<domain>-<index>", e.g. "math-000042" */
    orc_task_domain domain;
    char kind[32];          /* the task kind within the domain, e.g. "reverse", "caesar_encode" */
    int difficulty;         /* 1..5; meaning per domain in docs/tasks.md */
    orc_task_split split;
    int phrasing_id;        /* index of the instruction template within its kind */
    int held_out_phrasing;  /* 1: a template that train/val never use */
    char *instruction;
    char *input;            /* may be "" (e.g. facts questions live in the instruction) */
    char *solution;         /* worked solution; math/code: one step per line, then "#### answer" */
    char *answer;           /* the exact final answer */
} orc_task_item;

/* The State of the Union metadata the facts domain asks about. */
typedef struct orc_task_facts orc_task_facts;

/* Load {"year","name","party",...} lines (the sotu.jsonl of `orchard data
 * fetch`). ORC_EIO with a hint to run `orchard data fetch` if it is missing. */
orc_task_facts *orc_task_facts_load(const char *path, orc_error *err);
void orc_task_facts_free(orc_task_facts *f);
/* $ORCHARD_CACHE/sotu.jsonl etc. (see orc_corpus_default_cache). */
orc_status orc_task_facts_default_path(char *buf, size_t cap, orc_error *err);

typedef struct orc_task_gen {
    uint64_t seed;
    const orc_task_facts *facts;  /* required for ORC_TASK_FACTS only */
    /* Difficulty range drawn from, inclusive; 0 means the default 1 and
     * ORC_TASK_MAX_DIFFICULTY. The draw takes the same random numbers for any
     * range, so an item at the default range is the same as before. */
    int min_difficulty, max_difficulty;
    /* Math: this many extra sentences (0..ORC_TASK_MAX_DISTRACTORS) that give
     * a number the answer does not use (another person's count, or the
     * person's count of another object), placed among the steps. They draw
     * from a stream of their own, so the problem underneath is the one
     * generated without them; 0: none, the items as before. */
    int distractors;
} orc_task_gen;

#define ORC_TASK_MAX_DISTRACTORS 3

/* Parse "N" or "LO-HI" (1..ORC_TASK_MAX_DIFFICULTY) into g's range. */
orc_status orc_task_difficulty_parse(const char *spec, orc_task_gen *g, orc_error *err);

const char *orc_task_domain_name(orc_task_domain d);   /* "math", "code", "strings", "facts", "ciphers" */
int orc_task_domain_parse(const char *name);           /* the domain, or -1 */
const char *orc_task_split_name(orc_task_split s);     /* "train", "val", "test" */

/* Item `index` of domain d. Pure function of (g->seed, d, index, g->facts). */
orc_status orc_task_make(const orc_task_gen *g, orc_task_domain d, uint64_t index, orc_task_item *out,
                         orc_error *err);
void orc_task_item_free(orc_task_item *it);

/* The split of a problem identified by its canonical key (what the generators
 * hash): about 80% train, 10% val, 10% test. */
orc_task_split orc_task_split_of(const char *problem_key);

/* ---- files ---------------------------------------------------------------------- */

/* One item as a compact JSON object on one line. */
orc_status orc_task_write_jsonl(FILE *fp, const orc_task_item *it, orc_error *err);

/* Generate n items for every domain whose bit (1 << domain) is set in
 * domain_mask and write out_dir/{train,val,test}.jsonl and manifest.json.
 * Items are made in parallel and written in (domain, index) order. */
typedef struct orc_task_counts {
    int64_t by_split[ORC_TASK_NDOMAINS][ORC_SPLIT_COUNT];
    int64_t held_out;  /* test items that use a held-out phrasing */
} orc_task_counts;

orc_status orc_tasks_generate(const orc_task_gen *g, unsigned domain_mask, int64_t n, const char *out_dir,
                              orc_task_counts *counts, orc_error *err);

/* ---- scoring ---------------------------------------------------------------------- */

/* The final answer in a model's output: the text after the last "####" up to
 * the end of its line, else the last non-empty line. malloc'ed. */
char *orc_task_extract_answer(const char *output);
/* Trim, collapse whitespace runs to one space, drop trailing periods, and
 * write a number with thousands separators ("1,000") without them. Case is
 * kept (the case-change tasks depend on it). malloc'ed. */
char *orc_task_normalize(const char *answer);
/* 1 if the extracted, normalised output equals the normalised answer. */
int orc_task_correct(const char *answer, const char *output);

typedef struct orc_task_report {
    int64_t total[ORC_TASK_NDOMAINS][ORC_TASK_MAX_DIFFICULTY + 1];   /* [domain][difficulty]; 0 unused */
    int64_t correct[ORC_TASK_NDOMAINS][ORC_TASK_MAX_DIFFICULTY + 1];
    int64_t missing;   /* tasks with no prediction (scored wrong) */
    int64_t unknown;   /* predictions whose id is not a task (ignored) */
} orc_task_report;

/* Score predictions ({"id","output"} per line) against tasks (the JSONL that
 * orc_tasks_generate writes). A duplicate prediction id is ORC_EFORMAT. */
orc_status orc_tasks_eval(const char *tasks_path, const char *predictions_path, orc_task_report *rep,
                          orc_error *err);
/* The report as JSON (overall, per domain, per domain and difficulty) and as a
 * Markdown table; malloc'ed. */
char *orc_task_report_json(const orc_task_report *rep);
char *orc_task_report_markdown(const orc_task_report *rep);

#ifdef __cplusplus
}
#endif
#endif
