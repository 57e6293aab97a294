// Calls in the web client (docs/protocol.md, `call`; docs/workflows.md, "Calls on the
// village network"): relay/web/call.js decides which `call` frame goes out on which event
// and what the page must do (camera, ring, offer, answer, candidates, missed-call message,
// hang up). Two machines are wired here through a stand-in for the server's relay, and the
// corners are checked one by one: unavailable, busy, declined, given up, answered on
// another device, a camera refused, the late results of an ended call.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CallMachine, MISSED, RING_GRACE_MS, RING_MS, duration, incomingTitle, isMissed, mediaProblem, missedBody, missedCard, statusText, timerText } from '../../relay/web/call.js';

const CALL = '0190b2c4-8f6e-7c3a-9a55-2b1d3c4e5f60';
const OTHER = '0190b2c4-8f6e-7c3a-9a55-2b1d3c4e5f61';
const T = 1_780_000_000_000;

const machine = (user, opts = {}) => new CallMachine({ me: () => user, ...opts });

/** What the server relays of `frame` sent by `user` from `device`: the same step with `from` and `from_device`. */
function relayed(frame, user, device) {
  const { to, device: _to, v: _v, ...rest } = frame;
  return { v: 1, ...rest, from: user, from_device: device };
}

const signals = (out) => out.send.map((f) => f.signal);
const kinds = (out) => out.effects.map((e) => e.type);

test('a video call: invite, ringing, accept, offer, answer, candidates both ways, hang-up', () => {
  const amina = machine('amina');
  const baraka = machine('baraka');

  // Amina places the call: the camera first, nothing sent yet.
  let out = amina.start({ id: CALL, room: 'clinic', to: 'baraka', video: true, now: T });
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [{ type: 'media', video: true }]);
  assert.equal(statusText(amina.call), 'Starting the camera\u2026');

  // The camera is on: the invite goes to every device of baraka's, and the ring timer starts.
  out = amina.mediaReady(CALL);
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', signal: 'invite', video: true }]);
  assert.deepEqual(out.effects, [{ type: 'timer', ms: RING_MS }]);
  assert.equal(statusText(amina.call), 'Calling baraka\u2026');

  // Baraka's phone rings and says so to amina's device.
  out = baraka.receive(relayed(out.send[0], 'amina', 'amina-phone'), T);
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'amina', device: 'amina-phone', signal: 'ringing' }]);
  assert.deepEqual(kinds(out), ['ring', 'timer']);
  assert.equal(out.effects[1].ms, RING_MS + RING_GRACE_MS, 'a callee rings a little longer than the caller waits, then stops by itself');
  assert.equal(incomingTitle(baraka.call), 'Incoming video call from amina');
  assert.deepEqual(amina.receive(relayed(out.send[0], 'baraka', 'baraka-phone'), T).effects, []);
  assert.equal(statusText(amina.call), 'Ringing baraka\u2026');

  // He accepts: the ring stops and his camera starts; then `accept` goes to amina's device.
  out = baraka.accept();
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [{ type: 'silence' }, { type: 'media', video: true }]);
  out = baraka.mediaReady(CALL);
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'amina', device: 'amina-phone', signal: 'accept' }]);

  // Amina learns which device answered and makes the offer for it alone.
  out = amina.receive(relayed(out.send[0], 'baraka', 'baraka-phone'), T);
  assert.deepEqual(out.effects, [{ type: 'offer' }]);
  assert.equal(amina.call.device, 'baraka-phone');
  assert.equal(statusText(amina.call), 'Connecting\u2026');
  out = amina.local(CALL, 'offer', 'v=0 offer');
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', device: 'baraka-phone', signal: 'offer', sdp: 'v=0 offer' }]);
  const cand = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.2 51234 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  const ice = amina.localIce(CALL, cand).send[0];
  assert.deepEqual(ice, { v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', device: 'baraka-phone', signal: 'ice', candidate: cand });

  // Baraka answers the offer; a candidate that arrives meanwhile is handed over too (the page holds it for the description).
  assert.deepEqual(baraka.receive(relayed(out.send[0], 'amina', 'amina-phone'), T).effects, [{ type: 'answer', sdp: 'v=0 offer' }]);
  assert.deepEqual(baraka.receive(relayed(ice, 'amina', 'amina-phone'), T).effects, [{ type: 'ice', candidate: cand }]);
  out = baraka.local(CALL, 'answer', 'v=0 answer');
  assert.deepEqual(signals(out), ['answer']);
  assert.equal(out.send[0].device, 'amina-phone');
  assert.deepEqual(amina.receive(relayed(out.send[0], 'baraka', 'baraka-phone'), T).effects, [{ type: 'remote', sdp: 'v=0 answer' }]);
  const back = baraka.localIce(CALL, cand).send[0];
  assert.deepEqual(amina.receive(relayed(back, 'baraka', 'baraka-phone'), T).effects, [{ type: 'ice', candidate: cand }]);
  // A description of the wrong kind for a side sends nothing.
  assert.deepEqual(amina.local(CALL, 'answer', 'x').send, []);

  // The media flows: connected, with a timer.
  amina.connected(CALL, T + 1000);
  baraka.connected(CALL, T + 1000);
  assert.equal(amina.call.phase, 'connected');
  assert.equal(statusText(amina.call), 'Connected');
  assert.equal(timerText(amina.call, T + 1000 + 83_000), '1:23');
  amina.lost(CALL);
  assert.equal(statusText(amina.call), 'Reconnecting\u2026');
  amina.connected(CALL, T + 5000);
  assert.equal(amina.call.connectedAt, T + 1000, 'a connection that comes back keeps its start');

  // The caller hangs up: to the device in the call; no missed call. The other side ends too.
  out = amina.hangup();
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', device: 'baraka-phone', signal: 'hangup' }]);
  assert.deepEqual(kinds(out), ['end']);
  assert.equal(amina.call, null);
  out = baraka.receive(relayed(out.send[0], 'amina', 'amina-phone'), T + 61_000);
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [{ type: 'notice', text: 'amina hung up \u00B7 1:00', kind: 'info' }, { type: 'end', reason: 'remote' }]);
  assert.equal(baraka.call, null);
});

/** Amina calling baraka, invite sent (and ringing heard when `ringing`). */
function calling({ video = true, ringing = true } = {}) {
  const amina = machine('amina');
  amina.start({ id: CALL, room: 'clinic', to: 'baraka', video, now: T });
  amina.mediaReady(CALL);
  if (ringing) amina.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-phone', signal: 'ringing' }, T);
  return amina;
}

const missedEffect = (video = true) => ({ type: 'missed', room: 'clinic', body: { to: 'baraka', call: CALL, video, text: `Missed ${video ? 'video' : 'voice'} call to baraka` } });

test('a call nobody answers: the caller gives up after the ring time, tells every device, and leaves a missed call', () => {
  const amina = calling();
  const out = amina.timeout(CALL);
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', signal: 'hangup' }], 'no device: every device that rang stops');
  assert.deepEqual(out.effects, [missedEffect(), { type: 'notice', text: 'No answer from baraka.', kind: 'info' }, { type: 'end', reason: 'unanswered' }]);
  assert.equal(amina.call, null);
  // A timer of a call that is over does nothing.
  assert.deepEqual(amina.timeout(CALL), { send: [], effects: [] });

  // The callee's phone stops ringing on the hang-up, with nothing to send: the caller's message tells.
  const baraka = machine('baraka');
  baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite', video: true }, T);
  const end = baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'hangup' }, T);
  assert.deepEqual(end, { send: [], effects: [{ type: 'silence' }, { type: 'end', reason: 'missed' }] });
  // And stops by itself when that hang-up never comes.
  baraka.receive({ type: 'call', call: OTHER, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T);
  assert.deepEqual(baraka.timeout(OTHER), { send: [], effects: [{ type: 'silence' }, { type: 'end', reason: 'unanswered' }] });
});

test('the ring time comes from the page (a test shortens it)', () => {
  const amina = machine('amina', { ringMs: () => 1500 });
  amina.start({ id: CALL, room: 'clinic', to: 'baraka', now: T });
  assert.deepEqual(amina.mediaReady(CALL).effects, [{ type: 'timer', ms: 1500 }]);
  const baraka = machine('baraka', { ringMs: () => 1500 });
  const out = baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T);
  assert.deepEqual(out.effects[1], { type: 'timer', ms: 1500 + RING_GRACE_MS });
});

test('hanging up before an answer is a missed call; before the invite went, nothing is sent', () => {
  const amina = calling({ ringing: false });
  const out = amina.hangup();
  assert.deepEqual(signals(out), ['hangup']);
  assert.equal(out.send[0].device, undefined);
  assert.deepEqual(out.effects, [missedEffect(), { type: 'end', reason: 'cancelled' }]);

  const b = machine('amina');
  b.start({ id: CALL, room: 'clinic', to: 'baraka', video: false, now: T });
  assert.deepEqual(b.hangup(), { send: [], effects: [{ type: 'end', reason: 'cancelled' }] });
  // The camera that opens after that is the page's to drop.
  assert.equal(b.mediaReady(CALL).stale, true);
});

test('unavailable, declined and busy end the call with a notice and a missed call', () => {
  let amina = calling({ ringing: false, video: false });
  let out = amina.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', signal: 'unavailable', video: false }, T);
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [missedEffect(false), { type: 'notice', text: 'baraka is not connected to this hub.', kind: 'info' }, { type: 'end', reason: 'unavailable' }]);
  // A doctor on the cloud reads "server".
  const doc = machine('dr-neema', { where: () => 'server' });
  doc.start({ id: CALL, room: 'clinic', to: 'baraka', now: T });
  doc.mediaReady(CALL);
  assert.equal(doc.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', signal: 'unavailable' }, T).effects[1].text, 'baraka is not connected to this server.');

  amina = calling();
  out = amina.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'decline' }, T);
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [missedEffect(), { type: 'notice', text: 'baraka declined the call.', kind: 'info' }, { type: 'end', reason: 'declined' }]);

  amina = calling();
  out = amina.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'busy' }, T);
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', signal: 'hangup' }], 'his other devices stop ringing');
  assert.deepEqual(out.effects, [missedEffect(), { type: 'notice', text: 'baraka is in another call.', kind: 'info' }, { type: 'end', reason: 'busy' }]);
});

test('a callee already in a call answers busy to the new caller, and keeps the call', () => {
  const baraka = machine('baraka');
  baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T);
  const out = baraka.receive({ type: 'call', call: OTHER, room: 'ward', from: 'juma', from_device: 'juma-phone', signal: 'invite', video: true }, T);
  assert.deepEqual(out, { send: [{ v: 1, type: 'call', call: OTHER, room: 'ward', to: 'juma', device: 'juma-phone', signal: 'busy' }], effects: [] });
  assert.equal(baraka.call.id, CALL);
  // The same invite again (a duplicate) is not a second call.
  assert.deepEqual(baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T), { send: [], effects: [] });
  // Placing a call meanwhile is refused in words.
  assert.deepEqual(baraka.start({ id: OTHER, room: 'clinic', to: 'juma', now: T }).effects, [{ type: 'notice', text: 'You are already in a call. Hang up first.', kind: 'problem' }]);
});

test('answered or declined on another device of the callee: this one stops ringing', () => {
  const phone = machine('baraka');
  phone.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite', video: true }, T);
  let out = phone.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'accept' }, T);
  assert.deepEqual(out, { send: [], effects: [{ type: 'silence' }, { type: 'notice', text: 'The call from amina was answered on another device.', kind: 'info' }, { type: 'end', reason: 'elsewhere' }] });

  phone.receive({ type: 'call', call: OTHER, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T);
  out = phone.receive({ type: 'call', call: OTHER, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'decline' }, T);
  assert.deepEqual(out, { send: [], effects: [{ type: 'silence' }, { type: 'end', reason: 'elsewhere' }] });
});

test('accepted on two devices at once: the caller goes on with the first and hangs up on the other', () => {
  const amina = calling();
  const accept = (device) => ({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: device, signal: 'accept' });
  assert.deepEqual(amina.receive(accept('baraka-tab'), T).effects, [{ type: 'offer' }]);
  const out = amina.receive(accept('baraka-phone'), T);
  assert.deepEqual(out, { send: [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', device: 'baraka-phone', signal: 'hangup' }], effects: [] });
  assert.equal(amina.call.device, 'baraka-tab');
  // Steps of the other device are not taken for the call's.
  const answer = { type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-phone', signal: 'answer', sdp: 'x' };
  assert.deepEqual(amina.receive(answer, T).effects, []);
  assert.deepEqual(amina.receive({ ...answer, signal: 'hangup' }, T).effects, []);
  assert.equal(amina.call.phase, 'connecting');
  // Nor a decline after the call was answered.
  assert.deepEqual(amina.receive({ ...answer, signal: 'decline' }, T).effects, []);
});

test('frames of another call, from another person, or malformed change nothing', () => {
  const amina = calling();
  const base = { type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'accept' };
  for (const f of [{ ...base, call: OTHER }, { ...base, from: 'juma' }, { ...base, signal: 'dance' }, { ...base, call: 7 }, null, { type: 'typing' }]) {
    assert.deepEqual(amina.receive(f, T), { send: [], effects: [] }, JSON.stringify(f));
  }
  assert.equal(amina.call.phase, 'ringing');
  // An idle device ignores everything but an invite.
  const idle = machine('baraka');
  assert.deepEqual(idle.receive({ ...base, from: 'amina' }, T), { send: [], effects: [] });
  assert.equal(idle.call, null);
});

test('the camera or microphone refused: the caller places nothing; the callee declines', () => {
  const amina = machine('amina');
  amina.start({ id: CALL, room: 'clinic', to: 'baraka', video: true, now: T });
  const why = mediaProblem('NotAllowedError', { video: true });
  let out = amina.mediaFailed(CALL, why);
  assert.deepEqual(out.send, []);
  assert.deepEqual(out.effects, [{ type: 'notice', text: `${why}. The call was not placed.`, kind: 'problem' }, { type: 'end', reason: 'media' }]);
  assert.equal(amina.call, null);

  const baraka = machine('baraka');
  baraka.receive({ type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite' }, T);
  baraka.accept();
  out = baraka.mediaFailed(CALL, mediaProblem('NotFoundError'));
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'amina', device: 'amina-phone', signal: 'decline' }]);
  assert.deepEqual(out.effects, [{ type: 'notice', text: 'This device has no microphone to use. The call was declined.', kind: 'problem' }, { type: 'end', reason: 'media' }]);

  assert.match(mediaProblem('NotAllowedError'), /microphone was not allowed/);
  assert.match(mediaProblem(null, { secure: false, video: true }), /camera and microphone can only be used on a secure address/);
  assert.match(mediaProblem('NotReadableError', { video: true }), /in use by another app/);
});

test('declining, and hanging up an incoming call, send decline to the caller device', () => {
  const baraka = machine('baraka');
  const invite = { type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite', video: false };
  baraka.receive(invite, T);
  let out = baraka.decline();
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'amina', device: 'amina-phone', signal: 'decline' }]);
  assert.deepEqual(kinds(out), ['silence', 'end']);
  baraka.receive({ ...invite, call: OTHER }, T);
  out = baraka.hangup();
  assert.deepEqual(signals(out), ['decline']);
  assert.equal(incomingTitle({ peer: 'amina', video: false }), 'Incoming voice call from amina');
});

test('a connection that fails ends the call for both, in words', () => {
  const amina = calling();
  amina.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'accept' }, T);
  let out = amina.failed(CALL, 'no route');
  assert.deepEqual(out.send, [{ v: 1, type: 'call', call: CALL, room: 'clinic', to: 'baraka', device: 'baraka-tab', signal: 'hangup' }]);
  assert.deepEqual(out.effects[0], { type: 'notice', text: 'The call with baraka could not be connected (no route).', kind: 'problem' });
  // Late results of the ended call are stale: nothing is sent.
  for (const r of [amina.local(CALL, 'offer', 'x'), amina.localIce(CALL, { candidate: 'c' }), amina.connected(CALL, T), amina.failed(CALL), amina.mediaFailed(CALL, 'x')]) {
    assert.equal(r.stale, true);
    assert.deepEqual(r.send, []);
  }
  const b = calling();
  b.receive({ type: 'call', call: CALL, room: 'clinic', from: 'baraka', from_device: 'baraka-tab', signal: 'accept' }, T);
  b.connected(CALL, T);
  out = b.failed(CALL);
  assert.equal(out.effects[0].text, 'The call with baraka was cut off.');
});

test('a missed call: the body the servers accept, and its card from each side', () => {
  const body = missedBody({ to: 'baraka', call: CALL, video: true });
  assert.deepEqual(body, { to: 'baraka', call: CALL, video: true, text: 'Missed video call to baraka' });
  assert.ok(isMissed(MISSED, body));
  assert.ok(!isMissed(MISSED, { ...body, call: 'just now' }));
  assert.ok(!isMissed(MISSED, { call: CALL }));
  assert.ok(!isMissed('chat', body));
  assert.deepEqual(missedCard(body, { from: 'amina', me: 'baraka' }), { title: 'Missed video call from amina', text: null, back: 'amina', again: false });
  assert.deepEqual(missedCard(body, { from: 'amina', me: 'amina' }), { title: 'Missed video call', text: 'baraka did not answer your call', back: 'baraka', again: true });
  assert.deepEqual(missedCard({ ...body, video: false }, { from: 'amina', me: 'juma' }), { title: 'Missed voice call', text: 'amina called baraka, who did not answer', back: null, again: false });
});

test('durations read as a clock', () => {
  assert.equal(duration(0), '0:00');
  assert.equal(duration(59_999), '0:59');
  assert.equal(duration(61_000), '1:01');
  assert.equal(duration(3_723_000), '1:02:03');
  assert.equal(timerText(null, T), '');
});

test('protocol.js hands a call frame to the page at once, and it moves no cursor and commits nothing', async () => {
  const { device, connect, deliver } = await import('./harness.mjs');
  const p = device({ user: 'baraka' });
  connect(p, { user: 'baraka', cursor: 0 });
  const before = p.state.cursorMem;
  const f = { v: 1, type: 'call', call: CALL, room: 'clinic', from: 'amina', from_device: 'amina-phone', signal: 'invite', video: true };
  const { events, ops, after } = deliver(p, [f]);
  assert.deepEqual(events, [{ type: 'call', frame: f }]);
  assert.deepEqual(ops, []);
  assert.deepEqual(after, []);
  assert.equal(p.state.cursorMem, before);
});
