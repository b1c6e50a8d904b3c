// AudioWorklet of the softphone: microphone samples (at the AudioContext's rate, usually 48 kHz) in, 20 ms frames
// of 8 kHz G.711 μ-law (160 bytes, what Twilio sends in each `media` message) out, posted to the main thread.
//
// Resampling: a windowed-sinc low-pass at 3.6 kHz (below the 4 kHz Nyquist of the phone rate) on the input,
// then linear interpolation at the 8 kHz output instants. Kept streaming: the filter history and the fractional
// read position carry over between the 128-sample render quanta, so frame boundaries do not click.
// μ-law: ITU-T G.711 as in Sun's g711.c, bit-identical to Python's audioop.lin2ulaw (the browser test checks
// all 65536 inputs).

const OUT_RATE = 8000;
const FRAME_BYTES = 160;

function designLowPass(inRate, cutoffHz, taps) {
  const h = new Float32Array(taps);
  const fc = cutoffHz / inRate;
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * blackman;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum; // unity gain at DC
  return h;
}

const SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

function linearToMulaw(pcm) {
  // pcm: integer in [-32768, 32767]. The classic Sun g711.c linear2ulaw on 14-bit magnitude, as audioop does it.
  let v = pcm >> 2;
  let mask = 0xff;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  if (v > 8159) v = 8159;
  v += 0x84 >> 2;
  let seg = 0;
  while (seg < 8 && v > SEG_END[seg]) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask;
}

class MulawEncoder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.filter = sampleRate > OUT_RATE ? designLowPass(sampleRate, 3600, 63) : null;
    this.history = new Float32Array(this.filter ? this.filter.length : 1);
    this.histPos = 0;
    this.n = 0; // index of the next input sample
    this.prev = 0; // filtered input sample n-1
    this.t = 0; // next output instant, in input-sample units
    this.frame = new Uint8Array(FRAME_BYTES);
    this.fill = 0;
    this.muted = false;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "mute") this.muted = !!event.data.value;
    };
  }

  lowPass(x) {
    if (!this.filter) return x;
    const h = this.filter;
    const len = h.length;
    this.history[this.histPos] = x;
    let acc = 0;
    let j = this.histPos;
    for (let i = 0; i < len; i++) {
      acc += h[i] * this.history[j];
      j = j === 0 ? len - 1 : j - 1;
    }
    this.histPos = this.histPos === len - 1 ? 0 : this.histPos + 1;
    return acc;
  }

  emit(value) {
    const s = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
    this.frame[this.fill++] = linearToMulaw(this.muted ? 0 : s);
    if (this.fill === FRAME_BYTES) {
      const frame = this.frame;
      this.port.postMessage(frame.buffer, [frame.buffer]);
      this.frame = new Uint8Array(FRAME_BYTES);
      this.fill = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      const y = this.lowPass(x / channels);
      // Output instants t in (n-1, n]: interpolate between the previous and this filtered sample.
      while (this.t <= this.n) {
        const frac = this.t - (this.n - 1);
        this.emit(this.prev + (y - this.prev) * frac);
        this.t += this.step;
      }
      this.prev = y;
      this.n += 1;
    }
    // Keep the counters small (no precision loss on long calls).
    if (this.n > 1e6) {
      this.n -= 1e6;
      this.t -= 1e6;
    }
    return true;
  }
}

registerProcessor("mulaw-encoder", MulawEncoder);
