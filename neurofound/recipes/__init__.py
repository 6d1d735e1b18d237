"""Family recipes: config -> data, tokenizer, model and stages; evaluation, notes, fine-tuning, verbs.

    from neurofound.recipes import get_recipe
    recipe = get_recipe("neuroformer")       # the family's registered recipe, instantiated

One file per family; each registers through its model's `@register_family(recipe="...")`.
"""

from __future__ import annotations

from neurofound.recipes.base import DataBundle, EvalResult, Recipe, RunContext, Stage


def get_recipe(name: str) -> Recipe:
    """The recipe of family `name` (UnknownNameError lists the known families)."""
    from neurofound.models.registry import get_family

    return get_family(name).recipe_class()()


__all__ = ["DataBundle", "EvalResult", "Recipe", "RunContext", "Stage", "get_recipe"]
