/* Messaging tools: send a text message to a phone number (needs cellular
 * service) and search the messages. The sender is the self contact; the
 * recipient's person_id is filled in when the number belongs to a contact.
 * Content matches fuzzily in search, ids and numbers exactly, timestamps by
 * bounds. */
#include <stdlib.h>
#include <string.h>

#include "sandbox_internal.h"

static json_t *send_message(orc_sandbox *sb, json_t *args, sb_exc *e) {
    const char *phone = sb_str(args, "phone_number"), *content = sb_str(args, "content");
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return NULL;
    if (!s.cellular)
        return sb_raise(e, "send_message_with_phone_number: cellular service is off; it must be on to send a message");
    if (!sb_valid_phone(phone))
        return sb_raise(e,
                        "send_message_with_phone_number: phone_number '%s' is not canonical: use '+' and digits "
                        "only, e.g. +15551234567",
                        phone);
    if (!content[0]) return sb_raise(e, "send_message_with_phone_number: content is empty");
    json_t *contacts = sb_table_now(sb, "contacts", e);
    if (!contacts) return NULL;
    const char *recipient = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(contacts, i, r) {
        if (!recipient && strcmp(json_string_value(json_object_get(r, "phone_number")), phone) == 0)
            recipient = json_string_value(json_object_get(r, "person_id"));
    }
    char *self_id = NULL, *self_phone = NULL;
    char id[37];
    json_t *out = NULL;
    if (sb_self_contact(sb, &self_id, &self_phone, e) == 0 && sb_new_id(sb, id, e) == 0 &&
        sb_touch(sb, "messages", e) == 0 &&
        sb_execf(sb, e, "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", "ittttttd", sb->head, id,
                 self_id, self_phone, recipient, phone, content, sb->clock) >= 0)
        out = json_pack("{s:s}", "message_id", id);
    json_decref(contacts);
    free(self_id);
    free(self_phone);
    return out;
}

static json_t *search_messages(orc_sandbox *sb, json_t *args, sb_exc *e) {
    static const sb_filter F[] = {{"message_id", "message_id", SB_EXACT},
                                  {"sender_person_id", "sender_person_id", SB_EXACT},
                                  {"sender_phone_number", "sender_phone_number", SB_EXACT},
                                  {"recipient_person_id", "recipient_person_id", SB_EXACT},
                                  {"recipient_phone_number", "recipient_phone_number", SB_EXACT},
                                  {"content", "content", SB_FUZZY},
                                  {"creation_timestamp_lowerbound", "creation_timestamp", SB_MIN},
                                  {"creation_timestamp_upperbound", "creation_timestamp", SB_MAX}};
    json_t *rows = sb_table_now(sb, "messages", e);
    if (!rows) return NULL;
    json_t *out = sb_filter_rows(rows, args, F, (int)(sizeof F / sizeof F[0]));
    json_decref(rows);
    return out ? out : sb_internal(e, NULL, "search");
}

static const sb_arg SEND[] = {
    {"phone_number", "string", "Recipient's phone number in canonical form, e.g. +15551234567.", 1},
    {"content", "string", "The text of the message.", 1},
    {NULL, NULL, NULL, 0}};
static const sb_arg SEARCH[] = {
    {"message_id", "string", "Exact message_id.", 0},
    {"sender_person_id", "string", "Exact person_id of the sender.", 0},
    {"sender_phone_number", "string", "Exact phone number of the sender.", 0},
    {"recipient_person_id", "string", "Exact person_id of the recipient.", 0},
    {"recipient_phone_number", "string", "Exact phone number of the recipient.", 0},
    {"content", "string", "Text to look for in the message; matched fuzzily.", 0},
    {"creation_timestamp_lowerbound", "number", "Only messages sent at or after this Unix timestamp.", 0},
    {"creation_timestamp_upperbound", "number", "Only messages sent at or before this Unix timestamp.", 0},
    {NULL, NULL, NULL, 0}};

const sb_tool sb_message_tools[] = {
    {"send_message_with_phone_number",
     "Send a text message to a phone number. Needs cellular service. Returns the message_id.", SEND, send_message},
    {"search_messages", "Search sent and received text messages; every given field must match. Returns a list.",
     SEARCH, search_messages},
    {NULL, NULL, NULL, NULL}};
