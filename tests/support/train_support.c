/* The training tests' scratch data (see train_support.h). The stream is
 * learnable on purpose: a 20-step run must visibly lower the loss, and an
 * adapter must have something to recover. */
#include "train_support.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "orchard/data.h"
#include "orchard/rng.h"
#include "orchard/tokenizer.h"
#include "testdir.h"

const char ORC_TEST_TINY_MODEL_JSON[] = "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                                        "\"num_key_value_heads\": 2, \"intermediate_size\": 64, \"vocab_size\": 264, "
                                        "\"max_position_embeddings\": 64}";

int32_t orc_test_stream_token(uint64_t seed, int d, int i, int32_t *prev) {
    uint32_t r = orc_rand_u32(seed, (uint64_t)d, (uint64_t)i);
    *prev = 32 + (*prev * 7 + 3 + (int32_t)(r % 3)) % 64;
    return *prev;
}

void orc_test_write_byte_tokenizer(const char *name) {
    const char *text = "abc";
    size_t len = 3;
    orc_tokenizer_train_opts o = {.vocab_size = 256 + ORC_TOK_N_DEFAULT_SPECIALS};
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_train(&text, &len, 1, &o, &err);
    if (!t) fail_msg("%s", err.msg);
    char p[512];
    orc_test_scratch_path(p, sizeof p, name);
    mkdir(p, 0755);
    if (orc_tokenizer_save(t, p, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_tokenizer_free(t);
}

void orc_test_write_stream_shard(const char *name, uint64_t seed, int n_docs, int doc_len) {
    char p[512];
    orc_test_scratch_path(p, sizeof p, name);
    orc_error err = {0};
    orc_shard_writer *w = orc_shard_writer_open(p, 264, &err);
    if (!w) fail_msg("%s", err.msg);
    int32_t doc[512], prev = 40;
    for (int d = 0; d < n_docs; d++) {
        for (int i = 0; i < doc_len; i++) doc[i] = orc_test_stream_token(seed, d, i, &prev);
        assert_int_equal(orc_shard_writer_add(w, doc, (size_t)doc_len, &err), ORC_OK);
    }
    assert_int_equal(orc_shard_writer_finish(w, &err), ORC_OK);
}

void orc_test_write_text(const char *name, const char *text) {
    char p[512];
    orc_test_scratch_path(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    if (!f) fail_msg("cannot write %s", p);
    fputs(text, f);
    fclose(f);
}
