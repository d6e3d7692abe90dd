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
                base[field] = [v for v in current if v not in value]
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


def _merge_list(base: Any, patch: list[Any], path: tuple[str, ...],
                rules: dict[tuple[str, ...], str]) -> list[Any]:
    key = rules[path]
    current = copy.deepcopy(base) if isinstance(base, list) else []
    items = path + ("[]",)
    if key == PRIMITIVE:
        for v in patch:
            if isinstance(v, dict | list):
                raise Malformed(f"{_where(path)}: a list of strings merges only strings")
            if v not in current:
                current.append(v)
        return current
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v, items) for v in patch
                if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    for i, item in enumerate(patch):
        if not isinstance(item, dict):
            raise Malformed(f"{_where(path)}[{i}]: must be an object (this list merges "
                            f"by {key})")
        if key not in item:
            raise Malformed(f"{_where(path)}[{i}].{key}: Required value: this list merges "
                            f"by {key}")
        found = next((j for j, old in enumerate(current)
                      if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            current = [old for old in current
                       if not (isinstance(old, dict) and old.get(key) == item[key])]
            continue
        if found is None:
            current.append(_strip(item, items))
        else:
            merged = _merge_map(current[found], item, items, rules)
            if merged is _DELETED:
                del current[found]
            else:
                current[found] = merged
    return current


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
