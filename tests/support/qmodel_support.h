/* qmodel_support.h: what the quantized-model tests (tests/quant/test_quant_
 * model, _palmodel, _lora, _file_fallback) share: their small model (hidden
 * 64, 2 layers, vocabulary 160, context 64, matrices scaled up), logits of
 * a float or quantized forward, the 1-vs-3-threads bit check, cached
 * decoding against a full forward, and a GGUF copy with one tensor edited
 * (the loaders' bad-shape tests) and the scratch files of a round trip. Failures fail the running cmocka test. */
#ifndef ORCHARD_TEST_QMODEL_SUPPORT_H
#define ORCHARD_TEST_QMODEL_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llm_support.h"
#include "orchard/gguf.h"
#include "orchard/quant.h"

/* orc_test_llm_config(hidden, 2, ffn, 160, 64) with tie_word_embeddings = tied. */
orc_llm_config orc_test_qconfig(int64_t hidden, int64_t ffn, bool tied);

/* orc_test_llm of orc_test_qconfig(64, ffn, tied). */
orc_llm *orc_test_qmodel(int64_t ffn, bool tied, uint64_t seed, float gain);

/* Logits [n, V] of the float model m (q NULL) or of q for ids [1, n],
 * malloc'd; *numel (when not NULL) gets n * V. */
float *orc_test_logits(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n, int64_t *numel);

/* q's logits for ids on 1 and on 3 threads, which must be the same bits;
 * returns the first (malloc'd). Restores the thread count it found. */
float *orc_test_qlogits_1v3(orc_qllm *q, const int32_t *ids, int64_t n);

/* Feeds ids to q through a KV cache, the first `prefill` (>= 1) at once and
 * then one at a time, and checks every position's logits against full
 * ([n, V], a forward without cache) within tol. */
void orc_test_expect_cache_matches(orc_qllm *q, const int32_t *ids, int64_t n, int64_t prefill, const float *full,
                                   double tol);

/* The files of a quantize-and-load check in orc_test_scratch (testdir.h,
 * made by the group setup), which init empties first: model (a float model
 * directory), q.gguf, and a second GGUF named other. */
typedef struct orc_test_qfiles {
    char model[96], gguf[96], other[96];
} orc_test_qfiles;
void orc_test_qfiles_init(orc_test_qfiles *f, const char *other);

/* Changes one tensor of a GGUF copy, or drops it (returns false). */
typedef bool (*orc_test_gguf_edit)(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes);

/* Copies the GGUF in to out: its u32, f32 and string keys except drop_key
 * (NULL: all), its tensors through edit (NULL: as they are). */
void orc_test_gguf_rewrite(const char *in, const char *out, orc_test_gguf_edit edit, const char *drop_key);

#endif
