// The Outpost field client: device protocol v1 (docs/protocol.md) over one WebSocket to
// the server that served this page, with everything durable in IndexedDB (db.js). This file
// is the wiring: it feeds protocol.js (the protocol's rules, no page) with frames, user
// actions and the socket's state, commits what it returns to IndexedDB, sends the frames it
// returns, and draws the screens (view.js). It also owns sign-in and navigation.

import { openDb, write, loadAll } from './db.js';
import { uuid4, uuid7 } from './uuid.js';
import { Connection, serverUrl } from './conn.js';
import * as Media from './media.js';
import { Protocol, decodeClaims, initialState, isEmergency } from './protocol.js';
import { bindAudio, ring } from './alerts.js';
import { bindKeys, forgetKeys, keyFromLink, keys, loadKeys, initRoomKeys, opener, outgoing, sealQueued } from './roomkeys.js';
import { clearPresence, clearTyping, initPresence, onEvent as presenceEvent, onTyping, sendPresence, stopTyping } from './presence.js';
import { $, bindView, followLog, renderAlerts, renderRoom, renderRooms, stickToEnd } from './view.js';
import { FORMS, KINDS, build } from './clinical.js';
import * as Queues from './queuepanel.js';
import * as Records from './recordpanel.js';
import * as Calls from './callpanel.js';

const S = {
  ...initialState(), // protocol.js's part
  db: null,
  device: null,
  presence: new Map(), // user -> { status, last_seen }
  typing: new Map(), // room -> Map(user -> expiry ms)
  room: null,
};

let conn = null;
const proto = new Protocol(S, { pendingUpload: (id) => Media.pending(id) });

// ---------- helpers ----------

const me = () => proto.me();
const role = () => proto.role();
const rooms = () => proto.rooms();
const isWorker = () => proto.isWorker();
const serverName = () => proto.where();
const isEncrypted = (room) => proto.isEncrypted(room);

/** The socket as protocol.js needs it; none yet is a socket that takes nothing. */
const link = () => conn?.link ?? { gen: 0, open: false, writable: false };
const transmit = (frames) => {
  for (const f of frames) conn.send(f);
};

export { decodeClaims };

// ---------- durable state ----------

async function load() {
  S.db = await openDb({
    onBlocked: () => notice('Outpost is open in another tab with an older version. Close that tab to continue.'),
    onReplaced: () => notice('Outpost was updated in another tab. Reload this page.'),
  });
  const all = await loadAll(S.db);
  proto.load(all);
  loadKeys(all.kv);
  Queues.loadQueues(all.kv);
  Records.loadRecords(all.kv);
  Media.loadUploads(all.uploads);
}

/** What the page holds beside protocol.js for a person, dropped when another one (or none) signs in. */
function forgetPage(ops) {
  Calls.reset();
  ops.push(['uploads', 'clear']);
  Media.reset();
  forgetKeys(ops);
  Queues.forgetQueues(ops);
  Records.forgetRecords(ops);
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
      const frames = inbox.splice(0, 500);
      const batch = proto.batch();
      const queues = []; // queue messages among them: the open queue is read again once they are saved
      const records = []; // record edits among them: the open record likewise
      for (const [f, gen] of frames) {
        try {
          const q = Queues.watch(f);
          if (q) queues.push(q);
          const r = Records.watch(f);
          if (r) records.push(r);
          for (const ev of proto.receive(batch, f, gen, Date.now())) onEvent(ev, batch);
        } catch (e) {
          console.error('frame', f, e);
        }
      }
      const cursor = proto.settle(batch);
      try {
        await write(S.db, batch.ops);
        proto.committed(cursor);
      } catch (e) {
        notice(`This device could not save messages (${e.message}). Free some space.`);
        continue;
      }
      for (const ev of batch.after) {
        if (ev.type === 'session') {
          flushOutbox();
          maybeRead();
          requestFirstHistory();
          Media.kick({ signedIn: true });
          Queues.sessionStarted();
          Records.sessionStarted();
        } else if (ev.type === 'alert') ring(S.msgs.get(ev.id));
      }
      if (queues.length) Queues.arrived(queues);
      if (records.length) Records.arrived(records);
      transmit(proto.ack(link()));
      render();
      maybeRead();
    }
  } finally {
    draining = false;
  }
}

/** What a frame asks of the page at once (protocol.js, receive()). */
function onEvent(ev, batch) {
  switch (ev.type) {
    case 'welcome':
      clearPresence();
      conn.resetBackoff();
      break;
    case 'forget':
      forgetPage(batch.ops);
      break;
    case 'typing':
    case 'presence':
      presenceEvent(ev, Date.now());
      break;
    case 'notice':
      notice(ev.text);
      break;
    case 'retry':
      setTimeout(flushOutbox, ev.ms);
      break;
    case 'token':
      // The server renewed the sign-in: the next connection (and media requests) use it.
      localStorage.setItem('outpost.token', ev.token);
      break;
    case 'call':
      Calls.onFrame(ev.frame);
      break;
  }
}

// ---------- outgoing ----------

function flushOutbox() {
  const { send, seal } = proto.flush(link());
  for (const e of seal) sealQueued(e); // written before this device knew the room is encrypted
  transmit(send);
}

async function compose(room, text, emergency) {
  return composeBody(room, { text }, { emergency });
}

/**
 * Writes `body` (a message of `kind`) to the outbox: sealed in an encrypted room, then sent.
 * `replyTo`: the message it answers (a queue change names its booking).
 */
async function composeBody(room, body, { emergency = false, kind, replyTo } = {}) {
  const id = uuid7();
  const seq = proto.nextSeq();
  const now = Date.now();
  let sealed;
  try {
    sealed = await outgoing(room, id, body);
  } catch (e) {
    notice(`Not sent: ${e.message}.`); // (a gap in seq is harmless)
    return false;
  }
  // The outbox (and the wire) get the sealed body; the record keeps the words for this screen.
  const { msg, rec } = proto.draft({ id, seq, room, body, wire: sealed, emergency, kind, replyTo, device: S.device, now });
  await queueMessage(msg, rec);
  return true;
}

/**
 * Puts `msg` (as it goes on the wire) in the outbox and `rec` (as this screen shows it)
 * with the messages, durable on this device before it leaves it; `ops` join the same
 * transaction. A message without a `seq` gets the next one.
 */
async function queueMessage(msg, rec, ops = []) {
  const queued = proto.queue(msg, rec, Date.now());
  render();
  try {
    await write(S.db, [...queued, ...ops]);
  } catch (e) {
    notice(`This device could not save the message (${e.message}). It will still be sent if the ${serverName()} is reachable.`);
  }
  flushOutbox();
  render();
}

let seenSaveTimer = null;
function maybeRead() {
  const room = S.room;
  if (!room || document.visibilityState !== 'visible') return;
  // An encrypted message this device cannot open (yet) is not "read": no receipt until it opens.
  const canRead = (m) => ['plain', 'open'].includes(opener.view(m).state);
  const { seen, send } = proto.read(room, { canRead, link: link() });
  if (seen) {
    clearTimeout(seenSaveTimer);
    seenSaveTimer = setTimeout(() => write(S.db, [['kv', 'put', S.seen, 'seen']]).catch(() => {}), 300);
    renderRooms();
  }
  transmit(send);
}

/** *Mark all read*: every room's unread count clears, here and on this person's other devices. */
function markAllRead() {
  const canRead = (m) => ['plain', 'open'].includes(opener.view(m).state);
  const { ops, send } = proto.markAllRead({ canRead, link: link() });
  if (ops.length) write(S.db, ops).catch(() => {});
  transmit(send);
  renderRooms();
}

function requestHistory(room) {
  const send = proto.history(room, link());
  if (!send) return;
  transmit(send);
  renderRoom();
}
function requestFirstHistory() {
  if (S.room && proto.firstPage(S.room)) requestHistory(S.room);
}

function dismissAlerts() {
  write(S.db, proto.dismissAlerts()).catch(() => {});
  renderAlerts();
}

// ---------- notices ----------

/** Tells the user something: a problem by default; `info` for news (a booking confirmed). */
function notice(text, kind = 'problem') {
  $('notice-text').textContent = text;
  $('notice').classList.toggle('info', kind === 'info');
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
  Queues.draw();
  Records.draw();
  Calls.draw();
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
    Queues.roomChanged();
    Records.roomChanged();
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
        conn.send(proto.opened(gen, { token: S.token, device: S.device }));
      },
      onFrame(f, gen) {
        enqueue(f, gen);
      },
      onClose({ code }) {
        proto.closed();
        clearTyping();
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
    const ops = proto.forgetPerson();
    forgetPage(ops);
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
  Calls.reset(); // the other side hears the hang-up while the socket is still open
  conn?.stop();
  const ops = proto.forgetPerson();
  forgetPage(ops);
  ops.push(['kv', 'delete', 'seq']);
  await write(S.db, ops).catch(() => {});
  localStorage.removeItem('outpost.token');
  proto.signedOut();
  S.token = null;
  S.room = null;
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
  bindEventForm();
  Queues.bindQueue();
  Records.bindRecord();
  Calls.bindCalls();
  $('mark-all-read').addEventListener('click', markAllRead);
  $('patient-filter').addEventListener('input', (e) => {
    S.patientFilter = e.target.value.trim();
    render();
  });
  followLog();
  bindKeys();
  window.addEventListener('hashchange', routeChanged);
  document.addEventListener('visibilitychange', () => {
    sendPresence(document.visibilityState === 'visible');
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

// ---------- clinical events: a form per kind (docs/workflows.md) ----------

function eventFields(kind) {
  const fields = FORMS[kind] ?? [];
  $('event-fields').replaceChildren(
    ...fields.map((f) => {
      const id = `ev-${f.path.replace(/\W/g, '-')}`;
      const label = document.createElement('label');
      label.htmlFor = id;
      label.textContent = `${f.label}${f.unit ? ` (${f.unit})` : ''}${f.required ? '' : ' (optional)'}`;
      let input;
      if (f.type === 'choice') {
        input = document.createElement('select');
        input.append(new Option('', ''), ...f.options.map((o) => new Option(o, o)));
      } else if (f.type === 'long') {
        input = document.createElement('textarea');
        input.rows = 2;
      } else {
        input = document.createElement('input');
        input.type = 'text';
        if (f.type === 'number') input.inputMode = 'decimal';
        input.autocomplete = 'off';
      }
      input.id = id;
      input.dataset.path = f.path;
      const row = document.createElement('div');
      row.className = 'field';
      row.append(label, input);
      return row;
    }),
  );
}

function bindEventForm() {
  const dialog = $('event-dialog');
  const kind = $('event-kind');
  kind.replaceChildren(...Object.entries(KINDS).map(([k, title]) => new Option(title, k)));
  kind.addEventListener('change', () => {
    $('event-error').hidden = true;
    eventFields(kind.value);
  });
  $('log-event').addEventListener('click', () => {
    if (!S.room) return;
    $('event-error').hidden = true;
    eventFields(kind.value);
    dialog.showModal();
  });
  $('event-cancel').addEventListener('click', () => dialog.close());
  $('event-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!S.room) return;
    const values = {};
    for (const input of $('event-fields').querySelectorAll('[data-path]')) values[input.dataset.path] = input.value;
    const made = build(kind.value, values, { me: me(), now: Date.now() });
    if (!made.body) {
      const f = (FORMS[kind.value] ?? []).find((x) => x.path === made.field);
      const err = $('event-error');
      err.textContent = `${f?.label ?? made.field} ${made.problem}.`;
      err.hidden = false;
      return;
    }
    dialog.close();
    composeBody(S.room, made.body, { kind: kind.value, emergency: kind.value === 'clinical.emergency' });
  });
}

async function main() {
  S.device = localStorage.getItem('outpost.device');
  if (!S.device) {
    S.device = uuid4();
    localStorage.setItem('outpost.device', S.device);
  }
  const roomMessages = (room) => proto.roomMessages(room);
  const unread = (room) => proto.unread(room);
  const openRecord = (patient) => Records.openRecord(patient);
  const call = (room, to, video) => Calls.place(room, to, video);
  bindView({ S, me, rooms, isWorker, serverName, isEncrypted, isEmergency, roomMessages, unread, loadingOlder: S.loadingOlder, openRoom, dismissAlerts, keys, opener, media: Media, openRecord, call });
  initPresence(S, (f) => conn.send(f));
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
  Queues.initQueue({ S, me, composeBody, notice, isEncrypted, serverName, opener });
  Records.initRecord({ S, me, role, composeBody, notice, isEncrypted, serverName, opener });
  Calls.initCalls({ S, me, serverName, composeBody, notice, send: (f) => conn?.send(f) ?? false });
  // Opened by a LAN address over plain HTTP (no certificate yet, or it expired): say
  // plainly what does not work here; 127.0.0.1 and localhost count as secure.
  $('insecure').hidden = window.isSecureContext;
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
