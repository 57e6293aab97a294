//! A patient's shared record against real processes (docs/workflows.md, "A shared patient
//! record"): two phones edit the same field without seeing each other's edit, and the hub
//! and the cloud both show the conflict, the same way, until someone resolves it; in the
//! doctor's field the doctor's edit stands; a record survives a kill -9 and is never
//! pruned; an edit must carry its sender's role.

use outpost_tests::clinic::{Clinic, message_of};
use outpost_tests::http::request;
use serde_json::{Value, json};

fn edit(field: &str, value: Value, base: &Value, role: &str) -> Value {
    json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "record.edit",
           "body": {"patient": "KJ-0042", "field": field, "value": value, "base": base, "role": role}})
}

async fn record(base: &str, token: &str) -> anyhow::Result<Value> {
    let (status, body) = request(base, "GET", "/api/rooms/clinic/records/KJ-0042", Some(token), None).await?;
    anyhow::ensure!(status == 200, "record answered {status}: {body}");
    Ok(body)
}

fn field<'a>(rec: &'a Value, name: &str) -> &'a Value {
    rec["fields"].as_array().and_then(|f| f.iter().find(|x| x["field"] == name)).unwrap_or(&Value::Null)
}

fn conflict_values(f: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        f["conflict"].as_array().into_iter().flatten().filter_map(|c| c["value"].as_str().map(str::to_owned)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_show_as_one_conflict_on_hub_and_cloud_until_resolved_and_the_doctors_field_is_the_doctors()
-> anyhow::Result<()> {
    let mut c = Clinic::start().await?;
    let (amina_tok, baraka_tok, neema_tok) = (c.amina_tok.clone(), c.baraka_tok.clone(), c.neema_tok.clone());
    let hub = c.relay.http_base();

    // A role other than the token's is refused by field; the first edit needs no base.
    let id = c.amina.send_msg(edit("allergies", json!("penicillin"), &json!([]), "doctor")).await?;
    let refused = c.amina.answer(&id).await?;
    assert_eq!(refused["code"], "invalid_event", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("`role`")), "{refused}");
    c.amina.send_stored(edit("allergies", json!("penicillin"), &json!([]), "worker")).await?;
    let rec = record(&hub, &baraka_tok).await?;
    let allergies = field(&rec, "allergies");
    assert_eq!((allergies["value"].as_str(), allergies["by"].as_str()), (Some("penicillin"), Some("amina")));
    assert_eq!(allergies["conflict"], json!([]));

    // Both phones read the record, then edit the field without seeing each other's edit.
    let base = allergies["base"].clone();
    c.amina.send_stored(edit("allergies", json!("penicillin, sulfa"), &base, "worker")).await?;
    let last = edit("allergies", json!("penicillin, latex"), &base, "worker");
    c.baraka.send_stored(last.clone()).await?;
    let on_hub = record(&hub, &amina_tok).await?;
    let allergies = field(&on_hub, "allergies");
    assert_eq!(conflict_values(allergies), ["penicillin, latex", "penicillin, sulfa"], "{on_hub}");
    assert_eq!(allergies["value"], "penicillin, latex", "the newest is shown");
    // The cloud got the same edits over the uplink and shows the same record.
    message_of(&mut c.neema, &last["id"]).await?;
    assert_eq!(record(&c.cloud_proc.http_base(), &neema_tok).await?, on_hub);

    // The doctor resolves it at the cloud; the phones' hub shows it resolved.
    let resolve = edit("allergies", json!("penicillin, sulfa, latex"), &allergies["base"], "doctor");
    c.neema.send_stored(resolve.clone()).await?;
    message_of(&mut c.amina, &resolve["id"]).await?;
    let rec = record(&hub, &amina_tok).await?;
    let allergies = field(&rec, "allergies");
    assert_eq!(allergies["value"], "penicillin, sulfa, latex");
    assert_eq!((allergies["conflict"].clone(), allergies["versions"].as_u64()), (json!([]), Some(4)));

    // The problem list is the doctor's: a worker's concurrent edit neither wins nor
    // raises a conflict, though the worker's clock is later.
    let dx = edit("problems", json!("pre-eclampsia"), &json!([]), "doctor");
    c.neema.send_stored(dx.clone()).await?;
    let worker_dx = edit("problems", json!("high blood pressure"), &json!([]), "worker");
    c.amina.send_stored(worker_dx.clone()).await?;
    message_of(&mut c.amina, &dx["id"]).await?;
    let rec = record(&hub, &amina_tok).await?;
    let problems = field(&rec, "problems");
    assert_eq!((problems["value"].as_str(), problems["doctors"].as_bool()), (Some("pre-eclampsia"), Some(true)));
    assert_eq!(problems["conflict"], json!([]));
    assert_eq!(problems["base"].as_array().map(Vec::len), Some(2), "the next edit replaces both");

    // A kill -9 changes nothing: the record is read from the log.
    let before = record(&hub, &amina_tok).await?;
    c.kill9_hub().await?;
    assert_eq!(record(&c.relay.http_base(), &amina_tok).await?, before);
    message_of(&mut c.neema, &worker_dx["id"]).await?;
    assert_eq!(record(&c.cloud_proc.http_base(), &neema_tok).await?, before);
    assert_eq!(before["history"].as_array().map(Vec::len), Some(6), "every version kept: {before}");

    // Not a patient id, or a token without the room: refused.
    let (status, body) =
        request(&c.relay.http_base(), "GET", "/api/rooms/clinic/records/Mama%20Asha", Some(&amina_tok), None).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_frame")), "{body}");
    let ward = c.cloud.token("juma", "worker", &["ward"], "1h")?;
    let (status, _) =
        request(&c.relay.http_base(), "GET", "/api/rooms/clinic/records/KJ-0042", Some(&ward), None).await?;
    assert_eq!(status, 403);
    Ok(())
}
