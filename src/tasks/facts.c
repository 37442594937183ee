/* The facts domain: questions about the State of the Union addresses whose
 * answers come from the corpus metadata (year, president, party), so a model
 * can only know them from pretraining on that corpus. Difficulty: 1 who gave
 * the address of a year, 2 the party of that year's president, 3 the year of a
 * president's first address, 4 of the last one, 5 how many they gave. Years
 * with two presidents and the party "none" are not asked about. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/data.h"
#include "tasks_internal.h"

typedef struct fact_year {
    int year;
    char name[64], party[64];
    int ambiguous; /* two addresses by different people that year */
} fact_year;

typedef struct fact_person {
    char name[64];
    int first, last, count;
} fact_person;

struct orc_task_facts {
    fact_year *years;
    int n_years, n_askable;
    int *askable; /* indices of unambiguous years with a party */
    fact_person *people;
    int n_people;
};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const T_WHO[] = {
    "Who delivered the State of the Union address of {}? Answer with the name only.",
    "Which president gave the {} State of the Union address?",
    "Name the president who addressed Congress in the State of the Union of {}.",
    "The State of the Union address of the year {} was given by which president?"};
static const char *const T_PARTY[] = {
    "Which party did the president who gave the {} State of the Union address belong to?",
    "What was the political party of the author of the {} State of the Union address?",
    "Give the party of the president who delivered the State of the Union in {}.",
    "The {} State of the Union was delivered by a member of which party?"};
static const char *const T_FIRST[] = {
    "In which year did {} first deliver a State of the Union address?",
    "What year was the first State of the Union address by {}?",
    "Give the year of the earliest State of the Union address given by {}.",
    "When (which year) did {} give a State of the Union address for the first time?"};
static const char *const T_LAST[] = {
    "In which year did {} deliver their last State of the Union address?",
    "What year was the final State of the Union address by {}?",
    "Give the year of the latest State of the Union address given by {}.",
    "When (which year) did {} give a State of the Union address for the last time?"};
static const char *const T_COUNT[] = {
    "How many State of the Union addresses did {} deliver? Answer with a number.",
    "Count the State of the Union addresses given by {}.",
    "What is the number of State of the Union addresses by {} in the corpus?",
    "{} delivered how many State of the Union addresses?"};

orc_status orc_task_facts_default_path(char *buf, size_t cap, orc_error *err) {
    char dir[4096];
    orc_status st = orc_corpus_default_cache(dir, sizeof dir, err);
    if (st != ORC_OK) return st;
    if ((size_t)snprintf(buf, cap, "%s/sotu.jsonl", dir) >= cap)
        return orc_error_set(err, ORC_EINVAL, "tasks: the SOTU path under %s is too long", dir);
    return ORC_OK;
}

void orc_task_facts_free(orc_task_facts *f) {
    if (!f) return;
    free(f->years);
    free(f->askable);
    free(f->people);
    free(f);
}

static orc_status add_record(orc_task_facts *f, int year, const char *name, const char *party, int *cap_y,
                             int *cap_p, const char *path, int line, orc_error *err) {
    if (strlen(name) >= 64 || strlen(party) >= 64 || !name[0])
        return orc_error_set(err, ORC_EFORMAT, "%s:%d: empty or overlong name or party", path, line);
    fact_year *y = NULL;
    for (int i = 0; i < f->n_years; i++)
        if (f->years[i].year == year) y = &f->years[i];
    if (y) {
        if (strcmp(y->name, name) != 0 || strcmp(y->party, party) != 0) y->ambiguous = 1;
    } else {
        if (f->n_years == *cap_y) {
            *cap_y = *cap_y ? *cap_y * 2 : 64;
            fact_year *n = realloc(f->years, (size_t)*cap_y * sizeof *n);
            if (!n) return orc_error_set(err, ORC_ENOMEM, "tasks: out of memory reading %s", path);
            f->years = n;
        }
        y = &f->years[f->n_years++];
        memset(y, 0, sizeof *y);
        y->year = year;
        snprintf(y->name, sizeof y->name, "%s", name);
        snprintf(y->party, sizeof y->party, "%s", party);
    }
    fact_person *p = NULL;
    for (int i = 0; i < f->n_people; i++)
        if (strcmp(f->people[i].name, name) == 0) p = &f->people[i];
    if (!p) {
        if (f->n_people == *cap_p) {
            *cap_p = *cap_p ? *cap_p * 2 : 32;
            fact_person *n = realloc(f->people, (size_t)*cap_p * sizeof *n);
            if (!n) return orc_error_set(err, ORC_ENOMEM, "tasks: out of memory reading %s", path);
            f->people = n;
        }
        p = &f->people[f->n_people++];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->first = p->last = year;
        p->count = 0;
    }
    if (year < p->first) p->first = year;
    if (year > p->last) p->last = year;
    p->count++;
    return ORC_OK;
}

orc_task_facts *orc_task_facts_load(const char *path, orc_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) {
        orc_error_set(err, ORC_EIO,
                      "tasks: cannot open the State of the Union corpus %s (%s); run `orchard data fetch` first "
                      "or pass --corpus FILE",
                      path, strerror(errno));
        return NULL;
    }
    orc_task_facts *f = calloc(1, sizeof *f);
    char *line = NULL;
    size_t lcap = 0;
    int cap_y = 0, cap_p = 0, lineno = 0;
    orc_status st = f ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "tasks: out of memory reading %s", path);
    while (st == ORC_OK && getline(&line, &lcap, fp) > 0) {
        lineno++;
        if (line[0] == '\n') continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        json_t *y = json_object_get(j, "year"), *n = json_object_get(j, "name"), *p = json_object_get(j, "party");
        if (!json_is_integer(y) || !json_is_string(n) || !json_is_string(p))
            st = orc_error_set(err, ORC_EFORMAT, "%s:%d: expected an object with integer \"year\" and string "
                                                 "\"name\" and \"party\"", path, lineno);
        else
            st = add_record(f, (int)json_integer_value(y), json_string_value(n), json_string_value(p), &cap_y,
                            &cap_p, path, lineno, err);
        json_decref(j);
    }
    free(line);
    fclose(fp);
    if (st == ORC_OK && f->n_years == 0) st = orc_error_set(err, ORC_EFORMAT, "%s: no addresses", path);
    if (st == ORC_OK) {
        f->askable = malloc((size_t)f->n_years * sizeof *f->askable);
        if (!f->askable) st = orc_error_set(err, ORC_ENOMEM, "tasks: out of memory reading %s", path);
        for (int i = 0; st == ORC_OK && i < f->n_years; i++)
            if (!f->years[i].ambiguous && strcmp(f->years[i].party, "none") != 0 && f->years[i].party[0])
                f->askable[f->n_askable++] = i;
        if (st == ORC_OK && f->n_askable == 0)
            st = orc_error_set(err, ORC_EFORMAT, "%s: no year with a single president and a party", path);
    }
    if (st != ORC_OK) {
        orc_task_facts_free(f);
        return NULL;
    }
    return f;
}

orc_status task_gen_facts(task_rng *r, const orc_task_facts *f, task_draft *d, orc_error *err) {
    if (!f)
        return orc_error_set(err, ORC_EINVAL,
                             "tasks: the facts domain needs the SOTU corpus (run `orchard data fetch`)");
    int diff = d->difficulty;
    if (diff <= 2) {
        const fact_year *y = &f->years[f->askable[trng_below(r, (uint32_t)f->n_askable)]];
        snprintf(d->slot, sizeof d->slot, "%d", y->year);
        snprintf(d->kind, sizeof d->kind, "%s", diff == 1 ? "president_of_year" : "party_of_year");
        sb_printf(&d->answer, "%s", diff == 1 ? y->name : y->party);
        sb_printf(&d->solution, "The %d address was given by %s (%s).\n#### %s", y->year, y->name, y->party,
                  d->answer.s ? d->answer.s : "");
        d->templates = diff == 1 ? T_WHO : T_PARTY;
        d->n_templates = diff == 1 ? N_OF(T_WHO) : N_OF(T_PARTY);
    } else {
        const fact_person *p = &f->people[trng_below(r, (uint32_t)f->n_people)];
        snprintf(d->slot, sizeof d->slot, "%s", p->name);
        static const char *const KINDS[] = {"first_year", "last_year", "address_count"};
        snprintf(d->kind, sizeof d->kind, "%s", KINDS[diff - 3]);
        int v = diff == 3 ? p->first : diff == 4 ? p->last : p->count;
        sb_printf(&d->answer, "%d", v);
        sb_printf(&d->solution, "%s gave %d addresses, from %d to %d.\n#### %d", p->name, p->count, p->first,
                  p->last, v);
        d->templates = diff == 3 ? T_FIRST : diff == 4 ? T_LAST : T_COUNT;
        d->n_templates = 4;
    }
    sb_printf(&d->input, "%s", "");
    sb_printf(&d->key, "facts|%s|%s", d->kind, d->slot);
    return ORC_OK;
}
