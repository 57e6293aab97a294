//! kill -9 in the middle of a burst: every message that got `stored` survives exactly
//! once with the cursor it was given, and re-sending everything is deduplicated.

use std::collections::HashMap;

use outpost_tests::client::chat;
use outpost_tests::{Device, World};
use serde_json::Value;

const SENDERS: usize = 4;
const PER_SENDER: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_that_was_acknowledged() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(w.device(&format!("worker{i}"), &format!("phone{i}"), &["ward"]).await);
    }
    // Every sender fires its whole burst without waiting; each collects whatever `stored`
    // frames arrive until the connection dies.
    let (kill_tx, mut kill_rx) = tokio::sync::mpsc::channel::<()>(SENDERS);
    let mut tasks = Vec::new();
    for (i, mut d) in senders.into_iter().enumerate() {
        let kill_tx = kill_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut msgs: Vec<Value> = Vec::new();
            for n in 0..PER_SENDER {
                let m = chat("ward", &format!("s{i} n{n}"));
                msgs.push(m.clone());
                if d.send_msg(m).await.is_err() {
                    break;
                }
            }
            let mut stored: HashMap<String, u64> = HashMap::new();
            while let Ok(f) = d.next().await {
                if f["type"] == "stored" {
                    stored.insert(f["id"].as_str().unwrap_or_default().to_owned(), f["cursor"].as_u64().unwrap_or(0));
                    if stored.len() == PER_SENDER / 4 {
                        let _ = kill_tx.send(()).await;
                    }
                }
            }
            (msgs, stored)
        }));
    }
    drop(kill_tx);
    // Kill as soon as one sender has a quarter of its burst acknowledged: the others
    // are mid-flight.
    kill_rx.recv().await;
    w.relay.kill9().await?;
    let mut all_msgs = Vec::new();
    let mut acked: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        let (msgs, stored) = t.await?;
        all_msgs.push(msgs);
        acked.extend(stored);
    }
    assert!(!acked.is_empty(), "some sends were acknowledged before the kill");
    let total: usize = all_msgs.iter().map(Vec::len).sum();
    assert!(acked.len() < total, "the kill interrupted the burst ({} of {total} acked)", acked.len());

    w.restart_relay().await?;
    let mut reader = w.reader("auditor", "audit-tab", &["ward"]).await;
    let replay = reader.settle("message").await?;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for f in &replay {
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(id, f["cursor"].as_u64().unwrap_or(0)).is_none(), "no message appears twice");
    }
    for (id, cursor) in &acked {
        assert_eq!(seen.get(id), Some(cursor), "acknowledged message {id} survived with its cursor");
    }

    // Every sender resends its whole burst: acknowledged ones come back as duplicates
    // with the same cursor; the rest are stored now.
    for (i, msgs) in all_msgs.iter().enumerate() {
        let mut d: Device = w.device(&format!("worker{i}"), &format!("phone{i}"), &["ward"]).await;
        for m in msgs {
            let s = d.send_stored(m.clone()).await?;
            let id = m["id"].as_str().unwrap_or_default();
            if let Some(c) = acked.get(id) {
                assert_eq!(s["duplicate"], true);
                assert_eq!(s["cursor"].as_u64(), Some(*c));
            }
        }
    }
    let after = reader.settle("message").await?;
    let mut everything = seen.clone();
    for f in &after {
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(everything.insert(id, 0).is_none(), "a re-send is never delivered twice");
    }
    assert_eq!(everything.len(), total, "every message of the burst is stored exactly once");
    Ok(())
}
