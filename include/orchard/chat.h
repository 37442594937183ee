/* orchard/chat.h: chat templates (messages -> token ids).
 *
 * Three layouts, each built from the tokenizer's special tokens (content is
 * always encoded as plain text: a "<|user|>" typed by a user stays bytes,
 * never a control token):
 *
 *   orchard  <|begin_of_text|>, per message <|ROLE|>\n CONTENT <|end|>\n,
 *            generation prompt <|assistant|>\n; the turn ends at <|end|>.
 *   ChatML   per message <|im_start|>ROLE\n CONTENT <|im_end|>\n (no BOS),
 *            generation prompt <|im_start|>assistant\n; ends at <|im_end|>.
 *   Llama-3  <|begin_of_text|>, per message <|start_header_id|>ROLE
 *            <|end_header_id|>\n\n CONTENT(trimmed) <|eot_id|>, generation
 *            prompt <|start_header_id|>assistant<|end_header_id|>\n\n; ends
 *            at <|eot_id|>. The tool role is written "ipython" (Llama 3.1).
 *
 * A model's template is chosen from its tokenizer (the ChatML or Llama-3
 * special tokens), or named in a `chat_template` file in the model
 * directory. For supervised fine-tuning, the encoder marks the tokens the
 * model is trained to produce: each assistant message's content and its
 * end-of-turn token. */
#ifndef ORCHARD_CHAT_H
#define ORCHARD_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_chat_msg {
    const char *role;    /* "system", "user", "assistant" or "tool" */
    const char *content; /* UTF-8 text */
} orc_chat_msg;

typedef enum orc_chat_template {
    ORC_CHAT_AUTO = 0, /* chosen from the tokenizer (orc_chat_template_detect) */
    ORC_CHAT_ORCHARD,
    ORC_CHAT_CHATML,
    ORC_CHAT_LLAMA3
} orc_chat_template;

/* "auto", "orchard", "chatml", "llama3". */
const char *orc_chat_template_name(orc_chat_template t);

/* From the tokenizer's special tokens: <|start_header_id|>, <|end_header_id|>
 * and <|eot_id|> give Llama-3; <|im_start|> and <|im_end|> give ChatML;
 * anything else orchard's. Never returns ORC_CHAT_AUTO. */
orc_chat_template orc_chat_template_detect(const orc_tokenizer *tok);

/* A template named in text: a name ("orchard", "chatml", "llama3",
 * "llama-3", "auto"; surrounding whitespace ignored) or the text of a Jinja
 * template (as in GGUF's tokenizer.chat_template or Hugging Face's
 * tokenizer_config.json), recognised by its tokens. Anything else is
 * ORC_EUNSUPPORTED saying which names are known. */
orc_status orc_chat_template_parse(const char *text, orc_chat_template *out, orc_error *err);

/* The template of a model directory: DIR/chat_template when the file exists
 * (see orc_chat_template_parse; "auto" there, or no file, means detect from
 * tok). Never yields ORC_CHAT_AUTO on success. */
orc_status orc_chat_template_for_model(const char *dir, const orc_tokenizer *tok, orc_chat_template *out,
                                       orc_error *err);

/* Encode messages with template t (ORC_CHAT_AUTO: detected from tok).
 * *ids (and *train_mask when not NULL: 1 on tokens the model learns to
 * produce) are malloc'd, caller frees. An unknown role, or a tokenizer
 * without the template's special tokens, is ORC_EINVAL naming the role or
 * the token. */
orc_status orc_chat_encode_with(orc_chat_template t, const orc_tokenizer *tok, const orc_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, int32_t **ids, uint8_t **train_mask,
                                size_t *n_ids, orc_error *err);

/* orc_chat_encode_with(ORC_CHAT_ORCHARD, ...). */
orc_status orc_chat_encode(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs,
                           bool add_generation_prompt, int32_t **ids, uint8_t **train_mask, size_t *n_ids,
                           orc_error *err);

/* Ids that end an assistant turn under template t, up to cap of them into
 * out; returns how many the tokenizer has. orchard: <|end|>,
 * <|end_of_text|>; ChatML: <|im_end|>, <|endoftext|>; Llama-3: <|eot_id|>,
 * <|end_of_text|>, <|eom_id|>. */
size_t orc_chat_stop_ids_with(orc_chat_template t, const orc_tokenizer *tok, int32_t *out, size_t cap);

/* orc_chat_stop_ids_with(ORC_CHAT_ORCHARD, ...). */
size_t orc_chat_stop_ids(const orc_tokenizer *tok, int32_t *out, size_t cap);

/* ---- tools ------------------------------------------------------------------------
 *
 * Tool (function) calling is written in plain text inside the template (so
 * it needs no special tokens):
 *
 *   orchard, ChatML  the tools are listed in the system message, one JSON
 *                    object per line between <tools> and </tools>; the
 *                    assistant calls one with
 *                    <tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call>
 *                    (the layout of Hermes / Qwen 2.5 tool-calling models).
 *   Llama-3          the tools are listed in the system message; the assistant
 *                    calls one by answering with only
 *                    {"name": NAME, "parameters": {...}} (Llama 3.1's JSON
 *                    tool calls); tool results come back in the tool role
 *                    (written ipython).
 *
 * A decoder that constrains the call starts it when the reply begins with
 * `open`; the call's JSON begins `json_in_open` bytes before the end of
 * `open` (Llama-3: the "{" that opens the call is part of the JSON). */
typedef struct orc_chat_tool_syntax {
    const char *open;       /* text that starts a call in a reply */
    size_t json_in_open;    /* bytes at the end of open that belong to the JSON */
    const char *close;      /* text after the JSON in history ("" when none) */
    const char *args_key;   /* "arguments" or "parameters" */
} orc_chat_tool_syntax;

void orc_chat_tool_syntax_for(orc_chat_template t, orc_chat_tool_syntax *out);

/* The system text that lists tools: tool_json[i] is one tool as compact JSON
 * ({"type": "function", "function": {...}}). malloc'd; NULL when out of memory. */
char *orc_chat_tools_text(orc_chat_template t, const char *const *tool_json, size_t n);

/* One call as the assistant writes it in history (open, the JSON with name
 * and the arguments' JSON text, close). malloc'd; NULL when out of memory. */
char *orc_chat_tool_call_text(orc_chat_template t, const char *name, const char *arguments_json);

#ifdef __cplusplus
}
#endif
#endif
