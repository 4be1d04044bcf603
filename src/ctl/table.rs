//! Plain text tables: a header and rows, columns padded to their widest cell (numbers
//! aligned right).

/// Renders `header` and `rows` as aligned text, one line each.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .is_some_and(|c| c == "-" || c.trim_end_matches('%').parse::<f64>().is_ok())
                })
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| match numeric.get(i) {
                Some(true) => format!("{cell:>width$}", width = widths[i]),
                _ => format!("{cell:<width$}", width = widths[i]),
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text columns are left-aligned, numeric ones right-aligned.
    #[test]
    fn columns_are_aligned() {
        let table = render(
            &["NAME", "CALLS"],
            &[
                vec!["Upper".to_owned(), "5".to_owned()],
                vec!["A".to_owned(), "120".to_owned()],
            ],
        );
        assert_eq!(table, "NAME   CALLS\nUpper      5\nA        120");
    }
}
