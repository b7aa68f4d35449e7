//! statsd_exporter mapping files (YAML), read unchanged and compiled once into a matcher that
//! gives one StatsD series its Prometheus name, labels, observer type and TTL.
//!
//! Pure: text in, [`Mapping`] out ([`Mapping::load`] alone reads a file). The caller applies a
//! mapping once per series, when the series appears, and keeps the answer.
//!
//! The semantics follow statsd_exporter's `pkg/mapper` (`mapper.go`, `mapping.go`,
//! `mapper_defaults.go`, `fsm/fsm.go`, `fsm/formatter.go`, `escape.go`) and
//! `pkg/exporter/exporter.go`, as read for this module:
//!
//! - **Globs before regexes.** Every `glob` rule is tried before any `regex` rule, whatever
//!   their order in the file. Among globs the first in file order wins (unless
//!   `defaults.glob_disable_ordering`, see below); among regexes the first in file order wins.
//! - **Glob syntax.** A glob is dot-separated parts, each either `*` or a literal made of
//!   `[A-Za-z0-9_]` with single inner dashes (the first part may not start with a digit); a
//!   partial wildcard such as `foo*` is invalid. A name is split at every `.` and must have as
//!   many parts as the glob; `*` matches exactly one part, which may be empty (`a..b` matches
//!   `a.*.b`), and never crosses a dot. The `n`-th `*` is capture `$n`.
//! - **`glob_disable_ordering: true`** drops file order among globs: at each part a literal is
//!   preferred to `*`, left to right, so the most specific glob wins.
//! - Not mirrored: statsd_exporter's glob FSM (`AddState`) gives no result to a glob whose last
//!   state an earlier, longer glob already created (`a.b` after `a.b.c`), so there such a glob
//!   never matches; here it matches as its README's first-match rule says.
//! - **Regexes are not anchored.** statsd_exporter searches (`FindStringSubmatchIndex`), so
//!   `match: "."` matches every non-empty name (its README's drop-all example relies on it);
//!   write `^...$` to match the whole name. `$0` is the matched text. Rust's `regex` crate and
//!   Go's RE2 share their syntax and leftmost-first semantics, so captures agree; one difference
//!   remains: `\w`, `\d`, `\s` and `\b` are Unicode-aware here and ASCII-only in Go, which
//!   matters only for names with non-ASCII characters.
//! - **Templates** (`name` and label values) expand like Go's `Regexp.Expand`: `$name` takes the
//!   longest run of `[A-Za-z0-9_]` (so `$1_total` is the group named `1_total`, which is empty:
//!   write `${1}_total`, as statsd_exporter's README does), `${name}` is explicit, `$$` is a
//!   `$`, and a missing group expands to nothing. For globs only numbers refer to captures
//!   (statsd_exporter's glob formatter agrees except on oddities such as `$1$2`, which it
//!   empties and we expand).
//! - **Names.** A `name` may hold only `[A-Za-z0-9_]` and `$n`/`${n}` references (not starting
//!   with a digit), as statsd_exporter's `metricNameRE` demands; regex rules may also use
//!   `${group}` for a named group (an extension). After expansion the name is escaped as
//!   SPEC §7.1 says (see [`escape_metric_name`]); a name that
//!   expands to nothing drops the series, as statsd_exporter does (`empty_metric_name`).
//! - **`match_metric_type`**: `counter`, `gauge` or `observer` (timers, histograms and
//!   distributions). statsd_exporter rejects StatsD sets outright; here a set counts as a gauge,
//!   as the set is exported as a gauge.
//! - **`action`**: `map` (the default) or `drop`. statsd_exporter has no other action (no
//!   `continue`). statsd_exporter demands a `name` even on a drop rule; here it may be left out.
//! - **Observer**: `observer_type` (or the legacy `timer_type`; `observer_type` wins) from the
//!   rule, else from `defaults`. Histogram buckets come from `histogram_options.buckets` (or the
//!   legacy `buckets`), else from the defaults'; summary quantiles likewise from
//!   `summary_options.quantiles` / `quantiles`. Both spellings in one rule, or options of the
//!   other observer type, are errors as in statsd_exporter. Options given without any observer
//!   type are unused, as there.
//! - **`ttl`**: a Go duration (`30s`, `1m30s`, `1.5h`; `0` for none). A rule without one, or with
//!   `0`, takes the defaults' `ttl` (statsd_exporter's `Ttl == 0 && Defaults.Ttl > 0`).
//!
//! YAML: scalars read as written (a label value `1.10` stays `1.10`, as Go's yaml.v2 gives a
//! string field), YAML 1.1 booleans (`yes`, `off`) and merge keys (`<<: *anchor`) as yaml.v2
//! reads them; only the first document counts.
//!
//! Stricter than statsd_exporter, whose YAML decoding ignores unknown keys: an unknown key is
//! an error. Keys statsd_exporter knows that cannot change what we export are accepted and
//! ignored: `help`, `summary_options.max_age`, `age_buckets`, `buf_cap`, a quantile's `error`,
//! and `honor_labels: false`. Those that would change it (`scale` other than 1,
//! `honor_labels: true`, `match_type: fsm`) are errors rather than silently wrong.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use rustc_hash::FxHashMap;
use saphyr::{MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::{Marker, Parser};

use crate::protocol::MetricKind;

/// A compiled mapping file.
#[derive(Debug)]
pub struct Mapping {
    rules: Vec<Rule>,
    globs: GlobTrie,
    /// Regex rules in file order, with their index into `rules`.
    regexes: Vec<(Regex, u32)>,
    glob_ordering: bool,
    default_ttl: Option<Duration>,
}

/// What a mapping decides for one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// No rule matched: the caller escapes the name itself.
    Unmatched,
    /// `action: drop` matched (or the name expanded to nothing): the series is not exported.
    Drop,
    Map(MapResult),
}

/// The Prometheus identity a rule gives a series.
#[derive(Debug, Clone, PartialEq)]
pub struct MapResult {
    /// A valid Prometheus metric name.
    pub name: String,
    /// In file order, captures expanded.
    pub labels: Vec<(String, String)>,
    /// From the rule, else from the defaults; `None` when neither says.
    pub observer: Option<Observer>,
    /// From the rule, else from the defaults; `None` for 0 or absent.
    pub ttl: Option<Duration>,
}

/// How timers, histograms and distributions are exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Observer {
    /// Empty when the file gives no quantiles: the caller uses its own.
    Summary { quantiles: Vec<f64> },
    /// Empty when the file gives no buckets: the caller uses its own.
    Histogram { buckets: Vec<f64> },
}

/// A mapping file that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Mapping {
    /// Reads and compiles a mapping file.
    ///
    /// # Errors
    /// [`MappingError::Read`] when the file cannot be read, else as [`Mapping::parse`].
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Mapping::parse(&text, path)
    }

    /// Compiles a mapping file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`MappingError::Invalid`] with the line and column of the first problem: YAML syntax,
    /// an unknown key, a value of the wrong type, or a rule statsd_exporter would refuse.
    pub fn parse(text: &str, path: &Path) -> Result<Mapping, MappingError> {
        let reader = Reader { path };
        let root = reader.load_yaml(text)?;
        reader.compile(root.as_ref())
    }

    /// Applies the first matching rule to a StatsD series name of this kind.
    pub fn apply(&self, name: &str, kind: MetricKind) -> Mapped {
        let class = KindClass::of(kind);
        let accept = |rule: u32| self.rules[rule as usize].accepts(class);
        if !self.globs.is_empty() {
            let parts: Vec<&str> = name.split('.').collect();
            if let Some((rule, captures)) = self.globs.find(&parts, self.glob_ordering, accept) {
                let group = |i: usize| i.checked_sub(1).and_then(|i| captures.get(i)).copied();
                return self.rules[rule as usize].result(&group);
            }
        }
        for (regex, rule) in &self.regexes {
            if !accept(*rule) {
                continue;
            }
            if let Some(captures) = regex.captures(name) {
                let group = |i: usize| captures.get(i).map(|m| m.as_str());
                return self.rules[*rule as usize].result(&group);
            }
        }
        Mapped::Unmatched
    }

    /// Whether some rule gives an observer type (its own or the defaults'): when none does,
    /// the mapping cannot change how a timer is observed, and the flush path need not ask.
    pub fn sets_observers(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.map.as_ref().is_some_and(|m| m.observer.is_some()))
    }

    /// The defaults' `ttl`, which statsd_exporter also gives series no rule matched.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// How many rules the file holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when the file holds no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Escapes a name as SPEC §7.1 says, the same for mapped and unmapped names: a leading digit
/// gets a `_` in front, and every character outside `[A-Za-z0-9_]` becomes one `_`.
/// statsd_exporter's `EscapeMetricName` differs in one corner: it turns a run of dashes into
/// one `_` (`a--b` -> `a_b`, here `a__b`); the README says so.
pub fn escape_metric_name(name: &str) -> String {
    if name.is_empty() {
        // Nothing to name the series by: the caller drops it.
        return String::new();
    }
    super::name::escaped(name)
}

/// Whether `name` is a valid Prometheus label name.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------------------------
// Rules and their results

/// `match_metric_type`'s three classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindClass {
    Counter,
    Gauge,
    Observer,
}

impl KindClass {
    fn of(kind: MetricKind) -> KindClass {
        match kind {
            MetricKind::Counter => KindClass::Counter,
            MetricKind::Gauge | MetricKind::Set => KindClass::Gauge,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => {
                KindClass::Observer
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    only: Option<KindClass>,
    /// `None` for `action: drop`.
    map: Option<RuleMap>,
}

#[derive(Debug)]
struct RuleMap {
    name: Template,
    labels: Vec<(String, Template)>,
    observer: Option<Observer>,
    ttl: Option<Duration>,
}

impl Rule {
    fn accepts(&self, class: KindClass) -> bool {
        self.only.is_none_or(|only| only == class)
    }

    fn result<'n>(&self, group: &dyn Fn(usize) -> Option<&'n str>) -> Mapped {
        let Some(map) = &self.map else {
            return Mapped::Drop;
        };
        let name = escape_metric_name(&map.name.expand(group));
        if name.is_empty() {
            return Mapped::Drop;
        }
        Mapped::Map(MapResult {
            name,
            labels: map
                .labels
                .iter()
                .map(|(key, value)| (key.clone(), value.expand(group)))
                .collect(),
            observer: map.observer.clone(),
            ttl: map.ttl,
        })
    }
}

/// A `name` or label value, split into literal text and capture references.
#[derive(Debug, Default)]
struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Text(String),
    Group(usize),
}

impl Template {
    /// Parses `$n`, `${n}`, `$name`, `${name}` and `$$` as Go's `Regexp.Expand` does; `named`
    /// resolves a name that is not a number (to nothing when it returns `None`).
    fn compile(source: &str, named: &dyn Fn(&str) -> Option<usize>) -> Template {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                text.push('$');
                rest = after;
                continue;
            }
            let Some((reference, after)) = split_reference(rest) else {
                text.push('$');
                continue;
            };
            rest = after;
            let group = match reference.parse::<usize>() {
                Ok(n) if reference.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => named(reference),
            };
            if let Some(group) = group {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Group(group));
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Template(pieces)
    }

    fn expand<'n>(&self, group: &dyn Fn(usize) -> Option<&'n str>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Group(i) => out.push_str(group(*i).unwrap_or("")),
            }
        }
        out
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Splits what follows a `$` into a reference and the rest, or `None` when no reference
/// follows (the `$` is then literal, as in Go).
fn split_reference(after_dollar: &str) -> Option<(&str, &str)> {
    if let Some(braced) = after_dollar.strip_prefix('{') {
        let end = braced.find('}')?;
        let name = &braced[..end];
        (!name.is_empty() && name.bytes().all(is_word_byte)).then(|| (name, &braced[end + 1..]))
    } else {
        let end = after_dollar
            .bytes()
            .position(|b| !is_word_byte(b))
            .unwrap_or(after_dollar.len());
        (end > 0).then(|| after_dollar.split_at(end))
    }
}

/// Checks a `name` template as statsd_exporter's `metricNameRE` does: `[A-Za-z0-9_]` and
/// `$n` / `${n}` references, not starting with a digit. `named` admits `${group}` too.
fn check_name_template(source: &str, named: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if source.is_empty() {
        return Err("`name` is empty".to_string());
    }
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            let braced = bytes.get(j) == Some(&b'{');
            if braced {
                j += 1;
            }
            let digits = bytes[j..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                j += digits;
                if bytes.get(j) == Some(&b'}') {
                    j += 1;
                }
                i = j;
                continue;
            }
            let word = bytes[j..].iter().take_while(|b| is_word_byte(**b)).count();
            if braced && word > 0 && bytes.get(j + word) == Some(&b'}') {
                let group = &source[j..j + word];
                if named(group) {
                    i = j + word + 1;
                    continue;
                }
                return Err(format!("`name` refers to no capture group `{group}`"));
            }
            return Err(format!(
                "`name` {source:?}: a `$` must start a reference like $1 or ${{1}}"
            ));
        }
        let c = source[i..].chars().next().unwrap_or('$');
        if i == 0 && c.is_ascii_digit() {
            return Err(format!("`name` {source:?} must not start with a digit"));
        }
        if !(c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`name` {source:?} may hold only letters, digits, `_` and $n references, not {c:?}"
            ));
        }
        i += c.len_utf8();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Glob matching: a trie over dot-separated parts

#[derive(Debug, Default)]
struct GlobTrie {
    nodes: Vec<GlobNode>,
}

#[derive(Debug)]
struct GlobNode {
    literal: FxHashMap<Box<str>, u32>,
    star: Option<u32>,
    /// Rules whose glob ends here, in file order.
    rules: Vec<u32>,
    /// The first rule in this node's subtree: no match below can beat it.
    first_rule: u32,
}

impl GlobNode {
    fn new(first_rule: u32) -> GlobNode {
        GlobNode {
            literal: FxHashMap::default(),
            star: None,
            rules: Vec::new(),
            first_rule,
        }
    }
}

/// One search's state: the name's parts, the captures so far, the best match so far.
struct Search<'a, 'n, F> {
    parts: &'a [&'n str],
    ordered: bool,
    accept: F,
    captures: Vec<&'n str>,
    best: Option<(u32, Vec<&'n str>)>,
}

impl GlobTrie {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a glob; rules must come in increasing order.
    fn insert(&mut self, glob: &str, rule: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(GlobNode::new(rule));
        }
        let mut node = 0usize;
        for part in glob.split('.') {
            let next = if part == "*" {
                self.nodes[node].star
            } else {
                self.nodes[node].literal.get(part).copied()
            };
            let next = match next {
                Some(next) => next,
                None => {
                    let id = self.nodes.len() as u32;
                    self.nodes.push(GlobNode::new(rule));
                    if part == "*" {
                        self.nodes[node].star = Some(id);
                    } else {
                        self.nodes[node].literal.insert(part.into(), id);
                    }
                    id
                }
            };
            node = next as usize;
        }
        self.nodes[node].rules.push(rule);
    }

    /// The winning rule for these parts and its captures.
    fn find<'n>(
        &self,
        parts: &[&'n str],
        ordered: bool,
        accept: impl Fn(u32) -> bool,
    ) -> Option<(u32, Vec<&'n str>)> {
        let mut search = Search {
            parts,
            ordered,
            accept,
            captures: Vec::new(),
            best: None,
        };
        self.visit(0, 0, &mut search);
        search.best
    }

    fn visit<'n, F: Fn(u32) -> bool>(&self, node: usize, depth: usize, s: &mut Search<'_, 'n, F>) {
        let here = &self.nodes[node];
        if let Some((best, _)) = &s.best
            && (!s.ordered || here.first_rule >= *best)
        {
            return;
        }
        let Some(part) = s.parts.get(depth) else {
            if let Some(&rule) = here.rules.iter().find(|&&rule| (s.accept)(rule)) {
                s.best = Some((rule, s.captures.clone()));
            }
            return;
        };
        if let Some(&next) = here.literal.get(*part) {
            self.visit(next as usize, depth + 1, s);
        }
        if let Some(next) = here.star {
            s.captures.push(part);
            self.visit(next as usize, depth + 1, s);
            s.captures.pop();
        }
    }
}

/// Checks a glob as statsd_exporter's `metricLineRE` does.
fn check_glob(glob: &str) -> Result<(), String> {
    for (i, part) in glob.split('.').enumerate() {
        if part == "*" {
            continue;
        }
        let bytes = part.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|&b| is_word_byte(b) && (i > 0 || !b.is_ascii_digit()));
        let dashes_ok = bytes.windows(2).all(|w| !(w[0] == b'-' && w[1] == b'-'))
            && bytes.last() != Some(&b'-');
        if !first_ok || !dashes_ok || !bytes.iter().all(|&b| is_word_byte(b) || b == b'-') {
            return Err(format!(
                "invalid glob {glob:?}: each dot-separated part must be `*` or letters, digits, \
                 `_` and single inner `-` (the first part not starting with a digit)"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Go durations

/// Parses a Go duration (`300ms`, `1m30s`, `1.5h`, `0`) as `time.ParseDuration` does.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 30s, 1m30s, 1h; 0 for none)");
    let body = text.strip_prefix('+').unwrap_or(text);
    if let Some(magnitude) = body.strip_prefix('-') {
        if !magnitude.is_empty() && magnitude.bytes().all(|b| b == b'0') {
            return Ok(Duration::ZERO);
        }
        return Err(format!("duration {text:?} must not be negative"));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        total = total.saturating_add(whole.saturating_mul(nanos));
        // Go keeps the fraction's digits that still matter and truncates the rest.
        let mut scale = nanos;
        for digit in fraction.bytes().take(30) {
            scale /= 10;
            total += u128::from(digit - b'0') * scale;
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

// ---------------------------------------------------------------------------------------------
// Reading the YAML: nodes with their positions into rules

type Node<'t> = MarkedYaml<'t>;
type MapEntries<'a, 't> = Vec<(&'a str, &'a Node<'t>, Marker)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Glob,
    Regex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObserverType {
    Summary,
    Histogram,
}

#[derive(Debug, Default)]
struct Defaults {
    observer: Option<ObserverType>,
    match_type: Option<MatchType>,
    buckets: Vec<f64>,
    quantiles: Vec<f64>,
    ttl: Option<Duration>,
    glob_disable_ordering: bool,
}

/// A `histogram_options` or `summary_options` block: present or not, and its list if given.
type Options = Option<Option<Vec<f64>>>;

struct Reader<'p> {
    path: &'p Path,
}

impl Reader<'_> {
    fn error(&self, at: Marker, message: impl Into<String>) -> MappingError {
        MappingError::Invalid {
            path: self.path.to_path_buf(),
            line: at.line(),
            column: at.col() + 1,
            message: message.into(),
        }
    }

    fn load_yaml<'t>(&self, text: &'t str) -> Result<Option<Node<'t>>, MappingError> {
        let mut loader: YamlLoader<'t, Node<'t>> = YamlLoader::default();
        // Scalars stay as written, so a label value `1.10` stays "1.10" (Go's yaml.v2 decodes
        // any scalar into a string field from its text).
        loader.early_parse(false);
        let mut parser = Parser::new_from_str(text);
        let loaded = parser.load(&mut loader, false);
        if let Some(error) = loaded.err().or_else(|| loader.error().cloned()) {
            return Err(self.error(*error.marker(), format!("YAML: {}", error.info())));
        }
        Ok(loader.into_documents().into_iter().next())
    }

    fn compile(&self, root: Option<&Node<'_>>) -> Result<Mapping, MappingError> {
        let mut defaults = Defaults::default();
        let mut entries: &[Node<'_>] = &[];
        let top = match root {
            Some(root) => self.mapping(root, "the top level")?,
            None => Vec::new(),
        };
        for (key, value, at) in top {
            match key {
                "defaults" => {
                    if let Some(node) = non_null(value) {
                        defaults = self.defaults(node)?;
                    }
                }
                "mappings" => entries = self.sequence(value, "`mappings`")?,
                _ => return Err(self.unknown(at, key, "the top level", &["defaults", "mappings"])),
            }
        }
        let mut mapping = Mapping {
            rules: Vec::with_capacity(entries.len()),
            globs: GlobTrie::default(),
            regexes: Vec::new(),
            glob_ordering: !defaults.glob_disable_ordering,
            default_ttl: defaults.ttl,
        };
        for entry in entries {
            let index = mapping.rules.len() as u32;
            let (rule, matcher) = self.rule(entry, &defaults)?;
            match matcher {
                Matcher::Glob(glob) => mapping.globs.insert(&glob, index),
                Matcher::Regex(regex) => mapping.regexes.push((regex, index)),
            }
            mapping.rules.push(rule);
        }
        Ok(mapping)
    }

    fn defaults(&self, node: &Node<'_>) -> Result<Defaults, MappingError> {
        const KEYS: &[&str] = &[
            "observer_type",
            "timer_type",
            "match_type",
            "glob_disable_ordering",
            "ttl",
            "histogram_options",
            "summary_options",
            "buckets",
            "quantiles",
        ];
        let mut defaults = Defaults::default();
        let (mut observer, mut timer) = (None, None);
        let (mut histogram, mut summary): (Options, Options) = (None, None);
        let (mut buckets, mut quantiles) = (None, None);
        for (key, value, at) in self.mapping(node, "`defaults`")? {
            match key {
                "observer_type" => observer = self.observer_type(value)?,
                "timer_type" => timer = self.observer_type(value)?,
                "match_type" => defaults.match_type = self.match_type(value)?,
                "glob_disable_ordering" => defaults.glob_disable_ordering = self.boolean(value)?,
                "ttl" => defaults.ttl = self.ttl(value)?,
                "histogram_options" => histogram = self.histogram_options(value)?,
                "summary_options" => summary = self.summary_options(value)?,
                "buckets" => buckets = self.buckets(value)?,
                "quantiles" => quantiles = self.quantiles(value)?,
                _ => return Err(self.unknown(at, key, "`defaults`", KEYS)),
            }
        }
        defaults.observer = observer.or(timer);
        // As statsd_exporter: the legacy lists count only when the options give none.
        defaults.buckets = first_non_empty([histogram.flatten(), buckets]);
        defaults.quantiles = first_non_empty([summary.flatten(), quantiles]);
        Ok(defaults)
    }

    fn rule(&self, entry: &Node<'_>, defaults: &Defaults) -> Result<(Rule, Matcher), MappingError> {
        const KEYS: &[&str] = &[
            "match",
            "name",
            "labels",
            "match_type",
            "action",
            "match_metric_type",
            "observer_type",
            "timer_type",
            "histogram_options",
            "summary_options",
            "buckets",
            "quantiles",
            "ttl",
            "help",
            "honor_labels",
            "scale",
        ];
        let entry_at = entry.span.start;
        let mut pattern = None;
        let mut name = None;
        let mut labels = Vec::new();
        let mut match_type = None;
        let mut drop = false;
        let mut only = None;
        let (mut observer, mut timer) = (None, None);
        let (mut histogram, mut summary): (Options, Options) = (None, None);
        let (mut buckets, mut quantiles) = (None, None);
        let mut ttl = None;
        for (key, value, at) in self.mapping(entry, "a mapping entry")? {
            match key {
                "match" => pattern = self.string(value)?.map(|s| (s, value.span.start)),
                "name" => name = self.string(value)?.map(|s| (s, value.span.start)),
                "labels" => labels = self.labels(value)?,
                "match_type" => match_type = self.match_type(value)?,
                "action" => drop = self.action(value)?,
                "match_metric_type" => only = self.metric_type(value)?,
                "observer_type" => observer = self.observer_type(value)?,
                "timer_type" => timer = self.observer_type(value)?,
                "histogram_options" => histogram = self.histogram_options(value)?,
                "summary_options" => summary = self.summary_options(value)?,
                "buckets" => buckets = self.buckets(value)?,
                "quantiles" => quantiles = self.quantiles(value)?,
                "ttl" => ttl = self.ttl(value)?,
                "help" => {
                    self.string(value)?;
                }
                "honor_labels" => {
                    if self.boolean(value)? {
                        return Err(self.error(
                            value.span.start,
                            "`honor_labels: true` is not supported: mapping labels always \
                             win over tags",
                        ));
                    }
                }
                "scale" => {
                    if non_null(value).is_some() && self.number(value)? != 1.0 {
                        return Err(self.error(value.span.start, "`scale` is not supported"));
                    }
                }
                _ => return Err(self.unknown(at, key, "a mapping entry", KEYS)),
            }
        }
        let Some((pattern, pattern_at)) = pattern else {
            return Err(self.error(entry_at, "mapping entry has no `match`"));
        };
        let match_type = match_type
            .or(defaults.match_type)
            .unwrap_or(MatchType::Glob);
        let matcher = match match_type {
            MatchType::Glob => {
                check_glob(pattern).map_err(|m| self.error(pattern_at, m))?;
                Matcher::Glob(pattern.to_string())
            }
            MatchType::Regex => Matcher::Regex(Regex::new(pattern).map_err(|e| {
                // The regex crate's message ends with its one-line reason.
                let e = e.to_string();
                let reason = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                self.error(
                    pattern_at,
                    format!("invalid regex {pattern:?}: {}", reason.trim()),
                )
            })?),
        };
        let named = |group: &str| -> Option<usize> {
            match &matcher {
                Matcher::Glob(_) => None,
                Matcher::Regex(regex) => regex.capture_names().position(|n| n == Some(group)),
            }
        };
        if let Some((name, at)) = &name {
            check_name_template(name, &|group| named(group).is_some())
                .map_err(|m| self.error(*at, m))?;
        }
        if drop {
            return Ok((Rule { only, map: None }, matcher));
        }
        let Some((name, _)) = name else {
            return Err(self.error(
                entry_at,
                "mapping entry has no `name` (needed unless `action: drop`)",
            ));
        };

        if buckets.is_some() && histogram.as_ref().is_some_and(Option::is_some) {
            return Err(self.error(
                entry_at,
                "`buckets` and `histogram_options.buckets` cannot both be given",
            ));
        }
        if quantiles.is_some() && summary.as_ref().is_some_and(Option::is_some) {
            return Err(self.error(
                entry_at,
                "`quantiles` and `summary_options.quantiles` cannot both be given",
            ));
        }
        let observer = match observer.or(timer).or(defaults.observer) {
            None => None,
            Some(ObserverType::Histogram) => {
                if summary.is_some() {
                    return Err(self.error(
                        entry_at,
                        "a histogram observer cannot take `summary_options`",
                    ));
                }
                let buckets =
                    first_non_empty([buckets, histogram.flatten(), Some(defaults.buckets.clone())]);
                Some(Observer::Histogram { buckets })
            }
            Some(ObserverType::Summary) => {
                if histogram.is_some() {
                    return Err(self.error(
                        entry_at,
                        "a summary observer cannot take `histogram_options`",
                    ));
                }
                let quantiles = first_non_empty([
                    quantiles,
                    summary.flatten(),
                    Some(defaults.quantiles.clone()),
                ]);
                Some(Observer::Summary { quantiles })
            }
        };
        let map = RuleMap {
            name: Template::compile(name, &named),
            labels: labels
                .into_iter()
                .map(|(key, value)| (key, Template::compile(&value, &named)))
                .collect(),
            observer,
            ttl: ttl.or(defaults.ttl),
        };
        Ok((
            Rule {
                only,
                map: Some(map),
            },
            matcher,
        ))
    }

    // --- typed values ----------------------------------------------------------------------

    fn unknown(&self, at: Marker, key: &str, place: &str, known: &[&str]) -> MappingError {
        self.error(
            at,
            format!(
                "unknown key `{key}` in {place} (known: {})",
                known.join(", ")
            ),
        )
    }

    /// A mapping's entries in file order; keys must be strings. Null is an empty mapping.
    /// YAML 1.1 merge keys (`<<: *anchor`), which Go's yaml.v2 honours, are merged in: keys
    /// given explicitly win, then earlier merged mappings over later ones.
    fn mapping<'a, 't>(
        &self,
        node: &'a Node<'t>,
        place: &str,
    ) -> Result<MapEntries<'a, 't>, MappingError> {
        let Some(node) = non_null(node) else {
            return Ok(Vec::new());
        };
        let YamlData::Mapping(map) = &node.data else {
            return Err(self.error(node.span.start, format!("{place} must be a mapping")));
        };
        let mut entries: MapEntries<'a, 't> = Vec::with_capacity(map.len());
        let mut merged = Vec::new();
        for (key, value) in map {
            match scalar(key) {
                Some(("<<", ScalarStyle::Plain)) => match &value.data {
                    YamlData::Sequence(sources) => {
                        for source in sources {
                            merged.extend(self.mapping(source, place)?);
                        }
                    }
                    _ => merged.extend(self.mapping(value, place)?),
                },
                Some((text, _)) => entries.push((text, value, key.span.start)),
                None => return Err(self.error(key.span.start, "a key must be a string")),
            }
        }
        for entry in merged {
            if !entries.iter().any(|(key, _, _)| *key == entry.0) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// A sequence's items. Null is an empty sequence.
    fn sequence<'a, 't>(
        &self,
        node: &'a Node<'t>,
        place: &str,
    ) -> Result<&'a [Node<'t>], MappingError> {
        let Some(node) = non_null(node) else {
            return Ok(&[]);
        };
        match &node.data {
            YamlData::Sequence(items) => Ok(items),
            _ => Err(self.error(node.span.start, format!("{place} must be a list"))),
        }
    }

    /// A scalar as its text; `None` for null.
    fn string<'a>(&self, node: &'a Node<'_>) -> Result<Option<&'a str>, MappingError> {
        let Some(node) = non_null(node) else {
            return Ok(None);
        };
        match scalar(node) {
            Some((text, _)) => Ok(Some(text)),
            None => Err(self.error(node.span.start, "expected a string")),
        }
    }

    fn keyword<'a>(&self, node: &'a Node<'_>) -> Result<Option<&'a str>, MappingError> {
        Ok(self.string(node)?.filter(|s| !s.is_empty()))
    }

    fn boolean(&self, node: &Node<'_>) -> Result<bool, MappingError> {
        let Some(text) = self.string(node)? else {
            return Ok(false);
        };
        // YAML 1.2's spellings and YAML 1.1's, which Go's yaml.v2 reads.
        match text {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            _ => Err(self.error(
                node.span.start,
                format!("expected true or false, not {text:?}"),
            )),
        }
    }

    fn number(&self, node: &Node<'_>) -> Result<f64, MappingError> {
        let resolved = match &node.data {
            YamlData::Representation(text, style, tag) => Scalar::parse_from_cow_and_metadata(
                Cow::Borrowed(text.as_ref()),
                *style,
                tag.as_ref(),
            ),
            _ => None,
        };
        match resolved {
            Some(Scalar::Integer(n)) => Ok(n as f64),
            Some(Scalar::FloatingPoint(x)) => Ok(x.0),
            _ => Err(self.error(node.span.start, "expected a number")),
        }
    }

    fn match_type(&self, node: &Node<'_>) -> Result<Option<MatchType>, MappingError> {
        match self.keyword(node)? {
            None => Ok(None),
            Some("glob") => Ok(Some(MatchType::Glob)),
            Some("regex") => Ok(Some(MatchType::Regex)),
            Some(other) => Err(self.error(
                node.span.start,
                format!("`match_type` must be glob or regex, not {other:?}"),
            )),
        }
    }

    fn observer_type(&self, node: &Node<'_>) -> Result<Option<ObserverType>, MappingError> {
        match self.keyword(node)? {
            None => Ok(None),
            Some("summary") => Ok(Some(ObserverType::Summary)),
            Some("histogram") => Ok(Some(ObserverType::Histogram)),
            Some(other) => Err(self.error(
                node.span.start,
                format!("observer type must be summary or histogram, not {other:?}"),
            )),
        }
    }

    /// `action`: true for drop.
    fn action(&self, node: &Node<'_>) -> Result<bool, MappingError> {
        match self.keyword(node)? {
            None | Some("map") => Ok(false),
            Some("drop") => Ok(true),
            Some(other) => Err(self.error(
                node.span.start,
                format!("`action` must be map or drop, not {other:?}"),
            )),
        }
    }

    fn metric_type(&self, node: &Node<'_>) -> Result<Option<KindClass>, MappingError> {
        match self.keyword(node)? {
            None => Ok(None),
            Some("counter") => Ok(Some(KindClass::Counter)),
            Some("gauge") => Ok(Some(KindClass::Gauge)),
            Some("observer") => Ok(Some(KindClass::Observer)),
            Some(other) => Err(self.error(
                node.span.start,
                format!("`match_metric_type` must be counter, gauge or observer, not {other:?}"),
            )),
        }
    }

    fn ttl(&self, node: &Node<'_>) -> Result<Option<Duration>, MappingError> {
        let Some(text) = self.string(node)? else {
            return Ok(None);
        };
        if text.bytes().all(|b| b.is_ascii_digit()) {
            if text.bytes().all(|b| b == b'0') {
                return Ok(None);
            }
            // yaml.v2 would read a bare number as nanoseconds: surely not what was meant.
            return Err(self.error(
                node.span.start,
                format!("duration {text:?} needs a unit, e.g. {text}s"),
            ));
        }
        let ttl = parse_go_duration(text).map_err(|m| self.error(node.span.start, m))?;
        Ok((!ttl.is_zero()).then_some(ttl))
    }

    fn labels(&self, node: &Node<'_>) -> Result<Vec<(String, String)>, MappingError> {
        let mut labels = Vec::new();
        for (key, value, at) in self.mapping(node, "`labels`")? {
            if !is_label_name(key) {
                return Err(self.error(at, format!("{key:?} is not a valid label name")));
            }
            let value = self.string(value)?.unwrap_or_default();
            labels.push((key.to_string(), value.to_string()));
        }
        Ok(labels)
    }

    /// A bucket list: finite, strictly increasing. `None` when absent.
    fn buckets(&self, node: &Node<'_>) -> Result<Option<Vec<f64>>, MappingError> {
        if non_null(node).is_none() {
            return Ok(None);
        }
        let mut buckets: Vec<f64> = Vec::new();
        for item in self.sequence(node, "`buckets`")? {
            let bound = self.number(item)?;
            if !bound.is_finite() {
                return Err(self.error(item.span.start, "a bucket bound must be finite"));
            }
            if buckets.last().is_some_and(|&last| bound <= last) {
                return Err(self.error(item.span.start, "buckets must be strictly increasing"));
            }
            buckets.push(bound);
        }
        Ok(Some(buckets))
    }

    /// A quantile list of `{quantile, error}`; `error` is read and unused.
    fn quantiles(&self, node: &Node<'_>) -> Result<Option<Vec<f64>>, MappingError> {
        if non_null(node).is_none() {
            return Ok(None);
        }
        let mut quantiles = Vec::new();
        for item in self.sequence(node, "`quantiles`")? {
            let mut quantile = None;
            for (key, value, at) in self.mapping(item, "a quantile")? {
                match key {
                    "quantile" => quantile = Some((self.number(value)?, value.span.start)),
                    "error" => {
                        self.number(value)?;
                    }
                    _ => return Err(self.unknown(at, key, "a quantile", &["quantile", "error"])),
                }
            }
            let Some((q, at)) = quantile else {
                return Err(self.error(item.span.start, "a quantile needs `quantile`"));
            };
            if !(q > 0.0 && q < 1.0) {
                return Err(self.error(at, format!("quantile {q} must be between 0 and 1")));
            }
            quantiles.push(q);
        }
        Ok(Some(quantiles))
    }

    fn histogram_options(&self, node: &Node<'_>) -> Result<Options, MappingError> {
        if non_null(node).is_none() {
            return Ok(None);
        }
        let mut buckets = None;
        for (key, value, at) in self.mapping(node, "`histogram_options`")? {
            match key {
                "buckets" => buckets = self.buckets(value)?,
                _ => return Err(self.unknown(at, key, "`histogram_options`", &["buckets"])),
            }
        }
        Ok(Some(buckets))
    }

    fn summary_options(&self, node: &Node<'_>) -> Result<Options, MappingError> {
        const KEYS: &[&str] = &["quantiles", "max_age", "age_buckets", "buf_cap"];
        if non_null(node).is_none() {
            return Ok(None);
        }
        let mut quantiles = None;
        for (key, value, at) in self.mapping(node, "`summary_options`")? {
            match key {
                "quantiles" => quantiles = self.quantiles(value)?,
                // statsd_exporter's sliding window; ours is the flush interval.
                "max_age" => {
                    self.ttl(value)?;
                }
                "age_buckets" | "buf_cap" => {
                    self.number(value)?;
                }
                _ => return Err(self.unknown(at, key, "`summary_options`", KEYS)),
            }
        }
        Ok(Some(quantiles))
    }
}

enum Matcher {
    Glob(String),
    Regex(Regex),
}

fn first_non_empty<const N: usize>(lists: [Option<Vec<f64>>; N]) -> Vec<f64> {
    lists
        .into_iter()
        .flatten()
        .find(|list| !list.is_empty())
        .unwrap_or_default()
}

/// The node, or `None` when it is null (`~`, `null`, or nothing).
fn non_null<'a, 't>(node: &'a Node<'t>) -> Option<&'a Node<'t>> {
    match &node.data {
        YamlData::Representation(text, ScalarStyle::Plain, None)
            if matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") =>
        {
            None
        }
        YamlData::Value(Scalar::Null) => None,
        _ => Some(node),
    }
}

/// A scalar node's text and style.
fn scalar<'a>(node: &'a Node<'_>) -> Option<(&'a str, ScalarStyle)> {
    match &node.data {
        YamlData::Representation(text, style, _) => Some((text.as_ref(), *style)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Mapping {
        match Mapping::parse(text, Path::new("mapping.yml")) {
            Ok(mapping) => mapping,
            Err(e) => panic!("{e}"),
        }
    }

    fn mapped(mapping: &Mapping, name: &str, kind: MetricKind) -> MapResult {
        match mapping.apply(name, kind) {
            Mapped::Map(result) => result,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn name_of(mapping: &Mapping, name: &str) -> String {
        mapped(mapping, name, MetricKind::Counter).name
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The line, column and message of a file's error.
    fn invalid(text: &str) -> (usize, usize, String) {
        match Mapping::parse(text, Path::new("mapping.yml")) {
            Err(MappingError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn glob_capture_into_name_and_label() {
        let m = parse(
            "mappings:\n- match: app.*.requests.*\n  name: ${1}_requests\n  labels:\n    code: $2\n",
        );
        let r = mapped(&m, "app.web.requests.200", MetricKind::Counter);
        assert_eq!(r.name, "web_requests");
        assert_eq!(r.labels, labels(&[("code", "200")]));
    }

    #[test]
    fn glob_star_does_not_cross_dots() {
        let m = parse("mappings:\n- match: a.*.c\n  name: x\n");
        assert_eq!(name_of(&m, "a.b.c"), "x");
        assert_eq!(m.apply("a.b.b.c", MetricKind::Counter), Mapped::Unmatched);
        assert_eq!(m.apply("a.c", MetricKind::Counter), Mapped::Unmatched);
        assert_eq!(m.apply("a.b.c.d", MetricKind::Counter), Mapped::Unmatched);
    }

    #[test]
    fn glob_star_matches_an_empty_part() {
        let m = parse("mappings:\n- match: a.*.c\n  name: x\n  labels:\n    mid: \"[$1]\"\n");
        assert_eq!(
            mapped(&m, "a..c", MetricKind::Counter).labels,
            labels(&[("mid", "[]")])
        );
    }

    #[test]
    fn glob_without_dots_matches_the_whole_name() {
        let m = parse("mappings:\n- match: uptime\n  name: up\n- match: '*'\n  name: one_$1\n");
        assert_eq!(name_of(&m, "uptime"), "up");
        assert_eq!(name_of(&m, "load"), "one_load");
        assert_eq!(m.apply("a.b", MetricKind::Counter), Mapped::Unmatched);
    }

    #[test]
    fn globs_before_regexes_regardless_of_file_order() {
        let m = parse(
            "mappings:\n\
             - match: 'a\\.(.*)'\n  match_type: regex\n  name: from_regex\n\
             - match: a.*\n  name: from_glob\n",
        );
        assert_eq!(name_of(&m, "a.b"), "from_glob");
        assert_eq!(name_of(&m, "a.b.c"), "from_regex");
    }

    #[test]
    fn first_glob_in_file_order_wins() {
        let m = parse(
            "mappings:\n\
             - match: a.*.c\n  name: first\n\
             - match: a.b.c\n  name: second\n\
             - match: a.b.*\n  name: third\n",
        );
        assert_eq!(name_of(&m, "a.b.c"), "first");
        assert_eq!(name_of(&m, "a.b.d"), "third");
    }

    #[test]
    fn glob_that_prefixes_an_earlier_glob_still_matches() {
        let m = parse("mappings:\n- match: a.b.c\n  name: long\n- match: a.b\n  name: short\n");
        assert_eq!(name_of(&m, "a.b"), "short");
        assert_eq!(name_of(&m, "a.b.c"), "long");
    }

    #[test]
    fn first_regex_in_file_order_wins() {
        let m = parse(
            "defaults:\n  match_type: regex\n\
             mappings:\n\
             - match: 'b'\n  name: first\n\
             - match: 'abc'\n  name: second\n",
        );
        assert_eq!(name_of(&m, "abc"), "first");
    }

    #[test]
    fn glob_disable_ordering_prefers_literal_parts() {
        let text = "mappings:\n\
             - match: a.*.c\n  name: star\n\
             - match: a.b.c\n  name: literal\n";
        assert_eq!(name_of(&parse(text), "a.b.c"), "star");
        let unordered = format!("defaults:\n  glob_disable_ordering: true\n{text}");
        assert_eq!(name_of(&parse(&unordered), "a.b.c"), "literal");
        assert_eq!(name_of(&parse(&unordered), "a.x.c"), "star");
    }

    #[test]
    fn regex_is_not_anchored_as_in_statsd_exporter() {
        let m = parse(
            "mappings:\n\
             - match: '^whole$'\n  match_type: regex\n  name: anchored\n\
             - match: 'part'\n  match_type: regex\n  name: found\n",
        );
        assert_eq!(name_of(&m, "whole"), "anchored");
        assert_eq!(m.apply("a.whole.b", MetricKind::Counter), Mapped::Unmatched);
        assert_eq!(name_of(&m, "a.part.b"), "found");
        assert_eq!(m.apply("other", MetricKind::Counter), Mapped::Unmatched);
    }

    #[test]
    fn regex_with_named_group() {
        let m = parse(
            "mappings:\n\
             - match: '^(?P<svc>\\w+)\\.latency\\.(?P<route>\\w+)$'\n  match_type: regex\n  \
             name: ${svc}_latency\n  labels:\n    route: ${route}\n    svc: $1\n",
        );
        let r = mapped(&m, "api.latency.users", MetricKind::Timer);
        assert_eq!(r.name, "api_latency");
        assert_eq!(r.labels, labels(&[("route", "users"), ("svc", "api")]));
    }

    #[test]
    fn regex_group_zero_is_the_match_and_the_name_is_escaped() {
        let m = parse(
            "mappings:\n- match: '.+'\n  match_type: regex\n  name: $0\n  labels:\n    \
             statsd_metric_name: $0\n",
        );
        let r = mapped(&m, "my.statsd_counter", MetricKind::Counter);
        assert_eq!(r.name, "my_statsd_counter");
        assert_eq!(
            r.labels,
            labels(&[("statsd_metric_name", "my.statsd_counter")])
        );
    }

    #[test]
    fn dollar_number_then_word_is_one_group_name_as_in_go() {
        let m = parse(
            "mappings:\n- match: a.*\n  name: x\n  labels:\n    gotcha: $1_total\n    \
             braced: ${1}_total\n    money: $$1\n",
        );
        let r = mapped(&m, "a.b", MetricKind::Counter);
        assert_eq!(
            r.labels,
            labels(&[("gotcha", ""), ("braced", "b_total"), ("money", "$1")])
        );
    }

    #[test]
    fn expanded_name_is_escaped_like_statsd_exporter() {
        let m = parse("mappings:\n- match: svc.*\n  name: $1\n");
        assert_eq!(name_of(&m, "svc.web-server"), "web_server");
        assert_eq!(
            name_of(&m, "svc.a--b"),
            "a__b",
            "one `_` per character (SPEC §7.1)"
        );
        assert_eq!(name_of(&m, "svc.9lives"), "_9lives");
        assert_eq!(escape_metric_name("ümlaut.x"), "_mlaut_x");
    }

    #[test]
    fn name_expanding_to_nothing_drops_the_series() {
        let m = parse("mappings:\n- match: a.*\n  name: $1\n");
        assert_eq!(m.apply("a.", MetricKind::Counter), Mapped::Drop);
    }

    #[test]
    fn drop_action() {
        let m = parse(
            "mappings:\n- match: debug.*\n  action: drop\n- match: '.'\n  match_type: regex\n  \
             action: drop\n  name: dropped\n",
        );
        assert_eq!(m.apply("debug.x", MetricKind::Counter), Mapped::Drop);
        assert_eq!(m.apply("anything", MetricKind::Gauge), Mapped::Drop);
    }

    #[test]
    fn match_metric_type_filters() {
        let m = parse(
            "mappings:\n\
             - match: x.*\n  match_metric_type: counter\n  name: counted\n\
             - match: x.*\n  match_metric_type: gauge\n  name: gauged\n\
             - match: x.*\n  match_metric_type: observer\n  name: observed\n\
             - match: 'y'\n  match_type: regex\n  match_metric_type: gauge\n  name: regex_gauge\n",
        );
        let name = |kind| mapped(&m, "x.a", kind).name;
        assert_eq!(name(MetricKind::Counter), "counted");
        assert_eq!(name(MetricKind::Gauge), "gauged");
        assert_eq!(name(MetricKind::Set), "gauged");
        assert_eq!(name(MetricKind::Timer), "observed");
        assert_eq!(name(MetricKind::Histogram), "observed");
        assert_eq!(name(MetricKind::Distribution), "observed");
        assert_eq!(mapped(&m, "y", MetricKind::Set).name, "regex_gauge");
        assert_eq!(m.apply("y", MetricKind::Counter), Mapped::Unmatched);
    }

    #[test]
    fn labels_keep_file_order_and_scalar_text() {
        let m = parse(
            "mappings:\n- match: a\n  name: a\n  labels:\n    zeta: z\n    alpha: 1.10\n    \
             mid: yes\n    empty:\n",
        );
        assert_eq!(
            mapped(&m, "a", MetricKind::Counter).labels,
            labels(&[
                ("zeta", "z"),
                ("alpha", "1.10"),
                ("mid", "yes"),
                ("empty", "")
            ])
        );
    }

    #[test]
    fn observer_histogram_buckets() {
        let m = parse(
            "mappings:\n- match: t.*\n  name: t\n  observer_type: histogram\n  \
             histogram_options:\n    buckets: [0.01, 0.1, 1, 10]\n",
        );
        assert_eq!(
            mapped(&m, "t.x", MetricKind::Timer).observer,
            Some(Observer::Histogram {
                buckets: vec![0.01, 0.1, 1.0, 10.0]
            })
        );
    }

    #[test]
    fn observer_summary_quantiles() {
        let m = parse(
            "mappings:\n- match: t.*\n  name: t\n  observer_type: summary\n  summary_options:\n    \
             quantiles:\n      - quantile: 0.99\n        error: 0.001\n      - quantile: 0.5\n        \
             error: 0.05\n    max_age: 30s\n    age_buckets: 3\n    buf_cap: 1000\n",
        );
        assert_eq!(
            mapped(&m, "t.x", MetricKind::Timer).observer,
            Some(Observer::Summary {
                quantiles: vec![0.99, 0.5]
            })
        );
    }

    #[test]
    fn observer_is_none_without_a_type_and_empty_without_options() {
        let m = parse(
            "mappings:\n- match: none\n  name: a\n  histogram_options:\n    buckets: [1]\n\
             - match: bare\n  name: b\n  observer_type: histogram\n",
        );
        assert_eq!(mapped(&m, "none", MetricKind::Timer).observer, None);
        assert_eq!(
            mapped(&m, "bare", MetricKind::Timer).observer,
            Some(Observer::Histogram { buckets: vec![] })
        );
    }

    #[test]
    fn defaults_inherited() {
        let m = parse(
            "defaults:\n  observer_type: histogram\n  histogram_options:\n    buckets: [1, 2]\n  \
             summary_options:\n    quantiles:\n      - quantile: 0.9\n  ttl: 1m\n  \
             match_type: regex\n\
             mappings:\n\
             - match: '^h$'\n  name: h\n\
             - match: '^s$'\n  name: s\n  observer_type: summary\n  ttl: 10s\n\
             - match: '^z$'\n  name: z\n  ttl: 0\n",
        );
        let h = mapped(&m, "h", MetricKind::Timer);
        assert_eq!(
            h.observer,
            Some(Observer::Histogram {
                buckets: vec![1.0, 2.0]
            })
        );
        assert_eq!(h.ttl, Some(Duration::from_secs(60)));
        let s = mapped(&m, "s", MetricKind::Timer);
        assert_eq!(
            s.observer,
            Some(Observer::Summary {
                quantiles: vec![0.9]
            })
        );
        assert_eq!(s.ttl, Some(Duration::from_secs(10)));
        // statsd_exporter: a rule's ttl of 0 takes the defaults'.
        assert_eq!(
            mapped(&m, "z", MetricKind::Timer).ttl,
            Some(Duration::from_secs(60))
        );
        assert_eq!(m.default_ttl(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn legacy_spellings() {
        let m = parse(
            "defaults:\n  timer_type: summary\n  quantiles:\n    - quantile: 0.75\n      error: 0.1\n\
             mappings:\n\
             - match: h\n  name: h\n  timer_type: histogram\n  buckets: [0.5, 5]\n\
             - match: s\n  name: s\n\
             - match: q\n  name: q\n  quantiles:\n    - quantile: 0.25\n\
             - match: both\n  name: both\n  timer_type: summary\n  observer_type: histogram\n",
        );
        let observer = |name| mapped(&m, name, MetricKind::Timer).observer;
        assert_eq!(
            observer("h"),
            Some(Observer::Histogram {
                buckets: vec![0.5, 5.0]
            })
        );
        assert_eq!(
            observer("s"),
            Some(Observer::Summary {
                quantiles: vec![0.75]
            })
        );
        assert_eq!(
            observer("q"),
            Some(Observer::Summary {
                quantiles: vec![0.25]
            })
        );
        assert_eq!(
            observer("both"),
            Some(Observer::Histogram { buckets: vec![] })
        );
    }

    #[test]
    fn ttl_parsing() {
        let d = |s| parse_go_duration(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("2us"), Duration::from_micros(2));
        assert_eq!(d("2µs"), Duration::from_micros(2));
        assert_eq!(d("7ns"), Duration::from_nanos(7));
        assert_eq!(d("0"), Duration::ZERO);
        for bad in ["", "30", "1x", "-1s", "s", "1.5", "1h-2m"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        let m = parse(
            "mappings:\n- match: a\n  name: a\n  ttl: 1m20s\n- match: b\n  name: b\n  ttl: 0\n",
        );
        assert_eq!(
            mapped(&m, "a", MetricKind::Gauge).ttl,
            Some(Duration::from_secs(80))
        );
        assert_eq!(mapped(&m, "b", MetricKind::Gauge).ttl, None);
    }

    #[test]
    fn statsd_exporter_readme_example() {
        let m = parse(
            r#"mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
"#,
        );
        let r = mapped(
            &m,
            "test.dispatcher.FooProcessor.send.success",
            MetricKind::Counter,
        );
        assert_eq!(r.name, "dispatcher_events_total");
        assert_eq!(
            r.labels,
            labels(&[
                ("processor", "FooProcessor"),
                ("action", "send"),
                ("outcome", "success"),
                ("job", "test_dispatcher"),
            ])
        );
        let r = mapped(
            &m,
            "foo_product.signup.facebook.failure",
            MetricKind::Counter,
        );
        assert_eq!(r.name, "signup_events_total");
        assert_eq!(
            r.labels,
            labels(&[
                ("provider", "facebook"),
                ("outcome", "failure"),
                ("job", "foo_product_server"),
            ])
        );
        // Unmatched: the caller escapes it, to `test_web_server_foo_bar` as the README says.
        assert_eq!(
            m.apply("test.web-server.foo.bar", MetricKind::Counter),
            Mapped::Unmatched
        );
        assert_eq!(
            escape_metric_name("test.web-server.foo.bar"),
            "test_web_server_foo_bar"
        );
    }

    #[test]
    fn ten_thousand_glob_rules() {
        let mut text = String::from("mappings:\n");
        for i in 0..10_000 {
            text.push_str(&format!(
                "- match: svc{i}.*.requests\n  name: svc{i}_requests_total\n  labels:\n    \
                 route: $1\n"
            ));
        }
        let m = parse(&text);
        assert_eq!(m.len(), 10_000);
        let r = mapped(&m, "svc9876.login.requests", MetricKind::Counter);
        assert_eq!(r.name, "svc9876_requests_total");
        assert_eq!(r.labels, labels(&[("route", "login")]));
        assert_eq!(
            m.apply("svc10000.login.requests", MetricKind::Counter),
            Mapped::Unmatched
        );
    }

    #[test]
    fn empty_file_has_no_rules() {
        let m = parse("");
        assert!(m.is_empty());
        assert_eq!(m.apply("a.b", MetricKind::Counter), Mapped::Unmatched);
        assert!(parse("mappings:\n").is_empty());
    }

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yml");
        std::fs::write(&path, "mappings:\n- match: a\n  name: b\n").unwrap();
        assert_eq!(name_of(&Mapping::load(&path).unwrap(), "a"), "b");
        let missing = dir.path().join("missing.yml");
        assert!(matches!(
            Mapping::load(&missing),
            Err(MappingError::Read { .. })
        ));
        std::fs::write(&path, "mappings:\n- match: a\n").unwrap();
        let e = Mapping::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:3: ", path.display())), "{e}");
    }

    // --- errors, each with its line and column ------------------------------------------------

    #[test]
    fn error_yaml_syntax() {
        let (line, column, message) = invalid("mappings:\n- match: a\n  name: [b\n");
        assert_eq!((line, column), (4, 1), "{message}");
        assert!(message.starts_with("YAML: "), "{message}");
    }

    #[test]
    fn error_yaml_type() {
        let (line, column, message) = invalid("mappings:\n  match: a\n");
        assert_eq!((line, column), (2, 3), "{message}");
        assert!(message.contains("must be a list"), "{message}");
    }

    #[test]
    fn error_unknown_key() {
        let (line, column, message) = invalid("mappings:\n- match: a\n  name: b\n  lables: {}\n");
        assert_eq!((line, column), (4, 3));
        assert!(message.contains("unknown key `lables`"), "{message}");
        let (line, column, _) = invalid("mapping:\n- match: a\n");
        assert_eq!((line, column), (1, 1));
    }

    #[test]
    fn error_bad_regex() {
        let (line, column, message) =
            invalid("mappings:\n- match: 'a(b'\n  match_type: regex\n  name: x\n");
        assert_eq!((line, column), (2, 10));
        assert_eq!(message, r#"invalid regex "a(b": error: unclosed group"#);
    }

    #[test]
    fn error_bad_glob() {
        let (line, column, message) = invalid("mappings:\n- match: a.b*.c\n  name: x\n");
        assert_eq!((line, column), (2, 10));
        assert!(message.contains("invalid glob"), "{message}");
        assert_eq!(invalid("mappings:\n- match: a..c\n  name: x\n").0, 2);
    }

    #[test]
    fn error_bad_match_type() {
        let (line, column, message) =
            invalid("mappings:\n- match: a\n  match_type: fsm\n  name: x\n");
        assert_eq!((line, column), (3, 15));
        assert!(message.contains("glob or regex"), "{message}");
    }

    #[test]
    fn error_bad_buckets() {
        let (line, column, message) = invalid(
            "mappings:\n- match: a\n  name: x\n  observer_type: histogram\n  \
             histogram_options:\n    buckets: [1, 3, 2]\n",
        );
        assert_eq!((line, column), (6, 21));
        assert!(message.contains("strictly increasing"), "{message}");
        let (line, column, message) = invalid("defaults:\n  buckets: [1, .inf]\n");
        assert_eq!((line, column), (2, 16));
        assert!(message.contains("finite"), "{message}");
        let (line, column, _) = invalid("defaults:\n  buckets: [1, '2']\n");
        assert_eq!((line, column), (2, 16));
    }

    #[test]
    fn error_bad_quantile() {
        let (line, column, message) = invalid(
            "mappings:\n- match: a\n  name: x\n  quantiles:\n    - quantile: 1\n      error: 0\n",
        );
        assert_eq!((line, column), (5, 17));
        assert!(message.contains("between 0 and 1"), "{message}");
    }

    #[test]
    fn error_bad_ttl() {
        let (line, column, message) =
            invalid("mappings:\n- match: a\n  name: x\n  ttl: 5 minutes\n");
        assert_eq!((line, column), (4, 8));
        assert!(message.contains("invalid duration"), "{message}");
        let (line, column, message) = invalid("defaults:\n  ttl: 30\n");
        assert_eq!((line, column), (2, 8));
        assert!(message.contains("needs a unit"), "{message}");
    }

    #[test]
    fn error_bad_label_key() {
        let (line, column, message) =
            invalid("mappings:\n- match: a\n  name: x\n  labels:\n    bad-key: v\n");
        assert_eq!((line, column), (5, 5));
        assert!(message.contains("not a valid label name"), "{message}");
    }

    #[test]
    fn error_missing_name() {
        let (line, column, message) = invalid("mappings:\n- match: a\n  name: x\n- match: b\n");
        assert_eq!((line, column), (4, 3));
        assert!(message.contains("no `name`"), "{message}");
        let (line, column, _) = invalid("mappings:\n- name: x\n");
        assert_eq!((line, column), (2, 3));
    }

    #[test]
    fn error_bad_name_template() {
        let (line, column, message) = invalid("mappings:\n- match: a.*\n  name: a.$1\n");
        assert_eq!((line, column), (3, 9));
        assert!(message.contains("not '.'"), "{message}");
        let (_, _, message) = invalid("mappings:\n- match: a.*\n  name: ${x}\n");
        assert!(message.contains("no capture group `x`"), "{message}");
        assert_eq!(invalid("mappings:\n- match: a\n  name: 1a\n").0, 3);
    }

    #[test]
    fn error_conflicting_observer_options() {
        let (line, column, message) = invalid(
            "mappings:\n- match: a\n  name: x\n  buckets: [1]\n  histogram_options:\n    buckets: [2]\n",
        );
        assert_eq!((line, column), (2, 3));
        assert!(message.contains("cannot both"), "{message}");
        let (line, _, message) = invalid(
            "mappings:\n- match: a\n  name: x\n  observer_type: histogram\n  summary_options: {}\n",
        );
        assert_eq!(line, 2);
        assert!(message.contains("summary_options"), "{message}");
    }

    #[test]
    fn error_options_that_would_change_values() {
        let (line, column, _) = invalid("mappings:\n- match: a\n  name: x\n  honor_labels: true\n");
        assert_eq!((line, column), (4, 17));
        let (line, column, _) = invalid("mappings:\n- match: a\n  name: x\n  scale: 0.001\n");
        assert_eq!((line, column), (4, 10));
        parse("mappings:\n- match: a\n  name: x\n  help: h\n  honor_labels: false\n  scale: 1\n");
    }

    #[test]
    fn error_bad_action_and_metric_type() {
        let (line, column, _) = invalid("mappings:\n- match: a\n  name: x\n  action: continue\n");
        assert_eq!((line, column), (4, 11));
        let (line, column, _) =
            invalid("mappings:\n- match: a\n  name: x\n  match_metric_type: timer\n");
        assert_eq!((line, column), (4, 22));
    }

    #[test]
    fn merge_keys_as_in_yaml_1_1() {
        let m = parse(
            "mappings:\n\
             - &base\n  match: a.*\n  name: shared\n  labels: &team\n    team: core\n\
             - <<: *base\n  match: b.*\n\
             - match: c.*\n  name: own\n  labels:\n    <<: *team\n    extra: x\n",
        );
        let r = mapped(&m, "b.x", MetricKind::Counter);
        assert_eq!(
            (r.name.as_str(), r.labels),
            ("shared", labels(&[("team", "core")]))
        );
        assert_eq!(
            mapped(&m, "c.x", MetricKind::Counter).labels,
            labels(&[("extra", "x"), ("team", "core")])
        );
    }

    #[test]
    fn mapping_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Mapping>();
    }

    #[test]
    fn error_duplicate_key_is_a_yaml_error() {
        let (line, _, message) = invalid("mappings:\n- match: a\n  name: x\n  name: y\n");
        assert_eq!(line, 4, "{message}");
    }
}
