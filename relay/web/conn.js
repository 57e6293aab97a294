// One WebSocket to the server this page came from, kept open: reconnects after
// 1-2-4-8-16-30 s, pings every 25 s (browsers cannot send WebSocket pings), and drops a
// socket that has been silent for 60 s.

export const BACKOFF_SECS = [1, 2, 4, 8, 16, 30];
const PING_MS = 25_000;
const SILENT_MS = 60_000;
const CONNECT_TIMEOUT_MS = 10_000;

export function serverUrl(loc = location) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

export class Connection {
  /**
   * handlers: onOpen(gen), onFrame(frame, gen), onClose({code, reason, gen}), onStatus()
   * `gen` counts sockets, so late events of an old socket can be told apart.
   */
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.gen = 0;
    this.attempt = 0;
    this.state = 'idle'; // idle | connecting | open | waiting | stopped
    this.retryAt = 0;
    this.timer = null;
    this.pinger = null;
    this.lastHeard = 0;
  }

  start() {
    if (this.state === 'connecting' || this.state === 'open') return;
    this.#connect();
  }

  /** Stops for good (sign-out, refused token) until start(). */
  stop() {
    clearTimeout(this.timer);
    this.state = 'stopped';
    this.#drop(1000, 'bye');
    this.h.onStatus();
  }

  /** Connects now instead of waiting for the backoff ("Try now", the browser back online). */
  retryNow() {
    if (this.state === 'waiting') {
      clearTimeout(this.timer);
      this.#connect();
    }
  }

  /** The session is good: the next failure waits 1 s again. */
  resetBackoff() {
    this.attempt = 0;
  }

  send(frame) {
    if (this.writable) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  get isOpen() {
    return this.state === 'open';
  }

  /** Whether send() would take a frame now; it stays so until the page's code yields. */
  get writable() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * The socket as code that decides what to send needs it: whether it is the current one
   * (`gen`), open, and taking frames. Frames counted as sent must be sent before the page
   * yields, while this still holds.
   */
  get link() {
    return { gen: this.gen, open: this.isOpen, writable: this.writable };
  }

  #connect() {
    clearTimeout(this.timer);
    this.#drop();
    const gen = ++this.gen;
    this.state = 'connecting';
    this.h.onStatus();
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.#closed(gen, 1006, String(e));
      return;
    }
    this.ws = ws;
    const connectTimer = setTimeout(() => ws.readyState === WebSocket.CONNECTING && ws.close(), CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      if (gen !== this.gen) return;
      this.state = 'open';
      this.lastHeard = Date.now();
      this.pinger = setInterval(() => {
        if (Date.now() - this.lastHeard > SILENT_MS) {
          ws.close(4000, 'silent');
          this.#closed(gen, 4000, 'no answer from the server');
          return;
        }
        this.send({ type: 'ping' });
      }, PING_MS);
      this.h.onStatus();
      this.h.onOpen(gen);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastHeard = Date.now();
      if (typeof ev.data !== 'string') return; // media chunks: not in v1
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') this.h.onFrame(frame, gen);
    };
    ws.onclose = (ev) => {
      clearTimeout(connectTimer);
      this.#closed(gen, ev.code, ev.reason);
    };
  }

  #closed(gen, code, reason) {
    if (gen !== this.gen) return;
    clearInterval(this.pinger);
    this.pinger = null;
    this.ws = null;
    this.gen++; // late events of this socket are ignored from here on
    const stopped = this.state === 'stopped';
    const again = this.h.onClose({ code, reason, gen }) !== false;
    if (stopped || !again) {
      this.state = 'stopped';
    } else {
      const secs = BACKOFF_SECS[Math.min(this.attempt, BACKOFF_SECS.length - 1)];
      this.attempt++;
      this.state = 'waiting';
      this.retryAt = Date.now() + secs * 1000;
      this.timer = setTimeout(() => this.#connect(), secs * 1000);
    }
    this.h.onStatus();
  }

  #drop(code = 1000, reason = '') {
    clearInterval(this.pinger);
    this.pinger = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      this.gen++;
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        /* already closed */
      }
    }
  }
}
