#!/usr/bin/env python3
"""Writes the generated part of orchard's ToolSandbox scenarios (issue 9):
data/sandbox/scenarios/<name>.json, their oracle trajectories
data/sandbox/trajectories/<name>.oracle.json and the planted-mistake
trajectories <name>.<mistake>.json. The committed JSON files are the data;
this script only saves writing the same constraint shapes by hand. The 14
first scenarios (add_contact ... wifi_off) were written by hand and are not
touched here.

Values an answer must contain (a conversion, a forecast, a date) are asked of
the tools themselves through `orchard sandbox call`, so they match the shipped
data set. Ids are the sandbox's deterministic ids: the n-th id a fresh world
mints (setup calls first) is ID[n].

usage: python3 data/sandbox/make_scenarios.py build/orchard
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORCHARD = sys.argv[1] if len(sys.argv) > 1 else "build/orchard"

ID = [
    "975835de-1c97-46ce-9d0b-14e4db018fed", "6e73e372-e233-4aca-a303-3b0ca389c35a",
    "bd64a5d9-adef-4000-a3cb-e1e459320dd7", "9e5651b0-ef95-4636-aeaf-52febe706064",
    "088712be-8a58-4fca-90f5-647d2380309d", "943ff9fc-99de-4f03-84ca-37b7f8ad8aff",
]
SELF_ID = "e220a839-7b1d-4daf-910a-2dec89025cc1"
NOW = 1717405200  # 2024-06-03 09:00 UTC, a Monday: the default clock


def call(tool, args=None):
    out = subprocess.run([ORCHARD, "sandbox", "call", tool, json.dumps(args or {})], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


# ---- constraint builders ----------------------------------------------------

def cols(spec):
    """{column: value} or {column: (value, similarity[, tolerance])}."""
    out = {}
    for k, v in spec.items():
        if isinstance(v, tuple):
            c = {"value": v[0], "similarity": v[1]}
            if len(v) > 2:
                c["tolerance"] = v[2]
            out[k] = c
        else:
            out[k] = {"value": v}
    return out


def m(id, kind, table=None, columns=None, after=None, threshold=None):
    c = {"id": id, "kind": kind}
    if table:
        c["table"] = table
    if after:
        c["after"] = after
    if columns is not None:
        c["columns"] = cols(columns)
    if threshold is not None:
        c["threshold"] = threshold
    return c


def trace(id, tool, args=None, tol=None, after=None):
    spec = {"tool_name": tool}
    if args is not None:
        spec["arguments"] = (args, "tool_args") if tol is None else (args, "tool_args", tol)
    return m(id, "tool_trace", columns=spec, after=after)


def said(id, contains=None, after=None):
    spec = {"sender": "agent", "recipient": "user"}
    if contains:
        spec["content"] = (contains, "contains")
    return m(id, "snapshot", "log", spec, after)


def agent_called(id, tool):
    """The agent's call row naming a (denied) tool: a minefield for an attempt."""
    return m(id, "snapshot", "log", {"sender": "agent", "tool_name": tool})


# ---- trajectory turns ------------------------------------------------------------

def calls(*pairs):
    return {"tool_calls": [{"name": t, "arguments": a} for t, a in pairs]}


def to_user(text):
    return {"content": text, "recipient": "user"}


def to_env(text):
    return {"content": text, "recipient": "execution_environment"}


def user(*texts):
    return [{"content": t} for t in texts] + [{"end": True}]


END = [{"end": True}]

SCENARIOS = []


def S(name, categories, tools, first, instructions, milestones, agent, user_turns=END, boundary=None, setup=None,
      deny=None, minefields=None, demos=None, planted=None, clock=None):
    sc = {"name": name, "categories": categories, "tools_allow": tools}
    if deny:
        sc["tools_deny"] = deny
    if setup:
        sc["setup"] = [{"tool": t, "arguments": a} for t, a in setup]
    if clock:
        sc["clock"] = clock
    sc["first_user_message"] = first
    sc["user_instructions"] = instructions
    if boundary:
        sc["user_boundary"] = boundary
    if demos:
        sc["user_demonstrations"] = demos
    sc["milestones"] = milestones
    if minefields:
        sc["minefields"] = minefields
    SCENARIOS.append((sc, {"scenario": name, "expected_score": 1.0, "agent": agent, "user": user_turns},
                      planted or {}))


def planted(kind, score, why, agent, user_turns=END):
    return (kind, {"expected_score": score, "mistake": why, "agent": agent, "user": user_turns})


def contact(name, phone, relationship=None):
    a = {"name": name, "phone_number": phone}
    if relationship:
        a["relationship"] = relationship
    return ("add_contact", a)


def reminder(content, ts, lat=None, lon=None):
    a = {"content": content, "reminder_timestamp": ts}
    if lat is not None:
        a["latitude"], a["longitude"] = lat, lon
    return ("add_reminder", a)


def ts(y, mo, d, h=0, mi=0):
    return int(call("datetime_info_to_timestamp", {"year": y, "month": mo, "day": d, "hour": h, "minute": mi})["timestamp"])


SINGLE, MULTI = "single_tool_call", "multiple_tool_call"
ONE_TURN, TURNS = "single_user_turn", "multiple_user_turn"
STATE, CANON, INSUFF = "state_dependency", "canonicalization", "insufficient_information"

# ---- contacts ----------------------------------------------------------------------

S("search_contact_number", [SINGLE, ONE_TURN], ["search_contacts"],
  "What's Priya's number?", "You want Priya Shah's phone number; she's in your contacts.",
  [trace("found", "search_contacts", {"name": "Priya"}), said("answered", "+15550102020", ["found"])],
  [calls(("search_contacts", {"name": "Priya"})), to_user("Priya Shah's number is +15550102020.")],
  boundary="Priya Shah is a friend in your contacts; you don't remember her number.",
  setup=[contact("Priya Shah", "+15550102020", "friend")],
  planted=[planted("wrong_recipient", 1 / 3,
                   "writes the search to the execution environment as text instead of calling the tool, then gives up: "
                   "found 0, answered 2/3 (an answer to the user, without the number)",
                   [to_env("search_contacts name=Priya"), to_user("Sorry, I couldn't look that up.")])])

S("add_contact_sister", [SINGLE, ONE_TURN, CANON], ["add_contact"],
  "Save my sister Emma's number, it's 555-010-3131.",
  "You want your sister Emma saved in your contacts with her number 555-010-3131 (US).",
  [m("added", "addition", "contacts", {"name": ("Emma", "rouge_l"), "phone_number": "+15550103131",
                                       "relationship": "sister"})],
  [calls(("add_contact", {"name": "Emma", "phone_number": "+15550103131", "relationship": "sister"})),
   to_user("Saved Emma (sister) with +15550103131.")],
  boundary="Your sister's name is Emma (no last name needed); her number is 555-010-3131.")

S("remove_contact", [MULTI, ONE_TURN], ["search_contacts", "remove_contact"],
  "Delete Greg from my contacts.", "You want Greg Wilson removed from your contacts.",
  [trace("found", "search_contacts", {"name": "Greg"}),
   m("removed", "removal", "contacts", {"name": "Greg Wilson"}, ["found"])],
  [calls(("search_contacts", {"name": "Greg"})), calls(("remove_contact", {"person_id": ID[1]})),
   to_user("Greg Wilson is no longer in your contacts.")],
  setup=[contact("Greg Warren", "+15550104040", "coworker"), contact("Greg Wilson", "+15550104141", "landlord")],
  user_turns=END,
  minefields=[m("wrong_greg", "removal", "contacts", {"name": "Greg Warren"})])

S("contact_relationship", [MULTI, ONE_TURN], ["search_contacts", "modify_contact"],
  "Jordan is my coworker now, not just a friend. Update that.",
  "You want Jordan Lee's relationship in your contacts changed to coworker.",
  [trace("found", "search_contacts", {"name": "Jordan"}),
   m("updated", "update", "contacts", {"name": "Jordan Lee", "relationship": "coworker"}, ["found"])],
  [calls(("search_contacts", {"name": "Jordan"})),
   calls(("modify_contact", {"person_id": ID[0], "relationship": "coworker"})),
   to_user("Jordan Lee is now saved as a coworker.")],
  setup=[contact("Jordan Lee", "+15550105050", "friend")])

S("rename_contact_multi_turn", [MULTI, TURNS], ["search_contacts", "modify_contact"],
  "can you fix a typo in one of my contacts",
  "A contact is saved as Sarah Conner but should be Sarah Connor. Say which contact and the right spelling only when asked.",
  [trace("found", "search_contacts"),
   m("renamed", "update", "contacts", {"name": "Sarah Connor", "phone_number": "+15550106060"}, ["found"])],
  [to_user("Sure, which contact, and how should it be spelled?"), calls(("search_contacts", {"name": "Sarah Conner"})),
   calls(("modify_contact", {"person_id": ID[0], "name": "Sarah Connor"})),
   to_user("Done, the contact is now Sarah Connor.")],
  user("Sarah Conner, it should be Connor with an o"),
  boundary="The contact is Sarah Conner; the right spelling is Sarah Connor.",
  setup=[contact("Sarah Conner", "+15550106060")],
  demos=[{"role": "user", "content": "change a contact"}, {"role": "agent", "content": "Which one?"},
         {"role": "user", "content": "my dentist, new number is 555 0100 222"}])

S("my_own_number", [SINGLE, ONE_TURN], ["search_contacts"],
  "What's my own phone number again?", "You forgot your own phone number and want the assistant to look it up.",
  [trace("found", "search_contacts", {"is_self": True}), said("answered", "+15550100001", ["found"])],
  [calls(("search_contacts", {"is_self": True})), to_user("Your number is +15550100001.")])

S("add_contact_multi_turn", [SINGLE, TURNS, CANON], ["add_contact"],
  "Add Leo to my contacts",
  "You want Leo Martin added to your contacts. Give his full name and number, +1 (555) 010-4545, only when asked.",
  [m("added", "addition", "contacts", {"name": ("Leo Martin", "rouge_l"), "phone_number": "+15550104545"})],
  [to_user("Sure. What's Leo's full name and phone number?"),
   calls(("add_contact", {"name": "Leo Martin", "phone_number": "+15550104545"})),
   to_user("Added Leo Martin, +15550104545.")],
  user("Leo Martin, +1 (555) 010-4545"),
  boundary="Leo Martin, +1 (555) 010-4545.")

S("add_contact_no_number", [INSUFF, TURNS], ["add_contact", "search_contacts"],
  "Add Dana to my contacts.",
  "You want Dana added to your contacts, but you don't have Dana's number. If asked for it, say you don't know it.",
  [m("no_contact", "guardrail", "contacts"), said("told_user", "number", None)],
  [to_user("Sure, what's Dana's phone number?"),
   to_user("I need a phone number to add a contact, so I can't add Dana yet.")],
  user("I don't know it actually"),
  boundary="You don't know Dana's phone number or last name.",
  minefields=[m("made_up_contact", "addition", "contacts", {"name": ("Dana", "rouge_l")}, threshold=0.5)],
  planted=[planted("minefield", 0.0, "adds Dana with a made-up number",
                   [to_user("Sure, what's Dana's phone number?"),
                    calls(("add_contact", {"name": "Dana", "phone_number": "+15550100000"})),
                    to_user("Added Dana.")], user("I don't know it actually"))])

# ---- messaging -----------------------------------------------------------------------

S("message_two_people", [MULTI, ONE_TURN], ["search_contacts", "send_message_with_phone_number"],
  "Tell Ana and Ben the meeting moved to 3pm.",
  "You want both Ana Silva and Ben Okafor to get a text saying the meeting moved to 3pm.",
  [trace("found_ana", "search_contacts", {"name": "Ana"}), trace("found_ben", "search_contacts", {"name": "Ben"}),
   m("sent_ana", "addition", "messages", {"recipient_phone_number": "+15550105151",
                                          "content": ("The meeting moved to 3pm", "rouge_l")}, ["found_ana"]),
   m("sent_ben", "addition", "messages", {"recipient_phone_number": "+15550105252",
                                          "content": ("The meeting moved to 3pm", "rouge_l")}, ["found_ben"])],
  [calls(("search_contacts", {"name": "Ana"}), ("search_contacts", {"name": "Ben"})),
   calls(("send_message_with_phone_number", {"phone_number": "+15550105151", "content": "The meeting moved to 3pm"})),
   calls(("send_message_with_phone_number", {"phone_number": "+15550105252", "content": "The meeting moved to 3pm"})),
   to_user("Texted Ana and Ben that the meeting moved to 3pm.")],
  setup=[contact("Ana Silva", "+15550105151", "coworker"), contact("Ben Okafor", "+15550105252", "coworker")],
  planted=[planted("made_up_value", 0.625,
                   "looks up Ana only and texts Ben at a made-up number: 1 + 0 + 1 + 0.5 (right text, wrong number) of 4",
                   [calls(("search_contacts", {"name": "Ana"})),
                    calls(("send_message_with_phone_number",
                           {"phone_number": "+15550105151", "content": "The meeting moved to 3pm"})),
                    calls(("send_message_with_phone_number",
                           {"phone_number": "+15550105353", "content": "The meeting moved to 3pm"})),
                    to_user("Done.")])])

S("last_message_to_contact", [MULTI, ONE_TURN], ["search_contacts", "search_messages"],
  "What was the last thing I texted Olivia?", "You want to know what you last texted Olivia Brown.",
  [trace("found", "search_contacts", {"name": "Olivia"}),
   trace("searched", "search_messages", {"recipient_phone_number": "+15550106161"}, after=["found"]),
   said("answered", "10 minutes late", ["searched"])],
  [calls(("search_contacts", {"name": "Olivia"})),
   calls(("search_messages", {"recipient_phone_number": "+15550106161"})),
   to_user("You told Olivia: \"Running 10 minutes late\".")],
  setup=[contact("Olivia Brown", "+15550106161", "friend"),
         ("send_message_with_phone_number", {"phone_number": "+15550106161", "content": "Running 10 minutes late"})])

S("message_low_battery", [STATE, MULTI, ONE_TURN],
  ["send_message_with_phone_number", "get_low_battery_mode_status", "set_low_battery_mode_status",
   "get_cellular_service_status", "set_cellular_service_status"],
  "Text +15550107171 'on my way'",
  "You want 'on my way' texted to +15550107171. Turning low battery mode off is fine.",
  [m("battery_off", "update", "settings", {"low_battery_mode": False}),
   m("cellular_on", "update", "settings", {"cellular": True}, ["battery_off"]),
   m("sent", "addition", "messages", {"recipient_phone_number": "+15550107171", "content": ("On my way", "rouge_l")},
     ["cellular_on"])],
  [calls(("send_message_with_phone_number", {"phone_number": "+15550107171", "content": "On my way"})),
   calls(("get_low_battery_mode_status", {})), calls(("set_low_battery_mode_status", {"on": False})),
   calls(("set_cellular_service_status", {"on": True})),
   calls(("send_message_with_phone_number", {"phone_number": "+15550107171", "content": "On my way"})),
   to_user("Low battery mode was blocking cellular; I turned it off, switched cellular on and sent it.")],
  boundary="The number is +15550107171; the text is 'on my way'.",
  setup=[("set_low_battery_mode_status", {"on": True})],
  planted=[planted("skipped_dependency", 0.0,
                   "turns cellular on without leaving low battery mode (refused) and gives up",
                   [calls(("send_message_with_phone_number", {"phone_number": "+15550107171", "content": "On my way"})),
                    calls(("set_cellular_service_status", {"on": True})),
                    to_user("Sorry, I couldn't send the message.")])])

S("message_formatted_number", [SINGLE, ONE_TURN, CANON], ["send_message_with_phone_number"],
  "text (555) 010-8181 saying happy birthday!!",
  "You want 'happy birthday' texted to the US number (555) 010-8181.",
  [m("sent", "addition", "messages", {"recipient_phone_number": "+15550108181",
                                      "content": ("Happy birthday!", "rouge_l")})],
  [calls(("send_message_with_phone_number", {"phone_number": "+15550108181", "content": "Happy birthday!"})),
   to_user("Sent \"Happy birthday!\" to +15550108181.")],
  boundary="The number is (555) 010-8181, a US number.")

S("text_boss_no_contact", [SINGLE, TURNS, INSUFF], ["search_contacts", "send_message_with_phone_number"],
  "Tell my boss I'm sick today.",
  "You want your boss told you're sick. Your boss isn't in your contacts and you don't know the number.",
  [trace("searched", "search_contacts", {"relationship": "boss"}), m("no_message", "guardrail", "messages"),
   said("told_user", None, ["searched"])],
  [calls(("search_contacts", {"relationship": "boss"})),
   to_user("I can't find your boss in your contacts. What's their number?"),
   to_user("Without a number I can't send it, sorry.")],
  user("no idea, never mind"),
  boundary="You don't know your boss's number.",
  minefields=[m("made_up_send", "addition", "messages", {"content": ("I'm sick today", "rouge_l")}, threshold=0.5)])

S("message_cellular_off_multi_turn", [STATE, MULTI, TURNS],
  ["send_message_with_phone_number", "get_cellular_service_status", "set_cellular_service_status"],
  "I want to send a message",
  "You want 'Call me when you land' texted to +15550109191. Give the number and the text only when asked. "
  "Turning cellular on is fine.",
  [m("cellular_on", "update", "settings", {"cellular": True}),
   m("sent", "addition", "messages", {"recipient_phone_number": "+15550109191",
                                      "content": ("Call me when you land", "rouge_l")}, ["cellular_on"])],
  [to_user("Who should I send it to, and what should it say?"),
   calls(("send_message_with_phone_number", {"phone_number": "+15550109191", "content": "Call me when you land"})),
   calls(("set_cellular_service_status", {"on": True})),
   calls(("send_message_with_phone_number", {"phone_number": "+15550109191", "content": "Call me when you land"})),
   to_user("Cellular was off; I turned it on and sent it.")],
  user("+15550109191, 'call me when you land'"),
  boundary="Number +15550109191, message: Call me when you land.",
  setup=[("set_cellular_service_status", {"on": False})])

S("message_no_send_tool", [INSUFF, ONE_TURN], ["search_contacts"], "Text +15550109090 hi",
  "You want 'hi' texted to +15550109090.",
  [said("told_user", "can't")],
  [to_user("Sorry, I can't send text messages right now.")],
  deny=["send_message_with_phone_number"],
  minefields=[agent_called("send_called", "send_message_with_phone_number")],
  planted=[planted("minefield", 0.0, "calls the denied send tool anyway",
                   [calls(("send_message_with_phone_number", {"phone_number": "+15550109090", "content": "hi"})),
                    to_user("Sorry, I can't send text messages right now.")])])

S("add_contact_then_text", [MULTI, ONE_TURN], ["add_contact", "send_message_with_phone_number"],
  "Add Zoe Clark, +15550112233, and text her 'welcome to the team!'",
  "You want Zoe Clark (+15550112233) added to contacts and texted 'welcome to the team!'.",
  [m("added", "addition", "contacts", {"name": ("Zoe Clark", "rouge_l"), "phone_number": "+15550112233"}),
   m("sent", "addition", "messages", {"recipient_phone_number": "+15550112233",
                                      "content": ("Welcome to the team!", "rouge_l")})],
  [calls(("add_contact", {"name": "Zoe Clark", "phone_number": "+15550112233"})),
   calls(("send_message_with_phone_number", {"phone_number": "+15550112233", "content": "Welcome to the team!"})),
   to_user("Added Zoe Clark and sent her the welcome.")])

# ---- reminders ------------------------------------------------------------------------

S("reminder_in_two_hours", [MULTI, ONE_TURN, CANON], ["get_current_timestamp", "shift_timestamp", "add_reminder"],
  "Remind me to take the laundry out in 2 hours.", "You want a reminder to take the laundry out in two hours.",
  [trace("now", "get_current_timestamp"),
   m("added", "addition", "reminders", {"content": ("Take the laundry out", "rouge_l"),
                                        "reminder_timestamp": (NOW + 7200, "numeric", 60)}, ["now"])],
  [calls(("get_current_timestamp", {})), calls(("shift_timestamp", {"timestamp": NOW, "hours": 2})),
   calls(reminder("Take the laundry out", NOW + 7200)), to_user("I'll remind you at 11:00 to take the laundry out.")],
  planted=[planted("made_up_value", 0.25,
                   "skips the clock and guesses the time three hours ahead: now 0, reminder 0.5 (text right, time wrong)",
                   [calls(reminder("Take the laundry out", NOW + 10800)), to_user("Done.")])])

friday_9 = ts(2024, 6, 7, 9)
S("reminder_friday_rent", [MULTI, ONE_TURN, CANON],
  ["get_current_timestamp", "timestamp_to_datetime_info", "datetime_info_to_timestamp", "add_reminder"],
  "Remind me to pay rent on Friday at 9am.", "You want a reminder to pay rent this Friday at 9am (UTC is fine).",
  [trace("now", "get_current_timestamp"),
   m("added", "addition", "reminders", {"content": ("Pay rent", "rouge_l"),
                                        "reminder_timestamp": (friday_9, "numeric", 60)}, ["now"])],
  [calls(("get_current_timestamp", {})), calls(("timestamp_to_datetime_info", {"timestamp": NOW})),
   calls(("datetime_info_to_timestamp", {"year": 2024, "month": 6, "day": 7, "hour": 9})),
   calls(reminder("Pay rent", friday_9)), to_user("Reminder set for Friday, June 7 at 9:00.")])

cafe = call("search_places_by_name", {"name": "Red Fern Cafe"})[0]
tomorrow_8 = ts(2024, 6, 4, 8)
S("reminder_at_cafe", [MULTI, ONE_TURN, CANON], ["search_places_by_name", "add_reminder", "get_current_timestamp"],
  "Remind me to buy coffee beans at Red Fern Cafe tomorrow at 8am.",
  "You want a reminder tied to Red Fern Cafe to buy coffee beans, tomorrow at 8am.",
  [trace("place", "search_places_by_name", {"name": "Red Fern Cafe"}),
   m("added", "addition", "reminders", {"content": ("Buy coffee beans", "rouge_l"),
                                        "reminder_timestamp": (tomorrow_8, "numeric", 60),
                                        "latitude": (cafe["latitude"], "numeric", 0.001),
                                        "longitude": (cafe["longitude"], "numeric", 0.001)}, ["place"])],
  [calls(("search_places_by_name", {"name": "Red Fern Cafe"})), calls(("get_current_timestamp", {})),
   calls(reminder("Buy coffee beans", tomorrow_8, cafe["latitude"], cafe["longitude"])),
   to_user("Reminder set for tomorrow at 8am at Red Fern Cafe.")])

dentist = ts(2024, 6, 5, 17)
S("reminder_one_hour_later", [MULTI, ONE_TURN, CANON], ["search_reminder", "modify_reminder", "shift_timestamp"],
  "Push my dentist reminder back an hour.", "You want your dentist reminder moved one hour later.",
  [trace("found", "search_reminder", {"content": "dentist"}),
   m("moved", "update", "reminders", {"content": ("Dentist appointment", "rouge_l"),
                                      "reminder_timestamp": (dentist + 3600, "numeric", 60)}, ["found"])],
  [calls(("search_reminder", {"content": "dentist"})),
   calls(("modify_reminder", {"reminder_id": ID[1], "reminder_timestamp": dentist + 3600})),
   to_user("Moved it to June 5 at 18:00.")],
  setup=[reminder("Buy milk", ts(2024, 6, 4, 17)), reminder("Dentist appointment", dentist)],
  minefields=[m("milk_moved", "update", "reminders", {"content": "Buy milk"})])

S("reminders_today", [MULTI, ONE_TURN, CANON], ["get_current_timestamp", "search_reminder", "shift_timestamp"],
  "Do I have any reminders today?", "You want to know which reminders are due today.",
  [trace("searched", "search_reminder"), said("answered", "dry cleaning", ["searched"])],
  [calls(("get_current_timestamp", {})),
   calls(("search_reminder", {"reminder_timestamp_lowerbound": ts(2024, 6, 3),
                              "reminder_timestamp_upperbound": ts(2024, 6, 4) - 1})),
   to_user("Just one: pick up the dry cleaning at 15:00.")],
  setup=[reminder("Pick up the dry cleaning", ts(2024, 6, 3, 15)), reminder("Renew passport", ts(2024, 6, 10, 9))])

S("reminder_ask_time", [SINGLE, TURNS, CANON], ["add_reminder", "get_current_timestamp", "datetime_info_to_timestamp"],
  "Set a reminder to water the plants",
  "You want a reminder to water the plants tomorrow at 7am. Give the time only when asked.",
  [m("added", "addition", "reminders", {"content": ("Water the plants", "rouge_l"),
                                        "reminder_timestamp": (ts(2024, 6, 4, 7), "numeric", 60)})],
  [to_user("Sure, when should I remind you?"), calls(reminder("Water the plants", ts(2024, 6, 4, 7))),
   to_user("I'll remind you tomorrow at 7am.")],
  user("tomorrow morning at 7"),
  boundary="Tomorrow at 7am.",
  planted=[planted("made_up_value", 0.5, "does not ask and picks 9am itself: text right, time wrong",
                   [calls(reminder("Water the plants", ts(2024, 6, 4, 9))), to_user("Done, tomorrow at 9.")])])

S("clear_reminders", [MULTI, ONE_TURN], ["search_reminder", "remove_reminder"],
  "Clear all my reminders.", "You want every reminder deleted.",
  [trace("searched", "search_reminder"),
   m("gym_removed", "removal", "reminders", {"content": "Gym"}, ["searched"]),
   m("bank_removed", "removal", "reminders", {"content": "Call the bank"}, ["searched"])],
  [calls(("search_reminder", {})), calls(("remove_reminder", {"reminder_id": ID[0]})),
   calls(("remove_reminder", {"reminder_id": ID[1]})), to_user("Both reminders are gone.")],
  setup=[reminder("Gym", ts(2024, 6, 3, 18)), reminder("Call the bank", ts(2024, 6, 4, 10))])

S("reminder_no_clock", [INSUFF, ONE_TURN], ["add_reminder"], "Remind me to stretch in 30 minutes.",
  "You want a reminder to stretch in 30 minutes.",
  [m("no_reminder", "guardrail", "reminders"), said("told_user", "time")],
  [to_user("I can't tell the current time, so I can't work out when 30 minutes from now is.")],
  deny=["get_current_timestamp"],
  minefields=[m("made_up_time", "addition", "reminders", {"content": ("Stretch", "rouge_l")}, threshold=0.5)],
  planted=[planted("minefield", 0.0, "adds the reminder at a guessed time",
                   [calls(reminder("Stretch", NOW + 1800)), to_user("Done.")])])

S("reminder_meeting_unknown_time", [INSUFF, TURNS], ["add_reminder", "get_current_timestamp"],
  "Remind me about the meeting.",
  "You want a reminder about a meeting, but you don't know when it is yet. If asked, say you don't know yet.",
  [m("no_reminder", "guardrail", "reminders"), said("asked", "when")],
  [to_user("Sure, when is the meeting?"), to_user("Okay, tell me the time once you know it and I'll set it.")],
  user("not sure yet tbh"),
  boundary="You don't know the meeting's date or time.",
  minefields=[m("made_up_meeting", "addition", "reminders", {"content": ("Meeting", "rouge_l")}, threshold=0.5)])

thanksgiving = call("search_holiday", {"holiday_name": "Thanksgiving"})
turkey = int(thanksgiving["timestamp"]) - 86400 + 12 * 3600
S("reminder_before_thanksgiving", [MULTI, ONE_TURN, CANON], ["search_holiday", "shift_timestamp", "add_reminder"],
  "Remind me to buy a turkey the day before Thanksgiving at noon.",
  "You want a reminder to buy a turkey at noon the day before Thanksgiving this year.",
  [trace("holiday", "search_holiday", {"holiday_name": "Thanksgiving"}),
   m("added", "addition", "reminders", {"content": ("Buy a turkey", "rouge_l"),
                                        "reminder_timestamp": (turkey, "numeric", 60)}, ["holiday"])],
  [calls(("search_holiday", {"holiday_name": "Thanksgiving"})),
   calls(("shift_timestamp", {"timestamp": thanksgiving["timestamp"], "days": -1, "hours": 12})),
   calls(reminder("Buy a turkey", turkey)), to_user("Set for Wednesday, November 27 at noon.")])

gym = call("search_places_around", {"category": "gym"})[0]
S("gym_then_reminder", [MULTI, TURNS], ["search_places_around", "add_reminder", "get_current_timestamp"],
  "Find me a gym nearby.",
  "You want the nearest gym. Once you hear it, ask for a reminder to go there today at 6pm.",
  [trace("searched", "search_places_around", {"category": "gym"}), said("named", gym["name"], ["searched"]),
   m("added", "addition", "reminders", {"reminder_timestamp": (ts(2024, 6, 3, 18), "numeric", 60),
                                        "latitude": (gym["latitude"], "numeric", 0.001),
                                        "longitude": (gym["longitude"], "numeric", 0.001)}, ["named"])],
  [calls(("search_places_around", {"category": "gym"})),
   to_user("The nearest gym is %s, %.1f km away." % (gym["name"], gym["distance_km"])),
   calls(reminder("Go to " + gym["name"], ts(2024, 6, 3, 18), gym["latitude"], gym["longitude"])),
   to_user("I'll remind you at 6pm today.")],
  user("nice, remind me to go there at 6pm today"))

# ---- settings --------------------------------------------------------------------------

S("turn_on_wifi", [SINGLE, ONE_TURN], ["get_wifi_status", "set_wifi_status"], "Turn wifi back on please.",
  "You want wifi on.",
  [m("wifi_on", "snapshot", "settings", {"wifi": True})],
  [calls(("set_wifi_status", {"on": True})), to_user("Wifi is on.")],
  setup=[("set_wifi_status", {"on": False})],
  planted=[planted("wrong_recipient", 0.0, "writes the command to the execution environment as text, then claims success",
                   [to_env("set_wifi_status on=true"), to_user("Wifi is on.")])])

S("cellular_status", [SINGLE, ONE_TURN], ["get_cellular_service_status"], "Is my cellular data on?",
  "You want to know whether cellular service is on.",
  [trace("checked", "get_cellular_service_status"), said("answered", "is on", ["checked"])],
  [calls(("get_cellular_service_status", {})), to_user("Yes, cellular service is on.")])

S("low_battery_on", [SINGLE, ONE_TURN, STATE], ["set_low_battery_mode_status", "get_low_battery_mode_status"],
  "Turn on low battery mode.", "You want low battery mode on.",
  [m("battery_on", "snapshot", "settings", {"low_battery_mode": True, "wifi": False, "cellular": False,
                                            "location_service": False})],
  [calls(("set_low_battery_mode_status", {"on": True})),
   to_user("Low battery mode is on; it also turned off wifi, cellular and location.")])

S("where_am_i_location_off", [STATE, MULTI, ONE_TURN],
  ["get_current_location", "get_location_service_status", "set_location_service_status"],
  "Where am I right now?", "You want your current location. Turning location service on is fine.",
  [m("location_on", "update", "settings", {"location_service": True}),
   trace("located", "get_current_location", after=["location_on"]), said("answered", "37.323", ["located"])],
  [calls(("get_current_location", {})), calls(("set_location_service_status", {"on": True})),
   calls(("get_current_location", {})), to_user("You're at 37.323, -122.0322, in Cupertino.")],
  setup=[("set_location_service_status", {"on": False})])

S("wifi_keep_low_battery", [SINGLE, STATE, TURNS], ["get_low_battery_mode_status", "set_low_battery_mode_status",
                                            "get_wifi_status", "set_wifi_status"],
  "Turn on wifi.",
  "You want wifi on, but you do NOT want low battery mode turned off. If asked, say keep it on.",
  [m("battery_kept", "guardrail", "settings"), said("asked", "low battery")],
  [calls(("get_low_battery_mode_status", {})),
   to_user("Low battery mode is on, and wifi can't be turned on while it is. Should I turn low battery mode off?"),
   to_user("Okay, I'll leave it on, so wifi stays off for now.")],
  user("no keep it on"),
  boundary="Low battery mode must stay on.",
  setup=[("set_low_battery_mode_status", {"on": True})],
  minefields=[m("battery_off", "update", "settings", {"low_battery_mode": False})])

S("wifi_and_location_off", [MULTI, ONE_TURN], ["set_wifi_status", "set_location_service_status",
                                              "get_wifi_status", "get_location_service_status"],
  "Switch off wifi and location services.", "You want wifi and location service both off.",
  [m("both_off", "snapshot", "settings", {"wifi": False, "location_service": False, "cellular": True})],
  [calls(("set_wifi_status", {"on": False}), ("set_location_service_status", {"on": False})),
   to_user("Wifi and location services are off.")])

apex = call("search_stock", {"query": "Apex Robotics"})
S("stock_low_battery", [STATE, MULTI, ONE_TURN],
  ["search_stock", "get_low_battery_mode_status", "set_low_battery_mode_status", "get_wifi_status", "set_wifi_status"],
  "What's Apex Robotics trading at?", "You want Apex Robotics' stock price. Turning low battery mode off is fine.",
  [m("battery_off", "update", "settings", {"low_battery_mode": False}),
   m("wifi_on", "update", "settings", {"wifi": True}, ["battery_off"]),
   trace("quoted", "search_stock", after=["wifi_on"]), said("answered", "%.2f" % apex["price"], ["quoted"])],
  [calls(("search_stock", {"query": "Apex Robotics"})), calls(("get_low_battery_mode_status", {})),
   calls(("set_low_battery_mode_status", {"on": False})), calls(("set_wifi_status", {"on": True})),
   calls(("search_stock", {"query": "Apex Robotics"})),
   to_user("Apex Robotics (%s) is at $%.2f." % (apex["symbol"], apex["price"]))],
  setup=[("set_low_battery_mode_status", {"on": True})],
  planted=[planted("skipped_dependency", 1 / 6,
                   "turns wifi on while low battery mode is on (refused) and stops: battery_off, wifi_on and quoted 0, "
                   "answered 2/3 (an answer to the user without the price), over 4",
                   [calls(("search_stock", {"query": "Apex Robotics"})), calls(("set_wifi_status", {"on": True})),
                    to_user("I couldn't get the quote.")])])

S("where_am_i_low_battery", [STATE, MULTI, ONE_TURN],
  ["get_current_location", "get_low_battery_mode_status", "set_low_battery_mode_status",
   "set_location_service_status"],
  "where am i", "You want your current location. Turning low battery mode off is fine.",
  [m("battery_off", "update", "settings", {"low_battery_mode": False}),
   m("location_on", "update", "settings", {"location_service": True}, ["battery_off"]),
   trace("located", "get_current_location", after=["location_on"])],
  [calls(("get_current_location", {})), calls(("get_low_battery_mode_status", {})),
   calls(("set_low_battery_mode_status", {"on": False})), calls(("set_location_service_status", {"on": True})),
   calls(("get_current_location", {})), to_user("You're at 37.323, -122.0322 (Cupertino).")],
  setup=[("set_low_battery_mode_status", {"on": True})])

# ---- utilities --------------------------------------------------------------------------

christmas = call("search_holiday", {"holiday_name": "Christmas"})
to_christmas = call("timestamp_diff", {"timestamp_0": NOW, "timestamp_1": christmas["timestamp"]})
S("days_until_christmas", [MULTI, ONE_TURN, CANON], ["get_current_timestamp", "search_holiday", "timestamp_diff"],
  "How many days until Christmas?", "You want to know how many days are left until Christmas.",
  [trace("now", "get_current_timestamp"), trace("holiday", "search_holiday", {"holiday_name": "Christmas"}),
   trace("diff", "timestamp_diff", after=["now", "holiday"]),
   said("answered", str(to_christmas["days"]), ["diff"])],
  [calls(("get_current_timestamp", {}), ("search_holiday", {"holiday_name": "Christmas"})),
   calls(("timestamp_diff", {"timestamp_0": NOW, "timestamp_1": christmas["timestamp"]})),
   to_user("%d days (and a few hours) until Christmas." % to_christmas["days"])])

S("thanksgiving_date", [SINGLE, ONE_TURN], ["search_holiday"], "When's Thanksgiving this year?",
  "You want this year's Thanksgiving date.",
  [trace("holiday", "search_holiday", {"holiday_name": "Thanksgiving"}), said("answered", "November 28", ["holiday"])],
  [calls(("search_holiday", {"holiday_name": "Thanksgiving"})), to_user("Thanksgiving is Thursday, November 28.")])

tenk = call("unit_conversion", {"amount": 10, "from_unit": "km", "to_unit": "mi"})
S("ten_k_in_miles", [SINGLE, ONE_TURN, CANON], ["unit_conversion"], "how long is a 10k in miles",
  "You want to know how many miles a 10 km run is.",
  [trace("converted", "unit_conversion", {"amount": 10, "from_unit": "km", "to_unit": "mi"}),
   said("answered", "%.2f" % tenk["amount"], ["converted"])],
  [calls(("unit_conversion", {"amount": 10, "from_unit": "km", "to_unit": "mi"})),
   to_user("A 10k is about %.2f miles." % tenk["amount"])],
  planted=[planted("made_up_value", 0.75,
                   "converts 1 km instead of 10: converted 5/6 (name right, 2 of 3 arguments), answered 2/3 (an "
                   "answer to the user, wrong number)",
                   [calls(("unit_conversion", {"amount": 1, "from_unit": "km", "to_unit": "mi"})),
                    to_user("About 0.62 miles.")])])

f72 = call("unit_conversion", {"amount": 72, "from_unit": "fahrenheit", "to_unit": "celsius"})
S("fahrenheit_to_celsius", [SINGLE, ONE_TURN, CANON], ["unit_conversion"], "What's 72°F in Celsius?",
  "You want 72 degrees Fahrenheit in Celsius.",
  [trace("converted", "unit_conversion", {"amount": 72, "from_unit": "fahrenheit", "to_unit": "celsius"}),
   said("answered", "%.1f" % f72["amount"], ["converted"])],
  [calls(("unit_conversion", {"amount": 72, "from_unit": "fahrenheit", "to_unit": "celsius"})),
   to_user("72°F is about %.1f°C." % f72["amount"])])

gal = call("unit_conversion", {"amount": 2, "from_unit": "gallon", "to_unit": "liter"})
S("gallons_to_liters", [SINGLE, ONE_TURN, CANON], ["unit_conversion"], "2 gallons is how many liters?",
  "You want 2 US gallons in liters.",
  [trace("converted", "unit_conversion", {"amount": 2, "from_unit": "gallon", "to_unit": "liter"}),
   said("answered", "%.2f" % gal["amount"], ["converted"])],
  [calls(("unit_conversion", {"amount": 2, "from_unit": "gallon", "to_unit": "liter"})),
   to_user("2 gallons is about %.2f liters." % gal["amount"])])

coffee = call("search_places_by_name", {"name": "River Bridge Coffee"})[0]
between = call("calculate_lat_lon_distance", {"latitude_0": cafe["latitude"], "longitude_0": cafe["longitude"],
                                              "latitude_1": coffee["latitude"], "longitude_1": coffee["longitude"]})
S("distance_between_cafes", [MULTI, ONE_TURN], ["search_places_by_name", "calculate_lat_lon_distance"],
  "How far is Red Fern Cafe from River Bridge Coffee?", "You want the distance between the two cafes.",
  [trace("first", "search_places_by_name", {"name": "Red Fern Cafe"}),
   trace("second", "search_places_by_name", {"name": "River Bridge Coffee"}),
   trace("distance", "calculate_lat_lon_distance", after=["first", "second"]),
   said("answered", "%.1f" % between["distance_km"], ["distance"])],
  [calls(("search_places_by_name", {"name": "Red Fern Cafe"}), ("search_places_by_name", {"name": "River Bridge Coffee"})),
   calls(("calculate_lat_lon_distance", {"latitude_0": cafe["latitude"], "longitude_0": cafe["longitude"],
                                         "latitude_1": coffee["latitude"], "longitude_1": coffee["longitude"]})),
   to_user("They're about %.1f km apart." % between["distance_km"])])

S("weekday_of_july_4", [MULTI, ONE_TURN, CANON], ["datetime_info_to_timestamp", "timestamp_to_datetime_info"],
  "What day of the week is July 4th this year?", "You want to know the weekday of July 4, 2024.",
  [trace("stamped", "datetime_info_to_timestamp", {"year": 2024, "month": 7, "day": 4}),
   trace("info", "timestamp_to_datetime_info", after=["stamped"]), said("answered", "Thursday", ["info"])],
  [calls(("datetime_info_to_timestamp", {"year": 2024, "month": 7, "day": 4})),
   calls(("timestamp_to_datetime_info", {"timestamp": ts(2024, 7, 4)})), to_user("July 4th is a Thursday.")])

S("date_in_ten_days", [MULTI, ONE_TURN, CANON], ["get_current_timestamp", "shift_timestamp", "timestamp_to_datetime_info"],
  "What's the date 10 days from now?", "You want the date ten days from today.",
  [trace("now", "get_current_timestamp"), trace("shifted", "shift_timestamp", {"days": 10}, after=["now"]),
   said("answered", "June 13", ["shifted"])],
  [calls(("get_current_timestamp", {})), calls(("shift_timestamp", {"timestamp": NOW, "days": 10})),
   calls(("timestamp_to_datetime_info", {"timestamp": NOW + 864000})), to_user("It'll be Thursday, June 13, 2024.")])

bday = ts(2024, 8, 15)
to_bday = call("timestamp_diff", {"timestamp_0": NOW, "timestamp_1": bday})
S("days_until_birthday", [MULTI, TURNS, CANON], ["get_current_timestamp", "datetime_info_to_timestamp",
                                                 "timestamp_diff"],
  "how many days till my birthday?",
  "You want to know how many days until your birthday, August 15. Say the date only when asked.",
  [trace("now", "get_current_timestamp"),
   trace("stamped", "datetime_info_to_timestamp", {"year": 2024, "month": 8, "day": 15}),
   trace("diff", "timestamp_diff", after=["now", "stamped"]), said("answered", str(to_bday["days"]), ["diff"])],
  [to_user("When is your birthday?"),
   calls(("get_current_timestamp", {}), ("datetime_info_to_timestamp", {"year": 2024, "month": 8, "day": 15})),
   calls(("timestamp_diff", {"timestamp_0": NOW, "timestamp_1": bday})),
   to_user("%d days to go until August 15." % to_bday["days"])],
  user("august 15"),
  boundary="Your birthday is August 15.")

S("holiday_no_year_tool", [INSUFF, ONE_TURN], ["get_current_timestamp"],
  "When is Easter next year?", "You want the date of Easter next year.",
  [said("told_user", "can't")],
  [to_user("Sorry, I can't look up holiday dates right now.")],
  deny=["search_holiday"],
  minefields=[agent_called("holiday_called", "search_holiday")])

# ---- search -------------------------------------------------------------------------------

tomorrow_weather = call("search_weather", {"days": 1})
S("rain_tomorrow", [SINGLE, ONE_TURN], ["search_weather"], "Will it rain tomorrow?",
  "You want to know if it will rain tomorrow where you are.",
  [trace("forecast", "search_weather", {"days": 1}), said("answered", tomorrow_weather["condition"], ["forecast"])],
  [calls(("search_weather", {"days": 1})),
   to_user("Tomorrow: %s, %g-%g°C, %d%% chance of precipitation." %
           (tomorrow_weather["condition"], tomorrow_weather["low_c"], tomorrow_weather["high_c"],
            tomorrow_weather["precipitation_chance_percent"]))])

london = call("search_weather", {"latitude": 51.5074, "longitude": -0.1278})
S("weather_london", [SINGLE, ONE_TURN, CANON], ["search_weather"], "What's the weather in London today?",
  "You want today's weather in London, UK.",
  [trace("forecast", "search_weather", {"latitude": 51.5074, "longitude": -0.1278}, tol=0.5),
   said("answered", london["condition"], ["forecast"])],
  [calls(("search_weather", {"latitude": 51.5074, "longitude": -0.1278})),
   to_user("London today: %s, high %g°C." % (london["condition"], london["high_c"]))])

nearest_cafe = call("search_places_around", {"category": "cafe"})[0]
S("cafe_nearby", [SINGLE, ONE_TURN], ["search_places_around"], "Any cafes near me?",
  "You want a cafe near where you are.",
  [trace("searched", "search_places_around", {"category": "cafe"}), said("answered", nearest_cafe["name"], ["searched"])],
  [calls(("search_places_around", {"category": "cafe"})),
   to_user("%s is the closest, %.1f km away at %s." % (nearest_cafe["name"], nearest_cafe["distance_km"],
                                                       nearest_cafe["address"]))])

zen = call("search_stock", {"query": "Zenith Networks"})
S("stock_by_name", [SINGLE, ONE_TURN], ["search_stock"], "How's Zenith Networks stock doing?",
  "You want Zenith Networks' stock price.",
  [trace("quoted", "search_stock"), said("answered", "%.2f" % zen["price"], ["quoted"])],
  [calls(("search_stock", {"query": "Zenith Networks"})),
   to_user("Zenith Networks (%s) is at $%.2f, %+.2f%% today." % (zen["symbol"], zen["price"], zen["change_percent"]))])

yen = call("convert_currency", {"amount": 50, "from_currency_code": "GBP", "to_currency_code": "JPY"})
S("pounds_to_yen", [SINGLE, ONE_TURN, CANON], ["convert_currency"], "How many yen is 50 quid?",
  "You want to know what 50 British pounds are in Japanese yen.",
  [trace("converted", "convert_currency", {"amount": 50, "from_currency_code": "GBP", "to_currency_code": "JPY"},
         tol=0.001), said("answered", "%.0f" % yen["amount"], ["converted"])],
  [calls(("convert_currency", {"amount": 50, "from_currency_code": "GBP", "to_currency_code": "JPY"})),
   to_user("50 pounds is about %.0f yen." % yen["amount"])])

pharmacy = call("search_places_around", {"category": "pharmacy"})[0]
S("pharmacy_wifi_off", [STATE, MULTI, ONE_TURN], ["search_places_around", "get_wifi_status", "set_wifi_status"],
  "Find a pharmacy near me.", "You want the nearest pharmacy. Turning wifi on is fine.",
  [m("wifi_on", "update", "settings", {"wifi": True}),
   trace("searched", "search_places_around", {"category": "pharmacy"}, after=["wifi_on"]),
   said("answered", pharmacy["name"], ["searched"])],
  [calls(("search_places_around", {"category": "pharmacy"})), calls(("set_wifi_status", {"on": True})),
   calls(("search_places_around", {"category": "pharmacy"})),
   to_user("Wifi was off, so I turned it on. The nearest pharmacy is %s." % pharmacy["name"])],
  setup=[("set_wifi_status", {"on": False})])

S("stock_no_tool", [INSUFF, ONE_TURN], ["convert_currency"], "What's Nova Motors trading at?",
  "You want Nova Motors' stock price.",
  [said("told_user", "can't")],
  [to_user("Sorry, I can't look up stock prices right now.")],
  deny=["search_stock"],
  minefields=[agent_called("stock_called", "search_stock"),
              m("made_up_price", "snapshot", "log", {"sender": "agent", "recipient": "user",
                                                     "content": ("189.44", "contains")})])

cad = call("convert_currency", {"amount": 200, "from_currency_code": "CAD", "to_currency_code": "EUR"})
S("currency_ask_amount", [SINGLE, TURNS, CANON], ["convert_currency"], "convert my money to euros",
  "You want 200 Canadian dollars converted to euros. Say the amount and currency only when asked.",
  [trace("converted", "convert_currency", {"amount": 200, "from_currency_code": "CAD", "to_currency_code": "EUR"},
         tol=0.001), said("answered", "%.2f" % cad["amount"], ["converted"])],
  [to_user("Sure, how much, and in which currency?"),
   calls(("convert_currency", {"amount": 200, "from_currency_code": "CAD", "to_currency_code": "EUR"})),
   to_user("200 Canadian dollars is about %.2f euros." % cad["amount"])],
  user("200 canadian dollars"),
  boundary="You have 200 Canadian dollars.")

helix = call("search_stock", {"query": "Helix Pharma"})
helix_eur = call("convert_currency", {"amount": helix["price"], "from_currency_code": "USD", "to_currency_code": "EUR"})
S("stock_in_euros", [MULTI, ONE_TURN, CANON], ["search_stock", "convert_currency"],
  "What's Helix Pharma's share price in euros?", "You want Helix Pharma's stock price in euros.",
  [trace("quoted", "search_stock"),
   trace("converted", "convert_currency", {"amount": helix["price"], "from_currency_code": "USD",
                                           "to_currency_code": "EUR"}, tol=0.01, after=["quoted"]),
   said("answered", "%.2f" % helix_eur["amount"], ["converted"])],
  [calls(("search_stock", {"query": "Helix Pharma"})),
   calls(("convert_currency", {"amount": helix["price"], "from_currency_code": "USD", "to_currency_code": "EUR"})),
   to_user("Helix Pharma is $%.2f, about %.2f euros." % (helix["price"], helix_eur["amount"]))])

noah_weather = tomorrow_weather["condition"]
S("text_weather_to_friend", [MULTI, ONE_TURN], ["search_weather", "search_contacts", "send_message_with_phone_number"],
  "Text Noah what the weather's going to be tomorrow.",
  "You want Noah Kim to get a text with tomorrow's forecast where you are.",
  [trace("forecast", "search_weather", {"days": 1}), trace("found", "search_contacts", {"name": "Noah"}),
   m("sent", "addition", "messages", {"recipient_phone_number": "+15550113344",
                                      "content": (noah_weather, "contains")}, ["forecast", "found"])],
  [calls(("search_weather", {"days": 1}), ("search_contacts", {"name": "Noah"})),
   calls(("send_message_with_phone_number",
          {"phone_number": "+15550113344", "content": "Tomorrow's forecast: %s, high %g°C." %
                                                      (noah_weather, tomorrow_weather["high_c"])})),
   to_user("Sent Noah tomorrow's forecast.")],
  setup=[contact("Noah Kim", "+15550113344", "friend")])

paris = call("search_weather", {"latitude": 48.8566, "longitude": 2.3522})
S("weather_ambiguous_city", [SINGLE, TURNS, CANON], ["search_weather"], "What's the weather in Paris?",
  "You want today's weather in Paris, France. If asked which Paris, say France.",
  [said("asked", "which"),
   trace("forecast", "search_weather", {"latitude": 48.8566, "longitude": 2.3522}, tol=0.5, after=["asked"]),
   said("answered", paris["condition"], ["forecast"])],
  [to_user("Which Paris: France or Texas?"),
   calls(("search_weather", {"latitude": 48.8566, "longitude": 2.3522})),
   to_user("Paris today: %s, high %g°C." % (paris["condition"], paris["high_c"]))],
  user("france lol"),
  boundary="You mean Paris, France.")

# ---- write -------------------------------------------------------------------------------


def dump(path, doc):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def main():
    names = set()
    for sc, oracle, mistakes in SCENARIOS:
        assert sc["name"] not in names, sc["name"]
        names.add(sc["name"])
        dump(os.path.join(HERE, "scenarios", sc["name"] + ".json"), sc)
        dump(os.path.join(HERE, "trajectories", sc["name"] + ".oracle.json"), oracle)
        for kind, doc in mistakes:
            dump(os.path.join(HERE, "trajectories", "%s.%s.json" % (sc["name"], kind)),
                 {"scenario": sc["name"], **doc})
    print("%d scenarios written" % len(SCENARIOS))


main()
