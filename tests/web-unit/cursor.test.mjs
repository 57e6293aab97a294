// The cursor: what `hello` resumes from and what `ack` vouches for (docs/protocol.md,
// "Cursors, epochs and replay", "Priority").

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EPOCH, connect, deliver, device, link, message, receipt } from './harness.mjs';

test('a device that never connected asks for everything', () => {
  const p = device();
  assert.deepEqual(p.opened(1, { token: 'token', device: 'amina-phone' }), {
    v: 1,
    type: 'hello',
    token: 'token',
    device: 'amina-phone',
    cursor: null,
    epoch: null,
  });
});

test('the first welcome gives the device its epoch, and the next hello resumes from the committed cursor', () => {
  const p = device();
  connect(p, { epoch: EPOCH });
  assert.equal(p.state.epoch, EPOCH);
  deliver(p, [message(4), message(7)]);
  p.closed();
  const hello = p.opened(2, { token: 'token', device: 'amina-phone' });
  assert.equal(hello.cursor, 7);
  assert.equal(hello.epoch, EPOCH);
});

test('the ack carries the highest cursor stored, and only once its batch has committed', () => {
  const p = device();
  connect(p);
  const { ops, cursor } = deliver(p, [message(3), message(5)], { commit: false });
  assert.equal(cursor, 5);
  assert.deepEqual(
    ops.filter(([store, , , key]) => store === 'kv' && key === 'cursor'),
    [['kv', 'put', 5, 'cursor']],
    'the cursor is written in the same transaction as the messages',
  );
  assert.deepEqual(p.ack(link()), [], 'nothing is acked before the messages are on disk');
  p.committed(cursor);
  assert.deepEqual(p.ack(link()), [{ v: 1, type: 'ack', cursor: 5 }]);
  assert.deepEqual(p.ack(link()), [], 'the same cursor is not acked twice');
});

test('a hello after an uncommitted batch does not vouch for it', () => {
  const p = device();
  connect(p);
  deliver(p, [message(3)]);
  deliver(p, [message(9)], { commit: false }); // the write failed
  p.closed();
  assert.equal(p.opened(2, { token: 'token', device: 'amina-phone' }).cursor, 3);
});

test('an emergency that overtook older traffic (ahead) does not move the cursor', () => {
  const p = device();
  connect(p);
  deliver(p, [message(5)]);
  deliver(p, [message(9, { priority: 'emergency', ahead: true })]);
  assert.equal(p.state.cursor, 5);
  assert.deepEqual(p.ack(link()), [{ v: 1, type: 'ack', cursor: 5 }]);
  // The ordered stream catches up past it: now the cursor may cover it.
  deliver(p, [message(6), message(10)]);
  assert.deepEqual(p.ack(link()), [{ v: 1, type: 'ack', cursor: 10 }]);
  assert.equal(p.state.msgs.size, 4);
});

test('a lower cursor arriving later never moves the cursor back', () => {
  const p = device();
  connect(p);
  deliver(p, [message(8)]);
  deliver(p, [message(4)]);
  assert.equal(p.state.cursor, 8);
  const { ops } = deliver(p, [message(6)]);
  assert.ok(!ops.some(([store, , , key]) => store === 'kv' && key === 'cursor'), 'the cursor is not rewritten when it did not move');
});

test('receipts move the cursor like messages (they share the log)', () => {
  const p = device();
  connect(p);
  deliver(p, [message(2)]);
  deliver(p, [receipt('some-own-message', 4, 'delivered')]);
  assert.deepEqual(p.ack(link()), [{ v: 1, type: 'ack', cursor: 4 }]);
});

test('history pages do not move the cursor', () => {
  const p = device();
  connect(p);
  deliver(p, [message(20)]);
  deliver(p, [{ v: 1, type: 'history', room: 'clinic', messages: [message(30), message(31)].map((f) => ({ cursor: f.cursor, msg: f.msg })), more: false }]);
  assert.equal(p.state.cursor, 20);
});

test('no ack before welcome, on a socket that is not the current one, or on none', () => {
  const p = device();
  p.opened(1, { token: 'token', device: 'amina-phone' });
  deliver(p, [message(3)]);
  assert.deepEqual(p.ack(link(1)), [], 'not welcomed yet');
  deliver(p, [{ v: 1, type: 'welcome', epoch: EPOCH, cursor: 3, user: 'amina', rooms: ['clinic'] }], { gen: 1 });
  assert.deepEqual(p.ack(link(2)), [], 'another socket is current');
  assert.deepEqual(p.ack(link(1, false)), [], 'the socket is gone');
  assert.deepEqual(p.ack(link(1)), [{ v: 1, type: 'ack', cursor: 3 }]);
});

test('a new socket acks again what the last one had acked', () => {
  const p = device();
  connect(p);
  deliver(p, [message(3)]);
  assert.equal(p.ack(link(1)).length, 1);
  p.closed();
  connect(p, { gen: 2 });
  assert.deepEqual(p.ack(link(2)), [{ v: 1, type: 'ack', cursor: 3 }]);
});
