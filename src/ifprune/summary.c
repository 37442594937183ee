/* The multi-seed summary of IFPruning studies (orc_ifp_study_summary):
 * at this scale one study's comparison is decided as much by which model
 * happens to learn a procedure in its run as by the method, so the issue's
 * target is judged on the mean over several seeds. This file reads the
 * results.json of finished studies, checks that they differ in nothing but
 * the seed, and reports each study's row, the means, the mean gain's 95%
 * interval over seeds (Student's t) and the target on the means. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/ifprune.h"

/* Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom;
 * beyond that the normal 1.96 is within 4%. */
static double t975(int df) {
    static const double q[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    return df < 1 ? NAN : df <= 30 ? q[df - 1] : 1.96;
}

/* Settings that may differ between the studies of one summary. */
static bool per_run_setting(const char *key) {
    return !strcmp(key, "seed") || !strcmp(key, "speed_rounds") || !strcmp(key, "speed_tokens");
}

/* Adds model a's per-domain accuracies (m->domains) into s->domain_mean;
 * the first study (i == 0) fixes the domains, later ones must match. */
static orc_status add_domains(const char *path, json_t *m, int a, int i, orc_ifp_summary *s, orc_error *err) {
    json_t *doms = json_object_get(m, "domains"), *d;
    const char *key;
    if (!json_is_object(doms)) return orc_error_set(err, ORC_EFORMAT, "%s: models[%d] has no domains", path, a);
    int n = 0;
    json_object_foreach(doms, key, d) {
        json_t *acc = json_object_get(d, "accuracy");
        if (n >= ORC_IFP_SUMMARY_MAX_DOMAINS || !json_is_number(acc))
            return orc_error_set(err, ORC_EFORMAT, "%s: domain \"%s\" of models[%d] has no accuracy (or more than %d "
                                 "domains)", path, key, a, ORC_IFP_SUMMARY_MAX_DOMAINS);
        if (i == 0 && a == 0) snprintf(s->domain[n], sizeof s->domain[n], "%s", key);
        else if (n >= s->n_domains || strcmp(s->domain[n], key))
            return orc_error_set(err, ORC_EINVAL, "%s: its domains differ from the first study's (\"%s\")", path, key);
        s->domain_mean[n++][a] += json_number_value(acc);
    }
    if (i == 0 && a == 0) s->n_domains = n;
    else if (n != s->n_domains)
        return orc_error_set(err, ORC_EINVAL, "%s: %d domains, the first study has %d", path, n, s->n_domains);
    return ORC_OK;
}

/* Study i of s from DIR/results.json: its three accuracies, speed ratio,
 * seed and per-domain accuracies, and (a new reference in *settings) its
 * settings object. */
static orc_status read_row(const char *dir, json_t **settings, orc_ifp_summary *s, int i, orc_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return orc_error_set(err, ORC_EIO, "%s: cannot read a finished study's results: %s", path, je.text);
    static const char *names[3] = {"dense-full", "dense-small", "ifprune"};
    json_t *models = json_object_get(j, "models"), *set = json_object_get(j, "settings");
    orc_status st = ORC_OK;
    for (int a = 0; a < 3 && st == ORC_OK; a++) {
        json_t *m = json_array_get(models, (size_t)a);
        const char *name = json_string_value(json_object_get(m, "model"));
        json_t *acc = json_object_get(m, "mean_accuracy");
        if (!name || strcmp(name, names[a]) || !json_is_number(acc))
            st = orc_error_set(err, ORC_EFORMAT, "%s: models[%d] should be %s with a mean_accuracy", path, a, names[a]);
        else {
            s->acc[i][a] = json_number_value(acc);
            st = add_domains(path, m, a, i, s, err);
        }
    }
    json_t *speed = json_object_get(j, "decode_speed_vs_dense_small"), *seed = json_object_get(set, "seed");
    if (st == ORC_OK && (!json_is_number(speed) || !json_is_integer(seed)))
        st = orc_error_set(err, ORC_EFORMAT, "%s: decode_speed_vs_dense_small or settings.seed is missing", path);
    if (st == ORC_OK) {
        s->speed[i] = json_number_value(speed);
        s->seed[i] = (long long)json_integer_value(seed);
        *settings = json_incref(set);
    }
    json_decref(j);
    return st;
}

/* Settings added to the study later are 0 when off, and a results.json
 * written before them lacks the key: a missing key equals 0 (or 0.0). */
static bool same_setting(json_t *x, json_t *y) {
    if (!x) return json_is_number(y) && json_number_value(y) == 0;
    if (!y) return json_is_number(x) && json_number_value(x) == 0;
    return json_equal(x, y);
}

/* The settings (other than the seed and the speed rounds) in which a and b
 * differ, at most cap of them into keys (owned by a and b); returns how
 * many there are in all. */
static int differing_settings(json_t *a, json_t *b, const char **keys, int cap) {
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(a, key, v) {
        if (!per_run_setting(key) && !same_setting(v, json_object_get(b, key)) && n++ < cap) keys[n - 1] = key;
    }
    json_object_foreach(b, key, v) {
        if (!per_run_setting(key) && !json_object_get(a, key) && !same_setting(NULL, v) && n++ < cap)
            keys[n - 1] = key;
    }
    return n;
}

static const char *differing_setting(json_t *a, json_t *b) {
    const char *key = NULL;
    return differing_settings(a, b, &key, 1) > 0 ? key : NULL;
}

orc_status orc_ifp_study_summary(const char *const *dirs, int n, orc_ifp_summary *s, orc_error *err) {
    memset(s, 0, sizeof *s);
    if (n < 1) return orc_error_set(err, ORC_EINVAL, "summary: give at least one study directory");
    json_t **set = calloc((size_t)n, sizeof *set);
    s->seed = calloc((size_t)n, sizeof *s->seed);
    s->acc = calloc((size_t)n, sizeof *s->acc);
    s->speed = calloc((size_t)n, sizeof *s->speed);
    s->gain = calloc((size_t)n, sizeof *s->gain);
    orc_status st = set && s->seed && s->acc && s->speed && s->gain
                        ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "summary: out of memory");
    for (int i = 0; i < n && st == ORC_OK; i++) {
        st = read_row(dirs[i], &set[i], s, i, err);
        const char *key = st == ORC_OK && i > 0 ? differing_setting(set[0], set[i]) : NULL;
        if (key)
            st = orc_error_set(err, ORC_EINVAL, "summary: %s and %s differ in setting \"%s\" (only the seed may differ)",
                               dirs[0], dirs[i], key);
        for (int j = 0; j < i && st == ORC_OK; j++)
            if (s->seed[j] == s->seed[i])
                st = orc_error_set(err, ORC_EINVAL, "summary: %s and %s are both seed %lld", dirs[j], dirs[i],
                                   s->seed[i]);
    }
    if (st == ORC_OK) {
        s->n = n;
        for (int i = 0; i < n; i++) {
            for (int a = 0; a < 3; a++) s->mean_acc[a] += s->acc[i][a] / n;
            s->mean_speed += s->speed[i] / n;
            s->gain[i] = s->acc[i][2] - s->acc[i][1];
        }
        for (int d = 0; d < s->n_domains; d++)
            for (int a = 0; a < 3; a++) s->domain_mean[d][a] /= n; /* add_domains summed them */
        s->mean_gain = s->mean_acc[2] - s->mean_acc[1];
        const double vs_full = s->mean_acc[2] - s->mean_acc[0];
        double ss = 0, ss_full = 0;
        for (int i = 0; i < n; i++) {
            const double d = s->acc[i][2] - s->acc[i][0] - vs_full;
            ss += (s->gain[i] - s->mean_gain) * (s->gain[i] - s->mean_gain);
            ss_full += d * d;
        }
        s->gain_sd = n > 1 ? sqrt(ss / (n - 1)) : NAN;
        s->gain_ci95 = n > 1 ? t975(n - 1) * s->gain_sd / sqrt((double)n) : NAN;
        s->vs_full_ci95 = n > 1 ? t975(n - 1) * sqrt(ss_full / (n - 1)) / sqrt((double)n) : NAN;
        const double gap = s->mean_acc[0] - s->mean_acc[1];
        s->gap_closed = gap > 0 ? s->mean_gain / gap : NAN;
        s->target_met = s->mean_gain >= 5.0 && gap > 0 && s->gap_closed >= 0.5 && s->mean_speed >= 0.9;
    }
    for (int i = 0; set && i < n; i++) json_decref(set[i]);
    free(set);
    if (st != ORC_OK) orc_ifp_summary_free(s);
    return st;
}

void orc_ifp_summary_free(orc_ifp_summary *s) {
    free(s->seed);
    free(s->acc);
    free(s->speed);
    free(s->gain);
    memset(s, 0, sizeof *s);
}

/* *set = the settings object of DIR/results.json (a new reference). */
static orc_status load_settings(const char *dir, json_t **set, orc_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return orc_error_set(err, ORC_EIO, "%s: cannot read a finished study's results: %s", path, je.text);
    *set = json_incref(json_object_get(j, "settings"));
    json_decref(j);
    return *set ? ORC_OK : orc_error_set(err, ORC_EFORMAT, "%s: no settings object", path);
}

/* Lists in v->settings the settings in which set b differs from set a. */
static orc_status list_versus_settings(const char *a_dir, const char *b_dir, orc_ifp_versus *v, orc_error *err) {
    json_t *a = NULL, *b = NULL;
    orc_status st = load_settings(a_dir, &a, err);
    if (st == ORC_OK) st = load_settings(b_dir, &b, err);
    if (st != ORC_OK) {
        json_decref(a);
        return st;
    }
    const char *keys[16];
    const int n = differing_settings(a, b, keys, 16);
    size_t len = 0;
    v->settings[0] = 0;
    for (int i = 0; i < n && i < 16 && len < sizeof v->settings; i++)
        len += (size_t)snprintf(v->settings + len, sizeof v->settings - len, "%s%s", i ? ", " : "", keys[i]);
    json_decref(a);
    json_decref(b);
    return ORC_OK;
}

orc_status orc_ifp_study_versus(const char *const *a_dirs, int na, const char *const *b_dirs, int nb,
                                orc_ifp_versus *v, orc_error *err) {
    memset(v, 0, sizeof *v);
    orc_status st = orc_ifp_study_summary(a_dirs, na, &v->a, err);
    if (st == ORC_OK) st = orc_ifp_study_summary(b_dirs, nb, &v->b, err);
    if (st == ORC_OK && na != nb)
        st = orc_error_set(err, ORC_EINVAL, "summary --versus: %d studies against %d; pair each seed once", na, nb);
    if (st == ORC_OK && !(v->diff = calloc((size_t)na, sizeof *v->diff)))
        st = orc_error_set(err, ORC_ENOMEM, "summary --versus: out of memory");
    for (int i = 0; i < na && st == ORC_OK; i++) {
        int j = 0;
        while (j < nb && v->b.seed[j] != v->a.seed[i]) j++;
        if (j == nb)
            st = orc_error_set(err, ORC_EINVAL, "summary --versus: seed %lld (%s) has no study in the --versus set",
                               v->a.seed[i], a_dirs[i]);
        else v->diff[i] = v->b.gain[j] - v->a.gain[i];
    }
    if (st == ORC_OK) st = list_versus_settings(a_dirs[0], b_dirs[0], v, err);
    if (st != ORC_OK) {
        orc_ifp_versus_free(v);
        return st;
    }
    v->n = na;
    for (int i = 0; i < na; i++) v->mean_diff += v->diff[i] / na;
    double ss = 0;
    for (int i = 0; i < na; i++) ss += (v->diff[i] - v->mean_diff) * (v->diff[i] - v->mean_diff);
    v->diff_ci95 = na > 1 ? t975(na - 1) * sqrt(ss / (na - 1)) / sqrt((double)na) : NAN;
    return ORC_OK;
}

void orc_ifp_versus_free(orc_ifp_versus *v) {
    orc_ifp_summary_free(&v->a);
    orc_ifp_summary_free(&v->b);
    free(v->diff);
    memset(v, 0, sizeof *v);
}
