/* The play loop and evaluation: every shipped scenario's oracle trajectory
 * scores 1.0 and the scenarios cover every category; each planted-mistake
 * trajectory (wrong recipient, skipped dependency, minefield action, made-up
 * value) scores what the rules give; messages go to their recipients with
 * the right visibility (the agent never sees the user simulator's prompt);
 * the message limit stops a looping agent; agent mistakes (invalid reply,
 * unknown or denied tool, wrong argument types) are logged and scored, not
 * fatal; bad scenario files give clear errors; ROUGE-L and the user prompt. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "orchard/sandbox_play.h"
#include "testdir.h"

static char dir_buf[1024];

static const char *data_dir(const char *sub) {
    const char *src = getenv("ORCHARD_SOURCE_DIR");
    snprintf(dir_buf, sizeof dir_buf, "%s/data/sandbox/%s", src ? src : ".", sub);
    return dir_buf;
}

static orc_sb_scenario *load_scenario(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.json", data_dir("scenarios"), name);
    orc_error err = {0};
    orc_sb_scenario *sc = orc_sb_scenario_load(path, &err);
    if (!sc) fail_msg("load %s: %s", name, err.msg);
    return sc;
}

/* Play a scenario (parsed, in its current augmentation) with both roles
 * scripted from a parsed trajectory; returns the evaluation (and the
 * sandbox, left open, when wanted). */
static json_t *play_doc(orc_sb_scenario *sc, json_t *traj, orc_sb_play_result *res, orc_sandbox **keep) {
    orc_error err = {0};
    orc_sb_role *agent = orc_sb_script_role_json("agent", traj);
    orc_sb_role *user = orc_sb_script_role_json("user", traj);
    assert_non_null(agent);
    assert_non_null(user);
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    if (!sb) fail_msg("world %s: %s", orc_sb_scenario_name(sc), err.msg);
    if (orc_sb_play(sb, sc, agent, user, 0, res, &err) != ORC_OK)
        fail_msg("play %s: %s", orc_sb_scenario_name(sc), err.msg);
    json_t *eval = NULL;
    if (orc_sb_evaluate(sb, sc, &eval, &err) != ORC_OK) fail_msg("evaluate %s: %s", orc_sb_scenario_name(sc), err.msg);
    if (keep) *keep = sb;
    else orc_sandbox_close(sb);
    orc_sb_role_free(agent);
    orc_sb_role_free(user);
    return eval;
}

static json_t *play_file(const char *scenario, const char *traj_path, orc_sb_play_result *res, orc_sandbox **keep) {
    orc_sb_scenario *sc = load_scenario(scenario);
    json_t *traj = json_load_file(traj_path, 0, NULL);
    if (!traj) fail_msg("trajectory %s does not parse", traj_path);
    json_t *eval = play_doc(sc, traj, res, keep);
    json_decref(traj);
    orc_sb_scenario_free(sc);
    return eval;
}

static double score_of(json_t *eval) { return json_number_value(json_object_get(eval, "score")); }

/* The *.json names in a data directory (without .json), sorted. */
static int list_dir(const char *sub, char names[][256], int max, int oracle_only, int skip_oracles) {
    DIR *d = opendir(data_dir(sub));
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        int oracle = strstr(e->d_name, ".oracle.") != NULL;
        if ((oracle_only && !oracle) || (skip_oracles && oracle)) continue;
        if (n >= max) fail_msg("more than %d files in %s", max, sub);
        snprintf(names[n++], 256, "%.*s", (int)len - 5, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 256, (int (*)(const void *, const void *))strcmp);
    return n;
}

/* The turn and call categories say what the oracle does: one user turn or
 * several, one tool call or several (none: neither category). */
static int has_category(json_t *doc, const char *cat) {
    size_t k;
    json_t *c;
    json_array_foreach(json_object_get(doc, "categories"), k, c) if (strcmp(json_string_value(c), cat) == 0) return 1;
    return 0;
}

static void check_turn_categories(const char *name, json_t *doc, json_t *traj, int user_turns) {
    int calls = 0;
    size_t k;
    json_t *t;
    json_array_foreach(json_object_get(traj, "agent"), k, t) calls += (int)json_array_size(json_object_get(t, "tool_calls"));
    if (has_category(doc, "single_user_turn") != (user_turns == 1) ||
        has_category(doc, "multiple_user_turn") != (user_turns > 1))
        fail_msg("%s: %d user turns against its categories", name, user_turns);
    if (has_category(doc, "single_tool_call") != (calls == 1) || has_category(doc, "multiple_tool_call") != (calls > 1))
        fail_msg("%s: %d tool calls against its categories", name, calls);
}

#define MAX_FILES 256
static char names_buf[MAX_FILES][256];

/* Every shipped scenario's oracle scores 1.0 in every one of the 8
 * augmentations; there are at least 60, each names its needed tools, and
 * every category has at least 5. */
static void test_oracles_score_one(void **state) {
    (void)state;
    int n = list_dir("scenarios", names_buf, MAX_FILES, 0, 0);
    assert_true(n >= 60);
    json_t *cats = json_object();
    int runs = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%.255s.oracle.json", data_dir("trajectories"), names_buf[i]);
        json_t *traj = json_load_file(path, 0, NULL);
        if (!traj) fail_msg("no oracle trajectory %s", path);
        orc_sb_scenario *sc = load_scenario(names_buf[i]);
        json_t *doc = orc_sb_scenario_json(sc);
        if (!json_is_array(json_object_get(doc, "tools_allow"))) fail_msg("%s has no tools_allow", names_buf[i]);
        for (int a = 0; a < ORC_SB_AUGMENTATIONS; a++) {
            orc_error err = {0};
            assert_int_equal(orc_sb_scenario_augment(sc, orc_sb_augmentation_name(a), &err), ORC_OK);
            orc_sb_play_result res;
            json_t *eval = play_doc(sc, traj, &res, NULL);
            if (score_of(eval) != 1.0)
                fail_msg("oracle of %s scores %g in %s", names_buf[i], score_of(eval), orc_sb_augmentation_name(a));
            if (!res.ended) fail_msg("oracle of %s in %s: the user did not end it", names_buf[i],
                                     orc_sb_augmentation_name(a));
            if (a == 0) check_turn_categories(names_buf[i], doc, traj, res.user_turns);
            json_decref(eval);
            runs++;
        }
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(doc, "categories"), k, c) {
            json_t *count = json_object_get(cats, json_string_value(c));
            json_object_set_new(cats, json_string_value(c), json_integer(count ? json_integer_value(count) + 1 : 1));
        }
        orc_sb_scenario_free(sc);
        json_decref(traj);
    }
    assert_int_equal(runs, n * ORC_SB_AUGMENTATIONS);
    const char *need[] = {"single_tool_call", "multiple_tool_call", "single_user_turn", "multiple_user_turn",
                          "state_dependency", "canonicalization", "insufficient_information"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        json_t *count = json_object_get(cats, need[i]);
        if (!count || json_integer_value(count) < 5)
            fail_msg("category %s has %lld scenarios, wanted >= 5", need[i],
                     count ? (long long)json_integer_value(count) : 0LL);
    }
    json_decref(cats);
}

/* Every trajectory other than an oracle carries the score the rules give it,
 * the same in every augmentation; the four kinds of mistake are covered,
 * in several categories. */
static void test_planted_mistakes(void **state) {
    (void)state;
    int n = list_dir("trajectories", names_buf, MAX_FILES, 0, 1);
    assert_true(n >= 12);
    int kinds[4] = {0};
    const char *kind_names[4] = {"wrong_recipient", "skipped_dependency", "minefield", "made_up_value"};
    json_t *cats = json_object();
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%.255s.json", data_dir("trajectories"), names_buf[i]);
        json_t *doc = json_load_file(path, 0, NULL);
        assert_non_null(doc);
        const char *scenario = json_string_value(json_object_get(doc, "scenario"));
        double want = json_number_value(json_object_get(doc, "expected_score"));
        assert_true(want < 1.0);
        orc_sb_scenario *sc = load_scenario(scenario);
        for (int a = 0; a < ORC_SB_AUGMENTATIONS; a++) {
            orc_error err = {0};
            assert_int_equal(orc_sb_scenario_augment(sc, orc_sb_augmentation_name(a), &err), ORC_OK);
            orc_sb_play_result res;
            json_t *eval = play_doc(sc, doc, &res, NULL);
            if (score_of(eval) < want - 1e-9 || score_of(eval) > want + 1e-9)
                fail_msg("%s scores %.17g in %s, the rules give %.17g", names_buf[i], score_of(eval),
                         orc_sb_augmentation_name(a), want);
            if (strstr(names_buf[i], ".minefield")) assert_true(json_is_true(json_object_get(eval, "minefield_hit")));
            else assert_false(json_is_true(json_object_get(eval, "minefield_hit")));
            json_decref(eval);
        }
        for (int k = 0; k < 4; k++) kinds[k] += strstr(names_buf[i], kind_names[k]) != NULL;
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(orc_sb_scenario_json(sc), "categories"), k, c)
            json_object_set_new(cats, json_string_value(c), json_true());
        orc_sb_scenario_free(sc);
        json_decref(doc);
    }
    for (int k = 0; k < 4; k++)
        if (kinds[k] < 2) fail_msg("only %d planted '%s' trajectories", kinds[k], kind_names[k]);
    assert_int_equal(json_object_size(cats), 7);
    json_decref(cats);
}

/* ---- roles written for the tests ---- */

typedef struct probe {
    json_t *replies; /* handed out in order */
    size_t next;
    int saw_user_prompt, saw_demo, histories, tools_seen;
} probe;

static orc_status probe_respond(orc_sb_role *r, const orc_sb_scenario *sc, json_t *history, json_t *tools,
                                json_t **reply, orc_error *err) {
    (void)sc, (void)err;
    probe *p = r->impl;
    size_t i;
    json_t *row;
    json_array_foreach(history, i, row) if (strcmp(json_string_value(json_object_get(row, "recipient")), "user") == 0 &&
                                           strcmp(json_string_value(json_object_get(row, "sender")), "system") == 0)
        p->saw_user_prompt = 1;
    json_array_foreach(history, i, row) {
        const char *content = json_string_value(json_object_get(row, "content"));
        if (content && strstr(content, "need to set an alarm")) p->saw_demo = 1;
    }
    p->histories++;
    p->tools_seen = (int)json_array_size(tools);
    json_t *next = json_array_get(p->replies, p->next);
    if (next) p->next++;
    /* Past the list, keep calling a tool: an agent that never stops. */
    *reply = next ? json_incref(next)
                  : json_pack("{s:[{s:s, s:s, s:s}]}", "tool_calls", "id", "loop", "name", "get_wifi_status", "arguments",
                              "{}");
    return ORC_OK;
}

static orc_sb_role probe_role(probe *p) {
    orc_sb_role r = {.kind = "agent", .respond = probe_respond, .impl = p};
    return r;
}

static void test_visibility_and_limit(void **state) {
    (void)state;
    orc_sb_scenario *sc = load_scenario("wifi_off");
    probe p = {.replies = json_array()};
    orc_sb_role agent = probe_role(&p);
    json_t *empty = json_object();
    orc_sb_role *user = orc_sb_script_role_json("user", empty);
    orc_error err = {0};
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    orc_sb_play_result res;
    assert_int_equal(orc_sb_play(sb, sc, &agent, user, 12, &res, &err), ORC_OK);
    assert_int_equal(res.messages, 12);
    assert_int_equal(orc_sandbox_head(sb), 12);
    assert_int_equal(res.ended, 0);
    assert_int_equal(p.saw_user_prompt, 0);
    assert_int_equal(p.tools_seen, 2); /* tools_allow: get_wifi_status, set_wifi_status */
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    json_t *r1 = json_array_get(log, 1), *r3 = json_array_get(log, 3), *r4 = json_array_get(log, 4);
    assert_string_equal(json_string_value(json_object_get(r1, "recipient")), "user");
    assert_string_equal(json_string_value(json_object_get(r1, "visible_to")), "[\"system\", \"user\"]");
    assert_string_equal(json_string_value(json_object_get(r3, "recipient")), "execution_environment");
    assert_string_equal(json_string_value(json_object_get(r3, "tool_call_id")), "loop");
    assert_string_equal(json_string_value(json_object_get(r4, "content")), "{\"wifi\":true}");
    assert_string_equal(json_string_value(json_object_get(r4, "tool_call_id")), "loop");
    json_decref(log);
    json_t *eval = NULL;
    assert_int_equal(orc_sb_evaluate(sb, sc, &eval, &err), ORC_OK);
    assert_true(score_of(eval) == 0.0);
    json_decref(eval);
    orc_sandbox_close(sb);
    orc_sb_role_free(user);
    json_decref(empty);
    json_decref(p.replies);
    orc_sb_scenario_free(sc);
}

/* An agent that calls the first offered tool with broken arguments, then
 * looks for a real tool name anywhere in what it is shown. */
typedef struct name_probe {
    int turns, leaks, tool_rows;
} name_probe;

static orc_status name_probe_respond(orc_sb_role *r, const orc_sb_scenario *sc, json_t *history, json_t *tools,
                                     json_t **reply, orc_error *err) {
    (void)err;
    name_probe *p = r->impl;
    size_t i;
    json_t *row;
    json_array_foreach(history, i, row) {
        char *text = json_dumps(row, JSON_COMPACT);
        size_t t;
        json_t *tool;
        json_array_foreach(tools, t, tool) {
            const char *offered = json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
            const char *real = orc_sb_scenario_real_tool(sc, offered);
            if (!real || !strcmp(real, offered)) fail_msg("tool %s is not scrambled", offered);
            if (text && strstr(text, real)) p->leaks++;
        }
        if (json_string_value(json_object_get(row, "tool_trace"))) p->tool_rows++;
        free(text);
    }
    const char *first = json_string_value(json_object_get(json_object_get(json_array_get(tools, 0), "function"), "name"));
    *reply = p->turns++ < 2 ? json_pack("{s:[{s:s, s:s, s:s}]}", "tool_calls", "id", "x", "name", first, "arguments",
                                        "{\"on\": \"no\"}")
                            : json_pack("{s:s, s:s}", "content", "Done.", "recipient", "user");
    return ORC_OK;
}

/* Under tool_name_scrambled the agent never sees a real tool name: not in the
 * tool rows' names, their error text nor their traces (the log itself keeps
 * the real names for the evaluation). */
static void test_scrambled_names_stay_hidden(void **state) {
    (void)state;
    orc_sb_scenario *sc = load_scenario("wifi_off");
    orc_error err = {0};
    assert_int_equal(orc_sb_scenario_augment(sc, "tool_name_scrambled", &err), ORC_OK);
    name_probe p = {0};
    orc_sb_role agent = {.kind = "agent", .respond = name_probe_respond, .impl = &p};
    json_t *empty = json_object();
    orc_sb_role *user = orc_sb_script_role_json("user", empty);
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    orc_sb_play_result res;
    assert_int_equal(orc_sb_play(sb, sc, &agent, user, 16, &res, &err), ORC_OK);
    assert_true(p.turns >= 3);
    assert_true(p.tool_rows > 0); /* the probe did see tool replies with traces */
    assert_int_equal(p.leaks, 0);
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    /* The stored log keeps the real names (row 4: the reply to the first call). */
    const char *real = json_string_value(json_object_get(json_array_get(log, 4), "tool_name"));
    assert_non_null(real);
    assert_null(orc_sb_scenario_real_tool(sc, real));
    assert_non_null(orc_sb_scenario_offered_tool(sc, real));
    json_decref(log);
    orc_sandbox_close(sb);
    orc_sb_role_free(user);
    json_decref(empty);
    orc_sb_scenario_free(sc);
}

/* Unusable agent replies are the agent's mistakes: logged, counted, scored. */
static void test_agent_mistakes(void **state) {
    (void)state;
    orc_sb_scenario *sc = load_scenario("weather_no_tool"); /* search_weather denied */
    orc_error aerr = {0};
    assert_int_equal(orc_sb_scenario_augment(sc, "all_tools", &aerr), ORC_OK); /* every tool but the denied one */
    probe p = {.replies = json_loads("["
                                     "{\"mistake\": \"the reply is not valid JSON\"},"
                                     "{\"tool_calls\": [{\"id\": \"a\", \"name\": \"teleport\", \"arguments\": \"{}\"}]},"
                                     "{\"tool_calls\": [{\"id\": \"b\", \"name\": \"search_weather\", \"arguments\": \"{}\"}]},"
                                     "{\"tool_calls\": [{\"id\": \"c\", \"name\": \"set_wifi_status\", \"arguments\": \"{\\\"on\\\": \\\"no\\\"}\"}]},"
                                     "{\"tool_calls\": [{\"id\": \"d\", \"name\": \"get_wifi_status\", \"arguments\": \"{bad\"}]},"
                                     "{\"recipient\": \"nobody\", \"content\": \"hi\"},"
                                     "{\"content\": \"Sorry, I can't do that.\"}]",
                                     0, NULL)};
    assert_non_null(p.replies);
    orc_sb_role agent = probe_role(&p);
    json_t *empty = json_object();
    orc_sb_role *user = orc_sb_script_role_json("user", empty);
    orc_error err = {0};
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    orc_sb_play_result res;
    assert_int_equal(orc_sb_play(sb, sc, &agent, user, 0, &res, &err), ORC_OK);
    assert_int_equal(res.mistakes, 6);
    assert_true(res.ended);
    assert_true(p.tools_seen == orc_sandbox_tool_count() - 1);
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    const char *want[] = {"invalid agent reply: the reply is not valid JSON", "no tool named 'teleport'",
                          "no tool named 'search_weather'", "argument 'on' must be of type boolean",
                          "arguments are not valid JSON", "invalid agent reply: neither"};
    size_t i, w = 0;
    json_t *row;
    json_array_foreach(log, i, row) {
        const char *ex = json_string_value(json_object_get(row, "exception"));
        if (!ex) continue;
        assert_true(w < 6);
        if (!strstr(ex, want[w])) fail_msg("exception %zu '%s' lacks '%s'", w, ex, want[w]);
        w++;
    }
    assert_int_equal(w, 6);
    json_decref(log);
    /* The denied tool was attempted: the minefield on the attempt zeroes the score. */
    json_t *eval = NULL;
    assert_int_equal(orc_sb_evaluate(sb, sc, &eval, &err), ORC_OK);
    assert_true(json_is_true(json_object_get(eval, "minefield_hit")));
    assert_true(score_of(eval) == 0.0);
    json_decref(eval);
    orc_sandbox_close(sb);
    orc_sb_role_free(user);
    json_decref(empty);
    json_decref(p.replies);
    orc_sb_scenario_free(sc);
}

static void expect_parse_error(const char *text, const char *want) {
    json_t *doc = json_loads(text, 0, NULL);
    if (!doc) fail_msg("test document does not parse: %s", text);
    orc_error err = {0};
    orc_sb_scenario *sc = orc_sb_scenario_parse(doc, "t.json", &err);
    json_decref(doc);
    if (sc) fail_msg("parsed, wanted an error with '%s'", want);
    assert_int_equal(err.code, ORC_EFORMAT);
    if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);
}

#define HEAD "{\"name\": \"t\", \"first_user_message\": \"hi\", "

static void test_scenario_errors(void **state) {
    (void)state;
    expect_parse_error("[1]", "must be a JSON object");
    expect_parse_error("{\"first_user_message\": \"hi\"}", "needs a string 'name'");
    expect_parse_error("{\"name\": \"t\"}", "needs a string 'first_user_message'");
    expect_parse_error(HEAD "\"tools_allow\": [\"get_wifi_status\", \"fly\"]}", "tools_allow names an unknown tool 'fly'");
    expect_parse_error(HEAD "\"tools_deny\": [3]}", "'tools_deny' must be an array of strings");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"snapshot\", \"table\": \"contacts\","
                            " \"columns\": {\"email\": {\"value\": \"x\"}}}]}",
                       "unknown column 'email' of contacts");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"snapshot\", \"table\": \"pets\","
                            " \"columns\": {}}]}",
                       "unknown table 'pets'");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"teleport\", \"table\": \"log\"}]}",
                       "kind must be");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"tool_trace\", \"columns\": {\"tool_name\":"
                            " {\"value\": \"x\", \"similarity\": \"vibes\"}}}]}",
                       "similarity must be");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"tool_trace\", \"after\": [\"b\"], \"columns\": {}},"
                            " {\"id\": \"b\", \"kind\": \"tool_trace\", \"after\": [\"a\"], \"columns\": {}}]}",
                       "form a cycle");
    expect_parse_error(HEAD "\"milestones\": [{\"id\": \"a\", \"kind\": \"tool_trace\", \"after\": [\"zz\"], \"columns\": {}}]}",
                       "'after' names an unknown id");
    expect_parse_error(HEAD "\"setup\": [{\"tool\": \"warp\"}]}", "setup[0] calls an unknown tool 'warp'");
    expect_parse_error(HEAD "\"max_messages\": 2}", "'max_messages' must be an integer");
    /* A malformed file names the file and the line. */
    char dir[64], path[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "scenario"), 0);
    int fd = open(orc_test_path(path, sizeof path, dir, "broken.json"), O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"name\": \n", 10), 10);
    close(fd);
    orc_error err = {0};
    assert_null(orc_sb_scenario_load(path, &err));
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "line"));
    orc_test_dir_remove(dir);
    /* A setup call that raises is an error opening the world. */
    json_t *doc = json_loads(HEAD "\"setup\": [{\"tool\": \"set_wifi_status\", \"arguments\": {\"on\": true}}]}", 0, NULL);
    orc_error err2 = {0};
    orc_sb_scenario *sc = orc_sb_scenario_parse(doc, "t.json", &err2);
    assert_non_null(sc);
    assert_null(orc_sb_scenario_world(sc, &err2));
    if (!strstr(err2.msg, "setup[0] raised")) fail_msg("setup error: %s", err2.msg);
    orc_sb_scenario_free(sc);
    json_decref(doc);
}

static void test_rouge_and_prompt(void **state) {
    (void)state;
    assert_true(orc_sb_rouge_l("I'm running late", "i'm RUNNING late!") == 1.0);
    assert_true(orc_sb_rouge_l("the cat sat", "the cat") > 0.8 - 1e-12 && orc_sb_rouge_l("the cat sat", "the cat") < 0.8 + 1e-12);
    assert_true(orc_sb_rouge_l("abc", "xyz") == 0.0);
    assert_true(orc_sb_rouge_l("", "") == 1.0);
    assert_true(orc_sb_rouge_l("a", "") == 0.0);
    orc_sb_scenario *sc = load_scenario("message_multi_turn");
    char *prompt = orc_sb_user_prompt(sc);
    assert_non_null(strstr(prompt, "Never act as the assistant"));
    assert_non_null(strstr(prompt, "Never make up"));
    assert_non_null(strstr(prompt, "short, casual"));
    assert_non_null(strstr(prompt, "end_conversation"));
    assert_non_null(strstr(prompt, "Number +15550106666, message: See you soon."));
    assert_non_null(strstr(prompt, "you: need to set an alarm"));
    assert_non_null(strstr(prompt, "assistant: Sure, for what time?"));
    assert_non_null(strstr(prompt, "What you know (your knowledge boundary; nothing beyond it)"));
    free(prompt);
    /* The demonstrations (in the simulator's prompt) never reach the agent. */
    probe p = {.replies = json_loads("[{\"content\": \"Who to?\"}]", 0, NULL)};
    orc_sb_role agent = probe_role(&p);
    json_t *turns = json_loads("{\"user\": [{\"content\": \"+15550106666\"}]}", 0, NULL);
    orc_sb_role *user = orc_sb_script_role_json("user", turns);
    orc_error err = {0};
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    orc_sb_play_result res;
    assert_int_equal(orc_sb_play(sb, sc, &agent, user, 8, &res, &err), ORC_OK);
    assert_true(p.histories >= 2);
    assert_int_equal(p.saw_demo, 0);
    assert_int_equal(p.saw_user_prompt, 0);
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(log, 1), "content")), "need to set an alarm"));
    json_decref(log);
    orc_sandbox_close(sb);
    orc_sb_role_free(user);
    json_decref(turns);
    json_decref(p.replies);
    orc_sb_scenario_free(sc);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The run over a directory in every augmentation: oracles score 1; a
 * malformed file, an unknown tool in an allow list and a milestone on an
 * unknown column are each one clear error in the summary and the report;
 * the report tables category x augmentation; trajectories carry the
 * augmentation and its name map; an unknown --augment is refused. */
static void test_run_directory(void **state) {
    (void)state;
    char tmp[64];
    assert_int_equal(orc_test_dir_make(tmp, sizeof tmp, "sbrun"), 0);
    char scen[1200], out[1200], cmd[9000], path[1400];
    snprintf(scen, sizeof scen, "%s/scenarios", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/wifi_off.json %s/add_contact.json %s/", scen, data_dir("scenarios"),
             data_dir("scenarios"), scen);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/broken.json", scen);
    write_text(path, "{oops");
    snprintf(path, sizeof path, "%s/bad_tool.json", scen);
    write_text(path, HEAD "\"tools_allow\": [\"get_wifi_status\", \"fly\"]}");
    snprintf(path, sizeof path, "%s/bad_column.json", scen);
    write_text(path, HEAD "\"milestones\": [{\"id\": \"m\", \"kind\": \"snapshot\", \"table\": \"contacts\","
                          " \"columns\": {\"email\": {\"value\": \"x\"}}}]}");
    char script[1200];
    snprintf(script, sizeof script, "script:%s", data_dir("trajectories"));
    orc_sb_run_opts o = {.agent = script, .user = script, .scenarios_dir = scen, .out_dir = out};
    json_t *sum = NULL;
    orc_error err = {0};
    assert_int_equal(orc_sb_run(&o, &sum, &err), ORC_OK);
    assert_int_equal(json_integer_value(json_object_get(sum, "played")), 2 * ORC_SB_AUGMENTATIONS);
    assert_int_equal(json_integer_value(json_object_get(sum, "errors")), 3);
    assert_int_equal(json_array_size(json_object_get(sum, "augmentations")), ORC_SB_AUGMENTATIONS);
    assert_true(json_real_value(json_object_get(sum, "mean_score")) == 1.0);
    /* In name order: add_contact x 8, bad_column, bad_tool, broken, wifi_off x 8. */
    json_t *entries = json_object_get(sum, "scenarios");
    assert_int_equal(json_array_size(entries), 2 * ORC_SB_AUGMENTATIONS + 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(entries, 1), "augmentation")), "distraction_3");
    const char *bad[3][2] = {{"bad_column", "unknown column 'email' of contacts"},
                             {"bad_tool", "tools_allow names an unknown tool 'fly'"},
                             {"broken", "broken.json"}};
    for (int b = 0; b < 3; b++) {
        json_t *e = json_array_get(entries, (size_t)(ORC_SB_AUGMENTATIONS + b));
        assert_string_equal(json_string_value(json_object_get(e, "scenario")), bad[b][0]);
        const char *msg = json_string_value(json_object_get(e, "error"));
        if (!msg || !strstr(msg, bad[b][1])) fail_msg("error of %s: '%s' lacks '%s'", bad[b][0], msg, bad[b][1]);
    }
    json_decref(sum);
    json_t *rep = NULL;
    char *md = NULL;
    assert_int_equal(orc_sb_report(out, &rep, &md, &err), ORC_OK);
    json_t *single = json_object_get(json_object_get(rep, "categories"), "single_tool_call");
    assert_int_equal(json_integer_value(json_object_get(single, "scenarios")), 2);
    assert_int_equal(json_integer_value(json_object_get(single, "runs")), 2 * ORC_SB_AUGMENTATIONS);
    json_t *scrambled = json_object_get(json_object_get(single, "by_augmentation"), "tool_name_scrambled");
    assert_int_equal(json_integer_value(json_object_get(scrambled, "runs")), 2);
    assert_true(json_number_value(json_object_get(scrambled, "mean_score")) == 1.0);
    assert_int_equal(json_array_size(json_object_get(rep, "errors")), 3);
    assert_non_null(strstr(md, "| category | scenarios | distraction_0 | distraction_3 | distraction_10 | all_tools |"
                               " tool_name_scrambled |"));
    assert_non_null(strstr(md, "| single_tool_call | 2 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |"
                               " 1.000 | 1.00 | 7.00 | 0 |"));
    assert_non_null(strstr(md, "error in broken"));
    assert_non_null(strstr(md, "error in bad_tool: scenario"));
    assert_non_null(strstr(md, "unknown column 'email'"));
    free(md);
    json_decref(rep);
    snprintf(path, sizeof path, "%s/wifi_off.distraction_0.trajectory.json", out);
    json_t *t = json_load_file(path, 0, NULL);
    assert_non_null(t);
    assert_true(json_array_size(json_object_get(t, "log")) == 7);
    assert_string_equal(json_string_value(json_object_get(t, "augmentation")), "distraction_0");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(json_object_get(t, "final_state"),
                                                                                        "settings"), 0), "wifi")), 0);
    json_decref(t);
    /* In the scrambled variant the agent's call names tool_NN, the reply the real tool. */
    snprintf(path, sizeof path, "%s/wifi_off.tool_name_scrambled.trajectory.json", out);
    t = json_load_file(path, 0, NULL);
    assert_non_null(t);
    json_t *log = json_object_get(t, "log");
    const char *called = json_string_value(json_object_get(json_array_get(log, 3), "tool_name"));
    assert_non_null(called);
    assert_true(strncmp(called, "tool_", 5) == 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(t, "tool_names"), called)), "set_wifi_status");
    assert_string_equal(json_string_value(json_object_get(json_array_get(log, 4), "tool_name")), "set_wifi_status");
    assert_true(json_number_value(json_object_get(t, "score")) == 1.0);
    json_decref(t);
    /* A subset of augmentations, and an unknown one. */
    char out2[1300];
    snprintf(out2, sizeof out2, "%s/out2", tmp);
    orc_sb_run_opts o2 = {.agent = script, .user = script, .scenarios_dir = scen, .out_dir = out2,
                          .augment = "arg_type_scrambled,distraction_10"};
    assert_int_equal(orc_sb_run(&o2, &sum, &err), ORC_OK);
    assert_int_equal(json_integer_value(json_object_get(sum, "played")), 4);
    assert_string_equal(json_string_value(json_array_get(json_object_get(sum, "augmentations"), 0)), "arg_type_scrambled");
    json_decref(sum);
    o2.augment = "distraction_3,scrambled";
    orc_error err2 = {0};
    assert_int_equal(orc_sb_run(&o2, &sum, &err2), ORC_EINVAL);
    assert_non_null(strstr(err2.msg, "unknown augmentation 'scrambled'"));
    orc_test_dir_remove(tmp);
}

static int count_tools(json_t *tools, const char *name) {
    int n = 0;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) n += strcmp(json_string_value(json_object_get(json_object_get(t, "function"), "name")),
                                                name) == 0;
    return n;
}

/* The real names of the offered tools, as an object's keys. */
static json_t *real_names(const orc_sb_scenario *sc) {
    json_t *out = json_object();
    size_t i;
    json_t *t;
    json_array_foreach(orc_sb_scenario_tools(sc), i, t) {
        const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        json_object_set_new(out, orc_sb_scenario_real_tool(sc, name), json_true());
    }
    return out;
}

/* The 8 augmentations: the sizes of the offered lists, distractors never
 * needed nor denied and the same on every call (the 3 among the 10),
 * scrambled names that map back to distinct real tools, removed descriptions
 * and types; a real name is unknown to the agent under scrambled names. */
static void test_augmentations(void **state) {
    (void)state;
    int which[ORC_SB_AUGMENTATIONS];
    orc_error err = {0};
    assert_int_equal(orc_sb_augmentations_parse(NULL, which, &err), ORC_SB_AUGMENTATIONS);
    assert_int_equal(orc_sb_augmentations_parse("all", which, &err), ORC_SB_AUGMENTATIONS);
    assert_int_equal(orc_sb_augmentations_parse("all_tools,distraction_3,all_tools", which, &err), 2);
    assert_int_equal(which[0], 3);
    assert_int_equal(which[1], 1);
    assert_int_equal(orc_sb_augmentations_parse("distraction_3,", which, &err), -1);
    assert_int_equal(orc_sb_augmentation_index("arg_type_scrambled"), 7);
    assert_null(orc_sb_augmentation_name(8));

    orc_sb_scenario *sc = load_scenario("weather_no_tool"); /* needs 2 tools, denies search_weather */
    int total = orc_sandbox_tool_count();
    const int sizes[ORC_SB_AUGMENTATIONS] = {2, 5, 12, total - 1, 5, 5, 5, 5};
    json_t *three = NULL, *ten = NULL;
    for (int a = 0; a < ORC_SB_AUGMENTATIONS; a++) {
        assert_int_equal(orc_sb_scenario_augment(sc, orc_sb_augmentation_name(a), &err), ORC_OK);
        assert_string_equal(orc_sb_scenario_augmentation(sc), orc_sb_augmentation_name(a));
        json_t *tools = orc_sb_scenario_tools(sc);
        if ((int)json_array_size(tools) != sizes[a])
            fail_msg("%s offers %zu tools, wanted %d", orc_sb_augmentation_name(a), json_array_size(tools), sizes[a]);
        assert_null(orc_sb_scenario_offered_tool(sc, "search_weather"));
        assert_non_null(orc_sb_scenario_offered_tool(sc, "get_current_location"));
        assert_non_null(orc_sb_scenario_offered_tool(sc, "get_current_timestamp"));
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            json_t *fn = json_object_get(t, "function");
            const char *name = json_string_value(json_object_get(fn, "name"));
            const char *real = orc_sb_scenario_real_tool(sc, name);
            assert_non_null(real);
            assert_string_equal(orc_sb_scenario_offered_tool(sc, real), name);
            assert_int_equal(count_tools(tools, name), 1);
            assert_true((a == 4) == (strncmp(name, "tool_", 5) == 0));
            assert_true((a == 5) == (json_object_get(fn, "description") == NULL));
            const char *arg;
            json_t *prop;
            json_object_foreach(json_object_get(json_object_get(fn, "parameters"), "properties"), arg, prop) {
                assert_true((a == 6) == (json_object_get(prop, "description") == NULL));
                assert_true((a == 7) == (json_object_get(prop, "type") == NULL));
            }
        }
        if (a == 1) three = real_names(sc);
        if (a == 2) ten = real_names(sc);
        if (a >= 4) {
            /* The scrambled variants stack on the same 3 distractors. */
            const char *k;
            json_t *v;
            json_object_foreach(three, k, v) assert_non_null(orc_sb_scenario_offered_tool(sc, k));
        }
    }
    const char *k;
    json_t *v;
    json_object_foreach(three, k, v) assert_non_null(json_object_get(ten, k));
    json_decref(three);
    json_decref(ten);
    /* The same choice every time, from the name: parse again. */
    orc_sb_scenario *again = load_scenario("weather_no_tool");
    assert_int_equal(orc_sb_scenario_augment(again, "distraction_10", &err), ORC_OK);
    assert_int_equal(orc_sb_scenario_augment(sc, "distraction_10", &err), ORC_OK);
    assert_true(json_equal(orc_sb_scenario_tools(again), orc_sb_scenario_tools(sc)));
    orc_error err3 = {0};
    assert_int_equal(orc_sb_scenario_augment(again, "bogus", &err3), ORC_EINVAL);
    assert_non_null(strstr(err3.msg, "unknown augmentation 'bogus'"));
    orc_sb_scenario_free(again);
    orc_sb_scenario_free(sc);

    /* Under scrambled names the real name is not offered: refused, a mistake;
     * the oracle (real names, translated) still scores 1. */
    sc = load_scenario("wifi_off");
    assert_int_equal(orc_sb_scenario_augment(sc, "tool_name_scrambled", &err), ORC_OK);
    probe p = {.replies = json_loads("[{\"tool_calls\": [{\"id\": \"a\", \"name\": \"set_wifi_status\","
                                     " \"arguments\": \"{\\\"on\\\": false}\"}]}, {\"content\": \"done\"}]",
                                     0, NULL)};
    orc_sb_role agent = probe_role(&p);
    json_t *empty = json_object();
    orc_sb_role *user = orc_sb_script_role_json("user", empty);
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    orc_sb_play_result res;
    assert_int_equal(orc_sb_play(sb, sc, &agent, user, 0, &res, &err), ORC_OK);
    assert_int_equal(res.mistakes, 1);
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(log, 4), "exception")),
                           "no tool named 'set_wifi_status'"));
    json_decref(log);
    orc_sandbox_close(sb);
    orc_sb_role_free(user);
    json_decref(empty);
    json_decref(p.replies);
    char traj[4096];
    snprintf(traj, sizeof traj, "%s/wifi_off.oracle.json", data_dir("trajectories"));
    json_t *doc = json_load_file(traj, 0, NULL);
    json_t *eval = play_doc(sc, doc, &res, &sb);
    assert_true(score_of(eval) == 1.0);
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    const char *called = json_string_value(json_object_get(json_array_get(log, 3), "tool_name"));
    assert_string_equal(orc_sb_scenario_real_tool(sc, called), "set_wifi_status");
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(log, 4), "tool_trace")),
                           "\"tool_name\":\"set_wifi_status\""));
    json_decref(log);
    json_decref(eval);
    json_decref(doc);
    orc_sandbox_close(sb);
    orc_sb_scenario_free(sc);
    /* play_file: the base variant from a file path. */
    json_t *e2 = play_file("wifi_off", traj, &res, NULL);
    assert_true(score_of(e2) == 1.0);
    json_decref(e2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracles_score_one),   cmocka_unit_test(test_planted_mistakes),
        cmocka_unit_test(test_visibility_and_limit), cmocka_unit_test(test_agent_mistakes),
        cmocka_unit_test(test_scrambled_names_stay_hidden),
        cmocka_unit_test(test_scenario_errors),     cmocka_unit_test(test_rouge_and_prompt),
        cmocka_unit_test(test_run_directory),       cmocka_unit_test(test_augmentations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
