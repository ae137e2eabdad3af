// Server-sent events over fetch(): EventSource cannot send the bearer header, so the stream is read from a
// ReadableStream and parsed here (the text/event-stream format: `event:`, `data:`, `id:` lines, a blank line
// ends an event, `:` lines are comments such as keepalives).
import { api, ApiError } from './api.js';

/** Parses chunks of an event stream; call `push(text)` as text arrives, `onEvent({event, data, id})` fires. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = '';
  }

  push(text) {
    this.buffer += text;
    let nl;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, nl);
      const len = this.buffer[nl] === '\r' && this.buffer[nl + 1] === '\n' ? 2 : 1;
      this.buffer = this.buffer.slice(nl + len);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // a comment (keepalive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
  }
}

/**
 * Reads `path` as an event stream until it ends or `signal` aborts; `onEvent(kind, data)` gets each event with
 * its data parsed as JSON (left as text when it is not JSON). Resolves when the server closes the stream.
 */
export async function readEvents(path, onEvent, signal) {
  const res = await api.raw(path, { headers: { Accept: 'text/event-stream' }, signal });
  if (!res.ok) {
    let detail = `HTTP ${res.status}`;
    try {
      detail = (await res.json()).detail ?? detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, detail);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser(({ event, data }) => {
    let parsed = data;
    try {
      parsed = JSON.parse(data);
    } catch {
      /* not JSON: kept as text */
    }
    onEvent(event, parsed);
  });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(decoder.decode(value, { stream: true }));
  }
  parser.push(decoder.decode());
}
