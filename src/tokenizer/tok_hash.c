/* The tokenizer's hash maps: open addressing with linear probing over a
 * power-of-two table kept at most half full. The byte-string map copies its
 * keys into one growing pool so that callers can hash slices of a larger
 * buffer without keeping them alive. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Eight bytes at a time; never returns 0 (0 marks an empty slot). */
static uint64_t hash_bytes(const void *key, size_t len) {
    const uint8_t *p = key;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (len * 0x100000001b3ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++) tail |= (uint64_t)p[i] << (8 * i);
    h = mix64(h ^ tail ^ 0xa5a5a5a5ull);
    return h ? h : 1;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

bool tok_bmap_init(tok_bmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2);
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tok_bmap_free(tok_bmap *m) {
    free(m->slots);
    free(m->pool);
    memset(m, 0, sizeof *m);
}

void tok_bmap_clear(tok_bmap *m) {
    memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->count = 0;
    m->pool_len = 0;
}

static tok_bslot *bmap_find(const tok_bmap *m, uint64_t h, const void *key, size_t len) {
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        tok_bslot *s = &m->slots[i];
        if (s->hash == 0) return s;
        if (s->hash == h && s->len == len && memcmp(m->pool + s->off, key, len) == 0) return s;
    }
}

int64_t *tok_bmap_get(const tok_bmap *m, const void *key, size_t len) {
    if (!m->slots) return NULL;
    tok_bslot *s = bmap_find(m, hash_bytes(key, len), key, len);
    return s->hash ? &s->value : NULL;
}

static bool bmap_grow(tok_bmap *m) {
    size_t cap = m->cap * 2;
    tok_bslot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < m->cap; i++) {
        tok_bslot *s = &m->slots[i];
        if (!s->hash) continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].hash) j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

int64_t *tok_bmap_put(tok_bmap *m, const void *key, size_t len, int64_t init, bool *inserted) {
    if (inserted) *inserted = false;
    if (len > UINT32_MAX) return NULL;
    uint64_t h = hash_bytes(key, len);
    tok_bslot *s = bmap_find(m, h, key, len);
    if (s->hash) return &s->value;
    if ((m->count + 1) * 2 > m->cap) {
        if (!bmap_grow(m)) return NULL;
        s = bmap_find(m, h, key, len);
    }
    if (m->pool_len + len + 1 > m->pool_cap) {
        size_t cap = m->pool_cap ? m->pool_cap : 1024;
        while (cap < m->pool_len + len + 1) cap *= 2;
        uint8_t *pool = realloc(m->pool, cap);
        if (!pool) return NULL;
        m->pool = pool;
        m->pool_cap = cap;
    }
    if (len) memcpy(m->pool + m->pool_len, key, len);
    s->hash = h;
    s->off = m->pool_len;
    s->len = (uint32_t)len;
    s->value = init;
    m->pool_len += len;
    m->count++;
    if (inserted) *inserted = true;
    return &s->value;
}

bool tok_u64map_init(tok_u64map *m, size_t expected) {
    m->count = 0;
    m->cap = pow2_at_least(expected * 2);
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tok_u64map_free(tok_u64map *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static tok_u64slot *u64_find(const tok_u64map *m, uint64_t key) {
    size_t mask = m->cap - 1;
    uint64_t stored = key + 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        tok_u64slot *s = &m->slots[i];
        if (s->key == 0 || s->key == stored) return s;
    }
}

int64_t *tok_u64map_get(const tok_u64map *m, uint64_t key) {
    if (!m->slots) return NULL;
    tok_u64slot *s = u64_find(m, key);
    return s->key ? &s->value : NULL;
}

static bool u64_grow(tok_u64map *m) {
    size_t cap = m->cap * 2;
    tok_u64slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        size_t j = mix64(m->slots[i].key - 1) & (cap - 1);
        while (slots[j].key) j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

int64_t *tok_u64map_put(tok_u64map *m, uint64_t key, int64_t init, bool *inserted) {
    if (inserted) *inserted = false;
    tok_u64slot *s = u64_find(m, key);
    if (s->key) return &s->value;
    if ((m->count + 1) * 2 > m->cap) {
        if (!u64_grow(m)) return NULL;
        s = u64_find(m, key);
    }
    s->key = key + 1;
    s->value = init;
    m->count++;
    if (inserted) *inserted = true;
    return &s->value;
}
