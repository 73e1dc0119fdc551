"""One connection on its way through a batched refresh (``batch``, ``batch_write``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..exceptions import OAuthConnectError
from ..models import Connection, ConnectionEvent
from ..providers.base import OAuthClient, Provider, TokenSet
from .store import Refreshed


@dataclass
class BatchRow:
    """One claimed connection on its way through the batch."""

    current: Connection
    provider: Provider
    # As claimed: when the row was last written, and its failure count.
    claimed_updated_at: datetime | None = None
    failures_before: int = 0
    oauth_client: OAuthClient | None = None
    asked: bool = False
    answer: TokenSet | OAuthConnectError | None = None
    # Settled: new tokens to write (with a failure, when only part of an answer was usable) ...
    refreshed: Refreshed | None = None
    # ... or a failure mark, with its event.
    mark: tuple[str, str] | None = None
    failure: OAuthConnectError | None = None
    events: list[tuple[ConnectionEvent, dict[str, Any]]] = field(default_factory=list)

    @property
    def may_have_new_tokens(self) -> bool:
        """Whether the provider may have issued tokens (spending the refresh token we hold):
        it answered with some, or it was asked and its answer never came back to us."""
        return isinstance(self.answer, TokenSet) or (self.asked and self.answer is None)

    def signal_kwargs(self) -> dict[str, Any]:
        return {} if self.failure is None else {"error": self.failure}
