/* The code domain: trace a short Python-like program and give what it
 * prints. The generator builds a tiny syntax tree, prints it as text and runs
 * it, recording one solution line per executed assignment, test and loop
 * step. Difficulty: 1 straight-line assignments, 2 an if/else, 3 one loop,
 * 4 a loop with an if inside, 5 two nested loops. */
#include <stdio.h>
#include <string.h>

#include "tasks_internal.h"

static const char *const TEMPLATES[] = {
    "What does this program print? Trace it one step per line and end with '#### <output>'.",
    "Trace the following code by hand and give its output after '####'.",
    "Run this program in your head. Show each step on its own line, then write '#### ' and the printed value.",
    "Follow the execution of the program below and report what it prints, ending with '#### <output>'.",
};
#define N_TEMPLATES ((int)(sizeof TEMPLATES / sizeof TEMPLATES[0]))

enum { S_ASSIGN, S_IF, S_FOR, S_PRINT };
enum { V_COUNT = 8, MAX_STMTS = 24, MAX_BODY = 4 };
static const char *const BASE_NAMES[] = {"a", "b", "c", "x", "y", "n", "s", "t"};

typedef struct opnd {
    int var; /* variable index, or -1 for the constant val */
    int64_t val;
} opnd;

typedef struct stmt {
    int kind;
    int target;       /* assign: the variable; for: the loop variable */
    opnd a, b;        /* assign: a op b (op 0: just a); if: a cmp b; print: a op b */
    char op;          /* '+', '-', '*' or 0 */
    const char *cmp;  /* "<", ">", "==", "!=" */
    int count;        /* for: range(count) */
    int body[MAX_BODY], n_body;
    int orelse[MAX_BODY], n_else;
} stmt;

typedef struct prog {
    stmt s[MAX_STMTS];
    int n;
    int top[MAX_BODY + 4], n_top;
    const char *names[V_COUNT + 2];  /* + the loop variables i, j */
    int64_t vals[V_COUNT + 2];
} prog;

static int add(prog *p, stmt s) {
    p->s[p->n] = s;
    return p->n++;
}

static opnd var(int v) { return (opnd){v, 0}; }
static opnd cst(int64_t c) { return (opnd){-1, c}; }

static stmt assign(int target, opnd a, char op, opnd b) {
    return (stmt){.kind = S_ASSIGN, .target = target, .a = a, .op = op, .b = b};
}

/* ---- printing ---------------------------------------------------------------------- */

static void print_opnd(const prog *p, sbuf *b, opnd o) {
    if (o.var >= 0) sb_printf(b, "%s", p->names[o.var]);
    else sb_printf(b, "%lld", (long long)o.val);
}

static void print_expr(const prog *p, sbuf *b, opnd a, char op, opnd c) {
    print_opnd(p, b, a);
    if (op) {
        sb_printf(b, " %c ", op);
        print_opnd(p, b, c);
    }
}

static void print_block(const prog *p, sbuf *b, const int *ids, int n, int indent);

static void print_stmt(const prog *p, sbuf *b, const stmt *s, int indent) {
    for (int i = 0; i < indent; i++) sb_printf(b, "    ");
    if (s->kind == S_ASSIGN) {
        sb_printf(b, "%s = ", p->names[s->target]);
        print_expr(p, b, s->a, s->op, s->b);
        sb_putc(b, '\n');
    } else if (s->kind == S_PRINT) {
        sb_printf(b, "print(");
        print_expr(p, b, s->a, s->op, s->b);
        sb_printf(b, ")\n");
    } else if (s->kind == S_FOR) {
        sb_printf(b, "for %s in range(%d):\n", p->names[s->target], s->count);
        print_block(p, b, s->body, s->n_body, indent + 1);
    } else {
        sb_printf(b, "if ");
        print_opnd(p, b, s->a);
        sb_printf(b, " %s ", s->cmp);
        print_opnd(p, b, s->b);
        sb_printf(b, ":\n");
        print_block(p, b, s->body, s->n_body, indent + 1);
        if (s->n_else) {
            for (int i = 0; i < indent; i++) sb_printf(b, "    ");
            sb_printf(b, "else:\n");
            print_block(p, b, s->orelse, s->n_else, indent + 1);
        }
    }
}

static void print_block(const prog *p, sbuf *b, const int *ids, int n, int indent) {
    for (int i = 0; i < n; i++) print_stmt(p, b, &p->s[ids[i]], indent);
}

/* ---- running ----------------------------------------------------------------------------- */

static int64_t value(const prog *p, opnd o) { return o.var >= 0 ? p->vals[o.var] : o.val; }

static int64_t apply(int64_t a, char op, int64_t b) {
    return op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a;
}

static int compare(int64_t a, const char *cmp, int64_t b) {
    if (!strcmp(cmp, "<")) return a < b;
    if (!strcmp(cmp, ">")) return a > b;
    if (!strcmp(cmp, "==")) return a == b;
    return a != b;
}

static void run_block(prog *p, sbuf *trace, const int *ids, int n, int64_t *printed);

static void run_stmt(prog *p, sbuf *t, const stmt *s, int64_t *printed) {
    if (s->kind == S_ASSIGN || s->kind == S_PRINT) {
        int64_t a = value(p, s->a), v = s->op ? apply(a, s->op, value(p, s->b)) : a;
        if (s->kind == S_ASSIGN) {
            p->vals[s->target] = v;
            sb_printf(t, "%s = ", p->names[s->target]);
        } else {
            *printed = v;
            sb_printf(t, "print ");
        }
        if (s->op) sb_printf(t, "%lld %c %lld = %lld\n", (long long)a, s->op, (long long)value(p, s->b), (long long)v);
        else sb_printf(t, "%lld\n", (long long)v);
    } else if (s->kind == S_FOR) {
        for (int i = 0; i < s->count; i++) {
            p->vals[s->target] = i;
            sb_printf(t, "%s = %d\n", p->names[s->target], i);
            run_block(p, t, s->body, s->n_body, printed);
        }
    } else {
        int64_t a = value(p, s->a), b = value(p, s->b);
        int yes = compare(a, s->cmp, b);
        sb_printf(t, "%lld %s %lld is %s\n", (long long)a, s->cmp, (long long)b, yes ? "true" : "false");
        if (yes) run_block(p, t, s->body, s->n_body, printed);
        else run_block(p, t, s->orelse, s->n_else, printed);
    }
}

static void run_block(prog *p, sbuf *t, const int *ids, int n, int64_t *printed) {
    for (int i = 0; i < n; i++) run_stmt(p, t, &p->s[ids[i]], printed);
}

/* ---- building ------------------------------------------------------------------------------ */

static const char *const CMPS[] = {"<", ">", "==", "!="};

static char pick_op(task_rng *r, int allow_mul) { return "+-*"[trng_below(r, allow_mul ? 3 : 2)]; }

/* An operand: one of the first n_vars variables or a small constant. */
static opnd pick_opnd(task_rng *r, int n_vars, int64_t lo, int64_t hi) {
    if (n_vars > 0 && trng_below(r, 2)) return var((int)trng_below(r, (uint32_t)n_vars));
    return cst(trng_range(r, lo, hi));
}

static void build(task_rng *r, prog *p, int diff) {
    const int I = V_COUNT, J = V_COUNT + 1;
    enum { V0 = 0, V1 = 1, V2 = 2 };
    if (diff == 1) {
        p->top[p->n_top++] = add(p, assign(V0, cst(trng_range(r, 1, 12)), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V1, cst(trng_range(r, 1, 12)), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V2, var(V0), pick_op(r, 1), pick_opnd(r, 2, 1, 9)));
        p->top[p->n_top++] = add(p, (stmt){.kind = S_PRINT, .a = var(V2), .op = pick_op(r, 0), .b = var(V1)});
    } else if (diff == 2) {
        p->top[p->n_top++] = add(p, assign(V0, cst(trng_range(r, 1, 15)), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V1, cst(trng_range(r, 1, 15)), 0, cst(0)));
        stmt s = {.kind = S_IF, .a = var(V0), .cmp = CMPS[trng_below(r, 4)], .b = pick_opnd(r, 2, 1, 15)};
        s.body[s.n_body++] = add(p, assign(V2, var(V0), pick_op(r, 1), var(V1)));
        s.orelse[s.n_else++] = add(p, assign(V2, var(V1), pick_op(r, 1), cst(trng_range(r, 1, 9))));
        p->top[p->n_top++] = add(p, s);
        p->top[p->n_top++] = add(p, (stmt){.kind = S_PRINT, .a = var(V2)});
    } else if (diff == 3) {
        p->top[p->n_top++] = add(p, assign(V0, cst(trng_range(r, 0, 9)), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V1, cst(trng_range(r, 1, 5)), 0, cst(0)));
        stmt f = {.kind = S_FOR, .target = I, .count = (int)trng_range(r, 2, 5)};
        opnd add_what = trng_below(r, 2) ? var(I) : var(V1);
        f.body[f.n_body++] = add(p, assign(V0, var(V0), pick_op(r, 0), add_what));
        if (trng_below(r, 2)) f.body[f.n_body++] = add(p, assign(V1, var(V1), '+', cst(trng_range(r, 1, 3))));
        p->top[p->n_top++] = add(p, f);
        p->top[p->n_top++] = add(p, (stmt){.kind = S_PRINT, .a = var(V0)});
    } else if (diff == 4) {
        p->top[p->n_top++] = add(p, assign(V0, cst(trng_range(r, 0, 5)), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V1, cst(trng_range(r, 1, 4)), 0, cst(0)));
        stmt f = {.kind = S_FOR, .target = I, .count = (int)trng_range(r, 3, 6)};
        stmt s = {.kind = S_IF, .a = var(I), .cmp = CMPS[trng_below(r, 4)], .b = var(V1)};
        s.body[s.n_body++] = add(p, assign(V0, var(V0), '+', var(I)));
        s.orelse[s.n_else++] = add(p, assign(V0, var(V0), pick_op(r, 0), cst(trng_range(r, 1, 3))));
        f.body[f.n_body++] = add(p, s);
        p->top[p->n_top++] = add(p, f);
        p->top[p->n_top++] = add(p, (stmt){.kind = S_PRINT, .a = var(V0)});
    } else {
        p->top[p->n_top++] = add(p, assign(V0, cst(0), 0, cst(0)));
        p->top[p->n_top++] = add(p, assign(V1, cst(trng_range(r, 1, 3)), 0, cst(0)));
        stmt outer = {.kind = S_FOR, .target = I, .count = (int)trng_range(r, 2, 4)};
        stmt inner = {.kind = S_FOR, .target = J, .count = (int)trng_range(r, 2, 3)};
        opnd what = trng_below(r, 2) ? var(J) : var(I);
        inner.body[inner.n_body++] = add(p, assign(V0, var(V0), '+', what));
        outer.body[outer.n_body++] = add(p, inner);
        outer.body[outer.n_body++] = add(p, assign(V0, var(V0), pick_op(r, 0), var(V1)));
        p->top[p->n_top++] = add(p, outer);
        p->top[p->n_top++] = add(p, (stmt){.kind = S_PRINT, .a = var(V0), .op = '*', .b = cst(trng_range(r, 1, 3))});
    }
}

static const char *const KINDS[] = {"", "straight_line", "branch", "loop", "loop_branch", "nested_loops"};

orc_status task_gen_code(task_rng *r, task_draft *d, orc_error *err) {
    (void)err;
    prog p;
    memset(&p, 0, sizeof p);
    /* Three distinct variable names, shuffled from the pool. */
    int order[V_COUNT];
    for (int i = 0; i < V_COUNT; i++) order[i] = i;
    for (int i = V_COUNT - 1; i > 0; i--) {
        int j = (int)trng_below(r, (uint32_t)(i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (int i = 0; i < V_COUNT; i++) p.names[i] = BASE_NAMES[order[i]];
    p.names[V_COUNT] = "i";
    p.names[V_COUNT + 1] = "j";
    build(r, &p, d->difficulty);
    print_block(&p, &d->input, p.top, p.n_top, 0);
    if (d->input.len && d->input.s[d->input.len - 1] == '\n') d->input.s[--d->input.len] = '\0';
    int64_t printed = 0;
    run_block(&p, &d->solution, p.top, p.n_top, &printed);
    sb_printf(&d->solution, "#### %lld", (long long)printed);
    sb_printf(&d->answer, "%lld", (long long)printed);
    sb_printf(&d->key, "code|%s", d->input.s ? d->input.s : "");
    snprintf(d->kind, sizeof d->kind, "%s", KINDS[d->difficulty]);
    d->templates = TEMPLATES;
    d->n_templates = N_TEMPLATES;
    return ORC_OK;
}
