//! Recurring statement schedules: a statement for every period of a frequency, each made once
//! its period has closed.
//!
//! `calendar` is the pure part: which periods a schedule has and when each is due.

pub mod calendar;
