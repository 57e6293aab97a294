// Making an emergency impossible to miss: the banner (view.js), vibration, a ring and a
// system notification. Which emergencies ring, and which were acknowledged, is
// protocol.js's rule; this is the noise. Browsers allow sound only after the page has had
// a touch or a key press, so the audio context is made on the first one, and that first
// one also asks for permission to notify (a notification shows on a locked phone's screen
// and in its notification shade while the page is still open in the background; with the
// page closed, nothing can reach the phone without a push service: docs/web-client.md).
// The same sounds serve gentler news (chime) and an incoming call's ringtone (callpanel.js).

import { renderAlerts } from './view.js';

let audio = null;

function askToNotify() {
  try {
    if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission().catch(() => {});
  } catch {
    /* no notifications in this browser: banner, sound and vibration remain */
  }
}

function unlockAudio() {
  askToNotify();
  if (audio || !(window.AudioContext || window.webkitAudioContext)) return;
  try {
    audio = new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === 'suspended') audio.resume().catch(() => {});
  } catch {
    audio = null;
  }
}

export function bindAudio() {
  for (const ev of ['pointerdown', 'keydown']) window.addEventListener(ev, unlockAudio, { capture: true, passive: true });
}

/** A system notification, through the service worker where there is one. */
async function show(title, options) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  try {
    // Through the service worker where there is one: its notifications outlive the tab
    // being in the background, and a tap on one brings the app back (sw.js).
    const reg = await navigator.serviceWorker?.getRegistration();
    if (reg) await reg.showNotification(title, options);
    else new Notification(title, options);
  } catch {
    /* the banner, sound and vibration remain */
  }
}

async function closeNotification(tag) {
  try {
    const reg = await navigator.serviceWorker?.getRegistration();
    for (const n of (await reg?.getNotifications({ tag })) ?? []) n.close();
  } catch {
    /* nothing to close */
  }
}

/** A system notification for emergency `m` (one per message: its id is the tag). */
function notify(m) {
  if (!m) return;
  const text = typeof m.body?.text === 'string' ? m.body.text : 'Emergency';
  const title = `EMERGENCY: ${m.from ?? 'someone'} in ${m.room}`;
  show(title, { body: text, tag: `emergency-${m.id}`, renotify: true, requireInteraction: true, vibrate: [600, 200, 600, 200, 600], data: { room: m.room } });
}

/**
 * Plays `notes` on the audio context, if the page has one (made on the first touch):
 * each `[hz, at, fade, stop]` in seconds from now, rising in 20 ms to `gain` and fading out
 * by `fade`. Returns whether it could.
 */
function play(notes, { type = 'sine', gain = 0.2 } = {}) {
  if (!audio) return false;
  try {
    if (audio.state === 'suspended') audio.resume().catch(() => {});
    const t0 = audio.currentTime + 0.05;
    for (const [hz, at, fade, stop] of notes) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.type = type;
      o.frequency.value = hz;
      g.gain.setValueAtTime(0.0001, t0 + at);
      g.gain.exponentialRampToValueAtTime(gain, t0 + at + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + fade);
      o.connect(g).connect(audio.destination);
      o.start(t0 + at);
      o.stop(t0 + stop);
    }
    return true;
  } catch {
    return false;
  }
}

/** Rings for emergency message `m` (from the page's state; may be undefined). */
export function ring(m) {
  renderAlerts();
  try {
    navigator.vibrate?.([600, 200, 600, 200, 600]);
  } catch {
    /* not allowed without a gesture */
  }
  notify(m);
  // No sound without an audio context: the banner and vibration remain.
  play(
    [0, 1, 2].map((i) => [i % 2 ? 660 : 880, i * 0.5, i * 0.5 + 0.4, i * 0.5 + 0.45]),
    { type: 'square', gain: 0.3 },
  );
}

/**
 * A short, gentle tone for news that matters to this person but is no emergency (a doctor
 * confirmed or completed their booking): two soft notes and a brief buzz, once. `label`
 * says what it was for; the browser tests read it from `window.__tones` when they set one.
 */
export function chime(label = '') {
  try {
    navigator.vibrate?.(120);
  } catch {
    /* not allowed without a gesture */
  }
  // No sound without an audio context: the notice and the buzz remain.
  const sound = play([660, 990].map((hz, i) => [hz, i * 0.18, i * 0.18 + 0.16, i * 0.18 + 0.17]));
  if (Array.isArray(window.__tones)) window.__tones.push({ label, sound, at: Date.now() });
}

/** How often a ringtone repeats, ms. */
export const RINGTONE_EVERY_MS = 3000;

/**
 * The ringtone of an incoming call: a rising three-note phrase and a buzz, again every 3 s,
 * until the returned function is called (answered, declined, given up). `title` and `body`
 * also go to a system notification while the page is not in front (closed with the ring).
 * Each ring is recorded in `window.__tones` as `label` when the browser tests set one.
 */
export function ringtone(label = 'call', { title = '', body = '', tag = 'call' } = {}) {
  const once = () => {
    try {
      navigator.vibrate?.([400, 200, 400]);
    } catch {
      /* not allowed without a gesture */
    }
    const sound = play([523, 659, 784, 1047].map((hz, i) => [hz, i * 0.14, i * 0.14 + 0.3, i * 0.14 + 0.32]), { gain: 0.25 });
    if (Array.isArray(window.__tones)) window.__tones.push({ label, sound, at: Date.now() });
  };
  once();
  const timer = setInterval(once, RINGTONE_EVERY_MS);
  if (title && document.visibilityState !== 'visible') show(title, { body, tag, renotify: true, requireInteraction: true, vibrate: [400, 200, 400] });
  return () => {
    clearInterval(timer);
    try {
      navigator.vibrate?.(0);
    } catch {
      /* nothing to stop */
    }
    if (title) closeNotification(tag);
  };
}
