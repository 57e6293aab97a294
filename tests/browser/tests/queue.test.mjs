// Appointments and doctors' queues in the browser (docs/workflows.md): two workers on the
// hub book patients into dr-neema's queue; the doctor, on the cloud's page, works it
// (complete, confirm, triage, cancel, reschedule); everyone's Queue panel shows the same
// positions moving live, the booker hears a tone and reads a notice when her booking
// changes, and a booking made with the hub down waits on the phone and takes its place
// once the hub is back.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, serviceWorkerReady, waitConnected, shot, DESKTOP } from '../lib/browser.mjs';

const DOCTOR = 'dr-neema';

const panel = (page) => page.getByRole('region', { name: 'Queues', exact: true });
const queueOf = (page) => panel(page).getByRole('region', { name: `Queue of ${DOCTOR}` });
/** The open entry of `patient` in dr-neema's queue. */
const entry = (page, patient) => queueOf(page).locator(`li.q-entry[data-patient="${patient}"]`);
const finished = (page, patient) => panel(page).getByRole('region', { name: 'Finished recently' }).locator(`li.q-entry[data-patient="${patient}"]`);

/** Waits until `patient` shows at `position` (the number on screen). */
async function atPosition(page, patient, position) {
  await entry(page, patient).locator('.q-num', { hasText: new RegExp(`^${position}$`) }).waitFor();
}

/** The patients of dr-neema's open queue, top to bottom, as shown. */
const order = (page) => queueOf(page).locator('li.q-entry:not(.pending)').evaluateAll((lis) => lis.map((li) => `${li.querySelector('.q-num').textContent} ${li.dataset.patient}`));

async function openQueue(page) {
  await page.getByRole('button', { name: 'Queue', exact: true }).click();
  await panel(page).waitFor();
  await panel(page).getByRole('status').filter({ hasText: /Updated|Offline/ }).waitFor();
}

async function book(page, patient, reason, urgency = 'routine') {
  await panel(page).getByRole('button', { name: 'Book a patient' }).click();
  const dialog = page.getByRole('dialog', { name: 'Book a patient' });
  await dialog.waitFor();
  await dialog.getByLabel('Doctor (user id)').fill(DOCTOR);
  await dialog.getByLabel('Patient id').fill(patient);
  await dialog.getByLabel('Reason').fill(reason);
  await dialog.getByLabel('Urgency').selectOption(urgency);
  await dialog.getByRole('button', { name: 'Book', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
}

/** The doctor's action on an entry, through its dialog where it has one. */
async function act(page, patient, action, go) {
  await entry(page, patient).getByRole('button', { name: `${action} ${patient}` }).click();
  if (!go) return;
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: go, exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
}

const tones = (b) => b.page.evaluate(() => window.__tones);

test('a doctor works a queue booked from the village; positions move on every screen', { timeout: 420_000 }, async (t) => {
  const stack = await Stack.start('queue');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  const neema = await openBrowser(DOCTOR, DESKTOP);
  t.after(() => Promise.all([amina.close(), baraka.close(), neema.close()]));

  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic']));
  await signInWithLink(neema.page, stack.cloudUrl, stack.token(DOCTOR, 'doctor', ['clinic']));
  for (const b of [amina, baraka, neema]) {
    await openRoom(b.page, 'clinic');
    await openQueue(b.page);
  }
  await panel(amina.page).getByText('No open bookings in # clinic.').waitFor();
  await serviceWorkerReady(amina.page);

  // A name typed as the patient id is caught on the phone, and nothing is queued.
  await panel(amina.page).getByRole('button', { name: 'Book a patient' }).click();
  const form = amina.page.getByRole('dialog', { name: 'Book a patient' });
  await form.getByLabel('Doctor (user id)').fill(DOCTOR);
  await form.getByLabel('Patient id').fill('Amina Juma');
  await form.getByLabel('Reason').fill('cough');
  await form.getByRole('button', { name: 'Book', exact: true }).click();
  await form.getByRole('alert').filter({ hasText: 'Patient id must be a patient id' }).waitFor();
  await form.getByRole('button', { name: 'Cancel' }).click();
  await form.waitFor({ state: 'hidden' });
  assert.equal(await amina.page.evaluate(() => window.outpost.outbox.size), 0);

  // Amina books three patients, one after the other.
  await book(amina.page, 'KJ-0101', 'cough for three weeks');
  await atPosition(amina.page, 'KJ-0101', 1);
  await book(amina.page, 'KJ-0102', 'follow-up after malaria treatment');
  await atPosition(amina.page, 'KJ-0102', 2);
  await book(amina.page, 'KJ-0103', 'swollen ankles, 32 weeks pregnant');
  await atPosition(amina.page, 'KJ-0103', 3);
  const booking = await amina.page.evaluate(() => [...window.outpost.msgs.values()].find((m) => m.kind === 'queue.book' && m.body.patient === 'KJ-0101'));
  assert.deepEqual(booking.body, { queue: DOCTOR, patient: 'KJ-0101', reason: 'cough for three weeks', urgency: 'routine', text: `Booked KJ-0101 with ${DOCTOR} \u2014 routine: cough for three weeks` });

  // Baraka's phone and the doctor's page at the cloud show the same queue, in order.
  await atPosition(baraka.page, 'KJ-0103', 3);
  await atPosition(neema.page, 'KJ-0103', 3);
  assert.deepEqual(await order(neema.page), ['1 KJ-0101', '2 KJ-0102', '3 KJ-0103']);
  assert.deepEqual(await order(baraka.page), ['1 KJ-0101', '2 KJ-0102', '3 KJ-0103']);
  assert.match(await entry(neema.page, 'KJ-0102').innerText(), /ROUTINE|routine/);
  assert.match(await entry(neema.page, 'KJ-0102').innerText(), /booked by amina/);
  // The bookings read as cards in the doctor's room, not as JSON.
  const card = neema.page.locator('#log li.msg.queue .card[data-kind="queue.book"]', { hasText: 'KJ-0101' });
  await card.waitFor();
  assert.equal(await card.locator('.card-title').innerText(), `Booked KJ-0101 with ${DOCTOR} \u2014 routine: cough for three weeks`);
  // Only the doctor works the queue; a worker sees no doctor's buttons, and no Cancel on another's booking.
  assert.equal(await entry(baraka.page, 'KJ-0101').getByRole('button').count(), 0);
  assert.equal(await entry(amina.page, 'KJ-0101').getByRole('button', { name: 'Complete KJ-0101' }).count(), 0);
  await entry(amina.page, 'KJ-0101').getByRole('button', { name: 'Cancel KJ-0101' }).waitFor();

  // The doctor completes the first: the third moves from 3 to 2 on both phones.
  assert.equal((await tones(amina)).length, 0);
  await act(neema.page, 'KJ-0101', 'Complete', 'Complete');
  await entry(neema.page, 'KJ-0101').waitFor({ state: 'detached' });
  await atPosition(neema.page, 'KJ-0103', 2);
  for (const b of [amina, baraka]) {
    await atPosition(b.page, 'KJ-0103', 2);
    await entry(b.page, 'KJ-0101').waitFor({ state: 'detached' });
    await finished(b.page, 'KJ-0101').filter({ hasText: 'completed' }).waitFor();
  }
  // Amina booked it: she heard a tone and reads who did what.
  await amina.page.waitForFunction(() => window.__tones.length >= 1);
  const [tone] = await tones(amina);
  assert.equal(tone.label, `${DOCTOR} completed KJ-0101`);
  assert.equal(tone.sound, true, 'played through the audio unlocked by her first tap');
  await amina.page.getByRole('alert').filter({ hasText: `${DOCTOR} completed KJ-0101` }).waitFor();
  await amina.page.locator('#log li.msg.queue .card[data-kind="queue.update"]', { hasText: `${DOCTOR} completed the booking of KJ-0101` }).waitFor();
  assert.deepEqual(await tones(baraka), [], 'baraka did not book it');
  const update = await neema.page.evaluate(() => [...window.outpost.msgs.values()].find((m) => m.kind === 'queue.update'));
  assert.equal(update.body.status, 'completed');
  assert.equal(update.reply_to, update.body.booking, 'a change answers its booking');

  // Baraka books an urgent case: it goes ahead of the routine ones, on every screen.
  await book(baraka.page, 'KJ-0104', 'fever 40 C, stiff neck', 'urgent');
  for (const b of [baraka, amina, neema]) {
    await atPosition(b.page, 'KJ-0104', 1);
    await atPosition(b.page, 'KJ-0103', 3);
  }
  assert.deepEqual(await order(amina.page), ['1 KJ-0104', '2 KJ-0102', '3 KJ-0103']);
  const badge = entry(amina.page, 'KJ-0104').locator('.q-urgency');
  assert.equal(await badge.isVisible(), true);
  assert.match(await badge.innerText(), /urgent/i);
  // Baraka may cancel his own booking; amina may not cancel his.
  await entry(baraka.page, 'KJ-0104').getByRole('button', { name: 'Cancel KJ-0104' }).waitFor();
  assert.equal(await entry(amina.page, 'KJ-0104').getByRole('button').count(), 0);

  // The doctor confirms one (its booker is told), and triages another up.
  await act(neema.page, 'KJ-0102', 'Confirm');
  await entry(neema.page, 'KJ-0102').locator('.q-status', { hasText: 'confirmed' }).waitFor();
  await entry(amina.page, 'KJ-0102').locator('.q-status', { hasText: 'confirmed' }).waitFor();
  await amina.page.waitForFunction(() => window.__tones.length >= 2);
  assert.equal((await tones(amina))[1].label, `${DOCTOR} confirmed KJ-0102`);
  await entry(neema.page, 'KJ-0103').getByLabel('Urgency of KJ-0103').selectOption('soon');
  await atPosition(neema.page, 'KJ-0103', 2);
  await atPosition(amina.page, 'KJ-0103', 2);
  assert.deepEqual(await order(amina.page), ['1 KJ-0104', '2 KJ-0103', '3 KJ-0102']);
  assert.match(await entry(amina.page, 'KJ-0103').locator('.q-urgency').innerText(), /soon/i);

  // A cancelled entry leaves the open list and shows among the finished.
  await act(neema.page, 'KJ-0102', 'Cancel', 'Cancel booking');
  for (const b of [amina, baraka, neema]) {
    await entry(b.page, 'KJ-0102').waitFor({ state: 'detached' });
    await finished(b.page, 'KJ-0102').filter({ hasText: 'cancelled' }).waitFor();
  }
  assert.deepEqual(await order(baraka.page), ['1 KJ-0104', '2 KJ-0103']);
  await amina.page.waitForFunction(() => window.__tones.length >= 3);
  await shot(amina.page, 'queue-worker-360');
  await shot(neema.page, 'queue-doctor-desktop');

  // The hub goes down: amina books anyway; the booking waits on her phone, shown as such.
  await stack.stopHub();
  await amina.page.locator('#conn[data-state="warn"]').waitFor();
  await book(amina.page, 'KJ-0105', 'needs a repeat prescription');
  const waitingEntry = queueOf(amina.page).locator('li.q-entry.pending[data-patient="KJ-0105"]');
  await waitingEntry.filter({ hasText: 'waiting to send' }).waitFor();
  await panel(amina.page).getByRole('status').filter({ hasText: 'Offline' }).waitFor();
  await shot(amina.page, 'queue-offline-360');
  // The last queue read stays on screen meanwhile.
  assert.deepEqual(await order(amina.page), ['1 KJ-0104', '2 KJ-0103']);

  // The hub is back: the booking goes, and takes its place on the phone and at the doctor's.
  await stack.startHub();
  await waitConnected(amina.page);
  await atPosition(amina.page, 'KJ-0105', 3);
  await waitingEntry.waitFor({ state: 'detached' });
  await atPosition(neema.page, 'KJ-0105', 3);
  assert.deepEqual(await order(neema.page), ['1 KJ-0104', '2 KJ-0103', '3 KJ-0105']);

  // A reschedule (to the time the dialog proposes, tomorrow) shows with its time.
  await act(neema.page, 'KJ-0105', 'Reschedule', 'Reschedule');
  await entry(amina.page, 'KJ-0105').locator('.q-status', { hasText: 'rescheduled' }).waitFor();
  assert.match(await entry(amina.page, 'KJ-0105').innerText(), /due /);
  await amina.page.waitForFunction(() => window.__tones.length >= 4);
  assert.match((await tones(amina))[3].label, new RegExp(`^${DOCTOR} rescheduled KJ-0105 to `));

  assert.deepEqual([...amina.errors, ...baraka.errors, ...neema.errors], []);
});
