/* orchard/chat.h: chat templates (messages -> token ids).
 *
 * orchard's own template, for tokenizers trained by orchard:
 *   <|begin_of_text|>  then for each message  <|ROLE|>\n CONTENT <|end|>\n
 * with ROLE one of system, user, assistant, tool; a generation prompt adds
 * "<|assistant|>\n". The assistant's turn ends at <|end|>. Content is encoded
 * as plain text (a "<|user|>" typed by a user stays bytes, never a control
 * token). For supervised fine-tuning, the encoder marks the tokens the model
 * is trained to produce: each assistant message's content and its <|end|>.
 * (ChatML and Llama-3 templates for imported models arrive with the server.) */
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

/* Encode messages with orchard's template. *ids (and *train_mask when not
 * NULL: 1 on tokens the model learns to produce) are malloc'd, caller frees.
 * An unknown role, or a tokenizer without the template's special tokens, is
 * ORC_EINVAL naming the role or the token. */
orc_status orc_chat_encode(const orc_tokenizer *tok, const orc_chat_msg *msgs, size_t n_msgs,
                           bool add_generation_prompt, int32_t **ids, uint8_t **train_mask, size_t *n_ids,
                           orc_error *err);

/* Ids that end an assistant turn (<|end|>, <|end_of_text|>): up to cap of
 * them into out; returns how many the tokenizer has. */
size_t orc_chat_stop_ids(const orc_tokenizer *tok, int32_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
