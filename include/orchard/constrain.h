/* orchard/constrain.h: constrained decoding for JSON output.
 *
 * Three pieces. (1) A schema compiler: a JSON Schema subset (type object,
 * array, string, number, integer, boolean, null or a list of them;
 * properties, required, additionalProperties (false, true or a schema;
 * absent means false when opts.strict_objects, else true), enum, const,
 * items, minItems, maxItems, minLength, maxLength, anyOf / oneOf of those,
 * nested, and orchard's "x-orchard-ordered": true (an object's keys in the
 * order of properties, with additionalProperties false)) -> a tree of nodes; annotations (title, description, default,
 * examples, format, $schema, $id, $comment, $defs, definitions) are ignored,
 * any other keyword is ORC_EUNSUPPORTED naming its schema path (for example
 * "#/properties/when/pattern"). "Any JSON value" (`{}`) and "any JSON
 * object" (response_format json_object) are schemas too.
 * (2) A byte-level matcher: a pushdown automaton (a stack of frames, one per
 * open value) that says whether some bytes keep the output a valid prefix
 * of a JSON text matching the schema, advances over them, and says when a
 * complete value was produced. anyOf runs its alternatives side by side
 * (threads), so alternatives may share a prefix; the compiler bounds their
 * number. Whitespace between tokens is bounded (opts.max_whitespace bytes
 * in a row), strings (opts.max_string), numbers (opts.max_number digits)
 * and nesting of free values (opts.max_depth), so a small model cannot loop
 * inside the constraint. Strings stay valid UTF-8; \u escapes that jansson
 * would refuse (NUL, surrogates) are not allowed.
 * (3) A token filter: the vocabulary's bytes in a trie, built once per
 * tokenizer; one walk of the trie per step, pruned at the first byte the
 * matcher refuses, sets the logits of disallowed tokens to -inf. End ids are
 * allowed only when the value is complete; given a token budget, a token is
 * allowed only if the value can still be closed within the budget (one byte
 * per remaining token), so output cut by max_tokens is rare.
 *
 * The compiled schema and the filter are read-only after creation and may
 * be shared by threads; a matcher belongs to one thread. */
#ifndef ORCHARD_CONSTRAIN_H
#define ORCHARD_CONSTRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_json_schema_opts {
    bool strict_objects;   /* an object schema without additionalProperties allows no other keys */
    int max_whitespace;    /* whitespace bytes in a row between tokens (0..8); default 1 */
    int64_t max_string;    /* characters in a string without maxLength; default 256 */
    int max_number;        /* digits in a number; default 16 */
    int max_depth;         /* nesting of values the schema leaves free (1..32); default 8 */
} orc_json_schema_opts;

void orc_json_schema_opts_default(orc_json_schema_opts *o);

typedef struct orc_json_schema orc_json_schema;

/* Compile schema text (a JSON object or true). NULL opts: the defaults.
 * Errors: ORC_EFORMAT (not JSON), ORC_EUNSUPPORTED / ORC_EINVAL naming the
 * schema path (an unknown keyword, a wrong type of a keyword, an empty
 * enum, a required property missing from properties, a schema too deep or
 * with too many anyOf alternatives alive at once). */
orc_json_schema *orc_json_schema_compile(const char *text, size_t len, const orc_json_schema_opts *opts,
                                         orc_error *err);
/* Any JSON value (object_only false) or any JSON object (true). */
orc_json_schema *orc_json_schema_any(bool object_only, const orc_json_schema_opts *opts, orc_error *err);
void orc_json_schema_free(orc_json_schema *s);

/* ---- the matcher ---------------------------------------------------------------- */

typedef struct orc_json_matcher orc_json_matcher;

/* A matcher at the start of a value of schema s (which must outlive it). */
orc_json_matcher *orc_json_matcher_new(const orc_json_schema *s, orc_error *err);
void orc_json_matcher_free(orc_json_matcher *m);
void orc_json_matcher_reset(orc_json_matcher *m);
/* Would bytes[0..n) keep the output a valid prefix? (The matcher is unchanged.) */
bool orc_json_matcher_allowed(const orc_json_matcher *m, const char *bytes, size_t n);
/* Append bytes: false (and the matcher unchanged) when they are not allowed. */
bool orc_json_matcher_advance(orc_json_matcher *m, const char *bytes, size_t n);
/* A complete value has been produced (the output may stop here). */
bool orc_json_matcher_done(const orc_json_matcher *m);
/* Nothing may follow: the value is complete and no byte can extend it. */
bool orc_json_matcher_finished(const orc_json_matcher *m);
/* The fewest bytes that complete the value from here (0 when done). */
int64_t orc_json_matcher_min_remaining(const orc_json_matcher *m);

/* ---- the token filter ------------------------------------------------------------ */

typedef struct orc_token_filter orc_token_filter;

/* The trie of the tokenizer's ids [0, vocab) (special ids and ids with no
 * bytes are never allowed as text). */
orc_token_filter *orc_token_filter_new(const orc_tokenizer *tok, int64_t vocab, orc_error *err);
void orc_token_filter_free(orc_token_filter *f);

/* Set logits[id] = -inf for every id whose bytes the matcher refuses; the
 * end ids stay finite only when the matcher is done (and are the only ones
 * left when it is finished). budget > 0: also refuse ids after which the
 * value cannot be closed in budget - 1 more tokens (relaxed when it would
 * leave nothing). Returns how many ids stay allowed (0: a dead end). */
int64_t orc_token_filter_apply(const orc_token_filter *f, orc_json_matcher *m, float *logits, int64_t V,
                               const int32_t *end_ids, size_t n_end, int64_t budget);

/* Ids whose bytes are not refused, as a 0/1 mask [V] (no end ids, no budget):
 * for tests and tools. */
int64_t orc_token_filter_mask(const orc_token_filter *f, orc_json_matcher *m, uint8_t *mask, int64_t V);

#ifdef __cplusplus
}
#endif
#endif
