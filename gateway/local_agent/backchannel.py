"""Is speech over a reply a real interruption or a back-channel? Pure: judged on its transcript alone.

The caller's words over a reply were held for judging by the turn detector (``judge_overlap``,
docs/architecture/local-agent.md#barge-in). They are short by then (long speech interrupts on its duration alone),
so what decides is whether they *ask* the agent to stop or answer something, not how much was said:

- an interruption has a cue word: "stop", "wait", "hold on", "sorry", "no", "actually", "excuse me", a question word
  ("what", "when", "how", …), "please" or "repeat"; or it opens like a question or request ("can you…", "is it…",
  "do you…"); or it has a question mark after two words or more;
- everything else is a back-channel: "uh-huh", "mm-hmm", "yeah", "okay", "right", "sure", "I see", "got it", and also
  whatever Whisper makes of a hum or a cough (it reads "mm-hmm" as "in my mom" or nothing at all), so a misheard
  acknowledgement never stops the agent.

A missed cue costs little: speech that goes on past ``backchannel_max_ms`` interrupts anyway.

:data:`JUDGE_PROMPT` is what Whisper is told came before the held speech: acknowledgements, so a clipped one-word
"Stop." on a phone line is read as "Stop." rather than "stuff." (measured, with the trade-off of the alternatives:
docs/architecture/local-agent.md#barge-in).
"""

from __future__ import annotations

import re

__all__ = ["INTERRUPT_CUES", "JUDGE_PROMPT", "QUESTION_OPENERS", "is_interruption"]

#: Words that, anywhere in the held speech, make it an interruption.
INTERRUPT_CUES = frozenset(
    """
    stop wait hold hang sorry pardon excuse no nope nah actually but hey hello listen
    what when where which who whom whose why how
    please repeat cancel enough quiet shut
    """.split()
    # How Whisper misreads a short "stop" and "wait" on a phone line, even primed (measured: bench/barge_in.py).
    + ["start", "stuff", "wake"]
)
#: Words that make it an interruption as its first word ("can you…", "is there…"); not elsewhere ("that is great").
QUESTION_OPENERS = frozenset("can could would will should shall may might do does did is are i'd".split())
#: The preceding text Whisper gets for the held speech (its ``prompt``). Acknowledgements only: a prompt that also
#: held the cue words ("Stop. Wait. …") made Whisper hear them in hums ("Uh-huh." as "Stop.", "Got it." as "Stop it.").
JUDGE_PROMPT = "Uh-huh. Mm-hmm. Okay. Yeah. Right."
_WORD = re.compile(r"[a-z']+")


def is_interruption(text: str) -> bool:
    """Whether the transcript ``text`` of speech over a reply asks the agent to stop (see the module docstring)."""
    words = _WORD.findall(text.lower().replace("’", "'"))
    if any(w in INTERRUPT_CUES for w in words) or (len(words) >= 2 and words[0] in QUESTION_OPENERS):
        return True
    # "Right?" or "Okay?" alone is still an acknowledgement; a longer question is not.
    return "?" in text and len(words) >= 2
