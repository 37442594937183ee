/* Language-model evaluation (see orchard/generate.h): the summed next-token
 * negative log-likelihood of a token stream, scored in windows of the
 * model's context (non-overlapping by default; a smaller stride overlaps
 * them and each window scores only the tokens no earlier window did, so
 * every token is scored once, with as much left context as the stride
 * gives), and the derived loss, perplexity and bits per byte. Each window is
 * one no-grad forward and orc_cross_entropy, the op training uses, so the
 * numbers match the training loss on the same tokens. The forward is a
 * callback (orc_eval_ids_with), so the quantized LM shares all of this. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/generate.h"
#include "orchard/ops.h"

void orc_eval_finish(orc_eval_result *r) {
    r->loss = r->tokens > 0 ? r->nll_sum / (double)r->tokens : 0.0;
    r->ppl = exp(r->loss);
    r->bits_per_byte = r->bytes > 0 ? r->nll_sum / log(2.0) / (double)r->bytes : 0.0;
}

/* Sum of NLL over the targets of one window: inputs ids[b .. b+T), targets
 * ids[b+1 .. b+T], target j counted when b+1+j >= first and scored allows. */
static orc_status score_window(orc_ctx *ctx, orc_eval_forward_fn forward, void *model, const char *who,
                               const int32_t *ids, const uint8_t *scored, size_t b, int64_t T, size_t first,
                               double *sum, int64_t *count, orc_error *err) {
    orc_ctx_reset(ctx);
    orc_tensor *in = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    orc_tensor *tg = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    if (!in || !tg) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", who);
    int64_t n = 0;
    for (int64_t j = 0; j < T; j++) {
        size_t pos = b + 1 + (size_t)j;
        orc_i32(in)[j] = ids[b + (size_t)j];
        bool count_it = pos >= first && (!scored || scored[pos]);
        orc_i32(tg)[j] = count_it ? ids[pos] : ORC_IGNORE_INDEX;
        n += count_it;
    }
    if (n == 0) return ORC_OK;
    orc_tensor *logits = forward(ctx, model, in);
    orc_tensor *loss = orc_cross_entropy(ctx, logits, tg, NULL, ORC_IGNORE_INDEX);
    if (!loss || !orc_ctx_ok(ctx))
        return orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "%s: %s", who,
                             ctx->err.code ? ctx->err.msg : "out of memory");
    *sum += (double)orc_f32(loss)[0] * (double)n; /* the op returns the mean over counted targets */
    *count += n;
    return ORC_OK;
}

orc_status orc_eval_ids_with(orc_eval_forward_fn forward, void *model, const orc_llm_config *cfg, const char *who,
                             const int32_t *ids, size_t n, const uint8_t *scored, int64_t context, int64_t stride,
                             orc_eval_result *res, orc_error *err) {
    memset(res, 0, sizeof *res);
    const int64_t max_pos = cfg->max_position_embeddings;
    if (context <= 0) context = max_pos;
    if (context > max_pos)
        return orc_error_set(err, ORC_EINVAL, "%s: context %lld exceeds the model's max_position_embeddings %lld", who,
                             (long long)context, (long long)max_pos);
    if (stride <= 0) stride = context;
    if (stride > context)
        return orc_error_set(err, ORC_EINVAL, "%s: stride %lld exceeds the context %lld (tokens would be skipped)",
                             who, (long long)stride, (long long)context);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab_size)
            return orc_error_set(err, ORC_ERANGE, "%s: token %zu is id %d, outside the model's vocabulary [0, %lld)",
                                 who, i, (int)ids[i], (long long)cfg->vocab_size);
    if (n < 2) {
        orc_eval_finish(res);
        return ORC_OK;
    }
    orc_arena *arena = orc_arena_create(0);
    if (!arena) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", who);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    ctx.no_grad = true;
    orc_status st = ORC_OK;
    size_t next = 1; /* the first position not yet scored */
    for (size_t b = 0; next < n && st == ORC_OK; b += (size_t)stride) {
        int64_t T = (int64_t)(n - 1 - b) < context ? (int64_t)(n - 1 - b) : context;
        st = score_window(&ctx, forward, model, who, ids, scored, b, T, next, &res->nll_sum, &res->tokens, err);
        next = b + 1 + (size_t)T;
        res->windows++;
    }
    orc_ctx_reset(&ctx);
    orc_arena_destroy(arena);
    orc_eval_finish(res);
    return st;
}

static orc_tensor *float_forward(orc_ctx *ctx, void *model, orc_tensor *ids) {
    return orc_llm_forward(ctx, model, ids, NULL);
}

orc_status orc_eval_ids(orc_llm *m, const int32_t *ids, size_t n, const uint8_t *scored, int64_t context,
                        int64_t stride, orc_eval_result *res, orc_error *err) {
    return orc_eval_ids_with(float_forward, m, &m->cfg, "eval", ids, n, scored, context, stride, res, err);
}

orc_status orc_eval_stream(const orc_tokenizer *tok, const char *const *texts, const size_t *lens, size_t n_texts,
                           int32_t **ids_out, uint8_t **scored_out, size_t *n_out, int64_t *bytes_out,
                           orc_error *err) {
    *ids_out = NULL;
    *scored_out = NULL;
    *n_out = 0;
    *bytes_out = 0;
    const int32_t bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    size_t n = 0, cap = 1024;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    uint8_t *scored = malloc(cap);
    orc_status st = ids && scored ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "eval: out of memory");
    for (size_t d = 0; d < n_texts && st == ORC_OK; d++) {
        int32_t *t = NULL;
        size_t k = 0;
        st = orc_tokenizer_encode(tok, texts[d], lens[d], 0, &t, &k, err);
        if (st != ORC_OK) break;
        if (n + k + 1 > cap) {
            while (n + k + 1 > cap) cap *= 2;
            int32_t *ni = realloc(ids, sizeof(int32_t) * cap);
            if (ni) ids = ni;
            uint8_t *ns = ni ? realloc(scored, cap) : NULL;
            if (ns) scored = ns;
            if (!ni || !ns) {
                free(t);
                st = orc_error_set(err, ORC_ENOMEM, "eval: out of memory for %zu tokens", n + k + 1);
                break;
            }
        }
        if (bos >= 0) {
            ids[n] = bos;
            scored[n++] = 0;
        }
        for (size_t i = 0; i < k; i++) {
            ids[n] = t[i];
            scored[n++] = 1;
        }
        free(t);
    }
    if (st == ORC_OK && n > 0) scored[0] = 0; /* nothing predicts the stream's first token */
    int64_t bytes = 0;
    for (size_t i = 0; i < n && st == ORC_OK; i++) {
        if (!scored[i]) continue;
        size_t len = 0;
        if (!orc_tokenizer_id_to_token(tok, ids[i], &len))
            st = orc_error_set(err, ORC_ERANGE, "eval: token id %d outside the tokenizer", (int)ids[i]);
        bytes += (int64_t)len;
    }
    if (st != ORC_OK) {
        free(ids);
        free(scored);
        return st;
    }
    *ids_out = ids;
    *scored_out = scored;
    *n_out = n;
    *bytes_out = bytes;
    return ORC_OK;
}

orc_status orc_eval_texts_with(orc_eval_forward_fn forward, void *model, const orc_llm_config *cfg, const char *who,
                               const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res,
                               orc_error *err) {
    memset(res, 0, sizeof *res);
    int32_t *ids = NULL;
    uint8_t *scored = NULL;
    size_t n = 0;
    int64_t bytes = 0;
    orc_status st = orc_eval_stream(tok, texts, lens, n_texts, &ids, &scored, &n, &bytes, err);
    if (st == ORC_OK) st = orc_eval_ids_with(forward, model, cfg, who, ids, n, scored, context, stride, res, err);
    if (st == ORC_OK) {
        res->bytes = bytes;
        orc_eval_finish(res);
    }
    free(ids);
    free(scored);
    return st;
}

orc_status orc_eval_texts(orc_llm *m, const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                          size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res, orc_error *err) {
    return orc_eval_texts_with(float_forward, m, &m->cfg, "eval", tok, texts, lens, n_texts, context, stride, res,
                               err);
}
