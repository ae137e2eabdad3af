// A minimal talk page: parley-talk.js is loaded from the Parley server itself, so it always matches it.
// In a real app the API key stays on your server: it calls POST /v1/agents/{agent}/talk-token and gives the
// page the answer's `url`; the page then calls connect({ url }) instead of connect({ agent, apiKey, baseUrl }).

const $ = (id) => document.getElementById(id);
let call = null;

function show(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

/** One <li> per turn and speaker: the caller's line is replaced as the speculative transcript becomes final. */
function line(turn, who, text, pending = false) {
  const id = `t${turn}-${who}`;
  const li = document.getElementById(id) || $('transcript').appendChild(document.createElement('li'));
  li.id = id;
  li.className = `${who}${pending ? ' pending' : ''}`;
  li.textContent = `${who === 'caller' ? 'You' : 'Agent'}: ${text}`;
}

async function start(event) {
  event.preventDefault();
  const server = $('server').value.replace(/\/$/, '');
  show('Connecting…');
  $('transcript').replaceChildren();
  try {
    const { connect } = await import(`${server}/console/parley-talk.js`);
    call = await connect({ agent: $('agent').value, apiKey: $('key').value, baseUrl: server });
  } catch (e) {
    show(e.message, true); // e.g. "microphone access was refused: …", "no talk token (401): …"
    return;
  }
  $('start').disabled = true;
  $('hangup').disabled = false;
  show('Live: speak now.');
  call.on('transcript', (e) => line(e.turn, 'caller', e.text, !e.final));
  call.on('agent_text', (e) => line(e.turn, 'agent', e.interrupted ? `${e.text} (interrupted)` : e.text));
  call.on('latency', (e) => e.voiceToVoice && show(`Live: turn ${e.turn} answered in ${Math.round(e.voiceToVoice * 1000)} ms.`));
  call.on('end', (e) => {
    show(e.dropped ? e.message : `Call ended: ${e.reason}.`, Boolean(e.dropped));
    $('start').disabled = false;
    $('hangup').disabled = true;
  });
}

$('setup').addEventListener('submit', start);
$('hangup').addEventListener('click', () => call && call.hangUp());
for (const digit of '123456789*0#') {
  const b = $('keypad').appendChild(document.createElement('button'));
  b.type = 'button';
  b.textContent = digit;
  b.addEventListener('click', () => call && call.dtmf(digit));
}
