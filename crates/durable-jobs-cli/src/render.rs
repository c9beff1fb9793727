//! Text for people: aligned tables, times as dates, statuses in words.

use std::time::{Duration, UNIX_EPOCH};

use durable_jobs::inspect::{InstancePage, StatusCounts};
use durable_jobs::{DeadLetter, Status};
use serde_json::Value;

/// Longest text a table cell shows; the rest is in `--json`.
const MAX_CELL: usize = 100;

/// Rows of text printed in columns, each as wide as its widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// A table without headers (label and value pairs).
    pub fn plain() -> Table {
        Table { rows: Vec::new() }
    }

    /// Adds a row; each cell on one line, cut at [`MAX_CELL`] characters.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    /// The table as lines, columns two spaces apart, the last one not padded.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, text) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    let pad = widths[i] - text.chars().count();
                    line.push_str(text);
                    line.push_str(&" ".repeat(pad + 2));
                } else {
                    line.push_str(text);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One line of at most [`MAX_CELL`] characters.
fn cell(text: &str) -> String {
    let line = text.replace(['\n', '\r', '\t'], " ");
    if line.chars().count() <= MAX_CELL {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// A time in ms since the epoch as a UTC date, to the second.
pub fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

/// An optional time: a date, or `-`.
pub fn optional_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), time)
}

/// A status in words, with its details.
pub fn status(status: &Status) -> String {
    match status {
        Status::Active => "active".into(),
        Status::Paused { paused_at } => format!("paused since {}", time(*paused_at)),
        Status::Stopped {
            stopped_at,
            reason: Some(reason),
        } => format!("stopped at {} ({reason})", time(*stopped_at)),
        Status::Stopped { stopped_at, .. } => format!("stopped at {}", time(*stopped_at)),
        Status::Error { error_at, error } => format!("error at {}: {error}", time(*error_at)),
    }
}

/// The jobs, by kind and name.
pub fn jobs<'a>(jobs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut table = Table::new(&["KIND", "NAME"]);
    for (kind, name) in jobs {
        table.row(vec![kind.to_string(), name.to_string()]);
    }
    table.render()
}

/// A page of instances, and how to ask for the next one.
pub fn instances(page: &InstancePage) -> String {
    if page.instances.is_empty() && page.next.is_none() {
        return "no instances\n".into();
    }
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "PENDING",
        "DEAD LETTERS",
        "FAILED BATCHES",
        "UPDATED",
    ]);
    for s in &page.instances {
        table.row(vec![
            s.id.to_string(),
            s.status.name().to_string(),
            s.pending.to_string(),
            s.dead_letters.to_string(),
            s.failed_batches.to_string(),
            time(s.updated_at),
        ]);
    }
    let mut out = table.render();
    if let Some(next) = &page.next {
        out.push_str(&format!("more: --after {next}\n"));
    }
    out
}

/// A job's instances per status.
pub fn counts(counts: &StatusCounts) -> String {
    let mut table = Table::plain();
    for (label, n) in [
        ("active", counts.active),
        ("paused", counts.paused),
        ("stopped", counts.stopped),
        ("error", counts.error),
        ("total", counts.total()),
        ("with dead letters", counts.with_dead_letters),
        ("with failed batches", counts.with_failed_batches),
    ] {
        table.row(vec![label.to_string(), n.to_string()]);
    }
    table.render()
}

/// Dead letters, and how to ask for the next ones when the page is full.
pub fn dead_letters(items: &[DeadLetter], limit: u32) -> String {
    if items.is_empty() {
        return "no dead letters\n".into();
    }
    let mut table = Table::new(&["SEQ", "EVENT ID", "ATTEMPTS", "DEAD AT", "ERROR"]);
    for d in items {
        table.row(vec![
            d.seq.to_string(),
            d.event_id.clone(),
            d.attempts.to_string(),
            time(d.dead_at),
            d.error.clone(),
        ]);
    }
    let mut out = table.render();
    if let Some(last) = items.last().filter(|_| items.len() >= limit as usize) {
        out.push_str(&format!("more: --after {}\n", last.seq));
    }
    out
}

/// `camelCase` as words: `deadLetters` → `dead letters`.
fn words(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A field's value for people: times as dates, statuses in words, text as is, the rest
/// as compact JSON.
fn value(key: &str, value: &Value) -> String {
    if key == "status" {
        if let Ok(parsed) = serde_json::from_value::<Status>(value.clone()) {
            return status(&parsed);
        }
    }
    let is_time = key.ends_with("At") || key.ends_with("Since") || key == "alarm";
    match value {
        Value::Null => "-".into(),
        Value::Number(n) if is_time => n.as_i64().map_or_else(|| n.to_string(), time),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The fields of a JSON object as label and value rows, `skip` left out: the status
/// first, as what one looks for, then the rest by name.
pub fn fields(table: &mut Table, object: &Value, skip: &[&str]) {
    if let Value::Object(map) = object {
        let (status, rest): (Vec<_>, Vec<_>) = map
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .partition(|(k, _)| k.as_str() == "status");
        for (key, v) in status.into_iter().chain(rest) {
            table.row(vec![words(key), value(key, v)]);
        }
    }
}

/// A state after the fields: pretty JSON on lines of its own.
pub fn state(state: &Value) -> String {
    if state.is_null() {
        return String::new();
    }
    let pretty = serde_json::to_string_pretty(state).unwrap_or_else(|_| state.to_string());
    format!("state:\n{pretty}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(table.render(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn values_read_as_words() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(words("deadLetters"), "dead letters");
        assert_eq!(value("retryAt", &json!(1_000)), "1970-01-01T00:00:01Z");
        assert_eq!(value("retrying", &Value::Null), "-");
        assert_eq!(
            value("status", &json!({ "status": "paused", "pausedAt": 0 })),
            "paused since 1970-01-01T00:00:00Z"
        );
        assert_eq!(cell("a\nb"), "a b");
        assert_eq!(cell(&"x".repeat(200)).chars().count(), MAX_CELL);
    }
}
