// parley-talk.js: the reference browser client of Parley's talk WebSocket (docs/talk.md).
//
//   import { connect } from '/console/parley-talk.js';
//   const call = await connect({ agent: 'Receptionist', getToken: () => myBackend.talkToken('Receptionist') });
//   call.on('transcript', (e) => console.log(e.final ? 'caller:' : '…', e.text));
//   call.on('end', (e) => console.log('ended:', e.reason));
//   call.dtmf('5'); call.hangUp();
//
// The protocol, for a port to React Native, Flutter or anything else:
// 1. Get a talk token (POST /v1/agents/{agent}/talk-token with your key, on your server: never ship the key).
//    It is good for one session within 60 s; its `url` is the WebSocket path with the token in it.
// 2. Open the microphone first (so a refusal costs no token), then the WebSocket.
// 3. Send the microphone as binary PCM16 little-endian, mono, 16 kHz, 20 ms (640-byte) frames at real time.
// 4. Play the binary frames you receive (the same format) through a jitter buffer: ~100 ms queued before
//    playing, silence when it runs dry. On the `interruption` event drop everything queued at once: the caller
//    is speaking over the agent, and the agent has already stopped.
// 5. Text frames are JSON events: `call` first, `transcript`, `interruption`, `agent_text`, `turn_metrics`,
//    `dtmf`, `action`, `error`, `end` last; then the server closes. Send {"type":"dtmf","digit":"5"} for a key,
//    {"type":"end"} to hang up. A close without `end` is a dropped call: its close code and reason say why.

const WIRE_RATE = 16000;
const DEFAULT_WORKLET = new URL('./talk-worklet.js', import.meta.url).href;
const DIGITS = '0123456789*#ABCD';

/** A talk failure a page can show as is: `kind` says what failed, `message` says it for a person. */
export class TalkError extends Error {
  constructor(kind, message, detail = {}) {
    super(message);
    this.name = 'TalkError';
    this.kind = kind; // 'microphone' | 'audio' | 'token' | 'socket' | 'closed'
    Object.assign(this, detail);
  }
}

/** getUserMedia's failures in words: the refusal is the one people meet (NotAllowedError). */
export function microphoneError(e) {
  const name = e && e.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new TalkError('microphone', "microphone access was refused: allow the microphone for this site in the browser's site settings, then start again", { cause: e });
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return new TalkError('microphone', 'no microphone was found: connect one, then start again', { cause: e });
  }
  if (name === 'NotReadableError') {
    return new TalkError('microphone', 'the microphone is in use by another program or could not be opened', { cause: e });
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return new TalkError('microphone', 'this page cannot use a microphone: open it over https (or on localhost)', { cause: e });
  }
  return new TalkError('microphone', `the microphone could not be opened: ${(e && e.message) || e}`, { cause: e });
}

/** A closed socket's code and reason as the sentence a page shows ("call ended: …"). */
export function closeMessage(code, reason) {
  const why = reason || {
    1000: 'closed', 1001: 'the server went away', 1006: 'the connection was lost',
    1008: 'not allowed', 1011: 'the server could not run the agent', 1013: 'too many calls, try again later',
  }[code] || 'the connection closed';
  return `call ended: ${why} (code ${code})`;
}

/** A talk URL as ws(s)://…: relative paths (a token's `url`) are resolved against `base`, http becomes ws. */
export function socketUrl(url, base = location.href) {
  const u = new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.href;
}

/** POST {baseUrl}/v1/agents/{agent}/talk-token with a key: for trusted pages (dev tools, the console) only. */
export async function fetchTalkToken({ agent, apiKey, baseUrl = location.origin, userId, draft }) {
  const body = {};
  if (userId) body.user_id = userId;
  if (draft) body.draft = draft;
  let resp;
  try {
    resp = await fetch(new URL(`/v1/agents/${encodeURIComponent(agent)}/talk-token`, baseUrl), {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new TalkError('token', `could not reach ${baseUrl} for a talk token`, { cause: e });
  }
  const answer = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof answer.detail === 'string' ? answer.detail : JSON.stringify(answer.detail ?? resp.statusText);
    throw new TalkError('token', `no talk token (${resp.status}): ${detail}`, { status: resp.status, detail: answer.detail });
  }
  return { ...answer, url: new URL(answer.url, baseUrl).href };
}

/**
 * Start a conversation. Options:
 * - `url`: a talk URL with its token (a token's `url`), or
 * - `getToken`: async () => ({url}) (your backend mints the token; the console calls the API), or
 * - `agent` + `apiKey` (+ `baseUrl`, `userId`, `draft`): fetch the token here (trusted pages only);
 * - `microphone`: audio constraints for getUserMedia (echo cancellation on by default: barge-in needs it);
 * - `targetMs`: the jitter buffer's target (100); `workletUrl`: where talk-worklet.js is.
 * Resolves once the socket is open and the microphone streams; rejects with a TalkError.
 */
export async function connect(options = {}) {
  const call = new TalkCall(options);
  await call.start();
  return call;
}

/** One conversation: `on(type, fn)` for events, `dtmf(digit)`, `hangUp()`, `stats` (counters), `close()`. */
export class TalkCall {
  constructor(options) {
    this.options = { targetMs: 100, workletUrl: DEFAULT_WORKLET, ...options };
    this.listeners = new Map();
    this.state = 'idle'; // idle → starting → live → ended
    this.callId = null;
    this.turns = new Map(); // turn → {turn, caller, agent, final, voiceToVoice, times, interrupted}
    this.stats = { bytesSent: 0, bytesReceived: 0, framesReceived: 0, framesPlayed: 0, queuedMs: 0, underruns: 0, flushes: 0, flushedMs: 0, interruptions: 0 };
    this.endInfo = null;
  }

  /** Listen to an event: the server's (`call`, `transcript`, …, `end`) and the client's `state`, `stats`, `latency`. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, event) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try { fn(event); } catch (e) { console.error(`parley-talk: a '${type}' listener failed`, e); }
    }
    for (const fn of [...(this.listeners.get('*') || [])]) {
      try { fn({ ...event, type: event.type || type }); } catch (e) { console.error('parley-talk: a listener failed', e); }
    }
  }

  setState(state) {
    this.state = state;
    this.emit('state', { type: 'state', state });
  }

  async start() {
    this.setState('starting');
    try {
      await this.openMicrophone();
      await this.openAudio();
      const url = await this.resolveUrl();
      await this.openSocket(url);
    } catch (e) {
      this.teardown();
      this.setState('ended');
      throw e instanceof TalkError ? e : new TalkError('audio', String((e && e.message) || e), { cause: e });
    }
    this.setState('live');
  }

  async openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw microphoneError(null);
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true, ...this.options.microphone };
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    } catch (e) {
      throw microphoneError(e);
    }
  }

  /** The AudioContext at the device's own rate; the worklet resamples both ways (not every browser resamples a
   *  microphone into a 16 kHz context). */
  async openAudio() {
    this.audio = new AudioContext({ latencyHint: 'interactive' });
    await this.audio.audioWorklet.addModule(this.options.workletUrl);
    if (this.audio.state === 'suspended') await this.audio.resume();
    this.source = this.audio.createMediaStreamSource(this.stream);
    // One silent output, connected: a node that reaches the destination is always processed.
    this.capture = new AudioWorkletNode(this.audio, 'parley-capture', { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    this.capture.port.onmessage = (e) => this.sendAudio(e.data);
    this.source.connect(this.capture);
    this.capture.connect(this.audio.destination);
    this.playback = new AudioWorkletNode(this.audio, 'parley-playback', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { targetMs: this.options.targetMs },
    });
    this.playback.port.onmessage = (e) => this.playbackStats(e.data);
    this.playback.connect(this.audio.destination);
  }

  async resolveUrl() {
    const o = this.options;
    if (o.url) return socketUrl(o.url);
    let token;
    try {
      token = o.getToken ? await o.getToken() : o.agent && o.apiKey ? await fetchTalkToken(o) : null;
    } catch (e) {
      if (e instanceof TalkError) throw e;
      throw new TalkError('token', `no talk token: ${(e && e.message) || e}`, { cause: e, status: e && e.status });
    }
    if (!token || !token.url) throw new TalkError('token', 'connect() needs url, getToken, or agent with apiKey');
    return socketUrl(token.url, o.baseUrl || location.href);
  }

  openSocket(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (m) => (typeof m.data === 'string' ? this.serverEvent(m.data) : this.agentAudio(m.data));
      ws.onclose = (c) => {
        if (!opened) reject(new TalkError('socket', `could not connect to the agent: ${closeMessage(c.code, c.reason).replace('call ended: ', '')}`, { code: c.code, reason: c.reason }));
        else this.closed(c.code, c.reason);
      };
      ws.onerror = () => {}; // the close that follows says why
    });
  }

  sendAudio(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(frame);
    this.stats.bytesSent += frame.byteLength;
  }

  agentAudio(data) {
    this.stats.bytesReceived += data.byteLength;
    this.stats.framesReceived += 1;
    if (this.playback) this.playback.port.postMessage(data, [data]);
  }

  playbackStats(s) {
    if (!s || s.type !== 'stats') return;
    Object.assign(this.stats, {
      framesPlayed: s.framesPlayed, samplesPlayed: s.played, queuedMs: Math.round((s.queued / WIRE_RATE) * 1000),
      underruns: s.underruns, flushes: s.flushes, flushedMs: Math.round((s.flushed / WIRE_RATE) * 1000),
      playing: s.state === 'playing',
    });
    this.emit('stats', { type: 'stats', ...this.stats });
  }

  serverEvent(text) {
    let event;
    try { event = JSON.parse(text); } catch { return; }
    if (!event || typeof event.type !== 'string') return;
    if (event.type === 'call') this.callId = event.call_id;
    if (event.type === 'interruption') this.interrupted();
    if (event.type === 'end') this.endInfo = { reason: event.reason, callId: event.call_id };
    this.trackTurn(event);
    this.emit(event.type, event);
  }

  /** Barge-in: the agent stopped talking on the server; what is still queued here must not play either. */
  interrupted() {
    this.stats.interruptions += 1;
    if (this.playback) this.playback.port.postMessage({ type: 'flush' });
  }

  /** The turn table a page shows: caller text (speculative then final), the agent's reply, voice-to-voice. */
  trackTurn(e) {
    if (typeof e.turn !== 'number') return;
    const t = this.turns.get(e.turn) || { turn: e.turn, caller: '', agent: '', final: false, voiceToVoice: null };
    if (e.type === 'transcript') Object.assign(t, { caller: e.text, final: Boolean(e.final) });
    if (e.type === 'agent_text') Object.assign(t, { agent: e.text, interrupted: Boolean(e.interrupted) });
    if (e.type === 'turn_metrics') {
      Object.assign(t, { voiceToVoice: e.voice_to_voice ?? null, times: e.times || {} });
      this.turns.set(e.turn, t);
      this.emit('latency', { type: 'latency', turn: e.turn, voiceToVoice: t.voiceToVoice, times: t.times });
    }
    this.turns.set(e.turn, t);
  }

  /** A keypad press: `0`-`9`, `*`, `#`, `A`-`D`. */
  dtmf(digit) {
    const d = String(digit).toUpperCase();
    if (d.length !== 1 || !DIGITS.includes(d)) throw new TalkError('socket', `not a keypad digit: ${digit}`);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'dtmf', digit: d }));
  }

  /** Hang up: the server ends the call, sends `end` and closes; the microphone stops at once. */
  hangUp() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'end' }));
    this.stopMicrophone();
    this.setState('ending');
    // The server answers `end` and closes at once; a socket that does not is closed here after a while.
    setTimeout(() => { if (this.state === 'ending') this.closed(1000, 'no answer to hang up'); }, 5000);
  }

  closed(code, reason) {
    if (this.state === 'ended') return;
    const normal = Boolean(this.endInfo);
    const end = normal
      ? { type: 'end', ...this.endInfo, code, dropped: false }
      : { type: 'end', reason: reason || 'dropped', code, dropped: true, message: closeMessage(code, reason), callId: this.callId };
    this.teardown();
    this.setState('ended');
    if (!normal) {
      this.emit('error', { type: 'error', message: end.message, code, fatal: true });
      this.emit('end', end);
    }
    this.emit('closed', end);
  }

  stopMicrophone() {
    if (this.capture) { this.capture.port.postMessage({ type: 'stop' }); this.capture.disconnect(); this.capture = null; }
    if (this.source) { this.source.disconnect(); this.source = null; }
    if (this.stream) { for (const track of this.stream.getTracks()) track.stop(); this.stream = null; }
  }

  /** Everything off: the microphone (the browser's indicator goes out), the audio graph, the socket. */
  teardown() {
    this.stopMicrophone();
    if (this.playback) { this.playback.port.postMessage({ type: 'stop' }); this.playback.disconnect(); this.playback = null; }
    if (this.audio) { this.audio.close().catch(() => {}); this.audio = null; }
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'client closed');
  }

  /** Leave without hanging up politely (a page unloading): the server records the caller's hang-up. */
  close() {
    if (this.ws) this.ws.onclose = null;
    this.teardown();
    this.setState('ended');
  }
}
