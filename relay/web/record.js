// A shared patient record (docs/workflows.md, "A shared patient record"): the bodies of
// `record.edit`, checked as the servers check them (shared/src/clinical.rs; a body sealed
// for an end-to-end encrypted room is checked by no one else), the words their cards use,
// and what the Record panel shows of a record read from the server together with the edits
// still on this device. Pure functions of plain values, like queue.js: recordpanel.js and
// view.js wire them to the page.
//
// The merge itself is the server's (shared/src/record.rs, GET
// /api/rooms/{room}/records/{patient}): every device shows what the server derived. This
// file only lays the device's own edits that the server has not seen yet over the last
// record read, so that they show as waiting to send and so that the next edit of a field
// names them in its `base` (an edit made on top of one's own unsent edit is not a conflict
// with it).

export const EDIT = 'record.edit';
export const isRecord = (kind) => kind === EDIT;

/** The text fields, in the order the panel shows them. */
export const TEXT_FIELDS = ['problems', 'allergies'];
/** A care-plan checklist item's field: `care_plan.<key>`. */
export const CARE_PLAN = 'care_plan.';
export const ROLES = ['worker', 'doctor', 'supervisor', 'admin'];
/** Most versions an edit may name in `base` (shared/src/record.rs MAX_BASE). */
export const MAX_BASE = 32;
/** Versions a read lists in `history` (HISTORY_SHOWN). */
export const HISTORY_SHOWN = 200;
const MAX_TEXT = 2000;
const MAX_TASK = 200;

const PATIENT = /^[A-Za-z0-9._:-]{1,64}$/;
const KEY = /^[a-z0-9_-]{1,32}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `id` is a patient id as the servers accept it: 1 to 64 letters, digits or `. _ - :`. */
export const isPatient = (id) => typeof id === 'string' && PATIENT.test(id);
export const PATIENT_RULE = 'must be a patient id (1 to 64 letters, digits or . _ - :), never a name';

/** Whether `field` is a care-plan checklist item. */
export const isTask = (field) => typeof field === 'string' && field.startsWith(CARE_PLAN);
/** Whether `field` is a field of a record: a text field, or `care_plan.<key>`. */
export const isField = (field) => TEXT_FIELDS.includes(field) || (isTask(field) && KEY.test(field.slice(CARE_PLAN.length)));

const FIELD_RULE = 'must be problems, allergies or care_plan.<key> (key: 1 to 32 of a-z, 0-9, - and _)';

/** The label a field is shown under. */
export const LABELS = { problems: 'Problem list', allergies: 'Allergies' };
export const label = (field) => LABELS[field] ?? (isTask(field) ? 'Care-plan task' : String(field));
/** The field in a sentence: "the allergies", "the problem list", "a care-plan task". */
const named = (field) => (field === 'problems' ? 'the problem list' : field === 'allergies' ? 'the allergies' : 'a care-plan task');

const chars = (s) => [...s].length;
const fail = (field, problem) => ({ field, problem });
const cut = (s, n) => (chars(s) > n ? `${[...s].slice(0, n - 1).join('').trimEnd()}\u2026` : s);
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim();

/** The server's checks of a `record.edit` body: null, or `{ field, problem }` for the first wrong field. */
export function checkEdit(b) {
  if (!b || typeof b !== 'object' || Array.isArray(b)) return fail('body', 'must be an object');
  for (const k of Object.keys(b)) if (!['patient', 'field', 'value', 'base', 'role', 'text', 'note'].includes(k)) return fail(k, 'is not a field of a record edit');
  for (const k of ['text', 'note']) {
    if (b[k] === undefined || b[k] === null) continue;
    if (typeof b[k] !== 'string' || !b[k].trim()) return fail(k, 'must not be empty');
    if (chars(b[k]) > MAX_TEXT) return fail(k, `is longer than ${MAX_TEXT} characters`);
  }
  if (!isPatient(b.patient)) return fail('patient', PATIENT_RULE);
  if (!ROLES.includes(b.role)) return fail('role', `must be one of ${ROLES.join(', ')}`);
  if (!isField(b.field)) return fail('field', FIELD_RULE);
  if (!('value' in b) || b.value === undefined) return fail('value', 'is required (null clears the field)');
  if (isTask(b.field)) {
    const v = b.value;
    if (v !== null) {
      if (typeof v !== 'object' || Array.isArray(v)) return fail('value', 'must be a task');
      for (const k of Object.keys(v)) if (!['task', 'done'].includes(k)) return fail(`value.${k}`, 'is not a field of a task');
      if (typeof v.task !== 'string' || !v.task.trim()) return fail('value.task', 'is required');
      if (chars(v.task) > MAX_TASK) return fail('value.task', `is longer than ${MAX_TASK} characters`);
      if (v.done !== undefined && v.done !== null && typeof v.done !== 'boolean') return fail('value.done', 'must be true or false');
    }
  } else if (b.value !== null) {
    if (typeof b.value !== 'string') return fail('value', 'must be text');
    if (!b.value.trim()) return fail('value', 'must not be empty');
    if (chars(b.value) > MAX_TEXT) return fail('value', `is longer than ${MAX_TEXT} characters`);
  }
  if (b.base !== undefined && b.base !== null) {
    if (!Array.isArray(b.base)) return fail('base', 'must be a list of version ids');
    if (b.base.length > MAX_BASE) return fail('base', `must name at most ${MAX_BASE} versions`);
    for (const [i, v] of b.base.entries()) if (typeof v !== 'string' || !UUID.test(v)) return fail(`base.${i}`, 'must be a version id (the message id of an edit)');
  }
  return null;
}

/**
 * The `record.edit` body that sets `field` of `patient` to `value` (as typed: a text, or
 * `{ task, done }`; empty text and null clear the field) on top of `base` (the versions the
 * author saw), written with `role` (the signed-in user's). Its `text` is the one line older
 * clients and the room list show. Returns `{ body }` or `{ field, problem }`.
 */
export function buildEdit({ patient, field, value, base = [], role }) {
  if (!isField(field)) return fail('field', FIELD_RULE);
  let v = value;
  if (isTask(field)) {
    if (v !== null && v !== undefined) {
      const task = typeof v.task === 'string' ? v.task.trim() : '';
      if (!task) return fail('value.task', 'is required');
      v = { task, done: v.done === true };
    } else v = null;
  } else {
    v = typeof v === 'string' ? v.trim() : v;
    if (v === '' || v === undefined) v = null;
  }
  const body = { patient: typeof patient === 'string' ? patient.trim() : patient, field, value: v, base: [...new Set(base)], role };
  body.text = cut(editLine(body), MAX_TEXT);
  return checkEdit(body) ?? { body };
}

/** The key of a new care-plan item, from its task: readable, and unlikely to be chosen by another device. */
export function taskKey(task, random = Math.random) {
  const slug = oneLine(task)
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 24)
    .replace(/-+$/, '');
  const tag = Array.from({ length: 5 }, () => 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(random() * 36)]).join('');
  return `${CARE_PLAN}${slug || 'task'}-${tag}`;
}

/** A task's words with its state: "recheck BP at 18:00 (done)". */
const taskWords = (v) => `${oneLine(v?.task ?? '?')}${v?.done === true ? ' (done)' : ''}`;

/** A value as one line of text: the words, a task with its state, or what a cleared field reads as. */
export function valueText(field, v) {
  if (v === null || v === undefined) return isTask(field) ? '(removed)' : '(cleared)';
  if (isTask(field)) return typeof v === 'object' ? taskWords(v) : String(v);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** The body's `text`: "Allergies of KJ-0042: penicillin, latex". */
export function editLine(b) {
  const of = `${label(b?.field)} of ${b?.patient ?? '?'}`;
  if (b?.value === null || b?.value === undefined) return `${of} ${isTask(b?.field) ? 'removed' : 'cleared'}`;
  return `${of}: ${cut(oneLine(valueText(b.field, b.value)), 200)}`;
}

/**
 * What an edit by `who` did, in one sentence: "amina changed the allergies of KJ-0042:
 * penicillin, latex", "dr-neema added a care-plan task for KJ-0042: recheck BP", "amina
 * marked a care-plan task of KJ-0042 done: recheck BP".
 */
export function editText(who, b, max = 200) {
  const p = b?.patient ?? '?';
  const v = b?.value;
  if (isTask(b?.field)) {
    if (v === null || v === undefined) return `${who} removed a care-plan task of ${p}`;
    const task = cut(oneLine(v?.task ?? '?'), max);
    if (!Array.isArray(b.base) || !b.base.length) return `${who} added a care-plan task for ${p}: ${task}${v?.done === true ? ' (done)' : ''}`;
    return v?.done === true ? `${who} marked a care-plan task of ${p} done: ${task}` : `${who} changed a care-plan task of ${p}: ${task} (not done)`;
  }
  if (v === null || v === undefined) return `${who} cleared ${named(b?.field)} of ${p}`;
  return `${who} changed ${named(b?.field)} of ${p}: ${cut(oneLine(valueText(b.field, v)), max)}`;
}

/** The card of a `record.edit`: `{ title, rows }`; the value in full when the title cuts it. */
export function card(b, { from } = {}) {
  if (!b || typeof b !== 'object') return { title: EDIT, rows: [] };
  const title = editText(from ?? '?', b);
  const rows = [];
  if (!isTask(b.field) && typeof b.value === 'string' && editText(from ?? '?', b, Infinity) !== title) rows.push([label(b.field), b.value]);
  if (typeof b.note === 'string' && b.note) rows.push(['Note', b.note]);
  return { title, rows };
}

/** The patients a message concerns (the room's patient filter). */
export function patientsOf(kind, b) {
  return isRecord(kind) && b && typeof b === 'object' && typeof b.patient === 'string' ? [b.patient] : [];
}

// ---------- a record read ----------

const str = (v) => (typeof v === 'string' ? v : null);
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const list = (v) => (Array.isArray(v) ? v.filter((x) => x && typeof x === 'object') : []);
const version = (v) => ({ version: str(v.version), value: v.value === undefined ? null : v.value, by: str(v.by), role: str(v.role), at: num(v.at) });

/** A record read, as the server answers it, made safe to draw: unknown shapes become empty lists. */
export function normalize(answer) {
  const fields = list(answer?.fields)
    .filter((f) => typeof f.field === 'string')
    .map((f) => ({
      field: f.field,
      ...version(f),
      doctors: f.doctors === true,
      conflict: list(f.conflict).map(version),
      base: Array.isArray(f.base) ? f.base.filter((x) => typeof x === 'string') : [],
      versions: num(f.versions) ?? 1,
    }));
  const history = list(answer?.history)
    .filter((h) => typeof h.field === 'string')
    .map((h) => ({ field: h.field, ...version(h) }));
  return { patient: str(answer?.patient), fields, history };
}

/**
 * What the panel shows: the record read (`data`, normalized; null when none was read) with
 * the edits of this patient held on the device that it does not hold yet (`local`: records
 * `{ id, body, from, created, pending }`, `pending` while in the outbox).
 *
 * Returns `{ fields: Map(field -> shown), tasks: [shown], history: [...] }`, each shown field
 * being `{ field, value, by, role, at, doctors, conflict, base, versions, pending, known }`:
 * - `value`, `by`, `at`: the device's newest unseen edit of the field if any, else the server's;
 * - `pending`: an edit of it waits in the outbox (the value shown is that edit's);
 * - `base`: what the next edit of the field names: the server's `base`, with the versions
 *   the device's unseen edits replaced swapped for those edits;
 * - `conflict`: the server's candidates, unless an unseen edit here names all of them;
 * - `known`: whether the server's read has the field.
 * `tasks` are the care-plan items in the order they were added; removed ones are left out
 * unless a removal is waiting or a conflict involves them. `history` is the server's, newest
 * first, after the unseen edits (marked `pending` while in the outbox).
 */
export function shown(data, local = []) {
  const d = data ?? { fields: [], history: [] };
  const seen = new Set();
  for (const h of d.history) seen.add(h.version);
  for (const f of d.fields) {
    seen.add(f.version);
    for (const c of f.conflict) seen.add(c.version);
  }
  // The history lists the newest versions only: an edit older than all of them is not unseen.
  const full = d.history.length >= HISTORY_SHOWN;
  const oldest = full ? d.history.reduce((m, h) => (h.version && (!m || h.version < m) ? h.version : m), null) : null;
  const unseen = local
    .filter((r) => r?.body && typeof r.body === 'object' && typeof r.body.field === 'string' && !seen.has(r.id) && !(oldest && r.id < oldest))
    .sort((a, b) => (a.created ?? 0) - (b.created ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  const names = new Set([...d.fields.map((f) => f.field), ...unseen.map((r) => r.body.field)]);
  const fields = new Map();
  for (const name of names) {
    const f = d.fields.find((x) => x.field === name) ?? null;
    const mine = unseen.filter((r) => r.body.field === name);
    const base = new Set(f?.base ?? []);
    const replaced = new Set();
    for (const r of mine) {
      for (const v of Array.isArray(r.body.base) ? r.body.base : []) {
        base.delete(v);
        replaced.add(v);
      }
      base.add(r.id);
    }
    const top = mine.at(-1);
    const conflict = f && f.conflict.length && !f.conflict.every((c) => replaced.has(c.version)) ? f.conflict : [];
    fields.set(name, {
      field: name,
      value: top ? (top.body.value ?? null) : (f?.value ?? null),
      version: top ? top.id : (f?.version ?? null),
      by: top ? (top.from ?? null) : (f?.by ?? null),
      role: top ? (top.body.role ?? null) : (f?.role ?? null),
      at: top ? (top.created ?? null) : (f?.at ?? null),
      doctors: f?.doctors ?? false,
      conflict,
      base: [...base],
      versions: (f?.versions ?? 0) + mine.length,
      pending: mine.some((r) => r.pending),
      known: !!f,
    });
  }

  // Care-plan items in the order they were first written (the history's oldest version of each).
  const first = new Map();
  for (const h of d.history) if (isTask(h.field) && h.at !== null && (!first.has(h.field) || h.at < first.get(h.field))) first.set(h.field, h.at);
  const tasks = [...fields.values()]
    .filter((f) => isTask(f.field) && (f.value !== null || f.pending || f.conflict.length))
    .sort((a, b) => (first.get(a.field) ?? a.at ?? Infinity) - (first.get(b.field) ?? b.at ?? Infinity) || (a.field < b.field ? -1 : 1));

  const waiting = unseen
    .slice()
    .reverse()
    .map((r) => ({ field: r.body.field, version: r.id, value: r.body.value ?? null, by: r.from ?? null, role: r.body.role ?? null, at: r.created ?? null, pending: !!r.pending }));
  return { fields, tasks, history: [...waiting, ...d.history] };
}
