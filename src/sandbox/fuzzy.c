/* Fuzzy matching of names and free text: the normalised token-set ratio
 * described in orchard/sandbox.h, built on an indel (LCS) similarity. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_internal.h"

/* Longer inputs are cut: the similarity is for names and short texts, and
 * the LCS costs |a|*|b|. */
#define MAX_LEN 1024

char *sb_normalise(const char *s) {
    size_t n = s ? strlen(s) : 0;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c >= 0x80) { /* keep UTF-8 bytes as letters */
            out[k++] = (char)tolower(c);
        } else if (k > 0 && out[k - 1] != ' ') {
            out[k++] = ' ';
        }
    }
    while (k > 0 && out[k - 1] == ' ') k--;
    out[k] = 0;
    return out;
}

static size_t lcs(const char *a, size_t na, const char *b, size_t nb) {
    if (na > MAX_LEN) na = MAX_LEN;
    if (nb > MAX_LEN) nb = MAX_LEN;
    size_t *prev = calloc(nb + 1, sizeof *prev), *cur = calloc(nb + 1, sizeof *cur);
    size_t best = 0;
    if (prev && cur) {
        for (size_t i = 1; i <= na; i++) {
            for (size_t j = 1; j <= nb; j++) {
                if (a[i - 1] == b[j - 1]) cur[j] = prev[j - 1] + 1;
                else cur[j] = prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
            }
            size_t *t = prev;
            prev = cur;
            cur = t;
        }
        best = prev[nb];
    }
    free(prev);
    free(cur);
    return best;
}

static double ratio(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > MAX_LEN) na = MAX_LEN;
    if (nb > MAX_LEN) nb = MAX_LEN;
    if (na + nb == 0) return 1.0;
    return 2.0 * (double)lcs(a, na, b, nb) / (double)(na + nb);
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* Split a normalised string into sorted unique tokens (pointers into s,
 * which is modified). Returns the count. */
static int tokens(char *s, char **out, int cap) {
    int n = 0;
    for (char *p = strtok(s, " "); p && n < cap; p = strtok(NULL, " ")) out[n++] = p;
    qsort(out, (size_t)n, sizeof *out, cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(out[u - 1], out[i]) != 0) out[u++] = out[i];
    return u;
}

static int contains(char **set, int n, const char *t) {
    for (int i = 0; i < n; i++)
        if (strcmp(set[i], t) == 0) return 1;
    return 0;
}

/* Append tokens to buf (space separated). */
static void join(char *buf, char **toks, int n) {
    for (int i = 0; i < n; i++) {
        if (buf[0]) strcat(buf, " ");
        strcat(buf, toks[i]);
    }
}

#define MAX_TOKENS 128

double orc_sandbox_similarity(const char *a, const char *b) {
    char *na = sb_normalise(a), *nb = sb_normalise(b);
    char *ca = na ? strdup(na) : NULL, *cb = nb ? strdup(nb) : NULL;
    size_t cap = (na ? strlen(na) : 0) + (nb ? strlen(nb) : 0) + 2;
    char *t0 = calloc(cap, 1), *t1 = calloc(cap, 1), *t2 = calloc(cap, 1);
    double best = 0.0;
    if (!na || !nb || !ca || !cb || !t0 || !t1 || !t2) goto done;
    best = ratio(na, nb);
    char *ta[MAX_TOKENS], *tb[MAX_TOKENS], *in[MAX_TOKENS], *d1[MAX_TOKENS], *d2[MAX_TOKENS];
    int n_a = tokens(ca, ta, MAX_TOKENS), n_b = tokens(cb, tb, MAX_TOKENS), n_i = 0, n_1 = 0, n_2 = 0;
    for (int i = 0; i < n_a; i++) {
        if (contains(tb, n_b, ta[i])) in[n_i++] = ta[i];
        else d1[n_1++] = ta[i];
    }
    for (int i = 0; i < n_b; i++)
        if (!contains(ta, n_a, tb[i])) d2[n_2++] = tb[i];
    if (n_i > 0 && (n_1 == 0 || n_2 == 0)) {
        best = 1.0;
        goto done;
    }
    join(t0, in, n_i);
    strcpy(t1, t0);
    join(t1, d1, n_1);
    strcpy(t2, t0);
    join(t2, d2, n_2);
    double r;
    if (n_i > 0) {
        if ((r = ratio(t0, t1)) > best) best = r;
        if ((r = ratio(t0, t2)) > best) best = r;
    }
    if ((r = ratio(t1, t2)) > best) best = r;
done:
    free(na);
    free(nb);
    free(ca);
    free(cb);
    free(t0);
    free(t1);
    free(t2);
    return best;
}

/* ---- filtering rows ------------------------------------------------------------------ */

static int values_equal(json_t *arg, json_t *col) {
    if (json_is_boolean(arg)) return json_is_number(col) && ((json_number_value(col) != 0) == json_is_true(arg));
    if (json_is_number(arg)) return json_is_number(col) && json_number_value(arg) == json_number_value(col);
    if (json_is_string(arg)) return json_is_string(col) && strcmp(json_string_value(arg), json_string_value(col)) == 0;
    return 0;
}

/* The row's score: 0 when a filter rejects it, else the lowest fuzzy score
 * (1 when no fuzzy filter applies). */
static double row_score(json_t *row, json_t *args, const sb_filter *f, int n) {
    double score = 1.0;
    for (int i = 0; i < n; i++) {
        json_t *a = json_object_get(args, f[i].arg), *c = json_object_get(row, f[i].column);
        if (!a || json_is_null(a)) continue;
        switch (f[i].kind) {
        case SB_EXACT:
            if (!values_equal(a, c)) return 0;
            break;
        case SB_FUZZY: {
            if (!json_is_string(c)) return 0;
            double s = orc_sandbox_similarity(json_string_value(a), json_string_value(c));
            if (s < ORC_SANDBOX_FUZZY_MIN) return 0;
            if (s < score) score = s;
            break;
        }
        case SB_MIN:
            if (!json_is_number(c) || json_number_value(c) < json_number_value(a)) return 0;
            break;
        case SB_MAX:
            if (!json_is_number(c) || json_number_value(c) > json_number_value(a)) return 0;
            break;
        }
    }
    return score;
}

json_t *sb_filter_rows(json_t *rows, json_t *args, const sb_filter *filters, int n_filters) {
    size_t n = json_array_size(rows), k = 0;
    double *score = malloc((n + 1) * sizeof *score);
    size_t *order = malloc((n + 1) * sizeof *order);
    json_t *out = json_array();
    if (!score || !order || !out) {
        free(score);
        free(order);
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        double s = row_score(json_array_get(rows, i), args, filters, n_filters);
        if (s <= 0) continue;
        /* Insertion keeps equal scores in row order. */
        size_t j = k++;
        while (j > 0 && score[j - 1] < s) {
            score[j] = score[j - 1];
            order[j] = order[j - 1];
            j--;
        }
        score[j] = s;
        order[j] = i;
    }
    for (size_t i = 0; i < k; i++) json_array_append(out, json_array_get(rows, order[i]));
    free(score);
    free(order);
    return out;
}
