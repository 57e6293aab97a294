// The Queue panel of a room (docs/workflows.md, "Appointments and doctors' queues"): the
// doctors' queues as the server derives them, the booking form, the doctor's actions and
// the booker's notice. The order is never worked out here: the panel reads
// GET /api/rooms/{room}/queues from the server that served the page (hub or cloud) when it
// opens and again whenever a `queue.*` message of the room arrives, so every device shows
// the same positions. Bookings and changes are ordinary messages: they go through the
// outbox like any other, so a booking made with the hub down waits on the phone, and the
// panel shows it as waiting to send beside the last queue it read.

import { write } from './db.js';
import { auth } from './media.js';
import { Kept, readJson, readable, refusal, serial } from './derived.js';
import { chime } from './alerts.js';
import { $, clock, el, patientLink } from './view.js';
import { ALERT_MAX_AGE_MS } from './protocol.js';
import { BOOK, BOOK_LABELS, UPDATE, URGENCIES, bookerOf, buildBook, buildUpdate, isQueue, noticeText, normalize, tellsBooker, waiting } from './queue.js';

let A = null; // what app.js shares: S, me, composeBody, notice, isEncrypted, serverName, opener

export function initQueue(app) {
  A = app;
}

let open = false; // the panel is shown (for whichever room is open)
const last = new Kept('queues', { normalize }); // room -> { data, at }: the last answer read, kept on the device (db.js kv `queues`)
const status = new Map(); // room -> { state: 'loading'|'ok'|'offline'|'refused', text }
const once = serial(); // one read at a time per room, and one more when due meanwhile

/** What the device kept of earlier reads (db.js kv `queues`). */
export function loadQueues(kv) {
  last.load(kv);
}

/** Another person (or none) on this device: none of the queues read for the last one stay. */
export function forgetQueues(ops) {
  last.forget(ops);
  status.clear();
  open = false;
}

const save = () => write(A.S.db, [last.op()]).catch(() => {});

/** The body of a message as this device can read it (an encrypted room's, once opened). */
const bodyOf = (rec) => readable(A.opener, rec);

// ---------- reading the queues ----------

/** Reads the room's queues now; while a read is on its way, one more follows it. */
export async function refresh(room = A.S.room) {
  if (!room || !A.S.token) return;
  await once(room, async () => {
    await readOnce(room);
    draw();
  });
}

async function readOnce(room) {
  if (!status.get(room) || status.get(room).state !== 'ok') status.set(room, { state: 'loading' });
  draw();
  const got = await readJson(`/api/rooms/${encodeURIComponent(room)}/queues`, { headers: auth });
  if (got.state === 'ok') {
    last.set(room, normalize(got.data));
    status.set(room, { state: 'ok' });
    save();
  } else if (got.state === 'offline') {
    // Not reachable: what was read last stays on screen, marked as such.
    status.set(room, { state: 'offline' });
  } else if (got.state === 'unreadable') {
    status.set(room, { state: 'refused', text: `The ${A.serverName()} sent a queue this app cannot read.` });
  } else {
    status.set(room, { state: 'refused', text: refusal(got.status, got.why, { noun: 'queues', what: 'the queues', where: A.serverName() }) });
  }
}

/**
 * Called for each frame before it is applied: whether it concerns a queue, and if it is a
 * message, whether this device holds it already (only a new one may make a noise).
 */
export function watch(f) {
  if (f?.type === 'message' && f.msg && isQueue(f.msg.kind)) return { room: f.msg.room, id: f.msg.id, kind: f.msg.kind, from: f.msg.from, at: f.msg.at, fresh: !A.S.msgs.has(f.msg.id) };
  if (f?.type === 'stored' || f?.type === 'error') {
    const rec = A.S.msgs.get(f.id);
    if (rec && isQueue(rec.kind)) return { room: rec.room, id: rec.id, kind: rec.kind, from: rec.from, fresh: false };
  }
  return null;
}

/** Queue frames of a committed batch: the open queue is read again, and bookers are told. */
export function arrived(list) {
  const room = A.S.room;
  if (open && room && list.some((x) => x.room === room)) refresh(room);
  draw();
  const told = [];
  const now = Date.now();
  for (const x of list) {
    if (!x.fresh || x.kind !== UPDATE || now - (x.at ?? now) > ALERT_MAX_AGE_MS) continue;
    const b = bodyOf(A.S.msgs.get(x.id));
    if (!b) continue;
    const held = A.S.msgs.get(b.booking);
    const known = bookerOf(b.booking, last.get(x.room)?.data);
    const bookedBy = held?.from ?? known?.booked_by;
    if (!tellsBooker(b, { from: x.from, me: A.me(), bookedBy })) continue;
    told.push(noticeText(x.from, b, bodyOf(held)?.patient ?? known?.patient, clock));
  }
  if (told.length) {
    const text = told.join(' \u00B7 ');
    chime(text);
    A.notice(text, 'info');
  }
}

/** The connection is (back) up: what was read offline may be stale. */
export function sessionStarted() {
  if (open && A.S.room) refresh(A.S.room);
}

export function roomChanged() {
  if (open && A.S.room) refresh(A.S.room);
  draw();
}

// ---------- drawing ----------

/** The room's queue messages still on this device (the outbox), as the screen shows them. */
function pendingOf(room) {
  const out = [];
  for (const id of A.S.outbox.keys()) {
    const rec = A.S.msgs.get(id);
    if (rec?.room === room && isQueue(rec.kind)) out.push({ id, kind: rec.kind, body: bodyOf(rec), created: rec.created, from: rec.from });
  }
  return out;
}

const STATUS_WORD = { booked: 'booked', confirmed: 'confirmed', rescheduled: 'rescheduled', cancelled: 'cancelled', completed: 'completed', waiting: 'waiting to send' };

let drawnKey = null;

/** Draws the panel when what it shows changed (never while the same: a select being used stays open). */
export function draw() {
  if (!A) return;
  const room = A.S.room;
  const btn = $('queue-toggle');
  btn.hidden = !room;
  btn.setAttribute('aria-expanded', open && room ? 'true' : 'false');
  const panel = $('queue-panel');
  panel.hidden = !open || !room;
  if (panel.hidden) {
    drawnKey = null;
    return;
  }
  const held = last.get(room) ?? null;
  const st = status.get(room) ?? { state: 'loading' };
  const pending = pendingOf(room);
  const key = JSON.stringify([room, A.me(), held, st, pending, A.isEncrypted(room)]);
  if (key === drawnKey) return;
  drawnKey = key;

  $('queue-status').textContent = statusLine(room, held, st);
  $('queue-status').dataset.state = st.state;
  const data = held?.data ?? { queues: [], finished: [] };
  const known = new Set();
  for (const q of data.queues) for (const e of q.entries) known.add(e.booking);
  for (const e of data.finished) known.add(e.booking);
  const { bookings, changes } = waiting(pending, known);

  const names = [...new Set([...data.queues.map((q) => q.queue), ...bookings.map((b) => b.queue)])];
  // The signed-in doctor's own queue first: it is the one they work.
  names.sort((a, b) => (a === A.me() ? -1 : b === A.me() ? 1 : a.localeCompare(b)));
  const parts = [];
  for (const name of names) {
    const q = data.queues.find((x) => x.queue === name) ?? { queue: name, entries: [] };
    const mine = bookings.filter((b) => b.queue === name);
    parts.push(queueSection(q, mine, changes));
  }
  if (!parts.length && st.state !== 'loading') parts.push(el('p', { class: 'muted small q-empty' }, `No open bookings in # ${room}.`));
  if (data.finished.length) {
    parts.push(
      el(
        'section',
        { class: 'q-finished', 'aria-label': 'Finished recently' },
        el('h4', {}, 'Finished recently'),
        el('ul', { class: 'q-list' }, ...data.finished.map((e) => entryItem(e, { finished: true, changes }))),
      ),
    );
  }
  $('queue-body').replaceChildren(...parts);
}

function statusLine(room, held, st) {
  const when = held?.at ? clock(held.at) : null;
  const enc = A.isEncrypted(room) ? ' This room is end-to-end encrypted: the servers cannot read its bookings, so they cannot list them.' : '';
  switch (st.state) {
    case 'ok':
      return `Updated ${when}.${enc}`;
    case 'offline':
      return `${held ? `Offline: the queues as they were at ${when}.` : 'Offline: the queues cannot be read now.'} Bookings made here wait on this device and go when the ${A.serverName()} is back.${enc}`;
    case 'refused':
      return `${st.text}${held ? ` Showing the queues as they were at ${when}.` : ''}`;
    default:
      return held ? `Updating\u2026 (as of ${when})` : 'Loading the queues\u2026';
  }
}

function queueSection(q, waitingHere, changes) {
  const own = q.queue === A.me();
  const n = q.entries.length;
  const head = el('h4', {}, q.queue, own ? el('span', { class: 'muted small' }, ' (your queue)') : null, el('span', { class: 'muted small q-count' }, ` \u00B7 ${n} waiting`));
  const list = el('ol', { class: 'q-list' }, ...q.entries.map((e) => entryItem({ ...e, queue: e.queue ?? q.queue }, { changes })), ...waitingHere.map((e) => entryItem(e, { pending: true, changes })));
  if (!n && !waitingHere.length) list.append(el('li', { class: 'muted small' }, 'Nobody waiting.'));
  return el('section', { class: `q-queue${own ? ' own' : ''}`, 'aria-label': `Queue of ${q.queue}`, 'data-queue': q.queue }, head, list);
}

function entryItem(e, { pending = false, finished = false, changes }) {
  const me = A.me();
  const urgency = URGENCIES.includes(e.urgency) ? e.urgency : null;
  const pos = pending || finished || !Number.isFinite(e.position) ? '\u2013' : String(e.position);
  const meta = [];
  if (finished && e.queue) meta.push(e.queue);
  if (e.booked_by) meta.push(`booked by ${e.booked_by === me ? 'you' : e.booked_by}${e.booked_at ? ` ${clock(e.booked_at)}` : ''}`);
  if (typeof e.due_at === 'number') meta.push(`due ${clock(e.due_at)}`);
  if (e.updated_by && e.status !== 'booked' && e.status !== 'waiting') meta.push(`${e.status ?? 'changed'} by ${e.updated_by === me ? 'you' : e.updated_by}${e.updated_at ? ` ${clock(e.updated_at)}` : ''}`);
  const waitingChanges = changes.get(e.booking) ?? [];
  const li = el(
    'li',
    {
      class: `q-entry${pending ? ' pending' : ''}${finished ? ' finished' : ''}`,
      'data-booking': e.booking,
      'data-patient': e.patient,
      'data-status': e.status,
      'data-urgency': urgency,
      'data-position': pending || finished ? null : e.position,
    },
    el('span', { class: 'q-pos' }, el('span', { class: 'sr-only' }, 'Position '), el('span', { class: 'q-num' }, pos)),
    el(
      'div',
      { class: 'q-main' },
      el(
        'div',
        { class: 'q-line' },
        el('strong', { class: 'q-patient' }, patientLink(e.patient)),
        ' ',
        urgency ? el('span', { class: `q-urgency u-${urgency}` }, urgency) : null,
        ' ',
        el('span', { class: `q-status st-${e.status}` }, STATUS_WORD[e.status] ?? e.status ?? ''),
      ),
      e.reason ? el('div', { class: 'q-reason small' }, e.reason) : null,
      meta.length ? el('div', { class: 'q-meta small muted' }, meta.join(' \u00B7 ')) : null,
      ...waitingChanges.map((c) => el('div', { class: 'q-change small' }, `\u25F7 ${[c.status, c.urgency && `urgency ${c.urgency}`].filter(Boolean).join(', ')}: waiting to send`)),
      pending || finished ? null : actions(e),
    ),
  );
  return li;
}

/** The doctor's buttons on their own queue's entries; the booker's Cancel on their own booking. */
function actions(e) {
  const me = A.me();
  const doctor = e.queue === me;
  const booker = e.booked_by === me;
  if (!doctor && !booker) return null;
  const p = e.patient ?? 'booking';
  const row = el('div', { class: 'row q-actions' });
  if (doctor) {
    if (e.status !== 'confirmed') row.append(el('button', { type: 'button', 'aria-label': `Confirm ${p}`, onclick: () => send(e, { status: 'confirmed' }) }, 'Confirm'));
    row.append(el('button', { type: 'button', 'aria-label': `Reschedule ${p}`, onclick: () => ask(e, 'rescheduled') }, 'Reschedule'));
  }
  row.append(el('button', { type: 'button', 'aria-label': `Cancel ${p}`, onclick: () => ask(e, 'cancelled') }, 'Cancel'));
  if (doctor) {
    row.append(el('button', { type: 'button', class: 'primary', 'aria-label': `Complete ${p}`, onclick: () => ask(e, 'completed') }, 'Complete'));
    const sel = el('select', { 'aria-label': `Urgency of ${p}`, class: 'q-set-urgency' }, ...[...URGENCIES].reverse().map((u) => new Option(u, u, false, u === e.urgency)));
    sel.addEventListener('change', () => {
      if (sel.value !== e.urgency) send(e, { urgency: sel.value });
    });
    row.append(sel);
  }
  return row;
}

/** Sends a `queue.update` of entry `e`, answering its booking (reply_to). */
async function send(e, change) {
  const room = A.S.room;
  if (!room) return false;
  const made = buildUpdate(e, change, { me: A.me(), time: clock });
  if (!made.body) {
    A.notice(`Not sent: ${made.field} ${made.problem}.`);
    return false;
  }
  const ok = await A.composeBody(room, made.body, { kind: UPDATE, replyTo: e.booking });
  draw();
  return ok;
}

// ---------- the dialogs ----------

let asking = null; // { entry, status } of the action dialog

const ASK = {
  rescheduled: { title: (p) => `Reschedule ${p}`, go: 'Reschedule' },
  cancelled: { title: (p) => `Cancel the booking of ${p}?`, go: 'Cancel booking' },
  completed: { title: (p) => `Complete ${p}?`, go: 'Complete' },
};

/** Asks before what cannot be undone (complete, cancel) and for the new time of a reschedule. */
function ask(e, st) {
  asking = { entry: e, status: st };
  const a = ASK[st];
  $('qa-title').textContent = a.title(e.patient ?? 'this booking');
  $('qa-text').textContent = st === 'rescheduled' ? `${e.patient} moves to the new time, still after any more urgent booking.` : st === 'completed' ? `${e.patient} leaves the queue of ${e.queue}.` : `${e.patient} leaves the queue of ${e.queue}. This cannot be undone: book again if needed.`;
  $('qa-when-field').hidden = st !== 'rescheduled';
  // A reschedule starts from tomorrow at this hour, the commonest answer.
  $('qa-when').value = st === 'rescheduled' ? localInput(Math.ceil((Date.now() + 86_400_000) / 3_600_000) * 3_600_000) : '';
  $('qa-note').value = '';
  $('qa-go').textContent = a.go;
  $('qa-error').hidden = true;
  $('qa-dialog').showModal();
}

function localInput(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function bindActionDialog() {
  const dialog = $('qa-dialog');
  $('qa-back').addEventListener('click', () => dialog.close());
  $('qa-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!asking) return;
    const change = { status: asking.status, note: $('qa-note').value };
    const err = $('qa-error');
    if (asking.status === 'rescheduled') {
      const v = $('qa-when').value;
      const ms = v ? new Date(v).getTime() : NaN;
      if (!Number.isFinite(ms)) {
        err.textContent = 'Choose the new date and time.';
        err.hidden = false;
        return;
      }
      change.due_at = ms;
    }
    const made = buildUpdate(asking.entry, change, { me: A.me(), time: clock });
    if (!made.body) {
      err.textContent = made.field === 'due_at' ? `The new time ${made.problem}.` : `${made.field} ${made.problem}.`;
      err.hidden = false;
      return;
    }
    const e = asking.entry;
    asking = null;
    dialog.close();
    await A.composeBody(A.S.room, made.body, { kind: UPDATE, replyTo: e.booking });
    draw();
  });
}

/** The people a booking may name: whoever wrote in the room, and every queue read there. */
function doctors(room) {
  const names = new Set();
  for (const m of A.S.msgs.values()) if (m.room === room && m.from) names.add(m.from);
  for (const q of last.get(room)?.data.queues ?? []) names.add(q.queue);
  for (const e of last.get(room)?.data.finished ?? []) if (e.queue) names.add(e.queue);
  return [...names].sort();
}

let lastDoctor = '';

function bindBookDialog() {
  const dialog = $('book-dialog');
  $('book-urgency').replaceChildren(...[...URGENCIES].reverse().map((u) => new Option(u, u)));
  $('queue-book').addEventListener('click', () => {
    const room = A.S.room;
    if (!room) return;
    $('book-doctors').replaceChildren(...doctors(room).map((u) => new Option(u, u)));
    $('book-queue').value = lastDoctor;
    for (const id of ['book-patient', 'book-reason', 'book-note']) $(id).value = '';
    $('book-urgency').value = 'routine';
    $('book-error').hidden = true;
    dialog.showModal();
  });
  $('book-cancel').addEventListener('click', () => dialog.close());
  $('book-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const room = A.S.room;
    if (!room) return;
    const values = { queue: $('book-queue').value, patient: $('book-patient').value, reason: $('book-reason').value, urgency: $('book-urgency').value, note: $('book-note').value };
    const made = buildBook(values);
    if (!made.body) {
      const err = $('book-error');
      err.textContent = `${BOOK_LABELS[made.field] ?? made.field} ${made.problem}.`;
      err.hidden = false;
      return;
    }
    lastDoctor = made.body.queue;
    dialog.close();
    await A.composeBody(room, made.body, { kind: BOOK });
    draw();
    // Shown as waiting at once; read again so that, reachable, it takes its place.
    refresh(room);
  });
}

export function bindQueue() {
  $('queue-toggle').addEventListener('click', () => {
    open = !open;
    draw();
    if (open) refresh();
  });
  $('queue-refresh').addEventListener('click', () => refresh());
  bindBookDialog();
  bindActionDialog();
}
