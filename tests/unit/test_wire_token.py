"""A received Raft message's Fernet token is opened with one decode and one HMAC check."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from raftkube.store import wire

pytestmark = pytest.mark.unit


def test_a_token_opens_to_its_timestamp_and_plaintext() -> None:
    f = Fernet(Fernet.generate_key())
    token = f.encrypt_at_time(b"entries", 1234)
    assert wire._open_token(f, token) == (1234, b"entries")
    assert wire._open_token(f, token) == (f.extract_timestamp(token), f.decrypt(token))


@pytest.mark.parametrize("spoil", [
    lambda t: t[:-4] + (b"AAAA" if t[-4:] != b"AAAA" else b"BBBB"),  # the HMAC
    lambda t: t[:20] + (b"A" if t[20:21] != b"A" else b"B") + t[21:],  # the timestamp/iv
    lambda t: b"not a token",
])
def test_a_changed_or_foreign_token_is_refused(spoil: object) -> None:
    f = Fernet(Fernet.generate_key())
    token = f.encrypt_at_time(b"entries", 1234)
    with pytest.raises(InvalidToken):
        wire._open_token(f, spoil(token))  # type: ignore[operator]
    other = Fernet(Fernet.generate_key())
    with pytest.raises(InvalidToken):
        wire._open_token(other, token)


class _ReturnsOtherwise(Fernet):
    def _decrypt_data(self, data: bytes, timestamp: int, time_info: object) -> bytes:
        return b"changed"


class _TakesOtherwise(Fernet):
    @staticmethod
    def _get_unverified_token_data(token: bytes) -> bytes:  # type: ignore[override]
        return token


class _Gone(Fernet):
    _get_unverified_token_data = None  # type: ignore[assignment]


@pytest.mark.parametrize("changed", [_ReturnsOtherwise, _TakesOtherwise, _Gone],
                         ids=["returns otherwise", "takes otherwise", "gone"])
def test_a_cryptography_whose_private_calls_changed_gets_the_public_ones(
        monkeypatch: pytest.MonkeyPatch, changed: type[Fernet]) -> None:
    assert wire._private_calls_work(changed) is False
    monkeypatch.setattr(wire, "PRIVATE_CALLS", False)
    f = Fernet(Fernet.generate_key())
    assert wire._open_token(f, f.encrypt_at_time(b"entries", 1234)) == (1234, b"entries")


def test_this_cryptography_has_the_private_calls() -> None:
    assert wire.PRIVATE_CALLS  # what the measured saving needs: say so if it goes
