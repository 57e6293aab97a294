// A shared patient record in the web client (docs/workflows.md, "A shared patient
// record"): edits build the bodies the servers accept and refuse what they would refuse,
// cards read them back in words, and the Record panel lays the device's own unsent edits
// over the last record read (shown as waiting, named in the next edit's `base`). Also the
// pieces the Queue and Record panels share (derived.js): the kept answers, one read at a
// time, refusals in words.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EDIT, buildEdit, card, checkEdit, editText, isPatient, normalize, patientsOf, shown, taskKey, valueText } from '../../relay/web/record.js';
import { Kept, readJson, refusal, serial } from '../../relay/web/derived.js';
import { plainError } from '../../relay/web/protocol.js';

const V1 = '0190a7c4-0000-7000-8000-000000000001';
const V2 = '0190a7c4-0000-7000-8000-000000000002';
const V3 = '0190a7c4-0000-7000-8000-000000000003';
const MINE = '0190a7c4-0000-7000-8000-00000000000a';
const MINE2 = '0190a7c4-0000-7000-8000-00000000000b';
const T = 1_780_000_000_000;

test('an edit becomes the body the servers accept, with a one-line text', () => {
  const made = buildEdit({ patient: 'KJ-0042', field: 'allergies', value: ' penicillin, latex ', base: [V1], role: 'worker' });
  assert.deepEqual(made.body, { patient: 'KJ-0042', field: 'allergies', value: 'penicillin, latex', base: [V1], role: 'worker', text: 'Allergies of KJ-0042: penicillin, latex' });
  assert.equal(checkEdit(made.body), null);
  const first = buildEdit({ patient: 'KJ-0042', field: 'problems', value: 'pre-eclampsia', role: 'doctor' }).body;
  assert.deepEqual(first.base, [], 'a field\u2019s first edit names nothing');
  assert.equal(first.text, 'Problem list of KJ-0042: pre-eclampsia');
  const cleared = buildEdit({ patient: 'KJ-0042', field: 'allergies', value: '   ', base: [V1, V1], role: 'worker' }).body;
  assert.equal(cleared.value, null, 'empty text clears the field');
  assert.deepEqual(cleared.base, [V1], 'each version named once');
  assert.equal(cleared.text, 'Allergies of KJ-0042 cleared');
  const task = buildEdit({ patient: 'KJ-0042', field: 'care_plan.bp-1', value: { task: ' recheck BP at 18:00 ' }, role: 'doctor' }).body;
  assert.deepEqual(task.value, { task: 'recheck BP at 18:00', done: false });
  assert.equal(checkEdit(task), null);
  const removed = buildEdit({ patient: 'KJ-0042', field: 'care_plan.bp-1', value: null, base: [V2], role: 'worker' }).body;
  assert.equal(removed.value, null);
  assert.equal(removed.text, 'Care-plan task of KJ-0042 removed');
  assert.ok('value' in removed, 'null is sent: it clears');
});

test('an edit refuses what the server refuses, by the same field', () => {
  const field = (v) => buildEdit({ patient: 'KJ-0042', field: 'allergies', value: 'penicillin', role: 'worker', ...v }).field;
  assert.equal(field({}), undefined);
  assert.equal(field({ patient: 'Amina Juma' }), 'patient', 'a name is not an id');
  assert.equal(field({ patient: 'K'.repeat(65) }), 'patient');
  assert.equal(field({ role: 'nurse' }), 'role');
  assert.equal(field({ role: undefined }), 'role');
  assert.equal(field({ field: 'diagnosis' }), 'field');
  assert.equal(field({ field: 'care_plan.' }), 'field', 'a key of 1 to 32');
  assert.equal(field({ field: 'care_plan.BP' }), 'field', 'lower case');
  assert.equal(field({ field: `care_plan.${'k'.repeat(33)}` }), 'field');
  assert.equal(field({ value: 'x'.repeat(2001) }), 'value');
  assert.equal(field({ value: 'x'.repeat(2000) }), undefined);
  assert.equal(field({ base: Array.from({ length: 33 }, () => V1) }), undefined, 'the same version named 33 times is one');
  const many = Array.from({ length: 33 }, (_, i) => `0190a7c4-0000-7000-8000-${String(i).padStart(12, '0')}`);
  assert.equal(field({ base: many }), 'base', 'at most 32 versions');
  assert.equal(field({ base: ['not-a-version'] }), 'base.0');
  assert.equal(buildEdit({ patient: 'KJ-1', field: 'care_plan.a', value: { task: '  ' }, role: 'worker' }).field, 'value.task');
  assert.equal(buildEdit({ patient: 'KJ-1', field: 'care_plan.a', value: { task: 't'.repeat(201) }, role: 'worker' }).field, 'value.task');
  assert.equal(checkEdit({ patient: 'KJ-1', field: 'care_plan.a', value: { task: 't', done: 'yes' }, role: 'worker' }).field, 'value.done');
  assert.equal(checkEdit({ patient: 'KJ-1', field: 'care_plan.a', value: { task: 't', due: 1 }, role: 'worker' }).field, 'value.due');
  assert.equal(checkEdit({ patient: 'KJ-1', field: 'allergies', role: 'worker' }).field, 'value', 'value is required');
  assert.equal(checkEdit({ patient: 'KJ-1', field: 'allergies', value: 'x', role: 'worker', who: 'me' }).field, 'who', 'no other fields');
  assert.equal(isPatient('KJ.1_a-b:c'), true);
  assert.equal(isPatient('KJ 1'), false);
  // What the server refuses anyway (a role that is not the token's) reads in words.
  assert.equal(plainError('invalid_event', 'record.edit: field `role` must be the role of your sign-in (doctor)', 'hub'), 'The form was not accepted: field `role` must be the role of your sign-in (doctor). Correct it and send it again.');
});

test('a new care-plan item gets a key the servers accept, from its words', () => {
  const key = taskKey('Recheck BP at 18:00, then call Dr. Neema!', () => 0);
  assert.equal(key, 'care_plan.recheck-bp-at-18-00-then-aaaaa');
  assert.ok(/^care_plan\.[a-z0-9_-]{1,32}$/.test(key));
  assert.equal(taskKey('\u0645\u0631\u064A\u0636', () => 0.999), 'care_plan.task-99999', 'words with no latin letters');
  assert.notEqual(taskKey('x'), taskKey('x'), 'two devices adding the same task make two items');
  assert.equal(checkEdit(buildEdit({ patient: 'KJ-1', field: taskKey('a'.repeat(100)), value: { task: 'a' }, role: 'worker' }).body), null);
});

test('cards read edits in words, never as JSON; the patient filter finds them', () => {
  const b = { patient: 'KJ-0042', field: 'allergies', value: 'penicillin, latex', base: [V1], role: 'worker' };
  assert.deepEqual(card(b, { from: 'amina' }), { title: 'amina changed the allergies of KJ-0042: penicillin, latex', rows: [] });
  assert.equal(editText('dr-neema', { ...b, field: 'problems', value: null }), 'dr-neema cleared the problem list of KJ-0042');
  const task = { patient: 'KJ-0042', field: 'care_plan.bp', value: { task: 'recheck BP', done: false }, base: [], role: 'doctor' };
  assert.equal(editText('dr-neema', task), 'dr-neema added a care-plan task for KJ-0042: recheck BP');
  assert.equal(editText('amina', { ...task, value: { task: 'recheck BP', done: true }, base: [V1] }), 'amina marked a care-plan task of KJ-0042 done: recheck BP');
  assert.equal(editText('amina', { ...task, base: [V1] }), 'amina changed a care-plan task of KJ-0042: recheck BP (not done)');
  assert.equal(editText('amina', { ...task, value: null, base: [V1] }), 'amina removed a care-plan task of KJ-0042');
  const long = card({ ...b, value: 'a '.repeat(300) }, { from: 'amina' });
  assert.ok([...long.title].length < 260, 'a long value is cut in the title');
  assert.deepEqual(long.rows, [['Allergies', 'a '.repeat(300)]], 'and shown whole below it');
  assert.deepEqual(patientsOf(EDIT, b), ['KJ-0042']);
  assert.deepEqual(patientsOf('chat', b), []);
  assert.deepEqual(patientsOf(EDIT, null), []);
  assert.equal(valueText('allergies', null), '(cleared)');
  assert.equal(valueText('care_plan.x', null), '(removed)');
  assert.equal(valueText('care_plan.x', { task: 'BP', done: true }), 'BP (done)');
});

const read = (fields, history = []) =>
  normalize({
    patient: 'KJ-0042',
    fields: fields.map((f) => ({ doctors: false, conflict: [], base: [f.version], versions: 1, role: 'worker', at: T, ...f })),
    history,
  });

test('a record answer of an unexpected shape draws as empty lists', () => {
  assert.deepEqual(normalize(null), { patient: null, fields: [], history: [] });
  const d = normalize({ patient: 'KJ-1', fields: [null, { value: 'no name' }, { field: 'allergies', version: V1, value: 'x', conflict: 'no', base: [V1, 7] }], history: [{ field: 'allergies', version: V1 }, 'x'] });
  assert.equal(d.fields.length, 1);
  assert.deepEqual(d.fields[0].conflict, []);
  assert.deepEqual(d.fields[0].base, [V1]);
  assert.equal(d.history.length, 1);
  assert.equal(d.history[0].value, null);
});

test('the record read shows as it is when the device holds nothing newer', () => {
  const data = read([{ field: 'allergies', version: V1, value: 'penicillin', by: 'amina' }], [{ field: 'allergies', version: V1, value: 'penicillin', by: 'amina', role: 'worker', at: T }]);
  const v = shown(data, [{ id: V1, body: { patient: 'KJ-0042', field: 'allergies', value: 'penicillin', base: [], role: 'worker' }, from: 'amina', created: T, pending: false }]);
  const f = v.fields.get('allergies');
  assert.equal(f.value, 'penicillin');
  assert.equal(f.pending, false);
  assert.deepEqual(f.base, [V1]);
  assert.equal(f.versions, 1, 'an edit the read holds is not counted twice');
  assert.equal(v.history.length, 1);
  assert.equal(shown(null).fields.size, 0);
});

test('an edit waiting in the outbox shows over the read, and the next edit is made on top of it', () => {
  const data = read([{ field: 'allergies', version: V1, value: 'penicillin', by: 'amina' }], [{ field: 'allergies', version: V1, value: 'penicillin', by: 'amina', role: 'worker', at: T }]);
  const mine = { id: MINE, body: { patient: 'KJ-0042', field: 'allergies', value: 'penicillin, sulfa', base: [V1], role: 'worker' }, from: 'baraka', created: T + 10, pending: true };
  const f = shown(data, [mine]).fields.get('allergies');
  assert.equal(f.value, 'penicillin, sulfa');
  assert.equal(f.pending, true);
  assert.equal(f.by, 'baraka');
  assert.deepEqual(f.base, [MINE], 'not a conflict with one\u2019s own unsent edit');
  assert.equal(f.versions, 2);
  const again = { id: MINE2, body: { ...mine.body, value: 'penicillin, sulfa, latex', base: [MINE] }, from: 'baraka', created: T + 20, pending: true };
  const g = shown(data, [again, mine]);
  assert.equal(g.fields.get('allergies').value, 'penicillin, sulfa, latex');
  assert.deepEqual(g.fields.get('allergies').base, [MINE2]);
  assert.deepEqual(g.history.map((h) => [h.version, h.pending ?? false]), [[MINE2, true], [MINE, true], [V1, false]], 'the history, newest first, the waiting ones marked');
  // Stored since, but not yet in a read: still the newest, no longer waiting.
  const stored = shown(data, [{ ...mine, pending: false }]).fields.get('allergies');
  assert.equal(stored.value, 'penicillin, sulfa');
  assert.equal(stored.pending, false);
});

test('a conflict shows every candidate, and a resolution waiting here clears it', () => {
  const conflict = [
    { version: V3, value: 'penicillin, latex', by: 'baraka', role: 'worker', at: T + 3 },
    { version: V2, value: 'penicillin, sulfa', by: 'amina', role: 'worker', at: T + 2 },
  ];
  const data = read([{ field: 'allergies', version: V3, value: 'penicillin, latex', by: 'baraka', conflict, base: [V2, V3], versions: 3 }]);
  const f = shown(data).fields.get('allergies');
  assert.deepEqual(f.conflict.map((c) => c.value), ['penicillin, latex', 'penicillin, sulfa']);
  assert.deepEqual(f.base, [V2, V3], 'keeping one or merging names both');
  const resolution = { id: MINE, body: { patient: 'KJ-0042', field: 'allergies', value: 'penicillin, sulfa, latex', base: [V2, V3], role: 'doctor' }, from: 'dr-neema', created: T + 9, pending: true };
  const r = shown(data, [resolution]).fields.get('allergies');
  assert.deepEqual(r.conflict, []);
  assert.equal(r.value, 'penicillin, sulfa, latex');
  assert.equal(r.versions, 4);
  // An edit made on an older read names only one of them: the conflict stays.
  const partial = { ...resolution, body: { ...resolution.body, base: [V2] } };
  assert.equal(shown(data, [partial]).fields.get('allergies').conflict.length, 2);
});

test('care-plan items show in the order they were added; removed ones go unless waiting', () => {
  const data = read(
    [
      { field: 'care_plan.b', version: V2, value: { task: 'weigh', done: true }, by: 'amina', at: T + 5 },
      { field: 'care_plan.a', version: V1, value: { task: 'recheck BP', done: false }, by: 'dr-neema', role: 'doctor', at: T + 1 },
      { field: 'care_plan.c', version: V3, value: null, by: 'amina', at: T + 6 },
      { field: 'allergies', version: MINE2, value: 'none known', by: 'amina', at: T },
    ],
    [
      { field: 'care_plan.b', version: V2, value: { task: 'weigh', done: true }, by: 'amina', role: 'worker', at: T + 5 },
      { field: 'care_plan.b', version: '0190a7c4-0000-7000-8000-0000000000f0', value: { task: 'weigh' }, by: 'amina', role: 'worker', at: T },
      { field: 'care_plan.a', version: V1, value: { task: 'recheck BP', done: false }, by: 'dr-neema', role: 'doctor', at: T + 1 },
    ],
  );
  assert.deepEqual(shown(data).tasks.map((t) => t.field), ['care_plan.b', 'care_plan.a']);
  const tick = { id: MINE, body: { patient: 'KJ-0042', field: 'care_plan.a', value: { task: 'recheck BP', done: true }, base: [V1], role: 'worker' }, from: 'amina', created: T + 9, pending: true };
  const added = { id: MINE2.replace('b', 'c'), body: { patient: 'KJ-0042', field: 'care_plan.new-1', value: { task: 'ORS' }, base: [], role: 'worker' }, from: 'amina', created: T + 10, pending: true };
  const v = shown(data, [tick, added]);
  assert.deepEqual(v.tasks.map((t) => [t.field, t.value.done ?? false, t.pending]), [
    ['care_plan.b', true, false],
    ['care_plan.a', true, true],
    ['care_plan.new-1', false, true],
  ]);
  const removing = { ...tick, body: { ...tick.body, value: null } };
  assert.deepEqual(shown(data, [removing]).tasks.map((t) => [t.field, t.value]), [['care_plan.b', { task: 'weigh', done: true }], ['care_plan.a', null]], 'a removal waiting to send still shows');
});

test('with a full history, an edit older than all of it is not taken for an unseen one', () => {
  const history = Array.from({ length: 200 }, (_, i) => ({ field: 'allergies', version: `0190a7c4-0000-7000-8000-${String(1000 + i).padStart(12, '0')}`, value: `v${i}`, by: 'amina', role: 'worker', at: T + i }));
  const data = read([{ field: 'allergies', version: history[199].version, value: 'v199', by: 'amina', versions: 300 }], history.slice().reverse());
  const old = { id: '0190a7c4-0000-7000-8000-000000000005', body: { patient: 'KJ-0042', field: 'allergies', value: 'old', base: [], role: 'worker' }, from: 'amina', created: T - 1, pending: false };
  assert.equal(shown(data, [old]).fields.get('allergies').value, 'v199');
});

test('kept answers load, save in the kv layout, forget, and keep the most recent', () => {
  const kept = new Kept('records', { normalize: (d) => ({ ...d, n: true }), max: 2 });
  kept.load(new Map([['records', { a: { data: { x: 1 }, at: 5 }, b: { nothing: 1 } }]]));
  assert.deepEqual(kept.get('a'), { data: { x: 1, n: true }, at: 5 });
  assert.equal(kept.get('b'), null);
  kept.set('b', { y: 2 }, 6);
  kept.set('c', { z: 3 }, 7);
  assert.equal(kept.get('a'), null, 'the oldest read goes past the limit');
  assert.deepEqual(kept.op(), ['kv', 'put', { b: { data: { y: 2 }, at: 6 }, c: { data: { z: 3 }, at: 7 } }, 'records']);
  const ops = [];
  kept.forget(ops);
  assert.deepEqual(ops, [['kv', 'delete', 'records']]);
  assert.equal(kept.get('b'), null);
});

test('one read at a time per key, and one more after it when asked meanwhile', async () => {
  const run = serial();
  let calls = 0;
  let release;
  const fn = async () => {
    calls++;
    if (calls === 1) await new Promise((r) => (release = r));
  };
  const first = run('k', fn);
  await run('k', fn);
  await run('k', fn);
  assert.equal(calls, 1, 'not while the first is on its way');
  await run('other', async () => {});
  release();
  await first;
  assert.equal(calls, 2, 'one more after it, however often asked');
});

test('reads tell unreachable from refused, and refusals are said in words', async () => {
  const real = globalThis.fetch;
  try {
    globalThis.fetch = async () => {
      throw new TypeError('Failed to fetch');
    };
    assert.deepEqual(await readJson('/api/x'), { state: 'offline' });
    let seen = null;
    globalThis.fetch = async (url, init) => {
      seen = init.headers;
      return new Response(JSON.stringify({ patient: 'KJ-1' }), { status: 200 });
    };
    assert.deepEqual(await readJson('/api/x', { headers: () => ({ Authorization: 'Bearer t' }) }), { state: 'ok', data: { patient: 'KJ-1' } });
    assert.deepEqual(seen, { Authorization: 'Bearer t' });
    globalThis.fetch = async () => new Response(JSON.stringify({ code: 'too_large', message: 'too many edits' }), { status: 413 });
    const r = await readJson('/api/x');
    assert.equal(r.state, 'refused');
    assert.equal(refusal(r.status, r.why, { noun: 'records', what: 'the record', where: 'hub' }), 'The hub could not read the record (too many edits).');
  } finally {
    globalThis.fetch = real;
  }
  const words = (status, why) => refusal(status, why, { noun: 'queues', what: 'the queues', where: 'server' });
  assert.equal(words(401), 'Your sign-in is not accepted for queues. Ask for a new sign-in link.');
  assert.equal(words(403), 'You may not see the queues of this room.');
  assert.equal(words(404), 'The server does not keep queues (it may need an update).');
  assert.equal(words(404, { code: 'unknown_room', message: 'no room x' }), 'The server could not read the queues (no room x).');
});
