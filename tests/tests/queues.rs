//! Doctors' queues against real processes (docs/workflows.md, "Appointments and doctors'
//! queues"): workers book on the hub, the doctor works the queue from the cloud, and both
//! servers derive the same queue from the messages, before and after a kill -9; only the
//! queue's doctor changes entries, a booker may cancel their own; the read is authorized
//! like the room.

use outpost_tests::clinic::{Clinic, message_of};
use outpost_tests::http::request;
use outpost_tests::{Cloud, Device};
use serde_json::{Value, json};

fn msg(kind: &str, body: Value) -> Value {
    json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": kind, "body": body})
}

fn book(patient: &str, urgency: &str) -> Value {
    msg("queue.book", json!({"queue": "dr-neema", "patient": patient, "reason": "cough", "urgency": urgency}))
}

fn update(booking: &Value, fields: Value) -> Value {
    let mut body = json!({"queue": "dr-neema", "booking": booking});
    body.as_object_mut().into_iter().for_each(|b| b.extend(fields.as_object().cloned().unwrap_or_default()));
    let mut m = msg("queue.update", body);
    m["reply_to"] = booking.clone();
    m
}

/// `GET /api/rooms/clinic/queues` at `base` with `token`.
async fn queues(base: &str, token: &str) -> anyhow::Result<Value> {
    let (status, body) = request(base, "GET", "/api/rooms/clinic/queues", Some(token), None).await?;
    anyhow::ensure!(status == 200, "queues answered {status}: {body}");
    Ok(body)
}

/// dr-neema's open entries as (patient, position).
fn open(q: &Value) -> Vec<(String, u64)> {
    q["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["queue"] == "dr-neema")
        .flat_map(|x| x["entries"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["patient"].as_str().unwrap_or_default().to_owned(), e["position"].as_u64().unwrap_or(0)))
        .collect()
}

fn p(patient: &str, position: u64) -> (String, u64) {
    (patient.to_owned(), position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_on_the_hub_are_worked_from_the_cloud_and_both_derive_the_same_queue_across_a_kill_9()
-> anyhow::Result<()> {
    let mut c = Clinic::start().await?;
    let (amina_tok, baraka_tok, neema_tok) = (c.amina_tok.clone(), c.baraka_tok.clone(), c.neema_tok.clone());

    // Three bookings on the hub, in order; a body that misses its urgency is refused.
    let id = c.amina.send_msg(msg("queue.book", json!({"queue": "dr-neema", "patient": "P1", "reason": "x"}))).await?;
    let refused = c.amina.answer(&id).await?;
    assert_eq!(refused["code"], "invalid_event", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("`urgency`")), "{refused}");
    let mut bookings = Vec::new();
    for (by_amina, patient) in [(true, "P1"), (true, "P2"), (false, "P3")] {
        let m = book(patient, "routine");
        if by_amina {
            c.amina.send_stored(m.clone()).await?
        } else {
            c.baraka.send_stored(m.clone()).await?
        };
        bookings.push(m["id"].clone());
    }
    let hub = c.relay.http_base();
    assert_eq!(open(&queues(&hub, &baraka_tok).await?), [p("P1", 1), p("P2", 2), p("P3", 3)]);

    // A worker may not work the doctor's queue, not even through a token of the room.
    let id = c.baraka.send_msg(update(&bookings[0], json!({"status": "completed"}))).await?;
    let refused = c.baraka.answer(&id).await?;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("only dr-neema")), "{refused}");

    // The doctor, at the cloud, completes P1 once the bookings came up the uplink; the
    // update comes down to the phones and P3 moves from 3 to 2 on the hub.
    message_of(&mut c.neema, &bookings[2]).await?;
    let done = update(&bookings[0], json!({"status": "completed"}));
    c.neema.send_stored(done.clone()).await?;
    message_of(&mut c.amina, &done["id"]).await?;
    let on_hub = queues(&hub, &amina_tok).await?;
    assert_eq!(open(&on_hub), [p("P2", 1), p("P3", 2)]);
    assert_eq!(on_hub["finished"][0]["patient"], "P1");
    assert_eq!(on_hub["finished"][0]["status"], "completed");
    assert_eq!(on_hub["finished"][0]["updated_by"], "dr-neema");

    // An urgent booking goes first; a cancel by someone who neither booked nor owns the
    // entry is stored but changes nothing; the booker's own cancel takes P2 out.
    let urgent = book("P4", "urgent");
    c.baraka.send_stored(urgent.clone()).await?;
    let stray = update(&bookings[1], json!({"status": "cancelled"}));
    c.baraka.send_stored(stray).await?;
    assert_eq!(open(&queues(&hub, &amina_tok).await?), [p("P4", 1), p("P2", 2), p("P3", 3)]);
    let cancel = update(&bookings[1], json!({"status": "cancelled"}));
    c.amina.send_stored(cancel.clone()).await?;
    let before_kill = queues(&hub, &amina_tok).await?;
    assert_eq!(open(&before_kill), [p("P4", 1), p("P3", 2)]);

    // The queue is derived from the log: after a kill -9 the hub shows the same, and the
    // cloud, which got the same messages in another order, derives the same queue.
    c.kill9_hub().await?;
    let hub = c.relay.http_base();
    assert_eq!(queues(&hub, &amina_tok).await?, before_kill);
    message_of(&mut c.neema, &cancel["id"]).await?;
    assert_eq!(queues(&c.cloud_proc.http_base(), &neema_tok).await?, before_kill);

    // The read is the room's: no token, or a token without the room, is refused.
    let (status, body) = request(&hub, "GET", "/api/rooms/clinic/queues", None, None).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let ward = c.cloud.token("juma", "worker", &["ward"], "1h")?;
    let (status, body) = request(&hub, "GET", "/api/rooms/clinic/queues", Some(&ward), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    Ok(())
}

/// A room past `limits.queue_max_events` is told so instead of shown a queue with entries
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_past_the_queue_limit_gets_too_large_not_a_partial_queue() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let relay = cloud
        .provision_relay_at("village-7", &tmp.path().join("relay"), "127.0.0.1:9")?
        .start(&[("OUTPOST_LIMITS__QUEUE_MAX_EVENTS", "3")])
        .await?;
    let tok = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = Device::connect(&relay.ws_url()).await?;
    amina.hello(&tok, "amina-phone", None, None).await?;
    for patient in ["P1", "P2", "P3"] {
        amina.send_stored(book(patient, "soon")).await?;
    }
    assert_eq!(open(&queues(&relay.http_base(), &tok).await?).len(), 3);
    amina.send_stored(book("P4", "soon")).await?;
    let (status, body) = request(&relay.http_base(), "GET", "/api/rooms/clinic/queues", Some(&tok), None).await?;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("limits.queue_max_events")), "{body}");
    Ok(())
}
