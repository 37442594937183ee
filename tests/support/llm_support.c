/* Small float models, the corpus tokenizer and logit comparisons for the
 * LM tests (see llm_support.h). The weight gain exists because a freshly
 * initialised model's logits are nearly flat: greedy and sampled paths
 * would then hang on near ties that float rounding can flip. */
#include "llm_support.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

orc_llm_config orc_test_llm_config(int64_t hidden, int64_t layers, int64_t ffn, int64_t vocab, int64_t context) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = hidden;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = hidden / 4;
    c.intermediate_size = ffn;
    c.vocab_size = vocab;
    c.max_position_embeddings = context;
    return c;
}

orc_llm *orc_test_llm(const orc_llm_config *c, uint64_t seed, float gain) {
    orc_error err = {0};
    orc_llm *m = orc_llm_create(c, false, &err);
    if (!m) fail_msg("creating the test model: %s", err.msg);
    orc_llm_init_weights(m, seed);
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *t = m->params[i];
        if (t->ndim == 2)
            for (int64_t k = 0; k < t->numel; k++) orc_f32(t)[k] *= gain;
    }
    return m;
}

const char ORC_TEST_CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "The captain stood on the deck and watched the white whale swim away. "
    "Every sailor on the ship knew the sea was wide and the whale was old. "
    "They sailed for days and nights, and the wind was cold on the water. "
    "The harpoon was ready, the boats were ready, and the men were tired.";

orc_tokenizer *orc_test_corpus_tokenizer(void) {
    const char *texts[1] = {ORC_TEST_CORPUS};
    size_t lens[1] = {sizeof ORC_TEST_CORPUS - 1};
    orc_tokenizer_train_opts to = {.vocab_size = 300};
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_train(texts, lens, 1, &to, &err);
    if (!t) fail_msg("training the corpus tokenizer: %s", err.msg);
    return t;
}

int32_t orc_test_argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

double orc_test_max_rel(const float *ref, const float *got, int64_t n) {
    double d = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)ref[i] - got[i]));
        m = fmax(m, fabs((double)ref[i]));
    }
    return d / m;
}

double orc_test_argmax_agreement(const float *a, const float *b, int64_t rows, int64_t V) {
    int64_t same = 0;
    for (int64_t i = 0; i < rows; i++) same += orc_test_argmax(a + i * V, V) == orc_test_argmax(b + i * V, V);
    return (double)same / (double)rows;
}
