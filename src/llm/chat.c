/* Chat templates (see orchard/chat.h): messages to token ids in orchard's,
 * ChatML's or Llama-3's layout, the mask of the tokens a supervised
 * fine-tune trains on, each template's end-of-turn ids, and the choice of a
 * template from a tokenizer's special tokens or a model directory's
 * `chat_template` file, and the plain-text layout of tool calling (the tool
 * list for the system message, a call as the assistant writes it). Content is encoded without special-token matching,
 * so user text can never forge a control token. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    if (n) {
        memcpy(b->ids + b->n, ids, n * sizeof *ids);
        memset(b->mask + b->n, train, n);
    }
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

static orc_status push_bytes(chat_buf *b, const orc_tokenizer *tok, const char *text, size_t len, uint8_t train,
                             orc_error *err) {
    if (len == 0) return ORC_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    orc_status st = orc_tokenizer_encode(tok, text, len, 0, &ids, &n, err);
    if (st == ORC_OK) st = buf_push(b, ids, n, train, err);
    free(ids);
    return st;
}

static orc_status push_text(chat_buf *b, const orc_tokenizer *tok, const char *text, uint8_t train, orc_error *err) {
    return push_bytes(b, tok, text, strlen(text), train, err);
}

static bool known_role(const char *role) {
    return role && (strcmp(role, "system") == 0 || strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0 ||
                    strcmp(role, "tool") == 0);
}

static const char *orchard_role_token(const char *role) {
    if (strcmp(role, "system") == 0) return ORC_TOK_SYSTEM;
    if (strcmp(role, "user") == 0) return ORC_TOK_USER;
    if (strcmp(role, "assistant") == 0) return ORC_TOK_ASSISTANT;
    return ORC_TOK_TOOL;
}

/* ---- the three layouts ------------------------------------------------------------ */

static orc_status orchard_msg(chat_buf *b, const orc_tokenizer *tok, const orc_chat_msg *m, uint8_t train,
                              orc_error *err) {
    orc_status st = push_special(b, tok, orchard_role_token(m->role), 0, err);
    if (st == ORC_OK) st = push_text(b, tok, "\n", 0, err);
    if (st == ORC_OK) st = push_text(b, tok, m->content, train, err);
    if (st == ORC_OK) st = push_special(b, tok, ORC_TOK_END, train, err);
    if (st == ORC_OK) st = push_text(b, tok, "\n", 0, err);
    return st;
}

static orc_status orchard_prompt(chat_buf *b, const orc_tokenizer *tok, orc_error *err) {
    orc_status st = push_special(b, tok, ORC_TOK_ASSISTANT, 0, err);
    return st == ORC_OK ? push_text(b, tok, "\n", 0, err) : st;
}

static orc_status chatml_msg(chat_buf *b, const orc_tokenizer *tok, const orc_chat_msg *m, uint8_t train,
                             orc_error *err) {
    char head[32];
    snprintf(head, sizeof head, "%s\n", m->role);
    orc_status st = push_special(b, tok, "<|im_start|>", 0, err);
    if (st == ORC_OK) st = push_text(b, tok, head, 0, err);
    if (st == ORC_OK) st = push_text(b, tok, m->content, train, err);
    if (st == ORC_OK) st = push_special(b, tok, "<|im_end|>", train, err);
    if (st == ORC_OK) st = push_text(b, tok, "\n", 0, err);
    return st;
}

static orc_status chatml_prompt(chat_buf *b, const orc_tokenizer *tok, orc_error *err) {
    orc_status st = push_special(b, tok, "<|im_start|>", 0, err);
    return st == ORC_OK ? push_text(b, tok, "assistant\n", 0, err) : st;
}

static orc_status llama3_header(chat_buf *b, const orc_tokenizer *tok, const char *role, orc_error *err) {
    orc_status st = push_special(b, tok, "<|start_header_id|>", 0, err);
    if (st == ORC_OK) st = push_text(b, tok, strcmp(role, "tool") == 0 ? "ipython" : role, 0, err);
    if (st == ORC_OK) st = push_special(b, tok, "<|end_header_id|>", 0, err);
    if (st == ORC_OK) st = push_text(b, tok, "\n\n", 0, err);
    return st;
}

/* Llama-3's template trims each message's content (Jinja's `| trim`). */
static orc_status llama3_msg(chat_buf *b, const orc_tokenizer *tok, const orc_chat_msg *m, uint8_t train,
                             orc_error *err) {
    const char *s = m->content;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[0])) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    orc_status st = llama3_header(b, tok, m->role, err);
    if (st == ORC_OK) st = push_bytes(b, tok, s, len, train, err);
    if (st == ORC_OK) st = push_special(b, tok, "<|eot_id|>", train, err);
    return st;
}

static orc_status llama3_prompt(chat_buf *b, const orc_tokenizer *tok, orc_error *err) {
    return llama3_header(b, tok, "assistant", err);
}

/* ---- choosing a template -------------------------------------------------------------- */

const char *orc_chat_template_name(orc_chat_template t) {
    switch (t) {
    case ORC_CHAT_ORCHARD: return "orchard";
    case ORC_CHAT_CHATML: return "chatml";
    case ORC_CHAT_LLAMA3: return "llama3";
    default: return "auto";
    }
}

static bool has_all(const orc_tokenizer *tok, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (orc_tokenizer_special_id(tok, names[i]) < 0) return false;
    return true;
}

orc_chat_template orc_chat_template_detect(const orc_tokenizer *tok) {
    static const char *const llama3[] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>"};
    if (!tok) return ORC_CHAT_ORCHARD;
    if (has_all(tok, llama3, 3)) return ORC_CHAT_LLAMA3;
    if (has_all(tok, chatml, 2)) return ORC_CHAT_CHATML;
    return ORC_CHAT_ORCHARD;
}

orc_status orc_chat_template_parse(const char *text, orc_chat_template *out, orc_error *err) {
    if (!text || !out) return orc_error_set(err, ORC_EINVAL, "chat template: NULL argument");
    while (isspace((unsigned char)*text)) text++;
    size_t len = strlen(text);
    while (len && isspace((unsigned char)text[len - 1])) len--;
    static const struct { const char *name; orc_chat_template t; } names[] = {
        {"auto", ORC_CHAT_AUTO}, {"orchard", ORC_CHAT_ORCHARD}, {"chatml", ORC_CHAT_CHATML},
        {"llama3", ORC_CHAT_LLAMA3}, {"llama-3", ORC_CHAT_LLAMA3}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && strncasecmp(text, names[i].name, len) == 0) {
            *out = names[i].t;
            return ORC_OK;
        }
    }
    /* A Jinja template: recognised by the control tokens it writes. */
    if (strstr(text, "<|start_header_id|>") && strstr(text, "<|eot_id|>")) *out = ORC_CHAT_LLAMA3;
    else if (strstr(text, "<|im_start|>") && strstr(text, "<|im_end|>")) *out = ORC_CHAT_CHATML;
    else if (strstr(text, "<|end|>") && strstr(text, "<|assistant|>")) *out = ORC_CHAT_ORCHARD;
    else
        return orc_error_set(err, ORC_EUNSUPPORTED, "chat template '%.60s%s' is not one orchard knows (orchard, "
                             "chatml, llama3, auto, or a Jinja template of one of these)", text, len > 60 ? "..." : "");
    return ORC_OK;
}

orc_status orc_chat_template_for_model(const char *dir, const orc_tokenizer *tok, orc_chat_template *out,
                                       orc_error *err) {
    if (!dir || !out) return orc_error_set(err, ORC_EINVAL, "chat template: NULL argument");
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template", dir);
    FILE *fp = fopen(path, "rb");
    orc_chat_template t = ORC_CHAT_AUTO;
    if (!fp && errno != ENOENT) return orc_error_set(err, ORC_EIO, "%s: cannot read: %s", path, strerror(errno));
    if (fp) {
        char *text = NULL;
        size_t cap = 0, n = 0;
        bool ok = true;
        for (;;) {
            if (n + 4096 + 1 > cap) {
                char *g = realloc(text, cap = n + 8192);
                if (!g) {
                    ok = false;
                    break;
                }
                text = g;
            }
            size_t got = fread(text + n, 1, 4096, fp);
            n += got;
            if (got < 4096) break;
        }
        ok = ok && !ferror(fp);
        fclose(fp);
        if (!ok) {
            free(text);
            return orc_error_set(err, ORC_EIO, "%s: cannot read", path);
        }
        text[n] = '\0';
        orc_error local = {0};
        orc_status st = orc_chat_template_parse(text, &t, &local);
        free(text);
        if (st != ORC_OK) return orc_error_set(err, st, "%s: %s", path, local.msg);
    }
    *out = t == ORC_CHAT_AUTO ? orc_chat_template_detect(tok) : t;
    return ORC_OK;
}

/* ---- encoding ----------------------------------------------------------------------- */

orc_status orc_chat_encode_with(orc_chat_template t, const orc_tokenizer *tok, const orc_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, int32_t **ids, uint8_t **train_mask,
                                size_t *n_ids, orc_error *err) {
    if (!tok || !ids || !n_ids || (n_msgs > 0 && !msgs))
        return orc_error_set(err, ORC_EINVAL, "chat template: NULL argument");
    if (t == ORC_CHAT_AUTO) t = orc_chat_template_detect(tok);
    if (t != ORC_CHAT_ORCHARD && t != ORC_CHAT_CHATML && t != ORC_CHAT_LLAMA3)
        return orc_error_set(err, ORC_EINVAL, "chat template: unknown template %d", (int)t);
    for (size_t i = 0; i < n_msgs; i++) {
        if (!known_role(msgs[i].role))
            return orc_error_set(err, ORC_EINVAL, "chat template: message %zu has unknown role '%s' (system, user, "
                                 "assistant, tool)", i, msgs[i].role ? msgs[i].role : "(null)");
        if (!msgs[i].content)
            return orc_error_set(err, ORC_EINVAL, "chat template: message %zu (%s) has no content", i, msgs[i].role);
    }
    orc_status (*msg_fn)(chat_buf *, const orc_tokenizer *, const orc_chat_msg *, uint8_t, orc_error *) =
        t == ORC_CHAT_ORCHARD ? orchard_msg : t == ORC_CHAT_CHATML ? chatml_msg : llama3_msg;
    orc_status (*prompt_fn)(chat_buf *, const orc_tokenizer *, orc_error *) =
        t == ORC_CHAT_ORCHARD ? orchard_prompt : t == ORC_CHAT_CHATML ? chatml_prompt : llama3_prompt;
    chat_buf b = {0};
    orc_status st = t == ORC_CHAT_CHATML ? buf_push(&b, NULL, 0, 0, err)
                                         : push_special(&b, tok, ORC_TOK_BEGIN_OF_TEXT, 0, err);
    for (size_t i = 0; i < n_msgs && st == ORC_OK; i++)
        st = msg_fn(&b, tok, &msgs[i], strcmp(msgs[i].role, "assistant") == 0, err);
    if (st == ORC_OK && add_generation_prompt) st = prompt_fn(&b, tok, err);
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

orc_status orc_chat_encode(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs,
                           bool add_generation_prompt, int32_t **ids, uint8_t **train_mask, size_t *n_ids,
                           orc_error *err) {
    return orc_chat_encode_with(ORC_CHAT_ORCHARD, tok, msgs, n_msgs, add_generation_prompt, ids, train_mask, n_ids,
                                err);
}

size_t orc_chat_stop_ids_with(orc_chat_template t, const orc_tokenizer *tok, int32_t *out, size_t cap) {
    static const char *const orchard[] = {ORC_TOK_END, ORC_TOK_END_OF_TEXT, NULL};
    static const char *const chatml[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", ORC_TOK_END_OF_TEXT, "<|eom_id|>", NULL};
    if (t == ORC_CHAT_AUTO) t = orc_chat_template_detect(tok);
    const char *const *names = t == ORC_CHAT_CHATML ? chatml : t == ORC_CHAT_LLAMA3 ? llama3 : orchard;
    size_t n = 0;
    for (size_t i = 0; names[i]; i++) {
        int32_t id = tok ? orc_tokenizer_special_id(tok, names[i]) : -1;
        if (id < 0) continue;
        if (out && n < cap) out[n] = id;
        n++;
    }
    return n;
}

size_t orc_chat_stop_ids(const orc_tokenizer *tok, int32_t *out, size_t cap) {
    return orc_chat_stop_ids_with(ORC_CHAT_ORCHARD, tok, out, cap);
}

/* ---- tools ------------------------------------------------------------------------------ */

void orc_chat_tool_syntax_for(orc_chat_template t, orc_chat_tool_syntax *out) {
    if (t == ORC_CHAT_LLAMA3) *out = (orc_chat_tool_syntax){"{", 1, "", "parameters"};
    else *out = (orc_chat_tool_syntax){"<tool_call>", 0, "\n</tool_call>", "arguments"};
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool bad;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->bad) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->bad = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

static char *sb_done(sbuf *b) {
    if (b->bad || !b->p) {
        free(b->p);
        return NULL;
    }
    return b->p;
}

char *orc_chat_tools_text(orc_chat_template t, const char *const *tool_json, size_t n) {
    sbuf b = {0};
    if (t == ORC_CHAT_LLAMA3) {
        sb_add(&b, "You can call these functions:\n");
        for (size_t i = 0; i < n; i++) {
            sb_add(&b, tool_json[i]);
            sb_add(&b, "\n");
        }
        sb_add(&b, "To call one, answer with only a JSON object {\"name\": <function name>, \"parameters\": "
                   "<arguments object>}.");
    } else {
        sb_add(&b, "You can call these tools:\n<tools>\n");
        for (size_t i = 0; i < n; i++) {
            sb_add(&b, tool_json[i]);
            sb_add(&b, "\n");
        }
        sb_add(&b, "</tools>\nTo call one, answer with <tool_call> and then a JSON object {\"name\": <tool name>, "
                   "\"arguments\": <arguments object>}.");
    }
    return sb_done(&b);
}

char *orc_chat_tool_call_text(orc_chat_template t, const char *name, const char *arguments_json) {
    orc_chat_tool_syntax syn;
    orc_chat_tool_syntax_for(t, &syn);
    sbuf b = {0};
    /* The name as a JSON string: escape what JSON needs. */
    sbuf nm = {0};
    sb_add(&nm, "\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') snprintf(e, sizeof e, "\\%c", *p);
        else if (*p < 0x20) snprintf(e, sizeof e, "\\u%04x", *p);
        else snprintf(e, sizeof e, "%c", *p);
        sb_add(&nm, e);
    }
    sb_add(&nm, "\"");
    char *qname = sb_done(&nm);
    if (!qname) return NULL;
    if (t == ORC_CHAT_LLAMA3) {
        sb_add(&b, "{\"name\": ");
    } else {
        sb_add(&b, syn.open);
        sb_add(&b, "\n{\"name\": ");
    }
    sb_add(&b, qname);
    sb_add(&b, ", \"");
    sb_add(&b, syn.args_key);
    sb_add(&b, "\": ");
    sb_add(&b, arguments_json && arguments_json[0] ? arguments_json : "{}");
    sb_add(&b, "}");
    sb_add(&b, syn.close);
    free(qname);
    return sb_done(&b);
}
