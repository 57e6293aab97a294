// Screenshots of the main screens at 360 px and at desktop width, into artifacts/
// (docs/screenshots/ holds reviewed copies). Each screen is also checked, so a broken
// screen fails here rather than producing a misleading picture.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, shot, MOBILE, DESKTOP } from '../lib/browser.mjs';

/** Takes `name-360.png` and `name-desktop.png` of the page as it is. */
async function both(page, name, ready) {
  for (const [size, vp] of [['360', MOBILE], ['desktop', DESKTOP]]) {
    await page.setViewportSize(vp);
    await ready();
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await shot(page, `${name}-${size}`);
  }
  await page.setViewportSize(MOBILE);
}

test('screenshots of sign in, rooms, room view with states, emergency banner', { timeout: 300_000 }, async (t) => {
  const stack = await Stack.start('screens');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  const neema = await openBrowser('dr-neema', DESKTOP);
  t.after(() => Promise.all([amina.close(), baraka.close(), neema.close()]));
  // Animations off, so the pictures are the same every run.
  for (const b of [amina, baraka, neema]) await b.page.emulateMedia({ reducedMotion: 'reduce' });

  await amina.page.goto(`${stack.hubUrl}/`);
  await both(amina.page, 'signin', () => amina.page.getByRole('form', { name: 'Sign in' }).waitFor());

  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic', 'village']));
  await signInWithLink(neema.page, stack.cloudUrl, stack.token('dr-neema', 'doctor', ['clinic']));
  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic', 'village', 'maternity']));

  await openRoom(baraka.page, 'clinic');
  await send(baraka.page, 'Fever case at Kijiji: girl, 4 years, since yesterday');
  await send(baraka.page, 'Temperature 39.5. Gave paracetamol, rapid test pending');
  await openRoom(neema.page, 'clinic');
  await bubbles(neema.page, 'rapid test pending').waitFor();
  await send(neema.page, 'Do the malaria rapid test now and tell me the result');
  await bubbles(baraka.page, 'malaria rapid test').waitFor();
  await openRoom(baraka.page, 'village');
  await send(baraka.page, 'Water pump at the school is fixed');

  await amina.page.locator('.room-btn[data-room="clinic"] .badge', { hasText: '3' }).waitFor();
  await amina.page.locator('.room-btn[data-room="village"] .badge', { hasText: '1' }).waitFor();
  await amina.page.locator('#people', { hasText: 'baraka online' }).waitFor();
  await both(amina.page, 'rooms', () => amina.page.locator('.room-btn[data-room="clinic"] .badge').waitFor());

  // Room view with each state: read, delivered, at the hospital, queued on this phone.
  await openRoom(amina.page, 'clinic');
  await openRoom(baraka.page, 'clinic');
  await send(amina.page, 'I will visit the family at 4 pm');
  await waitState(amina.page, 'visit the family', 'read');
  await baraka.page.getByRole('button', { name: 'Back to rooms' }).click();
  await baraka.page.locator('.room-btn[data-room="clinic"]').waitFor();
  await neema.context.close(); // the doctor goes off line: the next message is delivered, not read
  await send(amina.page, 'Rapid test positive. Starting treatment');
  await waitState(amina.page, 'Starting treatment', 'delivered');
  await amina.page.locator('#log li.msg.mine[data-trail~="forwarded"]', { hasText: 'Starting treatment' }).waitFor();
  await stack.stopHub();
  await amina.page.locator('#conn[data-state="warn"]').waitFor();
  await send(amina.page, 'We need more ORS sachets');
  await waitState(amina.page, 'ORS sachets', 'queued');
  await amina.page.getByRole('textbox', { name: 'Message' }).fill('');
  await both(amina.page, 'room', async () => {
    await amina.page.locator('#conn', { hasText: '1 pending' }).waitFor();
    await waitState(amina.page, 'ORS sachets', 'queued');
  });
  await stack.startHub();
  await waitState(amina.page, 'ORS sachets', 'delivered');

  // An emergency from Baraka on Amina's screen.
  await openRoom(baraka.page, 'clinic');
  await baraka.page.getByRole('button', { name: 'Emergency', exact: true }).click();
  const dialog = baraka.page.getByRole('dialog', { name: 'Send an emergency alert?' });
  await dialog.getByLabel('What is happening? (optional)').fill('Mother bleeding after delivery at Kijiji, need transport');
  await both(baraka.page, 'confirm', () => dialog.waitFor());
  await dialog.getByRole('button', { name: 'Send alert' }).click();
  const banner = amina.page.getByRole('alert').filter({ hasText: 'EMERGENCY' });
  await both(amina.page, 'emergency', () => banner.waitFor());
  assert.match(await banner.innerText(), /baraka in clinic: Mother bleeding/);
  assert.deepEqual([...amina.errors, ...baraka.errors], []);
});
