/* The offline data set behind the search tools, generated from a seed:
 * twelve real cities (names and centre coordinates are fixed), and around
 * them invented places, three weeks of daily weather, invented listed
 * companies with quotes, and currency rates (fixed reference rates with a
 * seeded jitter). Only the seeded Philox stream and exact IEEE arithmetic
 * (no libm transcendental calls) feed the numbers, and each record is printed
 * as one compact JSON line, so a seed gives the same bytes on every run; the
 * shipped data/sandbox/world.json is ORC_SANDBOX_DATA_SEED's output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/rng.h"
#include "sandbox_internal.h"

#define PLACES_PER_CITY 20
#define WEATHER_DAYS 21
#define WEATHER_START "2024-06-01"
#define N_STOCKS 30

static const struct {
    const char *name, *country;
    double lat, lon, june_high_c;
} CITIES[] = {
    {"Cupertino", "US", 37.3230, -122.0322, 26}, {"San Francisco", "US", 37.7749, -122.4194, 19},
    {"New York", "US", 40.7128, -74.0060, 26},   {"Chicago", "US", 41.8781, -87.6298, 26},
    {"Seattle", "US", 47.6062, -122.3321, 21},   {"Austin", "US", 30.2672, -97.7431, 34},
    {"London", "GB", 51.5074, -0.1278, 21},      {"Paris", "FR", 48.8566, 2.3522, 23},
    {"Berlin", "DE", 52.5200, 13.4050, 23},      {"Tokyo", "JP", 35.6762, 139.6503, 26},
    {"Sydney", "AU", -33.8688, 151.2093, 17},    {"Toronto", "CA", 43.6532, -79.3832, 24},
};
#define N_CITIES ((int)(sizeof CITIES / sizeof CITIES[0]))

static const char *FIRST[] = {"Blue",   "Golden", "Maple",  "Cedar", "Harbor", "Sunny",   "Oak",
                              "Silver", "Red",    "Willow", "Pine",  "River",  "Summit",  "Lotus",
                              "Copper", "Ivy",    "Juniper", "Meadow", "Granite", "Orchard"};
static const char *SECOND[] = {"Fern",  "Lantern", "Bridge", "Sparrow", "Grove", "Hill",  "Stone", "Leaf",
                               "Valley", "Garden", "Bay",    "Crest",   "Field", "Brook", "Spring", "Peak"};
static const struct {
    const char *category, *word;
} KINDS[] = {
    {"cafe", "Cafe"},         {"cafe", "Coffee"},       {"restaurant", "Kitchen"}, {"restaurant", "Bistro"},
    {"restaurant", "Grill"},  {"grocery", "Market"},    {"pharmacy", "Pharmacy"},  {"park", "Park"},
    {"museum", "Museum"},     {"gym", "Fitness"},       {"bookstore", "Books"},    {"bakery", "Bakery"},
    {"gas_station", "Fuel"},  {"library", "Library"},   {"hospital", "Medical Center"},
    {"bank", "Bank"},         {"hotel", "Hotel"},
};
static const char *STREETS[] = {"Main", "Elm", "Park", "Lake", "Hill", "Market", "Church", "Mill", "Bay",
                                "Sunset", "Ocean", "College", "Union", "Cedar", "Spring", "Highland"};
static const char *STREET_KINDS[] = {"St", "Ave", "Blvd", "Rd"};
static const char *CONDITIONS[] = {"sunny", "partly cloudy", "cloudy", "light rain",
                                   "rain",  "thunderstorms", "fog",    "windy"};
static const char *COMPANY_A[] = {"Nimbus", "Vertex", "Quanta", "Lumen",   "Apex",    "Helix",   "Orbit",
                                  "Nova",   "Zenith", "Cobalt", "Aurora",  "Pioneer", "Atlas",   "Beacon",
                                  "Cascade", "Ember", "Falcon", "Tidewater", "Keystone", "Meridian"};
static const char *COMPANY_B[] = {"Robotics", "Foods",  "Energy", "Systems", "Health",         "Motors",
                                  "Labs",     "Networks", "Airlines", "Financial", "Retail", "Pharma",
                                  "Media",    "Semiconductors"};
static const struct {
    const char *code, *name;
    double per_usd;
} CURRENCIES[] = {
    {"USD", "US dollar", 1},          {"EUR", "euro", 0.92},
    {"GBP", "pound sterling", 0.79},  {"JPY", "Japanese yen", 156.5},
    {"CNY", "Chinese yuan", 7.24},    {"CAD", "Canadian dollar", 1.37},
    {"AUD", "Australian dollar", 1.51}, {"CHF", "Swiss franc", 0.90},
    {"INR", "Indian rupee", 83.4},    {"MXN", "Mexican peso", 17.0},
    {"BRL", "Brazilian real", 5.15},  {"KRW", "South Korean won", 1365},
    {"SEK", "Swedish krona", 10.6},   {"NZD", "New Zealand dollar", 1.64},
    {"SGD", "Singapore dollar", 1.35},
};
#define COUNT(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))

static double uniform(orc_rng *r, double lo, double hi) { return lo + (hi - lo) * (double)orc_rng_uniform(r); }
static double round_to(double x, double scale) { return round(x * scale) / scale; }
static const char *pick(orc_rng *r, const char *const *a, uint32_t n) { return a[orc_rng_below(r, n)]; }

/* Growing output text. */
typedef struct text {
    char *p;
    size_t n, cap;
    int failed;
} text;

static void put(text *t, const char *s) {
    size_t k = strlen(s);
    if (t->failed) return;
    if (t->n + k + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 1 << 16) + k;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, k + 1);
    t->n += k;
}

/* Append records as one compact line each, then decref them. */
static void put_array(text *t, const char *key, json_t *arr, int last) {
    put(t, " \"");
    put(t, key);
    put(t, "\": [\n");
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        if (!s) {
            t->failed = 1;
            break;
        }
        put(t, "  ");
        put(t, s);
        put(t, i + 1 < json_array_size(arr) ? ",\n" : "\n");
        free(s);
    }
    put(t, last ? " ]\n" : " ],\n");
    json_decref(arr);
}

static int name_taken(json_t *places, const char *name) {
    size_t i;
    json_t *p;
    json_array_foreach(places, i, p) {
        if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0) return 1;
    }
    return 0;
}

static json_t *gen_places(orc_rng *r) {
    json_t *places = json_array();
    char name[128], addr[160];
    for (int c = 0; c < N_CITIES; c++) {
        for (int k = 0; k < PLACES_PER_CITY; k++) {
            uint32_t kind;
            do {
                /* Every kind (so every category) once per city, then random ones. */
                kind = k < (int)COUNT(KINDS) ? (uint32_t)k : orc_rng_below(r, COUNT(KINDS));
                snprintf(name, sizeof name, "%s %s %s", pick(r, FIRST, COUNT(FIRST)), pick(r, SECOND, COUNT(SECOND)),
                         KINDS[kind].word);
            } while (name_taken(places, name));
            snprintf(addr, sizeof addr, "%u %s %s, %s", 1 + orc_rng_below(r, 2400), pick(r, STREETS, COUNT(STREETS)),
                     pick(r, STREET_KINDS, COUNT(STREET_KINDS)), CITIES[c].name);
            /* Within about 3 km of the centre: +-0.03 degrees of latitude, +-0.04 of longitude. */
            double lat = round_to(CITIES[c].lat + uniform(r, -0.03, 0.03), 1e6);
            double lon = round_to(CITIES[c].lon + uniform(r, -0.04, 0.04), 1e6);
            json_array_append_new(places, json_pack("{s:s, s:s, s:s, s:s, s:f, s:f}", "name", name, "category",
                                                    KINDS[kind].category, "address", addr, "city", CITIES[c].name,
                                                    "latitude", lat, "longitude", lon));
        }
    }
    return places;
}

static json_t *gen_weather(orc_rng *r) {
    json_t *out = json_array();
    int64_t start = sb_days_from_civil(2024, 6, 1);
    for (int c = 0; c < N_CITIES; c++) {
        for (int d = 0; d < WEATHER_DAYS; d++) {
            int64_t y;
            int m, dd;
            sb_civil_from_days(start + d, &y, &m, &dd);
            char date[16];
            snprintf(date, sizeof date, "%04d-%02d-%02d", (int)y, m, dd);
            double high = round_to(CITIES[c].june_high_c + uniform(r, -4, 4), 10);
            double low = round_to(high - uniform(r, 6, 12), 10);
            const char *cond = pick(r, CONDITIONS, COUNT(CONDITIONS));
            json_array_append_new(
                out, json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:f, s:i}", "city", CITIES[c].name, "date", date,
                               "condition", cond, "high_c", high, "low_c", low, "humidity_percent",
                               30 + (int)orc_rng_below(r, 61), "wind_kph", round_to(uniform(r, 0, 35), 10),
                               "precipitation_chance_percent", (int)orc_rng_below(r, 101)));
        }
    }
    return out;
}

static int symbol_taken(json_t *stocks, const char *sym) {
    size_t i;
    json_t *s;
    json_array_foreach(stocks, i, s) {
        if (strcmp(json_string_value(json_object_get(s, "symbol")), sym) == 0) return 1;
    }
    return 0;
}

static json_t *gen_stocks(orc_rng *r) {
    json_t *out = json_array();
    char name[96], sym[8];
    for (int i = 0; i < N_STOCKS; i++) {
        const char *a, *b;
        do {
            a = pick(r, COMPANY_A, COUNT(COMPANY_A));
            b = pick(r, COMPANY_B, COUNT(COMPANY_B));
            snprintf(name, sizeof name, "%s %s Inc.", a, b);
        } while (name_taken(out, name));
        /* Ticker: three letters of the first word and one of the second, then a letter that makes it unique. */
        snprintf(sym, sizeof sym, "%.3s%c", a, b[0]);
        for (char *p = sym; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
        for (char extra = 'A'; symbol_taken(out, sym) && extra <= 'Z'; extra++) sym[4] = extra, sym[5] = 0;
        double price = round_to(uniform(r, 5, 500), 100);
        json_array_append_new(out, json_pack("{s:s, s:s, s:f, s:f, s:s}", "symbol", sym, "name", name, "price",
                                             price, "change_percent", round_to(uniform(r, -5, 5), 100), "currency",
                                             "USD"));
    }
    return out;
}

static json_t *gen_currencies(orc_rng *r) {
    json_t *out = json_array();
    for (uint32_t i = 0; i < COUNT(CURRENCIES); i++) {
        double rate = CURRENCIES[i].per_usd;
        if (i > 0) rate = rate * uniform(r, 0.985, 1.015);
        rate = rate >= 100 ? round_to(rate, 100) : round_to(rate, 1e4);
        json_array_append_new(out, json_pack("{s:s, s:s, s:f}", "code", CURRENCIES[i].code, "name",
                                             CURRENCIES[i].name, "per_usd", rate));
    }
    return out;
}

static json_t *gen_cities(void) {
    json_t *out = json_array();
    for (int c = 0; c < N_CITIES; c++)
        json_array_append_new(out, json_pack("{s:s, s:s, s:f, s:f}", "name", CITIES[c].name, "country",
                                             CITIES[c].country, "latitude", CITIES[c].lat, "longitude",
                                             CITIES[c].lon));
    return out;
}

orc_status orc_sandbox_data_generate(uint64_t seed, char **json_text, orc_error *err) {
    *json_text = NULL;
    orc_rng r;
    orc_rng_init(&r, seed);
    text t = {0};
    char head[256];
    snprintf(head, sizeof head,
             "{\n \"generator\": \"orchard sandbox gen-data --seed %llu\",\n \"seed\": %llu,\n"
             " \"weather_start\": \"" WEATHER_START "\",\n \"weather_days\": %d,\n",
             (unsigned long long)seed, (unsigned long long)seed, WEATHER_DAYS);
    put(&t, head);
    /* Generation order is part of the format: each part draws from the one stream in turn. */
    put_array(&t, "cities", gen_cities(), 0);
    put_array(&t, "places", gen_places(&r), 0);
    put_array(&t, "weather", gen_weather(&r), 0);
    put_array(&t, "stocks", gen_stocks(&r), 0);
    put_array(&t, "currencies", gen_currencies(&r), 1);
    put(&t, "}\n");
    if (t.failed) {
        free(t.p);
        return orc_error_set(err, ORC_ENOMEM, "sandbox data: out of memory");
    }
    *json_text = t.p;
    return ORC_OK;
}
