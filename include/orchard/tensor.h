/* orchard/tensor.h: the tensor type.
 *
 * A tensor is a view of up to four dimensions over float32 or int32 memory
 * that an arena owns. Shapes and strides count elements, row-major; a view
 * (slice, transpose, reshape) shares its base's memory with other strides.
 * Each tensor carries a device tag (CPU only for now; a CUDA backend adds a
 * tag and its kernels behind the same op functions). A gradient, when the
 * tensor takes part in autograd, is a separate contiguous float32 buffer of
 * the tensor's own shape, whatever the data's strides are. */
#ifndef ORCHARD_TENSOR_H
#define ORCHARD_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/arena.h"
#include "orchard/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_MAX_DIMS 4

typedef enum orc_dtype { ORC_F32 = 0, ORC_I32 = 1 } orc_dtype;
typedef enum orc_device { ORC_DEV_CPU = 0, ORC_DEV_CUDA = 1 } orc_device;

struct orc_node;

typedef struct orc_tensor {
    orc_dtype dtype;
    orc_device device;
    int ndim;                      /* 0 (scalar) .. ORC_MAX_DIMS */
    int64_t shape[ORC_MAX_DIMS];   /* unused dims are 1 */
    int64_t stride[ORC_MAX_DIMS];  /* in elements; unused dims are 0 */
    int64_t numel;
    void *data;                    /* first element of this view */
    float *grad;                   /* contiguous, same shape; NULL until needed */
    bool requires_grad;            /* gradients flow into this tensor */
    bool is_param;                 /* a leaf whose grad persists across steps */
    struct orc_node *node;         /* the op that produced it; NULL for leaves */
    const char *name;              /* for messages; may be NULL */
} orc_tensor;

/* Build a shape argument inline: orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(3, 4)). */
#define ORC_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static inline float *orc_f32(const orc_tensor *t) { return (float *)t->data; }
static inline int32_t *orc_i32(const orc_tensor *t) { return (int32_t *)t->data; }
static inline int64_t orc_dtype_size(orc_dtype dt) { (void)dt; return 4; }
const char *orc_dtype_name(orc_dtype dt);

/* A contiguous tensor with uninitialised data. Returns NULL and fills err when
 * the shape is invalid (ndim out of range, a negative dimension, overflow) or
 * the arena is out of memory. */
orc_tensor *orc_tensor_new(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, orc_error *err);
orc_tensor *orc_tensor_zeros(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, orc_error *err);
/* A contiguous copy of src's values in arena a (any strides in src). */
orc_tensor *orc_tensor_clone(orc_arena *a, const orc_tensor *src, orc_error *err);
/* A tensor header over memory the caller owns (contiguous). */
orc_tensor *orc_tensor_wrap(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, void *data, orc_error *err);

/* A trainable leaf: zero-filled data and a zero-filled gradient buffer, both
 * in arena a, requires_grad set, name copied. */
orc_tensor *orc_param_new(orc_arena *a, int ndim, const int64_t *shape, const char *name, orc_error *err);

bool orc_is_contiguous(const orc_tensor *t);
bool orc_same_shape(const orc_tensor *a, const orc_tensor *b);
/* Element offset (into data) of the element at the given indices. */
int64_t orc_offset(const orc_tensor *t, const int64_t *idx);
/* Format "name [2, 3] f32" for messages. */
const char *orc_tensor_desc(char *buf, size_t cap, const orc_tensor *t);

/* Fill helpers (any strides). */
void orc_fill(orc_tensor *t, float value);
/* Copy values between two tensors of the same shape and dtype, any strides. */
orc_status orc_copy(orc_tensor *dst, const orc_tensor *src, orc_error *err);
/* Contiguous float32 copy of t's values into out (numel floats). */
void orc_read_f32(const orc_tensor *t, float *out);

#ifdef __cplusplus
}
#endif
#endif
