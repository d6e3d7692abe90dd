"""Manifest YAML as Kubernetes reads it, shared by `rk` and the API server.

Timestamps stay strings (`date: 2024-05-01` is text to kubectl, and JSON cannot carry a
datetime), a key given twice in one mapping is an error, and a parse error reads like the
apiserver's: `yaml: line L, column C: ...`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """A key given twice is an error, as it is for kubectl, not "the last one wins".
        Checked once per mapping, before `<<` merges rewrite it: merged keys may be
        overridden, as YAML means them to be."""
        checked: set[int] = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            seen: dict[tuple[str, str], yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                first = seen.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'mapping key "{key_node.value}" already defined at line '
                        f"{first.start_mark.line + 1}", key_node.start_mark)
        super().flatten_mapping(node)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

YAMLError = yaml.YAMLError


def load_all(text: str) -> Iterator[Any]:
    """The documents of a multi-document YAML text, one at a time; raises YAMLError."""
    yield from yaml.load_all(text, Loader=_Loader)


def problem(e: yaml.YAMLError) -> str:
    """A parse error as one line, with the line and column where it was found."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        text = f"yaml: line {mark.line + 1}, column {mark.column + 1}: {e.problem}"
        if e.context:
            text += f" ({e.context})"
        return text
    return f"yaml: {e}"
