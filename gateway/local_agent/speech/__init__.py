"""The embedded local agent's offline speech stack: VAD, speech-to-text, text-to-speech and intent matching.

All models ship inside pip wheels of the optional ``speech`` extra (Piper is GPL-3.0-or-later, hence optional);
nothing is downloaded at run time and torch is never imported. Importing this package loads no model and imports
no model runtime; :meth:`SpeechModels.load` does that once per process. Audio crossing this API is little-endian
mono PCM16 ``bytes``: 16 kHz into the VAD and STT, 24 kHz out of the TTS.
"""

from .assets import SpeechModelMissing
from .embed import SentenceEmbedder
from .intents import IntentMatcher
from .models import SpeechModels
from .stt import Transcriber
from .tts import Synthesizer, split_sentences
from .vad import SileroVadModel, VadStream

__all__ = [
    "IntentMatcher",
    "SentenceEmbedder",
    "SileroVadModel",
    "SpeechModelMissing",
    "SpeechModels",
    "Synthesizer",
    "Transcriber",
    "VadStream",
    "split_sentences",
]
