/* orchard/generate.h: inference with the foundation LM.
 *
 * Three pieces. (1) The sampler: a pure function of (logits, previous
 * tokens, settings, one uniform draw) applying, in this order, a repeat
 * penalty (CTRL / llama.cpp style: over the last repeat_last_n tokens a
 * positive logit is divided by the penalty, a negative one multiplied, once
 * per distinct token), temperature, top-k, top-p (nucleus, on the
 * probabilities renormalised over the top-k set), min-p (keep tokens whose
 * probability is at least min_p times the largest), then an inverse-CDF draw.
 * Temperature 0 is greedy: the argmax, ties to the lowest id. Ties elsewhere
 * order by id too, so a result depends on nothing but the arguments.
 * (2) The generator: a model, its tokenizer, a KV cache and a scratch arena.
 * It prefills a prompt in one batched forward (projecting only the last
 * position to logits), then decodes one token at a time through the cache,
 * stopping on a token budget, a stop id, a stop string (matched on the
 * decoded bytes, also across token boundaries, and cut from the text) or a
 * full context. A callback receives the text as it becomes final: whole
 * UTF-8 characters that cannot be the start of a stop string. A prompt that
 * starts with the tokens already in the cache reuses them (chat turns).
 * (3) Evaluation: mean next-token NLL, perplexity and bits per byte of a
 * token stream, in sliding windows of the context.
 *
 * Threads: a generator is used by one thread at a time; the kernels under it
 * are parallel and give the same bits for any thread count, so the same seed
 * gives the same text. */
#ifndef ORCHARD_GENERATE_H
#define ORCHARD_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/llm.h"
#include "orchard/rng.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sampling ------------------------------------------------------------------ */

typedef struct orc_sampler_opts {
    float temperature;      /* 0: greedy; default 0.8 */
    int64_t top_k;          /* keep the k most likely; 0 = off; default 40 */
    float top_p;            /* nucleus mass in (0, 1]; 1 = off; default 0.95 */
    float min_p;            /* in [0, 1]; 0 = off; default 0.05 */
    float repeat_penalty;   /* > 0; 1 = off (the default) */
    int64_t repeat_last_n;  /* tokens the penalty looks back on; -1 = all; default 64 */
    uint64_t seed;          /* the draws' Philox key; default 0 */
} orc_sampler_opts;

void orc_sampler_opts_default(orc_sampler_opts *o);
/* ORC_EINVAL naming the setting when one is out of its range. */
orc_status orc_sampler_opts_validate(const orc_sampler_opts *o, orc_error *err);

/* Scratch the pure sampler needs for a vocabulary of V ids. */
typedef struct orc_sample_work {
    int64_t vocab;
    float *val;   /* [V] */
    int32_t *idx; /* [V] */
} orc_sample_work;

orc_status orc_sample_work_init(orc_sample_work *w, int64_t vocab, orc_error *err);
void orc_sample_work_release(orc_sample_work *w);

/* log sum exp of logits [V] over the finite entries (-inf logits are
 * impossible ids), in double; the log-probability of id is then
 * logits[id] - orc_logsumexp(logits, V) (the softmax at temperature 1). */
double orc_logsumexp(const float *logits, int64_t V);

/* The next token for logits [V] given the tokens so far (prev[0..n_prev), the
 * most recent last) and a uniform draw u in [0, 1). Returns -1 only when V
 * does not match the work's vocabulary. */
int32_t orc_sample(const orc_sampler_opts *o, const float *logits, int64_t V, const int32_t *prev, size_t n_prev,
                   float u, orc_sample_work *w);

/* The first stage alone, for tests and tools: out = logits with the repeat
 * penalty applied (out must not overlap logits). */
void orc_apply_repeat_penalty(const float *logits, float *out, int64_t V, const int32_t *prev, size_t n_prev,
                              float penalty, int64_t last_n);

/* ---- generation ------------------------------------------------------------------ */

typedef enum orc_gen_stop {
    ORC_GEN_MAX_TOKENS = 0, /* the token budget is spent */
    ORC_GEN_STOP_ID,        /* a stop id was sampled (not part of the output) */
    ORC_GEN_STOP_STRING,    /* a stop string appeared (cut from the text, with what followed) */
    ORC_GEN_CONTEXT_FULL,   /* the context has no room for another token */
    ORC_GEN_CALLBACK        /* the callback asked to stop */
} orc_gen_stop;

const char *orc_gen_stop_name(orc_gen_stop s); /* "max_tokens", "stop_id", ... */

/* Streaming: called with each piece of final text (may be empty when a token
 * only adds bytes that are held back) and the id that produced it. Returning
 * false stops generation after this token. */
typedef bool (*orc_gen_token_fn)(void *user, int32_t id, const char *text, size_t len);

typedef struct orc_gen_opts {
    orc_sampler_opts sampler;
    int64_t max_tokens;               /* > 0; default 256 */
    const int32_t *stop_ids;          /* e.g. orc_chat_stop_ids(), the config's eos */
    size_t n_stop_ids;
    const char *const *stop_strings;  /* non-empty strings */
    size_t n_stop_strings;
    bool no_cache;                    /* recompute the whole sequence each step (checks, not speed) */
    orc_gen_token_fn on_token;        /* NULL: no streaming */
    void *user;
} orc_gen_opts;

void orc_gen_opts_default(orc_gen_opts *o);

typedef struct orc_gen_result {
    int32_t *ids;          /* the generated ids (malloc'd); a stop id is not among them */
    size_t n_ids;
    char *text;            /* their bytes, NUL-terminated, the stop string and after cut off */
    size_t text_len;
    orc_gen_stop stop;
    int32_t stop_id;       /* the id that stopped generation, or -1 */
    int64_t prompt_tokens; /* the prompt's length */
    int64_t prefilled;     /* prompt tokens that went through the model (the rest came from the cache) */
    double prompt_seconds; /* prefill time */
    int64_t decode_tokens; /* forward passes after the prefill */
    double decode_seconds;
} orc_gen_result;

void orc_gen_result_free(orc_gen_result *r);

typedef struct orc_generator orc_generator;

/* A generator over m and tok (both stay owned by the caller and must outlive
 * it) with room for context positions (<= 0: the model's
 * max_position_embeddings; never more). The tokenizer's ids must fit the
 * model's vocabulary. */
orc_generator *orc_generator_new(orc_llm *m, const orc_tokenizer *tok, int64_t context, orc_error *err);
void orc_generator_free(orc_generator *g);
int64_t orc_generator_context(const orc_generator *g);
/* Forget the cached tokens. */
void orc_generator_reset(orc_generator *g);

/* Generate after prompt[0..n_prompt). A prompt longer than the context is
 * ORC_ERANGE naming both lengths; an empty one is ORC_EINVAL. On success res
 * is filled (free it with orc_gen_result_free); on failure it holds nothing
 * to free. */
orc_status orc_generate(orc_generator *g, const int32_t *prompt, size_t n_prompt, const orc_gen_opts *o,
                        orc_gen_result *res, orc_error *err);

/* Low level: append ids to the cached sequence in one forward and return the
 * logits of the last one ([V] floats, valid until the next call on g). */
const float *orc_generator_feed(orc_generator *g, const int32_t *ids, size_t n, orc_error *err);
/* The ids now in the cache. */
const int32_t *orc_generator_tokens(const orc_generator *g, size_t *n);

/* Load DIR/config.json + DIR/model.safetensors and DIR/tokenizer.json (no
 * gradients) and check that the tokenizer fits the model's vocabulary. */
orc_status orc_model_dir_load(const char *dir, orc_llm **m, orc_tokenizer **tok, orc_error *err);

/* The longest n <= len such that s[0..n) ends on a whole UTF-8 character
 * (bytes that cannot start or continue a valid sequence count as whole). */
size_t orc_utf8_complete_prefix(const char *s, size_t len);

/* ---- evaluation ------------------------------------------------------------------- */

typedef struct orc_eval_result {
    int64_t tokens;       /* scored tokens */
    int64_t bytes;        /* their bytes */
    double nll_sum;       /* total NLL in nats */
    double loss;          /* nll_sum / tokens */
    double ppl;           /* exp(loss) */
    double bits_per_byte; /* nll_sum / ln 2 / bytes */
    int64_t windows;
} orc_eval_result;

/* Score ids[1..n) given what precedes each, in windows of context tokens
 * (<= 0: the model's) that start every stride tokens (<= 0: context; smaller
 * overlaps windows, and each window scores only the tokens no earlier window
 * scored). scored[i] == 0 leaves target i out (NULL: all scored). Fills
 * tokens, nll_sum, loss, ppl, windows; bytes and bits_per_byte stay 0. */
orc_status orc_eval_ids(orc_llm *m, const int32_t *ids, size_t n, const uint8_t *scored, int64_t context,
                        int64_t stride, orc_eval_result *res, orc_error *err);

/* Texts -> one stream: each text is <|begin_of_text|> (when the tokenizer has
 * it) + its tokens; every text token is scored (without a begin token the
 * stream's first token is not), and bytes counts the scored tokens' bytes. */
orc_status orc_eval_texts(orc_llm *m, const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                          size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res, orc_error *err);

/* The evaluators above with any forward (the quantized LM's uses this):
 * forward(ctx, model, ids [1, T]) returns logits [1, T, V] in ctx (no-grad);
 * cfg gives the model's context and vocabulary; who starts every message
 * ("eval", "eval-q"). */
typedef orc_tensor *(*orc_eval_forward_fn)(orc_ctx *ctx, void *model, orc_tensor *ids);
orc_status orc_eval_ids_with(orc_eval_forward_fn forward, void *model, const orc_llm_config *cfg, const char *who,
                             const int32_t *ids, size_t n, const uint8_t *scored, int64_t context, int64_t stride,
                             orc_eval_result *res, orc_error *err);
orc_status orc_eval_texts_with(orc_eval_forward_fn forward, void *model, const orc_llm_config *cfg, const char *who,
                               const orc_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n_texts, int64_t context, int64_t stride, orc_eval_result *res,
                               orc_error *err);

/* The stream orc_eval_texts scores (*ids and *scored malloc'd, caller frees;
 * *bytes the scored tokens' bytes), and loss, ppl and bits_per_byte from
 * nll_sum, tokens and bytes. */
orc_status orc_eval_stream(const orc_tokenizer *tok, const char *const *texts, const size_t *lens, size_t n_texts,
                           int32_t **ids, uint8_t **scored, size_t *n, int64_t *bytes, orc_error *err);
void orc_eval_finish(orc_eval_result *r);

#ifdef __cplusplus
}
#endif
#endif
