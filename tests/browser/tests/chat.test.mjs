// Scenario 1: two health workers on one hub chat in a room. The sender's message shows
// each custody step: queued on this phone -> on the hub -> at the hospital -> delivered -> read.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithForm, signInWithLink, openRoom, send, bubbles, waitState } from '../lib/browser.mjs';

const RANK = { queued: 0, stored: 1, forwarded: 2, delivered: 3, read: 4 };

test('two workers chat; the sender sees the message advance to read', { timeout: 240_000 }, async (t) => {
  const stack = await Stack.start('chat');
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  t.after(() => Promise.all([amina.close(), baraka.close()]));

  await signInWithForm(amina.page, stack.hubUrl, stack.token('amina', 'worker', ['clinic', 'village']));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', ['clinic', 'village']));

  // Rooms come from the token (welcome.rooms).
  for (const b of [amina, baraka]) {
    assert.deepEqual(await b.page.locator('.room-btn').evaluateAll((els) => els.map((e) => e.dataset.room)), ['clinic', 'village']);
  }

  await openRoom(amina.page, 'clinic');
  // Record every state the bubble shows, in order.
  await amina.page.evaluate(() => {
    window.__states = [];
    const note = (li) => li.dataset?.state && window.__states.push(li.dataset.state);
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes') note(r.target);
        for (const n of r.addedNodes ?? []) if (n.nodeType === 1 && n.matches('li.msg.mine')) note(n);
      }
    }).observe(document.getElementById('log'), { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  });

  const text = `Fever case at Kijiji ${Date.now()}`;
  await send(amina.page, text);
  // Baraka's phone stores it and acks (he has not opened the room): delivered, not read.
  await waitState(amina.page, text, 'delivered');
  await baraka.page.locator('.room-btn[data-room="clinic"] .badge', { hasText: '1' }).waitFor();
  assert.match(await amina.page.locator('#log li.msg.mine', { hasText: text }).locator('.state').innerText(), /Delivered by baraka/);

  // He opens the room and sees it once: read.
  await openRoom(baraka.page, 'clinic');
  await bubbles(baraka.page, text).waitFor();
  assert.equal(await bubbles(baraka.page, text).count(), 1);
  await waitState(amina.page, text, 'read');
  assert.match(await amina.page.locator('#log li.msg.mine', { hasText: text }).locator('.state').innerText(), /Read by baraka/);
  await baraka.page.locator('.room-btn[data-room="clinic"] .badge').waitFor({ state: 'detached' });

  // The hospital's commit (forwarded) arrives whenever the uplink carries it.
  await amina.page.locator('#log li.msg.mine[data-trail~="forwarded"]', { hasText: text }).waitFor();
  const trail = await amina.page.locator('#log li.msg.mine', { hasText: text }).getAttribute('data-trail');
  assert.equal(trail, 'queued stored forwarded delivered read');
  const seen = await amina.page.evaluate(() => window.__states);
  assert.equal(seen[0], 'queued', `states seen: ${seen}`);
  assert.equal(seen.at(-1), 'read', `states seen: ${seen}`);
  assert.ok(seen.includes('stored') || seen.includes('forwarded'), `states seen: ${seen}`);
  for (let i = 1; i < seen.length; i++) assert.ok(RANK[seen[i]] >= RANK[seen[i - 1]], `states went back: ${seen}`);

  // Typing and presence travel too.
  await amina.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Is she');
  await baraka.page.locator('#typing', { hasText: 'amina is typing' }).waitFor();
  await baraka.page.locator('#room-people', { hasText: 'amina online' }).waitFor();

  // A reply comes back; Amina's room is open, so Baraka sees it read.
  const reply = `On my way ${Date.now()}`;
  await send(baraka.page, reply);
  await bubbles(amina.page, reply).waitFor();
  await waitState(baraka.page, reply, 'read');

  // Amina's phone goes away: Baraka sees when she was last seen.
  await amina.close();
  await baraka.page.locator('#room-people', { hasText: /amina last seen/ }).waitFor();
  assert.deepEqual([...amina.errors, ...baraka.errors], []);
});
