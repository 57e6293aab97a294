//! A device's `history` page on a hub whose retention pruned the room: the hub's own
//! messages merged with the cloud's (asked over the link, `crate::link::history`).

use outpost_shared::frames::{HistoryGap, HistoryPage};
use outpost_shared::{Cursor, Hlc, RoomId};

/// Whether a device's page of `room` may need the cloud: a hub with an uplink whose
/// retention pruned the room. Asked once per `history`; [`device_page`] takes the answer.
pub(super) async fn may_ask_cloud<S: outpost_storage::Storage>(
    hub: &crate::hub::Hub<S>,
    room: &RoomId,
) -> Result<bool, outpost_storage::StoreError> {
    if hub.config.uplink.cloud.is_empty() {
        return Ok(false);
    }
    Ok(hub.store.pruned_floor(room.clone()).await?.is_some())
}

/// Spare messages asked of each source beyond `limit`, so that a page whose messages all
/// share one stamp can still take in that stamp's whole group. One server never gives two
/// messages the same stamp, so a group holds at most one message per server stamping in
/// the room: far fewer than this.
const STAMP_GROUP_SLACK: u32 = 64;

/// Where a page ends: it holds messages ordered strictly before this point in stamp order
/// (hlc, then id). `id: None` is "before the stamp itself" (a device's `before_hlc`).
#[derive(Clone, Copy)]
struct Upper {
    hlc: Hlc,
    id: Option<outpost_shared::MessageId>,
}

impl Upper {
    /// The stamp to ask the stores for: they answer strictly before a stamp, so a bound
    /// inside a stamp asks one past it and [`Upper::admits`] drops the rest.
    fn query(self) -> Hlc {
        match self.id {
            None => self.hlc,
            Some(_) => Hlc(self.hlc.0.saturating_add(1)),
        }
    }

    fn admits(self, m: &outpost_shared::frames::Positioned) -> bool {
        match self.id {
            None => m.msg.hlc < self.hlc,
            Some(id) => (m.msg.hlc, m.msg.id) < (self.hlc, id),
        }
    }
}

/// The newest `limit` of `all` (messages before the page's upper end, from any number of
/// sources, `src_more` if a source holds older ones) in stamp order, and whether older
/// messages exist.
///
/// A page never ends inside a stamp: the device asks for the next page with `before_hlc` =
/// the oldest stamp of this one, so messages sharing that stamp but left off would never be
/// shown. Stamps are unique per server, not across servers (a hub and its cloud may stamp
/// a message each in the same millisecond), so the oldest stamp's group is either left
/// whole to the next page or, when the page is that group alone, taken in whole.
fn page_by_stamp(
    mut all: Vec<outpost_shared::frames::Positioned>,
    src_more: bool,
    limit: u32,
) -> (Vec<outpost_shared::frames::Positioned>, bool) {
    all.sort_by_key(|m| (m.msg.hlc, m.msg.id));
    all.dedup_by_key(|m| m.msg.id);
    let mut cut = all.len().saturating_sub(limit as usize);
    if (cut > 0 || src_more) && cut < all.len() {
        let oldest = all[cut].msg.hlc;
        match all[cut..].iter().position(|m| m.msg.hlc != oldest) {
            Some(newer) => cut += newer,
            None => {
                while cut > 0 && all[cut - 1].msg.hlc == oldest {
                    cut -= 1;
                }
            }
        }
    }
    let more = cut > 0 || src_more;
    (all.split_off(cut), more)
}

/// A device's `history` page on a hub.
///
/// In a room retention never touched, the hub's own page (by cursor) as always. In a
/// room it pruned, held and removed messages may interleave (an undelivered emergency
/// stays while younger confirmed messages go), so the page is made by stamp, the order
/// every server shares: the hub's messages and the cloud's (while the uplink is up)
/// stamped before the device's position, merged, each message once (the hub's copy,
/// with its cursor, when it has one; the cloud's with `cursor: 0`), the newest `limit`
/// of them. The device pages on with `before_hlc`. With the cloud out of reach the
/// page is the hub's own with the `history_in_cloud` marker.
pub(super) async fn device_page<S: outpost_storage::Storage>(
    hub: &crate::hub::Hub<S>,
    room: RoomId,
    before: Option<Cursor>,
    before_hlc: Option<Hlc>,
    limit: u32,
    pruned: bool,
) -> Result<HistoryPage, outpost_storage::StoreError> {
    let store = &hub.store;
    if !pruned {
        return match before_hlc {
            // Only a page that came (partly) from the cloud leads here.
            Some(h) => {
                let upper = Upper { hlc: h, id: None };
                let (local, more) = store
                    .history_before_hlc(room.clone(), upper.query(), limit + STAMP_GROUP_SLACK, usize::MAX)
                    .await?;
                let (messages, more) = page_by_stamp(local, more, limit);
                Ok(HistoryPage::local(room, messages, more))
            }
            None => store.history(room, before, limit).await,
        };
    }
    // The device's position in stamp order: the message at `before`, or `before_hlc`.
    let upper = match (before_hlc, before) {
        (Some(h), _) => Upper { hlc: h, id: None },
        (None, None) => Upper { hlc: Hlc(u64::MAX), id: None },
        (None, Some(c)) => {
            let (at, _) = store.room_since(room.clone(), Cursor(c.0.saturating_sub(1)), 1).await?;
            match at.first() {
                Some(m) if m.cursor == c => Upper { hlc: m.msg.hlc, id: Some(m.msg.id) },
                // Not a message of this room held here: keep to the hub's own page.
                _ => return store.history(room, before, limit).await,
            }
        }
    };
    let ask = limit + STAMP_GROUP_SLACK;
    let (mut local, local_more) = store.history_before_hlc(room.clone(), upper.query(), ask, usize::MAX).await?;
    let (cloud, cloud_more) = match hub.cloud_history.fetch(room.clone(), upper.query(), ask).await {
        Ok(page) => page,
        Err(e) => {
            tracing::debug!(error = %e, room = %room, "older history is in the cloud and out of reach");
            let mut page = match before_hlc {
                Some(_) => {
                    local.retain(|m| upper.admits(m));
                    let (messages, more) = page_by_stamp(local, local_more, limit);
                    HistoryPage::local(room, messages, more)
                }
                None => store.history(room, before, limit).await?,
            };
            page.unavailable = Some(HistoryGap::in_cloud());
            page.more = false;
            return Ok(page);
        }
    };
    // The hub's copy of a message it holds (with its cursor) wins over the cloud's.
    let held: std::collections::HashSet<_> = local.iter().map(|m| m.msg.id).collect();
    local.extend(cloud.into_iter().filter(|m| !held.contains(&m.msg.id)));
    local.retain(|m| upper.admits(m));
    let (messages, more) = page_by_stamp(local, local_more || cloud_more, limit);
    let from_cloud = messages.iter().filter(|m| m.cursor == Cursor(0)).count();
    Ok(HistoryPage {
        room,
        messages,
        more,
        from_cloud: u32::try_from(from_cloud).unwrap_or(u32::MAX),
        unavailable: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::frames::Positioned;
    use proptest::prelude::*;

    fn message(hlc: u64, n: u64) -> Positioned {
        serde_json::from_value(serde_json::json!({"cursor": 0, "msg": {
            "id": format!("00000000-0000-7000-8000-{n:012x}"), "room": "clinic", "kind": "chat",
            "priority": "normal", "body": {"text": "x"}, "seq": n + 1, "from": "amina",
            "device": "amina-phone", "hlc": hlc, "at": 0}}))
        .unwrap_or_else(|e| panic!("not a message: {e}"))
    }

    /// What a store answers: its newest `ask` messages stamped strictly before `before`,
    /// in whatever order it keeps ties.
    fn store_page(held: &[Positioned], before: Hlc, ask: u32) -> (Vec<Positioned>, bool) {
        let mut older: Vec<_> = held.iter().filter(|m| m.msg.hlc < before).cloned().collect();
        older.sort_by_key(|m| std::cmp::Reverse(m.msg.hlc));
        let more = older.len() > ask as usize;
        older.truncate(ask as usize);
        (older, more)
    }

    /// Pages a device through two sources (a hub and its cloud) the way `device_page`
    /// does, asking each next page with `before_hlc` = the oldest stamp of the last one.
    fn page_through(hub: &[Positioned], cloud: &[Positioned], limit: u32) -> Vec<Positioned> {
        let mut seen = Vec::new();
        let mut upper = Upper { hlc: Hlc(u64::MAX), id: None };
        for _ in 0..1000 {
            let ask = limit + STAMP_GROUP_SLACK;
            let (mut all, hub_more) = store_page(hub, upper.query(), ask);
            let (from_cloud, cloud_more) = store_page(cloud, upper.query(), ask);
            all.extend(from_cloud);
            all.retain(|m| upper.admits(m));
            let (page, more) = page_by_stamp(all, hub_more || cloud_more, limit);
            assert!(!page.is_empty() || !more, "an empty page that says there is more");
            let oldest = page.first().map(|m| m.msg.hlc);
            seen.splice(0..0, page);
            match (more, oldest) {
                (true, Some(h)) => upper = Upper { hlc: h, id: None },
                _ => return seen,
            }
        }
        panic!("history never ends");
    }

    #[test]
    fn a_page_leaves_a_split_stamp_whole_to_the_next_page() {
        // Hub and cloud stamped one message each at stamp 20; a page of 2 ends there.
        let all = vec![message(10, 1), message(20, 2), message(20, 3), message(30, 4)];
        let (page, more) = page_by_stamp(all.clone(), false, 2);
        assert_eq!(page.iter().map(|m| m.msg.hlc.0).collect::<Vec<_>>(), vec![30]);
        assert!(more);
        let (page, more) = page_by_stamp(all[..3].to_vec(), false, 2);
        assert_eq!(page.iter().map(|m| m.msg.hlc.0).collect::<Vec<_>>(), vec![20, 20]);
        assert!(more);
    }

    #[test]
    fn a_page_of_one_takes_in_a_whole_stamp() {
        let all = vec![message(10, 1), message(20, 2), message(20, 3)];
        let (page, more) = page_by_stamp(all, false, 1);
        assert_eq!(page.len(), 2, "both messages stamped 20: {page:?}");
        assert!(more);
    }

    #[test]
    fn a_position_inside_a_stamp_keeps_the_messages_ordered_before_it() {
        let upper = Upper { hlc: Hlc(20), id: Some(message(20, 3).msg.id) };
        let all = [message(10, 1), message(20, 2), message(20, 3), message(20, 4)];
        let kept: Vec<u64> = all.iter().filter(|m| upper.admits(m)).map(|m| m.msg.seq.0).collect();
        assert_eq!(kept, vec![2, 3], "seq 2 and 3 are ids ...1 and ...2");
    }

    proptest! {
        /// However stamps collide between the hub and the cloud, paging back shows every
        /// message exactly once, in stamp order.
        #[test]
        fn paging_back_shows_every_message_once(
            stamps in proptest::collection::vec((0u64..12, any::<bool>()), 0..60),
            limit in 1u32..6,
        ) {
            let (mut hub, mut cloud) = (Vec::new(), Vec::new());
            for (n, (hlc, on_hub)) in stamps.iter().enumerate() {
                let m = message(*hlc, n as u64);
                if *on_hub { hub.push(m) } else { cloud.push(m) }
            }
            let seen = page_through(&hub, &cloud, limit);
            let mut expected: Vec<_> = hub.iter().chain(&cloud).map(|m| (m.msg.hlc, m.msg.id)).collect();
            expected.sort();
            let got: Vec<_> = seen.iter().map(|m| (m.msg.hlc, m.msg.id)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
