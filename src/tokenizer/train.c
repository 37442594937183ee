/* Training a byte-level BPE vocabulary. Text is pre-tokenized and the
 * pre-tokens ("words") counted in a hash table, so a merge costs time in
 * proportion to the distinct words it touches, not to the text. Pair counts
 * live in an indexed max-heap (count, then the smallest (left, right) ids,
 * so the result never depends on the order of words or threads) and each
 * pair keeps the list of words it occurs in; a merge rewrites only those
 * words and adjusts the counts of the pairs around each occurrence. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

struct orc_tok_trainer {
    size_t vocab_size;
    int64_t min_frequency;
    orc_pretok_mode pretok;
    char **specials;
    size_t n_specials;
    tok_bmap words; /* word bytes -> index into counts */
    int64_t *counts;
    size_t n_words, cap_words;
};

void orc_tok_trainer_free(orc_tok_trainer *tr) {
    if (!tr) return;
    for (size_t i = 0; i < tr->n_specials; i++) free(tr->specials[i]);
    free(tr->specials);
    tok_bmap_free(&tr->words);
    free(tr->counts);
    free(tr);
}

orc_tok_trainer *orc_tok_trainer_new(const orc_tokenizer_train_opts *opts, orc_error *err) {
    orc_tokenizer_train_opts o = opts ? *opts : (orc_tokenizer_train_opts){0};
    const char *const *sp = o.specials ? o.specials : orc_tok_default_specials;
    size_t n_sp = o.no_specials ? 0 : o.specials ? o.n_specials : ORC_TOK_N_DEFAULT_SPECIALS;
    if (o.pretok != ORC_PRETOK_SPLIT_DIGITS && o.pretok != ORC_PRETOK_GPT2) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: train: unknown pre-tokenizer mode %d", (int)o.pretok);
        return NULL;
    }
    if (o.vocab_size < 256 + n_sp || o.vocab_size > ORC_TOK_MAX_VOCAB) {
        orc_error_set(err, ORC_EINVAL,
                      "tokenizer: train: vocab size %zu must lie in [%zu, %d] (256 bytes + %zu specials)",
                      o.vocab_size, 256 + n_sp, ORC_TOK_MAX_VOCAB, n_sp);
        return NULL;
    }
    for (size_t i = 0; i < n_sp; i++) {
        if (!sp[i] || !sp[i][0]) {
            orc_error_set(err, ORC_EINVAL, "tokenizer: train: special token %zu is empty", i);
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(sp[i], sp[j]) == 0) {
                orc_error_set(err, ORC_EINVAL, "tokenizer: train: special token '%s' is listed twice", sp[i]);
                return NULL;
            }
    }
    orc_tok_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) goto oom;
    tr->vocab_size = o.vocab_size;
    tr->min_frequency = o.min_frequency > 0 ? o.min_frequency : 2;
    tr->pretok = o.pretok;
    tr->specials = calloc(n_sp ? n_sp : 1, sizeof *tr->specials);
    if (!tr->specials || !tok_bmap_init(&tr->words, 1024)) goto oom;
    for (size_t i = 0; i < n_sp; i++) {
        tr->specials[i] = strdup(sp[i]);
        if (!tr->specials[i]) goto oom;
        tr->n_specials++;
    }
    return tr;
oom:
    orc_tok_trainer_free(tr);
    orc_error_set(err, ORC_ENOMEM, "tokenizer: train: out of memory");
    return NULL;
}

size_t orc_tok_trainer_word_count(const orc_tok_trainer *tr) { return tr ? tr->n_words : 0; }

static bool count_word(orc_tok_trainer *tr, const char *w, size_t len) {
    bool inserted;
    int64_t *idx = tok_bmap_put(&tr->words, w, len, (int64_t)tr->n_words, &inserted);
    if (!idx) return false;
    if (inserted) {
        if (tr->n_words >= INT32_MAX) return false;
        if (tr->n_words == tr->cap_words) {
            size_t cap = tr->cap_words ? 2 * tr->cap_words : 4096;
            int64_t *c = realloc(tr->counts, cap * sizeof *c);
            if (!c) return false;
            tr->counts = c;
            tr->cap_words = cap;
        }
        tr->counts[tr->n_words++] = 0;
    }
    tr->counts[*idx]++;
    return true;
}

orc_status orc_tok_trainer_add(orc_tok_trainer *tr, const char *text, size_t len, orc_error *err) {
    if (!tr || (!text && len)) return orc_error_set(err, ORC_EINVAL, "tokenizer: train: NULL trainer or text");
    for (size_t i = 0; i < len;) {
        size_t e = orc_pretok_next(tr->pretok, text, len, i);
        for (size_t p = i; p < e; p += ORC_TOK_TRAIN_MAX_WORD) {
            size_t n = e - p < ORC_TOK_TRAIN_MAX_WORD ? e - p : ORC_TOK_TRAIN_MAX_WORD;
            if (!count_word(tr, text + p, n))
                return orc_error_set(err, ORC_ENOMEM, "tokenizer: train: out of memory counting words");
        }
        i = e;
    }
    return ORC_OK;
}

/* ---- learning the merges ------------------------------------------------------------- */

typedef struct pair_info {
    int32_t left, right;
    int64_t count;
    size_t heap_pos;
    int32_t *words; /* words the pair occurs in (may repeat, may be stale) */
    size_t n_words, cap_words;
} pair_info;

typedef struct learner {
    /* words: symbols of word w are sym[off[w] .. off[w] + len[w]) */
    int32_t *sym;
    size_t *off;
    uint32_t *len;
    int64_t *freq;
    size_t n_words;
    uint32_t *stamp; /* last merge that rewrote word w, + 1 */
    pair_info *pairs;
    size_t n_pairs, cap_pairs;
    tok_u64map pair_index;
    size_t *heap; /* pair indices */
    size_t heap_n;
} learner;

static bool better(const learner *L, size_t a, size_t b) {
    const pair_info *x = &L->pairs[a], *y = &L->pairs[b];
    if (x->count != y->count) return x->count > y->count;
    if (x->left != y->left) return x->left < y->left;
    return x->right < y->right;
}

static void heap_set(learner *L, size_t pos, size_t p) {
    L->heap[pos] = p;
    L->pairs[p].heap_pos = pos;
}

static void sift_up(learner *L, size_t pos) {
    size_t p = L->heap[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!better(L, p, L->heap[parent])) break;
        heap_set(L, pos, L->heap[parent]);
        pos = parent;
    }
    heap_set(L, pos, p);
}

static void sift_down(learner *L, size_t pos) {
    size_t p = L->heap[pos];
    for (;;) {
        size_t c = 2 * pos + 1;
        if (c >= L->heap_n) break;
        if (c + 1 < L->heap_n && better(L, L->heap[c + 1], L->heap[c])) c++;
        if (!better(L, L->heap[c], p)) break;
        heap_set(L, pos, L->heap[c]);
        pos = c;
    }
    heap_set(L, pos, p);
}

/* The index of pair (a, b), created (count 0, in the heap) if new; SIZE_MAX on no memory. */
static size_t pair_get(learner *L, int32_t a, int32_t b) {
    bool inserted;
    int64_t *v = tok_u64map_put(&L->pair_index, tok_pair_key(a, b), (int64_t)L->n_pairs, &inserted);
    if (!v) return SIZE_MAX;
    if (!inserted) return (size_t)*v;
    if (L->n_pairs == L->cap_pairs) {
        size_t cap = L->cap_pairs ? 2 * L->cap_pairs : 4096;
        pair_info *p = realloc(L->pairs, cap * sizeof *p);
        size_t *h = realloc(L->heap, cap * sizeof *h);
        if (p) L->pairs = p;
        if (h) L->heap = h;
        if (!p || !h) return SIZE_MAX;
        L->cap_pairs = cap;
    }
    size_t idx = L->n_pairs++;
    L->pairs[idx] = (pair_info){.left = a, .right = b};
    L->heap_n++;
    heap_set(L, L->heap_n - 1, idx);
    sift_up(L, L->heap_n - 1);
    return idx;
}

/* count(a, b) += delta; a positive delta also records that word w has it. */
static bool pair_add(learner *L, int32_t a, int32_t b, int64_t delta, int32_t w) {
    size_t idx = pair_get(L, a, b);
    if (idx == SIZE_MAX) return false;
    pair_info *p = &L->pairs[idx];
    p->count += delta;
    if (delta > 0 && (p->n_words == 0 || p->words[p->n_words - 1] != w)) {
        if (p->n_words == p->cap_words) {
            size_t cap = p->cap_words ? 2 * p->cap_words : 4;
            int32_t *ws = realloc(p->words, cap * sizeof *ws);
            if (!ws) return false;
            p->words = ws;
            p->cap_words = cap;
        }
        p->words[p->n_words++] = w;
    }
    if (delta > 0)
        sift_up(L, p->heap_pos);
    else
        sift_down(L, p->heap_pos);
    return true;
}

/* Replaces every (a, b) in word w by c, left to right, adjusting the counts
 * of the neighbouring pairs as Hugging Face's trainer does. */
static bool merge_word(learner *L, int32_t w, int32_t a, int32_t b, int32_t c) {
    int32_t *s = L->sym + L->off[w];
    uint32_t n = L->len[w];
    int64_t f = L->freq[w];
    uint32_t o = 0;
    for (uint32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (!pair_add(L, a, b, -f, w)) return false;
            if (o > 0 && (!pair_add(L, s[o - 1], a, -f, w) || !pair_add(L, s[o - 1], c, f, w))) return false;
            if (i + 2 < n && (!pair_add(L, b, s[i + 2], -f, w) || !pair_add(L, c, s[i + 2], f, w))) return false;
            s[o++] = c;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    L->len[w] = o;
    return true;
}

static void learner_free(learner *L) {
    free(L->sym);
    free(L->off);
    free(L->len);
    free(L->freq);
    free(L->stamp);
    for (size_t i = 0; i < L->n_pairs; i++) free(L->pairs[i].words);
    free(L->pairs);
    free(L->heap);
    tok_u64map_free(&L->pair_index);
}

/* Words to symbol arrays (byte value = id) and the initial pair counts. */
static bool learner_init(learner *L, const orc_tok_trainer *tr) {
    memset(L, 0, sizeof *L);
    size_t nw = tr->n_words, total = 0;
    L->n_words = nw;
    L->off = malloc((nw ? nw : 1) * sizeof *L->off);
    L->len = malloc((nw ? nw : 1) * sizeof *L->len);
    L->freq = malloc((nw ? nw : 1) * sizeof *L->freq);
    L->stamp = calloc(nw ? nw : 1, sizeof *L->stamp);
    if (!L->off || !L->len || !L->freq || !L->stamp || !tok_u64map_init(&L->pair_index, 65536)) return false;
    for (size_t i = 0; i < tr->words.cap; i++) {
        const tok_bslot *sl = &tr->words.slots[i];
        if (!sl->hash) continue;
        size_t w = (size_t)sl->value;
        L->len[w] = sl->len;
        L->freq[w] = tr->counts[w];
        total += sl->len;
    }
    L->sym = malloc((total ? total : 1) * sizeof *L->sym);
    if (!L->sym) return false;
    size_t pos = 0;
    for (size_t w = 0; w < nw; w++) {
        L->off[w] = pos;
        pos += L->len[w];
    }
    for (size_t i = 0; i < tr->words.cap; i++) {
        const tok_bslot *sl = &tr->words.slots[i];
        if (!sl->hash) continue;
        const uint8_t *bytes = tr->words.pool + sl->off;
        int32_t *s = L->sym + L->off[sl->value];
        for (uint32_t k = 0; k < sl->len; k++) s[k] = bytes[k];
    }
    for (size_t w = 0; w < nw; w++) {
        const int32_t *s = L->sym + L->off[w];
        for (uint32_t k = 0; k + 1 < L->len[w]; k++)
            if (!pair_add(L, s[k], s[k + 1], L->freq[w], (int32_t)w)) return false;
    }
    return true;
}

/* The tokens learned so far: bytes by id, and the id of given bytes. Two
 * merges can spell the same bytes ("a" + "bc", "ab" + "c"); the second then
 * reuses the first one's id, as a trainer keyed by strings would. */
typedef struct learned {
    tok_bmap ids;
    uint8_t *pool;
    size_t pool_len, pool_cap;
    size_t *off;
    uint32_t *len;
    size_t n, cap;
    int32_t *merges; /* 3 per merge: left, right, result */
    size_t n_merges, cap_merges;
} learned;

static void learned_free(learned *v) {
    tok_bmap_free(&v->ids);
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->merges);
}

/* The id of bytes[0..n), added as a new token if absent; -1 on no memory. */
static int32_t learned_id(learned *v, const uint8_t *bytes, size_t n) {
    bool inserted;
    int64_t *id = tok_bmap_put(&v->ids, bytes, n, (int64_t)v->n, &inserted);
    if (!id) return -1;
    if (!inserted) return (int32_t)*id;
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 1024;
        size_t *off = realloc(v->off, cap * sizeof *off);
        if (off) v->off = off;
        uint32_t *len = realloc(v->len, cap * sizeof *len);
        if (len) v->len = len;
        if (!off || !len) return -1;
        v->cap = cap;
    }
    if (v->pool_len + n > v->pool_cap) {
        size_t cap = v->pool_cap ? v->pool_cap : 4096;
        while (cap < v->pool_len + n) cap *= 2;
        uint8_t *pool = realloc(v->pool, cap);
        if (!pool) return -1;
        v->pool = pool;
        v->pool_cap = cap;
    }
    memcpy(v->pool + v->pool_len, bytes, n);
    v->off[v->n] = v->pool_len;
    v->len[v->n] = (uint32_t)n;
    v->pool_len += n;
    return (int32_t)v->n++;
}

static bool learned_init(learned *v) {
    memset(v, 0, sizeof *v);
    if (!tok_bmap_init(&v->ids, 4096)) return false;
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        if (learned_id(v, &c, 1) != b) return false;
    }
    return true;
}

static bool learned_merge(learned *v, int32_t a, int32_t b, int32_t *c) {
    size_t la = v->len[a], lb = v->len[b];
    uint8_t small[2 * ORC_TOK_TRAIN_MAX_WORD];
    if (la + lb > sizeof small) return false; /* cannot happen: words are cut to the maximum */
    memcpy(small, v->pool + v->off[a], la);
    memcpy(small + la, v->pool + v->off[b], lb);
    *c = learned_id(v, small, la + lb);
    if (*c < 0) return false;
    if (v->n_merges == v->cap_merges) {
        size_t cap = v->cap_merges ? 2 * v->cap_merges : 1024;
        int32_t *m = realloc(v->merges, 3 * cap * sizeof *m);
        if (!m) return false;
        v->merges = m;
        v->cap_merges = cap;
    }
    int32_t *m = v->merges + 3 * v->n_merges++;
    m[0] = a;
    m[1] = b;
    m[2] = *c;
    return true;
}

/* Runs merges until max_tokens tokens exist or no pair is frequent enough. */
static bool learn(learner *L, learned *v, size_t max_tokens, int64_t min_freq) {
    uint32_t round = 0;
    while (v->n < max_tokens && L->heap_n > 0) {
        size_t top = L->heap[0];
        pair_info *p = &L->pairs[top];
        if (p->count < min_freq) break;
        int32_t a = p->left, b = p->right, c;
        if (!learned_merge(v, a, b, &c)) return false;
        round++;
        /* Take the word list: merge_word may grow L->pairs and move p. */
        int32_t *ws = p->words;
        size_t nws = p->n_words;
        p->words = NULL;
        p->n_words = p->cap_words = 0;
        for (size_t k = 0; k < nws; k++) {
            int32_t w = ws[k];
            if (L->stamp[w] == round) continue;
            L->stamp[w] = round;
            if (!merge_word(L, w, a, b, c)) {
                free(ws);
                return false;
            }
        }
        free(ws);
        /* Every occurrence is gone; make sure the pair cannot be picked again. */
        p = &L->pairs[top];
        p->count = 0;
        sift_down(L, p->heap_pos);
    }
    return true;
}

/* The tokenizer from the learned tokens, the specials after them. */
static orc_tokenizer *build(const orc_tok_trainer *tr, const learned *v, orc_error *err) {
    const char *name = "trained tokenizer";
    orc_tokenizer *t = tok_new(v->n + tr->n_specials, err, name);
    orc_status st = t ? ORC_OK : ORC_ENOMEM;
    for (size_t i = 0; st == ORC_OK && i < v->n; i++)
        st = tok_set(t, (int32_t)i, v->pool + v->off[i], v->len[i], TOK_IN_MODEL, name, err);
    for (size_t i = 0; st == ORC_OK && i < tr->n_specials; i++)
        st = tok_set(t, (int32_t)(v->n + i), tr->specials[i], strlen(tr->specials[i]), TOK_ADDED | TOK_SPECIAL,
                     name, err);
    if (st == ORC_OK) st = tok_finish(t, name, err);
    for (size_t k = 0; st == ORC_OK && k < v->n_merges; k++)
        st = tok_add_merge(t, v->merges[3 * k], v->merges[3 * k + 1], v->merges[3 * k + 2], err);
    if (st != ORC_OK) {
        orc_tokenizer_free(t);
        return NULL;
    }
    t->pretok = tr->pretok;
    return t;
}

orc_tokenizer *orc_tok_trainer_finish(orc_tok_trainer *tr, orc_error *err) {
    if (!tr) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: train: NULL trainer");
        return NULL;
    }
    learner L;
    learned v;
    memset(&L, 0, sizeof L);
    bool ok = learned_init(&v) && learner_init(&L, tr) &&
              learn(&L, &v, tr->vocab_size - tr->n_specials, tr->min_frequency);
    learner_free(&L);
    orc_tokenizer *t = NULL;
    if (!ok)
        orc_error_set(err, ORC_ENOMEM, "tokenizer: train: out of memory");
    else
        t = build(tr, &v, err);
    learned_free(&v);
    return t;
}

orc_tokenizer *orc_tokenizer_train(const char *const *texts, const size_t *lens, size_t n,
                                   const orc_tokenizer_train_opts *opts, orc_error *err) {
    if ((!texts || !lens) && n) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: train: NULL texts");
        return NULL;
    }
    orc_tok_trainer *tr = orc_tok_trainer_new(opts, err);
    if (!tr) return NULL;
    orc_tokenizer *t = NULL;
    orc_status st = ORC_OK;
    for (size_t i = 0; st == ORC_OK && i < n; i++) st = orc_tok_trainer_add(tr, texts[i], lens[i], err);
    if (st == ORC_OK) t = orc_tok_trainer_finish(tr, err);
    orc_tok_trainer_free(tr);
    return t;
}

/* ---- text files -------------------------------------------------------------------------- */

static orc_status add_cb(void *ctx, const char *text, size_t len, orc_error *err) {
    return orc_tok_trainer_add(ctx, text, len, err);
}

orc_status orc_tok_trainer_add_file(orc_tok_trainer *tr, const char *path, const char *jsonl_field,
                                    orc_error *err) {
    if (!tr) return orc_error_set(err, ORC_EINVAL, "tokenizer: train: NULL trainer");
    return orc_tok_for_each_text(path, jsonl_field, add_cb, tr, err);
}

static orc_status jsonl_line(const char *path, size_t line_no, const char *p, size_t n, const char *field,
                             orc_tok_text_fn fn, void *ctx, orc_error *err) {
    json_error_t jerr;
    json_t *o = json_loadb(p, n, JSON_ALLOW_NUL, &jerr);
    if (!o)
        return orc_error_set(err, ORC_EFORMAT, "tokenizer: %s:%zu: bad JSON: %s", path, line_no, jerr.text);
    json_t *v = json_is_object(o) ? json_object_get(o, field) : NULL;
    orc_status st;
    if (!json_is_string(v))
        st = orc_error_set(err, ORC_EFORMAT, "tokenizer: %s:%zu: no string field \"%s\"", path, line_no, field);
    else
        st = fn(ctx, json_string_value(v), json_string_length(v), err);
    json_decref(o);
    return st;
}

orc_status orc_tok_for_each_text(const char *path, const char *jsonl_field, orc_tok_text_fn fn, void *ctx,
                                 orc_error *err) {
    if (!path || !fn) return orc_error_set(err, ORC_EINVAL, "tokenizer: NULL path or callback");
    size_t len = 0;
    char *text = tok_read_file(path, &len, err);
    if (!text) return err ? err->code : ORC_EIO;
    orc_status st = ORC_OK;
    if (!jsonl_field) {
        st = fn(ctx, text, len, err);
    } else {
        size_t line_no = 0;
        for (char *p = text, *end = text + len; st == ORC_OK && p < end;) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *stop = nl ? nl : end;
            line_no++;
            bool blank = true;
            for (char *q = p; q < stop && blank; q++) blank = *q == ' ' || *q == '\t' || *q == '\r';
            if (!blank) st = jsonl_line(path, line_no, p, (size_t)(stop - p), jsonl_field, fn, ctx, err);
            p = stop + 1;
        }
    }
    free(text);
    return st;
}
