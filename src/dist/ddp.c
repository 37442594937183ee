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
 * layout. The all-reduce runs after the last backward of a step, not
 * overlapped with it: the autograd tape has no per-parameter "gradient
 * ready" hook (docs/distributed.md). A test hook, ORCHARD_DIST_FAULT =
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
};

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

double orc_ddp_sync_grads(orc_ddp *d, double max_norm, orc_error *err) {
    d->syncs++;
    fault_hook(d);
    orc_comm *c = d->comm;
    if (!d->zero) {
        for (int64_t a = 0; a < d->total; a += d->bucket_floats) {
            int64_t b = a + d->bucket_floats < d->total ? a + d->bucket_floats : d->total;
            move_range(d, true, a, b, d->bucket, true);
            if (orc_allreduce_f32(c, d->bucket, b - a, ORC_REDUCE_SUM, err) != ORC_OK) return NAN;
            move_range(d, true, a, b, d->bucket, false);
        }
        return max_norm > 0 ? orc_clip_grad_norm(d->params, d->n, max_norm) : orc_grad_norm(d->params, d->n);
    }
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
