// A renewed token from the server (docs/protocol.md, `token`): kept in place of the one the
// device signed in with, for the next connection; never one for another person.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, deliver, device } from './harness.mjs';

/** An unsigned JWT-shaped token with these claims (the device never checks signatures). */
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'EdDSA' })}.${b64(claims)}.c2lnbmF0dXJl`;
}

const renewal = (sub = 'amina', exp = 1_800_000_100) => {
  const token = jwt({ sub, role: 'worker', rooms: ['clinic'], iat: exp - 60, exp, jti: 'r1', lin: { jti: 't1', iat: 1 } });
  return { v: 1, type: 'token', token, expires_at: exp };
};

test('a renewed token replaces the stored one and is what the next hello carries', () => {
  const p = device();
  p.state.token = 'the-original';
  connect(p);
  const frame = renewal();
  const { events } = deliver(p, [frame]);
  assert.deepEqual(events, [{ type: 'token', token: frame.token, expiresAt: 1_800_000_100 }]);
  assert.equal(p.state.token, frame.token);
  assert.equal(p.state.claims.exp, 1_800_000_100);
  p.closed();
  // app.js signs in again with the state's token.
  assert.equal(p.opened(2, { token: p.state.token, device: 'amina-phone' }).token, frame.token);
});

test("a token naming another person, or no token at all, changes nothing", () => {
  const p = device();
  p.state.token = 'the-original';
  connect(p);
  for (const f of [renewal('baraka'), { v: 1, type: 'token', token: 'garbage' }, { v: 1, type: 'token' }]) {
    const { events, ops } = deliver(p, [f]);
    assert.deepEqual(events, [], JSON.stringify(f));
    assert.deepEqual(ops, []);
  }
  assert.equal(p.state.token, 'the-original');
  assert.equal(p.state.claims.sub, 'amina');
});

test('frames of types this version does not know are ignored, as old clients ignore `token`', () => {
  const p = device();
  connect(p);
  const { events, ops } = deliver(p, [{ v: 1, type: 'from-the-future', token: 'x' }]);
  assert.deepEqual([events, ops], [[], []]);
});
