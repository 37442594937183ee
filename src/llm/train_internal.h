/* Shared between the recipe parser (train_recipe.c) and the training loop
 * (train.c): recipes to and from jansson objects. Not a public interface. */
#ifndef ORCHARD_TRAIN_INTERNAL_H
#define ORCHARD_TRAIN_INTERNAL_H

#include <jansson.h>

#include "orchard/train.h"

/* Parse a recipe object. label names the source in messages; relative paths
 * resolve against base_dir. */
orc_status orc_train_recipe_from_json(json_t *root, const char *label, const char *base_dir, orc_train_recipe *r,
                                      orc_error *err);
/* The effective recipe as a JSON object (absolute paths, the model config
 * spelled out), for trainer_state.json. NULL when out of memory. */
json_t *orc_train_recipe_to_json(const orc_train_recipe *r);
/* A config object with the keys orc_llm_config_from_json reads. */
json_t *orc_train_config_to_json(const orc_llm_config *c);

#endif
