//! I2 on the tape: every wrapped key ever written, tried under the epochs
//! the key provider still has; every envelope ever written, opened with
//! every key so obtained. The layouts are the documented ones
//! (docs/design.md: vault entry v1, wrapped key v1, envelope v1, AAD =
//! store id ‖ data-tree key).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shredkv::jiff::Timestamp;

use shredkv::internal::{Tape, TapeEntry};
use shredkv_crypto::{
    Envelope, EpochId, KeyId, KeyProvider, SubjectTag, ValueCipher, WrapContext, WrappedKey,
};

use super::model::write_id_in;

/// One wrapped copy of a data key found on the tape.
struct Copy {
    key: KeyId,
    wrapped: WrappedKey,
    /// Whether it was tried (with its epoch live).
    tried: bool,
    /// Which of its key id's materials it unwrapped to, if it did.
    opened: Option<usize>,
}

/// One envelope found on the tape.
struct Sealed {
    tree_key: Vec<u8>,
    value: Vec<u8>,
    /// The materials of its key id it was tried with.
    tried: Vec<usize>,
    /// The material that opened it and the write id inside.
    found: Option<(usize, u64)>,
}

/// What the check could recover, one entry per plaintext.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) write: u64,
    pub(crate) key: KeyId,
    pub(crate) epochs: BTreeSet<u32>,
}

/// The incremental state of the tape check.
#[derive(Default)]
pub(crate) struct TapeCheck {
    store_id: Option<[u8; 16]>,
    copies: Vec<Copy>,
    /// The distinct key materials seen under each key id: a key id is not
    /// unique across stores (a restored store that creates a bucket the
    /// backup did not have gives its first version the id the dropped live
    /// store gave another random key), so a cipher is credited only while
    /// a copy of *its* material unwraps under a live epoch.
    ciphers: HashMap<KeyId, Vec<([u8; 32], ValueCipher)>>,
    sealed: HashMap<KeyId, Vec<Sealed>>,
    /// Wrapped copies and envelopes read in all.
    pub(crate) wrapped_read: u64,
    pub(crate) envelopes_read: u64,
    /// Unwrap attempts and envelope openings, in all.
    pub(crate) attempts: u64,
    /// When the check first saw a key wrapped under each epoch.
    pub(crate) first_seen: BTreeMap<u32, Timestamp>,
    /// The epochs the key provider still had at the last run.
    pub(crate) live: BTreeSet<u32>,
}

/// The wrapped key inside a vault entry v1: `... ‖ present u8 ‖ wrapped
/// key (69) ‖ CRC32 (4)`; `None` for a tombstone.
fn wrapped_in(entry: &[u8]) -> Option<WrappedKey> {
    let len = entry.len();
    let start = len.checked_sub(4 + WrappedKey::LEN)?;
    if entry.get(start.checked_sub(1)?) != Some(&1) {
        return None;
    }
    WrappedKey::from_bytes(entry.get(start..len - 4)?).ok()
}

/// The key id a key of the vault's day lane names: the lane key is the key
/// id with its bucket first, `bucket (4) ‖ subject tag (16) ‖ class (2) ‖
/// version (4)` (docs/design.md, "Trees and layouts").
fn key_id_of_day_lane_key(lane: &[u8]) -> Option<KeyId> {
    if lane.len() != KeyId::LEN {
        return None;
    }
    let mut id = Vec::with_capacity(KeyId::LEN);
    id.extend_from_slice(&lane[4..20]);
    id.extend_from_slice(&lane[20..22]);
    id.extend_from_slice(&lane[..4]);
    id.extend_from_slice(&lane[22..]);
    KeyId::from_bytes(&id)
}

impl TapeCheck {
    fn ingest(&mut self, entry: TapeEntry) {
        match entry.tree.as_str() {
            "meta" if entry.key == b"store_id" => {
                if let Ok(id) = <[u8; 16]>::try_from(entry.value.as_slice()) {
                    self.store_id = Some(id);
                }
            }
            "vault" | "vault_days" => {
                let key = if entry.tree == "vault" {
                    KeyId::from_bytes(&entry.key)
                } else {
                    key_id_of_day_lane_key(&entry.key)
                };
                let (Some(key), Some(wrapped)) = (key, wrapped_in(&entry.value)) else {
                    return;
                };
                // The tape keeps each distinct entry once, so each copy
                // arrives once (a backup's copies were on the tape already).
                self.wrapped_read += 1;
                self.copies.push(Copy {
                    key,
                    wrapped,
                    tried: false,
                    opened: None,
                });
            }
            "data" => {
                let (Some(prefix), Ok(envelope)) =
                    (entry.key.get(..18), Envelope::parse(&entry.value))
                else {
                    return;
                };
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&prefix[..16]);
                let key = KeyId {
                    subject: SubjectTag(tag),
                    class: u16::from_be_bytes([prefix[16], prefix[17]]),
                    bucket: envelope.key_ref().bucket,
                    version: envelope.key_ref().version,
                };
                self.envelopes_read += 1;
                self.sealed.entry(key).or_default().push(Sealed {
                    tree_key: entry.key,
                    value: entry.value,
                    tried: Vec::new(),
                    found: None,
                });
            }
            _ => {}
        }
    }

    /// Reads what is new on the tape, then returns every plaintext that key
    /// material reachable from `provider` decrypts.
    pub(crate) fn run(
        &mut self,
        tape: &Tape,
        provider: &dyn KeyProvider,
        now: Timestamp,
    ) -> Result<Vec<Recovered>, String> {
        for entry in tape.take() {
            self.ingest(entry);
        }
        for copy in &self.copies {
            self.first_seen.entry(copy.wrapped.epoch().0).or_insert(now);
        }
        let live: BTreeSet<EpochId> = provider
            .live_epochs()
            .map_err(|e| format!("list live epochs: {e}"))?
            .into_iter()
            .collect();
        self.live = live.iter().map(|e| e.0).collect();
        // Each copy is tried once, when first seen with its epoch live: a
        // copy that did not open then never will. Copies under destroyed
        // epochs are dropped: epoch ids are never reused.
        self.copies
            .retain(|copy| live.contains(&copy.wrapped.epoch()));
        let mut reachable: HashMap<KeyId, BTreeMap<usize, BTreeSet<u32>>> = HashMap::new();
        for copy in &mut self.copies {
            if !copy.tried {
                copy.tried = true;
                self.attempts += 1;
                if let Ok(key) = provider.unwrap(&WrapContext::DataKey(copy.key), &copy.wrapped) {
                    let materials = self.ciphers.entry(copy.key).or_default();
                    let material = *key.expose_secret();
                    copy.opened = Some(
                        materials
                            .iter()
                            .position(|(m, _)| *m == material)
                            .unwrap_or_else(|| {
                                materials.push((material, ValueCipher::new(&key)));
                                materials.len() - 1
                            }),
                    );
                }
            }
            if let Some(material) = copy.opened {
                reachable
                    .entry(copy.key)
                    .or_default()
                    .entry(material)
                    .or_default()
                    .insert(copy.wrapped.epoch().0);
            }
        }
        let Some(store_id) = self.store_id else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (key, materials) in reachable {
            let (Some(ciphers), Some(sealed)) = (self.ciphers.get(&key), self.sealed.get_mut(&key))
            else {
                continue;
            };
            for s in sealed.iter_mut() {
                for &material in materials.keys() {
                    if s.found.is_some() || s.tried.contains(&material) {
                        continue;
                    }
                    s.tried.push(material);
                    self.attempts += 1;
                    let mut aad = store_id.to_vec();
                    aad.extend_from_slice(&s.tree_key);
                    let write = Envelope::parse(&s.value)
                        .ok()
                        .zip(ciphers.get(material))
                        .and_then(|(e, (_, cipher))| e.open(cipher, &aad).ok())
                        .and_then(|plain| write_id_in(&plain));
                    s.found = write.map(|w| (material, w));
                }
                // Recovered only while the material that opens it is
                // itself reachable.
                if let Some((material, write)) = s.found
                    && let Some(epochs) = materials.get(&material)
                {
                    out.push(Recovered {
                        write,
                        key,
                        epochs: epochs.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}
