/* Status names and the first-error-wins message recorder used by every
 * module (see orchard/error.h). */
#include "orchard/error.h"

#include <stdio.h>
#include <string.h>

const char *orc_status_name(orc_status code) {
    switch (code) {
    case ORC_OK: return "ok";
    case ORC_EINVAL: return "invalid argument";
    case ORC_ESHAPE: return "shape error";
    case ORC_EDTYPE: return "dtype error";
    case ORC_ENOMEM: return "out of memory";
    case ORC_EIO: return "i/o error";
    case ORC_EFORMAT: return "format error";
    case ORC_EUNSUPPORTED: return "unsupported";
    case ORC_ERANGE: return "out of range";
    }
    return "unknown error";
}

orc_status orc_error_setv(orc_error *err, orc_status code, const char *fmt, va_list ap) {
    if (!err || err->code != ORC_OK) return code;
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    return code;
}

orc_status orc_error_set(orc_error *err, orc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    orc_error_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void orc_error_clear(orc_error *err) {
    if (!err) return;
    err->code = ORC_OK;
    err->msg[0] = '\0';
}

const char *orc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    if (cap == 0) return buf;
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}
