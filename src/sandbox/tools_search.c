/* Search tools over the offline data set: places by name, places around a
 * point, the weather forecast, stock quotes and currency conversion. They
 * stand for web services, so each needs wifi; a search around "here" also
 * needs location service. Names match fuzzily, codes and categories exactly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandbox_internal.h"

#define MAX_BY_NAME 5
#define MAX_AROUND 10
#define DEFAULT_RADIUS_KM 5.0
#define MAX_RADIUS_KM 50.0
#define WEATHER_RANGE_KM 100.0

static int need_wifi(orc_sandbox *sb, const char *tool, sb_exc *e) {
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return -1;
    if (!s.wifi) {
        sb_raise(e, "%s: wifi is off; it must be on to search the web", tool);
        return -1;
    }
    return 0;
}

/* The point a search is about: the given latitude and longitude, or the
 * current location (which needs location service). */
static int search_point(orc_sandbox *sb, json_t *args, const char *tool, double *lat, double *lon, sb_exc *e) {
    if (sb_has(args, "latitude") != sb_has(args, "longitude")) {
        sb_raise(e, "%s: give latitude and longitude together, or neither for the current location", tool);
        return -1;
    }
    if (sb_has(args, "latitude")) {
        *lat = sb_num(args, "latitude", 0);
        *lon = sb_num(args, "longitude", 0);
        if (fabs(*lat) > 90 || fabs(*lon) > 180) {
            sb_raise(e, "%s: latitude must be in [-90, 90] and longitude in [-180, 180]", tool);
            return -1;
        }
        return 0;
    }
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return -1;
    if (!s.location_service) {
        sb_raise(e, "%s: location service is off; turn it on or give latitude and longitude", tool);
        return -1;
    }
    *lat = s.latitude;
    *lon = s.longitude;
    return 0;
}

static json_t *data(orc_sandbox *sb, const char *key) { return json_object_get(sb->data, key); }

static json_t *first_n(json_t *arr, size_t n) {
    while (json_array_size(arr) > n) json_array_remove(arr, json_array_size(arr) - 1);
    return arr;
}

static json_t *search_places_by_name(orc_sandbox *sb, json_t *args, sb_exc *e) {
    if (need_wifi(sb, "search_places_by_name", e)) return NULL;
    static const sb_filter F[] = {{"name", "name", SB_FUZZY}};
    json_t *out = sb_filter_rows(data(sb, "places"), args, F, 1);
    return out ? first_n(out, MAX_BY_NAME) : sb_internal(e, NULL, "search");
}

static json_t *search_places_around(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *tool = "search_places_around";
    double lat, lon;
    if (need_wifi(sb, tool, e) || search_point(sb, args, tool, &lat, &lon, e)) return NULL;
    double radius = sb_num(args, "radius_km", DEFAULT_RADIUS_KM);
    if (!(radius > 0 && radius <= MAX_RADIUS_KM))
        return sb_raise(e, "%s: radius_km %g is not in (0, %g]", tool, radius, MAX_RADIUS_KM);
    static const sb_filter F[] = {{"category", "category", SB_EXACT}, {"name", "name", SB_FUZZY}};
    json_t *hits = sb_filter_rows(data(sb, "places"), args, F, 2);
    if (!hits) return sb_internal(e, NULL, "search");
    json_t *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(hits, i, p) {
        double d = sb_haversine_km(lat, lon, json_number_value(json_object_get(p, "latitude")),
                                   json_number_value(json_object_get(p, "longitude")));
        if (d > radius) continue;
        json_t *row = json_deep_copy(p);
        json_object_set_new(row, "distance_km", json_real(round(d * 1000) / 1000));
        /* Insert sorted by distance; equal distances keep data order. */
        size_t j = json_array_size(out);
        while (j > 0 && json_number_value(json_object_get(json_array_get(out, j - 1), "distance_km")) >
                            json_number_value(json_object_get(row, "distance_km")))
            j--;
        json_array_insert_new(out, j, row);
    }
    json_decref(hits);
    return first_n(out, MAX_AROUND);
}

static json_t *search_weather(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *tool = "search_weather";
    double lat, lon;
    if (need_wifi(sb, tool, e) || search_point(sb, args, tool, &lat, &lon, e)) return NULL;
    json_int_t days = sb_has(args, "days") ? json_integer_value(json_object_get(args, "days")) : 0;
    if (days < 0) return sb_raise(e, "%s: days %lld is negative; forecasts only look ahead", tool, (long long)days);
    const char *city = NULL;
    double best = WEATHER_RANGE_KM;
    size_t i;
    json_t *c;
    json_array_foreach(data(sb, "cities"), i, c) {
        double d = sb_haversine_km(lat, lon, json_number_value(json_object_get(c, "latitude")),
                                   json_number_value(json_object_get(c, "longitude")));
        if (d <= best) {
            best = d;
            city = json_string_value(json_object_get(c, "name"));
        }
    }
    if (!city) return sb_raise(e, "%s: no weather station within %g km of %g, %g", tool, WEATHER_RANGE_KM, lat, lon);
    int64_t y;
    int m, d;
    sb_civil_from_days((int64_t)floor(sb->clock / 86400) + days, &y, &m, &d);
    char date[32];
    snprintf(date, sizeof date, "%04lld-%02d-%02d", (long long)y, m, d);
    json_t *w;
    json_array_foreach(data(sb, "weather"), i, w) {
        if (strcmp(json_string_value(json_object_get(w, "city")), city) == 0 &&
            strcmp(json_string_value(json_object_get(w, "date")), date) == 0)
            return json_incref(w);
    }
    return sb_raise(e, "%s: no forecast for %s on %s (the data set covers %d days from %s)", tool, city, date,
                    (int)json_integer_value(json_object_get(sb->data, "weather_days")),
                    json_string_value(json_object_get(sb->data, "weather_start")));
}

static json_t *search_stock(orc_sandbox *sb, json_t *args, sb_exc *e) {
    if (need_wifi(sb, "search_stock", e)) return NULL;
    const char *q = sb_str(args, "query");
    size_t i;
    json_t *s, *best = NULL;
    double best_score = 0;
    json_array_foreach(data(sb, "stocks"), i, s) {
        if (strcasecmp(json_string_value(json_object_get(s, "symbol")), q) == 0) return json_incref(s);
        double score = orc_sandbox_similarity(q, json_string_value(json_object_get(s, "name")));
        if (score > best_score) {
            best_score = score;
            best = s;
        }
    }
    if (!best || best_score < ORC_SANDBOX_FUZZY_MIN)
        return sb_raise(e, "search_stock: no stock matches '%s' by symbol or company name", q);
    return json_incref(best);
}

static double rate_of(orc_sandbox *sb, const char *code) {
    size_t i;
    json_t *c;
    json_array_foreach(data(sb, "currencies"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "code")), code) == 0)
            return json_number_value(json_object_get(c, "per_usd"));
    }
    return 0;
}

static json_t *convert_currency(orc_sandbox *sb, json_t *args, sb_exc *e) {
    if (need_wifi(sb, "convert_currency", e)) return NULL;
    const char *from = sb_str(args, "from_currency_code"), *to = sb_str(args, "to_currency_code");
    double a = rate_of(sb, from), b = rate_of(sb, to);
    if (a <= 0) return sb_raise(e, "convert_currency: unknown currency code '%s' (ISO 4217, e.g. USD)", from);
    if (b <= 0) return sb_raise(e, "convert_currency: unknown currency code '%s' (ISO 4217, e.g. USD)", to);
    double amount = sb_num(args, "amount", 0) / a * b;
    return json_pack("{s:f, s:s}", "amount", round(amount * 100) / 100, "currency", to);
}

static const sb_arg BY_NAME[] = {{"name", "string", "Name of the place; matched fuzzily.", 1},
                                 {NULL, NULL, NULL, 0}};
static const sb_arg AROUND[] = {
    {"latitude", "number", "Latitude of the centre (with longitude); default: the current location.", 0},
    {"longitude", "number", "Longitude of the centre (with latitude); default: the current location.", 0},
    {"category", "string",
     "Exact category: cafe, restaurant, grocery, pharmacy, park, museum, gym, bookstore, bakery, gas_station, "
     "library, hospital, bank, hotel.",
     0},
    {"name", "string", "Name of the place; matched fuzzily.", 0},
    {"radius_km", "number", "Search radius in kilometers (default 5, at most 50).", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg WEATHER[] = {
    {"latitude", "number", "Latitude (with longitude); default: the current location.", 0},
    {"longitude", "number", "Longitude (with latitude); default: the current location.", 0},
    {"days", "integer", "Days from today: 0 today (default), 1 tomorrow, ...", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg STOCK[] = {{"query", "string", "Ticker symbol or company name.", 1}, {NULL, NULL, NULL, 0}};
static const sb_arg CURRENCY[] = {{"amount", "number", "Amount of money to convert.", 1},
                                  {"from_currency_code", "string", "ISO 4217 code of its currency, e.g. USD.", 1},
                                  {"to_currency_code", "string", "ISO 4217 code of the currency wanted, e.g. EUR.", 1},
                                  {NULL, NULL, NULL, 0}};

const sb_tool sb_search_tools[] = {
    {"search_places_by_name", "Find places (shops, restaurants, parks, ...) by name. Needs wifi. Returns a list.",
     BY_NAME, search_places_by_name},
    {"search_places_around",
     "Find places within a radius of a point, nearest first, optionally by category or name. Needs wifi (and "
     "location service when no point is given). Returns a list with distance_km.",
     AROUND, search_places_around},
    {"search_weather", "Weather forecast for a day near a point. Needs wifi (and location service when no point is "
                       "given).",
     WEATHER, search_weather},
    {"search_stock", "Latest quote of a stock by ticker symbol or company name. Needs wifi.", STOCK, search_stock},
    {"convert_currency", "Convert an amount of money between currencies at the latest rate. Needs wifi.", CURRENCY,
     convert_currency},
    {NULL, NULL, NULL, NULL}};
