/* The byte-level matcher (see orchard/constrain.h): a pushdown automaton
 * over the compiled schema. A thread is a stack of frames, one per open
 * value, each a small state machine (object, array, string, number,
 * literal trie, free value); a state is a set of threads, one per anyOf
 * alternative still alive, deduplicated after each byte. A value frame is
 * pushed only when the first non-whitespace byte of the value arrives, so
 * an anyOf splits a thread exactly when a byte is there to test the
 * alternatives. Frames that may end without a closing byte (numbers, enum
 * values that prefix others) end when a byte they refuse arrives, which is
 * then given to the frame below. */
#include <stdlib.h>
#include <string.h>

#include "constrain/constrain_internal.h"

enum { R_VALUE = 0, R_IN, R_DONE };
enum { O_START = 0, O_FIRST, O_KEY, O_COLON, O_VALUE, O_AFTER, O_NEXT, O_INVAL };
enum { A_START = 0, A_FIRST, A_AFTER, A_NEXT, A_INVAL };
enum { S_START = 0, S_BODY };
enum { G_BODY = 0, G_ESC, G_U0, G_U1, G_U2, G_U3 };
enum { N_START = 0, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
enum { L_START = 0, L_IN };
#define F_FREE 1 /* object key: other keys allowed */

/* ---- state buffers ------------------------------------------------------------------ */

int32_t cn_state_threads(const uint8_t *st) {
    int32_t n;
    memcpy(&n, st, sizeof n);
    return n;
}

static int32_t thread_depth(const uint8_t *t) {
    int32_t d;
    memcpy(&d, t, sizeof d);
    return d;
}

size_t cn_state_size(const uint8_t *st) {
    size_t at = CN_STATE_HDR;
    for (int32_t i = 0, n = cn_state_threads(st); i < n; i++) at += cn_thread_size(thread_depth(st + at));
    return at;
}

typedef struct out {
    uint8_t *buf;
    size_t len, cap;
    int32_t n;
} out;

static void load_thread(const uint8_t *p, cn_thread *t) {
    memcpy(t, p, cn_thread_size(thread_depth(p)));
}

/* Append t unless an equal thread is there already. */
static void emit(out *o, const cn_thread *t) {
    size_t sz = cn_thread_size(t->depth);
    size_t at = CN_STATE_HDR;
    for (int32_t i = 0; i < o->n; i++) {
        size_t s2 = cn_thread_size(thread_depth(o->buf + at));
        if (s2 == sz && memcmp(o->buf + at, t, sz) == 0) return;
        at += s2;
    }
    if (o->len + sz > o->cap) return; /* cannot happen within the compiled bound */
    memcpy(o->buf + o->len, t, sz);
    o->len += sz;
    o->n++;
}

void cn_state_init(const orc_json_schema *s, uint8_t *st) {
    cn_thread t;
    memset(&t, 0, CN_THREAD_HDR + sizeof(cn_frame));
    t.depth = 1;
    t.f[0].node = s->root_frame;
    t.f[0].trie = -1;
    t.f[0].prop = -1;
    t.f[0].phase = R_VALUE;
    int32_t one = 1;
    memcpy(st, &one, sizeof one);
    memset(st + 4, 0, 4);
    memcpy(st + CN_STATE_HDR, &t, cn_thread_size(1));
}

/* ---- one thread, one byte ------------------------------------------------------------- */

static bool is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static int hex_val(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

enum { G_REJECT = 0, G_CHAR, G_CLOSE };

/* String content (a key or a string value): one byte. */
static int string_byte(cn_frame *f, uint8_t c, int64_t max_len) {
    if (f->sub == G_BODY && f->need) {
        if (c < f->lo || c > f->hi) return G_REJECT;
        f->need--;
        f->lo = 0x80;
        f->hi = 0xBF;
        return G_CHAR;
    }
    if (f->sub == G_ESC) {
        if (c == 'u') {
            f->sub = G_U0;
            f->hex = 0;
            return G_CHAR;
        }
        if (!strchr("\"\\/bfnrt", c) || c == 0) return G_REJECT;
        f->sub = G_BODY;
        return G_CHAR;
    }
    if (f->sub >= G_U0) {
        int h = hex_val(c);
        if (h < 0) return G_REJECT;
        int k = f->sub - G_U0;
        uint16_t v = (uint16_t)(f->hex * 16 + h);
        if (k == 1 && v >= 0xD8 && v <= 0xDF) return G_REJECT; /* a surrogate: jansson wants pairs */
        if (k == 3 && v == 0) return G_REJECT;                  /* NUL */
        f->hex = v;
        f->sub = k == 3 ? G_BODY : (uint8_t)(f->sub + 1);
        return G_CHAR;
    }
    if (c == '"') return G_CLOSE;
    if (c < 0x20) return G_REJECT;
    if (f->count >= max_len) return G_REJECT;
    if (c == '\\') {
        f->sub = G_ESC;
    } else if (c >= 0x80) {
        if (c >= 0xC2 && c <= 0xDF) f->need = 1, f->lo = 0x80, f->hi = 0xBF;
        else if (c == 0xE0) f->need = 2, f->lo = 0xA0, f->hi = 0xBF;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) f->need = 2, f->lo = 0x80, f->hi = 0xBF;
        else if (c == 0xED) f->need = 2, f->lo = 0x80, f->hi = 0x9F;
        else if (c == 0xF0) f->need = 3, f->lo = 0x90, f->hi = 0xBF;
        else if (c >= 0xF1 && c <= 0xF3) f->need = 3, f->lo = 0x80, f->hi = 0xBF;
        else if (c == 0xF4) f->need = 3, f->lo = 0x80, f->hi = 0x8F;
        else return G_REJECT;
    }
    f->count++;
    return G_CHAR;
}

static int32_t trie_child(const orc_json_schema *s, int32_t at, uint8_t c) {
    for (int32_t k = s->trie[at].child; k >= 0; k = s->trie[k].next)
        if (s->trie[k].byte == c) return k;
    return -1;
}

static bool number_complete(uint8_t phase) {
    return phase == N_ZERO || phase == N_INT || phase == N_FRAC || phase == N_EXP;
}

/* A frame that may end here without another byte. */
static bool completable(const orc_json_schema *s, const cn_frame *f) {
    cn_kind k = s->nodes[f->node].kind;
    if (k == K_NUMBER || k == K_INTEGER) return f->phase != N_START && number_complete(f->phase);
    if (k == K_LITERAL) return f->phase == L_IN && s->trie[f->trie].term >= 0;
    return false;
}

/* The top frame's value is complete: pop it and move its parent on. */
static void child_done(const orc_json_schema *s, cn_thread *t) {
    t->depth--;
    cn_frame *p = &t->f[t->depth - 1];
    switch (s->nodes[p->node].kind) {
    case K_ROOT: p->phase = R_DONE; break;
    case K_OBJECT: p->phase = O_AFTER; break;
    case K_ARRAY:
        p->count++;
        p->phase = A_AFTER;
        break;
    default: break;
    }
}

static uint64_t missing(const cn_node *n, const cn_frame *f) { return n->required & ~f->seen; }

/* The declared keys that may come next: unseen ones, and for an ordered
 * object only those after the last key and not past a missing required one. */
static uint64_t avail(const cn_node *n, const cn_frame *f) {
    uint64_t all = n->n_props >= 64 ? ~0ull : (1ull << n->n_props) - 1, a = all & ~f->seen;
    if (n->ordered) {
        if (f->prop >= 0) a &= ~((2ull << f->prop) - 1);
        uint64_t miss = n->required & ~f->seen;
        if (miss) a &= (miss & (~miss + 1)) * 2 - 1; /* up to the first missing required key */
    }
    return a;
}

/* Another key may start: an unseen property, or any key. */
static bool key_possible(const cn_node *n, const cn_frame *f) {
    if (n->additional >= 0) return true;
    return avail(n, f) != 0;
}

static void run(const orc_json_schema *s, cn_thread *t, uint8_t c, out *o);

/* Push a value frame for node (splitting on anyOf) and give it the byte. */
static void push_retry(const orc_json_schema *s, cn_thread *t, int32_t node, uint8_t c, out *o) {
    const cn_node *n = &s->nodes[node];
    if (n->kind == K_ANYOF) {
        for (int i = 0; i < n->n_alts; i++) {
            cn_thread tmp;
            memcpy(&tmp, t, cn_thread_size(t->depth));
            push_retry(s, &tmp, n->alts[i], c, o);
        }
        return;
    }
    if (t->depth >= CN_MAX_FRAMES) return;
    cn_frame *f = &t->f[t->depth];
    uint8_t anyd = t->f[t->depth - 1].anyd;
    memset(f, 0, sizeof *f);
    f->node = node;
    f->trie = -1;
    f->prop = -1;
    f->anyd = anyd;
    t->depth++;
    run(s, t, c, o);
}

static void accept(cn_thread *t, out *o) {
    t->ws = 0;
    emit(o, t);
}

static void accept_ws(const orc_json_schema *s, cn_thread *t, out *o) {
    if (t->ws >= s->opts.max_whitespace) return;
    t->ws++;
    emit(o, t);
}

static void run(const orc_json_schema *s, cn_thread *t, uint8_t c, out *o) {
    for (;;) {
        cn_frame *f = &t->f[t->depth - 1];
        const cn_node *n = &s->nodes[f->node];
        const bool ws = is_ws(c);
        switch (n->kind) {
        case K_ROOT:
            if (f->phase != R_VALUE) return;
            if (ws) return accept_ws(s, t, o);
            f->phase = R_IN;
            return push_retry(s, t, s->root, c, o);
        case K_ANY:
            if (ws) return accept_ws(s, t, o);
            if (c == '{' || c == '[') {
                if (f->anyd >= s->opts.max_depth) return;
                f->anyd++;
                f->node = c == '{' ? s->any_obj : s->any_arr;
            } else if (c == '"') {
                f->node = s->any_str;
            } else if (c == '-' || is_digit(c)) {
                f->node = s->any_num;
            } else if (c == 't' || c == 'f' || c == 'n') {
                f->node = s->any_lit;
            } else {
                return;
            }
            continue; /* the same byte, now to the chosen kind */
        case K_ANYOF: return; /* never a frame */
        case K_STRING:
            if (f->phase == S_START) {
                if (ws) return accept_ws(s, t, o);
                if (c != '"') return;
                f->phase = S_BODY;
                return accept(t, o);
            } else {
                int g = string_byte(f, c, n->max_len);
                if (g == G_REJECT) return;
                if (g == G_CLOSE) {
                    if (f->count < n->min_len) return;
                    child_done(s, t);
                }
                return accept(t, o);
            }
        case K_NUMBER:
        case K_INTEGER: {
            const bool integer = n->kind == K_INTEGER;
            uint8_t next = 0xFF;
            switch (f->phase) {
            case N_START:
                if (ws) return accept_ws(s, t, o);
                if (c == '-') next = N_MINUS;
                else if (c == '0') next = N_ZERO;
                else if (c >= '1' && c <= '9') next = N_INT;
                break;
            case N_MINUS:
                if (c == '0') next = N_ZERO;
                else if (c >= '1' && c <= '9') next = N_INT;
                break;
            case N_ZERO:
            case N_INT:
                if (f->phase == N_INT && is_digit(c)) next = N_INT;
                else if (c == '.' && !integer && f->ndig < s->opts.max_number) next = N_DOT; /* a digit must follow */
                else if ((c == 'e' || c == 'E') && !integer) next = N_E;
                break;
            case N_DOT:
            case N_FRAC:
                if (is_digit(c)) next = N_FRAC;
                else if (f->phase == N_FRAC && (c == 'e' || c == 'E')) next = N_E;
                break;
            case N_E:
                if (c == '+' || c == '-') next = N_ESIGN;
                else if (is_digit(c)) next = N_EXP;
                break;
            case N_ESIGN:
            case N_EXP:
                if (is_digit(c)) next = N_EXP;
                break;
            }
            if (next != 0xFF && is_digit(c)) {
                /* digits of the mantissa up to max_number, of the exponent up to 2 */
                if (next == N_EXP ? f->hex >= 2 : f->ndig >= s->opts.max_number) next = 0xFF;
                else if (next == N_EXP) f->hex++;
                else f->ndig++;
            }
            if (next != 0xFF) {
                f->phase = next;
                return accept(t, o);
            }
            if (f->phase == N_START || !number_complete(f->phase)) return;
            child_done(s, t);
            continue;
        }
        case K_LITERAL: {
            if (f->phase == L_START) {
                if (ws) return accept_ws(s, t, o);
                int32_t k = trie_child(s, n->lit_root, c);
                if (k < 0) return;
                f->phase = L_IN;
                f->trie = k;
            } else {
                int32_t k = trie_child(s, f->trie, c);
                if (k < 0) {
                    if (s->trie[f->trie].term < 0) return;
                    child_done(s, t);
                    continue;
                }
                f->trie = k;
            }
            if (s->trie[f->trie].term >= 0 && s->trie[f->trie].child < 0) child_done(s, t);
            return accept(t, o);
        }
        case K_ARRAY:
            switch (f->phase) {
            case A_START:
                if (ws) return accept_ws(s, t, o);
                if (c != '[') return;
                f->phase = A_FIRST;
                return accept(t, o);
            case A_FIRST:
            case A_NEXT:
                if (ws) return accept_ws(s, t, o);
                if (f->phase == A_FIRST && c == ']') {
                    if (n->min_items > 0) return;
                    child_done(s, t);
                    return accept(t, o);
                }
                if (f->count >= n->max_items) return;
                f->phase = A_INVAL;
                return push_retry(s, t, n->items, c, o);
            case A_AFTER:
                if (ws) return accept_ws(s, t, o);
                if (c == ']') {
                    if (f->count < n->min_items) return;
                    child_done(s, t);
                    return accept(t, o);
                }
                if (c != ',' || f->count >= n->max_items) return;
                f->phase = A_NEXT;
                return accept(t, o);
            default: return;
            }
        case K_OBJECT:
            switch (f->phase) {
            case O_START:
                if (ws) return accept_ws(s, t, o);
                if (c != '{') return;
                f->phase = O_FIRST;
                return accept(t, o);
            case O_FIRST:
            case O_NEXT:
            case O_AFTER:
                if (ws) return accept_ws(s, t, o);
                if (c == '}' && f->phase != O_NEXT) {
                    if (missing(n, f)) return;
                    child_done(s, t);
                    return accept(t, o);
                }
                if (f->phase == O_AFTER) {
                    if (c != ',' || !key_possible(n, f)) return;
                    f->phase = O_NEXT;
                    return accept(t, o);
                }
                if (c != '"' || !key_possible(n, f)) return;
                f->phase = O_KEY;
                f->trie = n->key_root;
                f->flags = n->additional >= 0 ? F_FREE : 0;
                f->sub = G_BODY;
                f->count = 0;
                f->need = 0;
                f->kpos = 0;
                return accept(t, o);
            case O_KEY: {
                int g = string_byte(f, c, s->opts.max_string);
                if (g == G_REJECT) return;
                if (g == G_CLOSE) {
                    int32_t term = f->trie >= 0 ? s->trie[f->trie].term : -1;
                    if (term >= 0) {
                        if (f->seen >> term & 1) return; /* a repeated key */
                        if (!(avail(n, f) >> term & 1)) return; /* out of order */
                        f->seen |= 1ull << term;
                        f->prop = (int16_t)term;
                    } else if (f->flags & F_FREE) {
                        f->prop = -1;
                    } else {
                        return;
                    }
                    f->phase = O_COLON;
                    return accept(t, o);
                }
                if (f->trie >= 0) {
                    int32_t k = trie_child(s, f->trie, c);
                    /* Other keys allowed: follow the trie to the end, so a repeated
                     * declared key is still recognised when it closes. */
                    f->trie = k >= 0 && ((f->flags & F_FREE) || (s->trie[k].reach & avail(n, f))) ? k : -1;
                }
                if (f->trie < 0 && !(f->flags & F_FREE)) return;
                f->kpos++;
                return accept(t, o);
            }
            case O_COLON:
                if (ws) return accept_ws(s, t, o);
                if (c != ':') return;
                f->phase = O_VALUE;
                return accept(t, o);
            case O_VALUE:
                if (ws) return accept_ws(s, t, o);
                f->phase = O_INVAL;
                return push_retry(s, t, f->prop >= 0 ? n->props[f->prop] : n->additional, c, o);
            default: return;
            }
        }
        return;
    }
}

bool cn_step(const orc_json_schema *s, const uint8_t *src, uint8_t c, uint8_t *dst) {
    out o = {.buf = dst, .len = CN_STATE_HDR, .cap = s->slot, .n = 0};
    size_t at = CN_STATE_HDR;
    cn_thread t;
    for (int32_t i = 0, n = cn_state_threads(src); i < n; i++) {
        const uint8_t *p = src + at;
        at += cn_thread_size(thread_depth(p));
        load_thread(p, &t);
        run(s, &t, c, &o);
    }
    memcpy(dst, &o.n, sizeof o.n);
    memset(dst + 4, 0, 4);
    return o.n > 0;
}

/* ---- completion and cost --------------------------------------------------------------- */

static bool thread_done(const orc_json_schema *s, const cn_thread *t) {
    if (t->f[0].phase == R_DONE) return true;
    return t->depth == 2 && completable(s, &t->f[1]);
}

bool cn_state_done(const orc_json_schema *s, const uint8_t *st) {
    size_t at = CN_STATE_HDR;
    cn_thread t;
    for (int32_t i = 0, n = cn_state_threads(st); i < n; i++) {
        load_thread(st + at, &t);
        at += cn_thread_size(t.depth);
        if (thread_done(s, &t)) return true;
    }
    return false;
}

bool cn_state_finished(const uint8_t *st) {
    size_t at = CN_STATE_HDR;
    for (int32_t i = 0, n = cn_state_threads(st); i < n; i++) {
        const uint8_t *p = st + at;
        cn_frame f0;
        memcpy(&f0, p + CN_THREAD_HDR, sizeof f0);
        if (f0.phase != R_DONE) return false;
        at += cn_thread_size(thread_depth(p));
    }
    return true;
}

static int64_t missing_cost(const orc_json_schema *s, const cn_node *n, uint64_t miss, int *k) {
    int64_t c = 0;
    *k = 0;
    for (int q = 0; q < n->n_props; q++)
        if (miss >> q & 1) {
            c += n->key_len[q] + 3 + s->nodes[n->props[q]].min_bytes;
            (*k)++;
        }
    return c;
}

/* Bytes to close an object whose next token is ',' or '}' (after a value). */
static int64_t object_after(const orc_json_schema *s, const cn_node *n, const cn_frame *f) {
    int k;
    int64_t c = missing_cost(s, n, missing(n, f), &k);
    return c + k + 1;
}

static int64_t value_min(const orc_json_schema *s, int32_t node) { return node >= 0 ? s->nodes[node].min_bytes : 1; }

static int64_t frame_cost(const orc_json_schema *s, const cn_frame *f, bool top) {
    const cn_node *n = &s->nodes[f->node];
    int k;
    switch (n->kind) {
    case K_ROOT: return f->phase == R_VALUE ? value_min(s, s->root) : 0;
    case K_ANY: return 1;
    case K_STRING: {
        if (f->phase == S_START) return 2 + n->min_len;
        int64_t pend = f->need + (f->sub == G_ESC ? 1 : f->sub >= G_U0 ? 4 - (f->sub - G_U0) : 0);
        return pend + (f->count < n->min_len ? n->min_len - f->count : 0) + 1;
    }
    case K_NUMBER:
    case K_INTEGER: return f->phase != N_START && number_complete(f->phase) ? 0 : 1;
    case K_LITERAL: return s->trie[f->phase == L_START ? n->lit_root : f->trie].min_rest;
    case K_ARRAY: {
        int64_t mi = value_min(s, n->items);
        int64_t c = f->count + (top ? 0 : 1), need = n->min_items > c ? n->min_items - c : 0;
        switch (top ? f->phase : A_AFTER) {
        case A_START: return n->min_bytes;
        case A_FIRST: return need > 0 ? need * mi + (need - 1) + 1 : 1;
        case A_NEXT: return mi + (need > 1 ? (need - 1) * (1 + mi) : 0) + 1;
        default: return need * (1 + mi) + 1;
        }
    }
    case K_OBJECT: {
        if (!top) return object_after(s, n, f);
        int64_t mc = missing_cost(s, n, missing(n, f), &k);
        switch (f->phase) {
        case O_START: return n->min_bytes;
        case O_FIRST: return k > 0 ? mc + (k - 1) + 1 : 1;
        case O_AFTER: return mc + k + 1;
        case O_NEXT: {
            if (k > 0) return mc + (k - 1) + 1;
            int64_t best = INT64_MAX;
            for (int q = 0; q < n->n_props; q++)
                if (!(f->seen >> q & 1) && n->key_len[q] + 3 + value_min(s, n->props[q]) < best)
                    best = n->key_len[q] + 3 + value_min(s, n->props[q]);
            if (n->additional >= 0 && 3 + value_min(s, n->additional) < best) best = 3 + value_min(s, n->additional);
            return (best == INT64_MAX ? 0 : best) + 1;
        }
        case O_KEY: {
            /* The cheapest way on: finish one of the declared keys still
             * reachable (which may be a missing required one), or, with
             * other keys allowed, close this one as another key. */
            int64_t pend = f->need + (f->sub == G_ESC ? 1 : f->sub >= G_U0 ? 4 - (f->sub - G_U0) : 0);
            int64_t best = INT64_MAX;
            for (int q = 0; f->trie >= 0 && q < n->n_props; q++) {
                if (!(s->trie[f->trie].reach >> q & 1) || !(avail(n, f) >> q & 1)) continue;
                int64_t c = (n->key_len[q] - f->kpos) + 2 + value_min(s, n->props[q]);
                c += (missing(n, f) >> q & 1) ? mc - (n->key_len[q] + 3 + value_min(s, n->props[q])) + (k - 1) + 1
                                              : mc + k + 1;
                if (c < best) best = c;
            }
            if ((f->flags & F_FREE) && pend + 2 + value_min(s, n->additional) + mc + k + 1 < best)
                best = pend + 2 + value_min(s, n->additional) + mc + k + 1;
            return best == INT64_MAX ? mc + k + 1 : best;
        }
        case O_COLON: return 1 + value_min(s, f->prop >= 0 ? n->props[f->prop] : n->additional) + mc + k + 1;
        case O_VALUE: return value_min(s, f->prop >= 0 ? n->props[f->prop] : n->additional) + mc + k + 1;
        default: return mc + k + 1;
        }
    }
    default: return 0;
    }
}

int64_t cn_state_min_remaining(const orc_json_schema *s, const uint8_t *st) {
    size_t at = CN_STATE_HDR;
    int64_t best = INT64_MAX;
    cn_thread t;
    for (int32_t i = 0, n = cn_state_threads(st); i < n; i++) {
        load_thread(st + at, &t);
        at += cn_thread_size(t.depth);
        if (thread_done(s, &t)) return 0;
        int64_t c = 0;
        for (int32_t d = t.depth - 1; d >= 0; d--) c += frame_cost(s, &t.f[d], d == t.depth - 1);
        if (c < best) best = c;
    }
    return best == INT64_MAX ? 0 : best;
}

int64_t cn_state_string_room(const orc_json_schema *s, const uint8_t *st) {
    size_t at = CN_STATE_HDR;
    int64_t room = -1;
    for (int32_t i = 0, n = cn_state_threads(st); i < n; i++) {
        const uint8_t *p = st + at;
        int32_t d = thread_depth(p);
        at += cn_thread_size(d);
        cn_frame f;
        memcpy(&f, p + CN_THREAD_HDR + (size_t)(d - 1) * sizeof f, sizeof f);
        const cn_node *nd = &s->nodes[f.node];
        int64_t max;
        if (nd->kind == K_STRING && f.phase == S_BODY) max = nd->max_len;
        else if (nd->kind == K_OBJECT && f.phase == O_KEY && f.trie < 0 && (f.flags & F_FREE)) max = s->opts.max_string;
        else return -1;
        if (f.sub != G_BODY || f.need) return -1;
        int64_t r = max > f.count ? max - f.count : 0;
        if (r > room) room = r;
    }
    return room;
}

/* ---- the public matcher ------------------------------------------------------------------- */

orc_json_matcher *orc_json_matcher_new(const orc_json_schema *s, orc_error *err) {
    orc_json_matcher *m = s ? calloc(1, sizeof *m) : NULL;
    if (m) {
        m->s = s;
        m->cur = malloc(s->slot);
        m->tmp = malloc(s->slot);
    }
    if (!m || !m->cur || !m->tmp) {
        orc_json_matcher_free(m);
        orc_error_set(err, s ? ORC_ENOMEM : ORC_EINVAL, "json matcher: %s", s ? "out of memory" : "no schema");
        return NULL;
    }
    cn_state_init(s, m->cur);
    return m;
}

void orc_json_matcher_free(orc_json_matcher *m) {
    if (!m) return;
    free(m->cur);
    free(m->tmp);
    free(m->dfs);
    free(m);
}

void orc_json_matcher_reset(orc_json_matcher *m) { cn_state_init(m->s, m->cur); }

/* Run bytes from src through two buffers; the result is in *res (a or b). */
static bool run_bytes(const orc_json_schema *s, const uint8_t *src, const char *bytes, size_t n, uint8_t *a,
                      uint8_t *b, uint8_t **res) {
    const uint8_t *from = src;
    uint8_t *to = a;
    for (size_t i = 0; i < n; i++) {
        if (!cn_step(s, from, (uint8_t)bytes[i], to)) return false;
        from = to;
        to = to == a ? b : a;
    }
    *res = (uint8_t *)from;
    return true;
}

bool orc_json_matcher_allowed(const orc_json_matcher *m, const char *bytes, size_t n) {
    if (n == 0) return true;
    uint8_t *b = malloc(m->s->slot), *res = NULL;
    bool ok = b && run_bytes(m->s, m->cur, bytes, n, m->tmp, b, &res);
    free(b);
    return ok;
}

bool orc_json_matcher_advance(orc_json_matcher *m, const char *bytes, size_t n) {
    if (n == 0) return true;
    uint8_t *b = malloc(m->s->slot), *res = NULL;
    bool ok = b && run_bytes(m->s, m->cur, bytes, n, m->tmp, b, &res);
    if (ok) memcpy(m->cur, res, cn_state_size(res));
    free(b);
    return ok;
}

bool orc_json_matcher_done(const orc_json_matcher *m) { return cn_state_done(m->s, m->cur); }
bool orc_json_matcher_finished(const orc_json_matcher *m) { return cn_state_finished(m->cur); }
int64_t orc_json_matcher_min_remaining(const orc_json_matcher *m) { return cn_state_min_remaining(m->s, m->cur); }
