/* `orchard sandbox`: the ToolSandbox world from the command line, for manual
 * exploration. `tools` lists the tools and their schemas, `call` runs one
 * tool against a fresh or saved state, `show` prints a saved state's table at
 * a message index, `gen-data` regenerates the offline data set, `run` plays
 * and scores a directory of scenarios in its augmentations, `report` tables
 * a run by category and augmentation.
 * The work itself lives in orchard/sandbox.h and orchard/sandbox_play.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/sandbox.h"
#include "orchard/sandbox_play.h"

void cmd_sandbox_help(void) {
    printf("usage: orchard sandbox tools [--json]\n"
           "       orchard sandbox call NAME 'ARGS_JSON' [--state FILE.sqlite] [--data FILE.json]\n"
           "       orchard sandbox show --state FILE.sqlite [--table T] [--at INDEX]\n"
           "       orchard sandbox gen-data [--seed N] [--out FILE.json]\n"
           "       orchard sandbox run --agent URL|script:PATH --user URL|script:PATH --scenarios DIR --out DIR\n"
           "                           [--augment all|LIST] [--model M] [--key K] [--max-messages N]\n"
           "       orchard sandbox report DIR [--json]\n\n"
           "tools     list the tools: name, description, arguments (* required);\n"
           "          --json prints their schemas in OpenAI function-calling form.\n"
           "call      run one tool with JSON arguments and print its result as JSON.\n"
           "          Without --state the world is a fresh one in memory; with it the\n"
           "          state is read from FILE (created if absent), the call is logged as\n"
           "          a tool reply and the change kept. An exception the tool raises\n"
           "          (a state dependency, a bad argument) is printed on stderr, exit 1.\n"
           "          --data: the search data set (default: generated from seed %u, the\n"
           "          same bytes as data/sandbox/world.json).\n"
           "show      print a table of a saved state as JSON: log, settings, contacts,\n"
           "          messages or reminders (default: all), as it stood at message\n"
           "          INDEX (default: now).\n"
           "gen-data  write the search data set for seed N (default %u) to FILE\n"
           "          (default: stdout). Regenerate the shipped copy with\n"
           "          orchard sandbox gen-data --out data/sandbox/world.json\n"
           "run       play every scenario (DIR/*.json, e.g. data/sandbox/scenarios) between\n"
           "          the agent and the user in every augmentation and score it:\n"
           "          OUT/<scenario>.<augmentation>.trajectory.json and OUT/summary.json.\n"
           "          --augment: all (default) or a comma-separated list of distraction_0,\n"
           "          distraction_3, distraction_10, all_tools, tool_name_scrambled,\n"
           "          tool_description_scrambled, arg_description_scrambled,\n"
           "          arg_type_scrambled. A role is an OpenAI-compatible base URL (POST\n"
           "          URL/chat/completions; model and key from --model/--key or\n"
           "          ORCHARD_AGENT_MODEL/ORCHARD_AGENT_KEY, ORCHARD_USER_*) or\n"
           "          script:PATH replaying a trajectory file (a directory: its\n"
           "          <scenario>.oracle.json). A bad scenario is an error in the summary.\n"
           "report    print a run's scores by category and augmentation as a Markdown\n"
           "          table (--json: JSON); also writes DIR/report.md and DIR/report.json.\n",
           ORC_SANDBOX_DATA_SEED, ORC_SANDBOX_DATA_SEED);
}

static int sandbox_tools(int argc, char **argv) {
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else {
            fprintf(stderr, "orchard sandbox tools: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (as_json) {
        json_t *all = orc_sandbox_tool_schemas();
        char *s = json_dumps(all, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(all);
        if (!s) return 1;
        printf("%s\n", s);
        free(s);
        return 0;
    }
    for (int i = 0; i < orc_sandbox_tool_count(); i++) {
        json_t *schema = orc_sandbox_tool_schema(i);
        json_t *fn = json_object_get(schema, "function");
        json_t *params = json_object_get(fn, "parameters");
        json_t *req = json_object_get(params, "required");
        printf("%-32s %s\n", orc_sandbox_tool_name(i), json_string_value(json_object_get(fn, "description")));
        const char *key;
        json_t *p;
        json_object_foreach(json_object_get(params, "properties"), key, p) {
            int required = 0;
            size_t k;
            json_t *r;
            json_array_foreach(req, k, r) required |= strcmp(json_string_value(r), key) == 0;
            printf("    %s%s (%s)\n", key, required ? "*" : "", json_string_value(json_object_get(p, "type")));
        }
        json_decref(schema);
    }
    return 0;
}

/* Parse --state / --data style options; returns 0, or 2 after a message. */
static int take_value(const char *cmd, int argc, char **argv, int *i, const char **out) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "orchard sandbox %s: option %s needs a value\n", cmd, argv[*i]);
        return 2;
    }
    *out = argv[++*i];
    return 0;
}

static int sandbox_call(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    orc_sandbox_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (strcmp(argv[i], "--state") == 0) rc = take_value("call", argc, argv, &i, &o.db_path);
        else if (strcmp(argv[i], "--data") == 0) rc = take_value("call", argc, argv, &i, &o.data_path);
        else if (n_pos < 2) pos[n_pos++] = argv[i];
        else {
            fprintf(stderr, "orchard sandbox call: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
        if (rc) return rc;
    }
    if (n_pos < 1) {
        fprintf(stderr, "orchard sandbox call: missing the tool NAME (`orchard sandbox tools` lists them)\n");
        return 2;
    }
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(&o, &err);
    if (!sb) {
        fprintf(stderr, "orchard sandbox call: %s\n", err.msg);
        return 1;
    }
    orc_tool_result r;
    orc_status s;
    if (o.db_path) {
        char id[32];
        snprintf(id, sizeof id, "cli_%lld", (long long)orc_sandbox_head(sb));
        s = orc_sandbox_call(sb, id, pos[0], pos[1] ? pos[1] : "", &r, NULL, &err);
    } else {
        s = orc_sandbox_invoke(sb, pos[0], pos[1] ? pos[1] : "", &r, &err);
    }
    orc_sandbox_close(sb);
    if (s != ORC_OK) {
        fprintf(stderr, "orchard sandbox call: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (r.exception) {
        fprintf(stderr, "orchard sandbox call: exception: %s\n", r.exception);
        rc = 1;
    } else {
        printf("%s\n", r.result);
    }
    orc_tool_result_free(&r);
    return rc;
}

static int sandbox_show(int argc, char **argv) {
    orc_sandbox_opts o = {0};
    const char *table = NULL;
    long at = -1;
    for (int i = 1; i < argc; i++) {
        int rc;
        if (strcmp(argv[i], "--state") == 0) rc = take_value("show", argc, argv, &i, &o.db_path);
        else if (strcmp(argv[i], "--table") == 0) rc = take_value("show", argc, argv, &i, &table);
        else if (strcmp(argv[i], "--at") == 0)
            rc = cli_parse_int("sandbox show", "--at", i + 1 < argc ? argv[++i] : NULL, 0, 1L << 40, &at);
        else {
            fprintf(stderr, "orchard sandbox show: unknown argument '%s'\n", argv[i]);
            return 2;
        }
        if (rc) return rc;
    }
    if (!o.db_path) {
        fprintf(stderr, "orchard sandbox show: --state FILE.sqlite is required\n");
        return 2;
    }
    FILE *f = fopen(o.db_path, "rb");
    if (!f) {
        fprintf(stderr, "orchard sandbox show: cannot open %s: %s\n", o.db_path, strerror(errno));
        return 1;
    }
    fclose(f);
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(&o, &err);
    if (!sb) {
        fprintf(stderr, "orchard sandbox show: %s\n", err.msg);
        return 1;
    }
    const char *all[] = {"log", "settings", "contacts", "messages", "reminders"};
    json_t *out = json_object();
    int rc = 0;
    for (int t = 0; t < 5 && !rc; t++) {
        if (table && strcmp(table, all[t]) != 0) continue;
        json_t *rows = NULL;
        if (orc_sandbox_read(sb, all[t], at, &rows, &err) != ORC_OK) rc = 1;
        else json_object_set_new(out, all[t], rows);
    }
    if (!rc && table && json_object_size(out) == 0) {
        orc_error_set(&err, ORC_EINVAL, "no table '%s' (log, settings, contacts, messages, reminders)", table);
        rc = 1;
    }
    if (rc) {
        fprintf(stderr, "orchard sandbox show: %s\n", err.msg);
    } else {
        char *s = json_dumps(table ? json_object_get(out, table) : out, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                                                            JSON_REAL_PRECISION(15));
        printf("%s\n", s ? s : "null");
        free(s);
    }
    json_decref(out);
    orc_sandbox_close(sb);
    return rc;
}

static int sandbox_gen_data(int argc, char **argv) {
    const char *out = NULL;
    long seed = ORC_SANDBOX_DATA_SEED;
    for (int i = 1; i < argc; i++) {
        int rc;
        if (strcmp(argv[i], "--out") == 0) rc = take_value("gen-data", argc, argv, &i, &out);
        else if (strcmp(argv[i], "--seed") == 0)
            rc = cli_parse_int("sandbox gen-data", "--seed", i + 1 < argc ? argv[++i] : NULL, 0, 0x7fffffffL, &seed);
        else {
            fprintf(stderr, "orchard sandbox gen-data: unknown argument '%s'\n", argv[i]);
            return 2;
        }
        if (rc) return rc;
    }
    char *text = NULL;
    orc_error err = {0};
    if (orc_sandbox_data_generate((uint64_t)seed, &text, &err) != ORC_OK) {
        fprintf(stderr, "orchard sandbox gen-data: %s\n", err.msg);
        return 1;
    }
    FILE *f = out ? fopen(out, "wb") : stdout;
    int rc = 0;
    if (!f || fputs(text, f) < 0 || (out && fclose(f) != 0)) {
        fprintf(stderr, "orchard sandbox gen-data: cannot write %s: %s\n", out ? out : "stdout", strerror(errno));
        rc = 1;
    }
    free(text);
    return rc;
}

static int sandbox_run(int argc, char **argv) {
    orc_sb_run_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int rc;
        long max = 0;
        if (strcmp(argv[i], "--agent") == 0) rc = take_value("run", argc, argv, &i, &o.agent);
        else if (strcmp(argv[i], "--user") == 0) rc = take_value("run", argc, argv, &i, &o.user);
        else if (strcmp(argv[i], "--scenarios") == 0) rc = take_value("run", argc, argv, &i, &o.scenarios_dir);
        else if (strcmp(argv[i], "--out") == 0) rc = take_value("run", argc, argv, &i, &o.out_dir);
        else if (strcmp(argv[i], "--model") == 0) rc = take_value("run", argc, argv, &i, &o.model);
        else if (strcmp(argv[i], "--key") == 0) rc = take_value("run", argc, argv, &i, &o.api_key);
        else if (strcmp(argv[i], "--augment") == 0) rc = take_value("run", argc, argv, &i, &o.augment);
        else if (strcmp(argv[i], "--max-messages") == 0) {
            rc = cli_parse_int("sandbox run", "--max-messages", i + 1 < argc ? argv[++i] : NULL, 4, 1000, &max);
            o.max_messages = (int)max;
        } else {
            fprintf(stderr, "orchard sandbox run: unknown argument '%s'\n", argv[i]);
            return 2;
        }
        if (rc) return rc;
    }
    if (!o.agent || !o.user || !o.scenarios_dir || !o.out_dir) {
        fprintf(stderr, "orchard sandbox run: --agent, --user, --scenarios and --out are required\n");
        return 2;
    }
    orc_error err = {0};
    int which[ORC_SB_AUGMENTATIONS];
    if (orc_sb_augmentations_parse(o.augment, which, &err) < 0) {
        fprintf(stderr, "orchard sandbox run: --augment: %s\n", err.msg);
        return 2;
    }
    json_t *sum = NULL;
    if (orc_sb_run(&o, &sum, &err) != ORC_OK) {
        fprintf(stderr, "orchard sandbox run: %s\n", err.msg);
        return 1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(sum, "scenarios"), i, e) {
        const char *error = json_string_value(json_object_get(e, "error"));
        const char *aug = json_string_value(json_object_get(e, "augmentation"));
        char label[512];
        snprintf(label, sizeof label, "%s%s%s", json_string_value(json_object_get(e, "scenario")), aug ? " / " : "",
                 aug ? aug : "");
        if (error) printf("%-60s error: %s\n", label, error);
        else
            printf("%-60s score %.3f, %lld messages\n", label, json_number_value(json_object_get(e, "score")),
                   (long long)json_integer_value(json_object_get(e, "messages")));
    }
    printf("%lld played, %lld errors, mean score %.3f; summary in %s/summary.json\n",
           (long long)json_integer_value(json_object_get(sum, "played")),
           (long long)json_integer_value(json_object_get(sum, "errors")),
           json_number_value(json_object_get(sum, "mean_score")), o.out_dir);
    json_decref(sum);
    return 0;
}

static int sandbox_report(int argc, char **argv) {
    const char *dir = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) as_json = 1;
        else if (!dir && argv[i][0] != '-') dir = argv[i];
        else {
            fprintf(stderr, "orchard sandbox report: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "orchard sandbox report: missing the run DIR\n");
        return 2;
    }
    orc_error err = {0};
    json_t *rep = NULL;
    char *md = NULL;
    if (orc_sb_report(dir, &rep, &md, &err) != ORC_OK) {
        fprintf(stderr, "orchard sandbox report: %s\n", err.msg);
        return 1;
    }
    char *text = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", dir);
    FILE *f = fopen(path, "wb");
    int rc = 0;
    if (!f || !text || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0) rc = 1;
    snprintf(path, sizeof path, "%s/report.md", dir);
    f = fopen(path, "wb");
    if (!f || fputs(md, f) < 0 || fclose(f) != 0) rc = 1;
    if (rc) fprintf(stderr, "orchard sandbox report: cannot write the report into %s\n", dir);
    printf("%s%s", as_json ? text : md, as_json ? "\n" : "");
    free(text);
    free(md);
    json_decref(rep);
    return rc;
}

int cmd_sandbox(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "orchard sandbox: missing subcommand (tools, call, show, gen-data, run, report)\n");
        return 2;
    }
    if (strcmp(argv[1], "tools") == 0) return sandbox_tools(argc - 1, argv + 1);
    if (strcmp(argv[1], "call") == 0) return sandbox_call(argc - 1, argv + 1);
    if (strcmp(argv[1], "show") == 0) return sandbox_show(argc - 1, argv + 1);
    if (strcmp(argv[1], "gen-data") == 0) return sandbox_gen_data(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0) return sandbox_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "report") == 0) return sandbox_report(argc - 1, argv + 1);
    fprintf(stderr, "orchard sandbox: '%s' is not a subcommand (tools, call, show, gen-data, run, report)\n", argv[1]);
    return 2;
}
