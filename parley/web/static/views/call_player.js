// The call's stereo recording on a waveform (caller and agent lanes) and the audio element that plays it.
//
// The browser never decodes the WAV: the API's precomputed peaks (GET /v1/calls/{id}/waveform) and duration
// draw the lanes at the drawn width's resolution (a 3-hour call costs the same 100..4000 points), and the <audio> element streams the recording with Range requests from the recording-token URL (an <audio src>
// cannot send the bearer header; the token is bound to this call and short-lived, renewed when it runs out).
import { html, useEffect, useRef, useState, ErrorBox, formatDuration } from '../lib/ui.js';
import { api } from '../lib/api.js';
import WaveSurfer from '../vendor/wavesurfer.js/dist/wavesurfer.esm.js';

const COLOURS = [
  { waveColor: '#22b8cf', progressColor: '#0e7490' }, // caller (left channel): style.css --caller
  { waveColor: '#a78bfa', progressColor: '#7c3aed' }, // agent (right channel): --agent
];

async function token(callId) {
  return api.post(`/v1/calls/${callId}/recording-token`);
}

/** Peaks for the drawn width: the API's 100..4000 points. */
function detailPoints(el) {
  return Math.max(100, Math.min(4000, Math.round((el?.clientWidth || 1000) * 2)));
}

/**
 * `onReady(controls)` gets {seek(t), audio} once the player exists; `onTime(t)` fires as the play position moves.
 */
export function Player({ call, onReady, onTime }) {
  const box = useRef(null);
  const audio = useRef(null);
  const ws = useRef(null);
  const [error, setError] = useState(null);
  const [playing, setPlaying] = useState(false);
  const [ready, setReady] = useState(false);
  const [now, setNow] = useState(0);

  useEffect(() => {
    if (!call.recording_bytes) return undefined;
    let dead = false;
    const el = audio.current;
    (async () => {
      try {
        const [peaks, tok] = await Promise.all([
          api.get(`/v1/calls/${call.id}/waveform`, { points: detailPoints(box.current) }),
          token(call.id),
        ]);
        if (dead) return;
        const w = WaveSurfer.create({
          container: box.current,
          media: el,
          url: tok.url,
          peaks: peaks.peaks,
          duration: peaks.duration_s,
          splitChannels: COLOURS.map((c) => ({ ...c, height: 56 })),
          barWidth: 2,
          barGap: 1,
          normalize: false,
          cursorColor: '#f59e0b',
          cursorWidth: 2,
          dragToSeek: true,
        });
        ws.current = w;
        w.on('timeupdate', (t) => {
          onTime?.(t);
          setNow(t);
        });
        w.on('play', () => setPlaying(true));
        w.on('pause', () => setPlaying(false));
        setReady(true);
        onReady?.({ seek: (t) => w.setTime(t), audio: el });
      } catch (e) {
        if (!dead) setError(e);
      }
    })();
    let renewing = false;
    const renew = async () => { // an expired token: a fresh one, and playback carries on where it was
      if (renewing || dead) return;
      renewing = true;
      const at = el.currentTime;
      try {
        const tok = await token(call.id);
        el.src = tok.url;
        el.currentTime = at;
      } finally {
        renewing = false;
      }
    };
    el.addEventListener('error', renew);
    return () => {
      dead = true;
      el.removeEventListener('error', renew);
      ws.current?.destroy();
      ws.current = null;
    };
  }, [call.id]);

  if (!call.recording_bytes)
    return html`<div class="empty" data-testid="no-recording">This call has no recording${call.status === 'active' ? ' yet' : ''}.</div>`;
  return html`<section class="player" data-testid="player">
    <div class="wave-wrap">
      <div class="wave-lanes" aria-hidden="true"><span>caller</span><span>agent</span></div>
      <div class="wave" ref=${box} data-testid="waveform"></div>
    </div>
    <div class="player-bar">
      <button class="btn primary" data-testid="play" disabled=${!ready}
        onClick=${() => ws.current?.playPause()}>${playing ? 'Pause' : 'Play'}</button>
      <span class="muted" data-testid="play-position">${formatDuration(now)} / ${formatDuration(call.duration_s)}</span>
      <audio ref=${audio} preload="metadata" data-testid="call-audio"></audio>
    </div>
    <${ErrorBox} error=${error} testid="player-error" />
  </section>`;
}
