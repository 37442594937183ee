/* The pre-tokenizer's splits (digits alone or in runs, contractions, the
 * spaces rule of GPT-2's pattern, UTF-8 words, punctuation, control bytes)
 * and GPT-2's byte <-> character table against its defining loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/tokenizer.h"

/* Splits text and joins the pieces with '|' into out. */
static const char *split(orc_pretok_mode mode, const char *text, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t e = orc_pretok_next(mode, text, n, i);
        assert_true(e > i && e <= n);
        if (i) out[o++] = '|';
        assert_true(o + (e - i) + 2 < cap);
        memcpy(out + o, text + i, e - i);
        o += e - i;
        i = e;
    }
    out[o] = '\0';
    return out;
}

static void expect(orc_pretok_mode mode, const char *text, const char *want) {
    char buf[512];
    split(mode, text, strlen(text), buf, sizeof buf);
    if (strcmp(buf, want) != 0) fail_msg("split of '%s': got '%s', want '%s'", text, buf, want);
}

static void test_words_and_spaces(void **state) {
    (void)state;
    const orc_pretok_mode d = ORC_PRETOK_SPLIT_DIGITS;
    expect(d, "Hello world", "Hello| world");
    expect(d, "a  b", "a| | b");
    expect(d, "a   b", "a|  | b");
    expect(d, "a\t\tb", "a|\t|\t|b");
    expect(d, "end.\n\nNew", "end|.|\n|\n|New");
    expect(d, "trailing   ", "trailing|   ");
    expect(d, "   lead", "  | lead");
    expect(d, " ", " ");
    expect(d, "x!!! y", "x|!!!| y");
    expect(d, "x !?) y", "x| !?)| y");
    expect(d, "tab\t!", "tab|\t|!");
    expect(d, "a \tb", "a| |\t|b");
}

static void test_contractions(void **state) {
    (void)state;
    const orc_pretok_mode d = ORC_PRETOK_SPLIT_DIGITS;
    expect(d, "I'm don't we're they've I'll he'd it's", "I|'m| don|'t| we|'re| they|'ve| I|'ll| he|'d| it|'s");
    expect(d, "'sun", "'s|un"); /* GPT-2's quirk: the pattern does not look ahead */
    expect(d, "IT'S", "IT|'|S");
    expect(d, "''s", "''|s");
    expect(d, "x 's", "x| '|s");
}

static void test_digits(void **state) {
    (void)state;
    expect(ORC_PRETOK_SPLIT_DIGITS, "abc 123", "abc| |1|2|3");
    expect(ORC_PRETOK_SPLIT_DIGITS, "in 2024, 7.5%", "in| |2|0|2|4|,| |7|.|5|%");
    expect(ORC_PRETOK_SPLIT_DIGITS, "a1b", "a|1|b");
    expect(ORC_PRETOK_SPLIT_DIGITS, "x  9", "x|  |9");
    expect(ORC_PRETOK_GPT2, "abc 123", "abc| 123");
    expect(ORC_PRETOK_GPT2, "in 2024, 7.5%", "in| 2024|,| 7|.|5|%");
    expect(ORC_PRETOK_GPT2, "x  9", "x| | 9");
    expect(ORC_PRETOK_GPT2, "a1b", "a|1|b");
}

static void test_utf8_and_bytes(void **state) {
    (void)state;
    const orc_pretok_mode d = ORC_PRETOK_SPLIT_DIGITS;
    expect(d, "h\xc3\xa9llo w\xc3\xb6rld", "h\xc3\xa9llo| w\xc3\xb6rld");
    expect(d, "\xe4\xb8\xad\xe6\x96\x87 \xd0\xbc\xd0\xb8\xd1\x80",
           "\xe4\xb8\xad\xe6\x96\x87| \xd0\xbc\xd0\xb8\xd1\x80");
    expect(d, "ab\xff\xfe" "cd", "ab\xff\xfe" "cd"); /* invalid UTF-8 still counts as letters */
    /* NUL and other control bytes are punctuation. */
    char buf[64];
    const char text[] = {'a', 0, 0, 'b', ' ', 1, '\n'};
    split(d, text, sizeof text, buf, sizeof buf);
    const char want[] = {'a', '|', 0, 0, '|', 'b', '|', ' ', 1, '|', '\n', 0};
    assert_memory_equal(buf, want, sizeof want);
}

/* Every byte string is covered exactly, with no empty pre-token. */
static void test_covers_random_bytes(void **state) {
    (void)state;
    uint32_t x = 12345;
    char text[1000];
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + round * 5 % 997;
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            text[i] = (char)(x >> 24);
        }
        for (int mode = 0; mode < 2; mode++) {
            size_t i = 0;
            while (i < n) {
                size_t e = orc_pretok_next((orc_pretok_mode)mode, text, n, i);
                assert_true(e > i && e <= n);
                i = e;
            }
            assert_int_equal(i, n);
        }
    }
}

static int printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

static void test_byte_map(void **state) {
    (void)state;
    /* GPT-2's bytes_to_unicode: printable bytes keep their value, the rest
     * get 256, 257, ... in byte order. */
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t want = printable(b) ? (uint32_t)b : 256 + n++;
        assert_int_equal(orc_tok_byte_to_char((uint8_t)b), want);
        assert_int_equal(orc_tok_char_to_byte(want), b);
    }
    assert_int_equal(n, 68);
    assert_int_equal(orc_tok_byte_to_char(' '), 0x120);  /* 'Ġ' */
    assert_int_equal(orc_tok_byte_to_char('\n'), 0x10A); /* 'Ċ' */
    assert_int_equal(orc_tok_char_to_byte(' '), -1);
    assert_int_equal(orc_tok_char_to_byte(0xAD), -1);
    assert_int_equal(orc_tok_char_to_byte(324), -1);
    assert_int_equal(orc_tok_char_to_byte(0x4E2D), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_and_spaces), cmocka_unit_test(test_contractions),
        cmocka_unit_test(test_digits),           cmocka_unit_test(test_utf8_and_bytes),
        cmocka_unit_test(test_covers_random_bytes), cmocka_unit_test(test_byte_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
