//! Cron schedules (`args.cron`, `args.tz`; DESIGN §11): when the runs of a cron job are due.
//!
//! An expression has 5 fields (`min hour dom mon dow`) or 6 with the seconds first
//! (`sec min hour dom mon dow`); names (`MON`, `JAN`), ranges, steps, lists and the nicknames
//! (`@hourly`, `@daily`, …) are what [`croner`] accepts; a day of month and a day of week
//! both given match either, as in vixie cron. The times are wall-clock times of `tz`, an IANA
//! zone name (UTC when absent); DST gaps and repeats are [`croner`]'s to handle.
//!
//! The controller validates with [`Schedule::of`] (a bad expression or zone is refused at
//! routing, naming the field) and the agent computes the due times with
//! [`Schedule::next_after`].

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Longest `args.cron` accepted, in bytes: ample for any real expression.
pub const MAX_CRON_LEN: usize = 256;

/// Longest `args.tz` accepted, in bytes (the longest IANA name has 32).
pub const MAX_TZ_LEN: usize = 64;

/// At most this many skipped occurrences are counted for one run ([`Schedule::count_between`]):
/// a run that overlaps more is reported as having skipped this many.
pub const MAX_COUNTED: u64 = 100_000;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

/// Why `args.cron` or `args.tz` was refused; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("args.cron: `{expr}` is not a cron expression: {reason}")]
    Expression { expr: String, reason: String },
    #[error("args.cron: `{0}` never fires")]
    Never(String),
    #[error("args.tz: `{0}` is not an IANA time zone")]
    Zone(String),
    #[error("args.tz is given without args.cron: a time zone is only for a cron schedule")]
    ZoneWithoutCron,
    #[error("args.{field}: {len} bytes is too long: at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expr == other.expr && self.tz == other.tz
    }
}

impl Schedule {
    /// The schedule of a job's `args.cron` and `args.tz`: `None` without `cron`.
    pub fn of(cron: Option<&str>, tz: Option<&str>) -> Result<Option<Schedule>, InvalidSchedule> {
        match (cron, tz) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(InvalidSchedule::ZoneWithoutCron),
            (Some(cron), tz) => Schedule::parse(cron, tz.unwrap_or("UTC")).map(Some),
        }
    }

    /// Parses an expression and a zone name, checking their lengths and that the expression
    /// fires at all (`0 0 30 2 *`, February 30th, never does).
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, InvalidSchedule> {
        too_long("cron", expr, MAX_CRON_LEN)?;
        too_long("tz", tz, MAX_TZ_LEN)?;
        let tz: Tz = tz
            .parse()
            .map_err(|_| InvalidSchedule::Zone(tz.to_owned()))?;
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| InvalidSchedule::Expression {
                expr: expr.to_owned(),
                reason: lowercase_first(e.to_string().trim_end_matches('.')),
            })?;
        let schedule = Schedule {
            expr: expr.to_owned(),
            cron,
            tz,
        };
        match schedule.next_after(Utc::now()) {
            Some(_) => Ok(schedule),
            None => Err(InvalidSchedule::Never(expr.to_owned())),
        }
    }

    /// The first due time strictly after `after`, or `None` when there is none (before the
    /// year 5000, where the search stops).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// How many due times lie in `(after, until]`, counting at most [`MAX_COUNTED`].
    pub fn count_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
        let mut count = 0;
        let mut at = after;
        while count < MAX_COUNTED {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        count
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone's IANA name.
    pub fn tz(&self) -> &str {
        self.tz.name()
    }
}

fn too_long(field: &'static str, value: &str, max: usize) -> Result<(), InvalidSchedule> {
    if value.len() > max {
        return Err(InvalidSchedule::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// croner's messages start with a capital ("Invalid pattern: …"); ours are lowercase.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn schedule(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, tz).unwrap()
    }

    #[test]
    fn five_fields_are_minutes_first() {
        let s = schedule("*/5 * * * *", "UTC");
        let next = s.next_after(utc(2026, 3, 1, 10, 2, 30)).unwrap();
        assert_eq!(next, utc(2026, 3, 1, 10, 5, 0));
    }

    #[test]
    fn six_fields_are_seconds_first() {
        let s = schedule("*/10 * * * * *", "UTC");
        assert_eq!(
            s.next_after(utc(2026, 3, 1, 10, 2, 30)).unwrap(),
            utc(2026, 3, 1, 10, 2, 40)
        );
        let every_second = schedule("* * * * * *", "UTC");
        assert_eq!(
            every_second.next_after(utc(2026, 3, 1, 10, 2, 30)).unwrap(),
            utc(2026, 3, 1, 10, 2, 31)
        );
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = schedule("0 * * * *", "UTC");
        let at = utc(2026, 3, 1, 10, 0, 0);
        assert_eq!(s.next_after(at).unwrap(), utc(2026, 3, 1, 11, 0, 0));
    }

    #[test]
    fn seven_fields_are_refused() {
        let err = Schedule::parse("0 0 0 1 1 * 2030", "UTC").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("args.cron: `0 0 0 1 1 * 2030` is not a cron expression: "),
            "{err}"
        );
    }

    #[test]
    fn too_few_fields_are_named() {
        let err = Schedule::parse("*/5 * *", "UTC").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("args.cron: `*/5 * *` is not a cron expression: invalid pattern"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_and_garbage_are_refused() {
        for bad in [
            "61 * * * *",
            "* 25 * * *",
            "* * * 13 *",
            "hello",
            "",
            "* * * * * * * *",
        ] {
            let err = Schedule::parse(bad, "UTC").unwrap_err().to_string();
            assert!(err.starts_with("args.cron: "), "{bad}: {err}");
        }
    }

    #[test]
    fn an_expression_that_never_fires_is_refused() {
        let err = Schedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(err, InvalidSchedule::Never("0 0 30 2 *".into()));
        assert_eq!(err.to_string(), "args.cron: `0 0 30 2 *` never fires");
    }

    #[test]
    fn an_unknown_zone_is_named() {
        let err = Schedule::parse("* * * * *", "Mars/Base").unwrap_err();
        assert_eq!(
            err.to_string(),
            "args.tz: `Mars/Base` is not an IANA time zone"
        );
    }

    #[test]
    fn overlong_fields_are_refused_without_echoing_them() {
        let long = "*".repeat(MAX_CRON_LEN + 1);
        let err = Schedule::parse(&long, "UTC").unwrap_err().to_string();
        assert_eq!(err, "args.cron: 257 bytes is too long: at most 256");
        let err = Schedule::parse("* * * * *", &"A".repeat(65))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "args.tz: 65 bytes is too long: at most 64");
    }

    #[test]
    fn zone_defaults_to_utc_and_needs_cron() {
        let s = Schedule::of(Some("0 3 * * *"), None).unwrap().unwrap();
        assert_eq!(s.tz(), "UTC");
        assert_eq!(Schedule::of(None, None).unwrap(), None);
        assert_eq!(
            Schedule::of(None, Some("Europe/Berlin")).unwrap_err(),
            InvalidSchedule::ZoneWithoutCron
        );
    }

    #[test]
    fn times_are_wall_clock_times_of_the_zone() {
        // 09:00 in Berlin is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
        let s = schedule("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc(2026, 1, 15, 0, 0, 0)).unwrap(),
            utc(2026, 1, 15, 8, 0, 0)
        );
        assert_eq!(
            s.next_after(utc(2026, 7, 15, 0, 0, 0)).unwrap(),
            utc(2026, 7, 15, 7, 0, 0)
        );
    }

    #[test]
    fn berlin_across_the_spring_forward_gap() {
        // 2026-03-29: Berlin's clocks jump from 02:00 to 03:00 (01:00 UTC). Hourly runs go on
        // one real hour apart, with none lost or doubled.
        let s = schedule("0 * * * *", "Europe/Berlin");
        let mut at = utc(2026, 3, 28, 23, 30, 0);
        let mut fires = Vec::new();
        for _ in 0..4 {
            at = s.next_after(at).unwrap();
            fires.push(at);
        }
        let gaps: Vec<i64> = fires
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        assert_eq!(gaps, [60, 60, 60], "{fires:?}");
        assert_eq!(fires[0], utc(2026, 3, 29, 0, 0, 0));
    }

    #[test]
    fn a_daily_job_in_the_gap_still_runs_once_that_day() {
        // 02:30 does not exist in Berlin on 2026-03-29; the run still happens that day, once.
        let s = schedule("30 2 * * *", "Europe/Berlin");
        let first = s.next_after(utc(2026, 3, 28, 12, 0, 0)).unwrap();
        let second = s.next_after(first).unwrap();
        assert_eq!(first.date_naive(), utc(2026, 3, 29, 0, 0, 0).date_naive());
        assert_eq!(second, utc(2026, 3, 30, 0, 30, 0));
    }

    #[test]
    fn a_daily_job_in_the_repeated_hour_runs_once_that_day() {
        // 2026-10-25: Berlin's clocks go back from 03:00 to 02:00, so 02:30 happens twice.
        let s = schedule("30 2 * * *", "Europe/Berlin");
        let day =
            |d: u32| s.count_between(utc(2026, 10, d - 1, 12, 0, 0), utc(2026, 10, d, 12, 0, 0));
        assert_eq!(day(25), 1);
        assert_eq!(day(26), 1);
    }

    #[test]
    fn count_between_counts_the_due_times_in_a_half_open_span() {
        let s = schedule("* * * * * *", "UTC");
        let from = utc(2026, 3, 1, 10, 0, 0);
        assert_eq!(s.count_between(from, from), 0);
        assert_eq!(s.count_between(from, utc(2026, 3, 1, 10, 0, 5)), 5);
        let hourly = schedule("0 * * * *", "UTC");
        assert_eq!(hourly.count_between(from, utc(2026, 3, 1, 10, 59, 59)), 0);
        assert_eq!(hourly.count_between(from, utc(2026, 3, 2, 10, 0, 0)), 24);
    }

    /// A cron-like expression: 4 to 8 fields of the tokens croner knows, in or out of range.
    fn cron_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let field = prop_oneof![
            Just("*".to_owned()),
            Just("?".to_owned()),
            Just("L".to_owned()),
            Just("5L".to_owned()),
            Just("15W".to_owned()),
            Just("MON#2".to_owned()),
            Just("JAN-MAR".to_owned()),
            (0u32..100).prop_map(|n| n.to_string()),
            (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
            (0u32..70).prop_map(|n| format!("*/{n}")),
            (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a},{b}")),
            "[0-9A-Z*/,#?LW-]{1,6}",
        ];
        proptest::collection::vec(field, 4..9).prop_map(|f| f.join(" "))
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(expr in ".{0,40}", tz in ".{0,20}", secs in 0i64..100_000_000_000) {
            if let Ok(s) = Schedule::parse(&expr, &tz) {
                let at = DateTime::from_timestamp(secs, 0).unwrap();
                let _ = s.next_after(at);
            }
        }

        #[test]
        fn accepted_expressions_fire_strictly_later(
            expr in cron_like(),
            tz in proptest::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
            secs in 0i64..10_000_000_000,
        ) {
            if let Ok(s) = Schedule::parse(&expr, tz) {
                let at = DateTime::from_timestamp(secs, 0).unwrap();
                if let Some(next) = s.next_after(at) {
                    proptest::prop_assert!(next > at, "{expr}: {next} is not after {at}");
                }
            }
        }
    }

    #[test]
    fn count_between_stops_at_its_cap() {
        let s = schedule("* * * * * *", "UTC");
        let from = utc(2026, 3, 1, 0, 0, 0);
        assert_eq!(
            s.count_between(from, utc(2026, 3, 10, 0, 0, 0)),
            MAX_COUNTED
        );
    }
}
