"""Pure audio helpers: G.711 codecs, streaming resamplers and fixed-size framing. No I/O, no clock."""
