/* The device mesh (orchard/dist.h): parsing "data=D,expert=E,model=M",
 * placing the world's ranks on the D x E x M grid (model fastest, so the
 * ranks that talk most, the tensor-parallel ones, are neighbours), splitting
 * one sub-communicator per axis, and checking that a model fits the mesh.
 * Every check is a pure function of the spec, the world size and the
 * config, so every rank reaches the same verdict and prints the same error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/dist.h"

orc_status orc_mesh_parse(const char *spec, int *data, int *expert, int *model, orc_error *err) {
    *data = *expert = *model = 1;
    if (!spec || !*spec) return orc_error_set(err, ORC_EINVAL, "--mesh: empty; expected data=D,expert=E,model=M");
    bool seen[3] = {false, false, false};
    const char *p = spec;
    while (*p) {
        const char *eq = strchr(p, '=');
        if (!eq) return orc_error_set(err, ORC_EINVAL, "--mesh '%s': expected AXIS=N items (data, expert, model)", spec);
        size_t klen = (size_t)(eq - p);
        int axis = klen == 4 && !strncmp(p, "data", 4) ? 0 : klen == 6 && !strncmp(p, "expert", 6) ? 1
                   : klen == 5 && !strncmp(p, "model", 5) ? 2 : -1;
        if (axis < 0)
            return orc_error_set(err, ORC_EINVAL, "--mesh '%s': unknown axis '%.*s' (data, expert, model)", spec,
                                 (int)klen, p);
        if (seen[axis]) return orc_error_set(err, ORC_EINVAL, "--mesh '%s': axis '%.*s' given twice", spec, (int)klen, p);
        seen[axis] = true;
        char *end;
        errno = 0;
        long v = strtol(eq + 1, &end, 10);
        if (end == eq + 1 || errno || v < 1 || v > 1 << 20 || (*end && *end != ','))
            return orc_error_set(err, ORC_EINVAL, "--mesh '%s': '%.*s' needs a positive integer", spec, (int)klen, p);
        *(axis == 0 ? data : axis == 1 ? expert : model) = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    return ORC_OK;
}

orc_mesh *orc_mesh_create(orc_comm *world, const char *spec, orc_error *err) {
    int D = world->size, E = 1, M = 1;
    if (spec && orc_mesh_parse(spec, &D, &E, &M, err) != ORC_OK) return NULL;
    if ((long long)D * E * M != world->size) {
        orc_error_set(err, ORC_EINVAL, "rank %d: --mesh data=%d,expert=%d,model=%d needs %lld ranks but the job has "
                      "%d (mpirun -np %lld)", world->rank, D, E, M, (long long)D * E * M, world->size,
                      (long long)D * E * M);
        return NULL;
    }
    orc_mesh *m = calloc(1, sizeof *m);
    if (!m) {
        orc_error_set(err, ORC_ENOMEM, "mesh: out of memory");
        return NULL;
    }
    const int r = world->rank;
    m->data = D, m->expert = E, m->model = M;
    m->world = world;
    m->model_rank = r % M;
    m->expert_rank = (r / M) % E;
    m->data_rank = r / (M * E);
    /* data: same (e, m); expert: same (d, m); model: same (d, e). */
    m->data_comm = orc_comm_split(world, m->expert_rank * M + m->model_rank, m->data_rank, "data", err);
    m->expert_comm = m->data_comm ? orc_comm_split(world, m->data_rank * M + m->model_rank, m->expert_rank, "expert", err)
                                  : NULL;
    m->model_comm = m->expert_comm ? orc_comm_split(world, m->data_rank * E + m->expert_rank, m->model_rank, "model", err)
                                   : NULL;
    /* replica: same m (data x expert), for what expert parallelism replicates. */
    m->replica_comm = m->model_comm ? orc_comm_split(world, m->model_rank, m->data_rank * E + m->expert_rank,
                                                     "data x expert", err)
                                    : NULL;
    if (!m->replica_comm) {
        orc_mesh_free(m);
        return NULL;
    }
    return m;
}

void orc_mesh_free(orc_mesh *m) {
    if (!m) return;
    orc_comm_free(m->data_comm);
    orc_comm_free(m->expert_comm);
    orc_comm_free(m->model_comm);
    orc_comm_free(m->replica_comm);
    free(m);
}

orc_status orc_mesh_check_model(const orc_mesh *mesh, const orc_llm_config *c, const char *label, orc_error *err) {
    const int M = mesh->model, E = mesh->expert;
    /* MoE layers are not split over the model axis (docs/distributed.md,
     * "Expert x model"), so moe_intermediate_size may be anything. */
    const struct { const char *key; int64_t v; } f[] = {
        {"num_attention_heads", c->num_attention_heads},
        {"num_key_value_heads", c->num_key_value_heads},
        {"intermediate_size", c->intermediate_size},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v % M != 0)
            return orc_error_set(err, ORC_EINVAL, "%s: --mesh model=%d does not divide %s = %lld", label, M, f[i].key,
                                 (long long)f[i].v);
    if (E > 1 && c->num_experts <= 0)
        return orc_error_set(err, ORC_EINVAL, "%s: --mesh expert=%d but the model has no experts (num_experts = 0)",
                             label, E);
    if (E > 1 && c->num_experts % E != 0)
        return orc_error_set(err, ORC_EINVAL, "%s: --mesh expert=%d does not divide num_experts = %lld", label, E,
                             (long long)c->num_experts);
    return ORC_OK;
}
