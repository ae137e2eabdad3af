// AudioWorklet processors for parley-talk.js (docs/talk.md, "Browser client").
//
// They run on the browser's audio thread, at the AudioContext's rate (`sampleRate`, usually 44.1 or 48 kHz):
// - 'parley-capture' turns the microphone into 16 kHz PCM16 mono, 20 ms (640-byte) frames, posted to the page;
// - 'parley-playback' is the jitter buffer: it takes the agent's 16 kHz PCM16 as it arrives over the socket and
//   plays it gap-free at the device rate, ~100 ms behind, silence on underrun, short fades so nothing clicks,
//   and drops everything at once on 'flush' (the caller spoke over the agent: barge-in).
// A port of this file to another platform (React Native, Flutter) needs the same three things: resample,
// frame, and a playback queue that can be emptied instantly.

const WIRE_RATE = 16000; // the talk protocol's rate, both ways
const FRAME = 320; // 20 ms at 16 kHz

/** A second-order low-pass (RBJ biquad): keeps 48 kHz content above 8 kHz out of the 16 kHz stream (aliasing). */
class LowPass {
  constructor(rate, cutoff) {
    const w = (2 * Math.PI * Math.min(cutoff, rate * 0.45)) / rate;
    const alpha = Math.sin(w) / (2 * Math.SQRT1_2);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  step(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1;
    this.x1 = x;
    this.y2 = this.y1;
    this.y1 = y;
    return y;
  }
}

/** Microphone → 16 kHz PCM16 frames of 20 ms, posted as transferable ArrayBuffers. */
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / WIRE_RATE; // input samples per output sample (2.75 at 44.1 kHz, 3 at 48 kHz)
    this.pos = 0; // where the next output sample falls, in input samples from the start of `prev`
    this.prev = 0; // the last input sample of the previous block (interpolation across blocks)
    this.filters = [new LowPass(sampleRate, 7000), new LowPass(sampleRate, 7000)]; // 4th order in all
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === 'stop') this.running = false;
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return this.running; // no microphone data this block
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    for (let i = 0; i < n; i++) mono[i] = this.filters[1].step(this.filters[0].step(mono[i]));
    // Linear interpolation between input samples at the output times: index -1 is the previous block's last.
    while (this.pos < n) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : mono[i - 1];
      const b = mono[i];
      this.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = mono[n - 1];
    return this.running;
  }

  push(x) {
    const s = Math.max(-1, Math.min(1, x));
    this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.filled === FRAME) {
      const out = this.frame.buffer;
      this.port.postMessage(out, [out]);
      this.frame = new Int16Array(FRAME);
      this.filled = 0;
    }
  }
}

/**
 * The agent's voice: a queue of 16 kHz chunks read at the device rate.
 *
 * States: 'buffering' (silence until `target` seconds are queued, or the oldest chunk has waited that long: the
 * tail of a reply shorter than the target still plays) and 'playing' (until the queue runs dry: an underrun,
 * then silence and 'buffering' again). Fades of ~4 ms at every start, underrun and flush: no clicks.
 * Counters go to the page every ~100 ms and at every change: samples received/played, frames played,
 * underruns, flushes and the samples they dropped.
 */
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = (opts.targetMs || 100) / 1000;
    this.maxQueued = WIRE_RATE * (opts.maxSeconds || 30); // memory bound, never reached at real time
    this.step = WIRE_RATE / sampleRate; // wire samples per device sample
    this.chunks = []; // Float32Array at 16 kHz, oldest first
    this.head = 0; // read position (fractional) in chunks[0]
    this.queued = 0; // wire samples not yet played
    this.oldestAt = 0; // currentTime when the oldest unplayed chunk arrived
    this.state = 'buffering';
    this.gain = 0; // the fade's current gain
    this.fade = 1 / (0.004 * sampleRate); // gain change per device sample
    this.last = 0; // the last sample played, faded out on underrun
    this.stats = { received: 0, played: 0, framesPlayed: 0, underruns: 0, flushes: 0, flushed: 0, starts: 0 };
    this.reportAt = 0;
    this.running = true;
    this.port.onmessage = (e) => this.message(e.data);
  }

  message(data) {
    if (data instanceof ArrayBuffer) return this.enqueue(new Int16Array(data));
    if (data.type === 'flush') return this.flush();
    if (data.type === 'stop') this.running = false;
  }

  enqueue(pcm) {
    if (pcm.length === 0) return;
    const chunk = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) chunk[i] = pcm[i] / 0x8000;
    if (this.queued === 0) this.oldestAt = currentTime;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.stats.received += chunk.length;
    while (this.queued > this.maxQueued) this.dropOldest();
  }

  dropOldest() {
    const chunk = this.chunks.shift();
    this.queued = Math.max(0, this.queued - (chunk.length - Math.floor(this.head)));
    this.head = 0;
  }

  flush() {
    const dropped = this.queued;
    this.chunks = [];
    this.head = 0;
    this.queued = 0;
    this.stats.flushes += 1;
    this.stats.flushed += dropped;
    if (this.state === 'playing') this.state = 'buffering'; // `last` fades to zero: no click at the cut
    this.report();
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!out) return this.running;
    if (this.state === 'buffering' && this.queued > 0) {
      const waited = currentTime - this.oldestAt;
      if (this.queued >= this.target * WIRE_RATE || waited >= this.target) {
        this.state = 'playing';
        this.stats.starts += 1;
      }
    }
    for (let i = 0; i < out.length; i++) {
      if (this.state === 'playing' && this.queued > 0) {
        this.gain = Math.min(1, this.gain + this.fade);
        this.last = this.read();
        out[i] = this.last * this.gain;
      } else {
        if (this.state === 'playing') {
          this.state = 'buffering'; // ran dry mid-stream: an underrun
          this.stats.underruns += 1;
        }
        this.gain = Math.max(0, this.gain - this.fade);
        out[i] = this.last * this.gain; // the fade-out of the last sample heard, then silence
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (currentTime >= this.reportAt) this.report();
    return this.running;
  }

  /** The next device-rate sample: linear interpolation inside the queue, advancing the read position. */
  read() {
    const chunk = this.chunks[0];
    const i = Math.floor(this.head);
    const frac = this.head - i;
    const a = chunk[i];
    const b = i + 1 < chunk.length ? chunk[i + 1] : this.chunks.length > 1 ? this.chunks[1][0] : a;
    const before = Math.floor(this.head);
    this.head += this.step;
    const advanced = Math.floor(this.head) - before;
    if (advanced > 0) this.consumed(advanced);
    if (this.head >= chunk.length) {
      this.head -= chunk.length;
      this.chunks.shift();
      if (this.chunks.length > 0) this.oldestAt = currentTime;
    }
    return a + (b - a) * frac;
  }

  consumed(n) {
    this.stats.played += n;
    this.queued = Math.max(0, this.queued - n);
    this.stats.framesPlayed = Math.floor(this.stats.played / FRAME);
  }

  report() {
    this.reportAt = currentTime + 0.1;
    this.port.postMessage({ type: 'stats', state: this.state, queued: this.queued, ...this.stats });
  }
}

registerProcessor('parley-capture', CaptureProcessor);
registerProcessor('parley-playback', PlaybackProcessor);
