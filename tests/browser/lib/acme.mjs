// A private ACME CA for a test: Debian's pebble (the ACME server) and pebble-challtestsrv
// (the DNS server it asks for DNS-01 TXT records, which the cloud sets through its
// management API), on free ports on 127.0.0.1. The cloud orders hubs' LAN certificates
// from it; Chromium trusts pebble's issuing root, fetched after start-up (pebble makes a
// new one every time it starts).

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeCa, issue } from './tls.mjs';

const READY_TIMEOUT_MS = 30_000;

/** A TCP port free on 127.0.0.1 now (and, with `udp`, free for UDP too: DNS serves both). */
export async function freePort({ udp = false } = {}) {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.on('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => resolve(port));
      });
    });
    if (!udp) return port;
    const ok = await new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      s.on('error', () => resolve(false));
      s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
}

/** GET `url`; resolves with { status, headers, body } (`ca`: PEM the server's certificate chains to). */
export function get(url, { ca } = {}) {
  return new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? https : http;
    const req = lib.get(url, { ca, timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within 10 s`)));
    req.on('error', reject);
  });
}

/** Polls `probe` (an async function that throws until ready) every 100 ms. */
async function until(what, probe, child, logPath) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.failed) throw new Error(`${what}: ${child.failed.message} (run.sh installs Debian's pebble package)`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${fs.readFileSync(logPath, 'utf8')}`);
    }
    try {
      return await probe();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what} not ready within ${READY_TIMEOUT_MS} ms (${e.message}); log: ${logPath}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function launch(cmd, args, logPath, env = {}) {
  const log = fs.openSync(logPath, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
  fs.closeSync(log);
  // Not installed, say: `until` reports it.
  child.on('error', (e) => {
    child.failed = e;
  });
  child.unref();
  // A failed test must not leave them running.
  const kill = () => child.kill('SIGKILL');
  process.on('exit', kill);
  child.once('exit', () => process.off('exit', kill));
  return child;
}

function stop(child) {
  if (!child || child.failed || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/**
 * Starts challtestsrv and pebble; resolves with
 * { directory, directoryCa, challtestsrvUrl, root, dir, close(logsTo) }:
 * `directory` is the ACME directory URL, `directoryCa` the PEM file its HTTPS certificate
 * chains to, `root` the PEM file of pebble's issuing root (for browsers to trust).
 */
export async function startAcme() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-acme-'));
  const acme = { dir, children: [] };
  acme.close = async (logsTo) => {
    await Promise.all(acme.children.map(stop));
    if (logsTo) {
      fs.mkdirSync(logsTo, { recursive: true });
      for (const f of ['pebble.log', 'challtestsrv.log']) {
        const p = path.join(dir, f);
        if (fs.existsSync(p)) fs.copyFileSync(p, path.join(logsTo, f));
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await start(acme);
    return acme;
  } catch (e) {
    await acme.close();
    throw e;
  }
}

async function start(acme) {
  const { dir } = acme;
  const dnsPort = await freePort({ udp: true });
  const mgmtPort = await freePort();
  const log = path.join(dir, 'challtestsrv.log');
  const chall = launch('pebble-challtestsrv', [
    '-dns01', `127.0.0.1:${dnsPort}`,
    '-management', `127.0.0.1:${mgmtPort}`,
    '-http01', '', '-https01', '', '-tlsalpn01', '',
  ], log);
  acme.children.push(chall);
  acme.challtestsrvUrl = `http://127.0.0.1:${mgmtPort}`;
  // Any HTTP answer means it is listening (its management API has no health route).
  await until('pebble-challtestsrv', () => get(`${acme.challtestsrvUrl}/`), chall, log);

  // pebble's own HTTPS certificate, from a CA of ours: what the cloud is told to trust.
  const ca = makeCa(path.join(dir, 'directory-ca'), 'Outpost test ACME directory CA');
  acme.directoryCa = path.join(dir, 'directory-ca.pem');
  fs.copyFileSync(ca.cert, acme.directoryCa);
  const server = issue(ca, path.join(dir, 'pebble'), ['127.0.0.1', 'localhost']);
  const [apiPort, adminPort] = [await freePort(), await freePort()];
  const config = path.join(dir, 'pebble-config.json');
  fs.writeFileSync(config, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${apiPort}`,
      managementListenAddress: `127.0.0.1:${adminPort}`,
      certificate: server.cert,
      privateKey: server.key,
      // Only DNS-01 is used; these are where pebble would look for the other challenges.
      httpPort: 5002,
      tlsPort: 5001,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
      // 90 days, as Let's Encrypt issues (pebble's default is five years).
      certificateValidityPeriod: 90 * 24 * 3600,
    },
  }, null, 2));
  const plog = path.join(dir, 'pebble.log');
  const pebble = launch('pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dnsPort}`, '-strict=false'], plog, {
    // Validate at once instead of after a random sleep; accept every nonce the first time.
    PEBBLE_VA_NOSLEEP: '1',
    PEBBLE_WFE_NONCEREJECT: '0',
  });
  acme.children.push(pebble);
  const caPem = fs.readFileSync(acme.directoryCa);
  acme.directory = `https://127.0.0.1:${apiPort}/dir`;
  await until('pebble', async () => {
    const r = await get(acme.directory, { ca: caPem });
    if (r.status !== 200 || !JSON.parse(r.body).newOrder) throw new Error(`GET ${acme.directory}: ${r.status} ${r.body}`);
  }, pebble, plog);
  const root = await get(`https://127.0.0.1:${adminPort}/roots/0`, { ca: caPem });
  if (root.status !== 200 || !root.body.includes('BEGIN CERTIFICATE')) throw new Error(`pebble's root: ${root.status} ${root.body}`);
  acme.root = path.join(dir, 'pebble-root.pem');
  fs.writeFileSync(acme.root, root.body);
}
