// Voice and video calls between two people on the same server (docs/protocol.md, `call`;
// docs/workflows.md, "Calls on the village network"), as a state machine with no page
// around it: no DOM, no WebRTC, no timers, no clock. It decides which `call` frame goes
// out on which event, and what the page must do: get the camera and microphone, ring,
// make the WebRTC offer or answer, add a candidate, leave a missed-call message, hang up.
// callpanel.js does the wiring (getUserMedia, RTCPeerConnection, the screens).
//
// Inputs are method calls: the person's actions (start, accept, decline, hangup), server
// `call` frames (receive), what the page got done (mediaReady, mediaFailed, local,
// localIce, connected, lost, failed) and the ring timer (timeout). Each returns
// `{ send, effects }`: frames for the socket, in order, and effects for the page, in order:
//
//   { type: 'media', video }             get the microphone (and the camera), then mediaReady/mediaFailed
//   { type: 'timer', ms }                call timeout(id) after `ms` unless the call ended
//   { type: 'ring' }                     ring: an incoming call is waiting for an answer here
//   { type: 'silence' }                  stop ringing
//   { type: 'offer' }                    caller: make the peer connection and its offer, then local('offer', sdp)
//   { type: 'answer', sdp }              callee: make the peer connection from the offer, answer, then local('answer', sdp)
//   { type: 'remote', sdp }              caller: the callee's answer
//   { type: 'ice', candidate }           a candidate of the other side
//   { type: 'missed', room, body }       leave a `call.missed` message in the room (the outbox: it is durable)
//   { type: 'notice', text, kind }       tell the person (kind 'info' or 'problem')
//   { type: 'end', reason }              the call is over: close the connection, stop the tracks and timers
//
// Methods that answer the page's own work take the call's id, so that the late result of
// an ended call (a camera that opens after a hang-up) is told apart: they then return
// `stale: true`, and the page drops what it got.

/** The kind of the message a caller leaves for a call that was not answered. */
export const MISSED = 'call.missed';

/** How long a caller rings before giving up (docs/workflows.md: 30 s). */
export const RING_MS = 30_000;

/**
 * How much longer a callee's device rings than that, at most: a caller whose phone went
 * away never sends its hang-up, and a ring must end by itself.
 */
export const RING_GRACE_MS = 5_000;

export const SIGNALS = ['invite', 'ringing', 'accept', 'decline', 'busy', 'hangup', 'offer', 'answer', 'ice', 'unavailable'];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Phases while the other side has not answered yet. */
const UNANSWERED = ['calling', 'ringing'];

const noun = (video) => (video ? 'video call' : 'voice call');

/** m:ss (h:mm:ss past an hour) of `ms`. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

/**
 * Why the camera or microphone could not be had, in words, from the error getUserMedia
 * threw (its `name`) or `null` when the page has no getUserMedia at all (`secure` says
 * whether the page is a secure context, where browsers allow it).
 */
export function mediaProblem(name, { video = false, secure = true } = {}) {
  const what = video ? 'camera and microphone' : 'microphone';
  if (name === null || name === undefined) {
    return secure ? `This browser cannot use the ${what}` : `The ${what} can only be used on a secure address: open the hub by its name (https://\u2026)`;
  }
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `Using the ${what} was not allowed. Allow it in the browser's site settings`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return video ? 'This device has no camera or microphone to use' : 'This device has no microphone to use';
    case 'NotReadableError':
    case 'AbortError':
      return `The ${what} is in use by another app`;
    default:
      return `The ${what} could not be started (${name})`;
  }
}

/** The body of the missed-call message a caller leaves (checked by the servers: `to` and `call` required). */
export function missedBody({ to, call, video }) {
  return { to, call, video: !!video, text: `Missed ${noun(video)} to ${to}` };
}

/** Whether `body` is a missed call the servers would accept (the card reads only such). */
export function isMissed(kind, body) {
  return kind === MISSED && !!body && typeof body === 'object' && typeof body.to === 'string' && body.to !== '' && typeof body.call === 'string' && UUID.test(body.call);
}

/**
 * A missed call as a card, from where `me` stands: the callee reads "Missed video call from
 * amina" and may call back; the caller reads that the callee did not answer, and may call
 * again; anyone else in the room, who called whom.
 * Returns `{ title, text, back }`: `back` is the person to call back, or null.
 */
export function missedCard(body, { from, me }) {
  const what = body.video ? 'Missed video call' : 'Missed voice call';
  if (body.to === me) return { title: `${what} from ${from ?? 'someone'}`, text: null, back: from && from !== me ? from : null, again: false };
  if (from === me) return { title: what, text: `${body.to} did not answer your call`, back: body.to, again: true };
  return { title: what, text: `${from ?? 'Someone'} called ${body.to}, who did not answer`, back: null, again: false };
}

/** The title of the incoming-call dialog. */
export function incomingTitle(call) {
  return `Incoming ${noun(call.video)} from ${call.peer}`;
}

/** The line under a call's title, by its phase (said to screen readers when it changes). */
export function statusText(call) {
  if (!call) return '';
  switch (call.phase) {
    case 'media':
      return call.video ? 'Starting the camera\u2026' : 'Starting the microphone\u2026';
    case 'calling':
      return `Calling ${call.peer}\u2026`;
    case 'ringing':
      return `Ringing ${call.peer}\u2026`;
    case 'incoming':
      return incomingTitle(call);
    case 'connecting':
      return 'Connecting\u2026';
    case 'connected':
      return call.lost ? 'Reconnecting\u2026' : 'Connected';
    default:
      return '';
  }
}

/** How long the call has been connected, m:ss; empty before. */
export function timerText(call, now) {
  return call?.phase === 'connected' && call.connectedAt != null ? duration(now - call.connectedAt) : '';
}

export class CallMachine {
  /**
   * `me()`: the signed-in user id; `where()`: "hub" or "server", as the screens name the
   * other end; `ringMs()`: how long a caller rings (RING_MS; the browser tests shorten it).
   */
  constructor({ me, where = () => 'hub', ringMs = () => RING_MS }) {
    this.me = me;
    this.where = where;
    this.ringMs = ringMs;
    /**
     * The call on this device, or null:
     * { id, room, peer, video, role: 'caller'|'callee', phase, device, startedAt, connectedAt, lost }
     * `device`: the other side's device once known (the caller's from its invite; the
     * callee's that accepted). `phase`: 'media' (getting the camera), 'calling' (invite
     * sent), 'ringing' (a device of the callee rings), 'incoming' (this device rings),
     * 'connecting' (accepted: offer, answer and candidates), 'connected' (media flows).
     */
    this.call = null;
  }

  #out() {
    return { send: [], effects: [] };
  }

  #frame(signal, extra = {}) {
    const c = this.call;
    return { v: 1, type: 'call', call: c.id, room: c.room, to: c.peer, signal, ...extra };
  }

  /** The frame to `device` of the other side, once known; to all of their devices before. */
  #toDevice(signal, extra = {}) {
    const c = this.call;
    return this.#frame(signal, c.device ? { device: c.device, ...extra } : extra);
  }

  #end(out, reason, { missed = false, notice = null, kind = 'info' } = {}) {
    const c = this.call;
    if (c.role === 'callee' && c.phase === 'incoming') out.effects.push({ type: 'silence' });
    if (missed && c.role === 'caller') out.effects.push({ type: 'missed', room: c.room, body: missedBody({ to: c.peer, call: c.id, video: c.video }) });
    if (notice) out.effects.push({ type: 'notice', text: notice, kind });
    out.effects.push({ type: 'end', reason });
    this.call = null;
    return out;
  }

  #current(id) {
    return !!this.call && this.call.id === id;
  }

  #stale() {
    return { ...this.#out(), stale: true };
  }

  // ---------- the person's actions ----------

  /** Places a call to `to` from `room`: the camera and microphone first, the invite once they are on. */
  start({ id, room, to, video = false, now }) {
    const out = this.#out();
    if (this.call) {
      out.effects.push({ type: 'notice', text: 'You are already in a call. Hang up first.', kind: 'problem' });
      return out;
    }
    if (!to || to === this.me()) {
      out.effects.push({ type: 'notice', text: 'Choose someone else to call.', kind: 'problem' });
      return out;
    }
    this.call = { id, room, peer: to, video: !!video, role: 'caller', phase: 'media', device: null, startedAt: now, connectedAt: null, lost: false };
    out.effects.push({ type: 'media', video: !!video });
    return out;
  }

  /** Answers the ringing call on this device: the camera and microphone first, `accept` once they are on. */
  accept() {
    const out = this.#out();
    const c = this.call;
    if (!c || c.role !== 'callee' || c.phase !== 'incoming') return out;
    c.phase = 'media';
    out.effects.push({ type: 'silence' }, { type: 'media', video: c.video });
    return out;
  }

  /** Refuses the ringing call; the caller leaves a missed call. */
  decline() {
    const out = this.#out();
    const c = this.call;
    if (!c || c.role !== 'callee' || !['incoming', 'media'].includes(c.phase)) return out;
    out.send.push(this.#toDevice('decline'));
    return this.#end(out, 'declined');
  }

  /** Hang up: before an answer the caller's call is missed; an incoming call is declined. */
  hangup() {
    const out = this.#out();
    const c = this.call;
    if (!c) return out;
    if (c.role === 'callee' && ['incoming', 'media'].includes(c.phase)) return this.decline();
    if (c.phase === 'media') return this.#end(out, 'cancelled'); // nothing was sent yet
    if (UNANSWERED.includes(c.phase)) {
      // To every device that rang.
      out.send.push(this.#frame('hangup'));
      return this.#end(out, 'cancelled', { missed: true });
    }
    out.send.push(this.#toDevice('hangup'));
    return this.#end(out, 'hangup');
  }

  /** The ring timer: the caller gives up; a callee's device that still rings stops. */
  timeout(id) {
    const out = this.#out();
    if (!this.#current(id)) return out;
    const c = this.call;
    if (c.role === 'caller' && UNANSWERED.includes(c.phase)) {
      out.send.push(this.#frame('hangup'));
      return this.#end(out, 'unanswered', { missed: true, notice: `No answer from ${c.peer}.` });
    }
    if (c.role === 'callee' && c.phase === 'incoming') return this.#end(out, 'unanswered');
    return out;
  }

  // ---------- what the page got done ----------

  /** The camera and microphone are on: the caller invites, the callee accepts. */
  mediaReady(id) {
    if (!this.#current(id) || this.call.phase !== 'media') return this.#stale();
    const out = this.#out();
    const c = this.call;
    if (c.role === 'caller') {
      c.phase = 'calling';
      out.send.push(this.#frame('invite', { video: c.video }));
      out.effects.push({ type: 'timer', ms: this.ringMs() });
    } else {
      c.phase = 'connecting';
      out.send.push(this.#toDevice('accept'));
    }
    return out;
  }

  /** No camera or microphone (`why`, from mediaProblem()): the call is not placed, or is declined. */
  mediaFailed(id, why) {
    if (!this.#current(id) || this.call.phase !== 'media') return this.#stale();
    const out = this.#out();
    const c = this.call;
    if (c.role === 'caller') return this.#end(out, 'media', { notice: `${why}. The call was not placed.`, kind: 'problem' });
    out.send.push(this.#toDevice('decline'));
    return this.#end(out, 'media', { notice: `${why}. The call was declined.`, kind: 'problem' });
  }

  /** This side's session description is ready: the caller's offer, the callee's answer. */
  local(id, kind, sdp) {
    if (!this.#current(id) || this.call.phase !== 'connecting') return this.#stale();
    const out = this.#out();
    const c = this.call;
    if ((kind === 'offer' && c.role === 'caller') || (kind === 'answer' && c.role === 'callee')) out.send.push(this.#toDevice(kind, { sdp }));
    return out;
  }

  /** A candidate of this side (RTCIceCandidate.toJSON()), for the other device. */
  localIce(id, candidate) {
    if (!this.#current(id) || !this.call.device) return this.#stale();
    const out = this.#out();
    if (candidate && typeof candidate === 'object') out.send.push(this.#toDevice('ice', { candidate }));
    return out;
  }

  /** The media flows (the connection is up, and for video the other side's picture shows). */
  connected(id, now) {
    if (!this.#current(id)) return this.#stale();
    const c = this.call;
    if (c.phase === 'connecting') {
      c.phase = 'connected';
      c.connectedAt = now;
    }
    c.lost = false;
    return this.#out();
  }

  /** The connection dropped for a moment (WebRTC `disconnected`): it may come back by itself. */
  lost(id) {
    if (!this.#current(id)) return this.#stale();
    if (this.call.phase === 'connected') this.call.lost = true;
    return this.#out();
  }

  /** The connection cannot go on (WebRTC `failed`, or the offer or answer could not be made). */
  failed(id, why = null) {
    if (!this.#current(id)) return this.#stale();
    const out = this.#out();
    const c = this.call;
    out.send.push(this.#toDevice('hangup'));
    const text = c.phase === 'connected' ? `The call with ${c.peer} was cut off.` : `The call with ${c.peer} could not be connected${why ? ` (${why})` : ''}.`;
    return this.#end(out, 'failed', { notice: text, kind: 'problem' });
  }

  // ---------- frames from the server ----------

  /** A server `call` frame. Frames of another call, or from elsewhere than expected, change nothing. */
  receive(f, now) {
    const out = this.#out();
    if (!f || f.type !== 'call' || typeof f.call !== 'string' || typeof f.room !== 'string' || typeof f.from !== 'string' || !SIGNALS.includes(f.signal)) return out;
    const me = this.me();
    const c = this.call;
    if (f.signal === 'invite') {
      if (f.from === me || (c && c.id === f.call)) return out;
      if (c) {
        // In another call (or ringing for one): busy, to the device that called; its caller leaves a missed call.
        const busy = { v: 1, type: 'call', call: f.call, room: f.room, to: f.from, signal: 'busy' };
        if (typeof f.from_device === 'string') busy.device = f.from_device;
        out.send.push(busy);
        return out;
      }
      this.call = {
        id: f.call,
        room: f.room,
        peer: f.from,
        video: f.video === true,
        role: 'callee',
        phase: 'incoming',
        device: typeof f.from_device === 'string' ? f.from_device : null,
        startedAt: now,
        connectedAt: null,
        lost: false,
      };
      out.send.push(this.#toDevice('ringing'));
      out.effects.push({ type: 'ring' }, { type: 'timer', ms: this.ringMs() + RING_GRACE_MS });
      return out;
    }
    if (!c || c.id !== f.call) return out;

    // This person's other device answered or declined: this one stops ringing.
    if (f.from === me) {
      if (c.role === 'callee' && ['incoming', 'media'].includes(c.phase)) {
        if (f.signal === 'accept') return this.#end(out, 'elsewhere', { notice: `The call from ${c.peer} was answered on another device.` });
        if (f.signal === 'decline') return this.#end(out, 'elsewhere');
      }
      return out;
    }
    if (f.from !== c.peer) return out;
    // Once a device is in the call, the other side's steps come from it alone.
    const fromPeerDevice = !c.device || f.from_device === c.device;

    if (c.role === 'caller') {
      switch (f.signal) {
        case 'ringing':
          if (c.phase === 'calling') c.phase = 'ringing';
          return out;
        case 'accept':
          if (UNANSWERED.includes(c.phase)) {
            c.device = typeof f.from_device === 'string' ? f.from_device : null;
            c.phase = 'connecting';
            out.effects.push({ type: 'offer' });
          } else if (typeof f.from_device === 'string' && f.from_device !== c.device) {
            // Accepted on two devices at once: the later one is told the call went on elsewhere.
            out.send.push(this.#frame('hangup', { device: f.from_device }));
          }
          return out;
        case 'decline':
          if (!UNANSWERED.includes(c.phase)) return out;
          return this.#end(out, 'declined', { missed: true, notice: `${c.peer} declined the call.` });
        case 'busy':
          if (!UNANSWERED.includes(c.phase)) return out;
          // The callee's other devices may still ring: they stop.
          out.send.push(this.#frame('hangup'));
          return this.#end(out, 'busy', { missed: true, notice: `${c.peer} is in another call.` });
        case 'unavailable':
          if (!UNANSWERED.includes(c.phase)) return out;
          return this.#end(out, 'unavailable', { missed: true, notice: `${c.peer} is not connected to this ${this.where()}.` });
        case 'answer':
          if (c.phase === 'connecting' && fromPeerDevice && typeof f.sdp === 'string') out.effects.push({ type: 'remote', sdp: f.sdp });
          return out;
        case 'ice':
          if (c.device && fromPeerDevice && f.candidate && typeof f.candidate === 'object') out.effects.push({ type: 'ice', candidate: f.candidate });
          return out;
        case 'hangup':
          if (!c.device || !fromPeerDevice) return out;
          return this.#end(out, 'remote', { notice: this.#endedText(c, now) });
        default:
          return out;
      }
    }

    // The callee's side: the caller's device is known from the invite.
    if (!fromPeerDevice) return out;
    switch (f.signal) {
      case 'offer':
        if (c.phase === 'connecting' && typeof f.sdp === 'string') out.effects.push({ type: 'answer', sdp: f.sdp });
        return out;
      case 'ice':
        if (['connecting', 'connected'].includes(c.phase) && f.candidate && typeof f.candidate === 'object') out.effects.push({ type: 'ice', candidate: f.candidate });
        return out;
      case 'hangup':
        // Before an answer: the caller gave up (their missed-call message follows).
        if (['incoming', 'media'].includes(c.phase)) return this.#end(out, 'missed');
        return this.#end(out, 'remote', { notice: this.#endedText(c, now) });
      default:
        return out;
    }
  }

  #endedText(c, now) {
    return c.connectedAt ? `${c.peer} hung up \u00B7 ${duration(now - c.connectedAt)}` : `${c.peer} hung up.`;
  }
}
