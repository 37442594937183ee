/* The play loop and evaluation: every shipped scenario's oracle trajectory
 * scores 1.0 and the scenarios cover every category; each planted-mistake
 * trajectory (wrong recipient, skipped dependency, minefield action, made-up
 * value) scores what the rules give; messages go to their recipients with
 * the right visibility (the agent never sees the user simulator's prompt);
 * the message limit stops a looping agent; agent mistakes (invalid reply,
 * unknown or denied tool, wrong argument types) are logged and scored, not
 * fatal; bad scenario files give clear errors; ROUGE-L and the user prompt. */
#include <dirent.h>
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

/* Play a scenario with both roles scripted from a trajectory file; returns
 * the evaluation (and the sandbox, left open, when wanted). */
static json_t *play_file(const char *scenario, const char *traj_path, orc_sb_play_result *res, orc_sandbox **keep) {
    orc_sb_scenario *sc = load_scenario(scenario);
    orc_error err = {0};
    orc_sb_role *agent = orc_sb_script_role("agent", traj_path, &err);
    orc_sb_role *user = orc_sb_script_role("user", traj_path, &err);
    if (!agent || !user) fail_msg("script %s: %s", traj_path, err.msg);
    orc_sandbox *sb = orc_sb_scenario_world(sc, &err);
    if (!sb) fail_msg("world %s: %s", scenario, err.msg);
    if (orc_sb_play(sb, sc, agent, user, 0, res, &err) != ORC_OK) fail_msg("play %s: %s", scenario, err.msg);
    json_t *eval = NULL;
    if (orc_sb_evaluate(sb, sc, &eval, &err) != ORC_OK) fail_msg("evaluate %s: %s", scenario, err.msg);
    if (keep) *keep = sb;
    else orc_sandbox_close(sb);
    orc_sb_role_free(agent);
    orc_sb_role_free(user);
    orc_sb_scenario_free(sc);
    return eval;
}

static double score_of(json_t *eval) { return json_number_value(json_object_get(eval, "score")); }

static void test_oracles_score_one(void **state) {
    (void)state;
    DIR *d = opendir(data_dir("scenarios"));
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    json_t *cats = json_object();
    char names[64][256];
    while ((e = readdir(d)) && n < 64) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) snprintf(names[n++], 256, "%.*s", (int)len - 5, e->d_name);
    }
    closedir(d);
    assert_true(n >= 12);
    for (int i = 0; i < n; i++) {
        char traj[4096];
        snprintf(traj, sizeof traj, "%s/%.255s.oracle.json", data_dir("trajectories"), names[i]);
        orc_sb_play_result res;
        json_t *eval = play_file(names[i], traj, &res, NULL);
        if (score_of(eval) != 1.0) fail_msg("oracle of %s scores %g", names[i], score_of(eval));
        assert_true(res.ended);
        json_decref(eval);
        orc_sb_scenario *sc = load_scenario(names[i]);
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(orc_sb_scenario_json(sc), "categories"), k, c)
            json_object_set_new(cats, json_string_value(c), json_true());
        orc_sb_scenario_free(sc);
    }
    const char *need[] = {"single_tool_call", "multiple_tool_call", "single_user_turn", "multiple_user_turn",
                          "state_dependency", "canonicalization", "insufficient_information"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!json_object_get(cats, need[i])) fail_msg("no scenario in category %s", need[i]);
    json_decref(cats);
}

/* Every trajectory other than an oracle carries the score the rules give it. */
static void test_planted_mistakes(void **state) {
    (void)state;
    DIR *d = opendir(data_dir("trajectories"));
    assert_non_null(d);
    struct dirent *e;
    int n = 0, kinds = 0;
    char files[64][256];
    while ((e = readdir(d)) && n < 64)
        if (strstr(e->d_name, ".json") && !strstr(e->d_name, ".oracle.")) snprintf(files[n++], 256, "%s", e->d_name);
    closedir(d);
    assert_true(n >= 4);
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%.255s", data_dir("trajectories"), files[i]);
        json_t *doc = json_load_file(path, 0, NULL);
        assert_non_null(doc);
        const char *scenario = json_string_value(json_object_get(doc, "scenario"));
        double want = json_number_value(json_object_get(doc, "expected_score"));
        orc_sb_play_result res;
        json_t *eval = play_file(scenario, path, &res, NULL);
        if (score_of(eval) < want - 1e-9 || score_of(eval) > want + 1e-9)
            fail_msg("%s scores %g, the rules give %g", files[i], score_of(eval), want);
        assert_true(want < 1.0);
        if (strstr(files[i], ".minefield.")) assert_true(json_is_true(json_object_get(eval, "minefield_hit")));
        kinds += strstr(files[i], "wrong_recipient") || strstr(files[i], "skipped_dependency") ||
                 strstr(files[i], "minefield") || strstr(files[i], "made_up_value");
        json_decref(eval);
        json_decref(doc);
    }
    assert_true(kinds >= 4);
}

/* ---- roles written for the tests ---- */

typedef struct probe {
    json_t *replies; /* handed out in order */
    size_t next;
    int saw_user_prompt, histories, tools_seen;
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
    assert_int_equal(p.tools_seen, orc_sandbox_tool_count());
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

/* Unusable agent replies are the agent's mistakes: logged, counted, scored. */
static void test_agent_mistakes(void **state) {
    (void)state;
    orc_sb_scenario *sc = load_scenario("weather_no_tool"); /* search_weather denied */
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
    char path[] = "/tmp/orchard_scenario_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"name\": \n", 10), 10);
    close(fd);
    orc_error err = {0};
    assert_null(orc_sb_scenario_load(path, &err));
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "line"));
    unlink(path);
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
    free(prompt);
    orc_sb_scenario_free(sc);
}

/* The run over a directory: oracles score 1, a broken scenario is an error entry. */
static void test_run_directory(void **state) {
    (void)state;
    char tmp[] = "/tmp/orchard_sbrun_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char scen[1200], out[1200], cmd[9000];
    snprintf(scen, sizeof scen, "%s/scenarios", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/wifi_off.json %s/add_contact.json %s/ && printf '{oops' > %s/broken.json",
             scen, data_dir("scenarios"), data_dir("scenarios"), scen, scen);
    assert_int_equal(system(cmd), 0);
    char script[1200];
    snprintf(script, sizeof script, "script:%s", data_dir("trajectories"));
    orc_sb_run_opts o = {.agent = script, .user = script, .scenarios_dir = scen, .out_dir = out};
    json_t *sum = NULL;
    orc_error err = {0};
    assert_int_equal(orc_sb_run(&o, &sum, &err), ORC_OK);
    assert_int_equal(json_integer_value(json_object_get(sum, "played")), 2);
    assert_int_equal(json_integer_value(json_object_get(sum, "errors")), 1);
    assert_true(json_real_value(json_object_get(sum, "mean_score")) == 1.0);
    json_t *broken = json_array_get(json_object_get(sum, "scenarios"), 1);
    assert_string_equal(json_string_value(json_object_get(broken, "scenario")), "broken");
    assert_non_null(strstr(json_string_value(json_object_get(broken, "error")), "broken.json"));
    json_decref(sum);
    json_t *rep = NULL;
    char *md = NULL;
    assert_int_equal(orc_sb_report(out, &rep, &md, &err), ORC_OK);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(rep, "categories"),
                                                                        "single_tool_call"), "scenarios")), 2);
    assert_non_null(strstr(md, "| single_tool_call | 2 | 1.000 |"));
    assert_non_null(strstr(md, "error in broken"));
    free(md);
    json_decref(rep);
    char traj[1400];
    snprintf(traj, sizeof traj, "%s/wifi_off.trajectory.json", out);
    json_t *t = json_load_file(traj, 0, NULL);
    assert_non_null(t);
    assert_true(json_array_size(json_object_get(t, "log")) == 7);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(json_object_get(t, "final_state"),
                                                                                        "settings"), 0), "wifi")), 0);
    json_decref(t);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracles_score_one),   cmocka_unit_test(test_planted_mistakes),
        cmocka_unit_test(test_visibility_and_limit), cmocka_unit_test(test_agent_mistakes),
        cmocka_unit_test(test_scenario_errors),     cmocka_unit_test(test_rouge_and_prompt),
        cmocka_unit_test(test_run_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
