// Scenario: HTTPS on the village network with a certificate from a public-style CA. The
// cloud obtains the hub's certificate for its own name (<relay id>.hubs.test) from an ACME
// CA (pebble, DNS-01 through its test DNS server); phones that trust the CA's root, as
// phones trust Let's Encrypt's, open the plain address and are sent to the name. There the
// page is a secure context: the service worker serves the app while the hub is down, the
// message written meanwhile arrives once, and an end-to-end encrypted room works.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import { test } from 'node:test';
import { Stack, ARTIFACTS } from '../lib/stack.mjs';
import { startAcme } from '../lib/acme.mjs';
import { openBrowser, signInWithLink, openRoom, send, bubbles, waitState, serviceWorkerReady, waitConnected, shot } from '../lib/browser.mjs';

const ROOM = 'hiv-clinic';

/** The answer to a plain GET of `url`, not following redirects. */
function plainGet(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      res.resume();
      resolve({ status: res.statusCode, location: res.headers.location });
    }).on('error', reject);
  });
}

/** The certificate chain the hub presents for `name` on `port`, verified against `ca` only. */
function presented(port, name, ca) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: name, ca: fs.readFileSync(ca) }, () => {
      const cert = s.getPeerCertificate(true);
      s.end();
      resolve(cert);
    });
    s.on('error', reject);
  });
}

test('a hub with an ACME certificate: phones use it by name, offline and encrypted', { timeout: 300_000 }, async (t) => {
  const acme = await startAcme();
  t.after(() => acme.close(path.join(ARTIFACTS, 'lan')));
  const stack = await Stack.start('lan', { acme, encryptedRooms: [ROOM] });
  t.after(() => stack.close());
  assert.equal(stack.lanName, 'hub-lan.hubs.test');

  // The hub asks, the cloud orders from the CA, the hub takes the certificate into use.
  const lan = await stack.waitLanHttps();
  assert.equal(lan.name, stack.lanName);
  const now = Date.now() / 1000;
  assert.ok(lan.not_after > now + 30 * 86_400, `not_after ${lan.not_after} is not months ahead`);
  // Served with its chain: a phone holds only the CA's root, not the intermediate.
  const port = Number(stack.httpsAddr.split(':').pop());
  const cert = await presented(port, stack.lanName, acme.root);
  assert.match(cert.subjectaltname, new RegExp(`DNS:${stack.lanName.replaceAll('.', '\\.')}`));
  assert.match(cert.issuer.CN, /Pebble Intermediate/);

  // The plain address sends pages to the name (temporarily: a phone must still reach
  // the plain address if the certificate expires while the village is offline).
  const plain = `http://${stack.hubAddr}`;
  const redirect = await plainGet(`${plain}/`);
  assert.equal(redirect.status, 307, 'a temporary redirect (browsers keep a permanent one for good)');
  assert.equal(redirect.location, `${stack.lanUrl}/`);

  const phone = { hosts: [stack.lanName], trust: [acme.root] };
  const amina = await openBrowser('amina', undefined, phone);
  const baraka = await openBrowser('baraka', undefined, phone);
  t.after(() => Promise.all([amina.close(), baraka.close()]));

  await amina.page.goto(`${plain}/`);
  assert.equal(amina.page.url(), `${stack.lanUrl}/`);
  await signInWithLink(amina.page, stack.lanUrl, stack.token('amina', 'worker', ['clinic', ROOM]));
  // A sign-in link made with the plain address works too: the fragment survives the redirect.
  await signInWithLink(baraka.page, plain, stack.token('baraka', 'worker', ['clinic', ROOM]));
  assert.equal(new URL(baraka.page.url()).origin, stack.lanUrl);
  for (const b of [amina, baraka]) {
    assert.deepEqual(await b.page.evaluate(() => [window.isSecureContext, typeof crypto.subtle?.encrypt]), [true, 'function'], b.name);
    assert.equal(await b.page.getByText('Not a secure connection').isVisible(), false, `${b.name}: the page says it is not secure`);
  }
  await serviceWorkerReady(amina.page);
  await shot(amina.page, 'lan-https-360');

  // Offline: the hub stops; the app still opens from the service worker and queues.
  await openRoom(amina.page, 'clinic');
  await openRoom(baraka.page, 'clinic');
  const before = `Before the outage ${Date.now()}`;
  await send(amina.page, before);
  await waitState(amina.page, before, 'read');
  await stack.stopHub();
  await amina.page.locator('#conn[data-state="warn"]', { hasText: /not reachable\. Reconnecting in \d+ s/ }).waitFor();
  const text = `Written offline over HTTPS ${Date.now()}`;
  await send(amina.page, text);
  await waitState(amina.page, text, 'queued');
  const response = await amina.page.reload();
  assert.ok(response?.fromServiceWorker(), 'the reloaded page must come from the service worker');
  await amina.page.getByRole('heading', { name: '# clinic' }).waitFor();
  await waitState(amina.page, text, 'queued');
  assert.equal(await bubbles(baraka.page, text).count(), 0);

  // Back on the same HTTPS port, with the certificate it kept: delivered exactly once.
  await stack.startHub();
  assert.equal((await stack.lanHttps()).state, 'valid');
  await waitConnected(amina.page);
  await waitConnected(baraka.page);
  await bubbles(baraka.page, text).waitFor();
  await waitState(amina.page, text, 'read');
  assert.equal(await bubbles(baraka.page, text).count(), 1);
  assert.equal(await bubbles(amina.page, text).count(), 1);
  assert.equal(await amina.page.evaluate(() => window.outpost.outbox.size), 0);

  // An end-to-end encrypted room: WebCrypto makes the key here, the other phone opens the link.
  await openRoom(amina.page, ROOM);
  await amina.page.getByRole('button', { name: 'New room key' }).click();
  await amina.page.getByLabel('Link that adds the key').waitFor();
  await amina.page.getByText(/new messages use key /).waitFor();
  const link = await amina.page.getByLabel('Link that adds the key').inputValue();
  assert.ok(link.startsWith(`${stack.lanUrl}/`), `the key link names the hub's HTTPS origin: ${link}`);
  await amina.page.getByRole('textbox', { name: 'Message' }).waitFor({ state: 'visible' });
  await baraka.page.goto(`${stack.lanUrl}/${link.slice(link.indexOf('#'))}`);
  await baraka.page.getByRole('heading', { name: `# ${ROOM}` }).waitFor();
  const secret = `viral load undetectable ${Date.now()}`;
  await send(amina.page, secret);
  await bubbles(baraka.page, secret).waitFor();
  const sealed = await baraka.page.evaluate((r) => [...window.outpost.msgs.values()].find((m) => m.room === r && m.body?.e2e), ROOM);
  assert.ok(sealed, 'what travelled is not an envelope');

  assert.deepEqual([...amina.errors, ...baraka.errors], []);
});
