// Calls on the page (docs/workflows.md, "Calls on the village network"): the Call button of
// a room and its chooser, the incoming-call dialog with its ringtone, the call itself (the
// other person's picture and sound, this phone's own preview, a timer, Mute, Camera off,
// Hang up), wired to call.js's state machine, which decides every frame and step. The
// media goes straight between the two phones (WebRTC, host candidates only: no STUN or TURN
// on a village LAN); the hub relays the `call` frames and stores none of them.
//
// For tests: the call region's `data-state` is the call's phase (`media`, `calling`,
// `ringing`, `connecting`, `connected`, `reconnecting`; `idle` with no call); `connected`
// only once the media flows: the peer connection is up and, in a video call, the other
// side's picture has frames (or, failing any, 8 s after the connection came up, so that a
// call whose picture never comes still shows its controls as connected).
// `window.__callRingMs`, when a test's init script sets it, is how long a caller rings
// instead of 30 s (RING_MS in call.js).

import { ringtone } from './alerts.js';
import { uuid7 } from './uuid.js';
import { $, el, presenceText } from './view.js';
import { CallMachine, MISSED, RING_MS, incomingTitle, mediaProblem, statusText, timerText } from './call.js';

let A = null; // what app.js shares: S, me, serverName, send(frame), composeBody, notice

/** In a video call whose peer connection is up, how long to wait for the first picture before showing the call as connected anyway. */
const PICTURE_WAIT_MS = 8000;

const ringMs = () => (Number.isFinite(window.__callRingMs) && window.__callRingMs > 0 ? window.__callRingMs : RING_MS);

const M = new CallMachine({ me: () => A.me(), where: () => A.serverName(), ringMs });

/**
 * What the page holds for the call on this device: { id, stream (ours), pc, remoteReady (a
 * promise settled once the other side's description is set: their candidates wait for it),
 * timer, stopRing, muted, cameraOff, upAt (when the peer connection came up), wake (the
 * screen's wake lock) }.
 */
let ctx = null;
let ticker = null;

export function initCalls(app) {
  A = app;
}

// ---------- the machine's outputs ----------

function apply(out) {
  for (const f of out.send) A.send(f);
  for (const e of out.effects) effect(e);
  draw();
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

function context(id) {
  if (!ctx || ctx.id !== id) {
    if (ctx) teardown();
    ctx = { id, stream: null, pc: null, remoteReady: deferred(), timer: null, stopRing: null, muted: false, cameraOff: false, upAt: null, wake: null };
  }
  return ctx;
}

function effect(e) {
  switch (e.type) {
    case 'end':
      teardown();
      return;
    case 'notice':
      A.notice(e.text, e.kind);
      return;
    case 'missed':
      // Through the outbox like any message: it waits on the phone if the hub is away.
      A.composeBody(e.room, e.body, { kind: MISSED });
      return;
    default:
      break;
  }
  const c = M.call;
  if (!c) return;
  const x = context(c.id);
  switch (e.type) {
    case 'media':
      getMedia(x, e.video);
      break;
    case 'timer':
      clearTimeout(x.timer);
      x.timer = setTimeout(() => apply(M.timeout(x.id)), e.ms);
      break;
    case 'ring':
      x.stopRing?.();
      x.stopRing = ringtone('call', { title: incomingTitle(c), body: `# ${c.room}`, tag: `call-${c.id}` });
      break;
    case 'silence':
      x.stopRing?.();
      x.stopRing = null;
      break;
    case 'offer':
      makeOffer(x);
      break;
    case 'answer':
      makeAnswer(x, e.sdp);
      break;
    case 'remote':
      x.pc?.setRemoteDescription({ type: 'answer', sdp: e.sdp }).then(
        () => x.remoteReady.resolve(),
        (err) => apply(M.failed(x.id, err?.message)),
      );
      break;
    case 'ice':
      // Candidates that come before the description they belong to wait for it.
      x.remoteReady.promise.then(() => x.pc?.addIceCandidate(e.candidate)).catch(() => {});
      break;
    default:
      break;
  }
}

function stopTracks(stream) {
  for (const t of stream?.getTracks() ?? []) t.stop();
}

/** The call is over: nothing of it stays running. */
function teardown() {
  const x = ctx;
  ctx = null;
  clearInterval(ticker);
  ticker = null;
  if (!x) return;
  clearTimeout(x.timer);
  x.stopRing?.();
  if (x.pc) {
    x.pc.onicecandidate = x.pc.ontrack = x.pc.onconnectionstatechange = null;
    try {
      x.pc.close();
    } catch {
      /* already closed */
    }
  }
  stopTracks(x.stream);
  for (const id of ['call-remote', 'call-local']) {
    const v = $(id);
    v.pause();
    v.srcObject = null;
  }
  $('call-sound').hidden = true;
  x.wake?.release().catch(() => {});
}

/** Keeps the screen on while the call lasts, where the browser allows it. */
async function stayAwake(x) {
  try {
    const lock = await navigator.wakeLock?.request('screen');
    if (lock && ctx !== x) lock.release().catch(() => {});
    else x.wake = lock ?? null;
  } catch {
    /* not allowed here (page hidden, insecure address): the screen may dim */
  }
}

// ---------- camera, microphone and the peer connection ----------

async function getMedia(x, video) {
  if (!navigator.mediaDevices?.getUserMedia) {
    apply(M.mediaFailed(x.id, mediaProblem(null, { video, secure: window.isSecureContext })));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } } : false });
  } catch (err) {
    apply(M.mediaFailed(x.id, mediaProblem(err?.name ?? 'Error', { video })));
    return;
  }
  const out = M.mediaReady(x.id);
  if (out.stale || ctx !== x) {
    stopTracks(stream); // hung up (or answered elsewhere) while the camera was starting
    return;
  }
  x.stream = stream;
  stayAwake(x);
  const local = $('call-local');
  local.srcObject = video ? stream : null;
  if (video) local.play().catch(() => {});
  apply(out);
}

function peer(x) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  x.pc = pc;
  for (const t of x.stream?.getTracks() ?? []) pc.addTrack(t, x.stream);
  pc.onicecandidate = (ev) => {
    if (ev.candidate && ev.candidate.candidate) apply(M.localIce(x.id, ev.candidate.toJSON()));
  };
  pc.ontrack = (ev) => {
    const v = $('call-remote');
    const stream = ev.streams[0] ?? new MediaStream([ev.track]);
    if (v.srcObject !== stream) {
      v.srcObject = stream;
      playRemote(v);
    }
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === 'connected') {
      x.upAt ??= Date.now();
      check();
    } else if (s === 'disconnected') apply(M.lost(x.id));
    else if (s === 'failed') apply(M.failed(x.id));
  };
  return pc;
}

/** The other side's sound and picture; a browser that wants a tap before sound plays it muted until then. */
function playRemote(v) {
  v.muted = false;
  v.play().catch(() => {
    v.muted = true;
    v.play().catch(() => {});
    $('call-sound').hidden = false;
  });
}

async function makeOffer(x) {
  try {
    const pc = peer(x);
    await pc.setLocalDescription(await pc.createOffer());
    apply(M.local(x.id, 'offer', pc.localDescription.sdp));
  } catch (err) {
    apply(M.failed(x.id, err?.message));
  }
}

async function makeAnswer(x, sdp) {
  try {
    const pc = peer(x);
    await pc.setRemoteDescription({ type: 'offer', sdp });
    x.remoteReady.resolve();
    await pc.setLocalDescription(await pc.createAnswer());
    apply(M.local(x.id, 'answer', pc.localDescription.sdp));
  } catch (err) {
    apply(M.failed(x.id, err?.message));
  }
}

/** Whether the media flows: the connection is up and, in a video call, the other side's picture has frames. */
function check() {
  const c = M.call;
  const x = ctx;
  if (!c || !x || x.id !== c.id || !x.pc || x.pc.connectionState !== 'connected') return;
  const pictured = !c.video || $('call-remote').videoWidth > 0 || Date.now() - (x.upAt ?? Date.now()) > PICTURE_WAIT_MS;
  if (pictured && (c.phase !== 'connected' || c.lost)) apply(M.connected(x.id, Date.now()));
}

// ---------- frames and actions ----------

/** A `call` frame from the server (protocol.js hands it over). */
export function onFrame(f) {
  apply(M.receive(f, Date.now()));
}

/** Calls `to` from `room`, by voice or video. */
export function place(room, to, video) {
  if (!A.S.session?.welcomed) {
    A.notice(`Calls go through the ${A.serverName()}, which is not connected now. Try again when it is.`);
    return;
  }
  apply(M.start({ id: uuid7(), room, to, video: !!video, now: Date.now() }));
}

/** Signing out, or another person signing in: the call ends. */
export function reset() {
  if (M.call) apply(M.hangup());
  teardown();
}

// ---------- drawing ----------

/** The people of the open room one may call: who wrote in it, and who is online. */
function callable(room) {
  const me = A.me();
  const who = new Set();
  for (const m of A.S.msgs.values()) if (m.room === room && m.from && m.from !== me) who.add(m.from);
  for (const [u] of A.S.presence) if (u !== me) who.add(u);
  const rank = (u) => ({ online: 0, away: 1 })[A.S.presence.get(u)?.status] ?? 2;
  return [...who].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function openChooser() {
  const room = A.S.room;
  if (!room) return;
  if (M.call) {
    A.notice('You are already in a call. Hang up first.');
    return;
  }
  $('call-dialog-title').textContent = `Call someone in # ${room}`;
  $('call-where').textContent = `Calls go straight between two phones, to people connected to the same ${A.serverName()} now.`;
  $('call-error').hidden = true;
  $('call-other').value = '';
  const people = callable(room);
  const choose = (u, video) => {
    $('call-dialog').close();
    place(room, u, video);
  };
  $('call-people').replaceChildren(
    ...people.map((u) =>
      el(
        'li',
        { class: 'call-person' },
        el('span', { class: 'call-name' }, u, ' ', el('span', { class: 'small muted' }, presenceText(A.S.presence.get(u)))),
        el('button', { type: 'button', 'aria-label': `Voice call ${u}`, onclick: () => choose(u, false) }, 'Voice'),
        el('button', { type: 'button', class: 'primary', 'aria-label': `Video call ${u}`, onclick: () => choose(u, true) }, 'Video'),
      ),
    ),
  );
  $('call-none').hidden = people.length > 0;
  $('call-dialog').showModal();
}

function callOther(video) {
  const room = A.S.room;
  const u = $('call-other').value.trim();
  const err = $('call-error');
  if (!u || u === A.me() || /\s/.test(u)) {
    err.textContent = u === A.me() ? 'That is you. Type the user id of someone else.' : 'Type the user id of the person to call.';
    err.hidden = false;
    return;
  }
  $('call-dialog').close();
  place(room, u, video);
}

export function draw() {
  if (!A) return;
  const c = M.call;
  $('call-btn').hidden = !A.S.room;
  const region = $('call');
  const shown = !!c && !(c.role === 'callee' && c.phase === 'incoming');
  region.hidden = !shown;
  document.body.classList.toggle('in-call', shown);
  if (shown) {
    const state = c.lost ? 'reconnecting' : c.phase;
    if (region.dataset.state !== state) region.dataset.state = state;
    region.dataset.kind = c.video ? 'video' : 'voice';
    const title = `Call with ${c.peer}`;
    if ($('call-title').textContent !== title) $('call-title').textContent = title;
    const status = statusText(c);
    if ($('call-status').textContent !== status) $('call-status').textContent = status;
    $('call-timer').textContent = timerText(c, Date.now());
    $('call-avatar').textContent = (c.peer[0] ?? '?').toUpperCase();
    const x = ctx;
    const mute = $('call-mute');
    mute.setAttribute('aria-pressed', x?.muted ? 'true' : 'false');
    mute.disabled = !x?.stream;
    const cam = $('call-camera');
    cam.hidden = !c.video;
    cam.setAttribute('aria-pressed', x?.cameraOff ? 'true' : 'false');
    cam.disabled = !x?.stream;
    $('call-local').hidden = !c.video || !!x?.cameraOff;
    // A second's tick for the timer, and to notice the first frames of the picture.
    ticker ??= setInterval(() => {
      check();
      draw();
    }, 1000);
  } else {
    region.dataset.state = 'idle';
    delete region.dataset.kind;
  }
  const d = $('incoming');
  if (c && c.role === 'callee' && c.phase === 'incoming') {
    const title = incomingTitle(c);
    if ($('incoming-title').textContent !== title) $('incoming-title').textContent = title;
    $('incoming-text').textContent = `# ${c.room}`;
    if (!d.open) d.showModal();
  } else if (d.open) d.close();
}

// ---------- controls ----------

function toggle(kind) {
  const x = ctx;
  if (!x?.stream) return;
  if (kind === 'audio') x.muted = !x.muted;
  else x.cameraOff = !x.cameraOff;
  const on = kind === 'audio' ? !x.muted : !x.cameraOff;
  for (const t of kind === 'audio' ? x.stream.getAudioTracks() : x.stream.getVideoTracks()) t.enabled = on;
  draw();
}

export function bindCalls() {
  $('call-btn').addEventListener('click', openChooser);
  $('call-cancel').addEventListener('click', () => $('call-dialog').close());
  $('call-other-voice').addEventListener('click', () => callOther(false));
  $('call-other-video').addEventListener('click', () => callOther(true));
  $('call-other').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      callOther(true);
    }
  });
  $('incoming-accept').addEventListener('click', () => apply(M.accept()));
  $('incoming-decline').addEventListener('click', () => apply(M.decline()));
  // Escape on the ringing dialog declines, as its Decline button does.
  $('incoming').addEventListener('cancel', (e) => {
    e.preventDefault();
    apply(M.decline());
  });
  $('call-hangup').addEventListener('click', () => apply(M.hangup()));
  $('call-mute').addEventListener('click', () => toggle('audio'));
  $('call-camera').addEventListener('click', () => toggle('video'));
  $('call-sound').addEventListener('click', () => {
    const v = $('call-remote');
    v.muted = false;
    v.play().catch(() => {});
    $('call-sound').hidden = true;
  });
  const remote = $('call-remote');
  for (const ev of ['loadeddata', 'resize', 'playing']) remote.addEventListener(ev, check);
  // Leaving the page ends the call for the other side at once, rather than after WebRTC notices.
  window.addEventListener('pagehide', () => {
    if (M.call) apply(M.hangup());
  });
}
