//! Certificates of erasure, after the sample certificate of sanitization in
//! NIST SP 800-88 Rev. 1 (appendix G): what was erased, how, when, which
//! keys, and what was verified. Built from the erasure ledger, the vault's
//! tombstones, the remaining ciphertext, the key provider's epochs and the
//! audit chain; it holds subject tags, never subject ids.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;

use jiff::Timestamp;
use shredkv_crypto::{Envelope, SubjectTag};

use super::Db;
use crate::audit::{AuditEvent, AuditHead};
use crate::error::{Error, Result};
use crate::ledger::{self, ALL_CLASSES, LedgerEntry};
use crate::storage::{Tree, scan_prefix};
use crate::vault::{KeyState, VaultEntry};

/// One erased scope in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CertifiedErasure {
    /// The class, or `None` for every class of the subject.
    pub class: Option<String>,
    /// When the keys were destroyed.
    pub erased_at: Timestamp,
    /// Why.
    pub reason: String,
    /// Data keys destroyed by that erasure.
    pub keys_destroyed: u32,
    /// The epoch current at the erasure: purged once it is destroyed.
    pub epoch: u32,
    /// When the class was registered again on its own
    /// ([`Db::re_register_class`]): data written since is new, under new
    /// keys, and not covered by this erasure.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub reopened_at: Option<Timestamp>,
}

/// Whether the purge of a subject's erased data has completed.
///
/// In serde formats: `{"purge_status": "complete"}`, or
/// `{"purge_status": "pending", "pending": [steps], "purge_due_by": time}`;
/// a [`Certificate`] carries these fields at its top level.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "purge_status", rename_all = "snake_case")
)]
pub enum PurgeStatus {
    /// Every key is destroyed, every epoch that wrapped one is destroyed, and
    /// no dead ciphertext remains.
    Complete,
    /// What is still pending, and the latest time it is due by.
    Pending {
        /// Each pending step, as a sentence.
        #[cfg_attr(feature = "serde", serde(rename = "pending"))]
        steps: Vec<String>,
        /// When the purge must complete (erasure + purge window).
        #[cfg_attr(feature = "serde", serde(rename = "purge_due_by"))]
        due_by: Timestamp,
    },
}

/// A certificate of erasure for one subject.
///
/// In serde formats the fields keep their names, except `subject`, written
/// `subject_tag`, and `status`, whose fields are inlined (see
/// [`PurgeStatus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Certificate {
    /// The subject (by tag).
    #[cfg_attr(feature = "serde", serde(rename = "subject_tag"))]
    pub subject: SubjectTag,
    /// The store (hex id).
    pub store_id: String,
    /// The tool and version that issued the certificate.
    pub tool: String,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// The sanitization method.
    pub method: String,
    /// Where the epoch keys are held.
    pub key_provider: String,
    /// The erasures recorded for the subject, oldest first.
    pub erasures: Vec<CertifiedErasure>,
    /// Data keys of the subject destroyed in all (tombstones in the vault).
    pub keys_destroyed: u64,
    /// Data keys of the erased scopes still live (must be 0).
    pub keys_live_in_erased_scopes: u64,
    /// Dead records of the subject still stored, awaiting compaction.
    pub dead_records_remaining: u64,
    /// Epochs at or before the erasure still live in the key provider.
    pub epochs_still_live: Vec<u32>,
    /// When the subject's erasure was requested (first erasure recorded).
    pub requested_at: Option<Timestamp>,
    /// The audit chain's head when the certificate was issued: a later
    /// chain must still hold this entry with this hash.
    pub audit_head: AuditHead,
    /// Checks performed and their outcome.
    pub verification: Vec<String>,
    /// Purge completion.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub status: PurgeStatus,
}

impl Db {
    /// Issues a certificate of erasure for `subject_id`. Before the purge has
    /// completed it says what is still pending and by when.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::Classes;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "message_content", b"m1", b"hello")?;
    /// db.shred("acct-42", Classes::All)?;
    /// let certificate = db.certificate("acct-42")?;
    /// assert_eq!(certificate.erasures.len(), 1);
    /// // Pending until the purge window has passed (old epochs destroyed).
    /// assert!(!certificate.is_complete());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`] if the subject was never registered;
    /// [`Error::InvalidArgument`] if nothing of it was ever erased;
    /// damaged records; storage and key provider failures.
    pub fn certificate(&self, subject_id: &str) -> Result<Certificate> {
        self.certificate_for(self.tag_of(subject_id)?)
    }

    /// [`Db::certificate`] by subject tag (for operators who hold only tags).
    ///
    /// # Errors
    /// As [`Db::certificate`].
    pub fn certificate_for(&self, tag: SubjectTag) -> Result<Certificate> {
        let inner = &self.inner;
        let storage = inner.storage.as_ref();
        let mut erasures = Vec::new();
        // When each scope (ALL_CLASSES: the whole subject) was erased, for
        // the erasures that still stand: a class registered again on its own
        // holds new data only.
        let mut standing: HashMap<u16, i64> = HashMap::new();
        let mut max_epoch = 0u32;
        let mut latest = None::<i64>;
        scan_prefix(storage, Tree::Ledger, &tag.0, &mut |k, v| {
            if let (Some((_, class)), Ok(entry)) = (ledger::split_key(k), LedgerEntry::decode(v)) {
                if entry.reopened_at.is_none() {
                    standing.insert(class, entry.erased_at);
                }
                max_epoch = max_epoch.max(entry.epoch);
                latest = Some(latest.map_or(entry.erased_at, |l: i64| l.max(entry.erased_at)));
                erasures.push(CertifiedErasure {
                    class: (class != ALL_CLASSES).then(|| inner.class_name(class)),
                    erased_at: Timestamp::from_second(entry.erased_at).unwrap_or(Timestamp::MAX),
                    reason: entry.reason.name().to_string(),
                    keys_destroyed: entry.keys_destroyed,
                    epoch: entry.epoch,
                    reopened_at: entry
                        .reopened_at
                        .map(|at| Timestamp::from_second(at).unwrap_or(Timestamp::MAX)),
                });
            }
            ControlFlow::Continue(())
        })?;
        if erasures.is_empty() && inner.subject_info(&tag)?.is_none() {
            return Err(Error::UnknownSubject { subject: tag });
        }
        if erasures.is_empty() {
            return Err(Error::InvalidArgument {
                what: "subject",
                detail: format!(
                    "nothing of subject {tag} has been erased; there is nothing to certify"
                ),
            });
        }
        erasures.sort_by_key(|e| e.erased_at);
        // The erasure a key of `class` made at `created_at` must have
        // destroyed: a key made later is new data (the subject or class was
        // registered again since), not residue. A key made in the erasure's
        // own second counts as residue: the certificate then stays pending
        // rather than certify too early.
        let erased_before = |class: u16, created_at: i64| {
            [standing.get(&class), standing.get(&ALL_CLASSES)]
                .into_iter()
                .flatten()
                .any(|erased_at| created_at <= *erased_at)
        };

        let (mut destroyed, mut live) = (0u64, 0u64);
        crate::vault::layout::scan_prefix(storage, &tag.0, &mut |id, slot| {
            if let Ok(entry) = VaultEntry::decode(&slot.value) {
                match entry.state {
                    KeyState::Destroyed => destroyed += 1,
                    KeyState::Active if erased_before(id.class, entry.created_at) => live += 1,
                    KeyState::Active => {}
                }
            }
            ControlFlow::Continue(())
        })?;
        let mut dead = 0u64;
        scan_prefix(storage, Tree::Data, &tag.0, &mut |k, v| {
            let class = k
                .get(16..18)
                .and_then(|c| c.try_into().ok())
                .map(u16::from_be_bytes);
            let Some(class) = class else {
                return ControlFlow::Continue(());
            };
            let Ok(envelope) = Envelope::parse(v) else {
                // Damaged: nothing names its key; in an erased scope it is
                // the erasure's residue (verify reports the damage).
                if standing.contains_key(&class) || standing.contains_key(&ALL_CLASSES) {
                    dead += 1;
                }
                return ControlFlow::Continue(());
            };
            let id = crate::records::sealing_key(tag, class, &envelope);
            // A record under a live key is residue only if an erasure should
            // have destroyed that key; under a dead key, if the erasures
            // killed it (keys of live classes that expire or are re-keyed
            // later are swept on their own schedule).
            let residue = match inner.vault.read_entry(&id) {
                Ok(Some(e)) if e.state == KeyState::Active => erased_before(class, e.created_at),
                Ok(Some(e)) => {
                    erased_before(class, e.created_at)
                        || e.destroyed_at.is_none_or(|d| latest.is_none_or(|l| d <= l))
                }
                _ => true,
            };
            if residue {
                dead += 1;
            }
            ControlFlow::Continue(())
        })?;
        let epochs_still_live: Vec<u32> = inner
            .vault
            .provider()
            .live_epochs()?
            .into_iter()
            .map(|e| e.0)
            .filter(|e| *e <= max_epoch)
            .collect();
        let chain = self.verify_audit()?;
        let audited = self
            .audit_entries(1, usize::MAX)?
            .into_iter()
            .filter(|e| e.subject == Some(tag) && e.event == AuditEvent::KeysDestroyed)
            .count();

        let mut verification = vec![
            format!(
                "erasure ledger: {} erasure(s) recorded for the subject",
                erasures.len()
            ),
            format!(
                "vault: {destroyed} key(s) of the subject are tombstones without key material; {live} live key(s) in erased scopes"
            ),
            format!("data: {dead} dead record(s) of the subject still stored"),
            format!(
                "key provider ({}): epochs at or before epoch {max_epoch} still live: {}",
                inner.vault.provider().describe(),
                if epochs_still_live.is_empty() {
                    "none".to_string()
                } else {
                    format!("{epochs_still_live:?}")
                }
            ),
            format!(
                "audit: {audited} key-destruction entr(ies) for the subject; chain of {} entries ({}), head {}, {}; {}",
                chain.entries,
                match chain.keyed_from {
                    Some(1) => "every entry keyed".to_string(),
                    Some(from) => format!("keyed from entry {from}"),
                    None => "plain hashes, not keyed".to_string(),
                },
                chain.head,
                match inner.vault.provider().anchor() {
                    Ok(Some(anchor)) => format!(
                        "anchored by the key provider at entry {} (generation {})",
                        anchor.seq, anchor.generation
                    ),
                    Ok(None) => "not anchored (the key provider keeps no anchor)".to_string(),
                    Err(err) => format!("anchor unreadable: {err}"),
                },
                if chain.breaks.is_empty() {
                    "intact".to_string()
                } else {
                    format!(
                        "BROKEN: {}",
                        chain
                            .breaks
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            ),
        ];
        if erasures.iter().any(|e| e.class.is_none()) {
            verification.push("subject state: erased; writes refused until re-registration".into());
        }
        let mut steps = Vec::new();
        if live > 0 {
            steps.push(format!("{live} key(s) of erased scopes still live"));
        }
        // A debt for one of the subject's keys means copies of it still open
        // through its bottom node's current generation (design.md, "The key
        // tree").
        if inner.node_debt_pending_for(&tag)? {
            steps.push(
                "the key tree nodes above the destroyed keys await their re-key by the next compaction pass"
                    .to_string(),
            );
        }
        if !epochs_still_live.is_empty() {
            steps.push(format!("epoch(s) {epochs_still_live:?} still hold wrapped copies; destroyed by compaction after their retention wait"));
        }
        if dead > 0 {
            steps.push(format!("{dead} dead record(s) await removal by compaction"));
        }
        let window = inner.timeline.min_window;
        let status = if steps.is_empty() && chain.breaks.is_empty() {
            PurgeStatus::Complete
        } else {
            if !chain.breaks.is_empty() {
                steps.push(
                    "the audit chain is broken: investigate before relying on this certificate"
                        .into(),
                );
            }
            PurgeStatus::Pending {
                steps,
                due_by: Timestamp::from_second(latest.unwrap_or(0).saturating_add(window))
                    .unwrap_or(Timestamp::MAX),
            }
        };
        Ok(Certificate {
            subject: tag,
            store_id: shredkv_crypto::hex::encode(&inner.store_id),
            tool: format!("shredkv {}", env!("CARGO_PKG_VERSION")),
            issued_at: inner.clock.now(),
            method: "Cryptographic erase (NIST SP 800-88 Rev. 1, purge): the AES-256-GCM data keys of the erased scopes are destroyed in the vault, and every epoch key that ever wrapped them is destroyed by the key provider, so every stored copy of the ciphertext, including backend log remnants and backups, is undecryptable".into(),
            key_provider: inner.vault.provider().describe(),
            erasures: erasures.clone(),
            keys_destroyed: destroyed,
            keys_live_in_erased_scopes: live,
            dead_records_remaining: dead,
            epochs_still_live,
            requested_at: erasures.first().map(|e| e.erased_at),
            audit_head: chain.head,
            verification,
            status,
        })
    }
}

impl Certificate {
    /// Whether the purge has completed.
    pub fn is_complete(&self) -> bool {
        self.status == PurgeStatus::Complete
    }
}

impl fmt::Display for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "CERTIFICATE OF ERASURE (after NIST SP 800-88 Rev. 1, appendix G)"
        )?;
        writeln!(f, "  subject tag     {}", self.subject)?;
        writeln!(f, "  store           {}", self.store_id)?;
        writeln!(f, "  issued          {} by {}", self.issued_at, self.tool)?;
        writeln!(f, "  key provider    {}", self.key_provider)?;
        writeln!(f, "  method          {}", self.method)?;
        writeln!(f, "  erasures")?;
        for e in &self.erasures {
            writeln!(
                f,
                "    {}  {:<24} {:>5} keys  epoch {:<4} {}",
                e.erased_at,
                e.class.as_deref().unwrap_or("* (every class)"),
                e.keys_destroyed,
                e.epoch,
                e.reason
            )?;
            if let Some(at) = e.reopened_at {
                writeln!(
                    f,
                    "      class registered again at {at}: data written since is new, not covered"
                )?;
            }
        }
        writeln!(f, "  audit head      {}", self.audit_head)?;
        writeln!(f, "  verification")?;
        for line in &self.verification {
            writeln!(f, "    - {line}")?;
        }
        match &self.status {
            PurgeStatus::Complete => writeln!(f, "  purge           COMPLETE"),
            PurgeStatus::Pending { steps, due_by } => {
                writeln!(f, "  purge           PENDING (due by {due_by})")?;
                for step in steps {
                    writeln!(f, "    - {step}")?;
                }
                Ok(())
            }
        }
    }
}
