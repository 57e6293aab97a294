// Photos, voice notes and documents (docs/protocol.md, "Media"). The file goes to the server
// over HTTP, resumably; only once the server holds all of it does the message naming it
// (by SHA-256) join the ordinary outbox. Until then the file, its room and its caption wait
// in IndexedDB (the `uploads` store), so a reload or a hub restart continues where the
// server says it stopped. Received files are fetched with the bearer token (an <img src>
// could not carry it) and shown from object URLs.

import { write } from './db.js';
import { uuid7 } from './uuid.js';
import { digestBlob, digestBytes, toBase64 } from './sha256.js';
import { showViewer } from './view.js';
import { initAttach, stopRecording } from './attach.js';

// The composer's attach and record buttons (attach.js) are part of what app.js calls media.
export { bindComposer, recording } from './attach.js';

export const CHUNK = 256 * 1024;
const RETRY_MS = [1000, 30_000]; // unreachable server: 1 s, doubling, at most 30 s
const POLL_MS = [2000, 30_000]; // a file still on its way: 2 s, doubling, at most 30 s
const REQUEST_TIMEOUT_MS = 120_000; // one 256 KiB chunk at 2 KB/s

let A = null; // what app.js shares: S, render, notice, queueMessage, me, serverName, isEncrypted

// ---------- state ----------

const uploads = new Map(); // message id -> { id, room, blob, name, type, size, sha256, caption, created, error, code, retry }
const progress = new Map(); // message id -> { state: hashing|uploading|waiting|uploaded|failed, sent }
const localUrls = new Map(); // message id -> object URL of the file as it is on this device
const infos = new Map(); // sha256 -> the server's /info answer
const fetched = new Map(); // sha256 -> { url } | { loading: true } | { error } (the full file)
const thumbs = new Map(); // sha256 -> { url } | { loading: true } | { error } (/preview, when the body has none)
const active = new Map(); // message id -> AbortController of the request in flight

export function initMedia(app) {
  A = app;
  initAttach(app);
}

/** The headers of an authenticated request to the server that served the page (also the queues', queuepanel.js). */
export const auth = () => ({ Authorization: `Bearer ${A.S.token}` });
const base = (sha) => `/api/media/${sha}`;

export function kindOf(type) {
  const t = String(type ?? '').toLowerCase();
  if (t.startsWith('image/')) return 'image';
  if (t.startsWith('audio/')) return 'audio';
  if (t === 'application/pdf') return 'pdf';
  return 'file';
}

export function formatSize(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

/** Whether the message's file is still being uploaded from this device. */
export const pending = (id) => uploads.has(id);
export const pendingCount = () => uploads.size;

let renderTimer = null;
function renderSoon() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    A.render();
  }, 0);
}

function setProgress(id, state, sent) {
  const p = progress.get(id) ?? { state, sent: 0 };
  p.state = state;
  if (sent !== undefined) p.sent = sent;
  progress.set(id, p);
  renderSoon();
}

// ---------- attaching ----------

/**
 * Makes the message at once (its id is fixed here, so a retry never duplicates it), keeps
 * the file with it on this device, then uploads in the background.
 */
export async function attach(blob, { room, name, caption = '' }) {
  const id = uuid7();
  const now = Date.now();
  const type = (blob.type || '').split(';')[0].trim().toLowerCase();
  const u = { id, room, blob, name, type, size: blob.size, sha256: null, caption, created: now, error: null, code: null, retry: false };
  const rec = {
    id,
    room,
    kind: 'media',
    priority: 'normal',
    body: { text: caption, media: { sha256: null, type, name, size: blob.size } },
    from: A.me(),
    device: A.S.device,
    mine: true,
    local: 'queued',
    cursor: null,
    created: now,
    at: now,
    trail: { queued: now },
  };
  A.S.msgs.set(id, rec);
  uploads.set(id, u);
  localUrls.set(id, URL.createObjectURL(blob));
  setProgress(id, 'hashing', 0);
  try {
    await write(A.S.db, [
      ['messages', 'put', rec],
      ['uploads', 'put', u],
    ]);
  } catch (e) {
    A.notice(`This device could not keep the file (${e.message}). It is sent if the ${A.serverName()} is reachable, but not after a reload.`);
  }
  kick();
}

/** Uploads saved on this device (from IndexedDB at start). */
export function loadUploads(list) {
  for (const u of list) {
    uploads.set(u.id, u);
    if (!localUrls.has(u.id)) localUrls.set(u.id, URL.createObjectURL(u.blob));
    setProgress(u.id, u.error ? 'failed' : 'waiting', 0);
    if (!A.S.msgs.has(u.id)) {
      // Its message was dropped (a resync by an older version of the app): make it again.
      A.S.msgs.set(u.id, {
        id: u.id,
        room: u.room,
        kind: 'media',
        priority: 'normal',
        body: { text: u.caption, media: { sha256: u.sha256, type: u.type, name: u.name, size: u.size } },
        from: A.me(),
        device: A.S.device,
        mine: true,
        local: 'queued',
        cursor: null,
        created: u.created,
        at: u.created,
        trail: { queued: u.created },
      });
    }
  }
  kick();
}

/** Forgets everything (sign-out); IndexedDB is cleared by the caller. */
export function reset() {
  stopRecording(false);
  for (const c of active.values()) c.abort();
  active.clear();
  uploads.clear();
  progress.clear();
  for (const url of localUrls.values()) URL.revokeObjectURL(url);
  localUrls.clear();
  roomChanged();
  infos.clear();
}

// ---------- the upload loop: one file at a time, oldest first ----------

class Refused extends Error {
  constructor(code, text, retry) {
    super(text);
    this.code = code;
    this.retry = retry;
  }
}

let running = false;
const wakers = new Set();

function pause(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      wakers.delete(done);
      resolve();
    };
    const t = setTimeout(done, ms);
    wakers.add(done);
  });
}

/**
 * Goes on with the uploads now (the server is back): cuts the backoff short, and tries
 * again the ones refused for a sign-in that has since been renewed.
 */
export function kick({ signedIn = false } = {}) {
  if (signedIn) {
    for (const u of uploads.values()) {
      if (u.error && (u.code === 'unauthenticated' || u.code === 'token_expired')) clearError(u);
    }
  }
  for (const w of [...wakers]) w();
  if (!running) run();
}

async function run() {
  running = true;
  try {
    for (;;) {
      if (!A.S.token) break;
      const next = [...uploads.values()].filter((u) => !u.error).sort((a, b) => a.created - b.created)[0];
      if (!next) break;
      await uploadOne(next);
    }
  } finally {
    running = false;
  }
}

async function uploadOne(u) {
  let delay = RETRY_MS[0];
  for (;;) {
    if (uploads.get(u.id) !== u || u.error || !A.S.token) return;
    const before = progress.get(u.id)?.sent ?? 0;
    try {
      await attempt(u);
      return;
    } catch (e) {
      if (uploads.get(u.id) !== u) return; // discarded meanwhile
      if (e instanceof Refused) {
        await fail(u, e);
        return;
      }
      // Unreachable, interrupted or a passing server error: later, from the server's offset.
      if ((progress.get(u.id)?.sent ?? 0) > before) delay = RETRY_MS[0];
      setProgress(u.id, 'waiting');
      await pause(delay);
      delay = Math.min(delay * 2, RETRY_MS[1]);
    }
  }
}

async function attempt(u) {
  if (!u.sha256) {
    setProgress(u.id, 'hashing');
    await setHash(u, await digestBlob(u.blob));
  }
  let offset = await begin(u);
  setProgress(u.id, 'uploading', offset);
  let badSums = 0;
  while (offset < u.size) {
    const bytes = new Uint8Array(await u.blob.slice(offset, offset + CHUNK).arrayBuffer());
    const sum = toBase64(await digestBytes(bytes));
    const res = await request(u, 'PATCH', base(u.sha256), {
      'Upload-Offset': String(offset),
      'Content-Type': 'application/offset+octet-stream',
      'Upload-Checksum': `sha256 ${sum}`,
      body: bytes,
    });
    if (res.status === 204) {
      offset = offsetOf(res, u) ?? offset + bytes.length;
    } else if (res.status === 409) {
      // Another tab or an earlier attempt got further (or less far): the server's word counts.
      offset = offsetOf(res, u) ?? (await begin(u));
    } else if (res.status === 404) {
      offset = await begin(u); // the partial upload is gone (expired): start it again
    } else if (res.status === 460) {
      if (++badSums > 3) throw new Error('the chunk keeps arriving damaged');
    } else if (res.status === 422) {
      // The bytes do not hash to the name: the file changed on the device. Name it again.
      const sha = await digestBlob(u.blob);
      if (sha === u.sha256) throw await refusal(res);
      await setHash(u, sha);
      offset = await begin(u);
    } else {
      throw await refusal(res);
    }
    setProgress(u.id, 'uploading', offset);
  }
  await finish(u);
}

/** POST (idempotent): creates the upload or learns how much of it the server holds. */
async function begin(u) {
  const res = await request(u, 'POST', '/api/media', { 'Upload-Length': String(u.size), 'Upload-Sha256': u.sha256 });
  if (res.status === 200) return u.size;
  if (res.status !== 201) throw await refusal(res);
  return offsetOf(res, u) ?? 0;
}

function offsetOf(res, u) {
  const v = res.headers.get('Upload-Offset');
  const n = v === null || !/^\d+$/.test(v.trim()) ? NaN : Number(v);
  return Number.isSafeInteger(n) && n >= 0 && n <= u.size ? n : null;
}

async function request(u, method, url, { body, ...headers }) {
  const c = new AbortController();
  active.set(u.id, c);
  const t = setTimeout(() => c.abort(), REQUEST_TIMEOUT_MS);
  try {
    return await fetch(url, { method, headers: { ...auth(), ...headers }, body, signal: c.signal, cache: 'no-store' });
  } finally {
    clearTimeout(t);
    if (active.get(u.id) === c) active.delete(u.id);
  }
}

/** A refusal in plain words (with the server's own message), or a passing error to retry. */
async function refusal(res) {
  let code = '';
  let message = '';
  try {
    const j = await res.json();
    code = String(j.code ?? '');
    message = String(j.message ?? '');
  } catch {
    /* no JSON body */
  }
  if (res.status >= 500 && res.status !== 507) throw new Error(`${res.status} ${code}`);
  if (res.status === 429 || res.status === 408) throw new Error(`${res.status} ${code}`);
  const where = A.serverName();
  const why = message ? ` (${message})` : '';
  switch (code || res.status) {
    case 'too_large':
      return new Refused(code, `This file is too large for the ${where}${why}.`, false);
    case 'quota_exceeded':
      return new Refused(code, `You have sent too much to the ${where} for now${why}.`, true);
    case 'unsupported_type':
      return new Refused(code, `The ${where} does not accept this kind of file${why || ': photos (JPEG, PNG, WebP), voice notes and PDF documents can be sent'}.`, false);
    case 'storage_full':
      return new Refused(code, `The ${where} is full${why}. Try again later.`, true);
    case 'hash_mismatch':
      return new Refused(code, `The file did not arrive whole${why}.`, true);
    case 'unauthenticated':
    case 'token_expired':
      return new Refused(code, `Your sign-in is not accepted any more${why}. Ask for a new sign-in link.`, true);
    case 'forbidden':
      return new Refused(code, `You may not send files here${why}.`, false);
    default:
      return new Refused(code || String(res.status), `The ${where} refused the file: ${message || `HTTP ${res.status}`}.`, true);
  }
}

async function setHash(u, sha) {
  u.sha256 = sha;
  const rec = A.S.msgs.get(u.id);
  const ops = [['uploads', 'put', u]];
  if (rec) {
    rec.body = { ...rec.body, media: { ...rec.body.media, sha256: sha } };
    ops.push(['messages', 'put', rec]);
  }
  await write(A.S.db, ops).catch(() => {});
}

async function fail(u, e) {
  Object.assign(u, { error: e.message, code: e.code, retry: e.retry });
  setProgress(u.id, 'failed');
  await write(A.S.db, [['uploads', 'put', u]]).catch(() => {});
}

function clearError(u) {
  Object.assign(u, { error: null, code: null, retry: false });
  setProgress(u.id, 'waiting');
  write(A.S.db, [['uploads', 'put', u]]).catch(() => {});
}

/** The whole file is on the server: its message joins the outbox, in one transaction. */
async function finish(u) {
  setProgress(u.id, 'uploaded', u.size);
  const rec = A.S.msgs.get(u.id);
  uploads.delete(u.id);
  if (!rec) return;
  rec.body = { ...rec.body, media: { ...rec.body.media, sha256: u.sha256 } };
  const body = { text: u.caption, media: { sha256: u.sha256, type: u.type, name: u.name } };
  await A.queueMessage({ id: u.id, room: u.room, kind: 'media', priority: 'normal', body }, rec, [['uploads', 'delete', u.id]]);
}

export function retry(id) {
  const u = uploads.get(id);
  if (!u) return;
  clearError(u);
  kick();
}

export async function discard(id) {
  active.get(id)?.abort();
  const u = uploads.get(id);
  // Tell the server too, so the unfinished upload stops counting against this user's
  // limits; if it cannot be reached, its partial_ttl_hours clears it later.
  if (u?.sha256) {
    fetch(base(u.sha256), { method: 'DELETE', headers: auth() }).catch(() => {});
  }
  uploads.delete(id);
  progress.delete(id);
  const url = localUrls.get(id);
  if (url) URL.revokeObjectURL(url);
  localUrls.delete(id);
  A.S.msgs.delete(id);
  A.render();
  await write(A.S.db, [
    ['uploads', 'delete', id],
    ['messages', 'delete', id],
  ]).catch(() => {});
}

// ---------- files of messages: /info until the file is here, then the bytes ----------

let pollGen = 0;
const polling = new Set(); // sha256 polled in the open room
const pollWaits = new Set();

/** The room changed: stop polling and let go of what was fetched for the old one. */
export function roomChanged() {
  pollGen++;
  polling.clear();
  for (const w of [...pollWaits]) w();
  for (const m of [fetched, thumbs]) {
    for (const v of m.values()) if (v.url) URL.revokeObjectURL(v.url);
    m.clear();
  }
}

function pollPause(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      pollWaits.delete(done);
      resolve();
    };
    const t = setTimeout(done, ms);
    pollWaits.add(done);
  });
}

const fileOf = (m) => m.file ?? {}; // { available, custody } last learnt, kept with the message
const settled = (m) => fileOf(m).available && (!m.mine || fileOf(m).custody === 'forwarded');

async function poll(sha, room) {
  const gen = pollGen;
  polling.add(sha);
  let delay = POLL_MS[0];
  try {
    while (gen === pollGen && A.S.room === room && A.S.token) {
      const info = await getInfo(sha);
      if (gen !== pollGen) return;
      if (info) learn(sha, info);
      const list = [...A.S.msgs.values()].filter((m) => m.room === room && m.body?.media?.sha256 === sha && !pending(m.id));
      if (info?.status === 403 || list.every(settled)) return;
      await pollPause(delay);
      delay = Math.min(delay * 2, POLL_MS[1]);
    }
  } finally {
    if (gen === pollGen) polling.delete(sha);
  }
}

async function getInfo(sha) {
  try {
    const res = await fetch(`${base(sha)}/info`, { headers: auth(), cache: 'no-store' });
    if (res.status === 403) return { status: 403 };
    if (!res.ok) return null;
    const j = await res.json();
    return j && typeof j === 'object' ? j : null;
  } catch {
    return null;
  }
}

/** Keeps what /info said with the messages naming the file, so a settled file is not asked about again. */
function learn(sha, info) {
  if (info.status) return;
  infos.set(sha, info);
  const ops = [];
  for (const m of A.S.msgs.values()) {
    if (m.body?.media?.sha256 !== sha) continue;
    const f = { available: !!info.available, custody: info.custody ?? null };
    if (fileOf(m).available === f.available && fileOf(m).custody === f.custody) continue;
    m.file = f;
    ops.push(['messages', 'put', m]);
  }
  if (ops.length) write(A.S.db, ops).catch(() => {});
  renderSoon();
}

async function download(sha, path, into) {
  if (into.has(sha)) return into.get(sha);
  into.set(sha, { loading: true });
  renderSoon();
  let v;
  try {
    const res = await fetch(`${base(sha)}${path}`, { headers: auth() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    v = { url: URL.createObjectURL(await res.blob()) };
  } catch (e) {
    v = { error: e.message };
  }
  if (into.get(sha)?.loading) into.set(sha, v);
  else if (v.url) URL.revokeObjectURL(v.url); // the room was left meanwhile
  renderSoon();
  return v;
}

/**
 * What the screen shows of a message's file; starts the polling and fetching it needs.
 * null when the message names no file.
 */
export function view(m) {
  const media = m.body?.media;
  if (!media || typeof media !== 'object') return null;
  const sha = typeof media.sha256 === 'string' && /^[0-9a-f]{64}$/.test(media.sha256) ? media.sha256 : null;
  const kind = kindOf(media.type);
  const local = localUrls.get(m.id) ?? null;
  const p = progress.get(m.id);
  const up = uploads.get(m.id);
  const info = sha ? infos.get(sha) : null;
  const f = fileOf(m);
  const available = !!local || !!f.available;
  const size = Number.isFinite(media.size) ? media.size : (info?.size ?? up?.size);
  const v = {
    kind,
    name: typeof media.name === 'string' ? media.name : '',
    size,
    available,
    known: available || !!info || f.available !== undefined, // has the server said yet?
    received: info && !info.available ? info.received : null,
    custody: f.custody ?? null,
    upload: up || (p && p.state === 'uploaded' && A.S.msgs.get(m.id)?.local === 'queued') ? uploadView(m.id, up) : null,
    thumb: null,
    width: media.preview?.width,
    height: media.preview?.height,
    src: null,
    loading: false,
  };
  if (!up && sha && A.S.room === m.room && !settled(m) && !polling.has(sha)) poll(sha, m.room);
  if (kind === 'image') {
    const pv = media.preview;
    if (local) v.thumb = local;
    else if (pv && typeof pv.data === 'string') v.thumb = `data:${pv.type || 'image/jpeg'};base64,${pv.data}`;
    else if (sha && available) {
      const t = thumbs.get(sha);
      if (!t && A.S.room === m.room) download(sha, '/preview', thumbs);
      v.thumb = t?.url ?? null;
    }
    v.loading = !!(sha && fetched.get(sha)?.loading);
  } else if (kind === 'audio') {
    if (local) v.src = local;
    else if (sha && available) {
      const a = fetched.get(sha);
      if (!a && A.S.room === m.room) download(sha, '', fetched);
      v.src = a?.url ?? null;
      v.loading = !!a?.loading;
      v.error = a?.error ?? null;
    }
  } else {
    v.loading = !!(sha && fetched.get(sha)?.loading);
  }
  return v;
}

function uploadView(id, u) {
  const p = progress.get(id) ?? { state: 'waiting', sent: 0 };
  const size = u?.size ?? 0;
  return {
    state: p.state,
    pct: size ? Math.floor((100 * p.sent) / size) : 100,
    error: u?.error ?? null,
    retry: !!u?.retry,
  };
}

/** The full file: from this device if it was sent from here, else fetched with the token. */
async function fullUrl(m) {
  const local = localUrls.get(m.id);
  if (local) return local;
  const sha = m.body?.media?.sha256;
  if (!sha) return null;
  const v = await download(sha, '', fetched);
  if (v.error) {
    fetched.delete(sha);
    A.notice(`The file could not be fetched from the ${A.serverName()} (${v.error}). Try again.`);
    renderSoon();
    return null;
  }
  return v.url;
}

export async function openFull(m) {
  const url = await fullUrl(m);
  if (url) showViewer(url, m);
}

export async function save(m) {
  const url = await fullUrl(m);
  if (!url) return;
  const a = document.createElement('a');
  a.href = url;
  a.download = m.body?.media?.name || 'document';
  document.body.append(a);
  a.click();
  a.remove();
}
