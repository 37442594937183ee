/* train_support.h: the scratch data of the training tests (tests/llm/
 * test_train.c, tests/lora/test_lora.c), written into orc_test_scratch
 * (testdir.h): a byte-level tokenizer, token shards of a learnable
 * synthetic stream, text files (recipes), and the tiny model both train,
 * as a recipe's "model" object. Failures fail the running cmocka test. */
#ifndef ORCHARD_TEST_TRAIN_SUPPORT_H
#define ORCHARD_TEST_TRAIN_SUPPORT_H

#include <stdint.h>

/* hidden 32, 2 layers, 4 heads over 2 KV heads, ffn 64, vocabulary 264,
 * context 64: orc_test_llm_config(32, 2, 64, 264, 64) as JSON. */
extern const char ORC_TEST_TINY_MODEL_JSON[];

/* The stream: ids in [32, 96), next = f(prev) plus a little noise drawn
 * from (seed, d, i). Updates *prev (start it at 40) and returns it. */
int32_t orc_test_stream_token(uint64_t seed, int d, int i, int32_t *prev);

/* A byte-level tokenizer with the default specials (ids 0..255 are bytes)
 * saved in the scratch directory under name. */
void orc_test_write_byte_tokenizer(const char *name);

/* A shard (vocabulary 264) of n_docs documents of doc_len <= 512 stream ids. */
void orc_test_write_stream_shard(const char *name, uint64_t seed, int n_docs, int doc_len);

/* text into the scratch file name. */
void orc_test_write_text(const char *name, const char *text);

#endif
