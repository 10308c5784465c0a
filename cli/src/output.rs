//! Output helpers: aligned tables, JSON documents, time and byte formatting,
//! progress bars.
//!
//! Human output goes to stdout as aligned tables; `--json` prints one JSON
//! document instead (JSON Lines for `export`). Notes and progress go to
//! stderr, so stdout stays parseable. The JSON of the engine's reports is
//! their own serialization (shredkv's `serde` feature); a command adds
//! fields of its own next to theirs where it knows more (a class's name, a
//! backend).

use std::io::{IsTerminal as _, Write as _};

use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use shredkv::{SubjectKind, SubjectState};

/// A table printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headers (all left-aligned).
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
            right: vec![false; headers.len()],
        }
    }

    /// Right-aligns the columns at these indexes (numbers).
    pub(crate) fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(slot) = self.right.get_mut(c) {
                *slot = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width.saturating_sub(cell.chars().count());
                if self.right.get(i).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table to stdout.
    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

/// A key/value list as a two-column table without headers.
pub(crate) fn fields_text(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

/// Prints a key/value list as a two-column table without headers.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    print!("{}", fields_text(fields));
}

/// Prints one JSON document to stdout.
///
/// # Errors
/// Serializing `value` or writing to stdout failing.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// `report` as a JSON object, with `extras` (what the command adds to the
/// report) set next to its fields.
///
/// # Errors
/// `report` failing to serialize, or not serializing as an object.
pub(crate) fn json_with<'a>(
    report: &impl Serialize,
    extras: impl IntoIterator<Item = (&'a str, Value)>,
) -> anyhow::Result<Value> {
    let mut doc = serde_json::to_value(report)?;
    let Some(fields) = doc.as_object_mut() else {
        anyhow::bail!("a report serialized as {doc}, not as a JSON object");
    };
    for (name, value) in extras {
        fields.insert(name.to_string(), value);
    }
    Ok(doc)
}

/// A timestamp as RFC 3339 to the second, UTC.
pub(crate) fn time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An optional timestamp, `-` when absent.
pub(crate) fn opt_time(ts: Option<Timestamp>) -> String {
    ts.map_or_else(|| "-".to_string(), time)
}

/// How long from `from` until `to`, in calendar words ("60 days",
/// "3 years 1 day"); "now" when `to` is not later.
pub(crate) fn span_words(from: Timestamp, to: Timestamp) -> String {
    if to <= from {
        return "now".to_string();
    }
    let utc = jiff::tz::TimeZone::UTC;
    let (start, end) = (
        from.to_zoned_datetime(utc.clone()),
        to.to_zoned_datetime(utc),
    );
    // Under a year in days ("60 days"), else in years, months and days;
    // rounded to the nearest day.
    let diff = |largest: jiff::Unit| {
        start.until(
            jiff::ZonedDateTimeDifference::new(&end)
                .largest(largest)
                .smallest(jiff::Unit::Day)
                .mode(jiff::RoundMode::HalfExpand),
        )
    };
    let Ok(mut span) = diff(jiff::Unit::Year) else {
        return "-".to_string();
    };
    if span.get_years() == 0 {
        let Ok(days) = diff(jiff::Unit::Day) else {
            return "-".to_string();
        };
        span = days;
    }
    let mut parts = Vec::new();
    for (n, unit) in [
        (i64::from(span.get_years()), "year"),
        (i64::from(span.get_months()), "month"),
        (i64::from(span.get_days()), "day"),
    ] {
        match n {
            0 => {}
            1 => parts.push(format!("1 {unit}")),
            n => parts.push(format!("{n} {unit}s")),
        }
    }
    if parts.is_empty() {
        "today".to_string()
    } else {
        parts.join(" ")
    }
}

/// A byte count for humans (binary units).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut whole = n;
    let mut rem = 0;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        rem = whole % 1024;
        whole /= 1024;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{whole}.{} {name}", rem * 10 / 1024)
    }
}

/// The name of a subject kind in tables and JSON.
pub(crate) fn kind(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::Account => "account",
        SubjectKind::EndUser => "end_user",
    }
}

/// The name of a subject state in tables and JSON.
pub(crate) fn state(state: SubjectState) -> &'static str {
    match state {
        SubjectState::Active => "active",
        SubjectState::Restricted => "restricted",
        SubjectState::Erased => "erased",
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal
/// (pipes, CI, tests). `len` of `None` makes a counting spinner.
pub(crate) fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {pos} ({elapsed})") {
                bar.set_style(style);
            }
            bar.set_message(what.to_string());
            bar
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_right_aligns_numbers() {
        let mut table = Table::new(&["class", "records"]).right(&[1]);
        table.row(["invoices", "3"]);
        table.row(["message_content", "120"]);
        assert_eq!(
            table.render(),
            "class            records\ninvoices               3\nmessage_content      120\n"
        );
    }

    #[test]
    fn spans_read_in_calendar_words() {
        let t = |s: &str| s.parse::<Timestamp>().expect("timestamp");
        let start = t("2025-01-15T09:00:00Z");
        assert_eq!(span_words(start, start), "now");
        assert_eq!(span_words(start, t("2025-03-16T09:00:00Z")), "60 days");
        assert_eq!(
            span_words(start, t("2026-03-16T09:00:00Z")),
            "1 year 2 months 1 day"
        );
        assert_eq!(
            span_words(start, t("2028-01-16T09:00:00Z")),
            "3 years 1 day"
        );
        assert_eq!(span_words(start, t("2025-01-15T10:00:00Z")), "today");
        assert_eq!(
            span_words(t("2025-01-15T09:00:01Z"), t("2028-01-15T09:00:00Z")),
            "3 years"
        );
    }

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
