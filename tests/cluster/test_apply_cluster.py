"""`rk apply` of manifests as the Kubernetes documentation writes them, against real
masters: every field round-trips, every master serves the same objects, an unchanged
re-apply writes nothing, a changed one removes what the manifest dropped, and a bad file
changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from raftkube.api import yamltext
from tests.cluster.harness import Cluster, rk
from tests.support import contains

pytestmark = pytest.mark.cluster

DOCS = Path(__file__).parent.parent / "manifests" / "k8s-docs"


def configs(c: Cluster, tmp: Path) -> dict[str, Path]:
    """One client config per master, naming only that master."""
    out = {}
    for name in c.names:
        path = tmp / f"only-{name}.yaml"
        path.write_text(yaml.safe_dump({"servers": [c.url[name]], "token": c.token,
                                        "ca": c.ca}))
        out[name] = path
    return out


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DOCS.glob("*.yaml")):
        docs += [d for d in yamltext.load_all(path.read_text()) if d]
    return docs


def listed(config: Path, kinds: set[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every object of `kinds` in every namespace, as `rk get -A -o json` through the
    master(s) `config` names, by kind, namespace ("default" for a cluster-scoped one, as
    a document without one) and name."""
    got = rk(config, "get", ",".join(sorted(kinds)), "-A", "-o", "json")
    assert got.returncode == 0, got.stderr
    return {(o["kind"], o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
            for o in json.loads(got.stdout)["items"]}


async def revision(c: Cluster) -> int:
    st = await c.status(c.names[0])
    assert st is not None
    return int(st["header"]["revision"])


async def test_kubernetes_documentation_manifests_apply_unchanged(
        cluster: Cluster, tmp_path: Path) -> None:
    async with cluster as c:
        await c.leader()
        only = configs(c, tmp_path)
        everyone = Path(c.state_dir) / "config.yaml"
        docs = documents()

        # Applied once, through m2 alone: writes work through any master.
        out = rk(only["m2"], "apply", "-f", str(DOCS))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == len(docs) and all(ln.endswith(" created") for ln in lines), lines
        assert lines[0] == "namespace/monitoring created"  # namespaces go first

        # Every field written round-trips, and every master answers the same. One
        # `rk get` of every kind the documents have, per master: a CLI process each read
        # of each object through each master cost a second of start-up apiece.
        served = [listed(cfg, {doc["kind"] for doc in docs}) for cfg in only.values()]
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            key = (kind, doc["metadata"].get("namespace", "default"), name)
            answers = [objects.get(key) for objects in served]
            assert answers[0] is not None, f"{kind}/{name} is not served"
            assert answers[0] == answers[1] == answers[2], f"{kind}/{name} differs"
            live = answers[0]
            written = {k: v for k, v in doc.items() if k != "stringData"}
            assert contains(live, written) == [], f"{kind}/{name}"
            if kind == "Secret":  # stringData is folded into data, base64
                assert set(live["data"]) == set(doc["stringData"]) and "stringData" not in live
        svc = json.loads(rk(everyone, "get", "service", "nodeport-demo", "-o", "json").stdout)
        assert svc["spec"]["ports"][0]["nodePort"] == 30007  # a requested nodePort is kept
        assert svc["spec"]["clusterIP"].startswith("10.")

        # Re-applied unchanged: nothing is written, not one revision.
        before = await revision(c)
        again = rk(everyone, "apply", "-f", str(DOCS))
        assert again.returncode == 0, again.stderr
        assert all(ln.endswith(" unchanged") for ln in again.stdout.splitlines()), again.stdout
        assert await revision(c) == before

        # Changed: the new value lands, a dropped field goes, server-set fields stay.
        deployment = (DOCS / "nginx-deployment.yaml").read_text()
        changed = deployment.replace("replicas: 3", "replicas: 5").replace(
            "  labels:\n    app: nginx\nspec:", "spec:")
        out = rk(only["m3"], "apply", "-f", "-", stdin=changed)
        assert out.returncode == 0 and out.stdout == "deployment.apps/nginx-deployment configured\n"
        live = json.loads(rk(only["m1"], "get", "deploy", "nginx-deployment", "-o", "json").stdout)
        assert live["spec"]["replicas"] == 5
        assert "labels" not in live["metadata"]
        assert live["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%",
                                                             "maxUnavailable": "25%"}
        assert live["metadata"]["generation"] == 2


async def test_a_bad_file_changes_nothing_and_says_where(cluster: Cluster, tmp_path: Path) -> None:
    async with cluster as c:
        await c.leader()
        cfg = Path(c.state_dir) / "config.yaml"
        good = (DOCS / "game-demo.yaml").read_text()
        cases = {
            "malformed.yaml": (good + "---\nkind: ConfigMap\nmetadata: {name: [x\n",
                               "(document 2): yaml: line"),
            "unknown-kind.yaml": (good + "---\napiVersion: v1\nkind: Widget\nmetadata:\n"
                                  "  name: w\n", 'no matches for kind "Widget"'),
            "bad-name.yaml": (good.replace("name: game-demo", "name: Game_Demo"),
                              "metadata.name"),
            # The server refuses the second document: the first is not applied either.
            "negative.yaml": (good + "---\n" + (DOCS / "nginx-deployment.yaml").read_text()
                              .replace("replicas: 3", "replicas: -1"), "spec.replicas"),
            "wrong-type.yaml": (good + "---\n" + (DOCS / "nginx-deployment.yaml").read_text()
                                .replace("replicas: 3", "replicas: three"), "spec.replicas"),
            "typo.yaml": ((DOCS / "nginx-deployment.yaml").read_text().replace(
                "replicas: 3", "replcas: 3"), 'strict decoding error: unknown field '
                                              '"spec.replcas"'),
            "immutable.yaml": ((DOCS / "my-service.yaml").read_text().replace(
                "spec:", "spec:\n  clusterIP: 10.96.0.77"), "spec.clusterIP"),
        }
        made = rk(cfg, "apply", "-f", str(DOCS / "my-service.yaml"))
        assert made.returncode == 0, made.stderr
        before = await revision(c)
        for file, (text, words) in cases.items():
            path = tmp_path / file
            path.write_text(text)
            out = rk(cfg, "apply", "-f", str(path))
            assert out.returncode != 0, (file, out.stdout)
            assert words in out.stderr, (file, out.stderr)
            assert "created" not in out.stdout, (file, out.stdout)
        assert await revision(c) == before

        # As kubectl's --validate=warn: applied, and the unknown field named on stderr.
        out = rk(cfg, "apply", "--validate=warn", "-f", str(tmp_path / "typo.yaml"))
        assert out.returncode == 0, out.stderr
        assert out.stdout == "deployment.apps/nginx-deployment created\n"
        assert out.stderr == 'Warning: unknown field "spec.replcas"\n'


def applied_parts(listing: str) -> list[dict[str, Any]]:
    """What `rk apply` owns of each listed object (its spec or data, labels, the
    last-applied record, the generation) and its uid; not what controllers write (status,
    their annotations) nor the resourceVersion their writes move."""
    out = []
    for item in json.loads(listing)["items"]:
        meta = item["metadata"]
        owned = {k: v for k, v in item.items() if k not in ("status", "metadata")}
        owned["metadata"] = {
            "name": meta["name"], "uid": meta["uid"], "labels": meta.get("labels"),
            "generation": meta.get("generation"),
            "last-applied": (meta.get("annotations") or {}).get(
                "kubectl.kubernetes.io/last-applied-configuration")}
        out.append(owned)
    return out


async def test_the_readme_demo_and_a_dead_master(cluster: Cluster, tmp_path: Path) -> None:
    """What the README's demo shows, checked: examples/ applied once (created) and again
    (unchanged, not one revision), listed alike by every master; then, with the first
    configured master killed, rk moves on to the next for reads and writes."""
    examples = Path(__file__).parent.parent.parent / "examples"
    async with cluster as c:
        await c.leader()
        everyone = Path(c.state_dir) / "config.yaml"
        # The two examples the README's object tour uses (hello-web.yaml is the demo's).
        files = ["-f", str(examples / "jobs.yaml"), "-f", str(examples / "web.yaml")]
        first = rk(everyone, "apply", *files)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == ["job.batch/pi created",
                                             "configmap/web-config created",
                                             "deployment.apps/web created",
                                             "service/web created"]
        applied = applied_parts(rk(everyone, "get", "deployments,services,configmaps,jobs",
                                   "-o", "json").stdout)
        again = rk(everyone, "apply", *files)
        assert again.stdout.replace("unchanged", "created") == first.stdout
        # The controllers keep writing status (rollout, pods, the Job), so the store's
        # revision moves; what apply owns must not have: no spec or metadata write.
        assert applied_parts(rk(everyone, "get", "deployments,services,configmaps,jobs",
                                "-o", "json").stdout) == applied
        listed = {name: applied_parts(rk(cfg, "get", "deployments,services,configmaps,jobs",
                                         "-o", "json").stdout)
                  for name, cfg in configs(c, tmp_path).items()}
        assert all(v == applied for v in listed.values()), "the masters list different objects"
        names = rk(everyone, "get", "deployments,services,configmaps,jobs", "-o", "name")
        assert names.stdout.splitlines() == ["deployment.apps/web", "service/web",
                                             "configmap/web-config", "job.batch/pi"]

        servers = yaml.safe_load(everyone.read_text())["servers"]
        dead = next(n for n in c.names if c.url[n] == servers[0])
        c.kill(dead)
        got = rk(everyone, "get", "svc", "web", "-o", "name")
        assert (got.returncode, got.stdout) == (0, "service/web\n"), got.stderr
        gone = rk(everyone, "delete", "-f", str(examples / "jobs.yaml"))
        assert (gone.returncode, gone.stdout) == (0, 'job.batch "pi" deleted\n'), gone.stderr
        missing = rk(everyone, "get", "job", "pi")
        assert (missing.returncode, missing.stderr) == (
            1, 'Error from server (NotFound): jobs.batch "pi" not found\n')
