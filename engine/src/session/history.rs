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
                let (messages, more) = store.history_before_hlc(room.clone(), h, limit, usize::MAX).await?;
                Ok(HistoryPage::local(room, messages, more))
            }
            None => store.history(room, before, limit).await,
        };
    }
    // The device's position as a stamp: the stamp of the message at `before`.
    let upper = match (before_hlc, before) {
        (Some(h), _) => h,
        (None, None) => Hlc(u64::MAX),
        (None, Some(c)) => {
            let (at, _) = store.room_since(room.clone(), Cursor(c.0.saturating_sub(1)), 1).await?;
            match at.first() {
                Some(m) if m.cursor == c => m.msg.hlc,
                // Not a message of this room held here: keep to the hub's own page.
                _ => return store.history(room, before, limit).await,
            }
        }
    };
    let (mut local, local_more) = store.history_before_hlc(room.clone(), upper, limit, usize::MAX).await?;
    let (cloud, cloud_more) = match hub.cloud_history.fetch(room.clone(), upper, limit).await {
        Ok(page) => page,
        Err(e) => {
            tracing::debug!(error = %e, room = %room, "older history is in the cloud and out of reach");
            let mut page = match before_hlc {
                Some(_) => HistoryPage::local(room, local, local_more),
                None => store.history(room, before, limit).await?,
            };
            page.unavailable = Some(HistoryGap::in_cloud());
            page.more = false;
            return Ok(page);
        }
    };
    let held: std::collections::HashSet<_> = local.iter().map(|m| m.msg.id).collect();
    local.extend(cloud.into_iter().filter(|m| !held.contains(&m.msg.id)));
    local.sort_by_key(|m| (m.msg.hlc, m.msg.id));
    let cut = local.len().saturating_sub(limit as usize);
    let messages = local.split_off(cut);
    let from_cloud = messages.iter().filter(|m| m.cursor == Cursor(0)).count();
    Ok(HistoryPage {
        room,
        messages,
        more: cut > 0 || local_more || cloud_more,
        from_cloud: u32::try_from(from_cloud).unwrap_or(u32::MAX),
        unavailable: None,
    })
}
