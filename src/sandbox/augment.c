/* Scenario augmentations (the paper's 8 variants): which tools the agent is
 * offered and how their schemas read. A variant adds 0, 3, 10 or all
 * distraction tools (tools the scenario does not need and does not deny) to
 * the needed ones, or takes the 3-distractor list and scrambles it: tool names
 * replaced by uninformative tool_NN, tool descriptions removed, argument
 * descriptions removed, argument types removed. The choice is a seeded
 * shuffle (ORC_SB_AUGMENT_SEED mixed with the scenario's name), so runs are
 * reproducible and the 3 distractors are the first 3 of the 10. Each variant
 * keeps a map from offered names back to the real tools, which the execution
 * environment and the scripted agent go through; nothing else in the sandbox
 * sees an offered name. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "play_internal.h"

static const char *const NAMES[ORC_SB_AUGMENTATIONS] = {
    "distraction_0",       "distraction_3",        "distraction_10",           "all_tools",
    "tool_name_scrambled", "tool_description_scrambled", "arg_description_scrambled", "arg_type_scrambled",
};
enum { D0, D3, D10, ALL, NAME_SCRAMBLED, DESC_SCRAMBLED, ARG_DESC_SCRAMBLED, ARG_TYPE_SCRAMBLED };

const char *orc_sb_augmentation_name(int i) { return i >= 0 && i < ORC_SB_AUGMENTATIONS ? NAMES[i] : NULL; }

int orc_sb_augmentation_index(const char *name) {
    for (int i = 0; name && i < ORC_SB_AUGMENTATIONS; i++)
        if (strcmp(NAMES[i], name) == 0) return i;
    return -1;
}

int orc_sb_augmentations_parse(const char *spec, int *which, orc_error *err) {
    if (!spec || strcmp(spec, "all") == 0) {
        for (int i = 0; i < ORC_SB_AUGMENTATIONS; i++) which[i] = i;
        return ORC_SB_AUGMENTATIONS;
    }
    int n = 0, seen[ORC_SB_AUGMENTATIONS] = {0};
    const char *p = spec;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
        int a = orc_sb_augmentation_index(name);
        if (a < 0 || len >= sizeof name) {
            orc_error_set(err, ORC_EINVAL,
                          "unknown augmentation '%s' (all, or a comma-separated list of distraction_0, "
                          "distraction_3, distraction_10, all_tools, tool_name_scrambled, "
                          "tool_description_scrambled, arg_description_scrambled, arg_type_scrambled)",
                          name);
            return -1;
        }
        if (!seen[a]) which[n++] = a;
        seen[a] = 1;
        if (!end) break;
        p = end + 1;
    }
    return n;
}

/* splitmix64: the shuffle's generator. */
static uint64_t next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* FNV-1a of the scenario's name, mixed with the seed and a stream number. */
static uint64_t seed_for(const char *name, uint64_t stream) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *c = name ? name : ""; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    return h ^ ((uint64_t)ORC_SB_AUGMENT_SEED << 32) ^ stream;
}

/* A seeded Fisher-Yates permutation of 0..n-1. */
static void shuffle(int *p, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(next(&seed) % (uint64_t)(i + 1));
        int t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static int in_names(json_t *names, const char *name) {
    size_t i;
    json_t *s;
    json_array_foreach(names, i, s) if (strcmp(json_string_value(s), name) == 0) return 1;
    return 0;
}

/* Remove `key` from every argument property of a schema. */
static void strip_args(json_t *schema, const char *key) {
    json_t *props = json_object_get(json_object_get(json_object_get(schema, "function"), "parameters"), "properties");
    const char *k;
    json_t *p;
    json_object_foreach(props, k, p) json_object_del(p, key);
}

int sb_scenario_apply(orc_sb_scenario *sc, int a, orc_error *err) {
    int n_pool = (int)json_array_size(sc->pool);
    int want = a == D0 ? 0 : a == D10 ? 10 : a == ALL ? n_pool : 3;
    if (want > n_pool) want = n_pool;
    int *perm = calloc((size_t)n_pool + 1, sizeof *perm);
    json_t *chosen = json_array(), *tools = json_array(), *map = json_object();
    if (!perm || !chosen || !tools || !map) {
        free(perm);
        json_decref(chosen);
        json_decref(tools);
        json_decref(map);
        return orc_error_set(err, ORC_ENOMEM, "scenario %s: out of memory", sc->name), -1;
    }
    shuffle(perm, n_pool, seed_for(sc->name, 1));
    for (int i = 0; i < want; i++) json_array_append(chosen, json_array_get(sc->pool, (size_t)perm[i]));
    free(perm);
    /* The offered list keeps the registry's order, so where a distractor sits
     * says nothing about it. */
    int n_tools = orc_sandbox_tool_count(), n_offered = 0;
    for (int t = 0; t < n_tools; t++) {
        const char *name = orc_sandbox_tool_name(t);
        n_offered += in_names(sc->needed, name) || in_names(chosen, name);
    }
    int *numbers = calloc((size_t)n_offered + 1, sizeof *numbers);
    if (!numbers) {
        json_decref(chosen);
        json_decref(tools);
        json_decref(map);
        return orc_error_set(err, ORC_ENOMEM, "scenario %s: out of memory", sc->name), -1;
    }
    shuffle(numbers, n_offered, seed_for(sc->name, 2));
    for (int t = 0, k = 0; t < n_tools; t++) {
        const char *name = orc_sandbox_tool_name(t);
        if (!in_names(sc->needed, name) && !in_names(chosen, name)) continue;
        json_t *schema = orc_sandbox_tool_schema(t), *fn = json_object_get(schema, "function");
        char offered[32];
        snprintf(offered, sizeof offered, "tool_%02d", numbers[k++] + 1);
        if (a == NAME_SCRAMBLED) json_object_set_new(fn, "name", json_string(offered));
        if (a == DESC_SCRAMBLED) json_object_del(fn, "description");
        if (a == ARG_DESC_SCRAMBLED) strip_args(schema, "description");
        if (a == ARG_TYPE_SCRAMBLED) strip_args(schema, "type");
        json_object_set_new(map, json_string_value(json_object_get(fn, "name")), json_string(name));
        json_array_append_new(tools, schema);
    }
    free(numbers);
    json_decref(chosen);
    json_decref(sc->tools);
    json_decref(sc->name_map);
    sc->tools = tools;
    sc->name_map = map;
    sc->augmentation = NAMES[a];
    return 0;
}

orc_status orc_sb_scenario_augment(orc_sb_scenario *sc, const char *name, orc_error *err) {
    int a = name ? orc_sb_augmentation_index(name) : D0;
    if (a < 0)
        return orc_error_set(err, ORC_EINVAL, "scenario %s: unknown augmentation '%s'", sc->name, name);
    return sb_scenario_apply(sc, a, err) == 0 ? ORC_OK : err->code;
}

const char *orc_sb_scenario_augmentation(const orc_sb_scenario *sc) { return sc->augmentation; }
json_t *orc_sb_scenario_tools(const orc_sb_scenario *sc) { return sc->tools; }

const char *orc_sb_scenario_real_tool(const orc_sb_scenario *sc, const char *offered) {
    return offered ? json_string_value(json_object_get(sc->name_map, offered)) : NULL;
}

const char *orc_sb_scenario_offered_tool(const orc_sb_scenario *sc, const char *real) {
    const char *k;
    json_t *v;
    json_object_foreach(sc->name_map, k, v) if (real && strcmp(json_string_value(v), real) == 0) return k;
    return NULL;
}
