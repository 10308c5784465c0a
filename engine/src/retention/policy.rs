//! The retention policy: a TOML file naming every retention class of a store.
//!
//! The file format (policy format version 1) is documented in
//! `policy/default.toml` and `docs/retention.md`. In short:
//!
//! ```toml
//! version = 1
//!
//! [[class]]                              # one table per class, any order
//! name = "account_profile"               # lowercase identifier, unique
//! role = "controller"                    # or "processor"
//! clock = "account_closure"              # write | account_closure | marketing_opt_out | manual_release
//! retain = "60 days"                     # N days|weeks|months|years, calendar-aware
//! purge_window = "30 days"               # optional, default "30 days"; 1 to 366 days
//! on_deletion_request = "erase_now"      # or "retain_until_deadline"
//! # max_customer_ttl = "90 days"         # write clock only: cap on a customer's TTL
//! # until_account_closure = true         # also erased when the account closes
//! # keys = "ordered"                     # default "blinded"
//! # renamed_from = "profile"             # this class was called so: keeps its data
//! legal_basis = "contract: provide the services"
//! clause = 'Heading: "verbatim quote of the notice"'
//! ```
//!
//! Parsing is done in two steps so errors say what kind of mistake it is: the
//! TOML syntax first ([`PolicyError::Syntax`]), then the fields and their
//! consistency ([`PolicyError::Invalid`]). Both carry the 1-based line and
//! column of the offending text.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

/// The policy file format this build reads (the top-level `version` key).
const POLICY_FORMAT_VERSION: u32 = 1;

/// Version of the canonical encoding hashed by [`Policy::digest`].
const DIGEST_ENCODING_VERSION: u8 = 1;

/// Domain separator of the digest encoding.
const DIGEST_DOMAIN: &[u8] = b"shredkv.policy.digest";

/// Purge window of a class that does not set one.
const DEFAULT_PURGE_DAYS: u32 = 30;

/// Longest purge window a policy may set, in days.
const MAX_PURGE_DAYS: u64 = 366;

/// Longest class name, in bytes.
const MAX_CLASS_NAME_LEN: usize = 64;

/// Where the reader finds the file format, in hints.
const FORMAT_DOC: &str = "see docs/retention.md for the policy format";

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

/// A validated retention policy: every retention class of a store.
///
/// Built only by parsing ([`Policy::from_toml_str`], [`Policy::load`],
/// [`Policy::default_policy`]), so every `Policy` has passed validation: class
/// names are unique lowercase identifiers, durations are well formed, and the
/// fields of each class are consistent with its clock.
///
/// ```
/// use jiff::Timestamp;
/// use shredkv::{ClockStart, DeletionRule, Policy};
///
/// let policy = Policy::from_toml_str(
///     r#"
///     version = 1
///
///     [[class]]
///     name = "support_communications"
///     role = "controller"
///     clock = "account_closure"
///     retain = "3 years"
///     on_deletion_request = "erase_now"
///     legal_basis = "legitimate interest: keep track of support inquiries"
///     clause = 'How Long We Store: "up to three years after your account is closed"'
///     "#,
///     "example.toml",
/// )?;
///
/// let support = policy.class("support_communications").ok_or("no such class")?;
/// assert_eq!(support.clock(), ClockStart::AccountClosure);
/// assert_eq!(support.on_deletion_request(), DeletionRule::EraseNow);
/// assert_eq!(support.purge_window().to_string(), "30 days"); // the default
///
/// let closed: Timestamp = "2024-02-29T12:00:00Z".parse()?;
/// let deadline = support.deadline(closed).ok_or("no deadline")?;
/// assert_eq!(deadline.to_string(), "2027-02-28T12:00:00Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Policy {
    classes: Vec<ClassPolicy>,
    /// The TOML text it was parsed from (a live store's operator asks for it).
    text: std::sync::Arc<str>,
}

// Two policies are the same when their classes are: the text's layout and
// comments do not count (the digest does not either).
impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.classes == other.classes
    }
}

impl Eq for Policy {}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The text of `policy/default.toml`, the policy that mirrors the
    /// platform's privacy notice. [`Policy::default_policy`] parses it.
    pub const DEFAULT_TOML: &'static str = include_str!("../../../policy/default.toml");

    /// Parses and validates a policy from TOML text. `source_name` names the
    /// text in error messages (usually its file path).
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
        let ctx = Ctx { text, source_name };
        let table = toml::de::DeTable::parse(text).map_err(|e| ctx.syntax(&e))?;
        let raw = RawPolicy::deserialize(toml::de::Deserializer::from(table))
            .map_err(|e| ctx.de_error(&e))?;
        let classes = raw.validate(&ctx)?;
        Ok(Policy {
            classes,
            text: text.into(),
        })
    }

    /// The TOML text this policy was parsed from.
    pub fn toml(&self) -> &str {
        &self.text
    }

    /// Reads and parses the policy file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_toml_str(&text, &path.display().to_string())
    }

    /// The default policy (`policy/default.toml`, embedded in the crate),
    /// which mirrors the platform's privacy notice clause by clause.
    ///
    /// The embedded file is checked by the crate's tests, so this fails only
    /// if a build ships a broken `policy/default.toml`.
    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::from_toml_str(Policy::DEFAULT_TOML, "policy/default.toml")
    }

    /// The class named `name`, if the policy has one.
    pub fn class(&self, name: &str) -> Option<&ClassPolicy> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// All classes, in the order of the policy file.
    pub fn classes(&self) -> &[ClassPolicy] {
        &self.classes
    }

    /// SHA-256 over a canonical encoding of the parsed policy.
    ///
    /// Comments, whitespace, key order, class order and spelled-out defaults
    /// do not change it; any change of a class's meaning does (including its
    /// legal basis and clause, which deletion receipts quote). The store
    /// records it, so a policy change is noticed and can be audited. Equal
    /// durations spelled with different units ("1 week", "7 days") hash
    /// differently: the digest is conservative.
    ///
    /// Encoding, version 1 (integers big-endian; `str` = u64 byte length then
    /// UTF-8; `dur` = unit u8 (1 days, 2 weeks, 3 months, 4 years) then count
    /// u32; `opt dur` = 0u8, or 1u8 then `dur`):
    ///
    /// ```text
    /// "shredkv.policy.digest" | version u8 = 1 | class count u64
    /// per class, sorted by name:
    ///   name str | role u8 (1 controller, 2 processor)
    ///   clock u8 (1 write, 2 account_closure, 3 marketing_opt_out, 4 manual_release)
    ///   retain opt dur | purge_window dur
    ///   on_deletion_request u8 (1 erase_now, 2 retain_until_deadline)
    ///   max_customer_ttl opt dur | keys u8 (1 blinded, 2 ordered)
    ///   until_account_closure u8 (0, 1) | legal_basis str | clause str
    /// ```
    ///
    /// `renamed_from` is not hashed: it changes no rule, only which stored
    /// class a new name continues (and a rename changes the name).
    pub fn digest(&self) -> [u8; 32] {
        let mut classes: Vec<&ClassPolicy> = self.classes.iter().collect();
        classes.sort_by(|a, b| a.name.cmp(&b.name));

        let mut hash = Sha256::new();
        hash.update(DIGEST_DOMAIN);
        hash.update([DIGEST_ENCODING_VERSION]);
        hash.update(len_u64(classes.len()).to_be_bytes());
        for class in classes {
            digest_str(&mut hash, &class.name);
            hash.update([class.role.tag(), class.clock.tag()]);
            digest_opt_retention(&mut hash, class.retain);
            digest_retention(&mut hash, class.purge_window);
            hash.update([class.on_deletion_request.tag()]);
            digest_opt_retention(&mut hash, class.max_customer_ttl);
            hash.update([class.keys.tag(), u8::from(class.until_account_closure)]);
            digest_str(&mut hash, &class.legal_basis);
            digest_str(&mut hash, &class.clause);
        }
        hash.finalize().into()
    }
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn digest_str(hash: &mut Sha256, s: &str) {
    hash.update(len_u64(s.len()).to_be_bytes());
    hash.update(s.as_bytes());
}

fn digest_retention(hash: &mut Sha256, r: Retention) {
    hash.update([r.unit.tag()]);
    hash.update(r.count.to_be_bytes());
}

fn digest_opt_retention(hash: &mut Sha256, r: Option<Retention>) {
    match r {
        None => hash.update([0]),
        Some(r) => {
            hash.update([1]);
            digest_retention(hash, r);
        }
    }
}

// ---------------------------------------------------------------------------
// ClassPolicy and its enums
// ---------------------------------------------------------------------------

/// The rules of one retention class: who decides about the data, what starts
/// its clock, how long it is kept, and what a deletion request does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    name: String,
    role: DataRole,
    clock: ClockStart,
    retain: Option<Retention>,
    purge_window: Retention,
    on_deletion_request: DeletionRule,
    max_customer_ttl: Option<Retention>,
    until_account_closure: bool,
    keys: KeyMode,
    legal_basis: String,
    clause: String,
    renamed_from: Option<String>,
}

impl ClassPolicy {
    /// The class name: a unique lowercase identifier (`[a-z][a-z0-9_]*`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name this class had before (`renamed_from`): a store that knows
    /// the class by that name keeps its data under the new name. A class
    /// that leaves the policy without such a rename is retired, and its
    /// data erased, when the change is applied (see docs/retention.md).
    pub fn renamed_from(&self) -> Option<&str> {
        self.renamed_from.as_deref()
    }

    /// Whether the platform is controller or processor of this data.
    pub fn role(&self) -> DataRole {
        self.role
    }

    /// The event that starts the retention clock.
    pub fn clock(&self) -> ClockStart {
        self.clock
    }

    /// How long records are kept after the clock starts. `None` on a
    /// `manual_release` class (erased when released) and on a `write` class
    /// kept as the customer instructs.
    pub fn retain(&self) -> Option<Retention> {
        self.retain
    }

    /// How long after an erasure decision every copy of the key material must
    /// be undecryptable (guarantee G2). Always whole days or weeks, 1 to 366
    /// days.
    pub fn purge_window(&self) -> Retention {
        self.purge_window
    }

    /// The purge window as an exact duration (it is a whole number of days,
    /// which are 24 hours in UTC).
    pub fn purge_window_duration(&self) -> SignedDuration {
        // Validation allows only days and weeks, at most 366 days; the
        // fallback is never taken.
        let days = self.purge_window.fixed_days().unwrap_or(MAX_PURGE_DAYS);
        SignedDuration::from_hours(i64::try_from(days.saturating_mul(24)).unwrap_or(i64::MAX))
    }

    /// What a deletion request does to this class.
    pub fn on_deletion_request(&self) -> DeletionRule {
        self.on_deletion_request
    }

    /// The largest TTL a customer may set on a record, if capped. Only
    /// `write` classes accept customer TTLs (see
    /// [`ClassPolicy::customer_ttl_deadline`]).
    pub fn max_customer_ttl(&self) -> Option<Retention> {
        self.max_customer_ttl
    }

    /// Whether the class's records are also erased when their account closes
    /// ("up until termination of your account").
    pub fn until_account_closure(&self) -> bool {
        self.until_account_closure
    }

    /// Whether record keys are blinded or kept ordered.
    pub fn keys(&self) -> KeyMode {
        self.keys
    }

    /// Why the data is kept; deletion receipts state it.
    pub fn legal_basis(&self) -> &str {
        &self.legal_basis
    }

    /// The privacy-notice clause this class implements: heading and quote.
    pub fn clause(&self) -> &str {
        &self.clause
    }

    /// The erasure deadline of records whose clock started at `clock_start`
    /// (the write, the account closure, the opt-out or the release).
    ///
    /// `clock_start + retain`, calendar-aware in UTC; `clock_start` itself
    /// for a `manual_release` class (released means erase). `None` for a
    /// `write` class without `retain`: it is kept until the customer
    /// instructs otherwise (or, with `until_account_closure`, the account
    /// closes). A deadline past the end of time jiff represents (year 9999)
    /// saturates to [`Timestamp::MAX`].
    pub fn deadline(&self, clock_start: Timestamp) -> Option<Timestamp> {
        match self.retain {
            Some(retain) => Some(retain.add_to(clock_start).unwrap_or(Timestamp::MAX)),
            None if self.clock == ClockStart::Write => None,
            None => Some(clock_start),
        }
    }

    /// The time by which an erasure decided at `decision` must be purged:
    /// `decision + purge_window` (saturating at [`Timestamp::MAX`]).
    pub fn purge_deadline(&self, decision: Timestamp) -> Timestamp {
        self.purge_window.add_to(decision).unwrap_or(Timestamp::MAX)
    }

    /// Whether customers may set a per-record TTL on this class (its clock
    /// is `write`).
    pub fn accepts_customer_ttl(&self) -> bool {
        self.clock == ClockStart::Write
    }

    /// The deadline of a record written at `written` with a customer TTL of
    /// `ttl`, or `None` if the TTL is refused: the class does not accept
    /// customer TTLs, or `written + ttl` is later than `written +
    /// max_customer_ttl` or than the class's own deadline. A customer TTL can
    /// shorten retention, never lengthen it.
    pub fn customer_ttl_deadline(&self, written: Timestamp, ttl: Retention) -> Option<Timestamp> {
        if !self.accepts_customer_ttl() {
            return None;
        }
        let asked = ttl.add_to(written)?;
        if let Some(max) = self.max_customer_ttl
            && asked > max.add_to(written).unwrap_or(Timestamp::MAX)
        {
            return None;
        }
        match self.deadline(written) {
            Some(class_deadline) if asked > class_deadline => None,
            _ => Some(asked),
        }
    }
}

/// The platform's role for a class's data (GDPR art. 4): a controller decides
/// why and how it is processed; a processor acts on a customer's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataRole {
    /// The platform decides (customer account data, usage data).
    Controller,
    /// The platform processes on the customer's behalf (customer content).
    Processor,
}

/// The event that starts a class's retention clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClockStart {
    /// The record's write. Customer TTLs count from here.
    Write,
    /// The closure of the account the subject belongs to.
    AccountClosure,
    /// The subject's opt-out from marketing.
    MarketingOptOut,
    /// An explicit release by the operator ("for such time as needed").
    ManualRelease,
}

/// What a deletion request does to a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeletionRule {
    /// Erase at once (logically now, purged within the purge window).
    EraseNow,
    /// Keep until the class deadline (a legal obligation), then erase; the
    /// deletion receipt says so and why.
    RetainUntilDeadline,
}

/// How record keys of a class are stored (guarantee G4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyMode {
    /// Record keys are blinded with an HMAC under the scope's key (default).
    #[default]
    Blinded,
    /// Record keys are stored as given, for ordered range scans; the class
    /// declares they contain no personal data.
    Ordered,
}

/// Maps the enums to their TOML spelling and digest tag.
macro_rules! toml_enum {
    ($ty:ident, $what:literal, { $($variant:ident => ($text:literal, $tag:literal)),+ $(,)? }) => {
        impl Choice for $ty {
            const CHOICES: &'static [(&'static str, $ty)] = &[$(($text, $ty::$variant)),+];
            const WHAT: &'static str = $what;
        }

        impl $ty {
            /// The value's spelling in the policy file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            fn tag(self) -> u8 {
                match self {
                    $($ty::$variant => $tag),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

toml_enum!(DataRole, "role", {
    Controller => ("controller", 1),
    Processor => ("processor", 2),
});
toml_enum!(ClockStart, "clock", {
    Write => ("write", 1),
    AccountClosure => ("account_closure", 2),
    MarketingOptOut => ("marketing_opt_out", 3),
    ManualRelease => ("manual_release", 4),
});
toml_enum!(DeletionRule, "deletion rule", {
    EraseNow => ("erase_now", 1),
    RetainUntilDeadline => ("retain_until_deadline", 2),
});
toml_enum!(KeyMode, "key mode", {
    Blinded => ("blinded", 1),
    Ordered => ("ordered", 2),
});

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

/// The unit of a [`Retention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetentionUnit {
    /// Calendar days (24 hours in UTC).
    Days,
    /// Weeks of 7 days.
    Weeks,
    /// Calendar months; a day past the month's end clamps to its last day.
    Months,
    /// Calendar years; 29 February clamps to 28 February.
    Years,
}

impl RetentionUnit {
    fn tag(self) -> u8 {
        match self {
            RetentionUnit::Days => 1,
            RetentionUnit::Weeks => 2,
            RetentionUnit::Months => 3,
            RetentionUnit::Years => 4,
        }
    }

    fn from_word(word: &str) -> Option<RetentionUnit> {
        match word {
            "day" | "days" => Some(RetentionUnit::Days),
            "week" | "weeks" => Some(RetentionUnit::Weeks),
            "month" | "months" => Some(RetentionUnit::Months),
            "year" | "years" => Some(RetentionUnit::Years),
            _ => None,
        }
    }

    fn word(self, count: u32) -> &'static str {
        match (self, count == 1) {
            (RetentionUnit::Days, true) => "day",
            (RetentionUnit::Days, false) => "days",
            (RetentionUnit::Weeks, true) => "week",
            (RetentionUnit::Weeks, false) => "weeks",
            (RetentionUnit::Months, true) => "month",
            (RetentionUnit::Months, false) => "months",
            (RetentionUnit::Years, true) => "year",
            (RetentionUnit::Years, false) => "years",
        }
    }
}

/// A calendar span: "N days", "N weeks", "N months" or "N years".
///
/// Added to a time with calendar-aware arithmetic in UTC ([`Retention::add_to`]),
/// so "7 years" are seven calendar years, not 7 × 365 days. Parsed with
/// [`str::parse`] (singular units allowed, N a non-negative integer);
/// [`Display`](fmt::Display) prints the normalised spelling ("1 day", "7 years").
///
/// ```
/// use shredkv::Retention;
///
/// let r: Retention = "7 year".parse()?;
/// assert_eq!(r.to_string(), "7 years");
/// let start = "2024-02-29T00:00:00Z".parse()?;
/// assert_eq!(r.add_to(start).map(|t| t.to_string()).as_deref(), Some("2031-02-28T00:00:00Z"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retention {
    count: u32,
    unit: RetentionUnit,
}

impl Retention {
    /// A span of `count` `unit`s, or an error if jiff cannot represent it
    /// (more than 19,998 years or the equivalent).
    pub fn new(count: u32, unit: RetentionUnit) -> Result<Retention, ParseRetentionError> {
        let r = Retention { count, unit };
        match r.span() {
            Some(_) => Ok(r),
            None => Err(ParseRetentionError::TooLong),
        }
    }

    /// The number of units.
    pub fn count(self) -> u32 {
        self.count
    }

    /// The unit.
    pub fn unit(self) -> RetentionUnit {
        self.unit
    }

    /// `start + self`, computed on the UTC calendar: days are 24 hours, a
    /// month or year landing on a day its month does not have clamps to the
    /// month's last day (2024-02-29 + 7 years = 2031-02-28). `None` if the
    /// result is past jiff's range (the year 9999).
    pub fn add_to(self, start: Timestamp) -> Option<Timestamp> {
        let span = self.span()?;
        start
            .to_zoned_datetime(TimeZone::UTC)
            .checked_add(span)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The length in days if it is fixed (days and weeks), else `None`.
    fn fixed_days(self) -> Option<u64> {
        match self.unit {
            RetentionUnit::Days => Some(u64::from(self.count)),
            RetentionUnit::Weeks => Some(u64::from(self.count) * 7),
            RetentionUnit::Months | RetentionUnit::Years => None,
        }
    }

    fn span(self) -> Option<Span> {
        let count = i64::from(self.count);
        let span = match self.unit {
            RetentionUnit::Days => Span::new().try_days(count),
            RetentionUnit::Weeks => Span::new().try_weeks(count),
            RetentionUnit::Months => Span::new().try_months(count),
            RetentionUnit::Years => Span::new().try_years(count),
        };
        span.ok()
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.count, self.unit.word(self.count))
    }
}

impl FromStr for Retention {
    type Err = ParseRetentionError;

    fn from_str(s: &str) -> Result<Retention, ParseRetentionError> {
        let mut words = s.split_whitespace();
        let (Some(number), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(ParseRetentionError::Shape);
        };
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseRetentionError::Number);
        }
        let unit = RetentionUnit::from_word(unit).ok_or(ParseRetentionError::Unit)?;
        let count: u32 = number.parse().map_err(|_| ParseRetentionError::TooLong)?;
        Retention::new(count, unit)
    }
}

/// Why a string is not a [`Retention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseRetentionError {
    /// Not two words (a number and a unit).
    Shape,
    /// The number is not a non-negative integer.
    Number,
    /// The unit is not day(s), week(s), month(s) or year(s).
    Unit,
    /// The span is too long to compute with.
    TooLong,
}

impl fmt::Display for ParseRetentionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseRetentionError::Shape => "expected a number and a unit",
            ParseRetentionError::Number => "the number must be a non-negative integer",
            ParseRetentionError::Unit => "the unit must be days, weeks, months or years",
            ParseRetentionError::TooLong => "the span is too long (at most 19998 years)",
        })
    }
}

impl std::error::Error for ParseRetentionError {}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A policy file could not be read, parsed or validated.
///
/// Display: `policy file {name}, line {l}, column {c}: {what is wrong}; {what
/// to do}`. Lines and columns are 1-based; columns count characters.
#[derive(Debug)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not valid TOML.
    Syntax {
        /// The file (or name) the text came from.
        source_name: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The text is TOML, but not a valid policy: an unknown field or value, a
    /// malformed duration, or a class whose fields contradict each other.
    Invalid {
        /// The file (or name) the text came from.
        source_name: String,
        /// 1-based line of the offending class or field.
        line: usize,
        /// 1-based column (in characters) of the offending class or field.
        column: usize,
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The policy file could not be read.
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PolicyError {
    /// The 1-based (line, column) of the error in the policy text, if it has
    /// one.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            PolicyError::Syntax { line, column, .. }
            | PolicyError::Invalid { line, column, .. } => Some((*line, *column)),
            PolicyError::Io { .. } => None,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Syntax {
                source_name,
                line,
                column,
                message,
            } => write!(
                f,
                "policy file {source_name}, line {line}, column {column}: {message}; fix the TOML syntax there ({FORMAT_DOC})"
            ),
            PolicyError::Invalid {
                source_name,
                line,
                column,
                message,
                hint,
            } => write!(
                f,
                "policy file {source_name}, line {line}, column {column}: {message}; {hint}"
            ),
            PolicyError::Io { path, source } => write!(
                f,
                "policy file {}: cannot read it ({source}); check the path and its permissions",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The text being parsed, for turning byte spans into errors.
struct Ctx<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters) of byte `offset`.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = self.text.get(..offset).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
        (line, column)
    }

    fn syntax(&self, e: &toml::de::Error) -> PolicyError {
        let (line, column) = self.line_column(e.span().map_or(0, |s| s.start));
        PolicyError::Syntax {
            source_name: self.source_name.to_owned(),
            line,
            column,
            message: first_line(e.message()),
        }
    }

    /// A serde error: an unknown or missing field, or a value of the wrong type.
    fn de_error(&self, e: &toml::de::Error) -> PolicyError {
        let message = first_line(e.message());
        let hint = if message.starts_with("unknown field") {
            format!("remove the field or fix its spelling ({FORMAT_DOC})")
        } else if message.starts_with("missing field") {
            format!("add the field to the table that starts here ({FORMAT_DOC})")
        } else if message.contains("expected a sequence") {
            format!("write each class as a [[class]] table ({FORMAT_DOC})")
        } else {
            FORMAT_DOC.to_owned()
        };
        self.invalid(e.span().unwrap_or(0..0), message, hint)
    }

    fn invalid(&self, span: Range<usize>, message: String, hint: String) -> PolicyError {
        let (line, column) = self.line_column(span.start);
        PolicyError::Invalid {
            source_name: self.source_name.to_owned(),
            line,
            column,
            message,
            hint,
        }
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

// ---------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------

/// The policy file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<i64>,
    class: Option<Spanned<Vec<Spanned<RawClass>>>>,
}

/// One `[[class]]` table as written. Enum values and durations are kept as
/// strings so their errors can say what is accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: Spanned<String>,
    role: Spanned<String>,
    clock: Spanned<String>,
    retain: Option<Spanned<String>>,
    purge_window: Option<Spanned<String>>,
    on_deletion_request: Spanned<String>,
    max_customer_ttl: Option<Spanned<String>>,
    until_account_closure: Option<Spanned<bool>>,
    keys: Option<Spanned<String>>,
    legal_basis: Spanned<String>,
    clause: Spanned<String>,
    renamed_from: Option<Spanned<String>>,
}

/// Implemented by the enums spelled as strings in the policy file.
trait Choice: Copy + 'static {
    const CHOICES: &'static [(&'static str, Self)];
    const WHAT: &'static str;
}

impl RawPolicy {
    fn validate(self, ctx: &Ctx<'_>) -> Result<Vec<ClassPolicy>, PolicyError> {
        if *self.version.get_ref() != i64::from(POLICY_FORMAT_VERSION) {
            return Err(ctx.invalid(
                self.version.span(),
                format!(
                    "policy format version {} is not supported (this build reads version {POLICY_FORMAT_VERSION})",
                    self.version.get_ref()
                ),
                format!("write `version = {POLICY_FORMAT_VERSION}` and this format, or use a newer shredkv"),
            ));
        }

        let empty = |span: Range<usize>| {
            ctx.invalid(
                span,
                "the policy names no retention class".to_owned(),
                "add at least one [[class]] table (policy/default.toml shows all of them)"
                    .to_owned(),
            )
        };
        let Some(classes) = self.class else {
            return Err(empty(0..0));
        };
        if classes.get_ref().is_empty() {
            return Err(empty(classes.span()));
        }

        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        let mut renames: HashMap<String, Range<usize>> = HashMap::new();
        let mut out = Vec::with_capacity(classes.get_ref().len());
        for raw in classes.into_inner() {
            let class_span = raw.span();
            let raw = raw.into_inner();
            let name_span = raw.name.span();
            let rename_span = raw.renamed_from.as_ref().map(Spanned::span);
            let class = raw.validate(ctx, class_span)?;
            if let Some(span) = rename_span {
                renames.insert(class.name.clone(), span);
            }
            if let Some(first) = seen.get(&class.name) {
                let (line, _) = ctx.line_column(first.start);
                return Err(ctx.invalid(
                    name_span,
                    format!(
                        "class `{}` is defined twice (first on line {line})",
                        class.name
                    ),
                    "rename one of them or merge them into one class".to_owned(),
                ));
            }
            seen.insert(class.name.clone(), name_span);
            out.push(class);
        }
        let mut renamed: HashMap<&str, &str> = HashMap::new();
        for class in &out {
            let Some(old) = class.renamed_from.as_deref() else {
                continue;
            };
            let span = renames.get(&class.name).cloned().unwrap_or(0..0);
            if seen.contains_key(old) {
                return Err(ctx.invalid(
                    span,
                    format!(
                        "class `{}` is renamed from `{old}`, but the policy still defines `{old}`",
                        class.name
                    ),
                    format!("remove the class `{old}`, or the `renamed_from` line"),
                ));
            }
            if let Some(other) = renamed.insert(old, &class.name) {
                return Err(ctx.invalid(
                    span,
                    format!(
                        "classes `{other}` and `{}` are both renamed from `{old}`",
                        class.name
                    ),
                    "a class keeps its data under one new name only".to_owned(),
                ));
            }
        }
        Ok(out)
    }
}

impl RawClass {
    fn validate(self, ctx: &Ctx<'_>, class_span: Range<usize>) -> Result<ClassPolicy, PolicyError> {
        let name = self.name.get_ref().clone();
        if !is_identifier(&name) {
            return Err(ctx.invalid(
                self.name.span(),
                format!(
                    "class name \"{}\" is not a lowercase identifier",
                    name.escape_debug()
                ),
                format!(
                    "use lowercase letters, digits and `_`, starting with a letter, at most {MAX_CLASS_NAME_LEN} characters"
                ),
            ));
        }

        let role: DataRole = choice(ctx, &name, "role", &self.role)?;
        let clock: ClockStart = choice(ctx, &name, "clock", &self.clock)?;
        let on_deletion_request: DeletionRule =
            choice(ctx, &name, "on_deletion_request", &self.on_deletion_request)?;
        let keys: KeyMode = match &self.keys {
            Some(keys) => choice(ctx, &name, "keys", keys)?,
            None => KeyMode::Blinded,
        };
        let retain = self
            .retain
            .as_ref()
            .map(|r| duration(ctx, &name, "retain", r))
            .transpose()?;
        let max_customer_ttl = self
            .max_customer_ttl
            .as_ref()
            .map(|r| duration(ctx, &name, "max_customer_ttl", r))
            .transpose()?;
        let purge_window = match &self.purge_window {
            Some(p) => purge_window(ctx, &name, p)?,
            None => Retention {
                count: DEFAULT_PURGE_DAYS,
                unit: RetentionUnit::Days,
            },
        };
        let until_account_closure = self
            .until_account_closure
            .as_ref()
            .is_some_and(|u| *u.get_ref());

        // The fields must agree with the clock.
        match (clock, &self.retain) {
            (ClockStart::AccountClosure | ClockStart::MarketingOptOut, None) => {
                return Err(ctx.invalid(
                    class_span,
                    format!("class `{name}` has clock `{clock}` but no `retain`"),
                    "add retain = \"N days|weeks|months|years\" (\"0 days\" erases at the event)"
                        .to_owned(),
                ));
            }
            (ClockStart::ManualRelease, Some(r)) => {
                return Err(ctx.invalid(
                    r.span(),
                    format!(
                        "class `{name}` is kept until manually released, so `retain` does not apply"
                    ),
                    "remove `retain`, or choose another clock".to_owned(),
                ));
            }
            _ => {}
        }
        if let Some(ttl) = &self.max_customer_ttl
            && clock != ClockStart::Write
        {
            return Err(ctx.invalid(
                ttl.span(),
                format!(
                    "class `{name}` sets `max_customer_ttl` but its clock is `{clock}`; customer TTLs count from the write"
                ),
                "remove `max_customer_ttl`, or use clock = \"write\"".to_owned(),
            ));
        }
        if let Some(flag) = &self.until_account_closure
            && *flag.get_ref()
            && clock == ClockStart::AccountClosure
        {
            return Err(ctx.invalid(
                flag.span(),
                format!(
                    "class `{name}` has clock `account_closure`, so `until_account_closure` contradicts its `retain`"
                ),
                "remove `until_account_closure` (retain = \"0 days\" erases at closure)".to_owned(),
            ));
        }
        if on_deletion_request == DeletionRule::RetainUntilDeadline
            && clock == ClockStart::Write
            && retain.is_none()
        {
            return Err(ctx.invalid(
                self.on_deletion_request.span(),
                format!(
                    "class `{name}` keeps records on a deletion request until their deadline, but it has no deadline"
                ),
                "add `retain`, or use on_deletion_request = \"erase_now\"".to_owned(),
            ));
        }

        let renamed_from = match &self.renamed_from {
            None => None,
            Some(old) if !is_identifier(old.get_ref()) || *old.get_ref() == name => {
                return Err(ctx.invalid(
                    old.span(),
                    format!(
                        "class `{name}`: renamed_from \"{}\" is not another class name",
                        old.get_ref().escape_debug()
                    ),
                    "name the class as the store knew it before (a lowercase identifier)"
                        .to_owned(),
                ));
            }
            Some(old) => Some(old.get_ref().clone()),
        };
        let legal_basis = non_empty(
            ctx,
            &name,
            "legal_basis",
            self.legal_basis,
            "name the legal basis the data is kept on (receipts quote it)",
        )?;
        let clause = non_empty(
            ctx,
            &name,
            "clause",
            self.clause,
            "cite the notice clause: 'Heading: \"verbatim quote\"'",
        )?;

        Ok(ClassPolicy {
            name,
            role,
            clock,
            retain,
            purge_window,
            on_deletion_request,
            max_customer_ttl,
            until_account_closure,
            keys,
            legal_basis,
            clause,
            renamed_from,
        })
    }
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_CLASS_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn choice<T: Choice>(
    ctx: &Ctx<'_>,
    class: &str,
    field: &str,
    value: &Spanned<String>,
) -> Result<T, PolicyError> {
    let text = value.get_ref();
    if let Some((_, v)) = T::CHOICES.iter().find(|(s, _)| s == text) {
        return Ok(*v);
    }
    let accepted: Vec<String> = T::CHOICES.iter().map(|(s, _)| format!("\"{s}\"")).collect();
    Err(ctx.invalid(
        value.span(),
        format!(
            "unknown {} \"{}\" in `{field}` of class `{class}`",
            T::WHAT,
            text.escape_debug()
        ),
        format!("use one of {}", accepted.join(", ")),
    ))
}

fn duration(
    ctx: &Ctx<'_>,
    class: &str,
    field: &str,
    value: &Spanned<String>,
) -> Result<Retention, PolicyError> {
    value.get_ref().parse().map_err(|e: ParseRetentionError| {
        ctx.invalid(
            value.span(),
            format!(
                "malformed duration \"{}\" in `{field}` of class `{class}`: {e}",
                value.get_ref().escape_debug()
            ),
            "write it as \"N days\", \"N weeks\", \"N months\" or \"N years\", e.g. \"7 years\""
                .to_owned(),
        )
    })
}

fn purge_window(
    ctx: &Ctx<'_>,
    class: &str,
    value: &Spanned<String>,
) -> Result<Retention, PolicyError> {
    let window = duration(ctx, class, "purge_window", value)?;
    let hint = || {
        format!(
            "use a whole number of days or weeks from 1 to {MAX_PURGE_DAYS} days, e.g. \"30 days\""
        )
    };
    let problem = match window.fixed_days() {
        None => "is not a fixed length (months and years vary)",
        Some(0) => "is zero",
        Some(days) if days > MAX_PURGE_DAYS => "is longer than 366 days",
        Some(_) => return Ok(window),
    };
    Err(ctx.invalid(
        value.span(),
        format!("purge window \"{window}\" of class `{class}` {problem}"),
        hint(),
    ))
}

fn non_empty(
    ctx: &Ctx<'_>,
    class: &str,
    field: &str,
    value: Spanned<String>,
    hint: &str,
) -> Result<String, PolicyError> {
    if value.get_ref().trim().is_empty() {
        return Err(ctx.invalid(
            value.span(),
            format!("`{field}` of class `{class}` is empty"),
            hint.to_owned(),
        ));
    }
    Ok(value.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    const NOTICE: &str = include_str!("../../../docs/privacy-notice.txt");

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn days_between(a: Timestamp, b: Timestamp) -> i64 {
        b.duration_since(a).as_secs() / 86_400
    }

    fn dur(s: &str) -> Retention {
        s.parse().unwrap()
    }

    fn default_class(name: &str) -> ClassPolicy {
        Policy::default_policy()
            .unwrap()
            .class(name)
            .unwrap_or_else(|| panic!("default policy has no class `{name}`"))
            .clone()
    }

    /// A valid one-class policy; tests edit single lines of it.
    const ONE_CLASS: &str = r#"version = 1

[[class]]
name = "alpha"
role = "controller"
clock = "account_closure"
retain = "60 days"
on_deletion_request = "erase_now"
legal_basis = "contract"
clause = 'Heading: "quote"'
"#;

    /// A valid policy with a write-clocked class, for customer TTL tests.
    const WRITE_CLASS: &str = r#"version = 1

[[class]]
name = "events"
role = "processor"
clock = "write"
retain = "90 days"
max_customer_ttl = "30 days"
on_deletion_request = "erase_now"
legal_basis = "processor"
clause = 'Heading: "quote"'
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml_str(text, "test.toml")
    }

    /// Replaces the one line of `ONE_CLASS` starting with `key` by `line`
    /// (or removes it when `line` is empty).
    fn edit(text: &str, key: &str, line: &str) -> String {
        let mut found = false;
        let out: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                if l.starts_with(key) {
                    found = true;
                    (!line.is_empty()).then_some(line)
                } else {
                    Some(l)
                }
            })
            .collect();
        assert!(found, "no line starts with {key}");
        out.join("\n") + "\n"
    }

    /// Where `needle` first appears in `text` (1-based line, column in
    /// characters), computed independently of the parser.
    fn pos(text: &str, needle: &str) -> (usize, usize) {
        for (i, line) in text.lines().enumerate() {
            if let Some(byte) = line.find(needle) {
                return (i + 1, line[..byte].chars().count() + 1);
            }
        }
        panic!("{needle:?} not in text");
    }

    /// Parses `text`, expects an `Invalid` error, and returns its location,
    /// message and hint.
    fn invalid(text: &str) -> ((usize, usize), String, String) {
        match parse(text) {
            Err(PolicyError::Invalid {
                line,
                column,
                message,
                hint,
                source_name,
            }) => {
                assert_eq!(source_name, "test.toml");
                ((line, column), message, hint)
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    // ---- The default policy mirrors the notice, clause by clause ----

    #[test]
    fn default_policy_parses_and_names_exactly_the_notice_classes() {
        let policy = Policy::default_policy().unwrap();
        let mut names: Vec<&str> = policy.classes().iter().map(|c| c.name()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "account_profile",
                "account_records",
                "invoices",
                "marketing_contacts",
                "message_content",
                "retained_usage_copy",
                "subscriber_records",
                "support_communications",
                "usage_records",
            ]
        );
    }

    #[test]
    fn default_policy_mirrors_notice_account_profile() {
        // "within 60 days following closure of your account, we will either delete ..."
        let c = default_class("account_profile");
        assert_eq!(c.role(), DataRole::Controller);
        assert_eq!(c.clock(), ClockStart::AccountClosure);
        assert_eq!(c.retain(), Some(dur("60 days")));
        assert_eq!(c.on_deletion_request(), DeletionRule::EraseNow);
        let closed = ts("2024-01-01T00:00:00Z");
        assert_eq!(c.deadline(closed), Some(ts("2024-03-01T00:00:00Z")));
    }

    #[test]
    fn default_policy_mirrors_notice_account_records() {
        // "Customer Account Data is stored for up to seven years following closure"
        let c = default_class("account_records");
        assert_eq!(c.role(), DataRole::Controller);
        assert_eq!(c.clock(), ClockStart::AccountClosure);
        assert_eq!(c.retain(), Some(dur("7 years")));
        assert_eq!(c.on_deletion_request(), DeletionRule::RetainUntilDeadline);
        let closed = ts("2024-02-29T10:00:00Z");
        assert_eq!(c.deadline(closed), Some(ts("2031-02-28T10:00:00Z")));
    }

    #[test]
    fn default_policy_mirrors_notice_invoices() {
        // "invoice records ... for longer periods for accounting, tax, and audit purposes"
        let c = default_class("invoices");
        let records = default_class("account_records");
        assert_eq!(c.clock(), ClockStart::AccountClosure);
        assert_eq!(c.retain(), Some(dur("10 years")));
        assert_eq!(c.on_deletion_request(), DeletionRule::RetainUntilDeadline);
        let closed = ts("2025-06-30T00:00:00Z");
        assert!(
            c.deadline(closed).unwrap() > records.deadline(closed).unwrap(),
            "invoices must outlive the seven-year account records"
        );
    }

    #[test]
    fn default_policy_mirrors_notice_subscriber_records() {
        // "retain this data for such time as needed for legal, security and anti-fraud purposes"
        let c = default_class("subscriber_records");
        assert_eq!(c.clock(), ClockStart::ManualRelease);
        assert_eq!(c.retain(), None);
        assert_eq!(c.on_deletion_request(), DeletionRule::RetainUntilDeadline);
        assert!(!c.until_account_closure());
        let released = ts("2030-01-01T00:00:00Z");
        assert_eq!(c.deadline(released), Some(released));
    }

    #[test]
    fn default_policy_mirrors_notice_support_communications() {
        // "for up to three years after your account is closed"
        let c = default_class("support_communications");
        assert_eq!(c.clock(), ClockStart::AccountClosure);
        assert_eq!(c.retain(), Some(dur("3 years")));
        assert_eq!(c.on_deletion_request(), DeletionRule::EraseNow);
    }

    #[test]
    fn default_policy_mirrors_notice_marketing_contacts() {
        // "it may take up to three days to remove your contact information"
        let c = default_class("marketing_contacts");
        assert_eq!(c.clock(), ClockStart::MarketingOptOut);
        assert_eq!(c.retain(), Some(dur("3 days")));
        assert_eq!(c.on_deletion_request(), DeletionRule::EraseNow);
        let opted_out = ts("2024-12-30T18:00:00Z");
        assert_eq!(c.deadline(opted_out), Some(ts("2025-01-02T18:00:00Z")));
    }

    #[test]
    fn default_policy_mirrors_notice_usage_records() {
        // "for as long as you instruct, up until termination of your account"
        let c = default_class("usage_records");
        assert_eq!(c.role(), DataRole::Controller);
        assert_eq!(c.clock(), ClockStart::Write);
        assert_eq!(c.retain(), None);
        assert!(c.until_account_closure());
        assert!(c.accepts_customer_ttl());
        assert_eq!(c.on_deletion_request(), DeletionRule::EraseNow);
        let written = ts("2024-01-01T00:00:00Z");
        assert_eq!(c.deadline(written), None);
        assert_eq!(
            c.customer_ttl_deadline(written, dur("13 months")),
            Some(ts("2025-02-01T00:00:00Z"))
        );
    }

    #[test]
    fn default_policy_mirrors_notice_message_content() {
        // Customer Content: "we are acting as a processor"; same retention clause.
        let c = default_class("message_content");
        assert_eq!(c.role(), DataRole::Processor);
        assert_eq!(c.clock(), ClockStart::Write);
        assert_eq!(c.retain(), None);
        assert!(c.until_account_closure());
        assert!(c.accepts_customer_ttl());
        assert_eq!(c.on_deletion_request(), DeletionRule::EraseNow);
    }

    #[test]
    fn default_policy_mirrors_notice_retained_usage_copy() {
        // "we may retain a copy of your usage records ... billing, invoice reconciliation"
        let c = default_class("retained_usage_copy");
        assert_eq!(c.clock(), ClockStart::ManualRelease);
        assert_eq!(c.retain(), None);
        assert_eq!(c.on_deletion_request(), DeletionRule::RetainUntilDeadline);
        assert!(!c.until_account_closure());
    }

    #[test]
    fn default_policy_mirrors_notice_purge_within_30_days() {
        // "it may take up to 30 days for the data to be completely removed from all systems"
        let decided = ts("2024-02-15T08:30:00Z");
        for c in Policy::default_policy().unwrap().classes() {
            assert_eq!(c.purge_window(), dur("30 days"), "{}", c.name());
            assert_eq!(
                c.purge_window_duration(),
                SignedDuration::from_hours(30 * 24)
            );
            assert_eq!(c.purge_deadline(decided), ts("2024-03-16T08:30:00Z"));
        }
    }

    #[test]
    fn default_policy_keys_are_blinded() {
        for c in Policy::default_policy().unwrap().classes() {
            assert_eq!(c.keys(), KeyMode::Blinded, "{}", c.name());
        }
    }

    #[test]
    fn default_policy_clauses_quote_the_notice_verbatim() {
        for c in Policy::default_policy().unwrap().classes() {
            let clause = c.clause();
            let (heading, quote) = clause
                .split_once(": \"")
                .unwrap_or_else(|| panic!("clause of {} is not 'Heading: \"quote\"'", c.name()));
            let quote = quote.strip_suffix('"').unwrap();
            assert!(
                NOTICE.lines().any(|l| l.trim() == heading),
                "heading {heading:?} of {} is not a heading of the notice",
                c.name()
            );
            assert!(
                NOTICE.contains(quote),
                "quote of {} is not in the notice: {quote:?}",
                c.name()
            );
            assert!(!c.legal_basis().is_empty());
        }
    }

    #[test]
    fn default_toml_cites_a_clause_above_every_class() {
        // Each [[class]] is preceded by a comment naming its notice section.
        let lines: Vec<&str> = Policy::DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() == "[[class]]" {
                let comment: Vec<&str> = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.starts_with('#'))
                    .copied()
                    .collect();
                let heading = comment.last().unwrap().trim_start_matches("# ");
                let heading = heading.split([':', ',']).next().unwrap();
                assert!(
                    NOTICE.lines().any(|l| l.trim() == heading),
                    "comment above line {} does not cite a notice heading: {heading:?}",
                    i + 1
                );
            }
        }
    }

    // ---- Calendar arithmetic ----

    #[test]
    fn seven_years_after_leap_day_clamps_to_february_28() {
        assert_eq!(
            dur("7 years").add_to(ts("2024-02-29T00:00:00Z")),
            Some(ts("2031-02-28T00:00:00Z"))
        );
        // ... and to a leap day when the target year has one.
        assert_eq!(
            dur("4 years").add_to(ts("2024-02-29T00:00:00Z")),
            Some(ts("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn one_year_spans_366_days_across_a_leap_day() {
        let start = ts("2024-01-15T00:00:00Z");
        let end = dur("1 year").add_to(start).unwrap();
        assert_eq!(end, ts("2025-01-15T00:00:00Z"));
        assert_eq!(days_between(start, end), 366);
        let start = ts("2023-03-01T00:00:00Z");
        assert_eq!(
            days_between(start, dur("1 year").add_to(start).unwrap()),
            366
        );
        let start = ts("2025-01-15T00:00:00Z");
        assert_eq!(
            days_between(start, dur("1 year").add_to(start).unwrap()),
            365
        );
    }

    #[test]
    fn months_clamp_to_the_end_of_shorter_months() {
        let month = dur("1 month");
        assert_eq!(
            month.add_to(ts("2024-01-31T12:00:00Z")),
            Some(ts("2024-02-29T12:00:00Z"))
        );
        assert_eq!(
            month.add_to(ts("2023-01-31T12:00:00Z")),
            Some(ts("2023-02-28T12:00:00Z"))
        );
        assert_eq!(
            month.add_to(ts("2024-03-31T00:00:00Z")),
            Some(ts("2024-04-30T00:00:00Z"))
        );
        assert_eq!(
            dur("3 months").add_to(ts("2024-11-30T00:00:00Z")),
            Some(ts("2025-02-28T00:00:00Z"))
        );
    }

    #[test]
    fn days_and_weeks_are_exact_24_hour_days_in_utc() {
        let start = ts("2024-03-30T23:59:59Z");
        assert_eq!(
            dur("60 days").add_to(start),
            Some(ts("2024-05-29T23:59:59Z"))
        );
        assert_eq!(dur("2 weeks").add_to(start), dur("14 days").add_to(start));
        assert_eq!(dur("0 days").add_to(start), Some(start));
        assert_eq!(dur("0 years").add_to(start), Some(start));
    }

    #[test]
    fn adding_past_year_9999_is_none_and_deadlines_saturate() {
        let late = ts("9999-06-01T00:00:00Z");
        assert_eq!(dur("1 year").add_to(late), None);
        assert_eq!(dur("19998 years").add_to(ts("1970-01-01T00:00:00Z")), None);
        let c = default_class("account_records");
        assert_eq!(c.deadline(late), Some(Timestamp::MAX));
        assert_eq!(c.purge_deadline(ts("9999-12-20T00:00:00Z")), Timestamp::MAX);
    }

    #[test]
    fn customer_ttl_shortens_retention_but_never_lengthens_it() {
        let policy = parse(WRITE_CLASS).unwrap();
        let c = policy.class("events").unwrap();
        let written = ts("2024-01-31T00:00:00Z");
        assert_eq!(c.deadline(written), Some(ts("2024-04-30T00:00:00Z")));
        assert_eq!(
            c.customer_ttl_deadline(written, dur("30 days")),
            Some(ts("2024-03-01T00:00:00Z"))
        );
        assert_eq!(c.customer_ttl_deadline(written, dur("31 days")), None);
        assert_eq!(
            c.customer_ttl_deadline(written, dur("0 days")),
            Some(written)
        );
        // A class on another clock refuses customer TTLs.
        let profile = default_class("account_profile");
        assert!(!profile.accepts_customer_ttl());
        assert_eq!(profile.customer_ttl_deadline(written, dur("1 day")), None);
    }

    #[test]
    fn customer_ttl_is_capped_by_the_class_retention_too() {
        let text = edit(
            WRITE_CLASS,
            "max_customer_ttl",
            "max_customer_ttl = \"1 year\"",
        );
        let policy = parse(&text).unwrap();
        let c = policy.class("events").unwrap();
        let written = ts("2024-01-01T00:00:00Z");
        assert_eq!(c.customer_ttl_deadline(written, dur("91 days")), None);
        assert!(c.customer_ttl_deadline(written, dur("90 days")).is_some());
    }

    // ---- Durations ----

    #[test]
    fn retention_display_normalises_the_spelling() {
        for (input, shown) in [
            ("1 days", "1 day"),
            ("1 day", "1 day"),
            ("0 day", "0 days"),
            ("07 years", "7 years"),
            ("  3\tweek  ", "3 weeks"),
            ("12 month", "12 months"),
            ("1 years", "1 year"),
        ] {
            assert_eq!(dur(input).to_string(), shown, "{input:?}");
        }
    }

    #[test]
    fn malformed_durations_are_refused() {
        for (input, why) in [
            ("", ParseRetentionError::Shape),
            ("7", ParseRetentionError::Shape),
            ("years", ParseRetentionError::Shape),
            ("7 years ago", ParseRetentionError::Shape),
            ("7years", ParseRetentionError::Shape),
            ("-1 days", ParseRetentionError::Number),
            ("+1 days", ParseRetentionError::Number),
            ("1.5 years", ParseRetentionError::Number),
            ("seven years", ParseRetentionError::Number),
            ("7 yrs", ParseRetentionError::Unit),
            ("7 Years", ParseRetentionError::Unit),
            ("7 hours", ParseRetentionError::Unit),
            ("19999 years", ParseRetentionError::TooLong),
            ("99999999999 days", ParseRetentionError::TooLong),
        ] {
            assert_eq!(input.parse::<Retention>(), Err(why), "{input:?}");
        }
        assert!(Retention::new(19_998, RetentionUnit::Years).is_ok());
    }

    // ---- Errors: line, column and a useful message ----

    #[test]
    fn error_syntax_gives_line_and_column() {
        let text = "version = 1\n\n[[class]\nname = \"a\"\n";
        match parse(text) {
            Err(PolicyError::Syntax {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (3, 9));
                assert!(message.contains("expected `]`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_display_names_file_line_column_problem_and_fix() {
        let text = edit(ONE_CLASS, "role", "role = \"boss\"");
        let shown = parse(&text).unwrap_err().to_string();
        assert_eq!(
            shown,
            "policy file test.toml, line 5, column 8: unknown role \"boss\" in `role` of class \
             `alpha`; use one of \"controller\", \"processor\""
        );
        let shown = parse("version = = 1").unwrap_err().to_string();
        assert!(
            shown.starts_with("policy file test.toml, line 1, column 11: "),
            "{shown}"
        );
        assert!(shown.contains("; fix the TOML syntax there"), "{shown}");
    }

    #[test]
    fn error_column_counts_characters_not_bytes() {
        let text = edit(ONE_CLASS, "role", "role = \"contrôleur\" ; x");
        match parse(&text) {
            Err(PolicyError::Syntax { line, column, .. }) => assert_eq!((line, column), (5, 21)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_unknown_field() {
        let text = edit(ONE_CLASS, "retain", "retian = \"60 days\"");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, pos(&text, "retian"));
        assert!(message.contains("unknown field `retian`"), "{message}");
        assert!(
            message.contains("`retain`"),
            "lists the known fields: {message}"
        );
        assert!(hint.contains("spelling"), "{hint}");

        let text = format!("{ONE_CLASS}colour = \"red\"\n");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, pos(&text, "colour"));
        assert!(message.contains("unknown field `colour`"), "{message}");
    }

    #[test]
    fn error_missing_field_points_at_the_class() {
        let text = edit(ONE_CLASS, "legal_basis", "");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, (3, 1));
        assert!(message.contains("missing field `legal_basis`"), "{message}");
    }

    #[test]
    fn error_duplicate_class_names() {
        let second = ONE_CLASS.replace("version = 1\n", "");
        let text = format!("{ONE_CLASS}{second}");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, (13, 8));
        assert!(
            message.contains("class `alpha` is defined twice (first on line 4)"),
            "{message}"
        );
        assert!(hint.contains("rename"), "{hint}");
    }

    #[test]
    fn error_unknown_role_clock_key_mode_and_rule() {
        for (key, line, accepted) in [
            ("role", "role = \"owner\"", "\"controller\", \"processor\""),
            (
                "clock",
                "clock = \"account_close\"",
                "\"write\", \"account_closure\", \"marketing_opt_out\", \"manual_release\"",
            ),
            (
                "on_deletion_request",
                "on_deletion_request = \"erase_later\"",
                "\"erase_now\", \"retain_until_deadline\"",
            ),
        ] {
            let text = edit(ONE_CLASS, key, line);
            let (at, message, hint) = invalid(&text);
            let value = line.split_once('=').unwrap().1.trim();
            assert_eq!(at, pos(&text, value), "{key}");
            assert!(
                message.contains(&format!("in `{key}` of class `alpha`")),
                "{message}"
            );
            assert_eq!(hint, format!("use one of {accepted}"));
        }
        let text = format!("{ONE_CLASS}keys = \"hashed\"\n");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, (11, 8));
        assert!(
            message.starts_with("unknown key mode \"hashed\""),
            "{message}"
        );
        assert_eq!(hint, "use one of \"blinded\", \"ordered\"");
    }

    #[test]
    fn error_wrong_type() {
        let text = edit(ONE_CLASS, "retain", "retain = 60");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, pos(&text, "60"));
        assert!(
            message.contains("invalid type: integer `60`, expected a string"),
            "{message}"
        );
    }

    #[test]
    fn error_malformed_duration() {
        for (bad, why) in [
            ("7 yrs", "the unit must be"),
            ("seven years", "non-negative integer"),
            ("-1 days", "non-negative integer"),
            ("60", "a number and a unit"),
            ("20000 years", "too long"),
        ] {
            let text = edit(ONE_CLASS, "retain", &format!("retain = \"{bad}\""));
            let (at, message, hint) = invalid(&text);
            assert_eq!(at, (7, 10), "{bad}");
            assert!(
                message.starts_with(&format!(
                    "malformed duration \"{bad}\" in `retain` of class `alpha`"
                )),
                "{message}"
            );
            assert!(message.contains(why), "{message}");
            assert!(hint.contains("e.g. \"7 years\""), "{hint}");
        }
    }

    #[test]
    fn error_max_customer_ttl_needs_write_clock() {
        let text = format!("{ONE_CLASS}max_customer_ttl = \"30 days\"\n");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, (11, 20));
        assert!(
            message.contains("sets `max_customer_ttl` but its clock is `account_closure`"),
            "{message}"
        );
        assert!(hint.contains("clock = \"write\""), "{hint}");
        // Accepted on a write clock.
        assert!(parse(WRITE_CLASS).is_ok());
    }

    #[test]
    fn error_empty_policy() {
        let (at, message, hint) = invalid("version = 1\n");
        assert_eq!(at, (1, 1));
        assert_eq!(message, "the policy names no retention class");
        assert!(hint.contains("[[class]]"), "{hint}");
        let (at, _, _) = invalid("# nothing yet\nversion = 1\nclass = []\n");
        assert_eq!(at, (3, 9));
    }

    #[test]
    fn error_class_written_as_a_table() {
        let text = "version = 1\n[class]\nname = \"a\"\n";
        let (at, message, hint) = invalid(text);
        assert_eq!(at, (2, 1));
        assert!(message.contains("expected a sequence"), "{message}");
        assert!(hint.contains("[[class]]"), "{hint}");
    }

    #[test]
    fn renamed_from_names_another_class_and_leaves_the_digest_alone() {
        let text = format!("{ONE_CLASS}renamed_from = \"old_alpha\"\n");
        let policy = parse(&text).unwrap();
        assert_eq!(policy.classes()[0].renamed_from(), Some("old_alpha"));
        assert_eq!(policy.digest(), parse(ONE_CLASS).unwrap().digest());
        for (bad, problem) in [
            ("alpha", "is not another class name"),
            ("Not An Identifier", "is not another class name"),
        ] {
            let text = format!("{ONE_CLASS}renamed_from = \"{bad}\"\n");
            let (_, message, _) = invalid(&text);
            assert!(message.contains(problem), "{bad}: {message}");
        }
        let both = format!(
            "{ONE_CLASS}renamed_from = \"beta\"\n{}",
            ONE_CLASS
                .replace("version = 1\n", "")
                .replace("\"alpha\"", "\"beta\"")
        );
        let (_, message, hint) = invalid(&both);
        assert!(message.contains("still defines `beta`"), "{message}");
        assert!(hint.contains("renamed_from"), "{hint}");
        let twice = format!(
            "{ONE_CLASS}renamed_from = \"old\"\n{}renamed_from = \"old\"\n",
            ONE_CLASS
                .replace("version = 1\n", "")
                .replace("\"alpha\"", "\"beta\"")
        );
        let (_, message, _) = invalid(&twice);
        assert!(message.contains("both renamed from `old`"), "{message}");
    }

    #[test]
    fn error_purge_window_out_of_range() {
        for (window, problem) in [
            ("0 days", "is zero"),
            ("0 weeks", "is zero"),
            ("367 days", "is longer than 366 days"),
            ("53 weeks", "is longer than 366 days"),
            ("1 month", "is not a fixed length"),
            ("1 year", "is not a fixed length"),
        ] {
            let text = format!("{ONE_CLASS}purge_window = \"{window}\"\n");
            let (at, message, hint) = invalid(&text);
            assert_eq!(at, (11, 16), "{window}");
            assert!(message.contains(problem), "{window}: {message}");
            assert!(message.contains("of class `alpha`"), "{message}");
            assert!(hint.contains("from 1 to 366 days"), "{hint}");
        }
        for window in ["1 day", "366 days", "52 weeks"] {
            let text = format!("{ONE_CLASS}purge_window = \"{window}\"\n");
            let policy = parse(&text).unwrap();
            assert_eq!(policy.classes()[0].purge_window(), dur(window));
        }
    }

    #[test]
    fn error_retain_must_agree_with_the_clock() {
        let text = edit(ONE_CLASS, "retain", "");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, (3, 1));
        assert_eq!(
            message,
            "class `alpha` has clock `account_closure` but no `retain`"
        );

        let text = edit(ONE_CLASS, "clock", "clock = \"manual_release\"");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, (7, 10));
        assert!(
            message.contains("kept until manually released"),
            "{message}"
        );
        assert!(hint.contains("remove `retain`"), "{hint}");
    }

    #[test]
    fn error_until_account_closure_on_closure_clock() {
        let text = format!("{ONE_CLASS}until_account_closure = true\n");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, (11, 25));
        assert!(message.contains("contradicts"), "{message}");
    }

    #[test]
    fn error_retain_until_deadline_without_a_deadline() {
        let text = edit(WRITE_CLASS, "retain", "");
        let text = edit(
            &text,
            "on_deletion_request",
            "on_deletion_request = \"retain_until_deadline\"",
        );
        let (at, message, _) = invalid(&text);
        assert_eq!(at, pos(&text, "\"retain_until_deadline\""));
        assert!(message.contains("has no deadline"), "{message}");
    }

    #[test]
    fn error_bad_class_name() {
        for bad in ["Alpha", "1alpha", "al-pha", "", "al pha", "ålpha"] {
            let text = edit(ONE_CLASS, "name", &format!("name = \"{bad}\""));
            let (at, message, _) = invalid(&text);
            assert_eq!(at, (4, 8), "{bad}");
            assert!(
                message.contains("is not a lowercase identifier"),
                "{message}"
            );
        }
        let long = "a".repeat(65);
        let text = edit(ONE_CLASS, "name", &format!("name = \"{long}\""));
        assert!(invalid(&text).1.contains("lowercase identifier"));
    }

    #[test]
    fn error_empty_legal_basis_or_clause() {
        let text = edit(ONE_CLASS, "legal_basis", "legal_basis = \"  \"");
        let (at, message, _) = invalid(&text);
        assert_eq!(at, (9, 15));
        assert_eq!(message, "`legal_basis` of class `alpha` is empty");
        let text = edit(ONE_CLASS, "clause", "clause = ''");
        assert_eq!(invalid(&text).0, (10, 10));
    }

    #[test]
    fn error_unsupported_or_missing_version() {
        let text = ONE_CLASS.replace("version = 1", "version = 2");
        let (at, message, hint) = invalid(&text);
        assert_eq!(at, (1, 11));
        assert!(message.contains("version 2 is not supported"), "{message}");
        assert!(hint.contains("version = 1"), "{hint}");
        let text = ONE_CLASS.replace("version = 1", "");
        let (_, message, _) = invalid(&text);
        assert!(message.contains("missing field `version`"), "{message}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retention.toml");
        std::fs::write(&path, ONE_CLASS).unwrap();
        assert_eq!(Policy::load(&path).unwrap(), parse(ONE_CLASS).unwrap());

        std::fs::write(&path, edit(ONE_CLASS, "role", "role = 1")).unwrap();
        let shown = Policy::load(&path).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!(
                "policy file {}, line 5, column 8:",
                path.display()
            )),
            "{shown}"
        );
    }

    #[test]
    fn load_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Policy::load(&path).unwrap_err();
        assert!(matches!(&err, PolicyError::Io { path: p, .. } if *p == path));
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.location(), None);
        let shown = err.to_string();
        assert!(shown.contains("cannot read it"), "{shown}");
        assert!(shown.contains("check the path"), "{shown}");
    }

    // ---- Digest ----

    #[test]
    fn digest_ignores_comments_whitespace_key_and_class_order() {
        let base = Policy::default_policy().unwrap().digest();

        let stripped: String = Policy::DEFAULT_TOML
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("  {}   # trailing comment\n", l.replace(" = ", "=")))
            .collect::<String>()
            .replace("  version=1   # trailing comment", "version=1");
        assert_eq!(parse(&stripped).unwrap().digest(), base);

        // Reverse the key order inside every class and the order of classes.
        let mut blocks: Vec<String> = Policy::DEFAULT_TOML
            .split("\n[[class]]\n")
            .skip(1)
            .map(|block| {
                let mut keys: Vec<&str> = block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                keys.reverse();
                format!("[[class]]\n{}\n", keys.join("\n"))
            })
            .collect();
        blocks.reverse();
        let shuffled = format!("version = 1\n{}", blocks.concat());
        let reparsed = parse(&shuffled).unwrap();
        assert_ne!(
            reparsed.classes()[0].name(),
            Policy::default_policy().unwrap().classes()[0].name()
        );
        assert_eq!(reparsed.digest(), base);
    }

    #[test]
    fn digest_ignores_spelled_out_defaults_and_duration_spelling() {
        let base = parse(ONE_CLASS).unwrap().digest();
        let spelled = format!(
            "{}purge_window = \"30 day\"\nkeys = \"blinded\"\nuntil_account_closure = false\n",
            edit(ONE_CLASS, "retain", "retain = '060   days'")
        );
        assert_eq!(parse(&spelled).unwrap().digest(), base);
    }

    #[test]
    fn digest_changes_on_every_semantic_change() {
        let base_text = format!("{WRITE_CLASS}{}", ONE_CLASS.replace("version = 1\n", ""));
        let base = parse(&base_text).unwrap();
        let mutations: Vec<String> = vec![
            edit(&base_text, "name = \"alpha\"", "name = \"alpha2\""),
            edit(&base_text, "role = \"controller\"", "role = \"processor\""),
            edit(
                &base_text,
                "clock = \"account_closure\"",
                "clock = \"marketing_opt_out\"",
            ),
            edit(
                &base_text,
                "clock = \"account_closure\"",
                "clock = \"write\"",
            ),
            edit(&base_text, "retain = \"60 days\"", "retain = \"61 days\""),
            edit(&base_text, "retain = \"60 days\"", "retain = \"60 weeks\""),
            edit(&base_text, "retain = \"90 days\"", ""),
            format!("{base_text}purge_window = \"31 days\"\n"),
            format!("{base_text}purge_window = \"30 weeks\"\n"),
            edit(
                &base_text,
                "on_deletion_request = \"erase_now\"",
                "on_deletion_request = \"retain_until_deadline\"",
            ),
            edit(
                &base_text,
                "max_customer_ttl",
                "max_customer_ttl = \"29 days\"",
            ),
            edit(&base_text, "max_customer_ttl", ""),
            edit(
                &base_text,
                "max_customer_ttl",
                "max_customer_ttl = \"30 days\"\nuntil_account_closure = true",
            ),
            format!("{base_text}keys = \"ordered\"\n"),
            edit(
                &base_text,
                "legal_basis = \"contract\"",
                "legal_basis = \"contract.\"",
            ),
            ONE_CLASS.to_owned(),
            format!(
                "{base_text}{}",
                ONE_CLASS
                    .replace("version = 1\n", "")
                    .replace("alpha", "beta")
            ),
        ];
        let mut seen = vec![base.digest()];
        for (i, text) in mutations.iter().enumerate() {
            let policy = parse(text).unwrap_or_else(|e| panic!("mutation {i}: {e}"));
            assert_ne!(policy, base, "mutation {i} changed nothing");
            let digest = policy.digest();
            assert!(
                !seen.contains(&digest),
                "mutation {i} did not change the digest"
            );
            seen.push(digest);
        }
    }

    #[test]
    fn digest_changes_when_the_clause_changes() {
        let text = edit(ONE_CLASS, "clause", "clause = 'Heading: \"quote!\"'");
        assert_ne!(
            parse(&text).unwrap().digest(),
            parse(ONE_CLASS).unwrap().digest()
        );
    }

    #[test]
    fn digest_encoding_is_pinned() {
        // Encoding version 1 of ONE_CLASS. If this changes, the digest format
        // changed: bump DIGEST_ENCODING_VERSION and note it in docs/retention.md.
        let hex: String = parse(ONE_CLASS)
            .unwrap()
            .digest()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "c09c9fbb4731cd8ca457f3c0125cd3ce43dea15a1ea5696dfef589bffd9ef103"
        );
    }

    // ---- Never panics ----

    fn floor_char_boundary(s: &str, mut i: usize) -> usize {
        i = i.min(s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    fn check_location(text: &str, result: &Result<Policy, PolicyError>) {
        if let Err(e) = result {
            let (line, column) = e.location().unwrap();
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e}");
            assert!(column >= 1, "{e}");
            let _ = e.to_string();
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(text in any::<String>()) {
            let result = Policy::from_toml_str(&text, "fuzz");
            check_location(&text, &result);
        }

        #[test]
        fn parser_never_panics_on_toml_like_text(text in "[\\[\\]a-z_=\"' \n0-9#.{},]{0,200}") {
            let result = Policy::from_toml_str(&text, "fuzz");
            check_location(&text, &result);
        }

        #[test]
        fn parser_never_panics_on_mutated_default_policy(
            at in 0usize..Policy::DEFAULT_TOML.len(),
            cut in 0usize..40,
            insert in "\\PC{0,12}",
        ) {
            let src = Policy::DEFAULT_TOML;
            let start = floor_char_boundary(src, at);
            let end = floor_char_boundary(src, start + cut);
            let text = format!("{}{insert}{}", &src[..start], &src[end..]);
            let result = Policy::from_toml_str(&text, "fuzz");
            check_location(&text, &result);
        }

        #[test]
        fn retention_display_round_trips(
            count in 0u32..=7_304_484,
            unit in prop_oneof![
                Just(RetentionUnit::Days),
                Just(RetentionUnit::Weeks),
                Just(RetentionUnit::Months),
                Just(RetentionUnit::Years),
            ],
        ) {
            if let Ok(r) = Retention::new(count, unit) {
                let shown = r.to_string();
                prop_assert_eq!(shown.parse::<Retention>(), Ok(r));
                prop_assert_eq!(r.count(), count);
                prop_assert_eq!(r.unit(), unit);
            }
        }

        #[test]
        fn retention_add_to_is_monotonic(
            secs in 0i64..253_000_000_000,
            a in 0u32..2_000,
            b in 0u32..2_000,
        ) {
            let start = Timestamp::from_second(secs).unwrap();
            let (lo, hi) = (a.min(b), a.max(b));
            for unit in [RetentionUnit::Days, RetentionUnit::Months, RetentionUnit::Years] {
                let lo = Retention::new(lo, unit).unwrap().add_to(start);
                let hi = Retention::new(hi, unit).unwrap().add_to(start);
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    prop_assert!(lo <= hi);
                    prop_assert!(lo >= start);
                }
            }
        }
    }
}
