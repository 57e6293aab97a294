// Clinical events in the browser (docs/workflows.md): a worker logs vital signs with the
// form while the hub is down; the form refuses an implausible reading by field; the reading
// waits in the outbox and, once the hub is back, shows as a card on the doctor's page at
// the cloud, where the patient filter finds it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, serviceWorkerReady, waitConnected, DESKTOP } from '../lib/browser.mjs';

test('vitals logged offline reach the doctor as a card after the hub returns', { timeout: 300_000 }, async (t) => {
  const stack = await Stack.start('clinical');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const neema = await openBrowser('dr-neema', DESKTOP);
  t.after(() => Promise.all([amina.close(), neema.close()]));

  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await signInWithLink(neema.page, stack.cloudUrl, stack.token('dr-neema', 'doctor', ['clinic']));
  await openRoom(amina.page, 'clinic');
  const chat = `Morning round starts ${Date.now()}`;
  await send(amina.page, chat);
  await waitState(amina.page, chat, 'delivered');
  await serviceWorkerReady(amina.page);

  await stack.stopHub();
  await amina.page.locator('#conn[data-state="warn"]').waitFor();

  const page = amina.page;
  await page.getByRole('button', { name: 'Form', exact: true }).click();
  const dialog = page.getByRole('dialog', { name: 'Log a clinical event' });
  await dialog.waitFor();
  await dialog.getByLabel('What').selectOption('clinical.vitals');
  await dialog.getByLabel('Patient id').fill('KJ-0042');
  await dialog.getByLabel('Blood pressure, systolic (mmHg) (optional)').fill('400');
  await dialog.getByLabel('Blood pressure, diastolic (mmHg) (optional)').fill('84');
  await dialog.getByRole('button', { name: 'Send' }).click();
  // The slip is caught on the phone, by field, and nothing is queued.
  await dialog.getByRole('alert').filter({ hasText: 'Blood pressure, systolic must be between 40 and 300' }).waitFor();
  assert.equal(await page.locator('#log li.msg.clinical').count(), 0);
  await dialog.getByLabel('Blood pressure, systolic (mmHg) (optional)').fill('128');
  await dialog.getByLabel('SpO₂ (%) (optional)').fill('97');
  await dialog.getByRole('button', { name: 'Send' }).click();
  await dialog.waitFor({ state: 'hidden' });
  const mine = page.locator('#log li.msg.clinical.mine');
  await mine.locator('.card', { hasText: '128/84 mmHg' }).waitFor();
  assert.equal(await mine.getAttribute('data-state'), 'queued', 'written offline, it waits on the phone');

  await stack.startHub();
  await waitConnected(page);
  await page.locator('#log li.msg.clinical.mine[data-state="delivered"], #log li.msg.clinical.mine[data-state="forwarded"]').waitFor();

  // The doctor sees a card, not raw JSON, with every reading and its unit.
  await openRoom(neema.page, 'clinic');
  const card = neema.page.locator('#log li.msg.clinical .card[data-kind="clinical.vitals"]');
  await card.waitFor();
  const text = await card.innerText();
  for (const want of ['Vital signs', 'KJ-0042', '128/84 mmHg', '97 %']) assert.ok(text.includes(want), `${want} in ${text}`);
  assert.ok(!text.includes('{'), `no raw JSON: ${text}`);
  const sent = await neema.page.evaluate(() => [...window.outpost.msgs.values()].find((m) => m.kind === 'clinical.vitals'));
  assert.deepEqual(sent.body.bp, { systolic: 128, diastolic: 84, unit: 'mmHg' });

  // The patient filter keeps that patient's events and hides the rest of the room.
  const filter = neema.page.getByRole('searchbox', { name: 'Filter by patient id' });
  await bubbles(neema.page, chat).waitFor();
  await filter.fill('KJ-0042');
  await bubbles(neema.page, chat).waitFor({ state: 'detached' });
  assert.equal(await neema.page.locator('#log li.msg').count(), 1);
  await filter.fill('KJ-9999');
  await neema.page.locator('#log li.msg').first().waitFor({ state: 'detached' });
  await filter.fill('');
  await bubbles(neema.page, chat).waitFor();
  assert.deepEqual(amina.errors, []);
  assert.deepEqual(neema.errors, []);
});
