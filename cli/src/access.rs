//! The store a command operates: opened by this process, or live in an
//! application that serves it on its admin socket.
//!
//! [`StoreAccess`] has the operations the commands need; [`Db`] implements
//! it directly and [`LiveStore`] through [`AdminClient`], so each command's
//! formatting is written once and prints the same either way.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::Result;
use jiff::Timestamp;
use shredkv::admin::protocol::Request;
use shredkv::admin::{AdminClient, ExportEvent, ExportSummary, ExportedRecord};
use shredkv::{
    AuditEntry, Backend, BackupReport, Certificate, ChainReport, Classes, CompactionReport, Db,
    EpochReport, ErasureReason, Hold, IntegrityReport, Policy, PutOptions, Receipt, Record,
    Scheduled, Stats, SubjectInfo, SubjectTag,
};

/// An engine result (commands match some of its errors).
type DbResult<T> = shredkv::Result<T>;

/// What the commands do to a store.
pub(crate) trait StoreAccess {
    /// The store directory.
    fn path(&self) -> PathBuf;
    /// The store's backend.
    fn backend(&self) -> Backend;
    /// Whether the store is operated through an application's admin socket.
    fn is_live(&self) -> bool;
    /// The store clock.
    fn now(&self) -> DbResult<Timestamp>;
    /// A subject's tag.
    fn subject_tag(&self, subject: &str) -> DbResult<SubjectTag>;
    /// `Db::stats`.
    fn stats(&self) -> DbResult<Stats>;
    /// `Db::policy`: the policy in force.
    fn policy(&self) -> DbResult<Policy>;
    /// `Db::subjects`.
    fn subjects(&self) -> DbResult<Vec<SubjectInfo>>;
    /// `Db::subject`.
    fn subject(&self, subject: &str) -> DbResult<Option<SubjectInfo>>;
    /// `Db::end_users_of`.
    fn end_users_of(&self, account: &SubjectTag) -> DbResult<Vec<SubjectTag>>;
    /// `Db::holds`.
    fn holds(&self) -> DbResult<Vec<Hold>>;
    /// `Db::get_record`.
    fn get_record(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<Option<Record>>;
    /// `Db::put_with`.
    fn put(&self, subject: &str, class: &str, record: Record) -> DbResult<()>;
    /// `Db::register_account`.
    fn register_account(&self, subject: &str) -> DbResult<SubjectTag>;
    /// `Db::register_end_user`.
    fn register_end_user(&self, subject: &str, account: &str) -> DbResult<SubjectTag>;
    /// `Db::delete`.
    fn delete(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<bool>;
    /// `shredkv::admin::export_each`: records to `record`, subjects done
    /// (of all) to `progress`.
    fn export(
        &self,
        subject: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
        record: &mut dyn FnMut(ExportedRecord) -> Result<()>,
    ) -> Result<ExportSummary>;
    /// `Db::shred`; every class when `classes` is empty.
    fn shred(&self, subject: &str, classes: &[String]) -> DbResult<Receipt>;
    /// `Db::certificate`.
    fn certificate(&self, subject: &str) -> DbResult<Certificate>;
    /// `Db::restrict`.
    fn restrict(&self, subject: &str) -> DbResult<()>;
    /// `Db::lift_restriction`.
    fn lift_restriction(&self, subject: &str) -> DbResult<()>;
    /// `Db::re_register`, or `Db::re_register_class` for one class.
    fn re_register(&self, subject: &str, class: Option<&str>) -> DbResult<()>;
    /// `Db::place_hold`.
    fn place_hold(&self, subject: &str, class: Option<&str>, reason: &str) -> DbResult<()>;
    /// `Db::release_hold`.
    fn release_hold(&self, subject: &str, class: Option<&str>) -> DbResult<bool>;
    /// `Db::close_account`.
    fn close_account(&self, account: &str) -> DbResult<Vec<Scheduled>>;
    /// `Db::opt_out_of_marketing`.
    fn opt_out(&self, subject: &str) -> DbResult<Vec<Scheduled>>;
    /// `Db::release`.
    fn release_data(&self, subject: &str, class: &str) -> DbResult<Scheduled>;
    /// `Db::request_deletion` (a minor's account when `underage`).
    fn request_deletion(&self, subject: &str, underage: bool) -> DbResult<Receipt>;
    /// `Db::compact_with`.
    fn compact(&self, budget: usize, progress: &mut dyn FnMut(u64)) -> DbResult<CompactionReport>;
    /// `Db::rotate_epoch`.
    fn rotate_epoch(&self) -> DbResult<EpochReport>;
    /// `Db::verify_with`.
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> DbResult<IntegrityReport>;
    /// `Db::audit_tail`.
    fn audit_tail(&self, entries: usize) -> DbResult<Vec<AuditEntry>>;
    /// `Db::class_name`.
    fn class_name(&self, number: u16) -> DbResult<Option<String>>;
    /// `Db::verify_audit`.
    fn verify_audit(&self) -> DbResult<ChainReport>;
    /// `Db::backup_with` (live: written by the application, at an absolute
    /// path).
    fn backup(&self, dir: &Path, progress: &mut dyn FnMut(u64)) -> DbResult<BackupReport>;
    /// `Db::export_erasure_log` (live: as `backup`).
    fn export_erasure_log(&self, file: &Path) -> DbResult<u64>;
}

impl StoreAccess for Db {
    fn path(&self) -> PathBuf {
        Db::path(self).to_path_buf()
    }
    fn backend(&self) -> Backend {
        Db::backend(self)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn now(&self) -> DbResult<Timestamp> {
        Ok(Db::now(self))
    }
    fn subject_tag(&self, subject: &str) -> DbResult<SubjectTag> {
        Ok(Db::subject_tag(self, subject))
    }
    fn stats(&self) -> DbResult<Stats> {
        Db::stats(self)
    }
    fn policy(&self) -> DbResult<Policy> {
        Ok(Db::policy(self).clone())
    }
    fn subjects(&self) -> DbResult<Vec<SubjectInfo>> {
        Db::subjects(self)
    }
    fn subject(&self, subject: &str) -> DbResult<Option<SubjectInfo>> {
        Db::subject(self, subject)
    }
    fn end_users_of(&self, account: &SubjectTag) -> DbResult<Vec<SubjectTag>> {
        Db::end_users_of(self, account)
    }
    fn holds(&self) -> DbResult<Vec<Hold>> {
        Db::holds(self)
    }
    fn get_record(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<Option<Record>> {
        Db::get_record(self, subject, class, key)
    }
    fn put(&self, subject: &str, class: &str, record: Record) -> DbResult<()> {
        Db::put_with(
            self,
            subject,
            class,
            &record.key,
            &record.value,
            PutOptions {
                expires_at: record.expires_at,
            },
        )
    }
    fn register_account(&self, subject: &str) -> DbResult<SubjectTag> {
        Db::register_account(self, subject)
    }
    fn register_end_user(&self, subject: &str, account: &str) -> DbResult<SubjectTag> {
        Db::register_end_user(self, subject, account)
    }
    fn delete(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<bool> {
        Db::delete(self, subject, class, key)
    }
    fn export(
        &self,
        subject: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
        record: &mut dyn FnMut(ExportedRecord) -> Result<()>,
    ) -> Result<ExportSummary> {
        shredkv::admin::export_each(self, subject, &mut |event| match event {
            ExportEvent::Record(one) => record(one),
            ExportEvent::Progress { done, total } => {
                progress(done, total);
                Ok(())
            }
        })
    }
    fn shred(&self, subject: &str, classes: &[String]) -> DbResult<Receipt> {
        let names: Vec<&str> = classes.iter().map(String::as_str).collect();
        let classes = if names.is_empty() {
            Classes::All
        } else {
            Classes::Only(&names)
        };
        Db::shred(self, subject, classes)
    }
    fn certificate(&self, subject: &str) -> DbResult<Certificate> {
        Db::certificate(self, subject)
    }
    fn restrict(&self, subject: &str) -> DbResult<()> {
        Db::restrict(self, subject)
    }
    fn lift_restriction(&self, subject: &str) -> DbResult<()> {
        Db::lift_restriction(self, subject)
    }
    fn re_register(&self, subject: &str, class: Option<&str>) -> DbResult<()> {
        match class {
            Some(class) => Db::re_register_class(self, subject, class),
            None => Db::re_register(self, subject),
        }
    }
    fn place_hold(&self, subject: &str, class: Option<&str>, reason: &str) -> DbResult<()> {
        Db::place_hold(self, subject, class, reason)
    }
    fn release_hold(&self, subject: &str, class: Option<&str>) -> DbResult<bool> {
        Db::release_hold(self, subject, class)
    }
    fn close_account(&self, account: &str) -> DbResult<Vec<Scheduled>> {
        Db::close_account(self, account)
    }
    fn opt_out(&self, subject: &str) -> DbResult<Vec<Scheduled>> {
        Db::opt_out_of_marketing(self, subject)
    }
    fn release_data(&self, subject: &str, class: &str) -> DbResult<Scheduled> {
        Db::release(self, subject, class)
    }
    fn request_deletion(&self, subject: &str, underage: bool) -> DbResult<Receipt> {
        let reason = if underage {
            ErasureReason::Underage
        } else {
            ErasureReason::DeletionRequest
        };
        Db::request_deletion(self, subject, reason)
    }
    fn compact(&self, budget: usize, progress: &mut dyn FnMut(u64)) -> DbResult<CompactionReport> {
        Db::compact_with(self, budget, progress)
    }
    fn rotate_epoch(&self) -> DbResult<EpochReport> {
        Db::rotate_epoch(self)
    }
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> DbResult<IntegrityReport> {
        Db::verify_with(self, progress)
    }
    fn audit_tail(&self, entries: usize) -> DbResult<Vec<AuditEntry>> {
        Db::audit_tail(self, entries)
    }
    fn class_name(&self, number: u16) -> DbResult<Option<String>> {
        Ok(Db::class_name(self, number))
    }
    fn verify_audit(&self) -> DbResult<ChainReport> {
        Db::verify_audit(self)
    }
    fn backup(&self, dir: &Path, progress: &mut dyn FnMut(u64)) -> DbResult<BackupReport> {
        Db::backup_with(self, dir, progress)
    }
    fn export_erasure_log(&self, file: &Path) -> DbResult<u64> {
        Db::export_erasure_log(self, file)
    }
}

/// A store held open by an application, operated through its admin socket.
#[derive(Debug)]
pub(crate) struct LiveStore {
    client: RefCell<AdminClient>,
}

impl LiveStore {
    /// Connects to the admin socket at `socket`.
    ///
    /// # Errors
    /// As [`AdminClient::connect`].
    pub(crate) fn connect(socket: &Path) -> DbResult<Self> {
        Ok(Self {
            client: RefCell::new(AdminClient::connect(socket)?),
        })
    }

    fn call<T: serde::de::DeserializeOwned>(&self, request: Request) -> DbResult<T> {
        self.client.borrow_mut().call(request)
    }

    fn call_with_progress<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
        progress: &mut dyn FnMut(u64),
    ) -> DbResult<T> {
        self.client
            .borrow_mut()
            .call_with_progress(request, &mut |done, _| progress(done))
    }
}

/// A path the application's process can use whatever its working directory.
fn absolute(path: &Path) -> DbResult<PathBuf> {
    std::path::absolute(path).map_err(|source| shredkv::Error::Io {
        action: "resolve the path",
        path: path.to_path_buf(),
        source,
    })
}

impl StoreAccess for LiveStore {
    fn path(&self) -> PathBuf {
        self.client.borrow().store_path().to_path_buf()
    }
    fn backend(&self) -> Backend {
        self.client.borrow().backend()
    }
    fn is_live(&self) -> bool {
        true
    }
    fn now(&self) -> DbResult<Timestamp> {
        self.call(Request::Now)
    }
    fn subject_tag(&self, subject: &str) -> DbResult<SubjectTag> {
        self.call(Request::SubjectTag {
            subject: subject.into(),
        })
    }
    fn stats(&self) -> DbResult<Stats> {
        self.call(Request::Stats)
    }
    fn policy(&self) -> DbResult<Policy> {
        let text: String = self.call(Request::Policy)?;
        Ok(Policy::from_toml_str(&text, "the live store's policy")?)
    }
    fn subjects(&self) -> DbResult<Vec<SubjectInfo>> {
        self.call(Request::Subjects)
    }
    fn subject(&self, subject: &str) -> DbResult<Option<SubjectInfo>> {
        self.call(Request::Subject {
            subject: subject.into(),
        })
    }
    fn end_users_of(&self, account: &SubjectTag) -> DbResult<Vec<SubjectTag>> {
        self.call(Request::EndUsersOf { account: *account })
    }
    fn holds(&self) -> DbResult<Vec<Hold>> {
        self.call(Request::Holds)
    }
    fn get_record(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<Option<Record>> {
        self.call(Request::GetRecord {
            subject: subject.into(),
            class: class.into(),
            key: key.to_vec(),
        })
    }
    fn put(&self, subject: &str, class: &str, record: Record) -> DbResult<()> {
        self.call(Request::Put {
            subject: subject.into(),
            class: class.into(),
            record,
        })
    }
    fn register_account(&self, subject: &str) -> DbResult<SubjectTag> {
        self.call(Request::RegisterAccount {
            subject: subject.into(),
        })
    }
    fn register_end_user(&self, subject: &str, account: &str) -> DbResult<SubjectTag> {
        self.call(Request::RegisterEndUser {
            subject: subject.into(),
            account: account.into(),
        })
    }
    fn delete(&self, subject: &str, class: &str, key: &[u8]) -> DbResult<bool> {
        self.call(Request::Delete {
            subject: subject.into(),
            class: class.into(),
            key: key.to_vec(),
        })
    }
    fn export(
        &self,
        subject: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
        record: &mut dyn FnMut(ExportedRecord) -> Result<()>,
    ) -> Result<ExportSummary> {
        self.client.borrow_mut().export(
            subject,
            &mut |done, total| progress(done, total.unwrap_or(done)),
            record,
        )
    }
    fn shred(&self, subject: &str, classes: &[String]) -> DbResult<Receipt> {
        self.call(Request::Shred {
            subject: subject.into(),
            classes: classes.to_vec(),
        })
    }
    fn certificate(&self, subject: &str) -> DbResult<Certificate> {
        self.call(Request::Certificate {
            subject: subject.into(),
        })
    }
    fn restrict(&self, subject: &str) -> DbResult<()> {
        self.call(Request::Restrict {
            subject: subject.into(),
        })
    }
    fn lift_restriction(&self, subject: &str) -> DbResult<()> {
        self.call(Request::LiftRestriction {
            subject: subject.into(),
        })
    }
    fn re_register(&self, subject: &str, class: Option<&str>) -> DbResult<()> {
        self.call(match class {
            Some(class) => Request::ReRegisterClass {
                subject: subject.into(),
                class: class.into(),
            },
            None => Request::ReRegister {
                subject: subject.into(),
            },
        })
    }
    fn place_hold(&self, subject: &str, class: Option<&str>, reason: &str) -> DbResult<()> {
        self.call(Request::PlaceHold {
            subject: subject.into(),
            class: class.map(str::to_string),
            reason: reason.into(),
        })
    }
    fn release_hold(&self, subject: &str, class: Option<&str>) -> DbResult<bool> {
        self.call(Request::ReleaseHold {
            subject: subject.into(),
            class: class.map(str::to_string),
        })
    }
    fn close_account(&self, account: &str) -> DbResult<Vec<Scheduled>> {
        self.call(Request::CloseAccount {
            account: account.into(),
        })
    }
    fn opt_out(&self, subject: &str) -> DbResult<Vec<Scheduled>> {
        self.call(Request::OptOut {
            subject: subject.into(),
        })
    }
    fn release_data(&self, subject: &str, class: &str) -> DbResult<Scheduled> {
        self.call(Request::ReleaseData {
            subject: subject.into(),
            class: class.into(),
        })
    }
    fn request_deletion(&self, subject: &str, underage: bool) -> DbResult<Receipt> {
        self.call(Request::RequestDeletion {
            subject: subject.into(),
            underage,
        })
    }
    fn compact(&self, budget: usize, progress: &mut dyn FnMut(u64)) -> DbResult<CompactionReport> {
        let budget = u64::try_from(budget).unwrap_or(u64::MAX);
        self.call_with_progress(Request::Compact { budget }, progress)
    }
    fn rotate_epoch(&self) -> DbResult<EpochReport> {
        self.call(Request::RotateEpoch)
    }
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> DbResult<IntegrityReport> {
        self.call_with_progress(Request::Verify, progress)
    }
    fn audit_tail(&self, entries: usize) -> DbResult<Vec<AuditEntry>> {
        self.call(Request::AuditTail {
            entries: u64::try_from(entries).unwrap_or(u64::MAX),
        })
    }
    fn class_name(&self, number: u16) -> DbResult<Option<String>> {
        self.call(Request::ClassName { number })
    }
    fn verify_audit(&self) -> DbResult<ChainReport> {
        self.call(Request::VerifyAudit)
    }
    fn backup(&self, dir: &Path, progress: &mut dyn FnMut(u64)) -> DbResult<BackupReport> {
        self.call_with_progress(
            Request::Backup {
                dir: absolute(dir)?,
            },
            progress,
        )
    }
    fn export_erasure_log(&self, file: &Path) -> DbResult<u64> {
        self.call(Request::ExportErasureLog {
            file: absolute(file)?,
        })
    }
}
