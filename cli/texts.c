/* Helpers the evaluation and calibration commands share: every text of a
 * file (plain text, or one field of each JSONL line) read into memory, and
 * the file-suffix test that picks between the two. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "orchard/tokenizer.h"

bool cli_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static orc_status collect_text(void *ctx, const char *text, size_t len, orc_error *err) {
    cli_texts *t = ctx;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **p = realloc(t->p, cap * sizeof *p);
        if (p) t->p = p;
        size_t *l = p ? realloc(t->len, cap * sizeof *l) : NULL;
        if (l) t->len = l;
        if (!p || !l) return orc_error_set(err, ORC_ENOMEM, "out of memory reading texts");
        t->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return orc_error_set(err, ORC_ENOMEM, "out of memory reading texts");
    memcpy(c, text, len);
    c[len] = 0;
    t->p[t->n] = c;
    t->len[t->n++] = len;
    return ORC_OK;
}

orc_status cli_texts_read(const char *path, const char *jsonl_field, cli_texts *t, orc_error *err) {
    return orc_tok_for_each_text(path, jsonl_field, collect_text, t, err);
}

void cli_texts_free(cli_texts *t) {
    for (size_t i = 0; i < t->n; i++) free(t->p[i]);
    free(t->p);
    free(t->len);
    memset(t, 0, sizeof *t);
}
