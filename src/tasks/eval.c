/* Scoring for the task suite: pull the final answer out of a model's output,
 * normalise it (whitespace, trailing periods, thousands separators), compare
 * exactly, and tally predictions against a task file per domain and
 * difficulty, printed as JSON and as a Markdown table. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasks_internal.h"

char *orc_task_extract_answer(const char *output) {
    if (!output) return strdup("");
    const char *mark = NULL;
    for (const char *p = strstr(output, "####"); p; p = strstr(p + 4, "####")) mark = p;
    if (mark) {
        const char *s = mark + 4, *e = strchr(s, '\n');
        return strndup(s, e ? (size_t)(e - s) : strlen(s));
    }
    /* The last line with something other than whitespace on it. */
    const char *best = output, *best_end = output;
    for (const char *line = output; *line;) {
        const char *e = strchr(line, '\n');
        const char *end = e ? e : line + strlen(line);
        for (const char *c = line; c < end; c++)
            if (!isspace((unsigned char)*c)) {
                best = line;
                best_end = end;
                break;
            }
        if (!e) break;
        line = e + 1;
    }
    return strndup(best, (size_t)(best_end - best));
}

/* "-1,234,567.5" style: digits in groups of three after the first 1-3. */
static int is_grouped_number(const char *s) {
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    int lead = 0;
    while (isdigit((unsigned char)*p)) p++, lead++;
    if (lead < 1 || lead > 3 || *p != ',') return 0;
    while (*p == ',') {
        p++;
        for (int i = 0; i < 3; i++, p++)
            if (!isdigit((unsigned char)*p)) return 0;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return 0;
        while (isdigit((unsigned char)*p)) p++;
    }
    return *p == '\0';
}

char *orc_task_normalize(const char *answer) {
    if (!answer) answer = "";
    size_t n = strlen(answer);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t len = 0;
    int pending_space = 0;
    for (const char *p = answer; *p; p++) {
        if (isspace((unsigned char)*p)) {
            pending_space = len > 0;
            continue;
        }
        if (pending_space) out[len++] = ' ';
        pending_space = 0;
        out[len++] = *p;
    }
    out[len] = '\0';
    /* Sentence-final periods (and the space before them) carry no answer. */
    while (len > 0 && (out[len - 1] == '.' || out[len - 1] == ' ')) out[--len] = '\0';
    if (is_grouped_number(out)) {
        size_t j = 0;
        for (size_t i = 0; i < len; i++)
            if (out[i] != ',') out[j++] = out[i];
        out[j] = '\0';
    }
    return out;
}

int orc_task_correct(const char *answer, const char *output) {
    char *x = orc_task_extract_answer(output);
    char *a = orc_task_normalize(answer), *b = orc_task_normalize(x);
    int ok = a && b && strcmp(a, b) == 0;
    free(x);
    free(a);
    free(b);
    return ok;
}

/* ---- files --------------------------------------------------------------------------------- */

typedef struct pred {
    char *id, *output;
    int used;
} pred;

static int cmp_pred(const void *a, const void *b) { return strcmp(((const pred *)a)->id, ((const pred *)b)->id); }

static void free_preds(pred *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(p[i].id);
        free(p[i].output);
    }
    free(p);
}

/* Read one JSON object per non-blank line, calling fn on each. */
static orc_status each_object(const char *path, orc_status (*fn)(void *, json_t *, const char *, int, orc_error *),
                              void *user, orc_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return orc_error_set(err, ORC_EIO, "tasks eval: cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    orc_status st = ORC_OK;
    while (st == ORC_OK && getline(&line, &cap, fp) > 0) {
        lineno++;
        const char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p) continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!json_is_object(j)) st = orc_error_set(err, ORC_EFORMAT, "%s:%d: not a JSON object", path, lineno);
        else st = fn(user, j, path, lineno, err);
        json_decref(j);
    }
    free(line);
    fclose(fp);
    return st;
}

typedef struct pred_list {
    pred *p;
    size_t n, cap;
} pred_list;

static orc_status add_pred(void *user, json_t *j, const char *path, int lineno, orc_error *err) {
    pred_list *l = user;
    json_t *id = json_object_get(j, "id"), *out = json_object_get(j, "output");
    if (!json_is_string(id) || !json_is_string(out))
        return orc_error_set(err, ORC_EFORMAT, "%s:%d: a prediction needs string \"id\" and \"output\"", path, lineno);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        pred *np = realloc(l->p, cap * sizeof *np);
        if (!np) return orc_error_set(err, ORC_ENOMEM, "tasks eval: out of memory");
        l->p = np;
        l->cap = cap;
    }
    pred *p = &l->p[l->n];
    p->id = strdup(json_string_value(id));
    p->output = strdup(json_string_value(out));
    p->used = 0;
    if (!p->id || !p->output) {
        free(p->id);
        free(p->output);
        return orc_error_set(err, ORC_ENOMEM, "tasks eval: out of memory");
    }
    l->n++;
    return ORC_OK;
}

typedef struct scoring {
    pred_list *preds;
    orc_task_report *rep;
} scoring;

static orc_status score_task(void *user, json_t *j, const char *path, int lineno, orc_error *err) {
    scoring *s = user;
    json_t *id = json_object_get(j, "id"), *dom = json_object_get(j, "domain");
    json_t *diff = json_object_get(j, "difficulty"), *ans = json_object_get(j, "answer");
    int d = orc_task_domain_parse(json_string_value(dom));
    if (!json_is_string(id) || d < 0 || !json_is_integer(diff) || json_integer_value(diff) < 1 ||
        json_integer_value(diff) > ORC_TASK_MAX_DIFFICULTY || !json_is_string(ans))
        return orc_error_set(err, ORC_EFORMAT, "%s:%d: a task needs \"id\", a known \"domain\", \"difficulty\" 1..5 "
                                               "and \"answer\"", path, lineno);
    int k = (int)json_integer_value(diff);
    pred key = {.id = (char *)json_string_value(id)};
    pred *p = s->preds->n ? bsearch(&key, s->preds->p, s->preds->n, sizeof key, cmp_pred) : NULL;
    s->rep->total[d][k]++;
    if (!p) {
        s->rep->missing++;
        return ORC_OK;
    }
    p->used = 1;
    s->rep->correct[d][k] += orc_task_correct(json_string_value(ans), p->output);
    return ORC_OK;
}

orc_status orc_tasks_eval(const char *tasks_path, const char *pred_path, orc_task_report *rep, orc_error *err) {
    memset(rep, 0, sizeof *rep);
    pred_list l = {0};
    orc_status st = each_object(pred_path, add_pred, &l, err);
    if (st == ORC_OK && l.n) qsort(l.p, l.n, sizeof *l.p, cmp_pred);
    for (size_t i = 1; st == ORC_OK && i < l.n; i++)
        if (strcmp(l.p[i - 1].id, l.p[i].id) == 0)
            st = orc_error_set(err, ORC_EFORMAT, "%s: two predictions for id \"%s\"", pred_path, l.p[i].id);
    scoring s = {&l, rep};
    if (st == ORC_OK) st = each_object(tasks_path, score_task, &s, err);
    for (size_t i = 0; st == ORC_OK && i < l.n; i++) rep->unknown += !l.p[i].used;
    free_preds(l.p, l.n);
    return st;
}

/* ---- reports ------------------------------------------------------------------------------------ */

static double ratio(int64_t c, int64_t t) { return t ? (double)c / (double)t : 0.0; }

static json_t *score_obj(int64_t c, int64_t t) {
    return json_pack("{s:I, s:I, s:f}", "correct", (json_int_t)c, "total", (json_int_t)t, "accuracy", ratio(c, t));
}

char *orc_task_report_json(const orc_task_report *rep) {
    json_t *root = json_object(), *doms = json_object();
    int64_t c = 0, t = 0;
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++) {
        int64_t dc = 0, dt = 0;
        json_t *by = json_object();
        for (int k = 1; k <= ORC_TASK_MAX_DIFFICULTY; k++) {
            dc += rep->correct[d][k];
            dt += rep->total[d][k];
            if (rep->total[d][k]) {
                char name[8];
                snprintf(name, sizeof name, "%d", k);
                json_object_set_new(by, name, score_obj(rep->correct[d][k], rep->total[d][k]));
            }
        }
        c += dc;
        t += dt;
        if (!dt) {
            json_decref(by);
            continue;
        }
        json_t *o = score_obj(dc, dt);
        json_object_set_new(o, "by_difficulty", by);
        json_object_set_new(doms, orc_task_domain_name((orc_task_domain)d), o);
    }
    json_object_set_new(root, "overall", score_obj(c, t));
    json_object_set_new(root, "domains", doms);
    json_object_set_new(root, "missing_predictions", json_integer((json_int_t)rep->missing));
    json_object_set_new(root, "unknown_predictions", json_integer((json_int_t)rep->unknown));
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

char *orc_task_report_markdown(const orc_task_report *rep) {
    sbuf b = {0};
    sb_printf(&b, "| domain | d1 | d2 | d3 | d4 | d5 | all |\n|---|---|---|---|---|---|---|\n");
    int64_t c = 0, t = 0;
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++) {
        int64_t dc = 0, dt = 0;
        for (int k = 1; k <= ORC_TASK_MAX_DIFFICULTY; k++) dc += rep->correct[d][k], dt += rep->total[d][k];
        if (!dt) continue;
        c += dc;
        t += dt;
        sb_printf(&b, "| %s |", orc_task_domain_name((orc_task_domain)d));
        for (int k = 1; k <= ORC_TASK_MAX_DIFFICULTY; k++) {
            if (rep->total[d][k]) sb_printf(&b, " %.1f%% (%lld) |", 100.0 * ratio(rep->correct[d][k], rep->total[d][k]),
                                            (long long)rep->total[d][k]);
            else sb_printf(&b, " - |");
        }
        sb_printf(&b, " %.1f%% (%lld) |\n", 100.0 * ratio(dc, dt), (long long)dt);
    }
    sb_printf(&b, "| **all** | | | | | | %.1f%% (%lld) |\n", 100.0 * ratio(c, t), (long long)t);
    return sb_take(&b);
}
