"""etcd's password login for the `/v3` gateway: `/v3/auth/authenticate`.

etcd's clients (etcd3gw, etcdctl's gateway mode) log in as etcd asks them to: POST
`{"name", "password"}` to `/v3/auth/authenticate`, get a `token`, and send it on every
later request as `Authorization: TOKEN`, without `Bearer`. The users come from a file
(`rk master --etcd-users-file`, lines of `name,password`); without one, login answers
etcd's "authentication is not enabled". A token is etcd's "simple" kind: random, known
only to the master that issued it (a client logs in again on another master, as with
etcd's members), and good for `TTL` seconds after its last use. It opens the `/v3` API
only, with the admin's rights there (etcd's root role); Kubernetes-style REST keeps
its bearer tokens.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TTL = 300.0  # etcd's default for simple tokens (--auth-token-ttl)
MAX_TOKENS = 10_000  # issued tokens kept; the oldest go first past this


class NotEnabled(Exception):
    pass


class Failed(Exception):
    pass


def read_users(text: str, source: str) -> dict[str, str]:
    """`name,password` per line; blank lines and # comments skipped; ValueError naming
    the line otherwise."""
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(",")
        if not sep or not name.strip() or not password:
            raise ValueError(f"--etcd-users-file: {source}:{n}: expected `name,password`")
        users[name.strip()] = password
    return users


@dataclass
class Sessions:
    users: dict[str, str]
    clock: Callable[[], float] = time.monotonic
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token: user, expiry

    @property
    def enabled(self) -> bool:
        """Whether logins are taken at all (users were given)."""
        return bool(self.users)

    def login(self, name: str, password: str) -> str:
        if not self.users:
            raise NotEnabled()
        known = self.users.get(name)
        # Compared even for an unknown name, so that timing tells nothing about names.
        ok = hmac.compare_digest(password.encode(), (known or "\0").encode())
        if known is None or not ok:
            raise Failed()
        self._expire()
        while len(self._tokens) >= MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        token = f"{secrets.token_urlsafe(12)}.{len(self._tokens) + 1}"
        self._tokens[token] = (name, self.clock() + TTL)
        return token

    def user(self, authorization: str) -> str | None:
        """The user a token stands for (its life extended), or None."""
        token = authorization.strip()
        if not token or " " in token:
            return None
        found = self._tokens.get(token)
        if found is None or found[1] < self.clock():
            self._tokens.pop(token, None)
            return None
        self._tokens[token] = (found[0], self.clock() + TTL)
        return found[0]

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, (_, expiry) in self._tokens.items() if expiry < now]:
            del self._tokens[token]
