//! Level filters (DESIGN §3 `loglevels`, `loglevels_db`, `loglevels_ac`; §6.2 `levels`): `*`
//! (every level), `3`, `1,2,3`, `1-5`, `1,3-5`. Spaces around items are allowed; anything else
//! is an error that quotes the expression.

use std::fmt;
use std::str::FromStr;

/// A set of levels (0–255).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelFilter {
    bits: [u64; 4],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty level filter")]
    Empty,
    #[error("`{item}` in `{expr}` is not a level (0-255)")]
    NotALevel { expr: String, item: String },
    #[error("range `{item}` in `{expr}` is reversed")]
    Reversed { expr: String, item: String },
}

impl LevelFilter {
    /// Every level.
    pub(crate) const ALL: LevelFilter = LevelFilter {
        bits: [u64::MAX; 4],
    };
    /// No level.
    pub(crate) const NONE: LevelFilter = LevelFilter { bits: [0; 4] };

    /// Parses an expression such as `1,3-5` or `*`.
    pub fn parse(expr: &str) -> Result<LevelFilter, FilterError> {
        if expr.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let mut filter = LevelFilter::NONE;
        for item in expr.split(',').map(str::trim) {
            if item == "*" {
                filter = LevelFilter::ALL;
                continue;
            }
            let level = |s: &str| {
                s.trim().parse::<u8>().map_err(|_| FilterError::NotALevel {
                    expr: expr.to_owned(),
                    item: item.to_owned(),
                })
            };
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (level(lo)?, level(hi)?),
                None => (level(item)?, level(item)?),
            };
            if lo > hi {
                return Err(FilterError::Reversed {
                    expr: expr.to_owned(),
                    item: item.to_owned(),
                });
            }
            for l in lo..=hi {
                filter.insert(l);
            }
        }
        Ok(filter)
    }

    pub(crate) fn insert(&mut self, level: u8) {
        self.bits[usize::from(level / 64)] |= 1 << (level % 64);
    }

    pub(crate) fn contains(&self, level: u8) -> bool {
        self.bits[usize::from(level / 64)] & (1 << (level % 64)) != 0
    }

    pub(crate) fn is_all(&self) -> bool {
        *self == LevelFilter::ALL
    }

    /// The levels in the set, lowest first.
    pub(crate) fn levels(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&l| self.contains(l))
    }
}

impl FromStr for LevelFilter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<LevelFilter, FilterError> {
        LevelFilter::parse(s)
    }
}

/// The shortest expression: `*`, or ranges such as `1-3,5`; an empty set prints nothing.
impl fmt::Display for LevelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("*");
        }
        let mut first = true;
        let mut level = 0u16;
        while level <= 255 {
            if !self.contains(level as u8) {
                level += 1;
                continue;
            }
            let lo = level;
            while level < 255 && self.contains(level as u8 + 1) {
                level += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == level {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{level}")?;
            }
            level += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for LevelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LevelFilter({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn levels(expr: &str) -> Vec<u8> {
        LevelFilter::parse(expr).unwrap().levels().collect()
    }

    #[test]
    fn star_is_every_level() {
        assert!(LevelFilter::parse("*").unwrap().is_all());
        assert_eq!(levels("*").len(), 256);
    }

    #[test]
    fn one_level() {
        assert_eq!(levels("3"), [3]);
    }

    #[test]
    fn a_list() {
        assert_eq!(levels("1,2,3"), [1, 2, 3]);
    }

    #[test]
    fn a_range() {
        assert_eq!(levels("1-5"), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_list_with_a_range() {
        assert_eq!(levels("1,3-5"), [1, 3, 4, 5]);
        assert_eq!(levels(" 9 , 20 - 23 "), [9, 20, 21, 22, 23]);
    }

    #[test]
    fn bad_expressions_are_errors_that_quote_them() {
        assert_eq!(LevelFilter::parse(""), Err(FilterError::Empty));
        assert_eq!(LevelFilter::parse("  "), Err(FilterError::Empty));
        for bad in ["a", "1,", "1-", "-3", "1-2-3", "256", "1;2", "3.5", "**x"] {
            let e = LevelFilter::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(matches!(
            LevelFilter::parse("5-1"),
            Err(FilterError::Reversed { .. })
        ));
    }

    #[test]
    fn display_is_the_shortest_form() {
        assert_eq!(LevelFilter::parse("3,1,2,5").unwrap().to_string(), "1-3,5");
        assert_eq!(LevelFilter::parse("0-255").unwrap().to_string(), "*");
        assert_eq!(LevelFilter::parse("255").unwrap().to_string(), "255");
    }

    proptest! {
        #[test]
        fn never_panics(expr in ".{0,30}") {
            let _ = LevelFilter::parse(&expr);
        }

        #[test]
        fn display_parses_back(set in prop::collection::btree_set(any::<u8>(), 1..40)) {
            let mut filter = LevelFilter::NONE;
            for l in &set {
                filter.insert(*l);
            }
            let again = LevelFilter::parse(&filter.to_string()).unwrap();
            prop_assert_eq!(again, filter);
            prop_assert_eq!(again.levels().collect::<Vec<_>>(), set.into_iter().collect::<Vec<_>>());
        }
    }
}
