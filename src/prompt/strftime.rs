//! `strftime_now(format)`, the global HF transformers gives chat templates (Llama 3.x prints today's date with it).
//! Only the directives chat templates use are supported; the clock is read in UTC, since the crate carries no
//! time-zone database (transformers uses the local time, which is UTC on the usual servers and containers).

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{Error, ErrorKind};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 1..=366
    day_of_year: u32,
}

impl DateTime {
    /// The UTC date and time `secs` seconds after 1970-01-01T00:00:00Z.
    pub(crate) fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let jan1 = days_from_civil(year, 1, 1);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
            day_of_year: (days - jan1 + 1) as u32,
        }
    }

    /// Formats with Python `strftime` directives.
    pub(crate) fn format(&self, format: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(directive) = chars.next() else {
                return Err("the format ends with a lone '%'".to_string());
            };
            match directive {
                'd' => out.push_str(&format!("{:02}", self.day)),
                'm' => out.push_str(&format!("{:02}", self.month)),
                'Y' => out.push_str(&format!("{}", self.year)),
                'y' => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
                'B' => out.push_str(MONTHS[self.month as usize - 1]),
                'b' | 'h' => out.push_str(&MONTHS[self.month as usize - 1][..3]),
                'A' => out.push_str(WEEKDAYS[self.weekday as usize]),
                'a' => out.push_str(&WEEKDAYS[self.weekday as usize][..3]),
                'w' => out.push_str(&self.weekday.to_string()),
                'j' => out.push_str(&format!("{:03}", self.day_of_year)),
                'H' => out.push_str(&format!("{:02}", self.hour)),
                'I' => out.push_str(&format!("{:02}", (self.hour + 11) % 12 + 1)),
                'p' => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                'M' => out.push_str(&format!("{:02}", self.minute)),
                'S' => out.push_str(&format!("{:02}", self.second)),
                'F' => out.push_str(&format!("{}-{:02}-{:02}", self.year, self.month, self.day)),
                'T' => out.push_str(&format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)),
                '%' => out.push('%'),
                other => return Err(format!("the directive %{other} is not supported")),
            }
        }
        Ok(out)
    }
}

/// The template global `strftime_now(format)`.
pub(crate) fn strftime_now(format: &str) -> Result<String, Error> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    DateTime::from_unix(secs)
        .format(format)
        .map_err(|why| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {why}")))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::DateTime;

    #[test]
    fn formats_known_instants_like_python() {
        // 2024-07-26T13:05:09Z, a Friday; the expected text is what Python's datetime.strftime prints for it.
        let t = DateTime::from_unix(1_721_999_109);
        assert_eq!(
            t.format("%d %b %Y|%A %a %B %m %y %j %H %I %p %M %S %w %F %T %%").unwrap(),
            "26 Jul 2024|Friday Fri July 07 24 208 13 01 PM 05 09 5 2024-07-26 13:05:09 %"
        );
        let epoch = DateTime::from_unix(0);
        assert_eq!(epoch.format("%Y-%m-%d %a %j").unwrap(), "1970-01-01 Thu 001");
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!(leap.format("%d %B %Y %j").unwrap(), "29 February 2000 060");
    }

    #[test]
    fn unsupported_directive_is_an_error() {
        let err = DateTime::from_unix(0).format("%Q").unwrap_err();
        assert!(err.contains("%Q"), "{err}");
    }
}
