// The outbox: what is written on this device waits there until the server has stored it
// (docs/web-client.md, "How the outbox works"; docs/protocol.md, `send`, `stored`, Errors).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RETRY_MS } from '../../relay/web/protocol.js';
import { connect, deliver, device, error, link, message, sentIds, stored, write } from './harness.mjs';

test('a message is made durable on the device before it can leave it', () => {
  const p = device();
  const { id, ops } = write(p, 'hello');
  assert.deepEqual(
    ops.map(([store, op, , key]) => [store, op, key]),
    [
      ['kv', 'put', 'seq'],
      ['messages', 'put', undefined],
      ['outbox', 'put', undefined],
    ],
  );
  assert.equal(p.state.msgs.get(id).local, 'queued');
  assert.equal(p.state.outbox.get(id).msg.body.text, 'hello');
  assert.deepEqual(p.flush(link()).send, [], 'nothing goes out before a welcome');
});

test('after welcome the outbox goes out, emergencies first, then in the order written', () => {
  const p = device();
  const a = write(p, 'first').id;
  const b = write(p, 'second').id;
  const alarm = write(p, 'help', { emergency: true }).id;
  connect(p);
  const { send } = p.flush(link());
  assert.deepEqual(sentIds(send), [alarm, a, b]);
  assert.equal(send[0].msg.priority, 'emergency');
  assert.deepEqual(
    send.map((f) => f.msg.seq),
    [3, 1, 2],
  );
});

test('each message is sent once per connection, and again on the next one until stored', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  assert.deepEqual(sentIds(p.flush(link()).send), [id]);
  assert.deepEqual(p.flush(link()).send, [], 'still awaiting `stored` on this socket');
  p.closed();
  assert.deepEqual(p.flush(link(2)).send, [], 'not before the new socket is welcomed');
  connect(p, { gen: 2 });
  const again = p.flush(link(2)).send;
  assert.deepEqual(sentIds(again), [id], 'the same id goes again: the hub stores it once');
  assert.equal(again[0].msg.seq, 1);
});

test('a welcome that belongs to an earlier socket does not open the session of the new one', () => {
  const p = device();
  const id = write(p, 'hello').id;
  p.opened(1, { token: 'token', device: 'amina-phone' });
  p.closed();
  p.opened(2, { token: 'token', device: 'amina-phone' });
  deliver(p, [{ v: 1, type: 'welcome', epoch: 'epoch-a', cursor: 0, user: 'amina', rooms: ['clinic'] }], { gen: 1 });
  assert.deepEqual(p.flush(link(2)).send, []);
  deliver(p, [{ v: 1, type: 'welcome', epoch: 'epoch-a', cursor: 0, user: 'amina', rooms: ['clinic'] }], { gen: 2 });
  assert.deepEqual(sentIds(p.flush(link(2)).send), [id]);
});

test('a socket that takes nothing leaves the outbox as it was', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  assert.deepEqual(p.flush(link(1, false)).send, []);
  assert.deepEqual(sentIds(p.flush(link()).send), [id]);
});

test('`stored` takes the message out of the outbox and shows it on the hub', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  p.flush(link());
  const { ops } = deliver(p, [stored(id, 12)]);
  assert.equal(p.state.outbox.has(id), false);
  assert.ok(ops.some(([store, op, key]) => store === 'outbox' && op === 'delete' && key === id));
  const rec = p.state.msgs.get(id);
  assert.equal(rec.local, 'stored');
  assert.equal(rec.cursor, 12);
  assert.ok(rec.trail.stored && rec.trail.queued);
  p.closed();
  connect(p, { gen: 2 });
  assert.deepEqual(p.flush(link(2)).send, [], 'a stored message is not sent again');
});

test('a duplicate `stored` (the resend of a message the hub had) is harmless', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  p.flush(link());
  deliver(p, [stored(id, 12)]);
  const at = p.state.msgs.get(id).trail.stored;
  // The resend after a lost connection is answered with the original cursor.
  const { ops, events } = deliver(p, [stored(id, 12, true)], { now: at + 60_000 });
  assert.deepEqual(events, []);
  assert.ok(!ops.some(([store]) => store === 'outbox'), 'nothing left to take out of the outbox');
  const rec = p.state.msgs.get(id);
  assert.equal(rec.local, 'stored');
  assert.equal(rec.cursor, 12);
  assert.equal(rec.trail.stored, at, 'when it reached the hub does not change');
  assert.equal(p.state.outbox.size, 0);
});

test('a `stored` with duplicate for a message still in the outbox takes it out like any `stored`', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  p.flush(link());
  deliver(p, [stored(id, 12, true)]);
  assert.equal(p.state.outbox.size, 0);
  assert.equal(p.state.msgs.get(id).local, 'stored');
});

test('a message of ours coming back in a replay leaves the outbox too', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  deliver(p, [message(4, { id, from: 'amina', text: 'hello' })]);
  assert.equal(p.state.outbox.size, 0);
  assert.equal(p.state.msgs.get(id).local, 'stored');
  assert.deepEqual(p.flush(link()).send, []);
});

for (const code of ['rate_limited', 'internal', 'storage_full']) {
  test(`${code} keeps the message in the outbox and sends it again after ${RETRY_MS[code]} ms`, () => {
    const p = device();
    const id = write(p, 'hello').id;
    connect(p);
    p.flush(link());
    const { events, ops } = deliver(p, [error(code, id)]);
    assert.deepEqual(events[0], { type: 'retry', ms: RETRY_MS[code] });
    assert.equal(events[1].type, 'notice');
    assert.match(events[1].text, /^Not sent yet: /);
    assert.ok(p.state.outbox.has(id));
    assert.equal(p.state.msgs.get(id).local, 'queued');
    assert.ok(!ops.some(([store]) => store === 'outbox'));
    // When the retry fires, the same socket sends it again.
    assert.deepEqual(sentIds(p.flush(link()).send), [id]);
  });
}

test('the retry delays are 2 s, 3 s and 30 s', () => {
  assert.deepEqual(RETRY_MS, { rate_limited: 2000, internal: 3000, storage_full: 30000 });
});

test('forbidden drops the message for good, with the reason shown on it', () => {
  const p = device();
  const id = write(p, 'hello', { room: 'maternity' }).id;
  connect(p);
  p.flush(link());
  const { events, ops } = deliver(p, [error('forbidden', id, 'you are not a member of room maternity')]);
  assert.equal(p.state.outbox.has(id), false);
  assert.ok(ops.some(([store, op, key]) => store === 'outbox' && op === 'delete' && key === id));
  const rec = p.state.msgs.get(id);
  assert.equal(rec.local, 'failed');
  assert.equal(rec.error, 'You are not a member of that room.');
  assert.deepEqual(events, [{ type: 'notice', text: 'Message not sent: You are not a member of that room.' }]);
  assert.ok(!events.some((e) => e.type === 'retry'));
  p.closed();
  connect(p, { gen: 2 });
  assert.deepEqual(p.flush(link(2)).send, [], 'a refused message is not sent again');
});

test('too_large and unknown_room are final too', () => {
  for (const code of ['too_large', 'unknown_room']) {
    const p = device();
    const id = write(p, 'hello').id;
    connect(p);
    p.flush(link());
    deliver(p, [error(code, id)]);
    assert.equal(p.state.msgs.get(id).local, 'failed', code);
    assert.equal(p.state.outbox.size, 0, code);
  }
});

test('an error about no message of the outbox is only shown', () => {
  const p = device();
  const id = write(p, 'hello').id;
  connect(p);
  const { events } = deliver(p, [error('forbidden')]);
  assert.deepEqual(events, [{ type: 'notice', text: 'You are not a member of that room.' }]);
  assert.ok(p.state.outbox.has(id));
});

test('a refused sign-in is kept to show, and the outbox waits for the next one', () => {
  const p = device();
  const id = write(p, 'hello').id;
  p.opened(1, { token: 'token', device: 'amina-phone' });
  const { events } = deliver(p, [error('token_expired')]);
  assert.deepEqual(events, []);
  assert.equal(p.state.authError, 'Your sign-in has expired. Ask for a new sign-in link.');
  assert.ok(p.state.outbox.has(id));
});

test('a message of an encrypted room written before the device knew waits to be sealed, not sent', () => {
  const p = device({ rooms: ['clinic', 'hiv-clinic'] });
  const plain = write(p, 'plain words', { room: 'hiv-clinic' }).id;
  const other = write(p, 'hello').id;
  connect(p, { rooms: ['clinic', 'hiv-clinic'], encrypted: ['hiv-clinic'] });
  const { send, seal } = p.flush(link());
  assert.deepEqual(sentIds(send), [other]);
  assert.deepEqual(
    seal.map((e) => e.id),
    [plain],
  );
  // Once sealed, it goes like any other.
  seal[0].msg = { ...seal[0].msg, body: { e2e: { v: 1, alg: 'A256GCM', kid: 'k', iv: 'aa', ct: 'bb' } } };
  assert.deepEqual(sentIds(p.flush(link()).send), [plain]);
});

test('a file message from the uploader gets the next seq when it joins the outbox', () => {
  const p = device();
  write(p, 'one');
  const msg = { id: 'file-message', room: 'clinic', kind: 'media', priority: 'normal', body: { text: '', media: { sha256: 'ab' } } };
  const ops = p.queue(msg, { id: 'file-message', room: 'clinic', mine: true, local: 'queued', created: 1 }, 5);
  assert.equal(msg.seq, 2);
  assert.deepEqual(ops[0], ['kv', 'put', 2, 'seq']);
  assert.equal(p.state.outbox.get('file-message').created, 1);
});
