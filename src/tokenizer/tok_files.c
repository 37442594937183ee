/* The tokenizer's files: Hugging Face tokenizer.json (read and written) and
 * GPT-2's encoder.json + vocab.bpe (read, by turning the pair into the same
 * JSON tree and reading that). Reading checks everything before a tokenizer
 * is handed out: model.type "BPE", a vocab of byte-level strings with ids
 * 0..N-1 each used once (ids shared with added_tokens must name the same
 * text), merges ("a b" strings or ["a", "b"] pairs) of known tokens whose
 * concatenation is in the vocab, and a pre_tokenizer orchard implements:
 * ByteLevel (GPT-2's split), or a Sequence of a digit splitter (Split on
 * [0-9], \d or \p{N} "Isolated", or Digits with individual_digits) and
 * ByteLevel. The last two digit patterns match non-ASCII digits in Hugging
 * Face; orchard splits ASCII digits only. A model with byte_fallback is the
 * SentencePiece kind (see orchard/tokenizer.h): plain UTF-8 pieces with
 * "\u2581" for a space, <0xNN> byte tokens, and the space handling given by
 * a Prepend + Replace normalizer or a Metaspace pre-tokenizer. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orchard/fileio.h"
#include "tok_internal.h"

/* ---- plain files -------------------------------------------------------------------- */

#define MAX_FILE ((size_t)1 << 32)

char *tok_read_file(const char *path, size_t *len, orc_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        orc_error_set(err, ORC_EIO, "tokenizer: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size >= MAX_FILE) {
        orc_error_set(err, ORC_EIO, "tokenizer: %s is not a regular file under 4 GiB", path);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory reading %s (%zu bytes)", path, n);
        close(fd);
        return NULL;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            orc_error_set(err, ORC_EIO, "tokenizer: cannot read %s: %s", path, r < 0 ? strerror(errno) : "short read");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

orc_status tok_write_file_atomic(const char *path, const char *data, size_t len, orc_error *err) {
    return orc_write_file_atomic(path, data, len, "tokenizer", err);
}

/* ---- reading tokenizer.json --------------------------------------------------------- */

#define FAIL(code, ...) (orc_error_set(err, code, __VA_ARGS__), (orc_status)(code))

/* Byte-level string (GPT-2's characters) to bytes; false if a character
 * stands for no byte. out needs strlen(s) bytes. */
static bool unbyte(const char *s, size_t n, uint8_t *out, size_t *out_len, uint32_t *bad) {
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        if (p[i] < 0x80) {
            cp = p[i];
            i += 1;
        } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < n) {
            cp = ((uint32_t)(p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
            i += 2;
        } else { /* three- and four-byte characters are never byte-level */
            int extra = (p[i] & 0xF0) == 0xE0 ? 2 : 3;
            cp = p[i] & (extra == 2 ? 0x0F : 0x07);
            for (int k = 1; k <= extra && i + k < n; k++) cp = (cp << 6) | (p[i + k] & 0x3F);
            *bad = cp;
            return false;
        }
        int b = orc_tok_char_to_byte(cp);
        if (b < 0) {
            *bad = cp;
            return false;
        }
        out[o++] = (uint8_t)b;
    }
    *out_len = o;
    return true;
}

static bool is_true(json_t *v) { return v && json_is_true(v); }
static bool is_null(json_t *v) { return !v || json_is_null(v); }

static orc_status parse_bytelevel(json_t *o, bool *prefix_space, const char *name, orc_error *err) {
    json_t *use_regex = json_object_get(o, "use_regex");
    if (use_regex && !json_is_boolean(use_regex))
        return FAIL(ORC_EFORMAT, "tokenizer: %s: ByteLevel use_regex is not a boolean", name);
    if (use_regex && !json_is_true(use_regex))
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: ByteLevel with use_regex false is not supported", name);
    json_t *aps = json_object_get(o, "add_prefix_space");
    if (aps && !json_is_boolean(aps))
        return FAIL(ORC_EFORMAT, "tokenizer: %s: ByteLevel add_prefix_space is not a boolean", name);
    *prefix_space = !aps || json_is_true(aps); /* Hugging Face's default is true */
    return ORC_OK;
}

static const char *type_of(json_t *o) {
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static bool is_digit_split(json_t *o) {
    const char *type = type_of(o);
    if (!type) return false;
    if (strcmp(type, "Digits") == 0) return is_true(json_object_get(o, "individual_digits"));
    if (strcmp(type, "Split") != 0) return false;
    json_t *pat = json_object_get(o, "pattern");
    const char *re = json_string_value(json_object_get(pat, "Regex"));
    const char *beh = json_string_value(json_object_get(o, "behavior"));
    json_t *inv = json_object_get(o, "invert");
    if (!re || !beh || strcmp(beh, "Isolated") != 0 || is_true(inv)) return false;
    return strcmp(re, "[0-9]") == 0 || strcmp(re, "\\d") == 0 || strcmp(re, "\\p{N}") == 0;
}

static orc_status parse_pretok(json_t *pt, orc_tokenizer *t, const char *name, orc_error *err) {
    if (is_null(pt))
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: no pre_tokenizer; byte-level BPE needs ByteLevel", name);
    const char *type = json_is_object(pt) ? type_of(pt) : NULL;
    if (!type) return FAIL(ORC_EFORMAT, "tokenizer: %s: pre_tokenizer is not an object with a string type", name);
    if (strcmp(type, "ByteLevel") == 0) {
        t->pretok = ORC_PRETOK_GPT2;
        return parse_bytelevel(pt, &t->add_prefix_space, name, err);
    }
    if (strcmp(type, "Sequence") != 0)
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: pre_tokenizer type '%s' is not supported", name, type);
    json_t *list = json_object_get(pt, "pretokenizers");
    if (!json_is_array(list))
        return FAIL(ORC_EFORMAT, "tokenizer: %s: Sequence pre_tokenizer lacks its pretokenizers array", name);
    size_t n = json_array_size(list);
    json_t *last = n ? json_array_get(list, n - 1) : NULL;
    const char *last_type = json_is_object(last) ? type_of(last) : NULL;
    bool ok = last_type && strcmp(last_type, "ByteLevel") == 0 &&
              (n == 1 || (n == 2 && is_digit_split(json_array_get(list, 0))));
    if (!ok)
        return FAIL(ORC_EUNSUPPORTED,
                    "tokenizer: %s: this Sequence pre_tokenizer is not supported (orchard reads ByteLevel, "
                    "optionally after a digit Split)",
                    name);
    t->pretok = n == 2 ? ORC_PRETOK_SPLIT_DIGITS : ORC_PRETOK_GPT2;
    orc_status st = parse_bytelevel(last, &t->add_prefix_space, name, err);
    /* Hugging Face would prefix every piece the Split makes, digits included. */
    if (st == ORC_OK && n == 2 && t->add_prefix_space)
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: add_prefix_space after a digit Split is not supported", name);
    return st;
}

/* Options of the BPE model that change its output and that orchard lacks. */
static orc_status check_model_options(json_t *model, orc_tokenizer *t, const char *name, orc_error *err) {
    json_t *v = json_object_get(model, "dropout");
    if (!is_null(v) && (!json_is_number(v) || json_number_value(v) != 0.0))
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: BPE dropout is not supported", name);
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, affixes[i]);
        if (!is_null(v) && (!json_is_string(v) || json_string_length(v) > 0))
            return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: model.%s is not supported", name, affixes[i]);
    }
    if (is_true(json_object_get(model, "byte_fallback")) != t->spm)
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: byte_fallback is only supported with SentencePiece spaces", name);
    v = json_object_get(model, "ignore_merges");
    if (v && !json_is_boolean(v)) return FAIL(ORC_EFORMAT, "tokenizer: %s: model.ignore_merges is not a boolean", name);
    t->ignore_merges = is_true(v);
    return ORC_OK;
}

static orc_status read_id(json_t *v, const char *what, const char *which, json_int_t *id, const char *name,
                          orc_error *err) {
    if (!json_is_integer(v))
        return FAIL(ORC_EFORMAT, "tokenizer: %s: %s '%s' has no integer id", name, what, which);
    *id = json_integer_value(v);
    if (*id < 0 || *id >= ORC_TOK_MAX_VOCAB)
        return FAIL(ORC_EFORMAT, "tokenizer: %s: %s '%s' has id %lld, outside [0, %d)", name, what, which,
                    (long long)*id, ORC_TOK_MAX_VOCAB);
    return ORC_OK;
}

/* 1 + the largest id in vocab and added_tokens. */
static orc_status count_ids(json_t *vocab, json_t *added, size_t *n, const char *name, orc_error *err) {
    json_int_t max = -1, id;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        orc_status st = read_id(v, "vocab token", key, &id, name, err);
        if (st != ORC_OK) return st;
        if (id > max) max = id;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content");
        if (!json_is_object(v) || !json_is_string(c))
            return FAIL(ORC_EFORMAT, "tokenizer: %s: added_tokens[%zu] is not an object with a string content", name,
                        i);
        orc_status st = read_id(json_object_get(v, "id"), "added token", json_string_value(c), &id, name, err);
        if (st != ORC_OK) return st;
        if (id > max) max = id;
    }
    if (max < 0) return FAIL(ORC_EFORMAT, "tokenizer: %s: the vocabulary is empty", name);
    /* Each entry names one id, so a largest id past the entry count means a
     * hole; saying so now also keeps a lone huge id from costing memory. */
    size_t entries = json_object_size(vocab) + json_array_size(added);
    if ((size_t)max >= entries)
        return FAIL(ORC_EFORMAT,
                    "tokenizer: %s: id %lld leaves a hole: only %zu tokens are listed (ids must run 0..N-1 with no "
                    "hole)",
                    name, (long long)max, entries);
    *n = (size_t)max + 1;
    return ORC_OK;
}

static orc_status read_added(json_t *added, orc_tokenizer *t, const char *name, orc_error *err) {
    size_t i;
    json_t *v;
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content"), *sp = json_object_get(v, "special");
        if (sp && !json_is_boolean(sp))
            return FAIL(ORC_EFORMAT, "tokenizer: %s: added_tokens[%zu].special is not a boolean", name, i);
        uint8_t flags = TOK_ADDED | (is_true(sp) ? TOK_SPECIAL : 0);
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        orc_status st = tok_set(t, (int32_t)id, json_string_value(c), json_string_length(c), flags, name, err);
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

#define METASPACE "\xe2\x96\x81" /* U+2581, SentencePiece's visible space */

/* "<0xNN>" -> NN, else -1. */
static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A SentencePiece piece in its decoded form: U+2581 -> space. out needs n bytes. */
static size_t unmetaspace(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, METASPACE, 3) == 0) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

static orc_status read_spm_vocab(json_t *vocab, orc_tokenizer *t, const char *name, orc_error *err) {
    const char *key;
    json_t *v;
    orc_status st = ORC_OK;
    json_object_foreach(vocab, key, v) {
        size_t klen = strlen(key);
        int32_t id = (int32_t)json_integer_value(v);
        const tok_entry *e = &t->tokens[id];
        if ((e->flags & TOK_ADDED) && e->len == klen && memcmp(t->pool + e->off, key, klen) == 0)
            continue; /* the added token's own entry (<unk>, <s>, </s>) */
        int b = byte_token_value(key, klen);
        if (b >= 0) {
            if (t->byte_id[b] >= 0 && t->byte_id[b] != id)
                return FAIL(ORC_EFORMAT, "tokenizer: %s: byte token <0x%02X> has two ids, %d and %d", name, b,
                            t->byte_id[b], id);
            uint8_t c = (uint8_t)b;
            st = tok_set(t, id, &c, 1, TOK_BYTE, name, err);
            t->byte_id[b] = id;
        } else {
            char *buf = malloc(klen ? klen : 1);
            if (!buf) return FAIL(ORC_ENOMEM, "tokenizer: out of memory");
            st = tok_set(t, id, buf, unmetaspace(key, klen, buf), TOK_IN_MODEL, name, err);
            free(buf);
        }
        if (st != ORC_OK) break;
    }
    return st;
}

static orc_status read_vocab(json_t *vocab, orc_tokenizer *t, const char *name, orc_error *err) {
    if (t->spm) return read_spm_vocab(vocab, t, name, err);
    const char *key;
    json_t *v;
    size_t cap = 256;
    uint8_t *buf = malloc(cap);
    if (!buf) return FAIL(ORC_ENOMEM, "tokenizer: out of memory");
    orc_status st = ORC_OK;
    json_object_foreach(vocab, key, v) {
        size_t klen = strlen(key), blen = 0;
        int32_t id = (int32_t)json_integer_value(v);
        if (klen > cap) {
            free(buf);
            cap = klen;
            buf = malloc(cap);
            if (!buf) return FAIL(ORC_ENOMEM, "tokenizer: out of memory");
        }
        uint32_t bad = 0;
        bool byte_level = unbyte(key, klen, buf, &blen, &bad);
        const tok_entry *e = &t->tokens[id];
        bool same_added = (e->flags & TOK_ADDED) && e->len == klen && memcmp(t->pool + e->off, key, klen) == 0;
        if (same_added && (!byte_level || blen != klen || memcmp(buf, key, klen) != 0))
            continue; /* the added token's own entry, not a byte-level string */
        if (!byte_level) {
            char b[96];
            st = FAIL(ORC_EFORMAT,
                      "tokenizer: %s: vocab token '%s' (id %d) is not a byte-level string (U+%04X stands for no byte)",
                      name, tok_escape(b, sizeof b, key, klen), id, bad);
            break;
        }
        st = tok_set(t, id, buf, blen, TOK_IN_MODEL, name, err);
        if (st != ORC_OK) break;
    }
    free(buf);
    return st;
}

/* The model token id of a byte-level string from a merge, or -1. */
static int32_t merge_part(json_t *vocab, const orc_tokenizer *t, const char *s) {
    json_t *v = json_object_get(vocab, s);
    if (!v) return -1;
    int32_t id = (int32_t)json_integer_value(v);
    return (t->tokens[id].flags & TOK_IN_MODEL) ? id : -1;
}

static orc_status read_merge(json_t *m, size_t i, json_t *vocab, orc_tokenizer *t, char **scratch, size_t *cap,
                             const char *name, orc_error *err) {
    const char *a, *b;
    char pair[200];
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (n + 1 > *cap) {
            char *p = realloc(*scratch, n + 1);
            if (!p) return FAIL(ORC_ENOMEM, "tokenizer: out of memory");
            *scratch = p;
            *cap = n + 1;
        }
        memcpy(*scratch, s, n + 1);
        char *sp = strchr(*scratch, ' ');
        if (!sp || sp == *scratch || !sp[1] || strchr(sp + 1, ' ') || strlen(*scratch) != n)
            return FAIL(ORC_EFORMAT, "tokenizer: %s: merges[%zu] '%s' is not two tokens separated by one space",
                        name, i, tok_escape(pair, sizeof pair, s, n));
        *sp = '\0';
        a = *scratch;
        b = sp + 1;
    } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
               json_is_string(json_array_get(m, 1))) {
        a = json_string_value(json_array_get(m, 0));
        b = json_string_value(json_array_get(m, 1));
    } else {
        return FAIL(ORC_EFORMAT, "tokenizer: %s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", name, i);
    }
    int32_t l = merge_part(vocab, t, a), r = merge_part(vocab, t, b);
    if (t->spm && (byte_token_value(a, strlen(a)) >= 0 || byte_token_value(b, strlen(b)) >= 0))
        return ORC_OK; /* a merge of byte tokens: SentencePiece never forms it */
    if (l < 0 || r < 0) {
        const char *unknown = l < 0 ? a : b;
        return FAIL(ORC_EFORMAT, "tokenizer: %s: merges[%zu] names unknown token '%s'", name, i,
                    tok_escape(pair, sizeof pair, unknown, strlen(unknown)));
    }
    const tok_entry *el = &t->tokens[l], *er = &t->tokens[r];
    size_t n = (size_t)el->len + er->len;
    uint8_t small[256], *cat = n <= sizeof small ? small : malloc(n);
    if (!cat) return FAIL(ORC_ENOMEM, "tokenizer: out of memory");
    memcpy(cat, t->pool + el->off, el->len);
    memcpy(cat + el->len, t->pool + er->off, er->len);
    int64_t *res = tok_bmap_get(&t->model_ids, cat, n);
    orc_status st = ORC_OK;
    if (!res)
        st = FAIL(ORC_EFORMAT, "tokenizer: %s: merges[%zu] ('%s' + '%s') makes a token that is not in the vocab",
                  name, i, a, b);
    else
        st = tok_add_merge(t, l, r, (int32_t)*res, err);
    if (cat != small) free(cat);
    return st;
}

static orc_status read_merges(json_t *merges, json_t *vocab, orc_tokenizer *t, const char *name, orc_error *err) {
    char *scratch = NULL;
    size_t cap = 0, i;
    json_t *m;
    orc_status st = ORC_OK;
    json_array_foreach(merges, i, m) {
        st = read_merge(m, i, vocab, t, &scratch, &cap, name, err);
        if (st != ORC_OK) break;
    }
    free(scratch);
    return st;
}

static orc_status check_decoder_and_normalizer(json_t *root, const char *name, orc_error *err) {
    json_t *norm = json_object_get(root, "normalizer");
    if (!is_null(norm)) return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: normalizers are not supported", name);
    json_t *dec = json_object_get(root, "decoder");
    if (is_null(dec)) return ORC_OK;
    const char *type = json_is_object(dec) ? type_of(dec) : NULL;
    if (!type) return FAIL(ORC_EFORMAT, "tokenizer: %s: decoder is not an object with a string type", name);
    if (strcmp(type, "ByteLevel") != 0)
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: decoder type '%s' is not supported (ByteLevel only)", name,
                    type);
    return ORC_OK;
}

static bool is_metaspace_replace(json_t *o) {
    const char *type = type_of(o);
    json_t *pat = json_object_get(o, "pattern");
    const char *from = json_string_value(json_object_get(pat, "String"));
    const char *to = json_string_value(json_object_get(o, "content"));
    return type && strcmp(type, "Replace") == 0 && from && strcmp(from, " ") == 0 && to && strcmp(to, METASPACE) == 0;
}

static bool is_metaspace_prepend(json_t *o) {
    const char *type = type_of(o);
    const char *p = json_string_value(json_object_get(o, "prepend"));
    return type && strcmp(type, "Prepend") == 0 && p && strcmp(p, METASPACE) == 0;
}

/* The space handling of a SentencePiece tokenizer.json: a normalizer
 * (Replace " " -> U+2581, optionally after Prepend U+2581) with no
 * pre-tokenizer, or no normalizer and a Metaspace pre-tokenizer. */
static orc_status parse_spm_spaces(json_t *root, orc_tokenizer *t, const char *name, orc_error *err) {
    json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
    if (!is_null(norm)) {
        if (!is_null(pre))
            return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: a SentencePiece normalizer with a pre_tokenizer is not supported",
                        name);
        json_t *list = json_object_get(norm, "normalizers");
        const char *type = type_of(norm);
        if (type && strcmp(type, "Sequence") == 0 && json_array_size(list) == 2 &&
            is_metaspace_prepend(json_array_get(list, 0)) && is_metaspace_replace(json_array_get(list, 1))) {
            t->spm_prefix = true;
            return ORC_OK;
        }
        if (is_metaspace_replace(norm)) return ORC_OK;
        return FAIL(ORC_EUNSUPPORTED,
                    "tokenizer: %s: this normalizer is not supported (orchard reads SentencePiece's Prepend + Replace "
                    "of spaces by U+2581)",
                    name);
    }
    const char *type = is_null(pre) ? NULL : type_of(pre);
    if (!type || strcmp(type, "Metaspace") != 0)
        return FAIL(ORC_EUNSUPPORTED,
                    "tokenizer: %s: byte_fallback needs SentencePiece spaces: a Prepend/Replace normalizer or a "
                    "Metaspace pre_tokenizer",
                    name);
    const char *rep = json_string_value(json_object_get(pre, "replacement"));
    if (rep && strcmp(rep, METASPACE) != 0)
        return FAIL(ORC_EUNSUPPORTED, "tokenizer: %s: Metaspace replacement other than U+2581 is not supported", name);
    const char *scheme = json_string_value(json_object_get(pre, "prepend_scheme"));
    json_t *aps = json_object_get(pre, "add_prefix_space");
    if (scheme) {
        if (strcmp(scheme, "never") != 0 && strcmp(scheme, "first") != 0 && strcmp(scheme, "always") != 0)
            return FAIL(ORC_EFORMAT, "tokenizer: %s: Metaspace prepend_scheme '%s' is not never/first/always", name,
                        scheme);
        t->spm_prefix = strcmp(scheme, "never") != 0;
        t->spm_prefix_first = strcmp(scheme, "first") == 0;
    } else {
        t->spm_prefix = !aps || json_is_true(aps);
    }
    return ORC_OK;
}

static orc_tokenizer *from_root(json_t *root, const char *name, orc_error *err) {
    if (!json_is_object(root)) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: the top level is not a JSON object", name);
        return NULL;
    }
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: no \"model\" object", name);
        return NULL;
    }
    json_t *type = json_object_get(model, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: model.type is %s%s%s, not \"BPE\"", name,
                      json_is_string(type) ? "'" : "", json_is_string(type) ? json_string_value(type) : "missing",
                      json_is_string(type) ? "'" : "");
        return NULL;
    }
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || !json_is_array(merges) || (!is_null(added) && !json_is_array(added))) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: %s", name,
                      !json_is_object(vocab)  ? "model.vocab is missing or not an object"
                      : !json_is_array(merges) ? "model.merges is missing or not an array"
                                               : "added_tokens is not an array");
        return NULL;
    }
    const bool spm = is_true(json_object_get(model, "byte_fallback"));
    if (!spm && check_decoder_and_normalizer(root, name, err) != ORC_OK) return NULL;
    size_t n = 0;
    if (count_ids(vocab, added, &n, name, err) != ORC_OK) return NULL;
    orc_tokenizer *t = tok_new(n, err, name);
    if (!t) return NULL;
    t->spm = spm;
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (spm && unk && !(t->unk_token = strdup(unk))) {
        orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
        orc_tokenizer_free(t);
        return NULL;
    }
    if (check_model_options(model, t, name, err) != ORC_OK ||
        (spm ? parse_spm_spaces(root, t, name, err)
             : parse_pretok(json_object_get(root, "pre_tokenizer"), t, name, err)) != ORC_OK ||
        read_added(added, t, name, err) != ORC_OK || read_vocab(vocab, t, name, err) != ORC_OK ||
        tok_finish(t, name, err) != ORC_OK || read_merges(merges, vocab, t, name, err) != ORC_OK) {
        orc_tokenizer_free(t);
        return NULL;
    }
    return t;
}

orc_tokenizer *orc_tokenizer_from_json(const char *json, size_t len, const char *name, orc_error *err) {
    if (!name) name = "<memory>";
    if (!json) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: %s: NULL text", name);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: bad JSON at line %d column %d: %s", name, jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    orc_tokenizer *t = from_root(root, name, err);
    json_decref(root);
    return t;
}

/* ---- GPT-2's encoder.json + vocab.bpe -------------------------------------------------- */

/* vocab.bpe's lines ("#version" first, then "a b") as a JSON array of strings. */
static json_t *bpe_lines(char *text, size_t len, const char *path, orc_error *err) {
    json_t *arr = json_array();
    size_t line_no = 0;
    for (char *p = text, *end = text + len; arr && p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end;
        line_no++;
        size_t n = (size_t)(stop - p);
        if (n && p[n - 1] == '\r') n--;
        bool skip = n == 0 || (line_no == 1 && n >= 8 && memcmp(p, "#version", 8) == 0);
        if (!skip) {
            char *sp = memchr(p, ' ', n);
            if (!sp || sp == p || sp == p + n - 1 || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1)) ||
                memchr(p, '\0', n)) {
                orc_error_set(err, ORC_EFORMAT, "tokenizer: %s:%zu: a merge line must be two tokens and one space",
                              path, line_no);
                json_decref(arr);
                return NULL;
            }
            json_t *s = json_stringn(p, n);
            if (!s || json_array_append_new(arr, s) != 0) {
                orc_error_set(err, ORC_EFORMAT, "tokenizer: %s:%zu: not UTF-8 text", path, line_no);
                json_decref(arr);
                return NULL;
            }
        }
        p = stop + 1;
    }
    if (!arr) orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
    return arr;
}

orc_tokenizer *orc_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, orc_error *err) {
    if (!encoder_json || !vocab_bpe) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: load_gpt2: NULL path");
        return NULL;
    }
    size_t len = 0;
    char *text = tok_read_file(encoder_json, &len, err);
    if (!text) return NULL;
    json_error_t jerr;
    json_t *enc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!enc) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: bad JSON at line %d column %d: %s", encoder_json, jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(enc)) {
        orc_error_set(err, ORC_EFORMAT, "tokenizer: %s: not a JSON object of token -> id", encoder_json);
        json_decref(enc);
        return NULL;
    }
    text = tok_read_file(vocab_bpe, &len, err);
    json_t *merges = text ? bpe_lines(text, len, vocab_bpe, err) : NULL;
    free(text);
    if (!merges) {
        json_decref(enc);
        return NULL;
    }
    json_t *added = json_array();
    json_t *eot = json_object_get(enc, "<|endoftext|>");
    if (eot)
        json_array_append_new(added,
                              json_pack("{s:O, s:s, s:b}", "id", eot, "content", "<|endoftext|>", "special", 1));
    json_t *root = json_pack("{s:{s:s, s:o, s:o}, s:o, s:{s:s, s:b}}", "model", "type", "BPE", "vocab", enc,
                             "merges", merges, "added_tokens", added, "pre_tokenizer", "type", "ByteLevel",
                             "add_prefix_space", 0);
    if (!root) {
        orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    char name[ORC_ERROR_MSG_MAX / 2];
    snprintf(name, sizeof name, "%s + %s", encoder_json, vocab_bpe);
    orc_tokenizer *t = from_root(root, name, err);
    json_decref(root);
    return t;
}

/* ---- loading by path ----------------------------------------------------------------------- */

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static orc_tokenizer *load_json_file(const char *path, orc_error *err) {
    size_t len = 0;
    char *text = tok_read_file(path, &len, err);
    if (!text) return NULL;
    orc_tokenizer *t = orc_tokenizer_from_json(text, len, path, err);
    free(text);
    return t;
}

orc_tokenizer *orc_tokenizer_load(const char *path, orc_error *err) {
    if (!path) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: load: NULL path");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        orc_error_set(err, ORC_EIO, "tokenizer: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) return load_json_file(path, err);
    char *hf = join(path, "tokenizer.json"), *enc = join(path, "encoder.json"), *bpe = join(path, "vocab.bpe");
    orc_tokenizer *t = NULL;
    if (!hf || !enc || !bpe)
        orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
    else if (exists(hf))
        t = load_json_file(hf, err);
    else if (exists(enc) && exists(bpe))
        t = orc_tokenizer_load_gpt2(enc, bpe, err);
    else
        orc_error_set(err, ORC_EIO, "tokenizer: %s holds neither tokenizer.json nor encoder.json + vocab.bpe", path);
    free(hf);
    free(enc);
    free(bpe);
    return t;
}

/* ---- writing tokenizer.json ------------------------------------------------------------------ */

/* Bytes to GPT-2's characters, UTF-8 encoded. out needs 2 * n + 1 bytes. */
static size_t to_byte_level(const uint8_t *p, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = orc_tok_byte_to_char(p[i]);
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

static json_t *pretok_json(const orc_tokenizer *t) {
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", t->add_prefix_space,
                           "trim_offsets", 1, "use_regex", 1);
    if (t->pretok == ORC_PRETOK_GPT2) return bl;
    json_t *digits = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", "[0-9]", "behavior",
                               "Isolated", "invert", 0);
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", digits, bl);
}

static json_t *added_json(const orc_tokenizer *t) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < t->n_vocab; i++) {
        const tok_entry *e = &t->tokens[i];
        if (!(e->flags & TOK_ADDED)) continue;
        json_t *c = json_stringn((const char *)t->pool + e->off, e->len);
        json_t *o = c ? json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content", c,
                                  "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special",
                                  (e->flags & TOK_SPECIAL) != 0)
                      : NULL;
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* A SentencePiece token's string in the file: <0xNN> for a byte token, the
 * piece with U+2581 for each space otherwise (caller frees). */
static char *spm_piece(const orc_tokenizer *t, size_t id) {
    const tok_entry *e = &t->tokens[id];
    const char *p = (const char *)t->pool + e->off;
    char *out = malloc(3 * (size_t)e->len + 8);
    if (!out) return NULL;
    if (e->flags & TOK_BYTE) {
        snprintf(out, 8, "<0x%02X>", (unsigned)(uint8_t)p[0]);
        return out;
    }
    size_t o = 0;
    for (size_t i = 0; i < e->len; i++) {
        if (p[i] == ' ') {
            memcpy(out + o, METASPACE, 3);
            o += 3;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

static json_t *spm_model_json(const orc_tokenizer *t) {
    json_t *vocab = json_object(), *merges = json_array();
    bool ok = vocab && merges;
    for (size_t i = 0; ok && i < t->n_vocab; i++) {
        if (!(t->tokens[i].flags & (TOK_IN_MODEL | TOK_BYTE))) continue;
        char *p = spm_piece(t, i);
        ok = p && json_object_set_new(vocab, p, json_integer((json_int_t)i)) == 0;
        free(p);
    }
    for (size_t r = 0; ok && r < t->n_merges; r++) {
        char *a = spm_piece(t, (size_t)t->merges[3 * r]), *b = spm_piece(t, (size_t)t->merges[3 * r + 1]);
        ok = a && b && json_array_append_new(merges, json_pack("[s, s]", a, b)) == 0;
        free(a);
        free(b);
    }
    if (!ok) {
        json_decref(vocab);
        json_decref(merges);
        return NULL;
    }
    return json_pack("{s:s, s:n, s:s?, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout", "unk_token",
                     t->unk_token, "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 1, "byte_fallback",
                     1, "ignore_merges", 0, "vocab", vocab, "merges", merges);
}

/* Normalizer, pre_tokenizer and decoder of the SentencePiece kind, in the
 * form Hugging Face's Llama tokenizers use. */
static void spm_text_rules(const orc_tokenizer *t, json_t **norm, json_t **pre, json_t **dec) {
    *norm = NULL;
    *pre = NULL;
    if (t->spm_prefix_first) {
        *pre = json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", METASPACE, "prepend_scheme",
                         "first", "split", 0);
    } else {
        json_t *replace = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ", "content",
                                    METASPACE);
        *norm = t->spm_prefix ? json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence", "normalizers", "type",
                                          "Prepend", "prepend", METASPACE, replace)
                              : replace;
    }
    *dec = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                     "decoders", "type", "Replace", "pattern", "String", METASPACE, "content", " ", "type",
                     "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", t->spm_prefix ? 1 : 0,
                     "stop", 0);
}

static json_t *model_json(const orc_tokenizer *t) {
    if (t->spm) return spm_model_json(t);
    json_t *vocab = json_object(), *merges = json_array();
    char *buf = malloc(2 * 65536 + 1);
    size_t buf_cap = 65536;
    bool ok = vocab && merges && buf;
    for (size_t i = 0; ok && i < t->n_vocab; i++) {
        const tok_entry *e = &t->tokens[i];
        if (!(e->flags & TOK_IN_MODEL)) continue;
        if (e->len > buf_cap) {
            free(buf);
            buf_cap = e->len;
            buf = malloc(2 * buf_cap + 1);
            if (!buf) break;
        }
        to_byte_level(t->pool + e->off, e->len, buf);
        ok = json_object_set_new(vocab, buf, json_integer((json_int_t)i)) == 0;
    }
    for (size_t r = 0; ok && buf && r < t->n_merges; r++) {
        const tok_entry *a = &t->tokens[t->merges[3 * r]], *b = &t->tokens[t->merges[3 * r + 1]];
        size_t need = (size_t)a->len + b->len + 1;
        if (need > buf_cap) {
            free(buf);
            buf_cap = need;
            buf = malloc(2 * buf_cap + 1);
            if (!buf) break;
        }
        size_t o = to_byte_level(t->pool + a->off, a->len, buf);
        buf[o++] = ' ';
        to_byte_level(t->pool + b->off, b->len, buf + o);
        ok = json_array_append_new(merges, json_string(buf)) == 0;
    }
    ok = ok && buf;
    free(buf);
    if (!ok) {
        json_decref(vocab);
        json_decref(merges);
        return NULL;
    }
    return json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout", "unk_token",
                     "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                     "ignore_merges", t->ignore_merges, "vocab", vocab, "merges", merges);
}

char *orc_tokenizer_to_json(const orc_tokenizer *t, orc_error *err) {
    if (!t) {
        orc_error_set(err, ORC_EINVAL, "tokenizer: save: NULL tokenizer");
        return NULL;
    }
    json_t *added = added_json(t);
    json_t *norm = NULL, *pre, *dec;
    if (t->spm) {
        spm_text_rules(t, &norm, &pre, &dec);
    } else {
        pre = pretok_json(t);
        dec = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                        "use_regex", 1);
    }
    json_t *model = model_json(t);
    if (!added || (!pre && !norm) || !model || !dec) {
        json_decref(added);
        json_decref(norm);
        json_decref(pre);
        json_decref(model);
        json_decref(dec);
        orc_error_set(err, ORC_EINVAL, "tokenizer: save: out of memory, or a token that is not UTF-8");
        return NULL;
    }
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:o?, s:o?, s:n, s:o, s:o}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", norm, "pre_tokenizer", pre,
                             "post_processor", "decoder", dec, "model", model);
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text) orc_error_set(err, ORC_ENOMEM, "tokenizer: save: out of memory");
    return text;
}

orc_status orc_tokenizer_save(const orc_tokenizer *t, const char *path, orc_error *err) {
    if (!t || !path) return orc_error_set(err, ORC_EINVAL, "tokenizer: save: NULL tokenizer or path");
    struct stat st;
    char *file = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? join(path, "tokenizer.json") : strdup(path);
    if (!file) return orc_error_set(err, ORC_ENOMEM, "tokenizer: out of memory");
    char *text = orc_tokenizer_to_json(t, err);
    orc_status s = text ? tok_write_file_atomic(file, text, strlen(text), err) : err ? err->code : ORC_ENOMEM;
    free(text);
    free(file);
    return s;
}
