//! Loop schedules: the specs people write, the systemd timer settings they become, and the
//! next fire computed with chrono-tz (for `rein loop ls` and validation).
//!
//! | spec                              | timer                                                  |
//! |-----------------------------------|--------------------------------------------------------|
//! | `every 30s`, `every 10m`, `every 2h` | `OnActiveSec=` and `OnUnitActiveSec=` the interval  |
//! | `daily 09:00 America/Los_Angeles` | `OnCalendar=*-*-* 09:00:00 America/Los_Angeles`        |
//! | `weekly Mon,Thu 08:00 Europe/Berlin` | `OnCalendar=Mon,Thu *-*-* 08:00:00 Europe/Berlin`   |
//! | `none`                            | no timer: the loop fires only with `rein loop tick`    |
//! | anything else                     | a raw `OnCalendar=` expression, checked by systemd     |
//!
//! Calendar timers are `Persistent=`: a fire missed while the machine slept or the manager
//! was down happens once at the next chance, never as a burst.
//!
//! The next fire follows systemd's rules for local times that do not exist or exist twice: a
//! time in a spring-forward gap is skipped that day; a time in a fall-back fold fires once
//! (see [`Schedule::next_after`] for which occurrence). A test compares [`Schedule::next_after`] with
//! `systemd-analyze calendar` across transitions in several zones.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Fire every interval, counted from the last fire.
    Every(Duration),
    /// Fire at `time` in `zone` on the given days (all seven for `daily`).
    Calendar {
        days: Vec<Weekday>,
        time: NaiveTime,
        zone: Tz,
    },
    /// A raw systemd calendar expression; systemd validates it and computes its fires.
    Systemd(String),
    /// Never fires by itself.
    None,
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// The shortest interval `every` accepts.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

fn bad(spec: &str, problem: impl std::fmt::Display) -> Error {
    Error::invalid(format!("schedule {spec:?}: {problem}"))
}

fn parse_time(spec: &str, text: &str) -> Result<NaiveTime> {
    let parsed = NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"));
    match parsed {
        Ok(time) if text.len() >= 4 => Ok(time),
        _ => Err(bad(
            spec,
            format!("{text:?} is not a time; write HH:MM (00:00 to 23:59) or HH:MM:SS"),
        )),
    }
}

fn parse_zone(spec: &str, text: Option<&str>) -> Result<Tz> {
    let Some(text) = text else {
        return Err(bad(
            spec,
            "no time zone; add an IANA zone such as America/Los_Angeles, Europe/Berlin or UTC",
        ));
    };
    text.parse::<Tz>().map_err(|_| {
        bad(
            spec,
            format!("unknown time zone {text:?}; use an IANA name such as America/Los_Angeles, Europe/Berlin or UTC"),
        )
    })
}

fn parse_day(spec: &str, text: &str) -> Result<Weekday> {
    let lower = text.to_ascii_lowercase();
    let found = ALL_DAYS.iter().find(|day| {
        let short = day.to_string().to_ascii_lowercase();
        lower == short || (lower.len() > 3 && full_name(**day).starts_with(&lower))
    });
    found.copied().ok_or_else(|| {
        bad(
            spec,
            format!("{text:?} is not a day; write Mon, Tue, Wed, Thu, Fri, Sat or Sun"),
        )
    })
}

fn full_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

/// `Mon,Thu`, `Mon..Fri` or `Mon-Fri`, in any mix; returned in week order without repeats.
fn parse_days(spec: &str, text: &str) -> Result<Vec<Weekday>> {
    let mut days = Vec::new();
    for part in text.split(',') {
        let range = part.split_once("..").or_else(|| part.split_once('-'));
        match range {
            Some((from, to)) => {
                let from = parse_day(spec, from)?;
                let to = parse_day(spec, to)?;
                let mut day = from;
                loop {
                    days.push(day);
                    if day == to {
                        break;
                    }
                    day = day.succ();
                }
            }
            None => days.push(parse_day(spec, part)?),
        }
    }
    Ok(ALL_DAYS
        .iter()
        .copied()
        .filter(|day| days.contains(day))
        .collect())
}

/// `AccuracySec=` for a timer that fires every `interval` (`OnUnitActiveSec=`): a hundredth
/// of it, from a millisecond to a minute. systemd's event loop fires such a timer at the last
/// moment the accuracy allows unless a moment it shares with other timers falls inside it, and
/// the next interval counts from that start, so each interval is stretched by about the whole
/// accuracy: systemd's default (a minute) would make a 1 s interval a minute long, and a
/// twentieth made it 5% long before anything else was counted.
pub fn interval_accuracy(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), Duration::from_secs(60))
}

impl Schedule {
    /// Parses a spec. Bad input is exit 2 with the problem named; a raw calendar expression
    /// is accepted here and checked by [`Schedule::check_with_systemd`].
    pub fn parse(spec: &str) -> Result<Schedule> {
        let words: Vec<&str> = spec.split_whitespace().collect();
        match words.as_slice() {
            [] => Err(bad(
                spec,
                "empty; write e.g. `every 10m`, `daily 09:00 UTC` or `none`",
            )),
            ["none"] => Ok(Schedule::None),
            ["every", rest @ ..] => {
                let text = rest.join("");
                if text.is_empty() {
                    return Err(bad(
                        spec,
                        "every what? write e.g. `every 30s`, `every 10m`, `every 2h`",
                    ));
                }
                let interval = crate::duration::parse(&text).map_err(|error| bad(spec, error))?;
                if interval < MIN_INTERVAL {
                    return Err(bad(spec, "the interval must be at least 1s"));
                }
                Ok(Schedule::Every(interval))
            }
            ["daily", time, zone @ ..] => {
                if zone.len() > 1 {
                    return Err(bad(spec, "write `daily HH:MM ZONE`"));
                }
                Ok(Schedule::Calendar {
                    days: ALL_DAYS.to_vec(),
                    time: parse_time(spec, time)?,
                    zone: parse_zone(spec, zone.first().copied())?,
                })
            }
            ["weekly", days, time, zone @ ..] => {
                if zone.len() > 1 {
                    return Err(bad(
                        spec,
                        "write `weekly DAYS HH:MM ZONE`, days like Mon,Thu",
                    ));
                }
                Ok(Schedule::Calendar {
                    days: parse_days(spec, days)?,
                    time: parse_time(spec, time)?,
                    zone: parse_zone(spec, zone.first().copied())?,
                })
            }
            ["weekly", _] => Err(bad(
                spec,
                "write `weekly DAYS HH:MM ZONE`, e.g. `weekly Mon,Thu 08:00 Europe/Berlin`",
            )),
            ["daily" | "weekly"] | [_, ..] => Ok(Schedule::Systemd(spec.trim().to_owned())),
        }
    }

    /// For a raw calendar expression: asks `systemd-analyze calendar` whether systemd takes
    /// it (exit 2 with systemd's own complaint if not). Other schedules need no check.
    pub fn check_with_systemd(&self) -> Result<()> {
        let Schedule::Systemd(expression) = self else {
            return Ok(());
        };
        let output = std::process::Command::new("systemd-analyze")
            .args(["calendar", "--iterations=1", expression])
            .env("TZ", "UTC")
            .output()
            .map_err(|error| {
                bad(
                    expression,
                    format!("cannot run systemd-analyze to check it ({error})"),
                )
            })?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        Err(bad(
            expression,
            format!(
                "not a schedule rein knows (every, daily, weekly, none) and systemd refuses it as a calendar expression: {}",
                said.trim()
            ),
        ))
    }

    /// `OnCalendar=` expressions of the timer.
    pub fn on_calendar(&self) -> Vec<String> {
        match self {
            Schedule::Calendar { days, time, zone } => {
                let when = format!("*-*-* {}", time.format("%H:%M:%S"));
                let expression = if days.len() == ALL_DAYS.len() {
                    format!("{when} {}", zone.name())
                } else {
                    let days: Vec<String> = days.iter().map(ToString::to_string).collect();
                    format!("{} {when} {}", days.join(","), zone.name())
                };
                vec![expression]
            }
            Schedule::Systemd(expression) => vec![expression.clone()],
            Schedule::Every(_) | Schedule::None => Vec::new(),
        }
    }

    /// The interval of an `every` schedule.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Schedule::Every(interval) => Some(*interval),
            _ => None,
        }
    }

    /// Whether the schedule needs a timer at all.
    pub fn has_timer(&self) -> bool {
        !matches!(self, Schedule::None)
    }

    /// The timer's `AccuracySec=`: see [`interval_accuracy`] for `every`; a second for
    /// calendar times.
    pub fn accuracy(&self) -> Duration {
        match self {
            Schedule::Every(interval) => interval_accuracy(*interval),
            _ => Duration::from_secs(1),
        }
    }

    /// The zone a calendar schedule's times are in.
    pub fn zone(&self) -> Option<Tz> {
        match self {
            Schedule::Calendar { zone, .. } => Some(*zone),
            _ => None,
        }
    }

    /// The first fire after `base`, as systemd computes it: in the zone's wall-clock time,
    /// the first wanted day and time later than `base`'s own wall-clock time. A time in a
    /// spring-forward gap is skipped that day. A time in a fall-back fold resolves with the
    /// UTC offset in force at `base` (as mktime(3) does with systemd's `tm_isdst = -1`), so
    /// a fold fires once: from before the fold at its first occurrence, from inside its
    /// second pass at the second. `None` for `every` (it counts from the last fire, which
    /// only the timer knows), raw expressions and `none`.
    pub fn next_after(&self, base: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Schedule::Calendar { days, time, zone } = self else {
            return None;
        };
        let local = base.with_timezone(zone);
        let wall = local.naive_local();
        let offset = local.offset().fix();
        let start: NaiveDate = wall.date();
        // A week of dates always holds a wanted day; more covers days skipped by a gap.
        for day in 0..15 {
            let date = start + chrono::Duration::days(day);
            let candidate = date.and_time(*time);
            if !days.contains(&date.weekday()) || candidate <= wall {
                continue;
            }
            let at = match zone.from_local_datetime(&candidate) {
                LocalResult::Single(at) => at,
                LocalResult::Ambiguous(first, second) => {
                    if second.offset().fix() == offset {
                        second
                    } else {
                        first
                    }
                }
                // A gap: skipped that day.
                LocalResult::None => continue,
            };
            return Some(at.with_timezone(&Utc));
        }
        None
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(interval) => write!(f, "every {}", crate::duration::Span(*interval)),
            Schedule::Calendar { days, time, zone } if days.len() == ALL_DAYS.len() => {
                write!(f, "daily {} {}", time.format("%H:%M"), zone.name())
            }
            Schedule::Calendar { days, time, zone } => {
                let days: Vec<String> = days.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "weekly {} {} {}",
                    days.join(","),
                    time.format("%H:%M"),
                    zone.name()
                )
            }
            Schedule::Systemd(expression) => f.write_str(expression),
            Schedule::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn specs_become_timer_settings() {
        let cases: &[(&str, &[&str], Option<u64>)] = &[
            ("every 30s", &[], Some(30)),
            ("every 10m", &[], Some(600)),
            ("every 2h", &[], Some(7200)),
            (
                "daily 09:00 America/Los_Angeles",
                &["*-*-* 09:00:00 America/Los_Angeles"],
                None,
            ),
            (
                "weekly Mon,Thu 08:00 Europe/Berlin",
                &["Mon,Thu *-*-* 08:00:00 Europe/Berlin"],
                None,
            ),
            (
                "weekly thu,MON 08:00:30 UTC",
                &["Mon,Thu *-*-* 08:00:30 UTC"],
                None,
            ),
            (
                "weekly Mon..Wed,Fri 23:59 Asia/Kolkata",
                &["Mon,Tue,Wed,Fri *-*-* 23:59:00 Asia/Kolkata"],
                None,
            ),
            ("none", &[], None),
            ("*-*-* 00/4:00:00", &["*-*-* 00/4:00:00"], None),
            ("hourly", &["hourly"], None),
        ];
        for (spec, calendar, seconds) in cases {
            let schedule = Schedule::parse(spec).expect(spec);
            assert_eq!(schedule.on_calendar(), *calendar, "{spec}");
            assert_eq!(schedule.interval().map(|d| d.as_secs()), *seconds, "{spec}");
        }
        assert_eq!(
            Schedule::parse("weekly Mon,Thu 08:00 Europe/Berlin")
                .expect("valid")
                .to_string(),
            "weekly Mon,Thu 08:00 Europe/Berlin"
        );
        assert!(!Schedule::parse("none").expect("valid").has_timer());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let cases = [
            (
                "daily 09:00 Mars/Olympus",
                "unknown time zone \"Mars/Olympus\"",
            ),
            ("daily 25:00 UTC", "\"25:00\" is not a time"),
            ("daily 9 UTC", "\"9\" is not a time"),
            ("daily 09:00", "no time zone"),
            ("weekly Mon,Funday 08:00 UTC", "\"Funday\" is not a day"),
            ("weekly 08:00 UTC", "\"08:00\" is not a day"),
            ("weekly Mon", "write `weekly DAYS HH:MM ZONE`"),
            ("every 0s", "at least 1s"),
            ("every soon", "schedule \"every soon\""),
            ("every", "every what?"),
            ("", "empty"),
        ];
        for (spec, problem) in cases {
            let error = Schedule::parse(spec).expect_err(spec);
            assert_eq!(error.exit_code(), 2, "{spec}");
            assert!(error.to_string().contains(problem), "{spec}: {error}");
        }
    }

    #[test]
    fn next_fire_skips_gaps_and_fires_once_in_folds() {
        let la = Schedule::parse("daily 02:30 America/Los_Angeles").expect("valid");
        // 2026-03-08 02:30 does not exist in Los Angeles: the next fire is the 9th.
        assert_eq!(
            la.next_after(utc("2026-03-08T08:00:00Z")),
            Some(utc("2026-03-09T09:30:00Z"))
        );
        let fold = Schedule::parse("daily 01:30 America/Los_Angeles").expect("valid");
        // 2026-11-01 01:30 happens twice; the first (PDT) fires, the second does not.
        assert_eq!(
            fold.next_after(utc("2026-11-01T07:00:00Z")),
            Some(utc("2026-11-01T08:30:00Z"))
        );
        assert_eq!(
            fold.next_after(utc("2026-11-01T08:45:00Z")),
            Some(utc("2026-11-02T09:30:00Z"))
        );
        let weekly = Schedule::parse("weekly Mon,Thu 08:00 Europe/Berlin").expect("valid");
        assert_eq!(
            weekly.next_after(utc("2023-11-14T22:13:20Z")),
            Some(utc("2023-11-16T07:00:00Z"))
        );
        assert_eq!(
            weekly.next_after(utc("2023-11-16T07:00:00Z")),
            Some(utc("2023-11-20T07:00:00Z")),
            "strictly after the base"
        );
    }
}
