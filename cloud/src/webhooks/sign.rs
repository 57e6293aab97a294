//! What a webhook request carries to prove it came from this cloud: an HMAC-SHA256, with
//! the endpoint's secret as the key, of the request's Unix time in seconds, a dot, and the
//! raw body. The time is signed so a captured request cannot be replayed later than the
//! receiver's tolerance; the body is signed byte for byte, so a receiver verifies it
//! before parsing it. Pure: the time is passed in.

/// `sha256=` and the lowercase hex HMAC (see the module's documentation).
pub const SIGNATURE_HEADER: &str = "x-outpost-signature";
/// The signed time: seconds since the Unix epoch, in decimal.
pub const TIMESTAMP_HEADER: &str = "x-outpost-timestamp";

/// The `X-Outpost-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_hmac_computed_elsewhere() {
        // python3: hmac.new(b"0123456789abcdef-his-secret",
        //                   b'1700000000.{"cursor":7,"msg":{"id":"x"}}', hashlib.sha256).hexdigest()
        let body = br#"{"cursor":7,"msg":{"id":"x"}}"#;
        assert_eq!(
            signature(b"0123456789abcdef-his-secret", 1_700_000_000, body),
            "sha256=ee6bef631e5bcb5aad709f367a5e844860cba49ed6c60104507b09c9c3dd949d"
        );
    }

    #[test]
    fn the_time_the_body_and_the_secret_each_change_it() {
        let base = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert_ne!(base, signature(b"0123456789abcdef", 1_700_000_001, b"{}"));
        assert_ne!(base, signature(b"0123456789abcdef", 1_700_000_000, b"{ }"));
        assert_ne!(base, signature(b"0123456789abcdeF", 1_700_000_000, b"{}"));
    }
}
