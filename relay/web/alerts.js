// Making an emergency impossible to miss: the banner (view.js), vibration and a ring. Which
// emergencies ring, and which were acknowledged, is protocol.js's rule; this is the noise.
// Browsers allow sound only after the page has had a touch or a key press, so the audio
// context is made on the first one.

import { renderAlerts } from './view.js';

let audio = null;

function unlockAudio() {
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

export function ring() {
  renderAlerts();
  try {
    navigator.vibrate?.([600, 200, 600, 200, 600]);
  } catch {
    /* not allowed without a gesture */
  }
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
