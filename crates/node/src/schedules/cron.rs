//! Cron expressions: the five classic fields (minute hour day-of-month month day-of-week), or
//! six with seconds first. Each field is `*`, a number, a range `a-b`, a list `a,b`, and any
//! of these with a step `/n`; months and weekdays also by name (`jan`, `mon`). As in cron,
//! when both day fields are restricted a day matches if either does.
//!
//! Times are civil times in the schedule's time zone: `0 9 * * *` in `Europe/Berlin` is 09:00
//! there, summer or winter. A time that a daylight-saving change skips runs as much later as
//! the gap is long (02:30 becomes 03:30); one that it repeats runs once, the first time.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed expression: the set of allowed values of each field, as bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether each day field was left `*` (matters to how the two combine).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field: its name (for errors), range, and names its values may go by.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{}: {s:?} is not a number", self.name))?;
        // Sunday is 0 or 7.
        let v = if self.name == "day of week" && v == 7 { 0 } else { v };
        if v < self.min || v > self.max {
            return Err(format!("{}: {v} is outside {}-{}", self.name, self.min, self.max));
        }
        Ok(v)
    }

    /// The bits of `spec`, and whether it was `*`.
    fn parse(&self, spec: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        for part in spec.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().map_err(|_| format!("{}: step {s:?} is not a number", self.name))?;
                    if step == 0 {
                        return Err(format!("{}: a step of 0", self.name));
                    }
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = match range {
                "*" => (self.min, if self.name == "day of week" { 6 } else { self.max }),
                r => match r.split_once('-') {
                    Some((a, b)) => (self.value(a)?, self.value(b)?),
                    // `5/15` means from 5 to the end in steps of 15.
                    None if step > 1 => (self.value(r)?, self.max),
                    None => {
                        let v = self.value(r)?;
                        (v, v)
                    }
                },
            };
            if lo > hi {
                return Err(format!("{}: range {range} runs backwards", self.name));
            }
            for v in (lo..=hi).step_by(step as usize) {
                bits |= 1 << v;
            }
        }
        Ok((bits, spec == "*"))
    }
}

impl Cron {
    pub(crate) fn parse(expr: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "{expr:?}: a cron expression has 5 fields (minute hour day month weekday), or 6 with seconds first; this has {n}"
                ))
            }
        };
        let field = |name, min, max, names| Field { name, min, max, names };
        let at = |e: String| format!("{expr:?}: {e}");
        let (seconds, _) = field("second", 0, 59, &[]).parse(seconds).map_err(at)?;
        let (minutes, _) = field("minute", 0, 59, &[]).parse(rest[0]).map_err(at)?;
        let (hours, _) = field("hour", 0, 23, &[]).parse(rest[1]).map_err(at)?;
        let (days, any_day) = field("day of month", 1, 31, &[]).parse(rest[2]).map_err(at)?;
        let (months, _) = field("month", 1, 12, MONTHS).parse(rest[3]).map_err(at)?;
        let (weekdays, any_weekday) = field("day of week", 0, 7, WEEKDAYS).parse(rest[4]).map_err(at)?;
        Ok(Self { seconds, minutes, hours, days, months, weekdays, any_day, any_weekday })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first instant strictly after `after` that matches, in `tz`; `None` if none comes
    /// within eight years (`0 0 30 2 *` never does).
    pub(crate) fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut date = start.date();
        let last = date.checked_add(8.years()).ok()?;
        while date <= last {
            if self.months & (1 << date.month()) != 0 && self.day_matches(date) {
                if let Some(t) = self.first_time_on(date, start, after, tz) {
                    return Some(t);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The first matching time of day on `date` that is after `after`.
    fn first_time_on(&self, date: Date, start: DateTime, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            if date == start.date() && h < start.hour() as u32 {
                continue;
            }
            let same_hour = date == start.date() && h == start.hour() as u32;
            for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                if same_hour && m < start.minute() as u32 {
                    continue;
                }
                for s in (0..60).filter(|s| self.seconds & (1 << s) != 0) {
                    let civil = date.at(h as i8, m as i8, s as i8, 0);
                    // A skipped time runs one gap later; a repeated one at its first occurrence.
                    let t = tz.to_ambiguous_timestamp(civil).compatible().ok()?;
                    if t > after {
                        return Some(t);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str, tz: &TimeZone) -> String {
        Cron::parse(expr).unwrap().next_after(at(after), tz).unwrap().to_string()
    }

    #[test]
    fn the_next_time_follows_each_field() {
        let utc = TimeZone::UTC;
        assert_eq!(next("*/15 * * * *", "2026-12-02T13:07:30Z", &utc), "2026-12-02T13:15:00Z");
        assert_eq!(next("*/15 * * * *", "2026-12-02T13:15:00Z", &utc), "2026-12-02T13:30:00Z");
        assert_eq!(next("0 9 * * mon-fri", "2026-12-04T10:00:00Z", &utc), "2026-12-07T09:00:00Z");
        assert_eq!(next("30 2 1 * *", "2026-12-02T00:00:00Z", &utc), "2027-01-01T02:30:00Z");
        assert_eq!(next("0 0 29 feb *", "2026-03-01T00:00:00Z", &utc), "2028-02-29T00:00:00Z");
        // Either day field, as in cron: the 13th or any Friday.
        assert_eq!(next("0 0 13 * fri", "2026-12-02T00:00:00Z", &utc), "2026-12-04T00:00:00Z");
        assert_eq!(next("*/2 * * * * *", "2026-12-02T13:07:31Z", &utc), "2026-12-02T13:07:32Z");
        assert_eq!(next("5/20 * * * *", "2026-12-02T13:26:00Z", &utc), "2026-12-02T13:45:00Z");
        assert_eq!(next("0 0 * * 7", "2026-12-02T00:00:00Z", &utc), "2026-12-06T00:00:00Z");
        assert!(Cron::parse("0 0 30 2 *").unwrap().next_after(at("2026-01-01T00:00:00Z"), &utc).is_none());
    }

    #[test]
    fn civil_times_hold_across_daylight_saving_changes() {
        let Ok(berlin) = TimeZone::get("Europe/Berlin") else {
            assert!(std::env::var("CI").is_err(), "no zoneinfo for Europe/Berlin (install tzdata)");
            eprintln!("SKIPPED: no zoneinfo on this machine");
            return;
        };
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(next("0 9 * * *", "2026-12-02T12:00:00Z", &berlin), "2026-12-03T08:00:00Z");
        assert_eq!(next("0 9 * * *", "2026-07-02T12:00:00Z", &berlin), "2026-07-03T07:00:00Z");
        // 02:30 does not exist on 2026-03-29 there: it runs an hour later (03:30 CEST).
        assert_eq!(next("30 2 * * *", "2026-03-28T12:00:00Z", &berlin), "2026-03-29T01:30:00Z");
    }

    #[test]
    fn bad_expressions_say_which_field_is_wrong() {
        for (expr, says) in [
            ("* * * *", "5 fields"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("* 24 * * *", "hour: 24"),
            ("* * 0 * *", "day of month: 0"),
            ("* * * foo *", "month: \"foo\""),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
            ("* * * * 8", "day of week: 8"),
        ] {
            let e = Cron::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }
}
