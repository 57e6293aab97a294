// Identifiers made on the device. crypto.getRandomValues works on plain http:// too
// (crypto.randomUUID needs a secure context, which a village hub on the LAN is not).

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const format = (h) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;

/** A random (version 4) UUID. */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format(hex(b));
}

let lastMs = 0;
let counter = 0;

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version 7, 12 bits of counter
 * (monotonic within one millisecond on this page), variant 10, 62 random bits.
 * Ids made by one page are strictly increasing, even if the clock steps back.
 */
export function uuid7(now = Date.now()) {
  let ms = Math.max(now, lastMs);
  if (ms === lastMs) {
    counter += 1;
    if (counter > 0xfff) {
      ms += 1;
      counter = 0;
    }
  } else {
    counter = crypto.getRandomValues(new Uint16Array(1))[0] & 0x3ff; // leave room to count up
  }
  lastMs = ms;
  const b = crypto.getRandomValues(new Uint8Array(16));
  // 48-bit timestamp, big-endian (2**32 splits it without losing precision).
  const hi = Math.floor(ms / 2 ** 32);
  const lo = ms >>> 0;
  b[0] = (hi >>> 8) & 0xff;
  b[1] = hi & 0xff;
  b[2] = (lo >>> 24) & 0xff;
  b[3] = (lo >>> 16) & 0xff;
  b[4] = (lo >>> 8) & 0xff;
  b[5] = lo & 0xff;
  b[6] = 0x70 | ((counter >>> 8) & 0x0f);
  b[7] = counter & 0xff;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format(hex(b));
}
