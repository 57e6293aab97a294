// Doctors' queues in the web client (docs/workflows.md, "Appointments and doctors'
// queues"): the booking form and the doctor's actions build the bodies the servers accept
// and refuse what they would refuse, the cards and notices read them back in words, the
// outbox's bookings show as waiting, and only the booker is told of a change.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBook, buildUpdate, card, checkBook, checkUpdate, bookerOf, normalize, noticeText, patientsOf, tellsBooker, waiting, BOOK, UPDATE } from '../../relay/web/queue.js';
import { Protocol, initialState, plainError } from '../../relay/web/protocol.js';

const NOW = 1_780_000_000_000;
const BOOKING = '0190a7c4-1111-7222-8333-444455556666';

test('a booking form becomes the body the servers accept, with a one-line text', () => {
  const made = buildBook({ queue: ' dr-neema ', patient: 'KJ-0042', reason: 'cough for three weeks', urgency: 'urgent', note: '' });
  assert.deepEqual(made.body, { queue: 'dr-neema', patient: 'KJ-0042', reason: 'cough for three weeks', urgency: 'urgent', text: 'Booked KJ-0042 with dr-neema — urgent: cough for three weeks' });
  assert.equal(checkBook(made.body), null);
  const long = buildBook({ queue: 'dr-neema', patient: 'KJ-1', reason: 'x'.repeat(300), urgency: 'soon' });
  assert.ok([...long.body.text].length < 120, 'the text cuts a long reason short');
  assert.equal(long.body.reason.length, 300, 'the reason stays whole');
});

test('the booking form refuses what the server refuses, by the same field', () => {
  const field = (v) => buildBook({ queue: 'dr-neema', patient: 'KJ-0042', reason: 'cough', urgency: 'routine', ...v }).field;
  assert.equal(field({}), undefined);
  assert.equal(field({ patient: 'Amina Juma' }), 'patient', 'a name is not an id');
  assert.equal(field({ patient: 'K'.repeat(65) }), 'patient');
  assert.equal(field({ patient: 'KJ.1_a-b:c' }), undefined, 'letters, digits and . _ - :');
  assert.equal(field({ reason: '   ' }), 'reason');
  assert.equal(field({ reason: 'r'.repeat(2001) }), 'reason');
  assert.equal(field({ reason: 'r'.repeat(2000) }), undefined);
  assert.equal(field({ urgency: 'emergency' }), 'urgency', 'a queue knows routine, soon and urgent');
  assert.equal(field({ queue: '' }), 'queue');
  assert.equal(field({ queue: 'dr neema' }), 'queue', 'a user id has no space');
  assert.equal(checkBook({ queue: 'dr-neema', patient: 'KJ-1', reason: 'x', urgency: 'soon', when: 1 }).field, 'when', 'no other fields');
});

test('the doctor\u2019s changes: status, a reschedule with its time, urgency alone', () => {
  const entry = { booking: BOOKING, queue: 'dr-neema', patient: 'KJ-0042' };
  const ctx = { me: 'dr-neema', now: NOW, time: (ms) => `T${ms}` };
  assert.deepEqual(buildUpdate(entry, { status: 'completed' }, ctx).body, { queue: 'dr-neema', booking: BOOKING, status: 'completed', text: 'dr-neema completed the booking of KJ-0042' });
  const r = buildUpdate(entry, { status: 'rescheduled', due_at: NOW + 3_600_000, note: ' after the clinic ' }, ctx).body;
  assert.deepEqual(r, { queue: 'dr-neema', booking: BOOKING, status: 'rescheduled', due_at: NOW + 3_600_000, note: 'after the clinic', text: `dr-neema rescheduled the booking of KJ-0042 to T${NOW + 3_600_000}` });
  assert.equal(buildUpdate(entry, { urgency: 'urgent' }, ctx).body.text, 'dr-neema marked KJ-0042 urgent');
  assert.equal(buildUpdate(entry, { status: 'rescheduled' }, ctx).field, 'due_at', 'a reschedule needs its time');
  assert.equal(buildUpdate(entry, { status: 'rescheduled', due_at: NOW + 400 * 86_400_000 }, ctx).field, 'due_at', 'not more than a year ahead');
  assert.equal(buildUpdate(entry, {}, ctx).field, 'status', 'status or urgency');
  assert.equal(checkUpdate({ queue: 'dr-neema', booking: 'not-an-id', status: 'confirmed' }, NOW).field, 'booking');
  assert.equal(checkUpdate({ queue: 'dr-neema', booking: BOOKING, status: 'done' }, NOW).field, 'status');
});

test('cards and notices read queue messages in words, never as JSON', () => {
  const booking = { queue: 'dr-neema', patient: 'KJ-0042', reason: 'cough for three weeks', urgency: 'urgent' };
  assert.deepEqual(card(BOOK, booking, { from: 'amina' }), { title: 'Booked KJ-0042 with dr-neema — urgent: cough for three weeks', rows: [] });
  const lookup = (id) => (id === BOOKING ? booking : null);
  const done = card(UPDATE, { queue: 'dr-neema', booking: BOOKING, status: 'completed' }, { from: 'dr-neema', lookup });
  assert.equal(done.title, 'dr-neema completed the booking of KJ-0042');
  assert.deepEqual(done.rows, []);
  const unknown = card(UPDATE, { queue: 'dr-neema', booking: BOOKING, status: 'cancelled' }, { from: 'dr-neema' });
  assert.equal(unknown.title, 'dr-neema cancelled a booking');
  assert.deepEqual(unknown.rows, [['Booking', BOOKING]]);
  assert.equal(noticeText('dr-neema', { status: 'confirmed' }, 'KJ-0042'), 'dr-neema confirmed KJ-0042');
  assert.deepEqual(patientsOf(UPDATE, { booking: BOOKING }, lookup), ['KJ-0042']);
  assert.deepEqual(patientsOf(BOOK, booking), ['KJ-0042']);
});

test('only the booker is told, and only of a status someone else changed', () => {
  const b = { queue: 'dr-neema', booking: BOOKING, status: 'confirmed' };
  assert.equal(tellsBooker(b, { from: 'dr-neema', me: 'amina', bookedBy: 'amina' }), true);
  assert.equal(tellsBooker(b, { from: 'dr-neema', me: 'baraka', bookedBy: 'amina' }), false, 'not the booker');
  assert.equal(tellsBooker({ ...b, status: 'cancelled' }, { from: 'amina', me: 'amina', bookedBy: 'amina' }), false, 'own change');
  assert.equal(tellsBooker({ queue: 'dr-neema', booking: BOOKING, urgency: 'urgent' }, { from: 'dr-neema', me: 'amina', bookedBy: 'amina' }), false, 'urgency alone is triage, not news');
});

test('the outbox\u2019s bookings wait in order; those the server holds do not show twice', () => {
  const rec = (id, kind, body, created) => ({ id, kind, body, created, from: 'amina' });
  const { bookings, changes } = waiting(
    [
      rec('b2', BOOK, { queue: 'dr-neema', patient: 'KJ-2', reason: 'r', urgency: 'routine' }, 2),
      rec('b1', BOOK, { queue: 'dr-neema', patient: 'KJ-1', reason: 'r', urgency: 'routine' }, 1),
      rec('b0', BOOK, { queue: 'dr-neema', patient: 'KJ-0', reason: 'r', urgency: 'routine' }, 0),
      rec('u1', UPDATE, { queue: 'dr-neema', booking: 'x', status: 'cancelled' }, 3),
      rec('sealed', BOOK, null, 4),
    ],
    new Set(['b0']),
  );
  assert.deepEqual(bookings.map((b) => [b.patient, b.status]), [['KJ-1', 'waiting'], ['KJ-2', 'waiting']]);
  assert.deepEqual(changes.get('x'), [{ queue: 'dr-neema', booking: 'x', status: 'cancelled' }]);
});

test('a queue answer of an unexpected shape draws as empty lists; bookers are found in it', () => {
  assert.deepEqual(normalize(null), { room: null, queues: [], finished: [] });
  const data = normalize({
    room: 'clinic',
    queues: [{ queue: 'dr-neema', entries: [{ booking: 'a', patient: 'KJ-1', booked_by: 'amina', position: 1 }, null] }, { entries: [] }],
    finished: [{ booking: 'f', queue: 'dr-neema', status: 'completed', booked_by: 'baraka' }],
  });
  assert.equal(data.queues.length, 1);
  assert.equal(data.queues[0].entries[0].queue, 'dr-neema', 'an entry knows its queue');
  assert.equal(bookerOf('a', data).booked_by, 'amina');
  assert.equal(bookerOf('f', data).booked_by, 'baraka');
  assert.equal(bookerOf('z', data), null);
});

test('a change answers its booking (reply_to), and refusals are shown in words', () => {
  const state = initialState();
  state.claims = { sub: 'dr-neema', role: 'doctor', rooms: ['clinic'] };
  const p = new Protocol(state);
  const { msg } = p.draft({ id: 'u', seq: 1, room: 'clinic', body: { queue: 'dr-neema', booking: BOOKING, status: 'confirmed' }, kind: UPDATE, replyTo: BOOKING, device: 'd', now: NOW });
  assert.equal(msg.reply_to, BOOKING);
  assert.equal(msg.kind, UPDATE);
  assert.equal('reply_to' in p.draft({ id: 'c', seq: 2, room: 'clinic', body: { text: 'hi' }, device: 'd', now: NOW }).msg, false);
  assert.match(plainError('forbidden', 'only dr-neema changes entries of the queue dr-neema', 'hub'), /only dr-neema changes entries of the queue dr-neema/);
  assert.equal(plainError('forbidden', 'you are not a member of room maternity', 'hub'), 'You are not a member of that room.');
  assert.match(plainError('invalid_event', 'queue.book: field `reason` is required', 'hub'), /not accepted: field `reason` is required\./);
});
