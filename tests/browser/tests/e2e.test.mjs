// Scenario: an end-to-end encrypted room (policy.encrypted_rooms = hiv-clinic on the hub and
// the cloud). A worker makes the room key in the app and shares it as a link; the other
// worker and a doctor on the cloud read the message; a member without the key sees a lock;
// the hub's and the cloud's files never hold the words, while an ordinary room's words are
// there (so the search would find them). Emergencies in the room still ring.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, shot, waitConnected, DESKTOP } from '../lib/browser.mjs';

const ROOM = 'hiv-clinic';

/** Waits until the own bubble showing `text` is at least delivered (it may skip straight to read). */
const delivered = (page, text) => page.locator('#log li.msg[data-state="delivered"], #log li.msg[data-state="read"]', { hasText: text }).waitFor();
const readers = (page, text) => page.evaluate((t) => {
  const m = [...window.outpost.msgs.values()].find((x) => x.mine && x.body?.text === t);
  return Object.entries(window.outpost.receipts.get(m.id)?.by ?? {}).filter(([, s]) => s === 'read').map(([u]) => u).sort();
}, text);
const LOCKED_HINT = 'This room is end-to-end encrypted. Add its key to read and write.';

/** Every file under `dir`, as [path, bytes]. */
function files(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.isFile()) out.push([p, fs.readFileSync(p)]);
  }
  return out;
}

/** The room key in a key link, as bytes (node:crypto stands in for the Rust side: same AES-GCM). */
function keyOf(link) {
  const m = /#roomkey=([^/]+)\/([^/]+)\/([A-Za-z0-9_-]+)$/.exec(link);
  assert.ok(m, `not a key link: ${link}`);
  return { room: decodeURIComponent(m[1]), kid: decodeURIComponent(m[2]), key: Buffer.from(m[3], 'base64url') };
}

function openWithNode(key, room, id, body) {
  const e = body.e2e;
  const ct = Buffer.from(e.ct, 'base64url');
  const d = crypto.createDecipheriv('aes-256-gcm', key, Buffer.from(e.iv, 'base64url'));
  d.setAAD(Buffer.from(`outpost-e2e-v1|${room}|${id}`));
  d.setAuthTag(ct.subarray(ct.length - 16));
  return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]).toString('utf8');
}

test('an end-to-end encrypted room: readable by key holders only, never by the servers', { timeout: 300_000 }, async (t) => {
  const stack = await Stack.start('e2e', { encryptedRooms: [ROOM] });
  t.after(() => stack.close());
  const amina = await openBrowser('amina');
  const baraka = await openBrowser('baraka');
  const chausiku = await openBrowser('chausiku');
  const neema = await openBrowser('dr-neema', DESKTOP);
  t.after(() => Promise.all([amina, baraka, chausiku, neema].map((b) => b.close())));

  const rooms = ['clinic', ROOM];
  await signInWithLink(amina.page, stack.hubUrl, stack.token('amina', 'worker', rooms));
  await signInWithLink(baraka.page, stack.hubUrl, stack.token('baraka', 'worker', rooms));
  await signInWithLink(chausiku.page, stack.hubUrl, stack.token('chausiku', 'worker', rooms));
  await signInWithLink(neema.page, stack.cloudUrl, stack.token('dr-neema', 'doctor', rooms));

  // welcome.encrypted names the room; the list and the header mark it.
  assert.deepEqual(await amina.page.evaluate(() => window.outpost.welcome.encrypted), [ROOM]);
  await amina.page.locator(`.room-btn[data-room="${ROOM}"]`).getByRole('img', { name: 'end-to-end encrypted' }).waitFor();
  assert.equal(await amina.page.locator('.room-btn[data-room="clinic"] .lock').count(), 0);

  // Without a key the room says so and the composer is off.
  await openRoom(amina.page, ROOM);
  await amina.page.getByRole('heading', { name: `# ${ROOM}` }).getByRole('img', { name: 'end-to-end encrypted' }).waitFor();
  await amina.page.getByText(LOCKED_HINT).waitFor();
  assert.equal(await amina.page.getByRole('textbox', { name: 'Message' }).isDisabled(), true);
  assert.equal(await amina.page.getByRole('button', { name: 'Emergency', exact: true }).isDisabled(), true);
  await shot(amina.page, 'e2e-nokey-360');

  // Amina starts the room: "New room key" makes a key and shows the link to share.
  await amina.page.getByRole('button', { name: 'New room key' }).click();
  await amina.page.getByLabel('Link that adds the key').waitFor();
  const link = await amina.page.getByLabel('Link that adds the key').inputValue();
  const k = keyOf(link);
  assert.equal(k.room, ROOM);
  assert.equal(k.key.length, 32);
  assert.match(await amina.page.getByLabel('Text to send').inputValue(), new RegExp(`${k.kid}/`));
  await amina.page.getByRole('textbox', { name: 'Message' }).waitFor({ state: 'visible' });
  assert.equal(await amina.page.getByRole('textbox', { name: 'Message' }).isDisabled(), false);
  await amina.page.getByText(`new messages use key ${k.kid}`).waitFor();
  await shot(amina.page, 'e2e-newkey-360');

  // Baraka opens the link on his phone (already signed in); the doctor opens the same
  // fragment at the cloud's address. The key leaves the address bar at once.
  const fragment = link.slice(link.indexOf('#'));
  await baraka.page.goto(`${stack.hubUrl}/${fragment}`);
  await neema.page.goto(`${stack.cloudUrl}/${fragment}`);
  for (const b of [baraka, neema]) {
    await b.page.getByRole('heading', { name: `# ${ROOM}` }).waitFor();
    await b.page.getByText(`new messages use key ${k.kid}`).waitFor();
    assert.doesNotMatch(b.page.url(), /roomkey/, `${b.name}: the key stayed in the address bar`);
  }
  // Chausiku is a member too, but nobody gave her the key.
  await openRoom(chausiku.page, ROOM);

  const secret = `viral load 40 copies/ml ${Date.now()}`;
  const control = `routine control visit ${Date.now()}`;
  await send(amina.page, secret);
  // Delivered to the phones; not "read" by Chausiku, whose screen shows only a lock.
  await delivered(amina.page, secret);
  await openRoom(amina.page, 'clinic');
  await send(amina.page, control);
  await delivered(amina.page, control);

  // Key holders read it, on the hub and on the cloud.
  await bubbles(baraka.page, secret).waitFor();
  await bubbles(neema.page, secret).waitFor();
  // Without the key: a lock, and the words are nowhere on the page.
  const lockText = `\u{1F512} Encrypted message (key ${k.kid} not on this device)`;
  await chausiku.page.locator('#log li.msg.locked', { hasText: lockText }).waitFor();
  await chausiku.page.locator(`.room-btn[data-room="${ROOM}"]`, { hasText: lockText }).waitFor({ state: 'attached' });
  assert.ok(!(await chausiku.page.content()).includes(secret));
  await shot(chausiku.page, 'e2e-locked-360');
  // She has the room open, but a message she cannot open is not reported as read.
  await bubbles(amina.page, control).waitFor();
  await openRoom(amina.page, ROOM);
  await waitState(amina.page, secret, 'read');
  assert.ok(!(await readers(amina.page, secret)).includes('chausiku'));

  // What travelled is the envelope; node:crypto (plain AES-256-GCM, as the Rust side) opens it.
  const rec = await baraka.page.evaluate((s) => [...window.outpost.msgs.values()].find((m) => m.body?.e2e && m.room === 'hiv-clinic'), secret);
  assert.ok(rec, 'baraka holds no envelope');
  assert.deepEqual(Object.keys(rec.body.e2e).sort(), ['alg', 'ct', 'iv', 'kid', 'v']);
  assert.equal(rec.body.e2e.kid, k.kid);
  assert.equal(Buffer.from(rec.body.e2e.iv, 'base64url').length, 12);
  assert.deepEqual(JSON.parse(openWithNode(k.key, ROOM, rec.id, rec.body)), { text: secret });
  assert.throws(() => openWithNode(k.key, 'clinic', rec.id, rec.body), 'the room is bound into the ciphertext');

  // An emergency in the room is sealed too, but still rings: with the words for key
  // holders, as "🔒 Emergency" for Chausiku.
  const alarm = `Patient collapsed at the HIV clinic ${Date.now()}`;
  await baraka.page.getByRole('button', { name: 'Emergency', exact: true }).click();
  const dialog = baraka.page.getByRole('dialog', { name: 'Send an emergency alert?' });
  await dialog.getByLabel('What is happening? (optional)').fill(alarm);
  await dialog.getByRole('button', { name: 'Send alert' }).click();
  await baraka.page.locator('#log li.msg.mine.emergency', { hasText: alarm }).waitFor();
  for (const b of [amina, neema]) {
    await b.page.getByRole('alert').filter({ hasText: `baraka in ${ROOM}: ${alarm}` }).waitFor();
  }
  const locked = chausiku.page.getByRole('alert').filter({ hasText: 'EMERGENCY' });
  await locked.waitFor();
  assert.match(await locked.innerText(), new RegExp(`baraka in ${ROOM}: \u{1F512} Emergency`));
  assert.match(await chausiku.page.title(), /EMERGENCY/);
  assert.ok(!(await chausiku.page.content()).includes(alarm));
  await chausiku.page.getByRole('button', { name: 'Seen' }).click();

  // A wrong key under the same id does not open it; the right one, pasted, does.
  const form = chausiku.page.getByRole('form', { name: 'Room key' });
  await form.getByLabel('Paste the room key, or the link it came in').fill(`${k.kid}/${crypto.randomBytes(32).toString('base64url')}`);
  await form.getByRole('button', { name: 'Add key' }).click();
  await chausiku.page.locator('#log li.msg.locked', { hasText: '\u{1F512} Cannot be opened with the key on this device' }).first().waitFor();
  await chausiku.page.locator('#e2e-keys').evaluate((d) => (d.open = true));
  await form.getByLabel('Paste the room key, or the link it came in').fill(link);
  await form.getByRole('button', { name: 'Add key' }).click();
  await bubbles(chausiku.page, secret).waitFor();
  await bubbles(chausiku.page, alarm).waitFor();
  for (let i = 0; !(await readers(amina.page, secret)).includes('chausiku'); i++) {
    assert.ok(i < 100, 'chausiku never read the message after adding the key');
    await new Promise((r) => setTimeout(r, 200));
  }

  // The key stays on the phone (IndexedDB) across a reload.
  await baraka.page.reload();
  await waitConnected(baraka.page);
  await bubbles(baraka.page, secret).waitFor();

  // Neither server wrote the words anywhere (databases, WAL, logs); the control shows the
  // search would have found them in the hub's database.
  const hubDb = path.join(stack.relayDir, 'data', 'relay.db');
  const hubBytes = Buffer.concat([hubDb, `${hubDb}-wal`].filter((p) => fs.existsSync(p)).map((p) => fs.readFileSync(p)));
  assert.ok(hubBytes.includes(Buffer.from(control)), 'control: the ordinary message is not in the hub database');
  for (const [p, bytes] of files(stack.dir)) {
    for (const words of [secret, alarm, 'viral load']) assert.ok(!bytes.includes(Buffer.from(words)), `${p} holds "${words}"`);
  }

  assert.deepEqual([...amina.errors, ...baraka.errors, ...chausiku.errors, ...neema.errors], []);
});

test('on a page that is not a secure context the room explains itself instead of failing', { timeout: 180_000 }, async (t) => {
  // Always a plain-http hub, also when the run opens hubs by name over HTTPS: a hub with a
  // certificate serves no plain-http page, and this is about a hub without one.
  const stack = await Stack.start('e2e-insecure', { encryptedRooms: [ROOM], hub: 'address' });
  t.after(() => stack.close());
  // hub.village resolves to the hub, but is not localhost: no WebCrypto, as on a LAN address.
  const zawadi = await openBrowser('zawadi', undefined, { hosts: ['hub.village'] });
  t.after(() => zawadi.close());
  const base = `http://hub.village:${stack.hubAddr.split(':').pop()}`;
  await signInWithLink(zawadi.page, base, stack.token('zawadi', 'worker', ['clinic', ROOM]));
  assert.equal(await zawadi.page.evaluate(() => window.isSecureContext), false);
  // The page says what does not work here, before anything fails.
  await zawadi.page.getByRole('note').filter({ hasText: 'Not a secure connection' }).waitFor();
  await openRoom(zawadi.page, ROOM);
  await zawadi.page.getByText("Open the hub's HTTPS address").waitFor();
  assert.equal(await zawadi.page.getByRole('textbox', { name: 'Message' }).isDisabled(), true);
  assert.equal(await zawadi.page.getByRole('button', { name: 'New room key' }).isVisible(), false);
  await shot(zawadi.page, 'e2e-insecure-360');
  // Ordinary rooms still work there.
  await openRoom(zawadi.page, 'clinic');
  await send(zawadi.page, 'plain room still works');
  await waitState(zawadi.page, 'plain room still works', 'stored');
  assert.deepEqual(zawadi.errors, []);
});
