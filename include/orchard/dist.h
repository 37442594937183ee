/* orchard/dist.h: multi-process training (issue 6, part 2): the
 * communicator seam, the device mesh, data parallelism (bucketed gradient
 * all-reduce, optional ZeRO-1) and tensor parallelism as autograd ops.
 *
 * An orc_comm is a group of ranks plus a table of collective functions
 * (orc_comm_vtable). Two tables exist: MPI (OpenMPI on CPUs; every call is a
 * non-blocking MPI collective polled against a deadline, so a dead or stuck
 * peer turns into a message naming the rank, the collective and the
 * communicator, then MPI_Abort, instead of a hang) and "single" (one rank, no
 * MPI at all: every collective is the identity or a copy). An NCCL table
 * would fill the same slots with ncclAllReduce / ncclReduceScatter / ... on
 * device buffers, a stream per communicator and cudaStreamQuery polled
 * against the same deadline; nothing above the table would change
 * (docs/distributed.md).
 *
 * A mesh arranges the world's N = data x expert x model ranks as a 3-D grid,
 * model fastest: world rank = (d * E + e) * M + m, and splits one
 * sub-communicator per axis. Data parallel ranks hold full replicas and see
 * different rows of each global batch; model (tensor) parallel ranks hold
 * column / row slices of the attention and FFN weights (Megatron); expert
 * ranks hold E / expert of the experts (orc_ep_moe_ffn, orc_ep_llm in the
 * trainer, see docs/distributed.md). With expert and model > 1 (the 3-D
 * mesh) the model ranks of one (data, expert) group hold the same tokens
 * and each runs the MoE layers whole (its expert-axis share of the experts,
 * replicated over the model axis); attention and dense FFN layers are split. */
#ifndef ORCHARD_DIST_H
#define ORCHARD_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/error.h"
#include "orchard/llm.h"
#include "orchard/moe.h"
#include "orchard/optim.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_reduce_op { ORC_REDUCE_SUM = 0, ORC_REDUCE_MEAN = 1, ORC_REDUCE_MAX = 2 } orc_reduce_op;

typedef struct orc_comm orc_comm;

/* The functions a backend provides. Buffers are host float32 (f64 for the
 * small double reductions a norm needs; bytes for broadcast and allgather).
 * Every function returns ORC_OK or fills err; a collective that does not
 * finish within comm->timeout_s seconds never returns (the backend prints
 * the rank, the collective and the communicator and aborts the job). */
typedef struct orc_comm_vtable {
    const char *backend;  /* "mpi", "single" */
    orc_status (*allreduce_f32)(orc_comm *c, float *buf, int64_t n, orc_reduce_op op, orc_error *err);
    orc_status (*allreduce_f64)(orc_comm *c, double *buf, int64_t n, orc_reduce_op op, orc_error *err);
    orc_status (*broadcast)(orc_comm *c, void *buf, size_t bytes, int root, orc_error *err);
    /* recv holds size * bytes: rank r's send lands at recv + r * bytes. */
    orc_status (*allgather)(orc_comm *c, const void *send, size_t bytes, void *recv, orc_error *err);
    /* send holds size * n floats; rank r gets the reduction of block r. */
    orc_status (*reduce_scatter_f32)(orc_comm *c, const float *send, float *recv, int64_t n, orc_reduce_op op,
                                     orc_error *err);
    /* send_counts[r] floats go to rank r (blocks packed in rank order);
     * recv_counts[r] floats come from rank r (packed the same way). */
    orc_status (*alltoallv_f32)(orc_comm *c, const float *send, const int64_t *send_counts, float *recv,
                                const int64_t *recv_counts, orc_error *err);
    orc_status (*barrier)(orc_comm *c, orc_error *err);
    /* Ranks with the same color form a new communicator, ordered by key. */
    orc_comm *(*split)(orc_comm *c, int color, int key, const char *name, orc_error *err);
    void (*free)(orc_comm *c);
    /* Split-phase float32 sum in place (for overlapping the gradient sync
     * with backward): start it (*req NULL when it finished at once), poll it
     * (which also makes it progress), wait for it (against the deadline;
     * frees req; n is for the timeout message). Every started request must
     * be waited for. */
    orc_status (*iallreduce_sum_f32)(orc_comm *c, float *buf, int64_t n, void **req, orc_error *err);
    orc_status (*test)(orc_comm *c, void *req, bool *done, orc_error *err);
    orc_status (*wait)(orc_comm *c, void *req, int64_t n, orc_error *err);
} orc_comm_vtable;

struct orc_comm {
    const orc_comm_vtable *vt;
    int rank, size;
    int world_rank;     /* for messages */
    double timeout_s;   /* per collective; <= 0: wait forever */
    char name[32];      /* "world", "data", "expert", "model" */
    void *impl;         /* the backend's handle */
};

/* Default per-collective timeout: ORCHARD_DIST_TIMEOUT (seconds) when set,
 * else 300. */
double orc_comm_default_timeout(void);

/* A one-rank communicator (no MPI). */
orc_comm *orc_comm_single(const char *name, orc_error *err);

/* Start MPI (MPI_Init_thread, FUNNELED: OpenMP threads only compute) and
 * return MPI_COMM_WORLD's communicator with errors returned, not fatal.
 * Call once per process; orc_dist_finalize ends MPI. */
orc_comm *orc_dist_init(int *argc, char ***argv, orc_error *err);
/* Free world and end MPI. failed: a rank that failed while its peers may be
 * inside a collective aborts the job (MPI_Abort) instead of waiting in
 * MPI_Finalize for ever. */
void orc_dist_finalize(orc_comm *world, bool failed);
/* True when this process was started by mpirun with more than one rank. */
bool orc_dist_launched(int *world_size);
/* MPI_Abort(world, code) under MPI; exit(code) otherwise. */
void orc_dist_abort(orc_comm *c, int code) __attribute__((noreturn));

static inline orc_status orc_allreduce_f32(orc_comm *c, float *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    return c->vt->allreduce_f32(c, buf, n, op, err);
}
static inline orc_status orc_allreduce_f64(orc_comm *c, double *buf, int64_t n, orc_reduce_op op, orc_error *err) {
    return c->vt->allreduce_f64(c, buf, n, op, err);
}
static inline orc_status orc_broadcast(orc_comm *c, void *buf, size_t bytes, int root, orc_error *err) {
    return c->vt->broadcast(c, buf, bytes, root, err);
}
static inline orc_status orc_allgather(orc_comm *c, const void *send, size_t bytes, void *recv, orc_error *err) {
    return c->vt->allgather(c, send, bytes, recv, err);
}
static inline orc_status orc_reduce_scatter_f32(orc_comm *c, const float *send, float *recv, int64_t n,
                                                orc_reduce_op op, orc_error *err) {
    return c->vt->reduce_scatter_f32(c, send, recv, n, op, err);
}
static inline orc_status orc_alltoallv_f32(orc_comm *c, const float *send, const int64_t *send_counts, float *recv,
                                           const int64_t *recv_counts, orc_error *err) {
    return c->vt->alltoallv_f32(c, send, send_counts, recv, recv_counts, err);
}
static inline orc_status orc_barrier(orc_comm *c, orc_error *err) { return c->vt->barrier(c, err); }
static inline orc_comm *orc_comm_split(orc_comm *c, int color, int key, const char *name, orc_error *err) {
    return c->vt->split(c, color, key, name, err);
}
void orc_comm_free(orc_comm *c);

/* Every rank passes its own status (and err holding its message when
 * failed); afterwards every rank returns the same verdict: ORC_OK when all
 * succeeded, else an error (its own message, or "rank R failed: ..." naming
 * the first failed rank). Used after setup so that one rank's bad file makes
 * every rank exit instead of leaving the others in a collective. */
orc_status orc_dist_agree(orc_comm *c, orc_status mine, orc_error *err);
/* Every rank passes a 64-bit hash of what must be identical (recipe, mesh);
 * ranks whose hash differs from rank 0's are named in an error on every
 * rank. what names the thing in the message. */
orc_status orc_dist_check_same(orc_comm *c, uint64_t hash, const char *what, orc_error *err);
/* FNV-1a over bytes, continuing from h (start with 0). */
uint64_t orc_dist_hash(uint64_t h, const void *data, size_t n);

/* ---- the mesh -------------------------------------------------------------- */

typedef struct orc_mesh {
    int data, expert, model;                 /* axis sizes */
    int data_rank, expert_rank, model_rank;  /* this rank's coordinates */
    orc_comm *world;                         /* not owned */
    orc_comm *data_comm, *expert_comm, *model_comm;
    orc_comm *replica_comm;                  /* data x expert: ranks with this model coordinate */
} orc_mesh;

/* "data=D,expert=E,model=M" (any order, missing axes 1). Errors name the spec. */
orc_status orc_mesh_parse(const char *spec, int *data, int *expert, int *model, orc_error *err);
/* Parse spec (NULL: data = world size), check D * E * M == world->size and
 * split the three sub-communicators (every rank must call it). */
orc_mesh *orc_mesh_create(orc_comm *world, const char *spec, orc_error *err);
void orc_mesh_free(orc_mesh *m);
/* The model must fit the mesh: model divides the attention and KV heads and
 * intermediate_size (MoE layers are not split over the model axis); expert
 * > 1 needs num_experts divisible by expert. label prefixes the message. */
orc_status orc_mesh_check_model(const orc_mesh *mesh, const orc_llm_config *cfg, const char *label, orc_error *err);

/* ---- data parallelism ----------------------------------------------------------- */

/* Data-parallel state over one communicator for a list of parameters:
 * gradient buckets for the all-reduce, and with zero = 1 the ZeRO-1 shard
 * (this rank's slice of the flattened parameters, its gradient and the
 * optimizer pieces over it). */
typedef struct orc_ddp orc_ddp;

/* bucket_bytes: the all-reduce works on buckets of this size (0: 4 MiB).
 * params are replicated on every rank of comm. */
orc_ddp *orc_ddp_new(orc_comm *comm, orc_tensor *const *params, int n_params, int zero, size_t bucket_bytes,
                     orc_error *err);
void orc_ddp_free(orc_ddp *d);
/* Copy rank 0's parameter values to every rank (identical init). */
orc_status orc_ddp_broadcast_params(orc_ddp *d, orc_error *err);
/* The tensors the optimizer must update: the parameters themselves (zero 0)
 * or this rank's 1-D pieces of them (zero 1: piece i is a slice of
 * orc_ddp_piece_source(d, i), named like it, with its gradient in the shard).
 * *n receives the count. */
orc_tensor **orc_ddp_opt_params(orc_ddp *d, int *n);
const orc_tensor *orc_ddp_piece_source(const orc_ddp *d, int i);
/* After the last backward of a step: sum the gradients over the ranks
 * (all-reduce in buckets; zero 1: reduce-scatter into the shard), compute
 * the global L2 norm and clip to max_norm (0: no clipping). Returns the norm
 * (NAN and err set on failure). The gradients must already be scaled so that
 * their sum over ranks is the global mean-loss gradient. */
double orc_ddp_sync_grads(orc_ddp *d, double max_norm, orc_error *err);
/* Overlap the sync with the step's last backward (zero 0; a no-op with
 * ZeRO-1). After the last forward, before its backward:
 * orc_ddp_overlap_begin(d, ctx) finds the last tape node (in backward
 * order) of each parameter; run the backward with orc_backward_hooked and
 * a hook that calls orc_ddp_overlap_hook(d, k): whenever the buckets from
 * the highest down have only final gradients they are packed and their
 * non-blocking all-reduce starts. orc_ddp_sync_grads then starts the rest,
 * waits and unpacks: the same buckets summed by the same calls, so the same
 * bits as without overlap. A gradient written after the node that last
 * takes its parameter is reported as an error, not left unsynced. */
orc_status orc_ddp_overlap_begin(orc_ddp *d, const orc_ctx *ctx, orc_error *err);
void orc_ddp_overlap_hook(void *ddp, int64_t k);
/* How many buckets started while backward was still running (all steps). */
int64_t orc_ddp_early_buckets(const orc_ddp *d);
/* After the optimizer step: zero 1 gathers the updated slices into every
 * rank's parameters; zero 0 does nothing. */
orc_status orc_ddp_after_step(orc_ddp *d, orc_error *err);
/* ZeRO-1 optimizer state to and from the full (unsharded) layout of a
 * normal checkpoint. full_state(d, opt, k) gathers state buffer kind k
 * (0: exp_avg, 1: exp_avg_sq) of every parameter into one flat array in
 * parameter order (owned by d, valid until the next call), on every rank.
 * load_state copies this rank's slice out of such a flat array. Offsets:
 * orc_ddp_param_offset. */
const float *orc_ddp_full_state(orc_ddp *d, orc_optim *opt, int kind, orc_error *err);
orc_status orc_ddp_load_state(orc_ddp *d, orc_optim *opt, int kind, const float *flat, orc_error *err);
int64_t orc_ddp_param_offset(const orc_ddp *d, int param_index);
int orc_ddp_zero(const orc_ddp *d);

/* ---- tensor (model) parallelism --------------------------------------------------- */

/* Megatron's f and g: orc_tp_copy is the identity forward and sums the
 * gradient over comm backward (at the input of a column-parallel
 * projection); orc_tp_reduce sums the partial outputs over comm forward and
 * passes the gradient through backward (after a row-parallel projection). */
orc_tensor *orc_tp_copy(orc_ctx *ctx, orc_comm *comm, orc_tensor *x);
orc_tensor *orc_tp_reduce(orc_ctx *ctx, orc_comm *comm, orc_tensor *x);

/* A model-parallel LM: this rank's slice of a full model. local->cfg has
 * num_attention_heads / M, num_key_value_heads / M, intermediate_size / M;
 * wq, wk, wv, w_gate, w_up hold rows (output features) of this rank's heads
 * and columns, wo and w_down the matching input columns; embeddings, norms
 * and MoE layers (router and experts, full moe_intermediate_size) are
 * replicated: every model rank runs a MoE layer whole on the same tokens
 * (expert parallel when orc_ep_llm binds local's MoE layers). */
typedef struct orc_tp_llm {
    orc_llm *local;
    orc_comm *comm;
    orc_llm_config full;
} orc_tp_llm;

/* Slice full (on every rank the same values) for model rank comm->rank. */
orc_tp_llm *orc_tp_llm_from_full(const orc_llm *full, orc_comm *comm, bool with_grad, orc_error *err);
void orc_tp_llm_free(orc_tp_llm *tp);
/* Gather the slices back into full's parameters (every rank gets them);
 * grads: gather the gradients into full's gradient buffers instead (the
 * QK-norm weights, replicated but applied to local heads only, get the sum
 * of the ranks' gradients). */
orc_status orc_tp_llm_to_full(orc_tp_llm *tp, orc_llm *full, bool grads, orc_error *err);
/* For training on slices: sum the QK-norm weights' gradients over the
 * model ranks (after backward, before the data-parallel sync); whether
 * parameter i is split (else replicated); parameter i's buffer (a gradient,
 * an optimizer moment) from this rank's layout into the full one (every
 * model rank calls it; full has the full numel), and back (this rank's part). */
orc_status orc_tp_llm_sync_grads(orc_tp_llm *tp, orc_error *err);
bool orc_tp_param_is_split(const orc_tp_llm *tp, int i);
orc_status orc_tp_gather(orc_tp_llm *tp, int i, const float *local, float *full, orc_error *err);
void orc_tp_scatter(const orc_tp_llm *tp, int i, const float *full, float *local);
/* Logits [B, T, V] and the mean cross-entropy, as orc_llm_forward /
 * orc_llm_loss compute them on the full model; MoE router losses go to
 * local->moe_aux as orc_llm_forward puts them in m->moe_aux. */
orc_tensor *orc_tp_llm_forward(orc_ctx *ctx, orc_tp_llm *tp, orc_tensor *ids);
orc_tensor *orc_tp_llm_loss(orc_ctx *ctx, orc_tp_llm *tp, orc_tensor *ids, orc_tensor *targets);

/* ---- expert parallelism ----------------------------------------------------------------- */

/* The MoE FFN (orc_moe_ffn's contract) with the experts split over comm:
 * layer->router is the full [E, D] router (replicated), layer->w_gate /
 * w_up / w_down hold only this rank's E / P experts (rank r owns experts
 * r * E/P .. (r+1) * E/P - 1); opts->n_experts is the full E. Each rank
 * routes its own tokens x; the kept slots travel to their experts' ranks
 * and back with all-to-all-v (autograd ops: backward sends the gradients
 * back the same way). layer->stats.per_expert, when set, needs E entries.
 * The expert weights' gradients sum over every rank's tokens; the router's
 * are this rank's tokens' only (a data-parallel sync sums them). */
orc_tensor *orc_ep_moe_ffn(orc_ctx *ctx, orc_comm *comm, orc_moe_layer *layer, const orc_moe_opts *opts,
                           orc_tensor *x, orc_moe_forward *res);

/* Expert parallelism inside an LM: orc_moe_ffn runs orc_ep_moe_ffn over
 * comm for a layer bound here (its w_gate / w_up / w_down then hold only
 * this rank's experts). Bindings are process-wide; bind at setup, unbind
 * before the layer is freed. NULL comm unbinds. */
orc_status orc_ep_bind(const orc_moe_layer *layer, orc_comm *comm, orc_error *err);
void orc_ep_unbind(const orc_moe_layer *layer);
orc_comm *orc_ep_bound_comm(const orc_moe_layer *layer);

/* Training a MoE LM with its experts split over comm (the expert axis):
 * every MoE layer of full gets views of this rank's experts (rows
 * rank * E/P .. of the full tensors' data and gradients) and is bound to
 * comm. params[i] is full->params[i], or its view for expert weights; the
 * rest stays replicated. orc_ep_llm_free restores the full tensors. */
typedef struct orc_ep_llm {
    orc_llm *full;
    orc_comm *comm;
    int n_params;
    orc_tensor **params;       /* what a rank trains */
    orc_tensor **full_params;  /* full->params as they were */
    orc_arena *arena;          /* the views */
} orc_ep_llm;

orc_ep_llm *orc_ep_llm_new(orc_llm *full, orc_comm *comm, orc_error *err);
void orc_ep_llm_free(orc_ep_llm *ep);
bool orc_ep_param_is_expert(const orc_ep_llm *ep, int i);
/* Parameter i's buffer (weights, a gradient, an optimizer moment) from this
 * rank's layout into the full one (all-gather over the expert ranks; every
 * expert rank calls it), and this rank's part back out of a full buffer. */
orc_status orc_ep_gather(orc_ep_llm *ep, int i, const float *local, float *full, orc_error *err);
void orc_ep_scatter(const orc_ep_llm *ep, int i, const float *full, float *local);
/* Gather every rank's experts into the full tensors (before a save). */
orc_status orc_ep_llm_to_full(orc_ep_llm *ep, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
