//! [`Figures`]: every [`Figure`] of a run, in the order measured, and the look-ups the comparison
//! table makes. It depends on nothing else in the crate: every measurement module records into
//! it, and `report` reads it.

use benchkit::Figure;

/// Every figure of a run, in the order measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    list: Vec<Figure>,
    /// Peers that did not run, and why.
    skipped: Vec<(String, String)>,
}

impl Figures {
    /// Adds a figure.
    pub fn push(&mut self, figure: Figure) {
        self.list.push(figure);
    }

    /// Records that `peer` did not run, and why (its rows then say so).
    pub fn skip(&mut self, peer: &str, reason: &str) {
        self.skipped.push((peer.to_owned(), reason.to_owned()));
    }

    /// Why `peer` did not run, if it was skipped.
    pub fn skipped(&self, peer: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|(p, _)| p == peer)
            .map(|(_, reason)| reason.as_str())
    }

    /// Every skipped peer and its reason.
    pub fn all_skipped(&self) -> &[(String, String)] {
        &self.skipped
    }

    /// All figures.
    pub fn all(&self) -> &[Figure] {
        &self.list
    }

    /// The first figure named `figure` from `peer`.
    pub fn get(&self, peer: &str, figure: &str) -> Option<&Figure> {
        self.list
            .iter()
            .find(|f| f.peer == peer && f.figure == figure)
    }

    /// The figure named `figure` from `peer` whose sample size is exactly `n`.
    pub fn get_n(&self, peer: &str, figure: &str, n: u64) -> Option<&Figure> {
        self.list
            .iter()
            .find(|f| f.peer == peer && f.figure == figure && f.n == n)
    }

    /// The figure named `figure` from `peer` whose sample size is nearest `n` (by ratio), if
    /// within a factor of 1.5 (a 999,990-event depot against a 1,000,000-event database).
    pub fn get_near(&self, peer: &str, figure: &str, n: u64) -> Option<&Figure> {
        let distance = |f: &Figure| ((f.n.max(1) as f64) / (n.max(1) as f64)).ln().abs();
        self.list
            .iter()
            .filter(|f| f.peer == peer && f.figure == figure)
            .min_by(|a, b| distance(a).total_cmp(&distance(b)))
            .filter(|f| distance(f) < 1.5f64.ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_lines_parse() {
        let line = r#"{"peer":"sqlite","figure":"read_partition_p50","unit":"us","value":5.13,"n":1000000,"note":"x"}"#;
        let f: Figure = serde_json::from_str(line).unwrap();
        let mut figures = Figures::default();
        figures.push(f);
        assert!(figures
            .get_near("sqlite", "read_partition_p50", 999_990)
            .is_some());
        assert!(figures
            .get_near("sqlite", "read_partition_p50", 9_990)
            .is_none());
    }
}
