/* Reminder tools: add, modify, search and remove reminders. A reminder has
 * content, a due timestamp and optionally a place (latitude and longitude
 * together). Content matches fuzzily in search, ids and coordinates exactly,
 * timestamps by bounds. */
#include <stdio.h>
#include <string.h>

#include "sandbox_internal.h"

static int check_place(json_t *args, const char *tool, sb_exc *e) {
    if (sb_has(args, "latitude") != sb_has(args, "longitude")) {
        sb_raise(e, "%s: give latitude and longitude together", tool);
        return -1;
    }
    double lat = sb_num(args, "latitude", 0), lon = sb_num(args, "longitude", 0);
    if (lat < -90 || lat > 90 || lon < -180 || lon > 180) {
        sb_raise(e, "%s: latitude must be in [-90, 90] and longitude in [-180, 180], got %g, %g", tool, lat, lon);
        return -1;
    }
    return 0;
}

static json_t *find_reminder(orc_sandbox *sb, const char *id, sb_exc *e) {
    json_t *rows = sb_table_now(sb, "reminders", e);
    if (!rows) return NULL;
    json_t *found = NULL, *r;
    size_t i;
    json_array_foreach(rows, i, r) {
        if (!found && strcmp(json_string_value(json_object_get(r, "reminder_id")), id) == 0) found = json_incref(r);
    }
    json_decref(rows);
    if (!found) sb_raise(e, "no reminder with reminder_id '%s'", id);
    return found;
}

static json_t *add_reminder(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *content = sb_str(args, "content");
    if (!content[0]) return sb_raise(e, "add_reminder: content is empty");
    if (check_place(args, "add_reminder", e)) return NULL;
    double lat = sb_num(args, "latitude", 0), lon = sb_num(args, "longitude", 0);
    int place = sb_has(args, "latitude");
    char id[37];
    if (sb_new_id(sb, id, e) || sb_touch(sb, "reminders", e)) return NULL;
    if (sb_execf(sb, e, "INSERT INTO reminders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", "ittddDD", sb->head, id, content,
                 sb->clock, sb_num(args, "reminder_timestamp", 0), place ? &lat : NULL, place ? &lon : NULL) < 0)
        return NULL;
    return json_pack("{s:s}", "reminder_id", id);
}

static json_t *modify_reminder(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *id = sb_str(args, "reminder_id");
    if (!sb_has(args, "content") && !sb_has(args, "reminder_timestamp") && !sb_has(args, "latitude") &&
        !sb_has(args, "longitude"))
        return sb_raise(e, "modify_reminder: give at least one of content, reminder_timestamp, latitude+longitude");
    json_t *row = find_reminder(sb, id, e);
    if (!row) return NULL;
    json_decref(row);
    if (check_place(args, "modify_reminder", e)) return NULL;
    if (sb_has(args, "content") && !sb_str(args, "content")[0]) return sb_raise(e, "modify_reminder: content is empty");
    if (sb_touch(sb, "reminders", e)) return NULL;
    const char *where = " WHERE snapshot = ?1 AND reminder_id = ?2";
    char sql[160];
    if (sb_has(args, "content")) {
        snprintf(sql, sizeof sql, "UPDATE reminders SET content = ?3%s", where);
        if (sb_execf(sb, e, sql, "itt", sb->head, id, sb_str(args, "content")) < 0) return NULL;
    }
    if (sb_has(args, "reminder_timestamp")) {
        snprintf(sql, sizeof sql, "UPDATE reminders SET reminder_timestamp = ?3%s", where);
        if (sb_execf(sb, e, sql, "itd", sb->head, id, sb_num(args, "reminder_timestamp", 0)) < 0) return NULL;
    }
    if (sb_has(args, "latitude")) {
        snprintf(sql, sizeof sql, "UPDATE reminders SET latitude = ?3, longitude = ?4%s", where);
        if (sb_execf(sb, e, sql, "itdd", sb->head, id, sb_num(args, "latitude", 0), sb_num(args, "longitude", 0)) < 0)
            return NULL;
    }
    return find_reminder(sb, id, e);
}

static json_t *remove_reminder(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *id = sb_str(args, "reminder_id");
    json_t *row = find_reminder(sb, id, e);
    if (!row) return NULL;
    if (sb_touch(sb, "reminders", e) ||
        sb_execf(sb, e, "DELETE FROM reminders WHERE snapshot = ?1 AND reminder_id = ?2", "it", sb->head, id) < 0) {
        json_decref(row);
        return NULL;
    }
    return row;
}

static json_t *search_reminder(orc_sandbox *sb, json_t *args, sb_exc *e) {
    static const sb_filter F[] = {{"reminder_id", "reminder_id", SB_EXACT},
                                  {"content", "content", SB_FUZZY},
                                  {"creation_timestamp_lowerbound", "creation_timestamp", SB_MIN},
                                  {"creation_timestamp_upperbound", "creation_timestamp", SB_MAX},
                                  {"reminder_timestamp_lowerbound", "reminder_timestamp", SB_MIN},
                                  {"reminder_timestamp_upperbound", "reminder_timestamp", SB_MAX},
                                  {"latitude", "latitude", SB_EXACT},
                                  {"longitude", "longitude", SB_EXACT}};
    json_t *rows = sb_table_now(sb, "reminders", e);
    if (!rows) return NULL;
    json_t *out = sb_filter_rows(rows, args, F, (int)(sizeof F / sizeof F[0]));
    json_decref(rows);
    return out ? out : sb_internal(e, NULL, "search");
}

static const sb_arg ADD[] = {
    {"content", "string", "What to be reminded of.", 1},
    {"reminder_timestamp", "number", "When to remind, as a Unix timestamp.", 1},
    {"latitude", "number", "Latitude of the place the reminder belongs to (with longitude).", 0},
    {"longitude", "number", "Longitude of the place the reminder belongs to (with latitude).", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg MODIFY[] = {
    {"reminder_id", "string", "The reminder's reminder_id (from search_reminder).", 1},
    {"content", "string", "New content.", 0},
    {"reminder_timestamp", "number", "New due time, as a Unix timestamp.", 0},
    {"latitude", "number", "New latitude (with longitude).", 0},
    {"longitude", "number", "New longitude (with latitude).", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg REMOVE[] = {{"reminder_id", "string", "The reminder's reminder_id (from search_reminder).", 1},
                                {NULL, NULL, NULL, 0}};
static const sb_arg SEARCH[] = {
    {"reminder_id", "string", "Exact reminder_id.", 0},
    {"content", "string", "Text to look for; matched fuzzily.", 0},
    {"creation_timestamp_lowerbound", "number", "Created at or after this Unix timestamp.", 0},
    {"creation_timestamp_upperbound", "number", "Created at or before this Unix timestamp.", 0},
    {"reminder_timestamp_lowerbound", "number", "Due at or after this Unix timestamp.", 0},
    {"reminder_timestamp_upperbound", "number", "Due at or before this Unix timestamp.", 0},
    {"latitude", "number", "Exact latitude.", 0},
    {"longitude", "number", "Exact longitude.", 0},
    {NULL, NULL, NULL, 0}};

const sb_tool sb_reminder_tools[] = {
    {"add_reminder", "Add a reminder, optionally tied to a place. Returns its reminder_id.", ADD, add_reminder},
    {"modify_reminder", "Change a reminder's content, due time or place. Returns the updated reminder.", MODIFY,
     modify_reminder},
    {"search_reminder", "Search the reminders; every given field must match. Returns a list.", SEARCH,
     search_reminder},
    {"remove_reminder", "Remove a reminder. Returns the removed reminder.", REMOVE, remove_reminder},
    {NULL, NULL, NULL, NULL}};
