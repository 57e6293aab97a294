// A hub whose database was replaced (`resync`), and another person signing in on the same
// device (docs/protocol.md, `resync`; docs/web-client.md, "Receiving, resuming, acking").

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EPOCH, OTHER_EPOCH, connect, deliver, device, error, link, message, receipt, sentIds, write } from './harness.mjs';

const resync = (epoch = OTHER_EPOCH, cursor = 2) => ({ v: 1, type: 'resync', epoch, cursor });

/** A device that has read a while on EPOCH and has one message waiting and one refused. */
function seasoned() {
  const p = device();
  connect(p);
  deliver(p, [message(3), message(5), receipt('old-own-message', 6, 'read')]);
  p.read('clinic', { canRead: () => true, link: link() });
  deliver(p, [{ v: 1, type: 'history', room: 'clinic', messages: [], more: true }]);
  const refused = write(p, 'to a room I left').id;
  p.flush(link());
  deliver(p, [error('forbidden', refused)]);
  const waiting = write(p, 'waiting').id;
  p.closed();
  return { p, waiting, refused };
}

test('resync drops the messages, receipts, read marks and cursor held for the old database', () => {
  const { p } = seasoned();
  p.opened(2, { token: 'token', device: 'amina-phone' });
  const { ops } = deliver(p, [{ v: 1, type: 'welcome', epoch: OTHER_EPOCH, cursor: 2, user: 'amina', rooms: ['clinic'] }, resync()], { gen: 2 });
  assert.equal(p.state.epoch, OTHER_EPOCH);
  assert.equal(p.state.cursor, 0);
  assert.equal(p.state.receipts.size, 0);
  assert.deepEqual(p.state.seen, {});
  assert.deepEqual(p.state.more, {}, 'history is asked for again');
  assert.ok(p.firstPage('clinic'));
  for (const op of [
    ['messages', 'clear'],
    ['receipts', 'clear'],
    ['kv', 'put', 0, 'cursor'],
    ['kv', 'put', OTHER_EPOCH, 'epoch'],
  ]) {
    assert.ok(
      ops.some((o) => JSON.stringify(o) === JSON.stringify(op)),
      `${JSON.stringify(op)} in the same transaction`,
    );
  }
  // The full replay that follows counts from the new database's start.
  deliver(p, [message(1), message(2)], { gen: 2 });
  assert.deepEqual(p.ack(link(2)), [{ v: 1, type: 'ack', cursor: 2 }]);
});

test('resync keeps the outbox, its messages and the refused ones, and the outbox goes out', () => {
  const { p, waiting, refused } = seasoned();
  p.opened(2, { token: 'token', device: 'amina-phone' });
  const { ops } = deliver(p, [{ v: 1, type: 'welcome', epoch: OTHER_EPOCH, cursor: 2, user: 'amina', rooms: ['clinic'] }, resync()], { gen: 2 });
  assert.deepEqual([...p.state.msgs.keys()].sort(), [waiting, refused].sort());
  assert.ok(p.state.outbox.has(waiting));
  assert.ok(!ops.some(([store, op]) => store === 'outbox' && op === 'clear'));
  assert.ok(ops.some(([store, op, rec]) => store === 'messages' && op === 'put' && rec.id === waiting), 'kept on disk too');
  assert.deepEqual(sentIds(p.flush(link(2)).send), [waiting]);
});

test('resync keeps a message whose file is still uploading', () => {
  const uploading = new Set(['file-message']);
  const p = device({ pendingUpload: (id) => uploading.has(id) });
  connect(p);
  p.state.msgs.set('file-message', { id: 'file-message', room: 'clinic', mine: true, local: 'queued', cursor: null });
  deliver(p, [message(3), resync()]);
  assert.deepEqual([...p.state.msgs.keys()], ['file-message']);
});

test('a hello after resync carries the new epoch', () => {
  const { p } = seasoned();
  p.opened(2, { token: 'token', device: 'amina-phone' });
  deliver(p, [{ v: 1, type: 'welcome', epoch: OTHER_EPOCH, cursor: 2, user: 'amina', rooms: ['clinic'] }, resync(), message(1)], { gen: 2 });
  p.closed();
  const hello = p.opened(3, { token: 'token', device: 'amina-phone' });
  assert.equal(hello.epoch, OTHER_EPOCH);
  assert.equal(hello.cursor, 1);
});

test('a later welcome does not replace the epoch on its own (a different one comes with resync)', () => {
  const p = device();
  connect(p, { epoch: EPOCH });
  p.closed();
  connect(p, { gen: 2, epoch: OTHER_EPOCH });
  assert.equal(p.state.epoch, EPOCH);
});

test('a welcome for another person forgets everything of the last one, the outbox included', () => {
  const { p } = seasoned();
  p.state.claims = { sub: 'neema', role: 'worker', rooms: ['clinic'] };
  p.opened(2, { token: 'token', device: 'amina-phone' });
  const { events, ops } = deliver(p, [{ v: 1, type: 'welcome', epoch: EPOCH, cursor: 5, user: 'neema', rooms: ['clinic'] }], { gen: 2 });
  assert.deepEqual(events, [{ type: 'forget' }, { type: 'welcome' }]);
  assert.equal(p.state.msgs.size, 0);
  assert.equal(p.state.outbox.size, 0);
  assert.equal(p.state.welcome.user, 'neema');
  assert.equal(p.me(), 'neema');
  assert.ok(ops.some(([store, op]) => store === 'outbox' && op === 'clear'));
  assert.deepEqual(p.flush(link(2)).send, []);
  assert.equal(p.opened(3, { token: 'token', device: 'amina-phone' }).epoch, EPOCH, 'the epoch is taken afresh');
});

test('signing out leaves nothing of the person and restarts the counter', () => {
  const { p } = seasoned();
  const ops = p.forgetPerson();
  p.signedOut();
  assert.ok(ops.some(([store, op]) => store === 'outbox' && op === 'clear'));
  assert.ok(ops.some(([store, op, key]) => store === 'kv' && op === 'delete' && key === 'welcome'));
  assert.equal(p.state.msgs.size, 0);
  assert.equal(p.state.outbox.size, 0);
  assert.equal(p.state.welcome, null);
  assert.equal(p.state.claims, null);
  assert.equal(p.state.seq, 0);
  assert.equal(p.me(), null);
  assert.equal(p.opened(3, { token: 'token', device: 'amina-phone' }).cursor, null);
});
