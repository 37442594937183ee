/* The weight arithmetic of SMC: effective sample size, the three
 * resampling schemes, the weighted majority vote and the baselines' picks
 * among scored samples. Weights arrive as
 * logs (products of many value ratios under- and overflow as plain
 * numbers) and are normalised by their maximum first. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/tsmc.h"

const char *orc_resample_name(orc_resample_kind k) {
    switch (k) {
    case ORC_RESAMPLE_MULTINOMIAL: return "multinomial";
    case ORC_RESAMPLE_SYSTEMATIC: return "systematic";
    case ORC_RESAMPLE_STRATIFIED: return "stratified";
    }
    return "?";
}

int orc_resample_parse(const char *name) {
    for (int k = 0; k <= ORC_RESAMPLE_STRATIFIED; k++)
        if (name && strcmp(name, orc_resample_name((orc_resample_kind)k)) == 0) return k;
    return -1;
}

/* exp(logw - max) into w; returns the sum (0 when every weight is zero). */
static double normalise(const double *logw, int n, double *w) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logw[i] > mx) mx = logw[i];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        w[i] = isfinite(mx) && logw[i] > -INFINITY ? exp(logw[i] - mx) : 0.0;
        sum += w[i];
    }
    return sum;
}

double orc_ess(const double *logw, int n) {
    if (n <= 0) return 0;
    double *w = malloc((size_t)n * sizeof *w);
    if (!w) return 0;
    double s = normalise(logw, n, w), s2 = 0;
    for (int i = 0; i < n; i++) s2 += w[i] * w[i];
    free(w);
    return s2 > 0 ? s * s / s2 : 0;
}

static double uniform(orc_rng *rng) { return ((double)orc_rng_u32(rng) + 0.5) / 4294967296.0; }

/* The first index whose cumulative weight exceeds u (cdf normalised to 1). */
static int search(const double *cdf, int n, double u) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

orc_status orc_resample(orc_resample_kind kind, const double *logw, int n, orc_rng *rng, int *out, orc_error *err) {
    if (n < 1) return orc_error_set(err, ORC_EINVAL, "resample: %d particles", n);
    double *cdf = malloc((size_t)n * sizeof *cdf);
    if (!cdf) return orc_error_set(err, ORC_ENOMEM, "resample: out of memory");
    double sum = normalise(logw, n, cdf);
    if (!(sum > 0)) {
        free(cdf);
        return orc_error_set(err, ORC_EINVAL, "resample: every one of the %d weights is zero", n);
    }
    double acc = 0;
    for (int i = 0; i < n; i++) {
        acc += cdf[i] / sum;
        cdf[i] = acc;
    }
    cdf[n - 1] = 1.0; /* rounding must not leave the last bucket short */
    const double u0 = uniform(rng);
    for (int i = 0; i < n; i++) {
        double u = kind == ORC_RESAMPLE_MULTINOMIAL  ? uniform(rng)
                   : kind == ORC_RESAMPLE_SYSTEMATIC ? (u0 + i) / n
                                                     : (uniform(rng) + i) / n;
        out[i] = search(cdf, n, u);
    }
    free(cdf);
    return ORC_OK;
}

int orc_weighted_majority(const char *const *answers, const double *weights, int n) {
    int best = -1;
    double best_w = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (!answers[i]) continue;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = answers[j] && strcmp(answers[j], answers[i]) == 0;
        if (seen) continue;
        double total = 0;
        for (int j = i; j < n; j++)
            if (answers[j] && strcmp(answers[j], answers[i]) == 0) total += weights ? weights[j] : 1.0;
        if (total > best_w) {
            best_w = total;
            best = i;
        }
    }
    return best;
}

void orc_value_sample_scores(const orc_rollout_problem *pr, double *const *lp, double *final, double *minv) {
    for (int k = 0; k < pr->n_samples; k++) {
        const int n_steps = pr->samples[k].n_steps;
        final[k] = minv[k] = -INFINITY;
        if (n_steps < 1) continue;
        final[k] = lp[k][n_steps - 1];
        minv[k] = INFINITY;
        for (int t = 0; t < n_steps; t++) minv[k] = lp[k][t] < minv[k] ? lp[k][t] : minv[k];
    }
}

int orc_tsmc_pick(orc_tsmc_method m, const char *const *answers, const double *final, const double *minv, int n,
                  double *w) {
    if (m == ORC_TSMC_MAJORITY) return orc_weighted_majority(answers, NULL, n);
    if (m == ORC_TSMC_ORM || m == ORC_TSMC_PRM) {
        const double *score = m == ORC_TSMC_ORM ? final : minv;
        int best = -1;
        for (int k = 0; k < n; k++)
            if (answers[k] && (best < 0 || score[k] > score[best])) best = k;
        return best;
    }
    if (m != ORC_TSMC_WEIGHTED) return -1;
    double mx = -INFINITY;
    for (int k = 0; k < n; k++)
        if (final[k] > mx) mx = final[k];
    /* No finite value at all carries no information: plain votes. */
    for (int k = 0; k < n; k++) w[k] = !isfinite(mx) ? 1.0 : isfinite(final[k]) ? exp(final[k] - mx) : 0.0;
    return orc_weighted_majority(answers, w, n);
}
