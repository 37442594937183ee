/* libFuzzer target for the safetensors reader: every input goes through
 * orc_st_parse, and every tensor of an accepted input is reached through the
 * accessors (find, raw bytes, the converting readers) so the sanitizers see
 * any read outside the image. A rejected input must carry a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/safetensors.h"

static void touch_tensor(const orc_st_file *f, const orc_st_tensor_info *t) {
    if (orc_st_find(f, t->name) != t) __builtin_trap();
    volatile uint8_t sink = 0;
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++) sink ^= p[i];
    (void)sink;
    size_t n = (size_t)t->numel;
    orc_error err = {0};
    float *fo = malloc((n ? n : 1) * sizeof *fo);
    int32_t *io = malloc((n ? n : 1) * sizeof *io);
    if (fo && io) {
        orc_status a = orc_st_read_f32(f, t->name, fo, t->numel, &err);
        orc_error_clear(&err);
        orc_status b = orc_st_read_i32(f, t->name, io, t->numel, &err);
        /* Exactly one reader accepts a supported dtype (I64 may be out of range). */
        if (t->dtype <= ORC_ST_BF16 && a != ORC_OK) __builtin_trap();
        if ((t->dtype == ORC_ST_I32 || t->dtype == ORC_ST_U8) && b != ORC_OK) __builtin_trap();
        if (t->dtype > ORC_ST_U8 && (a != ORC_EUNSUPPORTED || b != ORC_EUNSUPPORTED)) __builtin_trap();
    }
    free(fo);
    free(io);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    orc_error err = {0};
    orc_st_file *f = orc_st_parse(data, size, "fuzz", &err);
    if (!f) {
        if (err.code == ORC_OK || err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    size_t pos = 0;
    for (size_t i = 0; i < orc_st_count(f); i++) {
        const orc_st_tensor_info *t = orc_st_info(f, i);
        if (t->offset != pos) __builtin_trap(); /* contiguous, as validated */
        pos += t->nbytes;
        touch_tensor(f, t);
    }
    for (size_t i = 0; i < orc_st_metadata_count(f); i++) {
        const char *k = orc_st_metadata_key(f, i);
        if (orc_st_metadata(f, k) != orc_st_metadata_value(f, i)) __builtin_trap();
    }
    orc_st_close(f);
    return 0;
}
