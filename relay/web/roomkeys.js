// Room keys of end-to-end encrypted rooms as people handle them (docs/web-client.md, "Keys"):
// the key link, the *Room key* form, *New room key*, and sealing what leaves this device with
// them. Owns the keys held here (e2e.js KeyRing, kept in IndexedDB `kv` under `roomkeys`) and
// the opener that decrypts received bodies in the background.

import { write } from './db.js';
import * as E2E from './e2e.js';
import { $, showShared } from './view.js';

let A = null; // what app.js shares: S, notice, render, flushOutbox, serverName, isEncrypted, opened

export const keys = new E2E.KeyRing();
// Encrypted bodies, opened in the background; the page redraws (and sends `read`) when they are.
export const opener = new E2E.Opener(keys, () => A.opened());

export function initRoomKeys(app) {
  A = app;
}

export function loadKeys(kv) {
  keys.load(kv.get(E2E.KV_KEY));
}

/** Room keys belong to the person: another one signing in here must not read with them. */
export function forgetKeys(ops) {
  keys.clear();
  opener.clear();
  ops.push(['kv', 'delete', E2E.KV_KEY]);
}

/** The body as it leaves this device: sealed with the room's newest key in an encrypted room. */
export async function outgoing(room, id, body) {
  if (!A.isEncrypted(room)) return body;
  if (!E2E.available()) throw new Error(`this page cannot encrypt: open the ${A.serverName()}'s https:// address`);
  const k = keys.newest(room);
  if (!k) throw new Error(`there is no key for # ${room} on this device`);
  return E2E.seal(await keys.cryptoKey(k), k.kid, room, id, body);
}

const sealing = new Set();
export async function sealQueued(e) {
  if (sealing.has(e.id) || !keys.newest(e.msg.room) || !E2E.available()) return; // waits for the key
  sealing.add(e.id);
  try {
    e.msg = { ...e.msg, body: await outgoing(e.msg.room, e.id, e.msg.body) };
    await write(A.S.db, [['outbox', 'put', e]]);
  } catch (err) {
    A.notice(`A waiting message could not be encrypted (${err.message}).`);
    return;
  } finally {
    sealing.delete(e.id);
  }
  A.flushOutbox();
}

/** A room key link (/#roomkey=ROOM/KID/KEY): saved on this device, then taken out of the address bar. */
export function keyFromLink() {
  const m = /^#roomkey=(.+)$/.exec(location.hash);
  if (!m || !A.S.db) return false;
  let k = null;
  try {
    k = E2E.parseKey(m[1]);
  } catch (e) {
    A.notice(`This room key link is not whole: ${e.message}`);
  }
  history.replaceState(null, '', k ? `${location.pathname}#room/${encodeURIComponent(k.room)}` : location.pathname);
  const where = E2E.available() ? '' : ` This page cannot use it, though: open the ${A.serverName()}'s https:// address and open the link there.`;
  if (k) addKey(k).then(() => A.notice(`Key ${k.kid} for # ${k.room} is saved on this device.${where}`));
  return false; // go on to the room it names
}

/** Keeps a room key on this device (IndexedDB) and opens what it can open now. */
async function addKey(k) {
  if (!keys.add(k)) return;
  await write(A.S.db, [['kv', 'put', keys.list, E2E.KV_KEY]]);
  opener.retry();
  A.flushOutbox(); // messages that waited for the key
  A.render();
}

async function newRoomKey() {
  const room = A.S.room;
  if (!room || !E2E.available()) return;
  const had = keys.newest(room);
  if (had && !confirm(`Make a new key for # ${room}? New messages will use it, so everyone in the room needs the new key to read them. Old messages still open with key ${had.kid}.`)) return;
  const k = E2E.newKey(room);
  await addKey(k);
  const link = `${location.origin}/#${E2E.keyFragment(k)}`;
  const text = `Room key for # ${room} (key ${k.kid}). Open this link on your phone, where you use Outpost:\n${link}\nor paste this under "Room key" in the room:\n${k.kid}/${k.key}\nKeep it private: anyone who has it can read # ${room}.`;
  showShared({ room, kid: k.kid, link, text });
}

export function bindKeys() {
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const err = $('key-error');
    try {
      const k = E2E.parseKey($('key-input').value, A.S.room);
      err.hidden = true;
      $('key-input').value = '';
      addKey(k).then(() => {
        // In this room the line above the form now names the key; another room's, say so.
        if (k.room !== A.S.room) A.notice(`Key ${k.kid} for # ${k.room} is saved on this device.`);
      });
    } catch (x) {
      err.textContent = x.message;
      err.hidden = false;
    }
  });
  $('key-new').addEventListener('click', newRoomKey);
  $('key-copy').addEventListener('click', async () => {
    const t = $('key-text');
    try {
      await navigator.clipboard.writeText(t.value);
      $('key-copy').textContent = 'Copied';
    } catch {
      t.select(); // the person copies it by hand
    }
  });
}
