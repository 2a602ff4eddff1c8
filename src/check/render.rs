//! The report as an aligned table for a terminal, or as one JSON object.

use std::fmt::Write as _;

use super::{Finding, Status, exit_code, worst};

/// An aligned table (status, name, current, needed) for a terminal; a finding that is
/// not ok is followed by its reason and, when there is one, its fix command, each on an
/// indented line. Ends with a summary line.
pub fn render_human(findings: &[Finding]) -> String {
    let header = ("STATUS", "NAME", "CURRENT", "NEEDED");
    let w_status = findings
        .iter()
        .map(|f| f.status.as_str().len())
        .chain([header.0.len()])
        .max()
        .unwrap_or(0);
    let w_name = findings
        .iter()
        .map(|f| f.name.len())
        .chain([header.1.len()])
        .max()
        .unwrap_or(0);
    let w_current = findings
        .iter()
        .map(|f| f.current.chars().count())
        .chain([header.2.len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let mut row = |s: &str, n: &str, c: &str, d: &str| {
        let line = format!("{s:<w_status$}  {n:<w_name$}  {c:<w_current$}  {d}");
        out.push_str(line.trim_end());
        out.push('\n');
    };
    row(header.0, header.1, header.2, header.3);
    let indent = " ".repeat(w_status + 2);
    let mut body = String::new();
    for f in findings {
        let line = format!(
            "{:<w_status$}  {:<w_name$}  {:<w_current$}  {}",
            f.status.as_str(),
            f.name,
            f.current,
            f.needed
        );
        body.push_str(line.trim_end());
        body.push('\n');
        if f.status != Status::Ok {
            let mut prefix = "why: ";
            for line in wrap(f.why, WRAP - indent.len() - prefix.len()) {
                let _ = writeln!(body, "{indent}{prefix}{line}");
                prefix = "     ";
            }
            if let Some(fix) = &f.fix {
                let _ = writeln!(body, "{indent}fix: {fix}");
            }
        }
    }
    out.push_str(&body);
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    let _ = writeln!(
        out,
        "{} ok, {} warn, {} fail (exit {}; client and server assumed on this host)",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        exit_code(findings)
    );
    out
}

/// Width the reasons are wrapped to in [`render_human`].
const WRAP: usize = 96;

/// Splits `text` at spaces into lines of at most `width` characters (a longer word
/// gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The report as one JSON object:
/// `{"status":"warn","exit_code":1,"findings":[{"name":..,"status":..,"current":..,
/// "needed":..,"fix":null|"..","why":..}]}`.
pub fn render_json(findings: &[Finding]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"status\":{},\"exit_code\":{},\"findings\":[",
        json_str(worst(findings).as_str()),
        exit_code(findings)
    );
    for (i, f) in findings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"status\":{},\"current\":{},\"needed\":{},\"fix\":{},\"why\":{}}}",
            json_str(f.name),
            json_str(f.status.as_str()),
            json_str(&f.current),
            json_str(&f.needed),
            f.fix.as_deref().map_or_else(|| "null".to_owned(), json_str),
            json_str(f.why)
        );
    }
    out.push_str("]}\n");
    out
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters
/// escaped; everything else, non-ASCII included, passes through as UTF-8. serde_json
/// writes it, the crate's one JSON writer.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::evaluate;
    use crate::check::evaluate::tests::{N, tuned};

    #[test]
    fn json_escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(json_str("plain"), "\"plain\"");
        assert_eq!(json_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_str("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
        assert_eq!(
            json_str("\u{8}\u{c}\u{0}\u{1f}"),
            "\"\\b\\f\\u0000\\u001f\""
        );
        // DEL and non-ASCII are legal in JSON strings as they are.
        assert_eq!(json_str("\u{7f}é→"), "\"\u{7f}é→\"");
    }

    #[test]
    fn json_report_shape() {
        let f = Finding {
            name: "x",
            status: Status::Warn,
            current: "say \"hi\"".into(),
            needed: "1".into(),
            fix: None,
            why: "because",
        };
        let g = Finding {
            fix: Some("sysctl -w x=\"1 2\"".into()),
            status: Status::Ok,
            ..f.clone()
        };
        assert_eq!(
            render_json(&[f, g]),
            "{\"status\":\"warn\",\"exit_code\":1,\"findings\":[\
             {\"name\":\"x\",\"status\":\"warn\",\"current\":\"say \\\"hi\\\"\",\"needed\":\"1\",\"fix\":null,\"why\":\"because\"},\
             {\"name\":\"x\",\"status\":\"ok\",\"current\":\"say \\\"hi\\\"\",\"needed\":\"1\",\"fix\":\"sysctl -w x=\\\"1 2\\\"\",\"why\":\"because\"}]}\n"
        );
    }

    #[test]
    fn human_table_is_aligned_with_fix_lines() {
        let mut sys = tuned();
        sys.somaxconn = Some(128);
        let text = render_human(&evaluate(N, &sys));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STATUS  NAME"), "{text}");
        let col = lines[0].find("CURRENT").unwrap();
        for l in lines
            .iter()
            .filter(|l| l.starts_with("ok ") || l.starts_with("warn "))
        {
            assert_eq!(&l[col - 2..col], "  ", "current column aligned: {l}");
            assert_ne!(&l[col..col + 1], " ", "current column aligned: {l}");
        }
        let i = lines
            .iter()
            .position(|l| l.contains("net.core.somaxconn"))
            .unwrap();
        assert!(lines[i].starts_with("warn"));
        // Indented past the status column ("STATUS" + 2 spaces), the reason wrapped.
        assert!(
            lines[i + 1].starts_with("        why: "),
            "{}",
            lines[i + 1]
        );
        assert!(
            lines[i + 2].starts_with("             "),
            "{}",
            lines[i + 2]
        );
        let fix = lines
            .iter()
            .position(|l| l.trim_start().starts_with("fix: "))
            .unwrap();
        assert_eq!(lines[fix], "        fix: sysctl -w net.core.somaxconn=4096");
        assert!(lines[i + 1..fix].iter().all(|l| l.len() <= WRAP), "{text}");
        assert_eq!(
            lines.last().unwrap(),
            &"12 ok, 1 warn, 0 fail (exit 1; client and server assumed on this host)"
        );
    }

    #[test]
    fn wrap_splits_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("aaaaaaa b", 3), ["aaaaaaa", "b"]);
        assert!(wrap("", 3).is_empty());
    }
}
