//! Reading a scope's records a page at a time: [`Db::scan_page`] with a
//! [`Cursor`] to resume from, and [`Db::records`], an iterator that reads
//! page by page. Memory stays bounded by the page, however large the scope.
//!
//! Ordered classes (`keys = "ordered"`) come in record-key order and take a
//! key range, a key prefix and the reverse order ([`ScanOptions`]); the
//! "latest N" of a time-ordered key layout is one reverse page. Blinded
//! classes come in an order with no meaning (their stored keys are keyed
//! hashes) and take none of these: a range over blinded keys would be a
//! range over hashes.
//!
//! Pages are not a snapshot: each page reads under the subject's shared
//! lock and sees every write completed before it; a record written or
//! deleted between two pages may or may not appear. An erasure is never
//! missed: the iterator hands out no record of its page once an erasure of
//! the subject (or its class) has returned, but ends with the error a new
//! read would get. A cursor stays valid across writes, erasures of other
//! subjects and reopening the store.

use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;
use shredkv_crypto::SubjectTag;

use super::class::{AsClass, OwnedClass};
use super::ops::{OpenScratch, ReadUnder};
use super::{ClassEntry, Db};
use crate::error::{Error, Result};
use crate::records::{self, Record, RecordRef};
use crate::retention::policy::KeyMode;
use crate::storage::{Order, Storage, Tree};
use crate::subjects;

/// Records read from the backend per internal page of [`Db::records`].
const ITER_PAGE: usize = 256;
/// Bytes reserved per entry when a page buffer is first used: a stored
/// entry of a 100-byte value (34-byte tree key, 162-byte envelope).
const TYPICAL_ENTRY: usize = 196;
/// The largest page [`Db::scan_page`] returns.
pub const MAX_PAGE: usize = 10_000;

/// Which records of a scope to read, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Record keys from this one on (inclusive). Ordered classes only.
    pub from: Option<Vec<u8>>,
    /// Record keys before this one (exclusive). Ordered classes only.
    pub until: Option<Vec<u8>>,
    /// Only record keys that start with these bytes. Ordered classes only.
    pub prefix: Option<Vec<u8>>,
    /// Largest key first. Ordered classes only.
    pub reverse: bool,
}

impl ScanOptions {
    /// Every record, in the class's order.
    pub fn all() -> Self {
        Self::default()
    }

    /// Records whose keys start with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    /// Records with keys in `from..until`.
    pub fn range(from: impl Into<Vec<u8>>, until: impl Into<Vec<u8>>) -> Self {
        Self {
            from: Some(from.into()),
            until: Some(until.into()),
            ..Self::default()
        }
    }

    /// The same selection, largest key first.
    #[must_use]
    pub fn reversed(mut self) -> Self {
        self.reverse = !self.reverse;
        self
    }

    fn narrows(&self) -> bool {
        self.from.is_some() || self.until.is_some() || self.prefix.is_some() || self.reverse
    }
}

/// Where a page ended: pass it to the next [`Db::scan_page`] call. Opaque;
/// its bytes ([`Cursor::as_bytes`]) can be handed to a client and back
/// ([`Cursor::from_bytes`]). For a blinded class it holds a keyed hash, never
/// a record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    /// The cursor's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A cursor from bytes [`Cursor::as_bytes`] gave.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
}

/// One page of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records, in scan order.
    pub records: Vec<Record>,
    /// Where to continue, or `None` if the scan is complete.
    pub next: Option<Cursor>,
}

fn check_page_size(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::InvalidArgument {
            what: "page size",
            detail: format!("{limit}; between 1 and {MAX_PAGE}"),
        });
    }
    Ok(())
}

/// The next key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The data-tree bounds of a selection within the scope `scope`.
fn bounds(scope: &[u8], options: &ScanOptions) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let within = |key: &[u8]| [scope, key].concat();
    let mut low = Bound::Included(scope.to_vec());
    let mut high = prefix_end(scope).map_or(Bound::Unbounded, Bound::Excluded);
    if let Some(prefix) = &options.prefix {
        low = Bound::Included(within(prefix));
        high = prefix_end(&within(prefix)).map_or(Bound::Unbounded, Bound::Excluded);
    }
    if let Some(from) = &options.from {
        let from = within(from);
        if matches!(&low, Bound::Included(l) if from > *l) {
            low = Bound::Included(from);
        }
    }
    if let Some(until) = &options.until {
        let until = within(until);
        if match &high {
            Bound::Excluded(h) => until < *h,
            _ => true,
        } {
            high = Bound::Excluded(until);
        }
    }
    (low, high)
}

impl Db {
    /// Up to `limit` records of `subject` in `class` (at most [`MAX_PAGE`]),
    /// after `after` (a cursor from the previous page; `None` to start).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// use shredkv::ScanOptions;
    /// db.register_account("acct-1")?;
    /// for n in 0..5u32 {
    ///     db.put("acct-1", "message_content", &n.to_be_bytes(), b"hello")?;
    /// }
    /// let mut after = None;
    /// let mut seen = 0;
    /// loop {
    ///     let page = db.scan_page("acct-1", "message_content", &ScanOptions::all(), after.as_ref(), 2)?;
    ///     seen += page.records.len();
    ///     match page.next {
    ///         Some(cursor) => after = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Db::get`]; [`Error::InvalidArgument`] for a range, prefix or
    /// reverse order on a blinded class, a `limit` of 0 or over
    /// [`MAX_PAGE`], or a cursor of another scope.
    pub fn scan_page(
        &self,
        subject: &str,
        class: impl AsClass,
        options: &ScanOptions,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let (page, _) = self.scan_page_under(subject, &class, options, after, limit)?;
        Ok(page)
    }

    /// [`Db::scan_page`], with the subject's tag and what the page was read
    /// under (for [`Records`], which hands the page out later).
    fn scan_page_under(
        &self,
        subject: &str,
        class: &impl AsClass,
        options: &ScanOptions,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Page, (SubjectTag, ReadUnder))> {
        check_page_size(limit)?;
        let inner = &self.inner;
        let class_entry = inner.resolve(class)?;
        if options.narrows() && class_entry.policy.keys() != KeyMode::Ordered {
            return Err(Error::InvalidArgument {
                what: "scan options",
                detail: format!(
                    "class `{}` blinds its record keys (keys = \"blinded\"), so its records have no key order: ranges, prefixes and reverse scans need a class with keys = \"ordered\"",
                    class_entry.policy.name()
                ),
            });
        }
        let tag = self.tag_of(subject)?;
        let (page, under) = self.page_of(tag, class_entry, options, after, limit)?;
        Ok((page, (tag, under)))
    }

    /// One page of the scope `tag` × `class_entry` (options already checked),
    /// and what it was read under.
    fn page_of(
        &self,
        tag: SubjectTag,
        class_entry: &ClassEntry,
        options: &ScanOptions,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Page, ReadUnder)> {
        let inner = &self.inner;
        let scope = records::scope_prefix(&tag, class_entry.number);
        let (mut low, mut high) = bounds(&scope, options);
        if let Some(cursor) = after {
            if !cursor.0.starts_with(&scope) {
                return Err(Error::InvalidArgument {
                    what: "cursor",
                    detail: "it was not made by a scan of this subject and class".into(),
                });
            }
            if options.reverse {
                high = Bound::Excluded(cursor.0.clone());
            } else {
                low = Bound::Excluded(cursor.0.clone());
            }
        }
        let order = if options.reverse {
            Order::Descending
        } else {
            Order::Ascending
        };
        let _shared = inner.gate.read(&[tag]);
        let mut under = inner.check_read(&tag, class_entry)?;
        let now = inner.now_secs();
        let mut records = Vec::new();
        let mut scratch = OpenScratch::noting_keys();
        let mut raw = RawPage::default();
        // Pages of raw entries until `limit` live records are found: expired
        // entries are skipped, so a raw page may yield fewer.
        let next = loop {
            let want = (limit - records.len()).min(ITER_PAGE);
            raw.read(
                inner.storage.as_ref(),
                Tree::Data,
                (as_ref(&low), as_ref(&high)),
                order,
                &scope,
                want,
            )?;
            for (k, v) in raw.entries() {
                if let Some(record) =
                    inner.open_record(&tag, class_entry, k, v, now, &mut scratch)?
                {
                    records.push(record);
                }
            }
            let Some(resume) = raw.last_key().map(<[u8]>::to_vec) else {
                break None;
            };
            if raw.len() < want {
                break None;
            }
            if records.len() >= limit {
                break Some(Cursor(resume));
            }
            if options.reverse {
                high = Bound::Excluded(resume);
            } else {
                low = Bound::Excluded(resume);
            }
        };
        under.opened_with(&mut scratch);
        Ok((Page { records, next }, under))
    }

    /// Every record of `subject` in `class` that `options` selects, read a
    /// page at a time: memory stays bounded however large the scope. Each
    /// item is a record or the error that ended the scan (after an error the
    /// iterator ends).
    ///
    /// ```
    /// use shredkv::{Config, Db, Policy, ScanOptions};
    /// // A class whose record keys carry no personal data may keep them in
    /// // order: here a big-endian send time, then a message number.
    /// let policy = Policy::from_toml_str(r#"
    ///     version = 1
    ///     [[class]]
    ///     name = "inbox"
    ///     role = "processor"
    ///     clock = "write"
    ///     max_customer_ttl = "1 year"
    ///     purge_window = "30 days"
    ///     on_deletion_request = "erase_now"
    ///     keys = "ordered"
    ///     legal_basis = "contract"
    ///     clause = "messages"
    /// "#, "inbox policy")?;
    /// # let dir = tempfile::tempdir()?;
    /// let config = Config::new(dir.path().join("store"))
    ///     .key_file(dir.path().join("keys"))
    ///     .policy(policy);
    /// let db = Db::open(config)?;
    /// db.register_account("acct-1")?;
    /// for (sent_at, n) in [(1_800_000_000u64, 1u32), (1_800_000_060, 2), (1_800_000_120, 3)] {
    ///     let key = [sent_at.to_be_bytes().as_slice(), &n.to_be_bytes()].concat();
    ///     db.put("acct-1", "inbox", &key, format!("message {n}").as_bytes())?;
    /// }
    /// // The latest two: the first two records of a reverse scan.
    /// let latest: Vec<_> = db
    ///     .records("acct-1", "inbox", ScanOptions::all().reversed())
    ///     .take(2)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(latest[0].value, b"message 3");
    /// assert_eq!(latest[1].value, b"message 2");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn records(&self, subject: &str, class: impl AsClass, options: ScanOptions) -> Records<'_> {
        Records {
            db: self,
            subject: subject.to_string(),
            class: OwnedClass::of(&class),
            options,
            buffered: Vec::new().into_iter(),
            read_under: None,
            next: None,
            done: false,
        }
    }
}

/// One page of a class across subjects ([`Db::scan_class_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPage {
    /// The records with the tag of the subject each belongs to, by subject
    /// tag, then in the class's order within a subject.
    pub records: Vec<(SubjectTag, Record)>,
    /// Where to continue, or `None` if every subject was read.
    pub next: Option<Cursor>,
}

impl Db {
    /// Up to `limit` records of `class` across every subject that may be
    /// read now (at most [`MAX_PAGE`]), after `after`: a purpose query
    /// ("every record kept for marketing") without an index of the
    /// application's own. Subjects that are erased, restricted, closed or
    /// past the class's deadline are skipped, as a read of each would be
    /// refused. Memory is bounded by the page; each subject's part is read
    /// under its shared lock (not a snapshot across subjects), and a subject
    /// erased (restricted, closed) after its part was read, before the page
    /// is returned, is left out: the page then comes short of `limit`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = shredkv::Config::new(dir.path().join("store"))
    /// #     .key_file(dir.path().join("keys")).maintenance_every(None);
    /// # let db = shredkv::Db::open(config)?;
    /// for account in ["acct-1", "acct-2", "acct-3"] {
    ///     db.register_account(account)?;
    ///     db.put(account, "marketing_contacts", b"newsletter", b"weekly")?;
    /// }
    /// db.restrict("acct-2")?; // kept, not used: not in the query
    /// let page = db.scan_class_page("marketing_contacts", None, 100)?;
    /// assert_eq!(page.records.len(), 2);
    /// assert!(page.next.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// An unknown class, a `limit` of 0 or over [`MAX_PAGE`], a cursor of
    /// another class; integrity, storage and key provider failures.
    pub fn scan_class_page(
        &self,
        class: impl AsClass,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<ClassPage> {
        check_page_size(limit)?;
        let inner = &self.inner;
        let class_entry = inner.resolve(&class)?;
        // A class cursor: WITHIN ‖ data key (resume inside that subject's
        // scope) or AFTER ‖ scope prefix (resume with the next subject).
        const WITHIN: u8 = 0;
        const AFTER: u8 = 1;
        let refused = || Error::InvalidArgument {
            what: "cursor",
            detail: "it was not made by a scan of this class".into(),
        };
        let resume: Option<(SubjectTag, Option<Cursor>)> = match after {
            Some(cursor) => {
                let (kind, rest) = cursor.0.split_first().ok_or_else(refused)?;
                let tag = rest
                    .get(..16)
                    .and_then(|t| <[u8; 16]>::try_from(t).ok())
                    .map(SubjectTag)
                    .ok_or_else(refused)?;
                let scope = records::scope_prefix(&tag, class_entry.number);
                match *kind {
                    WITHIN if rest.starts_with(&scope) && rest.len() > scope.len() => {
                        Some((tag, Some(Cursor(rest.to_vec()))))
                    }
                    AFTER if rest == scope => Some((tag, None)),
                    _ => return Err(refused()),
                }
            }
            None => None,
        };
        let mut out = Vec::new();
        // What each subject's part was read under, checked again before the
        // page is returned.
        let mut reads: Vec<(SubjectTag, ReadUnder)> = Vec::new();
        let mut start = match &resume {
            Some((tag, Some(_))) => Bound::Included(subjects::record_key(tag).to_vec()),
            Some((tag, None)) => Bound::Excluded(subjects::record_key(tag).to_vec()),
            None => Bound::Included(subjects::record_key(&SubjectTag([0; 16])).to_vec()),
        };
        loop {
            // A page of subject tags (record space of the subjects tree).
            let mut tags = Vec::new();
            inner.storage.scan(
                Tree::Subjects,
                as_ref(&start),
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, _| match subjects::tag_of_record_key(k) {
                    Some(tag) => {
                        tags.push(tag);
                        if tags.len() >= ITER_PAGE {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    None => ControlFlow::Break(()),
                },
            )?;
            let Some(last) = tags.last() else {
                return self.class_page_checked(class_entry, out, &mut reads, None);
            };
            start = Bound::Excluded(subjects::record_key(last).to_vec());
            let more_subjects = tags.len() >= ITER_PAGE;
            for tag in tags {
                let mut after = resume
                    .as_ref()
                    .filter(|(resumed, _)| *resumed == tag)
                    .and_then(|(_, cursor)| cursor.clone());
                loop {
                    let want = limit - out.len();
                    // A subject a read would refuse is skipped; damage and
                    // backend failures are not (they end the scan, reported).
                    let page = match self.page_of(
                        tag,
                        class_entry,
                        &ScanOptions::all(),
                        after.as_ref(),
                        want,
                    ) {
                        Ok((page, under)) => {
                            if !page.records.is_empty() {
                                reads.push((tag, under));
                            }
                            page
                        }
                        Err(
                            Error::Erased { .. }
                            | Error::Restricted { .. }
                            | Error::Closed { .. }
                            | Error::UnknownSubject { .. },
                        ) => break,
                        Err(err) => return Err(err),
                    };
                    out.extend(page.records.into_iter().map(|r| (tag, r)));
                    match page.next {
                        Some(next) if out.len() >= limit => {
                            return self.class_page_checked(
                                class_entry,
                                out,
                                &mut reads,
                                Some(Cursor([&[WITHIN][..], &next.0].concat())),
                            );
                        }
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                if out.len() >= limit {
                    // This subject is done: resume with the next one.
                    let scope = records::scope_prefix(&tag, class_entry.number);
                    return self.class_page_checked(
                        class_entry,
                        out,
                        &mut reads,
                        Some(Cursor([&[AFTER][..], &scope[..]].concat())),
                    );
                }
            }
            if !more_subjects {
                return self.class_page_checked(class_entry, out, &mut reads, None);
            }
        }
    }

    /// The class page of `records`, without the records of any subject that
    /// an erasure (or a restriction, a closure) reached after its part was
    /// read: the page is returned after every subject's lock was released,
    /// and once an erasure returns no call returns what it erased (G1). The
    /// page may then come short of `limit` with more to read.
    fn class_page_checked(
        &self,
        class_entry: &ClassEntry,
        mut records: Vec<(SubjectTag, Record)>,
        reads: &mut [(SubjectTag, ReadUnder)],
        next: Option<Cursor>,
    ) -> Result<ClassPage> {
        let inner = &self.inner;
        for (tag, under) in reads.iter_mut() {
            match inner.recheck_read(tag, class_entry, under) {
                Ok(()) => {}
                Err(
                    Error::Erased { .. }
                    | Error::Restricted { .. }
                    | Error::Closed { .. }
                    | Error::UnknownSubject { .. },
                ) => records.retain(|(t, _)| t != tag),
                Err(err) => return Err(err),
            }
        }
        Ok(ClassPage { records, next })
    }
}

/// One page of raw entries read from the backend, their bytes back to back
/// in one buffer reused across pages: records are opened after the read,
/// with no backend lock held, and the page costs no allocation per entry.
#[derive(Default)]
pub(super) struct RawPage {
    /// Keys and values, each entry's key then its value.
    bytes: Vec<u8>,
    /// Per entry, where its key ends and where its value ends in `bytes`.
    bounds: Vec<(usize, usize)>,
}

impl RawPage {
    /// Replaces the page with up to `want` entries of `tree` between `low`
    /// and `high` in `order`, stopping at the first key outside `within`.
    pub(super) fn read(
        &mut self,
        storage: &dyn Storage,
        tree: Tree,
        (low, high): (Bound<&[u8]>, Bound<&[u8]>),
        order: Order,
        within: &[u8],
        want: usize,
    ) -> Result<()> {
        self.bytes.clear();
        self.bounds.clear();
        if self.bytes.capacity() == 0 {
            // Room for a page of typical entries (a 34-byte key, an envelope
            // around 100 bytes of value) up front, rather than growing
            // by copies through the first page of every scan.
            self.bytes.reserve(want.saturating_mul(TYPICAL_ENTRY));
            self.bounds.reserve(want);
        }
        let (bytes, bounds) = (&mut self.bytes, &mut self.bounds);
        storage.scan(tree, low, high, order, &mut |k, v| {
            if !k.starts_with(within) {
                return ControlFlow::Break(());
            }
            bytes.extend_from_slice(k);
            let key_end = bytes.len();
            bytes.extend_from_slice(v);
            bounds.push((key_end, bytes.len()));
            if bounds.len() >= want {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(())
    }

    /// Replaces the page with up to `want` entries of the data tree's scope
    /// `prefix` after the key `after` (from the scope's start if `None`),
    /// and moves `after` to the page's last key. Returns whether more may
    /// follow (the page is full).
    pub(super) fn read_scope(
        &mut self,
        storage: &dyn Storage,
        prefix: &[u8],
        after: &mut Option<Vec<u8>>,
        want: usize,
    ) -> Result<bool> {
        let start = match after.as_deref() {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(prefix),
        };
        self.read(
            storage,
            Tree::Data,
            (start, Bound::Unbounded),
            Order::Ascending,
            prefix,
            want,
        )?;
        let next = after.get_or_insert_with(Vec::new);
        next.clear();
        next.extend_from_slice(self.last_key().unwrap_or_default());
        Ok(self.len() >= want)
    }

    /// How many entries the page holds.
    pub(super) fn len(&self) -> usize {
        self.bounds.len()
    }

    /// The entries as (key, value), in the order read.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut entry_start = 0;
        self.bounds.iter().map(move |&(key_end, entry_end)| {
            let key = self.bytes.get(entry_start..key_end).unwrap_or_default();
            let value = self.bytes.get(key_end..entry_end).unwrap_or_default();
            entry_start = entry_end;
            (key, value)
        })
    }

    /// The last entry's key: where the next page starts.
    pub(super) fn last_key(&self) -> Option<&[u8]> {
        self.entries().last().map(|(key, _)| key)
    }
}

/// Records opened from one page, their keys and values back to back in one
/// buffer reused across pages: a scan visits them after releasing the
/// subject's lock, so a visitor may call back into the store.
#[derive(Default)]
pub(super) struct OpenedPage {
    /// Keys and values, each record's key then its value.
    bytes: Vec<u8>,
    /// Per record, where its key ends and its value ends, and its expiry.
    bounds: Vec<(usize, usize, Option<Timestamp>)>,
}

impl OpenedPage {
    /// Empties the page, keeping its buffers.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.bounds.clear();
    }

    /// Adds a copy of `record`.
    pub(super) fn push(&mut self, record: RecordRef<'_>) {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(ITER_PAGE.saturating_mul(TYPICAL_ENTRY));
            self.bounds.reserve(ITER_PAGE);
        }
        self.bytes.extend_from_slice(record.key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(record.value);
        self.bounds
            .push((key_end, self.bytes.len(), record.expires_at));
    }

    /// The records, in the order added.
    pub(super) fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let mut record_start = 0;
        self.bounds
            .iter()
            .map(move |&(key_end, value_end, expires_at)| {
                let key = self.bytes.get(record_start..key_end).unwrap_or_default();
                let value = self.bytes.get(key_end..value_end).unwrap_or_default();
                record_start = value_end;
                RecordRef {
                    key,
                    value,
                    expires_at,
                }
            })
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The iterator of [`Db::records`].
#[derive(Debug)]
pub struct Records<'db> {
    db: &'db Db,
    subject: String,
    class: OwnedClass,
    options: ScanOptions,
    buffered: std::vec::IntoIter<Record>,
    /// The buffered page's subject and what it was read under: a record is
    /// handed out only while no erasure of the subject ran since (G1).
    read_under: Option<(SubjectTag, ReadUnder)>,
    next: Option<Cursor>,
    done: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(record) = self.buffered.next() {
                if let Err(err) = self.recheck() {
                    self.done = true;
                    self.buffered = Vec::new().into_iter();
                    return Some(Err(err));
                }
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            match self.db.scan_page_under(
                &self.subject,
                &self.class,
                &self.options,
                self.next.as_ref(),
                ITER_PAGE,
            ) {
                Ok((page, read_under)) => {
                    self.done = page.next.is_none();
                    self.next = page.next;
                    self.buffered = page.records.into_iter();
                    self.read_under = Some(read_under);
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }
}

impl Records<'_> {
    /// Fails as a new read would if the subject was erased (or restricted,
    /// closed, registered again) since the buffered page was read.
    fn recheck(&mut self) -> Result<()> {
        let inner = &self.db.inner;
        match &mut self.read_under {
            Some((tag, under)) if !under.is_current(&inner.gate, tag) => {
                let class = inner.resolve(&self.class)?;
                inner.recheck_read(tag, class, under)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn bounds_intersect_prefix_and_range() {
        let scope = b"S";
        let (low, high) = bounds(scope, &ScanOptions::all());
        assert_eq!(
            (low, high),
            (
                Bound::Included(b"S".to_vec()),
                Bound::Excluded(b"T".to_vec())
            )
        );
        let (low, high) = bounds(
            scope,
            &ScanOptions {
                prefix: Some(b"k".to_vec()),
                from: Some(b"k2".to_vec()),
                until: Some(b"z".to_vec()),
                reverse: false,
            },
        );
        assert_eq!(low, Bound::Included(b"Sk2".to_vec()));
        assert_eq!(
            high,
            Bound::Excluded(b"Sl".to_vec()),
            "the prefix's end is tighter"
        );
        let (low, _) = bounds(scope, &ScanOptions::range(b"a".to_vec(), b"b".to_vec()));
        assert_eq!(low, Bound::Included(b"Sa".to_vec()));
    }
}
