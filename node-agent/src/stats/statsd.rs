//! The statsd line format (DESIGN §7): `name:value|type[|@rate][|#tags]`, one metric per line,
//! several lines per level-10 block or UDP datagram. Pure functions, no I/O.
//!
//! The `statsd-parser` crate parses the standard types — counters `c`, gauges `g`, timers `ms`,
//! histograms `h` (and DogStatsD meters `m`, taken as counters) with their sample rate and tags.
//! Around it this module adds what statsd users rely on and the crate lacks:
//! - sets (`name:member|s`), counted by unique member;
//! - gauge deltas: a gauge value written with a sign (`+3`, `-2`) changes the last value
//!   instead of replacing it (so a negative gauge is set as `name:0|g` then `name:-5|g`);
//! - checks the crate does not make: a sample rate must be in (0, 1], a value finite, and
//!   every field after the type must be a rate (`@`) or tags (`#`).
//!
//! DogStatsD tags are accepted and ignored: the aggregated key is the name alone.

use statsd_parser::Metric as ParsedMetric;

/// Longest metric name accepted, in bytes.
pub const MAX_NAME: usize = 256;

/// The type of a statsd metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Timer,
    Histogram,
    Set,
}

impl Kind {
    /// The name in a stats batch (`type` of a metric).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Timer => "timer",
            Kind::Histogram => "histogram",
            Kind::Set => "set",
        }
    }
}

/// The value of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A counter increment, a gauge's new value, or a timer/histogram observation.
    Number(f64),
    /// A signed gauge value: added to the last value.
    Delta(f64),
    /// A set member.
    Member(&'a str),
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub value: Value<'a>,
    /// Sample rate in (0, 1]; 1 when not given.
    pub rate: f64,
}

/// Why a line is not a metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsdError {
    #[error("empty line")]
    Empty,
    #[error("no `:` between name and value")]
    NoValue,
    #[error("empty metric name")]
    NoName,
    #[error("metric name longer than {MAX_NAME} bytes")]
    LongName,
    #[error("no `|type` after the value")]
    NoType,
    #[error("unknown metric type `{0}`")]
    UnknownType(String),
    #[error("value `{0}` is not a finite number")]
    BadValue(String),
    #[error("sample rate `{0}` is not a number in (0, 1]")]
    BadRate(String),
    #[error("unexpected field `{0}` (expected `@rate` or `#tags`)")]
    BadField(String),
    #[error("empty set member")]
    EmptyMember,
}

/// The lines of a block that are not blank, each parsed.
pub fn parse_block(block: &str) -> impl Iterator<Item = Result<Sample<'_>, StatsdError>> {
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
}

/// Parses one line (surrounding whitespace ignored).
pub fn parse_line(line: &str) -> Result<Sample<'_>, StatsdError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(StatsdError::Empty);
    }
    let (name, rest) = line.split_once(':').ok_or(StatsdError::NoValue)?;
    if name.is_empty() {
        return Err(StatsdError::NoName);
    }
    if name.len() > MAX_NAME {
        return Err(StatsdError::LongName);
    }
    let mut fields = rest.split('|');
    let value = fields.next().unwrap_or_default();
    let kind = fields.next().ok_or(StatsdError::NoType)?;
    let rate = trailing_fields(fields)?;
    match kind {
        "s" if value.is_empty() => Err(StatsdError::EmptyMember),
        "s" => Ok(Sample {
            name,
            kind: Kind::Set,
            value: Value::Member(value),
            rate: 1.0,
        }),
        "g" if value.starts_with(['+', '-']) => Ok(Sample {
            name,
            kind: Kind::Gauge,
            value: Value::Delta(finite(value)?),
            rate,
        }),
        "c" | "g" | "ms" | "h" | "m" => standard(line, name, value, rate),
        other => Err(StatsdError::UnknownType(other.to_owned())),
    }
}

/// Checks the fields after the type; returns the sample rate (1 without one).
fn trailing_fields<'a>(fields: impl Iterator<Item = &'a str>) -> Result<f64, StatsdError> {
    let mut rate = 1.0;
    for field in fields {
        if let Some(text) = field.strip_prefix('@') {
            rate = text
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or_else(|| StatsdError::BadRate(text.to_owned()))?;
        } else if !field.starts_with('#') && !field.is_empty() {
            return Err(StatsdError::BadField(field.to_owned()));
        }
    }
    Ok(rate)
}

fn finite(text: &str) -> Result<f64, StatsdError> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| StatsdError::BadValue(text.to_owned()))
}

/// A line of a type the crate knows, parsed by it.
fn standard<'a>(
    line: &'a str,
    name: &'a str,
    value: &str,
    rate: f64,
) -> Result<Sample<'a>, StatsdError> {
    let bad_value = || StatsdError::BadValue(value.to_owned());
    // Lines starting `_sc` are DogStatsD service checks to the crate; not metrics here.
    if line.starts_with("_sc") {
        return Err(StatsdError::UnknownType("_sc".into()));
    }
    let parsed = statsd_parser::parse(line).map_err(|_| bad_value())?;
    let (kind, number) = match parsed.metric {
        ParsedMetric::Counter(c) => (Kind::Counter, c.value),
        ParsedMetric::Meter(m) => (Kind::Counter, m.value),
        ParsedMetric::Gauge(g) => (Kind::Gauge, g.value),
        ParsedMetric::Timing(t) => (Kind::Timer, t.value),
        ParsedMetric::Histogram(h) => (Kind::Histogram, h.value),
        ParsedMetric::ServiceCheck(_) => return Err(StatsdError::UnknownType("_sc".into())),
    };
    if !number.is_finite() {
        return Err(bad_value());
    }
    Ok(Sample {
        name,
        kind,
        value: Value::Number(number),
        rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> Sample<'_> {
        parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn counter() {
        let s = ok("requests:3|c");
        assert_eq!(
            (s.name, s.kind, s.value, s.rate),
            ("requests", Kind::Counter, Value::Number(3.0), 1.0)
        );
    }

    #[test]
    fn counter_with_sample_rate() {
        let s = ok("requests:1|c|@0.1");
        assert_eq!((s.kind, s.rate), (Kind::Counter, 0.1));
    }

    #[test]
    fn gauge_absolute_and_deltas() {
        assert_eq!(ok("temp:21.5|g").value, Value::Number(21.5));
        assert_eq!(ok("temp:+3|g").value, Value::Delta(3.0));
        assert_eq!(ok("temp:-2.5|g").value, Value::Delta(-2.5));
    }

    #[test]
    fn timers_histograms_and_meters() {
        assert_eq!(ok("db.query:12.5|ms").kind, Kind::Timer);
        assert_eq!(ok("size:100|h").kind, Kind::Histogram);
        assert_eq!(ok("hits:2|m").kind, Kind::Counter);
        assert_eq!(ok("db.query:-1|ms").value, Value::Number(-1.0));
    }

    #[test]
    fn sets_keep_the_member_text() {
        let s = ok("users:alice|s");
        assert_eq!((s.kind, s.value), (Kind::Set, Value::Member("alice")));
        assert_eq!(ok("ips:10.0.0.1|s").value, Value::Member("10.0.0.1"));
        assert_eq!(parse_line("users:|s"), Err(StatsdError::EmptyMember));
    }

    #[test]
    fn tags_are_accepted_and_ignored() {
        let s = ok("requests:1|c|@0.5|#host:a,env:prod");
        assert_eq!((s.name, s.rate), ("requests", 0.5));
        assert_eq!(ok("requests:1|c|#host:a").rate, 1.0);
    }

    #[test]
    fn whitespace_and_crlf_are_trimmed() {
        assert_eq!(ok("  a:1|c\r").name, "a");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        use StatsdError::*;
        for (line, want) in [
            ("", Empty),
            ("novalue", NoValue),
            (":1|c", NoName),
            ("a:1", NoType),
            ("a:1|x", UnknownType("x".into())),
            ("a:abc|c", BadValue("abc".into())),
            ("a:|c", BadValue("".into())),
            ("a:NaN|ms", BadValue("NaN".into())),
            ("a:inf|g", BadValue("inf".into())),
            ("a:+inf|g", BadValue("+inf".into())),
            ("a:1|c|@0", BadRate("0".into())),
            ("a:1|c|@1.5", BadRate("1.5".into())),
            ("a:1|c|@x", BadRate("x".into())),
            ("a:1|c|junk", BadField("junk".into())),
            ("_sc|x:1|c", UnknownType("_sc".into())),
        ] {
            assert_eq!(parse_line(line), Err(want), "{line:?}");
        }
        assert_eq!(
            parse_line(&format!("{}:1|c", "n".repeat(MAX_NAME + 1))),
            Err(LongName)
        );
    }

    #[test]
    fn blocks_skip_blank_lines_and_report_each_bad_one() {
        let got: Vec<_> = parse_block("a:1|c\n\n  \nb:2|g\nbad\nc:3|ms\n").collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,80}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn never_panics_on_near_statsd(line in "[a-z.:|@#+\\-0-9eE]{0,40}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn well_formed_lines_round_trip(
            name in "[a-zA-Z_][a-zA-Z0-9_.]{0,30}",
            value in -1e9f64..1e9,
            kind in prop::sample::select(vec!["c", "g", "ms", "h"]),
            rate in prop::option::of(0.001f64..=1.0),
        ) {
            let value = value.abs();
            let line = match rate {
                Some(r) => format!("{name}:{value}|{kind}|@{r}"),
                None => format!("{name}:{value}|{kind}"),
            };
            let s = parse_line(&line).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
            prop_assert_eq!(s.name, name.as_str());
            prop_assert_eq!(s.value, Value::Number(value));
            prop_assert_eq!(s.rate, rate.unwrap_or(1.0));
        }
    }
}
