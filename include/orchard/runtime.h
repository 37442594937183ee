/* orchard/runtime.h: process-wide runtime settings and build facts.
 *
 * The thread count is the one piece of process state orchard sets: OpenMP's
 * and OpenBLAS's pools are per process, so this module is the single place
 * that changes them. Results do not depend on the count (see ops.h). */
#ifndef ORCHARD_RUNTIME_H
#define ORCHARD_RUNTIME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Use n threads for orchard's kernels and for OpenBLAS; n <= 0 means all cores. */
void orc_set_threads(int n);
int orc_get_threads(void);

/* "0.1.0" */
const char *orc_version(void);
/* OpenBLAS's own description of its build (core type, threading), or "unknown". */
const char *orc_blas_config(void);
/* Space-separated SIMD features of this CPU that orchard's kernels can use
 * (e.g. "avx2 fma avx512f avx512vnni"), written into buf. */
const char *orc_cpu_features(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
