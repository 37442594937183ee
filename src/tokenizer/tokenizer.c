/* The tokenizer itself: assembling one from ids, merges and added tokens
 * (with the checks every source shares), vocabulary lookups, and encoding
 * and decoding. Encoding splits the text at special tokens (when asked),
 * pre-tokenizes each piece and runs BPE per pre-token: a min-heap of
 * (merge rank, position) over a linked list of symbols, so a word costs
 * O(L log L) even for a megabyte-long run. Results per pre-token are cached
 * for the length of one call, which keeps the tokenizer read-only and
 * shareable between threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- building ------------------------------------------------------------------ */

/* Printable form of token bytes for messages. */
const char *tok_escape(char *buf, size_t cap, const void *bytes, size_t len) {
    const uint8_t *p = bytes;
    size_t o = 0, i = 0;
    for (; i < len && o + 8 < cap; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            buf[o++] = (char)p[i];
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", p[i]);
    }
    if (i < len) o += (size_t)snprintf(buf + o, cap - o, "...");
    buf[o] = '\0';
    return buf;
}

orc_tokenizer *tok_new(size_t n_vocab, orc_error *err, const char *name) {
    if (n_vocab == 0 || n_vocab > ORC_TOK_MAX_VOCAB) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: vocabulary size %zu is outside [1, %d]", name, n_vocab,
                      ORC_TOK_MAX_VOCAB);
        return NULL;
    }
    orc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->n_vocab = n_vocab;
    t->tokens = calloc(n_vocab, sizeof *t->tokens);
    if (!t->tokens || !tok_bmap_init(&t->model_ids, n_vocab) || !tok_bmap_init(&t->added_ids, 16) ||
        !tok_u64map_init(&t->merge_of, n_vocab))
        goto oom;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
oom:
    orc_tokenizer_free(t);
    orc_error_set(err, ORC_ENOMEM, "tokenizer: %s: out of memory for %zu tokens", name, n_vocab);
    return NULL;
}

void orc_tokenizer_free(orc_tokenizer *t) {
    if (!t) return;
    free(t->tokens);
    free(t->pool);
    tok_bmap_free(&t->model_ids);
    tok_bmap_free(&t->added_ids);
    tok_u64map_free(&t->merge_of);
    free(t->merges);
    free(t->added);
    free(t->unk_token);
    free(t);
}

static bool pool_add(orc_tokenizer *t, const void *bytes, size_t len, uint64_t *off) {
    if (t->pool_len + len + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 4096;
        while (cap < t->pool_len + len + 1) cap *= 2;
        uint8_t *p = realloc(t->pool, cap);
        if (!p) return false;
        t->pool = p;
        t->pool_cap = cap;
    }
    *off = t->pool_len;
    if (len) memcpy(t->pool + t->pool_len, bytes, len);
    t->pool[t->pool_len + len] = 0;
    t->pool_len += len + 1;
    return true;
}

static orc_status index_token(tok_bmap *map, int32_t id, const void *bytes, size_t len,
                              const char *what, const char *name, orc_error *err) {
    bool inserted;
    int64_t *v = tok_bmap_put(map, bytes, len, id, &inserted);
    if (!v) return orc_error_set(err, ORC_ENOMEM, "tokenizer: %s: out of memory", name);
    if (*v != id) {
        char b[96];
        return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: %s '%s' has two ids, %lld and %d", name, what,
                             tok_escape(b, sizeof b, bytes, len), (long long)*v, id);
    }
    return ORC_OK;
}

orc_status tok_set(orc_tokenizer *t, int32_t id, const void *bytes, size_t len, uint8_t flags, const char *name,
                   orc_error *err) {
    char b1[96], b2[96];
    if (id < 0 || (size_t)id >= t->n_vocab)
        return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: id %d of '%s' is out of range [0, %zu)", name, id,
                             tok_escape(b1, sizeof b1, bytes, len), t->n_vocab);
    if (len == 0 || len > UINT32_MAX)
        return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: token %d is empty", name, id);
    tok_entry *e = &t->tokens[id];
    if (e->flags) {
        if (e->len != len || memcmp(t->pool + e->off, bytes, len) != 0)
            return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: duplicate id %d ('%s' and '%s')", name, id,
                                 tok_escape(b1, sizeof b1, t->pool + e->off, e->len),
                                 tok_escape(b2, sizeof b2, bytes, len));
        if ((flags & TOK_IN_MODEL) && (e->flags & TOK_IN_MODEL))
            return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: duplicate id %d", name, id);
    } else {
        if (!pool_add(t, bytes, len, &e->off)) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
        e->len = (uint32_t)len;
    }
    e->flags |= flags;
    orc_status st = ORC_OK;
    if (flags & TOK_IN_MODEL) st = index_token(&t->model_ids, id, bytes, len, "token", name, err);
    if (st == ORC_OK && (flags & TOK_ADDED)) st = index_token(&t->added_ids, id, bytes, len, "added token", name, err);
    return st;
}

orc_status tok_add_merge(orc_tokenizer *t, int32_t left, int32_t right, int32_t result, orc_error *err) {
    bool inserted;
    int64_t *rank = tok_u64map_put(&t->merge_of, tok_pair_key(left, right), (int64_t)t->n_merges, &inserted);
    if (!rank) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory for merges");
    if (!inserted) return ORC_OK; /* a repeated merge keeps its first rank */
    if (t->n_merges % 1024 == 0) {
        int32_t *m = realloc(t->merges, (t->n_merges + 1024) * 3 * sizeof *m);
        if (!m) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory for merges");
        t->merges = m;
    }
    t->merges[3 * t->n_merges] = left;
    t->merges[3 * t->n_merges + 1] = right;
    t->merges[3 * t->n_merges + 2] = result;
    t->n_merges++;
    return ORC_OK;
}

typedef struct added_key {
    uint32_t len;
    int32_t id;
} added_key;

static int cmp_added(const void *a, const void *b) {
    const added_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Longest first, so that matching picks "<|end_of_text|>" over "<|end". */
static bool sort_added(orc_tokenizer *t) {
    added_key *k = malloc((t->n_added ? t->n_added : 1) * sizeof *k);
    if (!k) return false;
    for (size_t i = 0; i < t->n_added; i++) k[i] = (added_key){t->tokens[t->added[i]].len, t->added[i]};
    qsort(k, t->n_added, sizeof *k, cmp_added);
    for (size_t i = 0; i < t->n_added; i++) t->added[i] = k[i].id;
    free(k);
    return true;
}

orc_status tok_finish(orc_tokenizer *t, const char *name, orc_error *err) {
    size_t n_added = 0;
    for (size_t i = 0; i < t->n_vocab; i++) {
        if (!t->tokens[i].flags)
            return orc_error_set(err, ORC_EFORMAT,
                                 "tokenizer: %s: id %zu is not assigned (ids must run 0..%zu with no hole)",
                                 name, i, t->n_vocab - 1);
        if (t->tokens[i].flags & TOK_ADDED) n_added++;
    }
    for (int b = 0; b < 256 && t->spm; b++)
        if (t->byte_id[b] < 0)
            return orc_error_set(err, ORC_EFORMAT,
                                 "tokenizer: %s: the vocabulary lacks the byte token <0x%02X> (byte fallback needs "
                                 "all 256)",
                                 name, b);
    for (int b = 0; b < 256 && !t->spm; b++) {
        uint8_t c = (uint8_t)b;
        int64_t *id = tok_bmap_get(&t->model_ids, &c, 1);
        if (!id)
            return orc_error_set(err, ORC_EFORMAT,
                                 "tokenizer: %s: the vocabulary lacks the token for byte 0x%02x (byte-level BPE "
                                 "needs all 256)",
                                 name, b);
        t->byte_id[b] = (int32_t)*id;
    }
    t->added = malloc((n_added ? n_added : 1) * sizeof *t->added);
    if (!t->added) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
    t->n_added = 0;
    memset(t->added_first, 0, sizeof t->added_first);
    for (size_t i = 0; i < t->n_vocab; i++)
        if (t->tokens[i].flags & TOK_ADDED) {
            t->added[t->n_added++] = (int32_t)i;
            uint8_t c = t->pool[t->tokens[i].off];
            t->added_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    if (!sort_added(t)) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
    return ORC_OK;
}

/* ---- lookups --------------------------------------------------------------------- */

size_t orc_tokenizer_vocab_size(const orc_tokenizer *t) { return t ? t->n_vocab : 0; }
size_t orc_tokenizer_merge_count(const orc_tokenizer *t) { return t ? t->n_merges : 0; }
orc_pretok_mode orc_tokenizer_pretok_mode(const orc_tokenizer *t) { return t->pretok; }
orc_tok_kind orc_tokenizer_kind(const orc_tokenizer *t) { return t && t->spm ? ORC_TOK_SENTENCEPIECE : ORC_TOK_BYTE_LEVEL; }
bool orc_tokenizer_space_prefix(const orc_tokenizer *t) { return t && t->spm && t->spm_prefix; }

int32_t orc_tokenizer_token_to_id(const orc_tokenizer *t, const char *bytes, size_t len) {
    if (!t || (!bytes && len)) return -1;
    int64_t *v = tok_bmap_get(&t->model_ids, bytes, len);
    if (!v) v = tok_bmap_get(&t->added_ids, bytes, len);
    return v ? (int32_t)*v : -1;
}

const char *orc_tokenizer_id_to_token(const orc_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return NULL;
    if (len) *len = t->tokens[id].len;
    return (const char *)t->pool + t->tokens[id].off;
}

int32_t orc_tokenizer_special_id(const orc_tokenizer *t, const char *name) {
    if (!t || !name) return -1;
    int64_t *v = tok_bmap_get(&t->added_ids, name, strlen(name));
    return v ? (int32_t)*v : -1;
}

bool orc_tokenizer_is_special(const orc_tokenizer *t, int32_t id) {
    return t && id >= 0 && (size_t)id < t->n_vocab && (t->tokens[id].flags & TOK_SPECIAL);
}

orc_status orc_tokenizer_merge(const orc_tokenizer *t, size_t rank, int32_t *left, int32_t *right, int32_t *result,
                               orc_error *err) {
    if (!t) return orc_error_set(err, ORC_EINVAL, "tokenizer: merge: NULL tokenizer");
    if (rank >= t->n_merges)
        return orc_error_set(err, ORC_ERANGE, "tokenizer: merge rank %zu is outside [0, %zu)", rank, t->n_merges);
    if (left) *left = t->merges[3 * rank];
    if (right) *right = t->merges[3 * rank + 1];
    if (result) *result = t->merges[3 * rank + 2];
    return ORC_OK;
}

/* ---- encoding ---------------------------------------------------------------------- */

typedef struct ids_buf {
    int32_t *v;
    size_t n, cap;
} ids_buf;

static bool ids_reserve(ids_buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    int32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) return false;
    b->v = v;
    b->cap = cap;
    return true;
}

/* Per-call state: scratch arrays for one word and the pre-token cache. */
typedef struct enc_state {
    const orc_tokenizer *t;
    ids_buf out;
    int32_t *sym, *next, *prev;
    uint64_t *heap;
    size_t scratch_cap; /* words of up to this many bytes fit */
    tok_bmap cache;     /* word bytes -> (offset in cached << 8) | count */
    ids_buf cached;
    bool cache_ready;
} enc_state;

#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES (1u << 20)
#define MAX_WORD ((size_t)1 << 30) /* longer pre-tokens are cut; positions fit in 32 bits */

static int64_t rank_of(const orc_tokenizer *t, int32_t a, int32_t b) {
    int64_t *r = tok_u64map_get(&t->merge_of, tok_pair_key(a, b));
    return r ? *r : -1;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t key) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= key) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = key;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (last <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = last;
    return top;
}

static bool ensure_scratch(enc_state *s, size_t len) {
    if (len <= s->scratch_cap) return true;
    size_t cap = s->scratch_cap ? s->scratch_cap : 64;
    while (cap < len) cap *= 2;
    free(s->sym);
    free(s->next);
    free(s->prev);
    free(s->heap);
    s->sym = malloc(cap * sizeof *s->sym);
    s->next = malloc(cap * sizeof *s->next);
    s->prev = malloc(cap * sizeof *s->prev);
    s->heap = malloc(3 * cap * sizeof *s->heap);
    s->scratch_cap = (s->sym && s->next && s->prev && s->heap) ? cap : 0;
    return s->scratch_cap != 0;
}

static void push_pair(enc_state *s, size_t *nh, int32_t i) {
    int64_t r = rank_of(s->t, s->sym[i], s->sym[s->next[i]]);
    if (r >= 0) heap_push(s->heap, nh, ((uint64_t)r << 32) | (uint32_t)i);
}

/* BPE over the L symbols in s->sym: merges by rank, ties to the leftmost;
 * the surviving symbols go to the output. */
static bool bpe_merge(enc_state *s, int32_t L) {
    const orc_tokenizer *t = s->t;
    for (int32_t i = 0; i < L; i++) {
        s->next[i] = i + 1;
        s->prev[i] = i - 1;
    }
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < L; i++) push_pair(s, &nh, i);
    while (nh) {
        uint64_t key = heap_pop(s->heap, &nh);
        int64_t r = (int64_t)(key >> 32);
        int32_t i = (int32_t)(uint32_t)key;
        if (s->sym[i] < 0) continue;
        int32_t j = s->next[i];
        if (j >= L || rank_of(t, s->sym[i], s->sym[j]) != r) continue; /* stale entry */
        s->sym[i] = t->merges[3 * r + 2];
        s->sym[j] = -1;
        s->next[i] = s->next[j];
        if (s->next[i] < L) s->prev[s->next[i]] = i;
        if (s->prev[i] >= 0) push_pair(s, &nh, s->prev[i]);
        if (s->next[i] < L) push_pair(s, &nh, i);
    }
    if (!ids_reserve(&s->out, (size_t)L)) return false;
    for (int32_t i = 0; i < L; i = s->next[i]) s->out.v[s->out.n++] = s->sym[i];
    return true;
}

/* Byte-level BPE on one pre-token: the symbols start as its bytes. */
static bool bpe_word(enc_state *s, const uint8_t *w, size_t len) {
    if (!ensure_scratch(s, len)) return false;
    for (size_t i = 0; i < len; i++) s->sym[i] = s->t->byte_id[w[i]];
    return bpe_merge(s, (int32_t)len);
}

/* Length of the UTF-8 character at p[0] (n > 0 bytes left): 1 for a byte
 * that does not start a well-formed sequence, which then stands alone. */
static size_t utf8_char_len(const uint8_t *p, size_t n) {
    size_t need = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 1;
    if (need > n) return 1;
    for (size_t k = 1; k < need; k++)
        if ((p[k] & 0xC0) != 0x80) return 1;
    return need;
}

/* SentencePiece BPE on one piece of text (the whole run between special
 * tokens): an optional leading space, symbols = characters (a character
 * outside the vocabulary becomes its byte tokens), then the merges. */
static bool spm_segment(enc_state *s, const char *text, size_t len, bool at_start) {
    const orc_tokenizer *t = s->t;
    const bool prefix = t->spm_prefix && (at_start || !t->spm_prefix_first);
    const size_t total = len + (prefix ? 1 : 0);
    if (total > MAX_WORD || !ensure_scratch(s, total)) return false;
    int32_t L = 0;
    if (prefix) {
        int64_t *id = tok_bmap_get(&t->model_ids, " ", 1);
        s->sym[L++] = id ? (int32_t)*id : t->byte_id[' '];
    }
    const uint8_t *p = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_char_len(p + i, len - i);
        int64_t *id = tok_bmap_get(&t->model_ids, p + i, k);
        if (id) {
            s->sym[L++] = (int32_t)*id;
        } else {
            for (size_t j = 0; j < k; j++) s->sym[L++] = t->byte_id[p[i + j]];
        }
        i += k;
    }
    return bpe_merge(s, L);
}

static bool encode_word(enc_state *s, const uint8_t *w, size_t len) {
    const orc_tokenizer *t = s->t;
    if (len == 1) {
        if (!ids_reserve(&s->out, 1)) return false;
        s->out.v[s->out.n++] = t->byte_id[w[0]];
        return true;
    }
    if (t->ignore_merges) {
        int64_t *id = tok_bmap_get(&t->model_ids, w, len);
        if (id) {
            if (!ids_reserve(&s->out, 1)) return false;
            s->out.v[s->out.n++] = (int32_t)*id;
            return true;
        }
    }
    if (len > CACHE_MAX_WORD) return bpe_word(s, w, len);
    if (!s->cache_ready) {
        if (!tok_bmap_init(&s->cache, 1024)) return false;
        s->cache_ready = true;
    }
    int64_t *hit = tok_bmap_get(&s->cache, w, len);
    if (hit) {
        size_t off = (size_t)(*hit >> 8), cnt = (size_t)(*hit & 0xff);
        if (!ids_reserve(&s->out, cnt)) return false;
        memcpy(s->out.v + s->out.n, s->cached.v + off, cnt * sizeof(int32_t));
        s->out.n += cnt;
        return true;
    }
    size_t start = s->out.n;
    if (!bpe_word(s, w, len)) return false;
    size_t cnt = s->out.n - start;
    if (s->cache.count >= CACHE_MAX_ENTRIES) {
        tok_bmap_clear(&s->cache);
        s->cached.n = 0;
    }
    if (!ids_reserve(&s->cached, cnt)) return false;
    int64_t *v = tok_bmap_put(&s->cache, w, len, (int64_t)((s->cached.n << 8) | cnt), NULL);
    if (!v) return false;
    memcpy(s->cached.v + s->cached.n, s->out.v + start, cnt * sizeof(int32_t));
    s->cached.n += cnt;
    return true;
}

static bool encode_piece(enc_state *s, const char *text, size_t len) {
    for (size_t i = 0; i < len;) {
        size_t e = orc_pretok_next(s->t->pretok, text, len, i);
        if (e - i > MAX_WORD) e = i + MAX_WORD;
        if (!encode_word(s, (const uint8_t *)text + i, e - i)) return false;
        i = e;
    }
    return true;
}

/* ByteLevel's add_prefix_space: a piece not starting with a space gets one. */
static bool encode_segment(enc_state *s, const char *text, size_t len, bool at_start) {
    if (len == 0) return true;
    if (s->t->spm) return spm_segment(s, text, len, at_start);
    if (!s->t->add_prefix_space || text[0] == ' ') return encode_piece(s, text, len);
    char *tmp = malloc(len + 1);
    if (!tmp) return false;
    tmp[0] = ' ';
    memcpy(tmp + 1, text, len);
    bool ok = encode_piece(s, tmp, len + 1);
    free(tmp);
    return ok;
}

/* The first added token in text[from..len): its position and id, or len. */
static size_t find_added(const orc_tokenizer *t, const char *text, size_t from, size_t len, int32_t *id) {
    for (size_t q = from; q < len; q++) {
        uint8_t c = (uint8_t)text[q];
        if (!(t->added_first[c >> 3] & (1u << (c & 7)))) continue;
        for (size_t k = 0; k < t->n_added; k++) {
            const tok_entry *e = &t->tokens[t->added[k]];
            if (e->len <= len - q && memcmp(text + q, t->pool + e->off, e->len) == 0) {
                *id = t->added[k];
                return q;
            }
        }
    }
    return len;
}

orc_status orc_tokenizer_encode(const orc_tokenizer *t, const char *text, size_t len, unsigned flags,
                                int32_t **ids, size_t *n, orc_error *err) {
    if (!t || (!text && len) || !ids || !n)
        return orc_error_set(err, ORC_EINVAL, "tokenizer: encode: NULL tokenizer, text or output");
    *ids = NULL;
    *n = 0;
    enc_state s = {.t = t};
    bool ok = ids_reserve(&s.out, len / 3 + 16);
    size_t pos = 0;
    while (ok && pos < len) {
        int32_t sid = -1;
        size_t end = (flags & ORC_TOK_ENCODE_SPECIAL) && t->n_added ? find_added(t, text, pos, len, &sid) : len;
        ok = encode_segment(&s, text + pos, end - pos, pos == 0);
        if (ok && sid >= 0) {
            ok = ids_reserve(&s.out, 1);
            if (ok) s.out.v[s.out.n++] = sid;
            end += t->tokens[sid].len;
        }
        pos = end;
    }
    free(s.sym);
    free(s.next);
    free(s.prev);
    free(s.heap);
    if (s.cache_ready) tok_bmap_free(&s.cache);
    free(s.cached.v);
    if (!ok) {
        free(s.out.v);
        return orc_error_set(err, ORC_ENOMEM, "tokenizer: encode: out of memory for %zu bytes of text", len);
    }
    *ids = s.out.v;
    *n = s.out.n;
    return ORC_OK;
}

orc_status orc_tokenizer_decode(const orc_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len,
                                orc_error *err) {
    if (!t || (!ids && n) || !out)
        return orc_error_set(err, ORC_EINVAL, "tokenizer: decode: NULL tokenizer, ids or output");
    *out = NULL;
    if (len) *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return orc_error_set(err, ORC_ERANGE, "tokenizer: decode: id %d at position %zu is outside [0, %zu)",
                                 ids[i], i, t->n_vocab);
        total += t->tokens[ids[i]].len;
    }
    char *buf = malloc(total + 1);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "tokenizer: decode: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_entry *e = &t->tokens[ids[i]];
        memcpy(buf + o, t->pool + e->off, e->len);
        o += e->len;
    }
    /* SentencePiece: the space the encoder put before the text is not part
     * of it (the decoder's Strip; llama.cpp does the same). */
    if (t->spm && t->spm_prefix && o && buf[0] == ' ' && !(t->tokens[ids[0]].flags & TOK_ADDED)) {
        memmove(buf, buf + 1, o - 1);
        o--;
    }
    buf[o] = '\0';
    *out = buf;
    if (len) *len = o;
    return ORC_OK;
}
