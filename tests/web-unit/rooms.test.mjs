// A room on screen: paging back through history, `read`, unread counts, and which
// emergencies ring (docs/web-client.md, "A room", "Emergencies").

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALERT_MAX_AGE_MS, HISTORY_PAGE } from '../../relay/web/protocol.js';
import { NOW, connect, deliver, device, link, message, stored, write } from './harness.mjs';

const page = (room, frames, more) => ({ v: 1, type: 'history', room, messages: frames.map((f) => ({ cursor: f.cursor, msg: f.msg })), more });
const canRead = () => true;

test('the first history request asks for the newest page; the next from the oldest message held', () => {
  const p = device();
  connect(p);
  assert.ok(p.firstPage('clinic'));
  assert.deepEqual(p.history('clinic', link()), [{ v: 1, type: 'history', room: 'clinic', before: null, limit: HISTORY_PAGE }]);
  deliver(p, [page('clinic', [message(40), message(41)], true)]);
  assert.equal(p.firstPage('clinic'), false);
  assert.deepEqual(p.history('clinic', link()), [{ v: 1, type: 'history', room: 'clinic', before: 40, limit: HISTORY_PAGE }]);
});

test('one history request at a time per room, and none before welcome', () => {
  const p = device();
  p.opened(1, { token: 'token', device: 'amina-phone' });
  assert.equal(p.history('clinic', link()), null, 'not welcomed');
  connect(p);
  assert.equal(p.history('clinic', link()).length, 1);
  assert.equal(p.history('clinic', link()), null, 'the first is still on its way');
  assert.ok(p.state.loadingOlder.has('clinic'));
  deliver(p, [page('clinic', [], false)]);
  assert.equal(p.state.loadingOlder.has('clinic'), false);
  assert.equal(p.state.more.clinic, false, 'nothing older: the button goes');
});

test('a history request lost with its socket is asked again on the next one', () => {
  const p = device();
  connect(p);
  assert.equal(p.history('clinic', link()).length, 1);
  p.closed();
  connect(p, { gen: 2 });
  assert.equal(p.history('clinic', link(2)).length, 1, '"Load older messages" works again after a reconnect');
});

test('a request the socket did not take is not waited for', () => {
  const p = device();
  connect(p);
  assert.deepEqual(p.history('clinic', link(1, false)), []);
  assert.equal(p.state.loadingOlder.has('clinic'), false);
});

test('read goes out once for the newest message, when another user wrote something newer', () => {
  const p = device();
  connect(p);
  const newest = message(5);
  deliver(p, [message(3), newest]);
  assert.equal(p.unread('clinic'), 2);
  const first = p.read('clinic', { canRead, link: link() });
  assert.equal(first.seen, true);
  assert.deepEqual(first.send, [{ v: 1, type: 'read', room: 'clinic', id: newest.msg.id }]);
  assert.equal(p.unread('clinic'), 0);
  assert.deepEqual(p.read('clinic', { canRead, link: link() }), { seen: false, send: [] });
  const later = message(8);
  deliver(p, [later]);
  assert.equal(p.unread('clinic'), 1);
  assert.deepEqual(p.read('clinic', { canRead, link: link() }).send, [{ v: 1, type: 'read', room: 'clinic', id: later.msg.id }]);
});

test('own messages alone send no read', () => {
  const p = device();
  connect(p);
  deliver(p, [message(3, { from: 'amina' })]);
  assert.equal(p.unread('clinic'), 0, 'nor count as unread');
  assert.deepEqual(p.read('clinic', { canRead, link: link() }).send, []);
});

test('a message this device cannot open is not reported read, but counts as seen', () => {
  const p = device();
  connect(p);
  deliver(p, [message(3)]);
  const r = p.read('clinic', { canRead: () => false, link: link() });
  assert.deepEqual(r, { seen: true, send: [] });
  assert.equal(p.read('clinic', { canRead, link: link() }).send.length, 1, 'once it opens, read goes');
});

test('a fresh emergency from someone else rings once; dismissed ones do not ring again', () => {
  const p = device();
  connect(p);
  const alarm = message(3, { priority: 'emergency', at: NOW - 5000 });
  const { after } = deliver(p, [alarm]);
  assert.deepEqual(after, [{ type: 'alert', id: alarm.msg.id }]);
  assert.deepEqual(p.state.alerts, [alarm.msg.id]);
  assert.deepEqual(deliver(p, [alarm]).after, [], 'the same emergency again (a replay) does not ring');
  const ops = p.dismissAlerts();
  assert.deepEqual(p.state.alerts, []);
  assert.deepEqual(ops, [['kv', 'put', [alarm.msg.id], 'dismissed']]);
  // Another device (or a resync) brings it back as new: still acknowledged here.
  p.state.msgs.delete(alarm.msg.id);
  assert.deepEqual(deliver(p, [alarm]).after, []);
});

test('no ring for own emergencies, history pages, or emergencies older than a day', () => {
  const p = device();
  connect(p);
  const own = message(3, { priority: 'emergency', from: 'amina' });
  const old = message(4, { priority: 'emergency', at: NOW - ALERT_MAX_AGE_MS - 1 });
  const paged = message(1, { priority: 'emergency' });
  assert.deepEqual(deliver(p, [own, old, page('clinic', [paged], false)]).after, []);
  assert.deepEqual(p.state.alerts, []);
});

test('an emergency that arrives ahead still rings', () => {
  const p = device();
  connect(p);
  const alarm = message(9, { priority: 'emergency', ahead: true });
  assert.deepEqual(deliver(p, [alarm]).after, [{ type: 'alert', id: alarm.msg.id }]);
});

test('a room is listed by HLC stamp, not by the order messages reached this server', () => {
  const p = device();
  connect(p);
  // The doctor's reply (stamp 50) reached this hub before a village message written
  // earlier elsewhere (stamp 40) came in over the link: cursors 7 and 8.
  const reply = message(7, { hlc: 50, from: 'dr-neema', text: 'reply' });
  const earlier = message(8, { hlc: 40, text: 'earlier' });
  deliver(p, [reply, earlier]);
  // Our own message, stored as cursor 9 with stamp 45, sorts between them.
  const mine = write(p, 'mine');
  deliver(p, [stored(mine.id, 9, false, 45)]);
  const waiting = write(p, 'not yet stored').id;
  assert.deepEqual(
    p.roomMessages('clinic').map((m) => m.body.text),
    ['earlier', 'mine', 'reply', 'not yet stored'],
  );
  assert.equal(p.state.msgs.get(waiting).hlc, undefined);
});

test('messages of a room are listed by cursor, those not yet on the server last', () => {
  const p = device();
  connect(p);
  deliver(p, [message(7), message(2)]);
  const waiting = write(p, 'mine').id;
  assert.deepEqual(
    p.roomMessages('clinic').map((m) => m.cursor ?? m.id),
    [2, 7, waiting],
  );
});

test('a read mark from another of my devices clears the unread count, and never moves back', () => {
  const p = device({ rooms: ['clinic', 'ward'] });
  connect(p, { rooms: ['clinic', 'ward'] });
  deliver(p, [message(3), message(5), message(7, { room: 'ward' })]);
  assert.equal(p.unread('clinic'), 2);
  const batch = deliver(p, [{ v: 1, type: 'read_mark', room: 'clinic', cursor: 5 }]);
  assert.equal(p.unread('clinic'), 0, 'read on the phone, cleared on the tablet');
  assert.ok(batch.ops.some(([store, op, value, key]) => store === 'kv' && op === 'put' && key === 'seen' && value.clinic === 5), 'saved');
  deliver(p, [{ v: 1, type: 'read_mark', room: 'clinic', cursor: 3 }]);
  assert.equal(p.state.seen.clinic, 5, 'an older mark changes nothing');
  assert.equal(p.unread('ward'), 1, 'other rooms keep their count');
});

test('mark all read clears every room and tells the server once per room', () => {
  const p = device({ rooms: ['clinic', 'ward'] });
  connect(p, { rooms: ['clinic', 'ward'] });
  const [theirs, own, ward] = [message(3), message(4, { from: 'amina' }), message(6, { room: 'ward' })];
  deliver(p, [theirs, own, ward]);
  const { ops, send } = p.markAllRead({ canRead, link: link() });
  assert.equal(p.unread('clinic') + p.unread('ward'), 0);
  // `read` names each room's newest message, which vouches for everything before it.
  assert.deepEqual(send.map((f) => [f.room, f.id]).sort(), [['clinic', own.msg.id], ['ward', ward.msg.id]]);
  assert.equal(ops.length, 1);
  assert.deepEqual(p.markAllRead({ canRead, link: link() }), { ops: [], send: [] }, 'nothing left to mark');
});
