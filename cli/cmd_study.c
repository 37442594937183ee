/* `orchard study NAME`: one entry point for the experiments that reproduce a
 * paper's result end to end and write their tables, plots and docs page.
 * Each study lives with its system; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "orchard/moe_study.h"
#include "orchard/quant.h"

void cmd_study_help(void) {
    printf("usage: orchard study tsmc --model BASE --out DIR [options]   (see orchard tsmc --help)\n"
           "       orchard study ifprune --out DIR [options]              (see orchard ifprune --help)\n"
           "       orchard study moe-vs-dense --budget FLOPS --out DIR [options]\n"
           "       orchard study compress --model DIR --text FILE --out DIR [options]\n\n"
           "Studies:\n"
           "  tsmc           twisted SMC vs majority voting and best-of-N verifiers on the math tasks\n"
           "  ifprune        IFPruning vs dense-full and dense-small models on the task suite\n"
           "  moe-vs-dense   MoE vs dense at equal wall-clock time under a Chinchilla FLOPs budget\n"
           "  compress       fp32 / q8_0 / q4_0 / pal4 / mixed / + recovery adapters: size, perplexity, speed\n"
           "                 (options: docs/quantization.md, \"Results\")\n");
}

int cmd_study(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cmd_study_help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "tsmc")) return cmd_tsmc_study(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ifprune")) return cmd_ifprune_study(argc - 1, argv + 1);
    if (!strcmp(argv[1], "moe-vs-dense")) return orc_moe_study_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "compress")) return orc_compress_study_main(argc - 2, argv + 2);
    fprintf(stderr, "orchard study: unknown study '%s' (tsmc, ifprune, moe-vs-dense, compress)\n", argv[1]);
    return 2;
}
