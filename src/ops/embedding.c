/* Token embedding lookup: orc_embedding gathers rows of a [V, D] table by
 * int32 ids. Every id is checked before anything is written, and the first
 * bad one is reported with its position. Backward scatter-adds the output
 * gradient rows into the table's gradient; repeated ids make that a
 * reduction, so the work is split by column blocks and each column is summed
 * in token order, the same for any thread count. */
#include "orchard/ops.h"

#include <stdio.h>
#include <string.h>

/* Columns per parallel work item in backward. */
#define EMB_COL_BLOCK 16

/* iattr: 0 tokens, 1 D. saved: the ids (int32, tokens of them). */
static void embedding_backward(orc_ctx *ctx, orc_node *n) {
    float *gt = orc_grad(ctx, n->in[0]);
    if (!gt) return;
    const int64_t tokens = n->iattr[0], d = n->iattr[1];
    const int32_t *ids = n->saved;
    const float *g = n->out->grad;
    const int64_t nblk = (d + EMB_COL_BLOCK - 1) / EMB_COL_BLOCK;
#pragma omp parallel for schedule(static) if (tokens * d > 32768)
    for (int64_t bl = 0; bl < nblk; bl++) {
        const int64_t j0 = bl * EMB_COL_BLOCK, j1 = j0 + EMB_COL_BLOCK < d ? j0 + EMB_COL_BLOCK : d;
        for (int64_t t = 0; t < tokens; t++) {
            float *dst = gt + (int64_t)ids[t] * d;
            const float *src = g + t * d;
            for (int64_t j = j0; j < j1; j++) dst[j] += src[j];
        }
    }
}

/* Format flat index i of a tensor with shape sh as "[a, b, c]". */
static void position_str(char *buf, size_t cap, int ndim, const int64_t *sh, int64_t i) {
    int64_t idx[ORC_MAX_DIMS] = {0};
    for (int k = ndim - 1; k >= 0; k--) {
        idx[k] = sh[k] ? i % sh[k] : 0;
        i = sh[k] ? i / sh[k] : 0;
    }
    orc_shape_str(buf, cap, ndim, idx);
}

orc_tensor *orc_embedding(orc_ctx *ctx, orc_tensor *table, orc_tensor *ids) {
    orc_tensor *in[2] = {table, ids};
    if (!orc_op_begin(ctx, "embedding", 2, in)) return NULL;
    if (table->dtype != ORC_F32 || ids->dtype != ORC_I32)
        return orc_fail(ctx, ORC_EDTYPE, "embedding: want an f32 table and int32 ids, got %s and %s",
                        orc_dtype_name(table->dtype), orc_dtype_name(ids->dtype));
    char ts[96], is[96];
    orc_shape_str(ts, sizeof ts, table->ndim, table->shape);
    orc_shape_str(is, sizeof is, ids->ndim, ids->shape);
    if (table->ndim != 2) return orc_fail(ctx, ORC_ESHAPE, "embedding: table %s must be [V, D]", ts);
    if (ids->ndim > ORC_MAX_DIMS - 1)
        return orc_fail(ctx, ORC_ESHAPE, "embedding: ids %s have more than %d axes", is, ORC_MAX_DIMS - 1);
    table = orc_contiguous(ctx, table);
    ids = orc_contiguous(ctx, ids);
    if (!table || !ids) return NULL;
    const int64_t V = table->shape[0], D = table->shape[1], tokens = ids->numel;
    const int32_t *id = orc_i32(ids);
    for (int64_t t = 0; t < tokens; t++)
        if (id[t] < 0 || id[t] >= V) {
            char pos[96];
            position_str(pos, sizeof pos, ids->ndim, ids->shape, t);
            return orc_fail(ctx, ORC_ERANGE,
                            "embedding: id %d at position %s of ids %s is outside [0, %lld) for table %s", (int)id[t],
                            pos, is, (long long)V, ts);
        }

    int64_t shape[ORC_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = D;
    orc_tensor *y = orc_new(ctx, ORC_F32, ids->ndim + 1, shape);
    if (!y) return NULL;
    const float *td = orc_f32(table);
    float *yd = orc_f32(y);
#pragma omp parallel for schedule(static) if (tokens * D > 32768)
    for (int64_t t = 0; t < tokens; t++) memcpy(yd + t * D, td + (int64_t)id[t] * D, sizeof(float) * (size_t)D);

    if (orc_needs_grad(ctx, 1, &table)) {
        orc_node *n = orc_record(ctx, "embedding", y, embedding_backward, 1, &table);
        if (!n) return NULL;
        /* Own copy: the caller may refill its ids buffer before backward. */
        int32_t *saved = orc_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(tokens ? tokens : 1));
        if (!saved) return orc_fail(ctx, ORC_ENOMEM, "embedding: out of memory saving ids");
        memcpy(saved, id, sizeof(int32_t) * (size_t)tokens);
        n->saved = saved;
        n->iattr[0] = tokens;
        n->iattr[1] = D;
    }
    return y;
}
