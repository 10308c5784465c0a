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

/// The policy text `text` with every class's purge window set to `days`
/// days: a `purge_window` line of a class is replaced where it stands, and
/// added under the class's `[[class]]` header where the class has none.
/// The result is read back to check that every class got exactly that
/// window.
pub(crate) fn with_purge_window(text: &str, days: u32) -> Result<String, String> {
    let line = format!("purge_window = \"{days} days\"");
    let is_header = |l: &str| l.split('#').next().is_some_and(|l| l.trim() == "[[class]]");
    let is_window = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix("purge_window")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let mut out: Vec<String> = Vec::new();
    // Where the current class's header is in `out`, and whether the class
    // had a window of its own.
    let mut class: Option<(usize, bool)> = None;
    let close = |out: &mut Vec<String>, class: Option<(usize, bool)>| {
        if let Some((header, false)) = class {
            out.insert(header + 1, line.clone());
        }
    };
    for l in text.lines() {
        if is_header(l) {
            close(&mut out, class.take());
            class = Some((out.len(), false));
            out.push(l.to_string());
        } else if l.trim_start().starts_with('[') {
            // Any other table ends the class (the format has none today).
            close(&mut out, class.take());
            out.push(l.to_string());
        } else if let Some((header, _)) = class.filter(|_| is_window(l)) {
            class = Some((header, true));
            out.push(line.clone());
        } else {
            out.push(l.to_string());
        }
    }
    close(&mut out, class.take());
    let mut result = out.join("\n");
    result.push('\n');
    let raw: RawPolicy =
        toml::from_str(&result).map_err(|e| format!("the policy with {days}-day windows: {e}"))?;
    let want = format!("{days} days");
    if let Some(c) = raw
        .class
        .iter()
        .find(|c| c.purge_window.as_deref() != Some(want.as_str()))
    {
        return Err(format!(
            "class {}: purge window {:?} after setting every class's to {want}",
            c.name, c.purge_window
        ));
    }
    Ok(result)
}

/// The purge timeline as docs/design.md ("The deletion timeline") states it,
/// computed here from the policy's shortest purge window, not asked of the
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// P = min(1 day, Wmin / 4): how often the epoch key rotates.
    pub(crate) rotation: SignedDuration,
    /// L = (Wmin − P) / 2: how long an epoch key lives from its start.
    pub(crate) epoch_lifetime: SignedDuration,
    /// Wmin: the shortest purge window.
    pub(crate) min_window: SignedDuration,
}

impl Timeline {
    pub(crate) fn of(classes: &[ClassSpec]) -> Timeline {
        let min_window = classes
            .iter()
            .map(|c| c.purge_window)
            .min()
            .unwrap_or(SignedDuration::from_hours(24 * 30));
        let wmin = min_window.as_secs();
        let rotation = (24 * 3_600).min(wmin / 4);
        Timeline {
            rotation: SignedDuration::from_secs(rotation),
            epoch_lifetime: SignedDuration::from_secs((wmin - rotation) / 2),
            min_window,
        }
    }
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

#[test]
fn every_class_gets_the_purge_window_asked_for() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default.toml");
    let text = std::fs::read_to_string(path).expect("the default policy");
    let short = with_purge_window(&text, 1).expect("transformed");
    let raw: RawPolicy = toml::from_str(&text).expect("parse");
    let classes = raw.class.len();
    assert!(classes > 1);
    assert_eq!(short.matches("purge_window = \"1 days\"").count(), classes);
    // Comments naming the field are left alone.
    assert!(short.contains("#   purge_window "));
    // A class without the line gets one; another key is not mistaken for it.
    let text = "version = 1\n[[class]]\nname = \"a\"\nclock = \"write\"\non_deletion_request = \"erase_now\"\npurge_window_note = 3\n\n[[class]]\nname = \"b\"\nclock = \"write\"\npurge_window  =  \"30 days\"\non_deletion_request = \"erase_now\"\n";
    let short = with_purge_window(text, 3).expect("transformed");
    assert_eq!(
        short.matches("purge_window = \"3 days\"").count(),
        2,
        "{short}"
    );
    assert!(short.contains("purge_window_note = 3"), "{short}");
    assert!(!short.contains("30 days"), "{short}");
}

#[test]
fn the_timeline_follows_the_shortest_window() {
    let spec = |days: i64| ClassSpec {
        name: format!("w{days}"),
        clock: ClockKind::Write,
        retain: None,
        purge_window: SignedDuration::from_hours(24 * days),
        erase_now: true,
        until_account_closure: false,
    };
    let h = SignedDuration::from_hours;
    let t = Timeline::of(&[spec(30), spec(60)]);
    assert_eq!((t.rotation, t.epoch_lifetime), (h(24), h(348)));
    let t = Timeline::of(&[spec(30), spec(3)]);
    assert_eq!((t.rotation, t.epoch_lifetime), (h(18), h(27)));
    let t = Timeline::of(&[spec(1)]);
    assert_eq!((t.rotation, t.epoch_lifetime), (h(6), h(9)));
}
