// Rendering of the rooms, a room and the emergency banner. The state is protocol.js's and
// app.js's; app.js hands it and its helpers over once with bindView().

import { available } from './e2e.js';
import { RANK } from './protocol.js';
import { KINDS, isClinical, patientsOf, rows } from './clinical.js';
import * as Queue from './queue.js';
import * as Rec from './record.js';
import * as Call from './call.js';

export const $ = (id) => document.getElementById(id);

let A = null; // what app.js shares: S, me(), rooms(), ...
let S = null;

export function bindView(app) {
  A = app;
  S = app.S;
}

const STATES = ['queued', 'stored', 'forwarded', 'delivered', 'read'];
const ICON = { queued: '\u25F7', stored: '\u2713', forwarded: '\u2713\u2713', delivered: '\u2713\u2713', read: '\u2713\u2713', failed: '!' };

function labels() {
  return A.isWorker()
    ? { queued: 'Queued on this phone', stored: 'On the hub', forwarded: 'At the hospital', delivered: 'Delivered', read: 'Read', failed: 'Not sent' }
    : { queued: 'Queued on this device', stored: 'On the hospital server', forwarded: 'At the village hub', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };
}

const pad = (n) => String(n).padStart(2, '0');
export function clock(ms) {
  const d = new Date(ms);
  const now = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === now.toDateString()) return hm;
  return `${d.getDate()} ${d.toLocaleString('en', { month: 'short' })} ${hm}`;
}
function ago(ms) {
  const s = (Date.now() - ms) / 1000;
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `at ${clock(ms)}`;
}

/** What a message shows: its text, or why an encrypted one cannot be shown (yet). */
export function shown(m) {
  const v = A.opener.view(m);
  switch (v.state) {
    case 'plain':
    case 'open':
      return { text: bodyText(v.body), locked: false, body: v.body };
    case 'pending':
      return { text: '\u{1F512} Opening\u2026', locked: true };
    case 'nokey':
      return { text: `\u{1F512} Encrypted message (key ${v.kid} not on this device)`, locked: true };
    case 'insecure':
      return { text: `\u{1F512} Encrypted message (this page cannot decrypt: open the ${A.serverName()}'s https:// address)`, locked: true };
    default:
      return { text: '\u{1F512} Cannot be opened with the key on this device', locked: true };
  }
}

const lock = () => el('span', { class: 'lock', role: 'img', 'aria-label': 'end-to-end encrypted', title: 'End-to-end encrypted' }, '\u{1F512}');

const MEDIA_LABEL = { image: '\u{1F4F7} Photo', audio: '\u{1F3A4} Voice note', pdf: '\u{1F4C4} Document', file: '\u{1F4CE} File' };

/** What a file's message is called where only words fit (the room list, the banner). */
function mediaLabel(media) {
  const kind = A.media.kindOf(media.type);
  return kind === 'pdf' || kind === 'file' ? `${MEDIA_LABEL[kind]}${media.name ? ` ${media.name}` : ''}` : MEDIA_LABEL[kind];
}

export function bodyText(body) {
  if (typeof body === 'string') return body;
  if (body && typeof body === 'object' && body.media && typeof body.media === 'object') {
    return typeof body.text === 'string' && body.text ? `${mediaLabel(body.media)}: ${body.text}` : mediaLabel(body.media);
  }
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  if (body && typeof body === 'object') {
    return Object.entries(body)
      .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
      .join(', ');
  }
  return JSON.stringify(body);
}


function stateOf(rec) {
  if (!rec.mine) return null;
  if (rec.local === 'failed') return 'failed';
  const r = S.receipts.get(rec.id);
  const local = rec.local ?? 'stored';
  return r && RANK[r.best] > RANK[local] ? r.best : local;
}

function trailOf(rec) {
  const r = S.receipts.get(rec.id);
  const t = { ...(rec.trail || {}) };
  if (r) for (const [k, v] of Object.entries(r.at)) t[k] ??= v;
  return STATES.filter((s) => t[s] !== undefined).map((s) => [s, t[s]]);
}


export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}


export function renderAlerts() {
  const box = $('alerts');
  const items = S.alerts.map((id) => S.msgs.get(id)).filter(Boolean);
  box.hidden = items.length === 0;
  document.title = items.length ? '(!) EMERGENCY \u2014 Outpost' : 'Outpost';
  document.body.classList.toggle('alarm', items.length > 0);
  if (!items.length) {
    box.replaceChildren();
    return;
  }
  const last = items[items.length - 1];
  box.replaceChildren(
    el('strong', { class: 'alert-title' }, items.length > 1 ? `EMERGENCY (${items.length})` : 'EMERGENCY'),
    el(
      'p',
      { class: 'alert-text' },
      // Priority is not encrypted, so a locked emergency still rings; its words wait for the key.
      `${last.from} in ${last.room}: ${shown(last).locked ? '\u{1F512} Emergency' : shown(last).text}`,
      el('span', { class: 'alert-time' }, ` \u00B7 ${clock(last.at ?? Date.now())}`),
    ),
    el(
      'div',
      { class: 'row' },
      el('button', { type: 'button', class: 'alert-open', onclick: () => A.openRoom(last.room) }, 'Open room'),
      el('button', { type: 'button', class: 'alert-seen', onclick: () => A.dismissAlerts() }, 'Seen'),
    ),
  );
}

export function renderRooms() {
  const ul = $('rooms');
  const list = A.rooms();
  ul.replaceChildren(
    ...list.map((room) => {
      const n = A.unread(room);
      const msgs = A.roomMessages(room);
      const last = msgs[msgs.length - 1];
      const preview = last ? `${last.mine ? 'You' : last.from}: ${shown(last).text}` : 'No messages yet';
      return el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: 'room-btn',
            'data-room': room,
            'aria-current': S.room === room ? 'page' : null,
            onclick: () => A.openRoom(room),
          },
          el('span', { class: 'room-name' }, `# ${room}`, A.isEncrypted(room) ? ' ' : null, A.isEncrypted(room) ? lock() : null),
          el('span', { class: 'room-preview small muted' }, preview),
          n ? el('span', { class: 'badge', 'aria-label': `${n} unread` }, n > 99 ? '99+' : String(n)) : null,
        ),
      );
    }),
  );
  if (!list.length) ul.replaceChildren(el('li', { class: 'muted small' }, 'This sign-in has no rooms.'));
  const people = $('people');
  const entries = [...S.presence.entries()].filter(([u]) => u !== A.me()).sort(([a], [b]) => a.localeCompare(b));
  people.replaceChildren(
    ...entries.map(([u, p]) => el('li', { class: p.status === 'offline' ? 'off' : p.status }, el('span', { class: 'dot', 'aria-hidden': 'true' }), `${u} `, el('span', { class: 'small muted' }, presenceText(p)))),
  );
  if (!S.session?.welcomed) people.replaceChildren(el('li', { class: 'muted small' }, `Not known while the ${A.serverName()} is not connected.`));
  else if (!entries.length) people.replaceChildren(el('li', { class: 'muted small' }, 'Nobody else online right now.'));
}

export function presenceText(p) {
  if (!p) return 'offline';
  if (p.status === 'online') return 'online';
  if (p.status === 'away') return 'away';
  return p.last_seen ? `last seen ${ago(p.last_seen)}` : 'offline';
}

const items = new Map(); // message id -> <li>

export function renderRoom() {
  const room = S.room;
  $('composer').hidden = !room;
  $('room-title').replaceChildren(room ? `# ${room}` : 'Choose a room', ...(room && A.isEncrypted(room) ? [' ', lock()] : []));
  renderKeys(room);
  renderMediaTools(room);
  $('room-pane').classList.toggle('none', !room);
  const log = $('log');
  if (!room) {
    log.replaceChildren();
    items.clear();
    figs.clear();
    $('older').hidden = true;
    $('room-people').textContent = '';
    $('typing').textContent = '';
    return;
  }
  // Who is here: everyone who wrote in the room, and anyone typing.
  const users = new Set();
  for (const m of S.msgs.values()) if (m.room === room && m.from && m.from !== A.me()) users.add(m.from);
  const typers = [...(S.typing.get(room) ?? new Map()).entries()].filter(([, exp]) => exp > Date.now()).map(([u]) => u);
  for (const u of typers) users.add(u);
  // Presence is only known while connected; otherwise show names alone.
  const live = !!S.session?.welcomed;
  $('room-people').textContent = [...users].sort().map((u) => (live ? `${u} ${presenceText(S.presence.get(u))}` : u)).join(' \u00B7 ');
  $('typing').textContent = typers.length ? `${typers.join(' and ')} ${typers.length > 1 ? 'are' : 'is'} typing\u2026` : '';

  const older = $('older');
  older.hidden = S.more[room] === false;
  older.disabled = A.loadingOlder.has(room) || !S.session?.welcomed;
  older.textContent = A.loadingOlder.has(room) ? 'Loading\u2026' : 'Load older messages';

  const wrap = $('log-wrap');
  // The patient filter keeps the clinical events, the bookings (and their changes) and the record edits about that patient.
  const patient = S.patientFilter ?? '';
  const about = (m) =>
    Queue.isQueue(m.kind) ? Queue.patientsOf(m.kind, shown(m).body, bookingBody) : Rec.isRecord(m.kind) ? Rec.patientsOf(m.kind, shown(m).body) : patientsOf(m.kind, shown(m).body);
  const list = A.roomMessages(room).filter((m) => !patient || about(m).includes(patient));
  const keep = new Set(list.map((m) => m.id));
  for (const [id, li] of items) {
    if (!keep.has(id) || li.dataset.room !== room) {
      li.remove();
      items.delete(id);
      figs.delete(id);
    }
  }
  let prev = null;
  for (const m of list) {
    let li = items.get(m.id);
    if (!li) {
      li = el('li', { 'data-id': m.id, 'data-room': room });
      items.set(m.id, li);
    }
    updateItem(li, m);
    const want = prev ? prev.nextSibling : log.firstChild;
    if (want !== li) log.insertBefore(li, want);
    prev = li;
  }
  if (stick) wrap.scrollTop = wrap.scrollHeight;
}

// The log follows new messages while the user is at its end (also when the screen
// changes size: the keyboard opens, a banner appears), and stays put while they read back.
let stick = true;
export function stickToEnd() {
  stick = true;
  $('log-wrap').scrollTop = $('log-wrap').scrollHeight;
}
export function followLog() {
  const wrap = $('log-wrap');
  wrap.addEventListener('scroll', () => {
    stick = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 40;
  });
  new ResizeObserver(() => {
    if (stick) wrap.scrollTop = wrap.scrollHeight;
  }).observe(wrap);
}

function updateItem(li, m) {
  const state = stateOf(m);
  const L = labels();
  const trail = m.mine ? trailOf(m) : [];
  const { text, locked, body } = shown(m);
  const media = locked ? null : mediaPart(m);
  const up = media?.view.upload ?? null;
  const structured = !locked && !media && body && typeof body === 'object';
  const missed = structured && Call.isMissed(m.kind, body);
  const card = structured && isClinical(m.kind)
    ? clinicalCard(m.kind, body)
    : structured && Queue.isQueue(m.kind)
      ? queueCard(m, body)
      : structured && Rec.isRecord(m.kind)
        ? recordCard(m, body)
        : missed
          ? missedCard(m, body)
          : null;
  const key = JSON.stringify([state, trail, m.cursor, m.error, text, m.at, media?.key, card && m.kind, card && card.textContent]);
  if (li.dataset.key === key) return;
  li.dataset.key = key;
  li.className = `msg ${m.mine ? 'mine' : 'theirs'}${card ? ' clinical' : ''}${card && Queue.isQueue(m.kind) ? ' queue' : ''}${card && Rec.isRecord(m.kind) ? ' record' : ''}${card && missed ? ' call-missed' : ''}${A.isEmergency(m) ? ' emergency' : ''}${locked ? ' locked' : ''}${state ? ` s-${state}` : ''}${media ? ' has-media' : ''}${up ? ` up-${up.state}` : ''}`;
  if (state) li.dataset.state = state;
  if (up) li.dataset.upload = up.state;
  else delete li.dataset.upload;
  li.dataset.trail = trail.map(([s]) => s).join(' ');
  const head = el('div', { class: 'meta small' });
  if (!m.mine) head.append(el('span', { class: 'from' }, m.from ?? '?'), ' ');
  if (A.isEmergency(m)) head.append(el('span', { class: 'tag' }, 'EMERGENCY'), ' ');
  head.append(el('time', { datetime: new Date(m.at ?? m.created ?? Date.now()).toISOString() }, clock(m.at ?? m.created ?? Date.now())));
  const parts = [head];
  if (media) {
    parts.push(media.fig);
    if (body.text) parts.push(el('div', { class: 'text' }, body.text));
  } else if (card) parts.push(card);
  else parts.push(el('div', { class: 'text' }, text));
  if (up) parts.push(uploadLine(m, up));
  else if (state) {
    const r = S.receipts.get(m.id);
    let label = L[state];
    if ((state === 'read' || state === 'delivered') && r) {
      const who = Object.entries(r.by)
        .filter(([, s]) => s === state)
        .map(([u]) => u);
      if (who.length) label += ` by ${who.join(', ')}`;
    }
    if (state === 'failed' && m.error) label += `: ${m.error}`;
    const title = trail.map(([s, t]) => `${L[s]} ${new Date(t).toLocaleTimeString()}`).join('\n');
    parts.push(el('div', { class: 'state small', title: title || null }, el('span', { 'aria-hidden': 'true' }, `${ICON[state]} `), label));
  }
  // The full file's own custody, after the message's: it follows on the uplink's bulk lane.
  if (media && m.mine && !up && media.view.custody === 'forwarded') {
    parts.push(el('div', { class: 'state file-state small' }, el('span', { 'aria-hidden': 'true' }, '\u2713\u2713 '), A.isWorker() ? 'Full file at the hospital' : 'Full file at the village hub'));
  }
  li.replaceChildren(...parts);
}

/** A clinical event as a card: its kind and its fields, label by label (the patient opens their record). */
function clinicalCard(kind, body) {
  const list = el('dl', {});
  for (const [label, value] of rows(kind, body)) list.append(el('dt', {}, label), el('dd', {}, label === 'Patient' ? patientLink(value) : value));
  return el('div', { class: 'card', 'data-kind': kind }, el('div', { class: 'card-title' }, KINDS[kind]), list);
}

/**
 * A patient id that opens the patient's record in the open room (recordpanel.js): a link,
 * so that it reads as the id it is; plain text for anything that is not a patient id.
 */
export function patientLink(id) {
  if (!A?.openRecord || !Rec.isPatient(id)) return id ?? '?';
  return el(
    'a',
    {
      href: '#',
      class: 'patient-link',
      title: `Open the record of ${id}`,
      onclick: (e) => {
        e.preventDefault();
        A.openRecord(id);
      },
    },
    id,
  );
}

/**
 * A record edit as a card, in words: "amina changed the allergies of KJ-0042: penicillin,
 * latex", with a link to the record.
 */
function recordCard(m, body) {
  const { title, rows: lines } = Rec.card(body, { from: m.from });
  const list = el('dl', {});
  for (const [label, value] of lines) list.append(el('dt', {}, label), el('dd', {}, value));
  const link = A?.openRecord && Rec.isPatient(body.patient) ? patientLink(body.patient) : null;
  if (link) {
    link.textContent = 'Open the record';
    link.setAttribute('aria-label', `Open the record of ${body.patient}`);
  }
  return el(
    'div',
    { class: 'card', 'data-kind': m.kind, 'data-field': typeof body.field === 'string' ? body.field : null },
    el('div', { class: 'card-title' }, title),
    lines.length ? list : null,
    link ? el('div', { class: 'small' }, link) : null,
  );
}

/**
 * A missed call as a card: "Missed video call from amina" for the callee, with Call back;
 * "baraka did not answer your call" for the caller, with Call again.
 */
function missedCard(m, body) {
  const { title, text, back, again } = Call.missedCard(body, { from: m.mine ? A.me() : m.from, me: A.me() });
  const button = back && A.call
    ? el('button', { type: 'button', class: 'call-back', 'aria-label': `${again ? 'Call again' : 'Call back'} ${back}`, onclick: () => A.call(m.room, back, !!body.video) }, again ? 'Call again' : 'Call back')
    : null;
  return el(
    'div',
    { class: 'card', 'data-kind': m.kind, 'data-video': body.video ? 'true' : 'false' },
    el('div', { class: 'card-title' }, title),
    text ? el('div', { class: 'small' }, text) : null,
    button ? el('div', { class: 'row' }, button) : null,
  );
}

/** The body of a booking held on this device, by its message id (a queue change names it so). */
function bookingBody(id) {
  const rec = id ? S.msgs.get(id) : null;
  return rec && rec.kind === Queue.BOOK ? (shown(rec).body ?? null) : null;
}

/**
 * A booking or a change to one as a card, in words: "Booked KJ-0042 with dr-neema —
 * urgent: cough…", "dr-neema completed the booking of KJ-0042".
 */
function queueCard(m, body) {
  const { title, rows: lines } = Queue.card(m.kind, body, { from: m.from, lookup: bookingBody, time: clock });
  const list = el('dl', {});
  for (const [label, value] of lines) list.append(el('dt', {}, label), el('dd', {}, value));
  const u = Queue.URGENCIES.includes(body.urgency) ? body.urgency : null;
  return el('div', { class: 'card', 'data-kind': m.kind, 'data-urgency': u }, el('div', { class: 'card-title' }, title), lines.length ? list : null);
}

// ---------- files: photos, voice notes, documents ----------

const figs = new Map(); // message id -> <figure>, kept across renders so a playing voice note goes on playing

function mediaPart(m) {
  const v = A.media.view(m);
  if (!v) return null;
  let fig = figs.get(m.id);
  if (!fig) {
    fig = el('figure', { class: 'media' });
    figs.set(m.id, fig);
  }
  const key = JSON.stringify([v.kind, v.thumb?.slice(0, 200), v.thumb?.length, v.src, v.available, v.known, v.received, v.loading, v.size, v.error, v.upload, v.custody]);
  if (fig.dataset.key !== key) {
    fig.dataset.key = key;
    fig.dataset.kind = v.kind;
    fig.dataset.available = v.available ? 'yes' : 'no';
    fig.replaceChildren(...mediaContent(m, v, fig));
  }
  return { fig, key, view: v };
}

function mediaContent(m, v, fig) {
  const size = A.media.formatSize(v.size);
  const out = [];
  const note = (t) => el('figcaption', { class: 'small muted' }, t);
  if (v.kind === 'image') {
    const img = v.thumb
      ? el('img', { class: 'thumb', src: v.thumb, alt: `Photo${v.name ? ` ${v.name}` : ''}`, width: v.width, height: v.height, onload: keepAtEnd, onerror: unreadable })
      : el('span', { class: 'thumb none', 'aria-hidden': 'true' }, '\u{1F4F7}');
    if (v.upload) {
      // Still on this phone: the picture as taken, and what it weighs.
      out.push(img);
      if (size) out.push(note(size));
    } else if (v.available) {
      out.push(el('button', { type: 'button', class: 'thumb-btn', 'aria-label': v.loading ? 'Loading full image' : 'Open full image', disabled: v.loading, onclick: () => A.media.openFull(m) }, img));
      out.push(note(v.loading ? 'Loading full image\u2026' : `Tap to open the full image${size ? ` \u00B7 ${size}` : ''}`));
    } else {
      out.push(img);
      const got = v.received && v.size ? ` (${Math.floor((100 * v.received) / v.size)} %)` : '';
      out.push(note(`${v.known ? `Preview \u2014 full image arriving${got}` : 'Preview'}${size ? ` \u00B7 ${size}` : ''}`));
    }
  } else if (v.kind === 'audio') {
    if (v.src) {
      // The same element while the source is the same, so re-rendering does not stop playback.
      const old = fig.querySelector('audio');
      out.push(old && old.getAttribute('src') === v.src ? old : el('audio', { controls: true, preload: 'metadata', src: v.src, 'aria-label': 'Voice note' }));
      out.push(note(`Voice note${size ? ` \u00B7 ${size}` : ''}`));
    } else if (v.error) {
      out.push(el('button', { type: 'button', class: 'open', onclick: () => A.media.openFull(m) }, 'Load voice note'));
      out.push(note(`Could not load (${v.error})`));
    } else {
      out.push(note(v.available ? 'Loading voice note\u2026' : `\u{1F3A4} Voice note arriving${size ? ` \u00B7 ${size}` : ''}`));
    }
  } else {
    const label = `${v.kind === 'pdf' ? '\u{1F4C4}' : '\u{1F4CE}'} ${v.name || 'Document'}`;
    out.push(el('button', { type: 'button', class: 'open doc', disabled: !v.available || v.loading, onclick: () => A.media.save(m) }, label));
    out.push(note(v.loading ? 'Downloading\u2026' : `${v.available ? 'Download' : 'Arriving'}${size ? ` \u00B7 ${size}` : ''}`));
  }
  return out;
}

function uploadLine(m, up) {
  const where = A.serverName();
  const text = {
    hashing: 'Preparing the file\u2026',
    uploading: `Uploading ${up.pct} %`,
    waiting: `Waiting for the ${where} \u00B7 ${up.pct} % sent, it goes on by itself`,
    uploaded: `File on the ${where} \u00B7 sending the message`,
    failed: `Not sent: ${up.error ?? 'refused'}`,
  }[up.state];
  const line = el('div', { class: 'state upload small', role: up.state === 'failed' ? 'alert' : null }, el('span', { 'aria-hidden': 'true' }, up.state === 'failed' ? '! ' : '\u25F7 '), text);
  if (up.state === 'uploading' || up.state === 'waiting') {
    line.append(el('progress', { max: 100, value: up.pct, 'aria-hidden': 'true' }));
  }
  if (up.state !== 'failed') return line;
  return el(
    'div',
    { class: 'upload-failed' },
    line,
    el(
      'div',
      { class: 'row' },
      up.retry ? el('button', { type: 'button', onclick: () => A.media.retry(m.id) }, 'Try again') : null,
      el('button', { type: 'button', class: 'quiet discard', onclick: () => A.media.discard(m.id) }, 'Discard'),
    ),
  );
}

/** A file that is not a picture after all (the server will say so): no broken image. */
function unreadable(e) {
  e.target.replaceWith(el('span', { class: 'thumb broken', role: 'img', 'aria-label': 'Cannot be shown' }, '?'));
}

function keepAtEnd() {
  if (stick) $('log-wrap').scrollTop = $('log-wrap').scrollHeight;
}

/** The full image over the room; closed with its button, Escape or a tap beside it. */
export function showViewer(url, m) {
  const d = $('viewer');
  const media = m.body?.media ?? {};
  const img = $('viewer-img');
  img.src = url;
  img.alt = `Photo${media.name ? ` ${media.name}` : ''}${m.from ? ` from ${m.from}` : ''}`;
  $('viewer-caption').textContent = [typeof m.body?.text === 'string' ? m.body.text : '', A.media.formatSize(media.size)].filter(Boolean).join(' \u00B7 ');
  if (!d.open) d.showModal();
}

export function bindViewer() {
  const d = $('viewer');
  d.addEventListener('click', (e) => {
    if (e.target === d) d.close();
  });
  d.addEventListener('close', () => {
    $('viewer-img').removeAttribute('src');
  });
}

/** Photos and voice notes: off in encrypted rooms (the server could not see the file named). */
function renderMediaTools(room) {
  const enc = !!room && A.isEncrypted(room);
  const why = 'Photos and voice notes cannot be sent in end-to-end encrypted rooms yet';
  const attach = $('attach-btn');
  attach.disabled = enc;
  attach.title = enc ? why : 'Attach photo';
  const rec = A.media.recording();
  const btn = $('record');
  btn.disabled = enc && !rec;
  btn.title = enc ? why : rec ? 'Stop and send the voice note' : 'Record voice note';
  btn.setAttribute('aria-label', rec ? `Stop recording (${rec.secs} s)` : 'Record voice note');
  btn.setAttribute('aria-pressed', rec ? 'true' : 'false');
  btn.classList.toggle('recording', !!rec);
  $('record-time').textContent = rec ? `${Math.floor(rec.secs / 60)}:${pad(rec.secs % 60)}` : '';
  $('record-cancel').hidden = !rec;
}

// ---------- the room key panel of an encrypted room ----------

let keyPanel = null; // `room state` last rendered, to open the form once when a key is missing
let shared = null; // { room, kid, link, text } just made with "New room key"

export function showShared(s) {
  shared = s;
  renderKeys(S.room);
  $('e2e-keys').open = true;
  $('key-copy').textContent = 'Copy text';
  $('key-share').scrollIntoView({ block: 'nearest' });
}

function renderKeys(room) {
  const box = $('e2e');
  const enc = !!room && A.isEncrypted(room);
  const ok = available();
  const newest = enc && ok ? A.keys.newest(room) : null;
  const usable = !enc || !!newest;
  for (const c of [$('message'), $('send'), $('emergency')]) c.disabled = !usable;
  $('message').placeholder = usable ? 'Write a message' : 'Add the room key to write';
  box.hidden = !enc;
  if (!enc) {
    keyPanel = null;
    return;
  }
  const state = !ok ? 'insecure' : newest ? 'key' : 'nokey';
  box.dataset.state = state;
  const older = newest ? A.keys.kids(room).length - 1 : 0;
  $('e2e-text').textContent =
    state === 'insecure'
      ? `This room is end-to-end encrypted, and this page cannot encrypt: browsers allow it only on a secure address. Open the ${A.serverName()}'s HTTPS address (https://\u2026) to read and write here.`
      : state === 'nokey'
        ? 'This room is end-to-end encrypted. Add its key to read and write.'
        : `End-to-end encrypted \u00B7 new messages use key ${newest.kid}${older ? ` (and ${older} older key${older > 1 ? 's' : ''} for old messages)` : ''}`;
  const details = $('e2e-keys');
  details.hidden = state === 'insecure';
  if (keyPanel !== `${room} ${state}`) {
    details.open = state === 'nokey';
    if (shared && shared.room !== room) shared = null;
  }
  keyPanel = `${room} ${state}`;
  const share = $('key-share');
  share.hidden = !shared || shared.room !== room;
  if (!share.hidden) {
    if ($('key-link').value !== shared.link) $('key-link').value = shared.link;
    if ($('key-text').value !== shared.text) $('key-text').value = shared.text;
    $('key-share-kid').textContent = shared.kid;
  }
}
