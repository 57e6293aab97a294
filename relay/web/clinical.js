// Clinical events (docs/workflows.md): the forms that write them, the checks the servers
// make (mirrored here so a mistake is shown before sending, and because the server cannot
// check a body sealed for an end-to-end encrypted room), and the cards that show them.
// Pure functions of plain values: the page wires them to the DOM.

export const KINDS = {
  'clinical.vitals': 'Vital signs',
  'clinical.medication': 'Medication given',
  'clinical.emergency': 'Emergency report',
  'clinical.handoff': 'Shift hand-off',
  'clinical.referral': 'Referral',
};

export const isClinical = (kind) => typeof kind === 'string' && Object.hasOwn(KINDS, kind);

const SEVERITY = ['critical', 'serious', 'moderate'];
const DOSE_UNITS = ['mg', 'g', 'mcg', 'ml', 'IU', 'tablet', 'capsule', 'drop', 'puff', 'sachet'];
const ROUTES = ['oral', 'iv', 'im', 'sc', 'topical', 'inhaled', 'rectal', 'sublingual', 'nasal', 'eye', 'ear', 'other'];
const URGENCY = ['routine', 'urgent', 'emergency'];
const PATIENT = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * The form of each kind: fields in order. `path` is where the value goes in the body
 * (a dotted path); `type` is text, long, number, choice, patient, user or time; `unit`
 * fields are fixed in the body and shown beside the number.
 */
export const FORMS = {
  'clinical.vitals': [
    { path: 'patient', label: 'Patient id', type: 'patient', required: true },
    { path: 'bp.systolic', label: 'Blood pressure, systolic', type: 'number', unit: 'mmHg', group: 'bp', range: [40, 300] },
    { path: 'bp.diastolic', label: 'Blood pressure, diastolic', type: 'number', unit: 'mmHg', group: 'bp', range: [20, 200] },
    { path: 'pulse.value', label: 'Pulse', type: 'number', unit: 'bpm', group: 'pulse', range: [20, 300] },
    { path: 'temperature.value', label: 'Temperature', type: 'number', unit: 'C', group: 'temperature', range: [25, 45] },
    { path: 'spo2.value', label: 'SpO\u2082', type: 'number', unit: '%', group: 'spo2', range: [50, 100] },
    { path: 'respiratory_rate.value', label: 'Respiratory rate', type: 'number', unit: '/min', group: 'respiratory_rate', range: [4, 80] },
    { path: 'note', label: 'Note', type: 'long' },
  ],
  'clinical.medication': [
    { path: 'patient', label: 'Patient id', type: 'patient', required: true },
    { path: 'drug', label: 'Drug', type: 'text', required: true },
    { path: 'dose.value', label: 'Dose', type: 'number', required: true, range: [0, 100000] },
    { path: 'dose.unit', label: 'Dose unit', type: 'choice', options: DOSE_UNITS, required: true },
    { path: 'route', label: 'Route', type: 'choice', options: ROUTES, required: true },
    { path: 'note', label: 'Note', type: 'long' },
  ],
  'clinical.emergency': [
    { path: 'severity', label: 'Severity', type: 'choice', options: SEVERITY, required: true },
    { path: 'patient', label: 'Patient id (if known)', type: 'patient' },
    { path: 'location', label: 'Where', type: 'text', required: true },
    { path: 'what', label: 'What happened', type: 'long', required: true },
  ],
  'clinical.handoff': [
    { path: 'to', label: 'Handing over to (user id)', type: 'user', required: true },
    { path: 'tasks', label: 'Open tasks, one per line', type: 'long' },
    { path: 'note', label: 'Note', type: 'long' },
  ],
  'clinical.referral': [
    { path: 'patient', label: 'Patient id', type: 'patient', required: true },
    { path: 'to', label: 'Referred to', type: 'text', required: true },
    { path: 'reason', label: 'Reason', type: 'long', required: true },
    { path: 'urgency', label: 'Urgency', type: 'choice', options: URGENCY, required: true },
    { path: 'transport', label: 'Transport', type: 'text' },
  ],
};

function put(obj, path, value) {
  const keys = path.split('.');
  let at = obj;
  for (const k of keys.slice(0, -1)) at = at[k] ??= {};
  at[keys.at(-1)] = value;
}

/**
 * The body a form's `values` (path -> string, as typed) make, written by `me` at `now`;
 * or `{ field, problem }` for the first thing to correct (named as the server would).
 */
export function build(kind, values, { me, now }) {
  const body = {};
  for (const f of FORMS[kind] ?? []) {
    const raw = String(values[f.path] ?? '').trim();
    if (!raw) {
      if (f.required) return { field: f.path, problem: 'is required' };
      continue;
    }
    if (f.type === 'number') {
      const n = Number(raw.replace(',', '.'));
      if (!Number.isFinite(n)) return { field: f.path, problem: 'must be a number' };
      put(body, f.path, n);
      if (f.unit) put(body, `${f.group}.unit`, f.unit);
    } else if (f.path === 'tasks') {
      const tasks = raw.split('\n').map((t) => t.trim()).filter(Boolean).map((task) => ({ task }));
      if (tasks.length) body.open_tasks = tasks;
    } else put(body, f.path, raw);
  }
  if (kind === 'clinical.vitals') body.taken_at = now;
  if (kind === 'clinical.medication') body.given_at = now;
  if (kind === 'clinical.handoff') body.from = me;
  body.text = summary(kind, body);
  const wrong = check(kind, body, now);
  return wrong ?? { body };
}

/** The server's checks (shared/src/clinical.rs), for a body this page built. */
export function check(kind, body, now = Date.now()) {
  const fail = (field, problem) => ({ field, problem });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return fail('body', 'must be an object');
  const text = (v, max) => typeof v === 'string' && v.trim() && [...v].length <= max;
  if (body.patient !== undefined && !PATIENT.test(body.patient)) return fail('patient', 'must be a patient id (letters, digits, . _ - :), never a name');
  const range = (path, v, lo, hi) => (typeof v === 'number' && v >= lo && v <= hi ? null : fail(path, `must be between ${lo} and ${hi}`));
  switch (kind) {
    case 'clinical.vitals': {
      const readings = ['bp', 'pulse', 'temperature', 'spo2', 'respiratory_rate'].filter((k) => body[k]);
      if (!readings.length) return fail('bp', 'or another reading is required');
      if (body.bp) {
        if (body.bp.systolic === undefined) return fail('bp.systolic', 'is required');
        if (body.bp.diastolic === undefined) return fail('bp.diastolic', 'is required');
        const r = range('bp.systolic', body.bp.systolic, 40, 300) ?? range('bp.diastolic', body.bp.diastolic, 20, 200);
        if (r) return r;
        if (body.bp.diastolic >= body.bp.systolic) return fail('bp.diastolic', 'must be below the systolic');
      }
      const limits = { pulse: [20, 300], temperature: body.temperature?.unit === 'F' ? [77, 113] : [25, 45], spo2: [50, 100], respiratory_rate: [4, 80] };
      for (const [k, [lo, hi]] of Object.entries(limits)) {
        if (body[k]) {
          const r = range(`${k}.value`, body[k].value, lo, hi);
          if (r) return r;
        }
      }
      return null;
    }
    case 'clinical.medication':
      if (!(body.dose?.value > 0)) return fail('dose.value', 'must be more than 0');
      if (!DOSE_UNITS.includes(body.dose?.unit)) return fail('dose.unit', `must be one of ${DOSE_UNITS.join(', ')}`);
      if (!ROUTES.includes(body.route)) return fail('route', `must be one of ${ROUTES.join(', ')}`);
      return text(body.drug, 200) ? null : fail('drug', 'is required');
    case 'clinical.emergency':
      if (!SEVERITY.includes(body.severity)) return fail('severity', `must be one of ${SEVERITY.join(', ')}`);
      if (!text(body.location, 200)) return fail('location', 'is required');
      return text(body.what, 2000) ? null : fail('what', 'is required');
    case 'clinical.handoff':
      return text(body.to, 64) ? null : fail('to', 'is required');
    case 'clinical.referral':
      if (!URGENCY.includes(body.urgency)) return fail('urgency', `must be one of ${URGENCY.join(', ')}`);
      if (!text(body.to, 200)) return fail('to', 'is required');
      return text(body.reason, 2000) ? null : fail('reason', 'is required');
    default:
      return null;
  }
}

const num = (v) => (typeof v === 'number' ? String(v) : '?');

/** The card's lines: `[label, value]` pairs, in reading order. */
export function rows(kind, b) {
  if (!b || typeof b !== 'object') return [];
  const r = [];
  const add = (label, value) => value !== undefined && value !== null && value !== '' && r.push([label, String(value)]);
  add('Patient', b.patient);
  switch (kind) {
    case 'clinical.vitals':
      if (b.bp) add('Blood pressure', `${num(b.bp.systolic)}/${num(b.bp.diastolic)} mmHg`);
      if (b.pulse) add('Pulse', `${num(b.pulse.value)} bpm`);
      if (b.temperature) add('Temperature', `${num(b.temperature.value)} \u00B0${b.temperature.unit === 'F' ? 'F' : 'C'}`);
      if (b.spo2) add('SpO\u2082', `${num(b.spo2.value)} %`);
      if (b.respiratory_rate) add('Respiratory rate', `${num(b.respiratory_rate.value)} /min`);
      break;
    case 'clinical.medication':
      add('Drug', b.drug);
      if (b.dose) add('Dose', `${num(b.dose.value)} ${b.dose.unit ?? ''}`.trim());
      add('Route', b.route);
      break;
    case 'clinical.emergency':
      add('Severity', b.severity);
      add('Where', b.location);
      add('What happened', b.what);
      break;
    case 'clinical.handoff':
      add('From', b.from);
      add('To', b.to);
      for (const t of Array.isArray(b.open_tasks) ? b.open_tasks : []) add('Open task', [t?.task, t?.patient && `(${t.patient})`].filter(Boolean).join(' '));
      break;
    case 'clinical.referral':
      add('To', b.to);
      add('Urgency', b.urgency);
      add('Reason', b.reason);
      add('Transport', b.transport);
      break;
    default:
  }
  add('Note', b.note);
  return r;
}

/** One line for the room list and notifications (also the body's `text`). */
export function summary(kind, b) {
  const title = KINDS[kind] ?? kind;
  const first = rows(kind, b).find(([label]) => label !== 'Patient');
  return [title, b?.patient, first && `${first[0]} ${first[1]}`].filter(Boolean).join(' \u00B7 ');
}

/** The patients a message concerns (for the room's patient filter). */
export function patientsOf(kind, b) {
  if (!isClinical(kind) || !b || typeof b !== 'object') return [];
  const out = typeof b.patient === 'string' ? [b.patient] : [];
  for (const t of Array.isArray(b.open_tasks) ? b.open_tasks : []) if (typeof t?.patient === 'string') out.push(t.patient);
  return out;
}
