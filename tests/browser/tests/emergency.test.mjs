// Scenario 3: an emergency from one worker, after a confirmation, shows on the other
// worker's screen (banner, vibration) and on a doctor's page served by the cloud.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, DESKTOP } from '../lib/browser.mjs';

test('an emergency reaches the other worker and the doctor on the cloud', { timeout: 240_000 }, async (t) => {
  const stack = await Stack.start('emergency');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  const neema = await openBrowser('dr-neema', DESKTOP);
  t.after(() => Promise.all([amina.close(), baraka.close(), neema.close()]));

  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic']));
  // Baraka allowed notifications (the app asks on the first touch); the doctor did not.
  await baraka.context.grantPermissions(['notifications'], { origin: new URL(stack.hubUrl).origin });
  // The doctor opens the same app at the cloud's address.
  await signInWithLink(neema.page, stack.cloudUrl, stack.token('dr-neema', 'doctor', ['clinic']));
  assert.match(await neema.page.locator('#whoami').innerText(), /dr-neema \(doctor\)/);
  await openRoom(amina.page, 'clinic');

  // Cancelling the confirmation sends nothing.
  await amina.page.getByRole('button', { name: 'Emergency', exact: true }).click();
  const dialog = amina.page.getByRole('dialog', { name: 'Send an emergency alert?' });
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden' });
  const normal = `Routine visit done ${Date.now()}`;
  await send(amina.page, normal);
  await waitState(amina.page, normal, 'delivered');
  // Both others hold the chat message, and nothing before it was an emergency.
  await neema.page.locator('.room-btn[data-room="clinic"]', { hasText: normal }).waitFor();
  assert.equal(await amina.page.locator('#log li.msg.emergency').count(), 0);
  assert.equal(await baraka.page.locator('#alerts').isVisible(), false);
  assert.equal(await neema.page.locator('#alerts').isVisible(), false);

  // Confirmed: it goes out as priority emergency, kind alert.
  const details = `Mother bleeding after delivery at Kijiji ${Date.now()}`;
  await amina.page.getByRole('button', { name: 'Emergency', exact: true }).click();
  await dialog.waitFor();
  await dialog.getByLabel('What is happening? (optional)').fill(details);
  await dialog.getByRole('button', { name: 'Send alert' }).click();
  const own = amina.page.locator('#log li.msg.mine.emergency', { hasText: details });
  await own.waitFor();
  const sent = await amina.page.evaluate((d) => [...window.outpost.msgs.values()].find((m) => m.body?.text === d), details);
  assert.equal(sent.priority, 'emergency');
  assert.equal(sent.kind, 'alert');
  await waitState(amina.page, details, 'delivered');
  // The sender's own screen shows no alarm.
  assert.equal(await amina.page.locator('#alerts').isVisible(), false);

  // Shown as a system notification too, through the service worker, so it reaches a phone
  // whose screen is off while the app is open in the background.
  const shown = async (b) =>
    b.page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      return reg ? (await reg.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag })) : [];
    });
  let notes = [];
  for (const deadline = Date.now() + 30_000; notes.length === 0 && Date.now() < deadline; ) {
    notes = await shown(baraka);
    if (notes.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(notes.length, 1, `one notification for the emergency: ${JSON.stringify(notes)}`);
  assert.equal(notes[0].title, 'EMERGENCY: amina in clinic');
  assert.equal(notes[0].body, details);
  assert.match(notes[0].tag, /^emergency-/);
  // The chat message before it raised none, and nobody who did not allow them gets one.
  assert.deepEqual(await shown(neema), []);

  for (const b of [baraka, neema]) {
    const banner = b.page.getByRole('alert').filter({ hasText: 'EMERGENCY' });
    await banner.waitFor();
    assert.match(await banner.innerText(), new RegExp(`amina in clinic: ${details}`));
    assert.match(await b.page.title(), /EMERGENCY/);
    assert.ok((await b.page.evaluate(() => window.__vibrations.length)) > 0, `${b.name}: no vibration`);
  }

  // The doctor opens the room from the banner, acknowledges it and answers from the cloud.
  await neema.page.getByRole('button', { name: 'Open room' }).click();
  await neema.page.getByRole('heading', { name: '# clinic' }).waitFor();
  await bubbles(neema.page, details).locator('.tag', { hasText: 'EMERGENCY' }).waitFor();
  await neema.page.getByRole('button', { name: 'Seen' }).click();
  await neema.page.locator('#alerts').waitFor({ state: 'hidden' });
  const reply = `Ambulance leaving now ${Date.now()}`;
  await send(neema.page, reply);
  await bubbles(amina.page, reply).waitFor();
  await waitState(amina.page, details, 'read');

  // Acknowledged alerts stay acknowledged after a reload.
  await neema.page.reload();
  await neema.page.getByRole('heading', { name: '# clinic' }).waitFor();
  await bubbles(neema.page, details).waitFor();
  assert.equal(await neema.page.locator('#alerts').isVisible(), false);
  assert.deepEqual([...amina.errors, ...baraka.errors, ...neema.errors], []);
});
