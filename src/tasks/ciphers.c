/* The ciphers domain: letter substitutions whose key is in the instruction.
 * Difficulty: 1 Caesar encryption of one word with a shift of 1-3, 2 Caesar
 * encryption of two words with any shift, 3 Caesar decryption of three words,
 * 4 Atbash (a<->z) of three words, 5 Vigenere encryption of two or three
 * words with a 3-5 letter key. Text is lower case; spaces pass through. */
#include <stdio.h>
#include <string.h>

#include "tasks_internal.h"

static const char *const WORDS[] = {"attack", "at", "dawn", "secret", "message", "hidden", "treasure", "north",
                                    "gate", "meet", "me", "by", "the", "old", "mill", "moon", "river", "code",
                                    "signal", "bridge", "before", "noon", "silent", "garden"};
#define N_WORDS ((uint32_t)(sizeof WORDS / sizeof WORDS[0]))
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const T_ENC[] = {
    "Encrypt the text with a Caesar cipher, shifting each letter forward by {} places.",
    "Apply a Caesar shift of {} to the text (a becomes the letter {} places later, wrapping around).",
    "Use the Caesar cipher with key {} to encode the text; leave spaces as they are.",
    "Shift every letter of the text {} positions forward in the alphabet."};
static const char *const T_DEC[] = {
    "The text was encrypted with a Caesar shift of {}. Decrypt it.",
    "Decode this Caesar cipher; each letter was moved forward by {} places.",
    "Undo a Caesar shift of {} on the text and give the plain text.",
    "Shift every letter of the text {} positions back in the alphabet."};
static const char *const T_ATBASH[] = {
    "Encode the text with the Atbash cipher (a <-> z, b <-> y, ...).",
    "Apply the Atbash substitution, which maps each letter to its mirror in the alphabet.",
    "Replace every letter by its Atbash counterpart (a becomes z, b becomes y, and so on).",
    "Mirror the alphabet (a to z, z to a) and apply it to every letter of the text."};
static const char *const T_VIG[] = {
    "Encrypt the text with the Vigenere cipher using the key {}; the key advances on letters only.",
    "Apply a Vigenere cipher with key {} to the text (spaces are kept and do not use up key letters).",
    "Use Vigenere encryption, key {}, on the text; leave spaces unchanged.",
    "Shift each letter forward by the matching letter of the repeated key {} (A = 0); skip spaces."};

static void words(task_rng *r, sbuf *b, int n) {
    for (int i = 0; i < n; i++) sb_printf(b, "%s%s", i ? " " : "", WORDS[trng_below(r, N_WORDS)]);
}

static char shift(char c, int k) { return c >= 'a' && c <= 'z' ? (char)('a' + (c - 'a' + k + 26) % 26) : c; }

orc_status task_gen_ciphers(task_rng *r, task_draft *d, orc_error *err) {
    (void)err;
    int diff = d->difficulty;
    words(r, &d->input, diff == 1 ? 1 : diff == 2 ? 2 : diff == 5 ? (int)trng_range(r, 2, 3) : 3);
    if (d->input.failed) return ORC_OK;
    const char *in = d->input.s;
    char key[8] = {0};
    if (diff <= 3) {
        int k = diff == 1 ? (int)trng_range(r, 1, 3) : (int)trng_range(r, 1, 25);
        int dir = diff == 3 ? -1 : 1;
        snprintf(d->kind, sizeof d->kind, "%s", dir > 0 ? "caesar_encode" : "caesar_decode");
        snprintf(d->slot, sizeof d->slot, "%d", k);
        snprintf(key, sizeof key, "%d", k);
        /* For decryption the input is the cipher text of a plain phrase. */
        if (dir < 0) {
            for (size_t i = 0; in[i]; i++) d->input.s[i] = shift(in[i], k);
            for (size_t i = 0; in[i]; i++) sb_putc(&d->answer, shift(in[i], -k));
        } else {
            for (size_t i = 0; in[i]; i++) sb_putc(&d->answer, shift(in[i], k));
        }
        d->templates = dir > 0 ? T_ENC : T_DEC;
        d->n_templates = dir > 0 ? N_OF(T_ENC) : N_OF(T_DEC);
    } else if (diff == 4) {
        snprintf(d->kind, sizeof d->kind, "atbash");
        for (size_t i = 0; in[i]; i++) sb_putc(&d->answer, in[i] == ' ' ? ' ' : (char)('z' - (in[i] - 'a')));
        d->templates = T_ATBASH;
        d->n_templates = N_OF(T_ATBASH);
    } else {
        int len = (int)trng_range(r, 3, 5);
        for (int i = 0; i < len; i++) key[i] = (char)('A' + trng_below(r, 26));
        snprintf(d->kind, sizeof d->kind, "vigenere_encode");
        snprintf(d->slot, sizeof d->slot, "'%s'", key);
        int j = 0;
        for (size_t i = 0; in[i]; i++) {
            if (in[i] == ' ') {
                sb_putc(&d->answer, ' ');
            } else {
                sb_putc(&d->answer, shift(in[i], key[j % len] - 'A'));
                j++;
            }
        }
        d->templates = T_VIG;
        d->n_templates = N_OF(T_VIG);
    }
    sb_printf(&d->solution, "#### %s", d->answer.s ? d->answer.s : "");
    sb_printf(&d->key, "ciphers|%s|%s|%s", d->kind, key, d->input.s);
    return ORC_OK;
}
