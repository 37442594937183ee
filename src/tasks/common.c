/* The task suite's common machinery: domain and split names, the per-item
 * Philox stream, the split hash, phrasing choice (held-out templates only in
 * test), turning a draft into an item, JSONL output and the parallel
 * generate-and-write driver with its manifest. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/rng.h"
#include "tasks_internal.h"

static const char *const DOMAIN_NAMES[ORC_TASK_NDOMAINS] = {"math", "code", "strings", "facts", "ciphers"};
static const char *const SPLIT_NAMES[ORC_SPLIT_COUNT] = {"train", "val", "test"};

const char *orc_task_domain_name(orc_task_domain d) {
    return (unsigned)d < ORC_TASK_NDOMAINS ? DOMAIN_NAMES[d] : "unknown";
}

int orc_task_domain_parse(const char *name) {
    for (int i = 0; i < ORC_TASK_NDOMAINS; i++)
        if (name && strcmp(name, DOMAIN_NAMES[i]) == 0) return i;
    return -1;
}

const char *orc_task_split_name(orc_task_split s) {
    return (unsigned)s < ORC_SPLIT_COUNT ? SPLIT_NAMES[s] : "unknown";
}

/* ---- random draws ------------------------------------------------------------------ */

static uint32_t trng_u32(task_rng *r) { return orc_rand_u32(r->seed, r->stream, r->counter++); }

uint32_t trng_below(task_rng *r, uint32_t n) {
    /* Rejection keeps the draw unbiased; the retry count is data-dependent but
     * deterministic, so items stay pure functions of (seed, domain, index). */
    uint32_t limit = UINT32_MAX - UINT32_MAX % n;
    uint32_t x;
    do x = trng_u32(r);
    while (x >= limit);
    return x % n;
}

int64_t trng_range(task_rng *r, int64_t lo, int64_t hi) { return lo + (int64_t)trng_below(r, (uint32_t)(hi - lo + 1)); }

/* ---- strings ------------------------------------------------------------------------- */

static void sb_reserve(sbuf *b, size_t extra) {
    if (b->failed || b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return;
    }
    b->s = s;
    b->cap = cap;
}

void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    sb_reserve(b, (size_t)n);
    if (b->failed) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_putc(sbuf *b, char c) {
    sb_reserve(b, 1);
    if (b->failed) return;
    b->s[b->len++] = c;
    b->s[b->len] = '\0';
}

void sb_free(sbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

char *sb_take(sbuf *b) {
    if (b->failed) {
        sb_free(b);
        return NULL;
    }
    char *s = b->s ? b->s : strdup("");
    memset(b, 0, sizeof *b);
    return s;
}

/* ---- splits and phrasings ---------------------------------------------------------------- */

orc_task_split orc_task_split_of(const char *problem_key) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix so nearby keys spread */
    for (const unsigned char *p = (const unsigned char *)problem_key; *p; p++) h = (h ^ *p) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    unsigned bucket = (unsigned)(h % 100);
    return bucket < 80 ? ORC_SPLIT_TRAIN : bucket < 90 ? ORC_SPLIT_VAL : ORC_SPLIT_TEST;
}

/* The template with its "{}" replaced by slot. */
static char *fill_template(const char *tpl, const char *slot) {
    sbuf b = {0};
    for (const char *p = tpl; *p; p++) {
        if (p[0] == '{' && p[1] == '}') {
            sb_printf(&b, "%s", slot);
            p++;
        } else {
            sb_putc(&b, *p);
        }
    }
    return sb_take(&b);
}

void orc_task_item_free(orc_task_item *it) {
    if (!it) return;
    free(it->instruction);
    free(it->input);
    free(it->solution);
    free(it->answer);
    it->instruction = it->input = it->solution = it->answer = NULL;
}

static void draft_free(task_draft *d) {
    sb_free(&d->key);
    sb_free(&d->input);
    sb_free(&d->solution);
    sb_free(&d->answer);
}

orc_status orc_task_difficulty_parse(const char *spec, orc_task_gen *g, orc_error *err) {
    int lo = 0, hi = 0, used = 0;
    if (!spec || !g) return orc_error_set(err, ORC_EINVAL, "tasks: no difficulty given");
    int range = sscanf(spec, "%d-%d%n", &lo, &hi, &used) == 2 && spec[used] == '\0';
    if (!range && sscanf(spec, "%d%n", &lo, &used) == 1 && spec[used] == '\0') hi = lo;
    else if (!range)
        return orc_error_set(err, ORC_EINVAL, "tasks: difficulty '%s' is not N or LO-HI", spec);
    if (lo < 1 || hi > ORC_TASK_MAX_DIFFICULTY || lo > hi)
        return orc_error_set(err, ORC_EINVAL, "tasks: difficulty '%s' is not within 1-%d (LO <= HI)", spec,
                             ORC_TASK_MAX_DIFFICULTY);
    g->min_difficulty = lo;
    g->max_difficulty = hi;
    return ORC_OK;
}

orc_status orc_task_make(const orc_task_gen *g, orc_task_domain dom, uint64_t index, orc_task_item *out,
                         orc_error *err) {
    memset(out, 0, sizeof *out);
    if (!g || (unsigned)dom >= ORC_TASK_NDOMAINS)
        return orc_error_set(err, ORC_EINVAL, "tasks: no generator or unknown domain %d", (int)dom);
    if (index >= (1ull << 48))
        return orc_error_set(err, ORC_ERANGE, "tasks: index %llu too large", (unsigned long long)index);
    task_rng r = {.seed = g->seed, .stream = ((uint64_t)dom + 1) << 48 | index, .counter = 0};
    task_draft d = {0};
    int lo = g->min_difficulty ? g->min_difficulty : 1, hi = g->max_difficulty ? g->max_difficulty : ORC_TASK_MAX_DIFFICULTY;
    if (lo < 1 || hi > ORC_TASK_MAX_DIFFICULTY || lo > hi)
        return orc_error_set(err, ORC_EINVAL, "tasks: difficulty range %d-%d is not within 1-%d", lo, hi,
                             ORC_TASK_MAX_DIFFICULTY);
    if (g->distractors < 0 || g->distractors > ORC_TASK_MAX_DISTRACTORS)
        return orc_error_set(err, ORC_EINVAL, "tasks: %d distractors asked for; 0 to %d are possible",
                             g->distractors, ORC_TASK_MAX_DISTRACTORS);
    d.difficulty = (int)trng_range(&r, lo, hi);
    d.distractors = g->distractors;
    d.side = (task_rng){.seed = g->seed ^ 0x6469737472616374ull, .stream = r.stream, .counter = 0};
    orc_status st;
    switch (dom) {
    case ORC_TASK_MATH: st = task_gen_math(&r, &d, err); break;
    case ORC_TASK_CODE: st = task_gen_code(&r, &d, err); break;
    case ORC_TASK_STRINGS: st = task_gen_strings(&r, &d, err); break;
    case ORC_TASK_FACTS: st = task_gen_facts(&r, g->facts, &d, err); break;
    default: st = task_gen_ciphers(&r, &d, err); break;
    }
    if (st != ORC_OK) {
        draft_free(&d);
        return st;
    }
    if (d.key.failed || d.input.failed || d.solution.failed || d.answer.failed || !d.key.s) {
        draft_free(&d);
        return orc_error_set(err, ORC_ENOMEM, "tasks: out of memory making %s item %llu", orc_task_domain_name(dom),
                             (unsigned long long)index);
    }
    out->domain = dom;
    out->difficulty = d.difficulty;
    snprintf(out->id, sizeof out->id, "%s-%06llu", orc_task_domain_name(dom), (unsigned long long)index);
    snprintf(out->kind, sizeof out->kind, "%s", d.kind);
    out->split = orc_task_split_of(d.key.s);
    /* Train and val never see the last template; test draws from all of them. */
    int n = d.n_templates;
    int p = out->split == ORC_SPLIT_TEST ? (int)trng_below(&r, (uint32_t)n) : (int)trng_below(&r, (uint32_t)(n - 1));
    out->phrasing_id = p;
    out->held_out_phrasing = p == n - 1;
    out->instruction = fill_template(d.templates[p], d.slot);
    out->input = sb_take(&d.input);
    out->solution = sb_take(&d.solution);
    out->answer = sb_take(&d.answer);
    draft_free(&d);
    if (!out->instruction || !out->input || !out->solution || !out->answer) {
        orc_task_item_free(out);
        return orc_error_set(err, ORC_ENOMEM, "tasks: out of memory making %s item %llu", orc_task_domain_name(dom),
                             (unsigned long long)index);
    }
    return ORC_OK;
}

/* ---- files ----------------------------------------------------------------------------------- */

orc_status orc_task_write_jsonl(FILE *fp, const orc_task_item *it, orc_error *err) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s, s:i, s:b, s:s, s:s, s:s, s:s}", "id", it->id, "domain",
                          orc_task_domain_name(it->domain), "kind", it->kind, "difficulty", it->difficulty, "split",
                          orc_task_split_name(it->split), "phrasing_id", it->phrasing_id, "held_out_phrasing",
                          it->held_out_phrasing, "instruction", it->instruction, "input", it->input, "solution",
                          it->solution, "answer", it->answer);
    if (!j) return orc_error_set(err, ORC_ENOMEM, "tasks: cannot build the JSON of item %s", it->id);
    int rc = json_dumpf(j, fp, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (rc != 0 || fputc('\n', fp) == EOF) return orc_error_set(err, ORC_EIO, "tasks: cannot write item %s", it->id);
    return ORC_OK;
}

static orc_status write_manifest(const char *path, const orc_task_gen *g, unsigned mask, int64_t n,
                                 const orc_task_counts *c, orc_error *err) {
    json_t *m = json_object(), *doms = json_object();
    json_object_set_new(m, "format", json_string("orchard-tasks"));
    json_object_set_new(m, "version", json_integer(1));
    json_object_set_new(m, "seed", json_integer((json_int_t)g->seed));
    json_object_set_new(m, "n_per_domain", json_integer((json_int_t)n));
    json_object_set_new(m, "difficulty", json_pack("[i,i]", g->min_difficulty ? g->min_difficulty : 1,
                                                   g->max_difficulty ? g->max_difficulty : ORC_TASK_MAX_DIFFICULTY));
    json_object_set_new(m, "distractors", json_integer(g->distractors));
    json_object_set_new(m, "held_out_test_items", json_integer((json_int_t)c->held_out));
    for (int d = 0; d < ORC_TASK_NDOMAINS; d++) {
        if (!(mask & (1u << d))) continue;
        json_t *s = json_object();
        for (int k = 0; k < ORC_SPLIT_COUNT; k++)
            json_object_set_new(s, SPLIT_NAMES[k], json_integer((json_int_t)c->by_split[d][k]));
        json_object_set_new(doms, DOMAIN_NAMES[d], s);
    }
    json_object_set_new(m, "domains", doms);
    json_object_set_new(m, "files", json_pack("[s,s,s]", "train.jsonl", "val.jsonl", "test.jsonl"));
    int rc = json_dump_file(m, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    return rc == 0 ? ORC_OK : orc_error_set(err, ORC_EIO, "tasks: cannot write %s", path);
}

orc_status orc_tasks_generate(const orc_task_gen *g, unsigned mask, int64_t n, const char *out_dir,
                              orc_task_counts *counts, orc_error *err) {
    if (!g || !out_dir || n < 0 || n >= (1ll << 40) || mask == 0 || mask >= (1u << ORC_TASK_NDOMAINS))
        return orc_error_set(err, ORC_EINVAL, "tasks generate: need a generator, an output directory, n >= 0 and "
                                              "at least one known domain");
    if ((mask & (1u << ORC_TASK_FACTS)) && !g->facts)
        return orc_error_set(err, ORC_EINVAL, "tasks generate: the facts domain needs the SOTU corpus "
                                              "(run `orchard data fetch`)");
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "tasks generate: cannot create %s: %s", out_dir, strerror(errno));
    orc_task_counts c;
    memset(&c, 0, sizeof c);
    FILE *fp[ORC_SPLIT_COUNT] = {0};
    char path[4200];
    orc_status st = ORC_OK;
    for (int k = 0; k < ORC_SPLIT_COUNT && st == ORC_OK; k++) {
        snprintf(path, sizeof path, "%s/%s.jsonl", out_dir, SPLIT_NAMES[k]);
        fp[k] = fopen(path, "w");
        if (!fp[k]) st = orc_error_set(err, ORC_EIO, "tasks generate: cannot create %s: %s", path, strerror(errno));
    }
    orc_task_item *items = st == ORC_OK && n > 0 ? calloc((size_t)n, sizeof *items) : NULL;
    orc_error *errs = st == ORC_OK && n > 0 ? calloc((size_t)n, sizeof *errs) : NULL;
    if (st == ORC_OK && n > 0 && (!items || !errs))
        st = orc_error_set(err, ORC_ENOMEM, "tasks generate: out of memory");
    for (int d = 0; d < ORC_TASK_NDOMAINS && st == ORC_OK && n > 0; d++) {
        if (!(mask & (1u << d))) continue;
        /* Each item is independent; writing happens afterwards in index order. */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) orc_task_make(g, (orc_task_domain)d, (uint64_t)i, &items[i], &errs[i]);
        for (int64_t i = 0; i < n; i++) {
            if (st == ORC_OK && errs[i].code != ORC_OK) st = orc_error_set(err, errs[i].code, "%s", errs[i].msg);
            if (st == ORC_OK) st = orc_task_write_jsonl(fp[items[i].split], &items[i], err);
            if (st == ORC_OK) {
                c.by_split[d][items[i].split]++;
                c.held_out += items[i].held_out_phrasing;
            }
            orc_task_item_free(&items[i]);
            errs[i].code = ORC_OK;
        }
    }
    free(items);
    free(errs);
    for (int k = 0; k < ORC_SPLIT_COUNT; k++)
        if (fp[k] && fclose(fp[k]) != 0 && st == ORC_OK)
            st = orc_error_set(err, ORC_EIO, "tasks generate: cannot finish %s/%s.jsonl", out_dir, SPLIT_NAMES[k]);
    if (st == ORC_OK) {
        snprintf(path, sizeof path, "%s/manifest.json", out_dir);
        st = write_manifest(path, g, mask, n, &c, err);
    }
    if (st == ORC_OK && counts) *counts = c;
    return st;
}
