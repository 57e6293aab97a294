// End-to-end encrypted rooms (docs/protocol.md "End-to-end encrypted rooms", docs/web-client.md
// "Keys"). A body in such a room is {"e2e":{v,alg,kid,iv,ct}}: AES-256-GCM over the JSON text
// of the plain body, additional data `outpost-e2e-v1|ROOM|MESSAGE_ID`, ct = ciphertext||tag,
// base64url without padding: byte for byte what outpost_shared::e2e (Rust) seals and opens.
// Room keys are made and shared by people; they live only on the devices (IndexedDB, kv
// `roomkeys`) and never go to a server.

const ALG = 'A256GCM';
const IV_LEN = 12;
const KEY_LEN = 32;
const MAX_KID = 64;
export const KV_KEY = 'roomkeys';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** WebCrypto exists only in a secure context (https://, or http://localhost). */
export const available = () => !!(globalThis.isSecureContext && globalThis.crypto?.subtle);

export function b64u(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function unb64u(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url');
  const s = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(s + '='.repeat((4 - (s.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

const aad = (room, id) => enc.encode(`outpost-e2e-v1|${room}|${id}`);

/** Whether a message body is an encrypted envelope. */
export const isSealed = (body) => !!body && typeof body === 'object' && !Array.isArray(body) && !!body.e2e && typeof body.e2e === 'object';

export function importKey(raw) {
  return crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/** Encrypts `body` (any JSON value) for message `id` in `room`; `iv` only for tests. */
export async function seal(key, kid, room, id, body, iv = crypto.getRandomValues(new Uint8Array(IV_LEN))) {
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: aad(room, id), tagLength: 128 }, key, enc.encode(JSON.stringify(body)));
  return { e2e: { v: 1, alg: ALG, kid, iv: b64u(iv), ct: b64u(new Uint8Array(ct)) } };
}

/** Decrypts an envelope made by `seal` (or by Rust); rejects on a wrong key, room or id. */
export async function open(key, room, id, body) {
  const e = body.e2e;
  if (e.v !== 1 || e.alg !== ALG) throw new Error(`unsupported envelope (v ${e.v}, ${e.alg})`);
  const iv = unb64u(e.iv);
  if (iv.length !== IV_LEN) throw new Error('bad iv');
  const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: aad(room, id), tagLength: 128 }, key, unb64u(e.ct));
  return JSON.parse(dec.decode(pt));
}

const kidOk = (kid) => typeof kid === 'string' && kid.length > 0 && enc.encode(kid).length <= MAX_KID && !/[/\s]/.test(kid);

/** A fresh key for `room`: 32 random bytes and a key id that says when it was made. */
export function newKey(room) {
  const d = new Date();
  const stamp = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
  const tag = b64u(crypto.getRandomValues(new Uint8Array(3)));
  return { room, kid: `${stamp}-${tag}`, key: b64u(crypto.getRandomValues(new Uint8Array(KEY_LEN))) };
}

/** The fragment of a key link: `roomkey=ROOM/KID/KEY`. */
export const keyFragment = ({ room, kid, key }) => `roomkey=${encodeURIComponent(room)}/${encodeURIComponent(kid)}/${key}`;

/**
 * Reads a key as a person pastes it: the whole link (…#roomkey=ROOM/KID/KEY), ROOM/KID/KEY,
 * or KID/KEY for `room`. Throws an Error whose message can be shown.
 */
export function parseKey(text, room) {
  let t = String(text ?? '').trim();
  const i = t.indexOf('roomkey=');
  if (i >= 0) t = t.slice(i + 'roomkey='.length);
  t = t.replace(/\s+/g, '');
  const parts = t.split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  let r;
  let kid;
  let key;
  if (parts.length === 3) [r, kid, key] = parts;
  else if (parts.length === 2 && room) [r, kid, key] = [room, ...parts];
  else throw new Error('A room key looks like KEY-ID/KEY, or is a link ending in #roomkey=ROOM/KEY-ID/KEY.');
  if (!r) throw new Error('The key does not say which room it is for.');
  if (!kidOk(kid)) throw new Error(`The key id must be 1 to ${MAX_KID} characters without "/" or spaces.`);
  let raw;
  try {
    raw = unb64u(key);
  } catch {
    raw = null;
  }
  if (!raw || raw.length !== KEY_LEN) throw new Error('That is not a whole room key (it must be 32 bytes in base64url). Copy all of it and try again.');
  return { room: r, kid, key };
}

/** The room keys held on this device: [{ room, kid, key (base64url), added }], oldest first. */
export class KeyRing {
  constructor() {
    this.list = [];
    this.keys = new Map(); // `room kid` -> Promise<CryptoKey>
  }

  load(list) {
    this.list = Array.isArray(list) ? list.filter((e) => e && e.room && kidOk(e.kid) && typeof e.key === 'string') : [];
    this.keys.clear();
  }

  clear() {
    this.load([]);
  }

  find(room, kid) {
    return this.list.find((e) => e.room === room && e.kid === kid) ?? null;
  }

  /** The key new messages in `room` are sealed with: the one added last. */
  newest(room) {
    let best = null;
    for (const e of this.list) if (e.room === room) best = e;
    return best;
  }

  kids(room) {
    return this.list.filter((e) => e.room === room).map((e) => e.kid);
  }

  /** Adds (or replaces) a key; returns false when this exact key was already held. */
  add({ room, kid, key }) {
    const old = this.find(room, kid);
    if (old && old.key === key) return false;
    this.list = this.list.filter((e) => e !== old);
    this.list.push({ room, kid, key, added: Date.now() });
    this.keys.delete(`${room} ${kid}`);
    return true;
  }

  cryptoKey(entry) {
    const id = `${entry.room} ${entry.kid}`;
    let p = this.keys.get(id);
    if (!p) {
      p = importKey(unb64u(entry.key));
      this.keys.set(id, p);
    }
    return p;
  }
}

/**
 * What the app shows for a message body, computed synchronously (rendering is synchronous)
 * and opened in the background: { state: 'plain'|'open'|'pending'|'nokey'|'bad'|'insecure',
 * body, kid }. `onChange` is called (once per burst) when opened messages are ready.
 */
export class Opener {
  constructor(ring, onChange) {
    this.ring = ring;
    this.onChange = onChange;
    this.done = new Map(); // `id kid` -> view (pending, open or bad)
    this.timer = null;
  }

  view(rec) {
    const body = rec.body;
    if (!isSealed(body)) return { state: 'plain', body };
    const kid = String(body.e2e.kid ?? '');
    if (!available()) return { state: 'insecure', kid };
    const id = `${rec.id} ${kid}`;
    const seen = this.done.get(id);
    if (seen && seen.ct === body.e2e.ct) return seen;
    const entry = this.ring.find(rec.room, kid);
    if (!entry) return { state: 'nokey', kid };
    const v = { state: 'pending', kid, ct: body.e2e.ct };
    this.done.set(id, v);
    this.ring
      .cryptoKey(entry)
      .then((key) => open(key, rec.room, rec.id, body))
      .then(
        (plain) => ({ state: 'open', body: plain, kid, ct: body.e2e.ct }),
        () => ({ state: 'bad', kid, ct: body.e2e.ct }),
      )
      .then((r) => {
        if (this.done.get(id) !== v) return; // forgotten meanwhile
        this.done.set(id, r);
        this.changed();
      });
    return v;
  }

  /** After a key was added or replaced: try again what could not be opened. */
  retry() {
    for (const [id, v] of this.done) if (v.state === 'bad') this.done.delete(id);
    this.changed();
  }

  clear() {
    this.done.clear();
  }

  changed() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onChange();
    }, 0);
  }
}
