"""`rk logs` and `rk exec` on `KIND/NAME`: the pod that stands for a workload or Service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from raftkube.api import kinds
from raftkube.cli import podio
from raftkube.client import errors

pytestmark = pytest.mark.unit
Obj = dict[str, Any]


def pod(name: str, labels: dict[str, str], *, node: str = "n1", phase: str = "Running",
        ready: bool = True, restarts: int = 0, created: str = "2026-01-01T00:00:00Z") -> Obj:
    return {"kind": "Pod", "metadata": {"name": name, "labels": labels,
                                        "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"restartCount": restarts}]}}


class FakeClient:
    def __init__(self, objects: dict[tuple[str, str], Obj], pods: list[Obj]) -> None:
        self.objects = objects
        self.pods = pods

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        try:
            return self.objects[(kind.kind, name)]
        except KeyError:
            raise errors.ApiError({"code": 404, "reason": "NotFound",
                                   "message": f'{kind.plural} "{name}" not found'}) from None

    async def list_all(self, kind: kinds.Kind, namespace: str | None = None,
                       **_: Any) -> tuple[list[Obj], str]:
        assert kind.kind == "Pod"
        return self.pods, "1"


WEB = {"app": "web"}
DEPLOY = {"kind": "Deployment", "metadata": {"name": "web"},
          "spec": {"selector": {"matchLabels": WEB}}}
SERVICE = {"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": WEB}}


async def test_a_plain_name_or_pod_slash_name_is_that_pod() -> None:
    client: Any = FakeClient({}, [])
    assert await podio.resolve_pod(client, "default", "web-1") == "web-1"
    assert await podio.resolve_pod(client, "default", "po/web-1") == "web-1"


async def test_a_workload_stands_for_its_readiest_pod(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    pods = [pod("pending", WEB, node="", phase="Pending", ready=False),
            pod("unready", WEB, ready=False),
            pod("young", WEB, created="2026-01-02T00:00:00Z"),
            pod("old", WEB),
            pod("other", {"app": "db"}, created="2025-01-01T00:00:00Z")]
    client: Any = FakeClient({("Deployment", "web"): DEPLOY, ("Service", "web"): SERVICE},
                             pods)
    assert await podio.resolve_pod(client, "default", "deploy/web") == "old"
    assert "Found 4 pods, using pod/old" in capsys.readouterr().err
    assert await podio.resolve_pod(client, "default", "svc/web") == "old"


async def test_what_cannot_stand_for_a_pod_is_named() -> None:
    client: Any = FakeClient({("Deployment", "web"): DEPLOY}, [pod("x", {"app": "db"})])
    with pytest.raises(errors.ClientError, match="no pods found for deployment.apps 'web'"):
        await podio.resolve_pod(client, "default", "deployment/web")
    with pytest.raises(errors.ClientError, match="configmap: it has no pods"):
        await podio.resolve_pod(client, "default", "cm/settings")
    with pytest.raises(errors.ApiError, match="not found"):
        await podio.resolve_pod(client, "default", "deploy/ghost")
    with pytest.raises(errors.ClientError, match="single resource and name"):
        await podio.resolve_pod(client, "default", "deploy/")
    with pytest.raises(errors.ClientError, match="doesn't have a resource type"):
        await podio.resolve_pod(client, "default", "widgets/x")


@pytest.mark.parametrize("args", [["logs", "web-1"], ["exec", "web-1", "--", "true"],
                                  ["top", "pods"]])
def test_a_missing_config_is_an_error_not_a_traceback(
        args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RK_CONFIG", str(tmp_path / "nope.yaml"))
    group = click.Group("rk")
    podio.register(group)
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"error: cannot read config {tmp_path}/nope.yaml")
