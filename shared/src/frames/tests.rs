use proptest::prelude::*;

use super::*;

fn id_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._:@-]{0,20}"
}

fn room() -> impl Strategy<Value = RoomId> {
    id_strategy().prop_map(|s| RoomId::new(s).unwrap_or_else(|e| panic!("{e}")))
}
fn user() -> impl Strategy<Value = UserId> {
    id_strategy().prop_map(|s| UserId::new(s).unwrap_or_else(|e| panic!("{e}")))
}
fn device() -> impl Strategy<Value = DeviceId> {
    "[ -~]{1,64}".prop_map(|s| DeviceId::new(s).unwrap_or_else(|e| panic!("{e}")))
}
fn kind() -> impl Strategy<Value = MessageKind> {
    "[a-z]{1,10}".prop_map(|s| MessageKind::new(s).unwrap_or_else(|e| panic!("{e}")))
}
fn mid() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>().prop_map(MessageId::from_bytes)
}
fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![Just(Priority::Bulk), Just(Priority::Normal), Just(Priority::Urgent), Just(Priority::Emergency)]
}
fn json_body() -> impl Strategy<Value = Body> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,30}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| Body::from_value(&v).unwrap_or_else(|e| panic!("{e}")))
}
fn outgoing() -> impl Strategy<Value = OutgoingMsg> {
    (mid(), room(), kind(), priority(), json_body(), any::<u64>(), proptest::option::of(mid())).prop_map(
        |(id, room, kind, priority, body, seq, reply_to)| OutgoingMsg {
            id,
            room,
            kind,
            priority,
            body,
            seq: Seq(seq),
            reply_to,
        },
    )
}
fn positioned() -> impl Strategy<Value = Positioned> {
    (outgoing(), user(), device(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(m, from, device, hlc, at, cursor)| Positioned {
            cursor: Cursor(cursor),
            msg: MessageBody {
                id: m.id,
                room: m.room,
                kind: m.kind,
                priority: m.priority,
                body: m.body,
                seq: m.seq,
                reply_to: m.reply_to,
                from,
                device,
                hlc: Hlc(hlc),
                at,
            },
        },
    )
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        ("\\PC{0,40}", device(), proptest::option::of(any::<u64>()), proptest::option::of("[a-f0-9-]{1,36}")).prop_map(
            |(token, device, cursor, epoch)| ClientFrame::Hello(Hello {
                token,
                device,
                cursor: cursor.map(Cursor),
                epoch: epoch.map(Epoch),
            })
        ),
        outgoing().prop_map(|msg| ClientFrame::Send(Send { msg })),
        any::<u64>().prop_map(|c| ClientFrame::Ack(Ack { cursor: Cursor(c) })),
        (room(), mid()).prop_map(|(room, id)| ClientFrame::Read(Read { room, id })),
        (room(), any::<bool>()).prop_map(|(room, active)| ClientFrame::Typing(Typing { room, active })),
        prop_oneof![Just(PresenceStatus::Online), Just(PresenceStatus::Away)]
            .prop_map(|status| ClientFrame::Presence(Presence { status })),
        (
            room(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0u32..500),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(room, before, limit, before_hlc)| ClientFrame::History(History {
                room,
                before: before.map(Cursor),
                limit,
                before_hlc: before_hlc.map(Hlc),
            })),
        room().prop_map(|room| ClientFrame::Join(RoomRef { room })),
        room().prop_map(|room| ClientFrame::Leave(RoomRef { room })),
        Just(ClientFrame::Ping),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (0usize..ErrorCode::ALL.len()).prop_map(|i| ErrorCode::ALL[i])
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let state = prop_oneof![
        Just(ReceiptState::Stored),
        Just(ReceiptState::Forwarded),
        Just(ReceiptState::Delivered),
        Just(ReceiptState::Read)
    ];
    prop_oneof![
        ("[a-f0-9]{8}", any::<u64>(), user(), prop::collection::vec(room(), 0..4)).prop_map(
            |(epoch, cursor, user, rooms)| ServerFrame::Welcome(Welcome {
                epoch: Epoch(epoch),
                cursor: Cursor(cursor),
                user,
                rooms,
                role: Some(Role::Worker),
                encrypted: vec![],
                pruned_through: (cursor % 3 == 0).then_some(Cursor(cursor / 2)),
            })
        ),
        (mid(), any::<u64>(), proptest::option::of(any::<u64>()), any::<bool>()).prop_map(|(id, c, h, duplicate)| {
            ServerFrame::Stored(Stored { id, cursor: Cursor(c), hlc: h.map(crate::hlc::Hlc), duplicate })
        }),
        positioned().prop_map(ServerFrame::Message),
        (mid(), state, proptest::option::of(user()), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
            |(id, state, by, at, cursor)| ServerFrame::Receipt(Receipt {
                id,
                state,
                by,
                at,
                room: None,
                cursor: cursor.map(Cursor)
            })
        ),
        ("[a-f0-9]{8}", any::<u64>())
            .prop_map(|(e, c)| ServerFrame::Resync(Resync { epoch: Epoch(e), cursor: Cursor(c) })),
        (error_code(), "\\PC{0,40}", proptest::option::of(mid()))
            .prop_map(|(code, message, id)| ServerFrame::Error(ErrorFrame { code, message, id })),
        (room(), user(), any::<bool>()).prop_map(|(room, user, active)| ServerFrame::Typing(TypingEvent {
            room,
            user,
            active
        })),
        (user(), proptest::option::of(any::<u64>())).prop_map(|(user, last_seen)| {
            ServerFrame::Presence(PresenceEvent { user, status: PresenceStatus::Offline, last_seen })
        }),
        (room(), prop::collection::vec(positioned(), 0..3), any::<bool>(), 0u32..4, any::<bool>()).prop_map(
            |(room, messages, more, from_cloud, gap)| ServerFrame::History(HistoryPage {
                room,
                messages,
                more,
                from_cloud,
                unavailable: gap.then(HistoryGap::in_cloud),
            })
        ),
        Just(ServerFrame::Pong),
        ("[A-Za-z0-9._-]{0,80}", any::<u64>())
            .prop_map(|(token, expires_at)| ServerFrame::Token(TokenRenewed { token, expires_at })),
    ]
}

const PREFIX: &str = "{\"v\":1,\"type\":";

proptest! {
    #[test]
    fn every_client_frame_round_trips(f in client_frame()) {
        let text = f.encode();
        let prefixed = text.starts_with(PREFIX);
        prop_assert!(prefixed);
        prop_assert_eq!(ClientFrame::decode(&text), Ok(f));
    }

    #[test]
    fn every_server_frame_round_trips(f in server_frame()) {
        let text = f.encode();
        let prefixed = text.starts_with(PREFIX);
        prop_assert!(prefixed);
        prop_assert_eq!(ServerFrame::decode(&text), Ok(f));
    }

    /// The type is read from the prefix when the frame opens as `encode` writes it, and
    /// by a parse of its own otherwise: both read the same frame the same way.
    #[test]
    fn key_order_does_not_change_a_frame(f in client_frame()) {
        let text = f.encode();
        let reordered = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        prop_assert_eq!(ClientFrame::decode(&reordered), ClientFrame::decode(&text));
    }

    /// Arbitrary text never panics the decoder; it is either a frame or a coded error.
    #[test]
    fn garbage_is_refused_with_a_code(s in "\\PC{0,200}") {
        if let Err(e) = ClientFrame::decode(&s) {
            prop_assert!(matches!(e.code, ErrorCode::BadFrame | ErrorCode::UnsupportedVersion));
        }
    }
}

fn code_of(text: &str) -> Option<ErrorCode> {
    ClientFrame::decode(text).err().map(|e| e.code)
}

#[test]
fn version_and_type_errors_have_their_own_codes() {
    assert_eq!(code_of(r#"{"v":2,"type":"ping"}"#), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(code_of(r#"{"v":"1","type":"ping"}"#), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(code_of(r#"{"v":1,"type":"dance"}"#), Some(ErrorCode::BadFrame));
    assert_eq!(code_of(r#"{"v":1}"#), Some(ErrorCode::BadFrame));
    assert_eq!(code_of("not json"), Some(ErrorCode::BadFrame));
    assert_eq!(code_of("[1,2]"), Some(ErrorCode::BadFrame));
    assert_eq!(code_of(r#"{"type":"ping"}"#), None, "browsers' ping has no v");
}

#[test]
fn a_frame_whose_type_reads_from_its_prefix_is_still_parsed_whole() {
    let ok = r#"{"v":1,"type":"ack","cursor":5}"#;
    assert_eq!(ClientFrame::decode(ok), Ok(ClientFrame::Ack(Ack { cursor: Cursor(5) })));
    assert_eq!(code_of(r#"{"v":1,"type":"ack","cursor":5"#), Some(ErrorCode::BadFrame), "unterminated");
    assert_eq!(code_of(r#"{"v":1,"type":"ack","cursor":5} trailing"#), Some(ErrorCode::BadFrame));
    assert_eq!(code_of(r#"{"v":1,"type":"ack","cursor":"five"}"#), Some(ErrorCode::BadFrame));
    assert_eq!(code_of(r#"{"v":1,"type":"ping"} trailing"#), Some(ErrorCode::BadFrame), "no body pass for ping");
    assert_eq!(code_of(r#"{"v":1,"type":"dance","x":1}"#), Some(ErrorCode::BadFrame));
    assert_eq!(code_of(r#"{"v":10,"type":"ack","cursor":5}"#), Some(ErrorCode::UnsupportedVersion));
    // An escaped name is unescaped by the general path, as JSON says.
    assert_eq!(ClientFrame::decode(r#"{"v":1,"type":"a\u0063k","cursor":5}"#), ClientFrame::decode(ok));
}

#[test]
fn unknown_fields_are_ignored() {
    let f = ClientFrame::decode(r#"{"v":1,"type":"ack","cursor":5,"extra":{"x":1}}"#);
    assert_eq!(f, Ok(ClientFrame::Ack(Ack { cursor: Cursor(5) })));
}

#[test]
fn refused_send_still_names_its_id() {
    let text = r#"{"v":1,"type":"send","msg":{"id":"0190b6d2-7f3a-7000-8000-000000000001","room":"bad room","kind":"chat","body":1,"seq":1}}"#;
    let e = ClientFrame::decode(text).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::BadFrame));
    assert_eq!(e.and_then(|e| e.id).map(|i| i.to_string()), Some("0190b6d2-7f3a-7000-8000-000000000001".to_owned()));
}

#[test]
fn body_depth_counts_nesting_outside_strings() {
    let depth = |json: &str| Body::from_json(json).map(|b| b.depth()).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(depth("1"), 0);
    assert_eq!(depth(r#""[[[{{""#), 0);
    assert_eq!(depth("[]"), 1);
    assert_eq!(depth(r#"{"a":[1,{"b":"]]]\"[["}],"c":{}}"#), 3);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(depth(&deep), 10_000, "serde_json's recursion limit does not stop a raw body");
}

#[test]
fn body_is_kept_verbatim() {
    let text = r#"{"v":1,"type":"send","msg":{"id":"0190b6d2-7f3a-7000-8000-000000000001","room":"r","kind":"chat","priority":"emergency","body":{"b":[1, 2 ,3]},"seq":9}}"#;
    match ClientFrame::decode(text) {
        Ok(ClientFrame::Send(s)) => {
            assert_eq!(s.msg.body.as_str(), r#"{"b":[1, 2 ,3]}"#);
            assert_eq!(s.msg.priority, Priority::Emergency);
        }
        other => panic!("unexpected {other:?}"),
    }
}
