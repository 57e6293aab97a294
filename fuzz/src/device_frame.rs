//! Device frames: `ClientFrame::decode` (what the hub and the cloud read from phones and
//! browsers) and `ServerFrame::decode` (what the cloud's and the tests' clients read).
//!
//! The hub only decodes WebSocket text messages, which tungstenite has already checked
//! to be UTF-8, and refuses binary messages before decoding (engine/src/session.rs). So an
//! input that is not UTF-8 is exactly what a hub never decodes; rather than waste it, it
//! is decoded after lossy conversion, which is still a string a device could have sent.

use outpost_shared::{ClientFrame, ErrorCode, ServerFrame};

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_client(&text);
    check_server(&text);
}

fn check_client(text: &str) {
    match ClientFrame::decode(text) {
        Ok(frame) => {
            // Unknown fields are dropped and `v` is filled in, but the frame itself must
            // survive: the hub re-encodes nothing it stores, yet clients and tests rely
            // on encode/decode agreeing.
            let wire = frame.encode();
            match ClientFrame::decode(&wire) {
                Ok(again) => assert_eq!(again, frame, "client frame changed on re-encoding: {wire}"),
                Err(e) => panic!("re-encoded client frame does not decode: {e}: {wire}"),
            }
        }
        Err(e) => {
            // A device is only ever told one of these two codes for a frame it cannot parse.
            assert!(
                matches!(e.code, ErrorCode::BadFrame | ErrorCode::UnsupportedVersion),
                "unexpected error code {:?}",
                e.code
            );
        }
    }
}

fn check_server(text: &str) {
    if let Ok(frame) = ServerFrame::decode(text) {
        let wire = frame.encode();
        match ServerFrame::decode(&wire) {
            Ok(again) => assert_eq!(again, frame, "server frame changed on re-encoding: {wire}"),
            Err(e) => panic!("re-encoded server frame does not decode: {e}: {wire}"),
        }
    }
}
