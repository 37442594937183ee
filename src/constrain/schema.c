/* The JSON Schema compiler (see orchard/constrain.h): schema text -> nodes
 * and tries, with each node's shortest value, its deepest frame stack and
 * its most live anyOf threads worked out here, so the matcher can size its
 * states once and never meet a schema it cannot follow. Every refusal names
 * the schema path of the keyword at fault, as "#/properties/a/items/pattern". */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constrain/constrain_internal.h"

void orc_json_schema_opts_default(orc_json_schema_opts *o) {
    *o = (orc_json_schema_opts){.strict_objects = false, .max_whitespace = 1, .max_string = 256, .max_number = 16,
                                .max_depth = 8};
}

/* ---- building blocks -------------------------------------------------------------- */

static int32_t new_node(orc_json_schema *s, cn_kind k) {
    if (s->n_nodes == s->cap_nodes) {
        int cap = s->cap_nodes ? s->cap_nodes * 2 : 32;
        cn_node *p = realloc(s->nodes, sizeof *p * (size_t)cap);
        if (!p) return -1;
        s->nodes = p;
        s->cap_nodes = cap;
    }
    cn_node *n = &s->nodes[s->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->key_root = n->additional = n->items = n->lit_root = -1;
    n->max_items = INT64_MAX;
    n->max_len = s->opts.max_string;
    n->threads = 1;
    n->frames = 1;
    return s->n_nodes++;
}

static int32_t new_trie(orc_json_schema *s, uint8_t byte) {
    if (s->n_trie == s->cap_trie) {
        int cap = s->cap_trie ? s->cap_trie * 2 : 64;
        cn_trie *p = realloc(s->trie, sizeof *p * (size_t)cap);
        if (!p) return -1;
        s->trie = p;
        s->cap_trie = cap;
    }
    s->trie[s->n_trie] = (cn_trie){.child = -1, .next = -1, .term = -1, .min_rest = 0, .reach = 0, .byte = byte};
    return s->n_trie++;
}

/* Add bytes under root as string idx; false when out of memory. */
static bool trie_add(orc_json_schema *s, int32_t root, const char *text, size_t len, int32_t idx) {
    int32_t at = root;
    if (idx < 64) s->trie[root].reach |= 1ull << idx;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)text[i];
        int32_t c = s->trie[at].child;
        while (c >= 0 && s->trie[c].byte != b) c = s->trie[c].next;
        if (c < 0) {
            c = new_trie(s, b);
            if (c < 0) return false;
            s->trie[c].next = s->trie[at].child;
            s->trie[at].child = c;
        }
        if (idx < 64) s->trie[c].reach |= 1ull << idx;
        at = c;
    }
    if (s->trie[at].term < 0) s->trie[at].term = idx;
    return true;
}

/* min_rest of every node under at: bytes to the nearest end, plus tail(term). */
static int64_t trie_min(orc_json_schema *s, int32_t at, const int64_t *tail) {
    int64_t best = s->trie[at].term >= 0 ? (tail ? tail[s->trie[at].term] : 0) : INT32_MAX;
    for (int32_t c = s->trie[at].child; c >= 0; c = s->trie[c].next) {
        int64_t m = 1 + trie_min(s, c, tail);
        if (m < best) best = m;
    }
    s->trie[at].min_rest = (int32_t)(best > INT32_MAX ? INT32_MAX : best);
    return best;
}

typedef struct cctx {
    orc_json_schema *s;
    orc_error *err;
    int depth;
} cctx;

static bool fail(cctx *c, orc_status st, const char *path, const char *fmt, const char *what) {
    orc_error_set(c->err, st, "json schema %s: %s%s", path[0] ? path : "#", fmt, what ? what : "");
    return false;
}

static void sub_path(char *dst, size_t cap, const char *path, const char *a, const char *b) {
    snprintf(dst, cap, "%s/%s%s%s", path, a, b ? "/" : "", b ? b : "");
}

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "format", "$schema",
                                          "$id", "$comment", "$defs", "definitions", "deprecated", "readOnly",
                                          "writeOnly", "strict", NULL};
static const char *const KEYWORDS[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
                                       "items", "minItems", "maxItems", "minLength", "maxLength", "anyOf", "oneOf",
                                       "x-orchard-ordered", NULL};

static bool in_list(const char *k, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (strcmp(k, list[i]) == 0) return true;
    return false;
}

static bool get_count(cctx *c, json_t *o, const char *key, const char *path, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        char p[512];
        sub_path(p, sizeof p, path, key, NULL);
        return fail(c, ORC_EINVAL, p, "must be a non-negative integer", NULL);
    }
    *out = json_integer_value(v);
    return true;
}

static bool compile(cctx *c, json_t *js, const char *path, int32_t *out);

static bool type_matches(json_t *v, const char *type) {
    if (strcmp(type, "string") == 0) return json_is_string(v);
    if (strcmp(type, "number") == 0) return json_is_number(v);
    if (strcmp(type, "integer") == 0) return json_is_integer(v);
    if (strcmp(type, "boolean") == 0) return json_is_boolean(v);
    if (strcmp(type, "null") == 0) return json_is_null(v);
    if (strcmp(type, "object") == 0) return json_is_object(v);
    if (strcmp(type, "array") == 0) return json_is_array(v);
    return false;
}

/* A literal node from values (enum/const), keeping those of one of types (NULL: all). */
static bool compile_literal(cctx *c, json_t *values, json_t *types, const char *path, int32_t *out) {
    orc_json_schema *s = c->s;
    int32_t id = new_node(s, K_LITERAL), root = new_trie(s, 0);
    if (id < 0 || root < 0) return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
    s->nodes[id].lit_root = root;
    size_t kept = 0;
    for (size_t i = 0; i < json_array_size(values); i++) {
        json_t *v = json_array_get(values, i);
        bool ok = !types;
        for (size_t t = 0; types && t < json_array_size(types); t++)
            ok = ok || type_matches(v, json_string_value(json_array_get(types, t)));
        if (!ok) continue;
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        bool added = text && trie_add(s, root, text, strlen(text), (int32_t)kept);
        free(text);
        if (!added) return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
        kept++;
    }
    if (kept == 0) return fail(c, ORC_EINVAL, path, "no value of the enum/const fits the schema's type", NULL);
    s->nodes[id].min_bytes = trie_min(s, root, NULL);
    *out = id;
    return true;
}

/* One type's node from the keywords of o. */
static bool compile_type(cctx *c, json_t *o, const char *type, const char *path, int32_t *out) {
    orc_json_schema *s = c->s;
    char p[512];
    if (strcmp(type, "boolean") == 0 || strcmp(type, "null") == 0) {
        json_t *vals = strcmp(type, "null") == 0 ? json_pack("[n]") : json_pack("[bb]", 1, 0);
        bool ok = vals && compile_literal(c, vals, NULL, path, out);
        json_decref(vals);
        return ok || (vals ? false : fail(c, ORC_ENOMEM, path, "out of memory", NULL));
    }
    cn_kind k = strcmp(type, "object") == 0    ? K_OBJECT
                : strcmp(type, "array") == 0   ? K_ARRAY
                : strcmp(type, "string") == 0  ? K_STRING
                : strcmp(type, "number") == 0  ? K_NUMBER
                : strcmp(type, "integer") == 0 ? K_INTEGER
                                               : K_ROOT;
    if (k == K_ROOT) {
        sub_path(p, sizeof p, path, "type", NULL);
        return fail(c, ORC_EUNSUPPORTED, p, "unknown type ", type);
    }
    int32_t id = new_node(s, k);
    if (id < 0) return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
    if (k == K_STRING) {
        int64_t mn = 0, mx = -1;
        if (!get_count(c, o, "minLength", path, &mn) || !get_count(c, o, "maxLength", path, &mx)) return false;
        s->nodes[id].min_len = mn;
        if (mx >= 0) s->nodes[id].max_len = mx;
        if (mn > s->nodes[id].max_len) {
            sub_path(p, sizeof p, path, "minLength", NULL);
            return fail(c, ORC_EINVAL, p, "is above maxLength (or the string limit)", NULL);
        }
        s->nodes[id].min_bytes = 2 + mn;
    } else if (k == K_NUMBER || k == K_INTEGER) {
        s->nodes[id].min_bytes = 1;
    } else if (k == K_ARRAY) {
        int64_t mn = 0, mx = INT64_MAX;
        if (!get_count(c, o, "minItems", path, &mn) || !get_count(c, o, "maxItems", path, &mx)) return false;
        if (mn > mx) {
            sub_path(p, sizeof p, path, "minItems", NULL);
            return fail(c, ORC_EINVAL, p, "is above maxItems", NULL);
        }
        json_t *items = json_object_get(o, "items");
        int32_t it;
        sub_path(p, sizeof p, path, "items", NULL);
        if (items ? !compile(c, items, p, &it) : !compile(c, json_true(), p, &it)) return false;
        cn_node *n = &s->nodes[id];
        n->items = it;
        n->min_items = mn;
        n->max_items = mx;
        const cn_node *in = &s->nodes[it];
        n->min_bytes = 2 + mn * in->min_bytes + (mn > 0 ? mn - 1 : 0);
        n->threads = in->threads;
        n->frames = 1 + in->frames;
    } else { /* object */
        json_t *props = json_object_get(o, "properties"), *req = json_object_get(o, "required");
        json_t *addl = json_object_get(o, "additionalProperties");
        if (props && !json_is_object(props)) {
            sub_path(p, sizeof p, path, "properties", NULL);
            return fail(c, ORC_EINVAL, p, "must be an object", NULL);
        }
        size_t np = json_object_size(props);
        if (np > CN_MAX_PROPS) {
            sub_path(p, sizeof p, path, "properties", NULL);
            return fail(c, ORC_EUNSUPPORTED, p, "has more than 64 properties", NULL);
        }
        int32_t *pn = calloc(np ? np : 1, sizeof *pn), *kl = calloc(np ? np : 1, sizeof *kl);
        int64_t *tail = calloc(np ? np : 1, sizeof *tail);
        s->nodes[id].props = pn;
        s->nodes[id].key_len = kl;
        if (!pn || !kl || !tail) {
            free(tail);
            return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
        }
        int32_t root = np ? new_trie(s, 0) : -1;
        if (np && root < 0) {
            free(tail);
            return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
        }
        s->nodes[id].key_root = root;
        const char *key;
        json_t *val;
        size_t i = 0;
        int threads = 1, frames = 1;
        json_object_foreach(props, key, val) {
            sub_path(p, sizeof p, path, "properties", key);
            int32_t child;
            if (!compile(c, val, p, &child)) {
                free(tail);
                return false;
            }
            json_t *ks = json_string(key);
            char *esc = ks ? json_dumps(ks, JSON_ENCODE_ANY) : NULL;
            json_decref(ks);
            bool ok = esc && trie_add(s, root, esc + 1, strlen(esc) - 2, (int32_t)i);
            if (esc) kl[i] = (int32_t)strlen(esc) - 2;
            free(esc);
            if (!ok) {
                free(tail);
                return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
            }
            pn[i] = child;
            tail[i] = 2 + s->nodes[child].min_bytes; /* closing quote, colon, value */
            if (s->nodes[child].threads > threads) threads = s->nodes[child].threads;
            if (1 + s->nodes[child].frames > frames) frames = 1 + s->nodes[child].frames;
            i++;
        }
        s->nodes[id].n_props = (int)np;
        if (root >= 0) trie_min(s, root, tail);
        free(tail);
        uint64_t required = 0;
        if (req) {
            sub_path(p, sizeof p, path, "required", NULL);
            if (!json_is_array(req)) return fail(c, ORC_EINVAL, p, "must be an array of property names", NULL);
            for (size_t r = 0; r < json_array_size(req); r++) {
                json_t *name = json_array_get(req, r);
                if (!json_is_string(name)) return fail(c, ORC_EINVAL, p, "must be an array of property names", NULL);
                size_t at = 0;
                bool found = false;
                json_object_foreach(props, key, val) {
                    if (strcmp(key, json_string_value(name)) == 0) {
                        found = true;
                        break;
                    }
                    at++;
                }
                if (!found)
                    return fail(c, ORC_EUNSUPPORTED, p, "names a property that is not in properties: ",
                                json_string_value(name));
                required |= 1ull << at;
            }
        }
        s->nodes[id].required = required;
        int32_t add = -1;
        sub_path(p, sizeof p, path, "additionalProperties", NULL);
        if (addl && !json_is_false(addl)) {
            if (!compile(c, addl, p, &add)) return false;
        } else if (!addl && !s->opts.strict_objects) {
            if (!compile(c, json_true(), p, &add)) return false;
        }
        cn_node *n = &s->nodes[id];
        n->additional = add;
        json_t *ord = json_object_get(o, "x-orchard-ordered");
        if (ord && !json_is_boolean(ord)) {
            sub_path(p, sizeof p, path, "x-orchard-ordered", NULL);
            return fail(c, ORC_EINVAL, p, "must be a boolean", NULL);
        }
        n->ordered = json_is_true(ord);
        if (n->ordered && add >= 0) {
            sub_path(p, sizeof p, path, "x-orchard-ordered", NULL);
            return fail(c, ORC_EUNSUPPORTED, p, "needs additionalProperties false", NULL);
        }
        if (add >= 0) {
            if (s->nodes[add].threads > threads) threads = s->nodes[add].threads;
            if (1 + s->nodes[add].frames > frames) frames = 1 + s->nodes[add].frames;
        }
        int64_t mb = 2;
        int k = 0;
        for (int q = 0; q < n->n_props; q++)
            if (required >> q & 1) {
                mb += n->key_len[q] + 3 + s->nodes[n->props[q]].min_bytes;
                k++;
            }
        n->min_bytes = mb + (k > 0 ? k - 1 : 0);
        n->threads = threads;
        n->frames = frames;
    }
    *out = id;
    return true;
}

/* An anyOf node over compiled alternatives. */
static bool make_anyof(cctx *c, const int32_t *alts, int n, const char *path, int32_t *out) {
    orc_json_schema *s = c->s;
    if (n == 1) {
        *out = alts[0];
        return true;
    }
    int32_t id = new_node(s, K_ANYOF);
    int32_t *a = malloc(sizeof *a * (size_t)n);
    if (id < 0 || !a) {
        free(a);
        return fail(c, ORC_ENOMEM, path, "out of memory", NULL);
    }
    memcpy(a, alts, sizeof *a * (size_t)n);
    cn_node *nd = &s->nodes[id];
    nd->alts = a;
    nd->n_alts = n;
    nd->threads = 0;
    nd->min_bytes = INT64_MAX;
    nd->frames = 0;
    for (int i = 0; i < n; i++) {
        const cn_node *x = &s->nodes[a[i]];
        nd->threads += x->threads;
        if (x->min_bytes < nd->min_bytes) nd->min_bytes = x->min_bytes;
        if (x->frames > nd->frames) nd->frames = x->frames;
    }
    if (nd->threads > CN_MAX_THREADS)
        return fail(c, ORC_EUNSUPPORTED, path, "has too many anyOf/oneOf alternatives alive at once (over 64)", NULL);
    *out = id;
    return true;
}

static bool compile(cctx *c, json_t *js, const char *path, int32_t *out) {
    orc_json_schema *s = c->s;
    char p[512];
    if (++c->depth > CN_MAX_FRAMES) return fail(c, ORC_EUNSUPPORTED, path, "nests too deeply", NULL);
    bool ok = false;
    if (json_is_true(js) || (json_is_object(js) && json_object_size(js) == 0)) {
        int32_t id = new_node(s, K_ANY);
        if (id < 0) {
            ok = fail(c, ORC_ENOMEM, path, "out of memory", NULL);
        } else {
            s->nodes[id].min_bytes = 1;
            s->nodes[id].frames = s->opts.max_depth + 1;
            *out = id;
            ok = true;
        }
        c->depth--;
        return ok;
    }
    if (!json_is_object(js)) {
        c->depth--;
        return fail(c, json_is_false(js) ? ORC_EUNSUPPORTED : ORC_EINVAL, path,
                    json_is_false(js) ? "the schema false allows nothing" : "a schema must be an object or true",
                    NULL);
    }
    const char *key;
    json_t *val;
    bool structural = false;
    json_object_foreach(js, key, val) {
        if (in_list(key, ANNOTATIONS)) continue;
        if (!in_list(key, KEYWORDS)) {
            sub_path(p, sizeof p, path, key, NULL);
            c->depth--;
            return fail(c, ORC_EUNSUPPORTED, p, "the keyword is not supported by orchard's constrained decoding",
                        NULL);
        }
        structural = true;
    }
    json_t *anyof = json_object_get(js, "anyOf");
    const char *anyof_key = "anyOf";
    if (!anyof) {
        anyof = json_object_get(js, "oneOf");
        anyof_key = "oneOf";
    }
    json_t *type = json_object_get(js, "type"), *en = json_object_get(js, "enum"), *cn = json_object_get(js, "const");
    if (anyof) {
        sub_path(p, sizeof p, path, anyof_key, NULL);
        if (!json_is_array(anyof) || json_array_size(anyof) == 0 || json_array_size(anyof) > CN_MAX_THREADS) {
            c->depth--;
            return fail(c, ORC_EINVAL, p, "must be an array of 1 to 64 schemas", NULL);
        }
        if (json_object_size(js) > 1) {
            json_object_foreach(js, key, val) {
                if (!in_list(key, ANNOTATIONS) && strcmp(key, anyof_key) != 0) {
                    sub_path(p, sizeof p, path, key, NULL);
                    c->depth--;
                    return fail(c, ORC_EUNSUPPORTED, p, "is not supported next to ", anyof_key);
                }
            }
        }
        int32_t alts[CN_MAX_THREADS];
        size_t n = json_array_size(anyof);
        for (size_t i = 0; i < n; i++) {
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            sub_path(p, sizeof p, path, anyof_key, idx);
            if (!compile(c, json_array_get(anyof, i), p, &alts[i])) {
                c->depth--;
                return false;
            }
        }
        sub_path(p, sizeof p, path, anyof_key, NULL);
        ok = make_anyof(c, alts, (int)n, p, out);
        c->depth--;
        return ok;
    }
    json_t *types = NULL;
    if (type) {
        sub_path(p, sizeof p, path, "type", NULL);
        if (json_is_string(type)) {
            types = json_pack("[O]", type);
        } else if (json_is_array(type) && json_array_size(type) > 0 && json_array_size(type) <= 7) {
            types = json_incref(type);
            for (size_t i = 0; i < json_array_size(type); i++)
                if (!json_is_string(json_array_get(type, i))) {
                    json_decref(types);
                    c->depth--;
                    return fail(c, ORC_EINVAL, p, "must be a type name or an array of them", NULL);
                }
        } else {
            c->depth--;
            return fail(c, ORC_EINVAL, p, "must be a type name or an array of them", NULL);
        }
    }
    if (en || cn) {
        json_t *vals = cn ? json_pack("[O]", cn) : json_incref(en);
        sub_path(p, sizeof p, path, cn ? "const" : "enum", NULL);
        if (!json_is_array(vals) || json_array_size(vals) == 0) {
            ok = fail(c, ORC_EINVAL, p, "must be a non-empty array", NULL);
        } else {
            ok = compile_literal(c, vals, types, p, out);
        }
        json_decref(vals);
        json_decref(types);
        c->depth--;
        return ok;
    }
    if (!types) {
        /* No type: inferred from the keywords, or any value. */
        const char *t = NULL;
        if (json_object_get(js, "properties") || json_object_get(js, "required") ||
            json_object_get(js, "additionalProperties"))
            t = "object";
        else if (json_object_get(js, "items") || json_object_get(js, "minItems") || json_object_get(js, "maxItems"))
            t = "array";
        else if (json_object_get(js, "minLength") || json_object_get(js, "maxLength"))
            t = "string";
        if (!t || !structural) {
            ok = compile(c, json_true(), path, out);
            c->depth--;
            return ok;
        }
        types = json_pack("[s]", t);
    }
    int32_t alts[8];
    size_t n = json_array_size(types);
    ok = true;
    for (size_t i = 0; ok && i < n; i++) ok = compile_type(c, js, json_string_value(json_array_get(types, i)), path, &alts[i]);
    json_decref(types);
    if (ok) ok = make_anyof(c, alts, (int)n, path, out);
    c->depth--;
    return ok;
}

/* ---- entry points ------------------------------------------------------------------- */

static orc_json_schema *schema_new(const orc_json_schema_opts *opts, orc_error *err) {
    orc_json_schema *s = calloc(1, sizeof *s);
    if (!s) {
        orc_error_set(err, ORC_ENOMEM, "json schema: out of memory");
        return NULL;
    }
    if (opts) s->opts = *opts;
    else orc_json_schema_opts_default(&s->opts);
    orc_json_schema_opts *o = &s->opts;
    if (o->max_whitespace < 0 || o->max_whitespace > 8 || o->max_string < 1 || o->max_number < 1 || o->max_depth < 1 ||
        o->max_depth > 32) {
        orc_error_set(err, ORC_EINVAL, "json schema: options out of range (max_whitespace %d of 0..8, max_string "
                      "%lld >= 1, max_number %d >= 1, max_depth %d of 1..32)", o->max_whitespace,
                      (long long)o->max_string, o->max_number, o->max_depth);
        free(s);
        return NULL;
    }
    if (o->max_number > 18) o->max_number = 18; /* jansson refuses integers past int64 */
    return s;
}

/* The hidden nodes (root frame, the free values' kinds) and the state size. */
static bool finish(orc_json_schema *s, int32_t root, orc_error *err) {
    cctx c = {.s = s, .err = err};
    s->root = root;
    s->root_frame = new_node(s, K_ROOT);
    int32_t any = -1;
    bool ok = s->root_frame >= 0 && compile(&c, json_true(), "#", &any);
    json_t *obj = json_pack("{s:s}", "type", "object"), *arr = json_pack("{s:s}", "type", "array");
    json_t *str = json_pack("{s:s}", "type", "string"), *num = json_pack("{s:s}", "type", "number");
    json_t *lit = json_pack("{s:[bbn]}", "enum", 1, 0);
    bool strict = s->opts.strict_objects;
    s->opts.strict_objects = false; /* free objects take any keys */
    ok = ok && obj && arr && str && num && lit && compile(&c, obj, "#", &s->any_obj) && compile(&c, arr, "#", &s->any_arr) &&
         compile(&c, str, "#", &s->any_str) && compile(&c, num, "#", &s->any_num) && compile(&c, lit, "#", &s->any_lit);
    s->opts.strict_objects = strict;
    json_decref(obj);
    json_decref(arr);
    json_decref(str);
    json_decref(num);
    json_decref(lit);
    if (!ok) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "json schema: out of memory");
        return false;
    }
    const cn_node *r = &s->nodes[root];
    if (r->frames + 1 > CN_MAX_FRAMES) {
        orc_error_set(err, ORC_EUNSUPPORTED, "json schema: nests %d values deep (at most %d)", r->frames,
                      CN_MAX_FRAMES - 1);
        return false;
    }
    s->slot = CN_STATE_HDR + (size_t)r->threads * cn_thread_size(r->frames + 1);
    return true;
}

orc_json_schema *orc_json_schema_compile(const char *text, size_t len, const orc_json_schema_opts *opts,
                                         orc_error *err) {
    json_error_t je;
    json_t *js = text ? json_loadb(text, len, JSON_DECODE_ANY, &je) : NULL;
    if (!js) {
        orc_error_set(err, ORC_EFORMAT, "json schema: not JSON: %s (line %d, column %d)", text ? je.text : "NULL",
                      text ? je.line : 0, text ? je.column : 0);
        return NULL;
    }
    orc_json_schema *s = schema_new(opts, err);
    cctx c = {.s = s, .err = err};
    int32_t root = -1;
    bool ok = s && compile(&c, js, "#", &root) && finish(s, root, err);
    json_decref(js);
    if (!ok) {
        orc_json_schema_free(s);
        return NULL;
    }
    return s;
}

orc_json_schema *orc_json_schema_any(bool object_only, const orc_json_schema_opts *opts, orc_error *err) {
    orc_json_schema *s = schema_new(opts, err);
    if (!s) return NULL;
    cctx c = {.s = s, .err = err};
    int32_t root = -1;
    json_t *js = object_only ? json_pack("{s:s,s:b}", "type", "object", "additionalProperties", 1) : json_true();
    bool ok = js && compile(&c, js, "#", &root) && finish(s, root, err);
    json_decref(js);
    if (!ok) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "json schema: out of memory");
        orc_json_schema_free(s);
        return NULL;
    }
    return s;
}

void orc_json_schema_free(orc_json_schema *s) {
    if (!s) return;
    for (int i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].props);
        free(s->nodes[i].key_len);
        free(s->nodes[i].alts);
    }
    free(s->nodes);
    free(s->trie);
    free(s);
}
