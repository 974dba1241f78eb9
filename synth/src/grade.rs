//! InfiAgent-DABench's closed-form answers: `@name[value]`, every named sub-answer judged
//! on its own. Values match when equal as text (trimmed, case-insensitive) or, when both
//! are numbers, equal up to floating-point noise (1e-12 relative): "3.60" is "3.6", but the
//! formats ask for rounded values, so 3.61 is not.

/// Every `@name[value]` in the text, in order.
pub fn parse_answers(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(i) = rest.find('@') {
        rest = &rest[i + 1..];
        let name_len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if name_len == 0 || !rest[name_len..].starts_with('[') {
            continue;
        }
        let body = &rest[name_len + 1..];
        if let Some(close) = body.find(']') {
            out.push((rest[..name_len].to_string(), body[..close].to_string()));
            rest = &body[close + 1..];
        }
    }
    out
}

pub fn values_match(got: &str, want: &str) -> bool {
    values_match_tol(got, want, 1e-12)
}

/// [`values_match`] with numbers equal up to `rel_tol` relative (at least `rel_tol` absolute).
pub fn values_match_tol(got: &str, want: &str, rel_tol: f64) -> bool {
    let norm = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '\'').trim().to_lowercase();
    let (g, w) = (norm(got), norm(want));
    if g == w {
        return true;
    }
    match (g.parse::<f64>(), w.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= rel_tol * b.abs().max(1.0),
        _ => false,
    }
}

/// Per label: whether the response gives that name a matching value (the last one given
/// counts, as a model may correct itself).
pub fn grade(response: &str, labels: &[(String, String)]) -> Vec<bool> {
    grade_tol(response, labels, 1e-12)
}

/// [`grade`] with numbers equal up to `rel_tol`.
pub fn grade_tol(response: &str, labels: &[(String, String)], rel_tol: f64) -> Vec<bool> {
    let given = parse_answers(response);
    labels
        .iter()
        .map(|(name, want)| given.iter().rev().find(|(n, _)| n == name).is_some_and(|(_, v)| values_match_tol(v, want, rel_tol)))
        .collect()
}

/// All sub-answers right (DABench's accuracy by question).
pub fn correct(response: &str, labels: &[(String, String)]) -> bool {
    !labels.is_empty() && grade(response, labels).iter().all(|&ok| ok)
}
