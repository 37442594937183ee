/* Milestone and minefield evaluation of a played conversation. For every
 * constraint and message index the similarity in [0, 1] of the state at that
 * index (a table's snapshot, the rows added, removed or updated at it, the log
 * row or the tool trace it carries, or a guardrail's untouched table) is the
 * best row's mean column similarity (exact, ROUGE-L, contains, numeric within
 * a tolerance, tool arguments within a tolerance). Milestones are then
 * assigned to strictly increasing message indices in a topological order of
 * their DAG, the best assignment found by trying every order (capped) with a
 * dynamic programme over indices; the score is the mean similarity, or 0 when
 * any minefield reaches its threshold. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "play_internal.h"
#include "sandbox_internal.h"

#define MAX_ORDERS 20000

/* ---- similarity functions ----------------------------------------------------------- */

/* Lower-cased alphanumeric tokens of s (a malloc'd array of malloc'd words). */
static char **tokens(const char *s, int *n) {
    int cap = 8;
    char **t = malloc((size_t)cap * sizeof *t);
    *n = 0;
    while (s && *s && t) {
        while (*s && !isalnum((unsigned char)*s)) s++;
        const char *b = s;
        while (*s && isalnum((unsigned char)*s)) s++;
        if (s == b) break;
        if (*n == cap) {
            char **q = realloc(t, (size_t)(cap *= 2) * sizeof *t);
            if (!q) break;
            t = q;
        }
        char *w = strndup(b, (size_t)(s - b));
        for (char *c = w; c && *c; c++) *c = (char)tolower((unsigned char)*c);
        if (w) t[(*n)++] = w;
    }
    return t;
}

static void free_tokens(char **t, int n) {
    for (int i = 0; i < n; i++) free(t[i]);
    free(t);
}

double orc_sb_rouge_l(const char *ref, const char *hyp) {
    int na, nb;
    char **a = tokens(ref, &na), **b = tokens(hyp, &nb);
    double f = 0;
    if (na == 0 || nb == 0) {
        f = na == nb;
    } else {
        int *row = calloc((size_t)nb + 1, sizeof(int)), *prev = calloc((size_t)nb + 1, sizeof(int));
        for (int i = 1; row && prev && i <= na; i++) {
            for (int j = 1; j <= nb; j++)
                row[j] = strcmp(a[i - 1], b[j - 1]) == 0 ? prev[j - 1] + 1 : (row[j - 1] > prev[j] ? row[j - 1] : prev[j]);
            int *t = prev;
            prev = row;
            row = t;
        }
        double lcs = prev ? prev[nb] : 0, p = lcs / nb, r = lcs / na;
        f = lcs > 0 ? 2 * p * r / (p + r) : 0;
        free(row);
        free(prev);
    }
    free_tokens(a, na);
    free_tokens(b, nb);
    return f;
}

/* A number from a JSON number or boolean; 0 when it is neither. */
static int as_number(json_t *v, double *x) {
    if (json_is_number(v)) *x = json_number_value(v);
    else if (json_is_boolean(v)) *x = json_is_true(v);
    else return 0;
    return 1;
}

static int same_text(const char *a, const char *b) {
    char *x = sb_normalise(a), *y = sb_normalise(b);
    int same = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

/* Expected argument object vs the actual one: mean over the expected keys of
 * numbers within tol, strings equal after normalising, anything else equal. */
static double args_similarity(json_t *want, json_t *got, double tol) {
    json_t *parsed = NULL;
    if (json_is_string(got)) got = parsed = json_loads(json_string_value(got), 0, NULL);
    double sum = 0;
    size_t n = json_object_size(want);
    const char *k;
    json_t *w;
    json_object_foreach(want, k, w) {
        json_t *g = json_object_get(got, k);
        double x, y;
        if (as_number(w, &x) && as_number(g, &y)) sum += fabs(x - y) <= tol;
        else if (json_is_string(w) && json_is_string(g)) sum += same_text(json_string_value(w), json_string_value(g));
        else sum += g && json_equal(w, g);
    }
    double s = n ? sum / (double)n : json_object_size(got) == 0;
    json_decref(parsed);
    return s;
}

static double column_similarity(json_t *spec, json_t *got) {
    json_t *want = json_object_get(spec, "value");
    const char *how = json_string_value(json_object_get(spec, "similarity"));
    json_t *tol_v = json_object_get(spec, "tolerance");
    double tol = tol_v ? json_number_value(tol_v) : 1e-6, x, y;
    if (!how) how = "exact";
    if (!got) return 0;
    if (strcmp(how, "tool_args") == 0) return args_similarity(want, got, tol);
    if (strcmp(how, "rouge_l") == 0)
        return json_is_string(want) && json_is_string(got) ? orc_sb_rouge_l(json_string_value(want), json_string_value(got))
                                                           : 0;
    if (strcmp(how, "contains") == 0)
        return json_is_string(want) && json_is_string(got) &&
               strcasestr(json_string_value(got), json_string_value(want)) != NULL;
    if (strcmp(how, "numeric") == 0) return as_number(want, &x) && as_number(got, &y) && fabs(x - y) <= tol;
    if (as_number(want, &x) && as_number(got, &y)) return x == y;
    return json_equal(want, got);
}

/* Mean column similarity of one row (or trace entry). */
static double row_similarity(json_t *columns, json_t *row) {
    size_t n = json_object_size(columns);
    if (n == 0) return 1;
    double sum = 0;
    const char *k;
    json_t *spec;
    json_object_foreach(columns, k, spec) sum += column_similarity(spec, json_object_get(row, k));
    return sum / (double)n;
}

static double best_row(json_t *columns, json_t *rows) {
    double best = 0;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        double s = row_similarity(columns, r);
        if (s > best) best = s;
    }
    return best;
}

/* ---- per-index similarity of a constraint ----------------------------------------------- */

static const char *id_column(const char *table) {
    if (strcmp(table, "contacts") == 0) return "person_id";
    if (strcmp(table, "messages") == 0) return "message_id";
    if (strcmp(table, "reminders") == 0) return "reminder_id";
    return NULL; /* settings: one row, matched by position */
}

static json_t *find_row(json_t *rows, const char *idcol, json_t *row, size_t pos) {
    if (!idcol) return json_array_get(rows, pos);
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) if (json_equal(json_object_get(r, idcol), json_object_get(row, idcol))) return r;
    return NULL;
}

/* The rows added (kind addition), removed or updated between two snapshots. */
static json_t *difference(const char *kind, const char *table, json_t *prev, json_t *now) {
    const char *idcol = id_column(table);
    json_t *out = json_array();
    size_t i;
    json_t *r;
    if (strcmp(kind, "removal") == 0) {
        json_array_foreach(prev, i, r) if (!find_row(now, idcol, r, i)) json_array_append(out, r);
        return out;
    }
    json_array_foreach(now, i, r) {
        json_t *before = find_row(prev, idcol, r, i);
        if (strcmp(kind, "addition") == 0 ? !before : before && !json_equal(before, r)) json_array_append(out, r);
    }
    return out;
}

/* A world table as it stood at each message index, read once per index and
 * table however many constraints ask (borrowed by the callers). */
typedef struct reads {
    orc_sandbox *sb;
    int64_t n;
    json_t **rows[4]; /* settings, contacts, messages, reminders: n entries each, NULL until read */
} reads;

static const char *const WORLD[4] = {"settings", "contacts", "messages", "reminders"};

static orc_status read_at(reads *r, const char *table, int64_t i, json_t **out, orc_error *err) {
    int t = 0;
    while (t < 4 && strcmp(WORLD[t], table) != 0) t++;
    if (t == 4 || i < 0 || i >= r->n)
        return orc_error_set(err, ORC_EINVAL, "sandbox evaluate: no world table '%s' at message %lld", table,
                             (long long)i);
    if (!r->rows[t] && !(r->rows[t] = calloc((size_t)r->n, sizeof(json_t *))))
        return orc_error_set(err, ORC_ENOMEM, "sandbox evaluate: out of memory");
    if (!r->rows[t][i]) {
        orc_status s = orc_sandbox_read(r->sb, table, i, &r->rows[t][i], err);
        if (s != ORC_OK) return s;
    }
    *out = r->rows[t][i];
    return ORC_OK;
}

static void reads_free(reads *r) {
    for (int t = 0; t < 4; t++) {
        for (int64_t i = 0; r->rows[t] && i < r->n; i++) json_decref(r->rows[t][i]);
        free(r->rows[t]);
    }
}

static orc_status similarity_at(reads *rd, const sb_milestone *m, json_t *log, int64_t i, double *sim,
                                orc_error *err) {
    *sim = 0;
    json_t *row = json_array_get(log, (size_t)i);
    if (strcmp(m->kind, "tool_trace") == 0) {
        json_t *trace = json_loads(json_string_value(json_object_get(row, "tool_trace")), 0, NULL);
        size_t k;
        json_t *e;
        json_array_foreach(trace, k, e) if (!json_object_get(e, "exception")) {
            double s = row_similarity(m->columns, e);
            if (s > *sim) *sim = s;
        }
        json_decref(trace);
        return ORC_OK;
    }
    if (strcmp(m->table, "log") == 0) {
        *sim = row_similarity(m->columns, row);
        return ORC_OK;
    }
    json_t *now = NULL, *before = NULL;
    orc_status s = read_at(rd, m->table, i, &now, err);
    if (s == ORC_OK && strcmp(m->kind, "snapshot") != 0) s = read_at(rd, m->table, i > 0 ? i - 1 : 0, &before, err);
    if (s == ORC_OK) {
        if (strcmp(m->kind, "snapshot") == 0) {
            *sim = best_row(m->columns, now);
        } else if (strcmp(m->kind, "guardrail") == 0) {
            json_t *start = NULL;
            s = read_at(rd, m->table, 0, &start, err);
            *sim = s == ORC_OK && json_equal(start, now);
        } else if (i > 0) {
            json_t *diff = difference(m->kind, m->table, before, now);
            *sim = best_row(m->columns, diff);
            json_decref(diff);
        }
    }
    return s;
}

/* sims[c * n + i]: constraint c at index i. A guardrail holds at an index
 * only when the table is untouched at every index, so it takes the minimum. */
static orc_status similarity_table(reads *rd, const sb_milestone *ms, int k, json_t *log, double **out,
                                   orc_error *err) {
    int64_t n = (int64_t)json_array_size(log);
    double *sims = calloc((size_t)(k * n) + 1, sizeof *sims);
    if (!sims) return orc_error_set(err, ORC_ENOMEM, "sandbox evaluate: out of memory");
    for (int c = 0; c < k; c++) {
        double lowest = 1;
        for (int64_t i = 0; i < n; i++) {
            orc_status s = similarity_at(rd, &ms[c], log, i, &sims[c * n + i], err);
            if (s != ORC_OK) {
                free(sims);
                return s;
            }
            if (sims[c * n + i] < lowest) lowest = sims[c * n + i];
        }
        if (strcmp(ms[c].kind, "guardrail") == 0)
            for (int64_t i = 0; i < n; i++) sims[c * n + i] = lowest;
    }
    *out = sims;
    return ORC_OK;
}

/* ---- assignment ---------------------------------------------------------------------- */

typedef struct search {
    const orc_sb_scenario *sc;
    const double *sims;
    int k, n, orders;
    int *order, *placed, *index, *best_index;
    double *f; /* (k + 1) x (n + 1) */
    double best;
} search;

/* The best total for one order: f[j][i] uses the first j milestones of the
 * order and indices < i; a milestone may stay unassigned (adds 0). */
static void score_order(search *s) {
    int k = s->k, n = s->n, w = n + 1;
    double *f = s->f;
    for (int i = 0; i <= n; i++) f[i] = 0;
    for (int j = 1; j <= k; j++) {
        const double *sim = s->sims + (size_t)s->order[j - 1] * (size_t)n;
        f[j * w] = f[(j - 1) * w];
        for (int i = 1; i <= n; i++) {
            double v = f[j * w + i - 1];
            if (f[(j - 1) * w + i] > v) v = f[(j - 1) * w + i];
            if (f[(j - 1) * w + i - 1] + sim[i - 1] > v) v = f[(j - 1) * w + i - 1] + sim[i - 1];
            f[j * w + i] = v;
        }
    }
    if (f[k * w + n] <= s->best + 1e-12 && s->best >= 0) return;
    s->best = f[k * w + n];
    for (int j = k, i = n; j > 0;) {
        int m = s->order[j - 1];
        if (i > 0 && f[j * w + i] == f[j * w + i - 1]) {
            i--;
        } else if (f[j * w + i] == f[(j - 1) * w + i]) {
            s->best_index[m] = -1;
            j--;
        } else {
            s->best_index[m] = i - 1;
            j--, i--;
        }
    }
}

/* Every topological order of the DAG (up to MAX_ORDERS). */
static void enumerate(search *s, int depth) {
    if (s->orders >= MAX_ORDERS) return;
    if (depth == s->k) {
        s->orders++;
        score_order(s);
        return;
    }
    for (int m = 0; m < s->k; m++) {
        if (s->placed[m]) continue;
        int ready = 1;
        for (int a = 0; a < s->sc->milestones[m].n_after; a++) ready &= s->placed[s->sc->milestones[m].after[a]];
        if (!ready) continue;
        s->placed[m] = 1;
        s->order[depth] = m;
        enumerate(s, depth + 1);
        s->placed[m] = 0;
    }
}

static json_t *constraint_report(const sb_milestone *ms, int k, const double *sims, int n, const int *index,
                                 int minefield, int *hit) {
    json_t *out = json_array();
    for (int c = 0; c < k; c++) {
        int at = -1;
        double best = 0;
        if (index) {
            at = index[c];
            best = at >= 0 ? sims[c * n + at] : 0;
        } else {
            for (int i = 0; i < n; i++)
                if (sims[c * n + i] > best) best = sims[c * n + i], at = i;
        }
        json_t *e = json_pack("{s:s, s:f, s:i}", "id", ms[c].id, "similarity", best, "index", at);
        if (minefield) {
            int matched = best >= ms[c].threshold - 1e-12;
            *hit |= matched;
            json_object_set_new(e, "matched", json_boolean(matched));
        }
        json_array_append_new(out, e);
    }
    return out;
}

orc_status orc_sb_evaluate(orc_sandbox *sb, const orc_sb_scenario *sc, json_t **out, orc_error *err) {
    *out = NULL;
    json_t *log = NULL;
    orc_status st = orc_sandbox_read(sb, "log", -1, &log, err);
    if (st != ORC_OK) return st;
    int n = (int)json_array_size(log), k = sc->n_milestones;
    double *ms_sims = NULL, *mf_sims = NULL;
    reads rd = {.sb = sb, .n = n};
    st = similarity_table(&rd, sc->milestones, k, log, &ms_sims, err);
    if (st == ORC_OK) st = similarity_table(&rd, sc->minefields, sc->n_minefields, log, &mf_sims, err);
    reads_free(&rd);
    json_decref(log);
    search s = {.sc = sc, .sims = ms_sims, .k = k, .n = n, .best = -1};
    s.order = calloc((size_t)k + 1, sizeof(int));
    s.placed = calloc((size_t)k + 1, sizeof(int));
    s.best_index = calloc((size_t)k + 1, sizeof(int));
    s.f = calloc((size_t)(k + 1) * (size_t)(n + 1), sizeof(double));
    if (st == ORC_OK && (!s.order || !s.placed || !s.best_index || !s.f))
        st = orc_error_set(err, ORC_ENOMEM, "sandbox evaluate: out of memory");
    if (st == ORC_OK) {
        for (int m = 0; m < k; m++) s.best_index[m] = -1;
        enumerate(&s, 0);
        int hit = 0;
        json_t *milestones = constraint_report(sc->milestones, k, ms_sims, n, s.best_index, 0, &hit);
        json_t *minefields = constraint_report(sc->minefields, sc->n_minefields, mf_sims, n, NULL, 1, &hit);
        double score = k ? s.best / k : 1.0;
        if (hit) score = 0;
        *out = json_pack("{s:f, s:o, s:o, s:b}", "score", score, "milestones", milestones, "minefields", minefields,
                         "minefield_hit", hit);
    }
    free(s.order);
    free(s.placed);
    free(s.best_index);
    free(s.f);
    free(ms_sims);
    free(mf_sims);
    return st;
}
