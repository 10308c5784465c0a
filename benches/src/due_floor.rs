//! The floor of destroying due keys on redb: the writes a compaction pass
//! makes for each expired bucket key, on plain redb, without the engine.
//!
//! A store shaped like the retention bench's (subjects × days expiry-bucket
//! keys, one per subject and day, plus a scope key per subject) is mirrored
//! as plain tables of the same key and value sizes:
//!
//! - `vault`: the scope keys under 26-byte key ids (16-byte subject tag ‖
//!   class ‖ bucket ‖ version), 109-byte live entries (a vault entry of 93
//!   bytes and its 16-byte control-plane MAC);
//! - `vault_days`: the expiry keys in the engine's day lane (store format
//!   3): the same 26 bytes with the bucket first, so one day's keys lie
//!   together;
//! - `deadlines`: 35-byte keys (deadline ‖ kind ‖ key id), 24-byte values;
//! - `audit`: entries of 160 bytes under an 8-byte sequence number;
//! - `holds`: empty (a pass still looks for each subject's holds);
//! - `key_nodes`: each day's forest of the key tree (store format 4): the
//!   bottom node (depth 3, the tag's first 12 bits) of every subject's key
//!   and the nodes above it, 9-byte ids (depth ‖ forest ‖ prefix), 88-byte
//!   node entries (a key wrapped under its parent, self-authenticated);
//! - `data`: one record per subject and day, under a 34-byte key (16-byte
//!   subject tag ‖ class ‖ 16-byte blinded record key), a 162-byte value
//!   whose header names its key's bucket and version where an envelope does
//!   (the retention bench's 100-byte values, sealed).
//!
//! A pass reads the day's due items in pages of 256 and, per page, one write
//! transaction (buffered, `Durability::None`) does per key what a pass must:
//! look for the subject's holds, read the vault entry, overwrite it with a
//! 43-byte tombstone, remove the due item, append an audit entry and put the
//! scope's sweep item for the week unless an earlier day of the week put it;
//! the first page also records the day forest's debt. The day's keys done,
//! one more write transaction retires the forest as the engine does: it reads
//! the day's range of the lane to find no live key, deletes every node of the
//! forest and the debt.
//! Every seventh day the pass then does the week's sweep items, in pages of
//! 256 with a write transaction each, as the engine's weekly sweep must: per
//! scope, walk its records, read the vault entry of each record's key,
//! remove the records whose key is a tombstone, remove the sweep item and
//! append an audit entry. The pass ends with a durable commit. No MACs, no
//! sealing or opening, no locks, no caches: what is left is redb's own cost
//! of the reads and writes the design needs, so a rate above this floor
//! cannot be reached by changing the engine alone.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::Result;

const VAULT: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("vault");
const VAULT_DAYS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("vault_days");
const DEADLINES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("deadlines");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");
const HOLDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("holds");
const KEY_NODES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("key_nodes");
const DATA: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("data");

const PAGE: usize = 256;
const LIVE_ENTRY: usize = 109;
const TOMBSTONE: usize = 43;
const AUDIT_ENTRY: usize = 160;
const DEADLINE_VALUE: usize = 24;
const DESTROY_KEY: u8 = 1;
const SWEEP: u8 = 4;
const RETIRE_FOREST: u8 = 7;
/// A day forest's depth (the engine's `DAY_BOTTOM_DEPTH`) and node entry:
/// version ‖ generation ‖ kind ‖ 78-byte node-wrapped key ‖ CRC32.
const FOREST_DEPTH: u8 = 3;
const NODE_ENTRY: usize = 88;
const CLASS: u16 = 8;
const LOADED_PER_TXN: usize = 10_000;
/// A stored record's value as the engine writes the retention bench's: a
/// 100-byte value and its length-prefixed record key in an envelope with an
/// expiry (50 bytes of overhead), 162 bytes in all.
const RECORD_VALUE: usize = 162;
/// Days between two sweeps of a scope's dead records.
const SWEEP_EVERY: u64 = 7;

/// A subject's tag: 16 well-spread bytes (subject tags are keyed PRF
/// outputs, so their order is random against the subjects').
fn tag(subject: usize) -> [u8; 16] {
    let mut x = subject as u64;
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        half.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    }
    out
}

fn key_id(subject: usize, bucket: u32) -> [u8; 26] {
    let mut id = [0u8; 26];
    id[..16].copy_from_slice(&tag(subject));
    id[16..18].copy_from_slice(&CLASS.to_be_bytes());
    id[18..22].copy_from_slice(&bucket.to_be_bytes());
    id[22..].copy_from_slice(&1u32.to_be_bytes());
    id
}

/// Where the engine keeps an expiry key's entry: the key id with its
/// bucket first (the day lane).
fn lane_key(id: &[u8]) -> Result<[u8; 26]> {
    let id: &[u8; 26] = id.try_into().map_err(|_| "a key id is 26 bytes")?;
    let mut key = [0u8; 26];
    key[..4].copy_from_slice(&id[18..22]);
    key[4..22].copy_from_slice(&id[..18]);
    key[22..].copy_from_slice(&id[22..]);
    Ok(key)
}

/// A record's key: the scope (subject tag ‖ class) and a blinded record
/// key, 16 well-spread bytes.
fn record_key(subject: usize, bucket: u32) -> [u8; 34] {
    let mut key = [0u8; 34];
    key[..18].copy_from_slice(&key_id(subject, 0)[..18]);
    key[18..].copy_from_slice(&tag(subject ^ ((bucket as usize) << 40)));
    key
}

/// A record's value: the envelope header's key reference (bucket and
/// version at bytes 2..10), then filler.
fn record_value(bucket: u32) -> [u8; RECORD_VALUE] {
    let mut value = [0x6Bu8; RECORD_VALUE];
    value[0] = 1;
    value[1] = 1;
    value[2..6].copy_from_slice(&bucket.to_be_bytes());
    value[6..10].copy_from_slice(&1u32.to_be_bytes());
    value
}

/// The id of the node at `depth` above `subject`'s key in `forest`: depth ‖
/// forest ‖ the tag's first `4 × depth` bits.
fn node_id(forest: u32, subject: usize, depth: u8) -> [u8; 9] {
    let [a, b, c, d, ..] = tag(subject);
    let prefix = u32::from_be_bytes([a, b, c, d])
        .checked_shr(32 - 4 * u32::from(depth))
        .unwrap_or(0);
    let mut id = [0u8; 9];
    id[0] = depth;
    id[1..5].copy_from_slice(&forest.to_be_bytes());
    id[5..].copy_from_slice(&prefix.to_be_bytes());
    id
}

fn due_key(deadline: u64, kind: u8, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(35);
    key.extend_from_slice(&deadline.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(id);
    key
}

/// What one floor pass did.
#[derive(Debug, Clone, Copy)]
pub struct FloorPass {
    /// Wall time of the pass, its final durable commit included.
    pub spent: Duration,
    /// Keys destroyed (tombstoned).
    pub destroyed: usize,
    /// Dead records removed by the week's sweep (0 on other days).
    pub records_removed: usize,
}

/// A plain redb database shaped like a store with expiring keys; each
/// [`DueKeysFloor::pass`] destroys the next day's keys.
pub struct DueKeysFloor {
    db: redb::Database,
    subjects: usize,
    days: usize,
    next_day: usize,
    audit_seq: u64,
}

impl DueKeysFloor {
    /// Loads `subjects` × `days` expiry keys and as many records (one per
    /// key), and a scope key per subject, into a new database under `dir`.
    ///
    /// # Errors
    /// redb failures.
    pub fn load(dir: &Path, subjects: usize, days: usize) -> Result<Self> {
        let db = redb::Database::create(dir.join("due-floor.redb"))?;
        let live = [0xA5u8; LIVE_ENTRY];
        let deadline_value = [0x5Au8; DEADLINE_VALUE];
        let mut pending = 0;
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        for s in 0..subjects {
            for bucket in 0..=days {
                let id = key_id(s, u32::try_from(bucket)?);
                if bucket == 0 {
                    let mut vault = txn.open_table(VAULT)?;
                    vault.insert(id.as_slice(), live.as_slice())?;
                } else {
                    let mut lane = txn.open_table(VAULT_DAYS)?;
                    lane.insert(lane_key(&id)?.as_slice(), live.as_slice())?;
                }
                if bucket > 0 {
                    let mut nodes = txn.open_table(KEY_NODES)?;
                    for depth in 0..=FOREST_DEPTH {
                        let node = node_id(u32::try_from(bucket)?, s, depth);
                        nodes.insert(node.as_slice(), [0x4Eu8; NODE_ENTRY].as_slice())?;
                    }
                    let mut data = txn.open_table(DATA)?;
                    let bucket = u32::try_from(bucket)?;
                    data.insert(
                        record_key(s, bucket).as_slice(),
                        record_value(bucket).as_slice(),
                    )?;
                    let mut deadlines = txn.open_table(DEADLINES)?;
                    let due = due_key(bucket as u64, DESTROY_KEY, &id);
                    deadlines.insert(due.as_slice(), deadline_value.as_slice())?;
                }
                pending += 1;
                if pending >= LOADED_PER_TXN {
                    txn.commit()?;
                    txn = db.begin_write()?;
                    txn.set_durability(redb::Durability::None)?;
                    pending = 0;
                }
            }
        }
        txn.open_table(AUDIT)?;
        txn.open_table(HOLDS)?;
        txn.commit()?;
        let mut sync = db.begin_write()?;
        sync.set_durability(redb::Durability::Immediate)?;
        sync.commit()?;
        Ok(Self {
            db,
            subjects,
            days,
            next_day: 1,
            audit_seq: 0,
        })
    }

    /// Days whose keys are not destroyed yet.
    #[must_use]
    pub fn days_left(&self) -> usize {
        self.days + 1 - self.next_day
    }

    /// Destroys the next day's keys (one per subject) as a pass does, and
    /// on every seventh day sweeps the week's dead records.
    ///
    /// # Errors
    /// redb failures, or no day left.
    pub fn pass(&mut self) -> Result<FloorPass> {
        if self.days_left() == 0 {
            return Err("every loaded day is spent".into());
        }
        let day = self.next_day as u64;
        self.next_day += 1;
        let tombstone = [0x3Cu8; TOMBSTONE];
        let entry = [0xC3u8; AUDIT_ENTRY];
        let deadline_value = [0x5Au8; DEADLINE_VALUE];
        let started = Instant::now();
        let mut destroyed = 0;
        let forest = u32::try_from(day)?;
        let forest_debt = due_key(day, RETIRE_FOREST, &forest.to_be_bytes());
        loop {
            let page = self.due_page(day, DESTROY_KEY)?;
            if page.is_empty() {
                break;
            }
            let txn = self.buffered_write()?;
            if destroyed == 0 {
                let mut deadlines = txn.open_table(DEADLINES)?;
                deadlines.insert(forest_debt.as_slice(), deadline_value.as_slice())?;
            }
            {
                let mut lane = txn.open_table(VAULT_DAYS)?;
                let mut deadlines = txn.open_table(DEADLINES)?;
                let mut audit = txn.open_table(AUDIT)?;
                let holds = txn.open_table(HOLDS)?;
                for due in &page {
                    let id = due.get(9..).ok_or("a short due item")?;
                    let tag = id.get(..16).ok_or("a short key id")?;
                    if holds.range::<&[u8]>(tag..id)?.next().is_some() {
                        return Err("the floor holds nothing".into());
                    }
                    let at = lane_key(id)?;
                    let live = lane.get(at.as_slice())?.map(|v| v.value().len());
                    if live != Some(LIVE_ENTRY) {
                        return Err("a due key not live in the floor's day lane".into());
                    }
                    lane.insert(at.as_slice(), tombstone.as_slice())?;
                    deadlines.remove(due.as_slice())?;
                    self.audit_seq += 1;
                    audit.insert(self.audit_seq, entry.as_slice())?;
                    // One sweep item per scope and week, as the engine's
                    // weekly sweep: a scope's later days find it and leave it.
                    let week_end = (day / 7 + 1) * 7;
                    let sweep = due_key(week_end, SWEEP, id.get(..18).ok_or("a short key id")?);
                    if deadlines.get(sweep.as_slice())?.is_none() {
                        deadlines.insert(sweep.as_slice(), deadline_value.as_slice())?;
                    }
                    destroyed += 1;
                }
            }
            txn.commit()?;
        }
        self.retire_forest(forest, &forest_debt)?;
        let records_removed = if day.is_multiple_of(SWEEP_EVERY) {
            self.sweep(day)?
        } else {
            0
        };
        let mut sync = self.db.begin_write()?;
        sync.set_durability(redb::Durability::Immediate)?;
        sync.commit()?;
        let spent = started.elapsed();
        if destroyed != self.subjects {
            return Err(format!("destroyed {destroyed} keys, expected {}", self.subjects).into());
        }
        Ok(FloorPass {
            spent,
            destroyed,
            records_removed,
        })
    }

    /// Deletes day forest `forest` once its range of the lane holds no live
    /// key, and its debt, in one write transaction.
    fn retire_forest(&self, forest: u32, debt: &[u8]) -> Result<()> {
        let txn = self.buffered_write()?;
        {
            let lane = txn.open_table(VAULT_DAYS)?;
            let low = forest.to_be_bytes();
            let high = (forest + 1).to_be_bytes();
            for entry in lane.range::<&[u8]>(low.as_slice()..high.as_slice())? {
                if entry?.1.value().len() == LIVE_ENTRY {
                    return Err("a live key in a day being retired".into());
                }
            }
            let mut nodes = txn.open_table(KEY_NODES)?;
            for depth in (0..=FOREST_DEPTH).rev() {
                let mut low = [0u8; 9];
                low[0] = depth;
                low[1..5].copy_from_slice(&forest.to_be_bytes());
                let mut high = low;
                high[5..].copy_from_slice(&[0xFF; 4]);
                let ids: Vec<Vec<u8>> = nodes
                    .range::<&[u8]>(low.as_slice()..=high.as_slice())?
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .collect::<std::result::Result<_, _>>()?;
                for id in &ids {
                    nodes.remove(id.as_slice())?;
                }
            }
            let mut deadlines = txn.open_table(DEADLINES)?;
            if deadlines.remove(debt)?.is_none() {
                return Err("the day forest's debt was not recorded".into());
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The next page of `day`'s due items of one kind (the pass removes
    /// each page's items as it does them).
    fn due_page(&self, day: u64, kind: u8) -> Result<Vec<Vec<u8>>> {
        let start = due_key(day, kind, &[]);
        let end = due_key(day, kind + 1, &[]);
        let txn = self.db.begin_read()?;
        let deadlines = txn.open_table(DEADLINES)?;
        Ok(deadlines
            .range::<&[u8]>(start.as_slice()..end.as_slice())?
            .take(PAGE)
            .map(|e| e.map(|(k, _)| k.value().to_vec()))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// A write transaction committed without a sync, as the engine's pages.
    fn buffered_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        Ok(txn)
    }

    /// Does the sweep items due on `day`: per scope, removes the records
    /// whose key is destroyed. Returns the records removed.
    fn sweep(&mut self, day: u64) -> Result<usize> {
        let entry = [0xC3u8; AUDIT_ENTRY];
        let mut removed = 0;
        loop {
            let page = self.due_page(day, SWEEP)?;
            if page.is_empty() {
                return Ok(removed);
            }
            let txn = self.buffered_write()?;
            {
                let lane = txn.open_table(VAULT_DAYS)?;
                let mut data = txn.open_table(DATA)?;
                let mut deadlines = txn.open_table(DEADLINES)?;
                let mut audit = txn.open_table(AUDIT)?;
                for due in &page {
                    let scope = due.get(9..27).ok_or("a short sweep item")?;
                    let mut dead = Vec::new();
                    for record in data.range::<&[u8]>(scope..)? {
                        let (k, v) = record?;
                        if !k.value().starts_with(scope) {
                            break;
                        }
                        let header = v.value().get(2..10).ok_or("a short record")?;
                        let mut id = [0u8; 26];
                        id[..18].copy_from_slice(scope);
                        id[18..].copy_from_slice(header);
                        let key_entry = lane.get(lane_key(&id)?.as_slice())?;
                        if key_entry.is_some_and(|e| e.value().len() == TOMBSTONE) {
                            dead.push(k.value().to_vec());
                        }
                    }
                    for k in &dead {
                        data.remove(k.as_slice())?;
                    }
                    removed += dead.len();
                    deadlines.remove(due.as_slice())?;
                    self.audit_seq += 1;
                    audit.insert(self.audit_seq, entry.as_slice())?;
                }
            }
            txn.commit()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn every_pass_destroys_one_days_keys_and_only_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut floor = DueKeysFloor::load(dir.path(), 50, 3).expect("load");
        for left in (0..3).rev() {
            let pass = floor.pass().expect("pass");
            assert_eq!(pass.destroyed, 50);
            assert_eq!(pass.records_removed, 0, "no sweep before day 7");
            assert_eq!(floor.days_left(), left);
        }
        assert!(floor.pass().is_err(), "no day left");
        let txn = floor.db.begin_read().expect("read");
        let mut live = 0;
        for table in [VAULT, VAULT_DAYS] {
            let table = txn.open_table(table).expect("table");
            for entry in table.iter().expect("iter") {
                let (_, v) = entry.expect("entry");
                if v.value().len() == LIVE_ENTRY {
                    live += 1;
                }
            }
        }
        assert_eq!(live, 50, "only the scope keys stay live");
        let audit = txn.open_table(AUDIT).expect("audit");
        assert_eq!(audit.len().expect("len"), 150);
        // Days 1 to 3 lie in one week: one sweep item per scope, no due key.
        let deadlines = txn.open_table(DEADLINES).expect("deadlines");
        let mut sweeps = 0;
        for entry in deadlines.iter().expect("iter") {
            let (k, _) = entry.expect("entry");
            assert_eq!(k.value()[8], SWEEP, "only sweep items stay");
            sweeps += 1;
        }
        assert_eq!(sweeps, 50);
        // Every day's forest is gone with its day (50 tags: about 50 bottom
        // nodes a day, and the nodes above them).
        let nodes = txn.open_table(KEY_NODES).expect("key nodes");
        assert_eq!(nodes.len().expect("len"), 0, "the day forests are deleted");
    }

    #[test]
    fn a_load_gives_each_day_a_forest_over_its_subjects_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = DueKeysFloor::load(dir.path(), 300, 2).expect("load");
        let txn = floor.db.begin_read().expect("read");
        let nodes = txn.open_table(KEY_NODES).expect("key nodes");
        let mut per_day_and_depth = std::collections::BTreeMap::new();
        for entry in nodes.iter().expect("iter") {
            let (k, v) = entry.expect("entry");
            assert_eq!(v.value().len(), NODE_ENTRY);
            let k = k.value();
            let forest = u32::from_be_bytes(k[1..5].try_into().expect("4"));
            *per_day_and_depth.entry((forest, k[0])).or_insert(0) += 1;
        }
        for day in 1..=2 {
            assert_eq!(per_day_and_depth[&(day, 0)], 1, "one root");
            assert_eq!(per_day_and_depth[&(day, 1)], 16, "300 tags reach all 16");
            // 300 tags over 4,096 bottom nodes: a few share one.
            let bottom = per_day_and_depth[&(day, 3)];
            assert!((280..=300).contains(&bottom), "{bottom}");
        }
        assert!(!per_day_and_depth.keys().any(|(forest, _)| *forest == 0));
    }

    /// Records left in the floor's data table, by bucket.
    fn records_by_bucket(floor: &DueKeysFloor) -> std::collections::BTreeMap<u32, usize> {
        let txn = floor.db.begin_read().expect("read");
        let data = txn.open_table(DATA).expect("data");
        let mut buckets = std::collections::BTreeMap::new();
        for entry in data.iter().expect("iter") {
            let (_, v) = entry.expect("entry");
            let bucket = u32::from_be_bytes(v.value()[2..6].try_into().expect("4 bytes"));
            *buckets.entry(bucket).or_insert(0) += 1;
        }
        buckets
    }

    #[test]
    fn the_seventh_days_pass_removes_the_weeks_dead_records_and_no_live_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 400 scopes × 9 records: some record keys begin, after their
        // scope, with any byte value (0xFF included).
        let mut floor = DueKeysFloor::load(dir.path(), 400, 9).expect("load");
        let every_day: std::collections::BTreeMap<u32, usize> = (1..=9).map(|b| (b, 400)).collect();
        assert_eq!(records_by_bucket(&floor), every_day);
        for day in 1..=9u32 {
            let pass = floor.pass().expect("pass");
            assert_eq!(pass.destroyed, 400);
            // Days 1 to 7 are dead by day 7's sweep (its keys go first).
            let expected_removed = if day == 7 { 7 * 400 } else { 0 };
            assert_eq!(pass.records_removed, expected_removed, "day {day}");
        }
        // Days 8 and 9 are dead and wait for day 14's sweep.
        let left: std::collections::BTreeMap<u32, usize> = [(8, 400), (9, 400)].into();
        assert_eq!(records_by_bucket(&floor), left);
        let txn = floor.db.begin_read().expect("read");
        let deadlines = txn.open_table(DEADLINES).expect("deadlines");
        let mut sweeps_at_14 = 0;
        for entry in deadlines.iter().expect("iter") {
            let (k, _) = entry.expect("entry");
            assert_eq!(k.value()[8], SWEEP, "only sweep items stay");
            assert_eq!(
                u64::from_be_bytes(k.value()[..8].try_into().expect("8")),
                14
            );
            sweeps_at_14 += 1;
        }
        assert_eq!(sweeps_at_14, 400, "one per scope");
    }
}
