//! The text part of a fleet answer: what a model reads. It stays short whatever the fleet's
//! size (about 2 KiB for a thousand nodes): the largest groups with a few lines of their
//! output, counts for the rest, and the failed nodes named up to a bound. Everything else is
//! in the structured result.

use tunnel_node::fleet::reduce::cut;

use crate::fence::fenced;
use crate::params_fleet::FleetOut;

/// Groups described in the text, largest first.
const GROUPS: usize = 5;
/// Lines of each described group's output, and characters of each line.
const SAMPLE_LINES: usize = 4;
const LINE_CHARS: usize = 160;
/// Characters of a group's member list and of an error.
const MEMBERS_CHARS: usize = 120;
const ERROR_CHARS: usize = 160;
/// Failed nodes named.
const FAILURES_NAMED: usize = 8;

/// `job`: the fleet job following nodes still running, if any.
pub(crate) fn fleet_text(out: &FleetOut, job: Option<&str>) -> String {
    let counts: Vec<String> = out.by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut text = format!("{} targets ({}): {} in {} ms", out.total, out.target, counts.join(", "), out.duration_ms);
    for g in out.groups.iter().take(GROUPS) {
        let exit = g.exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
        text.push_str(&format!("\n\n{} × {}{exit}: {}", g.count, g.status, cut(&g.members, MEMBERS_CHARS)));
        if let Some(e) = &g.error {
            text.push_str(&format!("\n  error: {}", cut(e, ERROR_CHARS)));
        }
        let sample: Vec<String> = [("", &g.stdout), ("stderr: ", &g.stderr)]
            .into_iter()
            .flat_map(|(label, body)| body.lines().map(move |line| format!("{label}{}", cut(line, LINE_CHARS))))
            .take(SAMPLE_LINES)
            .collect();
        if !sample.is_empty() {
            text.push('\n');
            text.push_str(&fenced("output of one member", &sample.join("\n")));
        }
    }
    let (more_groups, more_targets) = out
        .groups
        .iter()
        .skip(GROUPS)
        .fold((out.groups_omitted, out.targets_omitted), |(g, t), x| (g + 1, t + x.count));
    if more_groups > 0 {
        text.push_str(&format!("\n\n… {more_groups} more groups ({more_targets} targets) in the structured result"));
    }
    let failed = out.failures.len() as u64 + out.failures_omitted;
    if failed > 0 {
        let named: Vec<String> = out
            .failures
            .iter()
            .take(FAILURES_NAMED)
            .map(|f| match f.exit_code {
                Some(code) => format!("{} (exit {code})", f.name),
                None => format!("{} ({})", f.name, f.status),
            })
            .collect();
        let rest = failed - named.len() as u64;
        let rest = if rest > 0 { format!(", and {rest} more") } else { String::new() };
        text.push_str(&format!("\n\nfailed: {}{rest}; each is in `failures`", named.join(", ")));
    }
    if let Some(job) = job {
        let running = out.by_status.get("running").copied().unwrap_or(0);
        text.push_str(&format!(
            "\n\n{running} still running as jobs, followed by fleet job {job}: call job_wait (or job_output) with it"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tunnel_node::fleet::reduce::{reduce, GroupBy, Limits};
    use tunnel_node::fleet::{Status, TargetResult};

    use super::*;

    fn result(i: usize, status: Status, exit_code: Option<i32>, stdout: &str, error: Option<String>) -> TargetResult {
        TargetResult {
            exit_code,
            stdout: stdout.into(),
            stdout_bytes: stdout.len() as u64,
            error,
            ..TargetResult::empty(&format!("node-{i:04}"), &format!("{i:064x}"), status)
        }
    }

    /// A thousand nodes, three different outputs and twenty failures, each failure unlike the
    /// others (its own group): the text a model reads stays within 2 KiB, names what failed
    /// and counts the rest.
    #[test]
    fn a_thousand_nodes_fit_in_two_kib() {
        let outputs = [
            "Linux 6.1.0-18-amd64 x86_64\nuptime 41 days\nload 0.12 0.08 0.05\n",
            "Linux 6.1.0-21-amd64 x86_64\nuptime 3 days\nload 0.40 0.31 0.30\n",
            "Linux 5.10.0-28-amd64 x86_64\nuptime 400 days\nload 1.10 0.98 0.91\n",
        ];
        let mut results: Vec<TargetResult> =
            (0..980).map(|i| result(i, Status::Ok, Some(0), outputs[i % 3], None)).collect();
        for i in 980..990 {
            results.push(result(i, Status::Failed, Some(i as i32 - 978), "", Some(format!("exit {}", i - 978))));
        }
        for i in 990..1000 {
            let why = format!("peer node-{i:04} left the room {} s ago", i - 950);
            results.push(result(i, Status::Unreachable, None, "", Some(why)));
        }
        let reduction = reduce(&results, &GroupBy::Output, Limits::default());
        let out = crate::ops_fleet::fleet_out("all".into(), &reduction, &results, 20, Duration::from_millis(812));
        let text = fleet_text(&out, None);
        println!("{text}\n({} bytes)", text.len());
        assert!(text.len() <= 2048, "{} bytes", text.len());
        assert!(text.starts_with("1000 targets (all): 10 failed, 980 ok, 10 unreachable"), "{text}");
        for sample in outputs {
            assert!(text.contains(sample.lines().next().unwrap()), "each output's sample is shown");
        }
        assert!(text.contains("node-0980 (exit 2)") && text.contains("and 12 more; each is in `failures`"), "{text}");
        assert!(text.contains("… 18 more groups (18 targets)"), "{text}");
        assert_eq!(out.failures.len(), 20, "the structured result lists every failure");
    }
}
