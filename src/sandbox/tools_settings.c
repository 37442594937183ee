/* Settings tools: read and set cellular service, wifi, location service and
 * low battery mode, and read the current location. The dependencies live
 * here: low battery mode on turns the three services off, a service cannot
 * be enabled while low battery mode is on, the location needs location
 * service, and setting a value it already has is an error. */
#include <stddef.h>
#include <string.h>

#include "sandbox_internal.h"

typedef struct setting {
    const char *key;   /* column and result key */
    const char *label; /* for messages */
    size_t offset;     /* into sb_settings */
} setting;

static const setting SETTINGS[] = {
    {"cellular", "cellular service", offsetof(sb_settings, cellular)},
    {"wifi", "wifi", offsetof(sb_settings, wifi)},
    {"location_service", "location service", offsetof(sb_settings, location_service)},
    {"low_battery_mode", "low battery mode", offsetof(sb_settings, low_battery_mode)},
};

static int *field(sb_settings *s, const setting *k) { return (int *)((char *)s + k->offset); }

static json_t *get_status(orc_sandbox *sb, const setting *k, sb_exc *e) {
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return NULL;
    return json_pack("{s:b}", k->key, *field(&s, k));
}

static json_t *set_status(orc_sandbox *sb, const char *tool, const setting *k, json_t *args, sb_exc *e) {
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return NULL;
    int on = sb_bool(args, "on");
    int *f = field(&s, k);
    if (*f == on) return sb_raise(e, "%s: %s is already %s", tool, k->label, on ? "on" : "off");
    if (on && k != &SETTINGS[3] && s.low_battery_mode)
        return sb_raise(e, "%s: cannot turn %s on while low battery mode is on; turn low battery mode off first", tool,
                        k->label);
    *f = on;
    json_t *out = json_pack("{s:b}", k->key, on);
    if (k == &SETTINGS[3] && on) {
        s.cellular = s.wifi = s.location_service = 0;
        for (int i = 0; i < 3; i++) json_object_set_new(out, SETTINGS[i].key, json_false());
    }
    if (sb_settings_put(sb, &s, e)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

#define STATUS_TOOLS(NAME, IDX)                                                                                       \
    static json_t *get_##NAME(orc_sandbox *sb, json_t *args, sb_exc *e) {                                            \
        (void)args;                                                                                                    \
        return get_status(sb, &SETTINGS[IDX], e);                                                                      \
    }                                                                                                                  \
    static json_t *set_##NAME(orc_sandbox *sb, json_t *args, sb_exc *e) {                                            \
        return set_status(sb, "set_" #NAME "_status", &SETTINGS[IDX], args, e);                                        \
    }
STATUS_TOOLS(cellular_service, 0)
STATUS_TOOLS(wifi, 1)
STATUS_TOOLS(location_service, 2)
STATUS_TOOLS(low_battery_mode, 3)

static json_t *get_current_location(orc_sandbox *sb, json_t *args, sb_exc *e) {
    (void)args;
    sb_settings s;
    if (sb_settings_get(sb, &s, e)) return NULL;
    if (!s.location_service)
        return sb_raise(e, "get_current_location: location service is off; it must be on to read the location");
    return json_pack("{s:f, s:f}", "latitude", s.latitude, "longitude", s.longitude);
}

static const sb_arg NONE[] = {{NULL, NULL, NULL, 0}};
static const sb_arg ON[] = {{"on", "boolean", "true to turn it on, false to turn it off.", 1}, {NULL, NULL, NULL, 0}};

const sb_tool sb_setting_tools[] = {
    {"get_cellular_service_status", "Whether cellular service is on.", NONE, get_cellular_service},
    {"set_cellular_service_status", "Turn cellular service on or off. Refused while low battery mode is on.", ON,
     set_cellular_service},
    {"get_wifi_status", "Whether wifi is on.", NONE, get_wifi},
    {"set_wifi_status", "Turn wifi on or off. Refused while low battery mode is on.", ON, set_wifi},
    {"get_location_service_status", "Whether location service is on.", NONE, get_location_service},
    {"set_location_service_status", "Turn location service on or off. Refused while low battery mode is on.", ON,
     set_location_service},
    {"get_low_battery_mode_status", "Whether low battery mode is on.", NONE, get_low_battery_mode},
    {"set_low_battery_mode_status",
     "Turn low battery mode on or off. Turning it on turns cellular service, wifi and location service off.", ON,
     set_low_battery_mode},
    {"get_current_location", "The device's current latitude and longitude. Needs location service.", NONE,
     get_current_location},
    {NULL, NULL, NULL, NULL}};
