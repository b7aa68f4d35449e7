//! Why a line was rejected. Small, `Copy` and allocation-free: it is on the hot path, and
//! the agent counts rejected lines by [`ParseError::reason`].

/// The reason a line was dropped. Each variant is one counter in the record's
/// `internal.bad_lines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("malformed line")]
    Malformed,
    #[error("empty metric name")]
    EmptyName,
    #[error("invalid value")]
    InvalidValue,
    #[error("invalid metric type")]
    InvalidType,
    #[error("invalid sample rate")]
    InvalidSampleRate,
    #[error("invalid tags")]
    InvalidTags,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("unknown field")]
    UnknownField,
    #[error("too long")]
    TooLong,
    #[error("invalid event or service check")]
    InvalidEvent,
}

impl ParseError {
    /// Every reason, in the order of [`ParseError::index`].
    pub const ALL: [ParseError; 10] = [
        ParseError::Malformed,
        ParseError::EmptyName,
        ParseError::InvalidValue,
        ParseError::InvalidType,
        ParseError::InvalidSampleRate,
        ParseError::InvalidTags,
        ParseError::InvalidUtf8,
        ParseError::UnknownField,
        ParseError::TooLong,
        ParseError::InvalidEvent,
    ];

    /// The counter name used in `internal.bad_lines`.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Malformed => "malformed",
            ParseError::EmptyName => "empty_name",
            ParseError::InvalidValue => "invalid_value",
            ParseError::InvalidType => "invalid_type",
            ParseError::InvalidSampleRate => "invalid_sample_rate",
            ParseError::InvalidTags => "invalid_tags",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::UnknownField => "unknown_field",
            ParseError::TooLong => "too_long",
            ParseError::InvalidEvent => "invalid_event",
        }
    }

    /// A dense index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}
