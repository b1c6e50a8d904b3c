"""``reply.create{instructions}`` for the intent engine: instructions are guidance for one reply, not a script to
read out. Pure.

:func:`rephrase` turns instructions addressed to the agent into words for the caller: "Tell the caller their table
is ready" → "Your table is ready."; "Ask the caller to hold" → "Could you please hold?"; "Apologise for the wait" →
"Sorry for the wait." It returns ``None`` for style guidance ("Be brief", "Greet the caller warmly") and for
requests it has no pattern for; the engine then matches the instructions against the intents (a "greet" reaches the
greeting) or says its default line. docs/how-to/local-agent.md#reply-instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Rephrased", "intent_probe", "rephrase", "second_person"]

_WHO = r"(?:the\s+)?(?:caller|user|customer|client|guest|person|them|him|her)"
_PLEASE = r"(?:please\s+)?(?:now\s+)?"
_SWAPS = (
    (r"\bthe (?:caller|user|customer|client|guest)'s\b", "your"),
    (r"\bthe (?:caller|user|customer|client|guest)\b", "you"),
    (r"\btheir\b", "your"),
    (r"\btheirs\b", "yours"),
    (r"\bthey're\b", "you're"),
    (r"\bthey've\b", "you've"),
    (r"\bthey'll\b", "you'll"),
    (r"\bthey'd\b", "you'd"),
    (r"\bthey\b", "you"),
    (r"\bthemselves\b", "yourself"),
    (r"\bthem\b", "you"),
    (r"\byou is\b", "you are"),
    (r"\byou was\b", "you were"),
    (r"\byou has\b", "you have"),
    (r"\byou does\b", "you do"),
)
#: Verbs that start style guidance (how to reply), not something to say.
_GUIDANCE = {
    "be", "keep", "use", "speak", "respond", "reply", "answer", "avoid", "don't", "do", "never", "always", "stay",
    "sound", "make", "try", "act", "talk", "continue", "greet", "offer", "help", "confirm", "mention", "explain",
    "describe", "summarise", "summarize", "end", "close", "wrap", "introduce", "treat", "handle", "consider",
}  # fmt: skip
_QUESTION_STARTS = (
    ("you would like ", "Would you like "),
    ("you'd like ", "Would you like "),
    ("you want ", "Do you want "),
    ("you need ", "Do you need "),
    ("you have ", "Do you have "),
    ("you are ", "Are you "),
    ("you're ", "Are you "),
    ("you can ", "Can you "),
    ("you will ", "Will you "),
    ("you'll ", "Will you "),
    ("you prefer ", "Do you prefer "),
)


_VERBS = {"is", "are", "was", "were", "has", "have", "had", "will", "can", "be", "been", "could", "would", "should"}


@dataclass(frozen=True, slots=True)
class Rephrased:
    text: str
    #: The text is the *topic* of a "tell the caller …" ("our opening hours": a few words, no verb), which an
    #: intent's reply may say better than the words themselves.
    topic: bool = False


def second_person(text: str) -> str:
    """Words about the caller ("their order", "the caller's table") turned to words to them ("your order")."""
    out = text
    for pattern, repl in _SWAPS:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    return out


def _sentence(text: str, end: str = ".") -> str:
    t = text.strip().strip("\"'“”").strip()
    t = t.rstrip(".!?;, ")
    if not t:
        return ""
    return t[0].upper() + t[1:] + end


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'“])")


def rephrase(instructions: str) -> Rephrased | None:
    """What to say for ``instructions``, sentence by sentence (guidance sentences dropped), or ``None`` when they
    are all guidance the engine must interpret."""
    sentences = [s for s in _SENTENCE.split(" ".join(instructions.split()).strip()) if s]
    said = [r for r in (_rephrase_one(s) for s in sentences) if r is not None]
    if not said:
        return None
    if len(said) == 1:
        return said[0]
    return Rephrased(" ".join(r.text for r in said if r.text))


def _rephrase_one(text: str) -> Rephrased | None:
    flags = re.IGNORECASE
    m = re.match(rf"^{_PLEASE}(?:say|read out)\s*(?::|that\s+)?\s*(.+)$", text, flags)
    if m:
        return Rephrased(_sentence(second_person(m.group(1))))
    m = re.match(
        rf"^{_PLEASE}(?:tell|inform|remind|notify|let)\s+{_WHO}(?:\s+know)?\s*(?:that\s+|:\s*)?(.+)$", text, flags
    )
    if m and m.group(1)[:1] in (",", ";") or m and m.group(1).lower().startswith("and "):
        return None  # "Tell the caller, and offer to help": guidance, not a message
    if m:
        content = second_person(m.group(1))
        words = re.findall(r"[a-z']+", content.lower())
        topic = len(words) <= 5 and not any(w in _VERBS or w.endswith("'s") and w != "what's" for w in words)
        return Rephrased(_sentence(content), topic=topic)
    m = re.match(rf"^{_PLEASE}ask\s+{_WHO}\s+(?:whether|if)\s+(.+)$", text, flags)
    if m:
        clause = second_person(m.group(1)).strip().rstrip(".?! ")
        for start, question in _QUESTION_STARTS:
            if clause.lower().startswith(start):
                return Rephrased(_sentence(question + clause[len(start) :], "?"))
        return Rephrased(_sentence(f"Could you tell me whether {clause}", "?"))
    m = re.match(rf"^{_PLEASE}ask\s+{_WHO}\s+to\s+(.+)$", text, flags)
    if m:
        return Rephrased(_sentence(f"Could you please {second_person(m.group(1))}", "?"))
    m = re.match(rf"^{_PLEASE}ask\s+{_WHO}\s+(?:for|about)\s+(.+)$", text, flags)
    if m:
        thing = second_person(m.group(1)).strip().rstrip(".?! ")
        if not thing.lower().startswith(("your ", "a ", "an ", "the ")):
            thing = "your " + thing
        return Rephrased(_sentence(f"Could I have {thing}", "?"))
    m = re.match(rf"^{_PLEASE}ask\s+{_WHO}\s+((?:what|when|where|which|how|who|why)\b.+)$", text, flags)
    if m:
        return Rephrased(_sentence(f"Can I ask {second_person(m.group(1)).rstrip('.?! ')}", "?"))
    m = re.match(rf"^{_PLEASE}apologi[sz]e(?:\s+to\s+{_WHO})?(?:\s+(?:for|about)\s+(.+))?$", text, flags)
    if m:
        what = m.group(1)
        return Rephrased(_sentence(f"Sorry for {second_person(what)}" if what else "Sorry about that"))
    m = re.match(rf"^{_PLEASE}thank\s+{_WHO}(?:\s+for\s+(.+))?$", text, flags)
    if m:
        what = m.group(1)
        return Rephrased(_sentence(f"Thank you for {second_person(what)}" if what else "Thank you"))
    words = [w.lower().strip(",.:;") for w in text.split()]
    first = next((w for w in words if w not in ("please", "now", "then")), "")
    if first in _GUIDANCE:
        return None
    # Not addressed to the agent: a status to pass on ("The order has shipped.").
    return Rephrased(_sentence(second_person(text), "?" if text.rstrip().endswith("?") else "."))


def intent_probe(instructions: str) -> str:
    """What of ``instructions`` to match against the intents: without the words naming the caller and the
    adverbs ("Greet the caller warmly" → "Greet")."""
    words = [w for w in re.sub(rf"\b{_WHO}\b", " ", instructions, flags=re.IGNORECASE).split()]
    kept = [w for w in words if not w.lower().strip(",.!").endswith("ly") or len(w) <= 4]
    return " ".join(kept) or instructions
