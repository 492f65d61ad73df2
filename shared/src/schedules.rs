//! Recurring statement schedules: a statement for every period of a frequency, each asked for
//! once its period has closed.
//!
//! [`calendar`] is the pure part: which periods a schedule has and when each is due. [`store`]
//! holds the schedules and their runs (one per account and period); [`scheduler`] is the
//! maintenance leader's pass that plans, asks for and retries them.

pub mod calendar;
pub mod scheduler;
pub mod store;
