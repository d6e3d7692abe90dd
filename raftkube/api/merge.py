"""JSON merge patches (RFC 7386) and kubectl's client-side three-way apply patch.

The server applies PATCH bodies with `merge_patch`; `rk apply` computes what to send with
`three_way_patch`, which compares the manifest the user applied last time (kept in the
`kubectl.kubernetes.io/last-applied-configuration` annotation), the manifest now, and the
live object. Both live here, as pure functions of plain JSON data, so that the client's idea
of a patch and the server's way of applying it are the same code and can be tested against
each other: applying the patch that `three_way_patch` returns is exactly what `rk apply`
does to the cluster.

Values are compared strictly (`True` is not `1`, `1` is not `1.0`), because JSON tells
them apart even though Python's `==` does not.
"""

from __future__ import annotations

import copy
from typing import Any

_MISSING = object()


def same(a: Any, b: Any) -> bool:
    """JSON equality: like `==`, but booleans, integers and floats never equal each other."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target`, as new data; neither input is changed.

    A patch that is not an object replaces the target; in an object, `null` removes a key
    and an object merges into the key's value recursively; lists are replaced whole.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(result: dict[Any, Any], patch: dict[Any, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(result.get(key), dict):
                result[key] = {}
            _merge_into(result[key], value)
        else:
            result[key] = copy.deepcopy(value)


def create_merge_patch(original: Any, modified: Any) -> dict[str, Any]:
    """The merge patch that turns `original` into `modified`; `{}` when they are equal.

    Both are objects (a non-object `original` counts as `{}`). A `null` inside `modified`
    cannot be expressed by a merge patch, which reads `null` as "remove"; such keys end up
    removed, as with any merge patch.
    """
    if not isinstance(modified, dict):
        raise TypeError("a merge patch can only produce an object, "
                        f"not {type(modified).__name__}")
    return _diff(original if isinstance(original, dict) else {}, modified)


def _diff(original: dict[str, Any], modified: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key in original:
        if key not in modified:
            patch[key] = None
    for key, new in modified.items():
        old = original.get(key, _MISSING)
        if old is not _MISSING and same(old, new):
            continue
        if isinstance(new, dict) and isinstance(old, dict):
            sub = _diff(old, new)
            if sub:
                patch[key] = sub
        else:
            patch[key] = copy.deepcopy(new)
    return patch


def three_way_patch(*, last_applied: dict[str, Any] | None, new: dict[str, Any],
                    live: dict[str, Any]) -> dict[str, Any]:
    """kubectl's client-side apply: the merge patch that makes `live` what `new` asks for.

    Every field of `new` whose value differs in `live` is set (maps recursively); every
    field that `last_applied` had and `new` lacks is removed. Fields that neither manifest
    mentions (status, server defaults, allocated node ports, controller-set values) are left
    alone. A list is replaced whole (merge patches cannot address list elements), and only
    when some element differs in a field that `new` or `last_applied` mentions; extra
    fields the server added to elements do not count. `{}` means applying changes nothing.
    """
    return _three_way(last_applied if isinstance(last_applied, dict) else {}, new,
                      live if isinstance(live, dict) else {})


def _three_way(last: dict[str, Any], new: dict[str, Any], live: dict[str, Any], *,
               in_list: bool = False) -> dict[str, Any]:
    """The patch at one level; `in_list` for maps inside lists, where `null` is a value.

    Inside a list element nothing is patched key by key (the list is replaced whole), so
    there a `null` in `new` is a value that `live` must already hold, not a removal.
    """
    patch: dict[str, Any] = {}
    for key, want in new.items():
        have = live.get(key, _MISSING)
        before = last.get(key)
        if want is None and not in_list:
            if have is not _MISSING:
                patch[key] = None
        elif isinstance(want, dict) and isinstance(have, dict):
            sub = _three_way(before if isinstance(before, dict) else {}, want, have,
                             in_list=in_list)
            if sub:
                patch[key] = sub
        elif isinstance(want, list) and isinstance(have, list):
            earlier = before if isinstance(before, list) else []
            merge_key = _merge_key(key, want, have, earlier)
            if merge_key:
                merged = _merge_keyed(earlier, want, have, merge_key)
                if not same(merged, have):
                    patch[key] = merged
            elif not _list_reflects(earlier, want, have):
                patch[key] = copy.deepcopy(want)
        elif have is _MISSING or not same(want, have):
            patch[key] = copy.deepcopy(want)
    for key in last:
        if key not in new and key in live:
            patch[key] = None
    return patch


# Lists that Kubernetes' strategic merge treats as maps, by the key of their elements:
# one applier's elements do not displace another's (`kubectl set env` adds an env var; a
# later apply of a manifest without it keeps it).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
              "volumes": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name",
              "ports": ("containerPort", "port")}


def _merge_key(field: str, *lists: list[Any]) -> str | None:
    """The key that identifies the elements of `field`'s lists, if every element has it."""
    choice = MERGE_KEYS.get(field)
    if choice is None:
        return None
    elements = [e for items in lists for e in items]
    for key in (choice,) if isinstance(choice, str) else choice:
        if all(isinstance(e, dict) and isinstance(e.get(key), str | int)
               and not isinstance(e.get(key), bool) for e in elements):
            keys = [[e[key] for e in items] for items in lists]
            if all(len(set(k)) == len(k) for k in keys):
                return key
    return None


def _merge_keyed(last: list[Any], new: list[Any], live: list[Any], key: str) -> list[Any]:
    """The list `live` becomes: `new`'s elements in `new`'s order, each merged into the live
    element with its key (fields the server or others added are kept), then the live
    elements that neither manifest mentions, in their order. Elements the last manifest
    had and this one dropped are gone."""
    live_by = {e[key]: e for e in live}
    mentioned = {e[key] for e in last} | {e[key] for e in new}
    last_by = {e[key]: e for e in last}
    out: list[Any] = []
    for want in new:
        have = live_by.get(want[key])
        if have is None:
            out.append(copy.deepcopy(want))
        else:
            out.append(merge_patch(have, _three_way(last_by.get(want[key], {}), want, have)))
    out += [copy.deepcopy(e) for e in live if e[key] not in mentioned]
    return out


def _list_reflects(last: list[Any], new: list[Any], live: list[Any]) -> bool:
    """Whether `live` already is `new`, element by element, up to fields nobody mentions."""
    if len(new) != len(live):
        return False
    for i, (want, have) in enumerate(zip(new, live, strict=True)):
        before = last[i] if i < len(last) else None
        if isinstance(want, dict) and isinstance(have, dict):
            if _three_way(before if isinstance(before, dict) else {}, want, have,
                          in_list=True):
                return False
        elif isinstance(want, list) and isinstance(have, list):
            if not _list_reflects(before if isinstance(before, list) else [], want, have):
                return False
        elif not same(want, have):
            return False
    return True
