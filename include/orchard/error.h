/* orchard/error.h: status codes and error messages.
 *
 * Every fallible public function either returns an orc_status and fills an
 * orc_error the caller passes in, or (for graph ops) records the first failure
 * in its orc_ctx and returns NULL from then on. A message always names the
 * problem and the place: the file, the tensor name, the op, the shape. Nothing
 * in the library calls abort() or exit() on bad input. */
#ifndef ORCHARD_ERROR_H
#define ORCHARD_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_status {
    ORC_OK = 0,
    ORC_EINVAL,       /* bad argument or option */
    ORC_ESHAPE,       /* shapes that do not fit together */
    ORC_EDTYPE,       /* wrong element type */
    ORC_ENOMEM,       /* allocation failed */
    ORC_EIO,          /* the operating system refused a read or write */
    ORC_EFORMAT,      /* a file or message that breaks its format's rules */
    ORC_EUNSUPPORTED, /* valid, but not implemented (e.g. a device) */
    ORC_ERANGE        /* an index or value out of its allowed range */
} orc_status;

#define ORC_ERROR_MSG_MAX 512

typedef struct orc_error {
    orc_status code;
    char msg[ORC_ERROR_MSG_MAX];
} orc_error;

/* Short name of a status, e.g. "shape error". */
const char *orc_status_name(orc_status code);

/* Record an error. A NULL err is allowed (the caller did not ask for the
 * message). The first error wins: a later call does not overwrite a set one,
 * so the message names the root cause rather than a consequence. Returns code. */
orc_status orc_error_set(orc_error *err, orc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
orc_status orc_error_setv(orc_error *err, orc_status code, const char *fmt, va_list ap);

/* Reset to ORC_OK with an empty message. */
void orc_error_clear(orc_error *err);

/* Format a shape as "[2, 3, 4]" into buf (always NUL-terminated). */
const char *orc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
