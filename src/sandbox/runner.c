/* Running a directory of scenarios and reporting on it. Each scenario file is
 * parsed, then for every chosen augmentation its world opened, the conversation played between the chosen agent
 * and user (scripted from a trajectory file or over HTTP) and evaluated; the
 * log, the final state and the evaluation go to
 * OUT/<scenario>.<augmentation>.trajectory.json
 * and one line per scenario and augmentation to OUT/summary.json. A scenario that fails to
 * parse or play is an "error" entry, and the run goes on. The report groups a
 * run's summary by category and augmentation as JSON and a Markdown table. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "play_internal.h"

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.json files of a directory, sorted (malloc'd names, NULL-terminated). */
static char **scenario_files(const char *dir, orc_error *err) {
    DIR *d = opendir(dir);
    if (!d) {
        orc_error_set(err, ORC_EIO, "sandbox run: cannot open scenario directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0 || e->d_name[0] == '.') continue;
        if (n + 2 > cap) {
            char **q = realloc(names, (cap *= 2) * sizeof *names);
            if (!q) break;
            names = q;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (!names) {
        orc_error_set(err, ORC_ENOMEM, "sandbox run: out of memory");
        return NULL;
    }
    qsort(names, n, sizeof *names, by_name);
    names[n] = NULL;
    return names;
}

/* A role from "script:PATH" (a file, or a directory holding
 * <scenario>.oracle.json) or a base URL. */
static orc_sb_role *make_role(const char *kind, const char *spec, const char *scenario, const orc_sb_run_opts *o,
                              orc_error *err) {
    if (!spec) {
        orc_error_set(err, ORC_EINVAL, "sandbox run: no %s given (URL or script:FILE)", kind);
        return NULL;
    }
    if (strncmp(spec, "script:", 7) == 0) {
        const char *path = spec + 7;
        struct stat st;
        char file[4096];
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            snprintf(file, sizeof file, "%s/%s.oracle.json", path, scenario);
            path = file;
        }
        return orc_sb_script_role(kind, path, err);
    }
    orc_sb_http_opts h = {.base_url = spec, .model = o->model, .api_key = o->api_key};
    return orc_sb_http_role(kind, &h, err);
}

static json_t *world_tables(orc_sandbox *sb) {
    const char *tables[] = {"settings", "contacts", "messages", "reminders"};
    json_t *out = json_object();
    for (int t = 0; t < 4; t++) {
        json_t *rows = NULL;
        orc_error e = {0};
        if (orc_sandbox_read(sb, tables[t], -1, &rows, &e) == ORC_OK) json_object_set_new(out, tables[t], rows);
    }
    return out;
}

/* Play and score one scenario into *traj; an error status is that scenario's error. */
static orc_status run_one(const orc_sb_scenario *sc, const orc_sb_run_opts *o, json_t *traj, orc_error *err) {
    orc_sb_role *agent = make_role("agent", o->agent, sc->name, o, err);
    if (!agent) return err->code ? err->code : ORC_EINVAL;
    orc_sb_role *user = make_role("user", o->user, sc->name, o, err);
    if (!user) {
        orc_sb_role_free(agent);
        return err->code ? err->code : ORC_EINVAL;
    }
    orc_sandbox *sb = orc_sb_scenario_world(sc, err);
    orc_status s = sb ? ORC_OK : (err->code ? err->code : ORC_EIO);
    orc_sb_play_result res = {0};
    json_t *eval = NULL, *log = NULL;
    if (s == ORC_OK) s = orc_sb_play(sb, sc, agent, user, o->max_messages, &res, err);
    if (sb) orc_sandbox_read(sb, "log", -1, &log, &(orc_error){0});
    if (s == ORC_OK) s = orc_sb_evaluate(sb, sc, &eval, err);
    if (s == ORC_OK) {
        json_object_set(traj, "score", json_object_get(eval, "score"));
        json_object_set_new(traj, "evaluation", eval);
    }
    json_object_set_new(traj, "messages", json_integer(res.messages));
    json_object_set_new(traj, "user_turns", json_integer(res.user_turns));
    json_object_set_new(traj, "mistakes", json_integer(res.mistakes));
    json_object_set_new(traj, "ended_by_user", json_boolean(res.ended));
    if (log) json_object_set_new(traj, "log", log);
    if (sb) json_object_set_new(traj, "final_state", world_tables(sb));
    orc_sandbox_close(sb);
    orc_sb_role_free(agent);
    orc_sb_role_free(user);
    return s;
}

static orc_status write_json(const char *path, json_t *v, orc_error *err) {
    if (json_dump_file(v, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) != 0)
        return orc_error_set(err, ORC_EIO, "sandbox run: cannot write %s", path);
    return ORC_OK;
}

/* One summary line from a trajectory. */
static json_t *summary_entry(json_t *traj) {
    return json_pack("{s:O, s:O?, s:O, s:O?, s:O?, s:O?, s:O?, s:O?}", "scenario", json_object_get(traj, "scenario"),
                     "augmentation", json_object_get(traj, "augmentation"), "categories",
                     json_object_get(traj, "categories"), "score", json_object_get(traj, "score"), "user_turns",
                     json_object_get(traj, "user_turns"), "messages", json_object_get(traj, "messages"), "mistakes",
                     json_object_get(traj, "mistakes"), "error", json_object_get(traj, "error"));
}

orc_status orc_sb_run(const orc_sb_run_opts *o, json_t **summary, orc_error *err) {
    if (summary) *summary = NULL;
    if (!o->scenarios_dir || !o->out_dir)
        return orc_error_set(err, ORC_EINVAL, "sandbox run: a scenario directory and an output directory are needed");
    int which[ORC_SB_AUGMENTATIONS], n_aug = orc_sb_augmentations_parse(o->augment, which, err);
    if (n_aug < 0) return err->code;
    if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "sandbox run: cannot create %s: %s", o->out_dir, strerror(errno));
    char **files = scenario_files(o->scenarios_dir, err);
    if (!files) return err->code;
    json_t *entries = json_array(), *augs = json_array();
    for (int a = 0; a < n_aug; a++) json_array_append_new(augs, json_string(orc_sb_augmentation_name(which[a])));
    double total = 0;
    int played = 0, errors = 0;
    orc_status st = ORC_OK;
    for (char **f = files; *f && st == ORC_OK; f++) {
        char path[4096], out[4096];
        snprintf(path, sizeof path, "%s/%s", o->scenarios_dir, *f);
        orc_error e = {0};
        orc_sb_scenario *sc = orc_sb_scenario_load(path, &e);
        char stem[1024];
        snprintf(stem, sizeof stem, "%.*s", (int)(strlen(*f) - 5), *f);
        const char *name = sc ? sc->name : stem;
        /* A file that does not parse is one error entry (no augmentation);
         * a scenario that parses is played once per augmentation. */
        for (int a = 0; a < (sc ? n_aug : 1) && st == ORC_OK; a++) {
            json_t *traj = json_pack("{s:s, s:s}", "scenario", name, "file", *f);
            json_object_set_new(traj, "categories", sc && sc->categories ? json_incref(sc->categories) : json_array());
            if (sc) {
                const char *aug = orc_sb_augmentation_name(which[a]);
                json_object_set_new(traj, "augmentation", json_string(aug));
                e = (orc_error){0};
                if (orc_sb_scenario_augment(sc, aug, &e) == ORC_OK) {
                    json_object_set(traj, "tools_offered", sc->tools);
                    json_object_set(traj, "tool_names", sc->name_map);
                }
                if (!e.code && run_one(sc, o, traj, &e) == ORC_OK) {
                    total += json_real_value(json_object_get(traj, "score"));
                    played++;
                } else {
                    json_object_set_new(traj, "error", json_string(e.msg[0] ? e.msg : "failed"));
                    errors++;
                }
                snprintf(out, sizeof out, "%s/%s.%s.trajectory.json", o->out_dir, name, aug);
            } else {
                json_object_set_new(traj, "error", json_string(e.msg[0] ? e.msg : "failed"));
                errors++;
                snprintf(out, sizeof out, "%s/%s.trajectory.json", o->out_dir, name);
            }
            st = write_json(out, traj, err);
            json_array_append_new(entries, summary_entry(traj));
            json_decref(traj);
        }
        orc_sb_scenario_free(sc);
    }
    for (char **f = files; *f; f++) free(*f);
    free(files);
    json_t *sum = json_pack("{s:o, s:o, s:i, s:i, s:f}", "augmentations", augs, "scenarios", entries, "played", played,
                            "errors", errors, "mean_score", played ? total / played : 0.0);
    if (st == ORC_OK) {
        char out[4096];
        snprintf(out, sizeof out, "%s/summary.json", o->out_dir);
        st = write_json(out, sum, err);
    }
    if (summary && st == ORC_OK) *summary = sum;
    else json_decref(sum);
    return st;
}

/* ---- the report --------------------------------------------------------------------- */

/* The categories in the paper's order; others a scenario names follow. */
static const char *const CATEGORY_ORDER[] = {"single_tool_call", "multiple_tool_call", "single_user_turn",
                                             "multiple_user_turn", "state_dependency", "canonicalization",
                                             "insufficient_information", NULL};

/* Accumulate one summary entry into a group: run count, sums, and the set of
 * scenario names (to count base scenarios, not runs). */
static void add_to(json_t *g, json_t *entry) {
    json_object_set_new(g, "runs", json_integer(json_integer_value(json_object_get(g, "runs")) + 1));
    const char *keys[][2] = {{"score_sum", "score"}, {"user_turn_sum", "user_turns"}, {"message_sum", "messages"}};
    for (int k = 0; k < 3; k++)
        json_object_set_new(g, keys[k][0], json_real(json_number_value(json_object_get(g, keys[k][0])) +
                                                     json_number_value(json_object_get(entry, keys[k][1]))));
    /* Agent mistakes (invalid replies, unknown tools, bad arguments) are
     * scored, not errors; the report totals them so they stay visible. */
    json_object_set_new(g, "mistakes", json_integer(json_integer_value(json_object_get(g, "mistakes")) +
                                                    json_integer_value(json_object_get(entry, "mistakes"))));
    json_t *names = json_object_get(g, "names");
    if (!names) json_object_set_new(g, "names", names = json_object());
    const char *sc = json_string_value(json_object_get(entry, "scenario"));
    if (sc) json_object_set_new(names, sc, json_true());
}

static json_t *group_in(json_t *parent, const char *key) {
    json_t *g = json_object_get(parent, key);
    if (!g) json_object_set_new(parent, key, g = json_pack("{s:i}", "runs", 0));
    return g;
}

/* Sums to means, in place (a group and its by_augmentation groups). */
static void finish(json_t *g) {
    double n = (double)json_integer_value(json_object_get(g, "runs"));
    json_object_set_new(g, "scenarios", json_integer((json_int_t)json_object_size(json_object_get(g, "names"))));
    json_object_del(g, "names");
    const char *keys[][2] = {{"score_sum", "mean_score"}, {"user_turn_sum", "mean_user_turns"},
                             {"message_sum", "mean_messages"}};
    for (int k = 0; k < 3; k++) {
        json_object_set_new(g, keys[k][1], json_real(n ? json_number_value(json_object_get(g, keys[k][0])) / n : 0));
        json_object_del(g, keys[k][0]);
    }
    const char *a;
    json_t *sub;
    json_object_foreach(json_object_get(g, "by_augmentation"), a, sub) finish(sub);
}

typedef struct mdbuf {
    char *p;
    size_t n;
} mdbuf;

static void md_put(mdbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void md_put(mdbuf *b, const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k >= sizeof line) k = (int)sizeof line - 1;
    char *q = realloc(b->p, b->n + (size_t)k + 1);
    if (!q) return;
    memcpy(q + b->n, line, (size_t)k + 1);
    b->p = q;
    b->n += (size_t)k;
}

/* One row: base scenarios, the mean score per augmentation, then the means
 * over all of the group's runs. */
static void md_row(mdbuf *b, const char *name, json_t *g, json_t *augs) {
    md_put(b, "| %s | %lld |", name, (long long)json_integer_value(json_object_get(g, "scenarios")));
    size_t i;
    json_t *a;
    json_array_foreach(augs, i, a) {
        json_t *sub = json_object_get(json_object_get(g, "by_augmentation"), json_string_value(a));
        if (sub) md_put(b, " %.3f |", json_number_value(json_object_get(sub, "mean_score")));
        else md_put(b, " - |");
    }
    md_put(b, " %.3f | %.2f | %.2f | %lld |\n", json_number_value(json_object_get(g, "mean_score")),
           json_number_value(json_object_get(g, "mean_user_turns")),
           json_number_value(json_object_get(g, "mean_messages")),
           (long long)json_integer_value(json_object_get(g, "mistakes")));
}

orc_status orc_sb_report(const char *dir, json_t **report, char **markdown, orc_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_error_t je;
    json_t *sum = json_load_file(path, 0, &je);
    if (!sum) return orc_error_set(err, ORC_EFORMAT, "sandbox report: %s: %s", path, je.text);
    json_t *entries = json_object_get(sum, "scenarios");
    if (!json_is_array(entries)) {
        json_decref(sum);
        return orc_error_set(err, ORC_EFORMAT, "sandbox report: %s has no 'scenarios' array", path);
    }
    /* Augmentation columns: the run's list, then any other an entry names. */
    json_t *augs = json_array(), *seen = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(sum, "augmentations"), i, e) if (json_is_string(e) &&
                                                                         !json_object_get(seen, json_string_value(e))) {
        json_array_append(augs, e);
        json_object_set_new(seen, json_string_value(e), json_true());
    }
    json_t *groups = json_object(), *all = json_pack("{s:i}", "runs", 0), *errors = json_array();
    json_array_foreach(entries, i, e) {
        const char *aug = json_string_value(json_object_get(e, "augmentation"));
        if (!aug) aug = "none";
        if (json_is_string(json_object_get(e, "error"))) {
            json_array_append_new(errors, json_pack("{s:O, s:O?, s:O}", "scenario", json_object_get(e, "scenario"),
                                                    "augmentation", json_object_get(e, "augmentation"), "error",
                                                    json_object_get(e, "error")));
            continue;
        }
        if (!json_object_get(seen, aug)) {
            json_array_append_new(augs, json_string(aug));
            json_object_set_new(seen, aug, json_true());
        }
        add_to(all, e);
        json_t *by = json_object_get(all, "by_augmentation");
        if (!by) json_object_set_new(all, "by_augmentation", by = json_object());
        add_to(group_in(by, aug), e);
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(e, "categories"), k, c) if (json_is_string(c)) {
            json_t *g = group_in(groups, json_string_value(c));
            add_to(g, e);
            json_t *gby = json_object_get(g, "by_augmentation");
            if (!gby) json_object_set_new(g, "by_augmentation", gby = json_object());
            add_to(group_in(gby, aug), e);
        }
    }
    json_decref(seen);
    /* Categories in the paper's order, then the rest as found. */
    json_t *ordered = json_object();
    for (int c = 0; CATEGORY_ORDER[c]; c++) {
        json_t *g = json_object_get(groups, CATEGORY_ORDER[c]);
        if (g) json_object_set(ordered, CATEGORY_ORDER[c], g);
    }
    const char *name;
    json_t *g;
    json_object_foreach(groups, name, g) if (!json_object_get(ordered, name)) json_object_set(ordered, name, g);
    json_decref(groups);
    json_object_foreach(ordered, name, g) finish(g);
    finish(all);
    *report = json_pack("{s:o, s:o, s:o, s:o}", "augmentations", augs, "categories", ordered, "all", all, "errors",
                        errors);
    mdbuf b = {0};
    md_put(&b, "Mean score by category and augmentation (scenarios: base scenarios played; the last four columns "
               "are over all of the row's runs; agent mistakes are scored, their messages are in the trajectories' "
               "logs).\n\n| category | scenarios |");
    json_array_foreach(augs, i, e) md_put(&b, " %s |", json_string_value(e));
    md_put(&b, " mean score | mean user turns | mean messages | agent mistakes |\n|---|---|");
    json_array_foreach(augs, i, e) md_put(&b, "---|");
    md_put(&b, "---|---|---|---|\n");
    json_object_foreach(ordered, name, g) md_row(&b, name, g, augs);
    md_row(&b, "**all**", all, augs);
    json_array_foreach(errors, i, e) {
        const char *aug = json_string_value(json_object_get(e, "augmentation"));
        md_put(&b, "%s- error in %s%s%s: %s\n", i == 0 ? "\nErrors:\n\n" : "",
               json_string_value(json_object_get(e, "scenario")), aug ? " / " : "", aug ? aug : "",
               json_string_value(json_object_get(e, "error")));
    }
    json_decref(sum);
    *markdown = b.p ? b.p : strdup("");
    return ORC_OK;
}
