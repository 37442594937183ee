/* The hand-off between a slot worker and the HTTP thread that waits for a
 * job (src/server/sched.c), without a model or sockets. A worker records a
 * job's answer (srv_job_finish) before it lets go of the slot
 * (srv_job_release_slot); the waiter of a whole, non-streamed answer must
 * keep sleeping on the job's condition in between, not spin while holding
 * the job's lock, which once left a worker blocked forever and its slot lost
 * (a rare hang in server/test_load). A streaming waiter returns as soon as
 * there is output to send. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gradcheck.h"
#include "../../src/server/server_internal.h"

typedef struct waiter {
    srv_job *j;
    bool whole;
    int status;
    bool done_seen;
    size_t out_len;
} waiter;

static void *wait_for_job(void *arg) {
    waiter *w = arg;
    pthread_mutex_lock(&w->j->mu);
    srv_job_wait_locked(w->j, w->whole);
    w->status = w->j->status;
    w->done_seen = w->j->done;
    w->out_len = w->j->out.len;
    pthread_mutex_unlock(&w->j->mu);
    return NULL;
}

/* Lock j->mu within `seconds`, as the worker's srv_job_release_slot must. */
static bool lock_within(srv_job *j, int seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return pthread_mutex_timedlock(&j->mu, &ts) == 0;
}

static void test_whole_waiter_sleeps_until_slot_released(void **state) {
    (void)state;
    srv_job *j = srv_job_new(NULL);
    assert_non_null(j);
    srv_job_take_slot(j);
    srv_job_finish(j, 200, strdup("{\"ok\":true}")); /* answer recorded, slot still held */
    waiter w = {.j = j, .whole = true, .status = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_for_job, &w), 0);
    usleep(150 * 1000); /* the waiter is in its loop now (three 50 ms polls) */
    /* the worker can still take the job's lock ... */
    bool locked = lock_within(j, 5);
    if (locked) pthread_mutex_unlock(&j->mu);
    assert_true(locked);
    srv_job_release_slot(j); /* ... and lets go of the slot: now the job is done */
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(w.done_seen);
    assert_int_equal(w.status, 200);
    assert_int_equal(w.out_len, strlen("{\"ok\":true}"));
    srv_job_release(j);
}

static void test_stream_waiter_returns_on_output(void **state) {
    (void)state;
    srv_job *j = srv_job_new(NULL);
    assert_non_null(j);
    srv_job_take_slot(j);
    waiter w = {.j = j, .whole = false, .status = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_for_job, &w), 0);
    usleep(60 * 1000);
    srv_job_write(j, "data: x\n\n", 9);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_false(w.done_seen); /* woke for the output, not for the end */
    assert_int_equal(w.out_len, 9);
    srv_job_finish(j, 200, NULL);
    srv_job_release_slot(j);
    srv_job_release(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_waiter_sleeps_until_slot_released),
        cmocka_unit_test(test_stream_waiter_returns_on_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
