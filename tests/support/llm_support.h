/* llm_support.h: the small float models the LM tests share. One config
 * shape (4 query heads over 2 KV heads, head_dim = hidden / 4) with the
 * sizes a test picks; a model made from it with its matrices scaled up so
 * that logits are peaked and greedy paths sit far from ties; the tokenizer
 * the generation tests train on a fixed corpus; logits of a plain forward;
 * argmax and the comparisons the quantization tests make (largest relative
 * logit error, argmax agreement). Every helper fails the running cmocka
 * test, with the engine's message, instead of returning an error. */
#ifndef ORCHARD_TEST_LLM_SUPPORT_H
#define ORCHARD_TEST_LLM_SUPPORT_H

#include <stdint.h>

#include "orchard/llm.h"
#include "orchard/tokenizer.h"

/* hidden, layers, ffn (intermediate), vocab and context as given; 4 heads,
 * 2 KV heads, head_dim hidden / 4; the rest orc_llm_config_default's. */
orc_llm_config orc_test_llm_config(int64_t hidden, int64_t layers, int64_t ffn, int64_t vocab, int64_t context);

/* A model of config c (no gradients) with orc_llm_init_weights(seed), every
 * 2-D parameter multiplied by gain (1: the init as it is). */
orc_llm *orc_test_llm(const orc_llm_config *c, uint64_t seed, float gain);

/* The five sentences the generation tests train their tokenizer on. */
extern const char ORC_TEST_CORPUS[];

/* A BPE tokenizer trained on ORC_TEST_CORPUS with vocab_size 300. */
orc_tokenizer *orc_test_corpus_tokenizer(void);

/* Index of the largest of x[0..n) (the first on ties). */
int32_t orc_test_argmax(const float *x, int64_t n);

/* max |ref - got| / max |ref| over n values. */
double orc_test_max_rel(const float *ref, const float *got, int64_t n);

/* Fraction of the rows of two [rows, V] logit arrays with the same argmax. */
double orc_test_argmax_agreement(const float *a, const float *b, int64_t rows, int64_t V);

#endif
