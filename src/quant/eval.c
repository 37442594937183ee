/* Evaluation of the quantized LM (orchard/quant.h): loss, perplexity and
 * bits per byte through the float evaluator's windows, stream, byte count
 * and totals (orc_eval_ids_with / orc_eval_texts_with in src/llm/eval.c);
 * only the forward differs (orc_qllm_forward), so the numbers of `orchard
 * eval` and `orchard eval-q` compare directly. */
#include "orchard/generate.h"
#include "orchard/quant.h"

static orc_tensor *quant_forward(orc_ctx *ctx, void *model, orc_tensor *ids) {
    return orc_qllm_forward(ctx, model, ids, NULL);
}

orc_status orc_qllm_eval_ids(orc_qllm *q, const int32_t *ids, size_t n, const uint8_t *scored, int64_t context,
                             int64_t stride, orc_eval_result *res, orc_error *err) {
    return orc_eval_ids_with(quant_forward, q, &q->cfg, "eval-q", ids, n, scored, context, stride, res, err);
}

orc_status orc_qllm_eval_texts(orc_qllm *q, const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res,
                               orc_error *err) {
    return orc_eval_texts_with(quant_forward, q, &q->cfg, "eval-q", tok, texts, lens, n_texts, context, stride, res,
                               err);
}
