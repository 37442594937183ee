/* `orchard info`: what this build is and what it will use on this machine. */
#include <stdio.h>

#include "commands.h"
#include "orchard/runtime.h"

void cmd_info_help(void) {
    printf("usage: orchard info\n\n"
           "Print the orchard version, the thread count, OpenBLAS's build description\n"
           "and the SIMD features of this CPU.\n");
}

int cmd_info(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "orchard info: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    char feat[160];
    printf("orchard %s\n", orc_version());
    printf("threads: %d\n", orc_get_threads());
    printf("blas: %s\n", orc_blas_config());
    printf("cpu features: %s\n", orc_cpu_features(feat, sizeof feat));
    printf("devices: cpu\n");
    return 0;
}
