/* The sandbox's world state in SQLite: opening and creating the database
 * (schema, starting snapshot 0 with the settings row and the self contact),
 * the append-only message log, the copy-forward snapshots keyed by message
 * index, reading a table as it stood at an index, the clock and fresh ids.
 * The schema is documented in orchard/sandbox.h. The generated offline data
 * set is made once per process and shared read-only by the sandboxes. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_internal.h"

#define SELF_NAME "Alex Morgan"
#define SELF_PHONE "+15550100001"
/* Starting position: Cupertino, the first city of the data set. */
#define START_LAT 37.3230
#define START_LON -122.0322

static const char *SCHEMA =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE snapshots(tbl TEXT NOT NULL, snapshot INTEGER NOT NULL, PRIMARY KEY(tbl, snapshot));"
    "CREATE TABLE log(idx INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL, content TEXT,"
    " tool_call_id TEXT, tool_name TEXT, tool_trace TEXT, visible_to TEXT NOT NULL,"
    " conversation_active INTEGER NOT NULL, exception TEXT);"
    "CREATE TABLE settings(snapshot INTEGER PRIMARY KEY, cellular INTEGER NOT NULL, wifi INTEGER NOT NULL,"
    " location_service INTEGER NOT NULL, low_battery_mode INTEGER NOT NULL, latitude REAL NOT NULL,"
    " longitude REAL NOT NULL);"
    "CREATE TABLE contacts(snapshot INTEGER NOT NULL, person_id TEXT NOT NULL, name TEXT NOT NULL,"
    " phone_number TEXT NOT NULL, relationship TEXT, is_self INTEGER NOT NULL, PRIMARY KEY(snapshot, person_id));"
    "CREATE TABLE messages(snapshot INTEGER NOT NULL, message_id TEXT NOT NULL, sender_person_id TEXT,"
    " sender_phone_number TEXT NOT NULL, recipient_person_id TEXT, recipient_phone_number TEXT NOT NULL,"
    " content TEXT NOT NULL, creation_timestamp REAL NOT NULL, PRIMARY KEY(snapshot, message_id));"
    "CREATE TABLE reminders(snapshot INTEGER NOT NULL, reminder_id TEXT NOT NULL, content TEXT NOT NULL,"
    " creation_timestamp REAL NOT NULL, reminder_timestamp REAL NOT NULL, latitude REAL, longitude REAL,"
    " PRIMARY KEY(snapshot, reminder_id));";

/* The snapshotted tables and their columns after `snapshot`. */
static const struct {
    const char *name, *columns;
} WORLD[] = {
    {"settings", "cellular, wifi, location_service, low_battery_mode, latitude, longitude"},
    {"contacts", "person_id, name, phone_number, relationship, is_self"},
    {"messages", "message_id, sender_person_id, sender_phone_number, recipient_person_id, recipient_phone_number,"
                 " content, creation_timestamp"},
    {"reminders", "reminder_id, content, creation_timestamp, reminder_timestamp, latitude, longitude"},
};
#define N_WORLD ((int)(sizeof WORLD / sizeof WORLD[0]))

static const char *ROLES[] = {"system", "user", "agent", "execution_environment"};

static int world_index(const char *table) {
    for (int i = 0; i < N_WORLD; i++)
        if (table && strcmp(WORLD[i].name, table) == 0) return i;
    return -1;
}

static int is_role(const char *s) {
    for (size_t i = 0; i < sizeof ROLES / sizeof ROLES[0]; i++)
        if (s && strcmp(s, ROLES[i]) == 0) return 1;
    return 0;
}

/* ---- exceptions and argument getters ------------------------------------------ */

json_t *sb_raise(sb_exc *e, const char *fmt, ...) {
    if (e->msg[0]) return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return NULL;
}

json_t *sb_internal(sb_exc *e, orc_sandbox *sb, const char *what) {
    e->internal = 1;
    return sb_raise(e, "sandbox: %s: %s", what, sb ? sqlite3_errmsg(sb->db) : "out of memory");
}

int sb_has(json_t *args, const char *key) {
    json_t *v = json_object_get(args, key);
    return v && !json_is_null(v);
}

const char *sb_str(json_t *args, const char *key) {
    return json_string_value(json_object_get(args, key));
}

double sb_num(json_t *args, const char *key, double dflt) {
    json_t *v = json_object_get(args, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

int sb_bool(json_t *args, const char *key) {
    return json_is_true(json_object_get(args, key));
}

/* ---- SQL helpers ------------------------------------------------------------------ */

sqlite3_stmt *sb_prepare(orc_sandbox *sb, const char *sql, sb_exc *e) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sb->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_internal(e, sb, "prepare");
        return NULL;
    }
    return st;
}

static int exec_sql(orc_sandbox *sb, const char *sql, sb_exc *e) {
    if (sqlite3_exec(sb->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        sb_internal(e, sb, "exec");
        return -1;
    }
    return 0;
}

/* Run a statement that returns one integer (or none: dflt). */
static int64_t query_int(orc_sandbox *sb, const char *sql, const char *text, int64_t arg, int64_t dflt) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sb->db, sql, -1, &st, NULL) != SQLITE_OK) return dflt;
    if (text) sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, arg);
    int64_t v = dflt;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

json_t *sb_rows(sqlite3_stmt *st) {
    json_t *rows = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *name = sqlite3_column_name(st, c);
            if (strcmp(name, "snapshot") == 0) continue;
            json_t *v;
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER: v = json_integer(sqlite3_column_int64(st, c)); break;
            case SQLITE_FLOAT: v = json_real(sqlite3_column_double(st, c)); break;
            case SQLITE_NULL: v = json_null(); break;
            default: v = json_string((const char *)sqlite3_column_text(st, c)); break;
            }
            json_object_set_new(row, name, v ? v : json_null());
        }
        json_array_append_new(rows, row);
    }
    return rows;
}

/* ---- snapshots ------------------------------------------------------------------- */

int64_t sb_latest(orc_sandbox *sb, const char *table) {
    return query_int(sb, "SELECT MAX(snapshot) FROM snapshots WHERE tbl = ?1 AND snapshot <= ?2", table, INT64_MAX,
                     -1);
}

int sb_touch(orc_sandbox *sb, const char *table, sb_exc *e) {
    int w = world_index(table);
    if (w < 0) {
        sb_raise(e, "sandbox: no world table '%s'", table);
        e->internal = 1;
        return -1;
    }
    int64_t latest = sb_latest(sb, table);
    if (latest == sb->head) return 0;
    char sql[512];
    snprintf(sql, sizeof sql, "INSERT INTO %s(snapshot, %s) SELECT ?1, %s FROM %s WHERE snapshot = ?2 ORDER BY rowid",
             table, WORLD[w].columns, WORLD[w].columns, table);
    sqlite3_stmt *st = sb_prepare(sb, sql, e);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, sb->head);
    sqlite3_bind_int64(st, 2, latest);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "copy snapshot forward");
        return -1;
    }
    st = sb_prepare(sb, "INSERT INTO snapshots(tbl, snapshot) VALUES (?1, ?2)", e);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sb->head);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "record snapshot");
        return -1;
    }
    return 0;
}

int sb_settings_get(orc_sandbox *sb, sb_settings *s, sb_exc *e) {
    sqlite3_stmt *st = sb_prepare(sb,
                                  "SELECT cellular, wifi, location_service, low_battery_mode, latitude, longitude "
                                  "FROM settings WHERE snapshot = ?1",
                                  e);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, sb_latest(sb, "settings"));
    int ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok) {
        s->cellular = sqlite3_column_int(st, 0);
        s->wifi = sqlite3_column_int(st, 1);
        s->location_service = sqlite3_column_int(st, 2);
        s->low_battery_mode = sqlite3_column_int(st, 3);
        s->latitude = sqlite3_column_double(st, 4);
        s->longitude = sqlite3_column_double(st, 5);
    }
    sqlite3_finalize(st);
    if (!ok) sb_internal(e, sb, "settings row missing");
    return ok ? 0 : -1;
}

int sb_settings_put(orc_sandbox *sb, const sb_settings *s, sb_exc *e) {
    if (sb_touch(sb, "settings", e)) return -1;
    sqlite3_stmt *st = sb_prepare(sb,
                                  "UPDATE settings SET cellular = ?2, wifi = ?3, location_service = ?4,"
                                  " low_battery_mode = ?5, latitude = ?6, longitude = ?7 WHERE snapshot = ?1",
                                  e);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, sb->head);
    sqlite3_bind_int(st, 2, s->cellular);
    sqlite3_bind_int(st, 3, s->wifi);
    sqlite3_bind_int(st, 4, s->location_service);
    sqlite3_bind_int(st, 5, s->low_battery_mode);
    sqlite3_bind_double(st, 6, s->latitude);
    sqlite3_bind_double(st, 7, s->longitude);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "update settings");
        return -1;
    }
    return 0;
}

/* splitmix64: a counter turned into well-spread bits for the ids. */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

int sb_new_id(orc_sandbox *sb, char out[37], sb_exc *e) {
    int64_t n = query_int(sb, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1", "next_id", 0, 0);
    sqlite3_stmt *st = sb_prepare(sb, "UPDATE meta SET value = ?2 WHERE key = ?1", e);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, "next_id", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, n + 1);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "id counter");
        return -1;
    }
    uint64_t a = mix64((uint64_t)n * 2), b = mix64((uint64_t)n * 2 + 1);
    /* Version-4 layout: 8-4-4-4-12 hex digits. */
    snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)((a >> 16) & 0xffff),
             (unsigned)(a & 0xfff), (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffull));
    return 0;
}

int sb_self_contact(orc_sandbox *sb, char **person_id, char **phone, sb_exc *e) {
    sqlite3_stmt *st = sb_prepare(sb, "SELECT person_id, phone_number FROM contacts WHERE snapshot = ?1 AND is_self = 1",
                                  e);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, sb_latest(sb, "contacts"));
    int ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok) {
        *person_id = strdup((const char *)sqlite3_column_text(st, 0));
        *phone = strdup((const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    if (!ok) {
        sb_raise(e, "there is no self contact");
        return -1;
    }
    return 0;
}

/* ---- opening ---------------------------------------------------------------------- */

static int create_world(orc_sandbox *sb, const orc_sandbox_opts *o, sb_exc *e) {
    if (exec_sql(sb, SCHEMA, e)) return -1;
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO meta VALUES ('version', '1'), ('next_id', '0'), ('clock', '%.17g');"
             "INSERT INTO snapshots VALUES ('settings', 0), ('contacts', 0), ('messages', 0), ('reminders', 0);"
             "INSERT INTO settings VALUES (0, 1, 1, 1, 0, %.17g, %.17g);",
             o && o->clock != 0 ? o->clock : ORC_SANDBOX_DEFAULT_CLOCK, START_LAT, START_LON);
    if (exec_sql(sb, sql, e)) return -1;
    char id[37];
    if (sb_new_id(sb, id, e)) return -1;
    sqlite3_stmt *st = sb_prepare(sb, "INSERT INTO contacts VALUES (0, ?1, ?2, ?3, 'self', 1)", e);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, o && o->self_name ? o->self_name : SELF_NAME, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, o && o->self_phone ? o->self_phone : SELF_PHONE, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "self contact");
        return -1;
    }
    return 0;
}

static pthread_mutex_t generated_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *generated; /* the data set of ORC_SANDBOX_DATA_SEED, made on first use */

static json_t *load_data(const char *path, orc_error *err) {
    json_error_t je;
    json_t *data;
    if (path) {
        data = json_load_file(path, 0, &je);
        if (!data) {
            orc_error_set(err, ORC_EFORMAT, "sandbox data set %s: line %d: %s", path, je.line, je.text);
            return NULL;
        }
    } else {
        /* The generated data set is the same for every sandbox of a process
         * and the tools only read it (they copy before changing a row), so it
         * is made once and shared; jansson's reference counts are atomic. */
        pthread_mutex_lock(&generated_lock);
        if (!generated) {
            char *text = NULL;
            if (orc_sandbox_data_generate(ORC_SANDBOX_DATA_SEED, &text, err) == ORC_OK) {
                generated = json_loads(text, 0, &je);
                free(text);
                if (!generated)
                    orc_error_set(err, ORC_EFORMAT, "sandbox data set: generated text does not parse: %s", je.text);
            }
        }
        data = json_incref(generated);
        pthread_mutex_unlock(&generated_lock);
        if (!data) return NULL;
    }
    const char *need[] = {"cities", "places", "weather", "stocks", "currencies"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!json_is_array(json_object_get(data, need[i]))) {
            orc_error_set(err, ORC_EFORMAT, "sandbox data set %s: no array '%s'", path ? path : "(generated)",
                          need[i]);
            json_decref(data);
            return NULL;
        }
    return data;
}

orc_sandbox *orc_sandbox_open(const orc_sandbox_opts *o, orc_error *err) {
    orc_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        orc_error_set(err, ORC_ENOMEM, "sandbox: out of memory");
        return NULL;
    }
    const char *path = o && o->db_path ? o->db_path : ":memory:";
    if (sqlite3_open_v2(path, &sb->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        orc_error_set(err, ORC_EIO, "sandbox: cannot open database %s: %s", path,
                      sb->db ? sqlite3_errmsg(sb->db) : "out of memory");
        orc_sandbox_close(sb);
        return NULL;
    }
    sb->data = load_data(o ? o->data_path : NULL, err);
    if (!sb->data) {
        orc_sandbox_close(sb);
        return NULL;
    }
    sb_exc e = {{0}, 0};
    int64_t has_meta = query_int(sb, "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1", "meta", 0, -1);
    if (has_meta < 0) {
        orc_error_set(err, ORC_EFORMAT, "sandbox: %s is not a SQLite database: %s", path, sqlite3_errmsg(sb->db));
        orc_sandbox_close(sb);
        return NULL;
    }
    if (has_meta == 0) {
        if (exec_sql(sb, "BEGIN", &e) || create_world(sb, o, &e) || exec_sql(sb, "COMMIT", &e)) {
            orc_error_set(err, ORC_EIO, "%s (database %s)", e.msg, path);
            orc_sandbox_close(sb);
            return NULL;
        }
    } else if (sb_latest(sb, "settings") < 0) {
        orc_error_set(err, ORC_EFORMAT, "sandbox: %s is not a sandbox state (no settings snapshot)", path);
        orc_sandbox_close(sb);
        return NULL;
    }
    sb->head = query_int(sb, "SELECT COUNT(*) FROM log", NULL, 0, 0);
    sqlite3_stmt *st = NULL;
    sb->clock = ORC_SANDBOX_DEFAULT_CLOCK;
    if (sqlite3_prepare_v2(sb->db, "SELECT CAST(value AS REAL) FROM meta WHERE key = 'clock'", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        sb->clock = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return sb;
}

void orc_sandbox_close(orc_sandbox *sb) {
    if (!sb) return;
    if (sb->db) sqlite3_close(sb->db);
    json_decref(sb->data);
    free(sb);
}

struct sqlite3 *orc_sandbox_db(orc_sandbox *sb) { return sb->db; }
int64_t orc_sandbox_head(orc_sandbox *sb) { return sb->head; }
double orc_sandbox_clock(orc_sandbox *sb) { return sb->clock; }

orc_status orc_sandbox_set_clock(orc_sandbox *sb, double t, orc_error *err) {
    sb_exc e = {{0}, 0};
    sqlite3_stmt *st = sb_prepare(sb, "UPDATE meta SET value = ?1 WHERE key = 'clock'", &e);
    if (!st) return orc_error_set(err, ORC_EIO, "%s", e.msg);
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", t);
    sqlite3_bind_text(st, 1, buf, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return orc_error_set(err, ORC_EIO, "sandbox: set clock: %s", sqlite3_errmsg(sb->db));
    sb->clock = t;
    return ORC_OK;
}

/* ---- the message log ------------------------------------------------------------- */

static int valid_roles_json(const char *text) {
    json_t *v = json_loads(text, 0, NULL);
    int ok = json_is_array(v);
    for (size_t i = 0; ok && i < json_array_size(v); i++) ok = is_role(json_string_value(json_array_get(v, i)));
    json_decref(v);
    return ok;
}

orc_status orc_sandbox_log_append(orc_sandbox *sb, const orc_log_message *m, int64_t *index, orc_error *err) {
    if (!is_role(m->sender) || !is_role(m->recipient))
        return orc_error_set(err, ORC_EINVAL,
                             "sandbox log: sender '%s' / recipient '%s' must be system, user, agent or "
                             "execution_environment",
                             m->sender ? m->sender : "(null)", m->recipient ? m->recipient : "(null)");
    if (m->visible_to && !valid_roles_json(m->visible_to))
        return orc_error_set(err, ORC_EINVAL, "sandbox log: visible_to must be a JSON array of roles, got '%s'",
                             m->visible_to);
    if (m->tool_trace) {
        json_t *t = json_loads(m->tool_trace, 0, NULL);
        int ok = json_is_array(t);
        json_decref(t);
        if (!ok)
            return orc_error_set(err, ORC_EINVAL, "sandbox log: tool_trace must be a JSON array, got '%s'",
                                 m->tool_trace);
    }
    char vis[128];
    snprintf(vis, sizeof vis, "[\"%s\", \"%s\"]", m->sender, m->recipient);
    /* Once the conversation has ended it stays ended. */
    int64_t active = query_int(sb, "SELECT MIN(conversation_active) FROM log", NULL, 0, 1);
    if (m->ends_conversation) active = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sb->db,
                           "INSERT INTO log(idx, sender, recipient, content, tool_call_id, tool_name, tool_trace,"
                           " visible_to, conversation_active, exception) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                           -1, &st, NULL) != SQLITE_OK)
        return orc_error_set(err, ORC_EIO, "sandbox log: %s", sqlite3_errmsg(sb->db));
    sqlite3_bind_int64(st, 1, sb->head);
    sqlite3_bind_text(st, 2, m->sender, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, m->recipient, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, m->content, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, m->tool_call_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, m->tool_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, m->tool_trace, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, m->visible_to ? m->visible_to : vis, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 9, active);
    sqlite3_bind_text(st, 10, m->exception, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return orc_error_set(err, ORC_EIO, "sandbox log: %s", sqlite3_errmsg(sb->db));
    if (index) *index = sb->head;
    sb->head++;
    return ORC_OK;
}

/* ---- reading ---------------------------------------------------------------------- */

orc_status orc_sandbox_snapshot_key(orc_sandbox *sb, const char *table, int64_t index, int64_t *key,
                                    orc_error *err) {
    if (world_index(table) < 0)
        return orc_error_set(err, ORC_EINVAL,
                             "sandbox: no snapshotted table '%s' (settings, contacts, messages, reminders)",
                             table ? table : "(null)");
    *key = query_int(sb, "SELECT MAX(snapshot) FROM snapshots WHERE tbl = ?1 AND snapshot <= ?2", table,
                     index < 0 ? INT64_MAX : index, -1);
    return ORC_OK;
}

orc_status orc_sandbox_read(orc_sandbox *sb, const char *table, int64_t index, json_t **rows, orc_error *err) {
    *rows = NULL;
    char sql[256];
    int64_t key = index < 0 ? INT64_MAX : index;
    if (table && strcmp(table, "log") == 0) {
        snprintf(sql, sizeof sql, "SELECT * FROM log WHERE idx <= ?1 ORDER BY idx");
    } else {
        orc_status s = orc_sandbox_snapshot_key(sb, table, index, &key, err);
        if (s != ORC_OK) return s;
        snprintf(sql, sizeof sql, "SELECT * FROM %s WHERE snapshot = ?1 ORDER BY rowid", table);
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sb->db, sql, -1, &st, NULL) != SQLITE_OK)
        return orc_error_set(err, ORC_EIO, "sandbox: read %s: %s", table, sqlite3_errmsg(sb->db));
    sqlite3_bind_int64(st, 1, key);
    *rows = sb_rows(st);
    sqlite3_finalize(st);
    return ORC_OK;
}

json_t *sb_table_now(orc_sandbox *sb, const char *table, sb_exc *e) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT * FROM %s WHERE snapshot = ?1 ORDER BY rowid", table);
    sqlite3_stmt *st = sb_prepare(sb, sql, e);
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, sb_latest(sb, table));
    json_t *rows = sb_rows(st);
    sqlite3_finalize(st);
    return rows;
}

int sb_execf(orc_sandbox *sb, sb_exc *e, const char *sql, const char *types, ...) {
    sqlite3_stmt *st = sb_prepare(sb, sql, e);
    if (!st) return -1;
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't') {
            const char *v = va_arg(ap, const char *);
            if (v) sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
            else sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        } else if (types[i] == 'd') {
            sqlite3_bind_double(st, i + 1, va_arg(ap, double));
        } else {
            const double *v = va_arg(ap, const double *);
            if (v) sqlite3_bind_double(st, i + 1, *v);
            else sqlite3_bind_null(st, i + 1);
        }
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sb_internal(e, sb, "update");
        return -1;
    }
    return sqlite3_changes(sb->db);
}
