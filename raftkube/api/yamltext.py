"""Manifest YAML as Kubernetes reads it, shared by `rk` and the API server.

Timestamps stay strings (`date: 2024-05-01` is text to kubectl, and JSON cannot carry a
datetime), a key given twice in one mapping is an error, and a parse error reads like the
apiserver's: `yaml: line L, column C: ...`.

A document is bounded before it is built, because YAML can say much more than it spells
out. Aliases (`*a`) and merge keys (`<<: *a`) repeat an anchored node wherever they
appear: nine aliases of nine aliases, eight levels deep, is 0.5 KB of text that stands
for 43 million values (the "billion laughs"; Kubernetes' CVE-2019-11253). The parsed
Python value shares those nodes, so it is small; whoever expands it (`json.dumps`, a
validator's walk) is not. So every document is composed into its node graph first, with
its nesting depth and (for the API server) its node count bounded as it is composed, and
then measured: how many bytes of JSON it would be with every alias expanded, memoized
over the graph so that the measure costs one step per node, not per expansion. A
document over the bound, one whose aliases refer to themselves, or one with a tag that
has no JSON value (`!!binary`, `!!set`, `!!timestamp`...) is refused with the line and
column of the node that crossed the line, before any Python value is built.

Aliases are bounded rather than refused: anchors and merge keys are ordinary in
hand-written manifests (`rk apply` reads them through this module), and a bound on what
they expand to lets every ordinary use through while a bomb costs microseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from raftkube.api import nesting

# What one document may expand to, by default (`rk`'s own files): far more than any
# manifest (the API server takes 3 MiB per object, and a `kind: List` of objects that big
# still fits), and still only about a second of `json.dumps` when it is all real.
MAX_EXPANDED_BYTES = 64 * 1024 * 1024
# An integer scalar longer than this is not a number anyone means (int64 needs 20
# characters; with `_` separators or as 0b... more), and a long base-60 one (`1:0:0:...`)
# costs PyYAML quadratic time to convert.
MAX_INT_CHARS = 100

_TAG = "tag:yaml.org,2002:"
# The tags whose values JSON can carry; "merge" and "value" are the `<<` and `=` keys.
_JSON_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "str", "seq", "map",
                                 "merge", "value")}

YAMLError = yaml.YAMLError


class TooComplex(yaml.MarkedYAMLError):
    """A document over one of the bounds; `problem` says which, at the node's mark."""

    def __init__(self, problem: str, node_or_mark: yaml.Node | yaml.Mark | None) -> None:
        mark = node_or_mark.start_mark if isinstance(node_or_mark, yaml.Node) else node_or_mark
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    # Set per loader by `load_all`.
    max_depth = nesting.MAX_DEPTH
    max_nodes: int | None = None
    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """PyYAML's composer recurses once per level: the depth is bounded here, before
        Python's own limit is reached, and so is the work of composing."""
        self._nodes += 1
        if self.max_nodes is not None and self._nodes > self.max_nodes:
            raise TooComplex(f"the document has more than {self.max_nodes} nodes",
                             self._next_mark())
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise TooComplex(f"the document nests deeper than {self.max_depth} levels",
                                 self._next_mark())
            node = super().compose_node(parent, index)
            assert node is not None  # a node event was next: check_node said so
            return node
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803
        """Flow nesting (`[[[...`) is bounded as it is scanned: PyYAML's scanner keeps a
        possible simple key per open flow level and rereads them all for every token,
        so a thousand open brackets cost it seconds before the composer sees any."""
        if self.flow_level >= self.max_depth:
            raise TooComplex(f"the document nests deeper than {self.max_depth} levels",
                             self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _next_mark(self) -> yaml.Mark:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: yaml.Mark = event.start_mark
        return mark

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

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise TooComplex(f"an integer of more than {MAX_INT_CHARS} characters", node)
        value: int = super().construct_yaml_int(node)
        return value


_Loader.add_constructor(_TAG + "int", _Loader.construct_yaml_int)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_all(text: str, *, max_expanded: int = MAX_EXPANDED_BYTES,
             max_depth: int = nesting.MAX_DEPTH,
             max_nodes: int | None = None) -> Iterator[Any]:
    """The documents of a multi-document YAML text, one at a time; raises YAMLError
    (TooComplex for a document over a bound). `max_expanded` bounds the JSON bytes a
    document stands for with its aliases expanded, `max_depth` its nesting, and
    `max_nodes` the nodes composed from the whole text (None: no bound)."""
    loader = _Loader(text)
    loader.max_depth = max_depth
    loader.max_nodes = max_nodes
    try:
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node said there is a document
            measure(node, max_expanded=max_expanded, max_depth=max_depth)
            yield loader.construct_document(node)
    except RecursionError:  # not expected past the depth bound; never a crash if it is
        raise TooComplex(f"the document nests deeper than {max_depth} levels",
                         None) from None
    finally:
        loader.dispose()


def measure(root: yaml.Node, *, max_expanded: int, max_depth: int) -> None:
    """Refuse a composed document that, with its aliases expanded, would be more than
    `max_expanded` bytes of JSON or nest deeper than `max_depth`, refers to itself, or has
    a tag JSON cannot carry. Each distinct node is sized once (an alias is the node it
    names, so a DAG of n nodes costs n steps however much it expands), without recursion.
    The sizes are compact JSON's, near enough: a scalar its text and quotes, a
    collection its brackets, commas and colons."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root to where the walk is
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if not finished and key in size:
            continue  # met again through another alias: sized already
        if node.tag not in _JSON_TAGS:
            raise TooComplex(f"the tag {node.tag} has no JSON value", node)
        if isinstance(node, yaml.ScalarNode):
            size[key], depth[key] = len(node.value) + 2, 0
            continue
        children: list[yaml.Node] = (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
            else list(node.value))
        if not finished:
            if key in open_nodes:
                raise TooComplex("an alias refers to a node that contains it", node)
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        open_nodes.discard(key)
        size[key] = 1 + sum(size[id(c)] + 1 for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[key] > max_expanded:
            raise TooComplex(f"the document stands for more than {max_expanded} bytes of "
                             "JSON once its aliases are expanded", node)
        if depth[key] > max_depth:
            raise TooComplex(f"its aliases nest the document deeper than {max_depth} levels",
                             node)


def problem(e: yaml.YAMLError) -> str:
    """A parse error as one line, with the line and column where it was found."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        text = f"yaml: line {mark.line + 1}, column {mark.column + 1}: {e.problem}"
        if e.context:
            text += f" ({e.context})"
        return text
    if isinstance(e, yaml.MarkedYAMLError):
        return f"yaml: {e.problem}"
    return f"yaml: {e}"
