//! The wallet history's page cursor (SPEC §9): where the next page of each of its
//! two lists — rewards, newest first by `(created_at, id)`, and claims, newest
//! first by `(block_number, log_index, event id)` — starts. Opaque to clients
//! (base64url of a short text), checked when read back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A reward's place in the history: its creation time (written in microseconds,
/// the column's precision; read back only between 1970 and 9999, where every
/// stored one is) and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A claim's place in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimKey {
    pub block_number: i64,
    pub log_index: i32,
    pub event_id: i64,
}

/// Where one list's page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position<K> {
    /// From the newest entry (the first page).
    Newest,
    /// From the entry just older than this one.
    Before(K),
    /// Nothing left: the page is empty.
    Done,
}

impl<K: Copy> Position<K> {
    /// The position after a page whose last entry is `last`, if older entries
    /// remain.
    fn after(last: Option<K>) -> Self {
        last.map_or(Position::Done, Position::Before)
    }

    /// The entry the page starts below (`newest` for the first page); none when
    /// the list is done.
    pub fn below(&self, newest: K) -> Option<K> {
        match self {
            Position::Newest => Some(newest),
            Position::Before(key) => Some(*key),
            Position::Done => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub rewards: Position<RewardKey>,
    pub claims: Position<ClaimKey>,
}

const EPOCH: DateTime<Utc> = DateTime::UNIX_EPOCH;
/// The last microsecond of year 9999.
const LAST: DateTime<Utc> = match DateTime::from_timestamp_micros(253_402_300_799_999_999) {
    Some(t) => t,
    None => panic!("in chrono's range"),
};

impl RewardKey {
    /// Above every stored reward: where the first page starts.
    pub const NEWEST: RewardKey = RewardKey {
        created_at: LAST,
        id: Uuid::max(),
    };
}

impl ClaimKey {
    /// Above every indexed claim: where the first page starts.
    pub const NEWEST: ClaimKey = ClaimKey {
        block_number: i64::MAX,
        log_index: i32::MAX,
        event_id: i64::MAX,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this service gave out")]
pub struct BadCursor;

impl HistoryCursor {
    pub const FIRST: HistoryCursor = HistoryCursor {
        rewards: Position::Newest,
        claims: Position::Newest,
    };

    /// The cursor of the next page, given the last entry of each list on this
    /// page when older ones remain; none when neither list has more.
    pub fn next(rewards_last: Option<RewardKey>, claims_last: Option<ClaimKey>) -> Option<Self> {
        if rewards_last.is_none() && claims_last.is_none() {
            return None;
        }
        Some(HistoryCursor {
            rewards: Position::after(rewards_last),
            claims: Position::after(claims_last),
        })
    }

    pub fn encode(&self) -> String {
        let rewards = match self.rewards {
            Position::Newest => "r".to_owned(),
            Position::Before(k) => {
                format!("r{}_{}", k.created_at.timestamp_micros(), k.id.simple())
            }
            Position::Done => "r-".to_owned(),
        };
        let claims = match self.claims {
            Position::Newest => "c".to_owned(),
            Position::Before(k) => format!("c{}_{}_{}", k.block_number, k.log_index, k.event_id),
            Position::Done => "c-".to_owned(),
        };
        URL_SAFE_NO_PAD.encode(format!("{rewards}~{claims}"))
    }

    pub fn decode(raw: &str) -> Result<Self, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| BadCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| BadCursor)?;
        let (rewards, claims) = text.split_once('~').ok_or(BadCursor)?;
        let rewards = position(rewards.strip_prefix('r').ok_or(BadCursor)?, |fields| {
            let [micros, id] = fields else { return None };
            Some(RewardKey {
                created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)
                    .filter(|t| (EPOCH..=LAST).contains(t))?,
                id: Uuid::try_parse(id).ok()?,
            })
        })?;
        let claims = position(claims.strip_prefix('c').ok_or(BadCursor)?, |fields| {
            let [block, log, id] = fields else {
                return None;
            };
            Some(ClaimKey {
                block_number: block.parse().ok()?,
                log_index: log.parse().ok()?,
                event_id: id.parse().ok()?,
            })
        })?;
        Ok(HistoryCursor { rewards, claims })
    }
}

/// One list's position from its text: empty (newest), `-` (done) or the key's
/// `_`-separated fields.
fn position<K>(
    text: &str,
    key: impl FnOnce(&[&str]) -> Option<K>,
) -> Result<Position<K>, BadCursor> {
    match text {
        "" => Ok(Position::Newest),
        "-" => Ok(Position::Done),
        _ => {
            let fields: Vec<&str> = text.split('_').collect();
            key(&fields).map(Position::Before).ok_or(BadCursor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward() -> RewardKey {
        RewardKey {
            created_at: DateTime::from_timestamp_micros(1_764_633_600_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    fn claim() -> ClaimKey {
        ClaimKey {
            block_number: 9_000_001,
            log_index: 3,
            event_id: 42,
        }
    }

    #[test]
    fn every_cursor_reads_back_as_given() {
        for cursor in [
            HistoryCursor::FIRST,
            HistoryCursor::next(Some(reward()), Some(claim())).unwrap(),
            HistoryCursor::next(Some(reward()), None).unwrap(),
            HistoryCursor::next(None, Some(claim())).unwrap(),
        ] {
            assert_eq!(HistoryCursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn a_list_without_more_is_done_and_both_done_is_the_end() {
        let next = HistoryCursor::next(None, Some(claim())).unwrap();
        assert_eq!(next.rewards, Position::Done);
        assert_eq!(next.claims, Position::Before(claim()));
        assert_eq!(HistoryCursor::next(None, None), None);
    }

    #[test]
    fn anything_else_is_refused() {
        let id = Uuid::now_v7().simple();
        for text in [
            String::new(),
            "r~".into(),
            "x~c".into(),
            "r~x".into(),
            "r12~c".into(),
            format!("r12_{id}_1~c"),
            format!("rx_{id}~c"),
            "r~c1_2".into(),
            "r~c1_2_3_4".into(),
            "r~c1_99999999999_3".into(),
            format!("r{}_{id}~c", i64::MAX),
            format!("r-1_{id}~c"),
            format!("r{}_{id}~c", LAST.timestamp_micros() + 1),
        ] {
            let raw = URL_SAFE_NO_PAD.encode(&text);
            assert_eq!(HistoryCursor::decode(&raw), Err(BadCursor), "{text}");
        }
        assert_eq!(HistoryCursor::decode("not base64!"), Err(BadCursor));
        assert_eq!(
            HistoryCursor::decode(&URL_SAFE_NO_PAD.encode([0xff, 0xfe])),
            Err(BadCursor)
        );
    }
}
