"""Protobuf request bodies, as kubectl 1.32's typed `create` sends them: read into the
JSON object they stand for, and refused (415, saying why) when they cannot be read
faithfully. The bodies here are what kubectl 1.32 sent for `create configmap cm2
--from-literal=a=b --save-config` and `create deployment d2 --image=x --replicas=0`."""

from __future__ import annotations

import json

import pytest

from raftkube.apiserver import protobuf
from tests.unit.conftest import Served
from tests.unit.test_rest import call, ok
from tests.unit.test_rest_lifecycle import CMS, DEPLOY

pytestmark = pytest.mark.unit

CONFIGMAP = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d617012c0010ab5010a03636d3212001a0022002a0032003800"
    "4200629f010a306b75626563746c2e6b756265726e657465732e696f2f6c6173742d6170706c6965642d63"
    "6f6e66696775726174696f6e126b7b226b696e64223a22436f6e6669674d6170222c226170695665727369"
    "6f6e223a227631222c226d65746164617461223a7b226e616d65223a22636d32222c226372656174696f6e"
    "54696d657374616d70223a6e756c6c7d2c2264617461223a7b2261223a2262227d7d0a12060a0161120162"
    "1a002200")
DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e74129f010a1d0a02643212001a0022002a00"
    "3200380042005a090a036170701202643212700800120b0a090a03617070120264321a570a1b0a0012001a"
    "0022002a003200380042005a090a03617070120264321238121a0a01781201782a0042006a007200800100"
    "880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a002800"
    "38001a0c0800100018002000280038001a002200")
PROTOBUF = {"Content-Type": "application/vnd.kubernetes.protobuf"}


def test_kubectls_configmap_reads_as_its_json() -> None:
    cm = protobuf.decode(CONFIGMAP)
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "cm2" and cm["data"] == {"a": "b"}
    applied = cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert json.loads(applied)["data"] == {"a": "b"}
    assert "namespace" not in cm["metadata"]  # Go's empty fields are left out, as in JSON


def test_kubectls_deployment_keeps_a_zero_pointer_and_drops_empty_fields() -> None:
    dep = protobuf.decode(DEPLOYMENT)
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "d2"}}
    assert dep["spec"]["template"]["spec"]["containers"] == [{"name": "x", "image": "x"}]
    assert "status" not in dep and "strategy" not in dep["spec"]


@pytest.mark.parametrize(("body", "words"), [
    (b"{}", "magic"),
    (CONFIGMAP[:40], "past the end"),
    # The envelope's kind changed to Pod: not read here.
    (CONFIGMAP.replace(b"\x0a\x0f\x0a\x02v1\x12\x09ConfigMap",
                       b"\x0a\x09\x0a\x02v1\x12\x03Pod"), "not v1 Pod"),
    # An unknown field with a value in ObjectMeta (field 30, "x"): refused, not dropped.
    (CONFIGMAP.replace(b"\x0a\x03cm2", b"\x0a\x03cm2\xf2\x01\x01x").replace(
        b"\x12\xc0\x01\x0a\xb5\x01", b"\x12\xc4\x01\x0a\xb9\x01"), "field 30 of ObjectMeta"),
    # 200,000 empty fields: refused at the bound, before they are all walked.
    (b"k8s\x00" + b"\x1a\x00" * 200_000, "more than 100000 fields"),
])
def test_what_cannot_be_read_faithfully_is_refused(body: bytes, words: str) -> None:
    with pytest.raises(protobuf.Unsupported) as e:
        protobuf.decode(body)
    assert words in str(e.value)


async def test_the_api_creates_from_protobuf_and_refuses_other_types(served: Served) -> None:
    made = await ok(served, "POST", CMS, raw=CONFIGMAP, headers=PROTOBUF)
    assert made["data"] == {"a": "b"} and made["metadata"]["uid"]
    dep = await ok(served, "POST", DEPLOY, raw=DEPLOYMENT, headers=PROTOBUF)
    assert dep["spec"]["replicas"] == 0
    status, body = await call(served, "POST", CMS, raw=b"a=b",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in body["message"]
    status, body = await call(served, "POST", CMS, raw=b"junk", headers=PROTOBUF)
    assert status == 415 and "magic" in body["message"]


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2); payloads here are under 128 bytes."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _configmap(message: bytes) -> bytes:
    """The envelope of a v1 ConfigMap whose own message is `message`."""
    return b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"ConfigMap")) + _ld(2, message)


NAMED = _ld(1, _ld(1, b"cm"))  # metadata.name: cm


@pytest.mark.parametrize(("message", "words"), [
    # metadata.name not UTF-8
    (_ld(1, _ld(1, b"\xff\xfe")), "field 1 of ObjectMeta (name) is not valid UTF-8"),
    # a data value, and a data key, not UTF-8
    (NAMED + _ld(2, _ld(1, b"k") + _ld(2, b"\xc3")), "field 2 of ConfigMap (data)"),
    (NAMED + _ld(2, _ld(1, b"\xc3") + _ld(2, b"v")), "a key of field 2 of ConfigMap"),
    # data (a map) sent as a varint
    (NAMED + bytes([2 << 3 | 0, 5]), "field 2 of ConfigMap (data) must be a map entry"),
    # immutable (a bool) sent length-delimited: not read as true
    (NAMED + _ld(4, b"\x01"), "field 4 of ConfigMap (immutable) must be a bool"),
    # binaryData (bytes) entry fine, but the metadata as a varint
    (bytes([1 << 3 | 0, 1]), "field 1 of ConfigMap (metadata) must be a message"),
    # creationTimestamp seconds past the year 9999, and before the year 1
    (_ld(1, _ld(1, b"cm") + _ld(8, b"\x08" + bytes.fromhex("ffffffffffffffff7f"))),
     "outside the years 1 to 9999"),
    (_ld(1, _ld(1, b"cm") + _ld(9, b"\x08" + bytes.fromhex("8080808080808080807f")[:9]
                                 + b"\x01")), "outside the years 1 to 9999"),
])
def test_a_malformed_body_is_refused_naming_the_field(message: bytes, words: str) -> None:
    with pytest.raises(protobuf.Malformed) as e:
        protobuf.decode(_configmap(message))
    assert words in str(e.value)


def test_a_wellformed_hand_built_body_reads() -> None:
    cm = protobuf.decode(_configmap(NAMED + _ld(2, _ld(1, b"k") + _ld(2, "é".encode()))
                                    + bytes([4 << 3 | 0, 1])))
    assert cm["metadata"] == {"name": "cm"} and cm["data"] == {"k": "é"}
    assert cm["immutable"] is True


async def test_the_api_answers_400_for_a_malformed_body(served: Served) -> None:
    status, body = await call(served, "POST", CMS, raw=_configmap(_ld(1, _ld(1, b"\xff"))),
                              headers=PROTOBUF)
    assert status == 400 and "field 1 of ObjectMeta (name)" in body["message"]
