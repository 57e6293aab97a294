//! Relay enrollment: a client certificate under the cloud's relay CA, packed with the
//! cloud's public key and addresses into the bundle `outpost-relay init` consumes.

use outpost_shared::RelayId;
use outpost_shared::bundle::{Bundle, encode_key};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use crate::identity::{CloudIdentity, IdentityError};
use crate::layout::SERVER_NAME;

/// Makes the bundle for `relay`, which reaches the cloud at `cloud_addrs` (tried in this
/// order; checked by the caller with `outpost_shared::bundle::check_addresses`).
pub fn enroll_relay(id: &CloudIdentity, relay: &RelayId, cloud_addrs: &[String]) -> Result<Bundle, IdentityError> {
    let key = KeyPair::generate()?;
    // The relay id is the certificate's only name: the cloud reads it from the
    // verified chain to know which relay is speaking.
    let mut p = CertificateParams::new(vec![relay.as_str().to_owned()])?;
    p.distinguished_name.push(DnType::CommonName, relay.as_str());
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &id.ca_issuer()?)?;
    let mut bundle = Bundle {
        // Both set by `set_cloud_addrs`: the version follows from the number of addresses.
        v: 0,
        cloud_id: id.cloud_id.clone(),
        relay_id: relay.clone(),
        cloud_addr: String::new(),
        cloud_addrs: Vec::new(),
        cloud_server_name: SERVER_NAME.to_owned(),
        token_public_key: encode_key(&id.signer.public_key()),
        ca_cert_pem: id.ca_cert_pem.clone(),
        relay_cert_pem: cert.pem(),
        relay_key_pem: key.serialize_pem(),
    };
    bundle.set_cloud_addrs(cloud_addrs);
    Ok(bundle)
}
