//! Metric-name patterns: an exact name, or a glob where `*` stands for any run of characters
//! (dots included). Compiled once at config load.

use std::fmt;

/// A compiled name pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    /// The pattern split at `*`; one part means no `*` (an exact name).
    parts: Vec<String>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl Glob {
    /// Compiles a pattern.
    ///
    /// # Errors
    /// When the pattern is empty or holds a control character.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("metric pattern must not be empty".to_string());
        }
        if pattern.chars().any(char::is_control) {
            return Err("metric pattern must not hold control characters".to_string());
        }
        Ok(Glob {
            pattern: pattern.to_string(),
            parts: pattern.split('*').map(str::to_string).collect(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern has no `*`.
    pub fn is_exact(&self) -> bool {
        self.parts.len() == 1
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return false,
        };
        let Some(mut tail) = name.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(at) => tail = &tail[at + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn glob(p: &str) -> Glob {
        Glob::new(p).expect("valid pattern")
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        assert!(glob("api.latency").matches("api.latency"));
        assert!(!glob("api.latency").matches("api.latency2"));
        assert!(!glob("api.latency").matches("api"));
    }

    #[test]
    fn star_matches_any_run_including_dots_and_empty() {
        let g = glob("api.*");
        assert!(g.matches("api."));
        assert!(g.matches("api.a.b.c"));
        assert!(!g.matches("ap"));
        assert!(glob("*").matches(""));
        assert!(glob("*.count").matches("x.y.count"));
        assert!(!glob("*.count").matches("x.y.counts"));
    }

    #[test]
    fn middle_stars_do_not_overlap_prefix_and_suffix() {
        let g = glob("ab*ba");
        assert!(!g.matches("aba"));
        assert!(g.matches("abba"));
        assert!(glob("a*b*c").matches("a_b_c"));
        assert!(!glob("a*b*c").matches("a_c_b"));
    }

    #[test]
    fn empty_pattern_is_rejected() {
        assert!(Glob::new("").is_err());
    }
}
