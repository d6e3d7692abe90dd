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
