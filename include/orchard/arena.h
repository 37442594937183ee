/* orchard/arena.h: bump-pointer memory arenas.
 *
 * An arena owns every tensor, gradient buffer and autograd record allocated
 * from it and releases them all at once. A model keeps its parameters in one
 * long-lived arena; a training step puts its activations, saved values and
 * activation gradients in another and resets it at the end of the step.
 * Allocations are 64-byte aligned (cache lines, AVX-512 loads). Big requests
 * get a chunk of their own, so an arena never wastes more than one chunk. */
#ifndef ORCHARD_ARENA_H
#define ORCHARD_ARENA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_ARENA_ALIGN 64

typedef struct orc_arena orc_arena;

/* A saved position; rewinding to it frees everything allocated after it. */
typedef struct orc_arena_mark {
    void *chunk;
    size_t used;
} orc_arena_mark;

/* chunk_bytes: size of each regular chunk (0 picks 16 MiB). NULL when out of memory. */
orc_arena *orc_arena_create(size_t chunk_bytes);
void orc_arena_destroy(orc_arena *a);

/* NULL when out of memory (or when bytes overflows). Contents are undefined. */
void *orc_arena_alloc(orc_arena *a, size_t bytes);
/* Like orc_arena_alloc, zero-filled. */
void *orc_arena_calloc(orc_arena *a, size_t count, size_t size);
/* Copy a NUL-terminated string into the arena. */
char *orc_arena_strdup(orc_arena *a, const char *s);

/* Release everything allocated. The chunks used since the previous reset are
 * kept for reuse (a training step allocates the same again), chunks unused
 * for a whole cycle go back to the system. */
void orc_arena_reset(orc_arena *a);
orc_arena_mark orc_arena_get_mark(const orc_arena *a);
void orc_arena_rewind(orc_arena *a, orc_arena_mark m);

/* Bytes handed out since creation or the last reset, and bytes reserved. */
size_t orc_arena_used(const orc_arena *a);
size_t orc_arena_reserved(const orc_arena *a);

#ifdef __cplusplus
}
#endif
#endif
