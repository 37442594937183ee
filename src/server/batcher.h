/* Continuous batching for `orchard serve`: the slots' sequences live in one
 * KV pool (orchard/batch.h) and every forward a slot asks for goes through
 * the batcher, which runs the forwards of all slots that are waiting at that
 * moment as one orc_llm_step (orc_qllm_step_adapters for a quantized
 * model: the same step code over the integer kernels). A slot keeps its own decode loop (sampling,
 * constraints, log-probabilities, streaming); only "feed these tokens, give
 * me the logits" is shared. No step waits for company: the first slot to
 * arrive while no step runs becomes the leader and takes everything pending;
 * slots that arrive during a step join the next one. So a request that
 * arrives mid-way joins the batch at the next token, and a lone request pays
 * nothing. Logits are the same bits as a slot's own generator would give
 * (batch.h's guarantee), so batching never changes an answer. */
#ifndef ORCHARD_SERVER_BATCHER_H
#define ORCHARD_SERVER_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "orchard/batch.h"
#include "orchard/error.h"
#include "orchard/llm.h"
#include "orchard/lora.h"
#include "orchard/quant.h"

typedef struct srv_batcher srv_batcher;

/* A batcher over m for n_slots sequences of up to context positions each;
 * threads: OpenMP threads for each step (<= 0: the caller's setting). */
srv_batcher *srv_batcher_new(orc_llm *m, int n_slots, int64_t context, int threads, orc_error *err);
/* The same over a quantized model: its steps are orc_qllm_step_adapters. */
srv_batcher *srv_batcher_new_quant(const orc_qllm *q, int n_slots, int64_t context, int threads, orc_error *err);
void srv_batcher_free(srv_batcher *b);

/* Tests: hold every step until at least min_pending forwards wait (0: off,
 * the default), so a test can see requests share a step for certain. */
void srv_batcher_set_gate(srv_batcher *b, int min_pending);
/* Steps run and sequences fed through them since the start (metrics). */
void srv_batcher_counts(srv_batcher *b, uint64_t *steps, uint64_t *rows);

/* One slot's sequence: its pool sequence, a copy of its tokens, the logits
 * of its last token, and the LoRA stack its keys and values were computed
 * under (every feed runs with it; the batcher's step takes each row's stack,
 * so slots with different adapters share a step). Used by one thread at a
 * time. */
typedef struct srv_seq {
    srv_batcher *b;
    int32_t seq;
    int32_t *tokens;
    size_t n, cap;
    float *logits; /* [V] */
    orc_lora_stack lora; /* empty: the base model */
} srv_seq;

orc_status srv_seq_init(srv_batcher *b, srv_seq *s, orc_error *err);
void srv_seq_release(srv_seq *s);
/* Append ids[0..n) (n >= 1) in one (shared) forward; the logits after the
 * last one, valid until the next call on s. NULL with err on failure (the
 * sequence is unchanged). */
const float *srv_seq_feed(srv_seq *s, const int32_t *ids, size_t n, orc_error *err);
/* Use stack s (NULL: the base) for the next feeds: under another stack
 * than the current one the cached tokens are dropped (their keys and values
 * belong to the old adapters). */
orc_status srv_seq_use_adapters(srv_seq *q, const orc_lora_stack *s, orc_error *err);
/* Tokens of the sequence that a prompt under stack s may reuse: 0 unless s
 * equals the sequence's stack. */
size_t srv_seq_shared_prefix(const srv_seq *q, const orc_lora_stack *s, const int32_t *p, size_t n);
/* Keep the first n tokens (n <= the length). */
orc_status srv_seq_truncate(srv_seq *s, size_t n, orc_error *err);
static inline const int32_t *srv_seq_tokens(const srv_seq *s, size_t *n) {
    *n = s->n;
    return s->tokens;
}
int64_t srv_seq_context(const srv_seq *s);

#endif
