/* libFuzzer target for the GGUF reader: every input goes through
 * orc_gguf_parse, and every key/value (nested arrays included) and every
 * tensor of an accepted input is reached through the accessors (typed
 * getters, array elements, raw bytes, the converting readers for small
 * tensors) so the sanitizers see any read outside the image. A rejected input
 * must carry a message; an accepted one must keep the invariants checked here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/gguf.h"

#define SMALL (1 << 16) /* elements; bigger tensors and arrays get their raw bytes touched only */

static volatile uint8_t sink;

static void touch_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) sink ^= b[i];
}

static void touch_kv(const orc_gguf_kv *kv) {
    orc_gguf_vtype t = orc_gguf_kv_type(kv);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    bool b;
    const char *s;
    size_t len;
    orc_error err = {0};
    /* Every getter answers: OK or an error with a message. */
    orc_status st[8] = {
        orc_gguf_kv_get_u32(kv, &u32, &err), orc_gguf_kv_get_i32(kv, &i32, &err),
        orc_gguf_kv_get_u64(kv, &u64, &err), orc_gguf_kv_get_i64(kv, &i64, &err),
        orc_gguf_kv_get_f32(kv, &f32, &err), orc_gguf_kv_get_f64(kv, &f64, &err),
        orc_gguf_kv_get_bool(kv, &b, &err),  orc_gguf_kv_get_str(kv, &s, &len, &err),
    };
    bool any_fail = false;
    for (int i = 0; i < 8; i++) any_fail |= st[i] != ORC_OK;
    if (any_fail && err.msg[0] == '\0') __builtin_trap();
    if (t == ORC_GGUF_STRING) {
        if (st[7] != ORC_OK || strlen(s) > len) __builtin_trap();
        touch_bytes(s, len + 1);
    }
    if (t != ORC_GGUF_ARRAY) return;
    uint64_t n = orc_gguf_kv_len(kv);
    orc_gguf_vtype et = orc_gguf_kv_elem_type(kv);
    if (et == ORC_GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            const char *e = orc_gguf_kv_arr_str(kv, i, &len);
            if (!e || strlen(e) > len) __builtin_trap();
            touch_bytes(e, len + 1);
        }
        if (orc_gguf_kv_arr_str(kv, n, NULL)) __builtin_trap();
    } else if (et == ORC_GGUF_ARRAY) {
        for (uint64_t i = 0; i < n; i++) {
            const orc_gguf_kv *sub = orc_gguf_kv_arr_sub(kv, i);
            if (!sub) __builtin_trap();
            touch_kv(sub);
        }
    } else {
        const void *raw = orc_gguf_kv_arr_data(kv);
        if (!raw) __builtin_trap();
        touch_bytes(raw, (size_t)n * orc_gguf_vtype_size(et));
        if (n <= SMALL) {
            float *fo = malloc((n ? n : 1) * sizeof *fo);
            int32_t *io = malloc((n ? n : 1) * sizeof *io);
            if (fo && io) {
                orc_error_clear(&err);
                orc_gguf_kv_arr_f32(kv, fo, n, &err);
                orc_error_clear(&err);
                orc_gguf_kv_arr_i32(kv, io, n, &err);
            }
            free(fo);
            free(io);
        }
    }
}

static void touch_tensor(const orc_gguf_file *f, const orc_gguf_tensor_info *t, const uint8_t *data, size_t size) {
    if (orc_gguf_find_tensor(f, t->name) != t) __builtin_trap();
    if (t->offset % orc_gguf_alignment(f) != 0) __builtin_trap();
    const uint8_t *p = t->data;
    if (t->nbytes && (p < data || p + t->nbytes > data + size)) __builtin_trap();
    touch_bytes(p, t->nbytes);
    if (t->numel > SMALL) return;
    size_t n = (size_t)t->numel;
    float *fo = malloc((n ? n : 1) * sizeof *fo);
    int32_t *io = malloc((n ? n : 1) * sizeof *io);
    if (fo && io) {
        orc_error err = {0};
        orc_status a = orc_gguf_read_f32(f, t->name, fo, t->numel, &err);
        orc_error_clear(&err);
        orc_status b = orc_gguf_read_i32(f, t->name, io, t->numel, &err);
        bool fl = t->type == ORC_GGML_F32 || t->type == ORC_GGML_F16 || t->type == ORC_GGML_BF16 ||
                  t->type == ORC_GGML_F64 || t->type == ORC_GGML_Q8_0 || t->type == ORC_GGML_Q4_0;
        if (fl && a != ORC_OK) __builtin_trap();
        if (!fl && a == ORC_OK) __builtin_trap();
        if (fl && b == ORC_OK) __builtin_trap();
    }
    free(fo);
    free(io);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    orc_error err = {0};
    orc_gguf_file *f = orc_gguf_parse(data, size, "fuzz", &err);
    if (!f) {
        if (err.code == ORC_OK || err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    uint32_t a = orc_gguf_alignment(f);
    if (a == 0 || (a & (a - 1)) || orc_gguf_data_offset(f) % a) __builtin_trap();
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        if (orc_gguf_find_kv(f, orc_gguf_kv_key(kv)) != kv) __builtin_trap();
        touch_kv(kv);
    }
    for (size_t i = 0; i < orc_gguf_tensor_count(f); i++) touch_tensor(f, orc_gguf_tensor_at(f, i), data, size);
    orc_gguf_close(f);
    return 0;
}
