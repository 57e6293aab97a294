// Keeps the app shell on the device so the page opens with no hub reachable.
// Bump VERSION when the files change: browsers check this file on every visit.
const VERSION = 'outpost-shell-13';
const SHELL = ['/', '/index.html', '/app.js', '/protocol.js', '/alerts.js', '/presence.js', '/roomkeys.js', '/view.js', '/e2e.js', '/conn.js', '/db.js', '/uuid.js', '/media.js', '/attach.js', '/sha256.js', '/clinical.js', '/queue.js', '/queuepanel.js', '/derived.js', '/record.js', '/recordpanel.js', '/call.js', '/callpanel.js', '/style.css', '/manifest.json', '/icon.svg'];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(VERSION)
      .then((cache) => cache.addAll(SHELL.map((p) => new Request(p, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('outpost-shell-') && k !== VERSION).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// A tap on an emergency's notification brings the app forward (or opens it).
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((all) => {
      const open = all.find((c) => new URL(c.url).origin === self.location.origin);
      return open ? open.focus() : self.clients.openWindow('/');
    }),
  );
});

// Shell files: answer from the cache at once and refresh the copy in the background
// (stale-while-revalidate). Everything else (/ws, /status, /api, ...) goes to the network.
self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  const key = req.mode === 'navigate' && (url.pathname === '/' || url.pathname === '/index.html') ? '/index.html' : url.pathname;
  if (!SHELL.includes(key)) return;
  event.respondWith(
    caches.open(VERSION).then(async (cache) => {
      const cached = await cache.match(key);
      const fresh = fetch(req)
        .then((res) => {
          if (res.ok) cache.put(key, res.clone());
          return res;
        })
        .catch(() => null);
      if (cached) {
        event.waitUntil(fresh);
        return cached;
      }
      return (await fresh) ?? new Response('Outpost is not reachable and this device has no copy of the app yet.', { status: 503, headers: { 'content-type': 'text/plain' } });
    }),
  );
});
