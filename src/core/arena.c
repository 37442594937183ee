/* Bump-pointer arenas (see orchard/arena.h): a linked list of chunks. A
 * reset keeps the first chunk and every chunk the arena used since the last
 * reset, so a training loop that repeats the same allocations reuses warm
 * memory every step instead of mapping (and page-faulting) fresh memory;
 * chunks left unused for a whole cycle are returned to the system. */
#include "orchard/arena.h"

#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;  /* the chunk allocated after this one */
    size_t cap;
    size_t used;
    bool touched;        /* became current since the last reset */
    unsigned char *mem;
} chunk;

struct orc_arena {
    chunk *first;
    chunk *cur;
    size_t chunk_bytes;
    size_t used_total;   /* bytes of completed chunks before cur */
};

static chunk *chunk_new(size_t cap) {
    chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->mem = aligned_alloc(ORC_ARENA_ALIGN, cap);
    if (!c->mem) { free(c); return NULL; }
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    c->touched = true;
    return c;
}

static void chunk_free_list(chunk *c) {
    while (c) {
        chunk *n = c->next;
        free(c->mem);
        free(c);
        c = n;
    }
}

orc_arena *orc_arena_create(size_t chunk_bytes) {
    if (chunk_bytes == 0) chunk_bytes = (size_t)16 << 20;
    chunk_bytes = (chunk_bytes + ORC_ARENA_ALIGN - 1) / ORC_ARENA_ALIGN * ORC_ARENA_ALIGN;
    orc_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->first = chunk_new(chunk_bytes);
    if (!a->first) { free(a); return NULL; }
    a->cur = a->first;
    a->chunk_bytes = chunk_bytes;
    return a;
}

void orc_arena_destroy(orc_arena *a) {
    if (!a) return;
    chunk_free_list(a->first);
    free(a);
}

void *orc_arena_alloc(orc_arena *a, size_t bytes) {
    if (!a) return NULL;
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - ORC_ARENA_ALIGN) return NULL;
    size_t need = (bytes + ORC_ARENA_ALIGN - 1) / ORC_ARENA_ALIGN * ORC_ARENA_ALIGN;
    chunk *c = a->cur;
    if (c->cap - c->used < need) {
        /* Reuse a following chunk kept from before a rewind if it is big
         * enough; otherwise insert a new one after cur. */
        chunk *nx = c->next;
        if (nx && nx->cap >= need) {
            nx->used = 0;
            nx->touched = true;
        } else {
            size_t cap = need > a->chunk_bytes ? need : a->chunk_bytes;
            chunk *fresh = chunk_new(cap);
            if (!fresh) return NULL;
            fresh->next = nx;
            c->next = fresh;
            nx = fresh;
        }
        a->used_total += c->used;
        a->cur = nx;
        c = nx;
    }
    void *p = c->mem + c->used;
    c->used += need;
    return p;
}

/* Zero-filling a big gradient buffer on one thread leaves the others idle:
 * from ZERO_PARALLEL_MIN bytes up it is split into fixed blocks across the
 * team (outside a parallel region only). */
#define ZERO_PARALLEL_MIN ((size_t)1 << 20)
#define ZERO_BLOCK ((size_t)128 << 10)

static void zero_fill(unsigned char *p, size_t n) {
    if (n < ZERO_PARALLEL_MIN || omp_in_parallel() || omp_get_max_threads() < 2) {
        memset(p, 0, n);
        return;
    }
    const int64_t nblk = (int64_t)((n + ZERO_BLOCK - 1) / ZERO_BLOCK);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblk; b++) {
        const size_t off = (size_t)b * ZERO_BLOCK, len = n - off < ZERO_BLOCK ? n - off : ZERO_BLOCK;
        memset(p + off, 0, len);
    }
}

void *orc_arena_calloc(orc_arena *a, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    void *p = orc_arena_alloc(a, count * size);
    if (p) zero_fill(p, count * size);
    return p;
}

char *orc_arena_strdup(orc_arena *a, const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = orc_arena_alloc(a, n);
    if (p) memcpy(p, s, n);
    return p;
}

void orc_arena_reset(orc_arena *a) {
    if (!a) return;
    /* Keep the chunks of the last cycle (in order), free the others. */
    chunk *prev = a->first;
    while (prev->next) {
        chunk *c = prev->next;
        if (c->touched) {
            c->touched = false;
            c->used = 0;
            prev = c;
        } else {
            prev->next = c->next;
            free(c->mem);
            free(c);
        }
    }
    a->first->used = 0;
    a->cur = a->first;
    a->used_total = 0;
}

orc_arena_mark orc_arena_get_mark(const orc_arena *a) {
    orc_arena_mark m = {a->cur, a->cur->used};
    return m;
}

void orc_arena_rewind(orc_arena *a, orc_arena_mark m) {
    /* Recompute the total of the chunks before the mark's chunk. */
    size_t total = 0;
    chunk *c = a->first;
    while (c && c != (chunk *)m.chunk) { total += c->used; c = c->next; }
    if (!c) return; /* not a mark of this arena */
    a->cur = c;
    c->used = m.used;
    a->used_total = total;
}

size_t orc_arena_used(const orc_arena *a) { return a->used_total + a->cur->used; }

size_t orc_arena_reserved(const orc_arena *a) {
    size_t n = 0;
    for (chunk *c = a->first; c; c = c->next) n += c->cap;
    return n;
}
