/* Token samplers (see orchard/generate.h): the repeat penalty, temperature,
 * top-k, top-p, min-p and the final draw, as one pure function of the
 * logits, the history, the settings and a uniform number. Candidates are
 * ordered by (probability descending, id ascending), a total order, so ties
 * never depend on the order work happens in. Only as much of the vocabulary
 * is sorted as the cut-offs need: top-k is a selection, and top-p sorts a
 * growing prefix until it holds the nucleus, so a 32000-token vocabulary
 * costs a few linear passes, not a full sort. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/generate.h"

void orc_sampler_opts_default(orc_sampler_opts *o) {
    *o = (orc_sampler_opts){.temperature = 0.8f,
                            .top_k = 40,
                            .top_p = 0.95f,
                            .min_p = 0.05f,
                            .repeat_penalty = 1.0f,
                            .repeat_last_n = 64,
                            .seed = 0};
}

orc_status orc_sampler_opts_validate(const orc_sampler_opts *o, orc_error *err) {
    if (!(o->temperature >= 0.0f) || !isfinite(o->temperature))
        return orc_error_set(err, ORC_EINVAL, "sampler: temperature must be a finite number >= 0, got %g",
                             (double)o->temperature);
    if (o->top_k < 0) return orc_error_set(err, ORC_EINVAL, "sampler: top_k must be >= 0, got %lld", (long long)o->top_k);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
        return orc_error_set(err, ORC_EINVAL, "sampler: top_p must be in (0, 1], got %g", (double)o->top_p);
    if (!(o->min_p >= 0.0f && o->min_p <= 1.0f))
        return orc_error_set(err, ORC_EINVAL, "sampler: min_p must be in [0, 1], got %g", (double)o->min_p);
    if (!(o->repeat_penalty > 0.0f) || !isfinite(o->repeat_penalty))
        return orc_error_set(err, ORC_EINVAL, "sampler: repeat_penalty must be a finite number > 0, got %g",
                             (double)o->repeat_penalty);
    if (o->repeat_last_n < -1)
        return orc_error_set(err, ORC_EINVAL, "sampler: repeat_last_n must be >= -1, got %lld",
                             (long long)o->repeat_last_n);
    return ORC_OK;
}

orc_status orc_sample_work_init(orc_sample_work *w, int64_t vocab, orc_error *err) {
    memset(w, 0, sizeof *w);
    if (vocab <= 0 || vocab > ORC_TOK_MAX_VOCAB)
        return orc_error_set(err, ORC_EINVAL, "sampler: vocabulary size %lld out of range", (long long)vocab);
    w->vocab = vocab;
    w->val = malloc(sizeof(float) * (size_t)vocab);
    w->idx = malloc(sizeof(int32_t) * (size_t)vocab);
    if (!w->val || !w->idx) {
        orc_sample_work_release(w);
        return orc_error_set(err, ORC_ENOMEM, "sampler: out of memory for %lld logits", (long long)vocab);
    }
    return ORC_OK;
}

void orc_sample_work_release(orc_sample_work *w) {
    free(w->val);
    free(w->idx);
    memset(w, 0, sizeof *w);
}

/* ---- repeat penalty ------------------------------------------------------------ */

void orc_apply_repeat_penalty(const float *logits, float *out, int64_t V, const int32_t *prev, size_t n_prev,
                              float penalty, int64_t last_n) {
    memcpy(out, logits, sizeof(float) * (size_t)V);
    if (penalty == 1.0f || last_n == 0 || n_prev == 0) return;
    size_t from = (last_n < 0 || (uint64_t)last_n >= n_prev) ? 0 : n_prev - (size_t)last_n;
    for (size_t i = from; i < n_prev; i++) {
        int32_t t = prev[i];
        if (t < 0 || t >= V) continue;
        /* From the untouched logit, so a token seen twice is penalised once. */
        const float x = logits[t];
        out[t] = x > 0.0f ? x / penalty : x * penalty;
    }
}

/* ---- ordering ------------------------------------------------------------------ */

/* a before b: larger value first, then the smaller id. */
static inline bool before(const float *val, int32_t a, int32_t b) {
    return val[a] > val[b] || (val[a] == val[b] && a < b);
}

static inline void swap_i(int32_t *a, int32_t *b) {
    int32_t t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange idx[0..n) so that its first k entries are the k first in the
 * order (in no particular order among themselves). Quickselect with a
 * median-of-three pivot; deterministic. */
static void select_first(const float *val, int32_t *idx, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi && k > lo && k <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (before(val, idx[mid], idx[lo])) swap_i(&idx[mid], &idx[lo]);
        if (before(val, idx[hi], idx[lo])) swap_i(&idx[hi], &idx[lo]);
        if (before(val, idx[hi], idx[mid])) swap_i(&idx[hi], &idx[mid]);
        int32_t pivot = idx[mid];
        int64_t i = lo, j = hi;
        while (i <= j) { /* Hoare partition around the pivot's rank */
            while (before(val, idx[i], pivot)) i++;
            while (before(val, pivot, idx[j])) j--;
            if (i <= j) {
                swap_i(&idx[i], &idx[j]);
                i++;
                j--;
            }
        }
        /* [lo, j] come before or equal the pivot, [i, hi] after or equal. */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

/* Insertion sort for short runs, else a heap sort: no recursion, no qsort
 * context pointer. Sorts idx[0..n) into the order. */
static void sift_down(const float *val, int32_t *idx, int64_t root, int64_t n) {
    for (;;) {
        int64_t c = 2 * root + 1;
        if (c >= n) return;
        /* A max-heap in reverse order: the root is the LAST in the order. */
        if (c + 1 < n && before(val, idx[c], idx[c + 1])) c++;
        if (!before(val, idx[root], idx[c])) return;
        swap_i(&idx[root], &idx[c]);
        root = c;
    }
}

static void sort_run(const float *val, int32_t *idx, int64_t n) {
    if (n <= 32) {
        for (int64_t i = 1; i < n; i++) {
            int32_t x = idx[i];
            int64_t j = i;
            while (j > 0 && before(val, x, idx[j - 1])) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = x;
        }
        return;
    }
    for (int64_t r = n / 2 - 1; r >= 0; r--) sift_down(val, idx, r, n);
    for (int64_t end = n - 1; end > 0; end--) {
        swap_i(&idx[0], &idx[end]);
        sift_down(val, idx, 0, end);
    }
}

/* ---- the sampler ------------------------------------------------------------------ */

static int32_t argmax(const float *x, int64_t V) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
    return (int32_t)best;
}

/* The nucleus: with idx[0..n) the candidates and z their total weight, the
 * length of the shortest sorted prefix whose weight reaches p * z. Sorts
 * only a prefix that grows by a factor of 4 until it is long enough. */
static int64_t nucleus(const float *val, int32_t *idx, int64_t n, double z, float p) {
    const double target = (double)p * z;
    double cum = 0.0;
    int64_t sorted = 0, want = 64;
    while (sorted < n) {
        if (want > n) want = n;
        select_first(val, idx + sorted, n - sorted, want - sorted);
        sort_run(val, idx + sorted, want - sorted);
        for (int64_t i = sorted; i < want; i++) {
            cum += val[idx[i]];
            if (cum >= target) return i + 1;
        }
        sorted = want;
        want *= 4;
    }
    return n;
}

double orc_logsumexp(const float *logits, int64_t V) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++)
        if (isfinite(logits[i])) sum += exp((double)(logits[i] - mx));
    return (double)mx + log(sum > 0 ? sum : 1.0);
}

int32_t orc_sample(const orc_sampler_opts *o, const float *logits, int64_t V, const int32_t *prev, size_t n_prev,
                   float u, orc_sample_work *w) {
    if (!w || V != w->vocab || V <= 0) return -1;
    float *val = w->val;
    int32_t *idx = w->idx;
    orc_apply_repeat_penalty(logits, val, V, prev, n_prev, o->repeat_penalty, o->repeat_last_n);
    const int32_t best = argmax(val, V);
    if (o->temperature <= 0.0f || V == 1 || o->top_k == 1) return best;
    const float mx = val[best];
    if (!isfinite(mx)) return best; /* nothing to weigh against an infinite or all -inf row */

    /* Unnormalised probabilities (the max maps to 1); NaN counts as impossible. */
    const float inv_t = 1.0f / o->temperature;
    for (int64_t i = 0; i < V; i++) {
        float e = expf((val[i] - mx) * inv_t);
        val[i] = e == e ? e : 0.0f;
        idx[i] = (int32_t)i;
    }
    int64_t n = V;
    if (o->top_k > 0 && o->top_k < V) {
        select_first(val, idx, V, o->top_k);
        n = o->top_k;
    }
    double z = 0.0;
    for (int64_t i = 0; i < n; i++) z += val[idx[i]];

    /* min-p keeps a prefix of the order; its length bounds the nucleus. */
    if (o->min_p > 0.0f) {
        const float thr = o->min_p; /* the largest weight is 1 */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (val[idx[i]] >= thr) swap_i(&idx[m++], &idx[i]);
        n = m;
    }
    /* Without top-p the draw walks the candidates in the order the steps
     * above left them: a function of the input alone, so no sort is needed. */
    if (o->top_p < 1.0f) n = nucleus(val, idx, n, z, o->top_p);
    if (n <= 1) return n == 1 ? idx[0] : best;

    double total = 0.0;
    for (int64_t i = 0; i < n; i++) total += val[idx[i]];
    const double r = (double)u * total;
    double cum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cum += val[idx[i]];
        if (r < cum) return idx[i];
    }
    return idx[n - 1];
}
