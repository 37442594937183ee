/* `orchard tasks`: the instruction task suite from the command line.
 * `generate` writes train/val/test JSONL files and a manifest for the chosen
 * domains, `eval` scores a predictions file against a task file and prints
 * per-domain and per-difficulty accuracy as JSON and Markdown. The work lives
 * in orchard/tasks.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/tasks.h"

void cmd_tasks_help(void) {
    printf("usage: orchard tasks generate --out DIR [--domains math,code,strings,facts,ciphers] [--n N]\n"
           "                              [--seed S] [--corpus sotu.jsonl] [--difficulty N|LO-HI]\n"
           "                              [--distractors K]\n"
           "       orchard tasks eval --tasks FILE.jsonl --predictions FILE.jsonl\n\n"
           "generate  make N items (default 1000) per domain, deterministic from --seed (default 0),\n"
           "          and write DIR/train.jsonl, DIR/val.jsonl, DIR/test.jsonl and DIR/manifest.json.\n"
           "          Each item: id, domain, kind, difficulty (1-5), split, phrasing_id,\n"
           "          held_out_phrasing, instruction, input, solution, answer. The split is a\n"
           "          hash of the problem; held-out phrasings appear only in test. The facts\n"
           "          domain reads the SOTU corpus of `orchard data fetch` (--corpus, else the cache).\n"
           "          Default domains: all five. --difficulty draws difficulties from N or LO..HI\n"
           "          (default 1-5); at the default range the items are the same as without it.\n"
           "          --distractors K (0-3) adds K sentences to each math problem whose number the\n"
           "          answer does not use (another person's count, another object), among the steps;\n"
           "          the problem and solution underneath are the ones made without them.\n"
           "eval      read predictions ({\"id\", \"output\"} per line), take the answer after the\n"
           "          last '####' (else the last non-empty line), normalise whitespace, trailing\n"
           "          periods and thousands separators, and compare exactly with each task's answer.\n"
           "          Prints accuracy per domain and difficulty as JSON, then as a Markdown table.\n"
           "          Tasks without a prediction count as wrong.\n");
}

static int parse_domains(const char *list, unsigned *mask) {
    *mask = 0;
    char *copy = strdup(list);
    if (!copy) return 1;
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int d = orc_task_domain_parse(tok);
        if (d < 0) {
            fprintf(stderr, "orchard tasks generate: unknown domain '%s' (math, code, strings, facts, ciphers)\n", tok);
            rc = 2;
            break;
        }
        *mask |= 1u << d;
    }
    free(copy);
    if (!rc && !*mask) {
        fprintf(stderr, "orchard tasks generate: --domains is empty\n");
        rc = 2;
    }
    return rc;
}

static int parse_seed(const char *value, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = value ? strtoull(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || value[0] == '-') {
        fprintf(stderr, "orchard tasks generate: --seed expects a non-negative integer, got '%s'\n",
                value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

static int tasks_generate(int argc, char **argv) {
    const char *out = NULL, *corpus = NULL;
    unsigned mask = (1u << ORC_TASK_NDOMAINS) - 1;
    long n = 1000;
    orc_task_gen g = {0};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!v && a[0] == '-') {
            fprintf(stderr, "orchard tasks generate: option %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--corpus") == 0) corpus = v;
        else if (strcmp(a, "--domains") == 0) rc = parse_domains(v, &mask);
        else if (strcmp(a, "--n") == 0) rc = cli_parse_int("tasks generate", "--n", v, 0, 100000000L, &n);
        else if (strcmp(a, "--seed") == 0) rc = parse_seed(v, &g.seed);
        else if (strcmp(a, "--distractors") == 0) {
            long k = 0;
            rc = cli_parse_int("tasks generate", "--distractors", v, 0, ORC_TASK_MAX_DISTRACTORS, &k);
            g.distractors = (int)k;
        }
        else if (strcmp(a, "--difficulty") == 0) {
            orc_error e = {0};
            if (orc_task_difficulty_parse(v, &g, &e) != ORC_OK) {
                fprintf(stderr, "orchard tasks generate: --difficulty: %s\n", e.msg);
                rc = 2;
            }
        } else {
            fprintf(stderr, "orchard tasks generate: unknown argument '%s'\n", a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!out) {
        fprintf(stderr, "orchard tasks generate: --out DIR is required; see `orchard tasks --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_task_facts *facts = NULL;
    if (mask & (1u << ORC_TASK_FACTS)) {
        char path[4200];
        if (!corpus && orc_task_facts_default_path(path, sizeof path, &err) != ORC_OK) {
            fprintf(stderr, "orchard tasks generate: %s\n", err.msg);
            return 1;
        }
        facts = orc_task_facts_load(corpus ? corpus : path, &err);
        if (!facts) {
            fprintf(stderr, "orchard tasks generate: %s (or leave facts out of --domains)\n", err.msg);
            return 1;
        }
        g.facts = facts;
    }
    orc_task_counts c;
    int rc = 0;
    if (orc_tasks_generate(&g, mask, n, out, &c, &err) != ORC_OK) {
        fprintf(stderr, "orchard tasks generate: %s\n", err.msg);
        rc = 1;
    } else {
        printf("%-8s %8s %8s %8s\n", "domain", "train", "val", "test");
        for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
            if (mask & (1u << d))
                printf("%-8s %8lld %8lld %8lld\n", orc_task_domain_name((orc_task_domain)d),
                       (long long)c.by_split[d][ORC_SPLIT_TRAIN], (long long)c.by_split[d][ORC_SPLIT_VAL],
                       (long long)c.by_split[d][ORC_SPLIT_TEST]);
        printf("held-out phrasings in test: %lld\nwrote %s/{train,val,test}.jsonl and %s/manifest.json\n",
               (long long)c.held_out, out, out);
    }
    orc_task_facts_free(facts);
    return rc;
}

static int tasks_eval(int argc, char **argv) {
    const char *tasks = NULL, *preds = NULL;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--tasks") != 0 && strcmp(a, "--predictions") != 0) {
            fprintf(stderr, "orchard tasks eval: unknown argument '%s'\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "orchard tasks eval: option %s needs a value\n", a);
            return 2;
        }
        if (a[2] == 't') tasks = v;
        else preds = v;
    }
    if (!tasks || !preds) {
        fprintf(stderr, "orchard tasks eval: --tasks and --predictions are required; see `orchard tasks --help`\n");
        return 2;
    }
    orc_error err = {0};
    orc_task_report rep;
    if (orc_tasks_eval(tasks, preds, &rep, &err) != ORC_OK) {
        fprintf(stderr, "orchard tasks eval: %s\n", err.msg);
        return 1;
    }
    char *j = orc_task_report_json(&rep), *m = orc_task_report_markdown(&rep);
    int rc = j && m ? 0 : 1;
    if (j && m) printf("%s\n\n%s", j, m);
    else fprintf(stderr, "orchard tasks eval: out of memory\n");
    free(j);
    free(m);
    return rc;
}

int cmd_tasks(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "orchard tasks: missing subcommand (generate or eval); see `orchard tasks --help`\n");
        return 2;
    }
    if (strcmp(argv[1], "generate") == 0) return tasks_generate(argc - 1, argv + 1);
    if (strcmp(argv[1], "eval") == 0) return tasks_eval(argc - 1, argv + 1);
    fprintf(stderr, "orchard tasks: '%s' is not a subcommand (generate, eval)\n", argv[1]);
    return 2;
}
