//! The results table every section of the report shares: one row per metric with its
//! same-run baseline, the ratio and the goal. A section returns its rows beside its text,
//! so a run of several phases (`--phases all`) can open the report with every goal it
//! measured in one table, each row the same as in the section it came from.

use std::fmt::Write as _;

/// Whether a row's goal was reached; `Info` rows have no goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    Info,
}

impl Verdict {
    pub fn of(ok: bool) -> Self {
        if ok { Self::Met } else { Self::NotMet }
    }

    fn cell(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "**not met**",
            Self::Info => "",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub result: String,
    pub baseline: String,
    pub ratio: String,
    pub goal: String,
    pub verdict: Verdict,
}

impl Row {
    /// A metric the issue set a goal for.
    pub fn goal(
        metric: impl Into<String>,
        result: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        goal: impl Into<String>,
        ok: bool,
    ) -> Self {
        Self::new([metric.into(), result.into(), baseline.into(), ratio.into(), goal.into()], Verdict::of(ok))
    }

    /// A figure reported for context, without a goal; `note` stands in the goal column.
    pub fn info(
        metric: impl Into<String>,
        result: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        Self::new([metric.into(), result.into(), baseline.into(), ratio.into(), note.into()], Verdict::Info)
    }

    fn new([metric, result, baseline, ratio, goal]: [String; 5], verdict: Verdict) -> Self {
        Self { metric, result, baseline, ratio, goal, verdict }
    }
}

/// A section of the report and the rows of its results table.
pub struct Section {
    pub text: String,
    pub rows: Vec<Row>,
}

/// The Markdown table of `rows`, followed by a blank line.
pub fn table(o: &mut String, rows: &[Row]) {
    let _ = writeln!(o, "| metric | result: median (min–max) | same-run baseline | ratio | goal | |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.result,
            r.baseline,
            r.ratio,
            r.goal,
            r.verdict.cell()
        );
    }
    let _ = writeln!(o);
}

/// The opening of a report that ran several sections: every row with a goal, in section
/// order, and a count of those met.
pub fn summary(sections: &[Section]) -> String {
    let rows: Vec<Row> =
        sections.iter().flat_map(|s| s.rows.iter()).filter(|r| r.verdict != Verdict::Info).cloned().collect();
    let met = rows.iter().filter(|r| r.verdict == Verdict::Met).count();
    let mut o = String::new();
    let _ = writeln!(o, "## Every goal in this run\n");
    let _ = writeln!(
        o,
        "{met} of {} goals met. Each row is repeated from the section below that measured it, where the run's details, baselines and every repetition are.\n",
        rows.len()
    );
    table(&mut o, &rows);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_only_goals_and_counts_the_met_ones() {
        let a = Section {
            text: String::new(),
            rows: vec![
                Row::goal("ingest", "80,000", "raw", "0.43", "≥ 50,000", true),
                Row::info("ack at saturation", "180", "", "", "(queueing)"),
            ],
        };
        let b = Section { text: String::new(), rows: vec![Row::goal("memory", "15.5", "", "", "≤ 8", false)] };
        let s = summary(&[a, b]);
        assert!(s.contains("1 of 2 goals met"), "{s}");
        assert!(s.contains("| ingest | 80,000 | raw | 0.43 | ≥ 50,000 | met |"), "{s}");
        assert!(s.contains("| memory | 15.5 |  |  | ≤ 8 | **not met** |"), "{s}");
        assert!(!s.contains("ack at saturation"), "{s}");
    }
}
