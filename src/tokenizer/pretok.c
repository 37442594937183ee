/* The pre-tokenizer and GPT-2's byte <-> character map. The pre-tokenizer
 * is GPT-2's regular expression written out as a scanner over byte classes
 * (see tokenizer.h): at each position the alternatives are tried in the
 * pattern's order, each greedy, and the one place the pattern backtracks
 * (\s+(?!\S) gives its last space to the next word) is done explicitly. */
#include <string.h>

#include "tok_internal.h"

const char *const orc_tok_default_specials[ORC_TOK_N_DEFAULT_SPECIALS] = {
    ORC_TOK_BEGIN_OF_TEXT, ORC_TOK_END_OF_TEXT, ORC_TOK_PAD, ORC_TOK_SYSTEM,
    ORC_TOK_USER,          ORC_TOK_ASSISTANT,   ORC_TOK_TOOL, ORC_TOK_END,
};

enum { C_OTHER = 0, C_LETTER, C_DIGIT, C_SPACE };

static inline int byte_class(uint8_t c) {
    if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return C_LETTER;
    if (c >= '0' && c <= '9') return C_DIGIT;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return C_SPACE;
    return C_OTHER;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at p, or 0. */
static size_t contraction(const uint8_t *p, size_t avail) {
    if (avail < 2 || p[0] != '\'') return 0;
    uint8_t a = p[1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (avail >= 3) {
        uint8_t b = p[2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
}

static size_t run_of(const uint8_t *s, size_t n, size_t j, int cls) {
    while (j < n && byte_class(s[j]) == cls) j++;
    return j;
}

size_t orc_pretok_next(orc_pretok_mode mode, const char *text, size_t n, size_t i) {
    const uint8_t *s = (const uint8_t *)text;
    if (i >= n) return n;
    bool split_digits = mode == ORC_PRETOK_SPLIT_DIGITS;
    int c = byte_class(s[i]);
    if (c == C_DIGIT && split_digits) return i + 1;
    size_t k = contraction(s + i, n - i);
    if (k) return i + k;
    /* ' ?L+', ' ?N+' (GPT-2 mode), ' ?[^\sLN]+' */
    size_t j = i;
    if (s[i] == ' ' && i + 1 < n) {
        int next = byte_class(s[i + 1]);
        if (next == C_LETTER || next == C_OTHER || (next == C_DIGIT && !split_digits)) {
            j = i + 1;
            c = next;
        }
    }
    if (c != C_SPACE) return run_of(s, n, j, c);
    /* A whitespace run: whole if it ends the text (or meets a digit, which
     * sits in its own piece), else all but its last character, which then
     * starts the next match. */
    size_t end = run_of(s, n, i, C_SPACE);
    if (end == n || (split_digits && byte_class(s[end]) == C_DIGIT)) return end;
    return end - i > 1 ? end - 1 : end;
}

/* GPT-2's table: printable Latin-1 bytes stand for themselves; the other 68
 * bytes take the code points 256, 257, ... in byte order. */
static bool printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

uint32_t orc_tok_byte_to_char(uint8_t b) {
    if (printable(b)) return b;
    if (b <= 0x20) return 256u + b;           /* 0x00..0x20: 33 bytes */
    if (b <= 0xA0) return 256u + 33 + (b - 0x7F); /* 0x7F..0xA0: 34 bytes */
    return 323;                               /* 0xAD */
}

int orc_tok_char_to_byte(uint32_t cp) {
    if (cp < 256) return printable((int)cp) ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 0x7F);
    if (cp == 323) return 0xAD;
    return -1;
}
