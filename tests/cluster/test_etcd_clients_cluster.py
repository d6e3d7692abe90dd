"""etcd's gateway client `etcd3gw`, unchanged, against real masters with etcd's password
login: it probes `/version` (no credentials), the session logs in at
`/v3/auth/authenticate`, and the token (no `Bearer`) then opens `/v3` on that master."""

from __future__ import annotations

import os

import pytest
import requests
from etcd3gw.client import Etcd3Client

from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster


def verified(ca_file: str) -> requests.Session:
    session = requests.Session()
    session.verify = ca_file
    session.trust_env = False  # REQUESTS_CA_BUNDLE, where set, would win over verify
    return session


def client_for(url: str, ca_file: str, name: str, password: str) -> Etcd3Client:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    session = verified(ca_file)
    login = session.post(f"{url}/v3/auth/authenticate",
                         json={"name": name, "password": password}, timeout=10)
    login.raise_for_status()
    session.headers["Authorization"] = login.json()["token"]
    return Etcd3Client(host=host, port=int(port), protocol="https", timeout=10,
                       session=session)


def test_etcd3gw_logs_in_and_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    state = tmp_path_factory.mktemp("etcd-login")
    users = state / "etcd-users"
    users.write_text("root,s3cret\n")
    c = Cluster(str(state / "cluster"))
    try:
        c.up(master_args=["--etcd-users-file", str(users)])
        ca_file = os.path.join(c.state_dir, "pki", "ca.crt")
        clients = {name: client_for(url, ca_file, "root", "s3cret")
                   for name, url in c.url.items()}
        assert clients["m1"].put("/app/a", "1")
        assert clients["m2"].get("/app/a") == [b"1"]
        assert [v for v, _ in clients["m3"].get_prefix("/app/")] == [b"1"]
        lease = clients["m1"].lease(ttl=30)
        assert clients["m1"].put("/app/leased", "x", lease=lease)
        assert lease.ttl() > 0
        events, cancel = clients["m2"].watch_prefix("/app/")
        try:
            clients["m3"].put("/app/b", "2")
            event = next(iter(events))
            assert event["kv"]["key"] == b"/app/b" and event["kv"]["value"] == b"2"
        finally:
            cancel()
        # A wrong password is refused; without a token /v3 is closed.
        url = c.url["m1"]
        wrong = verified(ca_file).post(f"{url}/v3/auth/authenticate",
                                       json={"name": "root", "password": "nope"}, timeout=10)
        assert wrong.status_code == 400 and "authentication failed" in wrong.json()["message"]
        host, port = url.removeprefix("https://").rsplit(":", 1)
        anonymous = Etcd3Client(host=host, port=int(port), protocol="https", timeout=10,
                                session=verified(ca_file))
        with pytest.raises(Exception) as e:
            anonymous.get("/app/a")
        assert "401" in str(e.value) or "Unauthenticated" in str(e.value) \
            or "auth" in str(e.value).lower()
    finally:
        c.down()
