/* Small pieces the server's files share: growable byte buffers, JSON strings
 * from bytes that need not be valid UTF-8 (a token can end mid-character, and
 * jansson refuses invalid UTF-8), compact JSON text, and the error body. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

bool srv_buf_add(srv_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

bool srv_buf_addf(srv_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return false;
    if ((size_t)n < sizeof small) return srv_buf_add(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return false;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    bool ok = srv_buf_add(b, big, (size_t)n);
    free(big);
    return ok;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, cp = c & 0x07;
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return need;
}

json_t *srv_json_text(const char *s, size_t n) {
    srv_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    bool ok = srv_buf_add(&b, "", 0);
    for (size_t i = 0; ok && i < n;) {
        size_t k = u[i] ? utf8_seq(u + i, n - i) : 0;
        if (k) {
            ok = srv_buf_add(&b, s + i, k);
            i += k;
        } else {
            ok = srv_buf_add(&b, "\xEF\xBF\xBD", 3); /* U+FFFD for a bad byte or NUL */
            i++;
        }
    }
    json_t *v = ok ? json_stringn(b.p, b.len) : NULL;
    srv_buf_free(&b);
    return v ? v : json_string("");
}

char *srv_json_dump(json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    return s;
}

char *srv_error_body(const orc_api_error *e) {
    json_t *err = json_object();
    json_object_set_new(err, "message", srv_json_text(e->message, strlen(e->message)));
    json_object_set_new(err, "type", json_string(e->type[0] ? e->type : "invalid_request_error"));
    json_object_set_new(err, "param", e->param[0] ? srv_json_text(e->param, strlen(e->param)) : json_null());
    json_object_set_new(err, "code", e->code[0] ? json_string(e->code) : json_null());
    json_t *root = json_object();
    json_object_set_new(root, "error", err);
    return srv_json_dump(root);
}
