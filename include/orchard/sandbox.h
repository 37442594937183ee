/* orchard/sandbox.h: the ToolSandbox world state and its tools (issue 9).
 *
 * A sandbox is one SQLite database (in memory by default, a file on request)
 * holding the conversation's message log and the world the tools act on, plus
 * an offline data set (places, weather, stocks, currencies) that the search
 * tools read. Tools are called by name with JSON arguments, validated against
 * their JSON schema; a tool's failure (bad argument, unmet state dependency)
 * is an exception handed back to the agent, never a failure of the caller.
 *
 * ---- schema ---------------------------------------------------------------
 * Message log (append-only; the row's idx is its message index):
 *   log(idx INTEGER PRIMARY KEY, sender TEXT, recipient TEXT, content TEXT,
 *       tool_call_id TEXT, tool_name TEXT, tool_trace TEXT (JSON array of
 *       {"tool_name","arguments","result"|"exception"}), visible_to TEXT (JSON
 *       array of roles), conversation_active INTEGER (0/1), exception TEXT)
 *   Roles: "system", "user", "agent", "execution_environment".
 *
 * World tables, snapshotted. Every row carries `snapshot`, the message index
 * at which that copy of the table was taken; `snapshots(tbl, snapshot)` lists
 * the snapshots each table has (a snapshot may hold no rows). A change made
 * while the log holds N messages is keyed N (the index of the next message,
 * normally the execution environment's reply that reports it): if the table's
 * latest snapshot is older than N it is first copied forward to N, then the
 * copy is edited. Reading a table at message index i reads its latest
 * snapshot <= i. Snapshot 0 is the starting state.
 *   settings(snapshot, cellular, wifi, location_service, low_battery_mode
 *            INTEGER 0/1, latitude REAL, longitude REAL)           one row
 *   contacts(snapshot, person_id TEXT, name TEXT, phone_number TEXT,
 *            relationship TEXT NULL, is_self INTEGER 0/1)    one is_self row
 *   messages(snapshot, message_id TEXT, sender_person_id TEXT NULL,
 *            sender_phone_number TEXT, recipient_person_id TEXT NULL,
 *            recipient_phone_number TEXT, content TEXT,
 *            creation_timestamp REAL)
 *   reminders(snapshot, reminder_id TEXT, content TEXT,
 *             creation_timestamp REAL, reminder_timestamp REAL,
 *             latitude REAL NULL, longitude REAL NULL)
 * Milestone constraints evaluate per table and column: a constraint on
 * (table, column) at message index i compares the rows of
 *   SELECT <column> FROM <table> WHERE snapshot = (SELECT MAX(snapshot)
 *     FROM snapshots WHERE tbl = '<table>' AND snapshot <= i)
 * (for the log: SELECT <column> FROM log WHERE idx <= i); an addition,
 * removal or update is the difference between snapshots i-1 and i, rows
 * matched by their id column (person_id, message_id, reminder_id). Timestamps
 * are Unix seconds (UTC); ids are UUID-shaped strings drawn deterministically
 * from a counter, so runs are reproducible.
 *
 * ---- fuzzy search --------------------------------------------------------
 * Name-like and free-text fields (contact names, message and reminder
 * content, place names, company names, holiday names) match by normalised
 * token-set ratio: both strings are lower-cased, non-alphanumerics become
 * spaces; with token sets A and B, I = A&B, D1 = A-B, D2 = B-A (each sorted and
 * joined by spaces), t0 = I, t1 = I+D1, t2 = I+D2, the score is 1 when I is
 * non-empty and D1 or D2 is empty (one is a subset of the other), else the best
 * ratio among (t0,t1), (t0,t2), (t1,t2) and the plain normalised strings, where
 * ratio(x, y) = 2*LCS(x, y) / (|x| + |y|) (an indel similarity, like
 * rapidfuzz's ratio). A field matches when its score >= ORC_SANDBOX_FUZZY_MIN.
 * Every other field (ids, phone numbers, relationships, booleans, coordinates)
 * matches exactly; timestamps match by inclusive bounds. */
#ifndef ORCHARD_SANDBOX_H
#define ORCHARD_SANDBOX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_SANDBOX_FUZZY_MIN 0.8
/* The seed of the shipped data set (data/sandbox/world.json). */
#define ORC_SANDBOX_DATA_SEED 9u
/* Default sandbox clock: 2024-06-03 09:00:00 UTC, a Monday. */
#define ORC_SANDBOX_DEFAULT_CLOCK 1717405200.0

typedef struct orc_sandbox orc_sandbox;

typedef struct orc_sandbox_opts {
    const char *db_path;   /* NULL or ":memory:": in memory; else a file, created or reopened */
    const char *data_path; /* the data set JSON; NULL: generate it from ORC_SANDBOX_DATA_SEED */
    double clock;          /* a new database's clock (Unix seconds); 0: ORC_SANDBOX_DEFAULT_CLOCK */
    const char *self_name; /* a new database's self contact; NULL: defaults */
    const char *self_phone;
} orc_sandbox_opts;

/* Open (and on first use create) a sandbox. opts may be NULL. */
orc_sandbox *orc_sandbox_open(const orc_sandbox_opts *opts, orc_error *err);
void orc_sandbox_close(orc_sandbox *sb);

/* The underlying database, for evaluators that query snapshots directly. */
struct sqlite3 *orc_sandbox_db(orc_sandbox *sb);

/* Number of messages in the log: the index the next message gets and the key
 * of any change made now. */
int64_t orc_sandbox_head(orc_sandbox *sb);

/* The sandbox clock (Unix seconds). It moves only when set. */
double orc_sandbox_clock(orc_sandbox *sb);
orc_status orc_sandbox_set_clock(orc_sandbox *sb, double t, orc_error *err);

/* ---- the message log ---- */
typedef struct orc_log_message {
    const char *sender;       /* a role */
    const char *recipient;    /* a role */
    const char *content;      /* may be NULL */
    const char *tool_call_id; /* NULL unless a tool call or its result */
    const char *tool_name;
    const char *tool_trace;   /* JSON array text, or NULL */
    const char *visible_to;   /* JSON array of roles; NULL: [sender, recipient] */
    int ends_conversation;    /* 1: conversation_active = 0 from this message on */
    const char *exception;    /* NULL unless the message reports one */
} orc_log_message;

/* Append a message; *index (may be NULL) gets its index. An unknown role or
 * malformed JSON field is ORC_EINVAL. */
orc_status orc_sandbox_log_append(orc_sandbox *sb, const orc_log_message *m, int64_t *index, orc_error *err);

/* ---- reading state ---- */
/* The key of `table`'s latest snapshot at or before message index `index`
 * (index < 0: the latest), or -1 when it has none so early. */
orc_status orc_sandbox_snapshot_key(orc_sandbox *sb, const char *table, int64_t index, int64_t *key,
                                    orc_error *err);
/* The rows of `table` ("log", "settings", "contacts", "messages",
 * "reminders") as they stood at message index `index` (< 0: now), as a new
 * JSON array of objects keyed by column (the snapshot column left out).
 * An unknown table is ORC_EINVAL. */
orc_status orc_sandbox_read(orc_sandbox *sb, const char *table, int64_t index, json_t **rows, orc_error *err);

/* ---- tools ---- */
/* Number of tools, and tool i's name and schema (OpenAI function-calling form:
 * {"type":"function","function":{"name","description","parameters"}}, a new
 * reference). */
int orc_sandbox_tool_count(void);
const char *orc_sandbox_tool_name(int i);
json_t *orc_sandbox_tool_schema(int i);
/* Schemas of all tools as a JSON array (a new reference). */
json_t *orc_sandbox_tool_schemas(void);

typedef struct orc_tool_result {
    char *result;    /* JSON text of the result; NULL when the call raised */
    char *exception; /* the exception's message; NULL on success */
    char *trace;     /* JSON text {"tool_name","arguments","result"|"exception"} */
} orc_tool_result;
void orc_tool_result_free(orc_tool_result *r);

/* Run tool `name` with arguments `args_json` (a JSON object's text; "" means
 * {}). Unknown tools, unparsable or schema-violating arguments and unmet
 * state dependencies come back as out->exception with ORC_OK; the tool's
 * changes are all made or (on exception) none. Only a failure of the sandbox
 * itself (database, memory) returns an error status. Nothing is logged. */
orc_status orc_sandbox_invoke(orc_sandbox *sb, const char *name, const char *args_json, orc_tool_result *out,
                              orc_error *err);

/* orc_sandbox_invoke, then append the execution environment's reply to the
 * log (sender execution_environment, recipient agent, content the result or
 * the exception, the tool call id and name, tool_trace [trace], exception).
 * *index (may be NULL) gets the reply's index. */
orc_status orc_sandbox_call(orc_sandbox *sb, const char *tool_call_id, const char *name, const char *args_json,
                            orc_tool_result *out, int64_t *index, orc_error *err);

/* ---- fuzzy matching (see the header comment) ---- */
double orc_sandbox_similarity(const char *a, const char *b);

/* ---- the offline data set ---- */
/* Generate the data set for a seed as JSON text (malloc'd, ends with a
 * newline); the same seed gives the same bytes. */
orc_status orc_sandbox_data_generate(uint64_t seed, char **json_text, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
