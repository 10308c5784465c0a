//! Events that start retention clocks (account closure, marketing opt-out,
//! manual release) and deletion requests.
//!
//! An event does not erase anything itself: it records when the clock
//! started and schedules each affected scope's erasure in the deadline index,
//! where compaction finds it when it is due. A deletion request erases at
//! once what the policy allows and answers with a receipt for the rest.

use jiff::Timestamp;
use shredkv_crypto::SubjectTag;

use crate::audit::{AuditEvent, PendingEntry};
use crate::db::{ClassEntry, Classes, Db, DbInner, Receipt, Retained};
use crate::error::{Error, Result};
use crate::ledger::ErasureReason;
use crate::retention::deadlines::{self, Due};
use crate::retention::{ClockStart, DeletionRule};
use crate::storage::{Durability, Tree, WriteBatch};
use crate::subjects::{self, SubjectInfo, SubjectKind, SubjectState};

/// One scope's erasure, scheduled by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Scheduled {
    /// The subject.
    pub subject: SubjectTag,
    /// The class.
    pub class: String,
    /// When compaction erases it (unless a legal hold stands then).
    pub erase_at: Timestamp,
}

/// Which clock an event starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    AccountClosure,
    MarketingOptOut,
}

impl DbInner {
    /// When `class` must be erased after `event` at `at`, if the event
    /// starts its clock.
    fn deadline_after(class: &ClassEntry, event: Event, at: Timestamp) -> Option<Timestamp> {
        let policy = &class.policy;
        match (event, policy.clock()) {
            (Event::AccountClosure, ClockStart::AccountClosure)
            | (Event::MarketingOptOut, ClockStart::MarketingOptOut) => policy.deadline(at),
            // "As long as you instruct, up until termination of your account."
            (Event::AccountClosure, ClockStart::Write) if policy.until_account_closure() => {
                Some(at)
            }
            _ => None,
        }
    }

    /// Schedules the erasure of every class `event` starts for `tag`.
    fn schedule(
        &self,
        batch: &mut WriteBatch,
        tag: &SubjectTag,
        event: Event,
        at: Timestamp,
        out: &mut Vec<Scheduled>,
    ) {
        for class in &self.classes {
            if let Some(deadline) = Self::deadline_after(class, event, at) {
                let due = Due::EraseScope(*tag, class.number);
                batch.put(
                    Tree::Deadlines,
                    deadlines::key(deadline.as_second(), &due),
                    deadlines::value(at.as_second()),
                );
                out.push(Scheduled {
                    subject: *tag,
                    class: class.policy.name().to_string(),
                    erase_at: deadline,
                });
            }
        }
    }

    /// Closes `tags` (an account and its end users) at `now`, durably and
    /// audited under `account`; `why` prefixes the audit detail. The caller
    /// holds the gate's write lock over `tags`. Returns what was scheduled.
    fn close_and_commit(
        &self,
        account: SubjectTag,
        tags: &[SubjectTag],
        now: Timestamp,
        why: &str,
    ) -> Result<Vec<Scheduled>> {
        let mut batch = WriteBatch::new();
        let mut scheduled = Vec::new();
        let updated = self.close_locked(tags, now, &mut batch, &mut scheduled)?;
        if updated.is_empty() {
            return Ok(scheduled);
        }
        let entry = PendingEntry::new(
            AuditEvent::AccountClosed,
            Some(account),
            None,
            format!(
                "{why}{} subjects closed; {} scopes scheduled for erasure",
                updated.len(),
                scheduled.len()
            ),
        );
        self.audit
            .commit(
                self.storage.as_ref(),
                batch,
                &[entry],
                now,
                Durability::Durable,
            )
            .inspect_err(|_| self.forget_after_failure(tags))?;
        for info in updated {
            self.cache_subject(info);
        }
        Ok(scheduled)
    }

    /// Marks `tags` closed at `now` and schedules their erasures. The caller
    /// holds the gate's write lock over `tags`. Already closed subjects keep
    /// their original closure (and deadlines).
    fn close_locked(
        &self,
        tags: &[SubjectTag],
        now: Timestamp,
        batch: &mut WriteBatch,
        out: &mut Vec<Scheduled>,
    ) -> Result<Vec<SubjectInfo>> {
        let mut updated = Vec::new();
        for tag in tags {
            let Some(info) = self.subject_info(tag)? else {
                continue;
            };
            if info.state == SubjectState::Erased || info.closed_at.is_some() {
                continue;
            }
            // Closing the account ends marketing consent too (D2): a
            // subject not yet opted out is opted out now, so its marketing
            // classes run their opt-out clock from the closure (and a policy
            // change re-derives that deadline from `opted_out_at`).
            let opting_out = info.opted_out_at.is_none();
            let closed = SubjectInfo {
                closed_at: Some(now),
                opted_out_at: info.opted_out_at.or(Some(now)),
                ..info
            };
            batch.put(Tree::Subjects, subjects::record_key(tag), closed.encode());
            self.schedule(batch, tag, Event::AccountClosure, now, out);
            if opting_out {
                self.schedule(batch, tag, Event::MarketingOptOut, now, out);
            }
            updated.push(closed);
        }
        Ok(updated)
    }
}

impl DbInner {
    /// Schedules the erasures of the clocks `after` records and `before`
    /// did not (a closure, an opt-out): a restore carrying the decisions the
    /// live store made after its backup. Returns how many scopes.
    pub(crate) fn schedule_new_clocks(
        &self,
        batch: &mut WriteBatch,
        before: &SubjectInfo,
        after: &SubjectInfo,
    ) -> usize {
        let mut out = Vec::new();
        if before.closed_at.is_none()
            && let Some(at) = after.closed_at
        {
            self.schedule(batch, &after.tag, Event::AccountClosure, at, &mut out);
        }
        if before.opted_out_at.is_none()
            && let Some(at) = after.opted_out_at
        {
            self.schedule(batch, &after.tag, Event::MarketingOptOut, at, &mut out);
        }
        out.len()
    }

    /// Schedules the erasure of a manually released class released at `at`
    /// (as [`Db::release`] does); nothing for a class the policy no longer
    /// has or that is not released manually.
    pub(crate) fn schedule_release(
        &self,
        batch: &mut WriteBatch,
        tag: &SubjectTag,
        class: u16,
        at: Timestamp,
    ) -> bool {
        let Some(entry) = self.class_by_number(class) else {
            return false;
        };
        if entry.policy.clock() != ClockStart::ManualRelease {
            return false;
        }
        let deadline = entry.policy.deadline(at).unwrap_or(at);
        batch.put(
            Tree::Deadlines,
            deadlines::key(deadline.as_second(), &Due::EraseScope(*tag, class)),
            deadlines::value(at.as_second()),
        );
        true
    }
}

impl DbInner {
    /// When a manually released class of a subject was released, if it was.
    pub(crate) fn released_at(&self, tag: &SubjectTag, class: u16) -> Result<Option<Timestamp>> {
        let Some(bytes) = self
            .storage
            .get(Tree::Subjects, &subjects::release_key(tag, class))?
        else {
            return Ok(None);
        };
        Ok(bytes
            .as_slice()
            .try_into()
            .ok()
            .map(i64::from_be_bytes)
            .and_then(|secs| Timestamp::from_second(secs).ok()))
    }

    /// Re-derives every event-driven erasure deadline from the subjects'
    /// recorded events under the current policy (after a policy change).
    /// Deadlines of manually released classes are kept. Returns how many
    /// scopes are scheduled.
    pub(crate) fn recompute_deadlines(&self, now: Timestamp) -> Result<u64> {
        let mut batch = WriteBatch::new();
        self.storage.scan(
            Tree::Deadlines,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            crate::storage::Order::Ascending,
            &mut |k, _| {
                if let Some((_, Due::EraseScope(_, class))) = deadlines::decode_key(k) {
                    let manual = self
                        .class_by_number(class)
                        .is_some_and(|c| c.policy.clock() == ClockStart::ManualRelease);
                    if !manual {
                        batch.remove(Tree::Deadlines, k);
                    }
                }
                std::ops::ControlFlow::Continue(())
            },
        )?;
        let mut scheduled = Vec::new();
        let mut subjects = Vec::new();
        crate::storage::scan_prefix(
            self.storage.as_ref(),
            Tree::Subjects,
            &[0x00],
            &mut |k, v| {
                if let Some(tag) = subjects::tag_of_record_key(k)
                    && let Ok(info) = SubjectInfo::decode(tag, v)
                {
                    subjects.push(info);
                }
                std::ops::ControlFlow::Continue(())
            },
        )?;
        for info in subjects.iter().filter(|i| i.state != SubjectState::Erased) {
            if let Some(closed) = info.closed_at {
                self.schedule(
                    &mut batch,
                    &info.tag,
                    Event::AccountClosure,
                    closed,
                    &mut scheduled,
                );
            }
            if let Some(opted_out) = info.opted_out_at {
                self.schedule(
                    &mut batch,
                    &info.tag,
                    Event::MarketingOptOut,
                    opted_out,
                    &mut scheduled,
                );
            }
        }
        let n = u64::try_from(scheduled.len()).unwrap_or(u64::MAX);
        let entry = PendingEntry::new(
            AuditEvent::PolicyApplied,
            None,
            None,
            format!("deadlines recomputed: {n} scopes scheduled"),
        );
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Durable,
        )?;
        Ok(n)
    }
}

impl Db {
    /// Closes an account: its end users close with it, and every class whose
    /// retention runs from closure (or lasts "until termination of the
    /// account") is scheduled for erasure; closing also ends marketing
    /// consent, so the marketing classes of subjects not yet opted out run
    /// their opt-out clock from now. From then on the account and its end
    /// users cannot be read or written ([`Error::Closed`]; an export still
    /// returns what is retained) and no end user can be registered under
    /// it. Closing again changes nothing.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "account_profile", b"email", b"a@example.com")?;
    /// // Starts the closure clocks: each class's erasure is scheduled, and returned.
    /// let scheduled = db.close_account("acct-42")?;
    /// assert!(scheduled.iter().any(|s| s.class == "account_profile"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`]; [`Error::SubjectConflict`] for an end user;
    /// [`Error::Erased`]; storage failures.
    pub fn close_account(&self, account_id: &str) -> Result<Vec<Scheduled>> {
        let inner = &self.inner;
        let tag = self.tag_of(account_id)?;
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        if info.kind != SubjectKind::Account {
            return Err(Error::SubjectConflict {
                subject: tag,
                detail: "is an end user; close its account instead".into(),
            });
        }
        if info.state == SubjectState::Erased {
            return Err(info.erased_error());
        }
        let (tags, _exclusive) = inner.lock_with_end_users(&tag, &info)?;
        inner.close_and_commit(tag, &tags, inner.clock.now(), "")
    }

    /// Records a marketing opt-out: classes whose clock is the opt-out are
    /// scheduled for erasure ("within three days").
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::Erased`], storage failures.
    pub fn opt_out_of_marketing(&self, subject_id: &str) -> Result<Vec<Scheduled>> {
        let inner = &self.inner;
        let tag = self.tag_of(subject_id)?;
        let _exclusive = inner.gate.write(&[tag]);
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        if info.state == SubjectState::Erased {
            return Err(info.erased_error());
        }
        let mut scheduled = Vec::new();
        if info.opted_out_at.is_some() {
            return Ok(scheduled);
        }
        let now = inner.clock.now();
        let mut batch = WriteBatch::new();
        let updated = SubjectInfo {
            opted_out_at: Some(now),
            ..info
        };
        batch.put(Tree::Subjects, subjects::record_key(&tag), updated.encode());
        inner.schedule(
            &mut batch,
            &tag,
            Event::MarketingOptOut,
            now,
            &mut scheduled,
        );
        let entry = PendingEntry::new(
            AuditEvent::MarketingOptOut,
            Some(tag),
            None,
            format!("{} scopes scheduled", scheduled.len()),
        );
        inner
            .audit
            .commit(
                inner.storage.as_ref(),
                batch,
                &[entry],
                now,
                Durability::Durable,
            )
            .inspect_err(|_| inner.forget_after_failure(&[tag]))?;
        inner.cache_subject(updated);
        Ok(scheduled)
    }

    /// Releases data kept "for such time as needed" (a `manual_release`
    /// class): it is scheduled for erasure after the class's retention (at
    /// once, by default).
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], [`Error::UnknownClass`],
    /// [`Error::PolicyViolation`] for a class not released manually, storage failures.
    pub fn release(&self, subject_id: &str, class: &str) -> Result<Scheduled> {
        let inner = &self.inner;
        let class = inner.class(class)?;
        if class.policy.clock() != ClockStart::ManualRelease {
            return Err(Error::PolicyViolation {
                class: class.policy.name().to_string(),
                detail: format!(
                    "its clock is `{:?}`, not a manual release",
                    class.policy.clock()
                ),
            });
        }
        let tag = self.tag_of(subject_id)?;
        let _exclusive = inner.gate.write(&[tag]);
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let now = inner.clock.now();
        let deadline = class.policy.deadline(now).unwrap_or(now);
        let mut batch = WriteBatch::new();
        let updated = SubjectInfo {
            released_at: Some(now),
            ..info
        };
        batch.put(Tree::Subjects, subjects::record_key(&tag), updated.encode());
        // Per class: receipts date a released class from its own release.
        batch.put(
            Tree::Subjects,
            subjects::release_key(&tag, class.number),
            now.as_second().to_be_bytes().to_vec(),
        );
        let due = Due::EraseScope(tag, class.number);
        batch.put(
            Tree::Deadlines,
            deadlines::key(deadline.as_second(), &due),
            deadlines::value(now.as_second()),
        );
        let entry = PendingEntry::new(
            AuditEvent::Released,
            Some(tag),
            Some(class.number),
            format!("erasure scheduled for {deadline}"),
        );
        inner
            .audit
            .commit(
                inner.storage.as_ref(),
                batch,
                &[entry],
                now,
                Durability::Durable,
            )
            .inspect_err(|_| inner.forget_after_failure(&[tag]))?;
        inner.cache_subject(updated);
        Ok(Scheduled {
            subject: tag,
            class: class.policy.name().to_string(),
            erase_at: deadline,
        })
    }

    /// A deletion request: erases at once every class the policy lets go on
    /// request (and, for an account, its end users'), keeps the classes the
    /// law requires until their deadline (closing the subject so those
    /// deadlines run), and answers with a receipt: what was erased, what is
    /// retained, until when and why. Legal holds are honoured and listed.
    ///
    /// With [`ErasureReason::Underage`], everything not under a legal hold is
    /// erased, retention obligations notwithstanding.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::ErasureReason;
    /// db.register_account("acct-42")?;
    /// db.put("acct-42", "message_content", b"m1", b"hello")?;
    /// db.put("acct-42", "invoices", b"inv-1", b"EUR 12.00")?;
    /// let receipt = db.request_deletion("acct-42", ErasureReason::DeletionRequest)?;
    /// // What the policy lets go is erased now; invoices are kept until their deadline.
    /// assert!(db.get("acct-42", "message_content", b"m1").is_err());
    /// assert!(receipt.retained.iter().any(|r| r.class == "invoices"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownSubject`], storage failures (then nothing was erased).
    pub fn request_deletion(&self, subject_id: &str, reason: ErasureReason) -> Result<Receipt> {
        let inner = &self.inner;
        let tag = self.tag_of(subject_id)?;
        if reason == ErasureReason::Underage {
            return self.erase(tag, Classes::All, reason);
        }
        let info = inner
            .subject_info(&tag)?
            .ok_or(Error::UnknownSubject { subject: tag })?;
        let now_classes: Vec<&ClassEntry> = inner
            .classes
            .iter()
            .filter(|c| c.policy.on_deletion_request() == DeletionRule::EraseNow)
            .collect();
        let kept: Vec<&ClassEntry> = inner
            .classes
            .iter()
            .filter(|c| c.policy.on_deletion_request() != DeletionRule::EraseNow)
            .collect();
        let (tags, _exclusive) = inner.lock_with_end_users(&tag, &info)?;
        // First start the clocks of what is kept (durably), then erase.
        inner.close_and_commit(tag, &tags, inner.clock.now(), "deletion request: ")?;
        let mut receipt = inner.erase_locked(tag, &tags, Some(&now_classes), reason)?;
        for t in &tags {
            let Some(info) = inner.subject_info(t)? else {
                continue;
            };
            if info.state == SubjectState::Erased {
                continue;
            }
            let holds = inner.holds_of(t)?;
            for class in &kept {
                if inner
                    .scope_erased_at(t, class.number, info.generation)?
                    .is_some()
                    || !inner.scope_held(t, class.number)?
                {
                    continue;
                }
                let (until, why) = match DbInner::hold_on(&holds, class.number) {
                    Some(hold) => (None, format!("legal hold: {hold}")),
                    None => {
                        let start = match class.policy.clock() {
                            ClockStart::AccountClosure => info.closed_at,
                            ClockStart::MarketingOptOut => info.opted_out_at,
                            ClockStart::ManualRelease => inner.released_at(t, class.number)?,
                            _ => None,
                        };
                        let until = start.and_then(|s| class.policy.deadline(s));
                        let why = match class.policy.clock() {
                            ClockStart::ManualRelease if until.is_none() => {
                                format!("{} (kept until released)", class.policy.legal_basis())
                            }
                            _ => class.policy.legal_basis().to_string(),
                        };
                        (until, why)
                    }
                };
                receipt.retained.push(Retained {
                    subject: *t,
                    class: class.policy.name().to_string(),
                    until,
                    reason: why,
                });
            }
        }
        Ok(receipt)
    }
}
