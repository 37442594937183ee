/* Rollout files: the generator's own samples per training problem with
 * their outcome labels, as JSON lines, read back with every id checked
 * against the vocabulary and every step end against its sample, so a file
 * made with another tokenizer (or cut short) is an error naming its line. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/fileio.h"
#include "orchard/tsmc.h"

static void problem_free(orc_rollout_problem *p) {
    for (int k = 0; p->samples && k < p->n_samples; k++) {
        free(p->samples[k].ids);
        free(p->samples[k].logp);
        free(p->samples[k].step_end);
        free(p->samples[k].answer);
    }
    free(p->samples);
    free(p->id);
    free(p->question);
    free(p->gold);
    free(p->prompt);
}

void orc_rollout_set_free(orc_rollout_set *s) {
    if (!s) return;
    for (int i = 0; s->problems && i < s->n_problems; i++) problem_free(&s->problems[i]);
    free(s->problems);
    memset(s, 0, sizeof *s);
}

static json_t *int_array(const int32_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *int_array_i(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Token log-probabilities to 1e-4 nats: enough for the confidence input, and the
 * file stays a few characters per token. */
static json_t *logp_array(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_real(round((double)v[i] * 1e4) / 1e4));
    return a;
}

orc_status orc_rollouts_save(const orc_rollout_set *s, const char *path, orc_error *err) {
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    orc_status st = buf ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    for (int i = 0; st == ORC_OK && i < s->n_problems; i++) {
        const orc_rollout_problem *p = &s->problems[i];
        json_t *samples = json_array();
        for (int k = 0; samples && k < p->n_samples; k++) {
            const orc_rollout_sample *x = &p->samples[k];
            json_t *o = json_pack("{s:o, s:o, s:s?, s:b}", "ids", int_array(x->ids, x->n_ids), "step_end",
                                  int_array_i(x->step_end, x->n_steps), "answer", x->answer, "correct", x->correct);
            if (o && x->logp) json_object_set_new(o, "logp", logp_array(x->logp, x->n_ids));
            json_array_append_new(samples, o);
        }
        json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "id", p->id, "question", p->question, "gold", p->gold,
                              "prompt", int_array(p->prompt, p->n_prompt), "samples", samples);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!line) {
            st = orc_error_set(err, ORC_ENOMEM, "%s: cannot encode problem %d", path, i);
            break;
        }
        size_t n = strlen(line);
        if (len + n + 2 > cap) {
            while (len + n + 2 > cap) cap *= 2;
            char *b = realloc(buf, cap);
            if (!b) {
                free(line);
                st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = b;
        }
        memcpy(buf + len, line, n);
        len += n;
        buf[len++] = '\n';
        free(line);
    }
    if (st == ORC_OK) st = orc_write_file_atomic(path, buf, len, "rollouts", err);
    free(buf);
    return st;
}

static orc_status read_logp(json_t *a, int n_ids, float **out, const char *path, size_t line, size_t k,
                            orc_error *err) {
    if (!a) return ORC_OK; /* optional: files from before they were recorded */
    if (!json_is_array(a) || (int)json_array_size(a) != n_ids)
        return orc_error_set(err, ORC_EFORMAT, "%s:%zu: sample %zu: logp must be an array of one number per id (%d)",
                             path, line, k, n_ids);
    *out = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof **out);
    if (!*out) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_ids; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        const double lp = json_is_number(x) ? json_number_value(x) : NAN;
        if (!(lp <= 1e-3 && lp > -1e30)) /* a log-probability: finite, at most 0 (rounding aside) */
            return orc_error_set(err, ORC_EFORMAT, "%s:%zu: sample %zu: logp[%d] is not a log-probability", path, line,
                                 k, i);
        (*out)[i] = (float)(lp < 0 ? lp : 0);
    }
    return ORC_OK;
}

static orc_status read_ids(json_t *a, int64_t vocab, int32_t **out, int *n, const char *path, size_t line,
                           const char *what, orc_error *err) {
    if (!json_is_array(a)) return orc_error_set(err, ORC_EFORMAT, "%s:%zu: %s is not an array", path, line, what);
    *n = (int)json_array_size(a);
    *out = malloc((size_t)(*n > 0 ? *n : 1) * sizeof **out);
    if (!*out) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= vocab)
            return orc_error_set(err, ORC_EFORMAT,
                                 "%s:%zu: %s[%d] is not a token id below %lld (a file for another tokenizer?)", path,
                                 line, what, i, (long long)vocab);
        (*out)[i] = (int32_t)json_integer_value(v);
    }
    return ORC_OK;
}

static orc_status read_problem(json_t *o, int64_t vocab, orc_rollout_problem *p, const char *path, size_t line,
                               orc_error *err) {
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *q = json_string_value(json_object_get(o, "question"));
    const char *gold = json_string_value(json_object_get(o, "gold"));
    json_t *samples = json_object_get(o, "samples");
    if (!id || !q || !gold || !json_is_array(samples))
        return orc_error_set(err, ORC_EFORMAT, "%s:%zu: a rollout needs string id, question, gold and a samples array",
                             path, line);
    p->id = strdup(id);
    p->question = strdup(q);
    p->gold = strdup(gold);
    if (!p->id || !p->question || !p->gold) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    orc_status st = read_ids(json_object_get(o, "prompt"), vocab, &p->prompt, &p->n_prompt, path, line, "prompt", err);
    if (st != ORC_OK) return st;
    if (p->n_prompt < 1) return orc_error_set(err, ORC_EFORMAT, "%s:%zu: empty prompt", path, line);
    p->samples = calloc(json_array_size(samples) + 1, sizeof *p->samples);
    if (!p->samples) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
    size_t k;
    json_t *x;
    json_array_foreach(samples, k, x) {
        orc_rollout_sample *s = &p->samples[k];
        p->n_samples = (int)k + 1;
        if ((st = read_ids(json_object_get(x, "ids"), vocab, &s->ids, &s->n_ids, path, line, "ids", err)) != ORC_OK)
            return st;
        if ((st = read_logp(json_object_get(x, "logp"), s->n_ids, &s->logp, path, line, k, err)) != ORC_OK) return st;
        int32_t *ends = NULL;
        st = read_ids(json_object_get(x, "step_end"), s->n_ids > 0 ? s->n_ids : 1, &ends, &s->n_steps, path, line,
                      "step_end", err);
        s->step_end = (int *)ends; /* int32_t and int are the same width here */
        if (st != ORC_OK) return st;
        for (int t = 1; t < s->n_steps; t++)
            if (s->step_end[t] <= s->step_end[t - 1])
                return orc_error_set(err, ORC_EFORMAT, "%s:%zu: sample %zu: step ends are not increasing", path, line, k);
        const char *a = json_string_value(json_object_get(x, "answer"));
        if (a && !(s->answer = strdup(a))) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
        s->correct = json_is_true(json_object_get(x, "correct"));
    }
    return ORC_OK;
}

orc_status orc_rollouts_parse(const char *buf, size_t len, const char *path, int64_t vocab, orc_rollout_set *s,
                              orc_error *err) {
    memset(s, 0, sizeof *s);
    size_t line_no = 0, alloc = 0;
    orc_status st = ORC_OK;
    for (size_t at = 0; st == ORC_OK && at < len;) {
        const char *nl = memchr(buf + at, '\n', len - at);
        const size_t end = nl ? (size_t)(nl - buf) : len, n = end - at;
        const char *line = buf + at;
        at = end + 1;
        line_no++;
        if (n == 0 || (n == 1 && line[0] == '\r')) continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, n, 0, &jerr);
        if (!o) {
            st = orc_error_set(err, ORC_EFORMAT, "%s:%zu: bad JSON: %s", path, line_no, jerr.text);
            break;
        }
        if ((size_t)s->n_problems == alloc) {
            alloc = alloc ? 2 * alloc : 64;
            orc_rollout_problem *p = realloc(s->problems, alloc * sizeof *p);
            if (!p) {
                json_decref(o);
                st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", path);
                break;
            }
            s->problems = p;
        }
        orc_rollout_problem *p = &s->problems[s->n_problems++];
        memset(p, 0, sizeof *p);
        st = read_problem(o, vocab, p, path, line_no, err);
        json_decref(o);
    }
    if (st == ORC_OK && s->n_problems == 0) st = orc_error_set(err, ORC_EFORMAT, "%s: no rollouts in the file", path);
    if (st != ORC_OK) orc_rollout_set_free(s);
    return st;
}

orc_status orc_rollouts_load(const char *path, int64_t vocab, orc_rollout_set *s, orc_error *err) {
    memset(s, 0, sizeof *s);
    orc_mapped_file f;
    if (orc_file_map(path, "rollouts file", &f, err) != ORC_OK) return err->code ? err->code : ORC_EIO;
    orc_status st = orc_rollouts_parse(f.data, f.len, path, vocab, s, err);
    orc_file_unmap(&f);
    return st;
}
