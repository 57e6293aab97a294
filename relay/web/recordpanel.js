// The Record panel of a room (docs/workflows.md, "A shared patient record"): a patient's
// problem list, allergies and care-plan checklist, as the server that served the page (hub
// or cloud) merges them from the room's `record.edit` messages. The merge is never worked
// out here: the panel reads GET /api/rooms/{room}/records/{patient} when it opens a patient
// and again whenever an edit of the room arrives or one of ours is stored, so every device
// shows the same record, conflicts included. Edits are ordinary messages: they go through
// the outbox like any other, so an edit made with the hub down waits on the phone, shown
// as waiting to send over the last record read, which the device keeps for such times.

import { write } from './db.js';
import { auth } from './media.js';
import { Kept, readJson, readable, refusal, serial } from './derived.js';
import { $, clock, el } from './view.js';
import * as R from './record.js';

let A = null; // what app.js shares: S, me, role, composeBody, notice, isEncrypted, serverName, opener

export function initRecord(app) {
  A = app;
}

let open = false; // the panel is shown (for whichever room is open)
const current = new Map(); // room -> the patient whose record the panel shows there
const kept = new Kept('records', { normalize: R.normalize, max: 100 }); // [room, patient] -> { data, at }, kept on the device
const status = new Map(); // [room, patient] -> { state: 'loading'|'ok'|'offline'|'refused', text }
const once = serial(); // one read at a time per record, and one more when due meanwhile
let historyOpen = false; // the History disclosure, kept open across redraws

const keyOf = (room, patient) => JSON.stringify([room, patient]);

/** What the device kept of earlier reads (db.js kv `records`). */
export function loadRecords(kv) {
  kept.load(kv);
}

/** Another person (or none) on this device: none of the records read for the last one stay. */
export function forgetRecords(ops) {
  kept.forget(ops);
  status.clear();
  current.clear();
  open = false;
}

const save = () => write(A.S.db, [kept.op()]).catch(() => {});

// ---------- reading a record ----------

/** Reads the record of `patient` in `room` now; while a read is on its way, one more follows it. */
export async function refresh(room = A.S.room, patient = current.get(room)) {
  if (!room || !patient || !A.S.token) return;
  await once(keyOf(room, patient), async () => {
    await readOnce(room, patient);
    draw();
  });
}

async function readOnce(room, patient) {
  const key = keyOf(room, patient);
  if (status.get(key)?.state !== 'ok') status.set(key, { state: 'loading' });
  draw();
  const got = await readJson(`/api/rooms/${encodeURIComponent(room)}/records/${encodeURIComponent(patient)}`, { headers: auth });
  if (got.state === 'ok') {
    kept.set(key, R.normalize(got.data));
    status.set(key, { state: 'ok' });
    save();
  } else if (got.state === 'offline') {
    // Not reachable: what was read last stays on screen, marked as such.
    status.set(key, { state: 'offline' });
  } else if (got.state === 'unreadable') {
    status.set(key, { state: 'refused', text: `The ${A.serverName()} sent a record this app cannot read.` });
  } else {
    status.set(key, { state: 'refused', text: refusal(got.status, got.why, { noun: 'records', what: 'the record', where: A.serverName() }) });
  }
}

/**
 * Called for each frame before it is applied: the room and patient of a record edit that
 * arrives, or of one of ours the server stored or refused (patient null when sealed).
 */
export function watch(f) {
  if (f?.type === 'message' && f.msg && R.isRecord(f.msg.kind)) return { room: f.msg.room, patient: typeof f.msg.body?.patient === 'string' ? f.msg.body.patient : null };
  if (f?.type === 'stored' || f?.type === 'error') {
    const rec = A.S.msgs.get(f.id);
    if (rec && R.isRecord(rec.kind)) return { room: rec.room, patient: readable(A.opener, rec)?.patient ?? null };
  }
  return null;
}

/** Record frames of a committed batch: the record on screen is read again if they may concern it. */
export function arrived(list) {
  const room = A.S.room;
  const patient = current.get(room);
  if (open && room && patient && list.some((x) => x.room === room && (x.patient === null || x.patient === patient))) refresh(room, patient);
  draw();
}

/** The connection is (back) up: what was read offline may be stale. */
export function sessionStarted() {
  if (open && A.S.room) refresh(A.S.room);
}

export function roomChanged() {
  if (open && A.S.room) refresh(A.S.room);
  draw();
}

/** Opens the panel on the record of `patient` in the open room (the Open button, a patient on a card). */
export function openRecord(patient) {
  const room = A.S.room;
  if (!room || !R.isPatient(patient)) return;
  open = true;
  current.set(room, patient);
  $('record-patient').value = patient;
  $('record-open-error').hidden = true;
  draw();
  refresh(room, patient);
  $('record-panel').scrollIntoView({ block: 'nearest' });
}

// ---------- drawing ----------

/** The room's edits of `patient` held on this device (own unsent ones included), for record.js shown(). */
function localEdits(room, patient) {
  const out = [];
  for (const m of A.S.msgs.values()) {
    if (m.room !== room || !R.isRecord(m.kind) || m.local === 'failed') continue;
    const body = readable(A.opener, m);
    if (body?.patient !== patient) continue;
    out.push({ id: m.id, body, from: m.from ?? null, created: m.created ?? m.at ?? null, pending: A.S.outbox.has(m.id) });
  }
  return out;
}

let drawnKey = null;
let drawnPatient = null;

/** Draws the panel when what it shows changed (never while the same, so that focus stays put). */
export function draw() {
  if (!A) return;
  const room = A.S.room;
  const btn = $('record-toggle');
  btn.hidden = !room;
  btn.setAttribute('aria-expanded', open && room ? 'true' : 'false');
  const panel = $('record-panel');
  panel.hidden = !open || !room;
  if (panel.hidden) {
    drawnKey = null;
    return;
  }
  const patient = current.get(room) ?? null;
  const key = patient ? keyOf(room, patient) : null;
  const held = key ? kept.get(key) : null;
  const st = key ? (status.get(key) ?? { state: 'loading' }) : null;
  const local = patient ? localEdits(room, patient) : [];
  const drawn = JSON.stringify([room, patient, A.me(), A.role(), held, st, local, A.isEncrypted(room), historyOpen]);
  if (drawn === drawnKey) return;
  drawnKey = drawn;

  $('record-title').textContent = patient ? `Record of ${patient}` : 'Patient record';
  // The id field names the record shown (another room's, once the room changes), unless it is being typed in.
  const input = $('record-patient');
  if (patient !== drawnPatient && document.activeElement !== input) input.value = patient ?? '';
  drawnPatient = patient;
  $('record-refresh').hidden = !patient;
  const line = $('record-status');
  line.textContent = patient ? statusLine(room, held, st) : 'Type a patient id (never a name) and press Open.';
  line.dataset.state = st?.state ?? 'none';
  if (!patient || (!held && st.state === 'loading')) {
    $('record-body').replaceChildren();
    return;
  }
  const view = R.shown(held?.data ?? null, local);
  const ctx = { room, patient };
  $('record-body').replaceChildren(
    ...R.TEXT_FIELDS.map((name) => textField(view.fields.get(name) ?? empty(name), ctx)),
    carePlan(view.tasks, ctx),
    history(view.history),
  );
}

const empty = (field) => ({ field, value: null, by: null, role: null, at: null, doctors: false, conflict: [], base: [], versions: 0, pending: false, known: false });

function statusLine(room, held, st) {
  const when = held?.at ? clock(held.at) : null;
  const where = A.serverName();
  const enc = A.isEncrypted(room) ? ' This room is end-to-end encrypted: the servers cannot read its edits, so they cannot show its records.' : '';
  switch (st.state) {
    case 'ok':
      return `Updated ${when}.${enc}`;
    case 'offline':
      return `${held ? `Offline: the record as it was at ${when}.` : 'Offline: this record has not been read on this device yet.'} Edits made here wait on this device and go when the ${where} is back.${enc}`;
    case 'refused':
      return `${st.text}${held ? ` Showing the record as it was at ${when}.` : ''}`;
    default:
      return held ? `Updating\u2026 (as of ${when})` : 'Loading the record\u2026';
  }
}

/** "you", or a person with their role when it is not a worker's. */
function who(by, role) {
  if (!by) return '?';
  const name = by === A.me() ? 'you' : by;
  return role && role !== 'worker' ? `${name} (${role})` : name;
}

/** "changed by amina 10:32 · 3 versions" */
function metaLine(f) {
  const parts = [];
  if (f.by) parts.push(`${f.value === null ? (R.isTask(f.field) ? 'removed' : 'cleared') : 'changed'} by ${who(f.by, f.role)}${f.at ? ` ${clock(f.at)}` : ''}`);
  if (f.versions > 1) parts.push(`${f.versions} versions`);
  return parts.length ? el('p', { class: 'rec-meta small muted' }, parts.join(' \u00B7 ')) : null;
}

const pendingLine = (f) => (f.pending ? el('p', { class: 'rec-pending small' }, el('span', { 'aria-hidden': 'true' }, '\u25F7 '), 'waiting to send') : null);
const badge = (f) => (f.doctors ? el('span', { class: 'rec-badge', title: 'A doctor\u2019s value here is not replaced by an edit made without seeing it' }, 'doctor\u2019s field') : null);
const stateOf = (f) => (f.conflict.length ? 'conflict' : f.pending ? 'pending' : 'ok');

function textField(f, ctx) {
  const name = R.label(f.field);
  return el(
    'section',
    { class: `rec-field${f.pending ? ' pending' : ''}${f.conflict.length ? ' conflict' : ''}`, 'aria-label': name, 'data-field': f.field, 'data-state': stateOf(f) },
    el(
      'div',
      { class: 'rec-head' },
      el('h4', {}, name),
      badge(f),
      el('button', { type: 'button', class: 'rec-edit', 'aria-label': `Edit ${name.toLowerCase()}`, onclick: () => askText(f, ctx, false) }, 'Edit'),
    ),
    f.value === null ? el('p', { class: 'rec-value muted' }, f.by ? 'None (cleared)' : 'None recorded') : el('p', { class: 'rec-value' }, String(f.value)),
    metaLine(f),
    pendingLine(f),
    conflictBlock(f, ctx),
  );
}

function carePlan(tasks, ctx) {
  const list = el('ul', { class: 'rec-tasks' }, ...tasks.map((f) => taskItem(f, ctx)));
  return el(
    'section',
    { class: 'rec-field rec-plan', 'aria-label': 'Care plan', 'data-field': 'care_plan' },
    el('div', { class: 'rec-head' }, el('h4', {}, 'Care plan')),
    tasks.length ? list : el('p', { class: 'muted small' }, 'No tasks yet.'),
    el('button', { type: 'button', class: 'rec-add', onclick: () => askTask(null, ctx, false) }, 'Add task'),
  );
}

function taskItem(f, ctx) {
  const v = f.value && typeof f.value === 'object' ? f.value : null;
  const task = v?.task ?? f.conflict.map((c) => c.value?.task).find(Boolean) ?? '(removed task)';
  const box = el('input', { type: 'checkbox', checked: v?.done === true, disabled: !v });
  box.addEventListener('change', () => send(ctx, f.field, { task: v.task, done: box.checked }, f.base));
  return el(
    'li',
    { class: `rec-task${f.pending ? ' pending' : ''}${f.conflict.length ? ' conflict' : ''}${v ? '' : ' removed'}`, 'data-field': f.field, 'data-done': v?.done === true ? 'true' : 'false', 'data-state': stateOf(f) },
    el('div', { class: 'rec-task-line' }, el('label', { class: 'rec-check' }, box, el('span', { class: 'rec-task-text' }, task)), badge(f)),
    metaLine(f),
    pendingLine(f),
    conflictBlock(f, ctx),
    v
      ? el(
          'div',
          { class: 'row rec-task-actions' },
          el('button', { type: 'button', class: 'quiet small', 'aria-label': `Edit task ${task}`, onclick: () => askTask(f, ctx, false) }, 'Edit'),
          el('button', { type: 'button', class: 'quiet small', 'aria-label': `Remove ${task}`, onclick: () => send(ctx, f.field, null, f.base) }, 'Remove'),
        )
      : null,
  );
}

/** Every candidate of a conflicted field side by side, each with "Keep this", and "Write a merged value". */
function conflictBlock(f, ctx) {
  if (!f.conflict.length) return null;
  const name = R.label(f.field);
  const lower = R.isTask(f.field) ? 'this task' : name.toLowerCase();
  return el(
    'div',
    { class: 'rec-conflict', role: 'group', 'aria-label': `Conflict in ${lower}` },
    el(
      'p',
      { class: 'rec-conflict-head small' },
      el('strong', { class: 'rec-conflict-tag' }, 'Conflict'),
      ` ${f.conflict.length} values were written at the same time, each without seeing the other${f.conflict.length > 2 ? 's' : ''}. Keep one, or write a merged value.`,
    ),
    el(
      'ul',
      { class: 'rec-candidates' },
      ...f.conflict.map((c) =>
        el(
          'li',
          { class: 'rec-candidate', 'data-version': c.version, 'data-by': c.by },
          el('p', { class: 'rec-cand-value' }, R.valueText(f.field, c.value)),
          el('p', { class: 'small muted' }, `${who(c.by, c.role)}${c.at ? ` \u00B7 ${clock(c.at)}` : ''}`),
          el('button', { type: 'button', 'aria-label': `Keep this: ${R.valueText(f.field, c.value)} (${c.by ?? '?'})`, onclick: () => send(ctx, f.field, c.value, f.base) }, 'Keep this'),
        ),
      ),
    ),
    el(
      'button',
      { type: 'button', class: 'rec-merge', 'aria-label': `Write a merged value of ${lower}`, onclick: () => (R.isTask(f.field) ? askTask(f, ctx, true) : askText(f, ctx, true)) },
      'Write a merged value',
    ),
  );
}

function history(list) {
  const d = el(
    'details',
    { class: 'rec-history', open: historyOpen },
    el('summary', {}, `History (${list.length})`),
    list.length
      ? el(
          'ol',
          { class: 'rec-history-list' },
          ...list.map((h) =>
            el(
              'li',
              { class: `small${h.pending ? ' pending' : ''}`, 'data-field': h.field, 'data-version': h.version },
              el('span', { class: 'muted' }, `${h.at ? clock(h.at) : ''} ${who(h.by, h.role)}: `),
              `${R.label(h.field)} \u2014 ${R.valueText(h.field, h.value)}`,
              h.pending ? el('span', { class: 'rec-pending' }, ' \u00B7 waiting to send') : null,
            ),
          ),
        )
      : el('p', { class: 'muted small' }, 'No edits yet.'),
  );
  d.addEventListener('toggle', () => {
    historyOpen = d.open;
  });
  return d;
}

// ---------- editing ----------

/** Sends the edit setting `field` to `value` on top of `base`, through the outbox. */
async function send({ room, patient }, field, value, base) {
  if (!room) return false;
  const made = R.buildEdit({ patient, field, value, base, role: A.role() });
  if (!made.body) {
    A.notice(`Not sent: ${made.field} ${made.problem}.`);
    draw();
    return false;
  }
  const ok = await A.composeBody(room, made.body, { kind: R.EDIT });
  draw();
  // Shown as waiting at once; read again so that, reachable, it takes its place.
  refresh(room, patient);
  return ok;
}

let editing = null; // { ctx, field, base, task } of the dialog

function showDialog({ title, text, task }) {
  $('rec-dialog-title').textContent = title;
  $('rec-dialog-text').textContent = text;
  $('rec-dialog-text').hidden = !text;
  $('rec-text-field').hidden = task;
  $('rec-task-field').hidden = !task;
  $('rec-error').hidden = true;
  $('rec-dialog').showModal();
  (task ? $('rec-task') : $('rec-value')).focus();
}

const candidates = (f) => f.conflict.map((c) => `\u201C${R.valueText(f.field, c.value)}\u201D (${who(c.by, c.role)}${c.at ? ` ${clock(c.at)}` : ''})`).join(', ');

/** The dialog of a text field: its new value, or a merge of its conflicting values. */
function askText(f, { room, patient }, merge) {
  const name = R.label(f.field);
  editing = { ctx: { room, patient }, field: f.field, base: f.base, task: false };
  $('rec-value-label').textContent = name;
  $('rec-value').value = typeof f.value === 'string' ? f.value : '';
  const notes = [];
  if (merge) notes.push(`Written at the same time: ${candidates(f)}. What you save replaces them all.`);
  else notes.push('Leave it empty to clear it.');
  if (f.doctors) notes.push('This is the doctor\u2019s field: a doctor\u2019s value is not replaced by an edit made without seeing it.');
  showDialog({ title: `${merge ? 'Merge ' : ''}${merge ? name.toLowerCase() : name} of ${patient}`, text: notes.join(' '), task: false });
}

/** The dialog of a care-plan item: a new task, a task's words, or a merge of its conflicting versions. */
function askTask(f, { room, patient }, merge) {
  const v = f?.value && typeof f.value === 'object' ? f.value : (f?.conflict.map((c) => c.value).find((x) => x && typeof x === 'object') ?? null);
  editing = { ctx: { room, patient }, field: f?.field ?? null, base: f?.base ?? [], task: true };
  $('rec-task').value = v?.task ?? '';
  $('rec-done').checked = v?.done === true;
  const title = !f ? `Add a care-plan task for ${patient}` : merge ? `Merge a care-plan task of ${patient}` : `Care-plan task of ${patient}`;
  showDialog({ title, text: merge ? `Written at the same time: ${candidates(f)}. What you save replaces them all.` : '', task: true });
}

function bindDialog() {
  const dialog = $('rec-dialog');
  $('rec-cancel').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    editing = null;
  });
  $('rec-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!editing) return;
    const { ctx, base, task } = editing;
    const err = $('rec-error');
    let field = editing.field;
    let value;
    if (task) {
      const words = $('rec-task').value.trim();
      if (!words) {
        err.textContent = 'Write the task.';
        err.hidden = false;
        return;
      }
      field ??= R.taskKey(words);
      value = { task: words, done: $('rec-done').checked };
    } else value = $('rec-value').value;
    const made = R.buildEdit({ patient: ctx.patient, field, value, base, role: A.role() });
    if (!made.body) {
      err.textContent = `${made.field === 'value' || made.field === 'value.task' ? (task ? 'The task' : R.label(field)) : made.field} ${made.problem}.`;
      err.hidden = false;
      return;
    }
    dialog.close();
    await A.composeBody(ctx.room, made.body, { kind: R.EDIT });
    draw();
    refresh(ctx.room, ctx.patient);
  });
}

export function bindRecord() {
  $('record-toggle').addEventListener('click', () => {
    open = !open;
    draw();
    if (open) {
      refresh();
      if (!current.get(A.S.room)) $('record-patient').focus();
    }
  });
  $('record-refresh').addEventListener('click', () => refresh());
  $('record-open').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('record-patient').value.trim();
    const err = $('record-open-error');
    if (!R.isPatient(id)) {
      err.textContent = `Patient id ${R.PATIENT_RULE}.`;
      err.hidden = false;
      return;
    }
    openRecord(id);
  });
  bindDialog();
}
