/* Every sandbox tool against a fresh in-memory world: contacts, messaging,
 * reminders, settings, utilities and the search tools, plus every state
 * dependency (sending needs cellular, low battery mode turns services off and
 * blocks enabling them, location needs location service, search needs wifi,
 * setting a value it already has is an error) and that a raised exception
 * leaves the state untouched. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/sandbox.h"

static char g_exc[1024];

/* Run a tool; the parsed result, or NULL with the exception in g_exc. */
static json_t *call(orc_sandbox *sb, const char *name, const char *args) {
    orc_tool_result r;
    orc_error err = {0};
    if (orc_sandbox_invoke(sb, name, args, &r, &err) != ORC_OK) fail_msg("%s %s: %s", name, args, err.msg);
    g_exc[0] = 0;
    json_t *out = NULL;
    if (r.exception) snprintf(g_exc, sizeof g_exc, "%s", r.exception);
    else out = json_loads(r.result, JSON_DECODE_ANY, NULL);
    orc_tool_result_free(&r);
    return out;
}

static json_t *call_ok(orc_sandbox *sb, const char *name, const char *args) {
    json_t *out = call(sb, name, args);
    if (!out) fail_msg("%s %s raised: %s", name, args, g_exc);
    return out;
}

static void call_raises(orc_sandbox *sb, const char *name, const char *args, const char *want) {
    json_t *out = call(sb, name, args);
    if (out) {
        char *s = json_dumps(out, JSON_ENCODE_ANY);
        fail_msg("%s %s returned %s, wanted an exception with '%s'", name, args, s, want);
    }
    if (!strstr(g_exc, want)) fail_msg("%s %s: exception '%s' lacks '%s'", name, args, g_exc, want);
}

static int setup(void **state) {
    orc_error err = {0};
    *state = orc_sandbox_open(NULL, &err);
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    orc_sandbox_close(*state);
    return 0;
}

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* ---- contacts --------------------------------------------------------------------------- */

static void test_contacts(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "add_contact", "{\"name\": \"John Appleseed\", \"phone_number\": \"+15550001111\","
                                           " \"relationship\": \"friend\"}");
    char id[64];
    snprintf(id, sizeof id, "%s", str(r, "person_id"));
    assert_int_equal(strlen(id), 36);
    json_decref(r);
    call_raises(sb, "add_contact", "{\"name\": \"Bad\", \"phone_number\": \"555-000 1111\"}", "not canonical");
    call_raises(sb, "add_contact", "{\"name\": \"\", \"phone_number\": \"+1555\"}", "name is empty");

    r = call_ok(sb, "search_contacts", "{\"name\": \"john appleseed\"}");
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(str(json_array_get(r, 0), "person_id"), id);
    assert_true(json_is_false(json_object_get(json_array_get(r, 0), "is_self")));
    json_decref(r);
    r = call_ok(sb, "search_contacts", "{\"is_self\": true}");
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(str(json_array_get(r, 0), "relationship"), "self");
    json_decref(r);
    r = call_ok(sb, "search_contacts", "{\"phone_number\": \"+15550001111\", \"relationship\": \"friend\"}");
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);
    r = call_ok(sb, "search_contacts", "{\"relationship\": \"Friend\"}"); /* exact: case matters */
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);

    char args[256];
    snprintf(args, sizeof args, "{\"person_id\": \"%s\", \"phone_number\": \"+15550002222\"}", id);
    r = call_ok(sb, "modify_contact", args);
    assert_string_equal(str(r, "phone_number"), "+15550002222");
    assert_string_equal(str(r, "name"), "John Appleseed");
    json_decref(r);
    snprintf(args, sizeof args, "{\"person_id\": \"%s\"}", id);
    call_raises(sb, "modify_contact", args, "at least one");
    call_raises(sb, "modify_contact", "{\"person_id\": \"nope\", \"name\": \"X\"}", "no contact with person_id 'nope'");

    r = call_ok(sb, "remove_contact", args);
    assert_string_equal(str(r, "person_id"), id);
    json_decref(r);
    call_raises(sb, "remove_contact", args, "no contact");
    r = call_ok(sb, "search_contacts", "{\"is_self\": true}");
    snprintf(args, sizeof args, "{\"person_id\": \"%s\"}", str(json_array_get(r, 0), "person_id"));
    json_decref(r);
    call_raises(sb, "remove_contact", args, "own contact");
}

/* ---- messaging ------------------------------------------------------------------------------ */

static void test_messaging(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "add_contact", "{\"name\": \"Mary Jones\", \"phone_number\": \"+15550003333\"}");
    char mary[64];
    snprintf(mary, sizeof mary, "%s", str(r, "person_id"));
    json_decref(r);
    r = call_ok(sb, "send_message_with_phone_number",
                "{\"phone_number\": \"+15550003333\", \"content\": \"Running late, see you at dinner\"}");
    assert_non_null(str(r, "message_id"));
    json_decref(r);
    r = call_ok(sb, "send_message_with_phone_number", "{\"phone_number\": \"+15559999999\", \"content\": \"Hi\"}");
    json_decref(r);
    call_raises(sb, "send_message_with_phone_number", "{\"phone_number\": \"(555) 999\", \"content\": \"Hi\"}",
                "not canonical");

    r = call_ok(sb, "search_messages", "{\"recipient_person_id\": \"x\"}");
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);
    char args[256];
    snprintf(args, sizeof args, "{\"recipient_person_id\": \"%s\"}", mary);
    r = call_ok(sb, "search_messages", args);
    assert_int_equal(json_array_size(r), 1);
    json_t *m = json_array_get(r, 0);
    assert_string_equal(str(m, "recipient_phone_number"), "+15550003333");
    assert_string_equal(str(m, "sender_phone_number"), "+15550100001");
    assert_true(num(m, "creation_timestamp") == ORC_SANDBOX_DEFAULT_CLOCK);
    json_decref(r);
    r = call_ok(sb, "search_messages", "{\"content\": \"dinner\"}");
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);
    r = call_ok(sb, "search_messages", "{\"recipient_phone_number\": \"+15559999999\"}");
    assert_int_equal(json_array_size(r), 1);
    assert_true(json_is_null(json_object_get(json_array_get(r, 0), "recipient_person_id")));
    json_decref(r);
    r = call_ok(sb, "search_messages", "{\"creation_timestamp_lowerbound\": 1717405201}");
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);
    r = call_ok(sb, "search_messages", "{\"creation_timestamp_upperbound\": 1717405200}");
    assert_int_equal(json_array_size(r), 2);
    json_decref(r);
}

/* ---- reminders ----------------------------------------------------------------------------- */

static void test_reminders(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "add_reminder", "{\"content\": \"Buy milk\", \"reminder_timestamp\": 1717500000}");
    char id[64];
    snprintf(id, sizeof id, "%s", str(r, "reminder_id"));
    json_decref(r);
    r = call_ok(sb, "add_reminder", "{\"content\": \"Water the plants\", \"reminder_timestamp\": 1717600000,"
                                    " \"latitude\": 37.3, \"longitude\": -122.0}");
    json_decref(r);
    call_raises(sb, "add_reminder", "{\"content\": \"x\", \"reminder_timestamp\": 1, \"latitude\": 3}", "together");
    call_raises(sb, "add_reminder", "{\"content\": \"x\", \"reminder_timestamp\": 1, \"latitude\": 91, \"longitude\": 0}",
                "latitude must be");

    r = call_ok(sb, "search_reminder", "{\"content\": \"buy milk\"}");
    assert_int_equal(json_array_size(r), 1);
    assert_true(json_is_null(json_object_get(json_array_get(r, 0), "latitude")));
    json_decref(r);
    r = call_ok(sb, "search_reminder", "{\"reminder_timestamp_lowerbound\": 1717550000}");
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(str(json_array_get(r, 0), "content"), "Water the plants");
    json_decref(r);
    r = call_ok(sb, "search_reminder", "{\"latitude\": 37.3, \"longitude\": -122.0}");
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);

    char args[256];
    snprintf(args, sizeof args, "{\"reminder_id\": \"%s\", \"reminder_timestamp\": 1717700000}", id);
    r = call_ok(sb, "modify_reminder", args);
    assert_true(num(r, "reminder_timestamp") == 1717700000.0);
    assert_string_equal(str(r, "content"), "Buy milk");
    json_decref(r);
    snprintf(args, sizeof args, "{\"reminder_id\": \"%s\"}", id);
    call_raises(sb, "modify_reminder", args, "at least one");
    call_raises(sb, "modify_reminder", "{\"reminder_id\": \"nope\", \"content\": \"x\"}", "no reminder");
    r = call_ok(sb, "remove_reminder", args);
    assert_string_equal(str(r, "reminder_id"), id);
    json_decref(r);
    call_raises(sb, "remove_reminder", args, "no reminder");
    r = call_ok(sb, "search_reminder", "{}");
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);
}

/* ---- settings and dependencies ------------------------------------------------------------- */

static int get_setting(orc_sandbox *sb, const char *tool, const char *key) {
    json_t *r = call_ok(sb, tool, "{}");
    int v = json_is_true(json_object_get(r, key));
    json_decref(r);
    return v;
}

static void test_settings(void **state) {
    orc_sandbox *sb = *state;
    assert_true(get_setting(sb, "get_cellular_service_status", "cellular"));
    assert_true(get_setting(sb, "get_wifi_status", "wifi"));
    assert_true(get_setting(sb, "get_location_service_status", "location_service"));
    assert_false(get_setting(sb, "get_low_battery_mode_status", "low_battery_mode"));
    const char *tools[] = {"set_cellular_service_status", "set_wifi_status", "set_location_service_status"};
    for (int i = 0; i < 3; i++) {
        call_raises(sb, tools[i], "{\"on\": true}", "already on");
        json_decref(call_ok(sb, tools[i], "{\"on\": false}"));
        call_raises(sb, tools[i], "{\"on\": false}", "already off");
        json_decref(call_ok(sb, tools[i], "{\"on\": true}"));
    }
    call_raises(sb, "set_low_battery_mode_status", "{\"on\": false}", "already off");
    json_t *loc = call_ok(sb, "get_current_location", "{}");
    assert_true(fabs(num(loc, "latitude") - 37.323) < 1e-9);
    json_decref(loc);
}

static void test_low_battery_mode(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "set_low_battery_mode_status", "{\"on\": true}");
    assert_true(json_is_false(json_object_get(r, "wifi")));
    json_decref(r);
    assert_false(get_setting(sb, "get_cellular_service_status", "cellular"));
    assert_false(get_setting(sb, "get_wifi_status", "wifi"));
    assert_false(get_setting(sb, "get_location_service_status", "location_service"));
    call_raises(sb, "set_wifi_status", "{\"on\": true}", "low battery mode is on");
    call_raises(sb, "set_cellular_service_status", "{\"on\": true}", "low battery mode is on");
    call_raises(sb, "set_location_service_status", "{\"on\": true}", "low battery mode is on");
    call_raises(sb, "set_low_battery_mode_status", "{\"on\": true}", "already on");
    /* Turning it off does not turn the services back on. */
    json_decref(call_ok(sb, "set_low_battery_mode_status", "{\"on\": false}"));
    assert_false(get_setting(sb, "get_wifi_status", "wifi"));
    json_decref(call_ok(sb, "set_wifi_status", "{\"on\": true}"));
    assert_true(get_setting(sb, "get_wifi_status", "wifi"));
}

static void test_dependencies(void **state) {
    orc_sandbox *sb = *state;
    /* Sending needs cellular. */
    json_decref(call_ok(sb, "set_cellular_service_status", "{\"on\": false}"));
    call_raises(sb, "send_message_with_phone_number", "{\"phone_number\": \"+15550003333\", \"content\": \"Hi\"}",
                "cellular service is off");
    json_t *r = call_ok(sb, "search_messages", "{}");
    assert_int_equal(json_array_size(r), 0); /* nothing was sent */
    json_decref(r);
    json_decref(call_ok(sb, "set_cellular_service_status", "{\"on\": true}"));
    json_decref(call_ok(sb, "send_message_with_phone_number", "{\"phone_number\": \"+15550003333\", \"content\": \"Hi\"}"));

    /* Location needs location service, including search around "here". */
    json_decref(call_ok(sb, "set_location_service_status", "{\"on\": false}"));
    call_raises(sb, "get_current_location", "{}", "location service is off");
    call_raises(sb, "search_places_around", "{\"category\": \"cafe\"}", "location service is off");
    call_raises(sb, "search_weather", "{}", "location service is off");
    r = call_ok(sb, "search_weather", "{\"latitude\": 37.3230, \"longitude\": -122.0322}");
    assert_string_equal(str(r, "city"), "Cupertino");
    json_decref(r);

    /* Search tools need wifi. */
    json_decref(call_ok(sb, "set_wifi_status", "{\"on\": false}"));
    call_raises(sb, "search_places_by_name", "{\"name\": \"Cafe\"}", "wifi is off");
    call_raises(sb, "search_places_around", "{\"latitude\": 37.3, \"longitude\": -122.0}", "wifi is off");
    call_raises(sb, "search_weather", "{\"latitude\": 37.3, \"longitude\": -122.0}", "wifi is off");
    call_raises(sb, "search_stock", "{\"query\": \"x\"}", "wifi is off");
    call_raises(sb, "convert_currency", "{\"amount\": 1, \"from_currency_code\": \"USD\", \"to_currency_code\": \"EUR\"}",
                "wifi is off");
}

/* ---- utilities ------------------------------------------------------------------------------ */

static void test_utilities(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "get_current_timestamp", "{}");
    assert_true(num(r, "timestamp") == ORC_SANDBOX_DEFAULT_CLOCK);
    json_decref(r);
    orc_error err = {0};
    assert_int_equal(orc_sandbox_set_clock(sb, 1700000000, &err), ORC_OK);
    r = call_ok(sb, "get_current_timestamp", "{}");
    assert_true(num(r, "timestamp") == 1700000000.0);
    json_decref(r);

    r = call_ok(sb, "shift_timestamp", "{\"timestamp\": 1000, \"weeks\": 1, \"days\": -1, \"hours\": 2,"
                                       " \"minutes\": 3, \"seconds\": 4}");
    assert_true(num(r, "timestamp") == 1000 + 6 * 86400 + 2 * 3600 + 3 * 60 + 4);
    json_decref(r);
    r = call_ok(sb, "timestamp_diff", "{\"timestamp_0\": 0, \"timestamp_1\": 90000}");
    assert_int_equal(json_integer_value(json_object_get(r, "days")), 1);
    assert_true(num(r, "seconds") == 3600);
    json_decref(r);
    r = call_ok(sb, "timestamp_diff", "{\"timestamp_0\": 3600, \"timestamp_1\": 0}");
    assert_int_equal(json_integer_value(json_object_get(r, "days")), -1); /* like Python's timedelta */
    assert_true(num(r, "seconds") == 82800);
    json_decref(r);

    /* 2024-02-29 12:34:56 UTC is 1709210096, a Thursday. */
    r = call_ok(sb, "timestamp_to_datetime_info", "{\"timestamp\": 1709210096}");
    assert_int_equal(json_integer_value(json_object_get(r, "year")), 2024);
    assert_int_equal(json_integer_value(json_object_get(r, "month")), 2);
    assert_int_equal(json_integer_value(json_object_get(r, "day")), 29);
    assert_int_equal(json_integer_value(json_object_get(r, "hour")), 12);
    assert_int_equal(json_integer_value(json_object_get(r, "minute")), 34);
    assert_int_equal(json_integer_value(json_object_get(r, "second")), 56);
    assert_int_equal(json_integer_value(json_object_get(r, "isoweekday")), 4);
    json_decref(r);
    r = call_ok(sb, "datetime_info_to_timestamp",
                "{\"year\": 2024, \"month\": 2, \"day\": 29, \"hour\": 12, \"minute\": 34, \"second\": 56}");
    assert_true(num(r, "timestamp") == 1709210096.0);
    json_decref(r);
    r = call_ok(sb, "datetime_info_to_timestamp", "{\"year\": 1969, \"month\": 12, \"day\": 31}");
    assert_true(num(r, "timestamp") == -86400.0);
    json_decref(r);
    call_raises(sb, "datetime_info_to_timestamp", "{\"year\": 2023, \"month\": 2, \"day\": 29}", "day 29");
    call_raises(sb, "datetime_info_to_timestamp", "{\"year\": 2023, \"month\": 13, \"day\": 1}", "month 13");
    call_raises(sb, "datetime_info_to_timestamp", "{\"year\": 2023, \"month\": 1, \"day\": 1, \"hour\": 24}",
                "valid time");

    r = call_ok(sb, "unit_conversion", "{\"amount\": 100, \"from_unit\": \"celsius\", \"to_unit\": \"F\"}");
    assert_true(fabs(num(r, "amount") - 212) < 1e-9);
    json_decref(r);
    r = call_ok(sb, "unit_conversion", "{\"amount\": 1, \"from_unit\": \"mile\", \"to_unit\": \"km\"}");
    assert_true(fabs(num(r, "amount") - 1.609344) < 1e-12);
    json_decref(r);
    r = call_ok(sb, "unit_conversion", "{\"amount\": 2, \"from_unit\": \" Pounds \", \"to_unit\": \"kg\"}");
    assert_true(fabs(num(r, "amount") - 0.90718474) < 1e-12);
    json_decref(r);
    r = call_ok(sb, "unit_conversion", "{\"amount\": 36, \"from_unit\": \"km/h\", \"to_unit\": \"m/s\"}");
    assert_true(fabs(num(r, "amount") - 10) < 1e-12);
    json_decref(r);
    call_raises(sb, "unit_conversion", "{\"amount\": 1, \"from_unit\": \"kg\", \"to_unit\": \"km\"}",
                "cannot convert mass");
    call_raises(sb, "unit_conversion", "{\"amount\": 1, \"from_unit\": \"furlong\", \"to_unit\": \"km\"}",
                "unknown unit 'furlong'");

    /* A degree of latitude is 111.19 km; Cupertino to San Francisco about 61 km. */
    r = call_ok(sb, "calculate_lat_lon_distance", "{\"latitude_0\": 0, \"longitude_0\": 0, \"latitude_1\": 1,"
                                                  " \"longitude_1\": 0}");
    assert_true(fabs(num(r, "distance_km") - 6371.0 * M_PI / 180) < 1e-9);
    json_decref(r);
    r = call_ok(sb, "calculate_lat_lon_distance", "{\"latitude_0\": 37.3230, \"longitude_0\": -122.0322,"
                                                  " \"latitude_1\": 37.7749, \"longitude_1\": -122.4194}");
    assert_true(num(r, "distance_km") > 60 && num(r, "distance_km") < 65);
    json_decref(r);
    call_raises(sb, "calculate_lat_lon_distance", "{\"latitude_0\": 100, \"longitude_0\": 0, \"latitude_1\": 1,"
                                                  " \"longitude_1\": 0}",
                "latitudes must be");

    /* Holidays by rule; the default year is the clock's (2023 now). */
    struct {
        const char *args, *name, *date;
    } h[] = {
        {"{\"holiday_name\": \"thanksgiving\", \"year\": 2024}", "Thanksgiving Day", "2024-11-28"},
        {"{\"holiday_name\": \"Thanksgiving\"}", "Thanksgiving Day", "2023-11-23"},
        {"{\"holiday_name\": \"memorial day\", \"year\": 2024}", "Memorial Day", "2024-05-27"},
        {"{\"holiday_name\": \"Easter\", \"year\": 2024}", "Easter Sunday", "2024-03-31"},
        {"{\"holiday_name\": \"easter sunday\", \"year\": 2025}", "Easter Sunday", "2025-04-20"},
        {"{\"holiday_name\": \"Christmas\", \"year\": 2024}", "Christmas Day", "2024-12-25"},
        {"{\"holiday_name\": \"mothers day\", \"year\": 2024}", "Mother's Day", "2024-05-12"},
        {"{\"holiday_name\": \"Labour Day\", \"year\": 2024}", "Labor Day", "2024-09-02"},
        {"{\"holiday_name\": \"Martin Luther King Day\", \"year\": 2024}", "Martin Luther King Jr. Day", "2024-01-15"},
    };
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        r = call_ok(sb, "search_holiday", h[i].args);
        if (strcmp(str(r, "name"), h[i].name) || strcmp(str(r, "date"), h[i].date))
            fail_msg("%s: got %s %s, wanted %s %s", h[i].args, str(r, "name"), str(r, "date"), h[i].name, h[i].date);
        json_decref(r);
    }
    call_raises(sb, "search_holiday", "{\"holiday_name\": \"Diwali\"}", "no holiday matches");
}

/* ---- search tools ---------------------------------------------------------------------------- */

static void test_search(void **state) {
    orc_sandbox *sb = *state;
    json_t *r = call_ok(sb, "search_places_around", "{\"category\": \"cafe\"}");
    assert_true(json_array_size(r) >= 1);
    double last = 0;
    for (size_t i = 0; i < json_array_size(r); i++) {
        json_t *p = json_array_get(r, i);
        assert_string_equal(str(p, "category"), "cafe");
        assert_string_equal(str(p, "city"), "Cupertino");
        assert_true(num(p, "distance_km") >= last && num(p, "distance_km") <= 5);
        last = num(p, "distance_km");
    }
    char name[128];
    snprintf(name, sizeof name, "%s", str(json_array_get(r, 0), "name"));
    json_decref(r);
    /* The same place by (lower-cased) name. */
    char args[256], lower[128];
    for (size_t i = 0; i <= strlen(name); i++) lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    snprintf(args, sizeof args, "{\"name\": \"%s\"}", lower);
    r = call_ok(sb, "search_places_by_name", args);
    assert_true(json_array_size(r) >= 1 && json_array_size(r) <= 5);
    assert_string_equal(str(json_array_get(r, 0), "name"), name);
    json_decref(r);
    r = call_ok(sb, "search_places_by_name", "{\"name\": \"zzzz qqqq\"}");
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);
    /* Around a given point (London), with a radius. */
    r = call_ok(sb, "search_places_around", "{\"latitude\": 51.5074, \"longitude\": -0.1278, \"radius_km\": 50}");
    assert_int_equal(json_array_size(r), 10);
    for (size_t i = 0; i < json_array_size(r); i++) assert_string_equal(str(json_array_get(r, i), "city"), "London");
    json_decref(r);
    call_raises(sb, "search_places_around", "{\"radius_km\": 0}", "radius_km");
    call_raises(sb, "search_places_around", "{\"latitude\": 1}", "together");

    r = call_ok(sb, "search_weather", "{}");
    assert_string_equal(str(r, "city"), "Cupertino");
    assert_string_equal(str(r, "date"), "2024-06-03");
    assert_true(num(r, "high_c") > num(r, "low_c"));
    json_decref(r);
    r = call_ok(sb, "search_weather", "{\"days\": 2, \"latitude\": 35.7, \"longitude\": 139.7}");
    assert_string_equal(str(r, "city"), "Tokyo");
    assert_string_equal(str(r, "date"), "2024-06-05");
    json_decref(r);
    call_raises(sb, "search_weather", "{\"days\": 30}", "no forecast");
    call_raises(sb, "search_weather", "{\"days\": -1}", "negative");
    call_raises(sb, "search_weather", "{\"latitude\": 0, \"longitude\": 0}", "no weather station");

    /* A stock by symbol (any case) and by name without " Inc.": the data set's first one. */
    char *text = NULL;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_data_generate(ORC_SANDBOX_DATA_SEED, &text, &err), ORC_OK);
    json_t *data = json_loads(text, 0, NULL);
    free(text);
    json_t *first = json_array_get(json_object_get(data, "stocks"), 0);
    char sym[16], lsym[16];
    snprintf(sym, sizeof sym, "%s", str(first, "symbol"));
    snprintf(name, sizeof name, "%s", str(first, "name"));
    json_decref(data);
    for (size_t i = 0; i <= strlen(sym); i++) lsym[i] = (char)(sym[i] >= 'A' && sym[i] <= 'Z' ? sym[i] + 32 : sym[i]);
    snprintf(args, sizeof args, "{\"query\": \"%s\"}", lsym);
    r = call_ok(sb, "search_stock", args);
    assert_string_equal(str(r, "symbol"), sym);
    json_decref(r);
    assert_non_null(strstr(name, " Inc."));
    snprintf(args, sizeof args, "{\"query\": \"%.*s\"}", (int)(strstr(name, " Inc.") - name), name);
    r = call_ok(sb, "search_stock", args);
    assert_string_equal(str(r, "name"), name);
    assert_true(num(r, "price") > 0);
    json_decref(r);
    call_raises(sb, "search_stock", "{\"query\": \"Banana Republic\"}", "no stock matches");

    r = call_ok(sb, "convert_currency", "{\"amount\": 100, \"from_currency_code\": \"USD\", \"to_currency_code\": \"USD\"}");
    assert_true(num(r, "amount") == 100);
    json_decref(r);
    r = call_ok(sb, "convert_currency", "{\"amount\": 100, \"from_currency_code\": \"EUR\", \"to_currency_code\": \"JPY\"}");
    assert_true(num(r, "amount") > 15000 && num(r, "amount") < 19000);
    assert_string_equal(str(r, "currency"), "JPY");
    json_decref(r);
    call_raises(sb, "convert_currency", "{\"amount\": 1, \"from_currency_code\": \"usd\", \"to_currency_code\": \"EUR\"}",
                "unknown currency code 'usd'");
}

/* A raised exception leaves no trace in the state: no snapshot copied forward. */
static void test_exception_rolls_back(void **state) {
    orc_sandbox *sb = *state;
    orc_log_message m = {.sender = "user", .recipient = "agent", .content = "hi"};
    orc_error err = {0};
    assert_int_equal(orc_sandbox_log_append(sb, &m, NULL, &err), ORC_OK);
    call_raises(sb, "remove_contact", "{\"person_id\": \"nope\"}", "no contact");
    call_raises(sb, "set_wifi_status", "{\"on\": true}", "already on");
    int64_t key;
    assert_int_equal(orc_sandbox_snapshot_key(sb, "contacts", -1, &key, &err), ORC_OK);
    assert_int_equal(key, 0);
    assert_int_equal(orc_sandbox_snapshot_key(sb, "settings", -1, &key, &err), ORC_OK);
    assert_int_equal(key, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_contacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messaging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reminders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_low_battery_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependencies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utilities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exception_rolls_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
