//! A model of what a store must show: which records are readable with which
//! value, which subjects and scopes are erased, which holds stand. Shared by
//! the model test, the crash test, the fault-injection test and the
//! `engine_ops` fuzz target (which includes this file by path), so it uses
//! nothing but `shredkv` and std.
//!
//! The universe is small on purpose: two accounts with one end user each,
//! three classes (one of each retention shape), three record keys.
//!
//! Buffered writes are tracked per record as the value last made durable by
//! a flush plus the values written since: after a crash, any of them may be
//! what the store shows ([`Model::check`] with `exact = false`); without a
//! crash, only the latest ([`Model::check`] with `exact = true`).

use std::collections::{BTreeMap, BTreeSet};

use shredkv::Policy;

/// Subject ids: accounts `0..2`, end user `2 + i` belongs to account `i`.
pub(crate) const SUBJECTS: [&str; 4] = ["acct-0", "acct-1", "user-0", "user-1"];
/// Classes: a write-clock class ending at account closure (and accepting
/// customer TTLs), a 60-days-after-closure class, a 10-years one.
pub(crate) const CLASSES: [&str; 3] = ["message_content", "account_profile", "invoices"];
/// Record keys.
pub(crate) const KEYS: [&[u8]; 3] = [b"k0", b"k1", b"k2"];
/// The class expiring writes go to (the only write-clock class).
pub(crate) const EXPIRING_CLASS: u8 = 0;
/// Start of the model clock (unix seconds).
pub(crate) const START: i64 = 1_800_000_000;

/// The policy of every store the model describes.
pub(crate) const POLICY: &str = r#"
version = 1

[[class]]
name = "message_content"
role = "processor"
clock = "write"
until_account_closure = true
max_customer_ttl = "1 year"
purge_window = "30 days"
on_deletion_request = "erase_now"
keys = "blinded"
legal_basis = "model"
clause = "model"

[[class]]
name = "account_profile"
role = "controller"
clock = "account_closure"
retain = "60 days"
purge_window = "30 days"
on_deletion_request = "erase_now"
keys = "blinded"
legal_basis = "model"
clause = "model"

[[class]]
name = "invoices"
role = "controller"
clock = "account_closure"
retain = "10 years"
purge_window = "30 days"
on_deletion_request = "retain_until_deadline"
keys = "ordered"
legal_basis = "model"
clause = "model"
"#;

/// The parsed [`POLICY`].
pub(crate) fn policy() -> Policy {
    Policy::from_toml_str(POLICY, "model policy").expect("the model policy parses")
}

/// Whether subject `s` is an account.
pub(crate) fn is_account(s: u8) -> bool {
    s < 2
}

/// The subject and, for an account, its end user.
pub(crate) fn with_end_users(s: u8) -> Vec<u8> {
    if is_account(s) {
        vec![s, s + 2]
    } else {
        vec![s]
    }
}

/// The bytes of value number `v`.
pub(crate) fn value_bytes(v: u32) -> Vec<u8> {
    format!("value-{v}").into_bytes()
}

/// A record to write (`Some(value number)`) or delete (`None`) in a batch.
pub(crate) type BatchItem = (u8, u8, u8, Option<u32>);

/// One operation on a store. Indices name [`SUBJECTS`], [`CLASSES`], [`KEYS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `put` without expiry.
    Put { s: u8, c: u8, k: u8, v: u32 },
    /// `put_with` an expiry `ttl_hours` from now, in [`EXPIRING_CLASS`].
    PutExpiring {
        s: u8,
        k: u8,
        v: u32,
        ttl_hours: u32,
    },
    /// `delete`.
    Delete { s: u8, c: u8, k: u8 },
    /// `apply` of a batch of writes and deletions.
    Batch { items: Vec<BatchItem> },
    /// `shred` of every class, or one.
    Shred { s: u8, class: Option<u8> },
    /// `place_hold` over every class, or one.
    Hold { s: u8, class: Option<u8> },
    /// `release_hold`.
    Release { s: u8, class: Option<u8> },
    /// `close_account` (an account index).
    CloseAccount { a: u8 },
    /// `compact`.
    Compact,
    /// `rotate_epoch`.
    RotateEpoch,
    /// Moves the clock forward.
    AdvanceClock { hours: u32 },
    /// Sets the clock back: the store's time stands still until the clock
    /// passes it again (docs/design.md, invariant 11).
    SetClockBack { hours: u32 },
    /// `flush`.
    Flush,
    /// Drop the store (a clean close) and open it again.
    Restart,
}

/// What an operation returns, as the model predicts or the store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Success without a value worth comparing.
    Done,
    /// `Error::Erased`.
    Erased,
    /// `Error::Closed`: the subject's account is closed (D2).
    AccessClosed,
    /// `delete`: whether a readable record existed (`None`: any answer).
    Existed(Option<bool>),
    /// `release_hold`: whether a hold existed.
    Released(bool),
    /// `shred`: scopes erased and scopes retained by a hold, as counted in the receipt.
    Shredded { erased: usize, retained: usize },
    /// `close_account`: scopes scheduled.
    Closed(usize),
}

impl Outcome {
    /// Whether `answered` (what the store said) is what `self` predicts.
    pub(crate) fn admits(&self, answered: &Outcome) -> bool {
        match (self, answered) {
            (Outcome::Existed(None), Outcome::Existed(_)) => true,
            _ => self == answered,
        }
    }
}

/// A record's value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// No record.
    Absent,
    /// A record, with its expiry (unix seconds).
    Value {
        /// The value.
        value: Vec<u8>,
        /// When it expires.
        expires: Option<i64>,
    },
}

impl Slot {
    /// What a read at `now` returns.
    fn visible(&self, now: i64) -> Option<&[u8]> {
        match self {
            Slot::Value { value, expires } if expires.is_none_or(|e| e > now) => Some(value),
            _ => None,
        }
    }
}

/// One record: its value at the last flush and the values written since.
#[derive(Debug, Clone)]
struct Cell {
    durable: Slot,
    pending: Vec<Slot>,
}

impl Cell {
    fn latest(&self) -> &Slot {
        self.pending.last().unwrap_or(&self.durable)
    }
}

/// What a read of one record showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    /// `Error::Erased`.
    Erased,
    /// `Error::Closed`: the subject's account is closed.
    Closed,
    /// `Ok(None)`.
    Absent,
    /// `Ok(Some(value))`.
    Value(Vec<u8>),
}

/// Everything [`Model::check`] compares: every record of the universe, which
/// subjects are erased, which holds stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Every (subject, class, key).
    pub(crate) records: BTreeMap<(u8, u8, u8), Observed>,
    /// Whether each subject's state is `Erased`.
    pub(crate) subject_erased: [bool; 4],
    /// Holds: (subject, class or every class).
    pub(crate) holds: BTreeSet<(u8, Option<u8>)>,
}

/// The model of one store.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// The store's time, unix seconds: the latest the clock read (the store
    /// reads it before every set-back, `support::run_op`).
    pub(crate) now: i64,
    /// What the configured clock reads (behind `now` once set back).
    wall: i64,
    cells: BTreeMap<(u8, u8, u8), Cell>,
    subject_erased: [bool; 4],
    scope_erased: BTreeSet<(u8, u8)>,
    holds: BTreeSet<(u8, Option<u8>)>,
    closed: [bool; 4],
    /// Scopes written to: they hold keys (in this policy, none of their
    /// keys is destroyed but by erasure), so receipts name them.
    touched: BTreeSet<(u8, u8)>,
    /// Scopes whose class deadline passes at the time given (closure):
    /// erased for every read and write from then on, unless held.
    scheduled: BTreeMap<(u8, u8), i64>,
    /// Scopes whose shred a hold parked: erased when the hold is released
    /// (or by a compaction, once no hold covers them).
    parked: BTreeSet<(u8, u8)>,
    /// Subjects whose whole-subject erasure a hold blocked: once nothing of
    /// them is held, compaction erases the subject, as a direct shred would.
    whole_pending: BTreeSet<u8>,
    /// The last shred of each subject that erased or parked anything: the
    /// classes asked for and its answer. The same shred again, with nothing
    /// left to do, answers with it (docs/design.md, invariant 10).
    last_shred: BTreeMap<u8, (Option<u8>, Outcome)>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty store with every subject registered, at [`START`].
    pub(crate) fn new() -> Self {
        Self {
            now: START,
            wall: START,
            cells: BTreeMap::new(),
            subject_erased: [false; 4],
            scope_erased: BTreeSet::new(),
            holds: BTreeSet::new(),
            closed: [false; 4],
            touched: BTreeSet::new(),
            scheduled: BTreeMap::new(),
            parked: BTreeSet::new(),
            whole_pending: BTreeSet::new(),
            last_shred: BTreeMap::new(),
        }
    }

    /// What a read or write of scope (`s`, `c`) fails with, if it does: an
    /// erased subject, then a closed one, then a scope past its class
    /// deadline (unless held) or erased.
    fn refusal(&self, s: u8, c: u8) -> Option<Outcome> {
        let past_deadline = self
            .scheduled
            .get(&(s, c))
            .is_some_and(|at| *at <= self.now && !self.held(s, c));
        if self.subject_erased[usize::from(s)] {
            Some(Outcome::Erased)
        } else if self.closed[usize::from(s)] {
            Some(Outcome::AccessClosed)
        } else if past_deadline || self.scope_erased.contains(&(s, c)) {
            Some(Outcome::Erased)
        } else {
            None
        }
    }

    /// Whether a hold keeps a whole-subject erasure of `t` from completing:
    /// only a hold over a scope not erased yet does (holds over erased
    /// scopes keep nothing).
    fn blocks_whole_erasure(&self, t: u8) -> bool {
        (0..3).any(|c| self.held(t, c) && !self.scope_erased.contains(&(t, c)))
    }

    fn held(&self, s: u8, c: u8) -> bool {
        self.holds.contains(&(s, Some(c))) || self.holds.contains(&(s, None))
    }

    fn latest(&self, s: u8, c: u8, k: u8) -> &Slot {
        self.cells
            .get(&(s, c, k))
            .map_or(&Slot::Absent, Cell::latest)
    }

    fn write(&mut self, s: u8, c: u8, k: u8, slot: Slot) {
        let cell = self.cells.entry((s, c, k)).or_insert(Cell {
            durable: Slot::Absent,
            pending: Vec::new(),
        });
        if *cell.latest() != slot {
            cell.pending.push(slot);
        }
    }

    /// Whether a delete of the record reports it existed: only a record
    /// that has not expired counts (an expired one is dead for writers even
    /// while a hold keeps it readable), and whether anything is stored.
    fn exists(&self, s: u8, c: u8, k: u8) -> (bool, bool) {
        let latest = self.latest(s, c, k);
        (latest.visible(self.now).is_some(), *latest != Slot::Absent)
    }

    /// When the closure of an account at `at` makes class `c` due, by the
    /// model policy's text (its own calendar arithmetic, in UTC).
    fn deadline_after_closure(&self, c: u8, at: i64) -> Option<i64> {
        let day = 86_400;
        match CLASSES[usize::from(c)] {
            // until_account_closure
            "message_content" => Some(at),
            // retain = "60 days"
            "account_profile" => Some(at + 60 * day),
            // retain = "10 years": calendar years
            "invoices" => {
                let utc = shredkv::jiff::tz::TimeZone::UTC;
                let closed = utc.to_datetime(shredkv::jiff::Timestamp::from_second(at).ok()?);
                let due = closed
                    .checked_add(shredkv::jiff::Span::new().years(10))
                    .ok()?;
                Some(utc.to_timestamp(due).ok()?.as_second())
            }
            _ => None,
        }
    }

    /// Every buffered write becomes durable.
    pub(crate) fn flush(&mut self) {
        for cell in self.cells.values_mut() {
            if let Some(last) = cell.pending.pop() {
                cell.durable = last;
            }
            cell.pending.clear();
        }
    }

    /// Applies `op` and returns what the store must answer.
    pub(crate) fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Put { s, c, k, v } => self.apply_batch(&[(*s, *c, *k, Some(*v))], None),
            Op::PutExpiring { s, k, v, ttl_hours } => {
                let expires = self.now + i64::from(*ttl_hours) * 3600;
                self.apply_batch(&[(*s, EXPIRING_CLASS, *k, Some(*v))], Some(expires))
            }
            Op::Delete { s, c, k } => {
                if let Some(refused) = self.refusal(*s, *c) {
                    return refused;
                }
                let (existed, stored) = self.exists(*s, *c, *k);
                if stored {
                    self.write(*s, *c, *k, Slot::Absent);
                }
                Outcome::Existed(Some(existed))
            }
            Op::Batch { items } => self.apply_batch(items, None),
            Op::Shred { s, class } => self.shred(*s, *class),
            Op::Hold { s, class } => {
                if self.subject_erased[usize::from(*s)] {
                    return Outcome::Erased;
                }
                self.holds.insert((*s, *class));
                Outcome::Done
            }
            Op::Release { s, class } => {
                let released = self.holds.remove(&(*s, *class));
                if released {
                    self.resume(*s);
                }
                Outcome::Released(released)
            }
            Op::CloseAccount { a } => self.close(*a),
            Op::Compact => {
                self.compact();
                Outcome::Done
            }
            Op::AdvanceClock { hours } => {
                self.wall += i64::from(*hours) * 3600;
                self.now = self.now.max(self.wall);
                Outcome::Done
            }
            Op::SetClockBack { hours } => {
                self.wall -= i64::from(*hours) * 3600;
                Outcome::Done
            }
            // A clean close flushes.
            Op::Flush | Op::Restart => {
                self.flush();
                Outcome::Done
            }
            Op::RotateEpoch => Outcome::Done,
        }
    }

    /// Writes and deletions applied together, or none if any is refused
    /// (the first refused item, in batch order, answers).
    fn apply_batch(&mut self, items: &[BatchItem], expires: Option<i64>) -> Outcome {
        // Items are checked in order, and a put that passes its check gets
        // its scope's keys at once: they stay even if a later item is refused.
        for &(s, c, _, v) in items {
            if let Some(refused) = self.refusal(s, c) {
                return refused;
            }
            if v.is_some() {
                self.touched.insert((s, c));
            }
        }
        for &(s, c, k, v) in items {
            match v {
                Some(v) => {
                    self.write(
                        s,
                        c,
                        k,
                        Slot::Value {
                            value: value_bytes(v),
                            expires,
                        },
                    );
                }
                None => {
                    if self.exists(s, c, k).1 {
                        self.write(s, c, k, Slot::Absent);
                    }
                }
            }
        }
        Outcome::Done
    }

    fn shred(&mut self, s: u8, class: Option<u8>) -> Outcome {
        let (mut erased, mut retained) = (0, 0);
        // Whether it erases or parks anything (a parked scope is audited).
        let mut worked = false;
        for t in with_end_users(s) {
            if self.subject_erased[usize::from(t)] {
                continue;
            }
            let held_at_all = self.blocks_whole_erasure(t);
            if class.is_none() && !held_at_all {
                self.subject_erased[usize::from(t)] = true;
                erased += 1;
                worked = true;
                continue;
            }
            if class.is_none() {
                self.whole_pending.insert(t);
            }
            let classes: Vec<u8> = match class {
                Some(c) => vec![c],
                None => (0..3).collect(),
            };
            for c in classes {
                if self.scope_erased.contains(&(t, c)) {
                    continue;
                }
                worked = true;
                // A receipt names only the scopes the subject held.
                let named = usize::from(self.touched.contains(&(t, c)));
                if self.held(t, c) {
                    // Parked: once no hold covers it, compaction erases it.
                    self.parked.insert((t, c));
                    retained += named;
                    continue;
                }
                self.scope_erased.insert((t, c));
                erased += named;
            }
        }
        let answer = Outcome::Shredded { erased, retained };
        if worked {
            self.last_shred.insert(s, (class, answer.clone()));
            return answer;
        }
        // Nothing left to do: the same request answers with its receipt,
        // unless that receipt retained something (a hold since released
        // erased it, so the receipt no longer says what the ledger says).
        match self.last_shred.get(&s) {
            Some((asked, stored @ Outcome::Shredded { retained: 0, .. })) if *asked == class => {
                stored.clone()
            }
            _ => answer,
        }
    }

    fn close(&mut self, a: u8) -> Outcome {
        if self.subject_erased[usize::from(a)] {
            return Outcome::Erased;
        }
        let mut scheduled = 0;
        for t in with_end_users(a) {
            if self.subject_erased[usize::from(t)] || self.closed[usize::from(t)] {
                continue;
            }
            self.closed[usize::from(t)] = true;
            for c in 0..3 {
                if let Some(deadline) = self.deadline_after_closure(c, self.now) {
                    self.schedule(t, c, deadline);
                    scheduled += 1;
                }
            }
        }
        Outcome::Closed(scheduled)
    }

    /// Schedules the erasure of scope (`s`, `c`) at `deadline` (the earliest
    /// of its deadlines wins).
    fn schedule(&mut self, s: u8, c: u8, deadline: i64) {
        let at = self.scheduled.entry((s, c)).or_insert(deadline);
        *at = (*at).min(deadline);
    }

    /// A hold's release carries out the erasures it parked, before it
    /// returns: `s`'s parked shreds that no hold covers now, and its
    /// whole-subject erasure once nothing blocks it (deadlines it blocked
    /// stay for compaction; reads already end at them).
    fn resume(&mut self, s: u8) {
        let parked: Vec<(u8, u8)> = self
            .parked
            .iter()
            .copied()
            .filter(|(t, _)| *t == s)
            .collect();
        for (t, c) in parked {
            if self.subject_erased[usize::from(t)] || self.scope_erased.contains(&(t, c)) {
                self.parked.remove(&(t, c));
            } else if !self.held(t, c) {
                self.scope_erased.insert((t, c));
                self.parked.remove(&(t, c));
            }
        }
        if self.whole_pending.contains(&s) && !self.blocks_whole_erasure(s) {
            self.whole_pending.remove(&s);
            self.subject_erased[usize::from(s)] = true;
        }
    }

    /// Erases every scope whose retention ran out, or whose erasure a hold
    /// blocked, and that no hold covers now.
    fn compact(&mut self) {
        let due: Vec<(u8, u8)> = self
            .scheduled
            .iter()
            .filter(|(_, deadline)| **deadline <= self.now)
            .map(|(scope, _)| *scope)
            .chain(self.parked.iter().copied())
            .collect();
        // A passed deadline stays passed (reads keep answering "erased" at
        // it): only the parked shreds are done with.
        for (s, c) in due {
            if self.subject_erased[usize::from(s)] || self.scope_erased.contains(&(s, c)) {
                self.parked.remove(&(s, c));
            } else if !self.held(s, c) {
                self.scope_erased.insert((s, c));
                self.parked.remove(&(s, c));
            }
        }
        let resumed: Vec<u8> = self
            .whole_pending
            .iter()
            .copied()
            .filter(|&t| !self.blocks_whole_erasure(t))
            .collect();
        for t in resumed {
            self.whole_pending.remove(&t);
            self.subject_erased[usize::from(t)] = true;
        }
    }

    /// Compares a snapshot taken at the model's clock. `exact`: only the
    /// latest write of each record is acceptable; otherwise any write since
    /// the last flush, or the value flushed then (after a crash).
    ///
    /// # Errors
    /// The first difference, described.
    pub(crate) fn check(&self, snap: &Snapshot, exact: bool) -> Result<(), String> {
        for (s, name) in SUBJECTS.iter().enumerate() {
            let (want, got) = (self.subject_erased[s], snap.subject_erased[s]);
            if want != got {
                return Err(format!(
                    "subject {name}: erased should be {want}, the store says {got}"
                ));
            }
        }
        if self.holds != snap.holds {
            return Err(format!(
                "holds should be {:?}, the store has {:?}",
                self.holds, snap.holds
            ));
        }
        for (&(s, c, k), observed) in &snap.records {
            let what = || {
                format!(
                    "{}/{}/{}",
                    SUBJECTS[usize::from(s)],
                    CLASSES[usize::from(c)],
                    String::from_utf8_lossy(KEYS[usize::from(k)])
                )
            };
            if let Some(refused) = self.refusal(s, c) {
                let want = match refused {
                    Outcome::AccessClosed => Observed::Closed,
                    _ => Observed::Erased,
                };
                if *observed != want {
                    return Err(format!(
                        "{} should read as {want:?}, but the store shows {observed:?}",
                        what()
                    ));
                }
                continue;
            }
            let cell = self.cells.get(&(s, c, k));
            let latest = cell.map_or(&Slot::Absent, Cell::latest);
            let mut acceptable: Vec<&Slot> = vec![latest];
            if !exact && let Some(cell) = cell {
                acceptable.push(&cell.durable);
                acceptable.extend(cell.pending.iter());
            }
            // An expired record stays readable while a hold covers its
            // scope, unless compaction destroyed its bucket key before the
            // hold was placed (or re-keyed the bucket): the model does not
            // track keys, so under a hold either answer is accepted.
            let held = self.held(s, c);
            let fits = |slot: &&Slot| match (slot, slot.visible(self.now), observed) {
                (_, None, Observed::Absent) => true,
                (_, Some(want), Observed::Value(got)) => want == got.as_slice(),
                (Slot::Value { value, .. }, None, Observed::Value(got)) => held && value == got,
                _ => false,
            };
            if !acceptable.iter().any(fits) {
                return Err(format!(
                    "{}: the store shows {observed:?}, acceptable: {:?} (at {})",
                    what(),
                    acceptable
                        .iter()
                        .map(|s| s.visible(self.now).map(String::from_utf8_lossy))
                        .collect::<Vec<_>>(),
                    self.now
                ));
            }
        }
        Ok(())
    }
}
