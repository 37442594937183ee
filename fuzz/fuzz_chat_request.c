/* libFuzzer target for the server's request parser: the first byte picks the
 * endpoint (chat, completions, embeddings), the rest is the JSON body given to
 * orc_api_request_parse. A rejected body must carry a 400 (or 500 for memory)
 * with a type and a message; an accepted one must hold only values in range:
 * known roles with content, 1..16 choices, at most 4 non-empty stop strings,
 * top_logprobs within its bound, a valid sampler, inputs for the text
 * endpoints. Freeing must leave nothing behind (ASan's leak check). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/server.h"

static void check_accepted(const orc_api_request *r) {
    if (r->n < 1 || r->n > ORC_API_MAX_N) __builtin_trap();
    if (r->n_stop > ORC_API_MAX_STOP) __builtin_trap();
    for (size_t i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0]) __builtin_trap();
    if (r->top_logprobs < 0 || r->top_logprobs > ORC_API_MAX_TOP_LOGPROBS) __builtin_trap();
    if (r->max_tokens == 0 || r->max_tokens < -1) __builtin_trap();
    if (orc_sampler_opts_validate(&r->sampler, NULL) != ORC_OK) __builtin_trap();
    if (r->kind == ORC_API_CHAT) {
        if (r->n_messages == 0 || !r->messages) __builtin_trap();
        for (size_t i = 0; i < r->n_messages; i++) {
            const char *role = r->messages[i].role;
            if (!role || !r->messages[i].content) __builtin_trap();
            if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool"))
                __builtin_trap();
        }
    } else {
        if (r->n_inputs == 0 || !r->inputs) __builtin_trap();
        for (size_t i = 0; i < r->n_inputs; i++)
            if (!r->inputs[i]) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    orc_api_kind kind = (orc_api_kind)(data[0] % 3);
    orc_api_request r;
    orc_api_error e;
    memset(&e, 0, sizeof e);
    if (orc_api_request_parse(kind, (const char *)data + 1, size - 1, &r, &e)) {
        if (r.kind != kind) __builtin_trap();
        check_accepted(&r);
        orc_api_request_free(&r);
    } else {
        if ((e.status != 400 && e.status != 500) || !e.message[0] || !e.type[0]) __builtin_trap();
        if (r.messages || r.inputs || r.model || r.n_stop) __builtin_trap(); /* nothing left to free */
    }
    return 0;
}
