/* Utility tools that need no network: the sandbox clock, date arithmetic,
 * timestamp <-> calendar fields (UTC, proleptic Gregorian), unit conversion,
 * great-circle distance (haversine on a 6371 km sphere) and holiday dates
 * computed by rule. Holiday names match fuzzily. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sandbox_internal.h"

#define EARTH_RADIUS_KM 6371.0

double sb_haversine_km(double lat0, double lon0, double lat1, double lon1) {
    const double r = M_PI / 180.0;
    double dlat = (lat1 - lat0) * r, dlon = (lon1 - lon0) * r;
    double a = sin(dlat / 2) * sin(dlat / 2) + cos(lat0 * r) * cos(lat1 * r) * sin(dlon / 2) * sin(dlon / 2);
    return 2 * EARTH_RADIUS_KM * asin(sqrt(a < 1 ? a : 1));
}

/* Howard Hinnant's civil-date algorithms (days relative to 1970-01-01). */
int64_t sb_days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void sb_civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int isoweekday(int64_t days) { return (int)(((days % 7) + 7 + 3) % 7) + 1; }

static int days_in_month(int64_t y, int m) {
    static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 ? 28 + leap : n[m - 1];
}

/* Timestamps beyond +-1e12 s (about 31,000 years) are refused. */
static int check_ts(double t, const char *tool, const char *arg, sb_exc *e) {
    if (!isfinite(t) || fabs(t) > 1e12) {
        sb_raise(e, "%s: %s %g is out of range (|t| <= 1e12)", tool, arg, t);
        return -1;
    }
    return 0;
}

static json_t *ts_result(double t) { return json_pack("{s:f}", "timestamp", t); }

static json_t *get_current_timestamp(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)args;
    (void)e;
    return ts_result(sb->clock);
}

static json_t *shift_timestamp(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    double t = sb_num(args, "timestamp", 0);
    t += sb_num(args, "weeks", 0) * 604800 + sb_num(args, "days", 0) * 86400 + sb_num(args, "hours", 0) * 3600 +
         sb_num(args, "minutes", 0) * 60 + sb_num(args, "seconds", 0);
    if (check_ts(t, "shift_timestamp", "the result", e)) return NULL;
    return ts_result(t);
}

static json_t *timestamp_diff(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    double d = sb_num(args, "timestamp_1", 0) - sb_num(args, "timestamp_0", 0);
    if (check_ts(d, "timestamp_diff", "the difference", e)) return NULL;
    double days = floor(d / 86400);
    return json_pack("{s:I, s:f}", "days", (json_int_t)days, "seconds", d - days * 86400);
}

static json_t *timestamp_to_datetime_info(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    double t = sb_num(args, "timestamp", 0);
    if (check_ts(t, "timestamp_to_datetime_info", "timestamp", e)) return NULL;
    double days = floor(t / 86400), rem = t - days * 86400;
    int64_t y;
    int m, d;
    sb_civil_from_days((int64_t)days, &y, &m, &d);
    int hour = (int)(rem / 3600), minute = (int)((rem - hour * 3600) / 60);
    double second = rem - hour * 3600 - minute * 60;
    json_t *out = json_pack("{s:I, s:i, s:i, s:i, s:i}", "year", (json_int_t)y, "month", m, "day", d, "hour", hour,
                            "minute", minute);
    json_object_set_new(out, "second", second == floor(second) ? json_integer((json_int_t)second) : json_real(second));
    json_object_set_new(out, "isoweekday", json_integer(isoweekday((int64_t)days)));
    return out;
}

static json_t *datetime_info_to_timestamp(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    json_int_t y = json_integer_value(json_object_get(args, "year"));
    json_int_t m = json_integer_value(json_object_get(args, "month"));
    json_int_t d = json_integer_value(json_object_get(args, "day"));
    json_int_t h = json_integer_value(json_object_get(args, "hour"));
    json_int_t mi = json_integer_value(json_object_get(args, "minute"));
    double s = sb_num(args, "second", 0);
    const char *tool = "datetime_info_to_timestamp";
    if (y < 1 || y > 9999) return sb_raise(e, "%s: year %lld is not in [1, 9999]", tool, (long long)y);
    if (m < 1 || m > 12) return sb_raise(e, "%s: month %lld is not in [1, 12]", tool, (long long)m);
    if (d < 1 || d > days_in_month(y, (int)m))
        return sb_raise(e, "%s: day %lld is not in [1, %d] for %lld-%02lld", tool, (long long)d,
                        days_in_month(y, (int)m), (long long)y, (long long)m);
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || !(s >= 0 && s < 60))
        return sb_raise(e, "%s: time %lld:%lld:%g is not a valid time of day", tool, (long long)h, (long long)mi, s);
    return ts_result((double)sb_days_from_civil(y, (int)m, (int)d) * 86400 + (double)(h * 3600 + mi * 60) + s);
}

/* ---- units ---------------------------------------------------------------------------- */

typedef struct unit {
    const char *names; /* '|'-separated, lower case */
    const char *dimension;
    double factor, offset; /* base = value * factor + offset */
} unit;

static const unit UNITS[] = {
    {"m|meter|meters|metre|metres", "length", 1, 0},
    {"km|kilometer|kilometers|kilometre|kilometres", "length", 1000, 0},
    {"cm|centimeter|centimeters|centimetre|centimetres", "length", 0.01, 0},
    {"mm|millimeter|millimeters|millimetre|millimetres", "length", 0.001, 0},
    {"mi|mile|miles", "length", 1609.344, 0},
    {"yd|yard|yards", "length", 0.9144, 0},
    {"ft|foot|feet", "length", 0.3048, 0},
    {"in|inch|inches", "length", 0.0254, 0},
    {"kg|kilogram|kilograms", "mass", 1, 0},
    {"g|gram|grams", "mass", 0.001, 0},
    {"mg|milligram|milligrams", "mass", 1e-6, 0},
    {"t|tonne|tonnes|metric ton|metric tons", "mass", 1000, 0},
    {"lb|lbs|pound|pounds", "mass", 0.45359237, 0},
    {"oz|ounce|ounces", "mass", 0.028349523125, 0},
    {"c|celsius|degc|degree celsius|degrees celsius", "temperature", 1, 273.15},
    {"f|fahrenheit|degf|degree fahrenheit|degrees fahrenheit", "temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0},
    {"k|kelvin", "temperature", 1, 0},
    {"l|liter|liters|litre|litres", "volume", 1, 0},
    {"ml|milliliter|milliliters|millilitre|millilitres", "volume", 0.001, 0},
    {"gal|gallon|gallons", "volume", 3.785411784, 0},
    {"qt|quart|quarts", "volume", 0.946352946, 0},
    {"pt|pint|pints", "volume", 0.473176473, 0},
    {"cup|cups", "volume", 0.2365882365, 0},
    {"fl oz|fl_oz|fluid ounce|fluid ounces", "volume", 0.0295735295625, 0},
    {"m/s|mps|meters per second|metres per second", "speed", 1, 0},
    {"km/h|kph|kmh|kilometers per hour|kilometres per hour", "speed", 1 / 3.6, 0},
    {"mph|miles per hour", "speed", 0.44704, 0},
    {"kn|knot|knots", "speed", 1852.0 / 3600.0, 0},
    {"s|sec|second|seconds", "time", 1, 0},
    {"min|minute|minutes", "time", 60, 0},
    {"h|hr|hour|hours", "time", 3600, 0},
    {"day|days", "time", 86400, 0},
    {"week|weeks", "time", 604800, 0},
    {"m2|sq m|square meter|square meters|square metre|square metres", "area", 1, 0},
    {"km2|sq km|square kilometer|square kilometers|square kilometre|square kilometres", "area", 1e6, 0},
    {"ft2|sq ft|square foot|square feet", "area", 0.09290304, 0},
    {"mi2|sq mi|square mile|square miles", "area", 2589988.110336, 0},
    {"ha|hectare|hectares", "area", 1e4, 0},
    {"acre|acres", "area", 4046.8564224, 0},
};

static const unit *find_unit(const char *name) {
    char want[64];
    size_t k = 0;
    while (*name == ' ') name++;
    for (; *name && k + 1 < sizeof want; name++) want[k++] = *name;
    while (k > 0 && want[k - 1] == ' ') k--;
    want[k] = 0;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++) {
        const char *p = UNITS[i].names;
        while (*p) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == k && strncasecmp(p, want, n) == 0) return &UNITS[i];
            p += n + (bar != NULL);
        }
    }
    return NULL;
}

static json_t *unit_conversion(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    const char *from = sb_str(args, "from_unit"), *to = sb_str(args, "to_unit");
    const unit *a = find_unit(from), *b = find_unit(to);
    if (!a) return sb_raise(e, "unit_conversion: unknown unit '%s'", from);
    if (!b) return sb_raise(e, "unit_conversion: unknown unit '%s'", to);
    if (strcmp(a->dimension, b->dimension) != 0)
        return sb_raise(e, "unit_conversion: cannot convert %s ('%s') to %s ('%s')", a->dimension, from, b->dimension,
                        to);
    double base = sb_num(args, "amount", 0) * a->factor + a->offset;
    return json_pack("{s:f, s:s}", "amount", (base - b->offset) / b->factor, "unit", to);
}

static json_t *calculate_lat_lon_distance(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)sb;
    double la0 = sb_num(args, "latitude_0", 0), lo0 = sb_num(args, "longitude_0", 0);
    double la1 = sb_num(args, "latitude_1", 0), lo1 = sb_num(args, "longitude_1", 0);
    if (fabs(la0) > 90 || fabs(la1) > 90 || fabs(lo0) > 180 || fabs(lo1) > 180)
        return sb_raise(e, "calculate_lat_lon_distance: latitudes must be in [-90, 90], longitudes in [-180, 180]");
    return json_pack("{s:f}", "distance_km", sb_haversine_km(la0, lo0, la1, lo1));
}

/* ---- holidays ------------------------------------------------------------------------- */

typedef struct holiday {
    const char *name;
    int month;
    int day;     /* fixed date when > 0 */
    int weekday; /* else the nth (week > 0) or last (week < 0) isoweekday of the month */
    int week;
} holiday;

/* Ties in similarity go to the earlier entry, so "Christmas" is Christmas Day. */
static const holiday HOLIDAYS[] = {
    {"New Year's Day", 1, 1, 0, 0},
    {"Martin Luther King Jr. Day", 1, 0, 1, 3},
    {"Valentine's Day", 2, 14, 0, 0},
    {"Presidents' Day", 2, 0, 1, 3},
    {"Easter Sunday", 0, 0, 0, 0},
    {"Mother's Day", 5, 0, 7, 2},
    {"Memorial Day", 5, 0, 1, -1},
    {"Father's Day", 6, 0, 7, 3},
    {"Juneteenth", 6, 19, 0, 0},
    {"Independence Day", 7, 4, 0, 0},
    {"Labor Day", 9, 0, 1, 1},
    {"Columbus Day", 10, 0, 1, 2},
    {"Halloween", 10, 31, 0, 0},
    {"Veterans Day", 11, 11, 0, 0},
    {"Thanksgiving Day", 11, 0, 4, 4},
    {"Christmas Day", 12, 25, 0, 0},
    {"Christmas Eve", 12, 24, 0, 0},
    {"New Year's Eve", 12, 31, 0, 0},
};

/* Anonymous Gregorian algorithm (Meeus/Jones/Butcher). */
static void easter(int64_t y, int *m, int *d) {
    int64_t a = y % 19, b = y / 100, c = y % 100, dd = b / 4, ee = b % 4, f = (b + 8) / 25, g = (b - f + 1) / 3;
    int64_t h = (19 * a + b - dd - g + 15) % 30, i = c / 4, k = c % 4, l = (32 + 2 * ee + 2 * i - h - k) % 7;
    int64_t mm = (a + 11 * h + 22 * l) / 451;
    *m = (int)((h + l - 7 * mm + 114) / 31);
    *d = (int)((h + l - 7 * mm + 114) % 31 + 1);
}

static int64_t holiday_days(const holiday *h, int64_t y) {
    int m, d;
    if (h->month == 0) {
        easter(y, &m, &d);
        return sb_days_from_civil(y, m, d);
    }
    if (h->day > 0) return sb_days_from_civil(y, h->month, h->day);
    if (h->week > 0) {
        int64_t first = sb_days_from_civil(y, h->month, 1);
        int shift = (h->weekday - isoweekday(first) + 7) % 7;
        return first + shift + 7 * (h->week - 1);
    }
    int64_t last = sb_days_from_civil(y, h->month, days_in_month(y, h->month));
    return last - (isoweekday(last) - h->weekday + 7) % 7;
}

static json_t *search_holiday(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *name = sb_str(args, "holiday_name");
    int64_t y;
    int m, d;
    sb_civil_from_days((int64_t)floor(sb->clock / 86400), &y, &m, &d);
    if (sb_has(args, "year")) y = json_integer_value(json_object_get(args, "year"));
    if (y < 1583 || y > 9999) return sb_raise(e, "search_holiday: year %lld is not in [1583, 9999]", (long long)y);
    const holiday *best = NULL;
    double best_s = 0;
    for (size_t i = 0; i < sizeof HOLIDAYS / sizeof HOLIDAYS[0]; i++) {
        double s = orc_sandbox_similarity(name, HOLIDAYS[i].name);
        if (s > best_s) {
            best_s = s;
            best = &HOLIDAYS[i];
        }
    }
    if (!best || best_s < ORC_SANDBOX_FUZZY_MIN) return sb_raise(e, "search_holiday: no holiday matches '%s'", name);
    int64_t days = holiday_days(best, y);
    sb_civil_from_days(days, &y, &m, &d);
    char date[32];
    snprintf(date, sizeof date, "%04lld-%02d-%02d", (long long)y, m, d);
    return json_pack("{s:s, s:s, s:f}", "name", best->name, "date", date, "timestamp", (double)days * 86400);
}

static const sb_arg NONE[] = {{NULL, NULL, NULL, 0}};
static const sb_arg SHIFT[] = {{"timestamp", "number", "Unix timestamp to start from.", 1},
                               {"weeks", "number", "Weeks to add (negative to go back).", 0},
                               {"days", "number", "Days to add.", 0},
                               {"hours", "number", "Hours to add.", 0},
                               {"minutes", "number", "Minutes to add.", 0},
                               {"seconds", "number", "Seconds to add.", 0},
                               {NULL, NULL, NULL, 0}};
static const sb_arg DIFF[] = {{"timestamp_0", "number", "The earlier Unix timestamp.", 1},
                              {"timestamp_1", "number", "The later Unix timestamp.", 1},
                              {NULL, NULL, NULL, 0}};
static const sb_arg TS[] = {{"timestamp", "number", "Unix timestamp.", 1}, {NULL, NULL, NULL, 0}};
static const sb_arg DT[] = {{"year", "integer", "Year, e.g. 2024.", 1},
                            {"month", "integer", "Month, 1 to 12.", 1},
                            {"day", "integer", "Day of the month.", 1},
                            {"hour", "integer", "Hour, 0 to 23 (default 0).", 0},
                            {"minute", "integer", "Minute, 0 to 59 (default 0).", 0},
                            {"second", "number", "Second, 0 to 59 (default 0).", 0},
                            {NULL, NULL, NULL, 0}};
static const sb_arg UNIT[] = {
    {"amount", "number", "The quantity to convert.", 1},
    {"from_unit", "string", "Its unit, e.g. km, mi, kg, lb, celsius, fahrenheit, liter, gallon, mph.", 1},
    {"to_unit", "string", "The unit wanted, of the same kind.", 1},
    {NULL, NULL, NULL, 0}};
static const sb_arg DIST[] = {{"latitude_0", "number", "Latitude of the first point.", 1},
                              {"longitude_0", "number", "Longitude of the first point.", 1},
                              {"latitude_1", "number", "Latitude of the second point.", 1},
                              {"longitude_1", "number", "Longitude of the second point.", 1},
                              {NULL, NULL, NULL, 0}};
static const sb_arg HOLIDAY[] = {{"holiday_name", "string", "Name of the holiday, e.g. Thanksgiving.", 1},
                                 {"year", "integer", "Year (default: the current year).", 0},
                                 {NULL, NULL, NULL, 0}};

const sb_tool sb_utility_tools[] = {
    {"get_current_timestamp", "The current time as a Unix timestamp (seconds, UTC).", NONE, get_current_timestamp},
    {"shift_timestamp", "Add weeks, days, hours, minutes and seconds to a Unix timestamp.", SHIFT, shift_timestamp},
    {"timestamp_diff", "timestamp_1 - timestamp_0 as whole days plus the remaining seconds.", DIFF, timestamp_diff},
    {"timestamp_to_datetime_info",
     "Calendar fields (UTC) of a Unix timestamp: year, month, day, hour, minute, second, isoweekday (Monday 1).", TS,
     timestamp_to_datetime_info},
    {"datetime_info_to_timestamp", "The Unix timestamp of a calendar date and time (UTC).", DT,
     datetime_info_to_timestamp},
    {"unit_conversion", "Convert an amount between units of length, mass, temperature, volume, speed, time or area.",
     UNIT, unit_conversion},
    {"calculate_lat_lon_distance", "Great-circle distance in kilometers between two coordinates.", DIST,
     calculate_lat_lon_distance},
    {"search_holiday", "Date and Unix timestamp (midnight UTC) of a holiday in a year.", HOLIDAY, search_holiday},
    {NULL, NULL, NULL, NULL}};
