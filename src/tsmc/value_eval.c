/* Held-out checks of a value model on labelled rollouts: does it rank the
 * generator's right answers above its wrong ones? The numbers here are the
 * cheap test to run before a full SMC study (no generation: the samples are
 * given): the held-out contrastive twist loss, how often a right sample's
 * value beats a wrong one's within a problem (after each step and at the
 * end), the pooled AUC of the final value, and the accuracy of picking
 * among each problem's K samples by majority, ORM, PRM and value-weighted
 * voting. A value model that does not rank makes ORM fall as K grows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/tsmc.h"

/* log psi at every step of every sample of one problem: lp[k][t]. */
static double **problem_logpsi(orc_value_model *v, const orc_rollout_problem *pr, orc_error *err) {
    double **lp = calloc((size_t)pr->n_samples + 1, sizeof *lp);
    if (!lp) {
        orc_error_set(err, ORC_ENOMEM, "value eval: out of memory");
        return NULL;
    }
    for (int k = 0; k < pr->n_samples; k++)
        if (!(lp[k] = malloc((size_t)(pr->samples[k].n_steps + 1) * sizeof **lp))) {
            orc_error_set(err, ORC_ENOMEM, "value eval: out of memory");
            goto fail;
        }
    if (orc_value_step_logpsi(v, pr, lp, err) == ORC_OK) return lp;
fail:
    for (int k = 0; k < pr->n_samples; k++) free(lp[k]);
    free(lp);
    return NULL;
}

static void free_logpsi(double **lp, int n) {
    for (int k = 0; lp && k < n; k++) free(lp[k]);
    free(lp);
}

/* Adds the (right, wrong) pairs of one group of scores to *wins / *pairs
 * (a tie counts half). */
static void count_pairs(const double *score, const bool *right, int n, double *wins, double *pairs) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (right[i] && !right[j]) {
                *pairs += 1;
                *wins += score[i] > score[j] ? 1.0 : score[i] == score[j] ? 0.5 : 0.0;
            }
}

/* The held-out twist loss of one (problem, step) group: cross-entropy of
 * softmax(log psi) against uniform over the right samples. */
static double twist_group_loss(const double *lp, const bool *right, int n) {
    double mx = -INFINITY, z = 0, sum_right = 0;
    int n_right = 0;
    for (int i = 0; i < n; i++)
        if (lp[i] > mx) mx = lp[i];
    for (int i = 0; i < n; i++) z += exp(lp[i] - mx);
    for (int i = 0; i < n; i++)
        if (right[i]) {
            sum_right += lp[i] - mx - log(z);
            n_right++;
        }
    return -sum_right / n_right;
}

/* Pooled AUC of (score, label) pairs by sorting: P(score of a right one >
 * score of a wrong one), ties half. */
typedef struct scored {
    double s;
    bool right;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return x < y ? -1 : x > y;
}

static double pooled_auc(scored *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    double wrong_below = 0, wins = 0, n_right = 0, n_wrong = 0;
    for (int i = 0; i < n;) {
        int j = i, r = 0, w = 0;
        while (j < n && v[j].s == v[i].s) {
            r += v[j].right;
            w += !v[j].right;
            j++;
        }
        wins += r * (wrong_below + 0.5 * w);
        wrong_below += w;
        n_right += r;
        n_wrong += w;
        i = j;
    }
    return n_right > 0 && n_wrong > 0 ? wins / (n_right * n_wrong) : NAN;
}

/* Picks among one problem's samples (orc_tsmc_pick, as the study picks);
 * adds to the report's counters. */
static void score_picks(const orc_rollout_problem *pr, double *const *lp, orc_value_report *r) {
    const int n = pr->n_samples;
    const char **ans = calloc((size_t)n + 1, sizeof *ans);
    double *buf = calloc(3 * (size_t)n + 1, sizeof *buf);
    if (!ans || !buf) {
        free(ans);
        free(buf);
        return;
    }
    double *final = buf, *minv = buf + n, *w = buf + 2 * n;
    for (int k = 0; k < n; k++) ans[k] = pr->samples[k].answer;
    orc_value_sample_scores(pr, lp, final, minv);
    double *const count[4] = {&r->majority, &r->orm, &r->prm, &r->weighted};
    for (int m = ORC_TSMC_MAJORITY; m <= ORC_TSMC_WEIGHTED; m++) {
        const int k = orc_tsmc_pick((orc_tsmc_method)m, ans, final, minv, n, w);
        *count[m - ORC_TSMC_MAJORITY] += k >= 0 && pr->samples[k].correct;
    }
    free(ans);
    free(buf);
}

orc_status orc_value_eval(orc_value_model *v, const orc_rollout_set *set, orc_value_report *r, orc_error *err) {
    memset(r, 0, sizeof *r);
    if (!set || set->n_problems < 1) return orc_error_set(err, ORC_EINVAL, "value eval: no rollout problems");
    int total = 0, max_k = 1;
    for (int p = 0; p < set->n_problems; p++) {
        total += set->problems[p].n_samples;
        if (set->problems[p].n_samples > max_k) max_k = set->problems[p].n_samples;
    }
    scored *pool = malloc((size_t)(total > 0 ? total : 1) * sizeof *pool);
    double *score = malloc((size_t)max_k * sizeof *score);
    bool *right = malloc((size_t)max_k * sizeof *right);
    if (!pool || !score || !right) {
        free(pool);
        free(score);
        free(right);
        return orc_error_set(err, ORC_ENOMEM, "value eval: out of memory");
    }
    double wins_final = 0, pairs_final = 0, wins_step[ORC_VALUE_EVAL_STEPS] = {0}, pairs_step[ORC_VALUE_EVAL_STEPS] = {0};
    double loss_sum = 0, uniform_sum = 0;
    int n_pool = 0;
    orc_status st = ORC_OK;
    for (int p = 0; p < set->n_problems && st == ORC_OK; p++) {
        const orc_rollout_problem *pr = &set->problems[p];
        double **lp = problem_logpsi(v, pr, err);
        if (!lp) {
            st = err && err->code ? err->code : ORC_ENOMEM;
            break;
        }
        r->problems++;
        int n_right = 0, max_steps = 0;
        for (int k = 0; k < pr->n_samples; k++) {
            const orc_rollout_sample *s = &pr->samples[k];
            r->samples++;
            n_right += s->correct;
            if (s->n_steps > max_steps) max_steps = s->n_steps;
            if (s->n_steps > 0) pool[n_pool++] = (scored){lp[k][s->n_steps - 1], s->correct};
        }
        r->correct += n_right;
        r->any_correct += n_right > 0;
        r->mixed += n_right > 0 && n_right < pr->n_samples;
        /* final values within the problem (a sample with no step scores -inf) */
        for (int k = 0; k < pr->n_samples; k++) {
            const orc_rollout_sample *s = &pr->samples[k];
            score[k] = s->n_steps > 0 ? lp[k][s->n_steps - 1] : -INFINITY;
            right[k] = s->correct;
        }
        count_pairs(score, right, pr->n_samples, &wins_final, &pairs_final);
        /* each step: the samples that reach it */
        for (int t = 0; t < max_steps; t++) {
            int m = 0, m_right = 0;
            for (int k = 0; k < pr->n_samples; k++)
                if (pr->samples[k].n_steps > t) {
                    score[m] = lp[k][t];
                    right[m] = pr->samples[k].correct;
                    m_right += right[m];
                    m++;
                }
            if (t < ORC_VALUE_EVAL_STEPS) count_pairs(score, right, m, &wins_step[t], &pairs_step[t]);
            if (m_right > 0) {
                loss_sum += twist_group_loss(score, right, m);
                uniform_sum += log((double)m);
                r->twist_groups++;
            }
        }
        score_picks(pr, lp, r);
        free_logpsi(lp, pr->n_samples);
    }
    if (st == ORC_OK) {
        const double np = r->problems;
        r->sample_accuracy = r->samples ? (double)r->correct / r->samples : NAN;
        r->majority /= np;
        r->orm /= np;
        r->prm /= np;
        r->weighted /= np;
        r->pair_final = pairs_final > 0 ? wins_final / pairs_final : NAN;
        for (int t = 0; t < ORC_VALUE_EVAL_STEPS; t++) r->pair_step[t] = pairs_step[t] > 0 ? wins_step[t] / pairs_step[t] : NAN;
        r->auc_final = pooled_auc(pool, n_pool);
        r->twist_loss = r->twist_groups ? loss_sum / r->twist_groups : NAN;
        r->twist_loss_uniform = r->twist_groups ? uniform_sum / r->twist_groups : NAN;
    }
    free(pool);
    free(score);
    free(right);
    return st;
}
