/* `orchard study NAME`: one entry point for the experiments that reproduce a
 * paper's result end to end and write their tables, plots and docs page.
 * Each study lives with its system; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

void cmd_study_help(void) {
    printf("usage: orchard study tsmc --model BASE --out DIR [options]   (see orchard tsmc --help)\n\n"
           "Studies:\n"
           "  tsmc   twisted SMC vs majority voting and best-of-N verifiers on the math tasks\n");
}

int cmd_study(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cmd_study_help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "tsmc")) return cmd_tsmc_study(argc - 2, argv + 2);
    fprintf(stderr, "orchard study: unknown study '%s' (tsmc)\n", argv[1]);
    return 2;
}
