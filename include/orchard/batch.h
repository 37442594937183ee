/* orchard/batch.h: batched inference, the engine under continuous batching
 * (`orchard serve`) and under particle methods (TSMC).
 *
 * Three pieces. (1) The KV pool: keys and values of many sequences in pages
 * of ORC_KV_PAGE positions. A page holds every layer's keys and values for
 * its positions: floats [n_layers][2 (k, v)][ORC_KV_PAGE][n_kv_heads *
 * head_dim], page_bytes = 8 * L * ORC_KV_PAGE * Hkv * hd. A sequence is a
 * length, its token ids and a table of page numbers; pages are reference
 * counted, so fork and copy share every page (cost: the page table, no key
 * is copied or recomputed) and a shared page is copied only when a sequence
 * writes into it (copy-on-write of the one partly filled page: at most
 * page_bytes). Pages are allocated on first use up to the pool's page limit
 * and reused after a sequence frees them. (2) The step: one forward for B
 * sequences of different lengths, each appending n_i >= 1 tokens at its own
 * positions (decode: one each; a newly joined sequence may prefill its whole
 * prompt in the same step). The projections and the feed-forward of every
 * sequence with at most ORC_STEP_SKINNY tokens run as one matrix pass that
 * reads each weight row once for all their rows; a longer chunk (a prefill)
 * gets its own product. Attention runs per sequence over its own pages.
 * (3) The batch generator: requests with their own sampler settings, seeds,
 * stop ids, stop strings and token budgets that join and leave between
 * steps.
 *
 * Bits: every row of the step is computed exactly as the single-sequence
 * forward computes it (the same kernels with the same blocking: a product of
 * <= 4 rows per weight row, sgemm tiles chosen from the chunk's own shape,
 * the attention blocks of orc_attention), so a sequence's logits are the
 * same bits as orc_generator_feed() with the same chunks, whatever else
 * shares the step and for any thread count, and orc_batch_gen produces the
 * same ids as orc_generate() for the same prompt, settings and seed.
 * LoRA adapters are chosen per sequence (orc_llm_step_adapters, S-LoRA
 * style): the base projections run once for all rows, then each group of
 * rows with the same stack adds its deltas (rows with no adapter pay
 * nothing), computed per row as the model's forward computes them, so the
 * bitwise claim holds with adapters too: a sequence's logits are those of
 * orc_generator_feed() on a model whose active stack (orc_llm_set_adapters)
 * is that sequence's. A KV sequence filled under one stack is not valid
 * under another; keeping them apart is the caller's part. Models with
 * mixture-of-experts layers are refused (ORC_EUNSUPPORTED).
 *
 * Threads: a pool, a step and a batch generator are used by one thread at a
 * time; the kernels under them are parallel. */
#ifndef ORCHARD_BATCH_H
#define ORCHARD_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/generate.h"
#include "orchard/llm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Positions per page: a multiple of the attention's key block (64), so each
 * block of keys lies in one page. */
#define ORC_KV_PAGE 64
/* A sequence with at most this many new tokens in a step shares the step's
 * one pass over the weights (matches orc_linear's small-product path). */
#define ORC_STEP_SKINNY 4

/* ---- the KV pool ------------------------------------------------------------ */

typedef struct orc_kv_pool orc_kv_pool;

typedef struct orc_kv_pool_stats {
    int64_t page_bytes;      /* one page, every layer's keys and values */
    int64_t pages_max;       /* the pool's limit */
    int64_t pages_used;      /* referenced by at least one sequence */
    int64_t pages_allocated; /* memory held: allocated pages, used or free */
    int64_t sequences;       /* live sequences */
    int64_t max_len;         /* positions one sequence may hold */
} orc_kv_pool_stats;

/* A pool for cfg's shapes. max_len: positions per sequence (<= 0: the
 * model's max_position_embeddings; never more). max_pages: the page limit
 * (<= 0: 16 full-length sequences' worth). Memory is taken page by page as
 * sequences grow. */
orc_kv_pool *orc_kv_pool_new(const orc_llm_config *cfg, int64_t max_len, int64_t max_pages, orc_error *err);
void orc_kv_pool_free(orc_kv_pool *p);
void orc_kv_pool_get_stats(const orc_kv_pool *p, orc_kv_pool_stats *s);

/* Sequences are small integers (>= 0), reused after orc_kv_seq_free. A
 * function given a number that is not a live sequence fails with ORC_EINVAL
 * naming it. */
int32_t orc_kv_seq_new(orc_kv_pool *p, orc_error *err); /* empty; -1 on failure */
orc_status orc_kv_seq_free(orc_kv_pool *p, int32_t seq, orc_error *err);
/* A new sequence equal to src (its tokens and keys), sharing src's pages:
 * O(pages) and no page is copied until one of the two writes into a shared
 * one. -1 on failure. */
int32_t orc_kv_seq_fork(orc_kv_pool *p, int32_t src, orc_error *err);
/* Make dst equal to src (resampling particles: dst's own pages are released,
 * src's are shared). dst == src does nothing. */
orc_status orc_kv_seq_copy(orc_kv_pool *p, int32_t dst, int32_t src, orc_error *err);
/* Resampling all particles at once: afterwards seqs[i] equals what
 * seqs[ancestors[i]] was before (ancestors[i] in [0, n)), for every i
 * together, however the ancestors overlap (copying one by one with
 * orc_kv_seq_copy would read an already overwritten particle). Shares
 * pages; no key is copied. On failure (an unknown or repeated sequence, an
 * ancestor out of range, out of memory) the particles are unchanged. */
orc_status orc_kv_seq_resample(orc_kv_pool *p, const int32_t *seqs, const int64_t *ancestors, int64_t n,
                               orc_error *err);
/* Keep the first len positions (0 <= len <= the length; ORC_ERANGE
 * otherwise); pages past them are released. */
orc_status orc_kv_seq_truncate(orc_kv_pool *p, int32_t seq, int64_t len, orc_error *err);
/* Positions filled, or -1 for a number that is not a live sequence. */
int64_t orc_kv_seq_len(const orc_kv_pool *p, int32_t seq);
/* The ids at those positions (valid until the sequence changes); NULL for a
 * number that is not a live sequence. */
const int32_t *orc_kv_seq_tokens(const orc_kv_pool *p, int32_t seq, int64_t *n);
/* Pages of seq shared with another sequence (tests, memory accounting). */
int64_t orc_kv_seq_shared_pages(const orc_kv_pool *p, int32_t seq);

/* ---- the step --------------------------------------------------------------- */

typedef struct orc_llm_step_seq {
    int32_t seq;          /* a live sequence of the pool; at most once per step */
    const int32_t *ids;   /* its new tokens, at positions len .. len+n-1 */
    int64_t n;            /* >= 1 */
} orc_llm_step_seq;

/* One no-grad forward of m for n_seqs sequences of pool. On success each
 * sequence has grown by its n tokens, logits[i*V .. (i+1)*V) holds the
 * logits after sequence i's last new token and, when hidden is not NULL,
 * hidden[i*D .. (i+1)*D) its final hidden state (after the last norm; for a
 * value head or embeddings). logits may be NULL (hidden states only). ctx
 * must be in no-grad mode; its arena is used as scratch and rewound before
 * the return, its error is cleared. On failure no sequence has changed
 * (pages it took are given back) and err names the problem: an unknown or
 * repeated sequence (ORC_EINVAL), an id outside the vocabulary or a
 * sequence that would outgrow the pool's max_len (ORC_ERANGE, naming the
 * sequence and the lengths), a full pool (ORC_ENOMEM). */
orc_status orc_llm_step(orc_ctx *ctx, orc_llm *m, orc_kv_pool *pool, const orc_llm_step_seq *seqs, int64_t n_seqs,
                        float *logits, float *hidden, orc_error *err);
/* orc_llm_step with LoRA adapters chosen per sequence: stacks[i] for
 * sequence i (orchard/lora.h; NULL there: the model's own m->lora, an empty
 * stack: the base alone; stacks NULL: m->lora for all, as orc_llm_step).
 * Every adapter must fit m (ORC_ESHAPE naming the sequence and the tensor).
 * m->lora is only read, so threads with their own pools may share m. */
orc_status orc_llm_step_adapters(orc_ctx *ctx, orc_llm *m, orc_kv_pool *pool, const orc_llm_step_seq *seqs,
                                 const struct orc_lora_stack *const *stacks, int64_t n_seqs, float *logits,
                                 float *hidden, orc_error *err);
/* The same step over a quantized model (orchard/quant.h; the pool made for
 * q->cfg): the projections run through the integer kernels over all N rows
 * at once (an F16 fallback matrix in float, as orc_qllm_linear), LoRA
 * deltas in float per row's stack (stacks[i] NULL: q->lora, stacks NULL:
 * q->lora for all). Everything else is orc_llm_step_adapters' code, and the
 * bitwise claim is the same: a sequence's logits are those of
 * orc_qllm_hidden + orc_qllm_linear of its last row fed the same chunks
 * through an orc_llm_cache, under the stack that sequence has. q is only
 * read. */
struct orc_qllm;
orc_status orc_qllm_step_adapters(orc_ctx *ctx, const struct orc_qllm *q, orc_kv_pool *pool,
                                  const orc_llm_step_seq *seqs, const struct orc_lora_stack *const *stacks,
                                  int64_t n_seqs, float *logits, float *hidden, orc_error *err);

/* The attention under the step: for each sequence, T new query rows q
 * ([T, Hq, D], contiguous, already rotated) at positions S-T .. S-1, causal,
 * against S keys and values held in pages of page_len positions (a multiple
 * of 64): k_pages[p] and v_pages[p] point to [page_len, Hkv, D] rows for
 * positions p*page_len ... Writes out ([T, Hq, D]). Scale 1/sqrt(D). The
 * same bits as orc_attention with causal masking on the same q, k and v.
 * Sets ctx's error and returns false on bad sizes. (Lives in
 * src/ops/attention.c beside the kernel it mirrors.) */
typedef struct orc_attn_paged_seq {
    const float *q;
    float *out;
    int64_t T, S;
    const float *const *k_pages;
    const float *const *v_pages;
} orc_attn_paged_seq;

bool orc_attention_paged(orc_ctx *ctx, const orc_attn_paged_seq *seqs, int64_t n_seqs, int64_t Hq, int64_t Hkv,
                         int64_t D, int64_t page_len);

/* ---- the batch generator ---------------------------------------------------- */

typedef struct orc_batch_gen orc_batch_gen;

/* Over m, tok (may be NULL: no text, no stop strings) and pool, all owned by
 * the caller and outliving it. */
orc_batch_gen *orc_batch_gen_new(orc_llm *m, const orc_tokenizer *tok, orc_kv_pool *pool, orc_error *err);
/* Frees every request's sequence and result. */
void orc_batch_gen_free(orc_batch_gen *bg);

/* Queue a request: it joins the batch at the next step, which prefills its
 * whole prompt (in the same forward as the others' decode steps). The
 * options are those of orc_generate (sampler with its own seed, max_tokens,
 * stop ids, stop strings, on_token streaming; no_cache is not supported);
 * they and the arrays they point to must stay valid until the request is
 * taken. Returns a request number >= 0, or -1 (a prompt longer than the
 * pool's max_len is ORC_ERANGE naming both, an empty one ORC_EINVAL). */
int64_t orc_batch_gen_add(orc_batch_gen *bg, const int32_t *prompt, size_t n_prompt, const orc_gen_opts *o,
                          orc_error *err);
/* As orc_batch_gen_add, but continuing a live pool sequence (e.g. a forked
 * particle), which the request takes over and frees when taken (on failure
 * it stays the caller's): nothing is
 * prefilled; the first step feeds only `next` (n_next >= 1 tokens, e.g. the
 * token sampled before the fork). */
int64_t orc_batch_gen_add_seq(orc_batch_gen *bg, int32_t seq, const int32_t *next, size_t n_next,
                              const orc_gen_opts *o, orc_error *err);

/* Feed at most max_tokens of a request's prompt per step (chunked prefill:
 * a long prompt that joins then delays the others' decode steps less); 0,
 * the default, feeds a whole prompt in one step. Chunking changes the order
 * of float operations, so a chunked request's logits match orc_generate's
 * to rounding, not bit for bit. */
orc_status orc_batch_gen_set_prefill_chunk(orc_batch_gen *bg, int64_t max_tokens, orc_error *err);
/* One shared forward for every unfinished request, then one sampled token
 * for each (a request still prefilling in chunks samples nothing). Finished requests wait to be taken. Nothing to do is ORC_OK. On
 * a forward failure no request has advanced. */
orc_status orc_batch_gen_step(orc_batch_gen *bg, orc_error *err);
/* Requests not finished yet. */
int64_t orc_batch_gen_pending(const orc_batch_gen *bg);
/* Whether request r has finished (false for an unknown r). */
bool orc_batch_gen_done(const orc_batch_gen *bg, int64_t r);
/* Move finished request r's result into res (free it with
 * orc_gen_result_free) and forget the request and its sequence. An
 * unfinished request is taken as it stands (cancel), with stop
 * ORC_GEN_CALLBACK. Unknown r: ORC_EINVAL. */
orc_status orc_batch_gen_take(orc_batch_gen *bg, int64_t r, orc_gen_result *res, orc_error *err);

/* Convenience: generate for n prompts at once, sharing every step, until
 * all are done. opts[i] for prompt i. results[i] as orc_generate's. On
 * failure no result is left to free. */
orc_status orc_batch_generate(orc_llm *m, const orc_tokenizer *tok, const int32_t *const *prompts,
                              const size_t *n_prompt, size_t n, const orc_gen_opts *opts, orc_gen_result *results,
                              orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
