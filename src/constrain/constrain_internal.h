/* The compiled form of a JSON schema shared by src/constrain/: nodes (one
 * per schema, plus hidden nodes for free values and the root), tries of
 * byte strings (property keys in their JSON-escaped form, enum/const values
 * in compact JSON), and the matcher's frame layout. A matcher state is a
 * byte buffer: a header, then threads (one per live anyOf alternative),
 * each a header and its stack of frames, so a state is copied with one
 * memcpy of its used length. */
#ifndef ORCHARD_CONSTRAIN_INTERNAL_H
#define ORCHARD_CONSTRAIN_INTERNAL_H

#include "orchard/constrain.h"

#define CN_MAX_FRAMES 40
#define CN_MAX_THREADS 64
#define CN_MAX_PROPS 64

typedef enum cn_kind {
    K_ROOT = 0, /* the pseudo frame under the value */
    K_ANY,
    K_OBJECT,
    K_ARRAY,
    K_STRING,
    K_NUMBER,
    K_INTEGER,
    K_LITERAL, /* enum, const, boolean, null: a trie of JSON texts */
    K_ANYOF
} cn_kind;

typedef struct cn_trie {
    int32_t child, next; /* first child, next sibling (-1: none) */
    int32_t term;        /* >= 0: a string ends here (its index) */
    int32_t min_rest;    /* fewest bytes to finish from here (keys: through the value) */
    uint64_t reach;      /* keys: the properties below this node */
    uint8_t byte;
} cn_trie;

typedef struct cn_node {
    cn_kind kind;
    /* object */
    int n_props;
    int32_t *props;   /* value node per property */
    int32_t *key_len; /* escaped key length per property */
    int32_t key_root; /* trie of the escaped keys, -1 when none */
    uint64_t required;
    int32_t additional; /* node of other keys' values; -1: no other keys */
    bool ordered;       /* x-orchard-ordered: keys in the order of properties */
    /* array */
    int32_t items;
    int64_t min_items, max_items;
    /* string */
    int64_t min_len, max_len;
    /* literal */
    int32_t lit_root;
    /* anyOf */
    int32_t *alts;
    int n_alts;
    /* derived */
    int64_t min_bytes; /* shortest JSON text of a value */
    int threads;       /* most threads alive inside a value */
    int frames;        /* deepest stack of frames inside a value */
} cn_node;

struct orc_json_schema {
    orc_json_schema_opts opts;
    cn_node *nodes;
    int n_nodes, cap_nodes;
    cn_trie *trie;
    int n_trie, cap_trie;
    int32_t root, root_frame;
    int32_t any_obj, any_arr, any_str, any_num, any_lit;
    size_t slot; /* bytes of one matcher state */
};

typedef struct cn_frame {
    uint64_t seen;
    int64_t count;
    int32_t node;
    int32_t trie;
    int16_t prop;
    uint8_t phase, sub, ndig, anyd, need, lo, hi, flags;
    uint16_t hex;
    int32_t kpos; /* object key: bytes of the key so far */
} cn_frame;

typedef struct cn_thread {
    int32_t depth, ws;
    cn_frame f[CN_MAX_FRAMES];
} cn_thread;

/* thread header in a state buffer: depth, ws, then depth frames */
#define CN_THREAD_HDR 8
#define CN_STATE_HDR 8

static inline size_t cn_thread_size(int32_t depth) { return CN_THREAD_HDR + (size_t)depth * sizeof(cn_frame); }

/* Matcher core (match.c). */
size_t cn_state_size(const uint8_t *st);
int32_t cn_state_threads(const uint8_t *st);
void cn_state_init(const orc_json_schema *s, uint8_t *st);
/* One byte: src -> dst (dst has room for s->slot bytes); false when no thread survives. */
bool cn_step(const orc_json_schema *s, const uint8_t *src, uint8_t c, uint8_t *dst);
bool cn_state_done(const orc_json_schema *s, const uint8_t *st);
bool cn_state_finished(const uint8_t *st);
int64_t cn_state_min_remaining(const orc_json_schema *s, const uint8_t *st);
/* When every thread is inside a free string (a string value, or a key that
 * may be any key) between characters: the most plain characters (printable
 * ASCII other than '"' and '\\') any thread can still take; else -1. */
int64_t cn_state_string_room(const orc_json_schema *s, const uint8_t *st);

struct orc_json_matcher {
    const orc_json_schema *s;
    uint8_t *cur, *tmp;
    uint8_t *dfs; /* filter scratch: states per trie depth */
    size_t dfs_slots;
};

#endif
