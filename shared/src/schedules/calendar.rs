//! A schedule's calendar: which periods a frequency has, and when each closes and is due.
//!
//! A period is a run of whole days in the schedule's time zone ([`StatementZone`]), the same
//! days a statement's `date_from ..= date_to` names. Consecutive periods tile the calendar: each
//! starts the day after the previous one ends, so every day belongs to exactly one period.
//!
//! - `daily`: one day.
//! - `weekly`: seven days starting on the schedule's weekday.
//! - `monthly`: from the schedule's day of the month to the day before that day next month.
//!   A day the month lacks means the month's last day: a schedule on the 31st starts periods on
//!   Jan 31, Feb 28 (29 in a leap year), Mar 31, Apr 30, …
//! - `quarterly`: as monthly, with periods starting in January, April, July and October.
//!
//! A period *closes* when its last day ends in the zone ([`closes_at`]) and is *due* a delay
//! later, counted on the zone's wall clock ([`due_at`]): a delay of 120 minutes means 02:00
//! local the day after, in summer and in winter alike.
//!
//! The arithmetic is for the years the service accepts (1900 ..= 2100); it panics only near the
//! ends of what `time` and `jiff` can represent (years ±9999).

use jiff::{SignedDuration, Timestamp, civil};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, Month, Weekday};

use crate::statement::FieldError;
use crate::time_zones::{StatementZone, civil_date};

/// How often a schedule makes a statement, and where its periods start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// One period a day.
    Daily,
    /// Seven-day periods starting on `weekday`.
    Weekly {
        /// The first day of every period.
        weekday: Weekday,
    },
    /// Periods starting on `day` (1 ..= 31) of every month, or on the month's last day where
    /// it has fewer days. [`Frequency::parse`] refuses other days; built directly, a day of 0
    /// counts as 1 and one past 31 as the month's last day.
    Monthly {
        /// The day of the month periods start on.
        day: u8,
    },
    /// As [`Frequency::Monthly`], with periods starting in January, April, July and October.
    Quarterly {
        /// The day of the month periods start on.
        day: u8,
    },
}

/// A period: its first and last day (inclusive) in the schedule's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// The first day.
    pub first: Date,
    /// The last day (inclusive).
    pub last: Date,
}

impl Period {
    /// Whether `date` is one of the period's days.
    pub fn contains(&self, date: Date) -> bool {
        (self.first..=self.last).contains(&date)
    }
}

/// The longest delay a schedule may wait after its period closes: 31 days.
pub const MAX_DELAY_MINUTES: u32 = 31 * 24 * 60;

/// The frequency names, as requests spell them and the database stores them.
const KINDS: &str = "\"daily\", \"weekly\", \"monthly\" or \"quarterly\"";

/// The weekday names, as requests spell them and the database stores them.
const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
    ("sunday", Weekday::Sunday),
];

impl Frequency {
    /// A frequency from a request's (or a stored row's) `frequency`, `weekday` and
    /// `day_of_month`: `weekly` needs a weekday and takes no day of the month; `monthly` and
    /// `quarterly` take a day of the month (1 when absent) and no weekday; `daily` takes
    /// neither. Names are lowercase, as [`Frequency::kind`] and [`Frequency::weekday`] spell
    /// them.
    pub fn parse(kind: &str, weekday: Option<&str>, day_of_month: Option<u8>) -> Result<Self, FieldError> {
        let no_weekday = |applies: &str| match weekday {
            Some(_) => {
                Err(FieldError::new("weekday", format!("applies only to weekly schedules, not {applies}")))
            }
            None => Ok(()),
        };
        let no_day = |applies: &str| match day_of_month {
            Some(_) => Err(FieldError::new(
                "day_of_month",
                format!("applies only to monthly and quarterly schedules, not {applies}"),
            )),
            None => Ok(()),
        };
        match kind {
            "daily" => {
                no_weekday("daily")?;
                no_day("daily")?;
                Ok(Self::Daily)
            }
            "weekly" => {
                no_day("weekly")?;
                let Some(weekday) = weekday else {
                    return Err(FieldError::new("weekday", "is required for weekly schedules"));
                };
                Ok(Self::Weekly { weekday: parse_weekday(weekday)? })
            }
            "monthly" | "quarterly" => {
                no_weekday(kind)?;
                let day = check_day_of_month(day_of_month.unwrap_or(1))?;
                Ok(if kind == "monthly" { Self::Monthly { day } } else { Self::Quarterly { day } })
            }
            _ => Err(FieldError::new("frequency", format!("must be {KINDS}"))),
        }
    }

    /// The frequency's name: `daily`, `weekly`, `monthly` or `quarterly`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly { .. } => "weekly",
            Self::Monthly { .. } => "monthly",
            Self::Quarterly { .. } => "quarterly",
        }
    }

    /// A weekly schedule's weekday (`monday` … `sunday`); none for other frequencies.
    pub fn weekday(&self) -> Option<&'static str> {
        let Self::Weekly { weekday } = self else { return None };
        WEEKDAYS.iter().find(|(_, day)| day == weekday).map(|(name, _)| *name)
    }

    /// A monthly or quarterly schedule's day of the month; none for other frequencies.
    pub fn day_of_month(&self) -> Option<u8> {
        match *self {
            Self::Monthly { day } | Self::Quarterly { day } => Some(day),
            Self::Daily | Self::Weekly { .. } => None,
        }
    }

    /// The period `date` falls in.
    pub fn period_containing(&self, date: Date) -> Period {
        match *self {
            Self::Daily => Period { first: date, last: date },
            Self::Weekly { weekday } => {
                let since_start =
                    (7 + date.weekday().number_days_from_monday() - weekday.number_days_from_monday()) % 7;
                let first = add_days(date, -i64::from(since_start));
                Period { first, last: add_days(first, 6) }
            }
            Self::Monthly { day } => months_period(date, 1, day),
            Self::Quarterly { day } => months_period(date, 3, day),
        }
    }

    /// The period after `period`: the one holding the day after its last.
    pub fn next(&self, period: &Period) -> Period {
        self.period_containing(add_days(period.last, 1))
    }

    /// The period before `period`: the one holding the day before its first.
    pub fn previous(&self, period: &Period) -> Period {
        self.period_containing(add_days(period.first, -1))
    }
}

impl Serialize for Frequency {
    /// `{"frequency": "weekly", "weekday": "monday"}`, `{"frequency": "monthly",
    /// "day_of_month": 31}`: the fields as the API names them, absent where they do not apply.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields {
            frequency: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            weekday: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            day_of_month: Option<u8>,
        }
        Fields { frequency: self.kind(), weekday: self.weekday(), day_of_month: self.day_of_month() }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Frequency {
    /// The serialized fields, checked as [`Frequency::parse`] checks a request's.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            frequency: String,
            #[serde(default)]
            weekday: Option<String>,
            #[serde(default)]
            day_of_month: Option<u8>,
        }
        let fields = Fields::deserialize(deserializer)?;
        Self::parse(&fields.frequency, fields.weekday.as_deref(), fields.day_of_month)
            .map_err(serde::de::Error::custom)
    }
}

/// Checks a schedule's `day_of_month`: 1 ..= 31 (a day past a month's end means its last day).
pub fn check_day_of_month(day: u8) -> Result<u8, FieldError> {
    if (1..=31).contains(&day) {
        Ok(day)
    } else {
        Err(FieldError::new(
            "day_of_month",
            "must be between 1 and 31 (a day the month lacks means its last day)",
        ))
    }
}

/// Checks a schedule's `delay_minutes`: at most [`MAX_DELAY_MINUTES`] (31 days).
pub fn check_delay_minutes(minutes: u32) -> Result<u32, FieldError> {
    if minutes <= MAX_DELAY_MINUTES {
        Ok(minutes)
    } else {
        Err(FieldError::new("delay_minutes", format!("must be between 0 and {MAX_DELAY_MINUTES} (31 days)")))
    }
}

fn parse_weekday(raw: &str) -> Result<Weekday, FieldError> {
    WEEKDAYS.iter().find(|(name, _)| *name == raw).map(|(_, day)| *day).ok_or_else(|| {
        FieldError::new("weekday", "must be \"monday\", \"tuesday\", …, \"saturday\" or \"sunday\"")
    })
}

/// The instant `period` opens: the start of its first day in `zone`.
pub fn opens_at(zone: &StatementZone, period: &Period) -> Timestamp {
    zone.day_start(period.first)
}

/// The instant `period` closes: the start of the day after its last day in `zone` (local
/// midnight, or the first moment of that day where a DST change skips midnight).
///
/// Closing instants only move forward from one period to the next. They stand still only where
/// the zone skipped whole days (Pacific/Apia went from 2011-12-29 straight to 2011-12-31): a
/// period made only of skipped days opens and closes at the same instant, that of the period
/// before it.
pub fn closes_at(zone: &StatementZone, period: &Period) -> Timestamp {
    zone.day_start(add_days(period.last, 1))
}

/// When `period`'s statement is due: `delay_minutes` after local midnight at the end of its
/// last day, counted on the zone's wall clock, and never before the period closes.
///
/// The wall-clock time (midnight of the day after `last`, plus the delay) is resolved in the
/// zone, so a delay of 120 minutes is 02:00 local whatever the DST season, on days of 23, 24
/// or 25 hours alike. Where a DST change skips that wall-clock time, the statement is due at
/// the later reading (02:30 in a 02:00 → 03:00 gap is 03:30 new time, as if the clock had not
/// moved); where a DST change repeats it, at its first occurrence. The result is then at least
/// [`closes_at`]: a statement is never due before its period has ended, whatever the zone
/// does around midnight.
///
/// Like [`closes_at`], due instants only move forward from one period to the next, except
/// where the due wall-clock time falls on a day the zone skipped whole (Pacific/Apia,
/// 2011-12-30), which is due with the day after.
///
/// A delay above [`MAX_DELAY_MINUTES`] (which [`check_delay_minutes`] refuses) counts as
/// that maximum.
pub fn due_at(zone: &StatementZone, period: &Period, delay_minutes: u32) -> Timestamp {
    let delay = SignedDuration::from_mins(i64::from(delay_minutes.min(MAX_DELAY_MINUTES)));
    let midnight = civil_date(add_days(period.last, 1)).to_datetime(civil::Time::midnight());
    let wall_clock = midnight.checked_add(delay).expect("a month after a day in the service's years");
    let due = zone.instant(wall_clock).expect("wall-clock times in the service's years exist in every zone");
    due.max(closes_at(zone, period))
}

/// `date` moved by `days` (negative: back).
fn add_days(date: Date, days: i64) -> Date {
    date.checked_add(time::Duration::days(days)).expect("dates far from the ends of time's range")
}

/// The period of a frequency whose periods start every `step` months (1 or 3, aligned to
/// January) on `day`, holding `date`.
fn months_period(date: Date, step: i32, day: u8) -> Period {
    let month = month_number(date);
    let mut start = month - month.rem_euclid(step);
    if date < period_start(start, day) {
        start -= step;
    }
    Period { first: period_start(start, day), last: add_days(period_start(start + step, day), -1) }
}

/// Months since year 0 (January of year 0 is 0).
fn month_number(date: Date) -> i32 {
    date.year() * 12 + i32::from(u8::from(date.month())) - 1
}

/// `day` of the month numbered `month` (see [`month_number`]), or that month's last day where
/// it has fewer days.
fn period_start(month: i32, day: u8) -> Date {
    let year = month.div_euclid(12);
    let month = Month::try_from(month.rem_euclid(12) as u8 + 1).expect("1 ..= 12");
    let day = day.clamp(1, month.length(year));
    Date::from_calendar_date(year, month, day).expect("a day of the month")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::date;

    use super::*;

    fn zone(name: &str) -> StatementZone {
        StatementZone::parse(name).unwrap()
    }

    fn period(first: Date, last: Date) -> Period {
        Period { first, last }
    }

    /// How long `period` lasts in `zone`, in hours.
    fn hours(zone: &StatementZone, period: &Period) -> i64 {
        closes_at(zone, period).duration_since(opens_at(zone, period)).as_hours()
    }

    fn days(period: &Period) -> i64 {
        (period.last - period.first).whole_days() + 1
    }

    /// The periods from the one holding `date` on, `count` of them.
    fn periods_from(frequency: Frequency, date: Date, count: usize) -> Vec<Period> {
        std::iter::successors(Some(frequency.period_containing(date)), |p| Some(frequency.next(p)))
            .take(count)
            .collect()
    }

    #[test]
    fn a_daily_period_is_one_day_through_leap_days_and_year_ends() {
        let daily = Frequency::Daily;
        let days: Vec<_> = periods_from(daily, date!(2024 - 02 - 28), 3).iter().map(|p| p.first).collect();
        assert_eq!(days, [date!(2024 - 02 - 28), date!(2024 - 02 - 29), date!(2024 - 03 - 01)]);
        let new_year = daily.next(&daily.period_containing(date!(2024 - 12 - 31)));
        assert_eq!(new_year, period(date!(2025 - 01 - 01), date!(2025 - 01 - 01)));
    }

    #[test]
    fn weekly_periods_are_seven_days_starting_on_the_weekday() {
        // 2024-01-03 is a Wednesday.
        let cases = [
            (Weekday::Monday, date!(2024 - 01 - 01), date!(2024 - 01 - 07)),
            (Weekday::Tuesday, date!(2024 - 01 - 02), date!(2024 - 01 - 08)),
            (Weekday::Wednesday, date!(2024 - 01 - 03), date!(2024 - 01 - 09)),
            (Weekday::Thursday, date!(2023 - 12 - 28), date!(2024 - 01 - 03)),
            (Weekday::Friday, date!(2023 - 12 - 29), date!(2024 - 01 - 04)),
            (Weekday::Saturday, date!(2023 - 12 - 30), date!(2024 - 01 - 05)),
            (Weekday::Sunday, date!(2023 - 12 - 31), date!(2024 - 01 - 06)),
        ];
        for (weekday, first, last) in cases {
            let weekly = Frequency::Weekly { weekday };
            let week = weekly.period_containing(date!(2024 - 01 - 03));
            assert_eq!(week, period(first, last), "{weekday}");
            assert_eq!(weekly.next(&week).first, first + time::Duration::days(7));
        }
    }

    #[test]
    fn monthly_periods_on_the_first_are_calendar_months() {
        let monthly = Frequency::Monthly { day: 1 };
        assert_eq!(
            monthly.period_containing(date!(2024 - 02 - 29)),
            period(date!(2024 - 02 - 01), date!(2024 - 02 - 29))
        );
        assert_eq!(
            monthly.period_containing(date!(2023 - 02 - 01)),
            period(date!(2023 - 02 - 01), date!(2023 - 02 - 28))
        );
        assert_eq!(
            monthly.period_containing(date!(2024 - 12 - 31)),
            period(date!(2024 - 12 - 01), date!(2024 - 12 - 31))
        );
    }

    #[test]
    fn monthly_periods_on_the_31st_start_on_the_last_day_of_shorter_months() {
        let monthly = Frequency::Monthly { day: 31 };
        let starts: Vec<_> =
            periods_from(monthly, date!(2023 - 01 - 31), 5).iter().map(|p| p.first).collect();
        assert_eq!(
            starts,
            [
                date!(2023 - 01 - 31),
                date!(2023 - 02 - 28),
                date!(2023 - 03 - 31),
                date!(2023 - 04 - 30),
                date!(2023 - 05 - 31)
            ]
        );
        // Each ends the day before the next starts.
        assert_eq!(
            monthly.period_containing(date!(2023 - 02 - 15)),
            period(date!(2023 - 01 - 31), date!(2023 - 02 - 27))
        );
        assert_eq!(
            monthly.period_containing(date!(2023 - 03 - 30)),
            period(date!(2023 - 02 - 28), date!(2023 - 03 - 30))
        );
        assert_eq!(
            monthly.period_containing(date!(2023 - 05 - 30)),
            period(date!(2023 - 04 - 30), date!(2023 - 05 - 30))
        );
        // In a leap year, February's period starts on the 29th.
        assert_eq!(
            monthly.period_containing(date!(2024 - 02 - 28)),
            period(date!(2024 - 01 - 31), date!(2024 - 02 - 28))
        );
        assert_eq!(
            monthly.period_containing(date!(2024 - 02 - 29)),
            period(date!(2024 - 02 - 29), date!(2024 - 03 - 30))
        );
    }

    #[test]
    fn monthly_periods_on_the_29th_follow_leap_years_and_2100_is_not_one() {
        let monthly = Frequency::Monthly { day: 29 };
        assert_eq!(
            monthly.period_containing(date!(2024 - 02 - 29)),
            period(date!(2024 - 02 - 29), date!(2024 - 03 - 28))
        );
        assert_eq!(
            monthly.period_containing(date!(2024 - 02 - 28)),
            period(date!(2024 - 01 - 29), date!(2024 - 02 - 28))
        );
        // 2100 is divisible by 100 and not by 400: February has 28 days.
        assert_eq!(
            monthly.period_containing(date!(2100 - 02 - 28)),
            period(date!(2100 - 02 - 28), date!(2100 - 03 - 28))
        );
        assert_eq!(
            monthly.period_containing(date!(2100 - 02 - 27)),
            period(date!(2100 - 01 - 29), date!(2100 - 02 - 27))
        );
        // 2000 is divisible by 400: a leap year.
        assert_eq!(
            monthly.period_containing(date!(2000 - 02 - 29)),
            period(date!(2000 - 02 - 29), date!(2000 - 03 - 28))
        );
    }

    #[test]
    fn a_monthly_period_before_its_day_belongs_to_the_previous_month_across_new_year() {
        let monthly = Frequency::Monthly { day: 15 };
        assert_eq!(
            monthly.period_containing(date!(2024 - 01 - 10)),
            period(date!(2023 - 12 - 15), date!(2024 - 01 - 14))
        );
        assert_eq!(
            monthly.period_containing(date!(2024 - 01 - 15)),
            period(date!(2024 - 01 - 15), date!(2024 - 02 - 14))
        );
    }

    #[test]
    fn quarterly_periods_start_in_january_april_july_and_october() {
        let quarterly = Frequency::Quarterly { day: 1 };
        let quarters = periods_from(quarterly, date!(2024 - 02 - 17), 5);
        assert_eq!(
            quarters,
            [
                period(date!(2024 - 01 - 01), date!(2024 - 03 - 31)),
                period(date!(2024 - 04 - 01), date!(2024 - 06 - 30)),
                period(date!(2024 - 07 - 01), date!(2024 - 09 - 30)),
                period(date!(2024 - 10 - 01), date!(2024 - 12 - 31)),
                period(date!(2025 - 01 - 01), date!(2025 - 03 - 31)),
            ]
        );
        assert_eq!(quarters.iter().map(days).collect::<Vec<_>>(), [91, 91, 92, 92, 90]);
        assert_eq!(quarterly.previous(&quarters[0]), period(date!(2023 - 10 - 01), date!(2023 - 12 - 31)));
    }

    #[test]
    fn quarterly_periods_on_the_31st_start_on_the_last_day_of_shorter_months() {
        let quarterly = Frequency::Quarterly { day: 31 };
        assert_eq!(
            periods_from(quarterly, date!(2023 - 02 - 01), 4),
            [
                period(date!(2023 - 01 - 31), date!(2023 - 04 - 29)),
                period(date!(2023 - 04 - 30), date!(2023 - 07 - 30)),
                period(date!(2023 - 07 - 31), date!(2023 - 10 - 30)),
                period(date!(2023 - 10 - 31), date!(2024 - 01 - 30)),
            ]
        );
        // Before the quarter's start day: the previous quarter, across new year.
        let quarterly = Frequency::Quarterly { day: 15 };
        assert_eq!(
            quarterly.period_containing(date!(2024 - 01 - 10)),
            period(date!(2023 - 10 - 15), date!(2024 - 01 - 14))
        );
    }

    #[test]
    fn a_period_closes_at_local_midnight_after_its_last_day() {
        let berlin = zone("Europe/Berlin");
        let january = Frequency::Monthly { day: 1 }.period_containing(date!(2024 - 01 - 10));
        assert_eq!(opens_at(&berlin, &january).to_string(), "2023-12-31T23:00:00Z");
        assert_eq!(closes_at(&berlin, &january).to_string(), "2024-01-31T23:00:00Z");
        assert_eq!(due_at(&berlin, &january, 0).to_string(), "2024-01-31T23:00:00Z");
        assert_eq!(due_at(&berlin, &january, 90).to_string(), "2024-02-01T00:30:00Z");
        // A delay of several days counts whole wall-clock days.
        assert_eq!(due_at(&berlin, &january, 3 * 24 * 60 + 120).to_string(), "2024-02-04T01:00:00Z");
        assert_eq!(closes_at(&StatementZone::utc(), &january).to_string(), "2024-02-01T00:00:00Z");
    }

    #[test]
    fn berlin_due_at_two_in_the_morning_across_the_23_and_25_hour_days() {
        let berlin = zone("Europe/Berlin");
        let daily = Frequency::Daily;
        let due = |day: Date| due_at(&berlin, &daily.period_containing(day), 120).to_string();
        let closes = |day: Date| closes_at(&berlin, &daily.period_containing(day)).to_string();
        // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST, a 23-hour day. 02:00 does not
        // exist that morning: the day before is due at the later reading, 03:00 CEST.
        assert_eq!(due(date!(2026 - 03 - 28)), "2026-03-29T01:00:00Z");
        assert_eq!(closes(date!(2026 - 03 - 29)), "2026-03-29T22:00:00Z");
        assert_eq!(due(date!(2026 - 03 - 29)), "2026-03-30T00:00:00Z"); // 02:00 CEST
        let short = daily.period_containing(date!(2026 - 03 - 29));
        assert_eq!(hours(&berlin, &short), 23);
        // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET, a 25-hour day. 02:00 comes
        // twice that morning: the day before is due at the first, 02:00 CEST.
        assert_eq!(due(date!(2026 - 10 - 24)), "2026-10-25T00:00:00Z");
        assert_eq!(closes(date!(2026 - 10 - 25)), "2026-10-25T23:00:00Z");
        assert_eq!(due(date!(2026 - 10 - 25)), "2026-10-26T01:00:00Z"); // 02:00 CET
        let long = daily.period_containing(date!(2026 - 10 - 25));
        assert_eq!(hours(&berlin, &long), 25);
    }

    #[test]
    fn santiago_skips_midnight_and_the_period_still_closes_and_comes_due() {
        let santiago = zone("America/Santiago");
        let daily = Frequency::Daily;
        // 2024-09-08: clocks go from 00:00 -04 to 01:00 -03; the day starts at 01:00.
        let before = daily.period_containing(date!(2024 - 09 - 07));
        assert_eq!(closes_at(&santiago, &before).to_string(), "2024-09-08T04:00:00Z"); // 01:00 -03
        // Midnight and 00:30 do not exist: due at their later readings, 01:00 and 01:30 -03,
        // never before the close.
        assert_eq!(due_at(&santiago, &before, 0).to_string(), "2024-09-08T04:00:00Z");
        assert_eq!(due_at(&santiago, &before, 30).to_string(), "2024-09-08T04:30:00Z");
        assert_eq!(due_at(&santiago, &before, 120).to_string(), "2024-09-08T05:00:00Z"); // 02:00 -03
        let short = daily.next(&before);
        assert_eq!(hours(&santiago, &short), 23);
        // 2024-04-07: clocks go from 00:00 -03 back to 23:00 -04 on the 6th, so 23:00 ..
        // 23:59 on 2024-04-06 come twice. A delay to 23:00 the next day takes the first.
        let before = daily.period_containing(date!(2024 - 04 - 05));
        assert_eq!(closes_at(&santiago, &before).to_string(), "2024-04-06T03:00:00Z");
        assert_eq!(due_at(&santiago, &before, 23 * 60).to_string(), "2024-04-07T02:00:00Z");
        let long = daily.next(&before);
        assert_eq!(closes_at(&santiago, &long).to_string(), "2024-04-07T04:00:00Z"); // 00:00 -04
        assert_eq!(hours(&santiago, &long), 25);
    }

    #[test]
    fn a_day_apia_skipped_is_an_empty_period_due_with_the_next_day() {
        let apia = zone("Pacific/Apia");
        let daily = Frequency::Daily;
        // Apia went from 2011-12-29 (-10) straight to 2011-12-31 (+14).
        let thursday = daily.period_containing(date!(2011 - 12 - 29));
        let skipped = daily.next(&thursday);
        assert_eq!(closes_at(&apia, &thursday).to_string(), "2011-12-30T10:00:00Z"); // 31st 00:00 +14
        assert_eq!(opens_at(&apia, &skipped), closes_at(&apia, &skipped));
        assert_eq!(closes_at(&apia, &skipped), closes_at(&apia, &thursday));
        // 02:00 on the 30th does not exist: the later reading is 02:00 on the 31st.
        assert_eq!(due_at(&apia, &thursday, 120).to_string(), "2011-12-30T12:00:00Z");
        assert_eq!(due_at(&apia, &skipped, 120), due_at(&apia, &thursday, 120));
        // The week holding the skipped day still closes a week after it opened, less a day.
        let week = Frequency::Weekly { weekday: Weekday::Monday }.period_containing(date!(2011 - 12 - 30));
        assert_eq!(hours(&apia, &week), 6 * 24);
    }

    #[test]
    fn a_delay_is_at_most_31_days() {
        assert_eq!(check_delay_minutes(0), Ok(0));
        assert_eq!(check_delay_minutes(MAX_DELAY_MINUTES), Ok(44_640));
        assert_eq!(check_delay_minutes(MAX_DELAY_MINUTES + 1).unwrap_err().field, "delay_minutes");
        let utc = StatementZone::utc();
        let day = Frequency::Daily.period_containing(date!(2024 - 01 - 01));
        assert_eq!(due_at(&utc, &day, u32::MAX), due_at(&utc, &day, MAX_DELAY_MINUTES));
        assert_eq!(due_at(&utc, &day, MAX_DELAY_MINUTES).to_string(), "2024-02-02T00:00:00Z");
    }

    #[test]
    fn frequencies_parse_from_the_request_fields() {
        assert_eq!(Frequency::parse("daily", None, None), Ok(Frequency::Daily));
        assert_eq!(
            Frequency::parse("weekly", Some("sunday"), None),
            Ok(Frequency::Weekly { weekday: Weekday::Sunday })
        );
        assert_eq!(Frequency::parse("monthly", None, None), Ok(Frequency::Monthly { day: 1 }));
        assert_eq!(Frequency::parse("monthly", None, Some(31)), Ok(Frequency::Monthly { day: 31 }));
        assert_eq!(Frequency::parse("quarterly", None, Some(15)), Ok(Frequency::Quarterly { day: 15 }));
    }

    #[test]
    fn frequencies_refuse_fields_that_do_not_apply_naming_the_field() {
        let refused = |kind, weekday, day| {
            let error = Frequency::parse(kind, weekday, day).unwrap_err();
            (error.field.into_owned(), error.message)
        };
        assert_eq!(
            refused("hourly", None, None),
            ("frequency".into(), "must be \"daily\", \"weekly\", \"monthly\" or \"quarterly\"".into())
        );
        assert_eq!(refused("Weekly", Some("monday"), None).0, "frequency");
        assert_eq!(
            refused("weekly", None, None),
            ("weekday".into(), "is required for weekly schedules".into())
        );
        assert_eq!(refused("weekly", Some("Monday"), None).0, "weekday");
        assert_eq!(refused("weekly", Some("mon"), None).0, "weekday");
        assert_eq!(
            refused("weekly", Some("monday"), Some(1)),
            ("day_of_month".into(), "applies only to monthly and quarterly schedules, not weekly".into())
        );
        assert_eq!(
            refused("monthly", Some("monday"), None),
            ("weekday".into(), "applies only to weekly schedules, not monthly".into())
        );
        assert_eq!(refused("quarterly", Some("monday"), Some(1)).0, "weekday");
        assert_eq!(refused("daily", Some("monday"), None).0, "weekday");
        assert_eq!(refused("daily", None, Some(1)).0, "day_of_month");
        for day in [0, 32, 255] {
            assert_eq!(
                refused("monthly", None, Some(day)),
                (
                    "day_of_month".into(),
                    "must be between 1 and 31 (a day the month lacks means its last day)".into()
                )
            );
            assert_eq!(refused("quarterly", None, Some(day)).0, "day_of_month");
            assert_eq!(check_day_of_month(day).unwrap_err().field, "day_of_month");
        }
        assert_eq!(check_day_of_month(31), Ok(31));
    }

    #[test]
    fn frequencies_round_trip_their_stored_fields_and_json() {
        let all = [
            (Frequency::Daily, r#"{"frequency":"daily"}"#),
            (Frequency::Weekly { weekday: Weekday::Monday }, r#"{"frequency":"weekly","weekday":"monday"}"#),
            (Frequency::Weekly { weekday: Weekday::Sunday }, r#"{"frequency":"weekly","weekday":"sunday"}"#),
            (Frequency::Monthly { day: 31 }, r#"{"frequency":"monthly","day_of_month":31}"#),
            (Frequency::Quarterly { day: 1 }, r#"{"frequency":"quarterly","day_of_month":1}"#),
        ];
        for (frequency, json) in all {
            let stored = Frequency::parse(frequency.kind(), frequency.weekday(), frequency.day_of_month());
            assert_eq!(stored, Ok(frequency));
            assert_eq!(serde_json::to_string(&frequency).unwrap(), json);
            assert_eq!(serde_json::from_str::<Frequency>(json).unwrap(), frequency);
        }
        for (frequency, weekday) in WEEKDAYS.map(|(name, day)| (Frequency::Weekly { weekday: day }, name)) {
            assert_eq!(frequency.weekday(), Some(weekday));
        }
        assert_eq!(
            serde_json::from_str::<Frequency>(r#"{"frequency":"monthly"}"#).unwrap(),
            Frequency::Monthly { day: 1 }
        );
        let error =
            serde_json::from_str::<Frequency>(r#"{"frequency":"monthly","day_of_month":0}"#).unwrap_err();
        assert!(error.to_string().starts_with("day_of_month: must be between 1 and 31"), "{error}");
        assert!(serde_json::from_str::<Frequency>(r#"{"frequency":"weekly"}"#).is_err());
    }

    // Properties over random frequencies, dates and zones.

    /// Zones with DST in either hemisphere, half-hour and 45-minute offsets, a 30-minute DST
    /// (Lord Howe), midnight DST changes (Santiago, Havana) and a skipped day (Apia).
    const ZONES: [&str; 16] = [
        "UTC",
        "Europe/Berlin",
        "Europe/London",
        "America/New_York",
        "America/Santiago",
        "America/Havana",
        "America/Sao_Paulo",
        "America/St_Johns",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "Pacific/Apia",
        "Pacific/Chatham",
        "Pacific/Kiritimati",
        "Asia/Kathmandu",
        "Asia/Tehran",
        "Africa/Casablanca",
    ];

    /// Days where a zone changes its clock in an unusual way, with the zone.
    const AWKWARD_DAYS: [(Date, &str); 8] = [
        (date!(2011 - 12 - 30), "Pacific/Apia"),        // skipped whole
        (date!(2024 - 09 - 08), "America/Santiago"),    // midnight skipped
        (date!(2024 - 04 - 06), "America/Santiago"),    // 23:00 repeated
        (date!(2024 - 03 - 10), "America/Havana"),      // midnight skipped
        (date!(2024 - 10 - 06), "Australia/Lord_Howe"), // 02:00 .. 02:30 skipped
        (date!(2026 - 03 - 29), "Europe/Berlin"),       // 23 hours
        (date!(2026 - 10 - 25), "Europe/Berlin"),       // 25 hours
        (date!(2100 - 02 - 28), "UTC"),                 // not a leap year
    ];

    fn frequencies() -> impl Strategy<Value = Frequency> {
        prop_oneof![
            Just(Frequency::Daily),
            (0..7usize).prop_map(|i| Frequency::Weekly { weekday: WEEKDAYS[i].1 }),
            (1..=31u8).prop_map(|day| Frequency::Monthly { day }),
            (1..=31u8).prop_map(|day| Frequency::Quarterly { day }),
        ]
    }

    /// A day in 1970 ..= 2099 and a zone; one time in four an awkward day's zone and a day a
    /// few days (or periods) before it.
    fn days_in_zones() -> impl Strategy<Value = (Date, StatementZone)> {
        let span = (date!(2099 - 12 - 31) - date!(1970 - 01 - 01)).whole_days();
        prop_oneof![
            3 => (0..=span, 0..ZONES.len())
                .prop_map(|(n, i)| (add_days(date!(1970 - 01 - 01), n), zone(ZONES[i]))),
            1 => (0..AWKWARD_DAYS.len(), prop_oneof![-3..=1i64, -100..=3i64]).prop_map(|(i, n)| {
                let (day, name) = AWKWARD_DAYS[i];
                (add_days(day, n), zone(name))
            }),
        ]
    }

    fn dates() -> impl Strategy<Value = Date> {
        days_in_zones().prop_map(|(date, _)| date)
    }

    /// Whether `zone` skipped `date` whole: it starts when the next day does.
    fn skipped(zone: &StatementZone, date: Date) -> bool {
        zone.day_start(date) == zone.day_start(add_days(date, 1))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_period_containing_a_day_contains_it(frequency in frequencies(), date in dates()) {
            let period = frequency.period_containing(date);
            prop_assert!(period.contains(date), "{period:?}");
        }

        #[test]
        fn consecutive_periods_tile_the_calendar(frequency in frequencies(), date in dates()) {
            for period in periods_from(frequency, date, 4) {
                let next = frequency.next(&period);
                prop_assert_eq!(next.first, add_days(period.last, 1));
                prop_assert_eq!(frequency.previous(&next), period);
                prop_assert_eq!(frequency.period_containing(period.first), period);
                prop_assert_eq!(frequency.period_containing(period.last), period);
            }
        }

        #[test]
        fn periods_start_where_the_frequency_says(frequency in frequencies(), date in dates()) {
            let first = frequency.period_containing(date).first;
            match frequency {
                Frequency::Daily => {}
                Frequency::Weekly { weekday } => prop_assert_eq!(first.weekday(), weekday),
                Frequency::Monthly { day } | Frequency::Quarterly { day } => {
                    prop_assert_eq!(first.day(), day.min(first.month().length(first.year())));
                }
            }
            if let Frequency::Quarterly { .. } = frequency {
                prop_assert!(matches!(first.month(), Month::January | Month::April | Month::July | Month::October));
            }
        }

        #[test]
        fn periods_have_their_frequencys_length(frequency in frequencies(), date in dates()) {
            let length = days(&frequency.period_containing(date));
            let bounds = match frequency {
                Frequency::Daily => 1..=1,
                Frequency::Weekly { .. } => 7..=7,
                Frequency::Monthly { .. } => 28..=31,
                Frequency::Quarterly { .. } => 89..=92,
            };
            prop_assert!(bounds.contains(&length), "{frequency:?} {date}: {length} days");
        }

        #[test]
        fn closing_and_due_instants_only_move_forward(
            frequency in frequencies(),
            (date, zone) in days_in_zones(),
            delay in prop_oneof![Just(0u32), Just(120), 0..=MAX_DELAY_MINUTES],
        ) {
            for period in periods_from(frequency, date, 3) {
                let next = frequency.next(&period);
                let (closes, next_closes) = (closes_at(&zone, &period), closes_at(&zone, &next));
                let (due, next_due) = (due_at(&zone, &period, delay), due_at(&zone, &next, delay));
                prop_assert!(opens_at(&zone, &period) <= closes);
                prop_assert!(due >= closes, "{zone} {period:?}: due {due} before it closes at {closes}");
                prop_assert!(due <= closes + SignedDuration::from_hours(i64::from(delay / 60) + 25));
                // Forward, or standing still over a period of days the zone skipped.
                let empty = opens_at(&zone, &next) == next_closes;
                prop_assert!(next_closes > closes || (next_closes == closes && empty), "{zone} {next:?}");
                // The due wall-clock day, skipped whole, reads as the day after.
                let due_day = add_days(period.last, 1 + i64::from(delay / (24 * 60)));
                prop_assert!(next_due > due || (next_due == due && skipped(&zone, due_day)), "{zone} {next:?}");
            }
        }
    }
}
