// Server-Sent Events read with `fetch`, because EventSource cannot send the Authorization
// header and the token must never go into a URL. Parses the stream as the HTML standard
// says (`id:`, `event:`, `data:`, `retry:`, comments, any line ending) and reconnects with
// `Last-Event-ID` until the server says it is done.

/**
 * An incremental parser: feed it text as it arrives; it calls `onEvent({type, data, id})`
 * for each complete event. `lastEventId` persists across events, as the standard says.
 */
export class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    // The id of the last dispatched event, and of the one being read: an event cut off
    // mid-way must not move the resume point past itself.
    this.lastEventId = "";
    this.idBuffer = "";
    this.retry = null;
    this.reset();
  }

  /** Forgets a partly read event (a dropped connection); resumes after the last whole one. */
  restart() {
    this.buffer = "";
    this.idBuffer = this.lastEventId;
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
  }

  feed(text) {
    this.buffer += text;
    // A lone \r at the very end may be the first half of \r\n: wait for the next chunk.
    const pattern = /\r\n|\n|\r(?!$)/;
    let match;
    while ((match = pattern.exec(this.buffer)) !== null) {
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (name) {
      case "event": this.type = value; break;
      case "data": this.data.push(value); break;
      case "id": if (!value.includes("\0")) this.idBuffer = value; break;
      case "retry": if (/^\d+$/.test(value)) this.retry = Number(value); break;
      default: break;
    }
  }

  dispatch() {
    this.lastEventId = this.idBuffer;
    if (this.data.length > 0) {
      this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
    }
    this.reset();
  }
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
});

/**
 * Follows a stream to its end.
 * - `connect(lastEventId)` opens a connection and resolves to a `Response`: the first call
 *   gets "" (start), later ones the id of the last event seen.
 * - `onEvent(event)` gets each event; `onState(state, detail)` hears `open`,
 *   `reconnecting` (with the delay in ms) and `closed`.
 * - `isFinal(event)` says which event ends the stream (default: type `done`).
 * An HTTP error (4xx/5xx) is not retried: `readError(response)` turns it into the thrown
 * error. A dropped connection is retried with backoff (1 s doubling to 10 s, or the
 * server's `retry:`), resuming after the last event seen, so nothing repeats or is lost.
 */
export async function follow({ connect, onEvent, onState = () => {}, isFinal = (e) => e.type === "done", readError, signal }) {
  let finished = false;
  let failures = 0;
  const parser = new EventParser((event) => {
    onEvent(event);
    if (isFinal(event)) finished = true;
  });
  while (!finished) {
    signal?.throwIfAborted();
    let response = null;
    try {
      response = await connect(parser.lastEventId);
    } catch (error) {
      if (error?.name === "AbortError") throw error;
      response = null;
    }
    if (response && !response.ok) {
      throw readError ? await readError(response) : new Error(`the stream answered ${response.status}`);
    }
    if (response) {
      onState("open");
      const before = parser.lastEventId;
      const reader = response.body.getReader();
      // A stream opened elsewhere (handed over) does not know this signal: stop it here.
      const stop = () => reader.cancel().catch(() => {});
      signal?.addEventListener("abort", stop, { once: true });
      try {
        const decoder = new TextDecoder();
        parser.restart();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(decoder.decode(value, { stream: true }));
          if (finished) { reader.cancel().catch(() => {}); break; }
        }
      } catch (error) {
        if (error?.name === "AbortError" || signal?.aborted) throw error;
      } finally {
        signal?.removeEventListener("abort", stop);
      }
      signal?.throwIfAborted();
      // Progress resets the backoff: only a connection that brought nothing counts.
      if (parser.lastEventId !== before) failures = 0;
    }
    if (finished) break;
    failures += 1;
    const delay = parser.retry ?? Math.min(10_000, 1000 * 2 ** (failures - 1));
    onState("reconnecting", delay);
    await sleep(delay, signal);
  }
  onState("closed");
}
