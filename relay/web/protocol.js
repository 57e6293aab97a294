// The device protocol v1 (docs/protocol.md) as a state machine, with no page around it: no
// DOM, no IndexedDB, no WebSocket, no timers, no clock. It owns the cursor and epoch (what
// `hello` resumes from and what `ack` vouches for), the outbox (queue, send once per
// connection after `welcome`, drop on `stored`, retry or give up on `error`), resync, the
// receipts of this user's messages, history paging, read marks and which emergencies ring.
//
// Inputs are method calls: server frames, user actions, the socket opening and closing, and
// `now`. Outputs are data: frames to send, IndexedDB operations (db.js `write` format) to
// commit, and events for the page to act on. app.js does the wiring.
//
// `link` arguments describe the socket at the moment of the call: { gen, open, writable }
// (conn.js). Frames returned for a writable link must be sent at once, before anything
// else runs: the bookkeeping (sent once per connection, acked, read, loading) assumes they
// went out.

import { isSealed } from './e2e.js';

/** How far a message got; a message's state and a reader's receipt only move up. */
export const RANK = { failed: -1, queued: 0, stored: 1, forwarded: 2, delivered: 3, read: 4 };

/** Refusals worth retrying, and after how long; any other refusal of a send is final. */
export const RETRY_MS = { rate_limited: 2000, internal: 3000, storage_full: 30000 };

/** Older emergencies (a fresh device's replay) do not ring. */
export const ALERT_MAX_AGE_MS = 24 * 3600 * 1000;

export const HISTORY_PAGE = 50;

/** A token's claims as its holder can read them (no check: the server verifies). */
export function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
    );
    const c = JSON.parse(json);
    return typeof c === 'object' && c ? c : null;
  } catch {
    return null;
  }
}

/**
 * The state this module owns. app.js keeps it in the same object as the page's own state
 * (`window.outpost` in the browser tests), and reads it freely to draw the screens.
 * `claims` (from the sign-in token) and `authError` are set by the sign-in as well.
 */
export function initialState() {
  return {
    token: null, // the sign-in token (app.js sets it at sign-in; a `token` frame replaces it)
    claims: null, // decoded from the token: who this is before `welcome` says so
    welcome: null, // { user, role, rooms, encrypted } of the last welcome; durable
    authError: null, // why the server refused the sign-in, in plain words
    epoch: null, // durable: the server database the cursor belongs to
    cursor: 0, // durable: highest in-order cursor committed on this device
    cursorMem: 0, // the same, including frames applied but not yet committed
    seq: 0, // durable: this device's message counter
    msgs: new Map(), // id -> message record, as the screens show it
    receipts: new Map(), // id of an own message -> { id, by: {user: state}, at: {state: ms}, best }
    outbox: new Map(), // id -> { id, msg (as it goes on the wire), created }
    inflight: new Set(), // outbox ids sent on this socket, awaiting `stored`
    session: null, // { gen, welcomed, acked, readSent: {room: cursor} } of the open socket
    seen: {}, // room -> highest cursor of another user's message seen here (unread counts)
    more: {}, // room -> whether older history exists on the server
    loadingOlder: new Set(), // rooms with a `history` request in flight
    dismissed: new Set(), // emergencies the user has acknowledged; durable
    alerts: [], // ids of emergencies on screen
  };
}

// Error codes in plain words (docs/protocol.md, Errors). `where` is "hub" or "server".
export function plainError(code, message, where) {
  switch (code) {
    case 'unauthenticated':
      return `This sign-in code is not accepted by the ${where}. Ask for a new sign-in link.`;
    case 'token_expired':
      return 'Your sign-in has expired. Ask for a new sign-in link.';
    case 'forbidden':
      // A queue's entries are changed only by its doctor (and cancelled by their booker): the server says which.
      if (/\bqueue\b/.test(message ?? '') && !/member of room/.test(message)) return `Not allowed: ${message}.`;
      return 'You are not a member of that room.';
    case 'unknown_room':
      return `That room does not exist on the ${where}.`;
    case 'invalid_event':
      return `The form was not accepted: ${(message ?? '').replace(/^(?:clinical|queue|record)\.\w+: /, '')}. Correct it and send it again.`;
    case 'too_large':
      return 'This message is too large to send.';
    case 'rate_limited':
      return 'Too many messages at once. The app will send it again in a moment.';
    case 'storage_full':
      return `The ${where} is full. Only emergencies get through; the message waits on this device.`;
    case 'internal':
      return `The ${where} had a problem. The app will send it again.`;
    case 'unsupported_version':
    case 'bad_frame':
      if (/end-to-end encrypted/.test(message ?? '')) return 'This room is end-to-end encrypted, and the message was not encrypted as it must be.';
      if (/upload the file first/.test(message ?? '')) return `The file is not on the ${where} (any more). Attach it again.`;
      return `The ${where} did not understand this app (${message || code}). Please update the app.`;
    default:
      return message || `Error: ${code}`;
  }
}

export const isEmergency = (m) => m.priority === 'emergency';

export class Protocol {
  /**
   * `pendingUpload(id)`: whether a message's file is still being uploaded from this device;
   * such a message is not the server's yet, so a resync keeps it.
   */
  constructor(state = initialState(), { pendingUpload = () => false } = {}) {
    this.s = state;
    this.pendingUpload = pendingUpload;
  }

  get state() {
    return this.s;
  }

  // ---------- who this is ----------

  me() {
    return this.s.welcome?.user ?? this.s.claims?.sub ?? null;
  }
  role() {
    return this.s.welcome?.role ?? this.s.claims?.role ?? 'worker';
  }
  rooms() {
    return this.s.welcome?.rooms ?? this.s.claims?.rooms ?? [];
  }
  isWorker() {
    return this.role() === 'worker';
  }
  /** What the other end is called in the words shown: a worker talks to the hub. */
  where() {
    return this.isWorker() ? 'hub' : 'server';
  }
  isEncrypted(room) {
    return (this.s.welcome?.encrypted ?? []).includes(room);
  }

  /** The state as db.js `loadAll` read it back. */
  load({ kv, messages, receipts, outbox }) {
    const S = this.s;
    S.welcome = kv.get('welcome') ?? null;
    S.epoch = kv.get('epoch') ?? null;
    S.cursor = S.cursorMem = kv.get('cursor') ?? 0;
    S.seq = kv.get('seq') ?? 0;
    S.seen = kv.get('seen') ?? {};
    S.more = kv.get('more') ?? {};
    S.dismissed = new Set(kv.get('dismissed') ?? []);
    S.msgs = new Map(messages.map((m) => [m.id, m]));
    S.receipts = new Map(receipts.map((r) => [r.id, r]));
    S.outbox = new Map(outbox.map((o) => [o.id, o]));
  }

  // ---------- the socket ----------

  /** A new socket is open: returns the `hello` that resumes from what is committed here. */
  opened(gen, { token, device }) {
    const S = this.s;
    S.session = { gen, welcomed: false, acked: 0, readSent: {} };
    S.inflight.clear();
    return { v: 1, type: 'hello', token, device, cursor: S.epoch ? S.cursor : null, epoch: S.epoch };
  }

  /** The socket is gone: whatever was in flight on it goes again on the next one. A
   *  history page asked for on it will never come, so its room may ask again. */
  closed() {
    this.s.session = null;
    this.s.inflight.clear();
    this.s.loadingOlder.clear();
  }

  // ---------- frames in ----------
  //
  // Frames are applied in batches: batch(), receive() for each, settle(), then the page
  // commits `batch.ops` and calls committed(). Only then may it act on `batch.after` and
  // send ack(): an ack vouches for what this device holds durably.
  //
  // Events returned by receive(), for the page to act on at once:
  //   { type: 'welcome' }                  the session is open (presence and typing start over)
  //   { type: 'forget' }                   another person signed in: drop what the page holds for the last one
  //   { type: 'typing', room, user, active }
  //   { type: 'presence', user, status, last_seen }
  //   { type: 'notice', text }             tell the user
  //   { type: 'retry', ms }                flush the outbox again after `ms`
  //   { type: 'token', token, expiresAt }  the server renewed the sign-in: keep `token` for next time
  //   { type: 'call', frame }              a step of a call (callpanel.js; never stored, nothing to commit)
  // Events in `batch.after`, once the batch has committed:
  //   { type: 'session' }                  flush the outbox, send `read`, fetch history, ...
  //   { type: 'alert', id }                an emergency to ring for

  batch() {
    return { ops: [], after: [], from: this.s.cursorMem, resynced: false };
  }

  receive(batch, f, gen, now) {
    const S = this.s;
    const { ops, after } = batch;
    const events = [];
    switch (f.type) {
      case 'welcome': {
        if (S.welcome && S.welcome.user !== f.user) {
          ops.push(...this.forgetPerson());
          events.push({ type: 'forget' });
        }
        S.welcome = { user: f.user, role: f.role ?? S.claims?.role ?? 'worker', rooms: f.rooms ?? [], encrypted: f.encrypted ?? [] };
        ops.push(['kv', 'put', S.welcome, 'welcome']);
        // A device that already has an epoch keeps it: a different one comes with `resync`.
        if (!S.epoch) {
          S.epoch = f.epoch;
          ops.push(['kv', 'put', f.epoch, 'epoch']);
        }
        if (S.session && S.session.gen === gen) S.session.welcomed = true;
        events.push({ type: 'welcome' });
        after.push({ type: 'session' });
        break;
      }
      case 'resync': {
        batch.resynced = true;
        ops.push(...this.dropServerData());
        S.epoch = f.epoch;
        ops.push(['kv', 'put', f.epoch, 'epoch']);
        break;
      }
      case 'stored': {
        const rec = S.msgs.get(f.id);
        if (rec) {
          if (RANK[rec.local ?? 'stored'] < RANK.stored) rec.local = 'stored';
          rec.cursor = f.cursor;
          // Where it sorts in the room (an older server does not say).
          if (typeof f.hlc === 'number') rec.hlc = f.hlc;
          rec.trail = { ...rec.trail, stored: rec.trail?.stored ?? now };
          ops.push(['messages', 'put', rec]);
        }
        this.#dropFromOutbox(f.id, ops);
        break;
      }
      case 'message': {
        if (!f.msg) break;
        this.#addMessage(f.msg, f.cursor, false, ops, after, now);
        this.#advance(f);
        break;
      }
      case 'receipt': {
        const r = S.receipts.get(f.id) ?? { id: f.id, by: {}, at: {}, best: 'stored' };
        const prev = r.by[f.by];
        if (!prev || RANK[f.state] > RANK[prev]) r.by[f.by] = f.state;
        if (r.at[f.state] === undefined) r.at[f.state] = f.at ?? now;
        if (RANK[f.state] > RANK[r.best]) r.best = f.state;
        S.receipts.set(f.id, r);
        ops.push(['receipts', 'put', r]);
        this.#advance(f);
        break;
      }
      case 'history': {
        for (const e of f.messages ?? []) this.#addMessage(e.msg, e.cursor, true, ops, after, now);
        S.more[f.room] = !!f.more;
        ops.push(['kv', 'put', S.more, 'more']);
        S.loadingOlder.delete(f.room);
        break;
      }
      case 'typing': {
        if (f.user === this.me()) break;
        events.push({ type: 'typing', room: f.room, user: f.user, active: !!f.active });
        break;
      }
      case 'presence': {
        events.push({ type: 'presence', user: f.user, status: f.status, last_seen: f.last_seen ?? null });
        break;
      }
      case 'error':
        this.#onError(f, ops, events);
        break;
      case 'read_mark': {
        // Read on another of this person's devices (protocol v1 extension): their unread
        // count clears here too. Marks only move forward.
        if (typeof f.room === 'string' && Number.isSafeInteger(f.cursor) && f.cursor > (S.seen[f.room] ?? 0)) {
          S.seen[f.room] = f.cursor;
          ops.push(['kv', 'put', S.seen, 'seen']);
        }
        break;
      }
      case 'token': {
        // A renewed token (protocol v1 extension), for the next connection. Only one for the
        // person signed in here replaces the stored one: a server never sends another's,
        // and a device must not switch people on its say-so.
        const claims = typeof f.token === 'string' ? decodeClaims(f.token) : null;
        const me = S.welcome?.user ?? S.claims?.sub;
        if (!claims || !claims.sub || (me && claims.sub !== me)) break;
        S.token = f.token;
        S.claims = claims;
        events.push({ type: 'token', token: f.token, expiresAt: f.expires_at ?? claims.exp ?? null });
        break;
      }
      case 'call': {
        // A call's step (protocol v1 extension): relayed live by the server, stored nowhere,
        // so it moves no cursor; call.js decides what it means.
        events.push({ type: 'call', frame: f });
        break;
      }
      default:
        break; // pong, and frames of later versions
    }
    return events;
  }

  /** Ends a batch: adds the cursor to its ops when it moved; returns the cursor to commit. */
  settle(batch) {
    const S = this.s;
    if (S.cursorMem !== batch.from || batch.resynced) batch.ops.push(['kv', 'put', S.cursorMem, 'cursor']);
    return S.cursorMem;
  }

  /** The batch that ended at `cursor` is on disk. */
  committed(cursor) {
    this.s.cursor = cursor;
  }

  // Emergencies that overtook older traffic (`ahead`) do not count: everything below the
  // cursor must be here before an ack or a resume may vouch for it.
  #advance(f) {
    if (!f.ahead && f.cursor > this.s.cursorMem) this.s.cursorMem = f.cursor;
  }

  #dropFromOutbox(id, ops) {
    this.s.inflight.delete(id);
    if (this.s.outbox.delete(id)) ops.push(['outbox', 'delete', id]);
  }

  #addMessage(msg, cursor, history, ops, after, now) {
    const S = this.s;
    const mine = msg.from === this.me();
    let rec = S.msgs.get(msg.id);
    const fresh = !rec;
    if (!rec) {
      rec = { ...msg, cursor, mine, local: mine ? 'stored' : null, trail: mine ? { stored: msg.at } : {} };
    } else {
      const { local, trail, created } = rec;
      // This device wrote it: keep the words it sealed rather than the envelope coming back.
      const body = isSealed(msg.body) && !isSealed(rec.body) ? rec.body : msg.body;
      Object.assign(rec, msg, { cursor, mine, local, trail, created, body });
      if (mine && RANK[rec.local ?? 'stored'] < RANK.stored) {
        rec.local = 'stored';
        rec.trail = { ...rec.trail, stored: rec.trail?.stored ?? msg.at };
      }
    }
    S.msgs.set(rec.id, rec);
    ops.push(['messages', 'put', rec]);
    // A message of ours that the server holds is no longer this device's to send.
    if (S.outbox.has(msg.id)) this.#dropFromOutbox(msg.id, ops);
    if (fresh && !mine && !history && isEmergency(rec) && !S.dismissed.has(rec.id) && now - (rec.at ?? 0) < ALERT_MAX_AGE_MS) {
      S.alerts.push(rec.id);
      after.push({ type: 'alert', id: rec.id });
    }
  }

  #onError(f, ops, events) {
    const S = this.s;
    const text = plainError(f.code, f.message, this.where());
    if (f.code === 'unauthenticated' || f.code === 'token_expired') {
      S.authError = text; // the server closes with 4001 next
      return;
    }
    if (f.id && S.outbox.has(f.id)) {
      const rec = S.msgs.get(f.id);
      if (RETRY_MS[f.code]) {
        S.inflight.delete(f.id);
        events.push({ type: 'retry', ms: RETRY_MS[f.code] }, { type: 'notice', text: `Not sent yet: ${text}` });
        return;
      }
      if (rec) {
        rec.local = 'failed';
        rec.error = text;
        ops.push(['messages', 'put', rec]);
      }
      this.#dropFromOutbox(f.id, ops);
      events.push({ type: 'notice', text: `Message not sent: ${text}` });
      return;
    }
    events.push({ type: 'notice', text });
  }

  // ---------- frames out ----------

  /** The `ack` for what is committed, once per cursor and only on the welcomed current socket. */
  ack(link) {
    const s = this.s.session;
    if (!s || !s.welcomed || !link.open || s.gen !== link.gen) return [];
    if (this.s.cursor > s.acked && link.writable) {
      s.acked = this.s.cursor;
      return [{ v: 1, type: 'ack', cursor: this.s.cursor }];
    }
    return [];
  }

  /**
   * The outbox to send now: emergencies first, then in the order written, each once per
   * connection. `seal` lists messages of encrypted rooms written before this device knew the
   * room is encrypted: the page seals them (or they wait for a key), then flushes again.
   */
  flush(link) {
    const S = this.s;
    const out = { send: [], seal: [] };
    if (!S.session?.welcomed) return out;
    const pending = [...S.outbox.values()].sort((a, b) => (isEmergency(a.msg) ? 0 : 1) - (isEmergency(b.msg) ? 0 : 1) || a.msg.seq - b.msg.seq);
    for (const e of pending) {
      if (S.inflight.has(e.id)) continue;
      if (this.isEncrypted(e.msg.room) && !isSealed(e.msg.body)) {
        out.seal.push(e);
        continue;
      }
      if (!link.writable) break;
      out.send.push({ v: 1, type: 'send', msg: e.msg });
      S.inflight.add(e.id);
    }
    return out;
  }

  /** The next `seq`, taken before the message is written (a gap, if it is not, is harmless). */
  nextSeq() {
    return ++this.s.seq;
  }

  /** A text message: `wire` is the body as it leaves (sealed in an encrypted room), `body` the words kept here. */
  draft({ id, seq, room, body, wire = body, emergency = false, kind, replyTo, device, now }) {
    const msg = { id, room, kind: kind ?? (emergency ? 'alert' : 'chat'), priority: emergency ? 'emergency' : 'normal', body: wire, seq };
    // The message this one answers (a queue change names its booking): servers stamp it after that one.
    if (replyTo) msg.reply_to = replyTo;
    const rec = { ...msg, body, from: this.me(), device, mine: true, local: 'queued', cursor: null, created: now, at: now, trail: { queued: now } };
    return { msg, rec };
  }

  /**
   * Puts `msg` (as it goes on the wire) in the outbox and `rec` (as the screen shows it) with
   * the messages; returns the ops that make both durable, which must commit before it is sent.
   * A message without a `seq` gets the next one.
   */
  queue(msg, rec, now) {
    const S = this.s;
    if (msg.seq === undefined) msg.seq = ++S.seq;
    const entry = { id: msg.id, msg, created: rec.created ?? now };
    S.msgs.set(msg.id, rec);
    S.outbox.set(msg.id, entry);
    return [
      ['kv', 'put', S.seq, 'seq'],
      ['messages', 'put', rec],
      ['outbox', 'put', entry],
    ];
  }

  /**
   * The room is on screen: marks it seen here (`seen` tells whether that changed, for the
   * page to save) and returns the `read` for its newest message when another user's message
   * is newer than the last one read on this connection. `canRead(rec)`: whether this device
   * could open it; a message it cannot open is not reported read.
   */
  read(room, { canRead, link }) {
    const S = this.s;
    let newest = null;
    let other = null;
    for (const m of S.msgs.values()) {
      if (m.room !== room || m.cursor == null) continue;
      if (!newest || m.cursor > newest.cursor) newest = m;
      if (!m.mine && (!other || m.cursor > other.cursor)) other = m;
    }
    const out = { seen: false, send: [] };
    const newestOther = other?.cursor ?? 0;
    if (!newest) return out;
    if (newestOther > (S.seen[room] ?? 0)) {
      S.seen[room] = newestOther;
      out.seen = true;
    }
    const s = S.session;
    const opened = !other || canRead(other);
    if (opened && s?.welcomed && link.open && newestOther > (s.readSent[room] ?? 0) && link.writable) {
      out.send.push({ v: 1, type: 'read', room, id: newest.id });
      s.readSent[room] = newest.cursor;
    }
    return out;
  }

  /**
   * The `history` request for the page before the oldest message held of `room`, or null
   * when none may go now (not welcomed, or one is already on its way).
   */
  history(room, link) {
    const S = this.s;
    if (!S.session?.welcomed || S.loadingOlder.has(room)) return null;
    let before = null;
    for (const m of S.msgs.values()) if (m.room === room && m.cursor != null && (before === null || m.cursor < before)) before = m.cursor;
    if (!link.writable) return [];
    S.loadingOlder.add(room);
    return [{ v: 1, type: 'history', room, before, limit: HISTORY_PAGE }];
  }

  /** Whether the server has not yet been asked about the room's history. */
  firstPage(room) {
    return this.s.more[room] === undefined;
  }

  // ---------- what the screens show ----------

  /**
   * A room's messages in the room's order (docs/protocol.md, "The order of a room"): by
   * HLC stamp, which the message keeps on every server, then by id; so the hub, the cloud
   * and every device list a room alike, whatever order the messages reached each in.
   * Messages without a stamp (not yet stored; or from a server that sent none) follow by
   * cursor, then by when they were written.
   */
  roomMessages(room) {
    const list = [];
    for (const m of this.s.msgs.values()) if (m.room === room) list.push(m);
    list.sort((a, b) => {
      const ah = a.hlc ?? Infinity;
      const bh = b.hlc ?? Infinity;
      if (ah !== bh) return ah < bh ? -1 : 1;
      if (ah !== Infinity) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
      const ac = a.cursor ?? Infinity;
      const bc = b.cursor ?? Infinity;
      if (ac !== bc) return ac - bc;
      return (a.created ?? a.at ?? 0) - (b.created ?? b.at ?? 0);
    });
    return list;
  }

  /**
   * *Mark all read*: every room with unread messages is seen here, and (when connected)
   * read on the server, which tells this person's other devices. Returns the ops that
   * save it and the `read` frames to send.
   */
  markAllRead({ canRead, link }) {
    const S = this.s;
    const rooms = new Set();
    for (const m of S.msgs.values()) if (!m.mine && m.cursor != null && m.cursor > (S.seen[m.room] ?? 0)) rooms.add(m.room);
    const send = [];
    for (const room of rooms) send.push(...this.read(room, { canRead, link }).send);
    return { ops: rooms.size ? [['kv', 'put', S.seen, 'seen']] : [], send };
  }

  unread(room) {
    const seen = this.s.seen[room] ?? 0;
    let n = 0;
    for (const m of this.s.msgs.values()) if (m.room === room && !m.mine && (m.cursor ?? 0) > seen) n++;
    return n;
  }

  /** The user pressed *Seen*: those emergencies do not ring again. Returns the ops to save it. */
  dismissAlerts() {
    const S = this.s;
    for (const id of S.alerts) S.dismissed.add(id);
    S.alerts = [];
    return [['kv', 'put', [...S.dismissed].slice(-500), 'dismissed']];
  }

  // ---------- forgetting ----------

  /**
   * What was held for the server's database, which was replaced (`resync`). Messages still
   * this device's to deliver stay: the outbox's, the refused ones, those still uploading.
   */
  dropServerData() {
    return this.#drop(true);
  }

  /**
   * Another person on this device (or nobody): nothing of the last one's stays, the outbox
   * included. `welcome` goes from the disk here; the caller replaces or clears it in memory.
   */
  forgetPerson() {
    const S = this.s;
    const ops = this.#drop(false);
    S.outbox = new Map();
    S.inflight.clear();
    ops.push(['outbox', 'clear'], ['kv', 'delete', 'welcome']);
    return ops;
  }

  /** After signing out has been committed (forgetPerson() and `seq` deleted). */
  signedOut() {
    Object.assign(this.s, { claims: null, welcome: null, authError: null, alerts: [], seq: 0 });
  }

  #drop(keepOwn) {
    const S = this.s;
    const keep = [];
    if (keepOwn) for (const rec of S.msgs.values()) if (S.outbox.has(rec.id) || rec.local === 'failed' || this.pendingUpload(rec.id)) keep.push(rec);
    S.msgs = new Map(keep.map((r) => [r.id, r]));
    S.receipts = new Map();
    S.seen = {};
    S.more = {};
    S.epoch = null;
    S.cursorMem = 0;
    const ops = [
      ['messages', 'clear'],
      ['receipts', 'clear'],
    ];
    for (const rec of keep) ops.push(['messages', 'put', rec]);
    ops.push(['kv', 'put', {}, 'seen'], ['kv', 'put', {}, 'more'], ['kv', 'delete', 'epoch'], ['kv', 'put', 0, 'cursor']);
    return ops;
  }
}
