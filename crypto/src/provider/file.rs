//! The file key provider: epoch keys in a small file of fixed slots.
//!
//! ```text
//! header, 32 bytes
//!   0   8  magic "SHKVKEYS"
//!   8   1  format version (2; 1 is read, without anchor blocks)
//!   9   1  reserved, zero
//!  10   2  slot count              u16 big-endian
//!  12   4  next epoch id           u32 big-endian
//!  16  12  reserved, zero
//!  28   4  CRC32 of bytes 0..28    u32 big-endian
//! slot i at offset 32 + 48 × i, 48 bytes
//!   0   1  state: 0 empty, 1 live, 2 destroyed
//!   1   3  reserved, zero
//!   4   4  epoch id                u32 big-endian (0 when empty)
//!   8  32  epoch key (all zero unless live)
//!  40   4  reserved, zero
//!  44   4  CRC32 of bytes 0..44    u32 big-endian
//! anchor blocks A and B after the slots (version 2), 64 bytes each
//!   0   8  generation              u64 big-endian
//!   8   8  audit entry seq         u64 big-endian (0: no anchor yet)
//!  16  32  audit entry hash
//!  48  12  reserved, zero
//!  60   4  CRC32 of bytes 0..60    u32 big-endian
//! ```
//!
//! The anchor ([`Anchor`]) is written to the block that does not hold the
//! newest position, then synced: a write torn by a crash damages only that
//! block, and the other still holds the previous position. A version 1
//! file (no blocks) is read as it is and upgraded on the first anchor: the
//! two blocks are appended and synced, then the header says version 2 (a
//! version 1 header followed by exactly two valid blocks is that upgrade,
//! interrupted, and reads as version 2).
//!
//! Destroying an epoch overwrites its slot in place with zeros and the
//! destroyed state, then syncs the file before returning. In-place overwrite
//! (not write-and-rename) is deliberate: a rename would leave the old key in
//! the old file's blocks. The limits of this are in `docs/threat-model.md`: an
//! SSD's flash translation layer or a copy-on-write file system (btrfs, ZFS,
//! APFS) may keep the old block, which is why NIST SP 800-88 treats
//! cryptographic erase as only as strong as the destruction of the key, and
//! why an HSM provider is the stronger choice.
//!
//! Epoch ids are never reused: an epoch below `next epoch id` that has no live
//! slot has been destroyed, even after its slot was reused.
//!
//! Several processes may use one key file (an application and the `shredkv`
//! CLI against its store). Each change (an epoch created or destroyed) takes
//! an exclusive advisory lock on the file (`flock`), re-reads it, and
//! decides on what it found, so no process overwrites a slot another filled
//! or reuses an epoch id, and an epoch another process destroyed leaves
//! this one's memory at its next change. Opening reads under a shared lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use zeroize::Zeroize;

use super::{Anchor, KeyProvider, ProviderError};
use crate::keys::{DataKey, EpochId, EpochKey, KEY_LEN};
use crate::wrap::{EpochCipher, WrapContext, WrappedKey};

const MAGIC: &[u8; 8] = b"SHKVKEYS";
/// Version 2 adds the anchor blocks; version 1 is still read.
const FORMAT_VERSION: u8 = 2;
const ANCHOR_LEN: usize = 64;
const HEADER_LEN: usize = 32;
const SLOT_LEN: usize = 48;
/// Slots in a new key file: room for daily epochs over a 30-day purge window
/// several times over.
pub(crate) const DEFAULT_SLOTS: u16 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Live(EpochId),
    Destroyed(EpochId),
}

struct Inner {
    file: File,
    slots: Vec<SlotState>,
    next_epoch: u32,
    /// Boxed: a B-tree moves its values between nodes as it grows, which
    /// would leave copies of the key schedules behind.
    live: BTreeMap<EpochId, Box<EpochCipher>>,
    /// The anchor blocks, if the file has them (version 2).
    anchor: Option<AnchorBlocks>,
}

/// What the anchor blocks hold: the newest valid position, and which block
/// the next write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AnchorBlocks {
    newest: Option<Anchor>,
    next_block: usize,
}

/// Epoch keys in a file of fixed slots (see the module docs for the layout
/// and its limits).
///
/// ```
/// use shredkv_crypto::{DataKey, FileKeyProvider, KeyProvider, ProviderError, WrapContext};
///
/// let dir = tempfile::tempdir()?;
/// let provider = FileKeyProvider::open_or_create(dir.path().join("keys"))?;
/// let epoch = provider.create_epoch()?;
/// let wrapped = provider.wrap(epoch, &WrapContext::StoreSecret, &DataKey::generate())?;
/// provider.destroy_epoch(epoch)?;
/// assert!(matches!(
///     provider.unwrap(&WrapContext::StoreSecret, &wrapped),
///     Err(ProviderError::EpochDestroyed { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FileKeyProvider {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKeyProvider {
    /// Opens the key file at `path`, or creates it (owner-only, with the
    /// default number of slots) if it does not exist.
    ///
    /// # Errors
    /// See [`FileKeyProvider::open`] and [`FileKeyProvider::create`].
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<Self, ProviderError> {
        let path = path.into();
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Self::open(path),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Self::create(path, DEFAULT_SLOTS),
            Err(source) => Err(unavailable("inspect the key file", &path, source)),
        }
    }

    /// Creates a new key file with `slots` empty slots, readable and writable
    /// by its owner only. Refuses to overwrite an existing file.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] if the file exists or cannot be written.
    pub fn create(path: impl Into<PathBuf>, slots: u16) -> Result<Self, ProviderError> {
        let path = path.into();
        let slots = slots.max(1);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&path)
            .map_err(|e| unavailable("create the key file", &path, e))?;
        let anchors_at = HEADER_LEN + SLOT_LEN * usize::from(slots);
        let mut bytes = vec![0u8; anchors_at + 2 * ANCHOR_LEN];
        write_header(&mut bytes, FORMAT_VERSION, slots, 1);
        for i in 0..usize::from(slots) {
            let start = HEADER_LEN + SLOT_LEN * i;
            if let Some(slot) = bytes.get_mut(start..start + SLOT_LEN) {
                encode_slot(slot, SlotState::Empty, None);
            }
        }
        for block in bytes[anchors_at..].chunks_exact_mut(ANCHOR_LEN) {
            block.copy_from_slice(&encode_anchor(None));
        }
        write_at(&file, &bytes, 0).map_err(|e| unavailable("write the key file", &path, e))?;
        file.sync_all()
            .map_err(|e| unavailable("sync the key file", &path, e))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the new directory entry durable too; a failure here is not
            // fatal for the file's contents, so it is not reported.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                slots: vec![SlotState::Empty; usize::from(slots)],
                next_epoch: 1,
                live: BTreeMap::new(),
                anchor: Some(AnchorBlocks {
                    newest: None,
                    next_block: 0,
                }),
            }),
        })
    }

    /// Opens an existing key file. Reads and checks it completely before
    /// anything is written, so a damaged or foreign file is never altered.
    ///
    /// # Errors
    /// [`ProviderError::InsecurePermissions`] if group or others may access
    /// the file; [`ProviderError::Corrupt`] if it is truncated, foreign, or
    /// fails a checksum; [`ProviderError::Unavailable`] on I/O errors.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ProviderError> {
        let path = path.into();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| unavailable("open the key file", &path, e))?;
        let metadata = file
            .metadata()
            .map_err(|e| unavailable("inspect the key file", &path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ProviderError::InsecurePermissions { path, mode });
            }
        }
        let _shared = FileLock::shared(&file, &path)?;
        let len = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
        let max_len = HEADER_LEN + SLOT_LEN * usize::from(u16::MAX) + 2 * ANCHOR_LEN;
        if len > max_len {
            return Err(corrupt(
                &path,
                format!("{len} bytes is larger than any key file"),
            ));
        }
        let mut bytes = vec![0u8; len];
        read_at(&file, &mut bytes, 0).map_err(|e| unavailable("read the key file", &path, e))?;
        let parsed = parse(&bytes).map_err(|detail| corrupt(&path, detail));
        let Parsed {
            slots,
            next_epoch,
            keys,
            anchor,
        } = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                bytes.zeroize();
                return Err(err);
            }
        };
        bytes.zeroize();
        let live = keys
            .into_iter()
            .map(|(epoch, key)| (epoch, Box::new(EpochCipher::new(epoch, &key))))
            .collect();
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                slots,
                next_epoch,
                live,
                anchor,
            }),
        })
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the file's exclusive advisory lock (released when the guard
    /// drops) and brings `inner` up to date with the file: what another
    /// process changed since this one last looked.
    fn lock_and_reread(&self, inner: &mut Inner) -> Result<FileLock, ProviderError> {
        let lock = FileLock::exclusive(&inner.file, &self.path)?;
        let len = inner
            .file
            .metadata()
            .map_err(|e| unavailable("inspect the key file", &self.path, e))?
            .len();
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        read_at(&inner.file, &mut bytes, 0)
            .map_err(|e| unavailable("read the key file", &self.path, e))?;
        let parsed = parse(&bytes).map_err(|detail| corrupt(&self.path, detail));
        bytes.zeroize();
        let Parsed {
            slots,
            next_epoch,
            keys,
            anchor,
        } = parsed?;
        let mut live = BTreeMap::new();
        for (epoch, key) in keys {
            let cipher = inner
                .live
                .remove(&epoch)
                .unwrap_or_else(|| Box::new(EpochCipher::new(epoch, &key)));
            live.insert(epoch, cipher);
        }
        inner.slots = slots;
        inner.next_epoch = next_epoch;
        inner.live = live;
        inner.anchor = anchor;
        Ok(lock)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the in-memory view at worst
        // behind the file (writes happen before the view changes), so the
        // poisoned state is still safe to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_slot(
        &self,
        inner: &Inner,
        index: usize,
        state: SlotState,
        key: Option<&EpochKey>,
    ) -> Result<(), ProviderError> {
        let mut slot = [0u8; SLOT_LEN];
        encode_slot(&mut slot, state, key);
        let offset = (HEADER_LEN + SLOT_LEN * index) as u64;
        let result = write_at(&inner.file, &slot, offset);
        slot.zeroize();
        result.map_err(|e| unavailable("write a key slot", &self.path, e))
    }

    fn sync(&self, inner: &Inner) -> Result<(), ProviderError> {
        inner
            .file
            .sync_data()
            .map_err(|e| unavailable("sync the key file", &self.path, e))
    }
}

impl KeyProvider for FileKeyProvider {
    fn create_epoch(&self) -> Result<EpochId, ProviderError> {
        let mut inner = self.lock();
        let _file_lock = self.lock_and_reread(&mut inner)?;
        let slots = u16::try_from(inner.slots.len()).unwrap_or(u16::MAX);
        let index = inner
            .slots
            .iter()
            .position(|s| matches!(s, SlotState::Empty))
            .or_else(|| {
                inner
                    .slots
                    .iter()
                    .position(|s| matches!(s, SlotState::Destroyed(_)))
            })
            .ok_or_else(|| ProviderError::NoFreeSlot {
                path: self.path.clone(),
                slots,
            })?;
        let epoch = EpochId(inner.next_epoch);
        let next = inner
            .next_epoch
            .checked_add(1)
            .ok_or_else(|| corrupt(&self.path, "epoch ids exhausted".into()))?;
        let key = EpochKey::generate();
        self.write_slot(&inner, index, SlotState::Live(epoch), Some(&key))?;
        let mut header = [0u8; HEADER_LEN];
        write_header(&mut header, inner.version(), slots, next);
        write_at(&inner.file, &header, 0)
            .map_err(|e| unavailable("write the key file header", &self.path, e))?;
        self.sync(&inner)?;
        inner.next_epoch = next;
        if let Some(slot) = inner.slots.get_mut(index) {
            *slot = SlotState::Live(epoch);
        }
        inner
            .live
            .insert(epoch, Box::new(EpochCipher::new(epoch, &key)));
        Ok(epoch)
    }

    fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError> {
        Ok(self.lock().live.keys().copied().collect())
    }

    fn wrap(
        &self,
        epoch: EpochId,
        context: &WrapContext,
        key: &DataKey,
    ) -> Result<WrappedKey, ProviderError> {
        let inner = self.lock();
        match inner.live.get(&epoch) {
            Some(cipher) => Ok(cipher.wrap(context, key)),
            None => Err(missing_epoch(&inner, epoch)),
        }
    }

    fn unwrap(
        &self,
        context: &WrapContext,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, ProviderError> {
        let inner = self.lock();
        let epoch = wrapped.epoch();
        match inner.live.get(&epoch) {
            Some(cipher) => cipher
                .unwrap(context, wrapped)
                .map_err(|_| ProviderError::Authentication),
            None => Err(missing_epoch(&inner, epoch)),
        }
    }

    fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError> {
        let mut inner = self.lock();
        let _file_lock = self.lock_and_reread(&mut inner)?;
        let Some(index) = inner
            .slots
            .iter()
            .position(|s| *s == SlotState::Live(epoch))
        else {
            return match missing_epoch(&inner, epoch) {
                ProviderError::EpochDestroyed { .. } => Ok(()),
                other => Err(other),
            };
        };
        self.write_slot(&inner, index, SlotState::Destroyed(epoch), None)?;
        self.sync(&inner)?;
        if let Some(slot) = inner.slots.get_mut(index) {
            *slot = SlotState::Destroyed(epoch);
        }
        inner.live.remove(&epoch);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file key provider at {}", self.path.display())
    }

    fn keeps_anchor(&self) -> bool {
        true
    }

    fn anchor(&self) -> Result<Option<Anchor>, ProviderError> {
        let mut inner = self.lock();
        let _file_lock = self.lock_and_reread(&mut inner)?;
        Ok(inner.anchor.and_then(|a| a.newest))
    }

    fn advance_anchor(&self, anchor: &Anchor) -> Result<(), ProviderError> {
        let mut inner = self.lock();
        let _file_lock = self.lock_and_reread(&mut inner)?;
        let blocks = inner.anchor.unwrap_or(AnchorBlocks {
            newest: None,
            next_block: 0,
        });
        if let Some(kept) = blocks.newest {
            if anchor.position() < kept.position()
                || (anchor.position() == kept.position() && anchor.head != kept.head)
            {
                return Err(ProviderError::AnchorRegression {
                    kept,
                    offered: *anchor,
                });
            }
            if *anchor == kept {
                return Ok(());
            }
        }
        let slots = u16::try_from(inner.slots.len()).unwrap_or(u16::MAX);
        let anchors_at = (HEADER_LEN + SLOT_LEN * inner.slots.len()) as u64;
        let block = encode_anchor(Some(anchor));
        if inner.anchor.is_none() {
            // Upgrade from version 1: both blocks, then the header.
            let mut both = [0u8; 2 * ANCHOR_LEN];
            both[..ANCHOR_LEN].copy_from_slice(&block);
            both[ANCHOR_LEN..].copy_from_slice(&encode_anchor(None));
            write_at(&inner.file, &both, anchors_at)
                .map_err(|e| unavailable("write the anchor", &self.path, e))?;
            self.sync(&inner)?;
            let mut header = [0u8; HEADER_LEN];
            write_header(&mut header, FORMAT_VERSION, slots, inner.next_epoch);
            write_at(&inner.file, &header, 0)
                .map_err(|e| unavailable("write the key file header", &self.path, e))?;
            self.sync(&inner)?;
            inner.anchor = Some(AnchorBlocks {
                newest: Some(*anchor),
                next_block: 1,
            });
            return Ok(());
        }
        let offset = anchors_at + (blocks.next_block * ANCHOR_LEN) as u64;
        write_at(&inner.file, &block, offset)
            .map_err(|e| unavailable("write the anchor", &self.path, e))?;
        self.sync(&inner)?;
        inner.anchor = Some(AnchorBlocks {
            newest: Some(*anchor),
            next_block: 1 - blocks.next_block,
        });
        Ok(())
    }
}

impl Inner {
    /// The format version the file's header says.
    fn version(&self) -> u8 {
        if self.anchor.is_some() {
            FORMAT_VERSION
        } else {
            1
        }
    }
}

/// One anchor block (see the module docs); `None` is the empty one.
fn encode_anchor(anchor: Option<&Anchor>) -> [u8; ANCHOR_LEN] {
    let mut out = [0u8; ANCHOR_LEN];
    if let Some(a) = anchor {
        out[..8].copy_from_slice(&a.generation.to_be_bytes());
        out[8..16].copy_from_slice(&a.seq.to_be_bytes());
        out[16..48].copy_from_slice(&a.head);
    }
    let crc = crc32fast::hash(&out[..60]);
    out[60..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// One anchor block read back: `Err` if damaged, `Ok(None)` if empty.
fn decode_anchor(block: &[u8]) -> Result<Option<Anchor>, ()> {
    let stored = block
        .get(60..64)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes);
    let body = block.get(..60).ok_or(())?;
    if stored != Some(crc32fast::hash(body)) || body[48..60].iter().any(|b| *b != 0) {
        return Err(());
    }
    let u64_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    let (generation, seq) = (u64_at(0), u64_at(8));
    if seq == 0 {
        return Ok(None);
    }
    let mut head = [0u8; 32];
    head.copy_from_slice(&body[16..48]);
    Ok(Some(Anchor {
        generation,
        seq,
        head,
    }))
}

/// The two anchor blocks: the newest valid position, and the block to write
/// next (the other one; a damaged one if there is one).
fn parse_anchor_blocks(blocks: &[u8]) -> Result<AnchorBlocks, String> {
    let a = decode_anchor(&blocks[..ANCHOR_LEN]);
    let b = decode_anchor(&blocks[ANCHOR_LEN..]);
    let position = |x: &Option<Anchor>| x.map(|a| a.position());
    match (a, b) {
        (Err(()), Err(())) => Err("both anchor blocks are damaged".into()),
        (Ok(a), Err(())) => Ok(AnchorBlocks {
            newest: a,
            next_block: 1,
        }),
        (Err(()), Ok(b)) => Ok(AnchorBlocks {
            newest: b,
            next_block: 0,
        }),
        (Ok(a), Ok(b)) if position(&b) > position(&a) => Ok(AnchorBlocks {
            newest: b,
            next_block: 0,
        }),
        (Ok(a), Ok(_)) => Ok(AnchorBlocks {
            newest: a,
            next_block: 1,
        }),
    }
}

/// An advisory lock on the key file across processes, held until dropped.
/// Taken on a duplicate of the handle (the same open file description), so
/// the provider's own handle stays free to borrow.
struct FileLock(File);

impl FileLock {
    fn exclusive(file: &File, path: &Path) -> Result<Self, ProviderError> {
        Self::take(file, path, File::lock)
    }

    fn shared(file: &File, path: &Path) -> Result<Self, ProviderError> {
        Self::take(file, path, File::lock_shared)
    }

    fn take(
        file: &File,
        path: &Path,
        lock: fn(&File) -> io::Result<()>,
    ) -> Result<Self, ProviderError> {
        let handle = file
            .try_clone()
            .map_err(|e| unavailable("lock the key file", path, e))?;
        lock(&handle).map_err(|e| unavailable("lock the key file", path, e))?;
        Ok(Self(handle))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the last handle releases it too; an unlock error leaves
        // nothing to do.
        let _ = self.0.unlock();
    }
}

fn missing_epoch(inner: &Inner, epoch: EpochId) -> ProviderError {
    if epoch.0 >= 1 && epoch.0 < inner.next_epoch {
        ProviderError::EpochDestroyed { epoch }
    } else {
        ProviderError::UnknownEpoch { epoch }
    }
}

fn unavailable(action: &'static str, path: &Path, source: io::Error) -> ProviderError {
    ProviderError::Unavailable {
        action,
        location: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> ProviderError {
    ProviderError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

fn write_header(out: &mut [u8], version: u8, slots: u16, next_epoch: u32) {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = version;
    header[10..12].copy_from_slice(&slots.to_be_bytes());
    header[12..16].copy_from_slice(&next_epoch.to_be_bytes());
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_be_bytes());
    if let Some(target) = out.get_mut(..HEADER_LEN) {
        target.copy_from_slice(&header);
    }
}

fn encode_slot(out: &mut [u8], state: SlotState, key: Option<&EpochKey>) {
    let mut slot = [0u8; SLOT_LEN];
    let (code, epoch) = match state {
        SlotState::Empty => (0u8, 0u32),
        SlotState::Live(e) => (1, e.0),
        SlotState::Destroyed(e) => (2, e.0),
    };
    slot[0] = code;
    slot[4..8].copy_from_slice(&epoch.to_be_bytes());
    if let (SlotState::Live(_), Some(key)) = (state, key) {
        slot[8..40].copy_from_slice(key.expose_secret());
    }
    let crc = crc32fast::hash(&slot[..44]);
    slot[44..48].copy_from_slice(&crc.to_be_bytes());
    if let Some(target) = out.get_mut(..SLOT_LEN) {
        target.copy_from_slice(&slot);
    }
    slot.zeroize();
}

struct Parsed {
    slots: Vec<SlotState>,
    next_epoch: u32,
    keys: Vec<(EpochId, EpochKey)>,
    anchor: Option<AnchorBlocks>,
}

/// Checks and decodes a whole key file. Never panics; never writes.
fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "truncated: {} bytes, a key file has at least {HEADER_LEN}",
            bytes.len()
        ));
    };
    if &header[..8] != MAGIC {
        return Err("not a shredkv key file (wrong magic bytes)".into());
    }
    let stored = u32::from_be_bytes([header[28], header[29], header[30], header[31]]);
    let computed = crc32fast::hash(&header[..28]);
    if stored != computed {
        return Err(format!(
            "header checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    let version = header[8];
    if version != FORMAT_VERSION && version != 1 {
        return Err(format!(
            "format version {version} is not supported by this build"
        ));
    }
    if header[9] != 0 || header[16..28].iter().any(|b| *b != 0) {
        return Err("header reserved bytes are not zero".into());
    }
    let slots = u16::from_be_bytes([header[10], header[11]]);
    let mut next_epoch = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
    let slots_len = SLOT_LEN * usize::from(slots);
    // Version 1 has no anchor blocks, unless an upgrade was interrupted
    // after appending them (then they must both be valid).
    let with_blocks = slots_len + 2 * ANCHOR_LEN;
    let anchor = match (version, body.len()) {
        (1, len) if len == slots_len => None,
        (_, len) if len == with_blocks => {
            let blocks = parse_anchor_blocks(&body[slots_len..])?;
            if version == 1 && decode_anchor(&body[slots_len..slots_len + ANCHOR_LEN]).is_err() {
                return Err("an interrupted upgrade left a damaged anchor block".into());
            }
            Some(blocks)
        }
        _ => {
            return Err(format!(
                "truncated or extended: header declares {slots} slots and version {version} \
                 ({} bytes), file has {}",
                HEADER_LEN + if version == 1 { slots_len } else { with_blocks },
                bytes.len()
            ));
        }
    };
    let body = &body[..slots_len];
    let mut states = Vec::with_capacity(usize::from(slots));
    let mut seen = BTreeSet::new();
    // Sized up front: a growing Vec would leave copies of the keys it moved
    // in freed memory.
    let mut keys = Vec::with_capacity(usize::from(slots));
    for (i, slot) in body.chunks_exact(SLOT_LEN).enumerate() {
        let stored = u32::from_be_bytes([slot[44], slot[45], slot[46], slot[47]]);
        let computed = crc32fast::hash(&slot[..44]);
        if stored != computed {
            return Err(format!(
                "slot {i} checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        if slot[1..4].iter().chain(&slot[40..44]).any(|b| *b != 0) {
            return Err(format!("slot {i} reserved bytes are not zero"));
        }
        let epoch = EpochId(u32::from_be_bytes([slot[4], slot[5], slot[6], slot[7]]));
        let key_bytes = &slot[8..40];
        let state = match slot[0] {
            0 if epoch.0 == 0 && key_bytes.iter().all(|b| *b == 0) => SlotState::Empty,
            1 if epoch.0 != 0 => {
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(key_bytes);
                keys.push((epoch, EpochKey::from_bytes(key)));
                key.zeroize();
                SlotState::Live(epoch)
            }
            2 if epoch.0 != 0 && key_bytes.iter().all(|b| *b == 0) => SlotState::Destroyed(epoch),
            other => return Err(format!("slot {i} has an invalid state (code {other})")),
        };
        if let SlotState::Live(e) | SlotState::Destroyed(e) = state {
            if !seen.insert(e) {
                return Err(format!("slot {i} repeats {e}"));
            }
            // A crash between a slot write and the header write leaves the
            // header behind; the slots are the truth.
            next_epoch = next_epoch.max(e.0.saturating_add(1));
        }
        states.push(state);
    }
    Ok(Parsed {
        slots: states,
        next_epoch: next_epoch.max(1),
        keys,
        anchor,
    })
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

#[cfg(unix)]
fn read_at(file: &File, bytes: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(bytes, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, bytes: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(bytes)
}

/// Checks a key file's bytes without opening it, for fuzzing and `verify`.
///
/// # Errors
/// A sentence saying what is wrong with the bytes.
pub(crate) fn check_key_file_bytes(bytes: &[u8]) -> Result<usize, String> {
    parse(bytes).map(|parsed| parsed.keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dir: &tempfile::TempDir) -> FileKeyProvider {
        FileKeyProvider::create(dir.path().join("keys"), 4).expect("create")
    }

    #[test]
    fn epochs_wrap_unwrap_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = provider(&dir);
        let e1 = p.create_epoch().expect("epoch");
        let e2 = p.create_epoch().expect("epoch");
        assert!(e2 > e1);
        let key = DataKey::generate();
        let wrapped = p.wrap(e2, &WrapContext::StoreSecret, &key).expect("wrap");
        drop(p);
        let p = FileKeyProvider::open(dir.path().join("keys")).expect("reopen");
        assert_eq!(p.live_epochs().expect("live"), vec![e1, e2]);
        let back = p
            .unwrap(&WrapContext::StoreSecret, &wrapped)
            .expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
    }

    #[test]
    fn destroyed_is_reported_as_destroyed_even_after_slot_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = FileKeyProvider::create(dir.path().join("keys"), 1).expect("create");
        let e1 = p.create_epoch().expect("epoch");
        let wrapped = p
            .wrap(e1, &WrapContext::StoreSecret, &DataKey::generate())
            .expect("wrap");
        assert!(matches!(
            p.create_epoch(),
            Err(ProviderError::NoFreeSlot { .. })
        ));
        p.destroy_epoch(e1).expect("destroy");
        p.destroy_epoch(e1).expect("destroy is idempotent");
        let e2 = p.create_epoch().expect("reuses the destroyed slot");
        assert_ne!(e1, e2);
        let p = FileKeyProvider::open(dir.path().join("keys")).expect("reopen");
        assert!(matches!(
            p.unwrap(&WrapContext::StoreSecret, &wrapped),
            Err(ProviderError::EpochDestroyed { epoch }) if epoch == e1
        ));
        assert!(matches!(
            p.destroy_epoch(EpochId(99)),
            Err(ProviderError::UnknownEpoch { .. })
        ));
    }

    #[test]
    fn destroyed_key_bytes_occur_nowhere_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let p = FileKeyProvider::create(&path, 8).expect("create");
        let keep = p.create_epoch().expect("epoch");
        let doomed = p.create_epoch().expect("epoch");
        let before = std::fs::read(&path).expect("read");
        // Find the doomed key's bytes in its slot (slot index 1).
        let start = HEADER_LEN + SLOT_LEN + 8;
        let doomed_key = before[start..start + 32].to_vec();
        assert_ne!(doomed_key, vec![0u8; 32]);
        p.destroy_epoch(doomed).expect("destroy");
        let after = std::fs::read(&path).expect("read");
        assert!(!after.windows(32).any(|w| w == doomed_key.as_slice()));
        for window in 8..=32 {
            let needle = &doomed_key[..window];
            assert!(
                !after.windows(window).any(|w| w == needle),
                "{window}-byte prefix survives"
            );
        }
        assert_eq!(p.live_epochs().expect("live"), vec![keep]);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_owner_only_and_enforced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        drop(provider(&dir));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = FileKeyProvider::open(&path).expect_err("world-readable must be refused");
        assert!(matches!(
            err,
            ProviderError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn every_byte_flip_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let p = provider(&dir);
        p.create_epoch().expect("epoch");
        let e = p.create_epoch().expect("epoch");
        p.destroy_epoch(e).expect("destroy");
        let (first, second) = (anchor_at(1, 5), anchor_at(1, 9));
        p.advance_anchor(&first).expect("anchor");
        p.advance_anchor(&second).expect("anchor");
        drop(p);
        let good = std::fs::read(&path).expect("read");
        let anchors_at = good.len() - 2 * ANCHOR_LEN;
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).expect("write");
            if i >= anchors_at {
                // One damaged anchor block is what a torn write leaves: the
                // other one holds its position (the newer, or the one before).
                let opened = FileKeyProvider::open(&path)
                    .unwrap_or_else(|err| panic!("flip at anchor byte {i}: {err}"));
                let anchor = opened.anchor().expect("anchor");
                let block = (i - anchors_at) / ANCHOR_LEN;
                let at = anchors_at + block * ANCHOR_LEN;
                let damaged_newest = decode_anchor(&good[at..at + ANCHOR_LEN]) == Ok(Some(second));
                let expected = if damaged_newest { first } else { second };
                assert_eq!(anchor, Some(expected), "flip at byte {i}");
                drop(opened);
                std::fs::write(&path, &good).expect("restore");
                continue;
            }
            match FileKeyProvider::open(&path) {
                Err(ProviderError::Corrupt { detail, .. }) => assert!(!detail.is_empty()),
                other => panic!("flip at byte {i} gave {other:?}"),
            }
            assert_eq!(
                std::fs::read(&path).expect("read"),
                bad,
                "open altered a corrupt file"
            );
        }
    }

    fn anchor_at(generation: u64, seq: u64) -> Anchor {
        let mut head = [0u8; 32];
        head[..8].copy_from_slice(&seq.to_be_bytes());
        Anchor {
            generation,
            seq,
            head,
        }
    }

    /// The anchor only moves forward, survives a reopen, and a write torn
    /// in either block leaves the position before it.
    #[test]
    fn the_anchor_moves_forward_only_and_survives_a_torn_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let p = provider(&dir);
        assert!(p.keeps_anchor());
        assert_eq!(p.anchor().expect("anchor"), None);
        let mut last = None;
        for (generation, seq) in [(0, 1), (0, 7), (1, 3), (1, 4), (1, 9)] {
            let a = anchor_at(generation, seq);
            p.advance_anchor(&a).expect("advance");
            p.advance_anchor(&a)
                .expect("the same position again is no change");
            let before = std::fs::read(&path).expect("read");
            // Behind, or the same position with another hash: refused.
            for behind in [anchor_at(generation, seq - 1), anchor_at(0, 0)] {
                if behind.seq == 0 {
                    continue;
                }
                assert!(matches!(
                    p.advance_anchor(&behind),
                    Err(ProviderError::AnchorRegression { kept, .. }) if kept == a
                ));
            }
            let mut rewritten = a;
            rewritten.head[31] ^= 1;
            assert!(p.advance_anchor(&rewritten).is_err());
            assert_eq!(
                std::fs::read(&path).expect("read"),
                before,
                "refusals write nothing"
            );
            assert_eq!(
                FileKeyProvider::open(&path)
                    .expect("reopen")
                    .anchor()
                    .expect("anchor"),
                Some(a)
            );
            // A torn write of the newest block: the previous position.
            let good = std::fs::read(&path).expect("read");
            let anchors_at = good.len() - 2 * ANCHOR_LEN;
            let newest_block = (0..2)
                .find(|b| {
                    let at = anchors_at + b * ANCHOR_LEN;
                    decode_anchor(&good[at..at + ANCHOR_LEN]) == Ok(Some(a))
                })
                .expect("a block holds the newest");
            let mut torn = good.clone();
            let at = anchors_at + newest_block * ANCHOR_LEN;
            torn[at..at + ANCHOR_LEN / 2].fill(0);
            std::fs::write(&path, &torn).expect("tear");
            assert_eq!(
                FileKeyProvider::open(&path)
                    .expect("opens")
                    .anchor()
                    .expect("anchor"),
                last,
                "the position before the torn write"
            );
            std::fs::write(&path, &good).expect("put back");
            last = Some(a);
        }
        // Both blocks damaged: refused, named.
        let mut bad = std::fs::read(&path).expect("read");
        let n = bad.len();
        bad[n - 1] ^= 1;
        bad[n - 1 - ANCHOR_LEN] ^= 1;
        std::fs::write(&path, &bad).expect("write");
        let err = FileKeyProvider::open(&path).expect_err("both damaged");
        assert!(err.to_string().contains("both anchor blocks"), "{err}");
    }

    /// A version 1 file opens without an anchor; the first anchor upgrades
    /// it in place, and an upgrade interrupted after the blocks were
    /// appended reads as done.
    #[test]
    fn a_version_1_key_file_is_upgraded_by_its_first_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let p = provider(&dir);
        let epoch = p.create_epoch().expect("epoch");
        let wrapped = p
            .wrap(epoch, &WrapContext::StoreSecret, &DataKey::generate())
            .expect("wrap");
        drop(p);
        let v2 = std::fs::read(&path).expect("read");
        let mut v1 = v2[..v2.len() - 2 * ANCHOR_LEN].to_vec();
        v1[8] = 1;
        let crc = crc32fast::hash(&v1[..28]);
        v1[28..32].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&path, &v1).expect("write v1");
        let p = FileKeyProvider::open(&path).expect("v1 opens");
        assert_eq!(p.anchor().expect("anchor"), None);
        p.unwrap(&WrapContext::StoreSecret, &wrapped)
            .expect("keys intact");
        let a = anchor_at(0, 3);
        p.advance_anchor(&a).expect("upgrade");
        let upgraded = std::fs::read(&path).expect("read");
        assert_eq!(upgraded.len(), v2.len());
        assert_eq!(upgraded[8], FORMAT_VERSION);
        let reopened = FileKeyProvider::open(&path).expect("v2 opens");
        assert_eq!(reopened.anchor().expect("anchor"), Some(a));
        reopened
            .unwrap(&WrapContext::StoreSecret, &wrapped)
            .expect("keys intact");
        // Interrupted: blocks appended, header still version 1.
        let mut interrupted = upgraded.clone();
        interrupted[..HEADER_LEN].copy_from_slice(&v1[..HEADER_LEN]);
        std::fs::write(&path, &interrupted).expect("write");
        let p = FileKeyProvider::open(&path).expect("opens");
        assert_eq!(p.anchor().expect("anchor"), Some(a));
        p.create_epoch()
            .expect("a change after it writes a consistent file");
        drop(p);
        assert_eq!(
            FileKeyProvider::open(&path)
                .expect("opens")
                .anchor()
                .expect("anchor"),
            Some(a)
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        drop(provider(&dir));
        let good = std::fs::read(&path).expect("read");
        for len in [0, 10, HEADER_LEN, good.len() - 1] {
            std::fs::write(&path, &good[..len]).expect("write");
            let err = FileKeyProvider::open(&path).expect_err("truncated");
            let text = err.to_string();
            assert!(text.contains("truncated"), "{text}");
            assert!(text.contains("keys"), "message names the file: {text}");
        }
        std::fs::write(
            &path,
            b"#!/bin/sh\necho this is not a key file at all, not at all\n",
        )
        .expect("write");
        let text = FileKeyProvider::open(&path)
            .expect_err("foreign")
            .to_string();
        assert!(text.contains("not a shredkv key file"), "{text}");
    }

    /// A key file's bytes with `slots` slots, each given by `slot(i)` as
    /// (state code, epoch id); checksums are correct.
    fn key_file_bytes(slots: u16, slot: impl Fn(usize) -> (u8, u32)) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_LEN + SLOT_LEN * usize::from(slots)];
        write_header(&mut bytes, 1, slots, 1);
        for (i, chunk) in bytes[HEADER_LEN..].chunks_exact_mut(SLOT_LEN).enumerate() {
            let (code, epoch) = slot(i);
            chunk[0] = code;
            chunk[4..8].copy_from_slice(&epoch.to_be_bytes());
            let crc = crc32fast::hash(&chunk[..44]);
            chunk[44..48].copy_from_slice(&crc.to_be_bytes());
        }
        bytes
    }

    fn fix_crc(bytes: &mut [u8]) {
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        let good = key_file_bytes(2, |i| (2, u32::try_from(i).expect("small") + 1));
        assert_eq!(check_key_file_bytes(&good), Ok(0));
        for offset in [9, 16, 27] {
            let mut bad = good.clone();
            bad[offset] = 1;
            fix_crc(&mut bad[..HEADER_LEN]);
            let err = check_key_file_bytes(&bad).expect_err("reserved header byte");
            assert!(err.contains("header reserved"), "{offset}: {err}");
        }
        for offset in [1, 3, 40, 43] {
            let mut bad = good.clone();
            let slot = &mut bad[HEADER_LEN + SLOT_LEN..HEADER_LEN + 2 * SLOT_LEN];
            slot[offset] = 1;
            fix_crc(slot);
            let err = check_key_file_bytes(&bad).expect_err("reserved slot byte");
            assert!(err.contains("slot 1 reserved"), "{offset}: {err}");
        }
    }

    #[test]
    fn repeated_epochs_are_refused_and_a_full_file_parses_fast() {
        let repeated = key_file_bytes(3, |i| (2, if i == 1 { 5 } else { 1 }));
        let err = check_key_file_bytes(&repeated).expect_err("repeated epoch");
        assert!(err.contains("slot 2 repeats epoch 1"), "{err}");
        // The largest file the format allows: 65535 slots (3 MiB). Checking
        // repeats pairwise took seconds here; a set takes milliseconds.
        let full = key_file_bytes(u16::MAX, |i| (2, u32::try_from(i).expect("small") + 1));
        let started = std::time::Instant::now();
        assert_eq!(check_key_file_bytes(&full), Ok(0));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    }

    /// Two handles on one file (as two processes have): each change works
    /// on the file as it is, not on what its handle read at open.
    #[test]
    fn two_providers_on_one_file_never_overwrite_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let app = FileKeyProvider::create(&path, 4).expect("create");
        let cli = FileKeyProvider::open(&path).expect("open a second time");
        let first = app.create_epoch().expect("app creates");
        let wrapped = app
            .wrap(first, &WrapContext::StoreSecret, &DataKey::generate())
            .expect("wrap");
        let second = cli.create_epoch().expect("cli creates");
        assert_ne!(first, second, "epoch ids are never reused");
        // The CLI now knows the app's epoch, and destroys it.
        assert!(cli.unwrap(&WrapContext::StoreSecret, &wrapped).is_ok());
        cli.destroy_epoch(first).expect("cli destroys");
        // The app's next change drops it from its memory too.
        let third = app.create_epoch().expect("app creates again");
        assert!(matches!(
            app.unwrap(&WrapContext::StoreSecret, &wrapped),
            Err(ProviderError::EpochDestroyed { .. })
        ));
        let reopened = FileKeyProvider::open(&path).expect("reopen");
        assert_eq!(
            reopened.live_epochs().expect("live"),
            vec![second, third],
            "every change landed"
        );
    }

    #[test]
    fn missing_file_is_unavailable_not_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = FileKeyProvider::open(dir.path().join("nope")).expect_err("missing");
        assert!(matches!(err, ProviderError::Unavailable { .. }));
    }

    #[test]
    fn debug_shows_path_not_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = provider(&dir);
        p.create_epoch().expect("epoch");
        let printed = format!("{p:?}");
        assert!(
            printed.contains("keys") && printed.contains(".."),
            "{printed}"
        );
    }
}
