"""Telephony gateway for voice agents: carrier media streams in, Voice Agent API sessions out."""

import os as _os

# A media server runs many calls on few cores. numpy's BLAS would start one thread per core for each matrix product
# (the local agent's MiniLM embedding) and fight the event loop and the speech models for those cores: measured on
# 2 busy cores, a 256-token embedding took 1.3 s instead of 0.1 s. One BLAS thread per process; set the variable
# yourself to override. Must happen before numpy is first imported, hence here.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
