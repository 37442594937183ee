/* Evaluation of the quantized LM (orchard/quant.h): loss, perplexity and
 * bits per byte of a token stream, with the same windows as orc_eval_ids in
 * src/llm/eval.c (whose API is bound to the float orc_llm) and the same
 * stream, byte count and totals (orc_eval_stream, orc_eval_finish, shared);
 * only the forward differs (orc_qllm_forward), so the numbers of `orchard
 * eval` and `orchard eval-q` compare directly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/ops.h"
#include "orchard/quant.h"

/* NLL of the targets of one window: inputs ids[b .. b+T), targets
 * ids[b+1 .. b+T], target j counted when b+1+j >= first and scored allows. */
static orc_status score_window(orc_ctx *ctx, orc_qllm *q, const int32_t *ids, const uint8_t *scored, size_t b,
                               int64_t T, size_t first, double *sum, int64_t *count, orc_error *err) {
    orc_ctx_reset(ctx);
    orc_tensor *in = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    orc_tensor *tg = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    if (!in || !tg) return orc_error_set(err, ORC_ENOMEM, "eval-q: out of memory");
    int64_t n = 0;
    for (int64_t j = 0; j < T; j++) {
        const size_t pos = b + 1 + (size_t)j;
        orc_i32(in)[j] = ids[b + (size_t)j];
        const bool count_it = pos >= first && (!scored || scored[pos]);
        orc_i32(tg)[j] = count_it ? ids[pos] : ORC_IGNORE_INDEX;
        n += count_it;
    }
    if (n == 0) return ORC_OK;
    orc_tensor *logits = orc_qllm_forward(ctx, q, in, NULL);
    orc_tensor *loss = orc_cross_entropy(ctx, logits, tg, NULL, ORC_IGNORE_INDEX);
    if (!loss || !orc_ctx_ok(ctx))
        return orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "eval-q: %s",
                             ctx->err.code ? ctx->err.msg : "out of memory");
    *sum += (double)orc_f32(loss)[0] * (double)n; /* the op returns the mean over counted targets */
    *count += n;
    return ORC_OK;
}

orc_status orc_qllm_eval_ids(orc_qllm *q, const int32_t *ids, size_t n, const uint8_t *scored, int64_t context,
                             int64_t stride, orc_eval_result *res, orc_error *err) {
    memset(res, 0, sizeof *res);
    const int64_t max_pos = q->cfg.max_position_embeddings;
    if (context <= 0) context = max_pos;
    if (context > max_pos)
        return orc_error_set(err, ORC_EINVAL, "eval-q: context %lld exceeds the model's max_position_embeddings %lld",
                             (long long)context, (long long)max_pos);
    if (stride <= 0) stride = context;
    if (stride > context)
        return orc_error_set(err, ORC_EINVAL, "eval-q: stride %lld exceeds the context %lld (tokens would be skipped)",
                             (long long)stride, (long long)context);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= q->cfg.vocab_size)
            return orc_error_set(err, ORC_ERANGE, "eval-q: token %zu is id %d, outside the model's vocabulary [0, %lld)",
                                 i, (int)ids[i], (long long)q->cfg.vocab_size);
    if (n < 2) {
        orc_eval_finish(res);
        return ORC_OK;
    }
    orc_arena *arena = orc_arena_create(0);
    if (!arena) return orc_error_set(err, ORC_ENOMEM, "eval-q: out of memory");
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    ctx.no_grad = true;
    orc_status st = ORC_OK;
    size_t next = 1; /* the first position not yet scored */
    for (size_t b = 0; next < n && st == ORC_OK; b += (size_t)stride) {
        const int64_t T = (int64_t)(n - 1 - b) < context ? (int64_t)(n - 1 - b) : context;
        st = score_window(&ctx, q, ids, scored, b, T, next, &res->nll_sum, &res->tokens, err);
        next = b + 1 + (size_t)T;
        res->windows++;
    }
    orc_ctx_reset(&ctx);
    orc_arena_destroy(arena);
    orc_eval_finish(res);
    return st;
}

orc_status orc_qllm_eval_texts(orc_qllm *q, const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res,
                               orc_error *err) {
    memset(res, 0, sizeof *res);
    int32_t *ids = NULL;
    uint8_t *scored = NULL;
    size_t n = 0;
    int64_t bytes = 0;
    orc_status st = orc_eval_stream(tok, texts, lens, n_texts, &ids, &scored, &n, &bytes, err);
    if (st == ORC_OK) st = orc_qllm_eval_ids(q, ids, n, scored, context, stride, res, err);
    if (st == ORC_OK) {
        res->bytes = bytes;
        orc_eval_finish(res);
    }
    free(ids);
    free(scored);
    return st;
}
