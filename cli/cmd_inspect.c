/* `orchard inspect FILE`: the tensors (name, dtype, shape, bytes) and the
 * metadata of a safetensors file, as a table or as JSON. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "orchard/safetensors.h"

void cmd_inspect_help(void) {
    printf("usage: orchard inspect FILE.safetensors [--json]\n\n"
           "List the tensors (name, dtype, shape, bytes) and the __metadata__ of a\n"
           "safetensors file. The file is checked against the format's rules first;\n"
           "a malformed file is reported with the tensor and the problem.\n\n"
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
