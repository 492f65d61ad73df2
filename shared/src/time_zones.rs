//! Statement time zones: the bank's business day.
//!
//! A statement's period is a run of calendar days in the bank's time zone (an IANA name such
//! as `Europe/Berlin`, from the request's `time_zone` or `STATEMENT_TIME_ZONE`). The zone sets
//! where a day starts and ends for DATETIME columns, the dates a statement carries, and when a
//! period has ended. Names are looked up in the time zone database built into the service
//! (jiff's bundled copy), so every API and worker process agrees whatever its host has.

use std::fmt;

use jiff::{
    Timestamp,
    civil::{self, DateTime},
    tz::{TimeZone, TimeZoneDatabase},
};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::statement::FieldError;

/// A time zone by its IANA name, as the database spells it.
#[derive(Clone)]
pub struct StatementZone {
    name: String,
    zone: TimeZone,
}

impl fmt::Debug for StatementZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for StatementZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for StatementZone {}

fn database() -> &'static TimeZoneDatabase {
    static DB: std::sync::OnceLock<TimeZoneDatabase> = std::sync::OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

impl StatementZone {
    /// UTC.
    pub fn utc() -> Self {
        Self { name: "UTC".into(), zone: TimeZone::UTC }
    }

    /// The zone with this IANA name (any ASCII case), spelled as the database spells it.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let unknown = || {
            FieldError::new(
                "time_zone",
                "must be an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"",
            )
        };
        if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unknown());
        }
        let zone = database().get(raw).map_err(|_| unknown())?;
        // As the database spells it, whatever the request's case.
        let name = zone.iana_name().ok_or_else(unknown)?.to_owned();
        // The database's other names of UTC are UTC: one statement, one hash, one number.
        const UTC_ALIASES: [&str; 7] =
            ["UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu", "UCT"];
        if UTC_ALIASES.contains(&name.as_str()) || name == "Etc/UCT" {
            Ok(Self::utc())
        } else {
            Ok(Self { name, zone })
        }
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is UTC.
    pub fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    /// The instant `date` starts in this zone (midnight, or the first moment of the day where a
    /// DST change skips midnight).
    pub fn day_start(&self, date: Date) -> Timestamp {
        civil_date(date)
            .to_zoned_datetime(self.zone.clone())
            .and_then(|zoned| zoned.start_of_day())
            .map(|zoned| zoned.timestamp())
            .expect("days from 1900 to 2101 exist in every zone")
    }

    /// The wall-clock time of `at` in this zone, to the microsecond: how a DATETIME column
    /// written in this zone holds that instant.
    pub fn wall_clock(&self, at: Timestamp) -> DateTime {
        self.zone.to_datetime(at)
    }

    /// The instant a wall-clock time in this zone stands for (an hour repeated by a DST change
    /// is taken at its first occurrence, an hour skipped as if the clock had not moved).
    pub fn instant(&self, wall_clock: DateTime) -> Option<Timestamp> {
        self.zone.to_timestamp(wall_clock).ok()
    }

    /// The calendar date of `at` in this zone.
    pub fn date_of(&self, at: Timestamp) -> Date {
        time_date(self.zone.to_datetime(at).date())
    }

    /// The zone's UTC offset at a wall-clock time on `date` (an hour repeated by a DST change
    /// is taken at its first occurrence).
    pub fn offset_on(&self, date: Date, hour: u8, minute: u8, second: u8) -> UtcOffset {
        let time = jiff::civil::time(hour as i8, minute as i8, second as i8, 0);
        let at = self.instant(civil_date(date).to_datetime(time)).unwrap_or_else(|| self.day_start(date));
        UtcOffset::from_whole_seconds(self.zone.to_offset(at).seconds()).expect("offsets are within a day")
    }

    /// `at` with this zone's offset at that instant.
    pub fn offset_date_time(&self, at: OffsetDateTime) -> OffsetDateTime {
        let timestamp =
            Timestamp::from_nanosecond(at.unix_timestamp_nanos()).expect("a representable instant");
        let seconds = self.zone.to_offset(timestamp).seconds();
        at.to_offset(UtcOffset::from_whole_seconds(seconds).expect("offsets are within a day"))
    }
}

impl fmt::Display for StatementZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A `time` date as a jiff civil date.
pub fn civil_date(date: Date) -> civil::Date {
    civil::date(date.year() as i16, u8::from(date.month()) as i8, date.day() as i8)
}

/// A jiff civil date as a `time` date.
pub fn time_date(date: civil::Date) -> Date {
    Date::from_calendar_date(
        i32::from(date.year()),
        time::Month::try_from(date.month() as u8).expect("a month"),
        date.day() as u8,
    )
    .expect("a valid date")
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    #[test]
    fn names_are_iana_names_in_any_case_spelled_as_the_database_does() {
        assert_eq!(StatementZone::parse("europe/BERLIN").unwrap().name(), "Europe/Berlin");
        assert!(StatementZone::parse("utc").unwrap().is_utc());
        for utc in ["Etc/UTC", "zulu", "Universal", "Etc/UCT"] {
            assert_eq!(StatementZone::parse(utc).unwrap(), StatementZone::utc(), "{utc}");
        }
        for bad in ["", "Mars/Olympus", "+01:00", "Europe/Berlin\n", "../etc/passwd", "EST5EDT,M3.2.0"] {
            assert_eq!(StatementZone::parse(bad).unwrap_err().field, "time_zone", "{bad:?}");
        }
    }

    #[test]
    fn days_start_at_local_midnight_or_where_dst_skips_it() {
        let berlin = StatementZone::parse("Europe/Berlin").unwrap();
        // 2024-03-31: clocks go forward at 02:00; midnight is still there (UTC+1).
        assert_eq!(berlin.day_start(date!(2024 - 03 - 31)).to_string(), "2024-03-30T23:00:00Z");
        assert_eq!(berlin.day_start(date!(2024 - 04 - 01)).to_string(), "2024-03-31T22:00:00Z");
        // America/Santiago skips midnight (00:00 → 01:00) on 2024-09-08: the day starts at 01:00.
        let santiago = StatementZone::parse("America/Santiago").unwrap();
        assert_eq!(santiago.day_start(date!(2024 - 09 - 08)).to_string(), "2024-09-08T04:00:00Z");
        assert_eq!(berlin.date_of(berlin.day_start(date!(2024 - 03 - 31))), date!(2024 - 03 - 31));
        let at = berlin.offset_date_time(datetime!(2024-07-01 12:00 UTC));
        assert_eq!(at.offset().whole_hours(), 2);
    }
}
