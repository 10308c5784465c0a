//! Helpers shared by the model, crash and fault-injection tests: the store
//! configuration of the model, running a model [`Op`] on a [`Db`], and
//! taking the [`Snapshot`] the model checks.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses a part of it"
)]

pub(crate) mod model;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Backend, Classes, Config, Db, Error, ManualClock, PutOptions};

use model::{CLASSES, KEYS, Observed, Op, Outcome, SUBJECTS, Snapshot, value_bytes};

/// A clock at the model's start.
pub(crate) fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_second(model::START).expect("start time"))
}

/// The configuration of a model store in `dir` on `backend`: the model
/// policy, the manual `clock`, daily epoch rotation, and background flushes
/// every `flush_every` (none: only explicit flushes and close).
pub(crate) fn config(
    dir: &Path,
    clock: &ManualClock,
    backend: Backend,
    flush_every: Option<Duration>,
) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .backend(backend)
        .policy(model::policy())
        .clock(Arc::new(clock.clone()))
        .flush_every(flush_every)
        .maintenance_every(None)
        .epoch_rotation(SignedDuration::from_hours(24))
}

/// Registers the model's subjects (accounts first).
///
/// # Errors
/// The store's.
pub(crate) fn register_all(db: &Db) -> shredkv::Result<()> {
    for (s, name) in SUBJECTS.iter().enumerate() {
        if s < 2 {
            db.register_account(name)?;
        } else {
            db.register_end_user(name, SUBJECTS[s - 2])?;
        }
    }
    Ok(())
}

fn subject(s: u8) -> &'static str {
    SUBJECTS[usize::from(s)]
}

fn class(c: u8) -> &'static str {
    CLASSES[usize::from(c)]
}

fn key(k: u8) -> &'static [u8] {
    KEYS[usize::from(k)]
}

/// `Error::Erased` becomes [`Outcome::Erased`], `Error::Closed`
/// [`Outcome::AccessClosed`]; other errors stay errors.
fn answer<T>(
    result: shredkv::Result<T>,
    ok: impl FnOnce(T) -> Outcome,
) -> shredkv::Result<Outcome> {
    match result {
        Ok(value) => Ok(ok(value)),
        Err(err) if err.is_erased() => Ok(Outcome::Erased),
        Err(err) if err.is_closed() => Ok(Outcome::AccessClosed),
        Err(err) => Err(err),
    }
}

/// Runs `op` on `db` (the clock is advanced on `clock`). `Restart` is the
/// caller's to do; here it only flushes.
///
/// # Errors
/// Any failure other than `Error::Erased`.
pub(crate) fn run_op(db: &Db, clock: &ManualClock, op: &Op) -> shredkv::Result<Outcome> {
    let done = |()| Outcome::Done;
    match op {
        Op::Put { s, c, k, v } => answer(
            db.put(subject(*s), class(*c), key(*k), &value_bytes(*v)),
            done,
        ),
        Op::PutExpiring { s, k, v, ttl_hours } => {
            let at = db.now() + SignedDuration::from_hours(i64::from(*ttl_hours));
            answer(
                db.put_with(
                    subject(*s),
                    class(model::EXPIRING_CLASS),
                    key(*k),
                    &value_bytes(*v),
                    PutOptions::expires_at(at),
                ),
                done,
            )
        }
        Op::Delete { s, c, k } => answer(db.delete(subject(*s), class(*c), key(*k)), |e| {
            Outcome::Existed(Some(e))
        }),
        Op::Batch { items } => {
            let mut batch = shredkv::Batch::new();
            for &(s, c, k, v) in items {
                match v {
                    Some(v) => batch.put(subject(s), class(c), key(k), &value_bytes(v)),
                    None => batch.delete(subject(s), class(c), key(k)),
                };
            }
            answer(db.apply(batch).map(drop), done)
        }
        Op::Shred { s, class: c } => {
            let only = c.map(|c| [class(c)]);
            let classes = match &only {
                Some(one) => Classes::Only(one),
                None => Classes::All,
            };
            answer(db.shred(subject(*s), classes), |r| Outcome::Shredded {
                erased: r.erased.len(),
                retained: r.retained.len(),
            })
        }
        Op::Hold { s, class: c } => {
            answer(db.place_hold(subject(*s), c.map(class), "model hold"), done)
        }
        Op::Release { s, class: c } => answer(db.release_hold(subject(*s), c.map(class)), |e| {
            Outcome::Released(e)
        }),
        Op::CloseAccount { a } => {
            answer(db.close_account(subject(*a)), |s| Outcome::Closed(s.len()))
        }
        Op::Compact => answer(db.compact(), |_| Outcome::Done),
        Op::RotateEpoch => answer(db.rotate_epoch(), |_| Outcome::Done),
        Op::AdvanceClock { hours } => {
            clock.advance(SignedDuration::from_hours(i64::from(*hours)));
            Ok(Outcome::Done)
        }
        Op::SetClockBack { hours } => {
            // The store's time is the latest it read: it reads the clock
            // first, so that an advance just before (which nothing read)
            // counts, as the model counts it.
            db.now();
            clock.advance(SignedDuration::from_hours(-i64::from(*hours)));
            Ok(Outcome::Done)
        }
        Op::Flush | Op::Restart => answer(db.flush(), done),
    }
}

/// Reads every record of the universe, the subjects' states and the holds.
///
/// # Errors
/// Any read failing otherwise than with `Error::Erased` or `Error::Closed` (a store must never
/// answer a read of the model's records with another error).
pub(crate) fn observe(db: &Db) -> Result<Snapshot, Error> {
    let mut records = std::collections::BTreeMap::new();
    for s in 0..4u8 {
        for c in 0..3u8 {
            for k in 0..3u8 {
                let observed = match db.get(subject(s), class(c), key(k)) {
                    Ok(Some(value)) => Observed::Value(value),
                    Ok(None) => Observed::Absent,
                    Err(err) if err.is_erased() => Observed::Erased,
                    Err(err) if err.is_closed() => Observed::Closed,
                    Err(err) => return Err(err),
                };
                records.insert((s, c, k), observed);
            }
        }
    }
    let mut subject_erased = [false; 4];
    for (s, erased) in subject_erased.iter_mut().enumerate() {
        *erased = db
            .subject(SUBJECTS[s])?
            .is_some_and(|info| info.state == shredkv::SubjectState::Erased);
    }
    let tags: Vec<_> = SUBJECTS.iter().map(|s| db.subject_tag(s)).collect();
    let mut holds = std::collections::BTreeSet::new();
    for hold in db.holds()? {
        let s = tags
            .iter()
            .position(|t| *t == hold.subject)
            .and_then(|s| u8::try_from(s).ok())
            .expect("a hold on a model subject");
        let c = hold.class.as_deref().map(|name| {
            CLASSES
                .iter()
                .position(|c| *c == name)
                .and_then(|c| u8::try_from(c).ok())
                .expect("a hold on a model class")
        });
        holds.insert((s, c));
    }
    Ok(Snapshot {
        records,
        subject_erased,
        holds,
    })
}

/// A small deterministic generator (SplitMix64): seeds print and replay.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A small index in `0..n`.
    pub(crate) fn index(&mut self, n: u8) -> u8 {
        u8::try_from(self.below(u64::from(n))).expect("below a u8 bound")
    }

    /// `true` with probability `percent` %.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A seed from the environment variable `var` (decimal or 0x-hex), or one
/// from the time and the process id.
pub(crate) fn seed_from_env(var: &str) -> u64 {
    if let Ok(text) = std::env::var(var) {
        let text = text.trim();
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        return parsed.unwrap_or_else(|_| panic!("{var}={text} is not a u64 seed"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = nanos ^ (u128::from(std::process::id()) << 64);
    Rng::new(u64::try_from(mixed & u128::from(u64::MAX)).expect("masked to 64 bits")).next_u64()
}

/// A random operation for a workload (weights favour writes).
pub(crate) fn random_op(rng: &mut Rng, next_value: &mut u32) -> Op {
    let s = rng.index(4);
    let c = rng.index(3);
    let k = rng.index(3);
    let mut value = || {
        *next_value += 1;
        *next_value
    };
    let opt_class = |rng: &mut Rng| rng.chance(50).then(|| rng.index(3));
    match rng.below(100) {
        0..=34 => Op::Put {
            s,
            c,
            k,
            v: value(),
        },
        35..=44 => Op::PutExpiring {
            s,
            k,
            v: value(),
            ttl_hours: u32::try_from(1 + rng.below(24 * 40)).expect("small"),
        },
        45..=54 => Op::Delete { s, c, k },
        55..=59 => {
            let n = 1 + rng.below(4);
            let items = (0..n)
                .map(|_| {
                    let v = rng.chance(75).then(&mut value);
                    (rng.index(4), rng.index(3), rng.index(3), v)
                })
                .collect();
            Op::Batch { items }
        }
        60 => Op::Shred {
            s,
            class: opt_class(rng),
        },
        61..=63 => Op::Hold {
            s,
            class: opt_class(rng),
        },
        64..=66 => Op::Release {
            s,
            class: opt_class(rng),
        },
        67 => Op::CloseAccount { a: rng.index(2) },
        68..=73 => Op::Compact,
        74..=75 => Op::RotateEpoch,
        76..=82 => Op::AdvanceClock {
            hours: match rng.below(4) {
                0 => 1,
                1 => 24,
                2 => 24 * 7,
                _ => 24 * 31,
            },
        },
        83..=84 => Op::SetClockBack {
            hours: if rng.chance(50) { 1 } else { 24 },
        },
        _ => Op::Flush,
    }
}
