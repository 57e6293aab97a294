// Making an emergency impossible to miss: the banner (view.js), vibration, a ring and a
// system notification. Which emergencies ring, and which were acknowledged, is
// protocol.js's rule; this is the noise. Browsers allow sound only after the page has had
// a touch or a key press, so the audio context is made on the first one, and that first
// one also asks for permission to notify (a notification shows on a locked phone's screen
// and in its notification shade while the page is still open in the background; with the
// page closed, nothing can reach the phone without a push service: docs/web-client.md).

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

/** A system notification for emergency `m` (one per message: its id is the tag). */
async function notify(m) {
  if (!m || !('Notification' in window) || Notification.permission !== 'granted') return;
  const text = typeof m.body?.text === 'string' ? m.body.text : 'Emergency';
  const title = `EMERGENCY: ${m.from ?? 'someone'} in ${m.room}`;
  const options = { body: text, tag: `emergency-${m.id}`, renotify: true, requireInteraction: true, vibrate: [600, 200, 600, 200, 600], data: { room: m.room } };
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

/** Rings for emergency message `m` (from the page's state; may be undefined). */
export function ring(m) {
  renderAlerts();
  try {
    navigator.vibrate?.([600, 200, 600, 200, 600]);
  } catch {
    /* not allowed without a gesture */
  }
  notify(m);
  if (!audio) return;
  try {
    const t0 = audio.currentTime + 0.05;
    for (let i = 0; i < 3; i++) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.type = 'square';
      o.frequency.value = i % 2 ? 660 : 880;
      g.gain.setValueAtTime(0.0001, t0 + i * 0.5);
      g.gain.exponentialRampToValueAtTime(0.3, t0 + i * 0.5 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.5 + 0.4);
      o.connect(g).connect(audio.destination);
      o.start(t0 + i * 0.5);
      o.stop(t0 + i * 0.5 + 0.45);
    }
  } catch {
    /* no sound: the banner and vibration remain */
  }
}

/**
 * A short, gentle tone for news that matters to this person but is no emergency (a doctor
 * confirmed or completed their booking): two soft notes and a brief buzz, once. `label`
 * says what it was for; the browser tests read it from `window.__tones` when they set one.
 */
export function chime(label = '') {
  let sound = false;
  try {
    navigator.vibrate?.(120);
  } catch {
    /* not allowed without a gesture */
  }
  if (audio) {
    try {
      if (audio.state === 'suspended') audio.resume().catch(() => {});
      const t0 = audio.currentTime + 0.05;
      [660, 990].forEach((hz, i) => {
        const o = audio.createOscillator();
        const g = audio.createGain();
        o.type = 'sine';
        o.frequency.value = hz;
        g.gain.setValueAtTime(0.0001, t0 + i * 0.18);
        g.gain.exponentialRampToValueAtTime(0.2, t0 + i * 0.18 + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.18 + 0.16);
        o.connect(g).connect(audio.destination);
        o.start(t0 + i * 0.18);
        o.stop(t0 + i * 0.18 + 0.17);
      });
      sound = true;
    } catch {
      /* no sound: the notice and the buzz remain */
    }
  }
  if (Array.isArray(window.__tones)) window.__tones.push({ label, sound, at: Date.now() });
}
