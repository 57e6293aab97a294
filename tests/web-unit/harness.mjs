// A page-less stand-in for app.js around relay/web/protocol.js: frames go in as the socket
// delivers them, batches "commit" when the test says so, and what the protocol would send
// is collected instead of sent.

import { Protocol, initialState } from '../../relay/web/protocol.js';

export const NOW = Date.UTC(2026, 0, 15, 8, 0, 0);
export const EPOCH = 'epoch-a';
export const OTHER_EPOCH = 'epoch-b';

/** A socket that takes frames; `open: false` for one that is gone. */
export const link = (gen = 1, writable = true) => ({ gen, open: writable, writable });

let ids = 0;
/** A message id that sorts like the app's UUIDv7s would. */
export const newId = () => `01a200ec-0000-7000-8000-${String(++ids).padStart(12, '0')}`;

/** A device signed in as `user` (from its token), holding nothing yet. */
export function device({ user = 'amina', role = 'worker', rooms = ['clinic'], pendingUpload } = {}) {
  const state = initialState();
  state.claims = { sub: user, role, rooms };
  return new Protocol(state, { pendingUpload });
}

/**
 * Frames arriving together: applied as one batch, then committed unless `commit` is false.
 * Returns the events for the page (at once and after the commit) and the batch's ops.
 */
export function deliver(p, frames, { gen = 1, now = NOW, commit = true } = {}) {
  const batch = p.batch();
  const events = [];
  for (const f of frames) events.push(...p.receive(batch, f, gen, now));
  const cursor = p.settle(batch);
  if (commit) p.committed(cursor);
  return { events, after: batch.after, ops: batch.ops, cursor };
}

export const welcome = ({ user = 'amina', epoch = EPOCH, cursor = 0, rooms = ['clinic'], role = 'worker', encrypted } = {}) => ({
  v: 1,
  type: 'welcome',
  epoch,
  cursor,
  user,
  rooms,
  role,
  ...(encrypted ? { encrypted } : {}),
});

/** Opens socket `gen` and signs in; returns the `hello` the device sent. */
export function connect(p, { gen = 1, ...w } = {}) {
  const hello = p.opened(gen, { token: 'token', device: 'amina-phone' });
  deliver(p, [welcome({ user: p.state.claims?.sub, ...w })], { gen });
  return hello;
}

/** A `message` frame from `from` at `cursor`. */
export function message(cursor, { id = newId(), from = 'baraka', room = 'clinic', text = `m${cursor}`, priority = 'normal', at = NOW - 1000, ahead = false, hlc = cursor } = {}) {
  const f = { v: 1, type: 'message', cursor, msg: { id, room, kind: 'chat', priority, body: { text }, seq: cursor, from, device: `${from}-phone`, hlc, at } };
  return ahead ? { ahead: true, ...f } : f;
}

export const receipt = (id, cursor, state, by = 'baraka', at = NOW) => ({ v: 1, type: 'receipt', id, state, by, at, room: 'clinic', cursor });
export const stored = (id, cursor, duplicate = false, hlc = undefined) => ({ v: 1, type: 'stored', id, cursor, ...(hlc === undefined ? {} : { hlc }), ...(duplicate ? { duplicate: true } : {}) });
export const error = (code, id, message = `refused: ${code}`) => ({ v: 1, type: 'error', code, message, ...(id ? { id } : {}) });

/** Writes a text message the way the page does: drafted, queued (durable first), then flushed. */
export function write(p, text, { room = 'clinic', emergency = false, now = NOW } = {}) {
  const id = newId();
  const { msg, rec } = p.draft({ id, seq: p.nextSeq(), room, body: { text }, emergency, device: 'amina-phone', now });
  const ops = p.queue(msg, rec, now);
  return { id, ops };
}

/** The frames of a type among `frames`. */
export const ofType = (frames, type) => frames.filter((f) => f.type === type);
/** The ids of `send` frames. */
export const sentIds = (frames) => ofType(frames, 'send').map((f) => f.msg.id);
