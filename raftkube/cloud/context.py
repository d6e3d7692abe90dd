"""What the cloud loops share: the provider, the leader's client and caches, and one way
to call the provider.

The loops get the same term-stamped client, shared informers and event recorder as the
leader's other loops (controllers/manager.py builds them), but not its Context: `cloud`
imports only `api` and `client`. `call()` is how every provider call is made: bounded by
`Options.call_timeout`, and any exception the provider raises becomes a ProviderError
that names the provider and the call, so that the loops handle one kind of failure
(an Event on the object, a retry with back-off) and never let a provider's bug end the
leader's task group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from raftkube.api import kinds
from raftkube.client import events, rest, workqueue
from raftkube.client import informer as inf
from raftkube.cloud import provider as pv

T = TypeVar("T")


@dataclass
class Options:
    node_period: float = 5.0  # every Node is looked at again this often
    call_timeout: float = 60.0  # a provider call that takes longer has failed
    retry_base: float = 1.0  # back-off after a provider error: 1 s, doubling ...
    retry_cap: float = 300.0  # ... up to five minutes (Kubernetes' service controller)
    workers: int = 2


@dataclass
class Context:
    provider: pv.Provider
    client: rest.RestClient
    informers: inf.InformerFactory
    events: events.EventRecorder
    clock: Callable[[], float] = time.time
    options: Options = field(default_factory=Options)

    def queue(self, name: str) -> workqueue.WorkQueue:
        backoff = workqueue.Backoff(base=self.options.retry_base, cap=self.options.retry_cap)
        return workqueue.WorkQueue(name=name, backoff=backoff)

    def view(self) -> pv.View:
        return pv.View(nodes=self.informers.informer(kinds.NODE).cache.list(),
                       services=self.informers.informer(kinds.SERVICE).cache.list(),
                       slices=self.informers.informer(kinds.ENDPOINTSLICE).cache.list())

    async def call(self, what: str, made: Awaitable[T]) -> T:
        """The provider's answer to `made`, or a ProviderError saying what failed."""
        name = getattr(self.provider, "name", "?")
        try:
            async with asyncio.timeout(self.options.call_timeout):
                return await made
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise pv.ProviderError(f"cloud provider {name}: {what}: no answer in "
                                   f"{self.options.call_timeout:.0f}s") from None
        except pv.Unavailable as e:
            raise pv.Unavailable(f"cloud provider {name}: {what}: {e}") from None
        except pv.ProviderError as e:
            raise pv.ProviderError(f"cloud provider {name}: {what}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a provider's bug is its error, not ours
            raise pv.ProviderError(f"cloud provider {name}: {what}: "
                                   f"{type(e).__name__}: {e}") from e


def informers_needed(ctx: Context) -> list[Any]:
    """The informers every cloud loop reads (registered before the factory runs)."""
    return [ctx.informers.informer(k) for k in (kinds.NODE, kinds.SERVICE,
                                                 kinds.ENDPOINTSLICE)]
