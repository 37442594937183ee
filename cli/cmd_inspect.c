/* `orchard inspect FILE`: the tensors (name, dtype, shape, bytes) and the
 * metadata of a safetensors or GGUF file (told apart by the GGUF magic, not
 * the extension), as a table or as JSON. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "orchard/gguf.h"
#include "orchard/safetensors.h"

void cmd_inspect_help(void) {
    printf("usage: orchard inspect FILE.safetensors [--json]\n"
           "       orchard inspect FILE.gguf [--json]\n\n"
           "List the tensors (name, dtype, shape, bytes) and the __metadata__ of a\n"
           "safetensors file. The file is checked against the format's rules first;\n"
           "a malformed file is reported with the tensor and the problem.\n"
           "A GGUF file (recognised by its magic) lists its key/values (scalars and\n"
           "strings by value, arrays by element type and length) and its tensors\n"
           "(ggml type, row-major shape, bytes).\n\n"
           "  --json   print one JSON object instead of a table\n");
}

static void print_table(const orc_st_file *f) {
    size_t n = orc_st_count(f), total = 0;
    long long params = 0;
    printf("%-48s %-6s %-24s %12s\n", "tensor", "dtype", "shape", "bytes");
    for (size_t i = 0; i < n; i++) {
        const orc_st_tensor_info *t = orc_st_info(f, i);
        char shape[128];
        orc_shape_str(shape, sizeof shape, t->ndim, t->shape);
        printf("%-48s %-6s %-24s %12zu\n", t->name, orc_st_dtype_name(t->dtype), shape, t->nbytes);
        total += t->nbytes;
        params += t->numel;
    }
    printf("%zu tensors, %lld elements, %zu bytes\n", n, params, total);
    size_t m = orc_st_metadata_count(f);
    if (m) printf("metadata:\n");
    for (size_t i = 0; i < m; i++) printf("  %s = %s\n", orc_st_metadata_key(f, i), orc_st_metadata_value(f, i));
}

static int print_json(const orc_st_file *f) {
    json_t *root = json_object(), *tensors = json_array(), *meta = json_object();
    for (size_t i = 0; i < orc_st_count(f); i++) {
        const orc_st_tensor_info *t = orc_st_info(f, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
                                                 orc_st_dtype_name(t->dtype), "shape", shape, "bytes",
                                                 (json_int_t)t->nbytes, "offset", (json_int_t)t->offset));
    }
    for (size_t i = 0; i < orc_st_metadata_count(f); i++)
        json_object_set_new(meta, orc_st_metadata_key(f, i), json_string(orc_st_metadata_value(f, i)));
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "metadata", meta);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
    printf("\n");
    json_decref(root);
    return rc;
}

/* ---- GGUF ---------------------------------------------------------------------- */

static int is_gguf(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, fp);
    fclose(fp);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* A scalar or string value in a table cell: strings quoted, cut at 60 bytes,
 * control bytes escaped so a chat template stays on one line. */
static void print_gguf_value(const orc_gguf_kv *kv) {
    orc_gguf_vtype t = orc_gguf_kv_type(kv);
    if (t == ORC_GGUF_ARRAY) {
        printf("[%s x %llu]", orc_gguf_vtype_name(orc_gguf_kv_elem_type(kv)), (unsigned long long)orc_gguf_kv_len(kv));
        return;
    }
    if (t == ORC_GGUF_STRING) {
        const char *s = NULL;
        size_t len = 0;
        orc_gguf_kv_get_str(kv, &s, &len, NULL);
        putchar('"');
        for (size_t i = 0; i < len && i < 60; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\n') fputs("\\n", stdout);
            else if (c == '"' || c == '\\') printf("\\%c", c);
            else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
            else putchar(c);
        }
        printf(len > 60 ? "\"..." : "\"");
        return;
    }
    if (t == ORC_GGUF_BOOL) {
        bool b = false;
        orc_gguf_kv_get_bool(kv, &b, NULL);
        printf("%s", b ? "true" : "false");
        return;
    }
    int64_t i;
    uint64_t u;
    double d;
    if (orc_gguf_kv_get_i64(kv, &i, NULL) == ORC_OK)
        printf("%lld", (long long)i);
    else if (orc_gguf_kv_get_u64(kv, &u, NULL) == ORC_OK)
        printf("%llu", (unsigned long long)u);
    else if (orc_gguf_kv_get_f64(kv, &d, NULL) == ORC_OK)
        printf("%.9g", d);
}

static void print_gguf_table(const orc_gguf_file *f) {
    size_t nkv = orc_gguf_kv_count(f), n = orc_gguf_tensor_count(f), total = 0;
    long long params = 0;
    printf("gguf version %u, alignment %u, %zu key/values, %zu tensors\n", orc_gguf_version(f), orc_gguf_alignment(f),
           nkv, n);
    if (nkv) printf("metadata:\n");
    for (size_t i = 0; i < nkv; i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        printf("  %-40s %-8s ", orc_gguf_kv_key(kv), orc_gguf_vtype_name(orc_gguf_kv_type(kv)));
        print_gguf_value(kv);
        printf("\n");
    }
    printf("%-48s %-6s %-24s %12s\n", "tensor", "type", "shape", "bytes");
    for (size_t i = 0; i < n; i++) {
        const orc_gguf_tensor_info *t = orc_gguf_tensor_at(f, i);
        char shape[128];
        orc_shape_str(shape, sizeof shape, t->n_dims, t->shape);
        printf("%-48s %-6s %-24s %12zu\n", t->name, orc_ggml_type_name(t->type), shape, t->nbytes);
        total += t->nbytes;
        params += t->numel;
    }
    printf("%zu tensors, %lld elements, %zu bytes\n", n, params, total);
}

/* Scalars as JSON values; strings that are not UTF-8 become null. */
static json_t *gguf_kv_json(const orc_gguf_kv *kv) {
    orc_gguf_vtype t = orc_gguf_kv_type(kv);
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    const char *s;
    size_t len;
    if (t == ORC_GGUF_ARRAY)
        return json_pack("{s:s, s:I}", "array", orc_gguf_vtype_name(orc_gguf_kv_elem_type(kv)), "length",
                         (json_int_t)orc_gguf_kv_len(kv));
    if (orc_gguf_kv_get_str(kv, &s, &len, NULL) == ORC_OK) {
        json_t *v = json_stringn(s, len);
        return v ? v : json_null();
    }
    if (orc_gguf_kv_get_bool(kv, &b, NULL) == ORC_OK) return json_boolean(b);
    if (orc_gguf_kv_get_i64(kv, &i, NULL) == ORC_OK) return json_integer(i);
    if (orc_gguf_kv_get_u64(kv, &u, NULL) == ORC_OK) return json_real((double)u);
    if (orc_gguf_kv_get_f64(kv, &d, NULL) == ORC_OK) return isfinite(d) ? json_real(d) : json_null();
    return json_null();
}

static int print_gguf_json(const orc_gguf_file *f) {
    json_t *root = json_object(), *tensors = json_array(), *meta = json_object();
    for (size_t i = 0; i < orc_gguf_tensor_count(f); i++) {
        const orc_gguf_tensor_info *t = orc_gguf_tensor_at(f, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
                                                 orc_ggml_type_name(t->type), "shape", shape, "bytes",
                                                 (json_int_t)t->nbytes, "offset", (json_int_t)t->offset));
    }
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        json_object_set_new(meta, orc_gguf_kv_key(kv), gguf_kv_json(kv));
    }
    json_object_set_new(root, "format", json_string("gguf"));
    json_object_set_new(root, "version", json_integer(orc_gguf_version(f)));
    json_object_set_new(root, "alignment", json_integer(orc_gguf_alignment(f)));
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "metadata", meta);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
    printf("\n");
    json_decref(root);
    return rc;
}

static int inspect_gguf(const char *path, int as_json) {
    orc_error err = {0};
    orc_gguf_file *f = orc_gguf_open(path, &err);
    if (!f) {
        fprintf(stderr, "orchard inspect: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (as_json)
        rc = print_gguf_json(f);
    else
        print_gguf_table(f);
    orc_gguf_close(f);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "orchard inspect: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (path) {
            fprintf(stderr, "orchard inspect: one file at a time ('%s' and '%s' given)\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "orchard inspect: missing FILE; see `orchard inspect --help`\n");
        return 2;
    }
    if (is_gguf(path)) return inspect_gguf(path, as_json);
    orc_error err = {0};
    orc_st_file *f = orc_st_open(path, &err);
    if (!f) {
        fprintf(stderr, "orchard inspect: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (as_json)
        rc = print_json(f);
    else
        print_table(f);
    orc_st_close(f);
    return rc;
}
