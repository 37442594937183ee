/* The offline data set: regenerating it with the shipped seed reproduces
 * data/sandbox/world.json byte for byte, a generation is deterministic and
 * depends on the seed, every city has a place of every category and three
 * weeks of weather, and a sandbox reading the shipped file answers exactly
 * like one using the generated data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/sandbox.h"

static char g_path[1024];

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    buf[*n] = 0;
    fclose(f);
    return buf;
}

static char *generate(uint64_t seed) {
    char *text = NULL;
    orc_error err = {0};
    if (orc_sandbox_data_generate(seed, &text, &err) != ORC_OK) fail_msg("generate: %s", err.msg);
    return text;
}

static void test_shipped_bytes(void **state) {
    (void)state;
    size_t n = 0;
    char *shipped = read_all(g_path, &n);
    if (!shipped) fail_msg("cannot read %s", g_path);
    char *text = generate(ORC_SANDBOX_DATA_SEED);
    if (strlen(text) != n || memcmp(text, shipped, n) != 0)
        fail_msg("%s differs from `orchard sandbox gen-data` (seed %u); regenerate it with "
                 "orchard sandbox gen-data --out data/sandbox/world.json",
                 g_path, ORC_SANDBOX_DATA_SEED);
    free(text);
    free(shipped);
}

static void test_deterministic(void **state) {
    (void)state;
    char *a = generate(123), *b = generate(123), *c = generate(124);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    free(a);
    free(b);
    free(c);
}

static void test_coverage(void **state) {
    (void)state;
    char *text = generate(ORC_SANDBOX_DATA_SEED);
    json_t *d = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(d);
    const char *cats[] = {"cafe", "restaurant", "grocery", "pharmacy", "park", "museum", "gym",
                          "bookstore", "bakery", "gas_station", "library", "hospital", "bank", "hotel"};
    size_t i;
    json_t *city;
    json_array_foreach(json_object_get(d, "cities"), i, city) {
        const char *name = json_string_value(json_object_get(city, "name"));
        for (size_t c = 0; c < sizeof cats / sizeof cats[0]; c++) {
            int found = 0;
            size_t k;
            json_t *p;
            json_array_foreach(json_object_get(d, "places"), k, p) {
                found |= !strcmp(json_string_value(json_object_get(p, "city")), name) &&
                         !strcmp(json_string_value(json_object_get(p, "category")), cats[c]);
            }
            if (!found) fail_msg("%s has no %s", name, cats[c]);
        }
        int days = 0;
        size_t k;
        json_t *w;
        json_array_foreach(json_object_get(d, "weather"), k, w) days +=
            !strcmp(json_string_value(json_object_get(w, "city")), name);
        assert_int_equal(days, json_integer_value(json_object_get(d, "weather_days")));
    }
    assert_true(json_array_size(json_object_get(d, "stocks")) >= 20);
    assert_true(json_array_size(json_object_get(d, "currencies")) >= 10);
    json_decref(d);
}

static void test_file_equals_generated(void **state) {
    (void)state;
    orc_error err = {0};
    orc_sandbox_opts o = {.data_path = g_path};
    orc_sandbox *a = orc_sandbox_open(NULL, &err), *b = orc_sandbox_open(&o, &err);
    assert_non_null(a);
    assert_non_null(b);
    const char *calls[][2] = {{"search_places_around", "{\"radius_km\": 50}"},
                              {"search_weather", "{\"days\": 3}"},
                              {"convert_currency", "{\"amount\": 7, \"from_currency_code\": \"GBP\", \"to_currency_code\": \"SEK\"}"}};
    for (int i = 0; i < 3; i++) {
        orc_tool_result ra, rb;
        assert_int_equal(orc_sandbox_invoke(a, calls[i][0], calls[i][1], &ra, &err), ORC_OK);
        assert_int_equal(orc_sandbox_invoke(b, calls[i][0], calls[i][1], &rb, &err), ORC_OK);
        assert_non_null(ra.result);
        assert_string_equal(ra.result, rb.result);
        orc_tool_result_free(&ra);
        orc_tool_result_free(&rb);
    }
    orc_sandbox_close(a);
    orc_sandbox_close(b);
}

int main(void) {
    const char *src = getenv("ORCHARD_SOURCE_DIR");
    snprintf(g_path, sizeof g_path, "%s/data/sandbox/world.json", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_bytes),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_coverage),
        cmocka_unit_test(test_file_equals_generated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
