// SHA-256 (FIPS 180-4). Browsers offer crypto.subtle only in secure contexts, and a hub
// on the LAN is usually served over plain http://, so uploads need this fallback to name
// a file by its hash. It is incremental: a file is fed in slices and never copied whole.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const INIT = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

export class Sha256 {
  constructor() {
    this.h = new Uint32Array(INIT);
    this.w = new Uint32Array(64);
    this.block = new Uint8Array(64); // a partial block carried between update() calls
    this.fill = 0;
    this.bytes = 0; // total length so far (exact up to 2**53)
    this.done = false;
  }

  /** Adds bytes (a Uint8Array, or an ArrayBuffer). */
  update(data) {
    if (this.done) throw new Error('sha256: update after digest');
    const d = data instanceof Uint8Array ? data : new Uint8Array(data);
    this.bytes += d.length;
    let i = 0;
    if (this.fill) {
      const n = Math.min(64 - this.fill, d.length);
      this.block.set(d.subarray(0, n), this.fill);
      this.fill += n;
      i = n;
      if (this.fill < 64) return this;
      this.#compress(this.block, 0);
      this.fill = 0;
    }
    // Whole blocks straight from the input: no copy.
    for (; i + 64 <= d.length; i += 64) this.#compress(d, i);
    if (i < d.length) {
      this.block.set(d.subarray(i), 0);
      this.fill = d.length - i;
    }
    return this;
  }

  /** The 32-byte digest; the hash cannot be updated afterwards. */
  digest() {
    if (this.done) throw new Error('sha256: digest twice');
    const bits = this.bytes * 8;
    const pad = new Uint8Array(this.fill < 56 ? 64 - this.fill : 128 - this.fill);
    pad[0] = 0x80;
    // The length in bits, big-endian in the last 8 bytes (split at 2**32 without bit ops,
    // which would truncate it to 32 bits).
    const hi = Math.floor(bits / 2 ** 32);
    const lo = bits >>> 0;
    const n = pad.length;
    pad[n - 8] = hi >>> 24;
    pad[n - 7] = hi >>> 16;
    pad[n - 6] = hi >>> 8;
    pad[n - 5] = hi;
    pad[n - 4] = lo >>> 24;
    pad[n - 3] = lo >>> 16;
    pad[n - 2] = lo >>> 8;
    pad[n - 1] = lo;
    const total = this.bytes;
    this.update(pad);
    this.bytes = total;
    this.done = true;
    const out = new Uint8Array(32);
    for (let j = 0; j < 8; j++) {
      out[j * 4] = this.h[j] >>> 24;
      out[j * 4 + 1] = this.h[j] >>> 16;
      out[j * 4 + 2] = this.h[j] >>> 8;
      out[j * 4 + 3] = this.h[j];
    }
    return out;
  }

  #compress(b, o) {
    const w = this.w;
    for (let j = 0; j < 16; j++, o += 4) w[j] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
    for (let j = 16; j < 64; j++) {
      const x = w[j - 15];
      const y = w[j - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[j] = (w[j - 16] + s0 + w[j - 7] + s1) | 0;
    }
    const h = this.h;
    let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (let j = 0; j < 64; j++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[j] + w[j]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
}

export const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const subtle = () => (globalThis.isSecureContext && globalThis.crypto?.subtle) || null;

/** The digest of a small buffer (an upload chunk): WebCrypto where the page may use it. */
export async function digestBytes(bytes) {
  const s = subtle();
  if (s) return new Uint8Array(await s.digest('SHA-256', bytes));
  return new Sha256().update(bytes).digest();
}

const SLICE = 1 << 20;

/**
 * The lowercase hex SHA-256 of a Blob, read in 1 MiB slices. WebCrypto has no incremental
 * interface, so it is used only for blobs small enough to hold twice in memory.
 */
export async function digestBlob(blob, onProgress = () => {}) {
  const s = subtle();
  if (s && blob.size <= 32 * SLICE) return toHex(new Uint8Array(await s.digest('SHA-256', await blob.arrayBuffer())));
  const h = new Sha256();
  for (let off = 0; off < blob.size; off += SLICE) {
    h.update(new Uint8Array(await blob.slice(off, off + SLICE).arrayBuffer()));
    onProgress(Math.min(off + SLICE, blob.size) / blob.size);
  }
  return toHex(h.digest());
}
