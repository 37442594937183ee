/* What a program serving a quantized model needs beside orc_qllm_load: the
 * tokenizer that goes with a quantized model path (`orchard serve` and
 * `orchard generate-q` find it the same way). The batched step over a
 * quantized model itself lives with the float one in src/llm/batch.c
 * (orc_qllm_step_adapters), which shares its plan, attention and LoRA code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orchard/llm_gguf.h"
#include "orchard/quant.h"

orc_tokenizer *orc_qllm_load_tokenizer(const char *tok_path, const char *model, const orc_qllm *q, orc_error *err) {
    if (tok_path) return orc_tokenizer_load(tok_path, err);
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode) && access(path, F_OK) == 0) return orc_tokenizer_load(path, err);
    if (!q->file) {
        orc_error_set(err, ORC_EINVAL, "%s: no tokenizer.json beside the model and no GGUF to read one from", model);
        return NULL;
    }
    char *json = orc_gguf_tokenizer_json(q->file, model, err);
    if (!json) return NULL;
    orc_tokenizer *tok = orc_tokenizer_from_json(json, strlen(json), model, err);
    free(json);
    return tok;
}
