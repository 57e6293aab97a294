// The device's durable state in IndexedDB:
//   kv        cursor, epoch, seq, welcome (user, role, rooms, encrypted), read marks,
//             roomkeys (the end-to-end room keys held here, e2e.js), ...
//   messages  every message held for this server (own ones included), by id
//   receipts  custody receipts for own messages, by message id
//   outbox    messages written here and not yet `stored` by the server, by id

const NAME = 'outpost';
const VERSION = 1;
export const STORES = ['kv', 'messages', 'receipts', 'outbox'];

export function openDb() {
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
    };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.onblocked = () => reject(new Error('the local database is blocked by another tab'));
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

/** Everything: { kv: Map, messages: [], receipts: [], outbox: [] }. */
export async function loadAll(db) {
  const t = db.transaction(STORES, 'readonly');
  const kvStore = t.objectStore('kv');
  const [keys, values, messages, receipts, outbox] = await Promise.all([
    req(kvStore.getAllKeys()),
    req(kvStore.getAll()),
    req(t.objectStore('messages').getAll()),
    req(t.objectStore('receipts').getAll()),
    req(t.objectStore('outbox').getAll()),
  ]);
  const kv = new Map(keys.map((k, i) => [k, values[i]]));
  return { kv, messages, receipts, outbox };
}
