// Scenario 2: the hub stops (SIGTERM). A worker writes a message anyway; it waits in the
// phone's outbox (IndexedDB), survives a reload of the page (served by the service worker,
// since nothing else can serve it), and is delivered exactly once when the hub is back.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, serviceWorkerReady, waitConnected } from '../lib/browser.mjs';

test('a message written while the hub is down survives a reload and arrives once', { timeout: 300_000 }, async (t) => {
  const stack = await Stack.start('offline');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  t.after(() => Promise.all([amina.close(), baraka.close()]));

  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic']));
  await openRoom(amina.page, 'clinic');
  await openRoom(baraka.page, 'clinic');
  const before = `Before the outage ${Date.now()}`;
  await send(amina.page, before);
  await waitState(amina.page, before, 'read');
  await serviceWorkerReady(amina.page);

  await stack.stopHub();
  const conn = amina.page.locator('#conn');
  await amina.page.locator('#conn[data-state="warn"]', { hasText: /not reachable\. Reconnecting in \d+ s/ }).waitFor();

  const text = `Written offline ${Date.now()}`;
  await send(amina.page, text);
  await waitState(amina.page, text, 'queued');
  assert.match(await amina.page.locator('#log li.msg.mine', { hasText: text }).innerText(), /Queued on this phone/);
  await amina.page.locator('#conn', { hasText: '1 pending' }).waitFor();

  // Reload with no hub: the shell comes from the service worker, the message from IndexedDB.
  const response = await amina.page.reload();
  assert.ok(response?.fromServiceWorker(), 'the reloaded page must come from the service worker');
  await openRoomIfNeeded(amina.page);
  await waitState(amina.page, text, 'queued');
  await waitState(amina.page, before, 'read');
  await amina.page.locator('#conn', { hasText: /Reconnecting in \d+ s · 1 pending/ }).waitFor();
  assert.equal(await bubbles(baraka.page, text).count(), 0);

  await stack.startHub();
  // Both phones reconnect by themselves (backoff); the outbox is sent and stored once.
  await waitConnected(amina.page);
  await waitConnected(baraka.page);
  await bubbles(baraka.page, text).waitFor();
  await waitState(amina.page, text, 'read');
  assert.equal(await bubbles(baraka.page, text).count(), 1);
  assert.equal(await bubbles(amina.page, text).count(), 1);
  assert.doesNotMatch(await conn.innerText(), /pending/);
  const outbox = await amina.page.evaluate(() => window.outpost.outbox.size);
  assert.equal(outbox, 0);

  // Baraka's phone, reloaded, still holds it once (deduplicated on the message id) ...
  await baraka.page.reload();
  await waitConnected(baraka.page);
  await openRoomIfNeeded(baraka.page);
  await bubbles(baraka.page, before).waitFor();
  assert.equal(await bubbles(baraka.page, text).count(), 1);

  // ... and the hub holds it once: a new device of a third worker replays the whole room.
  const zawadi = await openBrowser('zawadi');
  t.after(() => zawadi.close());
  await signInWithLink(zawadi.page, stack.hubUrl, stack.token('zawadi', 'worker', ['clinic']));
  await openRoom(zawadi.page, 'clinic');
  await bubbles(zawadi.page, text).waitFor();
  await bubbles(zawadi.page, before).waitFor();
  assert.equal(await bubbles(zawadi.page, text).count(), 1);
  assert.equal(await zawadi.page.locator('#log li.msg').count(), 2);
  assert.deepEqual([...amina.errors, ...baraka.errors, ...zawadi.errors], []);
});

/** After a reload the URL still names the room; wait for its view. */
async function openRoomIfNeeded(page) {
  await page.getByRole('heading', { name: '# clinic' }).waitFor();
  await page.getByRole('textbox', { name: 'Message' }).waitFor();
}
