/* The server's counters and their Prometheus text exposition (GET /metrics):
 * requests by endpoint and HTTP status, requests per LoRA adapter, prompt /
 * cached / generated / embedded tokens, prefill and decode time (so rates
 * follow), time to first token, cancellations, and the gauges the scheduler
 * reports (queue depth, busy and total slots). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

static const char *const EP_NAMES[EP_COUNT] = {"chat_completions", "completions", "embeddings", "models",
                                               "health", "metrics", "other"};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_destroy(srv_metrics *m) {
    free(m->adapter_requests);
    pthread_mutex_destroy(&m->mu);
}

bool srv_metrics_adapters(srv_metrics *m, const char *const *names, size_t n) {
    m->adapter_requests = calloc(n ? n : 1, sizeof *m->adapter_requests);
    if (!m->adapter_requests) return false;
    m->adapter_names = (const char **)names;
    m->n_adapters = n;
    return true;
}

void srv_metrics_adapter_request(srv_metrics *m, const size_t *idx, size_t n) {
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++)
        if (idx[i] < m->n_adapters) m->adapter_requests[idx[i]]++;
    pthread_mutex_unlock(&m->mu);
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void label_value(srv_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') srv_buf_addf(b, "\\%c", *s);
        else if (*s == '\n') srv_buf_add(b, "\\n", 2);
        else srv_buf_add(b, s, 1);
    }
}

void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int status) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_rows && !(m->rows[i].ep == (int)ep && m->rows[i].status == status)) i++;
    if (i == m->n_rows && m->n_rows < SRV_MAX_STATUS_ROWS) {
        m->rows[i].ep = (int)ep;
        m->rows[i].status = status;
        m->rows[i].count = 0;
        m->n_rows++;
    }
    if (i < m->n_rows) m->rows[i].count++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_generation(srv_metrics *m, int64_t prompt, int64_t cached, int64_t completion, double prefill_s,
                            double decode_s) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)prompt;
    m->cached_tokens += (uint64_t)cached;
    m->completion_tokens += (uint64_t)completion;
    m->prefill_seconds += prefill_s;
    m->decode_seconds += decode_s;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_embedding(srv_metrics *m, int64_t tokens) {
    pthread_mutex_lock(&m->mu);
    m->embedding_tokens += (uint64_t)tokens;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_ttft(srv_metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    m->ttft_sum += seconds;
    m->ttft_count++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_cancelled(srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->cancelled++;
    pthread_mutex_unlock(&m->mu);
}

static void metric(srv_buf *b, const char *name, const char *type, const char *help) {
    srv_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *srv_metrics_text(srv_metrics *m, int queue_depth, int slots_busy, int slots, uint64_t steps, uint64_t rows) {
    srv_buf b = {0};
    pthread_mutex_lock(&m->mu);
    metric(&b, "orchard_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int i = 0; i < m->n_rows; i++)
        srv_buf_addf(&b, "orchard_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", EP_NAMES[m->rows[i].ep],
                     m->rows[i].status, (unsigned long long)m->rows[i].count);
    metric(&b, "orchard_prompt_tokens_total", "counter", "Prompt tokens of generation requests.");
    srv_buf_addf(&b, "orchard_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    metric(&b, "orchard_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's KV cache.");
    srv_buf_addf(&b, "orchard_prompt_tokens_cached_total %llu\n", (unsigned long long)m->cached_tokens);
    metric(&b, "orchard_completion_tokens_total", "counter", "Generated tokens.");
    srv_buf_addf(&b, "orchard_completion_tokens_total %llu\n", (unsigned long long)m->completion_tokens);
    metric(&b, "orchard_embedding_tokens_total", "counter", "Tokens embedded.");
    srv_buf_addf(&b, "orchard_embedding_tokens_total %llu\n", (unsigned long long)m->embedding_tokens);
    metric(&b, "orchard_prefill_seconds_total", "counter", "Time spent prefilling prompts, summed over slots.");
    srv_buf_addf(&b, "orchard_prefill_seconds_total %.6f\n", m->prefill_seconds);
    metric(&b, "orchard_decode_seconds_total", "counter", "Time spent decoding, summed over slots.");
    srv_buf_addf(&b, "orchard_decode_seconds_total %.6f\n", m->decode_seconds);
    metric(&b, "orchard_prompt_tokens_per_second", "gauge", "Prefill throughput per slot since start.");
    srv_buf_addf(&b, "orchard_prompt_tokens_per_second %.3f\n",
                 m->prefill_seconds > 0 ? (double)(m->prompt_tokens - m->cached_tokens) / m->prefill_seconds : 0.0);
    metric(&b, "orchard_decode_tokens_per_second", "gauge", "Decode throughput per slot since start.");
    srv_buf_addf(&b, "orchard_decode_tokens_per_second %.3f\n",
                 m->decode_seconds > 0 ? (double)m->completion_tokens / m->decode_seconds : 0.0);
    metric(&b, "orchard_time_to_first_token_seconds", "summary", "Time from the start of work to the first token.");
    srv_buf_addf(&b, "orchard_time_to_first_token_seconds_sum %.6f\norchard_time_to_first_token_seconds_count %llu\n",
                 m->ttft_sum, (unsigned long long)m->ttft_count);
    metric(&b, "orchard_requests_cancelled_total", "counter", "Requests stopped because the client left.");
    srv_buf_addf(&b, "orchard_requests_cancelled_total %llu\n", (unsigned long long)m->cancelled);
    if (m->n_adapters) {
        metric(&b, "orchard_adapter_requests_total", "counter",
               "Generation and embedding requests accepted with this LoRA adapter (each adapter of a stack counts).");
        for (size_t i = 0; i < m->n_adapters; i++) {
            srv_buf_addf(&b, "orchard_adapter_requests_total{adapter=\"");
            label_value(&b, m->adapter_names[i]);
            srv_buf_addf(&b, "\"} %llu\n", (unsigned long long)m->adapter_requests[i]);
        }
    }
    pthread_mutex_unlock(&m->mu);
    metric(&b, "orchard_queue_depth", "gauge", "Requests waiting for a slot.");
    srv_buf_addf(&b, "orchard_queue_depth %d\n", queue_depth);
    metric(&b, "orchard_slots_busy", "gauge", "Slots working on a request.");
    srv_buf_addf(&b, "orchard_slots_busy %d\n", slots_busy);
    metric(&b, "orchard_slots_total", "gauge", "Decode slots.");
    srv_buf_addf(&b, "orchard_slots_total %d\n", slots);
    metric(&b, "orchard_batch_steps_total", "counter", "Forward passes run by the continuous batcher.");
    srv_buf_addf(&b, "orchard_batch_steps_total %llu\n", (unsigned long long)steps);
    metric(&b, "orchard_batch_rows_total", "counter",
           "Slot forwards those passes carried (rows / steps = requests sharing a step on average).");
    srv_buf_addf(&b, "orchard_batch_rows_total %llu\n", (unsigned long long)rows);
    return b.p;
}
