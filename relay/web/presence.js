// Who is typing and who is online. Owns `S.typing` and `S.presence`: what the server reports
// (typing and presence frames, as protocol.js hands them over), and the typing and presence
// frames this device sends. Neither is stored anywhere: both start over with each session.

const TYPING_SHOWN_MS = 8000; // a "typing" line fades when its stop never comes
const TYPING_EVERY_MS = 3000; // keystrokes resend `active` at most this often
const TYPING_IDLE_MS = 4000; // quiet this long ends typing

let S = null;
let send = null; // (frame) => whether the socket took it

export function initPresence(state, sendFrame) {
  S = state;
  send = sendFrame;
}

/** A new session or none: what the last one said no longer holds. */
export function clearPresence() {
  S.presence.clear();
  S.typing.clear();
}

/** The socket closed: who types is unknown; who is online is kept to show until the next welcome. */
export function clearTyping() {
  S.typing.clear();
}

/** Applies a `typing` or `presence` event from protocol.js. */
export function onEvent(ev, now) {
  if (ev.type === 'typing') {
    const m = S.typing.get(ev.room) ?? new Map();
    if (ev.active) m.set(ev.user, now + TYPING_SHOWN_MS);
    else m.delete(ev.user);
    S.typing.set(ev.room, m);
  } else if (ev.type === 'presence') {
    S.presence.set(ev.user, { status: ev.status, last_seen: ev.last_seen });
    if (ev.status === 'offline') for (const m of S.typing.values()) m.delete(ev.user);
  }
}

let typingSent = 0;
let typingStop = null;

/** A keystroke in the open room. */
export function onTyping() {
  const room = S.room;
  if (!room || !S.session?.welcomed) return;
  const now = Date.now();
  if (now - typingSent > TYPING_EVERY_MS) {
    send({ v: 1, type: 'typing', room, active: true });
    typingSent = now;
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => stopTyping(room), TYPING_IDLE_MS);
}

/** Sent, left the room, or quiet: others stop seeing "typing". */
export function stopTyping(room) {
  clearTimeout(typingStop);
  if (typingSent && room && S.session?.welcomed) send({ v: 1, type: 'typing', room, active: false });
  typingSent = 0;
}

/** The page was hidden or shown again. */
export function sendPresence(visible) {
  if (S.session?.welcomed) send({ v: 1, type: 'presence', status: visible ? 'online' : 'away' });
}
