//! UTC calendar arithmetic without a time-zone library: days from a civil
//! date and back (H. Hinnant's algorithms), RFC 3339 rendering, and the start
//! of a day or calendar month (quota periods).

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Start of the UTC day holding `secs`.
pub fn day_start(secs: i64) -> i64 {
    secs.div_euclid(86_400) * 86_400
}

/// Start of the UTC calendar month holding `secs`.
pub fn month_start(secs: i64) -> i64 {
    let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
    days_from_civil(y, m, 1) * 86_400
}

/// Start of the UTC calendar month after the one holding `secs`.
pub fn next_month_start(secs: i64) -> i64 {
    let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let t = days_from_civil(2026, 11, 22) * 86_400 + 3 * 3600;
        assert_eq!(format_rfc3339(t), "2026-11-22T03:00:00Z");
        assert_eq!(format_rfc3339(day_start(t)), "2026-11-22T00:00:00Z");
        assert_eq!(format_rfc3339(month_start(t)), "2026-11-01T00:00:00Z");
        assert_eq!(format_rfc3339(next_month_start(t)), "2026-12-01T00:00:00Z");
        let dec = days_from_civil(2026, 12, 31) * 86_400 + 86_399;
        assert_eq!(format_rfc3339(next_month_start(dec)), "2027-01-01T00:00:00Z");
    }
}
