/* The orchard command's subcommands: each is a function taking its own
 * argv (argv[0] is the subcommand name) and returning the exit status:
 * 0 success, 1 failure while working, 2 bad usage. */
#ifndef ORCHARD_CLI_COMMANDS_H
#define ORCHARD_CLI_COMMANDS_H

typedef struct orc_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
    void (*help)(void);
} orc_command;

int cmd_info(int argc, char **argv);
void cmd_info_help(void);
int cmd_inspect(int argc, char **argv);
void cmd_inspect_help(void);

/* Shared helpers for option parsing. */
int cli_parse_int(const char *cmd, const char *opt, const char *value, long lo, long hi, long *out);

#endif
