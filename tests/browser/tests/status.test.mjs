// Scenario 4: the hub's status page (/status, /status.json) next to the app. The app's
// service worker controls every page of the hub's origin: it must leave these alone.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, openRoom, send, serviceWorkerReady, shot, signInWithLink, waitConnected, waitState } from '../lib/browser.mjs';

test('the status page shows the hub, its uplink and the connected devices', { timeout: 180_000 }, async (t) => {
  const stack = await Stack.start('status');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  t.after(() => Promise.all([amina.close(), baraka.close()]));

  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic']));
  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await serviceWorkerReady(amina.page);

  // The same browser, now controlled by the app's service worker, opens the status page.
  const res = await amina.page.goto(`${stack.hubUrl}/status`);
  assert.equal(res.status(), 200);
  assert.equal(res.fromServiceWorker(), false);
  await amina.page.getByRole('heading', { name: 'Outpost hub hub-status' }).waitFor();
  // Only Baraka's phone is connected now (Amina's page left the app).
  const s = await statusUntil(amina.page, (st) => st.uplink.connected && st.devices.connected === 1);
  assert.equal(s.relay_id, 'hub-status');
  assert.equal(s.uplink.configured, true);
  await amina.page.reload();
  assert.match(await amina.page.locator('tr', { hasText: 'Connected devices' }).innerText(), /\b1\b/);
  // "connected to …", and not the "not connected" of a hub whose uplink is down.
  assert.match(await amina.page.locator('tr', { hasText: 'Uplink' }).innerText(), /(^|\s)connected to\b/);
  assert.doesNotMatch(await amina.page.locator('tr', { hasText: 'Uplink' }).innerText(), /not connected/);
  await shot(amina.page, 'status-360');
});

/**
 * Polls /status.json from the page until `pred(status)` holds: the status is only
 * observable by asking, so this is the event. Fails after `timeoutMs`.
 */
async function statusUntil(page, pred, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await page.evaluate(async () => (await fetch('/status.json')).json());
    if (pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`status never reached the expected state; last: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('the status page shows a backlog while the cloud is down and clears after it returns', { timeout: 180_000 }, async (t) => {
  const stack = await Stack.start('backlog');
  t.after(() => stack.close());
  const amina = await openBrowser('amina-backlog');
  const engineer = await openBrowser('engineer', { width: 1100, height: 800 });
  t.after(() => Promise.all([amina.close(), engineer.close()]));
  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await waitConnected(amina.page);

  // The uplink goes away; the village keeps working.
  assert.equal(await stack.stopCloud(), 0);
  await openRoom(amina.page, 'clinic');
  for (const text of ['BP 140/90, mother 32 weeks', 'Child 2y, fever 3 days', 'ORS stock: 4 sachets']) {
    await send(amina.page, text);
    await waitState(amina.page, text, 'stored');
  }
  await engineer.page.goto(`${stack.hubUrl}/status`);
  const down = await statusUntil(engineer.page, (s) => !s.uplink.connected && s.backlog.messages === 3);
  assert.equal(down.backlog.messages, 3);
  await engineer.page.reload();
  assert.match(await engineer.page.locator('tr', { hasText: 'Waiting for the cloud' }).innerText(), /\b3 messages/);
  assert.match(await engineer.page.locator('tr', { hasText: 'Uplink' }).innerText(), /not connected/);
  await shot(engineer.page, 'status-backlog-desktop');

  // The cloud returns: the backlog drains and the page says so.
  await stack.startCloud();
  await statusUntil(engineer.page, (s) => s.uplink.connected && s.backlog.messages === 0);
  await engineer.page.reload();
  // `\b0`: "10 messages" must not pass for an empty backlog.
  assert.match(await engineer.page.locator('tr', { hasText: 'Waiting for the cloud' }).innerText(), /\b0 messages/);
  assert.match(await engineer.page.locator('tr', { hasText: 'Uplink' }).innerText(), /(^|\s)connected to\b/);
  assert.doesNotMatch(await engineer.page.locator('tr', { hasText: 'Uplink' }).innerText(), /not connected/);
});
