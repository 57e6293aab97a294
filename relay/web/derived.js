// Views the servers derive from a room's messages (docs/workflows.md): a room's doctors'
// queues (queuepanel.js) and a patient's record (recordpanel.js). Both panels read their
// view the same way, with the pieces here: an authenticated GET with a timeout whose
// failure says whether the server was unreachable or refused, one read at a time per view
// (with one more after it when something changed meanwhile), and the last answer kept on
// the device (db.js kv) so that the view can still be read while the server cannot.

export const REQUEST_TIMEOUT_MS = 15_000;

/**
 * GETs `url` from the server that served the page, with `headers()` (the sign-in: media.js
 * `auth`). Resolves with
 * `{ state: 'ok', data }`, `{ state: 'offline' }` (not reachable, or no answer in time) or
 * `{ state: 'refused', status, why }` (`why`: the server's `{code, message}`, if any);
 * `{ state: 'unreadable' }` for an answer that is not JSON.
 */
export async function readJson(url, { headers = () => ({}), timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const c = new AbortController();
  const t = setTimeout(() => c.abort(), timeoutMs);
  let res;
  try {
    res = await fetch(url, { headers: headers(), cache: 'no-store', signal: c.signal });
  } catch {
    return { state: 'offline' };
  } finally {
    clearTimeout(t);
  }
  if (res.ok) {
    try {
      return { state: 'ok', data: await res.json() };
    } catch {
      return { state: 'unreadable' };
    }
  }
  const why = await res.json().catch(() => null);
  return { state: 'refused', status: res.status, why };
}

/**
 * A refusal in words. `noun`: what is read, plural (`queues`, `records`); `what`: the one
 * read (`the queues`, `the record`); `where`: `hub` or `server`.
 */
export function refusal(status, why, { noun, what, where }) {
  if (status === 401) return `Your sign-in is not accepted for ${noun}. Ask for a new sign-in link.`;
  if (status === 403) return `You may not see the ${noun} of this room.`;
  if (status === 404 && why?.code !== 'unknown_room') return `The ${where} does not keep ${noun} (it may need an update).`;
  return `The ${where} could not read ${what} (${why?.message ?? why?.error ?? `HTTP ${status}`}).`;
}

/**
 * One read at a time per key: `run(key, fn)` calls `fn` now, or, while a call for `key` is
 * on its way, once more after it (however often it was asked meanwhile).
 */
export function serial() {
  const inflight = new Map(); // key -> { again }
  return async function run(key, fn) {
    const running = inflight.get(key);
    if (running) {
      running.again = true;
      return;
    }
    const job = { again: true };
    inflight.set(key, job);
    try {
      while (job.again) {
        job.again = false;
        await fn();
      }
    } finally {
      inflight.delete(key);
    }
  };
}

/**
 * The last answers read, by key, kept in db.js's kv store under `name` as
 * `{ [key]: { data, at } }`. `normalize` makes a stored answer safe to draw; at most `max`
 * answers are kept (the most recently read).
 */
export class Kept {
  constructor(name, { normalize = (d) => d, max = Infinity } = {}) {
    this.name = name;
    this.normalize = normalize;
    this.max = max;
    this.map = new Map();
  }

  /** What the device kept of earlier reads (db.js loadAll's `kv`). */
  load(kv) {
    this.map.clear();
    const saved = kv.get(this.name);
    if (saved && typeof saved === 'object') for (const [k, v] of Object.entries(saved)) if (v?.data) this.map.set(k, { data: this.normalize(v.data), at: v.at ?? null });
  }

  /** Another person (or none) on this device: the ops that forget every answer. */
  forget(ops) {
    this.map.clear();
    ops.push(['kv', 'delete', this.name]);
  }

  get(key) {
    return this.map.get(key) ?? null;
  }

  /** A new answer for `key`, read at `at`; the oldest answers go past `max`. */
  set(key, data, at = Date.now()) {
    this.map.delete(key);
    this.map.set(key, { data, at });
    if (this.map.size > this.max) {
      const old = [...this.map].sort(([, a], [, b]) => (a.at ?? 0) - (b.at ?? 0));
      for (const [k] of old.slice(0, this.map.size - this.max)) this.map.delete(k);
    }
  }

  /** The op that saves every answer held (db.js `write` format). */
  op() {
    return ['kv', 'put', Object.fromEntries(this.map), this.name];
  }
}

/** The body of a message as this device can read it (an encrypted room's, once opened), or null. */
export function readable(opener, rec) {
  if (!rec) return null;
  const v = opener.view(rec);
  return ['plain', 'open'].includes(v.state) && v.body && typeof v.body === 'object' ? v.body : null;
}
