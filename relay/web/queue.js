// Appointments and doctors' queues (docs/workflows.md): the bodies of `queue.book` and
// `queue.update`, checked as the servers check them (shared/src/clinical.rs: a mistake is
// shown before sending, and a body sealed for an end-to-end encrypted room is checked by
// no one else), the words their cards and notices use, and the bookings still waiting in
// this device's outbox. Pure functions of plain values, like clinical.js: queuepanel.js
// and view.js wire them to the page. The queue itself is never computed here: the server
// derives it (GET /api/rooms/{room}/queues), so every device shows the same order.

export const BOOK = 'queue.book';
export const UPDATE = 'queue.update';
export const isQueue = (kind) => kind === BOOK || kind === UPDATE;

/** Most urgent first, as the servers order the open entries. */
export const URGENCIES = ['urgent', 'soon', 'routine'];
export const STATUSES = ['confirmed', 'rescheduled', 'cancelled', 'completed'];
/** Final states: such an entry leaves the open list for the finished ones. */
export const FINAL = ['completed', 'cancelled'];

const PATIENT = /^[A-Za-z0-9._:-]{1,64}$/;
const USER = /^[A-Za-z0-9._:@-]{1,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_TEXT = 2000;
/** How far ahead a reschedule may go (MAX_DUE_AHEAD_MS on the servers: 366 days). */
export const MAX_DUE_AHEAD_MS = 366 * 86_400_000;

const chars = (s) => [...s].length;
const fail = (field, problem) => ({ field, problem });

/** The server's checks of a `queue.book` body: null, or `{ field, problem }` for the first wrong field. */
export function checkBook(b) {
  if (!b || typeof b !== 'object' || Array.isArray(b)) return fail('body', 'must be an object');
  for (const k of Object.keys(b)) if (!['queue', 'patient', 'reason', 'urgency', 'text', 'note'].includes(k)) return fail(k, 'is not a field of a booking');
  if (typeof b.queue !== 'string' || !USER.test(b.queue)) return fail('queue', 'must be the doctor\u2019s user id (letters, digits, . _ - : @)');
  if (typeof b.patient !== 'string' || !PATIENT.test(b.patient)) return fail('patient', 'must be a patient id (letters, digits, . _ - :), never a name');
  if (typeof b.reason !== 'string' || !b.reason.trim()) return fail('reason', 'is required');
  if (chars(b.reason) > MAX_TEXT) return fail('reason', `is longer than ${MAX_TEXT} characters`);
  if (!URGENCIES.includes(b.urgency)) return fail('urgency', `must be one of ${[...URGENCIES].reverse().join(', ')}`);
  return checkCommon(b);
}

/** The server's checks of a `queue.update` body. */
export function checkUpdate(b, now = Date.now()) {
  if (!b || typeof b !== 'object' || Array.isArray(b)) return fail('body', 'must be an object');
  for (const k of Object.keys(b)) if (!['queue', 'booking', 'status', 'urgency', 'due_at', 'text', 'note'].includes(k)) return fail(k, 'is not a field of a queue update');
  if (typeof b.queue !== 'string' || !USER.test(b.queue)) return fail('queue', 'must be the doctor\u2019s user id');
  if (typeof b.booking !== 'string' || !UUID.test(b.booking)) return fail('booking', 'must be the booking\u2019s message id');
  if (b.status !== undefined && !STATUSES.includes(b.status)) return fail('status', `must be one of ${STATUSES.join(', ')}`);
  if (b.urgency !== undefined && !URGENCIES.includes(b.urgency)) return fail('urgency', `must be one of ${[...URGENCIES].reverse().join(', ')}`);
  if (b.status === undefined && b.urgency === undefined) return fail('status', 'or urgency is required');
  if (b.status === 'rescheduled' && b.due_at === undefined) return fail('due_at', 'is required');
  if (b.due_at !== undefined) {
    if (!Number.isSafeInteger(b.due_at) || b.due_at < 1_000_000_000_000) return fail('due_at', 'must be a date and time');
    if (b.due_at > now + MAX_DUE_AHEAD_MS) return fail('due_at', 'is more than a year ahead');
  }
  return checkCommon(b);
}

function checkCommon(b) {
  for (const k of ['text', 'note']) {
    if (b[k] === undefined) continue;
    if (typeof b[k] !== 'string' || !b[k].trim()) return fail(k, 'must not be empty');
    if (chars(b[k]) > MAX_TEXT) return fail(k, `is longer than ${MAX_TEXT} characters`);
  }
  return null;
}

/** The booking form's labels, for naming the field to correct. */
export const BOOK_LABELS = { queue: 'Doctor', patient: 'Patient id', reason: 'Reason', urgency: 'Urgency', note: 'Note' };

/**
 * The `queue.book` body the booking form's `values` (as typed) make, or `{ field, problem }`.
 * Its `text` is the one line older clients and the room list show.
 */
export function buildBook(values) {
  const body = {};
  for (const k of ['queue', 'patient', 'reason', 'urgency', 'note']) {
    const v = String(values[k] ?? '').trim();
    if (v) body[k] = v;
    else if (k !== 'note') return fail(k, 'is required');
  }
  body.text = bookText(body);
  if (chars(body.text) > MAX_TEXT) body.text = `${[...body.text].slice(0, MAX_TEXT - 1).join('')}\u2026`;
  return checkBook(body) ?? { body };
}

/**
 * The `queue.update` body for `booking` (an entry of the server's answer, or at least
 * `{ booking, queue, patient }`) written by `me`: `change` holds status, urgency, due_at, note.
 */
export function buildUpdate(entry, change, { me, now = Date.now(), time = String } = {}) {
  const body = { queue: entry.queue, booking: entry.booking };
  for (const k of ['status', 'urgency', 'due_at']) if (change[k] !== undefined && change[k] !== null && change[k] !== '') body[k] = change[k];
  const note = String(change.note ?? '').trim();
  if (note) body.note = note;
  body.text = updateText(me, body, entry.patient, time);
  return checkUpdate(body, now) ?? { body };
}

const cut = (s, n) => (chars(s) > n ? `${[...s].slice(0, n - 1).join('').trimEnd()}\u2026` : s);

/** "Booked KJ-0042 with dr-neema — urgent: cough for three weeks" (the reason cut short). */
export function bookText(b, max = 80) {
  const head = `Booked ${b?.patient ?? '?'} with ${b?.queue ?? '?'}`;
  const reason = typeof b?.reason === 'string' ? b.reason.replace(/\s+/g, ' ').trim() : '';
  return `${head} \u2014 ${b?.urgency ?? '?'}${reason ? `: ${cut(reason, max)}` : ''}`;
}

const DID = { confirmed: 'confirmed', rescheduled: 'rescheduled', cancelled: 'cancelled', completed: 'completed' };

/**
 * What `who` did to a booking of `patient` in one line: "dr-neema completed the booking of
 * KJ-0042", "dr-neema rescheduled the booking of KJ-0042 to 3 Jun 10:00", "dr-neema marked
 * KJ-0042 urgent". `patient` may be unknown here (the booking is not on this device).
 * `time(ms)` writes a due time.
 */
export function updateText(who, b, patient, time = String) {
  const whom = patient ? `the booking of ${patient}` : 'a booking';
  const parts = [];
  if (DID[b?.status]) {
    parts.push(`${who} ${DID[b.status]} ${whom}`);
    if (b.status === 'rescheduled' && typeof b.due_at === 'number') parts[0] += ` to ${time(b.due_at)}`;
    if (URGENCIES.includes(b.urgency)) parts.push(`now ${b.urgency}`);
    return parts.join(', ');
  }
  if (URGENCIES.includes(b?.urgency)) return `${who} marked ${patient ?? 'a booking'} ${b.urgency}`;
  return `${who} changed ${whom}`;
}

/** The short notice a booker gets: "dr-neema confirmed KJ-0042". */
export function noticeText(who, b, patient, time = String) {
  const whom = patient ?? 'your booking';
  if (b?.status === 'rescheduled' && typeof b.due_at === 'number') return `${who} rescheduled ${whom} to ${time(b.due_at)}`;
  if (DID[b?.status]) return `${who} ${DID[b.status]} ${whom}`;
  return `${who} changed ${whom}`;
}

/**
 * The card of a queue message: `{ title, rows }`. `lookup(id)` gives the body of a booking
 * held on this device (an update names its booking by id only).
 */
export function card(kind, b, { from, lookup = () => null, time = String } = {}) {
  if (!b || typeof b !== 'object') return { title: kind, rows: [] };
  const rows = [];
  const add = (label, v) => v !== undefined && v !== null && v !== '' && rows.push([label, String(v)]);
  if (kind === BOOK) {
    const title = bookText(b);
    if (typeof b.reason === 'string' && bookText(b, Infinity) !== title) add('Reason', b.reason);
    add('Note', b.note);
    return { title, rows };
  }
  const booked = lookup(b.booking);
  const title = updateText(from ?? '?', b, booked?.patient, time);
  if (!booked) add('Booking', b.booking);
  add('Note', b.note);
  return { title, rows };
}

/** The patients a queue message concerns (the room's patient filter). */
export function patientsOf(kind, b, lookup = () => null) {
  if (!b || typeof b !== 'object') return [];
  if (kind === BOOK) return typeof b.patient === 'string' ? [b.patient] : [];
  if (kind === UPDATE) {
    const p = lookup(b.booking)?.patient;
    return typeof p === 'string' ? [p] : [];
  }
  return [];
}

/**
 * Whether a `queue.update` from `from` should tell `me`: it changes the status of a booking
 * `me` made (`bookedBy`, from the booking held here or the last queue read), and someone
 * else made the change (what one does on one's own other phone makes no noise).
 */
export function tellsBooker(b, { from, me, bookedBy }) {
  return !!me && from !== me && bookedBy === me && !!b && STATUSES.includes(b.status);
}

/**
 * Entries the screen shows for the bookings and changes still in this device's outbox:
 * `pending` is the list of their records (`{ id, kind, body, created }`), `known` the
 * booking ids the server's answer already holds. Returns `{ bookings, changes }`:
 * bookings as entries (`status: 'waiting'`) per queue in the order written, and for each
 * booking id the changes waiting to go.
 */
export function waiting(pending, known = new Set()) {
  const bookings = [];
  const changes = new Map();
  const list = [...pending].sort((a, b) => (a.created ?? 0) - (b.created ?? 0));
  for (const r of list) {
    const b = r.body;
    if (!b || typeof b !== 'object') continue;
    if (r.kind === BOOK && !known.has(r.id)) {
      bookings.push({ booking: r.id, queue: b.queue, patient: b.patient, reason: b.reason, urgency: b.urgency, status: 'waiting', booked_by: r.from ?? null, booked_at: r.created ?? null });
    } else if (r.kind === UPDATE && typeof b.booking === 'string') {
      changes.set(b.booking, [...(changes.get(b.booking) ?? []), b]);
    }
  }
  return { bookings, changes };
}

/** A queue read, as the server answers it, made safe to draw: unknown shapes become empty lists. */
export function normalize(answer) {
  const list = (v) => (Array.isArray(v) ? v.filter((x) => x && typeof x === 'object') : []);
  const queues = list(answer?.queues)
    .filter((q) => typeof q.queue === 'string')
    .map((q) => ({ queue: q.queue, entries: list(q.entries).map((e) => ({ ...e, queue: e.queue ?? q.queue })) }));
  return { room: answer?.room ?? null, queues, finished: list(answer?.finished) };
}

/** Who booked `booking`, as far as this device knows. */
export function bookerOf(booking, data) {
  for (const q of data?.queues ?? []) for (const e of q.entries) if (e.booking === booking) return e;
  for (const e of data?.finished ?? []) if (e.booking === booking) return e;
  return null;
}
