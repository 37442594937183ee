/* orchard/server.h: `orchard serve`, an OpenAI-compatible inference server.
 *
 * The server runs on libmicrohttpd (one thread per connection) in front of a
 * scheduler with N decode slots: each slot is a worker thread with its own
 * orc_generator (its own KV cache and scratch arena) over ONE shared,
 * read-only model and tokenizer. A request that finds no idle slot waits in a
 * bounded queue; a full queue answers 429 at once. An idle slot whose cached
 * tokens share the longest prefix with a new prompt gets it, so a repeated
 * system prompt or a chat continuation is not prefilled again. Endpoints:
 * POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models,
 * /health, /metrics (Prometheus text). Errors use OpenAI's error object
 * {"error": {"message", "type", "param", "code"}}. See docs/server.md.
 *
 * The request parser is public so that it can be fuzzed on its own. */
#ifndef ORCHARD_SERVER_H
#define ORCHARD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/chat.h"
#include "orchard/error.h"
#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- requests ------------------------------------------------------------------ */

typedef enum orc_api_kind { ORC_API_CHAT = 0, ORC_API_COMPLETION, ORC_API_EMBEDDING } orc_api_kind;

/* An OpenAI-style error: the HTTP status and the fields of the error object. */
typedef struct orc_api_error {
    int status;       /* 400, 401, 404, 405, 413, 429, 500, 503 */
    char type[40];    /* "invalid_request_error", "authentication_error", ... */
    char param[64];   /* the request field at fault, "" when none */
    char code[48];    /* "context_length_exceeded", "model_not_found", ... or "" */
    char message[512];
} orc_api_error;

/* Fill e (when not NULL); returns false so callers can `return api_fail(...)`. */
bool orc_api_error_set(orc_api_error *e, int status, const char *type, const char *param, const char *code,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define ORC_API_MAX_STOP 4
#define ORC_API_MAX_N 16
#define ORC_API_MAX_TOP_LOGPROBS 20

/* A validated request body. Strings are owned by the request. */
typedef struct orc_api_request {
    orc_api_kind kind;
    char *model;                 /* NULL when the body names none */
    orc_chat_msg *messages;      /* chat: role and content (text parts joined) */
    size_t n_messages;
    char **inputs;               /* completion prompts or embedding inputs */
    size_t n_inputs;
    bool stream;
    bool include_usage;          /* stream_options.include_usage */
    bool echo;                   /* completions: the prompt precedes the text */
    bool logprobs;               /* chat: logprobs; completions: logprobs given (>= 0) */
    int top_logprobs;            /* alternatives per token, 0..20 (completions: 0..5) */
    int n;                       /* choices per prompt, 1..16 */
    int64_t max_tokens;          /* -1: as many as the context leaves */
    orc_sampler_opts sampler;    /* OpenAI defaults: temperature 1, top_p 1, no top-k / min-p */
    bool has_seed;               /* false: the server picks a seed */
    char *stop[ORC_API_MAX_STOP];
    size_t n_stop;
    bool base64;                 /* embeddings: encoding_format "base64" */
    int64_t dimensions;          /* embeddings: 0 when absent (must equal the model's width) */
} orc_api_request;

/* Parse and validate a JSON body for kind. On failure req holds nothing to
 * free and e names the field (400). Unknown fields are ignored; fields that
 * would change the answer and are not implemented yet (tools, tool_choice,
 * response_format other than text, logit_bias, non-zero penalties, token-id
 * prompts) are a 400 that says so. */
bool orc_api_request_parse(orc_api_kind kind, const char *body, size_t len, orc_api_request *req, orc_api_error *e);
void orc_api_request_free(orc_api_request *req);

/* ---- the server -------------------------------------------------------------------- */

typedef struct orc_server_opts {
    const char *host;         /* numeric address or name; default "127.0.0.1" */
    int port;                 /* 0: an ephemeral port (see orc_server_port) */
    int parallel;             /* decode slots; default 1 */
    int64_t context;          /* positions per slot; <= 0: the model's */
    const char *api_key;      /* NULL: no authentication */
    int queue;                /* requests that may wait for a slot; default 16 */
    size_t max_body;          /* request body limit in bytes; default 1 MiB */
    const char *model_name;   /* the id in /v1/models; default "orchard" */
    int threads_per_slot;     /* OpenMP threads per slot; <= 0: all threads / parallel */
    int token_delay_us;       /* tests only: sleep after each decoded token (0 in use) */
    orc_chat_template chat_template; /* ORC_CHAT_AUTO (0): chosen from the tokenizer */
} orc_server_opts;

void orc_server_opts_default(orc_server_opts *o);

typedef struct orc_server orc_server;

/* Start listening and serving m and tok (the caller keeps both alive until
 * orc_server_stop returns). Returns NULL with err set when the address is
 * taken, a slot cannot be allocated, or an option is out of range. */
orc_server *orc_server_start(orc_llm *m, const orc_tokenizer *tok, const orc_server_opts *o, orc_error *err);
/* The port it listens on (the ephemeral one when opts.port was 0). */
int orc_server_port(const orc_server *s);
/* Stop: refuse new requests, cancel queued and running ones (their clients
 * get an error or the end of their stream), join every thread, free all. */
void orc_server_stop(orc_server *s);

#ifdef __cplusplus
}
#endif
#endif
