//! Device tokens: `TokenVerifier::verify`, which the hub runs on the `hello.token` string
//! of every connecting device, offline, with the cloud's public key.
//!
//! The verifier's key and issuer are fixed here; the seed corpus holds tokens signed with
//! that key (valid, expired, other issuer, other key) so mutations reach claim parsing.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::Signer as _;
use outpost_shared::{TokenError, TokenSigner, TokenVerifier};

/// The fuzz cloud's signing seed. Public on purpose: it signs nothing real.
pub const SEED: [u8; 32] = [0x5a; 32];
/// The issuer the verifier accepts.
pub const ISSUER: &str = "cloud-fuzz";
/// The verifier's clock (2027-01-15), seconds since the Unix epoch.
pub const NOW: u64 = 1_800_000_000;

pub fn signer() -> TokenSigner {
    TokenSigner::from_seed(&SEED, ISSUER)
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(&signer().public_key(), ISSUER)
}

/// Base64url as JWT uses it, but forgiving about padding and trailing bits, so the check
/// below never blames the verifier for an encoding detail.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub fn check(data: &[u8]) {
    // `hello.token` is a JSON string, so always UTF-8 by the time the hub sees it.
    let token = String::from_utf8_lossy(data);
    let result = verifier().verify(&token, NOW);
    match &result {
        Ok(claims) => {
            assert!(claims.exp > NOW, "expired token accepted: exp {} now {NOW}", claims.exp);
            assert_eq!(claims.iss, ISSUER, "token of another issuer accepted");
            // Ed25519 signatures are deterministic: a token that verifies must carry
            // exactly the signature our key makes over its first two segments — or, for
            // a hub's renewal, its delegation and its ancestor must. Anything else means
            // verification was bypassed (alg confusion, `none`, ...).
            let ours: Vec<&str> = match (&claims.dlg, &claims.org) {
                (None, _) => vec![&token],
                (Some(dlg), Some(org)) => vec![dlg, org],
                (Some(_), None) => panic!("a renewal without its ancestor verified"),
            };
            let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
            for jws in ours {
                let (signed, sig) = jws.rsplit_once('.').unwrap_or_else(|| panic!("verified token has no signature"));
                let expected = key.sign(signed.as_bytes()).to_bytes();
                let got = LENIENT.decode(sig).unwrap_or_default();
                assert_eq!(got.as_slice(), expected.as_slice(), "a token verified without our signature");
            }
        }
        Err(TokenError::Expired { exp, now }) => assert!(*exp <= *now && *now == NOW),
        Err(TokenError::WrongIssuer { issuer }) => assert_ne!(issuer, ISSUER),
        Err(TokenError::BadKey { .. }) => panic!("verification reported a bad key"),
        Err(TokenError::Malformed { .. } | TokenError::BadSignature | TokenError::BadDelegation { .. }) => {}
    }
    // Verification is a pure function of the token and `now`.
    assert_eq!(verifier().verify(&token, NOW), result, "verification is not deterministic");
}
