//! Whatever `args.cron` and `args.tz` a client sends, parsing them must not panic, a refusal
//! must name its field, and an accepted schedule's next time must come after the given one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (expr, rest) = text.split_once('\n').unwrap_or((&text, "UTC"));
    let (tz, secs) = rest.split_once('\n').unwrap_or((rest, "0"));
    match schemas::Schedule::parse(expr, tz) {
        Ok(schedule) => {
            let secs = secs.trim().parse::<i64>().unwrap_or(0) % 60_000_000_000;
            if let Some(at) = chrono::DateTime::from_timestamp(secs.abs(), 0) {
                if let Some(next) = schedule.next_after(at) {
                    assert!(next > at);
                }
            }
        }
        Err(e) => assert!(e.to_string().starts_with("args.")),
    }
});
