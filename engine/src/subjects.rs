//! Subjects: customer accounts and the end users that belong to them.
//!
//! Tree `subjects` holds two key spaces:
//!
//! ```text
//! 0x00 ‖ subject tag (16)                 → subject record
//! 0x01 ‖ account tag (16) ‖ user tag (16) → empty   (an account's end users)
//! 0x02 ‖ subject tag (16) ‖ class u16     → release time, i64 (a manual release)
//! ```
//!
//! Subject record v1, big-endian:
//!
//! ```text
//!  0  1  version (1)
//!  1  1  kind: 1 account, 2 end user
//!  2  1  parent present (0/1) ┐
//!  3 16  parent tag           ┘ zeros when absent
//! 19  1  state: 1 active, 2 restricted, 3 erased
//! 20  4  generation (incremented by re-registration)
//! 24  9  created at          presence byte + i64 unix seconds
//! 33  9  account closed at   "
//! 42  9  marketing opt-out at"
//! 51  9  released at        "
//! 60  9  erased at           "
//! 69  4  CRC32
//! ```

use jiff::Timestamp;
use shredkv_crypto::{FormatError, SubjectTag};

use crate::codec::{Reader, Writer};

const VERSION: u8 = 1;
const WHAT: &str = "subject record";
const RECORD_SPACE: u8 = 0x00;
const CHILD_SPACE: u8 = 0x01;
const RELEASE_SPACE: u8 = 0x02;

/// Whether a subject is a customer account or an end user of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SubjectKind {
    /// A customer account; erasing it erases its end users.
    Account,
    /// An end user belonging to an account.
    EndUser,
}

/// A subject's processing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SubjectState {
    /// Readable and writable.
    Active,
    /// Processing restricted: exportable only.
    Restricted,
    /// Erased: keys destroyed; writes fail until re-registered.
    Erased,
}

/// What the store knows about a subject (no personal data: the id is a tag).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubjectInfo {
    /// The subject's tag.
    pub tag: SubjectTag,
    /// Account or end user.
    pub kind: SubjectKind,
    /// The account an end user belongs to.
    pub parent: Option<SubjectTag>,
    /// Processing state.
    pub state: SubjectState,
    /// Incremented each time the subject is re-registered after erasure.
    pub generation: u32,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When its account was closed, if it was.
    pub closed_at: Option<Timestamp>,
    /// When it opted out of marketing, if it did.
    pub opted_out_at: Option<Timestamp>,
    /// When its manually released data was released, if it was.
    pub released_at: Option<Timestamp>,
    /// When it was erased, if it was.
    pub erased_at: Option<Timestamp>,
}

pub(crate) fn record_key(tag: &SubjectTag) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = RECORD_SPACE;
    key[1..].copy_from_slice(&tag.0);
    key
}

pub(crate) fn child_key(account: &SubjectTag, user: &SubjectTag) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = CHILD_SPACE;
    key[1..17].copy_from_slice(&account.0);
    key[17..].copy_from_slice(&user.0);
    key
}

/// Where the release of one manually released class is recorded.
pub(crate) fn release_key(tag: &SubjectTag, class: u16) -> [u8; 19] {
    let mut key = [0u8; 19];
    key[0] = RELEASE_SPACE;
    key[1..17].copy_from_slice(&tag.0);
    key[17..].copy_from_slice(&class.to_be_bytes());
    key
}

/// The subject and class of a release key, if `key` is one.
pub(crate) fn split_release_key(key: &[u8]) -> Option<(SubjectTag, u16)> {
    let (space, rest) = key.split_first()?;
    let tag: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let class: [u8; 2] = rest.get(16..)?.try_into().ok()?;
    (*space == RELEASE_SPACE).then_some((SubjectTag(tag), u16::from_be_bytes(class)))
}

pub(crate) fn children_prefix(account: &SubjectTag) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = CHILD_SPACE;
    key[1..].copy_from_slice(&account.0);
    key
}

/// The subject tag inside a record key, if `key` is one.
pub(crate) fn tag_of_record_key(key: &[u8]) -> Option<SubjectTag> {
    let (space, tag) = key.split_first()?;
    let tag: [u8; 16] = tag.try_into().ok()?;
    (*space == RECORD_SPACE).then_some(SubjectTag(tag))
}

/// The user tag inside a child key.
pub(crate) fn user_of_child_key(key: &[u8]) -> Option<SubjectTag> {
    let tag: [u8; 16] = key.get(17..33)?.try_into().ok()?;
    Some(SubjectTag(tag))
}

fn ts(secs: i64) -> Timestamp {
    crate::codec::saturating_time(secs)
}

impl SubjectInfo {
    /// The error for an operation on this (erased) subject.
    pub(crate) fn erased_error(&self) -> crate::Error {
        crate::Error::Erased {
            subject: self.tag,
            class: None,
            erased_at: self.erased_at.unwrap_or(self.created_at),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION, 72);
        w.u8(match self.kind {
            SubjectKind::Account => 1,
            SubjectKind::EndUser => 2,
        });
        match &self.parent {
            Some(parent) => w.u8(1).bytes(&parent.0),
            None => w.u8(0).bytes(&[0u8; 16]),
        };
        w.u8(match self.state {
            SubjectState::Active => 1,
            SubjectState::Restricted => 2,
            SubjectState::Erased => 3,
        });
        w.u32(self.generation)
            .opt_i64(Some(self.created_at.as_second()))
            .opt_i64(self.closed_at.map(|t| t.as_second()))
            .opt_i64(self.opted_out_at.map(|t| t.as_second()))
            .opt_i64(self.released_at.map(|t| t.as_second()))
            .opt_i64(self.erased_at.map(|t| t.as_second()));
        w.finish()
    }

    pub(crate) fn decode(tag: SubjectTag, bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::checked(WHAT, bytes, VERSION)?;
        let kind = match r.u8()? {
            1 => SubjectKind::Account,
            2 => SubjectKind::EndUser,
            _ => return Err(r.invalid("unknown subject kind")),
        };
        let has_parent = r.u8()?;
        let parent_bytes = r.array::<16>()?;
        let parent = match has_parent {
            0 => None,
            1 => Some(SubjectTag(parent_bytes)),
            _ => return Err(r.invalid("parent presence byte is neither 0 nor 1")),
        };
        let state = match r.u8()? {
            1 => SubjectState::Active,
            2 => SubjectState::Restricted,
            3 => SubjectState::Erased,
            _ => return Err(r.invalid("unknown subject state")),
        };
        let generation = r.u32()?;
        let created_at = r
            .opt_i64()?
            .ok_or_else(|| r.invalid("creation time missing"))?;
        let closed_at = r.opt_i64()?;
        let opted_out_at = r.opt_i64()?;
        let released_at = r.opt_i64()?;
        let erased_at = r.opt_i64()?;
        r.end()?;
        Ok(Self {
            tag,
            kind,
            parent,
            state,
            generation,
            created_at: ts(created_at),
            closed_at: closed_at.map(ts),
            opted_out_at: opted_out_at.map(ts),
            released_at: released_at.map(ts),
            erased_at: erased_at.map(ts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_damage() {
        let info = SubjectInfo {
            tag: SubjectTag([1; 16]),
            kind: SubjectKind::EndUser,
            parent: Some(SubjectTag([2; 16])),
            state: SubjectState::Restricted,
            generation: 3,
            created_at: ts(100),
            closed_at: Some(ts(200)),
            opted_out_at: None,
            released_at: None,
            erased_at: Some(ts(300)),
        };
        let bytes = info.encode();
        assert_eq!(bytes.len(), 73);
        assert_eq!(SubjectInfo::decode(info.tag, &bytes).expect("decode"), info);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(SubjectInfo::decode(info.tag, &bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn key_spaces_do_not_overlap() {
        let a = SubjectTag([1; 16]);
        let u = SubjectTag([2; 16]);
        assert_eq!(tag_of_record_key(&record_key(&a)), Some(a));
        assert_eq!(tag_of_record_key(&child_key(&a, &u)), None);
        assert!(child_key(&a, &u).starts_with(&children_prefix(&a)));
        assert_eq!(user_of_child_key(&child_key(&a, &u)), Some(u));
    }
}
