//! RFC 3339 timestamps as Google renders them: UTC, whole seconds, `Z`
//! (`YYYY-MM-DDTHH:MM:SSZ`; Python's strict parsing rejects fractions and offsets).

/// Formats seconds since the Unix epoch.
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A length of time as people write it (`90d`, `24h`, `30m`, `3600s`) or as a protobuf
/// Duration is rendered in JSON (`7776000s`): whole seconds, `None` for anything else or for
/// more than 100 years.
pub fn parse_duration(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let count: i64 = text.get(..text.len() - 1)?.parse().ok()?;
    let seconds = count.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    })?;
    (0..=100 * 365 * 86_400)
        .contains(&seconds)
        .then_some(seconds)
}

/// A protobuf Duration as JSON renders it: `7776000s`.
pub fn duration(seconds: i64) -> String {
    format!("{seconds}s")
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (fractional seconds tolerated and dropped) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &text[19..];
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if rest != "Z"
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
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

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn parse_round_trips() {
        for t in [0, 951_782_400, 1_798_761_599, -1, 4_102_444_800] {
            assert_eq!(super::parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            super::parse_rfc3339("2026-01-02T03:04:05.123Z"),
            super::parse_rfc3339("2026-01-02T03:04:05Z")
        );
        for bad in [
            "",
            "2026-01-02 03:04:05Z",
            "2026-13-02T03:04:05Z",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_as_people_and_protobuf_write_them() {
        use super::{duration, parse_duration};
        assert_eq!(parse_duration("90d"), Some(7_776_000));
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("7776000s"), Some(7_776_000));
        assert_eq!(parse_duration("30m"), Some(1_800));
        for bad in [
            "",
            "d",
            "-1d",
            "1.5h",
            "90",
            "1y",
            "99999999999d",
            "\u{ff11}d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(duration(7_776_000), "7776000s");
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
