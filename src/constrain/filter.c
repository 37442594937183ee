/* The token filter (see orchard/constrain.h): every token's bytes in one
 * trie, built once per tokenizer, walked depth first from the matcher's
 * state each step. A child is visited only when the matcher takes its byte,
 * so a refused first byte prunes every token that starts with it, and the
 * state after a shared prefix is computed once for all tokens under it.
 * The walk keeps one state per trie depth (the matcher's dfs scratch).
 * Inside a free string (most of a tool call's bytes), a token made only of
 * plain characters is allowed exactly when the string has room for it, so
 * those tokens are decided by their length alone and only the trie of the
 * other tokens (quotes, escapes, control and non-ASCII bytes) is walked. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "constrain/constrain_internal.h"

typedef struct vt_node {
    int32_t child, next; /* first child, next sibling */
    int32_t first_tok;   /* first id ending here, -1: none (more in tok_next) */
    uint8_t byte;
} vt_node;

struct orc_token_filter {
    vt_node *nodes;
    int32_t n_nodes, cap_nodes;
    int32_t *tok_next;   /* [vocab]: the next id ending at the same node (full trie) */
    int32_t *tok_next2;  /* the same in the trie of the other ids */
    int32_t root2;       /* the trie of ids that are not plain (see below) */
    int32_t *plain;      /* ids made only of plain string bytes (printable ASCII but " and \) */
    int32_t *plain_len;  /* and their lengths */
    int64_t n_plain;
    int64_t vocab;
    size_t max_len;
};

static int32_t vt_new(orc_token_filter *f, uint8_t byte) {
    if (f->n_nodes == f->cap_nodes) {
        int32_t cap = f->cap_nodes ? f->cap_nodes * 2 : 1024;
        vt_node *p = realloc(f->nodes, sizeof *p * (size_t)cap);
        if (!p) return -1;
        f->nodes = p;
        f->cap_nodes = cap;
    }
    f->nodes[f->n_nodes] = (vt_node){.child = -1, .next = -1, .first_tok = -1, .byte = byte};
    return f->n_nodes++;
}

static bool trie_insert(orc_token_filter *f, int32_t root, const char *b, size_t len, int32_t id, int32_t *next) {
    int32_t at = root;
    for (size_t i = 0; i < len; i++) {
        int32_t c = f->nodes[at].child;
        while (c >= 0 && f->nodes[c].byte != (uint8_t)b[i]) c = f->nodes[c].next;
        if (c < 0) {
            c = vt_new(f, (uint8_t)b[i]);
            if (c < 0) return false;
            f->nodes[c].next = f->nodes[at].child;
            f->nodes[at].child = c;
        }
        at = c;
    }
    next[id] = f->nodes[at].first_tok;
    f->nodes[at].first_tok = id;
    return true;
}

static bool plain_bytes(const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return false;
    }
    return true;
}

orc_token_filter *orc_token_filter_new(const orc_tokenizer *tok, int64_t vocab, orc_error *err) {
    orc_token_filter *f = calloc(1, sizeof *f);
    if (!f || vocab <= 0 || !tok) {
        free(f);
        orc_error_set(err, f ? ORC_EINVAL : ORC_ENOMEM, "token filter: %s", f ? "no tokenizer or vocabulary" : "out of memory");
        return NULL;
    }
    f->vocab = vocab;
    f->tok_next = malloc(sizeof(int32_t) * (size_t)vocab);
    f->tok_next2 = malloc(sizeof(int32_t) * (size_t)vocab);
    f->plain = malloc(sizeof(int32_t) * (size_t)vocab);
    f->plain_len = malloc(sizeof(int32_t) * (size_t)vocab);
    bool ok = f->tok_next && f->tok_next2 && f->plain && f->plain_len && vt_new(f, 0) == 0;
    f->root2 = ok ? vt_new(f, 0) : -1;
    ok = ok && f->root2 == 1;
    const int64_t tv = (int64_t)orc_tokenizer_vocab_size(tok);
    for (int64_t id = 0; ok && id < vocab; id++) {
        f->tok_next[id] = f->tok_next2[id] = -1;
        if (id >= tv || orc_tokenizer_is_special(tok, (int32_t)id)) continue;
        size_t len = 0;
        const char *b = orc_tokenizer_id_to_token(tok, (int32_t)id, &len);
        if (!b || len == 0) continue;
        ok = trie_insert(f, 0, b, len, (int32_t)id, f->tok_next);
        if (ok && plain_bytes(b, len)) {
            f->plain[f->n_plain] = (int32_t)id;
            f->plain_len[f->n_plain++] = (int32_t)len;
        } else if (ok) {
            ok = trie_insert(f, f->root2, b, len, (int32_t)id, f->tok_next2);
        }
        if (len > f->max_len) f->max_len = len;
    }
    if (!ok) {
        orc_token_filter_free(f);
        orc_error_set(err, ORC_ENOMEM, "token filter: out of memory for a vocabulary of %lld", (long long)vocab);
        return NULL;
    }
    return f;
}

void orc_token_filter_free(orc_token_filter *f) {
    if (!f) return;
    free(f->nodes);
    free(f->tok_next);
    free(f->tok_next2);
    free(f->plain);
    free(f->plain_len);
    free(f);
}

/* mask[id] = 0 for ids the matcher refuses; else 1, or with a budget 1 +
 * the bytes that must still follow the id (at most 254). *min_cost: the
 * fewest bytes after any taken id. Returns the number of ids taken, -1 when
 * out of memory. */
static int64_t walk(const orc_token_filter *f, orc_json_matcher *m, uint8_t *mask, int64_t V, bool costs,
                    int64_t *min_cost) {
    const orc_json_schema *s = m->s;
    const size_t slots = f->max_len + 1;
    if (m->dfs_slots < slots) {
        uint8_t *p = realloc(m->dfs, slots * s->slot);
        if (!p) return -1;
        m->dfs = p;
        m->dfs_slots = slots;
    }
    int32_t *cur = malloc(sizeof(int32_t) * slots);
    if (!cur) return -1;
    memset(mask, 0, (size_t)V);
    memcpy(m->dfs, m->cur, cn_state_size(m->cur));
    int64_t n = 0;
    *min_cost = INT64_MAX;
    /* Inside a free string: plain tokens by their length, then the trie of the others. */
    const int64_t room = cn_state_string_room(s, m->cur);
    const int32_t *next = room >= 0 ? f->tok_next2 : f->tok_next;
    if (room >= 0) {
        uint8_t v = 1;
        if (costs) {
            int64_t c = cn_state_min_remaining(s, m->cur); /* plain characters never add to it */
            if (c < *min_cost) *min_cost = c;
            v = (uint8_t)(1 + (c < 254 ? c : 254));
        }
        for (int64_t i = 0; i < f->n_plain; i++) {
            if (f->plain_len[i] > room || f->plain[i] >= V) continue;
            mask[f->plain[i]] = v;
            n++;
        }
    }
    size_t d = 0;
    cur[0] = f->nodes[room >= 0 ? f->root2 : 0].child;
    for (;;) {
        if (cur[d] < 0) {
            if (d == 0) break;
            d--;
            cur[d] = f->nodes[cur[d]].next;
            continue;
        }
        const vt_node *nd = &f->nodes[cur[d]];
        uint8_t *src = m->dfs + d * s->slot, *dst = src + s->slot;
        if (!cn_step(s, src, nd->byte, dst)) {
            cur[d] = nd->next;
            continue;
        }
        if (nd->first_tok >= 0) {
            uint8_t v = 1;
            if (costs) {
                int64_t c = cn_state_min_remaining(s, dst);
                if (c < *min_cost) *min_cost = c;
                v = (uint8_t)(1 + (c < 254 ? c : 254));
            }
            for (int32_t id = nd->first_tok; id >= 0; id = next[id]) {
                if (id >= V) continue;
                mask[id] = v;
                n++;
            }
        }
        if (nd->child >= 0) {
            d++;
            cur[d] = nd->child;
        } else {
            cur[d] = nd->next;
        }
    }
    free(cur);
    return n;
}

int64_t orc_token_filter_mask(const orc_token_filter *f, orc_json_matcher *m, uint8_t *mask, int64_t V) {
    int64_t mc = 0;
    return walk(f, m, mask, V, false, &mc);
}

int64_t orc_token_filter_apply(const orc_token_filter *f, orc_json_matcher *m, float *logits, int64_t V,
                               const int32_t *end_ids, size_t n_end, int64_t budget) {
    uint8_t *mask = malloc((size_t)V);
    int64_t min_cost = 0;
    const bool finished = cn_state_finished(m->cur), done = finished || cn_state_done(m->s, m->cur);
    if (!mask || (!finished && walk(f, m, mask, V, budget > 0, &min_cost) < 0)) {
        free(mask);
        for (int64_t i = 0; i < V; i++) logits[i] = -INFINITY;
        return 0;
    }
    if (finished) memset(mask, 0, (size_t)V);
    /* With a budget: ids after which the value can be closed in the tokens
     * left (one byte each), or, when none can, those that get closest. */
    int64_t limit = 255;
    if (budget > 0) {
        int64_t want = budget - 1 > min_cost ? budget - 1 : min_cost;
        limit = want < 254 ? 1 + want : 255;
    }
    float saved[16];
    const size_t ns = n_end < 16 ? n_end : 16;
    for (size_t e = 0; e < ns; e++) saved[e] = end_ids[e] >= 0 && end_ids[e] < V ? logits[end_ids[e]] : 0.0f;
    int64_t kept = 0;
    for (int64_t i = 0; i < V; i++) {
        if (mask[i] && mask[i] <= limit) kept++;
        else logits[i] = -INFINITY;
    }
    /* End ids: allowed exactly when a complete value is there. */
    for (size_t e = 0; e < ns; e++) {
        int32_t id = end_ids[e];
        if (id < 0 || id >= V) continue;
        bool on = mask[id] && mask[id] <= limit;
        if (done && !on) {
            logits[id] = saved[e];
            kept++;
        } else if (!done && on) {
            logits[id] = -INFINITY;
            kept--;
        }
    }
    free(mask);
    return kept;
}
