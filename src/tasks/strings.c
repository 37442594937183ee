/* The strings domain: reverse, sort letters or words, count a letter, change
 * case, and find-and-replace a word, on texts built from a fixed word list.
 * Difficulty sets the length: d words for the word tasks (d + 1 for sorting
 * and replacing), words of about 3 + 2d letters for the letter tasks. Texts
 * never hold periods or repeated spaces, so normalisation leaves answers intact. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasks_internal.h"

static const char *const WORDS[] = {
    "apple", "river", "stone", "cloud", "garden", "orange", "silver", "window", "planet", "forest",
    "candle", "bridge", "tiger", "violin", "harbor", "meadow", "rocket", "pepper", "lantern", "marble",
    "coffee", "island", "jacket", "kettle", "lemon", "mirror", "needle", "oyster", "pillow", "quartz",
};
#define N_WORDS ((uint32_t)(sizeof WORDS / sizeof WORDS[0]))
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const T_REVERSE[] = {
    "Reverse the text character by character.", "Write the text backwards.",
    "Give the characters of the text in reverse order.",
    "Spell the following text from the last character to the first."};
static const char *const T_SORT_LETTERS[] = {
    "Sort the letters of the word alphabetically.", "Rearrange the letters in alphabetical order.",
    "Write the letters of the word sorted from a to z.", "Put the characters of this word into alphabetical order."};
static const char *const T_SORT_WORDS[] = {
    "Sort the words alphabetically and write them separated by single spaces.",
    "Put these words in alphabetical order, separated by spaces.",
    "List the words from a to z, separated by spaces.",
    "Arrange the following words in dictionary order, one space between words."};
static const char *const T_COUNT[] = {
    "How many times does the letter {} appear in the text? Answer with a number.",
    "Count the occurrences of the letter {} in the text.",
    "Give the number of times {} occurs in the following text.",
    "In the text below, how often does the letter {} occur?"};
static const char *const T_UPPER[] = {
    "Convert the text to upper case.", "Rewrite the text in capital letters.", "Write the text in all caps.",
    "Change every letter of the text to uppercase."};
static const char *const T_LOWER[] = {
    "Convert the text to lower case.", "Rewrite the text using only small letters.",
    "Write the text in all lowercase.", "Change every letter of the text to lowercase."};
static const char *const T_TITLE[] = {
    "Capitalise the first letter of every word and make the other letters lower case.",
    "Convert the text to title case.", "Write each word with an initial capital and the rest in lower case.",
    "Rewrite the text so that every word starts with a capital letter and continues in lowercase."};
static const char *const T_REPLACE[] = {
    "Replace every occurrence of the word {} in the text.", "In the text, replace {}.",
    "Do a find and replace on the text: {}.", "Rewrite the text after substituting {} everywhere."};

/* d random words from the list, separated by single spaces. */
static void random_words(task_rng *r, sbuf *b, int n) {
    for (int i = 0; i < n; i++) sb_printf(b, "%s%s", i ? " " : "", WORDS[trng_below(r, N_WORDS)]);
}

static int cmp_char(const void *a, const void *b) { return *(const char *)a - *(const char *)b; }
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void gen_reverse(task_rng *r, task_draft *d) {
    random_words(r, &d->input, d->difficulty);
    for (size_t i = d->input.len; i-- > 0;) sb_putc(&d->answer, d->input.s[i]);
}

static void gen_sort_letters(task_rng *r, task_draft *d) {
    int len = 3 + 2 * d->difficulty;
    for (int i = 0; i < len; i++) sb_putc(&d->input, (char)('a' + trng_below(r, 26)));
    if (d->input.failed) return;
    char *s = strdup(d->input.s);
    if (!s) {
        d->answer.failed = 1;
        return;
    }
    qsort(s, strlen(s), 1, cmp_char);
    sb_printf(&d->answer, "%s", s);
    free(s);
}

static void gen_sort_words(task_rng *r, task_draft *d) {
    const char *w[ORC_TASK_MAX_DIFFICULTY + 1];
    int n = d->difficulty + 1;
    for (int i = 0; i < n; i++) {
        w[i] = WORDS[trng_below(r, N_WORDS)];
        sb_printf(&d->input, "%s%s", i ? " " : "", w[i]);
    }
    qsort(w, (size_t)n, sizeof w[0], cmp_str);
    for (int i = 0; i < n; i++) sb_printf(&d->answer, "%s%s", i ? " " : "", w[i]);
}

static void gen_count(task_rng *r, task_draft *d) {
    random_words(r, &d->input, d->difficulty);
    if (d->input.failed) return;
    /* Ask about a letter of the text most of the time, sometimes one that is absent. */
    char c = trng_below(r, 4) ? d->input.s[trng_below(r, (uint32_t)d->input.len)] : (char)('a' + trng_below(r, 26));
    if (c == ' ') c = d->input.s[0];
    int n = 0;
    for (size_t i = 0; i < d->input.len; i++) n += d->input.s[i] == c;
    snprintf(d->slot, sizeof d->slot, "'%c'", c);
    sb_printf(&d->answer, "%d", n);
}

static void gen_case(task_rng *r, task_draft *d, int mode) {
    random_words(r, &d->input, d->difficulty);
    if (d->input.failed) return;
    if (mode != 0) /* lower and title start from randomly mixed case */
        for (size_t i = 0; i < d->input.len; i++)
            if (trng_below(r, 2)) d->input.s[i] = (char)toupper((unsigned char)d->input.s[i]);
    for (size_t i = 0; i < d->input.len; i++) {
        unsigned char c = (unsigned char)d->input.s[i];
        int start = i == 0 || d->input.s[i - 1] == ' ';
        int up = mode == 0 || (mode == 2 && start);
        char out = up ? (char)toupper(c) : (char)tolower(c);
        sb_putc(&d->answer, out);
    }
}

static void gen_replace(task_rng *r, task_draft *d) {
    int n = d->difficulty + 1;
    const char *from = WORDS[trng_below(r, N_WORDS)], *to = WORDS[trng_below(r, N_WORDS)];
    while (to == from) to = WORDS[trng_below(r, N_WORDS)];
    int forced = (int)trng_below(r, (uint32_t)n); /* the word occurs at least once */
    for (int i = 0; i < n; i++) {
        const char *w = i == forced || trng_below(r, 4) == 0 ? from : WORDS[trng_below(r, N_WORDS)];
        sb_printf(&d->input, "%s%s", i ? " " : "", w);
        sb_printf(&d->answer, "%s%s", i ? " " : "", strcmp(w, from) == 0 ? to : w);
    }
    snprintf(d->slot, sizeof d->slot, "'%s' with '%s'", from, to);
}

orc_status task_gen_strings(task_rng *r, task_draft *d, orc_error *err) {
    (void)err;
    static const char *const KINDS[] = {"reverse", "sort_letters", "sort_words", "count", "upper", "lower",
                                        "title", "replace"};
    int k = (int)trng_below(r, 8);
    snprintf(d->kind, sizeof d->kind, "%s", KINDS[k]);
    switch (k) {
    case 0: gen_reverse(r, d); d->templates = T_REVERSE; d->n_templates = N_OF(T_REVERSE); break;
    case 1: gen_sort_letters(r, d); d->templates = T_SORT_LETTERS; d->n_templates = N_OF(T_SORT_LETTERS); break;
    case 2: gen_sort_words(r, d); d->templates = T_SORT_WORDS; d->n_templates = N_OF(T_SORT_WORDS); break;
    case 3: gen_count(r, d); d->templates = T_COUNT; d->n_templates = N_OF(T_COUNT); break;
    case 4: gen_case(r, d, 0); d->templates = T_UPPER; d->n_templates = N_OF(T_UPPER); break;
    case 5: gen_case(r, d, 1); d->templates = T_LOWER; d->n_templates = N_OF(T_LOWER); break;
    case 6: gen_case(r, d, 2); d->templates = T_TITLE; d->n_templates = N_OF(T_TITLE); break;
    default: gen_replace(r, d); d->templates = T_REPLACE; d->n_templates = N_OF(T_REPLACE); break;
    }
    sb_printf(&d->solution, "#### %s", d->answer.s ? d->answer.s : "");
    sb_printf(&d->key, "strings|%s|%s|%s", d->kind, d->slot, d->input.s ? d->input.s : "");
    return ORC_OK;
}
