"""A machine provider for the cluster tests, plugged in as any outside provider is:
through the entry point group `raftkube.cloud_providers` (the test writes a
`*.dist-info/entry_points.txt` naming `testfile = tests.cluster.cloudplugin:FileProvider`
and puts it on the masters' PYTHONPATH).

Its machines are the entries of a JSON file that the test rewrites (`RK_TEST_CLOUD_FILE`):
`{"machines": [{"name": "n1", "zone": "z1", "instance_type": "t1"}, ...]}`; a machine
taken out of the file is gone. Load balancers are served by the agents, as `local`'s.
"""

from __future__ import annotations

import json
import os
from typing import Any

from raftkube.cloud import nodelb
from raftkube.cloud import provider as pv

Obj = dict[str, Any]


class FileProvider:
    name = "testfile"

    def __init__(self) -> None:
        self.path = os.environ.get("RK_TEST_CLOUD_FILE", "")
        if not self.path:
            raise pv.ProviderError("RK_TEST_CLOUD_FILE names no file")

    def _read(self) -> list[Obj]:
        try:
            with open(self.path) as f:
                return list(json.load(f)["machines"])
        except (OSError, ValueError, KeyError) as e:
            raise pv.ProviderError(f"{self.path}: {e}") from None

    async def machines(self, view: pv.View) -> list[pv.Machine]:
        return [pv.Machine(name=m["name"], provider_id=f"file://{m['name']}",
                           instance_type=m.get("instance_type", ""), zone=m.get("zone", ""))
                for m in self._read()]

    async def exists(self, node: Obj, view: pv.View) -> bool:
        return any(m["name"] == node["metadata"]["name"] for m in self._read())

    async def ensure_load_balancer(self, service: Obj, view: pv.View) -> list[str]:
        return nodelb.addresses(service, view)

    async def delete_load_balancer(self, service: Obj, view: pv.View) -> None:
        return None
