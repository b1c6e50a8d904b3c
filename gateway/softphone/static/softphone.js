// The softphone page: the browser plays Twilio's part of a Media Stream (docs/architecture/twilio-media-streams.md)
// against the gateway, so you can talk to the agent with no phone:
//   POST /softphone/dial → the gateway's own webhook TwiML → <Stream url> + <Parameter>s (the call token)
//   WebSocket /twilio/stream: connected, start{customParameters}, 20 ms μ-law media from the mic (worklet.js),
//   agent media played on a playhead in the AudioContext clock, marks echoed once the audio before them has
//   played, `clear` stops everything scheduled (and echoes the pending marks, as Twilio does), stop on hang-up
//   EventSource /softphone/events: the call's timeline (transcripts, latencies, barge-ins) for the panel.
// Tests read window.softphoneState.
"use strict";

const JITTER_S = 0.06; // playback starts this far ahead of "now" after an underrun: absorbs network jitter
const MARK_CHECK_MS = 20;

const state = (window.softphoneState = {
  status: "idle",
  error: null,
  callSid: null,
  streamSid: null,
  streamUrl: null,
  framesSent: 0,
  framesReceived: 0,
  receivedMs: 0,
  playedMs: 0,
  underruns: 0,
  marksReceived: 0,
  marksEchoed: 0,
  marksFlushed: 0,
  clears: 0,
  droppedByClearMs: 0,
  greeting: null,
  callerTranscripts: [],
  agentReplies: [],
  bargeIns: 0,
  latenciesMs: [],
  events: [],
  ended: null,
});

const $ = (id) => document.getElementById(id);

// ---- G.711 μ-law → float (the inverse of worklet.js's encoder; same table as audioop.ulaw2lin) ---------------
const ULAW = new Float32Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  ULAW[i] = ((u & 0x80 ? 0x84 - t : t - 0x84) / 32768);
}

function randomHex(bytes) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// ---- the panel ---------------------------------------------------------------------------------------------------
function setStatus(text, kind) {
  state.status = text;
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (kind || "");
}

function setButton(inCall) {
  const b = $("call");
  b.textContent = inCall ? "Hang up" : "Call";
  b.classList.toggle("hang", inCall);
}

let callStartedAt = 0;

/** After hang-up: a link to the call's recording (GET /calls/{call_sid}/recording asks for the operator key). */
function addRecordingLink(href, t) {
  addEvent("gateway", "recording: ", t);
  const a = document.createElement("a");
  a.id = "recording-link";
  a.href = href;
  a.target = "_blank";
  a.textContent = "two-channel WAV (caller left, agent right)";
  $("timeline").lastElementChild.querySelector(".text").append(a);
}

function addEvent(who, text, t) {
  const at = typeof t === "number" ? t : (performance.now() - callStartedAt) / 1000;
  state.events.push({ t: at, who, text });
  const li = document.createElement("li");
  li.className = who;
  const time = document.createElement("span");
  time.className = "t";
  time.textContent = at.toFixed(2) + " s";
  const w = document.createElement("span");
  w.className = "who";
  w.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(time, w, body);
  const list = $("timeline");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function renderStats() {
  const lat = state.latenciesMs;
  $("stats").textContent =
    `sent ${(state.framesSent * 0.02).toFixed(1)} s · heard ${(state.playedMs / 1000).toFixed(1)} s` +
    ` of ${(state.receivedMs / 1000).toFixed(1)} s · marks ${state.marksEchoed} · clears ${state.clears}` +
    (lat.length ? ` · last response ${Math.round(lat[lat.length - 1])} ms` : "");
}

// ---- microphones ---------------------------------------------------------------------------------------------------
async function listMicrophones() {
  const select = $("mic");
  const previous = select.value;
  const devices = await navigator.mediaDevices.enumerateDevices();
  select.replaceChildren();
  const inputs = devices.filter((d) => d.kind === "audioinput");
  for (const [i, d] of inputs.entries()) {
    const opt = document.createElement("option");
    opt.value = d.deviceId;
    opt.textContent = d.label || `microphone ${i + 1}`;
    select.append(opt);
  }
  if (previous && inputs.some((d) => d.deviceId === previous)) select.value = previous;
}

// ---- TwiML -------------------------------------------------------------------------------------------------------
function parseTwiml(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.querySelector("parsererror")) throw new Error("the webhook's TwiML is not XML");
  const stream = doc.querySelector("Response > Connect > Stream");
  if (!stream) {
    const said = Array.from(doc.querySelectorAll("Say"), (e) => e.textContent.trim()).join(" ");
    throw new Error("the gateway declined the call" + (said ? `: "${said}"` : ""));
  }
  const parameters = {};
  for (const p of stream.querySelectorAll("Parameter")) parameters[p.getAttribute("name")] = p.getAttribute("value");
  return { url: stream.getAttribute("url"), parameters };
}

function streamUrlFor(twimlUrl) {
  // The page was served by the gateway, so its origin is the gateway as this browser reaches it. If the TwiML
  // names another host (a public URL behind a tunnel), open the same path on this origin instead.
  const u = new URL(twimlUrl, location.href);
  if (u.host === location.host) return u.href;
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${u.pathname}`;
}

// ---- one call ------------------------------------------------------------------------------------------------------
let call = null;

class Call {
  constructor() {
    this.ctx = null;
    this.mic = null;
    this.source = null;
    this.encoder = null;
    this.ws = null;
    this.feed = null;
    this.seq = 0;
    this.chunk = 0;
    this.started = false;
    this.over = false;
    this.playhead = 0;
    this.scheduled = new Set(); // {src, end, ms}
    this.marks = []; // {name, at}: echo when ctx.currentTime >= at
    this.markTimer = null;
    this.out = null;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  nextSeq() {
    this.seq += 1;
    return String(this.seq);
  }

  async start() {
    callStartedAt = performance.now(); // re-based when the stream opens, to match the gateway's event times
    setStatus("starting the microphone…", "busy");
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.resume();
    const deviceId = $("mic").value;
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: {
        deviceId: deviceId ? { exact: deviceId } : undefined,
        echoCancellation: true,
        noiseSuppression: false,
        autoGainControl: true,
      },
    });
    await listMicrophones(); // labels are only visible once access is granted
    await this.ctx.audioWorklet.addModule("/softphone/worklet.js");
    this.out = this.ctx.createGain();
    this.out.connect(this.ctx.destination);
    this.source = this.ctx.createMediaStreamSource(this.mic);
    // No outputs: the worklet is pulled by the rendering thread on its own, with no path to the speakers.
    this.encoder = new AudioWorkletNode(this.ctx, "mulaw-encoder", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
    });
    this.encoder.port.onmessage = (event) => this.sendMedia(new Uint8Array(event.data));
    this.source.connect(this.encoder);

    setStatus("dialling…", "busy");
    const resp = await fetch("/softphone/dial", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ to: $("to").value.trim() }),
    });
    if (!resp.ok) throw new Error(`dial failed: HTTP ${resp.status} ${await resp.text()}`);
    const dial = await resp.json();
    const twiml = parseTwiml(dial.twiml);
    state.callSid = dial.call_sid;
    state.recording = dial.recording || null; // the call records API's link, when this profile records
    state.streamSid = "MZ" + randomHex(16);
    this.accountSid = dial.account_sid;
    this.openFeed(dial.call_sid);

    const url = streamUrlFor(twiml.url);
    state.streamUrl = url;
    setStatus("connecting…", "busy");
    this.ws = new WebSocket(url);
    this.ws.onopen = () => {
      // Times in the panel count from here, as the gateway's do (its call session starts with the stream).
      callStartedAt = performance.now();
      addEvent("phone", `dialled ${dial.call_sid}; stream open on ${url}`);
      // Twilio's first two messages (docs/architecture/twilio-media-streams.md#messages-in): connected (no streamSid),
      // then start with the <Parameter>s.
      this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
      this.send({
        event: "start",
        sequenceNumber: this.nextSeq(),
        start: {
          accountSid: this.accountSid,
          streamSid: state.streamSid,
          callSid: state.callSid,
          tracks: ["inbound"],
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
          customParameters: twiml.parameters,
        },
        streamSid: state.streamSid,
      });
      this.started = true;
      setStatus("in call", "live");
      setButton(true);
    };
    this.ws.onmessage = (event) => this.onMessage(event.data);
    this.ws.onclose = (event) => {
      if (!this.over) this.end(`the gateway hung up (code ${event.code})`, false);
    };
    this.markTimer = setInterval(() => this.checkMarks(), MARK_CHECK_MS);
  }

  sendMedia(frame) {
    if (!this.started || this.over) return;
    this.chunk += 1;
    this.send({
      event: "media",
      sequenceNumber: this.nextSeq(),
      media: {
        track: "inbound",
        chunk: String(this.chunk),
        timestamp: String((this.chunk - 1) * 20),
        payload: toBase64(frame),
      },
      streamSid: state.streamSid,
    });
    state.framesSent += 1;
    if (state.framesSent % 25 === 0) renderStats();
  }

  onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return this.protocolError("a message that is not JSON");
    }
    if (msg.streamSid !== state.streamSid) return this.protocolError(`${msg.event} with another streamSid`);
    if (msg.event === "media") this.play(fromBase64(msg.media.payload));
    else if (msg.event === "mark") this.queueMark(msg.mark.name);
    else if (msg.event === "clear") this.clear();
    else this.protocolError(`unknown event ${JSON.stringify(msg.event)}`);
  }

  protocolError(what) {
    state.error = `protocol error: ${what}`;
    addEvent("error", state.error);
    this.end(state.error, true);
  }

  // ---- playout: a playhead in the AudioContext clock ---------------------------------------------------------------
  play(bytes) {
    const ctx = this.ctx;
    const buffer = ctx.createBuffer(1, bytes.length, 8000);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < bytes.length; i++) data[i] = ULAW[bytes[i]];
    const now = ctx.currentTime;
    if (this.playhead < now + 0.005) {
      if (state.framesReceived > 0 && this.scheduled.size === 0) state.underruns += 1;
      this.playhead = now + JITTER_S;
    }
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.out);
    src.start(this.playhead);
    const item = { src, end: this.playhead + buffer.duration, ms: buffer.duration * 1000 };
    src.onended = () => {
      if (this.scheduled.delete(item)) state.playedMs += item.ms;
    };
    this.scheduled.add(item);
    this.playhead = item.end;
    state.framesReceived += 1;
    state.receivedMs += item.ms;
  }

  queueMark(name) {
    state.marksReceived += 1;
    // Echo once everything scheduled before it has played, at once if nothing is queued
    // (docs/architecture/twilio-media-streams.md#mark-echo).
    if (this.playhead <= this.ctx.currentTime) this.echoMark(name, false);
    else this.marks.push({ name, at: this.playhead });
  }

  checkMarks() {
    const now = this.ctx.currentTime;
    while (this.marks.length && this.marks[0].at <= now) this.echoMark(this.marks.shift().name, false);
  }

  echoMark(name, flushed) {
    this.send({ event: "mark", sequenceNumber: this.nextSeq(), streamSid: state.streamSid, mark: { name } });
    state.marksEchoed += 1;
    if (flushed) state.marksFlushed += 1;
  }

  clear() {
    // Drop everything not yet played and echo every pending mark
    // (docs/architecture/twilio-media-streams.md#marks-and-clear).
    const now = this.ctx.currentTime;
    let dropped = 0;
    for (const item of this.scheduled) {
      item.src.onended = null;
      dropped += Math.max(0, item.end - Math.max(now, item.end - item.ms / 1000)) * 1000;
      try {
        item.src.stop();
      } catch (e) {
        /* never started */
      }
      item.src.disconnect();
    }
    this.scheduled.clear();
    this.playhead = now;
    const pending = this.marks.splice(0);
    for (const m of pending) this.echoMark(m.name, true);
    state.clears += 1;
    state.droppedByClearMs += dropped;
    addEvent("phone", `clear: dropped ${Math.round(dropped)} ms of unplayed agent audio` +
      (pending.length ? `, echoed ${pending.length} pending mark(s)` : ""));
    renderStats();
  }

  // ---- event feed --------------------------------------------------------------------------------------------------
  openFeed(callSid) {
    this.feed = new EventSource(`/softphone/events?call_sid=${encodeURIComponent(callSid)}`);
    this.feed.onmessage = (event) => onFeedEvent(JSON.parse(event.data), this);
  }

  closeFeed() {
    if (this.feed) this.feed.close();
    this.feed = null;
  }

  // ---- the end -----------------------------------------------------------------------------------------------------
  end(reason, weHungUp) {
    if (this.over) return;
    this.over = true;
    if (weHungUp) {
      this.send({
        event: "stop",
        sequenceNumber: this.nextSeq(),
        stop: { accountSid: this.accountSid, callSid: state.callSid },
        streamSid: state.streamSid,
      });
    }
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    clearInterval(this.markTimer);
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    if (this.source) this.source.disconnect();
    if (this.encoder) this.encoder.port.onmessage = null;
    for (const item of this.scheduled) {
      item.src.onended = null;
      try {
        item.src.stop();
      } catch (e) {
        /* never started */
      }
    }
    this.scheduled.clear();
    if (this.ctx) this.ctx.close();
    addEvent("phone", reason);
    setStatus(reason, state.error ? "error" : "idle");
    setButton(false);
    renderStats();
    // The feed's last event (call.ended, with the gateway's summary) arrives just after the socket closes.
    setTimeout(() => this.closeFeed(), 5000);
    call = null;
  }
}

function onFeedEvent(ev, current) {
  const t = typeof ev.t === "number" ? ev.t : undefined;
  switch (ev.kind) {
    case "call.started":
      addEvent("gateway", `call started (profile ${ev.profile})`, t);
      break;
    case "agent.session_ready":
      addEvent("gateway", "agent session ready", t);
      break;
    case "agent.first_audio":
      if (state.callerTranscripts.length) state.latenciesMs.push(ev.latency_ms);
      addEvent("agent", `first audio ${Math.round(ev.latency_ms)} ms ` +
        (state.callerTranscripts.length ? "after you stopped speaking" : "after the session was ready"), t);
      break;
    case "caller.speech_started":
      addEvent("caller", "speaking…", t);
      break;
    case "caller.transcript":
      state.callerTranscripts.push(ev.text);
      addEvent("caller", `“${ev.text}”`, t);
      break;
    case "agent.transcript":
      if (state.greeting === null && !state.callerTranscripts.length) state.greeting = ev.text;
      else state.agentReplies.push({ text: ev.text, interrupted: !!ev.interrupted });
      addEvent("agent", `“${ev.text}”` + (ev.interrupted ? " (interrupted)" : ""), t);
      break;
    case "call.barge_in":
      state.bargeIns += 1;
      addEvent("gateway", `barge-in: agent cut off (${ev.dropped_unplayed_ms} ms unplayed dropped)`, t);
      break;
    case "tool.called":
      addEvent("gateway", `tool ${ev.tool} called`, t);
      break;
    case "call.ended":
      state.ended = ev;
      addEvent("gateway", `call ended: ${ev.outcome}, hung up by ${ev.hung_up_by}, ${ev.duration_s} s`, t);
      if (state.recording) addRecordingLink(state.recording, t);
      if (current) current.closeFeed();
      break;
    default: // agent.dropped, agent.resumed, call.protocol_error, …: shown as they come
      if (!["agent.reply_started", "caller.speech_stopped"].includes(ev.kind)) addEvent("gateway", ev.kind, t);
      break;
  }
  renderStats();
}

async function toggleCall() {
  if (call) {
    call.end("you hung up", true);
    return;
  }
  state.error = null;
  $("timeline").replaceChildren();
  call = new Call();
  setButton(true);
  try {
    await call.start();
  } catch (err) {
    state.error = String(err && err.message ? err.message : err);
    if (call) call.end(state.error, true);
    else setStatus(state.error, "error");
  }
}

window.softphone = { toggleCall, state };

document.addEventListener("DOMContentLoaded", () => {
  $("call").addEventListener("click", toggleCall);
  listMicrophones().catch(() => {});
  if (!window.isSecureContext) {
    setStatus("the microphone needs a secure context: open this page on http://localhost or over https", "error");
  }
  renderStats();
});
