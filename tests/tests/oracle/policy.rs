//! The oracle's own reading of `policy/default.toml` and its own calendar
//! arithmetic: nothing here calls the engine's policy or deadline code.

use std::path::Path;

use serde::Deserialize;
use shredkv::jiff::tz::TimeZone;
use shredkv::jiff::{SignedDuration, Span, Timestamp};

/// What starts a class's retention clock, as the policy file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockKind {
    /// The write itself (kept as the customer instructs).
    Write,
    /// The account's closure.
    AccountClosure,
    /// The subject's marketing opt-out.
    MarketingOptOut,
    /// An operator's release.
    ManualRelease,
}

/// A calendar period: "N days|weeks|months|years".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Days(i64),
    Weeks(i64),
    Months(i64),
    Years(i64),
}

impl Period {
    /// Parses "60 days", "1 week", "7 years".
    pub(crate) fn parse(text: &str) -> Result<Period, String> {
        let mut words = text.split_whitespace();
        let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("`{text}` is not `N unit`"));
        };
        let n: i64 = count
            .parse()
            .map_err(|_| format!("`{count}` in `{text}` is not a whole number"))?;
        match unit.trim_end_matches('s') {
            "day" => Ok(Period::Days(n)),
            "week" => Ok(Period::Weeks(n)),
            "month" => Ok(Period::Months(n)),
            "year" => Ok(Period::Years(n)),
            other => Err(format!("unknown unit `{other}` in `{text}`")),
        }
    }

    /// `at` plus this period on the UTC calendar (month ends clamp).
    pub(crate) fn after(self, at: Timestamp) -> Timestamp {
        let span = match self {
            Period::Days(n) => Span::new().days(n),
            Period::Weeks(n) => Span::new().weeks(n),
            Period::Months(n) => Span::new().months(n),
            Period::Years(n) => Span::new().years(n),
        };
        at.to_zoned_datetime(TimeZone::UTC)
            .checked_add(span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX)
    }

    /// The period as a fixed duration (days and weeks only).
    pub(crate) fn fixed(self) -> Option<SignedDuration> {
        match self {
            Period::Days(n) => Some(SignedDuration::from_hours(24 * n)),
            Period::Weeks(n) => Some(SignedDuration::from_hours(24 * 7 * n)),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct RawPolicy {
    version: u32,
    class: Vec<RawClass>,
}

#[derive(Deserialize)]
struct RawClass {
    name: String,
    clock: String,
    retain: Option<String>,
    purge_window: Option<String>,
    on_deletion_request: String,
    #[serde(default)]
    until_account_closure: bool,
}

/// One class, as the oracle understands it.
#[derive(Debug, Clone)]
pub(crate) struct ClassSpec {
    pub(crate) name: String,
    pub(crate) clock: ClockKind,
    pub(crate) retain: Option<Period>,
    /// W: every key that could decrypt erased data is gone within it.
    pub(crate) purge_window: SignedDuration,
    /// A deletion request erases it at once (else it is kept to its deadline).
    pub(crate) erase_now: bool,
    pub(crate) until_account_closure: bool,
}

/// Reads the policy file at `path`.
pub(crate) fn load(path: &Path) -> Result<Vec<ClassSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: RawPolicy = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if raw.version != 1 {
        return Err(format!("policy version {} is not 1", raw.version));
    }
    raw.class
        .into_iter()
        .map(|c| {
            let clock = match c.clock.as_str() {
                "write" => ClockKind::Write,
                "account_closure" => ClockKind::AccountClosure,
                "marketing_opt_out" => ClockKind::MarketingOptOut,
                "manual_release" => ClockKind::ManualRelease,
                other => return Err(format!("class {}: unknown clock `{other}`", c.name)),
            };
            let retain = c.retain.as_deref().map(Period::parse).transpose()?;
            let window = Period::parse(c.purge_window.as_deref().unwrap_or("30 days"))?;
            let purge_window = window
                .fixed()
                .ok_or_else(|| format!("class {}: purge window must be days or weeks", c.name))?;
            let erase_now = match c.on_deletion_request.as_str() {
                "erase_now" => true,
                "retain_until_deadline" => false,
                other => return Err(format!("class {}: unknown deletion rule `{other}`", c.name)),
            };
            Ok(ClassSpec {
                name: c.name,
                clock,
                retain,
                purge_window,
                erase_now,
                until_account_closure: c.until_account_closure,
            })
        })
        .collect()
}

#[test]
fn periods_follow_the_utc_calendar() {
    let t: Timestamp = "2028-01-31T10:00:00Z".parse().expect("time");
    assert_eq!(
        Period::parse("1 month").expect("parse").after(t),
        "2028-02-29T10:00:00Z".parse::<Timestamp>().expect("time")
    );
    assert_eq!(
        Period::parse("3 days").expect("parse").after(t),
        "2028-02-03T10:00:00Z".parse::<Timestamp>().expect("time")
    );
    let leap: Timestamp = "2028-02-29T23:30:00Z".parse().expect("time");
    assert_eq!(
        Period::parse("7 years").expect("parse").after(leap),
        "2035-02-28T23:30:00Z".parse::<Timestamp>().expect("time")
    );
    assert!(Period::parse("7 fortnights").is_err());
}
