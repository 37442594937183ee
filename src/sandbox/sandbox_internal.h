/* Shared between the sandbox's files: the sandbox struct, the tool table
 * entry, the exception a tool raises, argument getters and the state helpers
 * the tools build on (copy-forward of snapshots, settings row, fresh ids). */
#ifndef ORCHARD_SANDBOX_INTERNAL_H
#define ORCHARD_SANDBOX_INTERNAL_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>

#include "orchard/sandbox.h"

struct orc_sandbox {
    sqlite3 *db;
    json_t *data;  /* the offline data set */
    int64_t head;  /* messages in the log */
    double clock;
};

/* What a tool raised. internal: the sandbox itself failed (database, memory),
 * which the caller reports as an error rather than handing to the agent. */
typedef struct sb_exc {
    char msg[512];
    int internal;
} sb_exc;

/* Set the exception (the first one wins); returns NULL so a tool can
 * `return sb_raise(...)`. */
json_t *sb_raise(sb_exc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
json_t *sb_internal(sb_exc *e, orc_sandbox *sb, const char *what);

typedef struct sb_arg {
    const char *name;
    const char *type; /* "string", "number", "integer", "boolean" */
    const char *description;
    int required;
} sb_arg;

typedef struct sb_tool {
    const char *name;
    const char *description;
    const sb_arg *args; /* ends with {NULL} */
    json_t *(*run)(orc_sandbox *sb, json_t *args, sb_exc *e);
} sb_tool;

/* Each tools_*.c file's table, ending with {NULL}. */
extern const sb_tool sb_contact_tools[];
extern const sb_tool sb_message_tools[];
extern const sb_tool sb_reminder_tools[];
extern const sb_tool sb_setting_tools[];
extern const sb_tool sb_utility_tools[];
extern const sb_tool sb_search_tools[];

/* Argument getters; a JSON null counts as absent (the dispatcher has checked
 * the types already). */
int sb_has(json_t *args, const char *key);
const char *sb_str(json_t *args, const char *key);
double sb_num(json_t *args, const char *key, double dflt);
int sb_bool(json_t *args, const char *key);

/* ---- state (state.c) ---- */
typedef struct sb_settings {
    int cellular, wifi, location_service, low_battery_mode;
    double latitude, longitude;
} sb_settings;

/* Prepare a statement; on failure raise an internal exception. */
sqlite3_stmt *sb_prepare(orc_sandbox *sb, const char *sql, sb_exc *e);
/* Latest snapshot key of a world table. */
int64_t sb_latest(orc_sandbox *sb, const char *table);
/* Make the table's snapshot at the head exist (copying the latest forward)
 * before a change. 0 on success. */
int sb_touch(orc_sandbox *sb, const char *table, sb_exc *e);
/* The rows a statement returns, as objects keyed by column (no snapshot). */
json_t *sb_rows(sqlite3_stmt *st);
int sb_settings_get(orc_sandbox *sb, sb_settings *s, sb_exc *e);
int sb_settings_put(orc_sandbox *sb, const sb_settings *s, sb_exc *e);
/* A fresh UUID-shaped id (deterministic: a counter kept in the database). */
int sb_new_id(orc_sandbox *sb, char out[37], sb_exc *e);
/* The self contact's person_id and phone number (caller frees). */
int sb_self_contact(orc_sandbox *sb, char **person_id, char **phone, sb_exc *e);

/* Run one statement with parameters ?1.. bound by `types`: 't' a string
 * (NULL binds null), 'i' an int64_t, 'd' a double, 'D' a const double *
 * (NULL binds null). Returns the number of rows changed, or -1 (raised). */
int sb_execf(orc_sandbox *sb, sb_exc *e, const char *sql, const char *types, ...);
/* The table's rows in its latest snapshot. */
json_t *sb_table_now(orc_sandbox *sb, const char *table, sb_exc *e);

/* Filtering rows by a tool's search arguments (fuzzy.c). Each present
 * argument constrains its column: SB_EXACT equal values (a boolean argument
 * against a 0/1 column compares truth), SB_FUZZY similarity >=
 * ORC_SANDBOX_FUZZY_MIN, SB_MIN / SB_MAX inclusive bounds on a number.
 * Returns a new array, best fuzzy score first (ties keep row order). */
typedef enum { SB_EXACT, SB_FUZZY, SB_MIN, SB_MAX } sb_match;
typedef struct sb_filter {
    const char *arg, *column;
    sb_match kind;
} sb_filter;
json_t *sb_filter_rows(json_t *rows, json_t *args, const sb_filter *filters, int n_filters);

/* ---- helpers ---- */
/* A canonical phone number: an optional '+' and 3 to 15 digits. */
int sb_valid_phone(const char *p);
double sb_haversine_km(double lat0, double lon0, double lat1, double lon1);
/* Days since 1970-01-01 of a proleptic Gregorian date, and back. */
int64_t sb_days_from_civil(int64_t y, int m, int d);
void sb_civil_from_days(int64_t z, int64_t *y, int *m, int *d);
/* Lower-case, alphanumerics and single spaces (caller frees). */
char *sb_normalise(const char *s);

#endif
