// A new phone in a room with a long history: it is sent the room's latest 200 messages,
// not all of them (the app asks for one page of 50 older ones when the room opens), and
// "Load older messages" pages back through the rest (docs/protocol.md, "What a new
// device gets").

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, bubbles } from '../lib/browser.mjs';

const TOTAL = 400;

test('a new phone gets the latest 200 messages of a long room and loads the older ones', { timeout: 300_000 }, async (t) => {
  const stack = await Stack.start('window');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  t.after(() => amina.close());
  // Amina's phone makes the hub serve the room; the history comes from the hospital's
  // system through the cloud's HTTP API, and down to the hub.
  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic']));
  await openRoom(amina.page, 'clinic');
  const his = stack.token('his', 'doctor', ['clinic']);
  for (let n = 1; n <= TOTAL; n++) {
    const res = await fetch(`${stack.cloudUrl}/api/rooms/clinic/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${his}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: randomUUID(), body: { text: `history ${n} end` } }),
    });
    assert.equal(res.status, 201, await res.text());
  }
  await bubbles(amina.page, `history ${TOTAL} end`).waitFor();

  const zawadi = await openBrowser('zawadi');
  t.after(() => zawadi.close());
  await signInWithLink(zawadi.page, stack.hubUrl, stack.token('zawadi', 'worker', ['clinic']));
  await openRoom(zawadi.page, 'clinic');
  await bubbles(zawadi.page, `history ${TOTAL} end`).waitFor();
  // The window (200) and the first page before it (50).
  await bubbles(zawadi.page, `history ${TOTAL - 249} end`).waitFor();
  const older = zawadi.page.getByRole('button', { name: 'Load older messages' });
  await older.waitFor();
  assert.equal(await zawadi.page.locator('#log li.msg').count(), 250, 'the latest 200 and one page, not the whole room');
  assert.equal(await bubbles(zawadi.page, `history ${TOTAL - 250} end`).count(), 0);

  // Page by page back to the first message; then there is nothing older to load.
  for (let held = 250; held < TOTAL; held += 50) {
    await older.click();
    await zawadi.page.waitForFunction((n) => document.querySelectorAll('#log li.msg').length >= n, held + 50);
  }
  await bubbles(zawadi.page, 'history 1 end').waitFor();
  assert.equal(await zawadi.page.locator('#log li.msg').count(), TOTAL);
  await zawadi.page.locator('#older').waitFor({ state: 'hidden' });
  assert.deepEqual([...amina.errors, ...zawadi.errors], []);
});
