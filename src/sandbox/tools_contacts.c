/* Contact tools: add, modify, remove and search the contacts table. Phone
 * numbers must be canonical (an optional '+' and digits only), so an agent
 * has to canonicalise what a user types; the self contact cannot be removed.
 * Names match fuzzily in search, everything else exactly. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_internal.h"

int sb_valid_phone(const char *p) {
    if (!p) return 0;
    if (*p == '+') p++;
    int digits = 0;
    for (; *p; p++, digits++)
        if (!isdigit((unsigned char)*p)) return 0;
    return digits >= 3 && digits <= 15;
}

static json_t *find_contact(orc_sandbox *sb, const char *person_id, sb_exc *e) {
    json_t *rows = sb_table_now(sb, "contacts", e);
    if (!rows) return NULL;
    json_t *found = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "person_id")), person_id) == 0) {
            found = json_incref(r);
            break;
        }
    }
    json_decref(rows);
    if (!found) sb_raise(e, "no contact with person_id '%s'", person_id);
    return found;
}

/* The agent sees is_self as a boolean. */
static json_t *present(json_t *row) {
    json_t *v = json_object_get(row, "is_self");
    if (json_is_integer(v)) json_object_set_new(row, "is_self", json_boolean(json_integer_value(v) != 0));
    return row;
}

static json_t *add_contact(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *name = sb_str(args, "name"), *phone = sb_str(args, "phone_number");
    if (!name[0]) return sb_raise(e, "add_contact: name is empty");
    if (!sb_valid_phone(phone))
        return sb_raise(e, "add_contact: phone_number '%s' is not canonical: use '+' and digits only, e.g. +15551234567",
                        phone);
    char id[37];
    if (sb_new_id(sb, id, e) || sb_touch(sb, "contacts", e)) return NULL;
    if (sb_execf(sb, e, "INSERT INTO contacts VALUES (?1, ?2, ?3, ?4, ?5, 0)", "itttt", sb->head, id, name, phone,
                 sb_str(args, "relationship")) < 0)
        return NULL;
    return json_pack("{s:s}", "person_id", id);
}

static json_t *modify_contact(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *id = sb_str(args, "person_id");
    if (!sb_has(args, "name") && !sb_has(args, "phone_number") && !sb_has(args, "relationship"))
        return sb_raise(e, "modify_contact: give at least one of name, phone_number, relationship to change");
    json_t *row = find_contact(sb, id, e);
    if (!row) return NULL;
    json_decref(row);
    const char *phone = sb_str(args, "phone_number");
    if (phone && !sb_valid_phone(phone))
        return sb_raise(e, "modify_contact: phone_number '%s' is not canonical: use '+' and digits only", phone);
    if (sb_has(args, "name") && !sb_str(args, "name")[0]) return sb_raise(e, "modify_contact: name is empty");
    if (sb_touch(sb, "contacts", e)) return NULL;
    const char *cols[] = {"name", "phone_number", "relationship"};
    for (int c = 0; c < 3; c++) {
        if (!sb_has(args, cols[c])) continue;
        char sql[128];
        snprintf(sql, sizeof sql, "UPDATE contacts SET %s = ?3 WHERE snapshot = ?1 AND person_id = ?2", cols[c]);
        if (sb_execf(sb, e, sql, "itt", sb->head, id, sb_str(args, cols[c])) < 0) return NULL;
    }
    row = find_contact(sb, id, e);
    return row ? present(row) : NULL;
}

static json_t *remove_contact(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *id = sb_str(args, "person_id");
    json_t *row = find_contact(sb, id, e);
    if (!row) return NULL;
    if (json_integer_value(json_object_get(row, "is_self"))) {
        json_decref(row);
        return sb_raise(e, "remove_contact: '%s' is the user's own contact and cannot be removed", id);
    }
    if (sb_touch(sb, "contacts", e) ||
        sb_execf(sb, e, "DELETE FROM contacts WHERE snapshot = ?1 AND person_id = ?2", "it", sb->head, id) < 0) {
        json_decref(row);
        return NULL;
    }
    return present(row);
}

static json_t *search_contacts(orc_sandbox *sb, json_t *args, sb_exc *e) {
    static const sb_filter F[] = {{"person_id", "person_id", SB_EXACT},
                                  {"name", "name", SB_FUZZY},
                                  {"phone_number", "phone_number", SB_EXACT},
                                  {"relationship", "relationship", SB_EXACT},
                                  {"is_self", "is_self", SB_EXACT}};
    json_t *rows = sb_table_now(sb, "contacts", e);
    if (!rows) return NULL;
    json_t *out = sb_filter_rows(rows, args, F, (int)(sizeof F / sizeof F[0]));
    json_decref(rows);
    if (!out) return sb_internal(e, NULL, "search");
    size_t i;
    json_t *r;
    json_array_foreach(out, i, r) present(r);
    return out;
}

static const sb_arg ADD[] = {
    {"name", "string", "The contact's full name.", 1},
    {"phone_number", "string", "Phone number in canonical form: '+', country code and digits, e.g. +15551234567.", 1},
    {"relationship", "string", "How the user knows them, e.g. friend, mother, coworker.", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg MODIFY[] = {
    {"person_id", "string", "The contact's person_id (from search_contacts).", 1},
    {"name", "string", "New full name.", 0},
    {"phone_number", "string", "New phone number in canonical form, e.g. +15551234567.", 0},
    {"relationship", "string", "New relationship.", 0},
    {NULL, NULL, NULL, 0}};
static const sb_arg REMOVE[] = {{"person_id", "string", "The contact's person_id (from search_contacts).", 1},
                                {NULL, NULL, NULL, 0}};
static const sb_arg SEARCH[] = {
    {"person_id", "string", "Exact person_id.", 0},
    {"name", "string", "Name to look for; matched fuzzily.", 0},
    {"phone_number", "string", "Exact phone number in canonical form.", 0},
    {"relationship", "string", "Exact relationship.", 0},
    {"is_self", "boolean", "true for the user's own contact.", 0},
    {NULL, NULL, NULL, 0}};

const sb_tool sb_contact_tools[] = {
    {"add_contact", "Add a contact to the user's address book. Returns its person_id.", ADD, add_contact},
    {"modify_contact", "Change a contact's name, phone number or relationship. Returns the updated contact.", MODIFY,
     modify_contact},
    {"remove_contact", "Remove a contact. Returns the removed contact.", REMOVE, remove_contact},
    {"search_contacts",
     "Search the contacts; every given field must match. The user's own contact has is_self true. Returns a list.",
     SEARCH, search_contacts},
    {NULL, NULL, NULL, NULL}};
