//! The oracle's model of subjects, classes, records, holds and their deaths,
//! computed from the privacy notice's timeline (decisions D1/D2) with the
//! oracle's own calendar ([`super::policy::Period`]).

use std::collections::{BTreeMap, BTreeSet};

use shredkv::jiff::{SignedDuration, Timestamp};

use super::policy::{ClassSpec, ClockKind, Period};

/// Why a scope died, as certificates and receipts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    DeletionRequest,
    Operator,
    RetentionExpired,
}

impl Reason {
    /// The name the store's reports use for it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::DeletionRequest => "deletion request",
            Reason::Operator => "operator",
            Reason::RetentionExpired => "retention expired",
        }
    }
}

/// An erasure asked of one subject.
#[derive(Debug, Clone)]
pub(crate) struct Erasure {
    pub(crate) at: Timestamp,
    /// `None`: every class.
    pub(crate) classes: Option<BTreeSet<usize>>,
    pub(crate) reason: Reason,
}

/// A legal hold over one subject (one class, or every class).
#[derive(Debug, Clone)]
pub(crate) struct HoldSpan {
    pub(crate) class: Option<usize>,
    pub(crate) placed: Timestamp,
    pub(crate) released: Option<Timestamp>,
}

impl HoldSpan {
    fn covers(&self, class: usize) -> bool {
        self.class.is_none_or(|c| c == class)
    }
}

/// A subject as the model knows it.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub(crate) id: String,
    /// The account of an end user.
    pub(crate) account: Option<usize>,
    /// Its own closure (an account's close, or a deletion request).
    pub(crate) closed_at: Option<Timestamp>,
    pub(crate) opted_out_at: Option<Timestamp>,
    pub(crate) released: BTreeMap<usize, Timestamp>,
    pub(crate) erasures: Vec<Erasure>,
    pub(crate) holds: Vec<HoldSpan>,
    /// Classes it ever wrote a record in.
    pub(crate) wrote: BTreeSet<usize>,
    /// Classes registered again on their own after an erasure, and when:
    /// an erasure before a re-opening does not end what is written after it.
    pub(crate) reopened: Vec<(usize, Timestamp)>,
}

/// What set a scope's clock running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Erasure(Reason, Timestamp),
    Closure(Timestamp, Period),
    OptOut(Timestamp, Period),
    MarketingAtClosure(Timestamp, Period),
    Released(Timestamp),
    UntilClosure(Timestamp),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Erasure(r, at) => write!(f, "{} at {at}", r.name()),
            Cause::Closure(at, p) => write!(f, "closure at {at} + {p:?}"),
            Cause::OptOut(at, p) => write!(f, "opt-out at {at} + {p:?}"),
            Cause::MarketingAtClosure(at, p) => {
                write!(f, "closure (ends marketing consent, D2) at {at} + {p:?}")
            }
            Cause::Released(at) => write!(f, "released at {at}"),
            Cause::UntilClosure(at) => write!(f, "kept until account closure at {at}"),
        }
    }
}

/// When and why a scope died.
#[derive(Debug, Clone)]
pub(crate) struct Death {
    pub(crate) at: Timestamp,
    /// Every reason due by then (a hold may have made several pile up).
    pub(crate) reasons: BTreeSet<Reason>,
    /// What set the clock.
    pub(crate) causes: Vec<Cause>,
    /// Whether a hold put it off.
    pub(crate) held: bool,
}

impl Death {
    /// What set the clock, for reports.
    pub(crate) fn why(&self) -> String {
        let mut text = self
            .causes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.held {
            text += " (held until then)";
        }
        text
    }
}

/// How a record version stopped being the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Deleted,
    Overwritten,
    /// Written after the backup a restore went back to.
    LostInRestore,
}

/// One record version the store acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) id: u64,
    pub(crate) subject: usize,
    pub(crate) class: usize,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) at: Timestamp,
    pub(crate) expires: Option<Timestamp>,
    pub(crate) ended: Option<(Timestamp, Ended)>,
    /// Brought back by a restore after it had been deleted or replaced: a
    /// read may return it or not.
    pub(crate) revived: bool,
}

/// What a read of one record may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The current version must be returned.
    Live,
    /// The current version may be returned or not (a hold keeps it past its
    /// expiry).
    Either,
    /// Nothing may be returned.
    Dead,
}

/// The whole model.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) classes: Vec<ClassSpec>,
    pub(crate) subjects: Vec<Subject>,
    pub(crate) writes: Vec<Write>,
    /// (subject, class, key) → index of the current version in `writes`.
    pub(crate) current: BTreeMap<(usize, usize, Vec<u8>), usize>,
    /// (subject, class, key) → every version, oldest first.
    pub(crate) versions: BTreeMap<(usize, usize, Vec<u8>), Vec<usize>>,
}

/// The prefix of every value the oracle writes, followed by a 10-digit id.
pub(crate) const MARKER: &[u8] = b"oracle-w";

/// The write id inside a value or a decrypted envelope.
pub(crate) fn write_id_in(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(MARKER.len()).position(|w| w == MARKER)?;
    let digits = bytes.get(at + MARKER.len()..at + MARKER.len() + 10)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Model {
    pub(crate) fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    /// When the subject's closure took effect for it: its own, or its
    /// account's (an end user shares its account's fate, D2).
    pub(crate) fn closed_at(&self, s: usize) -> Option<Timestamp> {
        let subject = &self.subjects[s];
        let own = subject.closed_at;
        let account = subject.account.and_then(|a| self.subjects[a].closed_at);
        match (own, account) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the subject is closed at `now`.
    pub(crate) fn is_closed(&self, s: usize, now: Timestamp) -> bool {
        self.closed_at(s).is_some_and(|c| c <= now)
    }

    /// Whether class `c` of `s` was registered again in `(after, upto]`.
    fn reopened_between(&self, s: usize, c: usize, after: Timestamp, upto: Timestamp) -> bool {
        self.subjects[s]
            .reopened
            .iter()
            .any(|&(rc, r)| rc == c && r > after && r <= upto)
    }

    /// The reasons of everything that ended the scope by `at`.
    pub(crate) fn reasons_by(&self, s: usize, c: usize, at: Timestamp) -> BTreeSet<Reason> {
        self.candidates(s, c, at)
            .into_iter()
            .filter(|(t, _, _)| *t <= at)
            .map(|(_, r, _)| r)
            .collect()
    }

    /// The times that end a scope, earliest first, with why, for what is
    /// written in it at `since`: an erasure followed by a re-opening of the
    /// class by then ended an earlier life of the scope, not this one.
    fn candidates(&self, s: usize, c: usize, since: Timestamp) -> Vec<(Timestamp, Reason, Cause)> {
        let subject = &self.subjects[s];
        let class = &self.classes[c];
        let mut out = Vec::new();
        for e in &subject.erasures {
            if e.classes.as_ref().is_none_or(|set| set.contains(&c))
                && !self.reopened_between(s, c, e.at, since)
            {
                out.push((e.at, e.reason, Cause::Erasure(e.reason, e.at)));
            }
        }
        let closed = self.closed_at(s);
        let expired = Reason::RetentionExpired;
        match (class.clock, class.retain) {
            (ClockKind::AccountClosure, Some(retain)) => {
                if let Some(at) = closed {
                    out.push((retain.after(at), expired, Cause::Closure(at, retain)));
                }
            }
            (ClockKind::MarketingOptOut, Some(retain)) => {
                if let Some(at) = subject.opted_out_at {
                    out.push((retain.after(at), expired, Cause::OptOut(at, retain)));
                }
                // D2: closing the account ends marketing consent too.
                if let Some(at) = closed {
                    out.push((
                        retain.after(at),
                        expired,
                        Cause::MarketingAtClosure(at, retain),
                    ));
                }
            }
            (ClockKind::ManualRelease, _) => {
                if let Some(&at) = subject.released.get(&c) {
                    out.push((at, expired, Cause::Released(at)));
                }
            }
            (ClockKind::Write, _) if class.until_account_closure => {
                if let Some(at) = closed {
                    out.push((at, expired, Cause::UntilClosure(at)));
                }
            }
            _ => {}
        }
        out.sort_by_key(|(at, _, _)| *at);
        out
    }

    /// `t` moved past every hold of the scope standing at `t`; `None` while
    /// one still stands.
    fn after_holds(&self, s: usize, c: usize, mut t: Timestamp) -> Option<Timestamp> {
        loop {
            let standing = self.subjects[s]
                .holds
                .iter()
                .filter(|h| h.covers(c) && h.placed <= t && h.released.is_none_or(|r| r > t))
                .map(|h| h.released)
                .collect::<Vec<_>>();
            if standing.is_empty() {
                return Some(t);
            }
            if standing.iter().any(Option::is_none) {
                return None;
            }
            t = standing.into_iter().flatten().max()?;
        }
    }

    /// When the scope (subject, class) dies, as things stand, for what is
    /// written in it at `since` (`now` for the scope as it is now).
    pub(crate) fn scope_death(&self, s: usize, c: usize, since: Timestamp) -> Option<Death> {
        let candidates = self.candidates(s, c, since);
        let (first, _, _) = candidates.first()?;
        let at = self.after_holds(s, c, *first)?;
        let due: Vec<_> = candidates.iter().filter(|(t, _, _)| *t <= at).collect();
        Some(Death {
            at,
            reasons: due.iter().map(|(_, r, _)| *r).collect(),
            causes: due.iter().map(|(_, _, cause)| *cause).collect(),
            held: at > *first,
        })
    }

    /// When the scope dies, without the why (the hot path).
    pub(crate) fn scope_death_at(&self, s: usize, c: usize, since: Timestamp) -> Option<Timestamp> {
        let first = self.candidates(s, c, since).first()?.0;
        self.after_holds(s, c, first)
    }

    /// Whether the scope as it is at `now` is dead.
    pub(crate) fn scope_dead(&self, s: usize, c: usize, now: Timestamp) -> bool {
        self.scope_death_at(s, c, now).is_some_and(|at| at <= now)
    }

    /// Whether the scope a write went into is dead at `now`.
    pub(crate) fn write_scope_dead(&self, w: &Write, now: Timestamp) -> bool {
        self.scope_death_at(w.subject, w.class, w.at)
            .is_some_and(|at| at <= now)
    }

    /// Whether the scope's clock has been started by an event other than
    /// an erasure (a closure, an opt-out, a release), as things stand now.
    pub(crate) fn clock_started(&self, s: usize, c: usize, now: Timestamp) -> bool {
        self.candidates(s, c, now)
            .iter()
            .any(|(_, _, cause)| !matches!(cause, Cause::Erasure(..)))
    }

    /// Whether a hold covers the scope at `now`.
    pub(crate) fn held(&self, s: usize, c: usize, now: Timestamp) -> bool {
        self.subjects[s]
            .holds
            .iter()
            .any(|h| h.covers(c) && h.placed <= now && h.released.is_none_or(|r| r > now))
    }

    /// Whether every class of the subject is dead by an erasure of all of
    /// them (its state must then read Erased).
    pub(crate) fn wholly_erased(&self, s: usize, now: Timestamp) -> Option<Timestamp> {
        let asked = self.subjects[s]
            .erasures
            .iter()
            .find(|e| e.classes.is_none() && e.reason != Reason::RetentionExpired)?;
        let mut latest = asked.at;
        for c in 0..self.classes.len() {
            let at = self.scope_death_at(s, c, now)?;
            if at > now {
                return None;
            }
            latest = latest.max(at);
        }
        Some(latest)
    }

    /// What a read of the record version `w` at `now` may return, if `w`
    /// is the current version of its key.
    pub(crate) fn expect(&self, w: &Write, now: Timestamp) -> Expect {
        if w.ended.is_some_and(|(t, _)| t <= now) || self.write_scope_dead(w, now) {
            return Expect::Dead;
        }
        match w.expires {
            Some(e) if e <= now => {
                if self.held(w.subject, w.class, now) {
                    Expect::Either
                } else {
                    Expect::Dead
                }
            }
            _ if w.revived => Expect::Either,
            _ => Expect::Live,
        }
    }

    /// When `w` stopped being live, and how, if it did.
    pub(crate) fn death_of(&self, w: &Write) -> Option<(Timestamp, String)> {
        let mut ends: Vec<(Timestamp, String)> = Vec::new();
        if let Some((t, how)) = w.ended {
            ends.push((t, format!("{how:?}").to_lowercase()));
        }
        if let Some(e) = w.expires {
            ends.push((e, "expired".into()));
        }
        if let Some(d) = self.scope_death(w.subject, w.class, w.at) {
            ends.push((d.at.max(w.at), format!("scope died: {}", d.why())));
        }
        ends.into_iter().min_by_key(|(t, _)| *t)
    }

    /// From when nothing may decrypt `w` any more (I2): its death plus the
    /// class's purge window, later if a hold stood over the scope in the
    /// meantime; `None` while it is live or held.
    pub(crate) fn purge_due(&self, w: &Write) -> Option<(Timestamp, Timestamp, String)> {
        let (died, how) = self.death_of(w)?;
        let window = self.classes[w.class].purge_window;
        let mut from = died;
        loop {
            let mut moved = false;
            for h in &self.subjects[w.subject].holds {
                if h.covers(w.class)
                    && h.placed <= from.saturating_add(window).ok()?
                    && h.released.is_none_or(|r| r > from)
                {
                    let r = h.released?;
                    from = r;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        Some((died, from.saturating_add(window).ok()?, how))
    }

    /// The class's purge window.
    pub(crate) fn window(&self, c: usize) -> SignedDuration {
        self.classes[c].purge_window
    }

    /// A description of a write for reports.
    pub(crate) fn describe(&self, w: &Write) -> String {
        let mut text = format!(
            "write #{} ({} / {} / {}) made {}",
            w.id,
            self.subjects[w.subject].id,
            self.classes[w.class].name,
            String::from_utf8_lossy(&w.key),
            w.at
        );
        if let Some(e) = w.expires {
            text += &format!(", expiring {e}");
        }
        if let Some((t, how)) = w.ended {
            text += &format!(", {} at {t}", format!("{how:?}").to_lowercase());
        }
        if let Some(d) = self.scope_death(w.subject, w.class, w.at) {
            text += &format!(", scope dies {} ({})", d.at, d.why());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::policy;

    fn t(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn model() -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml");
        let mut m = Model {
            classes: policy::load(&path).expect("the default policy"),
            ..Model::default()
        };
        for (id, account) in [("acct", None), ("user", Some(0))] {
            m.subjects.push(Subject {
                id: id.into(),
                account,
                closed_at: None,
                opted_out_at: None,
                released: BTreeMap::new(),
                erasures: Vec::new(),
                holds: Vec::new(),
                wrote: BTreeSet::new(),
                reopened: Vec::new(),
            });
        }
        m
    }

    #[test]
    fn closure_sets_every_clock_of_the_account_and_its_end_users() {
        let mut m = model();
        let closed = t("2027-01-31T10:00:00Z");
        m.subjects[0].closed_at = Some(closed);
        let class = |name: &str| m.class_index(name).expect("a class");
        let later = t("2040-01-01T00:00:00Z");
        let at = |s, name: &str| m.scope_death(s, class(name), later).map(|d| d.at);
        assert_eq!(at(1, "account_profile"), Some(t("2027-04-01T10:00:00Z")));
        assert_eq!(at(1, "message_content"), Some(closed));
        assert_eq!(at(0, "marketing_contacts"), Some(t("2027-02-03T10:00:00Z")));
        assert_eq!(at(0, "invoices"), Some(t("2037-01-31T10:00:00Z")));
        assert_eq!(at(0, "subscriber_records"), None, "kept until released");
    }

    #[test]
    fn a_hold_puts_a_death_off_until_its_release() {
        let mut m = model();
        let c = m.class_index("message_content").expect("a class");
        m.subjects[0].holds.push(HoldSpan {
            class: None,
            placed: t("2027-01-01T00:00:00Z"),
            released: None,
        });
        m.subjects[0].erasures.push(Erasure {
            at: t("2027-01-02T00:00:00Z"),
            classes: None,
            reason: Reason::Operator,
        });
        let now = t("2027-01-03T00:00:00Z");
        assert!(m.scope_death(0, c, now).is_none(), "held");
        m.subjects[0].holds[0].released = Some(t("2027-03-01T00:00:00Z"));
        let death = m.scope_death(0, c, now).expect("dies at the release");
        assert_eq!(death.at, t("2027-03-01T00:00:00Z"));
        assert!(death.held);
        assert_eq!(death.reasons, BTreeSet::from([Reason::Operator]));
        assert_eq!(
            m.wholly_erased(0, t("2027-03-02T00:00:00Z")),
            Some(death.at)
        );
    }

    #[test]
    fn a_reopened_class_ends_only_what_was_written_before_its_erasure() {
        let mut m = model();
        let c = m.class_index("message_content").expect("a class");
        let (e1, r, e2) = (
            t("2027-01-02T00:00:00Z"),
            t("2027-01-05T00:00:00Z"),
            t("2027-02-01T00:00:00Z"),
        );
        let write = |at: &str| Write {
            id: 0,
            subject: 1,
            class: c,
            key: b"k".to_vec(),
            value: Vec::new(),
            at: t(at),
            expires: None,
            ended: None,
            revived: false,
        };
        let (old, new) = (write("2027-01-01T00:00:00Z"), write("2027-01-06T00:00:00Z"));
        m.subjects[1].erasures.push(Erasure {
            at: e1,
            classes: Some(BTreeSet::from([c])),
            reason: Reason::Operator,
        });
        m.subjects[1].reopened.push((c, r));
        assert!(
            m.scope_dead(1, c, t("2027-01-03T00:00:00Z")),
            "erased until re-opened"
        );
        assert!(
            !m.scope_dead(1, c, t("2027-01-06T00:00:00Z")),
            "alive again"
        );
        assert_eq!(m.expect(&old, t("2027-01-06T00:00:00Z")), Expect::Dead);
        assert_eq!(m.expect(&new, t("2027-01-06T00:00:00Z")), Expect::Live);
        assert_eq!(m.death_of(&old).map(|(at, _)| at), Some(e1));
        assert!(m.death_of(&new).is_none());
        m.subjects[1].erasures.push(Erasure {
            at: e2,
            classes: Some(BTreeSet::from([c])),
            reason: Reason::Operator,
        });
        assert_eq!(m.death_of(&new).map(|(at, _)| at), Some(e2));
        assert_eq!(m.death_of(&old).map(|(at, _)| at), Some(e1));
        assert!(m.scope_dead(1, c, t("2027-02-02T00:00:00Z")));
    }

    #[test]
    fn write_ids_are_found_inside_any_plaintext() {
        assert_eq!(
            write_id_in(b"\0\0\0\x02k1oracle-w0000000042-ffff"),
            Some(42)
        );
        assert_eq!(write_id_in(b"oracle-w12"), None);
    }
}
