/* Thread count, version and build facts (see orchard/runtime.h). */
#include "orchard/runtime.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

void orc_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int orc_get_threads(void) { return omp_get_max_threads(); }

const char *orc_version(void) { return ORCHARD_VERSION; }

const char *orc_blas_config(void) {
    const char *c = openblas_get_config();
    return c ? c : "unknown";
}

const char *orc_cpu_features(char *buf, size_t cap) {
    __builtin_cpu_init();
    const char *names[] = {"sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni"};
    const int has[] = {
        __builtin_cpu_supports("sse4.2"),   __builtin_cpu_supports("avx"),      __builtin_cpu_supports("avx2"),
        __builtin_cpu_supports("fma"),      __builtin_cpu_supports("avx512f"),  __builtin_cpu_supports("avx512bw"),
        __builtin_cpu_supports("avx512vl"), __builtin_cpu_supports("avx512vnni"),
    };
    size_t n = 0;
    if (cap) buf[0] = '\0';
    for (int i = 0; i < 8; i++)
        if (has[i] && n < cap) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? " " : "", names[i]);
    if (!n && cap) snprintf(buf, cap, "none");
    return buf;
}
