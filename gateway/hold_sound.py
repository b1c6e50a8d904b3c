"""The hold sound a profile plays while a slow tool runs (docs/how-to/conversation.md#hold-audio): the bundled
``gateway/assets/hold.ulaw`` (made by ``scripts/make_hold_sound.py``) or the profile's own WAV, checked at start-up
(:func:`gateway.profile_options.check_profiles`). Pure apart from reading each file once."""

from __future__ import annotations

import functools
from pathlib import Path

from .profile_options import ConversationProfile, hold_wav_ulaw, resolve

__all__ = ["BUNDLED_HOLD", "hold_sound", "hold_sound_for"]

BUNDLED_HOLD = Path(__file__).resolve().parent / "assets" / "hold.ulaw"


@functools.cache
def hold_sound(wav: Path | None) -> bytes:
    """8 kHz μ-law, whole 20 ms frames: the profile's WAV, or the bundled sound (None)."""
    return BUNDLED_HOLD.read_bytes() if wav is None else hold_wav_ulaw(wav)


def hold_sound_for(profile: ConversationProfile, config_dir: Path, *, warm_transfers: bool = False) -> bytes:
    """The call's hold sound; empty when the profile has hold audio off and offers no transfers (a warm transfer's
    caller always waits with it)."""
    hold = profile.hold_audio
    if not hold.enabled and not warm_transfers:
        return b""
    return hold_sound(resolve(config_dir, hold.wav) if hold.wav else None)
