// What a sender sees of a message's way: its local state and the receipts of its readers
// (docs/web-client.md, "Message states"; docs/protocol.md, Receipts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NOW, connect, deliver, device, link, receipt, stored, write } from './harness.mjs';

function sentAndStored() {
  const p = device({ rooms: ['clinic'] });
  const id = write(p, 'hello').id;
  connect(p);
  p.flush(link());
  deliver(p, [stored(id, 10)]);
  return { p, id };
}

test('a receipt records each reader furthest step and when each step was first reached', () => {
  const { p, id } = sentAndStored();
  deliver(p, [receipt(id, 11, 'forwarded', 'hub', NOW + 1), receipt(id, 12, 'delivered', 'baraka', NOW + 2), receipt(id, 13, 'read', 'baraka', NOW + 3)]);
  const r = p.state.receipts.get(id);
  assert.deepEqual(r.by, { hub: 'forwarded', baraka: 'read' });
  assert.deepEqual(r.at, { forwarded: NOW + 1, delivered: NOW + 2, read: NOW + 3 });
  assert.equal(r.best, 'read');
});

test('a reader never moves back, and the furthest step of any reader is kept', () => {
  const { p, id } = sentAndStored();
  deliver(p, [receipt(id, 11, 'read', 'baraka', NOW + 5), receipt(id, 12, 'delivered', 'neema', NOW + 6)]);
  // Replays can bring an older receipt again after a newer one.
  deliver(p, [receipt(id, 13, 'delivered', 'baraka', NOW + 9)]);
  const r = p.state.receipts.get(id);
  assert.equal(r.by.baraka, 'read');
  assert.equal(r.by.neema, 'delivered');
  assert.equal(r.best, 'read');
  assert.equal(r.at.delivered, NOW + 6, 'the first time a step was reached stays');
});

test('receipts are written to the device with the batch', () => {
  const { p, id } = sentAndStored();
  const { ops } = deliver(p, [receipt(id, 11, 'delivered')]);
  assert.ok(ops.some(([store, op, r]) => store === 'receipts' && op === 'put' && r.id === id && r.best === 'delivered'));
});

test('a receipt without a time takes the time it arrived', () => {
  const { p, id } = sentAndStored();
  const f = receipt(id, 11, 'delivered');
  delete f.at;
  deliver(p, [f], { now: NOW + 42 });
  assert.equal(p.state.receipts.get(id).at.delivered, NOW + 42);
});

test('a receipt does not change the message local state (only stored and errors do)', () => {
  const { p, id } = sentAndStored();
  deliver(p, [receipt(id, 11, 'read')]);
  assert.equal(p.state.msgs.get(id).local, 'stored');
});
