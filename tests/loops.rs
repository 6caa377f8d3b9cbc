//! Loops against the real systemd: schedules compared with `systemd-analyze calendar`,
//! timers firing into a real session, restarts, close and reopen, and the loopctl import.

mod support;

use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use rein::schedule::Schedule;

/// What systemd says the next `count` elapses of `expression` are after `base`.
fn systemd_elapses(expression: &str, base: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let output = Command::new("systemd-analyze")
        .args([
            "calendar",
            &format!("--base-time=@{}", base.timestamp()),
            &format!("--iterations={count}"),
            expression,
        ])
        .env("TZ", "UTC")
        .output()
        .expect("systemd-analyze");
    assert!(
        output.status.success(),
        "systemd-analyze {expression}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (label, when) = line.split_once(": ")?;
            let label = label.trim();
            if label != "Next elapse" && !label.starts_with("Iter. #") {
                return None;
            }
            // "Sun 2026-04-05 15:45:00 UTC"
            let when = when.trim().strip_suffix(" UTC")?;
            let when = when.split_once(' ')?.1;
            let naive = chrono::NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S").ok()?;
            Some(Utc.from_utc_datetime(&naive))
        })
        .collect()
}

/// rein's own next fires, chained.
fn rein_elapses(schedule: &Schedule, base: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::new();
    let mut at = base;
    for _ in 0..count {
        let Some(next) = schedule.next_after(at) else {
            break;
        };
        fires.push(next);
        at = next;
    }
    fires
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

#[test]
fn next_fires_agree_with_systemd_across_dst_transitions() {
    // Times in and around each zone's gaps and folds, on both sides of each transition.
    let cases: &[(&str, &[&str])] = &[
        (
            "America/Los_Angeles",
            &[
                "2026-03-08T10:00:00Z",
                "2026-11-01T09:00:00Z",
                "2027-03-14T10:00:00Z",
            ],
        ),
        (
            "Europe/Berlin",
            &[
                "2026-03-29T01:00:00Z",
                "2026-10-25T01:00:00Z",
                "2027-03-28T01:00:00Z",
            ],
        ),
        (
            // A half-hour shift: 02:00 → 02:30 in October, 02:00 → 01:30 in April.
            "Australia/Lord_Howe",
            &[
                "2026-04-04T15:00:00Z",
                "2026-10-03T15:30:00Z",
                "2027-04-03T15:00:00Z",
            ],
        ),
        (
            "Asia/Kolkata",
            &["2026-03-08T10:00:00Z", "2026-11-01T09:00:00Z"],
        ),
    ];
    let times = ["01:30", "01:45", "02:15", "02:30", "03:00", "09:00"];
    let mut jobs = Vec::new();
    for (zone, transitions) in cases {
        for (index, time) in times.iter().enumerate() {
            let spec = if index % 3 == 2 {
                format!("weekly Sun,Mon,Sat {time} {zone}")
            } else {
                format!("daily {time} {zone}")
            };
            for transition in *transitions {
                // From a day before to a day after, every 3 h 13 min, plus the transition
                // instant itself: bases inside the gap, the fold and on either side.
                let center = utc(transition);
                jobs.push((spec.clone(), center));
                for step in -8..=8 {
                    jobs.push((spec.clone(), center + chrono::Duration::minutes(193 * step)));
                }
            }
        }
    }
    let compared = jobs.len();
    // systemd-analyze is a process per base time: spread them over a few threads.
    std::thread::scope(|scope| {
        for chunk in jobs.chunks(jobs.len().div_ceil(4)) {
            scope.spawn(move || {
                for (spec, base) in chunk {
                    let schedule = Schedule::parse(spec).expect("valid spec");
                    let theirs = systemd_elapses(&schedule.on_calendar()[0], *base, 3);
                    let ours = rein_elapses(&schedule, *base, 3);
                    assert_eq!(
                        ours, theirs,
                        "{spec} from {base}: rein says {ours:?}, systemd says {theirs:?}"
                    );
                }
            });
        }
    });
    assert!(compared > 300, "only {compared} base times compared");
    // A base that is itself a fire: the next one is strictly later, as in systemd.
    let schedule = Schedule::parse("daily 09:00 Asia/Kolkata").expect("valid");
    let exact = utc("2026-06-01T03:30:00Z");
    assert_eq!(
        rein_elapses(&schedule, exact, 2),
        systemd_elapses(&schedule.on_calendar()[0], exact, 2)
    );
}
