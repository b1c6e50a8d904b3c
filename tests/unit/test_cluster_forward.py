"""The internal forward credential (gateway/cluster/forward.py): only a forward signed with the shared secret, for
this replica, for exactly this request, inside the window and never seen before, passes."""

from __future__ import annotations

import pytest

from gateway.cluster.forward import ForwardVerifier, forward_key, sign_forward
from gateway.errors import ForwardRefused

KEY = forward_key(b"shared-secret")
NOW = 1_800_000_000.0
PATH = "/internal/v1/calls/CA1/hangup"


def signed(**over: object) -> str:
    args: dict[str, object] = {
        "target": "replica-b",
        "method": "POST",
        "path": PATH,
        "body": b"{}",
        "now": NOW,
        "nonce": "n0nce-0001",
    }
    args.update(over)
    key = args.pop("key", KEY)
    return sign_forward(key, **args)  # type: ignore[arg-type]


def verify(
    v: ForwardVerifier,
    header: str | None,
    *,
    now: float = NOW,
    path: str = PATH,
    body: bytes = b"{}",
    method: str = "POST",
) -> None:
    v.verify(header, method=method, path=path, body=body, now=now)


def test_a_genuine_forward_passes_once_and_its_replay_is_refused():
    v = ForwardVerifier(KEY, "replica-b", window_s=30)
    verify(v, signed())
    with pytest.raises(ForwardRefused, match="replayed"):
        verify(v, signed(), now=NOW + 1)
    verify(v, signed(nonce="n0nce-0002"), now=NOW + 1)  # a new forward with a fresh nonce


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "malformed"),
        ("", "malformed"),
        ("v2 1800000000 n0nce-0001 00", "malformed"),
        ("v1 notanumber n0nce-0001 00", "malformed"),
        ("v1 1800000000 short 00", "malformed"),
        ("v1 1800000000 n0nce-0001", "malformed"),
        (signed(key=forward_key(b"another-secret")), "bad forward credential"),
        (signed(target="replica-a"), "bad forward credential"),  # meant for another replica
        (signed(path="/internal/v1/calls/CA2/hangup"), "bad forward credential"),  # another call
        (signed(body=b'{"to": "+15550009999"}'), "bad forward credential"),  # another body
        (signed(method="GET"), "bad forward credential"),
        (signed(now=NOW - 31), "window"),
        (signed(now=NOW + 31), "window"),
    ],
)
def test_forged_tampered_or_stale_forwards_are_refused(header, why):
    v = ForwardVerifier(KEY, "replica-b", window_s=30)
    with pytest.raises(ForwardRefused, match=why):
        verify(v, header)


def test_the_forward_key_is_not_the_token_secret():
    assert forward_key(b"shared-secret") != b"shared-secret" and len(KEY) == 32
    assert forward_key(b"shared-secret") != forward_key(b"shared-secret2")


def test_nonces_are_forgotten_only_once_their_forward_could_no_longer_pass():
    v = ForwardVerifier(KEY, "replica-b", window_s=30)
    verify(v, signed())
    verify(v, signed(nonce="n0nce-0002", now=NOW + 59), now=NOW + 59)
    assert v.remembers("n0nce-0001")  # still inside 2 × window
    verify(v, signed(nonce="n0nce-0003", now=NOW + 61), now=NOW + 61)
    assert not v.remembers("n0nce-0001")  # its timestamp is outside the window now anyway
    with pytest.raises(ForwardRefused, match="window"):
        verify(v, signed(), now=NOW + 61)


def test_a_flood_of_forwards_is_bounded():
    v = ForwardVerifier(KEY, "replica-b", window_s=30, max_nonces=3)
    for i in range(3):
        verify(v, signed(nonce=f"n0nce-000{i}"))
    with pytest.raises(ForwardRefused, match="too many"):
        verify(v, signed(nonce="n0nce-0009"))
