/* The scheduler: jobs and their output channel, the N decode slots (one
 * worker thread each, with its own sequence in the batcher's KV pool, arena
 * and sampler scratch over the shared read-only model), the bounded FIFO of
 * waiting jobs, and the hand-off between them. A new job goes to the idle
 * slot whose cached tokens share the longest prefix with its prompt under
 * the same LoRA adapters (the slot keeps that prefix and prefills the rest); with no idle slot it waits in the queue, and a full queue is
 * refused at once (429). A finished slot takes the oldest waiting job. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>

#include "server/server_internal.h"

/* ---- jobs ---------------------------------------------------------------------- */

srv_job *srv_job_new(srv_server *s) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->srv = s;
    j->fd = -1;
    atomic_init(&j->cancelled, false);
    return j;
}

void srv_job_release(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0) return;
    orc_api_request_free(&j->req);
    for (size_t i = 0; i < j->n_prompts; i++) free(j->prompts ? j->prompts[i] : NULL);
    free(j->prompts);
    free(j->prompt_lens);
    free(j->max_tokens);
    srv_buf_free(&j->out);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void srv_job_write(srv_job *j, const char *s, size_t n) {
    pthread_mutex_lock(&j->mu);
    srv_buf_add(&j->out, s, n);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void srv_job_finish(srv_job *j, int status, char *body) {
    pthread_mutex_lock(&j->mu);
    if (body) {
        srv_buf_add(&j->out, body, strlen(body));
        free(body);
    }
    j->status = status;
    j->finished = true;
    if (!j->on_slot) {
        j->done = true;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
}

void srv_job_take_slot(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->on_slot = true;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_release_slot(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->on_slot = false;
    if (j->finished) j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void srv_job_cancel(srv_job *j, bool shutdown) {
    pthread_mutex_lock(&j->mu);
    if (shutdown) j->shutdown = true;
    atomic_store(&j->cancelled, true);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void srv_job_wait_locked(srv_job *j, bool whole) {
    /* A whole-body waiter must not return on output alone: the body is
     * written before the worker lets go of the job, and returning without
     * waiting would spin on j->mu and keep the worker from ever finishing. */
    while (!j->done && (whole || j->out_pos >= j->out.len)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!j->done && !atomic_load(&j->cancelled) && client_gone(j->fd)) {
            /* Out of the queue at once if it is still there; a running job
             * sees the flag at its next token. */
            atomic_store(&j->cancelled, true);
            pthread_mutex_unlock(&j->mu);
            if (srv_unqueue(j->srv, j)) {
                srv_metrics_cancelled(&j->srv->metrics);
                srv_job_finish(j, 499, NULL);
                srv_job_release(j); /* the queue's reference */
            }
            pthread_mutex_lock(&j->mu);
        }
    }
}

/* ---- the queue and slot choice ------------------------------------------------------- */

int srv_submit(srv_server *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return 503;
    }
    srv_slot *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < s->n_slots; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->job) continue;
        /* a cache filled under other adapters shares nothing */
        size_t k = j->n_prompts ? srv_seq_shared_prefix(&sl->seq, &j->lora, j->prompts[0], j->prompt_lens[0]) : 0;
        if (!best || k > best_len) best = sl, best_len = k;
    }
    pthread_mutex_lock(&j->mu);
    j->refs++; /* the scheduler's */
    pthread_mutex_unlock(&j->mu);
    if (best) {
        best->job = j;
        pthread_cond_signal(&best->cv);
    } else if (s->q_len < s->opts.queue) {
        s->queue[s->q_len++] = j;
    } else {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&j->mu);
        j->refs--;
        pthread_mutex_unlock(&j->mu);
        return 429;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

bool srv_unqueue(srv_server *s, srv_job *j) {
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->q_len; i++)
        if (s->queue[i] == j) {
            memmove(s->queue + i, s->queue + i + 1, sizeof *s->queue * (size_t)(s->q_len - i - 1));
            s->q_len--;
            found = true;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    return found;
}

void srv_load(srv_server *s, int *queue_depth, int *busy) {
    pthread_mutex_lock(&s->mu);
    *queue_depth = s->q_len;
    *busy = 0;
    for (int i = 0; i < s->n_slots; i++) *busy += s->slots[i].job != NULL;
    pthread_mutex_unlock(&s->mu);
}

/* ---- workers ------------------------------------------------------------------------- */

static void *worker(void *arg) {
    srv_slot *slot = arg;
    srv_server *s = slot->srv;
    /* This thread's own setting (orc_server_start resolved it on the caller's thread). */
    omp_set_num_threads(s->opts.threads_per_slot > 0 ? s->opts.threads_per_slot : 1);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!slot->job && !s->stopping) pthread_cond_wait(&slot->cv, &s->mu);
        srv_job *j = slot->job;
        if (!j) break;
        pthread_mutex_unlock(&s->mu);
        srv_job_take_slot(j);
        if (atomic_load(&j->cancelled)) {
            srv_finish_cancelled(j);
        } else {
            srv_run_job(slot, j);
        }
        pthread_mutex_lock(&s->mu);
        slot->job = NULL;
        if (s->q_len > 0 && !s->stopping) {
            slot->job = s->queue[0];
            memmove(s->queue, s->queue + 1, sizeof *s->queue * (size_t)(s->q_len - 1));
            s->q_len--;
        }
        pthread_mutex_unlock(&s->mu);
        srv_job_release_slot(j);
        srv_job_release(j);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

bool srv_slots_start(srv_server *s, orc_error *err) {
    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    s->queue = calloc((size_t)(s->opts.queue > 0 ? s->opts.queue : 1), sizeof *s->queue);
    if (!s->slots || !s->queue) {
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory for %d slots", s->n_slots);
        return false;
    }
    for (int i = 0; i < s->n_slots; i++) pthread_cond_init(&s->slots[i].cv, NULL);
    /* the shared steps use every thread of the server (this is the thread
     * orc_server_start runs on, which carries the --threads setting); the
     * per-slot count only applies to a slot's own work (embeddings,
     * prompt log-probabilities) */
    s->batcher = s->q ? srv_batcher_new_quant(s->q, s->n_slots, s->context, omp_get_max_threads(), err)
                      : srv_batcher_new(s->m, s->n_slots, s->context, omp_get_max_threads(), err);
    if (!s->batcher) return false;
    for (int i = 0; i < s->n_slots; i++) {
        srv_slot *sl = &s->slots[i];
        sl->srv = s;
        sl->index = i;
        sl->arena = orc_arena_create(0);
        if (srv_seq_init(s->batcher, &sl->seq, err) != ORC_OK || !sl->arena ||
            orc_sample_work_init(&sl->work, s->cfg->vocab_size, err) != ORC_OK) {
            orc_error_set(err, ORC_ENOMEM, "serve: cannot allocate slot %d", i);
            return false;
        }
        orc_ctx_init(&sl->ctx, sl->arena, 0);
        sl->ctx.no_grad = true;
        if (s->m) {
            sl->view = *s->m;
            sl->view.lora = NULL;
        } else {
            sl->qview = *s->q;
            sl->qview.lora = NULL;
        }
    }
    for (int i = 0; i < s->n_slots; i++) {
        if (pthread_create(&s->slots[i].thread, NULL, worker, &s->slots[i]) != 0) {
            orc_error_set(err, ORC_ENOMEM, "serve: cannot start the thread of slot %d", i);
            return false;
        }
        s->slots[i].started = true;
    }
    return true;
}

/* Cancel everything, join the workers and free the slots. */
void srv_slots_stop(srv_server *s) {
    if (!s->slots) {
        free(s->queue);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (int i = 0; i < s->q_len; i++) {
        srv_job *j = s->queue[i];
        srv_job_cancel(j, true);
        srv_finish_cancelled(j);
        srv_job_release(j);
    }
    s->q_len = 0;
    for (int i = 0; i < s->n_slots; i++) {
        if (s->slots[i].job) srv_job_cancel(s->slots[i].job, true);
        pthread_cond_signal(&s->slots[i].cv);
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_slots; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->started) pthread_join(sl->thread, NULL);
        srv_seq_release(&sl->seq);
        if (sl->arena) orc_arena_destroy(sl->arena);
        orc_sample_work_release(&sl->work);
        pthread_cond_destroy(&sl->cv);
    }
    srv_batcher_free(s->batcher);
    s->batcher = NULL;
    pthread_mutex_lock(&s->mu);
    free(s->slots);
    free(s->queue);
    s->slots = NULL;
    s->queue = NULL;
    s->n_slots = 0;
    pthread_mutex_unlock(&s->mu);
}
