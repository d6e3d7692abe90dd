"""How deeply a document may nest, checked without recursion.

Nearly everything that later reads a document walks it recursively (validation, the
schema walk, merge patches, `json.dumps`), and Python stops a recursion about a thousand
frames down with a RecursionError. A document nested deeper than that would be a crash
somewhere far from where it came in, so every document from outside (an API body, a
manifest file) is measured once, where it is read, by a walk that keeps its own stack, and
refused with a message that says what was wrong. YAML documents are measured on their
node graph before they are built (see `yamltext`); JSON documents here, once parsed,
where the number of values they hold can be bounded in the same walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The deepest Kubernetes objects nest about a dozen levels (a Deployment's pod template's
# node affinity match expressions' values: 13). A hundred leaves room for any free-form
# field, and at the three or so frames per level that the recursive readers take, keeps
# them well under Python's recursion limit (1,000 frames) wherever they are called from.
MAX_DEPTH = 100


def depth(value: Any, *, limit: int = MAX_DEPTH) -> int:
    """How deeply `value`, a parsed JSON document, nests lists and dicts (a scalar is 0,
    `[]` is 1), counted up to `limit + 1`: a result over `limit` means "too deep", and the
    walk stops there."""
    return shape(value, max_depth=limit).depth


@dataclass(frozen=True)
class Shape:
    depth: int
    values: int  # every value, containers and scalars alike (keys are not values)


def shape(value: Any, *, max_depth: int = MAX_DEPTH, max_values: int | None = None) -> Shape:
    """How deep `value`, a parsed JSON document, nests and how many values it holds,
    counted until one of them is over its bound (then the walk stops). It goes level by
    level, so that most of the work is C's (one comprehension per level and
    list.extend), not one Python step per value."""
    deepest = values = 0
    level = [value]
    while True:
        values += len(level)
        if max_values is not None and values > max_values:
            return Shape(deepest, values)
        containers = [v for v in level if type(v) is list or type(v) is dict]
        if not containers:
            return Shape(deepest, values)
        deepest += 1
        if deepest > max_depth:
            return Shape(deepest, values)
        level = []
        for container in containers:
            level.extend(container.values() if type(container) is dict else container)
