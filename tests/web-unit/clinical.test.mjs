// Clinical events in the web client (docs/workflows.md): the forms build the bodies the
// servers accept, refuse what the servers would refuse (naming the same field), and the
// cards and the patient filter read them back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build, check, patientsOf, rows, summary } from '../../relay/web/clinical.js';

const NOW = 1_780_000_000_000;
const ctx = { me: 'amina', now: NOW };

test('a vitals form becomes a body with units and the time it was taken', () => {
  const made = build('clinical.vitals', { patient: 'KJ-0042', 'bp.systolic': '128', 'bp.diastolic': '84', 'spo2.value': '97' }, ctx);
  assert.deepEqual(made.body.bp, { systolic: 128, diastolic: 84, unit: 'mmHg' });
  assert.deepEqual(made.body.spo2, { value: 97, unit: '%' });
  assert.equal(made.body.taken_at, NOW);
  assert.equal(made.body.pulse, undefined, 'an empty reading is left out');
  assert.match(made.body.text, /^Vital signs · KJ-0042 · Blood pressure 128\/84 mmHg$/);
});

test('the form refuses what the server refuses, by the same field', () => {
  const field = (kind, values) => build(kind, values, ctx).field;
  assert.equal(field('clinical.vitals', { patient: 'KJ-0042', 'bp.systolic': '400', 'bp.diastolic': '80' }), 'bp.systolic');
  assert.equal(field('clinical.vitals', { patient: 'KJ-0042', 'bp.systolic': '120', 'bp.diastolic': '130' }), 'bp.diastolic');
  assert.equal(field('clinical.vitals', { patient: 'KJ-0042' }), 'bp', 'at least one reading');
  assert.equal(field('clinical.vitals', { patient: 'Amina Juma', 'pulse.value': '70' }), 'patient', 'a name is not an id');
  assert.equal(field('clinical.vitals', { patient: 'KJ-0042', 'pulse.value': 'fast' }), 'pulse.value');
  assert.equal(field('clinical.medication', { patient: 'KJ-1', drug: 'oxytocin', 'dose.value': '0', 'dose.unit': 'IU', route: 'im' }), 'dose.value');
  assert.equal(field('clinical.referral', { patient: 'KJ-1', to: 'district', reason: 'labour' }), 'urgency');
  assert.equal(field('clinical.emergency', { severity: 'critical', what: 'seizure' }), 'location');
});

test('a hand-off lists its tasks one per line and names who hands over', () => {
  const made = build('clinical.handoff', { to: 'baraka', tasks: 'recheck BP at 18:00\n\nrestock ORS\n' }, ctx);
  assert.deepEqual(made.body.open_tasks, [{ task: 'recheck BP at 18:00' }, { task: 'restock ORS' }]);
  assert.equal(made.body.from, 'amina');
  assert.equal(check('clinical.handoff', made.body, NOW), null);
});

test('a card reads every field with its unit, and the filter finds the patients', () => {
  const body = { patient: 'KJ-0042', taken_at: NOW, bp: { systolic: 128, diastolic: 84, unit: 'mmHg' }, temperature: { value: 99.1, unit: 'F' } };
  assert.deepEqual(rows('clinical.vitals', body), [
    ['Patient', 'KJ-0042'],
    ['Blood pressure', '128/84 mmHg'],
    ['Temperature', '99.1 °F'],
  ]);
  assert.deepEqual(patientsOf('clinical.handoff', { open_tasks: [{ task: 'x', patient: 'KJ-7' }, { task: 'y' }] }), ['KJ-7']);
  assert.deepEqual(patientsOf('chat', { patient: 'KJ-7' }), [], 'only clinical events are about a patient');
  assert.equal(summary('clinical.referral', { patient: 'KJ-1', to: 'District hospital' }), 'Referral · KJ-1 · To District hospital');
});
