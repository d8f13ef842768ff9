//! Wall-clock time for calendar decisions (budget windows, key expiry), injectable so tests can
//! roll a day over without waiting for one. Rate limiting itself uses Valkey's clock (one clock
//! for every replica) or the monotonic clock in process; never this one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const DAY_MS: u64 = 86_400_000;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self(AtomicU64::new(now_ms))
    }
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A calendar window (UTC): its id (used in counter names) and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub id: u64,
    pub end_ms: u64,
}

/// The UTC day containing `now_ms`; its id is the day number since the epoch.
pub fn day(now_ms: u64) -> Window {
    let id = now_ms / DAY_MS;
    Window { id, end_ms: (id + 1) * DAY_MS }
}

/// The UTC calendar month containing `now_ms`; its id is `year * 100 + month`.
pub fn month(now_ms: u64) -> Window {
    let (year, month, _) = civil_from_days((now_ms / DAY_MS) as i64);
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let end_days = days_from_civil(next_year, next_month, 1);
    Window { id: (year as u64) * 100 + u64::from(month), end_ms: end_days.max(0) as u64 * DAY_MS }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds, or an RFC 3339 UTC time (`2027-01-31T00:00:00Z`), or a date (`2027-01-31`,
/// midnight UTC) → Unix seconds.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let mut secs = 0;
    if let Some(time) = time {
        let time = time.strip_suffix(['Z', 'z']).or_else(|| time.strip_suffix("+00:00"))?;
        let time = time.split_once('.').map_or(time, |(whole, _)| whole);
        let mut hms = time.splitn(3, ':');
        let h: u64 = hms.next()?.parse().ok()?;
        let m: u64 = hms.next()?.parse().ok()?;
        let s: u64 = hms.next().unwrap_or("0").parse().ok()?;
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        secs = h * 3600 + m * 60 + s;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days).ok().map(|d| d * 86_400 + secs)
}

/// Unix seconds → `2027-01-31T00:00:00Z`.
pub fn format_timestamp(secs: u64) -> String {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_roll_at_utc_midnight() {
        let t = parse_timestamp("2026-02-28T23:59:59Z").unwrap() * 1000;
        assert_eq!(day(t).end_ms, parse_timestamp("2026-03-01").unwrap() * 1000);
        assert_eq!(month(t).id, 202_602);
        assert_eq!(month(t).end_ms, parse_timestamp("2026-03-01").unwrap() * 1000);
        let dec = parse_timestamp("2026-12-15T12:00:00Z").unwrap() * 1000;
        assert_eq!(month(dec).end_ms, parse_timestamp("2027-01-01").unwrap() * 1000);
        assert_eq!(day(t + 1000).id, day(t).id + 1);
    }

    #[test]
    fn parses_and_formats_timestamps() {
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400));
        assert_eq!(parse_timestamp("2024-02-29T01:02:03Z"), Some(1_709_168_523));
        assert_eq!(parse_timestamp("2024-02-29T01:02:03.5+00:00"), Some(1_709_168_523));
        assert_eq!(format_timestamp(1_709_168_523), "2024-02-29T01:02:03Z");
        for bad in ["", "2024-13-01", "2024-01-01T25:00:00Z", "yesterday", "2024-01-01T00:00:00+02:00"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
