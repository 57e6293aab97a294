// Scenario 4: the hub's status page (/status, /status.json) next to the app. The app's
// service worker controls every page of the hub's origin: it must leave these alone.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, serviceWorkerReady, shot } from '../lib/browser.mjs';

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
  const status = await amina.page.waitForFunction(
    async () => {
      const s = await (await fetch('/status.json')).json();
      return s.uplink.connected && s.devices.connected === 1 ? s : null;
    },
    null,
    { polling: 250 },
  );
  const s = await status.jsonValue();
  assert.equal(s.relay_id, 'hub-status');
  assert.equal(s.uplink.configured, true);
  await amina.page.reload();
  assert.match(await amina.page.locator('tr', { hasText: 'Connected devices' }).innerText(), /\b1\b/);
  assert.match(await amina.page.locator('tr', { hasText: 'Uplink' }).innerText(), /connected/);
  await shot(amina.page, 'status-360');
});
