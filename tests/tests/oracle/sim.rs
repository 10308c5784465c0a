//! The simulation: seeded actors drive the public API of `shredkv::Db` over
//! simulated days; after each day the invariants I1–I4 are checked against
//! the model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shredkv::internal::{MemoryKeyProvider, Tape, TestStore, open_with_tape};
use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{
    Backend, Batch, Classes, Config, Db, ErasureReason, Error, ManualClock, Outcome, Policy,
    PutOptions, Receipt, SubjectState, SubjectTag,
};

use super::model::{
    Cause, Ended, Erasure, Expect, HoldSpan, Model, Reason, Subject, Write, write_id_in,
};
use super::policy::{self, ClockKind, Timeline};
use super::tape_check::TapeCheck;

/// Where the store under test keeps its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    Memory,
    Disk(Backend),
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Memory => f.write_str("memory"),
            Backing::Disk(b) => write!(f, "{b}"),
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) seed: u64,
    pub(crate) days: u32,
    pub(crate) backing: Backing,
    /// Whether closed subjects must lose get/scan/put access (decision D2).
    pub(crate) closed_access: bool,
    /// Every class's purge window set to this many days (a policy built
    /// from policy/default.toml); `None`: the default policy as it is.
    pub(crate) window_days: Option<u32>,
}

/// One violation (the first of its kind; `count` says how often it recurred).
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) invariant: &'static str,
    pub(crate) what: String,
    pub(crate) subject: String,
    pub(crate) class: String,
    pub(crate) key: String,
    pub(crate) at: Timestamp,
    pub(crate) day: u32,
    pub(crate) expected: String,
    pub(crate) seen: String,
    pub(crate) count: u64,
    pub(crate) last: Timestamp,
    /// Occurrences per class.
    pub(crate) classes: BTreeMap<String, u64>,
    /// The first occurrence in each other class, one line each.
    pub(crate) examples: BTreeMap<String, String>,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) violations: BTreeMap<(&'static str, String), Violation>,
    pub(crate) ops: u64,
    pub(crate) days: u32,
    pub(crate) tape_bytes: u64,
    pub(crate) tape_writes: u64,
    pub(crate) wrapped_checked: u64,
    /// Of those, node keys of the key tree.
    pub(crate) node_copies_checked: u64,
    /// Of those, nodes of day forests.
    pub(crate) day_node_copies_checked: u64,
    pub(crate) envelopes_checked: u64,
    pub(crate) attempts: u64,
    pub(crate) start: Option<Timestamp>,
    pub(crate) end: Option<Timestamp>,
    pub(crate) subjects: usize,
    pub(crate) writes: usize,
    pub(crate) backups: u32,
    pub(crate) restarts: u32,
    pub(crate) restores: u32,
    pub(crate) compactions: u32,
    /// Classes registered again after an erasure (re_register_class).
    pub(crate) reopenings: u32,
    /// Actions run with the clock set back (the store's time stands).
    pub(crate) set_backs: u32,
    /// Restores refused because the backup's epoch was already destroyed
    /// (allowed only once the backup is older than the timeline keeps it).
    pub(crate) restores_refused: u32,
    /// Backups older than the shortest purge window whose restore was tried
    /// (each must be refused).
    pub(crate) old_restores_tried: u32,
    /// Runs of the I2 tape check.
    pub(crate) tape_checks: u32,
    pub(crate) elapsed: Duration,
}

impl Report {
    pub(crate) fn total(&self) -> u64 {
        self.violations.values().map(|v| v.count).sum()
    }

    /// The precise failure text: one paragraph per kind of violation.
    pub(crate) fn render(&self, settings: &Settings, limit: usize) -> String {
        let mut out = format!(
            "forensic oracle: seed {}, backend {}{}, {} simulated days ({} .. {}), {} operations: \
             {} distinct violations, {} in all\n",
            settings.seed,
            settings.backing,
            settings
                .window_days
                .map(|d| format!(", every purge window {d} days"))
                .unwrap_or_default(),
            self.days,
            self.start.map(|t| t.to_string()).unwrap_or_default(),
            self.end.map(|t| t.to_string()).unwrap_or_default(),
            self.ops,
            self.violations.len(),
            self.total()
        );
        for v in self.violations.values().take(limit) {
            out += &format!(
                "\n[{}] {} — {}× ({}), first at {} (day {}), last at {}\n  first: seed {}, backend {}, subject {}, class {}, key {}\n  expected: {}\n  seen:     {}\n",
                v.invariant,
                v.what,
                v.count,
                v.classes
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                v.at,
                v.day,
                v.last,
                settings.seed,
                settings.backing,
                v.subject,
                v.class,
                v.key,
                v.expected,
                v.seen
            );
            for (class, line) in &v.examples {
                out += &format!("  also in {class}: {line}\n");
            }
        }
        if self.violations.len() > limit {
            out += &format!("\n... and {} more kinds\n", self.violations.len() - limit);
        }
        out
    }
}

/// Records a violation; the expected and seen texts are only built for the
/// first occurrence in each class (a run on a store with holes finds
/// millions).
macro_rules! violation {
    ($sim:expr, $inv:expr, $what:expr, $s:expr, $c:expr, $key:expr, $expected:expr, $seen:expr $(,)?) => {{
        let what: &str = &$what;
        if !$sim.bump($inv, what, $c) {
            let expected: String = $expected;
            let seen: String = $seen;
            let what = what.to_string();
            $sim.record_violation($inv, &what, $s, $c, $key, expected, seen);
        }
    }};
}

/// SplitMix64: small, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn secs(&mut self, from: i64, to: i64) -> SignedDuration {
        let span = u64::try_from(to - from).unwrap_or(1).max(1);
        SignedDuration::from_secs(from + i64::try_from(self.below(span)).unwrap_or(0))
    }
}

/// The one place the oracle's stores are configured.
/// Restores take over from the live store as a disaster recovery would:
/// records a re-key after the backup made unrecoverable are accepted as lost
/// (the restore reports them; the model counts them as lost in the restore).
fn accept_losses() -> shredkv::RestoreOptions {
    shredkv::RestoreOptions::default().accept_lost_records(true)
}

pub(crate) fn oracle_config(
    path: &Path,
    backend: Backend,
    clock: Arc<ManualClock>,
    provider: Arc<MemoryKeyProvider>,
    policy: Policy,
) -> Config {
    Config::new(path)
        .backend(backend)
        .policy(policy)
        .clock(clock)
        .key_provider(provider)
        .flush_every(None)
        // The simulation runs compaction itself, at hours it chooses.
        .maintenance_every(None)
}

fn policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml")
}

/// How an error refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Erased,
    Closed,
    Other,
}

fn refusal(e: &Error) -> Refusal {
    if e.to_string().to_lowercase().contains("closed") {
        Refusal::Closed
    } else if e.is_erased() {
        Refusal::Erased
    } else {
        Refusal::Other
    }
}

/// Reads every tree of a closed store directory straight from its backend
/// files onto the tape (backups are bytes an attacker may hold too).
fn tape_directory(tape: &Tape, dir: &Path, backend: Backend) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let trees = [
        "meta",
        "data",
        "vault",
        "vault_days",
        "subjects",
        "deadlines",
        "debts",
        "holds",
        "ledger",
        "audit",
        "blocked",
        "seals",
    ];
    let mut n = 0u64;
    match backend {
        Backend::Redb => {
            use redb::{ReadableDatabase, ReadableTable, TableDefinition};
            let db = loop {
                match redb::Database::open(dir.join("store.redb")) {
                    Ok(db) => break db,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(format!("open backup {}: {e}", dir.display())),
                }
            };
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            for tree in trees {
                let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(tree);
                let Ok(table) = txn.open_table(def) else {
                    continue;
                };
                for entry in table.iter().map_err(|e| e.to_string())? {
                    let (k, v) = entry.map_err(|e| e.to_string())?;
                    tape.record(tree, k.value(), v.value());
                    n += 1;
                }
            }
        }
        _ => {
            let db = loop {
                match sled::open(dir.join("sled")) {
                    Ok(db) => break db,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(format!("open backup {}: {e}", dir.display())),
                }
            };
            for tree in trees {
                let t = db.open_tree(tree).map_err(|e| e.to_string())?;
                for entry in t.iter() {
                    let (k, v) = entry.map_err(|e| e.to_string())?;
                    tape.record(tree, &k, &v);
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

struct Backup {
    path: PathBuf,
    taken_at: Timestamp,
    /// Opened as a live store (hole 13), or kept for a restore.
    probed: bool,
    /// Restored once older than the shortest purge window (it must be
    /// refused), or kept for a restore.
    restore_probed: bool,
}

/// One op of a batch: class, key, and the value and expiry of a put (none
/// for a delete).
type Planned = (usize, Vec<u8>, Option<(Vec<u8>, Option<Timestamp>)>);

/// What the store may do with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteRule {
    Accept,
    Refuse(&'static str),
    /// Accepting or refusing are both right (see [`Sim::write_rule`]).
    Either(&'static str),
}

/// One simulation run.
pub(crate) struct Sim {
    settings: Settings,
    rng: Rng,
    model: Model,
    dir: tempfile::TempDir,
    test_store: TestStore,
    backend: Backend,
    provider: Arc<MemoryKeyProvider>,
    clock: Arc<ManualClock>,
    policy: Policy,
    tape: Tape,
    db: Option<Db>,
    check: TapeCheck,
    report: Report,
    now: Timestamp,
    day: u32,
    by_tag: BTreeMap<[u8; 16], usize>,
    backups: Vec<Backup>,
    accounts_made: u32,
    users_made: u32,
    /// The live store's directory (a restore moves it).
    live: PathBuf,
    /// Restores made: (backup taken, restored at).
    restored: Vec<(Timestamp, Timestamp)>,
    /// The purge timeline of the policy, as docs/design.md states it.
    timeline: Timeline,
    /// When the next compaction runs.
    next_compaction: Timestamp,
}

const KEYS_PER_SCOPE: u64 = 6;

impl Sim {
    pub(crate) fn new(settings: Settings) -> Result<Sim, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // With a window override, the oracle's reader and the engine read
        // one file: the default policy with every class's window changed.
        let path = match settings.window_days {
            None => policy_path(),
            Some(days) => {
                let text = std::fs::read_to_string(policy_path()).map_err(|e| e.to_string())?;
                let path = dir.path().join("policy.toml");
                std::fs::write(&path, policy::with_purge_window(&text, days)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                path
            }
        };
        let classes = policy::load(&path)?;
        let policy = Policy::load(&path).map_err(|e| e.to_string())?;
        let timeline = Timeline::of(&classes);
        let mut rng = Rng(settings.seed ^ 0x5EED_0F0A_C1E5);
        // Start on an odd hour and minute, a different one per seed.
        let start: Timestamp = "2027-01-01T00:00:00Z".parse().map_err(|e| format!("{e}"))?;
        let start = start
            .checked_add(rng.secs(3_600, 86_400))
            .map_err(|e| e.to_string())?;
        let (test_store, backend) = match settings.backing {
            Backing::Memory => (
                TestStore::Memory(shredkv::internal::MemoryStore::new()),
                Backend::Sled,
            ),
            Backing::Disk(b) => (TestStore::Disk(b), b),
        };
        let live = dir.path().join("store");
        let mut sim = Sim {
            restored: Vec::new(),
            live,
            rng,
            model: Model {
                classes,
                ..Model::default()
            },
            dir,
            test_store,
            backend,
            provider: Arc::new(MemoryKeyProvider::new()),
            clock: Arc::new(ManualClock::new(start)),
            policy,
            tape: Tape::new(),
            db: None,
            check: TapeCheck::default(),
            report: Report {
                start: Some(start),
                ..Report::default()
            },
            now: start,
            day: 0,
            by_tag: BTreeMap::new(),
            backups: Vec::new(),
            accounts_made: 0,
            users_made: 0,
            settings,
            timeline,
            next_compaction: start,
        };
        sim.open()?;
        Ok(sim)
    }

    fn store_path(&self) -> PathBuf {
        self.live.clone()
    }

    fn config(&self, path: &Path) -> Config {
        oracle_config(
            path,
            self.backend,
            Arc::clone(&self.clock),
            Arc::clone(&self.provider),
            self.policy.clone(),
        )
    }

    fn open(&mut self) -> Result<(), String> {
        self.db = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match open_with_tape(
                self.config(&self.store_path()),
                &self.test_store,
                &self.tape,
            ) {
                Ok((db, _)) => {
                    self.db = Some(db);
                    return Ok(());
                }
                Err(Error::Storage(ref se)) if se.is_locked() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("open the store at {}: {e}", self.now)),
            }
        }
    }

    fn db(&self) -> &Db {
        self.db
            .as_ref()
            .expect("the store is open between operations")
    }

    /// Counts one more occurrence of a violation already on record with an
    /// example in this class; `false` if it needs recording in full.
    fn bump(&mut self, invariant: &'static str, what: &str, c: Option<usize>) -> bool {
        let class = c.map_or("-", |c| self.model.classes[c].name.as_str());
        let Some(v) = self
            .report
            .violations
            .get_mut(&(invariant, what.to_string()))
        else {
            return false;
        };
        if v.class != class && !v.examples.contains_key(class) {
            return false;
        }
        v.count += 1;
        v.last = self.now;
        *v.classes.entry(class.to_string()).or_default() += 1;
        true
    }

    #[allow(clippy::too_many_arguments, reason = "a violation names all of these")]
    fn record_violation(
        &mut self,
        invariant: &'static str,
        what: &str,
        s: Option<usize>,
        c: Option<usize>,
        key: &[u8],
        expected: String,
        seen: String,
    ) {
        let class = c
            .map(|c| self.model.classes[c].name.clone())
            .unwrap_or_else(|| "-".into());
        let subject = s
            .map(|s| self.model.subjects[s].id.clone())
            .unwrap_or_else(|| "-".into());
        let now = self.now;
        let day = self.day;
        let line = || {
            format!(
                "{now} (day {day}) subject {subject} key {}: expected {expected}; seen {seen}",
                String::from_utf8_lossy(key)
            )
        };
        self.report
            .violations
            .entry((invariant, what.to_string()))
            .and_modify(|v| {
                v.count += 1;
                v.last = now;
                *v.classes.entry(class.clone()).or_default() += 1;
                if class != v.class {
                    v.examples.entry(class.clone()).or_insert_with(line);
                }
            })
            .or_insert(Violation {
                invariant,
                what: what.to_string(),
                subject,
                class: class.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                at: now,
                day,
                expected,
                seen,
                count: 1,
                last: now,
                classes: BTreeMap::from([(class.clone(), 1)]),
                examples: BTreeMap::new(),
            });
    }

    fn api_error(&mut self, op: &str, s: Option<usize>, c: Option<usize>, e: &Error) {
        violation!(
            self,
            "API",
            &format!("{op} failed unexpectedly"),
            s,
            c,
            b"",
            format!("{op} to succeed"),
            format!("error: {e}"),
        );
    }

    // ---- the run --------------------------------------------------------

    pub(crate) fn run(mut self) -> Result<Report, String> {
        let began = Instant::now();
        let start = self.now;
        self.next_compaction = start
            .checked_add(self.compaction_gap())
            .map_err(|e| e.to_string())?;
        for day in 0..self.settings.days {
            self.day = day;
            let day_start = start + SignedDuration::from_hours(24 * i64::from(day));
            let day_end = day_start + SignedDuration::from_hours(24);
            let n = 20 + self.rng.below(30);
            let mut times: Vec<Timestamp> = (0..n)
                .map(|_| day_start + self.rng.secs(0, 86_399))
                .collect();
            times.sort();
            for t in times {
                self.compact_until(t)?;
                self.at(t);
                self.act()?;
                self.report.ops += 1;
            }
            self.compact_until(day_end)?;
            self.at(day_end);
            self.daily()?;
        }
        self.report.days = self.settings.days;
        self.report.end = Some(self.now);
        self.report.tape_bytes = self.tape.bytes();
        self.report.tape_writes = self.tape.writes();
        self.report.wrapped_checked = self.check.wrapped_read;
        self.report.node_copies_checked = self.check.node_copies_read;
        self.report.day_node_copies_checked = self.check.day_node_copies_read;
        self.report.envelopes_checked = self.check.envelopes_read;
        self.report.attempts = self.check.attempts;
        self.report.subjects = self.model.subjects.len();
        self.report.writes = self.model.writes.len();
        self.report.elapsed = began.elapsed();
        Ok(std::mem::take(&mut self.report))
    }

    /// Moves the clock to `t`, never back: an action that spans time (a
    /// backup-then-restore, a release followed by a request) pushes the
    /// events drawn for earlier in the day to when it ended.
    fn at(&mut self, t: Timestamp) {
        self.now = self.now.max(t);
        self.clock.set(self.now);
    }

    /// Whether every purge window is overridden (a short-window run): the
    /// compaction cadence and the checks then follow the timeline.
    fn windowed(&self) -> bool {
        self.settings.window_days.is_some()
    }

    /// The time to the next compaction. By default 1 to 12 hours. With a
    /// window override, P/8 to P/2: docs/design.md's timeline keeps one
    /// rotation period P for maintenance running late, provided it runs at
    /// least every P/2.
    fn compaction_gap(&mut self) -> SignedDuration {
        if self.windowed() {
            let p = self.timeline.rotation.as_secs();
            self.rng.secs(p / 8, p / 2)
        } else {
            self.rng.secs(3_600, 12 * 3_600)
        }
    }

    /// The longest time between two compactions (see [`Sim::pass_time`]).
    fn max_compaction_gap(&self) -> SignedDuration {
        if self.windowed() {
            self.timeline.rotation / 2
        } else {
            SignedDuration::from_hours(12)
        }
    }

    /// How long after a deadline the next compaction may carry it out: the
    /// longest gap between compactions, and an hour of margin.
    fn compaction_lateness(&self) -> SignedDuration {
        self.max_compaction_gap() + SignedDuration::from_hours(1)
    }

    /// Runs every compaction due by `t`, each at its time (or now, if an
    /// action ran past it). With a window override the tape (I2) and the
    /// backups are checked just before each pass: a purge window of a day
    /// or three is too short to be watched once a day, and between passes
    /// nothing makes a record less recoverable.
    fn compact_until(&mut self, t: Timestamp) -> Result<(), String> {
        while self.next_compaction <= t {
            self.at(self.next_compaction);
            if self.windowed() {
                self.probe_backups();
                self.check_tape()?;
            }
            self.compact();
            let gap = self.compaction_gap();
            self.next_compaction += gap;
        }
        Ok(())
    }

    /// Moves time on to `t` inside an action. With a window override the
    /// compactions due on the way run first, so that maintenance keeps its
    /// cadence whatever the actions do; by default they wait for the action
    /// to end (an action spans an hour or a few).
    fn pass_time(&mut self, t: Timestamp) -> Result<(), String> {
        if self.windowed() {
            self.compact_until(t)?;
        }
        self.at(t);
        Ok(())
    }

    fn act(&mut self) -> Result<(), String> {
        if self.model.subjects.len() < 4 {
            self.register_account();
            return Ok(());
        }
        let roll = self.rng.below(1000);
        match roll {
            0..330 => self.put(),
            330..410 => self.delete(),
            410..450 => self.batch(),
            450..560 => {
                if let Some((s, c, key)) = self.pick_key() {
                    let path = if self.rng.chance(50) {
                        "get"
                    } else {
                        "get_record"
                    };
                    self.check_get(path, s, c, &key);
                }
            }
            560..590 => {
                if let Some((s, c, _)) = self.pick_key() {
                    self.check_scan(s, c);
                }
            }
            590..605 => {
                let s = self.rng.index(self.model.subjects.len());
                self.check_export(s);
            }
            605..610 => self.verify(),
            610..625 => {
                let s = self.rng.index(self.model.subjects.len());
                self.check_certificate(s);
            }
            625..650 => self.register_account(),
            650..690 => self.register_end_user(),
            690..697 => self.close_account(),
            697..705 => self.opt_out(),
            705..712 => self.deletion_request(),
            712..722 => self.shred(),
            722..740 => self.place_hold(),
            740..760 => self.release_hold(),
            760..770 => self.manual_release()?,
            772..775 => self.backup()?,
            775..778 => self.backup_and_restore()?,
            778..784 => {
                self.report.restarts += 1;
                self.open()?;
            }
            850..862 => self.re_register_class()?,
            862..880 => self.with_the_clock_set_back()?,
            770..772 | 784..850 => self.delete(),
            _ => self.put(),
        }
        Ok(())
    }

    /// One action with the clock set back 1 to 72 hours. The model's time
    /// stays where it is: the store's time never runs back (design.md,
    /// invariant 11), so every expectation stands as it would without the
    /// set-back. The store first reads the time the model stands at (its
    /// floor is the latest time it read).
    fn with_the_clock_set_back(&mut self) -> Result<(), String> {
        self.report.set_backs += 1;
        let read = self.db().now();
        if read != self.now {
            violation!(
                self,
                "T1",
                "Db::now before the clock is set back",
                None,
                None,
                b"",
                self.now.to_string(),
                read.to_string(),
            );
        }
        let back = self.rng.secs(3_600, 72 * 3_600);
        self.clock.set(self.now - back);
        let acted = self.act();
        let read = self.db().now();
        if read < self.now {
            violation!(
                self,
                "T1",
                "Db::now with the clock set back",
                None,
                None,
                b"",
                format!("{} or later", self.now),
                read.to_string(),
            );
        }
        // Actions that span time move the model's time (`at`), and the clock
        // with it; the clock comes back to the model's time either way.
        self.clock.set(self.now);
        acted
    }

    fn subject_cap(&self) -> usize {
        24 + usize::try_from(self.day / 3).unwrap_or(0)
    }

    fn pick_key(&mut self) -> Option<(usize, usize, Vec<u8>)> {
        if self.model.current.is_empty() {
            return None;
        }
        let i = self.rng.index(self.model.current.len());
        self.model.current.keys().nth(i).cloned()
    }

    fn value_for(&mut self, id: u64) -> Vec<u8> {
        format!(
            "{}{id:010}-{:016x}",
            String::from_utf8_lossy(super::model::MARKER),
            self.rng.next()
        )
        .into_bytes()
    }

    /// Why the store must refuse a write to (s, c) now, if it must.
    fn must_refuse(&self, s: usize, c: usize) -> Option<&'static str> {
        match self.write_rule(s, c) {
            WriteRule::Refuse(why) | WriteRule::Either(why) => Some(why),
            WriteRule::Accept => None,
        }
    }

    /// What the store may do with a write to (s, c) now. A scope past a
    /// deadline (not an erasure made at that moment) is erased by the next
    /// compaction, at most 12 hours later (P/2 with a window override; see
    /// [`Sim::compaction_lateness`]); until then the store may still
    /// take writes, which the model then counts dead from the start.
    fn write_rule(&self, s: usize, c: usize) -> WriteRule {
        if let Some(d) = self
            .model
            .scope_death(s, c, self.now)
            .filter(|d| d.at <= self.now)
        {
            let direct = !d.held && d.causes.iter().any(|c| matches!(c, Cause::Erasure(..)));
            let fresh = self.now - d.at < self.compaction_lateness();
            let why = "the scope is erased or past its deadline (G6, D1)";
            if fresh && !direct && !self.closed_now(s) {
                return WriteRule::Either(why);
            }
            return WriteRule::Refuse(why);
        }
        if self.closed_now(s) {
            WriteRule::Refuse("the subject is closed (D2)")
        } else {
            WriteRule::Accept
        }
    }

    fn record_write(
        &mut self,
        s: usize,
        c: usize,
        key: Vec<u8>,
        value: Vec<u8>,
        expires: Option<Timestamp>,
    ) {
        let id = self.model.writes.len() as u64;
        let at = self.now;
        if let Some(&prev) = self.model.current.get(&(s, c, key.clone())) {
            let w = &mut self.model.writes[prev];
            if w.ended.is_none() {
                w.ended = Some((at, Ended::Overwritten));
            }
        }
        self.model.writes.push(Write {
            id,
            subject: s,
            class: c,
            key: key.clone(),
            value,
            at,
            expires,
            ended: None,
            revived: false,
        });
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        self.model
            .versions
            .entry((s, c, key.clone()))
            .or_default()
            .push(index);
        self.model.current.insert((s, c, key), index);
        self.model.subjects[s].wrote.insert(c);
    }

    fn random_expiry(&mut self, c: usize) -> Option<Timestamp> {
        if self.model.classes[c].clock == ClockKind::Write && self.rng.chance(35) {
            Some(self.now + self.rng.secs(3_600, 40 * 86_400))
        } else {
            None
        }
    }

    /// A (subject, class) to write to: mostly one where writing is allowed,
    /// sometimes one where the store must refuse (a probe).
    fn pick_scope(&mut self) -> (usize, usize) {
        let probe = self.rng.chance(5);
        let mut pick = (0, 0);
        for _ in 0..12 {
            pick = (
                self.rng.index(self.model.subjects.len()),
                self.rng.index(self.model.classes.len()),
            );
            if self.must_refuse(pick.0, pick.1).is_some() == probe {
                break;
            }
        }
        pick
    }

    fn put(&mut self) {
        let (s, c) = self.pick_scope();
        let key = format!("k{}", self.rng.below(KEYS_PER_SCOPE)).into_bytes();
        let id = self.model.writes.len() as u64;
        let value = self.value_for(id);
        let expires = self.random_expiry(c);
        let subject = self.model.subjects[s].id.clone();
        let class = self.model.classes[c].name.clone();
        let result = match expires {
            Some(e) => {
                self.db()
                    .put_with(&subject, &class, &key, &value, PutOptions::expires_at(e))
            }
            None => self.db().put(&subject, &class, &key, &value),
        };
        self.after_write("put", s, c, key, value, expires, result.map(|()| true));
    }

    #[allow(clippy::too_many_arguments, reason = "one write's facts")]
    fn after_write(
        &mut self,
        op: &str,
        s: usize,
        c: usize,
        key: Vec<u8>,
        value: Vec<u8>,
        expires: Option<Timestamp>,
        result: Result<bool, Error>,
    ) {
        match (result, self.write_rule(s, c)) {
            (Ok(_), WriteRule::Accept | WriteRule::Either(_)) => {
                self.record_write(s, c, key, value, expires);
            }
            (Ok(_), WriteRule::Refuse(why)) => {
                let inv = if why.contains("D2") { "D2" } else { "I1" };
                violation!(
                    self,
                    inv,
                    &format!("{op} accepted where the store must refuse it"),
                    Some(s),
                    Some(c),
                    &key,
                    format!("a refusal: {why}"),
                    "the write succeeded".into(),
                );
                self.record_write(s, c, key, value, expires);
            }
            (Err(e), WriteRule::Refuse(_) | WriteRule::Either(_))
                if refusal(&e) != Refusal::Other => {}
            (Err(e), _) => self.api_error(op, Some(s), Some(c), &e),
        }
    }

    fn delete(&mut self) {
        let probe = self.rng.chance(5);
        let mut picked = None;
        for _ in 0..12 {
            let Some((s, c, key)) = self.pick_key() else {
                return;
            };
            let fits = self.must_refuse(s, c).is_some() == probe;
            picked = Some((s, c, key));
            if fits {
                break;
            }
        }
        let Some((s, c, key)) = picked else {
            return;
        };
        let subject = self.model.subjects[s].id.clone();
        let class = self.model.classes[c].name.clone();
        let result = self.db().delete(&subject, &class, &key);
        let accepted = match (result, self.write_rule(s, c)) {
            (Ok(_), WriteRule::Accept | WriteRule::Either(_)) => true,
            (Ok(_), WriteRule::Refuse(why)) => {
                let inv = if why.contains("D2") { "D2" } else { "I1" };
                violation!(
                    self,
                    inv,
                    "delete accepted where the store must refuse it",
                    Some(s),
                    Some(c),
                    &key,
                    format!("a refusal: {why}"),
                    "the delete succeeded".into(),
                );
                true
            }
            (Err(e), WriteRule::Refuse(_) | WriteRule::Either(_))
                if refusal(&e) != Refusal::Other =>
            {
                false
            }
            (Err(e), _) => {
                self.api_error("delete", Some(s), Some(c), &e);
                false
            }
        };
        if accepted
            && let Some(&w) = self.model.current.get(&(s, c, key))
            && self.model.writes[w].ended.is_none()
        {
            self.model.writes[w].ended = Some((self.now, Ended::Deleted));
        }
    }

    fn batch(&mut self) {
        let (s, _) = self.pick_scope();
        let subject = self.model.subjects[s].id.clone();
        let mut batch = Batch::new();
        let mut planned: Vec<Planned> = Vec::new();
        let mut next_id = self.model.writes.len() as u64;
        for _ in 0..2 + self.rng.below(4) {
            let c = self.rng.index(self.model.classes.len());
            if self.must_refuse(s, c).is_some() {
                continue;
            }
            let class = self.model.classes[c].name.clone();
            let key = format!("k{}", self.rng.below(KEYS_PER_SCOPE)).into_bytes();
            if self.rng.chance(25) {
                batch.delete(&subject, &class, &key);
                planned.push((c, key, None));
            } else {
                let value = self.value_for(next_id);
                next_id += 1;
                let expires = self.random_expiry(c);
                match expires {
                    Some(e) => {
                        batch.put_with(&subject, &class, &key, &value, PutOptions::expires_at(e))
                    }
                    None => batch.put(&subject, &class, &key, &value),
                };
                planned.push((c, key, Some((value, expires))));
            }
        }
        if planned.is_empty() {
            return;
        }
        match self.db().apply(batch) {
            Ok(applied) => {
                if applied.outcomes.len() != planned.len() {
                    violation!(
                        self,
                        "API",
                        "apply(batch) reported another number of outcomes",
                        Some(s),
                        None,
                        b"",
                        format!("{} outcomes", planned.len()),
                        format!("{}", applied.outcomes.len()),
                    );
                }
                for ((c, key, op), outcome) in planned.into_iter().zip(applied.outcomes) {
                    // What the model says the key held just before this op
                    // (earlier ops of the batch already applied to it).
                    let before = self
                        .model
                        .current
                        .get(&(s, c, key.clone()))
                        .map(|&w| &self.model.writes[w])
                        .filter(|w| w.ended.is_none());
                    // A version from before its scope was erased and the
                    // class re-opened is gone, whatever its expiry.
                    let live = before.is_some_and(|w| {
                        w.expires.is_none_or(|e| e > self.now)
                            && !self.model.write_scope_dead(w, self.now)
                    });
                    let unsure = before.is_some_and(|w| w.revived);
                    let expected = match (&op, live) {
                        (Some(_), true) => Outcome::Replaced,
                        (Some(_), false) => Outcome::Created,
                        (None, true) => Outcome::Deleted,
                        (None, false) => Outcome::NotFound,
                    };
                    if outcome != expected && !unsure {
                        violation!(
                            self,
                            "API",
                            "apply(batch) reported the wrong outcome for an operation",
                            Some(s),
                            Some(c),
                            &key,
                            format!("{expected:?}"),
                            format!("{outcome:?}"),
                        );
                    }
                    match op {
                        Some((value, expires)) => self.record_write(s, c, key, value, expires),
                        None => {
                            if let Some(&w) = self.model.current.get(&(s, c, key))
                                && self.model.writes[w].ended.is_none()
                            {
                                self.model.writes[w].ended = Some((self.now, Ended::Deleted));
                            }
                        }
                    }
                }
            }
            Err(e) => self.api_error("apply(batch)", Some(s), None, &e),
        }
    }

    // ---- reads (I1) -------------------------------------------------------

    /// Checks a value a read path returned for (s, c, key).
    fn check_value(&mut self, path: &str, s: usize, c: usize, key: &[u8], got: &[u8]) {
        let Some(w) = write_id_in(got)
            .and_then(|id| self.model.writes.get(usize::try_from(id).ok()?))
            .cloned()
        else {
            violation!(
                self,
                "I1",
                &format!("{path} returned a value the oracle never wrote"),
                Some(s),
                Some(c),
                key,
                "a value the oracle wrote".into(),
                format!("{} bytes: {}", got.len(), String::from_utf8_lossy(got)),
            );
            return;
        };
        let current = self.model.current.get(&(s, c, key.to_vec())).copied();
        if w.subject != s || w.class != c || w.key != key {
            let seen = self.model.describe(&w);
            violation!(
                self,
                "I1",
                &format!("{path} returned another record's value"),
                Some(s),
                Some(c),
                key,
                "this record's value".into(),
                seen,
            );
        } else if w.value != got {
            let seen = String::from_utf8_lossy(got).into_owned();
            violation!(
                self,
                "I1",
                &format!("{path} returned bytes other than those written"),
                Some(s),
                Some(c),
                key,
                self.model.describe(&w),
                seen,
            );
        } else if current != usize::try_from(w.id).ok() {
            let seen = self.model.describe(&w);
            let cur = current
                .map(|i| self.model.describe(&self.model.writes[i]))
                .unwrap_or_default();
            violation!(
                self,
                "I1",
                &format!("{path} returned a replaced version"),
                Some(s),
                Some(c),
                key,
                format!("the current version: {cur}"),
                seen,
            );
        } else if self.model.expect(&w, self.now) == Expect::Dead {
            let (died, how) = self.model.death_of(&w).unwrap_or((self.now, "?".into()));
            let what = if how.starts_with("scope") {
                format!("{path} returned a record past its class deadline or erasure")
            } else {
                format!(
                    "{path} returned a record {}",
                    how.split(':').next().unwrap_or(&how)
                )
            };
            let seen = self.model.describe(&w);
            violation!(
                self,
                "I1",
                &what,
                Some(s),
                Some(c),
                key,
                format!("nothing: it stopped being live at {died} ({how})"),
                seen,
            );
        }
    }

    /// Checks that the current version of a key the read did not return was
    /// not live.
    fn check_absent(&mut self, path: &str, s: usize, c: usize, key: &[u8], why: &str) {
        let Some(&w) = self.model.current.get(&(s, c, key.to_vec())) else {
            return;
        };
        let w = self.model.writes[w].clone();
        if self.model.expect(&w, self.now) == Expect::Live {
            let restores: Vec<String> = self
                .restored
                .iter()
                .filter(|(taken, _)| *taken >= w.at)
                .map(|(taken, at)| format!("{at} (backup of {taken})"))
                .collect();
            let seen = if restores.is_empty() {
                why.to_string()
            } else {
                format!(
                    "{why}; restores since it was written, from backups that held it: {}",
                    restores.join(", ")
                )
            };
            let expected = self.model.describe(&w);
            let what = if restores.is_empty() {
                format!("{path} lost a live record")
            } else {
                format!("{path} lost a live record after a restore")
            };
            violation!(
                self,
                "I1-live",
                &what,
                Some(s),
                Some(c),
                key,
                format!("the live value of {expected}"),
                seen,
            );
        }
    }

    fn closed_now(&self, s: usize) -> bool {
        self.settings.closed_access && self.model.is_closed(s, self.now)
    }

    fn check_get(&mut self, path: &str, s: usize, c: usize, key: &[u8]) {
        let subject = self.model.subjects[s].id.clone();
        let class = self.model.classes[c].name.clone();
        let closed = self.closed_now(s);
        // `get_record` is the same read path with the expiry; both are used.
        let result = if path == "get_record" {
            self.db()
                .get_record(&subject, &class, key)
                .map(|r| r.map(|r| r.value))
        } else {
            self.db().get(&subject, &class, key)
        };
        match result {
            Ok(found) => {
                if closed {
                    let at = self.model.closed_at(s).unwrap_or(self.now);
                    violation!(
                        self,
                        "D2",
                        &format!("{path} served a closed subject"),
                        Some(s),
                        Some(c),
                        key,
                        format!("a closed error: the subject closed at {at}"),
                        format!("Ok({})", if found.is_some() { "a value" } else { "None" }),
                    );
                }
                match found {
                    Some(v) => self.check_value(path, s, c, key, &v),
                    None if !closed => self.check_absent(path, s, c, key, "None"),
                    None => {}
                }
            }
            Err(e) if refusal(&e) != Refusal::Other => {
                if !closed {
                    self.check_absent(path, s, c, key, &format!("error: {e}"));
                }
            }
            Err(e) => self.api_error(path, Some(s), Some(c), &e),
        }
    }

    fn keys_of(&self, s: usize, c: usize) -> Vec<Vec<u8>> {
        self.model
            .current
            .range((s, c, Vec::new())..)
            .take_while(|((s2, c2, _), _)| *s2 == s && *c2 == c)
            .map(|((_, _, k), _)| k.clone())
            .collect()
    }

    fn check_scan(&mut self, s: usize, c: usize) {
        let subject = self.model.subjects[s].id.clone();
        let class = self.model.classes[c].name.clone();
        let closed = self.closed_now(s);
        let result = self.db().scan(&subject, &class);
        match result {
            Ok(records) => {
                if closed {
                    let at = self.model.closed_at(s).unwrap_or(self.now);
                    violation!(
                        self,
                        "D2",
                        "scan served a closed subject",
                        Some(s),
                        Some(c),
                        b"",
                        format!("a closed error: the subject closed at {at}"),
                        format!("Ok({} records)", records.len()),
                    );
                }
                let mut returned = BTreeSet::new();
                for r in &records {
                    returned.insert(r.key.clone());
                    self.check_value("scan", s, c, &r.key, &r.value);
                }
                if !closed {
                    for key in self.keys_of(s, c) {
                        if !returned.contains(&key) {
                            self.check_absent("scan", s, c, &key, "not in the scan");
                        }
                    }
                }
            }
            Err(e) if refusal(&e) != Refusal::Other => {
                if !closed {
                    for key in self.keys_of(s, c) {
                        self.check_absent("scan", s, c, &key, &format!("error: {e}"));
                    }
                }
            }
            Err(e) => self.api_error("scan", Some(s), Some(c), &e),
        }
    }

    fn check_export(&mut self, s: usize) {
        let subject = self.model.subjects[s].id.clone();
        let result = self.db().export(&subject);
        match result {
            Ok(export) => {
                for sub in &export.subjects {
                    let Some(&t) = self.by_tag.get(&sub.tag.0) else {
                        violation!(
                            self,
                            "I1",
                            "export returned a subject the oracle never registered",
                            Some(s),
                            None,
                            b"",
                            "known subjects".into(),
                            sub.tag.to_hex(),
                        );
                        continue;
                    };
                    let mut returned: BTreeSet<(usize, Vec<u8>)> = BTreeSet::new();
                    for (class, records) in &sub.classes {
                        let Some(c) = self.model.class_index(class) else {
                            continue;
                        };
                        for r in records {
                            returned.insert((c, r.key.clone()));
                            self.check_value("export", t, c, &r.key, &r.value);
                        }
                    }
                    for c in 0..self.model.classes.len() {
                        for key in self.keys_of(t, c) {
                            if !returned.contains(&(c, key.clone())) {
                                self.check_absent("export", t, c, &key, "not in the export");
                            }
                        }
                    }
                }
            }
            Err(e) if refusal(&e) == Refusal::Erased => {
                for c in 0..self.model.classes.len() {
                    for key in self.keys_of(s, c) {
                        self.check_absent("export", s, c, &key, &format!("error: {e}"));
                    }
                }
            }
            Err(e) => self.api_error("export", Some(s), None, &e),
        }
    }

    fn verify(&mut self) {
        match self.db().verify() {
            Ok(report) if report.is_clean() => {}
            Ok(report) => {
                let first = report
                    .problems
                    .first()
                    .map(|p| format!("{:?}: {}", p.kind, p.detail))
                    .unwrap_or_else(|| format!("audit chain: {:?}", report.audit));
                violation!(
                    self,
                    "I1",
                    "verify reported problems in an untampered store",
                    None,
                    None,
                    b"",
                    "a clean report".into(),
                    format!("{} problems, first: {first}", report.problems.len()),
                );
            }
            Err(e) => self.api_error("verify", None, None, &e),
        }
    }

    // ---- subjects and events ------------------------------------------------

    fn add_subject(&mut self, id: String, tag: SubjectTag, account: Option<usize>) -> usize {
        let s = self.model.subjects.len();
        self.by_tag.insert(tag.0, s);
        self.model.subjects.push(Subject {
            id,
            account,
            closed_at: None,
            opted_out_at: None,
            released: BTreeMap::new(),
            erasures: Vec::new(),
            holds: Vec::new(),
            wrote: BTreeSet::new(),
            reopened: Vec::new(),
        });
        s
    }

    fn register_account(&mut self) {
        if self.model.subjects.len() >= self.subject_cap() {
            return;
        }
        self.accounts_made += 1;
        let id = format!("acct-{}", self.accounts_made);
        match self.db().register_account(&id) {
            Ok(tag) => {
                self.add_subject(id, tag, None);
            }
            Err(e) => self.api_error("register_account", None, None, &e),
        }
    }

    fn accounts(&self) -> Vec<usize> {
        (0..self.model.subjects.len())
            .filter(|&s| self.model.subjects[s].account.is_none())
            .collect()
    }

    fn end_users_of(&self, a: usize) -> Vec<usize> {
        (0..self.model.subjects.len())
            .filter(|&s| self.model.subjects[s].account == Some(a))
            .collect()
    }

    fn register_end_user(&mut self) {
        if self.model.subjects.len() >= self.subject_cap() {
            return;
        }
        let accounts = self.accounts();
        let a = accounts[self.rng.index(accounts.len())];
        let refuse = if self.model.wholly_erased(a, self.now).is_some() {
            Some("the account is erased")
        } else if self.settings.closed_access && self.model.is_closed(a, self.now) {
            Some("the account is closed (D2)")
        } else {
            None
        };
        // Registration under closed or erased accounts is tried on purpose, but
        // not often.
        if refuse.is_some() && !self.rng.chance(30) {
            return;
        }
        self.users_made += 1;
        let id = format!("user-{}", self.users_made);
        let account = self.model.subjects[a].id.clone();
        match (self.db().register_end_user(&id, &account), refuse) {
            (Ok(tag), None) => {
                self.add_subject(id, tag, Some(a));
            }
            (Ok(tag), Some(why)) => {
                let s = self.add_subject(id, tag, Some(a));
                // It shares its account's fate: closed since the account's closure.
                violation!(
                    self,
                    if why.contains("D2") { "D2" } else { "I1" },
                    "end user registered under a closed or erased account",
                    Some(s),
                    None,
                    b"",
                    format!("a refusal: {why}"),
                    format!("registered under {account}"),
                );
            }
            (Err(e), Some(_)) if refusal(&e) != Refusal::Other => {}
            (Err(e), _) => self.api_error("register_end_user", None, None, &e),
        }
    }

    /// The tags a subject-wide event reaches: the subject and, for an
    /// account, its end users.
    fn reach(&self, s: usize) -> Vec<usize> {
        let mut out = vec![s];
        if self.model.subjects[s].account.is_none() {
            out.extend(self.end_users_of(s));
        }
        out
    }

    /// The deadline the model expects a closure or opt-out to schedule for
    /// (t, c), from the oracle's own calendar.
    fn expected_schedule(&self, t: usize, c: usize) -> Option<Timestamp> {
        let class = &self.model.classes[c];
        let closed = self.model.closed_at(t);
        match class.clock {
            ClockKind::AccountClosure => Some(class.retain?.after(closed?)),
            ClockKind::Write if class.until_account_closure => closed,
            ClockKind::MarketingOptOut => {
                let start = match (self.model.subjects[t].opted_out_at, closed) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Some(class.retain?.after(start?))
            }
            _ => None,
        }
    }

    fn check_scheduled(
        &mut self,
        op: &str,
        targets: &[usize],
        scheduled: &[shredkv::Scheduled],
        only: Option<usize>,
    ) {
        let mut seen: BTreeSet<(usize, usize)> = BTreeSet::new();
        for item in scheduled {
            let (Some(&t), Some(c)) = (
                self.by_tag.get(&item.subject.0),
                self.model.class_index(&item.class),
            ) else {
                violation!(
                    self,
                    "I4",
                    &format!("{op} scheduled an unknown subject or class"),
                    None,
                    None,
                    b"",
                    "known ones".into(),
                    format!("{} / {}", item.subject, item.class),
                );
                continue;
            };
            seen.insert((t, c));
            let expected = self.expected_schedule(t, c);
            if expected != Some(item.erase_at) {
                violation!(
                    self,
                    "I4",
                    &format!("{op} scheduled the wrong erasure time"),
                    Some(t),
                    Some(c),
                    b"",
                    format!("{expected:?} (the oracle's calendar)"),
                    format!("{}", item.erase_at),
                );
            }
        }
        for &t in targets {
            if self.model.wholly_erased(t, self.now).is_some() {
                continue;
            }
            for c in 0..self.model.classes.len() {
                if only.is_some_and(|o| o != c) {
                    continue;
                }
                // D2: closure starts the marketing clock only for subjects
                // that have not opted out (theirs is already running).
                let already_running = self.model.classes[c].clock == ClockKind::MarketingOptOut
                    && self.model.subjects[t].opted_out_at.is_some()
                    && only.is_none();
                if let Some(at) = self.expected_schedule(t, c)
                    && !seen.contains(&(t, c))
                    && !already_running
                {
                    violation!(
                        self,
                        "I3",
                        &format!("{op} left a scope unbound by its deadline"),
                        Some(t),
                        Some(c),
                        b"",
                        format!("erasure scheduled for {at}"),
                        "nothing scheduled".into(),
                    );
                }
            }
        }
    }

    fn close_account(&mut self) {
        let open: Vec<usize> = self
            .accounts()
            .into_iter()
            .filter(|&a| {
                self.model.closed_at(a).is_none() && self.model.wholly_erased(a, self.now).is_none()
            })
            .collect();
        if open.is_empty() {
            return;
        }
        let a = open[self.rng.index(open.len())];
        let id = self.model.subjects[a].id.clone();
        match self.db().close_account(&id) {
            Ok(scheduled) => {
                self.model.subjects[a].closed_at = Some(self.now);
                let targets: Vec<usize> = self
                    .reach(a)
                    .into_iter()
                    .filter(|&t| t == a || self.model.subjects[t].closed_at.is_none())
                    .collect();
                self.check_scheduled("close_account", &targets, &scheduled, None);
            }
            Err(e) => self.api_error("close_account", Some(a), None, &e),
        }
    }

    fn opt_out(&mut self) {
        let s = self.rng.index(self.model.subjects.len());
        if self.model.subjects[s].opted_out_at.is_some()
            || self.model.wholly_erased(s, self.now).is_some()
        {
            return;
        }
        let id = self.model.subjects[s].id.clone();
        match self.db().opt_out_of_marketing(&id) {
            Ok(scheduled) => {
                let was_closed = self.model.is_closed(s, self.now);
                self.model.subjects[s].opted_out_at = Some(self.now);
                if !was_closed {
                    let marketing = self
                        .model
                        .classes
                        .iter()
                        .position(|c| c.clock == ClockKind::MarketingOptOut);
                    self.check_scheduled("opt_out_of_marketing", &[s], &scheduled, marketing);
                }
            }
            Err(e) if refusal(&e) != Refusal::Other && self.closed_now(s) => {}
            Err(e) => self.api_error("opt_out_of_marketing", Some(s), None, &e),
        }
    }

    fn erase_in_model(
        &mut self,
        targets: &[usize],
        classes: Option<BTreeSet<usize>>,
        reason: Reason,
    ) {
        for &t in targets {
            self.model.subjects[t].erasures.push(Erasure {
                at: self.now,
                classes: classes.clone(),
                reason,
            });
        }
    }

    fn deletion_request(&mut self) {
        let s = self.rng.index(self.model.subjects.len());
        self.request_deletion_of(s);
    }

    fn request_deletion_of(&mut self, s: usize) {
        if self.model.wholly_erased(s, self.now).is_some() {
            return;
        }
        let id = self.model.subjects[s].id.clone();
        let before: Vec<usize> = self.reach(s);
        let pre_dead: BTreeSet<(usize, usize)> = before
            .iter()
            .flat_map(|&t| (0..self.model.classes.len()).map(move |c| (t, c)))
            .filter(|&(t, c)| self.model.scope_dead(t, c, self.now))
            .collect();
        match self
            .db()
            .request_deletion(&id, ErasureReason::DeletionRequest)
        {
            Ok(receipt) => {
                for &t in &before {
                    if self.model.subjects[t].closed_at.is_none() {
                        self.model.subjects[t].closed_at = Some(self.now);
                    }
                }
                let now_classes: BTreeSet<usize> = (0..self.model.classes.len())
                    .filter(|&c| self.model.classes[c].erase_now)
                    .collect();
                self.erase_in_model(&before, Some(now_classes), Reason::DeletionRequest);
                self.check_receipt(
                    "request_deletion",
                    Reason::DeletionRequest,
                    &before,
                    None,
                    &pre_dead,
                    &receipt,
                );
            }
            Err(e) => self.api_error("request_deletion", Some(s), None, &e),
        }
    }

    fn shred(&mut self) {
        let s = self.rng.index(self.model.subjects.len());
        if self.model.wholly_erased(s, self.now).is_some() {
            return;
        }
        let all = self.rng.chance(60);
        let picked: Vec<usize> = if all {
            Vec::new()
        } else {
            let mut v: Vec<usize> = (0..1 + self.rng.below(2))
                .map(|_| self.rng.index(self.model.classes.len()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        self.shred_scopes(s, all, &picked);
    }

    /// Shreds subject `s`: every class (`all`), or the classes `picked`.
    fn shred_scopes(&mut self, s: usize, all: bool, picked: &[usize]) {
        let id = self.model.subjects[s].id.clone();
        let targets = self.reach(s);
        let pre_dead: BTreeSet<(usize, usize)> = targets
            .iter()
            .flat_map(|&t| (0..self.model.classes.len()).map(move |c| (t, c)))
            .filter(|&(t, c)| self.model.scope_dead(t, c, self.now))
            .collect();
        let names: Vec<String> = picked
            .iter()
            .map(|&c| self.model.classes[c].name.clone())
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let classes = if all {
            Classes::All
        } else {
            Classes::Only(&refs)
        };
        let result = self.db().shred(&id, classes);
        match result {
            Ok(receipt) => {
                let set: Option<BTreeSet<usize>> = (!all).then(|| picked.iter().copied().collect());
                self.erase_in_model(&targets, set.clone(), Reason::Operator);
                self.check_receipt(
                    "shred",
                    Reason::Operator,
                    &targets,
                    set.as_ref(),
                    &pre_dead,
                    &receipt,
                );
            }
            Err(e) => self.api_error("shred", Some(s), None, &e),
        }
    }

    /// I4 on an erasure's receipt.
    #[allow(clippy::too_many_arguments, reason = "one erasure's facts")]
    fn check_receipt(
        &mut self,
        op: &str,
        reason: Reason,
        targets: &[usize],
        targeted: Option<&BTreeSet<usize>>,
        pre_dead: &BTreeSet<(usize, usize)>,
        receipt: &Receipt,
    ) {
        if receipt.reason.name() != reason.name() {
            violation!(
                self,
                "I4",
                &format!("{op} receipt names the wrong reason"),
                targets.first().copied(),
                None,
                b"",
                reason.name().into(),
                receipt.reason.name().into(),
            );
        }
        let mut erased: BTreeSet<(usize, Option<usize>)> = BTreeSet::new();
        for scope in &receipt.erased {
            let Some(&t) = self.by_tag.get(&scope.subject.0) else {
                continue;
            };
            let c = scope
                .class
                .as_deref()
                .and_then(|n| self.model.class_index(n));
            erased.insert((t, c));
            match c {
                Some(c) if scope.keys_destroyed > 0 && !self.model.scope_dead(t, c, self.now) => {
                    violation!(
                        self,
                        "I4",
                        &format!("{op} receipt erased a scope the model keeps"),
                        Some(t),
                        Some(c),
                        b"",
                        "kept (held or retained)".into(),
                        format!("erased, {} keys destroyed", scope.keys_destroyed),
                    );
                }
                None if (0..self.model.classes.len())
                    .any(|c| !self.model.scope_dead(t, c, self.now)) =>
                {
                    let kept = (0..self.model.classes.len())
                        .find(|&c| !self.model.scope_dead(t, c, self.now));
                    violation!(
                        self,
                        "I4",
                        &format!("{op} receipt erased a whole subject the model partly keeps"),
                        Some(t),
                        kept,
                        b"",
                        "per-class erasure".into(),
                        "every class erased".into(),
                    );
                }
                _ => {}
            }
        }
        let mut retained: BTreeSet<(usize, usize)> = BTreeSet::new();
        for r in &receipt.retained {
            let (Some(&t), Some(c)) = (
                self.by_tag.get(&r.subject.0),
                self.model.class_index(&r.class),
            ) else {
                continue;
            };
            retained.insert((t, c));
            if !self.model.subjects[t].wrote.contains(&c) {
                violation!(
                    self,
                    "I4",
                    &format!("{op} receipt lists a class the subject never held"),
                    Some(t),
                    Some(c),
                    b"",
                    "no entry: the subject never wrote this class".into(),
                    format!("retained until {:?}: {}", r.until, r.reason),
                );
                continue;
            }
            let held = self.model.held(t, c, self.now);
            let expected_until = if held {
                None
            } else {
                self.model.scope_death(t, c, self.now).map(|d| d.at)
            };
            if held != r.reason.contains("legal hold") || expected_until != r.until {
                let why = self
                    .model
                    .scope_death(t, c, self.now)
                    .map(|d| d.why())
                    .unwrap_or_else(|| "no deadline yet".into());
                violation!(
                    self,
                    "I4",
                    &format!("{op} receipt gives the wrong retention"),
                    Some(t),
                    Some(c),
                    b"",
                    format!(
                        "until {expected_until:?}{} ({why})",
                        if held { ", legal hold" } else { "" }
                    ),
                    format!("until {:?}: {}", r.until, r.reason),
                );
            }
        }
        for &t in targets {
            if self.model.subjects[t]
                .erasures
                .iter()
                .filter(|e| e.classes.is_none() && e.at < self.now)
                .count()
                > 0
                && pre_dead.len() >= self.model.classes.len()
            {
                continue;
            }
            for &c in &self.model.subjects[t].wrote.clone() {
                if pre_dead.contains(&(t, c)) {
                    continue;
                }
                let dead = self.model.scope_dead(t, c, self.now);
                let listed_erased = erased.contains(&(t, Some(c))) || erased.contains(&(t, None));
                // A receipt names the scopes whose keys it destroyed: sure to
                // exist while the scope held a live record until now. (A
                // scope whose every record a restore lost has none: found by
                // the 5-year run, a deletion request after such a restore.)
                let held_records = self
                    .model
                    .current
                    .range((t, c, Vec::new())..(t, c + 1, Vec::new()))
                    .any(|(_, &i)| {
                        let w = &self.model.writes[i];
                        // Not a version from an earlier life of the scope
                        // (erased before the class was re-opened).
                        let this_life = self
                            .model
                            .scope_death_at(w.subject, w.class, w.at)
                            .is_none_or(|at| at >= self.now);
                        w.ended.is_none()
                            && !w.revived
                            && w.expires.is_none_or(|e| e > self.now)
                            && this_life
                    });
                if dead && !listed_erased && held_records {
                    violation!(
                        self,
                        "I4",
                        &format!("{op} receipt omits an erased scope"),
                        Some(t),
                        Some(c),
                        b"",
                        "listed as erased".into(),
                        "not listed".into(),
                    );
                }
                let aimed = targeted.is_none_or(|set| set.contains(&c));
                // Only scopes with a live record are sure to hold keys.
                let has_live = self.keys_of(t, c).iter().any(|k| {
                    self.model
                        .current
                        .get(&(t, c, k.clone()))
                        .is_some_and(|&w| {
                            self.model.expect(&self.model.writes[w], self.now) == Expect::Live
                        })
                });
                let must_list = !dead
                    && aimed
                    && has_live
                    && (reason == Reason::DeletionRequest || self.model.held(t, c, self.now));
                if must_list && !retained.contains(&(t, c)) {
                    violation!(
                        self,
                        "I4",
                        &format!("{op} receipt omits a retained scope"),
                        Some(t),
                        Some(c),
                        b"",
                        "listed as retained, with until and why".into(),
                        "not listed".into(),
                    );
                }
            }
        }
    }

    fn place_hold(&mut self) {
        let s = self.rng.index(self.model.subjects.len());
        if self.model.wholly_erased(s, self.now).is_some() {
            return;
        }
        let c = if self.rng.chance(40) {
            None
        } else {
            Some(self.rng.index(self.model.classes.len()))
        };
        if self.model.subjects[s]
            .holds
            .iter()
            .any(|h| h.class == c && h.released.is_none())
        {
            return;
        }
        // Not within the compaction lateness (13 hours by default) after a
        // deadline of a scope it covers: the scope died at its deadline, but
        // the store erases it at the next compaction, and a hold placed
        // before then keeps it (what the notice intends there is open; the
        // oracle does not judge it).
        let lateness = self.compaction_lateness();
        let just_died = (0..self.model.classes.len())
            .filter(|&k| c.is_none_or(|c| c == k))
            .any(|k| {
                self.model
                    .scope_death_at(s, k, self.now)
                    .is_some_and(|at| at <= self.now && self.now - at < lateness)
            });
        if just_died {
            return;
        }
        let id = self.model.subjects[s].id.clone();
        let class = c.map(|c| self.model.classes[c].name.clone());
        match self
            .db()
            .place_hold(&id, class.as_deref(), "oracle: open investigation")
        {
            Ok(()) => self.model.subjects[s].holds.push(HoldSpan {
                class: c,
                placed: self.now,
                released: None,
            }),
            Err(e) => self.api_error("place_hold", Some(s), c, &e),
        }
    }

    fn release_hold(&mut self) {
        let standing: Vec<(usize, usize)> = (0..self.model.subjects.len())
            .flat_map(|s| {
                self.model.subjects[s]
                    .holds
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.released.is_none())
                    .map(move |(i, _)| (s, i))
            })
            .collect();
        if standing.is_empty() {
            return;
        }
        let (s, i) = standing[self.rng.index(standing.len())];
        let c = self.model.subjects[s].holds[i].class;
        let id = self.model.subjects[s].id.clone();
        let class = c.map(|c| self.model.classes[c].name.clone());
        match self.db().release_hold(&id, class.as_deref()) {
            Ok(true) => self.model.subjects[s].holds[i].released = Some(self.now),
            Ok(false) => {
                violation!(
                    self,
                    "I4",
                    "release_hold found no hold the model placed",
                    Some(s),
                    c,
                    b"",
                    "true".into(),
                    "false".into(),
                );
                self.model.subjects[s].holds[i].released = Some(self.now);
            }
            Err(e) => self.api_error("release_hold", Some(s), c, &e),
        }
    }

    /// Registers one erased class of a subject again. Mostly a class the
    /// model erased by an erasure alone (the store must take it back unless
    /// a hold may have parked an erasure), sometimes any (a probe the store
    /// must refuse where the model keeps the scope alive, closed, or running
    /// out on a clock).
    fn re_register_class(&mut self) -> Result<(), String> {
        // Strictly after any erasure made this second: the model orders
        // erasure and re-opening by time.
        let next = self.now + SignedDuration::from_secs(1);
        self.pass_time(next)?;
        let now = self.now;
        let erased_only_by_erasure = |m: &Model, s: usize, c: usize| {
            m.scope_death(s, c, now).is_some_and(|d| {
                d.at <= now && d.causes.iter().all(|c| matches!(c, Cause::Erasure(..)))
            })
        };
        let m = &self.model;
        let whole = |s: usize| {
            m.wholly_erased(s, now).is_some()
                || m.subjects[s]
                    .account
                    .is_some_and(|a| m.wholly_erased(a, now).is_some())
        };
        let erased: Vec<(usize, usize)> = (0..m.subjects.len())
            .filter(|&s| !m.is_closed(s, now) && !whole(s))
            .flat_map(|s| (0..m.classes.len()).map(move |c| (s, c)))
            .filter(|&(s, c)| erased_only_by_erasure(m, s, c))
            .collect();
        if erased.is_empty() && !self.rng.chance(10) {
            // Nothing to re-open: erase one class of a subject that can take
            // it back, for a later re-opening to find.
            let open: Vec<(usize, usize)> = (0..m.subjects.len())
                .filter(|&s| !m.is_closed(s, now) && !whole(s))
                .flat_map(|s| m.subjects[s].wrote.iter().map(move |&c| (s, c)))
                .filter(|&(s, c)| !m.scope_dead(s, c, now) && !m.clock_started(s, c, now))
                .collect();
            if !open.is_empty() {
                let (s, c) = open[self.rng.index(open.len())];
                self.shred_scopes(s, false, &[c]);
            }
            return Ok(());
        }
        let (s, c) = if erased.is_empty() || self.rng.chance(10) {
            (
                self.rng.index(self.model.subjects.len()),
                self.rng.index(self.model.classes.len()),
            )
        } else {
            erased[self.rng.index(erased.len())]
        };
        let m = &self.model;
        let account_erased = m.subjects[s]
            .account
            .is_some_and(|a| m.wholly_erased(a, now).is_some());
        let refuse = if !m.scope_dead(s, c, now) {
            Some("the scope is not erased")
        } else if m.is_closed(s, now) {
            Some("the subject (or its account) is closed (D2)")
        } else if m.clock_started(s, c, now) {
            Some("an opt-out or release started the class's clock")
        } else if m.wholly_erased(s, now).is_some() || account_erased {
            Some("the subject (or its account) is erased as a whole")
        } else {
            None
        };
        let hold_standing = m.subjects[s].holds.iter().any(|h| h.released.is_none());
        let must_accept = refuse.is_none() && !hold_standing && erased_only_by_erasure(m, s, c);
        let id = m.subjects[s].id.clone();
        let class = m.classes[c].name.clone();
        match self.db().re_register_class(&id, class.as_str()) {
            Ok(()) => {
                if let Some(why) = refuse {
                    violation!(
                        self,
                        "I4",
                        "re_register_class re-opened a scope it must not",
                        Some(s),
                        Some(c),
                        b"",
                        format!("refused: {why}"),
                        "re-opened".into(),
                    );
                }
                self.model.subjects[s].reopened.push((c, now));
                self.report.reopenings += 1;
            }
            Err(e) if must_accept => self.api_error("re_register_class", Some(s), Some(c), &e),
            // A refusal the model allows (it may accept either outcome).
            Err(_) => {}
        }
        Ok(())
    }

    fn manual_release(&mut self) -> Result<(), String> {
        let s = self.rng.index(self.model.subjects.len());
        let manual: Vec<usize> = (0..self.model.classes.len())
            .filter(|&c| self.model.classes[c].clock == ClockKind::ManualRelease)
            .collect();
        let c = manual[self.rng.index(manual.len())];
        if self.model.subjects[s].released.contains_key(&c)
            || self.model.wholly_erased(s, self.now).is_some()
        {
            return Ok(());
        }
        let id = self.model.subjects[s].id.clone();
        let class = self.model.classes[c].name.clone();
        match self.db().release(&id, &class) {
            Ok(scheduled) => {
                self.model.subjects[s].released.insert(c, self.now);
                if scheduled.erase_at != self.now {
                    violation!(
                        self,
                        "I4",
                        "release scheduled the wrong erasure time",
                        Some(s),
                        Some(c),
                        b"",
                        format!("{} (at once)", self.now),
                        scheduled.erase_at.to_string(),
                    );
                }
                // A deletion request soon after a release: its receipt must
                // know the release (hole 10).
                if self.rng.chance(30) {
                    let later = self.now + self.rng.secs(60, 3_600);
                    self.pass_time(later)?;
                    self.request_deletion_of(s);
                }
            }
            Err(e) => self.api_error("release", Some(s), Some(c), &e),
        }
        Ok(())
    }

    fn compact(&mut self) {
        self.report.compactions += 1;
        if let Err(e) = self.db().compact() {
            self.api_error("compact", None, None, &e);
        }
    }

    fn backup(&mut self) -> Result<(), String> {
        let path = self
            .dir
            .path()
            .join(format!("backup-{}", self.backups.len()));
        match self.db().backup(&path) {
            Ok(report) => {
                self.report.backups += 1;
                tape_directory(&self.tape, &path, self.backend)?;
                self.backups.push(Backup {
                    path,
                    taken_at: report.taken_at,
                    probed: false,
                    restore_probed: false,
                });
            }
            Err(e) => self.api_error("backup", None, None, &e),
        }
        Ok(())
    }

    /// Takes a backup, goes on writing (and compacting) for a few hours,
    /// then restores the backup into a fresh directory, replaying the live
    /// store's erasures, and carries on with the restored store. Disk
    /// backends only.
    fn backup_and_restore(&mut self) -> Result<(), String> {
        if self.settings.backing == Backing::Memory {
            return self.backup();
        }
        let n = self.backups.len();
        self.backup()?;
        if self.backups.len() == n {
            return Ok(());
        }
        let taken = self.backups[n].taken_at;
        // Kept for the restore, not opened.
        self.backups[n].probed = true;
        self.backups[n].restore_probed = true;
        // Between the backup and the restore: writes, erasures and every
        // kind of decision (holds, closures, opt-outs, releases), all of
        // which must stand after the restore.
        for _ in 0..3 + self.rng.below(8) {
            let next = self.now + self.restore_step();
            self.pass_time(next)?;
            match self.rng.below(17) {
                0..6 => self.put(),
                6..8 => self.delete(),
                8 => self.compact(),
                9 => self.shred(),
                10 => self.place_hold(),
                11 => self.release_hold(),
                12 => self.close_account(),
                13 => self.opt_out(),
                14 => self.manual_release()?,
                15 => self.re_register_class()?,
                _ => self.deletion_request(),
            }
        }
        let next = self.now + self.restore_step();
        self.pass_time(next)?;
        self.compact();
        let next = self.now + self.restore_step();
        self.pass_time(next)?;
        let target = self.dir.path().join(format!("restored-{n}"));
        let backup = self.backups[n].path.clone();
        // The erasures to replay come from the live store, or from its
        // exported erasure log (the way when the live store is gone).
        let log = self.dir.path().join(format!("erasures-{n}.log"));
        let from_file = self.rng.chance(50);
        let restored = {
            let live = self.db.as_ref().ok_or("the store is open")?;
            if from_file {
                match live.export_erasure_log(&log) {
                    Ok(_) => Db::restore_with(
                        &backup,
                        self.config(&target),
                        shredkv::ErasureSource::File(&log),
                        accept_losses(),
                    ),
                    Err(e) => Err(e),
                }
            } else {
                Db::restore_with(
                    &backup,
                    self.config(&target),
                    shredkv::ErasureSource::Live(live),
                    accept_losses(),
                )
            }
        };
        match restored {
            Ok((db, report)) => {
                drop(db);
                self.db = None;
                // The retired store and the backup are not opened again, and
                // the tape holds every byte they ever held: their files go,
                // so that simulated decades fit on a disk (sled's never
                // shrink).
                let retired = std::mem::replace(&mut self.live, target.clone());
                let _ = std::fs::remove_dir_all(&retired);
                let _ = std::fs::remove_dir_all(&backup);
                tape_directory(&self.tape, &target, self.backend)?;
                self.restored_in_model(taken);
                self.report.restores += 1;
                self.restored.push((taken, self.now));
                self.open()?;
                self.lost_in_restore(&report.lost);
                Ok(())
            }
            Err(Error::StoreKeysDestroyed { .. }) if self.now - taken > self.restorable_for() => {
                // The backup's epoch is gone: by design it can no longer be
                // decrypted, and the live store goes on.
                let _ = std::fs::remove_dir_all(&backup);
                self.report.restores_refused += 1;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&backup);
                self.api_error("restore", None, None, &e);
                Ok(())
            }
        }
    }

    /// One step between a backup and its restore: a minute to an hour; with
    /// a window override at most P/24, so that the dozen steps stay within
    /// P/2 of the backup.
    fn restore_step(&mut self) -> SignedDuration {
        let longest = if self.windowed() {
            (self.timeline.rotation.as_secs() / 24).clamp(61, 3_600)
        } else {
            3_600
        };
        self.rng.secs(60, longest)
    }

    /// How long after it was taken a backup must still restore: the epoch
    /// current at the backup started at most P and one compaction gap
    /// before it (a rotation is due P after an epoch's start and runs at
    /// the next compaction) and dies no earlier than L after its start, so
    /// L − P − the longest gap (docs/design.md states L − P, leaving out
    /// the rotation's lateness). 13 days by default; none at all for
    /// windows of 4 days or less, where L − P is P/2.
    fn restorable_for(&self) -> SignedDuration {
        (self.timeline.epoch_lifetime - self.timeline.rotation - self.max_compaction_gap())
            .max(SignedDuration::ZERO)
    }

    /// How long the epoch check (and the refusal of old backups) allows an
    /// epoch past the shortest purge window from its first sighting on the
    /// tape: two days by default, as the daily check always had. With a
    /// window override, nothing: the tape is checked before every
    /// compaction, so an epoch is first seen at most a compaction gap after
    /// its first use, never before it.
    fn epoch_slack(&self) -> SignedDuration {
        if self.windowed() {
            SignedDuration::ZERO
        } else {
            SignedDuration::from_hours(48)
        }
    }

    /// Records the restore reported it could not bring back (a re-key after
    /// the backup destroyed their key version; the caller accepted the
    /// loss): the model cannot tell which of a scope's versions those were,
    /// so it takes them from what the restored store still has, and checks
    /// that their number is what the restore reported, scope by scope.
    fn lost_in_restore(&mut self, lost: &[shredkv::LostRecords]) {
        for scope in lost {
            let Some(s) = (0..self.model.subjects.len())
                .find(|&s| self.db().subject_tag(&self.model.subjects[s].id) == scope.subject)
            else {
                violation!(
                    self,
                    "API",
                    "a restore reported losses of a subject the model never had",
                    None,
                    None,
                    b"",
                    "a known subject".into(),
                    format!("{scope:?}"),
                );
                continue;
            };
            let Some(c) = self
                .model
                .classes
                .iter()
                .position(|k| k.name == scope.class)
            else {
                continue;
            };
            let present = self.stored_keys(s, c);
            let mut missing = 0u64;
            let keys: Vec<Vec<u8>> = self
                .model
                .current
                .keys()
                .filter(|(ks, kc, _)| *ks == s && *kc == c)
                .map(|(_, _, k)| k.clone())
                .collect();
            for key in keys {
                let Some(&w) = self.model.current.get(&(s, c, key.clone())) else {
                    continue;
                };
                if self.model.expect(&self.model.writes[w], self.now) == Expect::Live
                    && !present.contains(&key)
                {
                    self.model.writes[w].ended = Some((self.now, Ended::LostInRestore));
                    missing += 1;
                }
            }
            if missing > scope.records {
                violation!(
                    self,
                    "I1-live",
                    "a restore lost more records than it reported",
                    Some(s),
                    Some(c),
                    b"",
                    format!("at most {} records lost", scope.records),
                    format!("{missing} live records missing"),
                );
            }
        }
    }

    /// The record keys the store holds for a scope, read through export
    /// (which also serves closed subjects).
    fn stored_keys(&self, s: usize, c: usize) -> BTreeSet<Vec<u8>> {
        let id = &self.model.subjects[s].id;
        let tag = self.db().subject_tag(id);
        let class = &self.model.classes[c].name;
        self.db()
            .export(id)
            .map(|export| {
                export
                    .subjects
                    .into_iter()
                    .filter(|x| x.tag == tag)
                    .flat_map(|x| x.classes)
                    .filter(|(name, _)| name == class)
                    .flat_map(|(_, records)| records)
                    .map(|r| r.key)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The model after a restore to the backup of `taken`: each key's
    /// version as of the backup is current again (a read may or may not
    /// return it if it had since been deleted or replaced); later versions
    /// are lost. Erasures and decisions (holds, closures, opt-outs,
    /// releases) since the backup stand (the restore carries them over).
    fn restored_in_model(&mut self, taken: Timestamp) {
        let now = self.now;
        let keys: Vec<(usize, usize, Vec<u8>)> = self.model.current.keys().cloned().collect();
        for key in keys {
            let versions = self.model.versions.get(&key).cloned().unwrap_or_default();
            if versions.iter().all(|&i| {
                self.model.writes[i].at <= taken
                    && self.model.writes[i].ended.is_none_or(|(t, _)| t <= taken)
            }) {
                continue; // unchanged since the backup
            }
            let at_backup = versions.iter().copied().rfind(|&i| {
                let w = &self.model.writes[i];
                w.at <= taken && w.ended.is_none_or(|(t, _)| t > taken)
            });
            for &i in &versions {
                let w = &mut self.model.writes[i];
                if w.at > taken && w.ended.is_none() {
                    w.ended = Some((now, Ended::LostInRestore));
                }
            }
            if let Some(i) = at_backup {
                let w = &mut self.model.writes[i];
                if w.ended.is_none_or(|(t, _)| t > taken) {
                    w.ended = None;
                    w.revived = true;
                }
                self.model.current.insert(key, i);
            }
        }
    }

    /// The backups' probes: opened as a live store, and restored once
    /// older than the shortest purge window. A backup's files go once both
    /// are done.
    fn probe_backups(&mut self) {
        self.probe_backup_as_store();
        self.probe_old_backup_restore();
    }

    /// Removes a backup's files once both probes are done with it.
    fn retire_backup(&mut self, i: usize) {
        let b = &self.backups[i];
        if b.probed && b.restore_probed {
            let _ = std::fs::remove_dir_all(&b.path);
        }
    }

    /// How old a backup is when it is opened as a live store: three days,
    /// or half the L − P that docs/design.md says a backup stays
    /// decryptable if that is shorter (a backup that no key opens any more
    /// proves nothing).
    fn probe_age(&self) -> SignedDuration {
        ((self.timeline.epoch_lifetime - self.timeline.rotation) / 2)
            .min(SignedDuration::from_hours(24 * 3))
    }

    /// A backup is not a live store: opened as one, it must not serve data
    /// erased since it was taken (hole 13).
    fn probe_backup_as_store(&mut self) {
        let age = self.probe_age();
        let Some(i) = self
            .backups
            .iter()
            .position(|b| !b.probed && self.now - b.taken_at > age)
        else {
            return;
        };
        self.backups[i].probed = true;
        self.probe_as_store(i);
        // Probed once, never opened again.
        self.retire_backup(i);
    }

    fn probe_as_store(&mut self, i: usize) {
        let taken = self.backups[i].taken_at;
        let victims: Vec<Write> = self
            .model
            .writes
            .iter()
            .filter(|w| {
                w.at <= taken
                    && w.ended.is_none_or(|(t, _)| t > taken)
                    && w.expires.is_none_or(|e| e > self.now)
            })
            .filter(|w| {
                self.model
                    .scope_death(w.subject, w.class, w.at)
                    .is_some_and(|d| d.at > taken && d.at <= self.now)
            })
            .take(20)
            .cloned()
            .collect();
        if victims.is_empty() {
            return;
        }
        let path = self.backups[i].path.clone();
        let Ok(db) = Db::open(self.config(&path)) else {
            return;
        };
        for w in victims {
            let subject = self.model.subjects[w.subject].id.clone();
            let class = self.model.classes[w.class].name.clone();
            if let Ok(Some(v)) = db.get(&subject, &class, &w.key)
                && write_id_in(&v) == Some(w.id)
            {
                let death = self
                    .model
                    .scope_death(w.subject, w.class, w.at)
                    .map(|d| format!("{} ({})", d.at, d.why()))
                    .unwrap_or_default();
                violation!(
                    self,
                    "I1",
                    "a backup opened as a live store serves data erased since the backup",
                    Some(w.subject),
                    Some(w.class),
                    &w.key,
                    format!(
                        "the open refused, or nothing: erased at {death}, after the backup of {taken}"
                    ),
                    self.model.describe(&w)
                );
            }
        }
    }

    /// A backup older than the shortest purge window (and the epoch
    /// check's slack) must not restore: the epoch that wrapped its keys
    /// was first used by the time it was taken, so it is destroyed by now
    /// (I2's epoch rule), and with it everything the backup holds. The
    /// restore is tried against the live store's erasures; refused, it
    /// writes nothing.
    fn probe_old_backup_restore(&mut self) {
        let old = self.timeline.min_window + self.epoch_slack();
        let Some(i) = self
            .backups
            .iter()
            .position(|b| !b.restore_probed && self.now - b.taken_at > old)
        else {
            return;
        };
        self.backups[i].restore_probed = true;
        self.report.old_restores_tried += 1;
        let backup = self.backups[i].path.clone();
        let taken = self.backups[i].taken_at;
        let target = self.dir.path().join(format!("old-restore-{i}"));
        let restored = match self.db.as_ref() {
            Some(live) => Db::restore_with(
                &backup,
                self.config(&target),
                shredkv::ErasureSource::Live(live),
                accept_losses(),
            ),
            None => return,
        };
        if let Ok((db, report)) = restored {
            drop(db);
            violation!(
                self,
                "I2",
                "a backup older than the shortest purge window restores",
                None,
                None,
                b"",
                format!(
                    "a refusal: the backup of {taken} is {}h old, the shortest purge window {}h",
                    (self.now - taken).as_hours(),
                    self.timeline.min_window.as_hours()
                ),
                format!(
                    "restored, {} records lost",
                    report.lost.iter().map(|l| l.records).sum::<u64>()
                ),
            );
        }
        let _ = std::fs::remove_dir_all(&target);
        self.retire_backup(i);
    }

    // ---- daily invariants ---------------------------------------------------

    fn daily(&mut self) -> Result<(), String> {
        // I1 by scan on every scope alive or dead for less than 70 days (the
        // longest purge window and 40 days, if longer), so every class
        // deadline and purge window is watched closely, and on
        // a sample of the others; gets on a sample of keys.
        let longest = self
            .model
            .classes
            .iter()
            .map(|c| c.purge_window)
            .max()
            .unwrap_or(SignedDuration::ZERO);
        let recent =
            SignedDuration::from_hours(24 * 70).max(longest + SignedDuration::from_hours(24 * 40));
        let scopes: BTreeSet<(usize, usize)> = self
            .model
            .current
            .keys()
            .map(|(s, c, _)| (*s, *c))
            .collect();
        for &(s, c) in &scopes {
            let watched = self
                .model
                .scope_death_at(s, c, self.now)
                .is_none_or(|at| self.now - at < recent);
            if watched || self.rng.chance(5) {
                self.check_scan(s, c);
            }
        }
        for _ in 0..16 {
            if let Some((s, c, key)) = self.pick_key() {
                self.check_get("get", s, c, &key);
            }
        }
        for s in 0..self.model.subjects.len() {
            let closed_lately = self
                .model
                .closed_at(s)
                .is_some_and(|t| t <= self.now && self.now - t < recent);
            if closed_lately || self.rng.chance(3) {
                self.check_export(s);
            }
        }
        if self.day % 7 == 6 {
            self.verify();
        }
        self.check_subjects();
        for s in 0..self.model.subjects.len() {
            // Certificates a day after anything of the subject died (an
            // erasure, a deadline, a hold's release), when compaction has
            // carried it out.
            let lately = |at: Timestamp| {
                at <= self.now
                    && self.now - at >= SignedDuration::from_hours(24)
                    && self.now - at < SignedDuration::from_hours(48)
            };
            let died_lately = (0..self.model.classes.len()).any(|c| {
                self.model
                    .scope_death_at(s, c, self.now)
                    .is_some_and(lately)
            });
            if died_lately {
                self.check_certificate(s);
            }
        }
        self.probe_backups();
        self.check_tape()
    }

    /// I3: what the store says about each subject binds its scopes as the
    /// model says (closure and opt-out clocks recorded; erased subjects
    /// read as erased).
    fn check_subjects(&mut self) {
        for s in 0..self.model.subjects.len() {
            let id = self.model.subjects[s].id.clone();
            let info = match self.db().subject(&id) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    violation!(
                        self,
                        "I3",
                        "a registered subject is unknown to the store",
                        Some(s),
                        None,
                        b"",
                        "its subject record".into(),
                        "None".into(),
                    );
                    continue;
                }
                Err(e) => {
                    self.api_error("subject", Some(s), None, &e);
                    continue;
                }
            };
            let closed = self.model.closed_at(s);
            if info.state != SubjectState::Erased && info.closed_at != closed {
                violation!(
                    self,
                    "I3",
                    "the store's closure time differs from the model's (its deadlines are unbound or wrong)",
                    Some(s),
                    None,
                    b"",
                    format!("closed at {closed:?}"),
                    format!("closed at {:?}", info.closed_at)
                );
            }
            match self.model.wholly_erased(s, self.now) {
                Some(at)
                    if self.now - at > SignedDuration::from_hours(24)
                        && info.state != SubjectState::Erased =>
                {
                    violation!(
                        self,
                        "I4",
                        "a wholly erased subject does not read as erased",
                        Some(s),
                        None,
                        b"",
                        format!("state Erased since {at}"),
                        format!("state {:?}", info.state),
                    );
                }
                None if info.state == SubjectState::Erased => {
                    let live = (0..self.model.classes.len())
                        .find(|&c| !self.model.scope_dead(s, c, self.now));
                    violation!(
                        self,
                        "I4",
                        "a subject reads as erased although the model keeps part of it",
                        Some(s),
                        live,
                        b"",
                        "not Erased".into(),
                        "Erased".into(),
                    );
                }
                _ => {}
            }
        }
    }

    /// I4: a certificate lists exactly the erasures the model made, with
    /// their reasons and times.
    fn check_certificate(&mut self, s: usize) {
        let dead: Vec<(usize, shredkv::jiff::Timestamp, BTreeSet<Reason>, String)> =
            (0..self.model.classes.len())
                .filter_map(|c| {
                    self.model
                        .scope_death(s, c, self.now)
                        .filter(|d| d.at <= self.now)
                        .map(|d| (c, d.at, d.reasons.clone(), d.why()))
                })
                .collect();
        let id = self.model.subjects[s].id.clone();
        let cert = match self.db().certificate(&id) {
            Ok(cert) => cert,
            Err(e) => {
                let overdue = dead.iter().find(|(c, at, _, _)| {
                    self.model.subjects[s].wrote.contains(c)
                        && self.now - *at > SignedDuration::from_hours(24)
                });
                if let Some((c, at, _, why)) = overdue.cloned() {
                    violation!(
                        self,
                        "I4",
                        "no certificate for a subject with an erased scope",
                        Some(s),
                        Some(c),
                        b"",
                        format!("a certificate listing the erasure at {at} ({why})"),
                        format!("error: {e}"),
                    );
                }
                return;
            }
        };
        let mut covered: BTreeSet<usize> = BTreeSet::new();
        for e in &cert.erasures {
            match e.class.as_deref() {
                None => {
                    covered.extend(0..self.model.classes.len());
                    let ok = self.model.subjects[s].erasures.iter().any(|m| {
                        m.classes.is_none() && m.reason.name() == e.reason && m.at <= e.erased_at
                    });
                    if !ok {
                        violation!(
                            self,
                            "I4",
                            "certificate lists a whole-subject erasure the model did not make",
                            Some(s),
                            None,
                            b"",
                            "a whole-subject erasure with this reason".into(),
                            format!("{} at {}", e.reason, e.erased_at),
                        );
                    }
                }
                Some(name) => {
                    let Some(c) = self.model.class_index(name) else {
                        continue;
                    };
                    covered.insert(c);
                    // An erasure the class was registered again after: the
                    // model must have the re-opening, and the erasure is
                    // judged as the scope stood just before it.
                    let before_reopening = match e.reopened_at {
                        None => None,
                        Some(r) => {
                            let known = self.model.subjects[s]
                                .reopened
                                .iter()
                                .any(|&(rc, at)| rc == c && at.as_second() == r.as_second());
                            if !known {
                                violation!(
                                    self,
                                    "I4",
                                    "certificate marks a class re-opened that the model did not re-open",
                                    Some(s),
                                    Some(c),
                                    b"",
                                    "no re-opening at that time".into(),
                                    format!("re-opened at {r}"),
                                );
                                continue;
                            }
                            let just_before = r - SignedDuration::from_secs(1);
                            Some(
                                self.model
                                    .scope_death(s, c, just_before)
                                    .filter(|d| d.at <= r)
                                    .map(|d| (c, d.at, d.reasons.clone(), d.why())),
                            )
                        }
                    };
                    let found = match before_reopening {
                        Some(found) => found,
                        None => dead.iter().find(|(dc, _, _, _)| *dc == c).cloned(),
                    };
                    match found {
                        None => violation!(
                            self,
                            "I4",
                            "certificate lists an erasure the model did not make",
                            Some(s),
                            Some(c),
                            b"",
                            "no erasure of this scope yet".into(),
                            format!("{} at {}", e.reason, e.erased_at),
                        ),
                        Some((_, at, _, why)) => {
                            let reasons = self.model.reasons_by(s, c, e.erased_at);
                            if !reasons.iter().any(|r| r.name() == e.reason) {
                                let want: Vec<&str> = reasons.iter().map(|r| r.name()).collect();
                                violation!(
                                    self,
                                    "I4",
                                    "certificate names the wrong reason",
                                    Some(s),
                                    Some(c),
                                    b"",
                                    format!("{want:?} ({why})"),
                                    e.reason.clone(),
                                );
                            }
                            if e.erased_at < at || e.erased_at - at > SignedDuration::from_hours(24)
                            {
                                violation!(
                                    self,
                                    "I4",
                                    "certificate gives an erasure time away from the model's",
                                    Some(s),
                                    Some(c),
                                    b"",
                                    format!("{at} (+ at most a day of compaction lateness): {why}"),
                                    e.erased_at.to_string(),
                                );
                            }
                        }
                    }
                }
            }
        }
        for (c, at, _, why) in dead {
            if self.model.subjects[s].wrote.contains(&c)
                && !covered.contains(&c)
                && self.now - at > SignedDuration::from_hours(24)
            {
                violation!(
                    self,
                    "I4",
                    "certificate omits an erasure",
                    Some(s),
                    Some(c),
                    b"",
                    format!("an entry for the erasure at {at} ({why})"),
                    "none".into(),
                );
            }
        }
    }

    /// I2 over the tape.
    fn check_tape(&mut self) -> Result<(), String> {
        self.report.tape_checks += 1;
        let recovered = self
            .check
            .run(&self.tape, self.provider.as_ref(), self.now)?;
        // Every epoch is destroyed within the shortest purge window of its
        // first use (D1; with the slack of `epoch_slack`): one that lives
        // on keeps everything ever wrapped under it recoverable.
        let shortest = self.timeline.min_window;
        let slack = self.epoch_slack();
        let overdue: Vec<(u32, Timestamp)> = self
            .check
            .live
            .iter()
            .filter_map(|e| self.check.first_seen.get(e).map(|t| (*e, *t)))
            .filter(|(_, seen)| self.now - *seen > shortest + slack)
            .collect();
        for (epoch, seen) in overdue {
            let restores: Vec<String> =
                self.restored.iter().map(|(_, at)| at.to_string()).collect();
            violation!(
                self,
                "I2",
                "a key-provider epoch outlives the purge window",
                None,
                None,
                b"",
                format!(
                    "epoch {epoch}, first used by {seen}, destroyed by {} (shortest purge window + {}h)",
                    seen + shortest + slack,
                    slack.as_hours()
                ),
                format!(
                    "still live; live epochs {:?}; restores so far: {}",
                    self.check.live,
                    if restores.is_empty() {
                        "none".into()
                    } else {
                        restores.join(", ")
                    }
                ),
            );
        }
        for r in recovered {
            let Some(w) = usize::try_from(r.write)
                .ok()
                .and_then(|i| self.model.writes.get(i))
                .cloned()
            else {
                continue;
            };
            let Some((died, due, how)) = self.model.purge_due(&w) else {
                continue;
            };
            if self.now > due {
                let window = self.model.window(w.class);
                violation!(
                    self,
                    "I2",
                    &format!(
                        "a dead record still decrypts from the tape after its purge window ({})",
                        how.split(':').next().unwrap_or(&how)
                    ),
                    Some(w.subject),
                    Some(w.class),
                    &w.key,
                    format!(
                        "unrecoverable from {due}: died {died} ({how}) + W {}h",
                        window.as_hours()
                    ),
                    format!(
                        "{}; decrypted with key bucket {} version {} unwrapped under live epoch(s) {:?}",
                        self.model.describe(&w),
                        r.key.bucket,
                        r.key.version,
                        r.epochs
                    ),
                );
            }
        }
        Ok(())
    }
}
