/* orchard's chat template (see orchard/chat.h): messages to token ids with
 * <|begin_of_text|>, one <|ROLE|>\n CONTENT <|end|>\n block per message and
 * an optional generation prompt, plus the mask of the tokens a supervised
 * fine-tune trains on. Content is encoded without special-token matching, so
 * user text can never forge a control token. */
#include <stdlib.h>
#include <string.h>

#include "orchard/chat.h"

/* A growing pair of arrays: ids and the train mask. */
typedef struct chat_buf {
    int32_t *ids;
    uint8_t *mask;
    size_t n, cap;
} chat_buf;

static orc_status buf_push(chat_buf *b, const int32_t *ids, size_t n, uint8_t train, orc_error *err) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        int32_t *ni = realloc(b->ids, cap * sizeof *ni);
        if (ni) b->ids = ni;
        uint8_t *nm = realloc(b->mask, cap);
        if (nm) b->mask = nm;
        if (!ni || !nm) return orc_error_set(err, ORC_ENOMEM, "chat template: out of memory for %zu tokens", b->n + n);
        b->cap = cap;
    }
    memcpy(b->ids + b->n, ids, n * sizeof *ids);
    memset(b->mask + b->n, train, n);
    b->n += n;
    return ORC_OK;
}

static orc_status push_special(chat_buf *b, const orc_tokenizer *tok, const char *name, uint8_t train,
                               orc_error *err) {
    int32_t id = orc_tokenizer_special_id(tok, name);
    if (id < 0)
        return orc_error_set(err, ORC_EINVAL, "chat template: the tokenizer has no special token %s", name);
    return buf_push(b, &id, 1, train, err);
}

static orc_status push_text(chat_buf *b, const orc_tokenizer *tok, const char *text, uint8_t train,
                            orc_error *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    orc_status st = orc_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, err);
    if (st == ORC_OK) st = buf_push(b, ids, n, train, err);
    free(ids);
    return st;
}

static const char *role_token(const char *role) {
    if (!role) return NULL;
    if (strcmp(role, "system") == 0) return ORC_TOK_SYSTEM;
    if (strcmp(role, "user") == 0) return ORC_TOK_USER;
    if (strcmp(role, "assistant") == 0) return ORC_TOK_ASSISTANT;
    if (strcmp(role, "tool") == 0) return ORC_TOK_TOOL;
    return NULL;
}

orc_status orc_chat_encode(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs,
                           bool add_generation_prompt, int32_t **ids, uint8_t **train_mask, size_t *n_ids,
                           orc_error *err) {
    if (!tok || !ids || !n_ids || (n_msgs > 0 && !msgs))
        return orc_error_set(err, ORC_EINVAL, "chat template: NULL argument");
    for (size_t i = 0; i < n_msgs; i++) {
        if (!role_token(msgs[i].role))
            return orc_error_set(err, ORC_EINVAL, "chat template: message %zu has unknown role '%s' (system, user, "
                                 "assistant, tool)", i, msgs[i].role ? msgs[i].role : "(null)");
        if (!msgs[i].content)
            return orc_error_set(err, ORC_EINVAL, "chat template: message %zu (%s) has no content", i, msgs[i].role);
    }
    chat_buf b = {0};
    orc_status st = push_special(&b, tok, ORC_TOK_BEGIN_OF_TEXT, 0, err);
    for (size_t i = 0; i < n_msgs && st == ORC_OK; i++) {
        uint8_t train = strcmp(msgs[i].role, "assistant") == 0;
        st = push_special(&b, tok, role_token(msgs[i].role), 0, err);
        if (st == ORC_OK) st = push_text(&b, tok, "\n", 0, err);
        if (st == ORC_OK) st = push_text(&b, tok, msgs[i].content, train, err);
        if (st == ORC_OK) st = push_special(&b, tok, ORC_TOK_END, train, err);
        if (st == ORC_OK) st = push_text(&b, tok, "\n", 0, err);
    }
    if (st == ORC_OK && add_generation_prompt) {
        st = push_special(&b, tok, ORC_TOK_ASSISTANT, 0, err);
        if (st == ORC_OK) st = push_text(&b, tok, "\n", 0, err);
    }
    if (st != ORC_OK) {
        free(b.ids);
        free(b.mask);
        return st;
    }
    *ids = b.ids;
    *n_ids = b.n;
    if (train_mask) *train_mask = b.mask;
    else free(b.mask);
    return ORC_OK;
}

size_t orc_chat_stop_ids(const orc_tokenizer *tok, int32_t *out, size_t cap) {
    const char *names[] = {ORC_TOK_END, ORC_TOK_END_OF_TEXT};
    size_t n = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = tok ? orc_tokenizer_special_id(tok, names[i]) : -1;
        if (id < 0) continue;
        if (out && n < cap) out[n] = id;
        n++;
    }
    return n;
}
