/* The two communicator backends behind orchard/dist.h: "single" (one rank,
 * no MPI) and "mpi" (OpenMPI). Every MPI collective is issued non-blocking
 * and polled with MPI_Test against a deadline (the watchdog): shared-memory
 * transports never report a dead peer, they just wait, so without the
 * deadline a rank that died or got stuck would hang the job for ever. On
 * expiry the rank prints which collective on which communicator it was
 * waiting in and aborts the job (MPI_Abort), since a half-finished
 * collective cannot be cancelled. MPI_COMM_WORLD and every split use
 * MPI_ERRORS_RETURN, so transport errors come back as messages. The
 * split-phase sum (start, test, wait) lets the gradient sync run during
 * backward; its wait is the same watchdog. Also the cross-rank checks built
 * on the table: agree on a status, same hash. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/dist.h"

double orc_comm_default_timeout(void) {
    const char *s = getenv("ORCHARD_DIST_TIMEOUT");
    if (s && *s) {
        char *end;
        double v = strtod(s, &end);
        if (end != s && !*end && isfinite(v)) return v;
    }
    return 300.0;
}

void orc_comm_free(orc_comm *c) {
    if (c) c->vt->free(c);
}

static void set_name(orc_comm *c, const char *name) { snprintf(c->name, sizeof c->name, "%s", name ? name : "comm"); }

/* ---- single process ---------------------------------------------------------------- */

static orc_status s_allreduce_f32(orc_comm *c, float *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    (void)c, (void)buf, (void)n, (void)op, (void)err;
    return ORC_OK; /* sum, mean and max over one rank are the value itself */
}
static orc_status s_allreduce_f64(orc_comm *c, double *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    (void)c, (void)buf, (void)n, (void)op, (void)err;
    return ORC_OK;
}
static orc_status s_broadcast(orc_comm *c, void *buf, size_t bytes, int root, orc_error *err) {
    (void)c, (void)buf, (void)bytes;
    if (root != 0) return orc_error_set(err, ORC_EINVAL, "broadcast: root %d on a one-rank communicator", root);
    return ORC_OK;
}
static orc_status s_allgather(orc_comm *c, const void *send, size_t bytes, void *recv, orc_error *err) {
    (void)c, (void)err;
    if (bytes && send != recv) memmove(recv, send, bytes);
    return ORC_OK;
}
static orc_status s_reduce_scatter(orc_comm *c, const float *send, float *recv, int64_t n, orc_reduce_op op,
                                   orc_error *err) {
    (void)c, (void)op, (void)err;
    if (n > 0 && send != recv) memmove(recv, send, sizeof(float) * (size_t)n);
    return ORC_OK;
}
static orc_status s_alltoallv(orc_comm *c, const float *send, const int64_t *sc, float *recv, const int64_t *rc,
                              orc_error *err) {
    (void)c;
    if (sc[0] != rc[0])
        return orc_error_set(err, ORC_EINVAL, "alltoallv: sends %lld values to itself but expects %lld",
                             (long long)sc[0], (long long)rc[0]);
    if (sc[0] > 0 && send != recv) memmove(recv, send, sizeof(float) * (size_t)sc[0]);
    return ORC_OK;
}
static orc_status s_barrier(orc_comm *c, orc_error *err) {
    (void)c, (void)err;
    return ORC_OK;
}
static orc_comm *s_split(orc_comm *c, int color, int key, const char *name, orc_error *err) {
    (void)c, (void)color, (void)key;
    return orc_comm_single(name, err);
}
static void s_free(orc_comm *c) { free(c); }
static orc_status s_iallreduce(orc_comm *c, float *buf, int64_t n, void **req, orc_error *err) {
    (void)c, (void)buf, (void)n, (void)err;
    *req = NULL; /* done already: the sum over one rank is the value */
    return ORC_OK;
}
static orc_status s_test(orc_comm *c, void *req, bool *done, orc_error *err) {
    (void)c, (void)req, (void)err;
    *done = true;
    return ORC_OK;
}
static orc_status s_wait(orc_comm *c, void *req, int64_t n, orc_error *err) {
    (void)c, (void)req, (void)n, (void)err;
    return ORC_OK;
}

static const orc_comm_vtable SINGLE = {"single",    s_allreduce_f32, s_allreduce_f64, s_broadcast, s_allgather,
                                       s_reduce_scatter, s_alltoallv,  s_barrier,       s_split,     s_free,
                                       s_iallreduce,     s_test,       s_wait};

orc_comm *orc_comm_single(const char *name, orc_error *err) {
    orc_comm *c = calloc(1, sizeof *c);
    if (!c) {
        orc_error_set(err, ORC_ENOMEM, "communicator: out of memory");
        return NULL;
    }
    c->vt = &SINGLE;
    c->rank = 0;
    c->size = 1;
    c->timeout_s = orc_comm_default_timeout();
    set_name(c, name);
    return c;
}

/* ---- MPI ------------------------------------------------------------------------------ */

typedef struct mpi_comm {
    MPI_Comm comm;
    bool owned;  /* free with MPI_Comm_free */
} mpi_comm;

static MPI_Comm handle(const orc_comm *c) { return ((const mpi_comm *)c->impl)->comm; }

static orc_status mpi_fail(orc_comm *c, int rc, const char *what, orc_error *err) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return orc_error_set(err, ORC_EIO, "rank %d: %s on the %s communicator failed: %s", c->world_rank, what, c->name,
                         msg);
}

/* The watchdog: poll req until done or the deadline, sleeping a little
 * between polls after a short spin so that oversubscribed ranks (more
 * processes than cores) leave the CPU to the peer they are waiting for. */
static orc_status wait_req(orc_comm *c, MPI_Request *req, const char *what, int64_t count, orc_error *err) {
    const double start = MPI_Wtime();
    long polls = 0;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, what, err);
        if (done) return ORC_OK;
        if (++polls > 200) {
            struct timespec ts = {0, polls > 20000 ? 1000000 : 20000};
            nanosleep(&ts, NULL);
        }
        double waited = MPI_Wtime() - start;
        if (c->timeout_s > 0 && waited > c->timeout_s) {
            fprintf(stderr,
                    "orchard: rank %d: %s of %lld values on the %s communicator (%d ranks) did not complete within "
                    "%g s: a peer rank died, exited early or is stuck; aborting the job (set ORCHARD_DIST_TIMEOUT "
                    "to wait longer)\n",
                    c->world_rank, what, (long long)count, c->name, c->size, c->timeout_s);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
            exit(3); /* MPI_Abort does not return; this keeps the compiler and a broken runtime honest */
        }
    }
}

static MPI_Op mpi_op(orc_reduce_op op) { return op == ORC_REDUCE_MAX ? MPI_MAX : MPI_SUM; }

static orc_status m_allreduce_f32(orc_comm *c, float *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    if (n <= 0) return ORC_OK;
    if (n > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "allreduce: %lld values is too many", (long long)n);
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, mpi_op(op), handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "allreduce", err);
    orc_status st = wait_req(c, &req, "allreduce", n, err);
    if (st == ORC_OK && op == ORC_REDUCE_MEAN) {
        const float inv = 1.0f / (float)c->size;
        for (int64_t i = 0; i < n; i++) buf[i] *= inv;
    }
    return st;
}

static orc_status m_allreduce_f64(orc_comm *c, double *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    if (n <= 0) return ORC_OK;
    if (n > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "allreduce: %lld values is too many", (long long)n);
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, mpi_op(op), handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "allreduce", err);
    orc_status st = wait_req(c, &req, "allreduce", n, err);
    if (st == ORC_OK && op == ORC_REDUCE_MEAN)
        for (int64_t i = 0; i < n; i++) buf[i] /= (double)c->size;
    return st;
}

static orc_status m_broadcast(orc_comm *c, void *buf, size_t bytes, int root, orc_error *err) {
    if (!bytes) return ORC_OK;
    if (bytes > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "broadcast: %zu bytes is too many", bytes);
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "broadcast", err);
    return wait_req(c, &req, "broadcast", (int64_t)bytes, err);
}

static orc_status m_allgather(orc_comm *c, const void *send, size_t bytes, void *recv, orc_error *err) {
    if (!bytes) return ORC_OK;
    if (bytes > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "allgather: %zu bytes is too many", bytes);
    MPI_Request req;
    int rc = MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "allgather", err);
    return wait_req(c, &req, "allgather", (int64_t)bytes, err);
}

static orc_status m_reduce_scatter(orc_comm *c, const float *send, float *recv, int64_t n, orc_reduce_op op,
                                   orc_error *err) {
    if (n <= 0) return ORC_OK;
    if (n > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "reduce-scatter: %lld values is too many", (long long)n);
    MPI_Request req;
    int rc = MPI_Ireduce_scatter_block(send, recv, (int)n, MPI_FLOAT, mpi_op(op), handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "reduce-scatter", err);
    orc_status st = wait_req(c, &req, "reduce-scatter", n, err);
    if (st == ORC_OK && op == ORC_REDUCE_MEAN) {
        const float inv = 1.0f / (float)c->size;
        for (int64_t i = 0; i < n; i++) recv[i] *= inv;
    }
    return st;
}

static orc_status m_alltoallv(orc_comm *c, const float *send, const int64_t *sc, float *recv, const int64_t *rc64,
                              orc_error *err) {
    const int P = c->size;
    int *buf = calloc((size_t)P * 4, sizeof *buf);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "alltoallv: out of memory");
    int *scount = buf, *sdisp = buf + P, *rcount = buf + 2 * P, *rdisp = buf + 3 * P;
    int64_t so = 0, ro = 0;
    for (int r = 0; r < P; r++) {
        if (sc[r] < 0 || rc64[r] < 0 || so + sc[r] > INT32_MAX || ro + rc64[r] > INT32_MAX) {
            free(buf);
            return orc_error_set(err, ORC_ERANGE, "alltoallv: bad counts for rank %d (%lld, %lld)", r,
                                 (long long)sc[r], (long long)rc64[r]);
        }
        scount[r] = (int)sc[r];
        sdisp[r] = (int)so;
        rcount[r] = (int)rc64[r];
        rdisp[r] = (int)ro;
        so += sc[r];
        ro += rc64[r];
    }
    MPI_Request req;
    int rc = MPI_Ialltoallv(send, scount, sdisp, MPI_FLOAT, recv, rcount, rdisp, MPI_FLOAT, handle(c), &req);
    orc_status st = rc != MPI_SUCCESS ? mpi_fail(c, rc, "alltoallv", err) : wait_req(c, &req, "alltoallv", so, err);
    free(buf);
    return st;
}

static orc_status m_barrier(orc_comm *c, orc_error *err) {
    MPI_Request req;
    int rc = MPI_Ibarrier(handle(c), &req);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "barrier", err);
    return wait_req(c, &req, "barrier", 0, err);
}

static orc_comm *wrap_mpi(MPI_Comm comm, bool owned, const char *name, int world_rank, orc_error *err);

static orc_comm *m_split(orc_comm *c, int color, int key, const char *name, orc_error *err) {
    MPI_Comm out;
    int rc = MPI_Comm_split(handle(c), color, key, &out);
    if (rc != MPI_SUCCESS) {
        mpi_fail(c, rc, "split", err);
        return NULL;
    }
    MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
    orc_comm *r = wrap_mpi(out, true, name, c->world_rank, err);
    if (r) r->timeout_s = c->timeout_s;
    return r;
}

static void m_free(orc_comm *c) {
    mpi_comm *m = c->impl;
    if (m && m->owned) MPI_Comm_free(&m->comm);
    free(m);
    free(c);
}

/* The split-phase sum: the request lives on the heap until m_wait. The
 * same MPI_Iallreduce as m_allreduce_f32 issues, so a bucket summed either
 * way gets the same bits. */
static orc_status m_iallreduce(orc_comm *c, float *buf, int64_t n, void **req, orc_error *err) {
    *req = NULL;
    if (n <= 0) return ORC_OK;
    if (n > INT32_MAX) return orc_error_set(err, ORC_ERANGE, "allreduce: %lld values is too many", (long long)n);
    MPI_Request *r = malloc(sizeof *r);
    if (!r) return orc_error_set(err, ORC_ENOMEM, "allreduce: out of memory");
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, handle(c), r);
    if (rc != MPI_SUCCESS) {
        free(r);
        return mpi_fail(c, rc, "allreduce", err);
    }
    *req = r;
    return ORC_OK;
}
/* One MPI_Test: it also lets the non-blocking collective progress, which
 * OpenMPI does only inside MPI calls. A finished request becomes
 * MPI_REQUEST_NULL, which later tests report as done. */
static orc_status m_test(orc_comm *c, void *req, bool *done, orc_error *err) {
    int flag = 1;
    int rc = req ? MPI_Test((MPI_Request *)req, &flag, MPI_STATUS_IGNORE) : MPI_SUCCESS;
    *done = flag != 0;
    return rc != MPI_SUCCESS ? mpi_fail(c, rc, "allreduce", err) : ORC_OK;
}
static orc_status m_wait(orc_comm *c, void *req, int64_t n, orc_error *err) {
    if (!req) return ORC_OK;
    orc_status st = wait_req(c, (MPI_Request *)req, "allreduce", n, err);
    free(req);
    return st;
}

static const orc_comm_vtable MPI_TABLE = {"mpi",          m_allreduce_f32, m_allreduce_f64, m_broadcast, m_allgather,
                                          m_reduce_scatter, m_alltoallv,   m_barrier,       m_split,     m_free,
                                          m_iallreduce,     m_test,        m_wait};

static orc_comm *wrap_mpi(MPI_Comm comm, bool owned, const char *name, int world_rank, orc_error *err) {
    orc_comm *c = calloc(1, sizeof *c);
    mpi_comm *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        orc_error_set(err, ORC_ENOMEM, "communicator: out of memory");
        return NULL;
    }
    m->comm = comm;
    m->owned = owned;
    c->vt = &MPI_TABLE;
    c->impl = m;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    c->world_rank = world_rank;
    c->timeout_s = orc_comm_default_timeout();
    set_name(c, name);
    return c;
}

orc_comm *orc_dist_init(int *argc, char ***argv, orc_error *err) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            orc_error_set(err, ORC_EIO, "MPI_Init_thread failed");
            return NULL;
        }
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return wrap_mpi(MPI_COMM_WORLD, false, "world", rank, err);
}

void orc_dist_finalize(orc_comm *world, bool failed) {
    bool mpi = world && world->vt == &MPI_TABLE;
    int size = world ? world->size : 1;
    orc_comm_free(world);
    if (!mpi) return;
    if (failed && size > 1) {
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
}

bool orc_dist_launched(int *world_size) {
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    if (!s) s = getenv("PMI_SIZE");
    int n = s ? atoi(s) : 1;
    if (world_size) *world_size = n > 0 ? n : 1;
    return s != NULL;
}

void orc_dist_abort(orc_comm *c, int code) {
    fflush(stderr);
    if (c && c->vt == &MPI_TABLE) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

/* ---- checks across ranks ---------------------------------------------------------------- */

uint64_t orc_dist_hash(uint64_t h, const void *data, size_t n) {
    if (h == 0) h = 1469598103934665603ull;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

orc_status orc_dist_agree(orc_comm *c, orc_status mine, orc_error *err) {
    if (c->size == 1) return mine;
    int32_t *all = calloc((size_t)c->size, sizeof *all);
    if (!all) return orc_error_set(err, ORC_ENOMEM, "out of memory");
    int32_t v = (int32_t)mine;
    orc_error local = {0};
    orc_status st = orc_allgather(c, &v, sizeof v, all, &local);
    if (st != ORC_OK) {
        free(all);
        return mine != ORC_OK ? mine : orc_error_set(err, st, "%s", local.msg);
    }
    int bad = -1;
    for (int r = 0; r < c->size && bad < 0; r++)
        if (all[r] != ORC_OK) bad = r;
    free(all);
    if (mine != ORC_OK) return mine;
    if (bad < 0) return ORC_OK;
    return orc_error_set(err, (orc_status)ORC_EINVAL, "rank %d failed (its message is above); stopping rank %d too",
                         bad, c->rank);
}

orc_status orc_dist_check_same(orc_comm *c, uint64_t hash, const char *what, orc_error *err) {
    if (c->size == 1) return ORC_OK;
    uint64_t *all = calloc((size_t)c->size, sizeof *all);
    if (!all) return orc_error_set(err, ORC_ENOMEM, "out of memory");
    orc_status st = orc_allgather(c, &hash, sizeof hash, all, err);
    if (st == ORC_OK) {
        char ranks[256] = "";
        size_t n = 0;
        int diff = 0;
        for (int r = 1; r < c->size; r++)
            if (all[r] != all[0]) {
                if (n < sizeof ranks - 16) n += (size_t)snprintf(ranks + n, sizeof ranks - n, "%s%d", diff ? ", " : "", r);
                diff++;
            }
        if (diff)
            st = orc_error_set(err, ORC_EINVAL, "rank %d: the %s differs between ranks (rank 0 has hash %016llx; "
                               "rank(s) %s differ; this rank has %016llx): every rank must get the same %s",
                               c->rank, what, (unsigned long long)all[0], ranks, (unsigned long long)hash, what);
    }
    free(all);
    return st;
}
