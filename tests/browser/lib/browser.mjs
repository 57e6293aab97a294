// Chromium (Debian's /usr/bin/chromium) driven by playwright-core, one fresh profile per
// browser, so every browser is a separate device with its own storage and service worker.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS } from './stack.mjs';
import { HUB_MODE, HUB_NAME, nssHome, testCa } from './tls.mjs';

export const MOBILE = { width: 360, height: 740 };
export const DESKTOP = { width: 1280, height: 800 };
export const WAIT_MS = 60_000; // generous: the machine is shared with builds

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // A microphone that plays a tone and a camera that shows a moving test pattern, granted
  // without asking (voice notes, calls).
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // WebRTC host candidates with the machine's real addresses rather than mDNS (.local)
  // names, which a test machine may not resolve (calls: two phones on a hub's LAN).
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
];

/**
 * `opts.hosts`: extra names resolved to 127.0.0.1 (over plain http such a name is not a
 * secure context; over https with a trusted certificate it is).
 * `opts.trust`: CA certificates (PEM paths) this browser trusts for HTTPS, as an operator
 * installs an NGO's CA on its phones.
 * When the run opens hubs by name (OUTPOST_BROWSER_HUB=name) every browser also resolves
 * HUB_NAME and trusts the run's test CA.
 * `opts.serviceWorkers`: 'block' keeps the service worker out, so that page.route sees
 * every request the page makes.
 */
export async function openBrowser(name, viewport = MOBILE, { hosts = [], trust = [], serviceWorkers = 'allow' } = {}) {
  if (HUB_MODE === 'name') {
    hosts = [...new Set([HUB_NAME, ...hosts])];
    trust = [...new Set([testCa().cert, ...trust])];
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `outpost-chromium-${name}-`));
  const profile = path.join(dir, 'profile');
  // A HOME of its own: Chromium reads the roots it trusts from $HOME/.pki/nssdb.
  const env = trust.length ? { ...process.env, HOME: nssHome(path.join(dir, 'home'), trust) } : undefined;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: hosts.length ? ARGS.map((x) => (x.startsWith('--host-resolver-rules=') ? x.replace('=', `=${hosts.map((h) => `MAP ${h} 127.0.0.1, `).join('')}`) : x)) : ARGS,
    viewport,
    serviceWorkers,
    timeout: WAIT_MS,
    env,
  });
  context.setDefaultTimeout(WAIT_MS);
  // Record vibrations (headless Chromium has no motor to ask), and the tones the app plays
  // for news such as a booking confirmed (alerts.js chime() pushes to __tones when it exists).
  await context.addInitScript(() => {
    window.__vibrations = [];
    window.__tones = [];
    navigator.vibrate = (p) => {
      window.__vibrations.push(p);
      return true;
    };
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection|Failed to load resource|ERR_CONNECTION_REFUSED/.test(m.text())) errors.push(`${name}: console: ${m.text()}`);
  });
  return {
    name,
    context,
    page,
    errors,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function waitConnected(page) {
  await page.locator('#conn[data-state="ok"]').waitFor();
}

/** Signs in through the "Sign in" form, as a worker pasting a code. */
export async function signInWithForm(page, base, token) {
  await page.goto(`${base}/`);
  const form = page.getByRole('form', { name: 'Sign in' });
  await form.getByLabel('Sign-in code').fill(token);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await waitConnected(page);
}

/** Signs in by opening a sign-in link. */
export async function signInWithLink(page, base, token) {
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  await waitConnected(page);
}

export async function openRoom(page, room) {
  // On a phone the room view replaces the list: go back to it first.
  const back = page.getByRole('button', { name: 'Back to rooms' });
  if (await back.isVisible()) await back.click();
  await page.locator(`.room-btn[data-room="${room}"]`).click();
  await page.getByRole('heading', { name: `# ${room}` }).waitFor();
  await page.getByRole('textbox', { name: 'Message' }).waitFor();
}

export async function send(page, text) {
  await page.getByRole('textbox', { name: 'Message' }).fill(text);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
}

/** The bubbles of the open room that show `text`. */
export const bubbles = (page, text) => page.locator('#log li.msg', { hasText: text });

export async function waitState(page, text, state) {
  await page.locator(`#log li.msg[data-state="${state}"]`, { hasText: text }).waitFor();
}

/** Resolves once a service worker controls the page (the app shell is cached by then). */
export async function serviceWorkerReady(page) {
  await page.waitForFunction(() => navigator.serviceWorker?.controller != null);
}

export async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}
