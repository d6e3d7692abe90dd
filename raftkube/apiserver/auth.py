"""Who a request comes from: one authentication for every path of both APIs.

A request carries `Authorization: Bearer TOKEN`. The admin token makes it the admin; a
node token (`--node-token-file`, lines of `token,node-name`) makes it the agent of that
node, `system:node:NAME`. Tokens are compared in constant time. The API server's
middleware authenticates every request but `/healthz` here, once, and stores the user on
the request; what each user may do is decided where the request is served (the store's
API and metrics are the admin's; REST authorizes per verb and object).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class User:
    name: str
    node: str = ""  # set for node agents

    @property
    def admin(self) -> bool:
        return not self.node


ADMIN = User("admin")
USER = web.RequestKey("user", User)


@dataclass(frozen=True)
class Tokens:
    admin: str
    nodes: dict[str, str] = field(default_factory=dict)  # token -> node name

    def user(self, authorization: str) -> User | None:
        """The user an Authorization header's bearer token stands for; None for none."""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token.strip():
            return None
        supplied = token.strip().encode()
        if hmac.compare_digest(supplied, self.admin.encode()):
            return ADMIN
        for known, node in self.nodes.items():
            if hmac.compare_digest(supplied, known.encode()):
                return User(f"system:node:{node}", node=node)
        return None
