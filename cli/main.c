/* The orchard command: git-style subcommands dispatched from one table. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("orchard %s\n", ORCHARD_VERSION);
        return 0;
    }
    printf("usage: orchard <command> [options]\n");
    return argc > 1 ? 2 : 0;
}
