//! Peers and workloads shared by the benchmarks.
//!
//! shredkv is measured against the stores an engineer would otherwise pick,
//! on the same data and with the same durability (design brief, section 8):
//! plain sled and plain redb (no encryption; erasing a subject is removing
//! its key range), sled with one store-wide AES-256-GCM key (encryption at
//! rest without per-subject keys), SQLite with `PRAGMA secure_delete=ON`, and
//! the design's floor on sled and redb (shredkv's layout and cryptography
//! without its engine; see `floor.rs`).
//! Every peer implements [`Store`]; [`workload`] builds the data set and the
//! lazily loaded fixtures the benches share.

pub mod due_floor;
pub mod expiring;
mod floor;
pub mod measure;
pub mod peers;
pub mod shred_writes;
pub mod workload;

pub use peers::Peer;

/// Any failure of a peer (the benches stop on the first one).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A peer operation's result.
pub type Result<T> = std::result::Result<T, Error>;

/// One record of the data set: a subject's record key and its value.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The subject the record belongs to.
    pub subject: &'a str,
    /// The record key (about 16 bytes).
    pub key: &'a [u8],
    /// The value (100 bytes).
    pub value: &'a [u8],
}

/// The operations every workload needs, implemented by every peer.
///
/// Writes are buffered (durable at the next [`Store::flush`]) on every peer,
/// except [`Store::erase`], which is durable when it returns: shredkv's
/// `shred` is, so the plain peers sync after removing the subject's records.
pub trait Store {
    /// The peer this store is.
    fn peer(&self) -> Peer;

    /// Makes `subject` known before its first write (shredkv registers an
    /// account; the others need nothing).
    ///
    /// # Errors
    /// The store failing.
    fn register(&self, subject: &str) -> Result<()>;

    /// Writes `records` as one atomic batch (one transaction).
    ///
    /// # Errors
    /// The store failing.
    fn write_batch(&self, records: &[Record<'_>]) -> Result<()>;

    /// Writes one record on its own (one transaction where the peer has them).
    ///
    /// # Errors
    /// The store failing.
    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()>;

    /// Reads a record's value into `out`. Returns whether it exists.
    ///
    /// # Errors
    /// The store failing.
    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;

    /// Visits every record of `subject` (key, value). Returns how many.
    ///
    /// # Errors
    /// The store failing.
    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize>;

    /// Erases every record of `subject`, durably before returning.
    ///
    /// # Errors
    /// The store failing.
    fn erase(&self, subject: &str) -> Result<()>;

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// The store failing.
    fn flush(&self) -> Result<()>;

    /// Writes `entries` into the trees they name (made on first use), then
    /// makes them durable, as one commit where the backend has one: the
    /// floor of a commit that writes what a shred writes. Only the plain
    /// backends implement it.
    ///
    /// # Errors
    /// The store failing, or a peer that is not a plain backend.
    fn commit_to_trees(&self, entries: &[TreeEntry<'_>]) -> Result<()> {
        let _ = entries;
        Err(format!("{} is not a plain backend", self.peer().name()).into())
    }
}

/// One entry of [`Store::commit_to_trees`].
#[derive(Debug, Clone, Copy)]
pub struct TreeEntry<'a> {
    /// The tree (a sled tree, a redb table) the entry goes into.
    pub tree: &'a str,
    /// The entry's key.
    pub key: &'a [u8],
    /// The entry's value.
    pub value: &'a [u8],
}
