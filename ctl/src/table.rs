//! A minimal left-aligned text table: columns as wide as their widest cell,
//! two spaces apart, no trailing spaces. Enough for `list` and `get`
//! without a table crate.

/// Rows of cells, optionally under a header row.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// A table without a header (aligned `key value` lines).
    pub fn bare() -> Self {
        Table::default()
    }

    /// Appends a row.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    /// The table as lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_and_trims_line_ends() {
        let mut t = Table::new(["A", "LONGER", "C"]);
        t.row(["wide-cell".into(), "x".into(), "".into()]);
        assert_eq!(t.render(), "A          LONGER  C\nwide-cell  x\n");
    }

    #[test]
    fn empty_table_renders_nothing() {
        assert_eq!(Table::bare().render(), "");
    }
}
