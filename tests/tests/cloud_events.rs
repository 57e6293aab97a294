//! The events API (`GET /api/events`) seen from a hospital system: every room its token
//! may read in one cursor order, paged with `next` without loss or repeats, rooms it may
//! not read left out, and a cloud restart in the middle of the paging changing nothing.

use std::collections::HashSet;

use outpost_tests::Cloud;
use outpost_tests::http::{events_page as page, post_message as post, request};
use serde_json::json;

#[tokio::test]
async fn events_come_in_one_order_across_rooms_and_pages_and_resume_after_a_restart() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let mut proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();
    let lab = cloud.token("lab", "doctor", &["ward-a", "ward-b", "pharmacy"], "1h")?;
    let his = cloud.token("his", "doctor", &["ward-a", "ward-b"], "1h")?;

    // Interleaved posts into two rooms the system may read and one it may not.
    let rooms = ["ward-a", "ward-b", "pharmacy", "ward-b", "ward-b", "ward-a", "pharmacy", "ward-a", "ward-b"];
    let mut expected = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        let (cursor, id) = post(&base, &lab, room, &format!("result {n}")).await?;
        if *room != "pharmacy" {
            expected.push((cursor, id, (*room).to_owned()));
        }
    }

    // Two pages of three, then the cloud restarts.
    let mut got = Vec::new();
    let (first, next, more) = page(&base, &his, 0, 3).await?;
    assert!(more && first.len() == 3, "{first:?}");
    got.extend(first);
    let (second, next, more) = page(&base, &his, next, 3).await?;
    assert!(more && second.len() == 3, "{second:?}");
    got.extend(second);
    assert_eq!(proc.terminate().await?, Some(0));

    proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();
    for room in ["pharmacy", "ward-a", "ward-b", "pharmacy"] {
        let (cursor, id) = post(&base, &lab, room, "after the restart").await?;
        if room != "pharmacy" {
            expected.push((cursor, id, room.to_owned()));
        }
    }
    // The same cursor goes on where the old process left off.
    let mut after = next;
    loop {
        let (events, next, more) = page(&base, &his, after, 3).await?;
        got.extend(events);
        after = next;
        if !more {
            break;
        }
    }
    assert_eq!(got, expected, "both rooms' messages in post order, none of the pharmacy's");
    let ids: HashSet<&String> = got.iter().map(|(_, id, _)| id).collect();
    assert_eq!(ids.len(), got.len(), "no event twice");

    // Caught up: an empty page keeps `next` where it was.
    let (none, next, more) = page(&base, &his, after, 3).await?;
    assert_eq!((none.len(), next, more), (0, after, false));
    // One page of everything gives the same list; the system that may read the pharmacy
    // sees its messages among them, in the same order.
    let (all, _, more) = page(&base, &his, 0, 500).await?;
    assert_eq!((all, more), (expected.clone(), false));
    let (everything, _, _) = page(&base, &lab, 0, 500).await?;
    assert_eq!(everything.len(), rooms.len() + 4);
    let cursors: Vec<u64> = everything.iter().map(|(c, ..)| *c).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "one order across rooms: {cursors:?}");
    Ok(())
}

#[tokio::test]
async fn events_are_refused_as_the_rest_of_the_api_refuses() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();

    let (status, v) = request(&base, "GET", "/api/events", None, None).await?;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    // An admin token is for the audit log, not for the health data in rooms.
    let admin = cloud.token("ops", "admin", &["ward-a"], "1h")?;
    let (status, v) = request(&base, "GET", "/api/events", Some(&admin), None).await?;
    assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let his = cloud.token("his", "doctor", &["ward-a"], "1h")?;
    let (status, v) = request(&base, "GET", "/api/events?after=yesterday", Some(&his), None).await?;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_frame")), "{v}");
    let (status, v) = request(&base, "GET", "/api/events", Some(&his), None).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"events": [], "next": 0, "more": false}));
    Ok(())
}
