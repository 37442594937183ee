/* The server's continuous batcher (see batcher.h): a KV pool shared by the
 * slots, a queue of pending forwards, and a leader that runs everything
 * pending as one orc_llm_step (or orc_qllm_step_adapters) (each row with its slot's LoRA stack). Pool operations other than the step
 * (truncating a slot's sequence) wait until no step is running, because the
 * step changes the pool's page tables. */
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"

typedef struct pending {
    srv_seq *s;
    const int32_t *ids;
    size_t n;
    orc_status st;
    orc_error err;
    bool done;
} pending;

struct srv_batcher {
    orc_llm *m;        /* the float model, or NULL */
    const orc_qllm *q; /* the quantized model, or NULL */
    orc_kv_pool *pool;
    int64_t context, V;
    int threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running;
    int gate;        /* tests: a step starts only with at least this many pending */
    pending **queue; /* [cap] */
    int q_len, cap;
    /* the leader's scratch (one leader at a time) */
    orc_arena *arena;
    orc_ctx ctx;
    orc_llm_step_seq *steps;
    const orc_lora_stack **stacks; /* each step row's adapters */
    float *logits;
    uint64_t n_steps, n_rows;
};

/* Either model (one of m, q). */
static srv_batcher *batcher_new(orc_llm *m, const orc_qllm *q, int n_slots, int64_t context, int threads,
                                orc_error *err) {
    const orc_llm_config *cfg = m ? &m->cfg : &q->cfg;
    if (cfg->num_experts > 0) {
        orc_error_set(err, ORC_EUNSUPPORTED,
                      "serve: mixture-of-experts models (num_experts = %lld) are not supported by the batched server "
                      "yet; use orchard generate",
                      (long long)cfg->num_experts);
        return NULL;
    }
    srv_batcher *b = calloc(1, sizeof *b);
    if (!b) {
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory for the batcher");
        return NULL;
    }
    b->m = m;
    b->q = q;
    b->context = context;
    b->V = cfg->vocab_size;
    b->threads = threads;
    b->cap = n_slots > 0 ? n_slots : 1;
    /* every slot at full length, plus one partly shared page each (copy on write) */
    const int64_t pages = (int64_t)b->cap * ((context + ORC_KV_PAGE - 1) / ORC_KV_PAGE + 1);
    b->pool = orc_kv_pool_new(cfg, context, pages, err);
    b->queue = calloc((size_t)b->cap, sizeof *b->queue);
    b->steps = calloc((size_t)b->cap, sizeof *b->steps);
    b->stacks = calloc((size_t)b->cap, sizeof *b->stacks);
    b->logits = malloc((size_t)b->cap * (size_t)b->V * sizeof *b->logits);
    b->arena = orc_arena_create(0);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    if (!b->pool || !b->queue || !b->steps || !b->stacks || !b->logits || !b->arena) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "serve: out of memory for the batcher");
        srv_batcher_free(b);
        return NULL;
    }
    orc_ctx_init(&b->ctx, b->arena, 0);
    b->ctx.no_grad = true;
    return b;
}

srv_batcher *srv_batcher_new(orc_llm *m, int n_slots, int64_t context, int threads, orc_error *err) {
    return batcher_new(m, NULL, n_slots, context, threads, err);
}

srv_batcher *srv_batcher_new_quant(const orc_qllm *q, int n_slots, int64_t context, int threads, orc_error *err) {
    return batcher_new(NULL, q, n_slots, context, threads, err);
}

void srv_batcher_free(srv_batcher *b) {
    if (!b) return;
    orc_kv_pool_free(b->pool);
    free(b->queue);
    free(b->steps);
    free(b->stacks);
    free(b->logits);
    orc_arena_destroy(b->arena);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

void srv_batcher_set_gate(srv_batcher *b, int min_pending) {
    pthread_mutex_lock(&b->mu);
    b->gate = min_pending;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void srv_batcher_counts(srv_batcher *b, uint64_t *steps, uint64_t *rows) {
    pthread_mutex_lock(&b->mu);
    *steps = b->n_steps;
    *rows = b->n_rows;
    pthread_mutex_unlock(&b->mu);
}

/* The batched step of whichever model b serves, logits into b->logits. */
static orc_status step(srv_batcher *b, const orc_llm_step_seq *seqs, const orc_lora_stack *const *stacks, int n,
                       orc_error *err) {
    return b->q ? orc_qllm_step_adapters(&b->ctx, b->q, b->pool, seqs, stacks, n, b->logits, NULL, err)
                : orc_llm_step_adapters(&b->ctx, b->m, b->pool, seqs, stacks, n, b->logits, NULL, err);
}

/* Run one step over batch[0..n) (outside the lock). If the shared step
 * fails, each is run alone so that only the one at fault gets the error. */
static void run_step(srv_batcher *b, pending **batch, int n) {
    if (b->threads > 0) omp_set_num_threads(b->threads);
    for (int i = 0; i < n; i++) {
        b->steps[i] = (orc_llm_step_seq){batch[i]->s->seq, batch[i]->ids, (int64_t)batch[i]->n};
        b->stacks[i] = &batch[i]->s->lora; /* always given: the shared m->lora is never used */
    }
    orc_error err = {0};
    orc_status st = step(b, b->steps, b->stacks, n, &err);
    if (st == ORC_OK) {
        for (int i = 0; i < n; i++) {
            memcpy(batch[i]->s->logits, b->logits + (size_t)i * (size_t)b->V, (size_t)b->V * sizeof(float));
            batch[i]->st = ORC_OK;
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        if (n == 1) {
            batch[i]->st = st;
            batch[i]->err = err;
            break;
        }
        orc_error one = {0};
        batch[i]->st = step(b, &b->steps[i], &b->stacks[i], 1, &one);
        batch[i]->err = one;
        if (batch[i]->st == ORC_OK)
            memcpy(batch[i]->s->logits, b->logits, (size_t)b->V * sizeof(float));
    }
}

const float *srv_seq_feed(srv_seq *s, const int32_t *ids, size_t n, orc_error *err) {
    srv_batcher *b = s->b;
    if (n == 0) {
        orc_error_set(err, ORC_EINVAL, "serve: nothing to feed");
        return NULL;
    }
    if (s->n + n > s->cap) { /* the token mirror grows before the step, so it cannot fail after it */
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n) cap *= 2;
        int32_t *t = realloc(s->tokens, cap * sizeof *t);
        if (!t) {
            orc_error_set(err, ORC_ENOMEM, "serve: out of memory for %zu tokens", s->n + n);
            return NULL;
        }
        s->tokens = t;
        s->cap = cap;
    }
    pending me = {.s = s, .ids = ids, .n = n};
    pending *batch[64];
    pthread_mutex_lock(&b->mu);
    b->queue[b->q_len++] = &me;
    pthread_cond_broadcast(&b->cv); /* a gated leader may be waiting for company */
    while (!me.done) {
        if (b->running || b->q_len < b->gate) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* lead: take everything pending */
        int k = b->q_len < 64 ? b->q_len : 64;
        memcpy(batch, b->queue, (size_t)k * sizeof *batch);
        memmove(b->queue, b->queue + k, (size_t)(b->q_len - k) * sizeof *b->queue);
        b->q_len -= k;
        b->running = true;
        pthread_mutex_unlock(&b->mu);
        run_step(b, batch, k);
        pthread_mutex_lock(&b->mu);
        b->n_steps++;
        b->n_rows += (uint64_t)k;
        for (int i = 0; i < k; i++) batch[i]->done = true;
        b->running = false;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (me.st != ORC_OK) {
        if (err && err->code == ORC_OK) *err = me.err;
        return NULL;
    }
    memcpy(s->tokens + s->n, ids, n * sizeof *ids);
    s->n += n;
    return s->logits;
}

orc_status srv_seq_init(srv_batcher *b, srv_seq *s, orc_error *err) {
    memset(s, 0, sizeof *s);
    s->b = b;
    s->seq = -1;
    s->logits = malloc((size_t)b->V * sizeof *s->logits);
    if (!s->logits) return orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
    pthread_mutex_lock(&b->mu);
    while (b->running) pthread_cond_wait(&b->cv, &b->mu);
    s->seq = orc_kv_seq_new(b->pool, err);
    pthread_mutex_unlock(&b->mu);
    return s->seq >= 0 ? ORC_OK : (err ? err->code : ORC_ENOMEM);
}

void srv_seq_release(srv_seq *s) {
    if (!s->b) return;
    if (s->seq >= 0) {
        pthread_mutex_lock(&s->b->mu);
        while (s->b->running) pthread_cond_wait(&s->b->cv, &s->b->mu);
        orc_kv_seq_free(s->b->pool, s->seq, NULL);
        pthread_mutex_unlock(&s->b->mu);
    }
    free(s->tokens);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

orc_status srv_seq_truncate(srv_seq *s, size_t n, orc_error *err) {
    if (n > s->n) return orc_error_set(err, ORC_ERANGE, "serve: cannot keep %zu of %zu tokens", n, s->n);
    if (n == s->n) return ORC_OK;
    pthread_mutex_lock(&s->b->mu);
    while (s->b->running) pthread_cond_wait(&s->b->cv, &s->b->mu);
    orc_status st = orc_kv_seq_truncate(s->b->pool, s->seq, (int64_t)n, err);
    pthread_mutex_unlock(&s->b->mu);
    if (st == ORC_OK) s->n = n;
    return st;
}

int64_t srv_seq_context(const srv_seq *s) { return s->b->context; }

orc_status srv_seq_use_adapters(srv_seq *q, const orc_lora_stack *s, orc_error *err) {
    if (orc_lora_stack_equal(&q->lora, s)) return ORC_OK;
    orc_status st = srv_seq_truncate(q, 0, err);
    if (st != ORC_OK) return st;
    if (s) q->lora = *s;
    else memset(&q->lora, 0, sizeof q->lora);
    return ORC_OK;
}

size_t srv_seq_shared_prefix(const srv_seq *q, const orc_lora_stack *s, const int32_t *p, size_t n) {
    if (!orc_lora_stack_equal(&q->lora, s)) return 0;
    size_t k = 0;
    while (k < q->n && k < n && q->tokens[k] == p[k]) k++;
    return k;
}
