"""`coe categories …`: categories and their ranked experts."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli.common import JsonOpt, command_group, done, listing, open_registry
from registry.views import category_dict


def build_categories_app() -> typer.Typer:
    return command_group(
        "Categories and their ranked experts.",
        {
            "add": categories_add,
            "list": categories_list,
            "remove": categories_remove,
            "map": categories_map,
            "unmap": categories_unmap,
        },
    )


def categories_add(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option("--description", help="What queries belong here.")] = "",
) -> None:
    """Add a category."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.add_category(s, name=name, description=description)
    done(f"added category {name}")


def categories_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List categories with their ranked experts."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        cats = repo.list_categories(s)
    listing(
        as_json,
        [category_dict(c) for c in cats],
        "categories",
        ["name", "experts (rank)", "description"],
        [[c.name, ", ".join(f"{n}#{r}" for n, r in c.experts), c.description] for c in cats],
    )


def categories_remove(ctx: typer.Context, name: str) -> None:
    """Remove a category (with its mappings and skill scores)."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.remove_category(s, name=name)
    done(f"removed category {name}")


def categories_map(
    ctx: typer.Context,
    category: str,
    expert: str,
    rank: Annotated[int, typer.Option("--rank", help="1 = first choice.")] = 1,
) -> None:
    """Map an expert to a category with a rank (mapping again changes the rank)."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.map_expert(s, category=category, expert=expert, rank=rank)
    done(f"mapped {expert} to {category} at rank {rank}")


def categories_unmap(ctx: typer.Context, category: str, expert: str) -> None:
    """Remove an expert from a category."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.unmap_expert(s, category=category, expert=expert)
    done(f"unmapped {expert} from {category}")
