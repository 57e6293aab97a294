// Calls on the village network (docs/workflows.md): two phones on the same hub call each
// other from a room, the media straight between the two browsers (WebRTC, host
// candidates; Chromium's fake camera and microphone), the hub relaying only the call's
// steps. A video call rings with a ringtone, is answered, shows the other side's picture
// on both phones and ends for both when one hangs up. A call nobody answers, one declined,
// one to a person in another call and one to a person not connected each leave a
// "Missed call" message in the room, stored like any message (it is still there after a
// reload). A camera that cannot be used places no call.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Stack } from '../lib/stack.mjs';
import { openBrowser, signInWithLink, openRoom, waitState, shot } from '../lib/browser.mjs';

/** A caller's ring time shortened to `ms` (`window.__callRingMs`, read by callpanel.js) instead of 30 s. */
async function shortRing(b, ms) {
  await b.context.addInitScript((x) => {
    window.__callRingMs = x;
  }, ms);
}

/** Waits until `user` is online in the People list (presence): the Call chooser lists them then. */
async function online(page, user) {
  await page.locator('#people li.online', { hasText: user }).waitFor({ state: 'attached' });
}

/** Places a call from the open room's Call button to `who` in the chooser. */
async function call(page, room, who, kind = 'Video') {
  await page.getByRole('button', { name: 'Call', exact: true }).click();
  const chooser = page.getByRole('dialog', { name: `Call someone in # ${room}` });
  await chooser.getByRole('button', { name: `${kind} call ${who}`, exact: true }).click();
  await chooser.waitFor({ state: 'hidden' });
}

/** Places a call to a user id typed under "Someone else". */
async function callTyped(page, room, who, kind = 'Video') {
  await page.getByRole('button', { name: 'Call', exact: true }).click();
  const chooser = page.getByRole('dialog', { name: `Call someone in # ${room}` });
  await chooser.getByLabel('Someone else (user id)').fill(who);
  await chooser.getByRole('button', { name: `${kind} call`, exact: true }).click();
  await chooser.waitFor({ state: 'hidden' });
}

const region = (page, who) => page.getByRole('region', { name: `Call with ${who}` });
const incoming = (page, title) => page.getByRole('alertdialog', { name: title });
const missed = (page, text) => page.locator('#log li.msg.call-missed', { hasText: text });
const notice = (page, text) => page.locator('#notice:not([hidden])', { hasText: text });

/** The size of the other side's picture, as the call's <video> shows it. */
const remoteSize = (page) => page.locator('#call-remote').evaluate((v) => ({ w: v.videoWidth, h: v.videoHeight, t: v.currentTime }));

/**
 * A hub with amina and baraka (and `more`) signed in on phones of their own, in # clinic;
 * `tablets`: people with a second device (named `<user>-tab`); `ring`: ring time, ms.
 */
async function twoPhones(t, name, { ring = null, more = [], tablets = [] } = {}) {
  const stack = await Stack.start(name);
  t.after(() => stack.close());
  const devices = [...['amina', 'baraka', ...more].map((u) => [u, u]), ...tablets.map((u) => [`${u}-tab`, u])];
  const phones = {};
  for (const [key] of devices) {
    phones[key] = await openBrowser(key);
    if (ring) await shortRing(phones[key], ring);
  }
  t.after(() => Promise.all(Object.values(phones).map((b) => b.close())));
  for (const [key, user] of devices) await signInWithLink(phones[key].page, stack.hubUrl, stack.token(user, 'worker', ['clinic']));
  for (const [key, user] of devices) for (const [, other] of devices) if (other !== user) await online(phones[key].page, other);
  for (const [key] of devices) await openRoom(phones[key].page, 'clinic');
  return { stack, ...phones };
}

test('a video call between two phones on the hub: rings, is answered, both see the other, hang-up ends it for both', { timeout: 240_000 }, async (t) => {
  const { amina, baraka } = await twoPhones(t, 'call-video');

  await call(amina.page, 'clinic', 'baraka', 'Video');
  const mine = region(amina.page, 'baraka');
  await mine.waitFor();
  // Baraka's phone rings: a dialog with Accept and Decline, and the ringtone.
  const ringing = incoming(baraka.page, 'Incoming video call from amina');
  await ringing.waitFor();
  assert.match(await ringing.innerText(), /# clinic/);
  await baraka.page.waitForFunction(() => window.__tones.some((x) => x.label === 'call'));
  // The caller sees that it rings (after `ringing` came back).
  await mine.locator('#call-status', { hasText: 'Ringing baraka\u2026' }).waitFor();
  await shot(amina.page, 'call-ringing-caller');
  await shot(baraka.page, 'call-incoming');

  await ringing.getByRole('button', { name: 'Accept' }).click();
  await ringing.waitFor({ state: 'hidden' });
  const his = region(baraka.page, 'amina');
  await his.waitFor();

  // Connected on both sides: the peer connection is up and the other side's picture has frames.
  for (const [page, r] of [
    [amina.page, mine],
    [baraka.page, his],
  ]) {
    await page.locator('#call[data-state="connected"]').waitFor();
    await page.waitForFunction(() => document.getElementById('call-remote').videoWidth > 0);
    const size = await remoteSize(page);
    assert.ok(size.w > 0 && size.h > 0, `no picture: ${JSON.stringify(size)}`);
    assert.equal(await r.locator('#call-status').innerText(), 'Connected');
    await r.locator('#call-timer', { hasText: /^\d+:\d\d$/ }).waitFor();
    // Their own preview shows too.
    assert.ok(await page.locator('#call-local').evaluate((v) => v.srcObject?.getVideoTracks().length === 1));
  }
  // The ringtone stopped with the answer: no new ring after it.
  const rings = await baraka.page.evaluate(() => window.__tones.filter((x) => x.label === 'call').length);
  // The picture moves (the fake camera's pattern): frames keep coming.
  const before = (await remoteSize(baraka.page)).t;
  await baraka.page.waitForFunction((t0) => document.getElementById('call-remote').currentTime > t0 + 0.5, before);
  assert.equal(await baraka.page.evaluate(() => window.__tones.filter((x) => x.label === 'call').length), rings);
  await shot(amina.page, 'call-connected-caller');
  await shot(baraka.page, 'call-connected-callee');

  // Mute and Camera off are toggles on this phone's own tracks.
  const mute = his.getByRole('button', { name: 'Mute' });
  await mute.click();
  assert.equal(await mute.getAttribute('aria-pressed'), 'true');
  assert.equal(await baraka.page.evaluate(() => document.getElementById('call-local').srcObject.getAudioTracks()[0].enabled), false);
  await mute.click();
  assert.equal(await mute.getAttribute('aria-pressed'), 'false');
  const cam = his.getByRole('button', { name: 'Camera off' });
  await cam.click();
  assert.equal(await cam.getAttribute('aria-pressed'), 'true');
  assert.equal(await baraka.page.evaluate(() => document.getElementById('call-local').srcObject.getVideoTracks()[0].enabled), false);
  await cam.click();

  // The caller hangs up: both leave the call; the callee is told.
  await mine.getByRole('button', { name: 'Hang up' }).click();
  await mine.waitFor({ state: 'hidden' });
  await his.waitFor({ state: 'hidden' });
  await notice(baraka.page, /amina hung up · \d+:\d\d/).waitFor();
  for (const page of [amina.page, baraka.page]) {
    assert.equal(await page.locator('#call').getAttribute('data-state'), 'idle');
    // The camera and microphone are released.
    assert.equal(await page.locator('#call-local').evaluate((v) => v.srcObject), null);
  }
  // An answered call leaves no missed call.
  assert.equal(await missed(amina.page, 'Missed').count(), 0);
  assert.equal(await missed(baraka.page, 'Missed').count(), 0);
  assert.deepEqual([...amina.errors, ...baraka.errors], []);
});

test('a call nobody answers rings out and leaves a missed call on both phones, kept after a reload', { timeout: 240_000 }, async (t) => {
  const { amina, baraka } = await twoPhones(t, 'call-missed', { ring: 3000 });

  await call(amina.page, 'clinic', 'baraka', 'Video');
  const ringing = incoming(baraka.page, 'Incoming video call from amina');
  await ringing.waitFor();
  await region(amina.page, 'baraka').locator('#call-status', { hasText: 'Ringing baraka\u2026' }).waitFor();
  // Baraka does not answer: the caller gives up after the ring time, and his phone stops ringing.
  await ringing.waitFor({ state: 'hidden' });
  await region(amina.page, 'baraka').waitFor({ state: 'hidden' });
  await notice(amina.page, 'No answer from baraka.').waitFor();
  const rang = await baraka.page.evaluate(() => window.__tones.filter((x) => x.label === 'call').length);

  // The missed call is a message in the room, from the caller, on both phones.
  const card = missed(amina.page, 'Missed video call');
  await card.waitFor();
  assert.match(await card.innerText(), /baraka did not answer your call/);
  await waitState(amina.page, 'Missed video call', 'read');
  const his = missed(baraka.page, 'Missed video call from amina');
  await his.waitFor();
  await his.getByRole('button', { name: 'Call back amina' }).waitFor();
  await shot(baraka.page, 'call-missed-callee');
  await shot(amina.page, 'call-missed-caller');
  // The room list says so in words.
  assert.match(await baraka.page.locator('.room-btn[data-room="clinic"] .room-preview').innerText(), /amina: Missed video call to baraka/);
  // The ring stopped for good.
  assert.equal(await baraka.page.evaluate(() => window.__tones.filter((x) => x.label === 'call').length), rang);

  // It is stored like any message: still there after a reload.
  await baraka.page.reload();
  await baraka.page.getByRole('heading', { name: '# clinic' }).waitFor();
  await missed(baraka.page, 'Missed video call from amina').waitFor();
  assert.equal(await missed(baraka.page, 'Missed video call').count(), 1);
  assert.deepEqual([...amina.errors, ...baraka.errors], []);
});

test('declined, busy, not connected and a refused camera: the caller is told and a missed call is left', { timeout: 300_000 }, async (t) => {
  const { amina, baraka, juma } = await twoPhones(t, 'call-refused', { ring: 12000, more: ['juma'] });
  // Every incoming call baraka's phone shows, in order.
  await baraka.page.evaluate(() => {
    window.__incoming = [];
    const d = document.getElementById('incoming');
    new MutationObserver(() => d.open && window.__incoming.push(document.getElementById('incoming-title').textContent)).observe(d, { attributes: true, attributeFilter: ['open'] });
  });

  // Declined: the caller is told at once, and a missed voice call is left.
  await call(amina.page, 'clinic', 'baraka', 'Voice');
  let ringing = incoming(baraka.page, 'Incoming voice call from amina');
  await ringing.waitFor();
  await ringing.getByRole('button', { name: 'Decline' }).click();
  await ringing.waitFor({ state: 'hidden' });
  await notice(amina.page, 'baraka declined the call.').waitFor();
  await region(amina.page, 'baraka').waitFor({ state: 'hidden' });
  await missed(baraka.page, 'Missed voice call from amina').waitFor();
  await missed(amina.page, 'Missed voice call').waitFor();

  // Busy: baraka's phone rings for amina's call; juma's call meanwhile gets `busy`.
  await call(amina.page, 'clinic', 'baraka', 'Voice');
  ringing = incoming(baraka.page, 'Incoming voice call from amina');
  await ringing.waitFor();
  await call(juma.page, 'clinic', 'baraka', 'Voice');
  await notice(juma.page, 'baraka is in another call.').waitFor();
  await region(juma.page, 'baraka').waitFor({ state: 'hidden' });
  // Baraka's ringing call went on undisturbed; it rings out.
  assert.ok(await ringing.isVisible());
  await ringing.waitFor({ state: 'hidden' });
  await notice(amina.page, 'No answer from baraka.').waitFor();
  const fromJuma = missed(baraka.page, 'Missed voice call from juma');
  await fromJuma.waitFor();
  await missed(juma.page, 'baraka did not answer your call').waitFor();
  // Amina, also in the room, reads who called whom.
  await missed(amina.page, 'juma called baraka, who did not answer').waitFor();
  await missed(baraka.page, 'Missed voice call from amina').nth(1).waitFor();

  // Not connected: a person with no phone on the hub is unavailable at once.
  await callTyped(amina.page, 'clinic', 'chausiku', 'Video');
  await notice(amina.page, 'chausiku is not connected to this hub.').waitFor();
  await region(amina.page, 'chausiku').waitFor({ state: 'hidden' });
  await missed(amina.page, 'chausiku did not answer your call').waitFor();

  // A camera that cannot be used: the call is not placed, and the caller is told why.
  await amina.page.evaluate(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  });
  await call(amina.page, 'clinic', 'baraka', 'Video');
  await notice(amina.page, "Using the camera and microphone was not allowed. Allow it in the browser's site settings. The call was not placed.").waitFor();
  assert.equal(await amina.page.locator('#call').getAttribute('data-state'), 'idle');
  // A callee whose microphone cannot be used declines: the caller hears so.
  await baraka.page.evaluate(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));
  });
  await call(juma.page, 'clinic', 'baraka', 'Voice');
  ringing = incoming(baraka.page, 'Incoming voice call from juma');
  await ringing.waitFor();
  await ringing.getByRole('button', { name: 'Accept' }).click();
  await notice(baraka.page, 'This device has no microphone to use. The call was declined.').waitFor();
  await notice(juma.page, 'baraka declined the call.').waitFor();
  // The second missed call from juma arrives as a message.
  await missed(baraka.page, 'Missed voice call from juma').nth(1).waitFor();
  // Amina's call with the refused camera never rang: baraka's phone showed only these calls.
  assert.deepEqual(await baraka.page.evaluate(() => window.__incoming), [
    'Incoming voice call from amina',
    'Incoming voice call from amina',
    'Incoming voice call from juma',
  ]);
  assert.deepEqual([...amina.errors, ...baraka.errors, ...juma.errors], []);
});

test('a person on two devices: both ring, the one that answers takes the call, the other stops ringing', { timeout: 240_000 }, async (t) => {
  const { amina, baraka, 'baraka-tab': tab } = await twoPhones(t, 'call-devices', { tablets: ['baraka'] });

  await call(amina.page, 'clinic', 'baraka', 'Voice');
  const onPhone = incoming(baraka.page, 'Incoming voice call from amina');
  const onTab = incoming(tab.page, 'Incoming voice call from amina');
  await onPhone.waitFor();
  await onTab.waitFor();
  // Answered on the tablet: the phone stops ringing and says where it went.
  await onTab.getByRole('button', { name: 'Accept' }).click();
  await onPhone.waitFor({ state: 'hidden' });
  await notice(baraka.page, 'The call from amina was answered on another device.').waitFor();
  assert.equal(await baraka.page.locator('#call').getAttribute('data-state'), 'idle');

  // A voice call: connected once the peer connection is up; the other side's sound plays.
  await amina.page.locator('#call[data-state="connected"][data-kind="voice"]').waitFor();
  await tab.page.locator('#call[data-state="connected"][data-kind="voice"]').waitFor();
  await region(tab.page, 'amina').waitFor();
  for (const page of [amina.page, tab.page]) {
    assert.ok(await page.locator('#call-remote').evaluate((v) => v.srcObject?.getAudioTracks().length === 1 && v.srcObject.getVideoTracks().length === 0));
    assert.equal(await page.getByRole('button', { name: 'Camera off' }).isVisible(), false);
  }
  await shot(tab.page, 'call-voice-tablet');

  // The callee hangs up this time: the caller is told, nobody is left in a call.
  await region(tab.page, 'amina').getByRole('button', { name: 'Hang up' }).click();
  await region(amina.page, 'baraka').waitFor({ state: 'hidden' });
  await notice(amina.page, /baraka hung up/).waitFor();
  for (const page of [amina.page, baraka.page, tab.page]) assert.equal(await page.locator('#call').getAttribute('data-state'), 'idle');
  assert.equal(await missed(amina.page, 'Missed').count(), 0);
  assert.deepEqual([...amina.errors, ...baraka.errors, ...tab.errors], []);
});
