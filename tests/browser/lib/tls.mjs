// Certificates for opening the hub by a LAN name over HTTPS, as phones in a village do: a
// test CA and the certificates it issues (made with the openssl CLI), and a throwaway HOME
// whose NSS database trusts given CAs. Chromium on Linux takes locally trusted roots from
// $HOME/.pki/nssdb; a really trusted certificate (not --ignore-certificate-errors) is what
// makes the page a secure context with a service worker and WebCrypto.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * How the scenarios reach the hub (env OUTPOST_BROWSER_HUB): `address` opens
 * http://127.0.0.1:PORT; `name` makes every hub serve HTTPS with a certificate for
 * HUB_NAME from the run's test CA, and opens https://HUB_NAME:PORT.
 */
export const HUB_MODE = process.env.OUTPOST_BROWSER_HUB || 'address';
if (!['address', 'name'].includes(HUB_MODE)) {
  throw new Error(`OUTPOST_BROWSER_HUB=${HUB_MODE}: expected "address" or "name"`);
}
export const HUB_NAME = 'hub.village';

/** Days a test certificate is valid: the run is minutes long; Chromium refuses > 398. */
const DAYS = '2';

function openssl(args) {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA (key and self-signed certificate, PEM) in `dir`; returns the paths. */
export function makeCa(dir, cn) {
  fs.mkdirSync(dir, { recursive: true });
  const ca = { cert: path.join(dir, 'ca.pem'), key: path.join(dir, 'ca.key') };
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', ca.key, '-out', ca.cert, '-days', DAYS, '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return ca;
}

/**
 * A server certificate from `ca` for `names` (DNS names or IP addresses), written as
 * `<base>.crt` and `<base>.key`; returns the paths.
 */
export function issue(ca, base, names) {
  fs.mkdirSync(path.dirname(base), { recursive: true });
  const out = { cert: `${base}.crt`, key: `${base}.key` };
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  openssl([
    'req', '-x509', '-CA', ca.cert, '-CAkey', ca.key,
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', out.key, '-out', out.cert, '-days', DAYS, '-subj', `/CN=${names[0]}`,
    '-addext', `subjectAltName=${san}`,
    '-addext', 'basicConstraints=critical,CA:FALSE',
    '-addext', 'keyUsage=critical,digitalSignature',
    '-addext', 'extendedKeyUsage=serverAuth',
  ]);
  return out;
}

let runCa = null;

/** The run's CA (this process's: node --test runs each file in its own), made on first use. */
export function testCa() {
  if (!runCa) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-browser-ca-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    runCa = makeCa(dir, 'Outpost browser test CA');
  }
  return runCa;
}

/** Makes `home`/.pki/nssdb trusting every CA certificate (PEM path) in `cas` for TLS servers. */
export function nssHome(home, cas) {
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  const certutil = (args) => execFileSync('certutil', ['-d', `sql:${db}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  certutil(['-N', '--empty-password']);
  cas.forEach((pem, i) => certutil(['-A', '-t', 'C,,', '-n', `outpost-test-ca-${i}`, '-i', pem]));
  return home;
}
