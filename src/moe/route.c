/* MoE routing (see orchard/moe.h): the router softmax, token-choice top-k
 * with per-group capacity and rank-first priority, expert-choice top-C per
 * expert, the expert-major slot layout every later step indexes by, the
 * gates with their backward to the router logits, the load-balance and
 * z-losses, and the per-call statistics. Decisions are made on the host in
 * a fixed order (tokens ascending, ties to the lower index), and each
 * token's arithmetic is independent of the others, so the plan and the
 * gradients are the same for any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/moe.h"
#include "orchard/ops.h"

#define PAR_MIN 16384 /* elements of work before threads pay off */

bool orc_moe_router_parse(const char *s, orc_moe_router *out) {
    if (!s) return false;
    if (!strcmp(s, "token_choice") || !strcmp(s, "top2") || !strcmp(s, "topk")) {
        *out = ORC_MOE_TOKEN_CHOICE;
        return true;
    }
    if (!strcmp(s, "expert_choice")) {
        *out = ORC_MOE_EXPERT_CHOICE;
        return true;
    }
    return false;
}

const char *orc_moe_router_name(orc_moe_router r) {
    return r == ORC_MOE_EXPERT_CHOICE ? "expert_choice" : "token_choice";
}

int64_t orc_moe_capacity(const orc_moe_opts *o, int64_t n) {
    if (n <= 0 || o->n_experts <= 0) return 0;
    double c = ceil((double)n * o->capacity_factor / (double)o->n_experts - 1e-9);
    int64_t cap = c < 1 ? 1 : (c > (double)INT32_MAX ? INT32_MAX : (int64_t)c);
    if (o->router == ORC_MOE_EXPERT_CHOICE && cap > n) cap = n;
    return cap;
}

double orc_moe_stats_dropped_fraction(const orc_moe_stats *s, orc_moe_router r) {
    double den = r == ORC_MOE_EXPERT_CHOICE ? (double)s->tokens : (double)s->assignments;
    return den > 0 ? (double)s->dropped / den : 0.0;
}

double orc_moe_stats_entropy(const orc_moe_stats *s) {
    return s->tokens > 0 ? s->entropy_sum / (double)s->tokens : 0.0;
}

void orc_moe_stats_add(orc_moe_stats *dst, const orc_moe_stats *src) {
    dst->n_experts = src->n_experts;
    dst->tokens += src->tokens;
    dst->assignments += src->assignments;
    dst->dropped += src->dropped;
    dst->entropy_sum += src->entropy_sum;
    if (dst->per_expert && src->per_expert)
        for (int64_t e = 0; e < src->n_experts; e++) dst->per_expert[e] += src->per_expert[e];
}

/* ---- helpers ------------------------------------------------------------- */

/* p = softmax(x) over E entries (max subtracted, sum in double); returns the
 * entropy -sum p log p in nats. */
static double softmax_entropy(const float *x, float *p, int64_t E) {
    float m = x[0];
    for (int64_t e = 1; e < E; e++)
        if (x[e] > m) m = x[e];
    double sum = 0;
    for (int64_t e = 0; e < E; e++) {
        p[e] = expf(x[e] - m);
        sum += p[e];
    }
    const double inv = 1.0 / sum;
    double h = 0;
    for (int64_t e = 0; e < E; e++) {
        p[e] = (float)(p[e] * inv);
        if (p[e] > 0) h -= (double)p[e] * log((double)p[e]);
    }
    return h;
}

/* dlogits += p * (dp - sum(p * dp)) for one row. */
static void softmax_back_row(const float *p, const float *dp, float *gx, int64_t E) {
    double dot = 0;
    for (int64_t e = 0; e < E; e++) dot += (double)p[e] * dp[e];
    const float fd = (float)dot;
    for (int64_t e = 0; e < E; e++) gx[e] += p[e] * (dp[e] - fd);
}

typedef struct scored {
    float v;
    int32_t i;
} scored;

/* Descending by value, ties to the lower index: a total order, so qsort's
 * result is unique. */
static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ---- the routing op -------------------------------------------------------- */

typedef struct route_saved {
    orc_moe_plan *plan;
    float *gate_k;    /* token choice [N * k]: gates before dropping */
    int64_t *slot_of; /* token choice [N * k]: slot of each choice, -1 when dropped */
} route_saved;

static void route_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const route_saved *sv = n->saved;
    const orc_moe_plan *pl = sv->plan;
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, S = pl->n_slots;
    const float *g = n->out->grad, *P = pl->probs;
    float *dp = calloc((size_t)(N * E), sizeof *dp);
    if (!dp) {
        orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory in backward");
        return;
    }
    if (pl->opts.router == ORC_MOE_TOKEN_CHOICE) {
        const int64_t k = pl->opts.top_k;
        /* g_j = p_j / s over the chosen set K (k >= 2): dL/dp_i = (G_i - sum_j G_j g_j) / s. */
#pragma omp parallel for schedule(static) if (N * E > PAR_MIN)
        for (int64_t t = 0; t < N; t++) {
            const float *p = P + t * E;
            float *d = dp + t * E;
            const int32_t *ch = pl->choice + t * k;
            if (k == 1) {
                if (sv->slot_of[t] >= 0) d[ch[0]] = g[sv->slot_of[t]];
                continue;
            }
            double s = 0, dot = 0;
            for (int64_t j = 0; j < k; j++) s += p[ch[j]];
            for (int64_t j = 0; j < k; j++) {
                int64_t sl = sv->slot_of[t * k + j];
                if (sl >= 0) dot += (double)g[sl] * sv->gate_k[t * k + j];
            }
            for (int64_t j = 0; j < k; j++) {
                int64_t sl = sv->slot_of[t * k + j];
                double gj = sl >= 0 ? g[sl] : 0.0;
                d[ch[j]] = (float)((gj - dot) / s);
            }
        }
    } else {
        for (int64_t s = 0; s < S; s++) /* each (token, expert) pair appears once */
            dp[(int64_t)orc_i32(pl->token)[s] * E + pl->expert[s]] = g[s];
    }
#pragma omp parallel for schedule(static) if (N * E > PAR_MIN)
    for (int64_t t = 0; t < N; t++) softmax_back_row(P + t * E, dp + t * E, gx + t * E, E);
    free(dp);
}

static bool check_opts(orc_ctx *ctx, const char *op, const orc_moe_opts *o) {
    if (!o) return orc_fail(ctx, ORC_EINVAL, "%s: no options", op), false;
    if (o->n_experts < 1 || o->n_experts > INT32_MAX)
        return orc_fail(ctx, ORC_EINVAL, "%s: num_experts = %lld must be at least 1", op, (long long)o->n_experts),
               false;
    if (o->router == ORC_MOE_TOKEN_CHOICE && (o->top_k < 1 || o->top_k > o->n_experts))
        return orc_fail(ctx, ORC_EINVAL, "%s: moe_top_k = %lld must be in [1, num_experts = %lld]", op,
                        (long long)o->top_k, (long long)o->n_experts),
               false;
    if (!(o->capacity_factor > 0) || !isfinite(o->capacity_factor))
        return orc_fail(ctx, ORC_EINVAL, "%s: capacity_factor = %g must be positive", op, o->capacity_factor), false;
    if (o->group_size < 0)
        return orc_fail(ctx, ORC_EINVAL, "%s: moe_group_size = %lld must be >= 0", op, (long long)o->group_size),
               false;
    if (o->router != ORC_MOE_TOKEN_CHOICE && o->router != ORC_MOE_EXPERT_CHOICE)
        return orc_fail(ctx, ORC_EINVAL, "%s: unknown router %d", op, (int)o->router), false;
    return true;
}

/* Token choice: top-k per token, then per group rank-first slot grants. */
static bool plan_token_choice(orc_ctx *ctx, orc_moe_plan *pl, float **gate_k_out, int64_t **slot_of_out) {
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, k = pl->opts.top_k, gs = pl->group_size;
    const float *P = pl->probs;
    int32_t *choice = orc_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(N * k));
    float *gate_k = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(N * k));
    int64_t *slot_of = orc_arena_alloc(ctx->arena, sizeof(int64_t) * (size_t)(N * k));
    int64_t *count = calloc((size_t)E, sizeof *count);
    if (!choice || !gate_k || !slot_of || !count) {
        free(count);
        return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory for %lld tokens", (long long)N), false;
    }
#pragma omp parallel for schedule(static) if (N * E * k > PAR_MIN)
    for (int64_t t = 0; t < N; t++) {
        const float *p = P + t * E;
        int32_t *ch = choice + t * k;
        for (int64_t j = 0; j < k; j++) { /* j-th best not yet chosen; ties: lower index */
            int32_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j; i++) taken |= ch[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
            }
            ch[j] = best;
        }
        double s = 0;
        for (int64_t j = 0; j < k; j++) s += p[ch[j]];
        for (int64_t j = 0; j < k; j++) gate_k[t * k + j] = k == 1 ? p[ch[0]] : (float)(p[ch[j]] / s);
    }
    /* Grants: kept choices get slot_of = 0 for now (1 = kept marker below). */
    int64_t dropped = 0;
    for (int64_t g0 = 0; g0 < N; g0 += gs) {
        const int64_t g1 = g0 + gs < N ? g0 + gs : N, cap = orc_moe_capacity(&pl->opts, g1 - g0);
        memset(count, 0, sizeof(int64_t) * (size_t)E);
        for (int64_t j = 0; j < k; j++)
            for (int64_t t = g0; t < g1; t++) {
                int32_t e = choice[t * k + j];
                if (count[e] < cap) {
                    count[e]++;
                    slot_of[t * k + j] = 0;
                } else {
                    slot_of[t * k + j] = -1;
                    dropped++;
                }
            }
    }
    /* Expert-major layout, token order within each expert (groups follow
     * each other because they are token ranges). */
    memset(count, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < N * k; i++)
        if (slot_of[i] == 0) count[choice[i]]++;
    pl->offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) pl->offsets[e + 1] = pl->offsets[e] + count[e];
    pl->n_slots = pl->offsets[E];
    free(count);
    pl->stats.assignments = N * k;
    pl->stats.dropped = dropped;
    pl->choice = choice;
    *gate_k_out = gate_k;
    *slot_of_out = slot_of;
    return true;
}

static bool fill_token_slots(orc_ctx *ctx, orc_moe_plan *pl, const float *gate_k, int64_t *slot_of, float *gates) {
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, k = pl->opts.top_k;
    int64_t *next = malloc(sizeof(int64_t) * (size_t)E);
    if (!next) return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory"), false;
    memcpy(next, pl->offsets, sizeof(int64_t) * (size_t)E);
    int32_t *tok = orc_i32(pl->token);
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < k; j++) {
            int64_t i = t * k + j;
            if (slot_of[i] < 0) continue;
            int32_t e = pl->choice[i];
            int64_t s = next[e]++;
            slot_of[i] = s;
            tok[s] = (int32_t)t;
            pl->expert[s] = e;
            pl->rank[s] = (int32_t)j;
            gates[s] = gate_k[i];
        }
    free(next);
    return true;
}

/* Expert choice: per group and expert the top-C tokens by p[:, e]. */
static bool plan_expert_choice(orc_ctx *ctx, orc_moe_plan *pl, orc_tensor **gates_out) {
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, gs = pl->group_size;
    const float *P = pl->probs;
    /* Slots: every group gives each expert exactly C_g slots. */
    int64_t per_expert = 0;
    for (int64_t g0 = 0; g0 < N; g0 += gs) per_expert += orc_moe_capacity(&pl->opts, (g0 + gs < N ? gs : N - g0));
    const int64_t S = per_expert * E;
    pl->n_slots = S;
    for (int64_t e = 0; e <= E; e++) pl->offsets[e] = e * per_expert;
    pl->token = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(S));
    pl->expert = orc_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)S);
    pl->rank = orc_arena_calloc(ctx->arena, (size_t)S, sizeof(int32_t));
    orc_tensor *gt = orc_new(ctx, ORC_F32, 1, ORC_SHAPE(S));
    bool *hit = calloc((size_t)N, sizeof *hit);
    if (!pl->token || !pl->expert || !pl->rank || !gt || !hit) {
        free(hit);
        return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory for %lld slots", (long long)S), false;
    }
    float *gates = orc_f32(gt);
    int32_t *tok = orc_i32(pl->token);
    bool oom = false;
#pragma omp parallel for schedule(dynamic, 1) if (N * E > PAR_MIN)
    for (int64_t e = 0; e < E; e++) {
        scored *buf = malloc(sizeof(scored) * (size_t)(gs < N ? gs : N));
        if (!buf) {
#pragma omp atomic write
            oom = true;
            continue;
        }
        int64_t s = pl->offsets[e];
        for (int64_t g0 = 0; g0 < N; g0 += gs) {
            const int64_t n = g0 + gs < N ? gs : N - g0, cap = orc_moe_capacity(&pl->opts, n);
            for (int64_t t = 0; t < n; t++) buf[t] = (scored){P[(g0 + t) * E + e], (int32_t)(g0 + t)};
            qsort(buf, (size_t)n, sizeof *buf, cmp_scored);
            int32_t *ids = tok + s;
            for (int64_t c = 0; c < cap; c++) ids[c] = buf[c].i;
            qsort(ids, (size_t)cap, sizeof *ids, cmp_i32);
            for (int64_t c = 0; c < cap; c++) {
                pl->expert[s + c] = (int32_t)e;
                gates[s + c] = P[(int64_t)ids[c] * E + e];
            }
            s += cap;
        }
        free(buf);
    }
    if (oom) {
        free(hit);
        return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory sorting tokens"), false;
    }
    for (int64_t s = 0; s < S; s++) hit[tok[s]] = true;
    int64_t none = 0;
    for (int64_t t = 0; t < N; t++) none += !hit[t];
    free(hit);
    pl->stats.assignments = S;
    pl->stats.dropped = none;
    *gates_out = gt;
    return true;
}

orc_tensor *orc_moe_route(orc_ctx *ctx, orc_tensor *logits, const orc_moe_opts *o, orc_moe_plan **plan_out) {
    if (plan_out) *plan_out = NULL;
    if (!orc_op_begin(ctx, "moe route", 1, &logits)) return NULL;
    if (!check_opts(ctx, "moe route", o)) return NULL;
    char b[96];
    if (logits->dtype != ORC_F32 || logits->ndim != 2 || logits->shape[1] != o->n_experts || logits->shape[0] < 1)
        return orc_fail(ctx, ORC_ESHAPE, "moe route: logits must be f32 [tokens >= 1, num_experts = %lld], got %s",
                        (long long)o->n_experts, orc_tensor_desc(b, sizeof b, logits));
    if (!plan_out) return orc_fail(ctx, ORC_EINVAL, "moe route: no plan pointer");
    logits = orc_contiguous(ctx, logits);
    if (!logits) return NULL;
    const int64_t N = logits->shape[0], E = o->n_experts;
    if (N > INT32_MAX) return orc_fail(ctx, ORC_ERANGE, "moe route: %lld tokens exceed int32 indices", (long long)N);
    const float *x = orc_f32(logits);
    for (int64_t i = 0; i < N * E; i++)
        if (!isfinite(x[i]))
            return orc_fail(ctx, ORC_ERANGE, "moe route: router logit [%lld, %lld] is not finite (%g)",
                            (long long)(i / E), (long long)(i % E), (double)x[i]);
    orc_moe_plan *pl = orc_arena_calloc(ctx->arena, 1, sizeof *pl);
    if (!pl) return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory");
    pl->opts = *o;
    pl->n_tokens = N;
    pl->group_size = o->group_size > 0 && o->group_size < N ? o->group_size : N;
    pl->n_groups = (N + pl->group_size - 1) / pl->group_size;
    pl->capacity = orc_moe_capacity(o, pl->group_size);
    pl->offsets = orc_arena_calloc(ctx->arena, (size_t)(E + 1), sizeof(int64_t));
    pl->probs = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(N * E));
    pl->stats.per_expert = orc_arena_calloc(ctx->arena, (size_t)E, sizeof(int64_t));
    double *ent = malloc(sizeof(double) * (size_t)N);
    if (!pl->offsets || !pl->probs || !pl->stats.per_expert || !ent) {
        free(ent);
        return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory for %lld tokens", (long long)N);
    }
#pragma omp parallel for schedule(static) if (N * E > PAR_MIN)
    for (int64_t t = 0; t < N; t++) ent[t] = softmax_entropy(x + t * E, pl->probs + t * E, E);
    pl->stats.n_experts = E;
    pl->stats.tokens = N;
    for (int64_t t = 0; t < N; t++) pl->stats.entropy_sum += ent[t];
    free(ent);

    orc_tensor *gates = NULL;
    route_saved *sv = orc_arena_calloc(ctx->arena, 1, sizeof *sv);
    if (!sv) return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory");
    sv->plan = pl;
    if (o->router == ORC_MOE_TOKEN_CHOICE) {
        if (!plan_token_choice(ctx, pl, &sv->gate_k, &sv->slot_of)) return NULL;
        const int64_t S = pl->n_slots;
        pl->token = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(S));
        pl->expert = orc_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(S ? S : 1));
        pl->rank = orc_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(S ? S : 1));
        gates = orc_new(ctx, ORC_F32, 1, ORC_SHAPE(S));
        if (!pl->token || !pl->expert || !pl->rank || !gates) return NULL;
        if (!fill_token_slots(ctx, pl, sv->gate_k, sv->slot_of, orc_f32(gates))) return NULL;
    } else {
        if (!plan_expert_choice(ctx, pl, &gates)) return NULL;
    }
    for (int64_t e = 0; e < E; e++) pl->stats.per_expert[e] = pl->offsets[e + 1] - pl->offsets[e];
    /* Each token's slots, ascending (the combine's summation order). */
    const int64_t S = pl->n_slots;
    pl->tok_off = orc_arena_calloc(ctx->arena, (size_t)(N + 1), sizeof(int64_t));
    pl->tok_slots = orc_arena_alloc(ctx->arena, sizeof(int64_t) * (size_t)(S ? S : 1));
    if (!pl->tok_off || !pl->tok_slots) return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory");
    const int32_t *tk = orc_i32(pl->token);
    for (int64_t s = 0; s < S; s++) pl->tok_off[tk[s] + 1]++;
    for (int64_t t = 0; t < N; t++) pl->tok_off[t + 1] += pl->tok_off[t];
    int64_t *fill = malloc(sizeof(int64_t) * (size_t)N);
    if (!fill) return orc_fail(ctx, ORC_ENOMEM, "moe route: out of memory");
    memcpy(fill, pl->tok_off, sizeof(int64_t) * (size_t)N);
    for (int64_t s = 0; s < S; s++) pl->tok_slots[fill[tk[s]]++] = s;
    free(fill);
    if (orc_needs_grad(ctx, 1, &logits)) {
        orc_node *n = orc_record(ctx, "moe route", gates, route_backward, 1, &logits);
        if (!n) return NULL;
        n->saved = sv;
    }
    *plan_out = pl;
    return gates;
}

/* ---- dispatch and combine -------------------------------------------------------- */

orc_tensor *orc_moe_dispatch(orc_ctx *ctx, orc_tensor *x, const orc_moe_plan *plan) {
    if (!plan) return orc_fail(ctx, ORC_EINVAL, "moe dispatch: no plan (routing failed)");
    char b[96];
    if (x && (x->ndim != 2 || x->shape[0] != plan->n_tokens))
        return orc_fail(ctx, ORC_ESHAPE, "moe dispatch: x must be [tokens = %lld, D], got %s",
                        (long long)plan->n_tokens, orc_tensor_desc(b, sizeof b, x));
    return orc_index_select(ctx, x, plan->token);
}

/* Combine in one pass per token (its slots in ascending order, so the sum
 * has one fixed order); backward: dys[s] = gate[s] * dout[token[s]] and
 * dgate[s] = dout[token[s]] . ys[s], one slot per task. */
static void combine_backward(orc_ctx *ctx, orc_node *n) {
    const orc_moe_plan *pl = n->saved;
    orc_tensor *ys = n->in[0], *gates = n->in[1];
    float *gy = orc_grad(ctx, ys), *gg = orc_grad(ctx, gates);
    const int64_t S = pl->n_slots, D = ys->shape[1];
    const float *go = n->out->grad, *y = orc_f32(ys), *g = orc_f32(gates);
    const int32_t *tok = orc_i32(pl->token);
#pragma omp parallel for schedule(static) if (S * D > PAR_MIN)
    for (int64_t s = 0; s < S; s++) {
        const float *o = go + (int64_t)tok[s] * D;
        if (gy) {
            float *d = gy + s * D;
            for (int64_t j = 0; j < D; j++) d[j] += g[s] * o[j];
        }
        if (gg) {
            const float *r = y + s * D;
            float acc = 0;
            for (int64_t j = 0; j < D; j++) acc += o[j] * r[j];
            gg[s] += acc;
        }
    }
}

orc_tensor *orc_moe_combine(orc_ctx *ctx, orc_tensor *ys, orc_tensor *gates, const orc_moe_plan *plan) {
    if (!plan) return orc_fail(ctx, ORC_EINVAL, "moe combine: no plan (routing failed)");
    orc_tensor *in[2] = {ys, gates};
    if (!orc_op_begin(ctx, "moe combine", 2, in)) return NULL;
    char b[96], c[96];
    if (ys->dtype != ORC_F32 || gates->dtype != ORC_F32 || ys->ndim != 2 || ys->shape[0] != plan->n_slots ||
        gates->numel != plan->n_slots)
        return orc_fail(ctx, ORC_ESHAPE, "moe combine: f32 ys %s and gates %s must have %lld slots",
                        orc_tensor_desc(b, sizeof b, ys), orc_tensor_desc(c, sizeof c, gates),
                        (long long)plan->n_slots);
    ys = orc_contiguous(ctx, ys);
    gates = orc_contiguous(ctx, gates);
    if (!ys || !gates) return NULL;
    const int64_t N = plan->n_tokens, D = ys->shape[1];
    orc_tensor *out = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(N, D));
    if (!out) return NULL;
    const float *y = orc_f32(ys), *g = orc_f32(gates);
    float *o = orc_f32(out);
#pragma omp parallel for schedule(static) if (plan->n_slots * D > PAR_MIN)
    for (int64_t t = 0; t < N; t++) {
        float *r = o + t * D;
        memset(r, 0, sizeof(float) * (size_t)D);
        for (int64_t i = plan->tok_off[t]; i < plan->tok_off[t + 1]; i++) {
            const int64_t s = plan->tok_slots[i];
            const float *src = y + s * D;
            for (int64_t j = 0; j < D; j++) r[j] += g[s] * src[j];
        }
    }
    if (orc_needs_grad(ctx, 2, in)) {
        orc_node *n = orc_record(ctx, "moe combine", out, combine_backward, 2, in);
        if (!n) return NULL;
        n->saved = (void *)plan;
    }
    return out;
}

/* ---- auxiliary losses --------------------------------------------------------------- */

/* The plan and the table w[g * E + e] = E f_e / (n_g G): dL/dp[t, e] for
 * every token t of group g. */
typedef struct balance_saved {
    const orc_moe_plan *plan;
    const double *w;
} balance_saved;

static void balance_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const balance_saved *sv = n->saved;
    const orc_moe_plan *pl = sv->plan;
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, gs = pl->group_size;
    const float go = n->out->grad[0];
    const double *w = sv->w;
    float *dp = malloc(sizeof(float) * (size_t)E);
    if (!dp) {
        orc_fail(ctx, ORC_ENOMEM, "moe balance loss: out of memory in backward");
        return;
    }
    for (int64_t t = 0; t < N; t++) {
        const double *wg = w + (t / gs) * E;
        for (int64_t e = 0; e < E; e++) dp[e] = (float)(go * wg[e]);
        softmax_back_row(pl->probs + t * E, dp, gx + t * E, E);
    }
    free(dp);
}

orc_tensor *orc_moe_balance_loss(orc_ctx *ctx, orc_tensor *logits, const orc_moe_plan *pl) {
    if (!orc_op_begin(ctx, "moe balance loss", 1, &logits)) return NULL;
    if (!pl || pl->opts.router != ORC_MOE_TOKEN_CHOICE)
        return orc_fail(ctx, ORC_EINVAL, "moe balance loss: needs a token-choice plan");
    const int64_t N = pl->n_tokens, E = pl->opts.n_experts, gs = pl->group_size, G = pl->n_groups;
    if (logits->ndim != 2 || logits->shape[0] != N || logits->shape[1] != E)
        return orc_fail(ctx, ORC_ESHAPE, "moe balance loss: logits must be [%lld, %lld] like the plan's", (long long)N,
                        (long long)E);
    double *w = orc_arena_calloc(ctx->arena, (size_t)(G * E), sizeof *w);
    double *pm = calloc((size_t)E, sizeof *pm);
    orc_tensor *y = orc_new(ctx, ORC_F32, 0, ORC_SHAPE(1));
    balance_saved *sv = orc_arena_alloc(ctx->arena, sizeof *sv);
    if (!w || !pm || !y || !sv) {
        free(pm);
        return orc_fail(ctx, ORC_ENOMEM, "moe balance loss: out of memory");
    }
    const int64_t k = pl->opts.top_k;
    double total = 0;
    for (int64_t g = 0; g < G; g++) {
        const int64_t t0 = g * gs, t1 = t0 + gs < N ? t0 + gs : N, ng = t1 - t0;
        memset(pm, 0, sizeof(double) * (size_t)E);
        for (int64_t t = t0; t < t1; t++) {
            w[g * E + pl->choice[t * k]] += 1.0; /* top-1 counts for now */
            for (int64_t e = 0; e < E; e++) pm[e] += pl->probs[t * E + e];
        }
        double lg = 0;
        for (int64_t e = 0; e < E; e++) {
            const double f = w[g * E + e] / (double)ng;
            lg += f * (pm[e] / (double)ng);
            w[g * E + e] = (double)E * f / (double)ng / (double)G; /* dL/dp[t, e] for t in the group */
        }
        total += (double)E * lg;
    }
    free(pm);
    orc_f32(y)[0] = (float)(total / (double)G);
    if (orc_needs_grad(ctx, 1, &logits)) {
        orc_node *n = orc_record(ctx, "moe balance loss", y, balance_backward, 1, &logits);
        if (!n) return NULL;
        sv->plan = pl;
        sv->w = w;
        n->saved = sv;
    }
    return y;
}

static void z_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const int64_t N = n->in[0]->shape[0], E = n->in[0]->shape[1];
    const float *x = orc_f32(n->in[0]);
    const double *lse = n->saved;
    const double go = n->out->grad[0];
#pragma omp parallel for schedule(static) if (N * E > PAR_MIN)
    for (int64_t t = 0; t < N; t++) {
        const double c = go * 2.0 * lse[t] / (double)N;
        for (int64_t e = 0; e < E; e++) gx[t * E + e] += (float)(c * exp((double)x[t * E + e] - lse[t]));
    }
}

orc_tensor *orc_moe_z_loss(orc_ctx *ctx, orc_tensor *logits) {
    if (!orc_op_begin(ctx, "moe z loss", 1, &logits)) return NULL;
    char b[96];
    if (logits->dtype != ORC_F32 || logits->ndim != 2 || logits->shape[0] < 1)
        return orc_fail(ctx, ORC_ESHAPE, "moe z loss: logits must be f32 [tokens, experts], got %s",
                        orc_tensor_desc(b, sizeof b, logits));
    logits = orc_contiguous(ctx, logits);
    if (!logits) return NULL;
    const int64_t N = logits->shape[0], E = logits->shape[1];
    double *lse = orc_arena_alloc(ctx->arena, sizeof(double) * (size_t)N);
    orc_tensor *y = orc_new(ctx, ORC_F32, 0, ORC_SHAPE(1));
    if (!lse || !y) return orc_fail(ctx, ORC_ENOMEM, "moe z loss: out of memory");
    const float *x = orc_f32(logits);
#pragma omp parallel for schedule(static) if (N * E > PAR_MIN)
    for (int64_t t = 0; t < N; t++) {
        double m = x[t * E];
        for (int64_t e = 1; e < E; e++) m = x[t * E + e] > m ? x[t * E + e] : m;
        double s = 0;
        for (int64_t e = 0; e < E; e++) s += exp((double)x[t * E + e] - m);
        lse[t] = m + log(s);
    }
    double z = 0;
    for (int64_t t = 0; t < N; t++) z += lse[t] * lse[t];
    orc_f32(y)[0] = (float)(z / (double)N);
    if (orc_needs_grad(ctx, 1, &logits)) {
        orc_node *n = orc_record(ctx, "moe z loss", y, z_backward, 1, &logits);
        if (!n) return NULL;
        n->saved = lse;
    }
    return y;
}
