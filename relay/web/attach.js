// Attaching from the composer: a photo or document picked, or a voice note recorded with the
// microphone (or the phone's own recorder app where the page may not use it). What is
// attached goes to media.js, which keeps and uploads it.

import { attach } from './media.js';
import { $, bindViewer } from './view.js';

const MAX_RECORD_SECS = 600;

let A = null; // what app.js shares: S, render, notice, isEncrypted, stopTyping

export function initAttach(app) {
  A = app;
}

let rec = null; // { recorder, stream, chunks, room, started, timer, keep }

export const recording = () => (rec ? { secs: Math.floor((Date.now() - rec.started) / 1000) } : null);

function takeCaption() {
  const input = $('message');
  const text = input.value.trim();
  input.value = '';
  A.stopTyping(A.S.room);
  return text;
}

function attachPicked(input) {
  const file = input.files?.[0];
  input.value = ''; // the same file may be picked again
  const room = A.S.room;
  if (!file || !room) return;
  if (A.isEncrypted(room)) return;
  attach(file, { room, name: file.name || `file-${stamp()}`, caption: takeCaption() });
}

const stamp = () => new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');

function audioExt(type) {
  if (type.includes('ogg')) return 'ogg';
  if (type.includes('mp4') || type.includes('aac')) return 'm4a';
  return 'webm';
}

async function toggleRecording() {
  if (rec) {
    stopRecording(true);
    return;
  }
  const room = A.S.room;
  if (!room || A.isEncrypted(room)) return;
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    // Plain http:// (a hub on the LAN) has no microphone API: the phone's own recorder
    // can still make the file.
    $('attach-audio').click();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    A.notice(`The microphone cannot be used (${e.message}).`);
    return;
  }
  // Opus in WebM where the browser records it (Chromium, Firefox); otherwise its default (Safari: MP4).
  const want = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus'].find((t) => MediaRecorder.isTypeSupported?.(t));
  let recorder;
  try {
    recorder = new MediaRecorder(stream, want ? { mimeType: want } : undefined);
  } catch (e) {
    for (const t of stream.getTracks()) t.stop();
    A.notice(`This browser cannot record (${e.message}).`);
    return;
  }
  const r = { recorder, stream, chunks: [], room, started: Date.now(), timer: null, keep: true };
  recorder.ondataavailable = (e) => {
    if (e.data?.size) r.chunks.push(e.data);
  };
  recorder.onstop = () => {
    for (const t of stream.getTracks()) t.stop();
    if (!r.keep) return;
    const type = (recorder.mimeType || want || 'audio/webm').split(';')[0];
    const blob = new Blob(r.chunks, { type });
    if (!blob.size) {
      A.notice('Nothing was recorded.');
      return;
    }
    attach(blob, { room: r.room, name: `voice-${stamp()}.${audioExt(type)}`, caption: A.S.room === r.room ? takeCaption() : '' });
  };
  recorder.start();
  r.timer = setInterval(() => {
    if (recording()?.secs >= MAX_RECORD_SECS) stopRecording(true);
    else A.render();
  }, 1000);
  rec = r;
  A.render();
}

export function stopRecording(keep) {
  const r = rec;
  if (!r) return;
  rec = null;
  clearInterval(r.timer);
  r.keep = keep;
  try {
    r.recorder.stop();
  } catch {
    for (const t of r.stream.getTracks()) t.stop();
  }
  A.render();
}

export function bindComposer() {
  bindViewer();
  $('attach-btn').addEventListener('click', () => $('attach').click());
  $('attach').addEventListener('change', (e) => attachPicked(e.target));
  $('attach-audio').addEventListener('change', (e) => attachPicked(e.target));
  $('record').addEventListener('click', toggleRecording);
  $('record-cancel').addEventListener('click', () => stopRecording(false));
}
