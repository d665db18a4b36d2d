//! Consistency levels and how they resolve to a replica count.
//!
//! A request names how many of a key's N replicas must answer, either as a
//! level (`one`, `quorum`, `all`) or as an explicit count. The count is
//! resolved against the *effective* N of the request: the configured
//! replication factor capped at the number of members, so a one-node cluster
//! with N=3 still serves `quorum` (the reply meta says N was capped).
//!
//! The text form (`one`, `quorum`, `all`, or a count of at least 1, any
//! case) is shared by the CLI's `-r`/`-w`, the server's `cluster.read` and
//! `cluster.write`, and the JSON the CLI prints.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The largest replication factor (`cluster.replication`) a cluster may
/// have.
pub const MAX_REPLICATION: u32 = 16;

/// How many replicas must answer a read or acknowledge a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    One,
    Quorum,
    All,
    /// An explicit count, 1..=N. A count of 0 cannot be parsed, but can
    /// arrive over the wire, so [`Level::required`] refuses it too.
    Count(u32),
}

impl Level {
    /// Resolves the level to a replica count for a request whose key lives on
    /// `n` replicas. `configured_n` is the replication factor before capping:
    /// an explicit count is checked against it, so `-w 3` on a cluster
    /// configured for N=3 is valid even while fewer members exist, and is
    /// then capped like `all`.
    pub fn required(self, n: usize, configured_n: usize) -> Result<usize> {
        let n = n.max(1);
        match self {
            Level::One => Ok(1),
            Level::Quorum => Ok(n / 2 + 1),
            Level::All => Ok(n),
            Level::Count(0) => Err(Error::InvalidArgument(
                "replica count must be at least 1".to_string(),
            )),
            Level::Count(c) if c as usize > configured_n => Err(Error::InvalidArgument(format!(
                "replica count {c} is above the replication factor N={configured_n}; use 1..={configured_n} or one/quorum/all"
            ))),
            Level::Count(c) => Ok((c as usize).min(n)),
        }
    }

    /// The level as a metrics label: its word, or a count as its number.
    /// Counts no replication factor allows (0, above [`MAX_REPLICATION`])
    /// are refused, and share the one label `invalid`, so no client can
    /// add label values without end by sending counts.
    pub fn label(self) -> &'static str {
        const COUNTS: [&str; MAX_REPLICATION as usize] = [
            "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        ];
        match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
            Level::Count(c @ 1..=MAX_REPLICATION) => COUNTS[c as usize - 1],
            Level::Count(_) => "invalid",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::One => f.write_str("one"),
            Level::Quorum => f.write_str("quorum"),
            Level::All => f.write_str("all"),
            Level::Count(c) => write!(f, "{c}"),
        }
    }
}

impl FromStr for Level {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            other => match other.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Level::Count(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "unknown consistency level {s:?}: use one, quorum, all or a replica count of at least 1"
                ))),
            },
        }
    }
}

/// A count serializes as a number and a level as its word, the forms the
/// configuration file accepts.
#[cfg(feature = "serde")]
impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Level::Count(c) => s.serialize_u32(*c),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

/// A number is a count as it stands (0 included, so configuration
/// validation can name the setting); text goes through [`FromStr`].
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Level::Count(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_text_form_and_bounded_for_any_count() {
        for level in [
            Level::One,
            Level::Quorum,
            Level::All,
            Level::Count(1),
            Level::Count(16),
        ] {
            assert_eq!(level.label(), level.to_string());
        }
        let labels: std::collections::HashSet<&str> = (0..=100_000)
            .map(|c| Level::Count(c).label())
            .chain([Level::Count(u32::MAX).label()])
            .collect();
        assert_eq!(labels.len(), MAX_REPLICATION as usize + 1, "{labels:?}");
        assert_eq!(Level::Count(0).label(), "invalid");
        assert_eq!(Level::Count(17).label(), "invalid");
    }

    #[test]
    fn levels_resolve_against_effective_n() {
        assert_eq!(Level::One.required(3, 3).unwrap(), 1);
        assert_eq!(Level::Quorum.required(3, 3).unwrap(), 2);
        assert_eq!(Level::Quorum.required(5, 5).unwrap(), 3);
        assert_eq!(Level::Quorum.required(1, 3).unwrap(), 1);
        assert_eq!(Level::All.required(3, 3).unwrap(), 3);
        assert_eq!(Level::All.required(1, 3).unwrap(), 1);
        assert_eq!(Level::Count(2).required(3, 3).unwrap(), 2);
        assert_eq!(Level::Count(3).required(1, 3).unwrap(), 1);
    }

    #[test]
    fn counts_outside_one_to_n_are_rejected() {
        assert!(matches!(
            Level::Count(0).required(3, 3),
            Err(Error::InvalidArgument(_))
        ));
        let Err(Error::InvalidArgument(above)) = Level::Count(4).required(3, 3) else {
            panic!("a count above N must be refused");
        };
        assert!(above.contains('4') && above.contains("N=3"), "{above}");
    }

    #[test]
    fn parses_case_insensitively_and_displays_back() {
        assert_eq!("QUORUM".parse::<Level>().unwrap(), Level::Quorum);
        assert_eq!("one".parse::<Level>().unwrap(), Level::One);
        assert_eq!("All".parse::<Level>().unwrap(), Level::All);
        assert_eq!("2".parse::<Level>().unwrap(), Level::Count(2));
        for level in [Level::One, Level::Quorum, Level::All, Level::Count(7)] {
            assert_eq!(level.to_string().parse::<Level>().unwrap(), level);
        }
    }

    #[test]
    fn unknown_words_and_zero_are_refused_naming_the_choices() {
        for bad in ["most", "0", "-1", ""] {
            let Err(Error::InvalidArgument(msg)) = bad.parse::<Level>() else {
                panic!("{bad:?} must be refused");
            };
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains("one, quorum, all"),
                "{msg}"
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_numbers_for_counts_and_words_for_levels() {
        assert_eq!(serde_json::to_string(&Level::Count(2)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Level::Quorum).unwrap(), "\"quorum\"");
        let parsed: Level = serde_json::from_str("\"ALL\"").unwrap();
        assert_eq!(parsed, Level::All);
        let parsed: Level = serde_json::from_str("0").unwrap();
        assert_eq!(parsed, Level::Count(0));
        assert!(serde_json::from_str::<Level>("\"most\"").is_err());
    }
}
