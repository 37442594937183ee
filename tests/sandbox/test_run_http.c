/* End to end: `orchard sandbox run` against a small scripted OpenAI-compatible
 * agent served by this test on loopback (libmicrohttpd). The agent makes the
 * mistakes an LLM makes (an invalid JSON reply, an unknown tool, a wrong
 * argument type) before the right call, and the same server plays the user
 * simulator (it ends the conversation); the run, in the base variant and
 * with scrambled tool names (the agent then finds tools by description),
 * must log them, still score both scenarios 1.0, report a broken scenario as
 * an error, send the model, key and tool schemas, and `orchard sandbox
 * report` must table it all. */
#include <microhttpd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "testdir.h"

typedef struct body {
    char *p;
    size_t n;
} body;

static int saw_tools, saw_key, saw_model, saw_user_turn, requests;

static json_t *tool_call(const char *name, const char *args) {
    return json_pack("{s:[{s:{s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}}]}", "choices", "message", "content", "tool_calls",
                     "id", "c1", "type", "function", "function", "name", name, "arguments", args);
}

static json_t *text(const char *content) {
    return json_pack("{s:[{s:{s:s, s:s}}]}", "choices", "message", "role", "assistant", "content", content);
}

/* The name a tool is offered under: its own, or under scrambled names the
 * tool whose description starts like the real one's (a real agent has only
 * the description to go by then). */
static const char *offered(json_t *req, const char *real, const char *description) {
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(req, "tools"), i, t) {
        const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (name && strcmp(name, real) == 0) return real;
    }
    json_array_foreach(json_object_get(req, "tools"), i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *d = json_string_value(json_object_get(fn, "description"));
        if (d && strncmp(d, description, strlen(description)) == 0) return json_string_value(json_object_get(fn, "name"));
    }
    return real;
}

/* The scripted agent: the next move from the last message it was sent. */
static char *agent_reply(json_t *req) {
    const char *send = offered(req, "send_message_with_phone_number", "Send a text message");
    const char *wifi = offered(req, "set_wifi_status", "Turn wifi on or off");
    json_t *msgs = json_object_get(req, "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *role = json_string_value(json_object_get(last, "role"));
    const char *content = json_string_value(json_object_get(last, "content"));
    if (!content) content = "";
    json_t *out = NULL;
    if (strcmp(role, "user") == 0 && strstr(content, "running late")) return strdup("{\"choices\": [oops");
    if (strcmp(role, "user") == 0 && strstr(content, "[execution environment] invalid agent reply"))
        out = tool_call(send, "{\"phone_number\": 15550102030, \"content\": \"I'm running late\"}");
    else if (strcmp(role, "tool") == 0 && strstr(content, "must be of type string"))
        out = tool_call(send, "{\"phone_number\": \"+15550102030\", \"content\": \"I'm running late\"}");
    else if (strcmp(role, "user") == 0 && strstr(content, "wifi")) out = tool_call("toggle_wifi", "{}");
    else if (strcmp(role, "tool") == 0 && strstr(content, "no tool named")) out = tool_call(wifi, "{\"on\": false}");
    else out = text("All done.");
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return s;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **ctx) {
    (void)cls, (void)version;
    body *b = *ctx;
    if (!b) {
        *ctx = calloc(1, sizeof(body));
        return MHD_YES;
    }
    if (*size) {
        b->p = realloc(b->p, b->n + *size + 1);
        memcpy(b->p + b->n, data, *size);
        b->n += *size;
        b->p[b->n] = 0;
        *size = 0;
        return MHD_YES;
    }
    char *reply;
    unsigned status = 200;
    json_t *req = b->p ? json_loads(b->p, 0, NULL) : NULL;
    if (strcmp(method, "POST") != 0 || strcmp(url, "/v1/chat/completions") != 0 || !req) {
        reply = strdup("{\"error\": \"bad request\"}");
        status = 400;
    } else {
        requests++;
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        saw_key |= auth && strcmp(auth, "Bearer k123") == 0;
        saw_model |= strcmp(json_string_value(json_object_get(req, "model")), "scripted") == 0;
        size_t i;
        json_t *t;
        int is_user = 0;
        json_array_foreach(json_object_get(req, "tools"), i, t) {
            const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
            saw_tools |= strcmp(name, "set_wifi_status") == 0;
            is_user |= strcmp(name, "end_conversation") == 0;
        }
        /* The user simulator: it sees the agent's text as a user message and ends at once. */
        if (is_user) {
            json_t *msgs = json_object_get(req, "messages");
            const char *last = json_string_value(json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "role"));
            saw_user_turn |= strcmp(last, "user") == 0 &&
                             strcmp(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system") == 0;
            json_t *end = tool_call("end_conversation", "{}");
            reply = json_dumps(end, JSON_COMPACT);
            json_decref(end);
        } else {
            reply = agent_reply(req);
        }
    }
    json_decref(req);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(reply), reply, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_done(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode code) {
    (void)cls, (void)c, (void)code;
    body *b = *ctx;
    if (b) free(b->p);
    free(b);
    *ctx = NULL;
}

static char *slurp(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t n = 0, cap = 4096;
    char *s = malloc(cap);
    size_t k;
    while ((k = fread(s + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 >= cap) s = realloc(s, cap *= 2);
    }
    s[n] = 0;
    pclose(p);
    return s;
}

static void test_run_against_http_agent(void **state) {
    (void)state;
    const char *bin = getenv("ORCHARD_BINARY"), *src = getenv("ORCHARD_SOURCE_DIR");
    if (!bin || !src) skip();
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                            on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                                            MHD_OPTION_END);
    assert_non_null(d);
    unsigned port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    char tmp[64];
    assert_int_equal(orc_test_dir_make(tmp, sizeof tmp, "sbhttp"), 0);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/sc && cp %s/data/sandbox/scenarios/wifi_off.json %s/data/sandbox/scenarios/send_message_phone.json"
             " %s/sc/ && printf '{\"name\": \"bad\", \"first_user_message\": \"x\", \"tools_allow\": [\"nope\"]}' > %s/sc/bad.json",
             tmp, src, src, tmp, tmp);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "%s sandbox run --agent http://127.0.0.1:%u/v1 --user http://127.0.0.1:%u/v1 --scenarios %s/sc"
             " --out %s/out --model scripted --key k123 --augment distraction_0,tool_name_scrambled",
             bin, port, port, tmp, tmp);
    char *out = slurp(cmd);
    assert_non_null(out);
    if (!strstr(out, "4 played, 1 errors, mean score 1.000")) fail_msg("run printed: %s", out);
    assert_non_null(strstr(out, "unknown tool 'nope'"));
    free(out);
    assert_true(saw_tools && saw_key && saw_model && saw_user_turn);
    assert_int_equal(requests, 18);

    snprintf(cmd, sizeof cmd, "%s/out/send_message_phone.distraction_0.trajectory.json", tmp);
    json_t *t = json_load_file(cmd, 0, NULL);
    assert_non_null(t);
    assert_int_equal(json_integer_value(json_object_get(t, "mistakes")), 2);
    size_t i;
    json_t *row;
    int invalid = 0, wrong_type = 0;
    json_array_foreach(json_object_get(t, "log"), i, row) {
        const char *ex = json_string_value(json_object_get(row, "exception"));
        invalid |= ex && strstr(ex, "not valid JSON") != NULL;
        wrong_type |= ex && strstr(ex, "argument 'phone_number' must be of type string") != NULL;
    }
    assert_true(invalid && wrong_type);
    json_decref(t);
    /* Under scrambled names the agent called tool_NN; the reply and the trace name the real tool. */
    snprintf(cmd, sizeof cmd, "%s/out/wifi_off.tool_name_scrambled.trajectory.json", tmp);
    t = json_load_file(cmd, 0, NULL);
    assert_non_null(t);
    assert_true(json_number_value(json_object_get(t, "score")) == 1.0);
    int scrambled_call = 0, real_reply = 0;
    json_array_foreach(json_object_get(t, "log"), i, row) {
        const char *from = json_string_value(json_object_get(row, "sender"));
        const char *tool = json_string_value(json_object_get(row, "tool_name"));
        if (!tool) continue;
        scrambled_call |= strcmp(from, "agent") == 0 && strncmp(tool, "tool_", 5) == 0;
        real_reply |= strcmp(from, "execution_environment") == 0 && strcmp(tool, "set_wifi_status") == 0;
    }
    assert_true(scrambled_call && real_reply);
    json_decref(t);

    snprintf(cmd, sizeof cmd, "%s sandbox report %s/out", bin, tmp);
    char *md = slurp(cmd);
    if (!strstr(md, "| single_tool_call | 2 | 1.000 | 1.000 | 1.000 | 1.00 |")) fail_msg("report: %s", md);
    /* The agent's mistakes are scored, not errors, and the report counts them:
     * per augmentation 2 in send_message_phone (invalid JSON, a wrong type)
     * and 1 in wifi_off (an unknown tool). */
    assert_non_null(strstr(md, "error in bad"));
    free(md);
    snprintf(cmd, sizeof cmd, "%s sandbox report %s/out --json", bin, tmp);
    char *js = slurp(cmd);
    json_t *rep = json_loads(js, 0, NULL);
    assert_non_null(rep);
    assert_true(json_number_value(json_object_get(json_object_get(rep, "all"), "mean_score")) == 1.0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(rep, "all"), "mistakes")), 6);
    assert_int_equal(json_array_size(json_object_get(rep, "errors")), 1);
    json_decref(rep);
    free(js);
    snprintf(cmd, sizeof cmd, "test -s %s/out/report.md && test -s %s/out/summary.json", tmp, tmp);
    assert_int_equal(system(cmd), 0);
    orc_test_dir_remove(tmp);
    MHD_stop_daemon(d);
}

/* A dead endpoint is an error for each scenario, not a crash. */
static void test_unreachable_agent(void **state) {
    (void)state;
    const char *bin = getenv("ORCHARD_BINARY"), *src = getenv("ORCHARD_SOURCE_DIR");
    if (!bin || !src) skip();
    char tmp[64], cmd[8192];
    assert_int_equal(orc_test_dir_make(tmp, sizeof tmp, "sbdead"), 0);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/sc && cp %s/data/sandbox/scenarios/wifi_off.json %s/sc/ && %s sandbox run --agent "
             "http://127.0.0.1:9/v1 --user script:%s/data/sandbox/trajectories --scenarios %s/sc --out %s/out",
             tmp, src, tmp, bin, src, tmp, tmp);
    char *out = slurp(cmd);
    if (!strstr(out, "0 played, 8 errors")) fail_msg("run printed: %s", out);
    assert_non_null(strstr(out, "POST http://127.0.0.1:9/v1/chat/completions"));
    free(out);
    orc_test_dir_remove(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_against_http_agent),
        cmocka_unit_test(test_unreachable_agent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
