/* The task generators checked by independent recomputation: a word-problem
 * reader and a tiny interpreter for the code domain recompute thousands of
 * answers from the generated text alone; string and cipher answers are
 * inverted or redone here; facts answers are checked against a tiny SOTU-like
 * corpus written by the test. Also: items are pure functions of (seed, domain,
 * index), the files are identical for 1 and 3 threads, a problem always lands
 * in one split, held-out phrasings appear only in test, every difficulty
 * occurs, and bad input gives clear errors. */
#include <ctype.h>
#include <dirent.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdbool.h>

#include <cmocka.h>

#include "testdir.h"

#include "orchard/tasks.h"

#define N_ITEMS 3000

static void make(const orc_task_gen *g, orc_task_domain d, uint64_t i, orc_task_item *it) {
    orc_error err = {0};
    orc_status st = orc_task_make(g, d, i, it, &err);
    if (st != ORC_OK) fail_msg("orc_task_make(%d, %llu): %s", (int)d, (unsigned long long)i, err.msg);
}

/* The text after the final "#### " of a solution. */
static const char *final_line(const char *solution) {
    const char *p = strstr(solution, "#### "), *last = NULL;
    for (; p; p = strstr(p + 1, "#### ")) last = p;
    return last ? last + 5 : NULL;
}

/* ---- math: read the word problem ------------------------------------------------------- */

static int64_t first_number(const char *s, int *found) {
    while (*s && !isdigit((unsigned char)*s)) s++;
    *found = *s != '\0';
    return *found ? strtoll(s, NULL, 10) : 0;
}

static int64_t solve_word_problem(const char *text, int *n_ops) {
    char *copy = strdup(text), *save = NULL;
    int64_t v = 0;
    int started = 0;
    *n_ops = 0;
    for (char *s = strtok_r(copy, ".?", &save); s; s = strtok_r(NULL, ".?", &save)) {
        int found;
        int64_t k = first_number(s, &found);
        if (!found) continue;
        if (!started) {
            v = k;
            started = 1;
            continue;
        }
        (*n_ops)++;
        if (strstr(s, "more") || strstr(s, "another")) v += k;
        else if (strstr(s, "away") || strstr(s, "sells") || strstr(s, "loses")) v -= k;
        else if (strstr(s, "times")) v *= k;
        else if (strstr(s, "equally")) {
            assert_int_equal(v % k, 0);
            v /= k;
        } else fail_msg("no operation in sentence '%s'", s);
        assert_true(v >= 0);
    }
    free(copy);
    return v;
}

/* Every "a op b = c" line of the worked solution is right. */
static int check_solution_lines(const char *sol) {
    int lines = 0;
    for (const char *p = sol; p && *p;) {
        long long a, b, c;
        char op;
        if (sscanf(p, "%lld %c %lld = %lld", &a, &op, &b, &c) == 4) {
            long long want = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
            assert_int_equal(c, want);
            lines++;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return lines;
}

static void test_math_recomputed(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 7};
    int seen[6] = {0};
    for (uint64_t i = 0; i < N_ITEMS; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_MATH, i, &it);
        int ops;
        int64_t v = solve_word_problem(it.input, &ops);
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)v);
        assert_string_equal(it.answer, want);
        assert_int_equal(ops, it.difficulty);
        assert_int_equal(check_solution_lines(it.solution), it.difficulty);
        assert_string_equal(final_line(it.solution), it.answer);
        seen[it.difficulty]++;
        orc_task_item_free(&it);
    }
    for (int d = 1; d <= 5; d++) assert_true(seen[d] > N_ITEMS / 10);
}

/* Distractors: each math item is the one made without them plus exactly K
 * sentences of the three irrelevant forms (another person has / buys, the
 * person also has another object); removing those gives the plain input
 * back, and the solution and answer are the plain ones. K out of range is
 * refused. */
static bool is_distractor(const char *sentence) {
    if (strstr(sentence, " also has ")) return true;
    if (strstr(sentence, " has ") && !strstr(sentence, "How many")) return true;
    return strstr(sentence, " buys ") && !strstr(sentence, " more ");
}

static void test_math_distractors(void **state) {
    (void)state;
    orc_task_gen plain_g = {.seed = 7}, g = {.seed = 7, .distractors = 2};
    for (uint64_t i = 0; i < 500; i++) {
        orc_task_item it, plain;
        make(&g, ORC_TASK_MATH, i, &it);
        make(&plain_g, ORC_TASK_MATH, i, &plain);
        assert_string_equal(it.solution, plain.solution);
        assert_string_equal(it.answer, plain.answer);
        assert_int_equal(it.difficulty, plain.difficulty);
        /* Sentences end with ". " or "?"; the first one (the start) is always kept. */
        char kept[2048] = "";
        int removed = 0;
        const char *p = it.input;
        for (int n = 0; *p; n++) {
            const char *end = strpbrk(p, ".?");
            assert_non_null(end);
            char sentence[512];
            snprintf(sentence, sizeof sentence, "%.*s", (int)(end + 1 - p), p);
            if (n > 0 && is_distractor(sentence)) removed++;
            else strncat(kept, sentence, sizeof kept - strlen(kept) - 1);
            p = end + 1;
        }
        assert_int_equal(removed, 2);
        assert_string_equal(kept, plain.input);
        orc_task_item_free(&it);
        orc_task_item_free(&plain);
    }
    orc_task_gen bad = {.seed = 7, .distractors = ORC_TASK_MAX_DISTRACTORS + 1};
    orc_task_item it;
    orc_error err = {0};
    assert_int_equal(orc_task_make(&bad, ORC_TASK_MATH, 0, &it, &err), ORC_EINVAL);
    if (!strstr(err.msg, "4 distractors")) fail_msg("%s", err.msg);
}

/* ---- code: a small interpreter for the generated language ------------------------------------ */

typedef struct interp {
    char names[16][16];
    int64_t vals[16];
    int n_vars;
    int64_t out;
    int printed;
} interp;

static int64_t *slot(interp *in, const char *name) {
    for (int i = 0; i < in->n_vars; i++)
        if (!strcmp(in->names[i], name)) return &in->vals[i];
    assert_true(in->n_vars < 16);
    snprintf(in->names[in->n_vars], sizeof in->names[0], "%s", name);
    in->vals[in->n_vars] = 0;
    return &in->vals[in->n_vars++];
}

static int64_t term(interp *in, const char *t) {
    if (isdigit((unsigned char)t[0]) || t[0] == '-') return strtoll(t, NULL, 10);
    for (int i = 0; i < in->n_vars; i++)
        if (!strcmp(in->names[i], t)) return in->vals[i];
    fail_msg("variable '%s' read before assignment", t);
    return 0;
}

static int64_t expr(interp *in, const char *s) {
    char a[32], op[4], b[32];
    int n = sscanf(s, "%31s %3s %31s", a, op, b);
    if (n == 1) return term(in, a);
    assert_int_equal(n, 3);
    int64_t x = term(in, a), y = term(in, b);
    if (!strcmp(op, "+")) return x + y;
    if (!strcmp(op, "-")) return x - y;
    if (!strcmp(op, "*")) return x * y;
    fail_msg("unknown operator '%s'", op);
    return 0;
}

static int indent_of(const char *line) {
    int n = 0;
    while (line[n] == ' ') n++;
    assert_int_equal(n % 4, 0);
    return n / 4;
}

static int block_end(char **lines, int from, int end, int indent) {
    while (from < end && indent_of(lines[from]) > indent) from++;
    return from;
}

static void exec_block(interp *in, char **lines, int start, int end, int indent) {
    for (int i = start; i < end;) {
        assert_int_equal(indent_of(lines[i]), indent);
        const char *s = lines[i] + 4 * indent;
        int body_end = block_end(lines, i + 1, end, indent);
        char name[16], rest[64], a[32], cmp[4], b[32];
        int count;
        if (sscanf(s, "for %15s in range(%d):", name, &count) == 2) {
            for (int k = 0; k < count; k++) {
                *slot(in, name) = k;
                exec_block(in, lines, i + 1, body_end, indent + 1);
            }
            i = body_end;
        } else if (sscanf(s, "if %31s %3s %31[^:]:", a, cmp, b) == 3) {
            int64_t x = term(in, a), y = term(in, b);
            int yes = !strcmp(cmp, "<") ? x < y : !strcmp(cmp, ">") ? x > y : !strcmp(cmp, "==") ? x == y : x != y;
            int next = body_end;
            int else_end = next;
            if (next < end && indent_of(lines[next]) == indent && !strcmp(lines[next] + 4 * indent, "else:"))
                else_end = block_end(lines, next + 1, end, indent);
            if (yes) exec_block(in, lines, i + 1, body_end, indent + 1);
            else if (else_end > next) exec_block(in, lines, next + 1, else_end, indent + 1);
            i = else_end;
        } else if (sscanf(s, "print(%63[^)])", rest) == 1) {
            in->out = expr(in, rest);
            in->printed++;
            i++;
        } else if (sscanf(s, "%15s = %63[^\n]", name, rest) == 2) {
            int64_t v = expr(in, rest);
            *slot(in, name) = v;
            i++;
        } else {
            fail_msg("cannot parse line '%s'", s);
        }
    }
}

static int64_t run_program(const char *text) {
    char *copy = strdup(text), *lines[64], *save = NULL;
    int n = 0;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        assert_true(n < 64);
        lines[n++] = l;
    }
    interp in;
    memset(&in, 0, sizeof in);
    exec_block(&in, lines, 0, n, 0);
    assert_int_equal(in.printed, 1);
    free(copy);
    return in.out;
}

static void test_code_interpreted(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 11};
    int seen[6] = {0};
    for (uint64_t i = 0; i < N_ITEMS; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_CODE, i, &it);
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)run_program(it.input));
        assert_string_equal(it.answer, want);
        assert_string_equal(final_line(it.solution), it.answer);
        /* Loops show one trace line per iteration at least. */
        assert_true(strchr(it.solution, '\n') != NULL);
        seen[it.difficulty]++;
        orc_task_item_free(&it);
    }
    for (int d = 1; d <= 5; d++) assert_true(seen[d] > N_ITEMS / 10);
}

/* ---- strings and ciphers: invert or recompute ------------------------------------------------- */

/* The n-th single-quoted value of an instruction. */
static void quoted(const char *s, int n, char *out, size_t cap) {
    const char *p = s;
    for (int i = 0; i <= n; i++) {
        p = strchr(p, '\'');
        assert_non_null(p);
        const char *e = strchr(p + 1, '\'');
        assert_non_null(e);
        if (i == n) {
            snprintf(out, cap, "%.*s", (int)(e - p - 1), p + 1);
            return;
        }
        p = e + 1;
    }
}

static int cmp_c(const void *a, const void *b) { return *(const char *)a - *(const char *)b; }

static void check_string_item(const orc_task_item *it) {
    const char *in = it->input, *ans = it->answer;
    size_t n = strlen(in);
    char buf[512], x[64], y[64];
    assert_true(n > 0 && n < sizeof buf);
    if (!strcmp(it->kind, "reverse")) {
        assert_int_equal(strlen(ans), n);
        for (size_t i = 0; i < n; i++) assert_int_equal(ans[i], in[n - 1 - i]);
    } else if (!strcmp(it->kind, "sort_letters")) {
        snprintf(buf, sizeof buf, "%s", in);
        qsort(buf, n, 1, cmp_c);
        assert_string_equal(ans, buf);
    } else if (!strcmp(it->kind, "sort_words")) {
        assert_int_equal(strlen(ans), n);
        const char *prev = NULL;
        snprintf(buf, sizeof buf, "%s", ans);
        char *save = NULL;
        int words_in = 1, words_out = 0;
        for (const char *c = in; *c; c++) words_in += *c == ' ';
        for (char *w = strtok_r(buf, " ", &save); w; prev = w, w = strtok_r(NULL, " ", &save)) {
            if (prev) assert_true(strcmp(prev, w) <= 0);
            assert_non_null(strstr(in, w));
            words_out++;
        }
        assert_int_equal(words_in, words_out);
    } else if (!strcmp(it->kind, "count")) {
        quoted(it->instruction, 0, x, sizeof x);
        int c = 0;
        for (size_t i = 0; i < n; i++) c += in[i] == x[0];
        assert_int_equal(atoi(ans), c);
    } else if (!strcmp(it->kind, "upper") || !strcmp(it->kind, "lower") || !strcmp(it->kind, "title")) {
        assert_int_equal(strlen(ans), n);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(tolower((unsigned char)ans[i]), tolower((unsigned char)in[i]));
            int start = i == 0 || in[i - 1] == ' ';
            int want_upper = !strcmp(it->kind, "upper") || (!strcmp(it->kind, "title") && start);
            if (in[i] != ' ') assert_int_equal(!!isupper((unsigned char)ans[i]), want_upper);
        }
    } else if (!strcmp(it->kind, "replace")) {
        quoted(it->instruction, 0, x, sizeof x);
        quoted(it->instruction, 1, y, sizeof y);
        buf[0] = '\0';
        char *copy = strdup(in), *save = NULL;
        int hits = 0;
        for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            int hit = !strcmp(w, x);
            hits += hit;
            strcat(buf, buf[0] ? " " : "");
            strcat(buf, hit ? y : w);
        }
        free(copy);
        assert_true(hits >= 1);
        assert_string_equal(ans, buf);
    } else {
        fail_msg("unknown strings kind '%s'", it->kind);
    }
}

static void test_strings_recomputed(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 3};
    int kinds_seen = 0;
    char kinds[16][32];
    for (uint64_t i = 0; i < N_ITEMS; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_STRINGS, i, &it);
        check_string_item(&it);
        assert_string_equal(final_line(it.solution), it.answer);
        int known = 0;
        for (int k = 0; k < kinds_seen; k++) known |= !strcmp(kinds[k], it.kind);
        if (!known) snprintf(kinds[kinds_seen++], sizeof kinds[0], "%s", it.kind);
        orc_task_item_free(&it);
    }
    assert_int_equal(kinds_seen, 8);
}

static char unshift(char c, int k) { return c == ' ' ? c : (char)('a' + ((c - 'a' - k) % 26 + 26) % 26); }

static void test_ciphers_inverted(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 5};
    for (uint64_t i = 0; i < N_ITEMS; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_CIPHERS, i, &it);
        size_t n = strlen(it.input);
        assert_int_equal(strlen(it.answer), n);
        char plain[256];
        assert_true(n < sizeof plain);
        int found;
        if (!strcmp(it.kind, "caesar_encode") || !strcmp(it.kind, "caesar_decode")) {
            int k = (int)first_number(it.instruction, &found);
            assert_true(found && k >= 1 && k <= 25);
            int sign = !strcmp(it.kind, "caesar_encode") ? 1 : -1;
            for (size_t j = 0; j < n; j++) plain[j] = unshift(it.answer[j], sign * k);
        } else if (!strcmp(it.kind, "atbash")) {
            for (size_t j = 0; j < n; j++) plain[j] = it.answer[j] == ' ' ? ' ' : (char)('a' + 'z' - it.answer[j]);
        } else if (!strcmp(it.kind, "vigenere_encode")) {
            char key[16];
            quoted(it.instruction, 0, key, sizeof key);
            size_t kl = strlen(key), used = 0;
            assert_true(kl >= 3 && kl <= 5);
            for (size_t j = 0; j < n; j++)
                plain[j] = it.answer[j] == ' ' ? ' ' : unshift(it.answer[j], key[used++ % kl] - 'A');
        } else {
            fail_msg("unknown cipher kind '%s'", it.kind);
        }
        plain[n] = '\0';
        assert_string_equal(plain, it.input);
        orc_task_item_free(&it);
    }
}

/* ---- facts: a tiny corpus written here ------------------------------------------------------------ */


typedef struct rec {
    int year;
    const char *name, *party;
} rec;

/* 1801 has two presidents and 1790 the party "none": neither may be asked about. */
static const rec TINY[] = {
    {1790, "George Washington", "none"}, {1791, "George Washington", "none"}, {1797, "John Adams", "Federalist"},
    {1800, "John Adams", "Federalist"},  {1801, "John Adams", "Federalist"},
    {1801, "Thomas Jefferson", "Democratic-Republican"},
    {1802, "Thomas Jefferson", "Democratic-Republican"}, {1805, "Thomas Jefferson", "Democratic-Republican"},
    {1861, "Abraham Lincoln", "Republican"}, {1864, "Abraham Lincoln", "Republican"},
};
#define N_TINY ((int)(sizeof TINY / sizeof TINY[0]))

static void write_tiny(const char *path) {
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < N_TINY; i++)
        fprintf(fp, "{\"year\": %d, \"name\": \"%s\", \"party\": \"%s\", \"text\": \"Fellow citizens ...\"}\n",
                TINY[i].year, TINY[i].name, TINY[i].party);
    fclose(fp);
}

static void check_fact(const orc_task_item *it) {
    int found;
    int year = (int)first_number(it->instruction, &found);
    if (!strcmp(it->kind, "president_of_year") || !strcmp(it->kind, "party_of_year")) {
        assert_true(found);
        int matches = 0;
        for (int i = 0; i < N_TINY; i++)
            if (TINY[i].year == year) {
                matches++;
                assert_string_equal(it->answer, it->kind[1] == 'r' ? TINY[i].name : TINY[i].party);
            }
        assert_int_equal(matches, 1);
        assert_true(year != 1801 && year != 1790 && year != 1791);
        return;
    }
    assert_false(found);
    const char *name = NULL;
    for (int i = 0; i < N_TINY; i++)
        if (strstr(it->instruction, TINY[i].name)) name = TINY[i].name;
    assert_non_null(name);
    int first = 9999, last = 0, count = 0;
    for (int i = 0; i < N_TINY; i++)
        if (!strcmp(TINY[i].name, name)) {
            count++;
            if (TINY[i].year < first) first = TINY[i].year;
            if (TINY[i].year > last) last = TINY[i].year;
        }
    int want = !strcmp(it->kind, "first_year") ? first : !strcmp(it->kind, "last_year") ? last : count;
    assert_int_equal(atoi(it->answer), want);
}

static void test_facts_tiny_corpus(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/sotu.jsonl", orc_test_scratch);
    write_tiny(path);
    orc_error err = {0};
    orc_task_facts *f = orc_task_facts_load(path, &err);
    assert_non_null(f);
    orc_task_gen g = {.seed = 2, .facts = f};
    int seen[6] = {0};
    for (uint64_t i = 0; i < 1000; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_FACTS, i, &it);
        check_fact(&it);
        assert_string_equal(it.input, "");
        assert_string_equal(final_line(it.solution), it.answer);
        seen[it.difficulty]++;
        orc_task_item_free(&it);
    }
    for (int d = 1; d <= 5; d++) assert_true(seen[d] > 100);
    orc_task_facts_free(f);
}

static void test_facts_errors(void **state) {
    (void)state;
    orc_error err = {0};
    char path[128];
    snprintf(path, sizeof path, "%s/absent.jsonl", orc_test_scratch);
    assert_null(orc_task_facts_load(path, &err));
    assert_int_equal(err.code, ORC_EIO);
    assert_non_null(strstr(err.msg, "orchard data fetch"));

    snprintf(path, sizeof path, "%s/bad.jsonl", orc_test_scratch);
    FILE *fp = fopen(path, "w");
    fprintf(fp, "{\"year\": \"1790\", \"name\": \"X\", \"party\": \"Y\"}\n");
    fclose(fp);
    orc_error_clear(&err);
    assert_null(orc_task_facts_load(path, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, ":1:"));

    /* The facts domain without a corpus, and generation with no domains. */
    orc_task_gen g = {.seed = 1};
    orc_task_item it;
    orc_error_clear(&err);
    assert_int_equal(orc_task_make(&g, ORC_TASK_FACTS, 0, &it, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "orchard data fetch"));
    orc_error_clear(&err);
    assert_int_equal(orc_tasks_generate(&g, 0, 10, orc_test_scratch, NULL, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_tasks_generate(&g, 1u << ORC_TASK_FACTS, 10, orc_test_scratch, NULL, &err), ORC_EINVAL);
}

/* ---- determinism, splits, phrasings ------------------------------------------------------------------ */

static int same_item(const orc_task_item *a, const orc_task_item *b) {
    return !strcmp(a->id, b->id) && !strcmp(a->kind, b->kind) && a->difficulty == b->difficulty &&
           a->split == b->split && a->phrasing_id == b->phrasing_id && !strcmp(a->instruction, b->instruction) &&
           !strcmp(a->input, b->input) && !strcmp(a->solution, b->solution) && !strcmp(a->answer, b->answer);
}

static void test_pure_function_of_seed_and_index(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 42}, h = {.seed = 43};
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++) {
        if (d == ORC_TASK_FACTS) continue;
        int differ = 0;
        for (uint64_t i = 0; i < 200; i += 7) {
            orc_task_item a, b, c;
            make(&g, (orc_task_domain)d, i, &a);
            make(&g, (orc_task_domain)d, i, &b);
            make(&h, (orc_task_domain)d, i, &c);
            assert_true(same_item(&a, &b));
            differ += strcmp(a.input, c.input) != 0 || strcmp(a.instruction, c.instruction) != 0;
            orc_task_item_free(&a);
            orc_task_item_free(&b);
            orc_task_item_free(&c);
        }
        assert_true(differ > 20);
    }
}

static char *slurp(const char *path) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static void test_files_same_for_any_thread_count(void **state) {
    (void)state;
    char tiny[128], d1[128], d3[128];
    snprintf(tiny, sizeof tiny, "%s/sotu.jsonl", orc_test_scratch);
    write_tiny(tiny);
    orc_error err = {0};
    orc_task_facts *f = orc_task_facts_load(tiny, &err);
    assert_non_null(f);
    orc_task_gen g = {.seed = 9, .facts = f};
    snprintf(d1, sizeof d1, "%s/t1", orc_test_scratch);
    snprintf(d3, sizeof d3, "%s/t3", orc_test_scratch);
    orc_task_counts c1, c3;
    omp_set_num_threads(1);
    assert_int_equal(orc_tasks_generate(&g, 0x1f, 300, d1, &c1, &err), ORC_OK);
    omp_set_num_threads(3);
    assert_int_equal(orc_tasks_generate(&g, 0x1f, 300, d3, &c3, &err), ORC_OK);
    assert_memory_equal(&c1, &c3, sizeof c1);
    const char *files[] = {"train.jsonl", "val.jsonl", "test.jsonl", "manifest.json"};
    for (int k = 0; k < 4; k++) {
        char p1[256], p3[256];
        snprintf(p1, sizeof p1, "%s/%s", d1, files[k]);
        snprintf(p3, sizeof p3, "%s/%s", d3, files[k]);
        char *a = slurp(p1), *b = slurp(p3);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    int64_t total = 0;
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++)
        for (int s = 0; s < ORC_SPLIT_COUNT; s++) total += c1.by_split[d][s];
    assert_int_equal(total, 5 * 300);
    orc_task_facts_free(f);
}

/* A problem's identity without its phrasing: kind, input, answer and the quoted
 * value of the instruction (a Caesar key is fixed by input and answer). */
typedef struct seen_problem {
    char *key;
    orc_task_split split;
} seen_problem;

static void test_splits_and_held_out_phrasings(void **state) {
    (void)state;
    orc_task_gen g = {.seed = 21};
    enum { N = 2000 };
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++) {
        if (d == ORC_TASK_FACTS) continue;
        seen_problem *seen = calloc(N, sizeof *seen);
        int64_t by_split[ORC_SPLIT_COUNT] = {0}, held = 0, dup = 0;
        for (uint64_t i = 0; i < N; i++) {
            orc_task_item it;
            make(&g, (orc_task_domain)d, i, &it);
            by_split[it.split]++;
            if (it.held_out_phrasing) {
                held++;
                assert_int_equal(it.split, ORC_SPLIT_TEST);
            }
            /* The counted letter is not implied by the answer: add the quoted value. */
            char q[64] = "";
            if (strchr(it.instruction, '\'')) quoted(it.instruction, 0, q, sizeof q);
            size_t len = strlen(it.kind) + strlen(it.input) + strlen(it.answer) + strlen(q) + 4;
            char *key = malloc(len);
            snprintf(key, len, "%s|%s|%s|%s", it.kind, it.input, it.answer, q);
            for (uint64_t j = 0; j < i; j++)
                if (!strcmp(seen[j].key, key)) {
                    assert_int_equal(seen[j].split, it.split);
                    dup++;
                }
            seen[i] = (seen_problem){key, it.split};
            orc_task_item_free(&it);
        }
        /* About 80/10/10, and held-out phrasings do reach the test split. */
        assert_true(by_split[ORC_SPLIT_TRAIN] > N * 70 / 100 && by_split[ORC_SPLIT_TRAIN] < N * 90 / 100);
        assert_true(by_split[ORC_SPLIT_VAL] > N * 5 / 100 && by_split[ORC_SPLIT_TEST] > N * 5 / 100);
        assert_true(held > 0 && held < by_split[ORC_SPLIT_TEST]);
        (void)dup;
        for (int i = 0; i < N; i++) free(seen[i].key);
        free(seen);
    }
}

/* The same problem under many phrasings (facts repeat a lot) keeps one split. */
static void test_facts_problem_keeps_its_split(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/sotu.jsonl", orc_test_scratch);
    write_tiny(path);
    orc_error err = {0};
    orc_task_facts *f = orc_task_facts_load(path, &err);
    assert_non_null(f);
    orc_task_gen g = {.seed = 4, .facts = f};
    /* [kind][year or person] -> split + 1 */
    int by_year[2][2000] = {{0}}, by_name[3][N_TINY] = {{0}};
    int phrasings[4] = {0};
    for (uint64_t i = 0; i < 1500; i++) {
        orc_task_item it;
        make(&g, ORC_TASK_FACTS, i, &it);
        int found, *cell;
        int year = (int)first_number(it.instruction, &found);
        if (it.difficulty <= 2) {
            cell = &by_year[it.difficulty - 1][year];
        } else {
            int who = -1;
            for (int k = 0; k < N_TINY; k++)
                if (who < 0 && strstr(it.instruction, TINY[k].name)) who = k;
            assert_true(who >= 0);
            for (int k = 0; k < N_TINY; k++)
                if (!strcmp(TINY[k].name, TINY[who].name)) who = who < k ? who : k;
            cell = &by_name[it.difficulty - 3][who];
        }
        if (*cell) assert_int_equal(*cell, (int)it.split + 1);
        *cell = (int)it.split + 1;
        phrasings[it.phrasing_id]++;
        if (it.held_out_phrasing) assert_int_equal(it.split, ORC_SPLIT_TEST);
        orc_task_item_free(&it);
    }
    for (int p = 0; p < 3; p++) assert_true(phrasings[p] > 0);
    orc_task_facts_free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_math_recomputed),
        cmocka_unit_test(test_math_distractors),
        cmocka_unit_test(test_code_interpreted),
        cmocka_unit_test(test_strings_recomputed),
        cmocka_unit_test(test_ciphers_inverted),
        cmocka_unit_test_setup_teardown(test_facts_tiny_corpus, orc_test_scratch_setup, orc_test_scratch_teardown),
        cmocka_unit_test_setup_teardown(test_facts_errors, orc_test_scratch_setup, orc_test_scratch_teardown),
        cmocka_unit_test(test_pure_function_of_seed_and_index),
        cmocka_unit_test_setup_teardown(test_files_same_for_any_thread_count, orc_test_scratch_setup, orc_test_scratch_teardown),
        cmocka_unit_test(test_splits_and_held_out_phrasings),
        cmocka_unit_test_setup_teardown(test_facts_problem_keeps_its_split, orc_test_scratch_setup, orc_test_scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
