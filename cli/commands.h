/* The orchard command's subcommands: each is a function taking its own
 * argv (argv[0] is the subcommand name) and returning the exit status:
 * 0 success, 1 failure while working, 2 bad usage. */
#ifndef ORCHARD_CLI_COMMANDS_H
#define ORCHARD_CLI_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#include "orchard/error.h"

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
int cmd_data(int argc, char **argv);
void cmd_data_help(void);
int cmd_tokenizer(int argc, char **argv);
void cmd_tokenizer_help(void);
int cmd_tokenize(int argc, char **argv);
void cmd_tokenize_help(void);
int cmd_detokenize(int argc, char **argv);
void cmd_detokenize_help(void);
int cmd_export(int argc, char **argv);
void cmd_export_help(void);
int cmd_import(int argc, char **argv);
void cmd_import_help(void);
int cmd_generate(int argc, char **argv);
void cmd_generate_help(void);
int cmd_chat(int argc, char **argv);
void cmd_chat_help(void);
int cmd_eval(int argc, char **argv);
void cmd_eval_help(void);
int cmd_train(int argc, char **argv);
void cmd_train_help(void);
int cmd_serve(int argc, char **argv);
void cmd_serve_help(void);
int cmd_sandbox(int argc, char **argv);
void cmd_sandbox_help(void);
int cmd_tasks(int argc, char **argv);
void cmd_tasks_help(void);
int cmd_quantize(int argc, char **argv);
void cmd_quantize_help(void);
int cmd_generate_q(int argc, char **argv);
void cmd_generate_q_help(void);
int cmd_eval_q(int argc, char **argv);
void cmd_eval_q_help(void);
int cmd_ifprune(int argc, char **argv);
void cmd_ifprune_help(void);
int cmd_ifprune_study(int argc, char **argv); /* `orchard ifprune study`; argv[0] = "ifprune" or "study" */
int cmd_lora(int argc, char **argv);
void cmd_lora_help(void);
int cmd_tsmc(int argc, char **argv);
void cmd_tsmc_help(void);
int cmd_tsmc_study(int argc, char **argv); /* `orchard tsmc study` and `orchard study tsmc` */
int cmd_study(int argc, char **argv);
void cmd_study_help(void);
int cmd_init(int argc, char **argv); /* unlisted in --help (summary NULL) */
void cmd_init_help(void);

/* Shared helpers for option parsing. */
int cli_parse_int(const char *cmd, const char *opt, const char *value, long lo, long hi, long *out);

/* cli/texts.c: the texts of a file (jsonl_field: one field of each JSONL
 * line; NULL: the whole file) for eval and calibration, and a suffix test. */
typedef struct cli_texts {
    char **p;
    size_t *len;
    size_t n, cap;
} cli_texts;
orc_status cli_texts_read(const char *path, const char *jsonl_field, cli_texts *t, orc_error *err);
void cli_texts_free(cli_texts *t);
bool cli_ends_with(const char *s, const char *suffix);

#endif
