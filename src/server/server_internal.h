/* The server's internal pieces, shared by the files of src/server/: the job
 * (one HTTP request's work, its LoRA stack and its output channel), the slot
 * (a worker with its own decode loop and KV-pool sequence), the server
 * itself, the metrics, the decode loop and the JSON builders. Locking:
 * srv->mu guards the queue and slot assignment; job->mu guards a job's
 * output and flags; metrics->mu guards the counters.
 * A thread holds at most one of them at a time, except srv->mu -> job->mu
 * when the scheduler cancels jobs. */
#ifndef ORCHARD_SERVER_INTERNAL_H
#define ORCHARD_SERVER_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "orchard/arena.h"
#include "orchard/autograd.h"
#include "orchard/quant.h"
#include "orchard/server.h"
#include "batcher.h"

/* ---- byte buffers -------------------------------------------------------------- */

typedef struct srv_buf {
    char *p;
    size_t len, cap;
} srv_buf;

bool srv_buf_add(srv_buf *b, const char *s, size_t n);
bool srv_buf_addf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(srv_buf *b);

/* ---- metrics --------------------------------------------------------------------- */

typedef enum srv_endpoint {
    EP_CHAT = 0,
    EP_COMPLETIONS,
    EP_EMBEDDINGS,
    EP_MODELS,
    EP_HEALTH,
    EP_METRICS,
    EP_OTHER,
    EP_COUNT
} srv_endpoint;

#define SRV_MAX_STATUS_ROWS 96

typedef struct srv_metrics {
    pthread_mutex_t mu;
    struct {
        int ep, status;
        uint64_t count;
    } rows[SRV_MAX_STATUS_ROWS];
    int n_rows;
    uint64_t prompt_tokens, cached_tokens, completion_tokens, embedding_tokens, cancelled;
    double prefill_seconds, decode_seconds, ttft_sum;
    uint64_t ttft_count;
    /* per LoRA adapter (the server's set, in its order): requests that used it */
    size_t n_adapters;
    const char **adapter_names;
    uint64_t *adapter_requests;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
/* Count requests per adapter for these names (borrowed; they outlive m). */
bool srv_metrics_adapters(srv_metrics *m, const char *const *names, size_t n);
/* A request accepted with the adapters at these indices into the names. */
void srv_metrics_adapter_request(srv_metrics *m, const size_t *idx, size_t n);
void srv_metrics_destroy(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int status);
void srv_metrics_generation(srv_metrics *m, int64_t prompt, int64_t cached, int64_t completion, double prefill_s,
                            double decode_s);
void srv_metrics_embedding(srv_metrics *m, int64_t tokens);
void srv_metrics_ttft(srv_metrics *m, double seconds);
void srv_metrics_cancelled(srv_metrics *m);
/* Prometheus text exposition (malloc'd). */
char *srv_metrics_text(srv_metrics *m, int queue_depth, int slots_busy, int slots, uint64_t steps, uint64_t rows);

/* ---- jobs ------------------------------------------------------------------------- */

typedef struct orc_server srv_server;

typedef struct srv_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs; /* the HTTP side and, once submitted, the scheduler */
    srv_server *srv;
    orc_api_request req;
    int32_t **prompts; /* tokenized, one per input */
    size_t *prompt_lens;
    size_t n_prompts;
    int64_t *max_tokens; /* resolved per prompt */
    orc_lora_stack lora; /* the adapters the request chose (empty: the base) */
    const char *model_id; /* the id it answers as: the adapter named by `model`, or the base's */
    char id[48];
    long long created;
    /* output: SSE text for a stream (consumed from out_pos), else the body */
    srv_buf out;
    size_t out_pos;
    int status;
    bool done;
    bool on_slot; /* a slot runs it: done waits until the slot is free again */
    bool finished;
    atomic_bool cancelled;
    bool shutdown; /* cancelled because the server is stopping */
    int fd;        /* the client's socket, polled for a hang-up (-1: none) */
} srv_job;

srv_job *srv_job_new(srv_server *s);
void srv_job_release(srv_job *j);
/* Append stream text / set the final body, and wake the HTTP side. */
void srv_job_write(srv_job *j, const char *s, size_t n);
void srv_job_finish(srv_job *j, int status, char *body); /* takes body (may be NULL for a stream) */
/* Run on a slot: srv_job_finish only records the answer, and srv_job_release_slot
 * (after the slot is marked idle) makes it visible, so a client that sends its
 * next request at once finds the slot free (and its cached prefix). */
void srv_job_take_slot(srv_job *j);
void srv_job_release_slot(srv_job *j);
void srv_job_cancel(srv_job *j, bool shutdown);
/* Wait until the job is done or (unless whole) has output past out_pos,
 * polling the client's socket: a hang-up cancels the job. Called with j->mu
 * held. whole: a non-streamed answer waits for the finished job only. */
void srv_job_wait_locked(srv_job *j, bool whole);

/* ---- slots and the server ------------------------------------------------------------ */

typedef struct srv_tok_lp {
    int32_t id;
    float lp;
    int n_top;
    int32_t top_id[ORC_API_MAX_TOP_LOGPROBS];
    float top_lp[ORC_API_MAX_TOP_LOGPROBS];
} srv_tok_lp;

typedef struct srv_slot {
    srv_server *srv;
    int index;
    pthread_t thread;
    bool started;
    pthread_cond_t cv;
    srv_seq seq;      /* the slot's sequence in the shared KV pool (batcher.h) */
    orc_arena *arena; /* embeddings and prompt log-probabilities */
    orc_ctx ctx;
    /* The slot's view of the shared model for its own forwards (embeddings,
     * prompt log-probabilities): a struct copy sharing every weight, whose
     * lora pointer carries the job's stack, so no thread writes the shared
     * model's. qview: the same for a quantized model. */
    orc_llm view;
    orc_qllm qview;
    orc_sample_work work;
    srv_job *job; /* assigned work; NULL when idle */
} srv_slot;

struct orc_server {
    orc_llm *m;                /* the float model, or NULL when q is served */
    orc_qllm *q;               /* the quantized model (orc_server_start_quant), or NULL */
    const orc_llm_config *cfg; /* the served model's shapes */
    /* Under every request's adapters: the quantized model's active stack at
     * start (q->lora, e.g. an accuracy-recovery adapter); empty otherwise. */
    orc_lora_stack base;
    const orc_tokenizer *tok;
    orc_server_opts opts;
    char *model_name, *api_key;
    int64_t context;
    int32_t chat_stops[4], text_stops[4];
    size_t n_chat_stops, n_text_stops;
    int32_t bos;
    orc_token_filter *filter; /* the vocabulary trie for constrained decoding */
    struct MHD_Daemon *mhd;
    int port;
    pthread_mutex_t mu;
    srv_slot *slots;
    int n_slots;
    srv_batcher *batcher; /* continuous batching: every slot's forward goes through it */
    const orc_lora_set *adapters; /* opts.adapters: selectable by name; NULL: none */
    size_t n_adapters;
    const char **adapter_names; /* [n_adapters], the set's names (for the metrics) */
    srv_job **queue; /* FIFO of waiting jobs, [opts.queue] */
    int q_len;
    bool stopping;
    srv_metrics metrics;
    atomic_ullong next_id;
    atomic_int active; /* requests between their first byte and their last answer byte */
    long long started;
};

/* Hand a job to an idle slot (the one whose cache shares the longest prefix
 * with its first prompt) or the queue. Returns 0, 429 (queue full) or 503
 * (stopping). */
int srv_submit(srv_server *s, srv_job *j);
/* Take a waiting job out of the queue (its client left); true if it was there. */
bool srv_unqueue(srv_server *s, srv_job *j);
void srv_load(srv_server *s, int *queue_depth, int *busy);
bool srv_slots_start(srv_server *s, orc_error *err);
void srv_slots_stop(srv_server *s);

/* The work of a job on a slot (engine.c): generation or embeddings; ends
 * with srv_job_finish. */
void srv_run_job(srv_slot *slot, srv_job *j);
/* End a cancelled job: nothing for a client that left; a 503 error (a body,
 * or an SSE error event and [DONE]) when the server is stopping. */
void srv_finish_cancelled(srv_job *j);

/* ---- JSON --------------------------------------------------------------------------- */

/* A JSON string from bytes that may not be valid UTF-8 (bad bytes -> U+FFFD). */
json_t *srv_json_text(const char *s, size_t n);
/* Compact JSON text (malloc'd); steals v. */
char *srv_json_dump(json_t *v);
/* {"error": {...}} as text. */
char *srv_error_body(const orc_api_error *e);

#endif
