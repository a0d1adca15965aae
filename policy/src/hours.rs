//! Allowed hours of an anomaly rule: a daily time range, optional weekdays, and a time zone
//! (IANA name, DST included). `22:00-06:00` runs overnight; its hours after midnight belong to
//! the day it started.
use std::fmt;
use std::time::SystemTime;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Monday first, as in `days: mon-fri`.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EVERY_DAY: u8 = 0b111_1111;

/// Which of the three inputs was wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("{0}")]
    Range(String),
    #[error("{0}")]
    Days(String),
    #[error("{0}")]
    Zone(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hours {
    /// Start, in minutes after local midnight (inclusive).
    pub from: u16,
    /// End, in minutes after local midnight (exclusive; 1440 is `24:00`).
    pub to: u16,
    /// Bit 0 is Monday. The day a range starts on.
    pub days: u8,
    /// The zone's name as written (`UTC` when none was).
    pub timezone: String,
    tz: TimeZone,
}

impl Hours {
    /// `range` is `HH:MM-HH:MM`; `days` is `None` (every day) or items such as `mon-fri`,
    /// `sat`; `timezone` is an IANA name or `UTC`.
    pub fn new(
        range: &str,
        days: Option<&[&str]>,
        timezone: Option<&str>,
    ) -> Result<Self, HoursError> {
        let (from, to) = parse_range(range).map_err(HoursError::Range)?;
        let days = match days {
            None => EVERY_DAY,
            Some(items) => parse_days(items).map_err(HoursError::Days)?,
        };
        let timezone = timezone.unwrap_or("UTC").to_string();
        let tz = zone(&timezone).map_err(HoursError::Zone)?;
        Ok(Hours {
            from,
            to,
            days,
            timezone,
            tz,
        })
    }

    /// Whether `t` falls inside the allowed hours.
    pub fn allows(&self, t: SystemTime) -> bool {
        let Ok(ts) = Timestamp::try_from(t) else {
            // Out of jiff's range (years beyond ±9999): no sane clock says that.
            return false;
        };
        let local = self.tz.to_datetime(ts);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let today = day_bit(local.weekday());
        if self.from < self.to {
            return self.days & today != 0 && (self.from..self.to).contains(&minute);
        }
        // Overnight: the evening part belongs to today, the morning part to yesterday.
        let yesterday = day_bit(local.weekday().previous());
        (minute >= self.from && self.days & today != 0)
            || (minute < self.to && self.days & yesterday != 0)
    }
}

impl Hours {
    /// `t` as a local weekday and time in this zone (`Sat 23:14`), for messages.
    pub fn local_time(&self, t: SystemTime) -> String {
        match Timestamp::try_from(t) {
            Ok(ts) => {
                let local = self.tz.to_datetime(ts);
                let day = DAY_NAMES[local.weekday().to_monday_zero_offset() as usize];
                let mut d = day.to_string();
                d[..1].make_ascii_uppercase();
                format!("{d} {:02}:{:02}", local.hour(), local.minute())
            }
            Err(_) => "an impossible time".into(),
        }
    }
}

impl fmt::Display for Hours {
    /// `07:00-20:00 mon-fri Asia/Shanghai`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.from), hm(self.to))?;
        if self.days != EVERY_DAY {
            let names: Vec<&str> = (0..7)
                .filter(|i| self.days & (1 << i) != 0)
                .map(|i| DAY_NAMES[i])
                .collect();
            write!(f, " {}", names.join(","))?;
        }
        write!(f, " {}", self.timezone)
    }
}

fn day_bit(d: Weekday) -> u8 {
    1 << (d.to_monday_zero_offset() as u8)
}

fn zone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone \"{name}\" (an IANA name such as Europe/Berlin or Asia/Shanghai, or UTC)")
    })
}

/// `HH:MM-HH:MM` to minutes after midnight.
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("hours must be a range such as 07:00-20:00, found \"{s}\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let from = parse_time(a.trim()).ok_or_else(bad)?;
    let to = parse_time(b.trim()).ok_or_else(bad)?;
    if from == 1440 {
        return Err(bad());
    }
    if from == to {
        return Err(format!(
            "hours \"{s}\" is empty; for the whole day write 00:00-24:00"
        ));
    }
    // `20:00-00:00` ends at midnight.
    Ok((from, if to == 0 { 1440 } else { to }))
}

fn parse_time(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `["mon-fri", "sun"]` to a bit set; ranges may wrap (`fri-mon`).
fn parse_days(items: &[&str]) -> Result<u8, String> {
    let day = |s: &str| {
        let l = s.trim().to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|d| l == *d || (l.len() > 3 && d.starts_with(&l[..3]) && full_name(d) == l))
            .ok_or_else(|| format!("unknown day \"{}\" (expected mon, tue, wed, thu, fri, sat, sun, or a range such as mon-fri)", s.trim()))
    };
    let mut bits = 0u8;
    for item in items {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut i = a;
                loop {
                    bits |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => bits |= 1 << day(item)?,
        }
    }
    if bits == 0 {
        return Err("days is empty".into());
    }
    Ok(bits)
}

fn full_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-23 is a Monday.
    fn at(date_time: &str, tz: &str) -> SystemTime {
        let zdt: jiff::ZonedDateTime = format!("{date_time}[{tz}]").parse().unwrap();
        UNIX_EPOCH + Duration::from_secs(zdt.timestamp().as_second() as u64)
    }

    #[test]
    fn a_day_range_in_a_zone() {
        let h = Hours::new("07:00-20:00", Some(&["mon-fri"]), Some("Asia/Shanghai")).unwrap();
        assert!(h.allows(at("2026-11-23T07:00", "Asia/Shanghai")));
        assert!(h.allows(at("2026-11-23T19:59", "Asia/Shanghai")));
        assert!(!h.allows(at("2026-11-23T20:00", "Asia/Shanghai")));
        assert!(!h.allows(at("2026-11-23T06:59", "Asia/Shanghai")));
        // 23:30 UTC on Sunday is 07:30 on Monday in Shanghai.
        assert!(h.allows(at("2026-11-22T23:30", "UTC")));
        // Saturday and Sunday are outside.
        assert!(!h.allows(at("2026-11-28T12:00", "Asia/Shanghai")));
        assert!(!h.allows(at("2026-11-29T12:00", "Asia/Shanghai")));
        assert_eq!(
            h.to_string(),
            "07:00-20:00 mon,tue,wed,thu,fri Asia/Shanghai"
        );
        assert_eq!(
            h.local_time(at("2026-11-28T23:14", "Asia/Shanghai")),
            "Sat 23:14"
        );
    }

    #[test]
    fn overnight_ranges_belong_to_the_day_they_start() {
        let h = Hours::new("22:00-06:00", Some(&["fri"]), None).unwrap();
        assert!(h.allows(at("2026-11-27T22:00", "UTC"))); // Friday evening
        assert!(h.allows(at("2026-11-28T05:59", "UTC"))); // Saturday early: Friday's shift
        assert!(!h.allows(at("2026-11-28T06:00", "UTC")));
        assert!(!h.allows(at("2026-11-28T22:00", "UTC"))); // Saturday evening
        assert!(!h.allows(at("2026-11-27T05:00", "UTC"))); // Friday early: Thursday's shift
        assert!(!h.allows(at("2026-11-27T12:00", "UTC")));
    }

    #[test]
    fn daylight_saving_follows_the_zone() {
        let h = Hours::new("09:00-17:00", None, Some("Europe/Berlin")).unwrap();
        // 08:30 UTC is 10:30 in summer (CEST) and 09:30 in winter (CET): both inside.
        assert!(h.allows(at("2026-07-01T08:30", "UTC")));
        assert!(h.allows(at("2026-01-15T08:30", "UTC")));
        // 07:30 UTC is 09:30 in summer but 08:30 in winter.
        assert!(h.allows(at("2026-07-01T07:30", "UTC")));
        assert!(!h.allows(at("2026-01-15T07:30", "UTC")));
    }

    #[test]
    fn the_whole_day_and_every_minute_boundary() {
        let h = Hours::new("00:00-24:00", None, Some("UTC")).unwrap();
        let h2 = Hours::new("08:15-08:16", None, Some("utc")).unwrap();
        let day = at("2026-11-23T00:00", "UTC");
        for m in 0..1440u64 {
            let t = day + Duration::from_secs(m * 60 + 59);
            assert!(h.allows(t), "{m}");
            assert_eq!(h2.allows(t), m == 8 * 60 + 15, "{m}");
        }
    }

    #[test]
    fn bad_input_says_what_is_expected() {
        let e = |r: &str, d: Option<&[&str]>, z: Option<&str>| {
            Hours::new(r, d, z).unwrap_err().to_string()
        };
        assert!(e("7-20", None, None).contains("07:00-20:00"));
        assert!(e("07:00-25:00", None, None).contains("range"));
        assert!(e("07:60-08:00", None, None).contains("range"));
        assert!(e("24:00-06:00", None, None).contains("range"));
        assert!(e("08:00-08:00", None, None).contains("00:00-24:00"));
        assert!(e("08:00-20:00", Some(&["mon-fry"]), None).contains("unknown day \"fry\""));
        assert!(matches!(
            Hours::new("08:00-20:00", None, Some("Nowhere")),
            Err(HoursError::Zone(_))
        ));
        assert!(e("08:00-20:00", None, Some("Mars/Olympus")).contains("unknown time zone"));
        // Full names and wrapping ranges work.
        let h = Hours::new("08:00-20:00", Some(&["Friday-mon"]), None).unwrap();
        assert_eq!(h.days, 0b111_0001);
    }
}
