//! Aligned text tables and human-readable figures for the operator CLI.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table: a header row and data rows, rendered with two spaces between
/// columns and no trailing blanks.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let cell = |row: &Vec<String>, i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.columns.iter().map(|(t, _)| width(t)).collect();
        for r in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(width(&cell(r, i)));
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(t, _)| (*t).to_owned()).collect();
        let mut out = String::new();
        for r in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (w, (_, align))) in widths.iter().zip(&self.columns).enumerate() {
                let text = cell(r, i);
                let pad = w.saturating_sub(width(&text));
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(&text);
                        line.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(&text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width: characters (names are ASCII; tree glyphs are one column).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// Bits per second, e.g. `0 bit/s`, `850 kbit/s`, `12.4 Mbit/s`.
pub fn bitrate(bps: u64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")];
    let v = bps as f64;
    for (scale, unit) in UNITS {
        if v >= scale {
            let x = v / scale;
            return if x >= 100.0 {
                format!("{x:.0} {unit}")
            } else {
                format!("{x:.1} {unit}")
            };
        }
    }
    format!("{bps} bit/s")
}

/// A duration in milliseconds, coarsely: `45s`, `5m12s`, `3h04m`, `2d03h`.
pub fn age(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&[
            ("ID", Align::Left),
            ("PLAYERS", Align::Right),
            ("X", Align::Left),
        ]);
        t.row(vec!["eu-1".into(), "3".into(), "".into()]);
        t.row(vec!["eu-long".into(), "1200".into(), "yes".into()]);
        assert_eq!(
            t.render(),
            "ID       PLAYERS  X\neu-1           3\neu-long     1200  yes\n"
        );
    }

    #[test]
    fn figures() {
        assert_eq!(bitrate(0), "0 bit/s");
        assert_eq!(bitrate(850_000), "850 kbit/s");
        assert_eq!(bitrate(12_400_000), "12.4 Mbit/s");
        assert_eq!(bitrate(2_000_000_000), "2.0 Gbit/s");
        assert_eq!(age(-5), "0s");
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(312_000), "5m12s");
        assert_eq!(age(3 * 3_600_000 + 4 * 60_000), "3h04m");
        assert_eq!(age(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
    }
}
