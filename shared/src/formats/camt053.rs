//! The Camt053 writer (placeholder: writes nothing yet).

use super::{Entry, File, Statement, StatementWriter};

/// Writes Camt053 files.
#[derive(Debug, Default)]
pub struct Camt053 {}

impl StatementWriter for Camt053 {
    fn start_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}
    fn start_statement(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement) {}
    fn entry(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement, _entry: &Entry<'_>) {}
    fn end_statement(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement) {}
    fn end_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}
}
