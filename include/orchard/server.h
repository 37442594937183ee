/* orchard/server.h: `orchard serve`, an OpenAI-compatible inference server.
 *
 * The server runs on libmicrohttpd (one thread per connection) in front of a
 * scheduler with N decode slots: each slot is a worker thread with its own
 * decode loop and its own sequence in one shared KV pool, over ONE shared,
 * read-only model and tokenizer; the slots' forward passes are batched
 * together by the continuous batcher (src/server/batcher.h). A request that finds no idle slot waits in a
 * bounded queue; a full queue answers 429 at once. An idle slot whose cached
 * tokens share the longest prefix with a new prompt gets it, so a repeated
 * system prompt or a chat continuation is not prefilled again. Endpoints:
 * POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models,
 * /health, /metrics (Prometheus text). Errors use OpenAI's error object
 * {"error": {"message", "type", "param", "code"}}. Tool calls (`tools`,
 * `tool_choice`) and `response_format` json_object / json_schema are decoded
 * under a JSON-schema constraint (orchard/constrain.h), so a call's
 * arguments and a structured answer always parse and match their schema.
 * LoRA adapters loaded at start (opts.adapters) are chosen per request, by
 * `model` (an adapter's name) or a stack in "adapters"; requests under
 * different adapters share the batched steps. See docs/server.md.
 *
 * The request parser is public so that it can be fuzzed on its own. */
#ifndef ORCHARD_SERVER_H
#define ORCHARD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/chat.h"
#include "orchard/constrain.h"
#include "orchard/error.h"
#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/lora.h"
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

#define ORC_API_MAX_TOOLS 64
#define ORC_API_MAX_BIAS 300

typedef enum orc_api_tool_choice {
    ORC_TOOL_NONE = 0, /* no call (also: no tools) */
    ORC_TOOL_AUTO,     /* the model chooses between an answer and a call */
    ORC_TOOL_REQUIRED, /* a call to one of the tools */
    ORC_TOOL_NAMED     /* a call to tools[tool_index] */
} orc_api_tool_choice;

typedef enum orc_api_format {
    ORC_FORMAT_TEXT = 0,
    ORC_FORMAT_JSON_OBJECT, /* any JSON object */
    ORC_FORMAT_JSON_SCHEMA  /* a value of json_schema.schema */
} orc_api_format;

/* A tool the request offers (type "function"). */
typedef struct orc_api_tool {
    char *name;
    char *json;       /* {"type": "function", "function": {...}} as compact JSON, for the prompt */
    char *parameters; /* the parameters' JSON schema as text ({"type": "object", "properties": {}} when absent) */
} orc_api_tool;

/* A tool call in an assistant message of the history. */
typedef struct orc_api_call {
    char *id, *name;
    char *arguments; /* JSON text */
} orc_api_call;

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
    /* chat: tools and structured output */
    orc_api_tool *tools;
    size_t n_tools;
    orc_api_tool_choice tool_choice; /* default: auto with tools, none without */
    int tool_index;                  /* ORC_TOOL_NAMED: the tool */
    orc_api_call **calls;            /* [n_messages] or NULL: assistant messages' tool calls */
    size_t *n_calls;
    orc_api_format format;
    orc_json_schema *format_schema;  /* compiled response_format (json_object: any object) */
    /* sampling (OpenAI semantics, on the generated tokens of each choice) */
    float presence_penalty, frequency_penalty; /* -2..2 */
    int32_t *bias_ids;                         /* logit_bias: token ids and their added values */
    float *bias;
    size_t n_bias;
    /* completions: prompts given as token ids ([n_inputs], NULL entries are text) */
    int32_t **prompt_ids;
    size_t *prompt_id_lens;
    /* orchard's extension "adapters": a LoRA stack by name, each entry a
     * name or {"name", "weight"} (weight 1 by default); at most
     * ORC_LORA_MAX_STACK. The server resolves the names. */
    char **adapters;
    float *adapter_weights;
    size_t n_adapters;
    /* set by the server (it depends on the chat template): the schema of a
     * tool call, {"name": ..., "arguments": ...} for the allowed tools */
    orc_json_schema *call_schema;
} orc_api_request;

/* Parse and validate a JSON body for kind. On failure req holds nothing to
 * free and e names the field (400). Unknown fields are ignored; fields that
 * would change the answer and are not implemented (functions /
 * function_call, suffix, best_of other than n, non-text content parts) are
 * a 400 that says so. Tool parameter schemas and the response_format schema
 * are compiled here (orchard/constrain.h), so a schema orchard cannot
 * follow is a 400 naming the field and the schema path. */
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
    /* LoRA adapters a request may select (by `model` = an adapter's name, or
     * by "adapters": [...]); NULL: none. Each must fit the model (checked at
     * start). The caller keeps the set alive until orc_server_stop returns.
     * The server never reads or writes m->lora: the stack travels with each
     * request, so requests with different adapters run side by side. */
    const orc_lora_set *adapters;
} orc_server_opts;

void orc_server_opts_default(orc_server_opts *o);

typedef struct orc_server orc_server;

/* Start listening and serving m and tok (the caller keeps both alive until
 * orc_server_stop returns). Returns NULL with err set when the address is
 * taken, a slot cannot be allocated, or an option is out of range. */
orc_server *orc_server_start(orc_llm *m, const orc_tokenizer *tok, const orc_server_opts *o, orc_error *err);
/* The same for a quantized model (orchard/quant.h): the same endpoints,
 * batching and per-request adapters, its steps through the integer kernels
 * (orc_qllm_step_adapters). q's active stack at start (q->lora, e.g. an
 * accuracy-recovery adapter set with orc_qllm_set_adapters) stays under
 * every request's adapters; q->lora is not read afterwards. */
struct orc_qllm;
orc_server *orc_server_start_quant(struct orc_qllm *q, const orc_tokenizer *tok, const orc_server_opts *o,
                                   orc_error *err);
/* The port it listens on (the ephemeral one when opts.port was 0). */
int orc_server_port(const orc_server *s);
/* Stop: refuse new requests, cancel queued and running ones (their clients
 * get an error or the end of their stream), join every thread, free all. */
void orc_server_stop(orc_server *s);

#ifdef __cplusplus
}
#endif
#endif
