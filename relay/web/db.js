// The device's durable state in IndexedDB:
//   kv        cursor, epoch, seq, welcome (user, role, rooms, encrypted), read marks,
//             roomkeys (the end-to-end room keys held here, e2e.js), ...
//   messages  every message held for this server (own ones included), by id
//   receipts  custody receipts for own messages, by message id
//   outbox    messages written here and not yet `stored` by the server, by id
//   uploads   photos and voice notes not yet uploaded whole (file Blob, room, caption), by
//             message id; the message goes to the outbox once its file is on the server
//
// Versions: 1 kv, messages, receipts, outbox; 2 adds uploads. The upgrade only creates
// what is missing, so any older database (or none) reaches the current layout and keeps
// its data.

const NAME = 'outpost';
const VERSION = 2;
export const STORES = ['kv', 'messages', 'receipts', 'outbox', 'uploads'];

/**
 * `onBlocked`: called when another tab still has an older version open (the upgrade waits
 * until it closes); `onReplaced`: called when a newer version of the app, in another tab,
 * needs this connection closed.
 */
export function openDb({ onBlocked = () => {}, onReplaced = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(NAME, VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      if (!db.objectStoreNames.contains('kv')) db.createObjectStore('kv');
      if (!db.objectStoreNames.contains('messages')) {
        db.createObjectStore('messages', { keyPath: 'id' }).createIndex('room', 'room');
      }
      if (!db.objectStoreNames.contains('receipts')) db.createObjectStore('receipts', { keyPath: 'id' });
      if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'id' });
      if (!db.objectStoreNames.contains('uploads')) db.createObjectStore('uploads', { keyPath: 'id' });
    };
    r.onsuccess = () => {
      const db = r.result;
      db.onversionchange = () => {
        db.close();
        onReplaced();
      };
      resolve(db);
    };
    r.onerror = () => reject(r.error);
    r.onblocked = () => onBlocked();
  });
}

export const req = (r) =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });

/**
 * Runs `ops` (a list of [store, 'put'|'delete'|'clear', value, key]) in one read-write
 * transaction with strict durability; resolves once it has committed to disk.
 */
export function write(db, ops) {
  return new Promise((resolve, reject) => {
    if (ops.length === 0) return resolve();
    const names = [...new Set(ops.map((o) => o[0]))];
    const t = db.transaction(names, 'readwrite', { durability: 'strict' });
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error('transaction aborted'));
    for (const [store, op, value, key] of ops) {
      const s = t.objectStore(store);
      if (op === 'put') key === undefined ? s.put(value) : s.put(value, key);
      else if (op === 'delete') s.delete(value);
      else if (op === 'clear') s.clear();
    }
  });
}

/** Everything: { kv: Map, messages: [], receipts: [], outbox: [], uploads: [] }. */
export async function loadAll(db) {
  const t = db.transaction(STORES, 'readonly');
  const kvStore = t.objectStore('kv');
  const [keys, values, messages, receipts, outbox, uploads] = await Promise.all([
    req(kvStore.getAllKeys()),
    req(kvStore.getAll()),
    req(t.objectStore('messages').getAll()),
    req(t.objectStore('receipts').getAll()),
    req(t.objectStore('outbox').getAll()),
    req(t.objectStore('uploads').getAll()),
  ]);
  const kv = new Map(keys.map((k, i) => [k, values[i]]));
  return { kv, messages, receipts, outbox, uploads };
}
