/* Data parallelism (orchard/dist.h): identical initial parameters by
 * broadcast, the gradient all-reduce in fixed-size buckets (parameters are
 * packed in their fixed order into a bucket, summed, unpacked), the global
 * norm and clipping, and ZeRO-1: the parameters are viewed as one flat
 * vector padded to a multiple of the rank count, each rank owns one
 * contiguous slice; gradients are reduce-scattered into that slice, the
 * optimizer updates only 1-D "pieces" (the parameters' parts inside the
 * slice, whose data point into the parameters themselves), and the updated
 * slices are all-gathered back. The optimizer state therefore exists only
 * for the slice; orc_ddp_full_state gathers it into the normal checkpoint
 * layout. Without ZeRO the all-reduce can overlap the last backward of a
 * step: orc_ddp_overlap_begin finds on the tape the last node (in backward
 * order) that takes each parameter, and the backward hook starts a bucket's
 * non-blocking all-reduce once all of its parameters are past that node;
 * buckets start in descending order whatever the graph, so every rank
 * issues the same collectives in the same order, and each bucket is the
 * same values summed by the same call as without overlap (the same bits).
 * A test hook, ORCHARD_DIST_FAULT =
 * "exit:RANK:N" or "hang:RANK:N", makes world rank RANK exit or stop
 * responding at its N-th gradient sync, for the dead-rank tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orchard/arena.h"
#include "orchard/dist.h"

struct orc_ddp {
    orc_comm *comm;
    int zero;
    int64_t bucket_floats;
    orc_tensor **params;
    int n;
    int64_t *offset;          /* [n + 1] flat offsets */
    int64_t total, padded, lo, shard_n;
    float *bucket;            /* zero 0: one bucket; zero 1: the padded flat vector */
    float *shard_grad, *shard_buf;
    orc_arena *arena;         /* piece headers */
    orc_tensor **pieces;
    int *piece_src;           /* parameter index of each piece */
    int64_t *piece_at;        /* offset of each piece inside the shard */
    int n_pieces;
    int64_t syncs;
    /* Overlap (zero 0): per-bucket buffers (the flat gradient), requests,
     * parameters left before a bucket is final, a hash of what was packed
     * (checked after the wait: a gradient changed after its last recorded
     * use would otherwise go unsynced silently), each parameter's last tape
     * position, parameters in order of it, and the first error. */
    bool overlap;
    int64_t n_buckets, next_bucket; /* buckets >= next_bucket are started */
    float *flat;
    void **req;
    int *pending;
    uint64_t *packed_hash;
    int64_t *last_k;
    int *order;
    int next_param;
    orc_status ov_st;
    orc_error ov_err;
    int64_t early; /* buckets started inside backward, over all steps */
};

int64_t orc_ddp_early_buckets(const orc_ddp *d) { return d->early; }

int orc_ddp_zero(const orc_ddp *d) { return d->zero; }
int64_t orc_ddp_param_offset(const orc_ddp *d, int i) { return d->offset[i]; }
const orc_tensor *orc_ddp_piece_source(const orc_ddp *d, int i) {
    return d->zero ? d->params[d->piece_src[i]] : d->params[i];
}

orc_tensor **orc_ddp_opt_params(orc_ddp *d, int *n) {
    *n = d->zero ? d->n_pieces : d->n;
    return d->zero ? d->pieces : d->params;
}

void orc_ddp_free(orc_ddp *d) {
    if (!d) return;
    free(d->params);
    free(d->offset);
    free(d->bucket);
    free(d->shard_grad);
    free(d->shard_buf);
    free(d->pieces);
    free(d->piece_src);
    free(d->piece_at);
    free(d->flat);
    free(d->req);
    free(d->pending);
    free(d->packed_hash);
    free(d->last_k);
    free(d->order);
    if (d->arena) orc_arena_destroy(d->arena);
    free(d);
}

static orc_status build_pieces(orc_ddp *d, orc_error *err) {
    d->pieces = calloc((size_t)d->n, sizeof *d->pieces);
    d->piece_src = calloc((size_t)d->n, sizeof *d->piece_src);
    d->piece_at = calloc((size_t)d->n, sizeof *d->piece_at);
    d->arena = orc_arena_create((size_t)64 << 10);
    if (!d->pieces || !d->piece_src || !d->piece_at || !d->arena)
        return orc_error_set(err, ORC_ENOMEM, "zero-1: out of memory");
    const int64_t hi = d->lo + d->shard_n;
    for (int i = 0; i < d->n; i++) {
        int64_t a = d->offset[i] > d->lo ? d->offset[i] : d->lo;
        int64_t b = d->offset[i + 1] < hi ? d->offset[i + 1] : hi;
        if (a >= b) continue;
        orc_tensor *p = orc_tensor_wrap(d->arena, ORC_F32, 1, ORC_SHAPE(b - a),
                                        orc_f32(d->params[i]) + (a - d->offset[i]), err);
        if (!p) return err ? err->code : ORC_ENOMEM;
        p->requires_grad = true;
        p->is_param = true;
        p->grad = d->shard_grad + (a - d->lo);
        p->name = d->params[i]->name;
        d->piece_src[d->n_pieces] = i;
        d->piece_at[d->n_pieces] = a - d->lo;
        d->pieces[d->n_pieces++] = p;
    }
    return ORC_OK;
}

orc_ddp *orc_ddp_new(orc_comm *comm, orc_tensor *const *params, int n, int zero, size_t bucket_bytes,
                     orc_error *err) {
    if (zero != 0 && zero != 1) {
        orc_error_set(err, ORC_EINVAL, "--zero %d: only 0 and 1 are supported", zero);
        return NULL;
    }
    orc_ddp *d = calloc(1, sizeof *d);
    if (!d) goto oom;
    d->comm = comm;
    d->zero = zero;
    d->n = n;
    d->bucket_floats = (int64_t)((bucket_bytes ? bucket_bytes : (size_t)4 << 20) / sizeof(float));
    d->params = calloc((size_t)(n ? n : 1), sizeof *d->params);
    d->offset = calloc((size_t)n + 1, sizeof *d->offset);
    if (!d->params || !d->offset) goto oom;
    for (int i = 0; i < n; i++) {
        if (!params[i] || !params[i]->grad || params[i]->dtype != ORC_F32) {
            orc_error_set(err, ORC_EINVAL, "data parallel: parameter %d (%s) is not a float32 tensor with a gradient",
                          i, params[i] && params[i]->name ? params[i]->name : "?");
            orc_ddp_free(d);
            return NULL;
        }
        d->params[i] = params[i];
        d->offset[i + 1] = d->offset[i] + params[i]->numel;
    }
    d->total = d->offset[n];
    const int P = comm->size;
    d->padded = (d->total + P - 1) / P * P;
    d->shard_n = d->padded / P;
    d->lo = d->shard_n * comm->rank;
    if (zero) {
        d->bucket = calloc((size_t)(d->padded ? d->padded : 1), sizeof(float));
        d->shard_grad = calloc((size_t)(d->shard_n ? d->shard_n : 1), sizeof(float));
        d->shard_buf = calloc((size_t)(d->shard_n ? d->shard_n : 1), sizeof(float));
        if (!d->bucket || !d->shard_grad || !d->shard_buf) goto oom;
        if (build_pieces(d, err) != ORC_OK) {
            orc_ddp_free(d);
            return NULL;
        }
    } else {
        d->bucket = malloc(sizeof(float) * (size_t)d->bucket_floats);
        if (!d->bucket) goto oom;
    }
    return d;
oom:
    orc_ddp_free(d);
    orc_error_set(err, ORC_ENOMEM, "data parallel: out of memory");
    return NULL;
}

orc_status orc_ddp_broadcast_params(orc_ddp *d, orc_error *err) {
    for (int i = 0; i < d->n; i++) {
        orc_status st = orc_broadcast(d->comm, d->params[i]->data, sizeof(float) * (size_t)d->params[i]->numel, 0, err);
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

/* Copy flat range [a, b) between the parameters' buffers (grad or data) and
 * dst/src. to_flat: params -> flat. */
static void move_range(orc_ddp *d, bool grads, int64_t a, int64_t b, float *flat, bool to_flat) {
    for (int i = 0; i < d->n; i++) {
        int64_t s = d->offset[i] > a ? d->offset[i] : a;
        int64_t e = d->offset[i + 1] < b ? d->offset[i + 1] : b;
        if (s >= e) continue;
        float *p = (grads ? d->params[i]->grad : orc_f32(d->params[i])) + (s - d->offset[i]);
        if (to_flat) memcpy(flat + (s - a), p, sizeof(float) * (size_t)(e - s));
        else memcpy(p, flat + (s - a), sizeof(float) * (size_t)(e - s));
    }
}

static void fault_hook(orc_ddp *d) {
    const char *f = getenv("ORCHARD_DIST_FAULT");
    if (!f) return;
    char kind[8] = "";
    int rank = -1;
    long at = 0;
    if (sscanf(f, "%7[a-z]:%d:%ld", kind, &rank, &at) != 3 || rank != d->comm->world_rank || at != d->syncs) return;
    if (!strcmp(kind, "exit")) {
        fprintf(stderr, "orchard: rank %d: ORCHARD_DIST_FAULT: exiting at gradient sync %ld\n", rank, at);
        fflush(stderr);
        _exit(7);
    }
    if (!strcmp(kind, "hang")) {
        fprintf(stderr, "orchard: rank %d: ORCHARD_DIST_FAULT: hanging at gradient sync %ld\n", rank, at);
        fflush(stderr);
        for (;;) pause();
    }
}

static double shard_sumsq(const float *g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

/* ---- overlap with backward ---------------------------------------------------------- */

/* A checksum of n floats that sit at flat positions at.. : the sum of the
 * words and the position-weighted sum (so any single changed value and any
 * swap shows), both loops the compiler vectorises; cheap next to packing. */
static void checksum_add(uint64_t s[2], const float *p, int64_t n, int64_t at) {
    const uint32_t *w = (const uint32_t *)(const void *)p;
    uint64_t a = 0, b = 0;
    for (int64_t i = 0; i < n; i++) {
        a += w[i];
        b += (uint64_t)w[i] * (uint64_t)(at + i + 1);
    }
    s[0] += a;
    s[1] += b;
}

/* The checksum of the parameters' gradients over flat range [a, e), read
 * in place (no copy). */
static uint64_t grads_checksum(const orc_ddp *d, int64_t a, int64_t e) {
    uint64_t s[2] = {0, 0};
    for (int i = 0; i < d->n; i++) {
        int64_t lo = d->offset[i] > a ? d->offset[i] : a, hi = d->offset[i + 1] < e ? d->offset[i + 1] : e;
        if (lo < hi) checksum_add(s, d->params[i]->grad + (lo - d->offset[i]), hi - lo, lo);
    }
    return s[0] ^ (s[1] * 0x9e3779b97f4a7c15ull);
}

static void bucket_range(const orc_ddp *d, int64_t b, int64_t *a, int64_t *e) {
    *a = b * d->bucket_floats;
    *e = *a + d->bucket_floats < d->total ? *a + d->bucket_floats : d->total;
}

/* Start every bucket from the highest down while each is final (pending 0). */
static void start_ready(orc_ddp *d, bool all) {
    while (d->next_bucket > 0 && d->ov_st == ORC_OK && (all || d->pending[d->next_bucket - 1] == 0)) {
        int64_t b = --d->next_bucket, a, e;
        bucket_range(d, b, &a, &e);
        move_range(d, true, a, e, d->flat + a, true);
        d->packed_hash[b] = grads_checksum(d, a, e); /* hot in cache right after the copy */
        d->ov_st = d->comm->vt->iallreduce_sum_f32(d->comm, d->flat + a, e - a, &d->req[b], &d->ov_err);
    }
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const orc_tensor *const *)a)[0], y = (uintptr_t)((const orc_tensor *const *)b)[0];
    return x < y ? -1 : x > y;
}

static const int64_t *cmp_last_k; /* qsort has no user pointer; set around the call */
static int cmp_order(const void *a, const void *b) {
    int64_t x = cmp_last_k[*(const int *)a], y = cmp_last_k[*(const int *)b];
    return x < y ? -1 : x > y ? 1 : *(const int *)a - *(const int *)b;
}

orc_status orc_ddp_overlap_begin(orc_ddp *d, const orc_ctx *ctx, orc_error *err) {
    d->overlap = false;
    if (d->zero || d->total == 0) return ORC_OK; /* ZeRO-1 reduce-scatters the whole vector after backward */
    d->n_buckets = (d->total + d->bucket_floats - 1) / d->bucket_floats;
    if (!d->flat) {
        d->flat = malloc(sizeof(float) * (size_t)d->total);
        d->req = calloc((size_t)d->n_buckets, sizeof *d->req);
        d->pending = calloc((size_t)d->n_buckets, sizeof *d->pending);
        d->packed_hash = calloc((size_t)d->n_buckets, sizeof *d->packed_hash);
        d->last_k = calloc((size_t)d->n, sizeof *d->last_k);
        d->order = calloc((size_t)d->n, sizeof *d->order);
        if (!d->flat || !d->req || !d->pending || !d->packed_hash || !d->last_k || !d->order)
            return orc_error_set(err, ORC_ENOMEM, "data parallel: out of memory for the overlapped all-reduce");
    }
    /* Parameter lookup by address: a sorted copy, index recovered by offset. */
    orc_tensor **sorted = malloc(sizeof *sorted * (size_t)d->n);
    if (!sorted) return orc_error_set(err, ORC_ENOMEM, "data parallel: out of memory");
    memcpy(sorted, d->params, sizeof *sorted * (size_t)d->n);
    qsort(sorted, (size_t)d->n, sizeof *sorted, cmp_ptr);
    for (int i = 0; i < d->n; i++) d->last_k[i] = -1;
    int64_t k = 0;
    for (const orc_node *nd = ctx->tape; nd; nd = nd->prev, k++)
        for (int j = 0; j < nd->n_in; j++) {
            orc_tensor *key = nd->in[j];
            orc_tensor **hit = key ? bsearch(&key, sorted, (size_t)d->n, sizeof *sorted, cmp_ptr) : NULL;
            if (!hit) continue;
            for (int i = 0; i < d->n; i++) /* duplicates are impossible; map the pointer back once */
                if (d->params[i] == *hit) {
                    d->last_k[i] = k;
                    break;
                }
        }
    free(sorted);
    for (int i = 0; i < d->n; i++) d->order[i] = i;
    cmp_last_k = d->last_k;
    qsort(d->order, (size_t)d->n, sizeof *d->order, cmp_order);
    memset(d->pending, 0, sizeof *d->pending * (size_t)d->n_buckets);
    for (int i = 0; i < d->n; i++)
        if (d->offset[i + 1] > d->offset[i])
            for (int64_t b = d->offset[i] / d->bucket_floats; b <= (d->offset[i + 1] - 1) / d->bucket_floats; b++)
                d->pending[b]++;
    d->next_bucket = d->n_buckets;
    d->next_param = 0;
    d->ov_st = ORC_OK;
    orc_error_clear(&d->ov_err);
    d->overlap = true;
    orc_ddp_overlap_hook(d, -1); /* parameters no node takes are final already */
    return ORC_OK;
}

void orc_ddp_overlap_hook(void *user, int64_t k) {
    orc_ddp *d = user;
    if (!d->overlap || d->ov_st != ORC_OK) return;
    bool any = false;
    while (d->next_param < d->n && d->last_k[d->order[d->next_param]] <= k) {
        int i = d->order[d->next_param++];
        if (d->offset[i + 1] > d->offset[i])
            for (int64_t b = d->offset[i] / d->bucket_floats; b <= (d->offset[i + 1] - 1) / d->bucket_floats; b++)
                d->pending[b]--;
        any = true;
    }
    if (any) {
        int64_t before = d->next_bucket;
        start_ready(d, false);
        if (k >= 0) d->early += before - d->next_bucket;
    }
    /* Let the started ones progress (OpenMPI moves them only inside MPI calls). */
    for (int64_t b = d->next_bucket; b < d->n_buckets && d->ov_st == ORC_OK; b++) {
        bool done = false;
        d->ov_st = d->comm->vt->test(d->comm, d->req[b], &done, &d->ov_err);
        if (!done) break;
    }
}

/* Start what backward left, wait for every bucket (in start order), check
 * that nothing changed after it was packed, unpack. */
static orc_status overlap_finish(orc_ddp *d, orc_error *err) {
    d->overlap = false;
    start_ready(d, true);
    orc_status st = d->ov_st;
    if (st != ORC_OK) orc_error_set(err, st, "%s", d->ov_err.msg);
    for (int64_t b = d->n_buckets - 1; b >= 0; b--) {
        int64_t a, e;
        bucket_range(d, b, &a, &e);
        if (st == ORC_OK) { /* a failed start leaves later buckets unstarted: their req is NULL */
            if (grads_checksum(d, a, e) != d->packed_hash[b])
                st = orc_error_set(err, ORC_EINVAL, "data parallel: a gradient in floats %lld..%lld changed after the "
                                   "backward node that last uses its parameter; set ORCHARD_DIST_OVERLAP=0",
                                   (long long)a, (long long)e);
        }
        orc_status w = d->comm->vt->wait(d->comm, d->req[b], e - a, err);
        d->req[b] = NULL;
        if (st == ORC_OK) st = w;
        if (st == ORC_OK) move_range(d, true, a, e, d->flat + a, false);
    }
    return st;
}

double orc_ddp_sync_grads(orc_ddp *d, double max_norm, orc_error *err) {
    d->syncs++;
    fault_hook(d);
    orc_comm *c = d->comm;
    if (d->overlap) {
        if (overlap_finish(d, err) != ORC_OK) return NAN;
        return max_norm > 0 ? orc_clip_grad_norm(d->params, d->n, max_norm) : orc_grad_norm(d->params, d->n);
    }
    if (!d->zero && c->size > 1) { /* one rank: the sum is the gradient itself, nothing to move */
        for (int64_t a = 0; a < d->total; a += d->bucket_floats) {
            int64_t b = a + d->bucket_floats < d->total ? a + d->bucket_floats : d->total;
            move_range(d, true, a, b, d->bucket, true);
            if (orc_allreduce_f32(c, d->bucket, b - a, ORC_REDUCE_SUM, err) != ORC_OK) return NAN;
            move_range(d, true, a, b, d->bucket, false);
        }
    }
    if (!d->zero) return max_norm > 0 ? orc_clip_grad_norm(d->params, d->n, max_norm) : orc_grad_norm(d->params, d->n);
    memset(d->bucket + d->total, 0, sizeof(float) * (size_t)(d->padded - d->total));
    move_range(d, true, 0, d->total, d->bucket, true);
    if (orc_reduce_scatter_f32(c, d->bucket, d->shard_grad, d->shard_n, ORC_REDUCE_SUM, err) != ORC_OK) return NAN;
    double ss = shard_sumsq(d->shard_grad, d->shard_n);
    if (orc_allreduce_f64(c, &ss, 1, ORC_REDUCE_SUM, err) != ORC_OK) return NAN;
    double norm = sqrt(ss);
    if (max_norm > 0 && isfinite(norm) && norm > max_norm) {
        const float k = (float)(max_norm / (norm + 1e-6));
        for (int64_t i = 0; i < d->shard_n; i++) d->shard_grad[i] *= k;
    }
    return norm;
}

orc_status orc_ddp_after_step(orc_ddp *d, orc_error *err) {
    if (!d->zero) return ORC_OK;
    const int64_t hi = d->lo + d->shard_n < d->total ? d->lo + d->shard_n : d->total;
    memset(d->shard_buf, 0, sizeof(float) * (size_t)d->shard_n);
    if (hi > d->lo) move_range(d, false, d->lo, hi, d->shard_buf, true);
    orc_status st = orc_allgather(d->comm, d->shard_buf, sizeof(float) * (size_t)d->shard_n, d->bucket, err);
    if (st == ORC_OK) move_range(d, false, 0, d->total, d->bucket, false);
    return st;
}

static const char *KIND_SUFFIX[2] = {".exp_avg", ".exp_avg_sq"};

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int piece_index(const orc_ddp *d, const orc_tensor *p) {
    for (int i = 0; i < d->n_pieces; i++)
        if (d->pieces[i] == p) return i;
    return -1;
}

const float *orc_ddp_full_state(orc_ddp *d, orc_optim *opt, int kind, orc_error *err) {
    if (!d->zero || kind < 0 || kind > 1) {
        orc_error_set(err, ORC_EINVAL, "zero-1 state: not sharded or bad kind %d", kind);
        return NULL;
    }
    memset(d->shard_buf, 0, sizeof(float) * (size_t)d->shard_n);
    int n = orc_optim_state_count(opt);
    for (int i = 0; i < n; i++) {
        orc_optim_state s = orc_optim_state_get(opt, i);
        int k = piece_index(d, s.param);
        if (k < 0 || !has_suffix(s.name, KIND_SUFFIX[kind])) continue;
        memcpy(d->shard_buf + d->piece_at[k], s.data, sizeof(float) * (size_t)s.numel);
    }
    if (orc_allgather(d->comm, d->shard_buf, sizeof(float) * (size_t)d->shard_n, d->bucket, err) != ORC_OK)
        return NULL;
    return d->bucket;
}

orc_status orc_ddp_load_state(orc_ddp *d, orc_optim *opt, int kind, const float *flat, orc_error *err) {
    if (!d->zero || kind < 0 || kind > 1)
        return orc_error_set(err, ORC_EINVAL, "zero-1 state: not sharded or bad kind %d", kind);
    int n = orc_optim_state_count(opt);
    for (int i = 0; i < n; i++) {
        orc_optim_state s = orc_optim_state_get(opt, i);
        int k = piece_index(d, s.param);
        if (k < 0 || !has_suffix(s.name, KIND_SUFFIX[kind])) continue;
        memcpy(s.data, flat + d->lo + d->piece_at[k], sizeof(float) * (size_t)s.numel);
    }
    return ORC_OK;
}
