// The Outpost field client: device protocol v1 (docs/protocol.md) over one WebSocket to
// the server that served this page, with everything durable in IndexedDB (db.js).

import { openDb, write, loadAll } from './db.js';
import { uuid4, uuid7 } from './uuid.js';
import { Connection, serverUrl } from './conn.js';
import * as E2E from './e2e.js';
import * as Media from './media.js';
import { bindAudio, ring } from './alerts.js';
import { bindKeys, forgetKeys, keyFromLink, keys, loadKeys, initRoomKeys, opener, outgoing, sealQueued } from './roomkeys.js';
import { $, RANK, bindView, followLog, renderAlerts, renderRoom, renderRooms, stickToEnd } from './view.js';

const ALERT_MAX_AGE_MS = 24 * 3600 * 1000; // older emergencies (a fresh device's replay) do not ring
const RETRY_MS = { rate_limited: 2000, internal: 3000, storage_full: 30000 };

const S = {
  db: null,
  device: null,
  token: null,
  claims: null, // decoded from the token, for display before `welcome`
  welcome: null, // { user, role, rooms } of the last welcome
  authError: null,
  epoch: null, // durable
  cursor: 0, // durable: highest in-order cursor stored on this device
  cursorMem: 0, // the same, including frames not yet committed
  seq: 0,
  msgs: new Map(),
  receipts: new Map(),
  outbox: new Map(),
  seen: {}, // room -> highest cursor the user has seen on this device
  more: {}, // room -> whether older history exists on the server
  dismissed: new Set(), // emergencies the user has acknowledged
  presence: new Map(), // user -> { status, last_seen }
  typing: new Map(), // room -> Map(user -> expiry ms)
  room: null,
  session: null, // { gen, welcomed, acked, readSent: {} } for the open socket
  inflight: new Set(), // outbox ids sent on this socket, awaiting `stored`
  alerts: [], // ids of emergencies on screen
};

let conn = null;

// ---------- helpers ----------

const me = () => S.welcome?.user ?? S.claims?.sub ?? null;
const role = () => S.welcome?.role ?? S.claims?.role ?? 'worker';
const rooms = () => S.welcome?.rooms ?? S.claims?.rooms ?? [];
const isWorker = () => role() === 'worker';
const serverName = () => (isWorker() ? 'hub' : 'server');
const isEncrypted = (room) => (S.welcome?.encrypted ?? []).includes(room);


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

const isEmergency = (m) => m.priority === 'emergency';

// Error codes in plain words (docs/protocol.md, Errors).
function plainError(code, message) {
  const where = serverName();
  switch (code) {
    case 'unauthenticated':
      return `This sign-in code is not accepted by the ${where}. Ask for a new sign-in link.`;
    case 'token_expired':
      return 'Your sign-in has expired. Ask for a new sign-in link.';
    case 'forbidden':
      return 'You are not a member of that room.';
    case 'unknown_room':
      return `That room does not exist on the ${where}.`;
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

// ---------- durable state ----------

async function load() {
  S.db = await openDb({
    onBlocked: () => notice('Outpost is open in another tab with an older version. Close that tab to continue.'),
    onReplaced: () => notice('Outpost was updated in another tab. Reload this page.'),
  });
  const { kv, messages, receipts, outbox, uploads } = await loadAll(S.db);
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
  loadKeys(kv);
  Media.loadUploads(uploads);
}

/** Drops what is held for the server; the outbox and its messages stay unless `all`. */
function resetLocal(ops, all) {
  const keep = [];
  for (const rec of S.msgs.values()) if (!all && (S.outbox.has(rec.id) || rec.local === 'failed' || Media.pending(rec.id))) keep.push(rec);
  S.msgs = new Map(keep.map((r) => [r.id, r]));
  S.receipts = new Map();
  S.seen = {};
  S.more = {};
  S.epoch = null;
  S.cursorMem = 0;
  ops.push(['messages', 'clear'], ['receipts', 'clear']);
  for (const rec of keep) ops.push(['messages', 'put', rec]);
  ops.push(['kv', 'put', {}, 'seen'], ['kv', 'put', {}, 'more'], ['kv', 'delete', 'epoch'], ['kv', 'put', 0, 'cursor']);
  if (all) {
    S.outbox = new Map();
    S.inflight.clear();
    ops.push(['outbox', 'clear'], ['uploads', 'clear'], ['kv', 'delete', 'welcome']);
    Media.reset();
    forgetKeys(ops);
  }
}

// ---------- incoming frames: applied in order, committed in batches, then acked ----------

const inbox = [];
let draining = false;

function enqueue(frame, gen) {
  inbox.push([frame, gen]);
  if (!draining) drain();
}

async function drain() {
  draining = true;
  try {
    while (inbox.length) {
      const batch = inbox.splice(0, 500);
      const ops = [];
      const after = [];
      const before = S.cursorMem;
      let resynced = false;
      for (const [f, gen] of batch) {
        if (f.type === 'resync') resynced = true;
        try {
          handle(f, gen, ops, after);
        } catch (e) {
          console.error('frame', f, e);
        }
      }
      if (S.cursorMem !== before || resynced) ops.push(['kv', 'put', S.cursorMem, 'cursor']);
      const cursor = S.cursorMem;
      try {
        await write(S.db, ops);
        S.cursor = cursor;
      } catch (e) {
        notice(`This device could not save messages (${e.message}). Free some space.`);
        continue;
      }
      for (const fn of after) fn();
      sendAck();
      render();
      maybeRead();
    }
  } finally {
    draining = false;
  }
}

function handle(f, gen, ops, after) {
  switch (f.type) {
    case 'welcome': {
      if (S.welcome && S.welcome.user !== f.user) resetLocal(ops, true);
      S.welcome = { user: f.user, role: f.role ?? S.claims?.role ?? 'worker', rooms: f.rooms ?? [], encrypted: f.encrypted ?? [] };
      ops.push(['kv', 'put', S.welcome, 'welcome']);
      if (!S.epoch) {
        S.epoch = f.epoch;
        ops.push(['kv', 'put', f.epoch, 'epoch']);
      }
      S.presence.clear();
      S.typing.clear();
      if (S.session && S.session.gen === gen) S.session.welcomed = true;
      conn.resetBackoff();
      after.push(flushOutbox, maybeRead, requestFirstHistory, () => Media.kick({ signedIn: true }));
      break;
    }
    case 'resync': {
      resetLocal(ops, false);
      S.epoch = f.epoch;
      ops.push(['kv', 'put', f.epoch, 'epoch']);
      break;
    }
    case 'stored': {
      const rec = S.msgs.get(f.id);
      if (rec) {
        if (RANK[rec.local ?? 'stored'] < RANK.stored) rec.local = 'stored';
        rec.cursor = f.cursor;
        rec.trail = { ...rec.trail, stored: rec.trail?.stored ?? Date.now() };
        ops.push(['messages', 'put', rec]);
      }
      dropFromOutbox(f.id, ops);
      break;
    }
    case 'message': {
      if (!f.msg) break;
      addMessage(f.msg, f.cursor, { history: false }, ops, after);
      if (!f.ahead && f.cursor > S.cursorMem) S.cursorMem = f.cursor;
      break;
    }
    case 'receipt': {
      const r = S.receipts.get(f.id) ?? { id: f.id, by: {}, at: {}, best: 'stored' };
      const prev = r.by[f.by];
      if (!prev || RANK[f.state] > RANK[prev]) r.by[f.by] = f.state;
      if (r.at[f.state] === undefined) r.at[f.state] = f.at ?? Date.now();
      if (RANK[f.state] > RANK[r.best]) r.best = f.state;
      S.receipts.set(f.id, r);
      ops.push(['receipts', 'put', r]);
      if (!f.ahead && f.cursor > S.cursorMem) S.cursorMem = f.cursor;
      break;
    }
    case 'history': {
      for (const e of f.messages ?? []) addMessage(e.msg, e.cursor, { history: true }, ops, after);
      S.more[f.room] = !!f.more;
      ops.push(['kv', 'put', S.more, 'more']);
      loadingOlder.delete(f.room);
      break;
    }
    case 'typing': {
      if (f.user === me()) break;
      const m = S.typing.get(f.room) ?? new Map();
      if (f.active) m.set(f.user, Date.now() + 8000);
      else m.delete(f.user);
      S.typing.set(f.room, m);
      break;
    }
    case 'presence': {
      S.presence.set(f.user, { status: f.status, last_seen: f.last_seen ?? null });
      if (f.status === 'offline') for (const m of S.typing.values()) m.delete(f.user);
      break;
    }
    case 'error':
      onError(f, ops);
      break;
    default:
      break; // pong, and frames of later versions
  }
}

function dropFromOutbox(id, ops) {
  S.inflight.delete(id);
  if (S.outbox.delete(id)) ops.push(['outbox', 'delete', id]);
}

function addMessage(msg, cursor, { history }, ops, after) {
  const mine = msg.from === me();
  let rec = S.msgs.get(msg.id);
  const fresh = !rec;
  if (!rec) {
    rec = { ...msg, cursor, mine, local: mine ? 'stored' : null, trail: mine ? { stored: msg.at } : {} };
  } else {
    const { local, trail, created } = rec;
    // This device wrote it: keep the words it sealed rather than the envelope coming back.
    const body = E2E.isSealed(msg.body) && !E2E.isSealed(rec.body) ? rec.body : msg.body;
    Object.assign(rec, msg, { cursor, mine, local, trail, created, body });
    if (mine && RANK[rec.local ?? 'stored'] < RANK.stored) {
      rec.local = 'stored';
      rec.trail = { ...rec.trail, stored: rec.trail?.stored ?? msg.at };
    }
  }
  S.msgs.set(rec.id, rec);
  ops.push(['messages', 'put', rec]);
  // A message of ours that the server holds is no longer this device's to send.
  if (S.outbox.has(msg.id)) dropFromOutbox(msg.id, ops);
  if (fresh && !mine && !history && isEmergency(rec) && !S.dismissed.has(rec.id) && Date.now() - (rec.at ?? 0) < ALERT_MAX_AGE_MS) {
    S.alerts.push(rec.id);
    after.push(ring);
  }
}

function onError(f, ops) {
  const text = plainError(f.code, f.message);
  if (f.code === 'unauthenticated' || f.code === 'token_expired') {
    S.authError = text; // the server closes with 4001 next
    return;
  }
  if (f.id && S.outbox.has(f.id)) {
    const rec = S.msgs.get(f.id);
    if (RETRY_MS[f.code]) {
      S.inflight.delete(f.id);
      setTimeout(flushOutbox, RETRY_MS[f.code]);
      notice(`Not sent yet: ${text}`);
      return;
    }
    if (rec) {
      rec.local = 'failed';
      rec.error = text;
      ops.push(['messages', 'put', rec]);
    }
    dropFromOutbox(f.id, ops);
    notice(`Message not sent: ${text}`);
    return;
  }
  notice(text);
}

// ---------- outgoing ----------

function sendAck() {
  const s = S.session;
  if (!s || !s.welcomed || !conn.isOpen || s.gen !== conn.gen) return;
  if (S.cursor > s.acked) {
    if (conn.send({ v: 1, type: 'ack', cursor: S.cursor })) s.acked = S.cursor;
  }
}

function flushOutbox() {
  if (!S.session?.welcomed) return;
  const pending = [...S.outbox.values()].sort(
    (a, b) => (a.msg.priority === 'emergency' ? 0 : 1) - (b.msg.priority === 'emergency' ? 0 : 1) || a.msg.seq - b.msg.seq,
  );
  for (const e of pending) {
    if (S.inflight.has(e.id)) continue;
    if (isEncrypted(e.msg.room) && !E2E.isSealed(e.msg.body)) {
      sealQueued(e); // written before this device knew the room is encrypted
      continue;
    }
    if (!conn.send({ v: 1, type: 'send', msg: e.msg })) break;
    S.inflight.add(e.id);
  }
}

async function compose(room, text, emergency) {
  const id = uuid7();
  const seq = ++S.seq;
  const now = Date.now();
  const body = { text };
  let sealed;
  try {
    sealed = await outgoing(room, id, body);
  } catch (e) {
    notice(`Not sent: ${e.message}.`); // (a gap in seq is harmless)
    return false;
  }
  // The outbox (and the wire) get the sealed body; the record keeps the words for this screen.
  const msg = { id, room, kind: emergency ? 'alert' : 'chat', priority: emergency ? 'emergency' : 'normal', body: sealed, seq };
  const rec = { ...msg, body, from: me(), device: S.device, mine: true, local: 'queued', cursor: null, created: now, at: now, trail: { queued: now } };
  await queueMessage(msg, rec);
  return true;
}

/**
 * Puts `msg` (as it goes on the wire) in the outbox and `rec` (as this screen shows it)
 * with the messages, durable on this device before it leaves it; `ops` join the same
 * transaction. A message without a `seq` gets the next one.
 */
async function queueMessage(msg, rec, ops = []) {
  if (msg.seq === undefined) msg.seq = ++S.seq;
  const entry = { id: msg.id, msg, created: rec.created ?? Date.now() };
  S.msgs.set(msg.id, rec);
  S.outbox.set(msg.id, entry);
  render();
  try {
    await write(S.db, [['kv', 'put', S.seq, 'seq'], ['messages', 'put', rec], ['outbox', 'put', entry], ...ops]);
  } catch (e) {
    notice(`This device could not save the message (${e.message}). It will still be sent if the ${serverName()} is reachable.`);
  }
  flushOutbox();
  render();
}

function roomMessages(room) {
  const list = [];
  for (const m of S.msgs.values()) if (m.room === room) list.push(m);
  list.sort((a, b) => {
    const ac = a.cursor ?? Infinity;
    const bc = b.cursor ?? Infinity;
    if (ac !== bc) return ac - bc;
    return (a.created ?? a.at ?? 0) - (b.created ?? b.at ?? 0);
  });
  return list;
}

function unread(room) {
  const seen = S.seen[room] ?? 0;
  let n = 0;
  for (const m of S.msgs.values()) if (m.room === room && !m.mine && (m.cursor ?? 0) > seen) n++;
  return n;
}

let seenSaveTimer = null;
function maybeRead() {
  const room = S.room;
  if (!room || document.visibilityState !== 'visible') return;
  let newest = null;
  let other = null;
  for (const m of S.msgs.values()) {
    if (m.room !== room || m.cursor == null) continue;
    if (!newest || m.cursor > newest.cursor) newest = m;
    if (!m.mine && (!other || m.cursor > other.cursor)) other = m;
  }
  const newestOther = other?.cursor ?? 0;
  if (!newest) return;
  if (newestOther > (S.seen[room] ?? 0)) {
    S.seen[room] = newestOther;
    clearTimeout(seenSaveTimer);
    seenSaveTimer = setTimeout(() => write(S.db, [['kv', 'put', S.seen, 'seen']]).catch(() => {}), 300);
    renderRooms();
  }
  const s = S.session;
  // An encrypted message this device cannot open (yet) is not "read": no receipt until it opens.
  const opened = !other || ['plain', 'open'].includes(opener.view(other).state);
  if (opened && s?.welcomed && conn.isOpen && newestOther > (s.readSent[room] ?? 0)) {
    if (conn.send({ v: 1, type: 'read', room, id: newest.id })) s.readSent[room] = newest.cursor;
  }
}

const loadingOlder = new Set();
function requestHistory(room) {
  if (!S.session?.welcomed || loadingOlder.has(room)) return;
  let before = null;
  for (const m of S.msgs.values()) if (m.room === room && m.cursor != null && (before === null || m.cursor < before)) before = m.cursor;
  if (conn.send({ v: 1, type: 'history', room, before, limit: 50 })) loadingOlder.add(room);
  renderRoom();
}
function requestFirstHistory() {
  if (S.room && S.more[S.room] === undefined) requestHistory(S.room);
}

let typingSent = 0;
let typingStop = null;
function onTyping() {
  const room = S.room;
  if (!room || !S.session?.welcomed) return;
  const now = Date.now();
  if (now - typingSent > 3000) {
    conn.send({ v: 1, type: 'typing', room, active: true });
    typingSent = now;
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => stopTyping(room), 4000);
}
function stopTyping(room) {
  clearTimeout(typingStop);
  if (typingSent && room && S.session?.welcomed) conn.send({ v: 1, type: 'typing', room, active: false });
  typingSent = 0;
}

function dismissAlerts() {
  for (const id of S.alerts) S.dismissed.add(id);
  S.alerts = [];
  write(S.db, [['kv', 'put', [...S.dismissed].slice(-500), 'dismissed']]).catch(() => {});
  renderAlerts();
}

// ---------- notices ----------

function notice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

// ---------- rendering ----------

function render() {
  const signedIn = !!S.token && !S.authError;
  $('signin').hidden = signedIn;
  $('app').hidden = !signedIn;
  $('signout').hidden = !S.token;
  $('whoami').textContent = me() ? `${me()}${role() !== 'worker' ? ` (${role()})` : ''}` : '';
  $('device-id').textContent = S.device;
  if (S.authError) {
    $('signin-error').textContent = S.authError;
    $('signin-error').hidden = false;
  }
  renderConn();
  renderAlerts();
  if (!signedIn) return;
  $('app').classList.toggle('in-room', !!S.room);
  $('back').hidden = !S.room;
  renderRooms();
  renderRoom();
}

function renderConn() {
  const box = $('conn');
  if (!S.token || !conn) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const n = S.outbox.size + Media.pendingCount();
  const pending = n ? ` \u00B7 ${n} pending` : '';
  let text;
  let cls;
  let retry = false;
  const where = serverName();
  if (S.authError) {
    text = 'Signed out';
    cls = 'bad';
  } else if (conn.state === 'open' && S.session?.welcomed) {
    text = `Connected${pending}`;
    cls = 'ok';
  } else if (!navigator.onLine) {
    text = `Offline${pending}`;
    cls = 'bad';
  } else if (conn.state === 'waiting') {
    const secs = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
    text = `The ${where} is not reachable. Reconnecting in ${secs} s${pending}`;
    cls = 'warn';
    retry = true;
  } else {
    text = `Connecting to the ${where}\u2026${pending}`;
    cls = 'warn';
  }
  box.className = `conn ${cls}`;
  box.dataset.state = cls;
  $('conn-text').textContent = text;
  $('retry').hidden = !retry;
}

// ---------- navigation ----------

function openRoom(room) {
  if (!rooms().includes(room)) return;
  if (location.hash !== `#room/${encodeURIComponent(room)}`) location.hash = `room/${encodeURIComponent(room)}`;
  else routeChanged();
}

/** A sign-in link (/#token=...) opened on a page that is already loaded, or at start. */
function tokenFromLink() {
  const t = /^#token=([^&]+)/.exec(location.hash);
  if (!t) return false;
  history.replaceState(null, '', location.pathname);
  signIn(decodeURIComponent(t[1])).then(routeChanged);
  return true;
}

function routeChanged() {
  if (tokenFromLink()) return;
  keyFromLink();
  const m = /^#room\/(.+)$/.exec(location.hash);
  const room = m ? decodeURIComponent(m[1]) : null;
  const next = room && (rooms().length === 0 || rooms().includes(room)) ? room : null;
  if (next !== S.room) {
    if (S.room) stopTyping(S.room);
    S.room = next;
    Media.roomChanged();
    $('message').value = '';
    render();
    if (next) {
      stickToEnd();
      requestFirstHistory();
      maybeRead();
    }
  } else render();
}

// ---------- session ----------

function startConnection() {
  if (!conn) {
    conn = new Connection(serverUrl(), {
      onOpen(gen) {
        S.session = { gen, welcomed: false, acked: 0, readSent: {} };
        S.inflight.clear();
        conn.send({ v: 1, type: 'hello', token: S.token, device: S.device, cursor: S.epoch ? S.cursor : null, epoch: S.epoch });
      },
      onFrame(f, gen) {
        enqueue(f, gen);
      },
      onClose({ code }) {
        S.session = null;
        S.inflight.clear();
        S.typing.clear();
        if (code === 4001) {
          S.authError ??= `This sign-in was refused by the ${serverName()}. Ask for a new sign-in link.`;
          render();
          return false;
        }
        return true;
      },
      onStatus() {
        render();
      },
    });
  }
  conn.start();
}

async function signIn(raw) {
  const token = raw.replace(/\s+/g, '');
  const claims = decodeClaims(token);
  if (token.split('.').length !== 3 || !claims) {
    $('signin-error').textContent = 'That does not look like a sign-in code. Copy the whole code and try again.';
    $('signin-error').hidden = false;
    return;
  }
  const known = S.welcome?.user ?? S.claims?.sub;
  if (known && claims.sub && known !== claims.sub) {
    // Another person on this device: nothing of the previous one's stays.
    const ops = [];
    resetLocal(ops, true);
    S.welcome = null;
    await write(S.db, ops);
  }
  S.token = token;
  S.claims = claims;
  S.authError = null;
  localStorage.setItem('outpost.token', token);
  $('signin-error').hidden = true;
  $('token').value = '';
  if (conn) {
    conn.stop();
    conn.state = 'idle';
  }
  render();
  startConnection();
}

async function signOut() {
  const n = S.outbox.size + Media.pendingCount();
  if (n && !confirm(`${n} message${n > 1 ? 's have' : ' has'} not been sent yet and will be lost. Sign out anyway?`)) return;
  conn?.stop();
  const ops = [];
  resetLocal(ops, true);
  ops.push(['kv', 'delete', 'seq']);
  await write(S.db, ops).catch(() => {});
  localStorage.removeItem('outpost.token');
  Object.assign(S, { token: null, claims: null, welcome: null, authError: null, room: null, alerts: [], seq: 0 });
  S.presence.clear();
  history.replaceState(null, '', location.pathname);
  render();
}

// ---------- start ----------

function bindUi() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value);
  });
  $('signout').addEventListener('click', signOut);
  $('back').addEventListener('click', () => {
    location.hash = '';
  });
  $('retry').addEventListener('click', () => conn?.retryNow());
  $('notice-close').addEventListener('click', () => {
    $('notice').hidden = true;
  });
  $('older').addEventListener('click', () => S.room && requestHistory(S.room));
  const input = $('message');
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !S.room) return;
    input.value = '';
    stopTyping(S.room);
    compose(S.room, text, false).then((ok) => {
      if (!ok && !input.value) input.value = text;
    });
    input.focus();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  input.addEventListener('input', onTyping);
  $('emergency').addEventListener('click', () => {
    if (!S.room) return;
    $('confirm-text').textContent = `Everyone in # ${S.room}${isWorker() ? ' and the hospital' : ''} will be alerted at once.`;
    $('confirm-details').value = input.value.trim();
    $('confirm').returnValue = '';
    $('confirm').showModal();
  });
  $('confirm').addEventListener('close', () => {
    if ($('confirm').returnValue !== 'send' || !S.room) return;
    const details = $('confirm-details').value.trim();
    if (details && details === input.value.trim()) input.value = '';
    compose(S.room, details || 'Emergency: help needed now', true);
  });
  followLog();
  bindKeys();
  window.addEventListener('hashchange', routeChanged);
  document.addEventListener('visibilitychange', () => {
    if (S.session?.welcomed) conn.send({ v: 1, type: 'presence', status: document.visibilityState === 'visible' ? 'online' : 'away' });
    maybeRead();
  });
  window.addEventListener('online', () => {
    conn?.retryNow();
    renderConn();
  });
  window.addEventListener('offline', renderConn);
  bindAudio();
  // Countdown in the banner, expiry of typing indicators.
  setInterval(() => {
    renderConn();
    if (S.room && S.typing.get(S.room)?.size) renderRoom();
  }, 1000);
}

async function main() {
  S.device = localStorage.getItem('outpost.device');
  if (!S.device) {
    S.device = uuid4();
    localStorage.setItem('outpost.device', S.device);
  }
  bindView({ S, me, rooms, isWorker, serverName, isEncrypted, isEmergency, roomMessages, unread, loadingOlder, openRoom, dismissAlerts, keys, opener, media: Media });
  initRoomKeys({
    S,
    notice,
    render,
    flushOutbox,
    serverName,
    isEncrypted,
    opened() {
      render();
      maybeRead();
    },
  });
  Media.initMedia({ S, render, notice, queueMessage, me, serverName, isEncrypted, stopTyping });
  bindUi();
  Media.bindComposer();
  try {
    await load();
  } catch (e) {
    notice(`This browser cannot keep messages on the device (${e.message}).`);
    return;
  }
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/sw.js').catch(() => {});
  }
  if (!tokenFromLink()) {
    const token = localStorage.getItem('outpost.token');
    if (token) {
      S.token = token;
      S.claims = decodeClaims(token);
      startConnection();
    }
    routeChanged();
  }
  render();
  window.outpost = S; // for debugging from the console
}

main();
