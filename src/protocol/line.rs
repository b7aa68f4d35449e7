// TEMPORARY STUB (replaced by the real parser)
use super::{MetricLine, ParseError, Parsed};
pub const MAX_NAME_BYTES: usize = 1024;
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}
pub fn parse_line<'a>(_line: &'a [u8], _out: &mut MetricLine<'a>) -> Result<Parsed, ParseError> {
    Err(ParseError::Malformed)
}
