// Starts a real Outpost for a test: a cloud (`outpost-cloud init` + `run`), one hub
// enrolled and provisioned through the CLIs (`enroll-relay`, `outpost-relay init`) and
// running with its uplink to the cloud, exactly as scripts/demo.sh does. Tokens come from
// `outpost-cloud token`.

import { spawn, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { HUB_MODE, HUB_NAME, issue, testCa } from './tls.mjs';

export const ROOT = path.resolve(import.meta.dirname, '../../..');
export const BIN = process.env.HARNESS_BIN_DIR ?? path.join(ROOT, 'target/debug');
// Each mode keeps its own screenshots and logs: the same scenario names run in both.
/** The domain a stack's cloud names its hubs under when it gets their certificates by ACME. */
export const ACME_DOMAIN = 'hubs.test';
export const ARTIFACTS = path.resolve(import.meta.dirname, HUB_MODE === 'name' ? '../artifacts/by-name' : '../artifacts');

const EVENT_TIMEOUT_MS = 30_000;
const live = new Set();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function bin(name) {
  const p = path.join(BIN, name);
  if (!fs.existsSync(p)) throw new Error(`${p} not found: run \`cargo build --bins\` first (or set HARNESS_BIN_DIR)`);
  return p;
}

function run(name, args) {
  return execFileSync(bin(name), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** A TCP port free on 127.0.0.1 now. */
function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let httpsFlag = null;

/**
 * Whether this hub binary has `run --https` (its listener under its own LAN name). Such a
 * hub serves it by default on 0.0.0.0:8443; every hub of the suite gets a free port on
 * 127.0.0.1 instead, so that a hub never takes a port another program (or hub) holds.
 */
function hubHasHttps() {
  httpsFlag ??= / --https /.test(run('outpost-relay', ['run', '--help']));
  return httpsFlag;
}

function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns a server and resolves with its first stdout line (where it says what it listens on). */
function server(name, args, logPath, env = {}) {
  return new Promise((resolve, reject) => {
    const log = fs.openSync(logPath, 'a');
    const child = spawn(bin(name), args, {
      stdio: ['ignore', 'pipe', log],
      // Hermetic: no OUTPOST_SECTION__KEY settings leak in from the caller's environment.
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OUTPOST_'))), RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
    });
    // A server left running by a failed test must not keep this process alive (the
    // exit handler above kills it).
    child.unref();
    child.stdout.unref?.();
    fs.closeSync(log);
    live.add(child);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not say where it listens within ${EVENT_TIMEOUT_MS} ms; log: ${logPath}`));
    }, EVENT_TIMEOUT_MS);
    const lines = readline.createInterface({ input: child.stdout });
    let first = true;
    lines.on('line', (line) => {
      if (!first) return; // keep draining
      first = false;
      clearTimeout(timer);
      resolve({ child, line });
    });
    child.on('exit', (code, signal) => {
      live.delete(child);
      if (first) {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${fs.readFileSync(logPath, 'utf8')}`));
      }
    });
  });
}

function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

export class Stack {
  /**
   * `opts.encryptedRooms`: rooms whose bodies must be end-to-end encrypted, on the hub
   * (OUTPOST_POLICY__ENCRYPTED_ROOMS) and on the cloud (`[policy]` in cloud.toml).
   * `opts.hub`: 'address' (plain HTTP, `hubUrl` = http://127.0.0.1:PORT) or 'name' (HTTPS
   * with a certificate for HUB_NAME from the run's test CA, `hubUrl` = https://HUB_NAME:PORT);
   * defaults to the run's mode (OUTPOST_BROWSER_HUB), and to 'address' with `acme`.
   * `opts.acme`: a CA from lib/acme.mjs (`startAcme()`). The cloud gets its hubs' LAN
   * certificates from it (`[acme]` in cloud.toml, domain ACME_DOMAIN), and the hub serves
   * HTTPS under its name (`lanName`, `hub-<name>.hubs.test`) on `httpsAddr` once it has one;
   * see `lanHttps()` and `waitLanHttps()`.
   */
  static async start(name, opts = {}) {
    const s = new Stack();
    try {
      return await s.#start(name, opts);
    } catch (e) {
      await s.close().catch(() => {});
      throw e;
    }
  }

  async #start(name, { encryptedRooms = [], acme = null, hub = acme ? 'address' : HUB_MODE } = {}) {
    const s = this;
    s.name = name;
    s.hubEnv = encryptedRooms.length ? { OUTPOST_POLICY__ENCRYPTED_ROOMS: encryptedRooms.join(',') } : {};
    s.dir = fs.mkdtempSync(path.join(os.tmpdir(), `outpost-browser-${name}-`));
    s.cloudDir = path.join(s.dir, 'cloud');
    s.relayDir = path.join(s.dir, 'relay');
    if (hub === 'name') {
      const tls = issue(testCa(), path.join(s.dir, 'tls', 'hub'), [HUB_NAME]);
      s.hubEnv.OUTPOST_SERVER__TLS_CERT = tls.cert;
      s.hubEnv.OUTPOST_SERVER__TLS_KEY = tls.key;
      s.hubHost = HUB_NAME;
    } else if (hub !== 'address') {
      throw new Error(`Stack.start: hub must be 'address' or 'name', not ${hub}`);
    }
    run('outpost-cloud', ['init', '--dir', s.cloudDir]);
    if (encryptedRooms.length) {
      const file = path.join(s.cloudDir, 'cloud.toml');
      const toml = fs.readFileSync(file, 'utf8');
      const line = /^encrypted_rooms = \[\]$/m;
      if (!line.test(toml)) throw new Error(`${file} has no line \`encrypted_rooms = []\` to replace:\n${toml}`);
      fs.writeFileSync(file, toml.replace(line, `encrypted_rooms = ${JSON.stringify(encryptedRooms)}`));
    }
    if (acme) {
      const file = path.join(s.cloudDir, 'cloud.toml');
      // In place of any [acme] table `init` wrote (a table may appear only once).
      const toml = fs.readFileSync(file, 'utf8').replace(/^\[acme\]\n(?:(?!\[).*\n?)*/m, '');
      fs.writeFileSync(file, `${toml.trimEnd()}\n\n${[
        '[acme]',
        `directory = ${JSON.stringify(acme.directory)}`,
        `directory_ca = ${JSON.stringify(acme.directoryCa)}`,
        `domain = ${JSON.stringify(ACME_DOMAIN)}`,
        'dns = "challtestsrv"',
        `challtestsrv_url = ${JSON.stringify(acme.challtestsrvUrl)}`,
        // Every test is a hub's first certificate; a restarted hub may ask again at once.
        'min_reissue_secs = 0',
      ].join('\n')}\n`);
      s.lanName = `hub-${name}.${ACME_DOMAIN}`;
    }
    if (acme || hubHasHttps()) s.httpsAddr = `127.0.0.1:${await freeTcpPort()}`;
    s.quic = `127.0.0.1:${await freeUdpPort()}`;
    const bundle = path.join(s.dir, 'hub.bundle.json');
    run('outpost-cloud', ['enroll-relay', '--dir', s.cloudDir, '--relay', `hub-${name}`, '--cloud-addr', s.quic, '--out', bundle]);
    run('outpost-relay', ['init', '--dir', s.relayDir, '--bundle', bundle]);
    fs.rmSync(bundle); // it holds the hub's private key
    // "outpost-cloud listening on ws://A/ws quic=B"
    const cloud = await server('outpost-cloud', ['run', '--dir', s.cloudDir, '--ws', '127.0.0.1:0', '--quic', s.quic], path.join(s.dir, 'cloud.log'));
    s.cloud = cloud.child;
    const ws = cloud.line.split(' ').find((w) => w.startsWith('ws://'));
    if (!ws) throw new Error(`unexpected first line from the cloud: ${cloud.line}`);
    s.cloudUrl = ws.replace('ws://', 'http://').replace(/\/ws$/, '');
    await s.startHub('127.0.0.1:0');
    return s;
  }

  /** Starts the hub; `addr` defaults to the address it had before (so open pages find it again). */
  async startHub(addr = this.hubAddr) {
    const https = this.httpsAddr ? ['--https', this.httpsAddr] : [];
    const hub = await server('outpost-relay', ['run', '--dir', this.relayDir, '--ws', addr, ...https, '--cloud', this.quic], path.join(this.dir, 'hub.log'), this.hubEnv);
    // "outpost-relay listening on ws://A/ws" (wss:// when it serves TLS)
    const url = hub.line.split(' ').pop();
    const want = this.hubHost ? 'wss://' : 'ws://';
    if (!url.startsWith(want)) throw new Error(`unexpected first line from the hub (expected ${want}): ${hub.line}`);
    this.hub = hub.child;
    this.hubAddr = url.replace(want, '').replace(/\/ws$/, '');
    this.hubUrl = this.hubHost ? `https://${this.hubHost}:${this.hubPort}` : `http://${this.hubAddr}`;
  }

  /** The port of the hub's listener. */
  get hubPort() {
    return Number(this.hubAddr.split(':').pop());
  }

  /** The hub's HTTPS origin under its LAN name (stacks with `acme`). */
  get lanUrl() {
    return `https://${this.lanName}:${this.httpsAddr.split(':').pop()}`;
  }

  /** `lan_https` of the hub's /status.json (on its plain listener). */
  async lanHttps() {
    const res = await fetch(`http://${this.hubAddr}/status.json`);
    if (!res.ok) throw new Error(`GET /status.json: ${res.status} ${await res.text()}`);
    return (await res.json()).lan_https;
  }

  /** Resolves with `lan_https` once the hub holds a valid certificate for its name. */
  async waitLanHttps(timeoutMs = 120_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lan = await this.lanHttps();
      if (lan?.state === 'valid') return lan;
      if (Date.now() > deadline) {
        throw new Error(`the hub has no valid LAN certificate after ${timeoutMs} ms: ${JSON.stringify(lan)} (hub.log and cloud.log go to artifacts/${this.name}/)`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** SIGTERM to the hub, as systemd stops it; resolves with its exit code. */
  async stopHub() {
    const child = this.hub;
    this.hub = null;
    child.kill('SIGTERM');
    return exited(child);
  }

  /** SIGTERM to the cloud; resolves with its exit code. */
  async stopCloud() {
    const child = this.cloud;
    this.cloud = null;
    child.kill('SIGTERM');
    return exited(child);
  }

  /** Starts the cloud again on its QUIC address (the hub reconnects by itself). */
  async startCloud() {
    const cloud = await server('outpost-cloud', ['run', '--dir', this.cloudDir, '--ws', '127.0.0.1:0', '--quic', this.quic], path.join(this.dir, 'cloud.log'));
    this.cloud = cloud.child;
  }

  token(user, role, rooms, ttl = '1d') {
    return run('outpost-cloud', ['token', '--dir', this.cloudDir, '--user', user, '--role', role, ...rooms.flatMap((r) => ['--room', r]), '--ttl', ttl]);
  }

  /** Stops everything and keeps the logs in artifacts/<name>/. */
  async close() {
    for (const child of [this.hub, this.cloud]) {
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited(child);
      clearTimeout(t);
    }
    if (!this.dir) return;
    const out = path.join(ARTIFACTS, this.name);
    fs.mkdirSync(out, { recursive: true });
    for (const f of ['hub.log', 'cloud.log']) {
      const p = path.join(this.dir, f);
      if (fs.existsSync(p)) fs.copyFileSync(p, path.join(out, f));
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
