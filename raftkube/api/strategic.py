"""Strategic merge patch: Kubernetes' merge patch that knows how each list merges.

A JSON merge patch replaces lists whole, so patching one container's image means
sending every container. Kubernetes' API types say, per list, how a patch merges into
it (`patchStrategy:"merge"` and `patchMergeKey` in its Go types): containers merge by
`name`, a container's ports by `containerPort`, its env by `name`, volumes by `name`,
finalizers as a set of strings... Lists without a strategy (args, tolerations) are
replaced, as in a merge patch; maps merge and `null` deletes, as in a merge patch.

Directives, as Kubernetes reads them:
- `$patch: replace` in a map replaces the map with the rest of the patch; in a merge
  list (an item `{"$patch": "replace"}`), the list becomes the patch's other items.
- `$patch: delete` in a map deletes it; in a merge list's item, the item with that key.
- `$deleteFromPrimitiveList/FIELD: [values]` removes values from a list of strings.
- `$retainKeys: [keys]` keeps only those keys of the map (after merging).
- `$setElementOrder/FIELD` orders a list for kubectl's three-way apply; the merged list
  keeps the order of the object and the patch (new items last), so it is read and set
  aside rather than refused.
Anything else starting with `$` is refused, naming it. Malformed patches are refused
with the path of the field at fault; nothing is applied unless all of it is.
"""

from __future__ import annotations

import bisect
import copy
from typing import Any

from raftkube.api.jsonpatch import Malformed

PRIMITIVE = ""  # a merge list of strings (metadata.finalizers): a set union

_CONTAINER = {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath",
              "volumeDevices": "devicePath", "resizePolicy": "resourceName"}
_POD_SPEC = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
             "volumes": "name", "imagePullSecrets": "name", "hostAliases": "ip",
             "topologySpreadConstraints": "topologyKey", "resourceClaims": "name"}
_META = {"finalizers": PRIMITIVE, "ownerReferences": "uid"}
WORKLOADS = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job",
             "ReplicationController")


def _pod_spec(prefix: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    out = {prefix + (k,): v for k, v in _POD_SPEC.items()}
    for lst in ("containers", "initContainers", "ephemeralContainers"):
        out.update({prefix + (lst, "[]", k): v for k, v in _CONTAINER.items()})
    return out


def strategies(kind: str) -> dict[tuple[str, ...], str]:
    """Every merge list of a kind: its path (`[]` for a list's items) and merge key."""
    out: dict[tuple[str, ...], str] = {("metadata", k): v for k, v in _META.items()}
    out[("status", "conditions")] = "type"
    if kind == "Pod":
        out.update(_pod_spec(("spec",)))
    elif kind in WORKLOADS:
        out.update(_pod_spec(("spec", "template", "spec")))
        out.update({("spec", "template", "metadata", k): v for k, v in _META.items()})
    elif kind == "CronJob":
        out.update(_pod_spec(("spec", "jobTemplate", "spec", "template", "spec")))
    elif kind == "Service":
        out[("spec", "ports")] = "port"
    elif kind == "Node":
        out[("status", "addresses")] = "type"
    return out


def apply(doc: Any, patch: Any, kind: str) -> Any:
    """`patch` applied strategically to a copy of `doc` (an object of `kind`)."""
    if not isinstance(patch, dict):
        raise Malformed("a strategic merge patch must be a JSON object, got "
                        f"{type(patch).__name__}")
    base = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    result = _merge_map(base, patch, (), strategies(kind))
    if result is _DELETED:
        raise Malformed('$patch: "delete" at the top would delete the whole object')
    return result


_DELETED = object()


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[]", "[]") or "the patch"


def _merge_map(base: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...],
               rules: dict[tuple[str, ...], str]) -> Any:
    directive = patch.get("$patch")
    if directive is not None:
        if directive == "delete":
            return _DELETED
        if directive == "replace":
            return _strip(patch, path)
        if directive != "merge":
            raise Malformed(f'{_where(path + ("$patch",))}: Unsupported value: '
                            f'{directive!r}: supported values: "replace", "delete", "merge"')
    retain = patch.get("$retainKeys")
    if retain is not None and (not isinstance(retain, list)
                               or not all(isinstance(k, str) for k in retain)):
        raise Malformed(f"{_where(path + ('$retainKeys',))}: must be a list of strings")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            if not isinstance(value, list):
                raise Malformed(f"{_where(path + (key,))}: must be a list")
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise Malformed(f"{_where(path + (key,))}: must be a list")
            current = base.get(field)
            if isinstance(current, list):
                gone = _Members(value)
                base[field] = [v for v in current if v not in gone]
            continue
        if key.startswith("$"):
            raise Malformed(f"{_where(path + (key,))}: unknown patch directive")
        here = path + (key,)
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(base[key] if isinstance(base.get(key), dict) else {},
                                value, here, rules)
            if merged is _DELETED:
                base.pop(key, None)
            else:
                base[key] = merged
        elif isinstance(value, list):
            if here in rules:
                base[key] = _merge_list(base.get(key), value, here, rules)
            else:
                base[key] = [_strip(v, here + ("[]",)) for v in value]
        else:
            base[key] = value
    if retain is not None:
        for key in [k for k in base if k not in retain]:
            del base[key]
    return base


class _Members:
    """Membership in a list of JSON values in about constant time: a set of its hashable
    values (what the lists of strings hold), a scan of the few others."""

    def __init__(self, values: list[Any]) -> None:
        self.hashable: set[Any] = set()
        self.others: list[Any] = []
        for v in values:
            self.add(v)

    def add(self, v: Any) -> None:
        if isinstance(v, dict | list):
            self.others.append(v)
        else:
            self.hashable.add(v)

    def __contains__(self, v: Any) -> bool:
        if isinstance(v, dict | list):
            return v in self.others
        return v in self.hashable


_GONE = object()  # a slot of a merge list whose item was deleted


def _merge_list(base: Any, patch: list[Any], path: tuple[str, ...],
                rules: dict[tuple[str, ...], str]) -> list[Any]:
    """`patch` merged into the list `base`: linear in the two lists (not their product),
    so that a patch of tens of thousands of owner references or finalizers costs what
    reading it does. Items are found by their merge key's value through an index (value
    -> the positions of the items that have it, in order); a value that cannot be a dict
    key (an object or a list, which no real merge key is) is found by a scan."""
    key = rules[path]
    current = copy.deepcopy(base) if isinstance(base, list) else []
    items = path + ("[]",)
    if key == PRIMITIVE:
        present = _Members(current)
        for v in patch:
            if isinstance(v, dict | list):
                raise Malformed(f"{_where(path)}: a list of strings merges only strings")
            if v not in present:
                current.append(v)
                present.add(v)
        return current
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v, items) for v in patch
                if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    slots: list[Any] = current
    index: dict[Any, list[int]] = {}  # merge key value -> positions in slots, ascending
    for j, old in enumerate(slots):
        if isinstance(old, dict) and not isinstance(old.get(key), dict | list):
            index.setdefault(old.get(key), []).append(j)

    def positions(value: Any) -> list[int]:
        if isinstance(value, dict | list):  # unhashable: a scan
            return [j for j, old in enumerate(slots)
                    if isinstance(old, dict) and old.get(key) == value]
        return index.get(value, [])

    def forget(value: Any, j: int) -> None:
        if not isinstance(value, dict | list):
            index[value].remove(j)  # j is the first position: cheap

    for i, item in enumerate(patch):
        if not isinstance(item, dict):
            raise Malformed(f"{_where(path)}[{i}]: must be an object (this list merges "
                            f"by {key})")
        if key not in item:
            raise Malformed(f"{_where(path)}[{i}].{key}: Required value: this list merges "
                            f"by {key}")
        value = item[key]
        found = positions(value)
        if item.get("$patch") == "delete":
            for j in found:
                slots[j] = _GONE
            if not isinstance(value, dict | list):
                index.pop(value, None)
            continue
        if not found:
            slots.append(_strip(item, items))
            if not isinstance(value, dict | list):
                index.setdefault(value, []).append(len(slots) - 1)
            continue
        j = found[0]
        merged = _merge_map(slots[j], item, items, rules)
        forget(value, j)
        if merged is _DELETED:
            slots[j] = _GONE
            continue
        slots[j] = merged
        new_value = merged.get(key)
        if not isinstance(new_value, dict | list):
            # The merge may have changed the key itself; the item stays where it is.
            bisect.insort(index.setdefault(new_value, []), j)
    return [v for v in slots if v is not _GONE]


def _strip(value: Any, path: tuple[str, ...]) -> Any:
    """A value to store as it is: its directives checked and removed."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "$patch" or k.startswith("$setElementOrder/") or k == "$retainKeys":
                continue
            if k.startswith("$"):
                if k.startswith("$deleteFromPrimitiveList/"):
                    continue
                raise Malformed(f"{_where(path + (k,))}: unknown patch directive")
            out[k] = _strip(v, path + (k,))
        return out
    if isinstance(value, list):
        return [_strip(v, path + ("[]",)) for v in value]
    return value
