//! The Ofx writer (placeholder: writes nothing yet).

use super::{Entry, File, Statement, StatementWriter};

/// Writes Ofx files.
#[derive(Debug, Default)]
pub struct Ofx {}

impl StatementWriter for Ofx {
    fn start_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}
    fn start_statement(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement) {}
    fn entry(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement, _entry: &Entry<'_>) {}
    fn end_statement(&mut self, _out: &mut Vec<u8>, _file: &File, _statement: &Statement) {}
    fn end_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}
}
