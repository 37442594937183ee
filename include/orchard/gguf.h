/* orchard/gguf.h: reading and writing GGUF files (ggml's model format).
 *
 * This module owns the GGUF container and the ggml tensor types. A file is
 * "GGUF", a u32 version (2 and 3 are read, 3 is written), a u64 tensor count,
 * a u64 key/value count, the key/values (a string key, a u32 value type, the
 * value; arrays are a u32 element type, a u64 count and the elements, and may
 * nest), the tensor infos (name, u32 n_dims, u64 dims in ggml order, u32 ggml
 * type, u64 offset into the data section), padding to `general.alignment`
 * (u32, default 32), and the data section. All integers are little-endian;
 * strings are a u64 length and that many bytes, without a terminator.
 * A file is opened by memory-mapping it read-only and checking every rule
 * before anything is handed out (truncation, lengths and counts against the
 * bytes that remain, value types, array nesting, duplicate keys and tensor
 * names, dimensions, offsets: aligned, inside the data section, no overlap);
 * a file that breaks one fails with ORC_EFORMAT and a message naming the file,
 * the key or tensor, and the problem. Writing goes through a builder and a
 * temporary file that is synced and renamed, so the target is either the old
 * file or the complete new one.
 *
 * Dimensions: ggml lists dims fastest-varying first, the reverse of orchard's
 * row-major shapes. orc_gguf_tensor_info carries both; the writer takes
 * row-major shapes and stores them reversed.
 *
 * ggml types: every type id ggml defines is known (name, block size, bytes
 * per block), so any file of known types opens and its raw bytes are
 * reachable. F32, F16, BF16, F64, Q8_0 and Q4_0 convert to float32; I8, I16,
 * I32 and I64 convert to int32; the others are ORC_EUNSUPPORTED on access.
 * An unknown type id is ORC_EFORMAT at open. */
#ifndef ORCHARD_GGUF_H
#define ORCHARD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_GGUF_MAX_DIMS 4          /* GGML_MAX_DIMS */
#define ORC_GGUF_DEFAULT_ALIGNMENT 32
#define ORC_GGUF_MAX_DEPTH 8         /* arrays nested deeper are refused */
#define ORC_GGUF_MAX_NAME 63         /* longest tensor name the writer accepts (ggml's limit) */
#define ORC_GGUF_VERSION 3           /* the version the writer produces */

/* ---- value types ------------------------------------------------------------- */

typedef enum orc_gguf_vtype {
    ORC_GGUF_UINT8 = 0,
    ORC_GGUF_INT8 = 1,
    ORC_GGUF_UINT16 = 2,
    ORC_GGUF_INT16 = 3,
    ORC_GGUF_UINT32 = 4,
    ORC_GGUF_INT32 = 5,
    ORC_GGUF_FLOAT32 = 6,
    ORC_GGUF_BOOL = 7,
    ORC_GGUF_STRING = 8,
    ORC_GGUF_ARRAY = 9,
    ORC_GGUF_UINT64 = 10,
    ORC_GGUF_INT64 = 11,
    ORC_GGUF_FLOAT64 = 12,
    ORC_GGUF_VTYPE_COUNT
} orc_gguf_vtype;

/* "UINT32", "STRING", ...; "?" out of range. */
const char *orc_gguf_vtype_name(orc_gguf_vtype t);
/* Bytes of one value of a fixed-size type; 0 for STRING, ARRAY, out of range. */
size_t orc_gguf_vtype_size(orc_gguf_vtype t);

/* ---- ggml tensor types --------------------------------------------------------- */

typedef enum orc_ggml_type {
    ORC_GGML_F32 = 0,
    ORC_GGML_F16 = 1,
    ORC_GGML_Q4_0 = 2,
    ORC_GGML_Q4_1 = 3,
    ORC_GGML_Q5_0 = 6,
    ORC_GGML_Q5_1 = 7,
    ORC_GGML_Q8_0 = 8,
    ORC_GGML_Q8_1 = 9,
    ORC_GGML_Q2_K = 10,
    ORC_GGML_Q3_K = 11,
    ORC_GGML_Q4_K = 12,
    ORC_GGML_Q5_K = 13,
    ORC_GGML_Q6_K = 14,
    ORC_GGML_Q8_K = 15,
    ORC_GGML_IQ2_XXS = 16,
    ORC_GGML_IQ2_XS = 17,
    ORC_GGML_IQ3_XXS = 18,
    ORC_GGML_IQ1_S = 19,
    ORC_GGML_IQ4_NL = 20,
    ORC_GGML_IQ3_S = 21,
    ORC_GGML_IQ2_S = 22,
    ORC_GGML_IQ4_XS = 23,
    ORC_GGML_I8 = 24,
    ORC_GGML_I16 = 25,
    ORC_GGML_I32 = 26,
    ORC_GGML_I64 = 27,
    ORC_GGML_F64 = 28,
    ORC_GGML_IQ1_M = 29,
    ORC_GGML_BF16 = 30,
    ORC_GGML_TQ1_0 = 34,
    ORC_GGML_TQ2_0 = 35,
    ORC_GGML_MXFP4 = 39,
    ORC_GGML_TYPE_COUNT = 40 /* ids below this that are not listed are unknown (removed by ggml) */
} orc_ggml_type;

#define ORC_QK8_0 32 /* Q8_0 block: f16 scale d, 32 int8; x = d * q */
#define ORC_QK4_0 32 /* Q4_0 block: f16 scale d, 16 bytes; low nibbles are 0..15, high 16..31; x = d * (q - 8) */

/* True for a type id ggml defines. */
bool orc_ggml_type_known(orc_ggml_type t);
/* "Q8_0", ...; "?" for an unknown id. */
const char *orc_ggml_type_name(orc_ggml_type t);
/* Elements per block (1 for plain types); 0 for an unknown id. */
int64_t orc_ggml_block_size(orc_ggml_type t);
/* Bytes per block; 0 for an unknown id. */
size_t orc_ggml_type_size(orc_ggml_type t);
/* Bytes of n elements, n a multiple of the block size. ORC_EINVAL for an
 * unknown type or a partial block, ORC_ERANGE on overflow. */
orc_status orc_ggml_nbytes(orc_ggml_type t, int64_t n, size_t *out, orc_error *err);

/* Convert n elements of type t at src (n a multiple of the block size) to
 * float32, as ggml dequantizes them. Types: F32, F16, BF16, F64, Q8_0, Q4_0.
 * Other known types are ORC_EUNSUPPORTED, integers ORC_EDTYPE. */
orc_status orc_ggml_dequantize(orc_ggml_type t, const void *src, float *dst, int64_t n, orc_error *err);
/* Convert n floats to type t at dst (orc_ggml_nbytes(t, n) bytes), as ggml's
 * reference quantizers do (quantize_row_q8_0_ref, quantize_row_q4_0_ref,
 * round-to-nearest-even halves). Types: F32, F16, BF16, Q8_0, Q4_0. ORC_EINVAL
 * for a partial block, ORC_EUNSUPPORTED for other types. */
orc_status orc_ggml_quantize(orc_ggml_type t, const float *src, void *dst, int64_t n, orc_error *err);

/* ---- reading ------------------------------------------------------------------ */

typedef struct orc_gguf_file orc_gguf_file;
/* A key/value (or, for nested arrays, an element array). Owned by the file. */
typedef struct orc_gguf_kv orc_gguf_kv;

typedef struct orc_gguf_tensor_info {
    const char *name;
    orc_ggml_type type;
    int n_dims;                        /* 0 .. 4, as stored */
    int64_t dims[ORC_GGUF_MAX_DIMS];   /* ggml order, dims[0] fastest; unused are 1 */
    int64_t shape[ORC_GGUF_MAX_DIMS];  /* row-major: shape[i] = dims[n_dims-1-i]; unused are 1 */
    int64_t numel;                     /* 1 for n_dims 0 */
    size_t nbytes;
    uint64_t offset;                   /* relative to the data section; a multiple of the alignment */
    /* Pointer into the mapping. Aligned to the alignment relative to the file
     * start; read it with memcpy or the readers. */
    const void *data;
} orc_gguf_tensor_info;

/* Map path read-only and validate it. NULL with err filled on failure:
 * ORC_EIO when the file cannot be opened or mapped, ORC_EFORMAT when it breaks
 * the format, ORC_EUNSUPPORTED for version 1 or a big-endian file, ORC_ENOMEM. */
orc_gguf_file *orc_gguf_open(const char *path, orc_error *err);
/* Validate a GGUF image in memory; the file points into buf, which must stay
 * alive and unchanged until orc_gguf_close. label names it in messages (NULL
 * reads as "<memory>"). */
orc_gguf_file *orc_gguf_parse(const void *buf, size_t len, const char *label, orc_error *err);
/* Unmaps (for orc_gguf_open) and frees. NULL is allowed. */
void orc_gguf_close(orc_gguf_file *f);

uint32_t orc_gguf_version(const orc_gguf_file *f);
uint32_t orc_gguf_alignment(const orc_gguf_file *f);
/* Byte offset of the data section in the file. */
size_t orc_gguf_data_offset(const orc_gguf_file *f);

/* Key/values in file order; lookup by key (NULL when absent; no error). */
size_t orc_gguf_kv_count(const orc_gguf_file *f);
const orc_gguf_kv *orc_gguf_kv_at(const orc_gguf_file *f, size_t i);
const orc_gguf_kv *orc_gguf_find_kv(const orc_gguf_file *f, const char *key);

const char *orc_gguf_kv_key(const orc_gguf_kv *kv);
orc_gguf_vtype orc_gguf_kv_type(const orc_gguf_kv *kv);
/* Arrays: the element type and count. Other values: ORC_GGUF_VTYPE_COUNT and 1. */
orc_gguf_vtype orc_gguf_kv_elem_type(const orc_gguf_kv *kv);
uint64_t orc_gguf_kv_len(const orc_gguf_kv *kv);

/* Typed scalar getters. Conversion rules: the integer getters take any
 * integer type (not BOOL) whose value fits, else ORC_ERANGE; the float getters
 * take FLOAT32, FLOAT64 and any integer type (rounded to nearest), a finite
 * FLOAT64 beyond the float range is ORC_ERANGE for get_f32; get_bool takes
 * BOOL only; get_str takes STRING only (NUL-terminated copy; len, when not
 * NULL, gets the byte length, which counts any embedded NUL). Any other type
 * is ORC_EDTYPE naming the key and both types. */
orc_status orc_gguf_kv_get_u32(const orc_gguf_kv *kv, uint32_t *out, orc_error *err);
orc_status orc_gguf_kv_get_i32(const orc_gguf_kv *kv, int32_t *out, orc_error *err);
orc_status orc_gguf_kv_get_u64(const orc_gguf_kv *kv, uint64_t *out, orc_error *err);
orc_status orc_gguf_kv_get_i64(const orc_gguf_kv *kv, int64_t *out, orc_error *err);
orc_status orc_gguf_kv_get_f32(const orc_gguf_kv *kv, float *out, orc_error *err);
orc_status orc_gguf_kv_get_f64(const orc_gguf_kv *kv, double *out, orc_error *err);
orc_status orc_gguf_kv_get_bool(const orc_gguf_kv *kv, bool *out, orc_error *err);
orc_status orc_gguf_kv_get_str(const orc_gguf_kv *kv, const char **out, size_t *len, orc_error *err);

/* The same by key; a missing key is ORC_EFORMAT naming the file and key. */
orc_status orc_gguf_get_u32(const orc_gguf_file *f, const char *key, uint32_t *out, orc_error *err);
orc_status orc_gguf_get_i32(const orc_gguf_file *f, const char *key, int32_t *out, orc_error *err);
orc_status orc_gguf_get_u64(const orc_gguf_file *f, const char *key, uint64_t *out, orc_error *err);
orc_status orc_gguf_get_i64(const orc_gguf_file *f, const char *key, int64_t *out, orc_error *err);
orc_status orc_gguf_get_f32(const orc_gguf_file *f, const char *key, float *out, orc_error *err);
orc_status orc_gguf_get_f64(const orc_gguf_file *f, const char *key, double *out, orc_error *err);
orc_status orc_gguf_get_bool(const orc_gguf_file *f, const char *key, bool *out, orc_error *err);
orc_status orc_gguf_get_str(const orc_gguf_file *f, const char *key, const char **out, size_t *len,
                            orc_error *err);

/* Arrays. Element i of a string array (NUL-terminated; len as for get_str),
 * or NULL when kv is not a string array or i is out of range. */
const char *orc_gguf_kv_arr_str(const orc_gguf_kv *kv, uint64_t i, size_t *len);
/* Element i of an array of arrays, or NULL. It answers the same calls as a
 * key/value (its key is its parent's). */
const orc_gguf_kv *orc_gguf_kv_arr_sub(const orc_gguf_kv *kv, uint64_t i);
/* Raw little-endian elements of an array of a fixed-size type (not
 * necessarily aligned), or NULL. */
const void *orc_gguf_kv_arr_data(const orc_gguf_kv *kv);
/* Copy all n elements of a numeric array, converted: arr_f32 from FLOAT32,
 * FLOAT64 and integer arrays; arr_i32 from integer and BOOL arrays (a value
 * outside int32 is ORC_ERANGE). Not an array, or another element type, is
 * ORC_EDTYPE; n != the count is ORC_ESHAPE. */
orc_status orc_gguf_kv_arr_f32(const orc_gguf_kv *kv, float *out, uint64_t n, orc_error *err);
orc_status orc_gguf_kv_arr_i32(const orc_gguf_kv *kv, int32_t *out, uint64_t n, orc_error *err);
orc_status orc_gguf_get_arr_f32(const orc_gguf_file *f, const char *key, float *out, uint64_t n, orc_error *err);
orc_status orc_gguf_get_arr_i32(const orc_gguf_file *f, const char *key, int32_t *out, uint64_t n,
                                orc_error *err);

/* Tensors in file order; lookup by name (NULL when absent; no error). */
size_t orc_gguf_tensor_count(const orc_gguf_file *f);
const orc_gguf_tensor_info *orc_gguf_tensor_at(const orc_gguf_file *f, size_t i);
const orc_gguf_tensor_info *orc_gguf_find_tensor(const orc_gguf_file *f, const char *name);

/* Convert the named tensor to float32 (see the type list at the top) into out,
 * which holds n == numel elements. Missing tensor ORC_EFORMAT, n != numel
 * ORC_ESHAPE, integer type ORC_EDTYPE, other known types ORC_EUNSUPPORTED. */
orc_status orc_gguf_read_f32(const orc_gguf_file *f, const char *name, float *out, int64_t n, orc_error *err);
/* Like read_f32 for int32 out from I8, I16, I32, I64 (outside int32 ORC_ERANGE). */
orc_status orc_gguf_read_i32(const orc_gguf_file *f, const char *name, int32_t *out, int64_t n, orc_error *err);
/* Fill a contiguous CPU tensor (ORC_F32 or ORC_I32) from the named tensor after
 * checking that the row-major shapes match (ORC_ESHAPE naming both). */
orc_status orc_gguf_read_into(const orc_gguf_file *f, const char *name, orc_tensor *dst, orc_error *err);

/* ---- writing -------------------------------------------------------------------- */

typedef struct orc_gguf_writer orc_gguf_writer;

orc_gguf_writer *orc_gguf_writer_new(orc_error *err);
void orc_gguf_writer_free(orc_gguf_writer *w);

/* Key/values, written in the order added. Keys must be non-empty, without
 * NUL, and unique (ORC_EINVAL). Values are copied. `general.alignment`, when
 * added, must be a UINT32 power of two and sets the writer's alignment. */
orc_status orc_gguf_add_u8(orc_gguf_writer *w, const char *key, uint8_t v, orc_error *err);
orc_status orc_gguf_add_i8(orc_gguf_writer *w, const char *key, int8_t v, orc_error *err);
orc_status orc_gguf_add_u16(orc_gguf_writer *w, const char *key, uint16_t v, orc_error *err);
orc_status orc_gguf_add_i16(orc_gguf_writer *w, const char *key, int16_t v, orc_error *err);
orc_status orc_gguf_add_u32(orc_gguf_writer *w, const char *key, uint32_t v, orc_error *err);
orc_status orc_gguf_add_i32(orc_gguf_writer *w, const char *key, int32_t v, orc_error *err);
orc_status orc_gguf_add_u64(orc_gguf_writer *w, const char *key, uint64_t v, orc_error *err);
orc_status orc_gguf_add_i64(orc_gguf_writer *w, const char *key, int64_t v, orc_error *err);
orc_status orc_gguf_add_f32(orc_gguf_writer *w, const char *key, float v, orc_error *err);
orc_status orc_gguf_add_f64(orc_gguf_writer *w, const char *key, double v, orc_error *err);
orc_status orc_gguf_add_bool(orc_gguf_writer *w, const char *key, bool v, orc_error *err);
orc_status orc_gguf_add_str(orc_gguf_writer *w, const char *key, const char *v, orc_error *err);
/* n elements of a fixed-size type (not STRING or ARRAY), packed little-endian
 * as in C arrays of that type (bool as 1-byte 0/1). */
orc_status orc_gguf_add_arr(orc_gguf_writer *w, const char *key, orc_gguf_vtype elem, const void *data, uint64_t n,
                            orc_error *err);
/* n NUL-terminated strings (e.g. a tokenizer vocabulary). */
orc_status orc_gguf_add_arr_str(orc_gguf_writer *w, const char *key, const char *const *strs, uint64_t n,
                                orc_error *err);

/* A tensor of a known type with a row-major shape (ndim 0..4; the last,
 * fastest dimension a multiple of the block size) and its raw bytes (nbytes
 * must match). The data is not copied: it must stay alive until the write. */
orc_status orc_gguf_add_tensor(orc_gguf_writer *w, const char *name, orc_ggml_type type, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes, orc_error *err);
/* The same from float32 values, converted to type (F32, F16, BF16, Q8_0,
 * Q4_0) while writing. */
orc_status orc_gguf_add_tensor_f32(orc_gguf_writer *w, const char *name, orc_ggml_type type, int ndim,
                                   const int64_t *shape, const float *data, orc_error *err);

/* Write a version-3 file: header, key/values, tensor infos, zero padding to
 * the alignment, each tensor at an aligned offset in the order added. The
 * bytes go to "path.tmp.<pid>", which is synced and renamed over path; on any
 * failure the temporary is removed and path is untouched (ORC_EIO). */
orc_status orc_gguf_write(const orc_gguf_writer *w, const char *path, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
