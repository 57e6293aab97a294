//! Clinical events against real processes: a hub and a cloud refuse a body that does not
//! match its kind's schema with `invalid_event`, naming the field, and store nothing; a
//! valid event is stored, relayed and reaches the doctor as sent; other kinds pass as
//! before.

use outpost_tests::Cloud;
use outpost_tests::http::request;
use serde_json::{Value, json};

/// Test hubs retry the cloud within 2 s.
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn event(kind: &str, priority: &str, body: Value) -> Value {
    json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": kind, "priority": priority, "body": body})
}

fn vitals(systolic: u64) -> Value {
    json!({"patient": "KJ-0042", "taken_at": now_ms(),
           "bp": {"systolic": systolic, "diastolic": 80, "unit": "mmHg"},
           "spo2": {"value": 96, "unit": "%"}, "text": "BP and SpO2, bed 4"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_match_its_form_is_refused_by_field_and_a_valid_one_reaches_the_doctor()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud
        .provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?
        .start(FAST_RETRY)
        .await?;
    let tok = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = outpost_tests::Device::connect(&relay.ws_url()).await?;
    amina.hello(&tok, "amina-phone", None, None).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    // A blood pressure of 400 is a typing slip: refused, by field, with the message id.
    let bad = event("clinical.vitals", "normal", vitals(400));
    let id = amina.send_msg(bad).await?;
    let answer = amina.answer(&id).await?;
    assert_eq!((answer["type"].as_str(), answer["code"].as_str()), (Some("error"), Some("invalid_event")), "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains("bp.systolic") && message.contains("300"), "names the field and its range: {message}");

    // A misspelt field and a structured emergency sent at normal priority are refused too.
    let mut typo = vitals(120);
    typo["puls"] = json!({"value": 70, "unit": "bpm"});
    let id = amina.send_msg(event("clinical.vitals", "normal", typo)).await?;
    assert!(amina.answer(&id).await?["message"].as_str().is_some_and(|m| m.contains("`puls`")));
    let emergency = json!({"severity": "critical", "location": "ward 2", "what": "seizure"});
    let id = amina.send_msg(event("clinical.emergency", "normal", emergency.clone())).await?;
    assert!(amina.answer(&id).await?["message"].as_str().is_some_and(|m| m.contains("`priority`")));

    // The valid reading is stored and reaches the doctor byte for byte; a free-form kind
    // still passes as before.
    let good = amina.send_stored(event("clinical.vitals", "normal", vitals(128))).await?;
    amina.send_stored(event("report", "normal", json!({"anything": ["goes", 1]}))).await?;
    amina.send_stored(event("clinical.emergency", "emergency", emergency)).await?;
    let got = dr.messages(3).await?;
    let kinds: Vec<&str> = got.iter().filter_map(|f| f["msg"]["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "clinical.vitals").count(), 1, "only the valid reading: {kinds:?}");
    let reading = got.iter().find(|f| f["msg"]["id"] == good["id"]).map(|f| f["msg"]["body"].clone());
    assert_eq!(reading.map(|b| b["bp"]["systolic"].clone()), Some(json!(128)));

    // Nothing refused was stored: a fresh phone replays exactly the three accepted.
    let mut fresh = outpost_tests::Device::connect(&relay.ws_url()).await?;
    fresh.hello(&cloud.token("baraka", "worker", &["clinic"], "1h")?, "baraka-phone", None, None).await?;
    assert_eq!(fresh.settle("message").await?.len(), 3);

    // The cloud's HTTP API checks the same schema: 422 with the field.
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let post = |body: Value| {
        let base = cloud_proc.http_base();
        let neema = neema.clone();
        async move {
            let msg = json!({"id": outpost_tests::new_id(), "kind": "clinical.medication", "body": body});
            request(&base, "POST", "/api/rooms/clinic/messages", Some(&neema), Some(&msg)).await
        }
    };
    let dose = json!({"patient": "KJ-0042", "drug": "oxytocin", "dose": {"value": 10, "unit": "spoon"},
                      "route": "im", "given_at": now_ms()});
    let (status, refused) = post(dose.clone()).await?;
    assert_eq!((status, refused["code"].as_str()), (422, Some("invalid_event")), "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("dose.unit")), "{refused}");
    let mut fixed = dose;
    fixed["dose"]["unit"] = json!("IU");
    let (status, created) = post(fixed).await?;
    assert_eq!(status, 201, "{created}");
    Ok(())
}
