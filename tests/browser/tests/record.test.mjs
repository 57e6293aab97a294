// A shared patient record in the browser (docs/workflows.md, "A shared patient record"):
// two workers on the hub and a doctor on the cloud's page keep one record of KJ-0042. An
// edit made online shows on every screen; two edits of the allergies made on the phones
// while the hub is down each show as waiting on their phone (also after a reload, from
// the record kept on the phone), and once the hub is back every screen shows the conflict
// with both values side by side, until the doctor writes a merged value. A checklist item
// the doctor adds and a worker ticks shows done at the doctor's; a checklist conflict is
// resolved with "Keep this"; the problem list is the doctor's field, so a worker's
// concurrent offline edit does not replace the doctor's value.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, serviceWorkerReady, waitConnected, shot, DESKTOP } from '../lib/browser.mjs';

const DOCTOR = 'dr-neema';
const PATIENT = 'KJ-0042';
const TASK = 'recheck BP at 18:00';

const panel = (page) => page.getByRole('region', { name: `Record of ${PATIENT}`, exact: true });
/** A field of the record: 'Problem list', 'Allergies' or 'Care plan'. */
const field = (page, name) => panel(page).getByRole('region', { name, exact: true });
const value = (page, name) => field(page, name).locator('.rec-value');
const conflict = (page) => field(page, 'Allergies').getByRole('group', { name: 'Conflict in allergies' });
const task = (page) => field(page, 'Care plan').locator('li.rec-task', { hasText: TASK });

/** Waits until the field shows `text` as its value, with nothing waiting to send and no conflict. */
async function shows(page, name, text) {
  await field(page, name).and(page.locator('[data-state="ok"]')).locator('.rec-value', { hasText: new RegExp(`^${text}$`) }).waitFor();
}

async function openRecord(page, patient = PATIENT) {
  await page.getByRole('button', { name: 'Record', exact: true }).click();
  const form = page.getByRole('form', { name: "Open a patient's record" });
  await form.getByLabel('Patient id').fill(patient);
  await form.getByRole('button', { name: 'Open', exact: true }).click();
  await panel(page).getByRole('status').filter({ hasText: /Updated|Offline/ }).waitFor();
}

/** Edits a text field through its dialog. */
async function editText(page, name, text, { merge = false } = {}) {
  const button = merge ? conflict(page).getByRole('button', { name: 'Write a merged value of allergies' }) : field(page, name).getByRole('button', { name: `Edit ${name.toLowerCase()}` });
  await button.click();
  const dialog = page.getByRole('dialog', { name: merge ? `Merge ${name.toLowerCase()} of ${PATIENT}` : `${name} of ${PATIENT}` });
  await dialog.waitFor();
  await dialog.getByLabel(name, { exact: true }).fill(text);
  await dialog.getByRole('button', { name: 'Save' }).click();
  await dialog.waitFor({ state: 'hidden' });
}

/** The record edits this page holds, oldest first, as they were sent. */
const edits = (page) => page.evaluate(() => [...window.outpost.msgs.values()].filter((m) => m.kind === 'record.edit').sort((a, b) => (a.id < b.id ? -1 : 1)));

test('a record edited offline on two phones shows the conflict everywhere until the doctor merges it', { timeout: 420_000 }, async (t) => {
  const stack = await Stack.start('record');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  const neema = await openBrowser(DOCTOR, DESKTOP);
  t.after(() => Promise.all([amina.close(), baraka.close(), neema.close()]));

  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic']));
  await signInWithLink(neema.page, stack.cloudUrl, stack.token(DOCTOR, 'doctor', ['clinic']));
  for (const b of [amina, baraka, neema]) await openRoom(b.page, 'clinic');
  await serviceWorkerReady(amina.page);
  await serviceWorkerReady(baraka.page);

  // A name typed as the patient id is caught on the phone.
  await amina.page.getByRole('button', { name: 'Record', exact: true }).click();
  const form = amina.page.getByRole('form', { name: "Open a patient's record" });
  await form.getByLabel('Patient id').fill('Amina Juma');
  await form.getByRole('button', { name: 'Open', exact: true }).click();
  await amina.page.getByRole('alert').filter({ hasText: 'Patient id must be a patient id' }).waitFor();
  await amina.page.getByRole('button', { name: 'Record', exact: true }).click();
  await amina.page.locator('#record-panel').waitFor({ state: 'hidden' });

  for (const b of [amina, baraka]) await openRecord(b.page);
  await value(amina.page, 'Allergies').filter({ hasText: 'None recorded' }).waitFor();

  // Online: amina sets the allergies; baraka's panel shows it.
  await editText(amina.page, 'Allergies', 'penicillin');
  for (const b of [amina, baraka]) await shows(b.page, 'Allergies', 'penicillin');
  assert.match(await field(baraka.page, 'Allergies').locator('.rec-meta').innerText(), /changed by amina/);
  const [first] = await edits(amina.page);
  assert.deepEqual(
    { ...first.body, text: undefined },
    { patient: PATIENT, field: 'allergies', value: 'penicillin', base: [], role: 'worker', text: undefined },
    'a first edit names no version, and the role of the token',
  );
  // The edit reads as a card in the room, not as JSON.
  const card = baraka.page.locator('#log li.msg.record .card[data-kind="record.edit"]').first();
  await card.waitFor();
  assert.equal(await card.locator('.card-title').innerText(), `amina changed the allergies of ${PATIENT}: penicillin`);
  // The doctor opens the record from that card in her room, at the cloud.
  await neema.page.locator('#log li.msg.record .card').first().getByRole('link', { name: `Open the record of ${PATIENT}` }).click();
  await panel(neema.page).getByRole('status').filter({ hasText: /Updated/ }).waitFor();
  await shows(neema.page, 'Allergies', 'penicillin');

  // The doctor adds a checklist item; amina ticks it; it shows done at the doctor's.
  await field(neema.page, 'Care plan').getByRole('button', { name: 'Add task' }).click();
  const add = neema.page.getByRole('dialog', { name: `Add a care-plan task for ${PATIENT}` });
  await add.getByLabel('Task').fill(TASK);
  await add.getByRole('button', { name: 'Save' }).click();
  await add.waitFor({ state: 'hidden' });
  await task(amina.page).and(amina.page.locator('[data-done="false"][data-state="ok"]')).waitFor();
  await task(amina.page).getByRole('checkbox', { name: TASK }).click();
  await task(neema.page).and(neema.page.locator('[data-done="true"][data-state="ok"]')).waitFor();
  assert.equal(await task(neema.page).getByRole('checkbox', { name: TASK }).isChecked(), true);
  assert.match(await task(neema.page).locator('.rec-meta').innerText(), /changed by amina/);
  const added = (await edits(neema.page)).find((m) => m.body.field.startsWith('care_plan.') && m.from === DOCTOR);
  const ticked = (await edits(neema.page)).find((m) => m.body.field === added.body.field && m.from === 'amina');
  assert.deepEqual(added.body.value, { task: TASK, done: false });
  assert.equal(added.body.role, 'doctor');
  assert.deepEqual(ticked.body.value, { task: TASK, done: true });
  assert.deepEqual(ticked.body.base, [added.id], 'ticked on top of the doctor\u2019s version');

  // The hub goes down. Each phone edits the allergies; each shows its own value, waiting.
  await stack.stopHub();
  for (const b of [amina, baraka]) await b.page.locator('#conn[data-state="warn"]').waitFor();
  await editText(amina.page, 'Allergies', 'penicillin, sulfa');
  await editText(baraka.page, 'Allergies', 'penicillin, latex');
  for (const [b, mine] of [[amina, 'penicillin, sulfa'], [baraka, 'penicillin, latex']]) {
    const f = field(b.page, 'Allergies').and(b.page.locator('[data-state="pending"]'));
    await f.locator('.rec-value', { hasText: new RegExp(`^${mine}$`) }).waitFor();
    await f.getByText('waiting to send').waitFor();
    await panel(b.page).getByRole('status').filter({ hasText: /^Offline: the record as it was at / }).waitFor();
  }
  // Reloaded with no hub, baraka's phone still shows the record it read, and his edit waiting.
  const reloaded = await baraka.page.reload();
  assert.ok(reloaded?.fromServiceWorker(), 'the reloaded page must come from the service worker');
  await baraka.page.getByRole('heading', { name: '# clinic' }).waitFor();
  await openRecord(baraka.page);
  await panel(baraka.page).getByRole('status').filter({ hasText: /^Offline: the record as it was at / }).waitFor();
  await field(baraka.page, 'Allergies').and(baraka.page.locator('[data-state="pending"]')).locator('.rec-value', { hasText: /^penicillin, latex$/ }).waitFor();
  await task(baraka.page).and(baraka.page.locator('[data-done="true"]')).waitFor();
  // Amina unticks the checklist item offline, while the doctor rewrites it at the cloud.
  await task(amina.page).getByRole('checkbox', { name: TASK }).click();
  await task(amina.page).and(amina.page.locator('[data-done="false"][data-state="pending"]')).waitFor();
  await task(neema.page).getByRole('button', { name: `Edit task ${TASK}` }).click();
  const rewrite = neema.page.getByRole('dialog', { name: `Care-plan task of ${PATIENT}` });
  await rewrite.getByLabel('Task').fill(`${TASK} and 22:00`);
  assert.equal(await rewrite.getByLabel('Done').isChecked(), true, 'the dialog starts from the item as shown');
  await rewrite.getByRole('button', { name: 'Save' }).click();
  await rewrite.waitFor({ state: 'hidden' });
  await task(neema.page).and(neema.page.locator('[data-state="ok"]')).filter({ hasText: `${TASK} and 22:00` }).waitFor();
  // Meanwhile the doctor, at the cloud, writes the problem list, and baraka, offline, too.
  await editText(neema.page, 'Problem list', 'pre-eclampsia');
  await shows(neema.page, 'Problem list', 'pre-eclampsia');
  await field(neema.page, 'Problem list').getByText('doctor\u2019s field').waitFor();
  await editText(baraka.page, 'Problem list', 'high blood pressure');
  await field(baraka.page, 'Problem list').and(baraka.page.locator('[data-state="pending"]')).locator('.rec-value', { hasText: 'high blood pressure' }).waitFor();
  await shot(amina.page, 'record-offline-360');

  // The hub is back: both edits go; every screen shows the conflict, with both values.
  await stack.startHub();
  await waitConnected(amina.page);
  await waitConnected(baraka.page);
  for (const b of [amina, baraka, neema]) {
    await conflict(b.page).getByText('Conflict', { exact: true }).waitFor();
    for (const [who, v] of [['amina', 'penicillin, sulfa'], ['baraka', 'penicillin, latex']]) {
      const c = conflict(b.page).locator(`li.rec-candidate[data-by="${who}"]`);
      await c.locator('.rec-cand-value', { hasText: new RegExp(`^${v}$`) }).waitFor();
      await c.getByRole('button', { name: /^Keep this/ }).waitFor();
    }
    assert.equal(await conflict(b.page).locator('li.rec-candidate').count(), 2);
    assert.equal(await field(b.page, 'Allergies').getByText('waiting to send').count(), 0);
  }
  // The checklist item conflicts too; baraka keeps the doctor's version, and every screen follows.
  for (const b of [amina, baraka, neema]) {
    const c = task(b.page).getByRole('group', { name: 'Conflict in this task' });
    await c.locator('li.rec-candidate[data-by="amina"] .rec-cand-value', { hasText: new RegExp(`^${TASK}$`) }).waitFor();
    await c.locator('li.rec-candidate[data-by="dr-neema"] .rec-cand-value', { hasText: `${TASK} and 22:00 (done)` }).waitFor();
  }
  await task(baraka.page).locator('li.rec-candidate[data-by="dr-neema"]').getByRole('button', { name: /^Keep this/ }).click();
  for (const b of [baraka, amina, neema]) {
    await task(b.page).and(b.page.locator('[data-done="true"][data-state="ok"]')).filter({ hasText: `${TASK} and 22:00` }).waitFor();
    assert.equal(await task(b.page).getByRole('group').count(), 0);
  }
  const kept = (await edits(baraka.page)).find((m) => m.from === 'baraka' && m.body.field.startsWith('care_plan.'));
  assert.deepEqual(kept.body.value, { task: `${TASK} and 22:00`, done: true });
  assert.equal(kept.body.base.length, 2, 'keeping one names both');
  // The problem list is the doctor's: baraka's concurrent edit neither replaces it nor conflicts.
  for (const b of [baraka, amina, neema]) {
    await shows(b.page, 'Problem list', 'pre-eclampsia');
    await field(b.page, 'Problem list').getByText('doctor\u2019s field').waitFor();
  }
  await shot(baraka.page, 'record-conflict-360');
  await shot(neema.page, 'record-conflict-doctor-desktop');

  // The doctor writes a merged value: the conflict is gone on all three screens.
  const candidates = (await edits(neema.page)).filter((m) => m.body.field === 'allergies' && m.from !== DOCTOR && m.body.value !== 'penicillin').map((m) => m.id);
  assert.equal(candidates.length, 2);
  await editText(neema.page, 'Allergies', 'penicillin, sulfa, latex', { merge: true });
  for (const b of [neema, amina, baraka]) {
    await shows(b.page, 'Allergies', 'penicillin, sulfa, latex');
    await conflict(b.page).waitFor({ state: 'detached' });
  }
  const merged = (await edits(neema.page)).find((m) => m.body.value === 'penicillin, sulfa, latex');
  assert.deepEqual([...merged.body.base].sort(), [...candidates].sort(), 'the merge names both values it replaces');
  assert.equal(merged.body.role, 'doctor');
  // History lists every version of the allergies: four.
  for (const b of [amina, neema]) {
    await panel(b.page).locator('summary', { hasText: 'History' }).click();
    const rows = panel(b.page).locator('.rec-history-list li[data-field="allergies"]');
    await rows.nth(3).waitFor();
    assert.equal(await rows.count(), 4);
    assert.match(await rows.first().innerText(), /penicillin, sulfa, latex/);
    assert.match(await field(b.page, 'Allergies').locator('.rec-meta').innerText(), /4 versions/);
  }
  // Baraka's problem list stays in the history.
  await panel(amina.page).locator('.rec-history-list li[data-field="problems"]', { hasText: 'high blood pressure' }).waitFor();
  await shot(amina.page, 'record-merged-360');

  // The patient filter finds the record's edits.
  const filter = neema.page.getByRole('searchbox', { name: 'Filter by patient id' });
  await filter.fill('KJ-9999');
  await neema.page.locator('#log li.msg.record').first().waitFor({ state: 'detached' });
  await filter.fill(PATIENT);
  await neema.page.locator('#log li.msg.record .card', { hasText: `${DOCTOR} changed the allergies of ${PATIENT}: penicillin, sulfa, latex` }).waitFor();
  await filter.fill('');

  assert.deepEqual([...amina.errors, ...baraka.errors, ...neema.errors], []);
});
