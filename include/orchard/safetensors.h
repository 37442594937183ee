/* orchard/safetensors.h: reading and writing safetensors files.
 *
 * This module owns the safetensors format: an 8-byte little-endian header
 * length N, N bytes of UTF-8 JSON (an object mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
 * "__metadata__" object of string values), then the byte buffer that the
 * offsets index. A file is opened by memory-mapping it read-only and checking
 * every rule before any tensor is handed out: a file that breaks one fails
 * with ORC_EFORMAT and a message naming the file, the tensor and the problem.
 * The buffer must be covered by the tensors exactly, from byte 0, with no hole
 * and no overlap (the rule the reference implementation enforces).
 * Writing goes through a temporary file that is synced and renamed, so the
 * target is either the old file or the complete new one.
 *
 * Dtypes: F32, F16, BF16, I32, I64 and U8 are supported by the readers below.
 * F64, I8, I16, U16, U32, U64, BOOL, F8_E4M3 and F8_E5M2 are known: a file
 * holding them opens, their raw bytes are reachable through
 * orc_st_tensor_info.data, and the converting readers refuse them with
 * ORC_EUNSUPPORTED. Any other dtype string is ORC_EFORMAT.
 *
 * Dimensions: a file tensor may have up to ORC_ST_MAX_DIMS (8) dimensions and
 * is readable flat (orc_st_read_f32 / _i32). Orchard tensors have at most
 * ORC_MAX_DIMS (4), so orc_st_load / orc_st_read_into refuse more with
 * ORC_ESHAPE. More than 8 dimensions is ORC_EUNSUPPORTED at open.
 *
 * The host must be little-endian (checked at compile time). */
#ifndef ORCHARD_SAFETENSORS_H
#define ORCHARD_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/arena.h"
#include "orchard/error.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_ST_MAX_DIMS 8
/* Headers longer than this are refused (the reference reader's limit). */
#define ORC_ST_MAX_HEADER 100000000ull

typedef enum orc_st_dtype {
    /* supported by the converting readers */
    ORC_ST_F32 = 0,
    ORC_ST_F16,
    ORC_ST_BF16,
    ORC_ST_I32,
    ORC_ST_I64,
    ORC_ST_U8,
    /* known to the format; raw access only */
    ORC_ST_F64,
    ORC_ST_I8,
    ORC_ST_I16,
    ORC_ST_U16,
    ORC_ST_U32,
    ORC_ST_U64,
    ORC_ST_BOOL,
    ORC_ST_F8_E4M3,
    ORC_ST_F8_E5M2,
    ORC_ST_DTYPE_COUNT
} orc_st_dtype;

/* "F32", "BF16", ...; "?" for a value out of range. */
const char *orc_st_dtype_name(orc_st_dtype dt);
/* Bytes per element; 0 for a value out of range. */
size_t orc_st_dtype_size(orc_st_dtype dt);

typedef struct orc_st_file orc_st_file;

typedef struct orc_st_tensor_info {
    const char *name;
    orc_st_dtype dtype;
    int ndim;                          /* 0 (scalar) .. ORC_ST_MAX_DIMS */
    int64_t shape[ORC_ST_MAX_DIMS];    /* unused dims are 0 */
    int64_t numel;                     /* 1 for a scalar */
    size_t nbytes;                     /* numel * element size */
    size_t offset;                     /* begin, relative to the buffer */
    /* Pointer into the mapped file (or the parsed memory). Not necessarily
     * aligned to the element size: read it with memcpy or the readers. */
    const void *data;
} orc_st_tensor_info;

/* Map path read-only and validate it. NULL with err filled on failure:
 * ORC_EIO when the file cannot be opened or mapped, ORC_EFORMAT when it breaks
 * the format, ORC_EUNSUPPORTED for more than 8 dimensions, ORC_ENOMEM. */
orc_st_file *orc_st_open(const char *path, orc_error *err);
/* Validate a safetensors image held in memory. The returned file points into
 * buf, which must stay alive and unchanged until orc_st_close. label names
 * the source in messages (NULL reads as "<memory>"). */
orc_st_file *orc_st_parse(const void *buf, size_t len, const char *label, orc_error *err);
/* Unmaps (for orc_st_open) and frees. NULL is allowed. */
void orc_st_close(orc_st_file *f);

/* Tensors, in order of their data offsets (ties by name). */
size_t orc_st_count(const orc_st_file *f);
const orc_st_tensor_info *orc_st_info(const orc_st_file *f, size_t i);
/* NULL when there is no tensor of that name (no error is recorded). */
const orc_st_tensor_info *orc_st_find(const orc_st_file *f, const char *name);

/* Metadata: value for key, or NULL. Entries are sorted by key. */
const char *orc_st_metadata(const orc_st_file *f, const char *key);
size_t orc_st_metadata_count(const orc_st_file *f);
const char *orc_st_metadata_key(const orc_st_file *f, size_t i);
const char *orc_st_metadata_value(const orc_st_file *f, size_t i);

/* Convert the named tensor to float32 into out, which holds n elements; n must
 * equal the tensor's numel. Sources: F32, F16, BF16. A missing tensor is
 * ORC_EFORMAT, n != numel is ORC_ESHAPE, an integer source ORC_EDTYPE, a
 * known but unsupported dtype ORC_EUNSUPPORTED. */
orc_status orc_st_read_f32(const orc_st_file *f, const char *name, float *out, int64_t n, orc_error *err);
/* Like orc_st_read_f32 for int32 out. Sources: I32, I64 (a value outside the
 * int32 range is ORC_ERANGE), U8. */
orc_status orc_st_read_i32(const orc_st_file *f, const char *name, int32_t *out, int64_t n, orc_error *err);

/* Load the named tensor into a new contiguous tensor of dtype dt (ORC_F32 from
 * F32/F16/BF16, ORC_I32 from I32/I64/U8) in arena a, after checking that its
 * shape is exactly (ndim, shape). A shape mismatch is ORC_ESHAPE with a message
 * naming the tensor and both shapes. The tensor's name is copied into a. */
orc_tensor *orc_st_load(const orc_st_file *f, orc_arena *a, const char *name, orc_dtype dt, int ndim,
                        const int64_t *shape, orc_error *err);
/* Fill an existing contiguous tensor (e.g. a model parameter) from the named
 * tensor, with the same shape check. */
orc_status orc_st_read_into(const orc_st_file *f, const char *name, orc_tensor *dst, orc_error *err);

/* ---- writing -------------------------------------------------------------- */

typedef struct orc_st_entry {
    const char *name;
    orc_st_dtype dtype;                /* how the values are stored in the file */
    int ndim;                          /* 0 .. ORC_ST_MAX_DIMS */
    int64_t shape[ORC_ST_MAX_DIMS];
    /* numel contiguous elements of dtype, little-endian; or float32 values when
     * from_f32 is set. May be NULL only when numel is 0. */
    const void *data;
    /* data is float32: convert to dtype (F32, F16 or BF16; round to nearest
     * even) while writing. */
    bool from_f32;
} orc_st_entry;

typedef struct orc_st_kv {
    const char *key;
    const char *value;
} orc_st_kv;

/* Describe a contiguous orchard tensor for orc_st_write: an ORC_F32 tensor is
 * stored as store (F32, F16 or BF16), an ORC_I32 tensor as I32 (store is
 * ignored). ORC_EINVAL for a non-contiguous tensor or a bad store dtype. */
orc_status orc_st_entry_from_tensor(orc_st_entry *e, const char *name, const orc_tensor *t, orc_st_dtype store,
                                    orc_error *err);

/* Write n tensors (data offsets contiguous from 0, in the given order) and
 * n_meta metadata pairs to path. The header is padded with spaces so the
 * buffer starts at a multiple of 8 bytes. The bytes go to "path.tmp.<pid>",
 * which is synced and renamed over path; on any failure the temporary is
 * removed and path is untouched. ORC_EINVAL for bad entries (duplicate or
 * empty name, "__metadata__" as a name, bad shape, invalid UTF-8), ORC_EIO
 * when the system refuses. */
orc_status orc_st_write(const char *path, const orc_st_entry *tensors, size_t n, const orc_st_kv *meta,
                        size_t n_meta, orc_error *err);

/* ---- 16-bit float conversions (round to nearest even; NaN stays NaN) ---- */
float orc_st_f16_to_f32(uint16_t h);
uint16_t orc_st_f32_to_f16(float f);
float orc_st_bf16_to_f32(uint16_t h);
uint16_t orc_st_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
